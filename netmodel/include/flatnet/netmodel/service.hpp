#pragma once

// Services and EndpointSlices, the layer-4 half of the Kubernetes network model, as plain values:
// what flatnet-proxy programs and what the emulator's endpoints controller writes. Only the fields
// that decide where a packet goes are kept.
//
// The JSON codecs read and write the Kubernetes shape (v1 Service, discovery.k8s.io/v1
// EndpointSlice); encoding then decoding gives back an equal value. They check types, ranges and
// enum values and name the field and the value in every error (K8sDecodeError, from k8s.hpp).
// They also apply the cheap rules of Kubernetes' API validation: names (a Service's is an RFC 1035
// label, a slice's an RFC 1123 subdomain), port names required and unique when a service has
// several, unique (port, protocol) and (nodePort, protocol), clusterIPs[0] equal to clusterIP, at
// most one cluster IP per family, no cluster IP on ExternalName and no "None" on NodePort or
// LoadBalancer services, nodePort not on ClusterIP services, healthCheckNodePort only with
// LoadBalancer and externalTrafficPolicy Local, endpoint addresses of the slice's addressType.
// SCTP ports are left out of the decoded objects (flatnet does not support SCTP) and named in
// ServiceObjects::skipped. Unknown fields are ignored, so the output of
// `kubectl get svc,endpointslices -A -o json` decodes. Encoding leaves out empty and default
// fields (type ClusterIP, sessionAffinity None, traffic policies Cluster); it always writes a
// port's protocol.

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flatnet/netmodel/address.hpp"
#include "flatnet/netmodel/k8s.hpp"

namespace flatnet::netmodel {

// --- Service (v1) -------------------------------------------------------------------------------

enum class ServiceType : std::uint8_t { cluster_ip, node_port, load_balancer, external_name };
// "ClusterIP", "NodePort", "LoadBalancer", "ExternalName".
std::string to_string(ServiceType type);
std::optional<ServiceType> parse_service_type(std::string_view text);

// externalTrafficPolicy and internalTrafficPolicy: "Cluster" or "Local".
enum class TrafficPolicy : std::uint8_t { cluster, local };
std::string to_string(TrafficPolicy policy);
std::optional<TrafficPolicy> parse_traffic_policy(std::string_view text);

// "None" or "ClientIP".
enum class SessionAffinity : std::uint8_t { none, client_ip };
std::string to_string(SessionAffinity affinity);
std::optional<SessionAffinity> parse_session_affinity(std::string_view text);

// A Service port's targetPort, an IntOrString: a number, or the name of a container port (which
// EndpointSlices resolve per endpoint). Unset (number 0, name "") means "the same as port". The
// decoder reads a numeric string ("8080") as the number; a name must be an IANA port name.
struct TargetPort {
  std::uint16_t number = 0;
  std::string name{};
  bool is_set() const { return number != 0 || !name.empty(); }
  friend bool operator==(const TargetPort&, const TargetPort&) = default;
};

struct ServicePort {
  std::string name{};  // required when the service has more than one port
  Protocol protocol = Protocol::tcp;
  std::uint16_t port = 0;
  TargetPort target_port{};
  std::uint16_t node_port = 0;  // 0: none (ClusterIP services, or not allocated yet)
  friend bool operator==(const ServicePort&, const ServicePort&) = default;
};

struct ServiceSpec {
  static constexpr std::uint32_t kDefaultAffinityTimeoutSeconds = 10800;  // 3 hours
  static constexpr std::uint32_t kMaxAffinityTimeoutSeconds = 86400;      // 1 day

  ServiceType type = ServiceType::cluster_ip;
  // spec.clusterIPs (spec.clusterIP is its first element). Empty with headless false: not allocated
  // yet. headless: clusterIP "None".
  std::vector<IpAddress> cluster_ips{};
  bool headless = false;
  std::vector<ServicePort> ports{};
  Labels selector{};
  std::vector<IpAddress> external_ips{};
  SessionAffinity session_affinity = SessionAffinity::none;
  // spec.sessionAffinityConfig.clientIP.timeoutSeconds, 1..86400.
  std::uint32_t affinity_timeout_seconds = kDefaultAffinityTimeoutSeconds;
  TrafficPolicy external_traffic_policy = TrafficPolicy::cluster;
  TrafficPolicy internal_traffic_policy = TrafficPolicy::cluster;
  std::uint16_t health_check_node_port = 0;  // only with externalTrafficPolicy Local
  std::string external_name{};               // only for ExternalName services
  friend bool operator==(const ServiceSpec&, const ServiceSpec&) = default;
};

struct Service {
  ObjectMeta meta{};
  ServiceSpec spec{};
  // status.loadBalancer.ingress[].ip
  std::vector<IpAddress> load_balancer_ips{};
  friend bool operator==(const Service&, const Service&) = default;
};

// Labels with which a Service opts out of a proxy: kube-proxy skips services carrying either
// (service-proxy-name names another proxy; headless marks an endpoints-only service).
inline constexpr std::string_view kServiceProxyNameLabel =
    "service.kubernetes.io/service-proxy-name";
inline constexpr std::string_view kHeadlessLabel = "service.kubernetes.io/headless";

// --- EndpointSlice (discovery.k8s.io/v1) ---------------------------------------------------------

// The label that names a slice's service.
inline constexpr std::string_view kServiceNameLabel = "kubernetes.io/service-name";

enum class AddressType : std::uint8_t { ipv4, ipv6, fqdn };
// "IPv4", "IPv6", "FQDN".
std::string to_string(AddressType type);
std::optional<AddressType> parse_address_type(std::string_view text);

// Unset conditions keep Kubernetes' meaning: ready and serving default to true, terminating to
// false. The accessors apply it.
struct EndpointConditions {
  std::optional<bool> ready{};
  std::optional<bool> serving{};
  std::optional<bool> terminating{};
  bool is_ready() const { return ready.value_or(true); }
  // kube-proxy's reading (endpointslicecache.go): an unset serving condition is true.
  bool is_serving() const { return serving.value_or(true); }
  bool is_terminating() const { return terminating.value_or(false); }
  friend bool operator==(const EndpointConditions&, const EndpointConditions&) = default;
};

struct Endpoint {
  std::vector<IpAddress> addresses{};  // at least one; kube-proxy uses the first
  EndpointConditions conditions{};
  std::string hostname{};
  std::string node_name{};
  std::string zone{};
  // targetRef, when it names a Pod: "<namespace>/<name>"; "" otherwise.
  std::string target_pod{};
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

struct EndpointPort {
  std::string name{};  // matches a ServicePort's name; "" for an unnamed port
  Protocol protocol = Protocol::tcp;
  std::optional<std::uint16_t> port{};  // unset: the port is not resolvable for these endpoints
  friend bool operator==(const EndpointPort&, const EndpointPort&) = default;
};

// discovery.k8s.io/v1beta1 slices decode too: an endpoint's topology gives nodeName (from
// kubernetes.io/hostname, when nodeName is unset) and zone (topology.kubernetes.io/zone).
//
// FQDN slices hold names, not addresses, and kube-proxy ignores them: the decoder checks their
// endpoints' shape but keeps none of them (endpoints is empty), and the encoder writes none.
struct EndpointSlice {
  ObjectMeta meta{};
  AddressType address_type = AddressType::ipv4;
  std::vector<Endpoint> endpoints{};
  std::vector<EndpointPort> ports{};
  // The value of the kubernetes.io/service-name label, "" when it is missing.
  std::string service_name() const;
  friend bool operator==(const EndpointSlice&, const EndpointSlice&) = default;
};

// --- a set of objects, as flatnet-proxy's source file holds them
// ----------------------------------

// Services and EndpointSlices read from one JSON document: a single object, a `kind: List` (or
// ServiceList / EndpointSliceList) whose items are such objects. Items of other kinds are skipped
// and named in `skipped` ("v1 Pod default/web"), since a dump of a real cluster holds them. The
// items of a ServiceList or EndpointSliceList may leave out kind and apiVersion (the API server's
// own lists do). Two Services, or two EndpointSlices, of the same namespace and name are an error.
struct ServiceObjects {
  std::vector<Service> services{};
  std::vector<EndpointSlice> endpoint_slices{};
  std::vector<std::string> skipped{};
  friend bool operator==(const ServiceObjects&, const ServiceObjects&) = default;
};

// Throws K8sDecodeError naming the item index, the object and the field: `items[3]: decode
// Service "default/web": spec.ports[0].port: 70000 is out of range 1..65535`.
ServiceObjects decode_service_objects(const nlohmann::json& document);
// Parses the text first; malformed JSON is a K8sDecodeError too, with line and column.
ServiceObjects parse_service_objects(std::string_view text);
// {"apiVersion": "v1", "kind": "List", "items": [services..., slices...]}; skipped is not written.
nlohmann::json encode_service_objects(const ServiceObjects& objects);

// {"apiVersion": "v1", "kind": "Service", "metadata": {...}, "spec": {...}, "status": {...}}
void to_json(nlohmann::json& j, const Service& service);
void from_json(const nlohmann::json& j, Service& service);
// {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {...},
//  "addressType": ..., "endpoints": [...], "ports": [...]}
void to_json(nlohmann::json& j, const EndpointSlice& slice);
void from_json(const nlohmann::json& j, EndpointSlice& slice);

}  // namespace flatnet::netmodel
