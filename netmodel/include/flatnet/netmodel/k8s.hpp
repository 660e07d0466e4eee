#pragma once

// The Kubernetes objects that matter to the network, as plain values: what a cluster file or the
// emulator's stored plan holds. Only the fields the network model uses are kept; everything else
// a user writes (images, commands, resources, status) is dropped by the cluster-file parser with
// a warning. Service and EndpointSlice will sit beside these types.
//
// The JSON codecs write and read the Kubernetes shape (apiVersion, kind, metadata, spec), which is
// also valid cluster-file YAML; encoding then decoding gives back an equal value.

#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "flatnet/netmodel/address.hpp"

namespace flatnet::netmodel {

using Labels = std::map<std::string, std::string>;

// --- names and labels, with the rules of k8s.io/apimachinery/pkg/util/validation --------------
//
// Each *_problem function returns "" for a valid value, else a lower-case sentence that quotes the
// value and says what is wrong: "\"Web\" is not a valid RFC 1123 label: ...".

// [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 characters (namespaces, node, container names).
std::string dns1123_label_problem(std::string_view name);
// RFC 1123 labels joined by '.', at most 253 characters (pod and deployment names, nodeName).
std::string dns1123_subdomain_problem(std::string_view name);
// An optional DNS subdomain prefix and '/', then a name of at most 63 characters of [A-Za-z0-9],
// with '-', '_' and '.' allowed inside ("app", "app.kubernetes.io/name").
std::string label_key_problem(std::string_view key);
// Empty, or at most 63 characters of [A-Za-z0-9] with '-', '_' and '.' allowed inside.
std::string label_value_problem(std::string_view value);
// An IANA service name (a container port's name): at most 15 characters of [a-z0-9-], at least
// one letter, no '-' at either end and no "--".
std::string port_name_problem(std::string_view name);

inline bool is_dns1123_label(std::string_view s) {
  return dns1123_label_problem(s).empty();
}
inline bool is_dns1123_subdomain(std::string_view s) {
  return dns1123_subdomain_problem(s).empty();
}
inline bool is_label_key(std::string_view s) {
  return label_key_problem(s).empty();
}
inline bool is_label_value(std::string_view s) {
  return label_value_problem(s).empty();
}

// --- objects ----------------------------------------------------------------------------------

struct ObjectMeta {
  std::string name{};
  std::string namespace_ = "default";
  Labels labels{};
  Labels annotations{};
  friend bool operator==(const ObjectMeta&, const ObjectMeta&) = default;
};

enum class SelectorOperator : std::uint8_t { in, not_in, exists, does_not_exist };
// "In", "NotIn", "Exists", "DoesNotExist".
std::string to_string(SelectorOperator op);
std::optional<SelectorOperator> parse_selector_operator(std::string_view text);

struct LabelSelectorRequirement {
  std::string key{};
  SelectorOperator op = SelectorOperator::in;
  std::vector<std::string> values{};  // non-empty for In and NotIn, empty otherwise
  friend bool operator==(const LabelSelectorRequirement&,
                         const LabelSelectorRequirement&) = default;
};

// metav1.LabelSelector: every matchLabels pair and every expression must hold. An empty selector
// matches every set of labels (as metav1.LabelSelectorAsSelector makes it; Kubernetes' "nil
// selector matches nothing" has no equivalent here).
struct LabelSelector {
  Labels match_labels{};
  std::vector<LabelSelectorRequirement> match_expressions{};

  bool empty() const { return match_labels.empty() && match_expressions.empty(); }
  bool matches(const Labels& labels) const;
  // kubectl's form, requirements sorted by key: "app=web,!canary,tier in (a,b),zone notin (x)";
  // "" for the empty selector.
  std::string to_string() const;

  friend bool operator==(const LabelSelector&, const LabelSelector&) = default;
};

// A set of labels in kubectl's form, "app=web,tier=db" (sorted by key); "" when empty.
std::string labels_to_string(const Labels& labels);

enum class Protocol : std::uint8_t { tcp, udp };
// "TCP" or "UDP", as Kubernetes writes them.
std::string to_string(Protocol protocol);
// Exactly "TCP" or "UDP" (Kubernetes is case-sensitive here).
std::optional<Protocol> parse_protocol(std::string_view text);

struct ContainerPort {
  std::string name{};  // optional; an IANA service name, unique in the pod
  std::uint16_t container_port = 0;
  Protocol protocol = Protocol::tcp;
  friend bool operator==(const ContainerPort&, const ContainerPort&) = default;
};

struct Container {
  std::string name{};
  std::vector<ContainerPort> ports{};
  friend bool operator==(const Container&, const Container&) = default;
};

struct PodSpec {
  std::string node_name{};  // "" lets the emulator's scheduler choose
  Labels node_selector{};
  std::vector<Container> containers{};
  friend bool operator==(const PodSpec&, const PodSpec&) = default;
};

struct Pod {
  ObjectMeta meta{};
  PodSpec spec{};
  friend bool operator==(const Pod&, const Pod&) = default;
};

// A Deployment's pod template: only labels and annotations of meta are used.
struct PodTemplate {
  ObjectMeta meta{};
  PodSpec spec{};
  friend bool operator==(const PodTemplate&, const PodTemplate&) = default;
};

struct Deployment {
  ObjectMeta meta{};
  std::int32_t replicas = 1;
  LabelSelector selector{};
  PodTemplate template_{};
  friend bool operator==(const Deployment&, const Deployment&) = default;
};

// A stable 10-character name suffix for a pod template, like Kubernetes' pod-template-hash label:
// characters of "bcdfghjklmnpqrstvwxz2456789" from FNV-1a 64 over a canonical encoding of the
// template (labels, annotations, nodeName, nodeSelector, containers and their ports). The same
// template gives the same hash on every run and platform; any change to those fields changes it.
std::string pod_template_hash(const PodTemplate& template_);

// --- the emulated cluster (flatnet's own kind, apiVersion flatnet/v1alpha1) ---------------------

struct NodeSpec {
  std::string name{};
  Labels labels{};
  friend bool operator==(const NodeSpec&, const NodeSpec&) = default;
};

// The labels a node carries, as the kubelet sets them: the written ones, plus
// kubernetes.io/hostname=<name> and kubernetes.io/os=linux unless written. nodeSelectors are
// matched against these.
Labels effective_node_labels(const NodeSpec& node);

// routed: each node routes the other nodes' pod subnets through the fabric (the default);
// flat: the pods of all nodes share one L2 segment.
enum class Network : std::uint8_t { routed, flat };
std::string to_string(Network network);
std::optional<Network> parse_network(std::string_view text);

// The CNI plugin that wires pods: flatnet-cni, or the reference bridge plugin.
enum class CniKind : std::uint8_t { flatnet, bridge };
std::string to_string(CniKind cni);
std::optional<CniKind> parse_cni_kind(std::string_view text);

struct ClusterSpec {
  static constexpr std::size_t kMaxNodes = 254;
  static constexpr std::size_t kMaxNameLength = 32;  // it goes into netns and state names
  static constexpr unsigned kMaxPodCidrMaskSize = 30;
  static constexpr unsigned kMinMtu = 576;
  static constexpr unsigned kMaxMtu = 9216;

  std::string name{};
  std::vector<NodeSpec> nodes{};
  IpPrefix pod_cidr{IpAddress::v4(0x0af40000), 16};      // 10.244.0.0/16
  IpPrefix node_cidr{IpAddress::v4(0xac120000), 24};     // 172.18.0.0/24
  IpPrefix service_cidr{IpAddress::v4(0x0a600000), 16};  // 10.96.0.0/16
  // Each node gets one subnet of pod_cidr of this length (kube-controller-manager's
  // --node-cidr-mask-size; the YAML field is podCIDRMaskSize).
  unsigned pod_subnet_prefix_length = 24;
  Network network = Network::routed;
  CniKind cni = CniKind::flatnet;
  unsigned mtu = 1500;

  // The addressing convention, in one place (node-1 is nodes[0]):
  // nodes[i] gets pod subnet i + 1 of pod_cidr (node-1 has 10.244.1.0/24; subnet 0 stays unused)
  // and address i + 2 of node_cidr (node-1 is 172.18.0.2; .1 belongs to the fabric).
  // Both throw std::out_of_range past the end of the range.
  IpPrefix node_pod_cidr(std::size_t index) const;
  IpAddress node_address(std::size_t index) const;
  // How many nodes pod_cidr split into pod_subnet_prefix_length subnets, and node_cidr, have room
  // for under that convention.
  std::size_t pod_cidr_node_capacity() const;
  std::size_t node_cidr_node_capacity() const;

  const NodeSpec* find_node(std::string_view node_name) const;

  friend bool operator==(const ClusterSpec&, const ClusterSpec&) = default;
};

// "node-1", "node-2", ...: the names of nodes given as a count (index is 0-based).
std::string default_node_name(std::size_t index);
// The cluster used when a file has no Cluster document: "flatnet", nodes node-1 and node-2, the
// default CIDRs.
ClusterSpec default_cluster();

// --- JSON (nlohmann::json; include <nlohmann/json.hpp> to use) ---------------------------------

// Thrown by the decoders for JSON of the wrong shape; what() names the kind, the field path and the
// value: `decode Pod "web": spec.containers[0].ports[0].containerPort: "x" is not an integer`.
// The decoders check types, ranges and enum values, not the rules of the cluster file (names,
// duplicates, CIDR overlaps): feed text through parse_cluster_file for those.
class K8sDecodeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// {"apiVersion": "v1", "kind": "Pod", "metadata": {...}, "spec": {...}}; empty fields are left out.
void to_json(nlohmann::json& j, const Pod& pod);
void from_json(const nlohmann::json& j, Pod& pod);
// {"apiVersion": "apps/v1", "kind": "Deployment", ...}
void to_json(nlohmann::json& j, const Deployment& deployment);
void from_json(const nlohmann::json& j, Deployment& deployment);
// {"matchLabels": {...}, "matchExpressions": [...]}
void to_json(nlohmann::json& j, const LabelSelector& selector);
void from_json(const nlohmann::json& j, LabelSelector& selector);
// The cluster-file form: {"apiVersion": "flatnet/v1alpha1", "kind": "Cluster", "metadata":
// {"name": ...}, "nodes": [{"name": ..., "labels": {...}}], "podCIDR": ..., "mtu": ...}.
void to_json(nlohmann::json& j, const ClusterSpec& cluster);
void from_json(const nlohmann::json& j, ClusterSpec& cluster);

}  // namespace flatnet::netmodel
