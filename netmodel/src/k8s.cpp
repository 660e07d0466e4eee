#include "flatnet/netmodel/k8s.hpp"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "flatnet/netmodel/error.hpp"
#include "json_reader.hpp"

namespace flatnet::netmodel {
namespace {

using json_detail::index_path;
using json_detail::join_path;
using json_detail::JsonReader;
using json_detail::meta_from_json;
using json_detail::meta_to_json;
using nlohmann::json;

bool is_lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool is_alnum(char c) {
  return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

std::string char_text(char c) {
  return quote(std::string_view(&c, 1));
}

// The reason `label` (one part of a DNS name) is not an RFC 1123 label, or "".
std::string dns_label_reason(std::string_view label) {
  if (label.empty()) return "it is empty";
  for (const char c : label) {
    if (!is_lower_alnum(c) && c != '-') {
      return "character " + char_text(c) +
             " is not allowed (use lower-case letters, digits and '-')";
    }
  }
  if (label.front() == '-' || label.back() == '-') {
    return "it must start and end with a lower-case letter or a digit";
  }
  return "";
}

// The reason `name` is not a label name or value ([A-Za-z0-9] with -_. inside), or "".
std::string label_name_reason(std::string_view name) {
  if (name.size() > 63) return "it is longer than 63 characters";
  for (const char c : name) {
    if (!is_alnum(c) && c != '-' && c != '_' && c != '.') {
      return "character " + char_text(c) +
             " is not allowed (use letters, digits, '-', '_' and '.')";
    }
  }
  if (!name.empty() && (!is_alnum(name.front()) || !is_alnum(name.back()))) {
    return "it must start and end with a letter or a digit";
  }
  return "";
}

// --- pod-template-hash ---

// A canonical, unambiguous byte string: every string is length-prefixed, every list counted.
class CanonicalWriter {
 public:
  void text(std::string_view s) {
    out_ += std::to_string(s.size());
    out_ += ':';
    out_ += s;
  }
  void number(std::uint64_t n) {
    out_ += std::to_string(n);
    out_ += ';';
  }
  void labels(const Labels& labels) {
    number(labels.size());
    for (const auto& [key, value] : labels) {
      text(key);
      text(value);
    }
  }
  const std::string& bytes() const { return out_; }

 private:
  std::string out_;
};

std::uint64_t fnv1a64(std::string_view bytes) {
  std::uint64_t hash = 14695981039346656037ULL;
  for (const char c : bytes) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 1099511628211ULL;
  }
  return hash;
}

json pod_spec_to_json(const PodSpec& spec) {
  json j = json::object();
  if (!spec.node_name.empty()) j["nodeName"] = spec.node_name;
  if (!spec.node_selector.empty()) j["nodeSelector"] = spec.node_selector;
  json containers = json::array();
  for (const auto& c : spec.containers) {
    json container = {{"name", c.name}};
    if (!c.ports.empty()) {
      json ports = json::array();
      for (const auto& p : c.ports) {
        json port = {{"containerPort", p.container_port}, {"protocol", to_string(p.protocol)}};
        if (!p.name.empty()) port["name"] = p.name;
        ports.push_back(std::move(port));
      }
      container["ports"] = std::move(ports);
    }
    containers.push_back(std::move(container));
  }
  j["containers"] = std::move(containers);
  return j;
}

PodSpec pod_spec_from_json(const JsonReader& r, const json* j, const std::string& path) {
  PodSpec spec;
  if (!j) return spec;
  r.object(*j, path);
  spec.node_name = r.string_member(*j, "nodeName", path);
  spec.node_selector = r.labels(r.member(*j, "nodeSelector"), join_path(path, "nodeSelector"));
  if (const json* containers = r.member(*j, "containers")) {
    const std::string cpath = join_path(path, "containers");
    r.array(*containers, cpath);
    for (std::size_t i = 0; i < containers->size(); ++i) {
      const std::string ipath = index_path(cpath, i);
      const json& c = r.object((*containers)[i], ipath);
      Container container;
      container.name = r.string_member(c, "name", ipath);
      if (const json* ports = r.member(c, "ports")) {
        const std::string ppath = join_path(ipath, "ports");
        r.array(*ports, ppath);
        for (std::size_t k = 0; k < ports->size(); ++k) {
          const std::string kpath = index_path(ppath, k);
          const json& p = r.object((*ports)[k], kpath);
          ContainerPort port;
          port.name = r.string_member(p, "name", kpath);
          const json* number = r.member(p, "containerPort");
          if (!number) r.fail(join_path(kpath, "containerPort"), "missing");
          port.container_port = static_cast<std::uint16_t>(
              r.integer(*number, join_path(kpath, "containerPort"), 1, 65535));
          const std::string protocol = r.string_member(p, "protocol", kpath, "TCP");
          const auto parsed = parse_protocol(protocol);
          if (!parsed) {
            r.fail(join_path(kpath, "protocol"), quote(protocol) + " is not TCP or UDP");
          }
          port.protocol = *parsed;
          container.ports.push_back(std::move(port));
        }
      }
      spec.containers.push_back(std::move(container));
    }
  }
  return spec;
}

LabelSelector selector_from_json(const JsonReader& r, const json& j, const std::string& path) {
  LabelSelector selector;
  r.object(j, path);
  selector.match_labels = r.labels(r.member(j, "matchLabels"), join_path(path, "matchLabels"));
  if (const json* expressions = r.member(j, "matchExpressions")) {
    const std::string epath = join_path(path, "matchExpressions");
    r.array(*expressions, epath);
    for (std::size_t i = 0; i < expressions->size(); ++i) {
      const std::string ipath = index_path(epath, i);
      const json& e = r.object((*expressions)[i], ipath);
      LabelSelectorRequirement req;
      req.key = r.string_member(e, "key", ipath);
      const std::string op = r.string_member(e, "operator", ipath);
      const auto parsed = parse_selector_operator(op);
      if (!parsed) {
        r.fail(join_path(ipath, "operator"),
               quote(op) + " is not an operator; accepted: In, NotIn, Exists, DoesNotExist");
      }
      req.op = *parsed;
      if (const json* values = r.member(e, "values")) {
        const std::string vpath = join_path(ipath, "values");
        r.array(*values, vpath);
        for (std::size_t k = 0; k < values->size(); ++k) {
          req.values.push_back(r.string((*values)[k], index_path(vpath, k)));
        }
      }
      selector.match_expressions.push_back(std::move(req));
    }
  }
  return selector;
}

IpPrefix ipv4_network_from_json(const JsonReader& r, const json& j, std::string_view key,
                                const IpPrefix& fallback) {
  const json* m = r.member(j, key);
  if (!m) return fallback;
  const std::string text = r.string(*m, std::string(key));
  try {
    const IpPrefix prefix = IpPrefix::parse_network(text);
    if (prefix.family() != Family::v4) r.fail(std::string(key), quote(text) + " is not IPv4");
    return prefix;
  } catch (const AddressError& e) {
    r.fail(std::string(key), e.what());
  }
}

}  // namespace

// --- names and labels ---

std::string dns1123_label_problem(std::string_view name) {
  std::string reason =
      name.size() > 63 ? "it is longer than 63 characters" : dns_label_reason(name);
  return reason.empty() ? "" : quote(name) + " is not a valid RFC 1123 label: " + reason;
}

std::string dns1123_subdomain_problem(std::string_view name) {
  std::string reason;
  if (name.size() > 253) {
    reason = "it is longer than 253 characters";
  } else if (name.empty()) {
    reason = "it is empty";
  } else {
    std::string_view rest = name;
    while (reason.empty()) {
      const auto dot = rest.find('.');
      const std::string_view label = rest.substr(0, dot);
      if (label.empty()) {
        reason = "it has an empty part between dots or at an end";
      } else {
        reason = dns_label_reason(label);
      }
      if (dot == std::string_view::npos) break;
      rest = rest.substr(dot + 1);
    }
  }
  return reason.empty() ? "" : quote(name) + " is not a valid RFC 1123 subdomain: " + reason;
}

std::string label_key_problem(std::string_view key) {
  const auto slash = key.find('/');
  std::string reason;
  if (key.empty()) {
    reason = "it is empty";
  } else if (slash != std::string_view::npos) {
    const std::string_view prefix = key.substr(0, slash);
    const std::string_view name = key.substr(slash + 1);
    if (prefix.empty()) {
      reason = "the prefix before '/' is empty";
    } else if (const std::string p = dns1123_subdomain_problem(prefix); !p.empty()) {
      reason = "the prefix is not a DNS subdomain: " + p;
    } else if (name.empty()) {
      reason = "the name after '/' is empty";
    } else {
      reason = label_name_reason(name);
    }
  } else {
    reason = label_name_reason(key);
  }
  return reason.empty() ? "" : quote(key) + " is not a valid label key: " + reason;
}

std::string label_value_problem(std::string_view value) {
  const std::string reason = label_name_reason(value);
  return reason.empty() ? "" : quote(value) + " is not a valid label value: " + reason;
}

std::string port_name_problem(std::string_view name) {
  std::string reason;
  if (name.empty()) {
    reason = "it is empty";
  } else if (name.size() > 15) {
    reason = "it is longer than 15 characters";
  } else if (const auto bad = std::find_if(name.begin(), name.end(),
                                           [](char c) { return !is_lower_alnum(c) && c != '-'; });
             bad != name.end()) {
    reason =
        "character " + char_text(*bad) + " is not allowed (use lower-case letters, digits and '-')";
  } else if (std::none_of(name.begin(), name.end(), [](char c) { return c >= 'a' && c <= 'z'; })) {
    reason = "it must contain at least one letter";
  } else if (name.front() == '-' || name.back() == '-') {
    reason = "it must start and end with a letter or a digit";
  } else if (name.find("--") != std::string_view::npos) {
    reason = "it must not contain \"--\"";
  }
  return reason.empty() ? "" : quote(name) + " is not a valid port name: " + reason;
}

// --- selectors ---

std::string to_string(SelectorOperator op) {
  switch (op) {
    case SelectorOperator::in:
      return "In";
    case SelectorOperator::not_in:
      return "NotIn";
    case SelectorOperator::exists:
      return "Exists";
    case SelectorOperator::does_not_exist:
      return "DoesNotExist";
  }
  return "?";
}

std::optional<SelectorOperator> parse_selector_operator(std::string_view text) {
  for (const auto op : {SelectorOperator::in, SelectorOperator::not_in, SelectorOperator::exists,
                        SelectorOperator::does_not_exist}) {
    if (text == to_string(op)) return op;
  }
  return std::nullopt;
}

bool LabelSelector::matches(const Labels& labels) const {
  for (const auto& [key, value] : match_labels) {
    const auto it = labels.find(key);
    if (it == labels.end() || it->second != value) return false;
  }
  for (const auto& req : match_expressions) {
    const auto it = labels.find(req.key);
    const bool found = it != labels.end();
    const bool listed =
        found && std::find(req.values.begin(), req.values.end(), it->second) != req.values.end();
    switch (req.op) {
      case SelectorOperator::in:
        if (!listed) return false;
        break;
      case SelectorOperator::not_in:
        if (listed) return false;
        break;
      case SelectorOperator::exists:
        if (!found) return false;
        break;
      case SelectorOperator::does_not_exist:
        if (found) return false;
        break;
    }
  }
  return true;
}

std::string LabelSelector::to_string() const {
  std::vector<std::pair<std::string, std::string>> parts;
  for (const auto& [key, value] : match_labels)
    parts.emplace_back(key, key + "=" + value);
  for (const auto& req : match_expressions) {
    const std::set<std::string> values(req.values.begin(), req.values.end());
    std::string list;
    for (const auto& v : values)
      list += (list.empty() ? "" : ",") + v;
    switch (req.op) {
      case SelectorOperator::in:
        parts.emplace_back(req.key, req.key + " in (" + list + ")");
        break;
      case SelectorOperator::not_in:
        parts.emplace_back(req.key, req.key + " notin (" + list + ")");
        break;
      case SelectorOperator::exists:
        parts.emplace_back(req.key, req.key);
        break;
      case SelectorOperator::does_not_exist:
        parts.emplace_back(req.key, "!" + req.key);
        break;
    }
  }
  std::stable_sort(parts.begin(), parts.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string out;
  for (const auto& [key, text] : parts)
    out += (out.empty() ? "" : ",") + text;
  return out;
}

std::string labels_to_string(const Labels& labels) {
  std::string out;
  for (const auto& [key, value] : labels)
    out += (out.empty() ? "" : ",") + key + "=" + value;
  return out;
}

// --- enums ---

std::string to_string(Protocol protocol) {
  return protocol == Protocol::udp ? "UDP" : "TCP";
}

std::optional<Protocol> parse_protocol(std::string_view text) {
  if (text == "TCP") return Protocol::tcp;
  if (text == "UDP") return Protocol::udp;
  return std::nullopt;
}

std::string to_string(Network network) {
  return network == Network::flat ? "flat" : "routed";
}

std::optional<Network> parse_network(std::string_view text) {
  if (text == "routed") return Network::routed;
  if (text == "flat") return Network::flat;
  return std::nullopt;
}

std::string to_string(CniKind cni) {
  return cni == CniKind::bridge ? "bridge" : "flatnet";
}

std::optional<CniKind> parse_cni_kind(std::string_view text) {
  if (text == "flatnet") return CniKind::flatnet;
  if (text == "bridge") return CniKind::bridge;
  return std::nullopt;
}

// --- pod-template-hash ---

std::string pod_template_hash(const PodTemplate& template_) {
  CanonicalWriter w;
  w.text("flatnet.pod-template/1");
  w.labels(template_.meta.labels);
  w.labels(template_.meta.annotations);
  w.text(template_.spec.node_name);
  w.labels(template_.spec.node_selector);
  w.number(template_.spec.containers.size());
  for (const auto& c : template_.spec.containers) {
    w.text(c.name);
    w.number(c.ports.size());
    for (const auto& p : c.ports) {
      w.text(p.name);
      w.number(p.container_port);
      w.text(to_string(p.protocol));
    }
  }
  static constexpr std::string_view kAlphabet = "bcdfghjklmnpqrstvwxz2456789";
  std::uint64_t hash = fnv1a64(w.bytes());
  std::string out;
  for (int i = 0; i < 10; ++i) {
    out += kAlphabet[hash % kAlphabet.size()];
    hash /= kAlphabet.size();
  }
  return out;
}

// --- cluster ---

IpPrefix ClusterSpec::node_pod_cidr(std::size_t index) const {
  return pod_cidr.subnet(pod_subnet_prefix_length, uint128{index} + 1);
}

IpAddress ClusterSpec::node_address(std::size_t index) const {
  if (index >= node_cidr_node_capacity()) {
    throw std::out_of_range("node index " + std::to_string(index) + " is past the room of " +
                            node_cidr.to_string());
  }
  return node_cidr.nth(uint128{index} + 2);
}

std::size_t ClusterSpec::pod_cidr_node_capacity() const {
  if (pod_subnet_prefix_length <= pod_cidr.length() ||
      pod_subnet_prefix_length > pod_cidr.address().bit_width()) {
    return 0;
  }
  const unsigned extra = pod_subnet_prefix_length - pod_cidr.length();
  if (extra >= 63) return std::numeric_limits<std::size_t>::max();
  return (std::size_t{1} << extra) - 1;
}

std::size_t ClusterSpec::node_cidr_node_capacity() const {
  const uint128 size = node_cidr.size();
  if (size < 4) return 0;
  const uint128 room = size - 3;  // network, fabric (.1), broadcast
  return room > std::numeric_limits<std::size_t>::max() ? std::numeric_limits<std::size_t>::max()
                                                        : static_cast<std::size_t>(room);
}

const NodeSpec* ClusterSpec::find_node(std::string_view node_name) const {
  const auto it = std::find_if(nodes.begin(), nodes.end(),
                               [&](const NodeSpec& n) { return n.name == node_name; });
  return it == nodes.end() ? nullptr : &*it;
}

Labels effective_node_labels(const NodeSpec& node) {
  Labels labels = node.labels;
  labels.emplace("kubernetes.io/hostname", node.name);
  labels.emplace("kubernetes.io/os", "linux");
  return labels;
}

std::string default_node_name(std::size_t index) {
  return "node-" + std::to_string(index + 1);
}

ClusterSpec default_cluster() {
  ClusterSpec cluster;
  cluster.name = "flatnet";
  for (std::size_t i = 0; i < 2; ++i)
    cluster.nodes.push_back({.name = default_node_name(i)});
  return cluster;
}

// --- JSON ---

void to_json(json& j, const LabelSelector& selector) {
  j = json::object();
  if (!selector.match_labels.empty()) j["matchLabels"] = selector.match_labels;
  if (!selector.match_expressions.empty()) {
    json expressions = json::array();
    for (const auto& req : selector.match_expressions) {
      json e = {{"key", req.key}, {"operator", to_string(req.op)}};
      if (!req.values.empty()) e["values"] = req.values;
      expressions.push_back(std::move(e));
    }
    j["matchExpressions"] = std::move(expressions);
  }
}

void from_json(const json& j, LabelSelector& selector) {
  selector = selector_from_json(JsonReader("LabelSelector"), j, "");
}

void to_json(json& j, const Pod& pod) {
  j = {{"apiVersion", "v1"},
       {"kind", "Pod"},
       {"metadata", meta_to_json(pod.meta, false)},
       {"spec", pod_spec_to_json(pod.spec)}};
}

void from_json(const json& j, Pod& pod) {
  JsonReader r("Pod");
  r.check_kind(j, "v1");
  Pod out;
  out.meta = meta_from_json(r, r.member(j, "metadata"), "metadata");
  out.spec = pod_spec_from_json(r, r.member(j, "spec"), "spec");
  pod = std::move(out);
}

void to_json(json& j, const Deployment& deployment) {
  json selector;
  to_json(selector, deployment.selector);
  j = {{"apiVersion", "apps/v1"},
       {"kind", "Deployment"},
       {"metadata", meta_to_json(deployment.meta, false)},
       {"spec",
        {{"replicas", deployment.replicas},
         {"selector", std::move(selector)},
         {"template",
          {{"metadata", meta_to_json(deployment.template_.meta, true)},
           {"spec", pod_spec_to_json(deployment.template_.spec)}}}}}};
}

void from_json(const json& j, Deployment& deployment) {
  JsonReader r("Deployment");
  r.check_kind(j, "apps/v1");
  Deployment out;
  out.meta = meta_from_json(r, r.member(j, "metadata"), "metadata");
  if (const json* spec = r.member(j, "spec")) {
    r.object(*spec, "spec");
    if (const json* replicas = r.member(*spec, "replicas")) {
      out.replicas = static_cast<std::int32_t>(
          r.integer(*replicas, "spec.replicas", 0, std::numeric_limits<std::int32_t>::max()));
    }
    if (const json* selector = r.member(*spec, "selector")) {
      out.selector = selector_from_json(r, *selector, "spec.selector");
    }
    if (const json* tmpl = r.member(*spec, "template")) {
      r.object(*tmpl, "spec.template");
      out.template_.meta = meta_from_json(r, r.member(*tmpl, "metadata"), "spec.template.metadata");
      out.template_.spec = pod_spec_from_json(r, r.member(*tmpl, "spec"), "spec.template.spec");
    }
  }
  deployment = std::move(out);
}

void to_json(json& j, const ClusterSpec& cluster) {
  json nodes = json::array();
  for (const auto& node : cluster.nodes) {
    json n = {{"name", node.name}};
    if (!node.labels.empty()) n["labels"] = node.labels;
    nodes.push_back(std::move(n));
  }
  j = {{"apiVersion", "flatnet/v1alpha1"},
       {"kind", "Cluster"},
       {"metadata", {{"name", cluster.name}}},
       {"nodes", std::move(nodes)},
       {"podCIDR", cluster.pod_cidr.to_string()},
       {"nodeCIDR", cluster.node_cidr.to_string()},
       {"serviceCIDR", cluster.service_cidr.to_string()},
       {"podCIDRMaskSize", cluster.pod_subnet_prefix_length},
       {"network", to_string(cluster.network)},
       {"cni", to_string(cluster.cni)},
       {"mtu", cluster.mtu}};
}

void from_json(const json& j, ClusterSpec& cluster) {
  JsonReader r("Cluster");
  r.check_kind(j, "flatnet/v1alpha1");
  ClusterSpec out;
  if (const json* meta = r.member(j, "metadata")) {
    r.object(*meta, "metadata");
    out.name = r.string_member(*meta, "name", "metadata");
  }
  out.name = r.string_member(j, "name", "", out.name);
  r.set_name(out.name);
  if (const json* nodes = r.member(j, "nodes")) {
    if (nodes->is_number_integer()) {
      const auto count = r.integer(*nodes, "nodes", 1, ClusterSpec::kMaxNodes);
      for (long long i = 0; i < count; ++i) {
        out.nodes.push_back({.name = default_node_name(static_cast<std::size_t>(i))});
      }
    } else {
      r.array(*nodes, "nodes");
      for (std::size_t i = 0; i < nodes->size(); ++i) {
        const std::string path = index_path("nodes", i);
        const json& n = (*nodes)[i];
        NodeSpec node;
        if (n.is_string()) {
          node.name = n.get<std::string>();
        } else {
          r.object(n, path);
          node.name = r.string_member(n, "name", path);
          node.labels = r.labels(r.member(n, "labels"), join_path(path, "labels"));
        }
        out.nodes.push_back(std::move(node));
      }
    }
  }
  out.pod_cidr = ipv4_network_from_json(r, j, "podCIDR", out.pod_cidr);
  out.node_cidr = ipv4_network_from_json(r, j, "nodeCIDR", out.node_cidr);
  out.service_cidr = ipv4_network_from_json(r, j, "serviceCIDR", out.service_cidr);
  if (const json* size = r.member(j, "podCIDRMaskSize")) {
    out.pod_subnet_prefix_length =
        static_cast<unsigned>(r.integer(*size, "podCIDRMaskSize", 1, 32));
  }
  if (const json* network = r.member(j, "network")) {
    const std::string text = r.string(*network, "network");
    const auto parsed = parse_network(text);
    if (!parsed) r.fail("network", quote(text) + " is not a network; accepted: routed, flat");
    out.network = *parsed;
  }
  if (const json* cni = r.member(j, "cni")) {
    const std::string text = r.string(*cni, "cni");
    const auto parsed = parse_cni_kind(text);
    if (!parsed) r.fail("cni", quote(text) + " is not a CNI plugin; accepted: flatnet, bridge");
    out.cni = *parsed;
  }
  if (const json* mtu = r.member(j, "mtu")) {
    out.mtu = static_cast<unsigned>(r.integer(*mtu, "mtu", 1, 65535));
  }
  cluster = std::move(out);
}

}  // namespace flatnet::netmodel
