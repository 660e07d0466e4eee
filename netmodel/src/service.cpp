#include "flatnet/netmodel/service.hpp"

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <map>
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

constexpr std::string_view kServiceApiVersion = "v1";
constexpr std::string_view kDiscoveryV1 = "discovery.k8s.io/v1";
constexpr std::string_view kDiscoveryV1beta1 = "discovery.k8s.io/v1beta1";
// Kubernetes' limit on an endpoint's addresses (and on a slice's endpoints and ports).
constexpr std::size_t kMaxEndpointAddresses = 100;
// The keys of a v1beta1 endpoint's topology that v1 turned into nodeName and zone.
constexpr std::string_view kTopologyHostname = "kubernetes.io/hostname";
constexpr std::string_view kTopologyZone = "topology.kubernetes.io/zone";

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// --- shared pieces ---

// The object's kind, when the document names one, must be `kind`.
void check_object_kind(const JsonReader& r, const json& j, std::string_view kind) {
  const std::string found = r.string_member(j, "kind", "", std::string(kind));
  if (found != kind) r.fail("kind", quote(found) + " is not " + std::string(kind));
}

// metadata.name (checked by `name_problem`) is required; metadata.namespace is an RFC 1123 label.
void check_object_meta(const JsonReader& r, const ObjectMeta& meta,
                       std::string (*name_problem)(std::string_view)) {
  if (meta.name.empty()) r.fail("metadata.name", "missing");
  if (std::string p = name_problem(meta.name); !p.empty()) r.fail("metadata.name", p);
  if (std::string p = dns1123_label_problem(meta.namespace_); !p.empty()) {
    r.fail("metadata.namespace", p);
  }
}

// A Service's name is an RFC 1035 label: an RFC 1123 label that starts with a letter.
std::string service_name_problem(std::string_view name) {
  if (std::string p = dns1123_label_problem(name); !p.empty()) return p;
  if (name.front() >= '0' && name.front() <= '9') {
    return quote(name) + " is not a valid RFC 1035 label: it must start with a lower-case letter";
  }
  return "";
}

// nullopt for SCTP: such a port is left out of the decoded object (flatnet has no SCTP), as
// kube-proxy would program the rest of a cluster's services; the caller counts it.
std::optional<Protocol> protocol_member(const JsonReader& r, const json& j,
                                        const std::string& path) {
  const std::string ppath = join_path(path, "protocol");
  const std::string text = r.string_member(j, "protocol", path, "TCP");
  if (text == "SCTP") return std::nullopt;
  const auto parsed = parse_protocol(text);
  if (!parsed) r.fail(ppath, quote(text) + " is not TCP or UDP");
  return *parsed;
}

IpAddress ip_address(const JsonReader& r, const std::string& text, const std::string& path) {
  try {
    return IpAddress::parse(text);
  } catch (const AddressError& e) {
    r.fail(path, e.what());
  }
}

IpAddress ip_address(const JsonReader& r, const json& j, const std::string& path) {
  return ip_address(r, r.string(j, path), path);
}

std::vector<IpAddress> ip_list(const JsonReader& r, const json* j, const std::string& path) {
  std::vector<IpAddress> out;
  if (!j) return out;
  r.array(*j, path);
  for (std::size_t i = 0; i < j->size(); ++i)
    out.push_back(ip_address(r, (*j)[i], index_path(path, i)));
  return out;
}

std::vector<std::string> ip_texts(const std::vector<IpAddress>& ips) {
  std::vector<std::string> out;
  for (const auto& ip : ips)
    out.push_back(ip.to_string());
  return out;
}

std::string port_text(std::uint16_t port, Protocol protocol) {
  return std::to_string(port) + "/" + to_string(protocol);
}

// --- Service ---

void cluster_ips_from_json(const JsonReader& r, const json& spec, ServiceSpec& out) {
  const json* single = r.member(spec, "clusterIP");
  const std::string cluster_ip = single ? r.string(*single, "spec.clusterIP") : "";
  std::vector<std::string> texts;
  if (const json* list = r.member(spec, "clusterIPs")) {
    r.array(*list, "spec.clusterIPs");
    for (std::size_t i = 0; i < list->size(); ++i)
      texts.push_back(r.string((*list)[i], index_path("spec.clusterIPs", i)));
  }
  if (!cluster_ip.empty() && !texts.empty() && texts.front() != cluster_ip) {
    r.fail("spec.clusterIPs[0]",
           quote(texts.front()) + " does not match spec.clusterIP " + quote(cluster_ip));
  }
  // Texts of spec.clusterIPs, or spec.clusterIP standing for the list.
  const bool from_list = !texts.empty();
  if (texts.empty() && !cluster_ip.empty()) texts.push_back(cluster_ip);
  const auto path = [&](std::size_t i) {
    return from_list ? index_path("spec.clusterIPs", i) : std::string("spec.clusterIP");
  };
  if (texts.size() > 2) {
    r.fail("spec.clusterIPs", "has " + std::to_string(texts.size()) +
                                  " addresses; at most 2 (one per IP family) are allowed");
  }
  for (std::size_t i = 0; i < texts.size(); ++i) {
    if (texts[i] == "None") {
      if (texts.size() > 1) r.fail(path(i), "\"None\" must be the only cluster IP");
      out.headless = true;
      continue;
    }
    out.cluster_ips.push_back(ip_address(r, texts[i], path(i)));
  }
  if (out.cluster_ips.size() == 2 && out.cluster_ips[0].family() == out.cluster_ips[1].family()) {
    r.fail(path(1), quote(texts[1]) +
                        " is of the same IP family as spec.clusterIPs[0]; a dual-stack service "
                        "has one IPv4 and one IPv6 address");
  }
}

TargetPort target_port_from_json(const JsonReader& r, const json& j, const std::string& path) {
  TargetPort out;
  if (j.is_string()) {
    const std::string text = j.get<std::string>();
    if (all_digits(text)) {
      // A numeric string is taken as the number (Kubernetes would refuse it as a port name).
      unsigned value = 0;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
      if (ec != std::errc() || end != text.data() + text.size() || value < 1 || value > 65535) {
        r.fail(path, quote(text) + " is out of range 1..65535");
      }
      out.number = static_cast<std::uint16_t>(value);
    } else {
      if (std::string p = port_name_problem(text); !p.empty()) r.fail(path, p);
      out.name = text;
    }
  } else if (j.is_number()) {
    out.number = static_cast<std::uint16_t>(r.integer_in(j, path, 1, 65535));
  } else {
    r.fail(path,
           "expected a number or a port name, found " + std::string(json_detail::json_type(j)));
  }
  return out;
}

std::vector<ServicePort> service_ports_from_json(const JsonReader& r, const json* j) {
  std::vector<ServicePort> out;
  if (!j) return out;
  const std::string path = "spec.ports";
  r.array(*j, path);
  for (std::size_t i = 0; i < j->size(); ++i) {
    const std::string ipath = index_path(path, i);
    const json& p = r.object((*j)[i], ipath);
    ServicePort port;
    port.name = r.string_member(p, "name", ipath);
    if (!port.name.empty()) {
      if (std::string problem = dns1123_label_problem(port.name); !problem.empty()) {
        r.fail(join_path(ipath, "name"), problem);
      }
    }
    const auto protocol = protocol_member(r, p, ipath);
    if (!protocol) continue;
    port.protocol = *protocol;
    const json* number = r.member(p, "port");
    if (!number) r.fail(join_path(ipath, "port"), "missing");
    port.port =
        static_cast<std::uint16_t>(r.integer_in(*number, join_path(ipath, "port"), 1, 65535));
    if (const json* target = r.member(p, "targetPort")) {
      port.target_port = target_port_from_json(r, *target, join_path(ipath, "targetPort"));
    }
    if (const json* node_port = r.member(p, "nodePort")) {
      port.node_port = static_cast<std::uint16_t>(
          r.integer_in(*node_port, join_path(ipath, "nodePort"), 0, 65535));
    }
    out.push_back(std::move(port));
  }
  // Kubernetes' rules across ports: names when there are several, unique names, unique
  // (port, protocol) and (nodePort, protocol) pairs.
  for (std::size_t i = 0; i < out.size(); ++i) {
    const std::string ipath = index_path(path, i);
    if (out.size() > 1 && out[i].name.empty()) {
      r.fail(join_path(ipath, "name"), "missing (required when a service has more than one port)");
    }
    for (std::size_t k = 0; k < i; ++k) {
      if (!out[i].name.empty() && out[i].name == out[k].name) {
        r.fail(join_path(ipath, "name"),
               quote(out[i].name) + " is also the name of " + index_path(path, k));
      }
      if (out[i].port == out[k].port && out[i].protocol == out[k].protocol) {
        r.fail(ipath, port_text(out[i].port, out[i].protocol) + " is also " + index_path(path, k));
      }
      if (out[i].node_port != 0 && out[i].node_port == out[k].node_port &&
          out[i].protocol == out[k].protocol) {
        r.fail(join_path(ipath, "nodePort"), port_text(out[i].node_port, out[i].protocol) +
                                                 " is also the node port of " +
                                                 index_path(path, k));
      }
    }
  }
  return out;
}

template <typename Enum>
Enum enum_member(const JsonReader& r, const json& j, std::string_view key, const std::string& path,
                 Enum fallback, std::optional<Enum> (*parse)(std::string_view),
                 const std::string& what, const std::string& accepted) {
  const json* m = r.member(j, key);
  if (!m) return fallback;
  const std::string fpath = join_path(path, key);
  const std::string text = r.string(*m, fpath);
  const auto parsed = parse(text);
  if (!parsed) r.fail(fpath, quote(text) + " is not " + what + "; accepted: " + accepted);
  return *parsed;
}

// externalTrafficPolicy also accepts "Global", its name before Kubernetes 1.24 (now Cluster); an
// empty policy (which the API server leaves on ClusterIP services) is the default.
std::optional<TrafficPolicy> parse_external_traffic_policy(std::string_view text) {
  if (text == "Global" || text.empty()) return TrafficPolicy::cluster;
  return parse_traffic_policy(text);
}

std::optional<TrafficPolicy> parse_internal_traffic_policy(std::string_view text) {
  if (text.empty()) return TrafficPolicy::cluster;
  return parse_traffic_policy(text);
}

ServiceSpec service_spec_from_json(const JsonReader& r, const json* j) {
  ServiceSpec out;
  if (!j) return out;
  const json& spec = r.object(*j, "spec");
  out.type = enum_member(r, spec, "type", "spec", ServiceType::cluster_ip, parse_service_type,
                         "a service type", "ClusterIP, NodePort, LoadBalancer, ExternalName");
  cluster_ips_from_json(r, spec, out);
  out.ports = service_ports_from_json(r, r.member(spec, "ports"));
  out.selector = r.labels(r.member(spec, "selector"), "spec.selector");
  out.external_ips = ip_list(r, r.member(spec, "externalIPs"), "spec.externalIPs");
  out.session_affinity =
      enum_member(r, spec, "sessionAffinity", "spec", SessionAffinity::none, parse_session_affinity,
                  "a session affinity", "None, ClientIP");
  if (const json* config = r.member(spec, "sessionAffinityConfig")) {
    r.object(*config, "spec.sessionAffinityConfig");
    if (const json* client_ip = r.member(*config, "clientIP")) {
      r.object(*client_ip, "spec.sessionAffinityConfig.clientIP");
      if (const json* timeout = r.member(*client_ip, "timeoutSeconds")) {
        out.affinity_timeout_seconds = static_cast<std::uint32_t>(
            r.integer_in(*timeout, "spec.sessionAffinityConfig.clientIP.timeoutSeconds", 1,
                         ServiceSpec::kMaxAffinityTimeoutSeconds));
      }
    }
  }
  out.external_traffic_policy =
      enum_member(r, spec, "externalTrafficPolicy", "spec", TrafficPolicy::cluster,
                  parse_external_traffic_policy, "a traffic policy", "Cluster, Local");
  out.internal_traffic_policy =
      enum_member(r, spec, "internalTrafficPolicy", "spec", TrafficPolicy::cluster,
                  parse_internal_traffic_policy, "a traffic policy", "Cluster, Local");
  if (const json* port = r.member(spec, "healthCheckNodePort")) {
    out.health_check_node_port =
        static_cast<std::uint16_t>(r.integer_in(*port, "spec.healthCheckNodePort", 0, 65535));
  }
  out.external_name = r.string_member(spec, "externalName", "spec");

  // Rules across fields, as Kubernetes' API validation has them.
  const std::string type = to_string(out.type);
  const bool has_cluster_ip = out.headless || !out.cluster_ips.empty();
  const std::string cluster_ip_path =
      r.member(spec, "clusterIP") ? "spec.clusterIP" : "spec.clusterIPs";
  if (out.type == ServiceType::external_name) {
    if (has_cluster_ip) r.fail(cluster_ip_path, "may not be set for ExternalName services");
    if (out.external_name.empty()) {
      r.fail("spec.externalName", "missing (required for ExternalName services)");
    }
    std::string_view name = out.external_name;
    if (name.back() == '.') name.remove_suffix(1);  // a fully qualified name
    if (std::string p = dns1123_subdomain_problem(name); !p.empty()) {
      r.fail("spec.externalName", p);
    }
  }
  if (out.headless &&
      (out.type == ServiceType::node_port || out.type == ServiceType::load_balancer)) {
    r.fail(cluster_ip_path, "\"None\" (headless) is not allowed for " + type + " services");
  }
  if (out.type == ServiceType::cluster_ip) {
    for (std::size_t i = 0; i < out.ports.size(); ++i) {
      if (out.ports[i].node_port != 0) {
        r.fail(join_path(index_path("spec.ports", i), "nodePort"),
               std::to_string(out.ports[i].node_port) + " is not allowed for ClusterIP services");
      }
    }
  }
  if (out.health_check_node_port != 0 && (out.type != ServiceType::load_balancer ||
                                          out.external_traffic_policy != TrafficPolicy::local)) {
    r.fail("spec.healthCheckNodePort",
           std::to_string(out.health_check_node_port) +
               " is only allowed for LoadBalancer services with externalTrafficPolicy Local");
  }
  return out;
}

std::vector<IpAddress> load_balancer_ips_from_json(const JsonReader& r, const json* j) {
  std::vector<IpAddress> out;
  if (!j) return out;
  r.object(*j, "status");
  const json* lb = r.member(*j, "loadBalancer");
  if (!lb) return out;
  r.object(*lb, "status.loadBalancer");
  const json* ingress = r.member(*lb, "ingress");
  if (!ingress) return out;
  const std::string path = "status.loadBalancer.ingress";
  r.array(*ingress, path);
  for (std::size_t i = 0; i < ingress->size(); ++i) {
    const std::string ipath = index_path(path, i);
    const json& entry = r.object((*ingress)[i], ipath);
    // Entries with only a hostname (some cloud load balancers) give no address to program.
    if (const json* ip = r.member(entry, "ip"))
      out.push_back(ip_address(r, *ip, join_path(ipath, "ip")));
  }
  return out;
}

Service decode_service(const json& j) {
  JsonReader r("Service");
  r.object(j, "");
  check_object_kind(r, j, "Service");
  Service out;
  out.meta = meta_from_json(r, r.member(j, "metadata"), "metadata", true);
  const std::string version = r.string_member(j, "apiVersion", "", std::string(kServiceApiVersion));
  if (version != kServiceApiVersion) {
    r.fail("apiVersion", quote(version) + " is not " + std::string(kServiceApiVersion));
  }
  check_object_meta(r, out.meta, service_name_problem);
  out.spec = service_spec_from_json(r, r.member(j, "spec"));
  out.load_balancer_ips = load_balancer_ips_from_json(r, r.member(j, "status"));
  return out;
}

json service_spec_to_json(const ServiceSpec& spec) {
  json j = json::object();
  if (spec.type != ServiceType::cluster_ip) j["type"] = to_string(spec.type);
  if (spec.headless) {
    j["clusterIP"] = "None";
    j["clusterIPs"] = json::array({"None"});
  } else if (!spec.cluster_ips.empty()) {
    j["clusterIP"] = spec.cluster_ips.front().to_string();
    j["clusterIPs"] = ip_texts(spec.cluster_ips);
  }
  if (!spec.ports.empty()) {
    json ports = json::array();
    for (const auto& p : spec.ports) {
      json port = json::object();
      if (!p.name.empty()) port["name"] = p.name;
      port["protocol"] = to_string(p.protocol);
      port["port"] = p.port;
      if (p.target_port.number != 0) {
        port["targetPort"] = p.target_port.number;
      } else if (!p.target_port.name.empty()) {
        port["targetPort"] = p.target_port.name;
      }
      if (p.node_port != 0) port["nodePort"] = p.node_port;
      ports.push_back(std::move(port));
    }
    j["ports"] = std::move(ports);
  }
  if (!spec.selector.empty()) j["selector"] = spec.selector;
  if (!spec.external_ips.empty()) j["externalIPs"] = ip_texts(spec.external_ips);
  if (spec.session_affinity != SessionAffinity::none) {
    j["sessionAffinity"] = to_string(spec.session_affinity);
  }
  if (spec.session_affinity != SessionAffinity::none ||
      spec.affinity_timeout_seconds != ServiceSpec::kDefaultAffinityTimeoutSeconds) {
    j["sessionAffinityConfig"] = {
        {"clientIP", {{"timeoutSeconds", spec.affinity_timeout_seconds}}}};
  }
  if (spec.external_traffic_policy != TrafficPolicy::cluster) {
    j["externalTrafficPolicy"] = to_string(spec.external_traffic_policy);
  }
  if (spec.internal_traffic_policy != TrafficPolicy::cluster) {
    j["internalTrafficPolicy"] = to_string(spec.internal_traffic_policy);
  }
  if (spec.health_check_node_port != 0) j["healthCheckNodePort"] = spec.health_check_node_port;
  if (!spec.external_name.empty()) j["externalName"] = spec.external_name;
  return j;
}

// --- EndpointSlice ---

Endpoint endpoint_from_json(const JsonReader& r, const json& j, const std::string& path,
                            AddressType address_type, bool v1beta1,
                            const std::string& slice_namespace) {
  r.object(j, path);
  Endpoint out;
  const std::string apath = join_path(path, "addresses");
  const json* addresses = r.member(j, "addresses");
  if (!addresses) r.fail(apath, "missing");
  r.array(*addresses, apath);
  if (addresses->empty()) r.fail(apath, "is empty; an endpoint has at least one address");
  if (addresses->size() > kMaxEndpointAddresses) {
    r.fail(apath, "has " + std::to_string(addresses->size()) + " addresses; at most " +
                      std::to_string(kMaxEndpointAddresses) + " are allowed");
  }
  for (std::size_t i = 0; i < addresses->size(); ++i) {
    const std::string ipath = index_path(apath, i);
    if (address_type == AddressType::fqdn) {
      r.string((*addresses)[i], ipath);  // a name; not kept (see EndpointSlice)
      continue;
    }
    const IpAddress ip = ip_address(r, (*addresses)[i], ipath);
    const Family want = address_type == AddressType::ipv4 ? Family::v4 : Family::v6;
    if (ip.family() != want) {
      r.fail(ipath, quote((*addresses)[i].get<std::string>()) + " is not an " +
                        to_string(address_type) + " address (the slice's addressType)");
    }
    out.addresses.push_back(ip);
  }
  if (const json* conditions = r.member(j, "conditions")) {
    const std::string cpath = join_path(path, "conditions");
    r.object(*conditions, cpath);
    const auto condition = [&](std::string_view key) -> std::optional<bool> {
      const json* m = r.member(*conditions, key);
      if (!m) return std::nullopt;
      return r.boolean(*m, join_path(cpath, key));
    };
    out.conditions.ready = condition("ready");
    out.conditions.serving = condition("serving");
    out.conditions.terminating = condition("terminating");
  }
  out.hostname = r.string_member(j, "hostname", path);
  if (!out.hostname.empty()) {
    if (std::string p = dns1123_label_problem(out.hostname); !p.empty()) {
      r.fail(join_path(path, "hostname"), p);
    }
  }
  out.node_name = r.string_member(j, "nodeName", path);
  if (v1beta1) {
    const Labels topology = r.labels(r.member(j, "topology"), join_path(path, "topology"));
    if (const auto it = topology.find(std::string(kTopologyHostname));
        it != topology.end() && out.node_name.empty()) {
      out.node_name = it->second;
    }
    if (const auto it = topology.find(std::string(kTopologyZone)); it != topology.end()) {
      out.zone = it->second;
    }
  } else {
    out.zone = r.string_member(j, "zone", path);
  }
  if (const json* target = r.member(j, "targetRef")) {
    const std::string tpath = join_path(path, "targetRef");
    r.object(*target, tpath);
    const std::string kind = r.string_member(*target, "kind", tpath);
    const std::string name = r.string_member(*target, "name", tpath);
    const std::string namespace_ = r.string_member(*target, "namespace", tpath, slice_namespace);
    if (kind == "Pod" && !name.empty()) out.target_pod = namespace_ + "/" + name;
  }
  return out;
}

std::vector<EndpointPort> endpoint_ports_from_json(const JsonReader& r, const json* j) {
  std::vector<EndpointPort> out;
  if (!j) return out;
  const std::string path = "ports";
  r.array(*j, path);
  for (std::size_t i = 0; i < j->size(); ++i) {
    const std::string ipath = index_path(path, i);
    const json& p = r.object((*j)[i], ipath);
    EndpointPort port;
    port.name = r.string_member(p, "name", ipath);
    if (!port.name.empty()) {
      if (std::string problem = dns1123_label_problem(port.name); !problem.empty()) {
        r.fail(join_path(ipath, "name"), problem);
      }
    }
    for (std::size_t k = 0; k < out.size(); ++k) {
      if (out[k].name == port.name) {
        r.fail(join_path(ipath, "name"),
               quote(port.name) + " is also the name of " + index_path(path, k));
      }
    }
    const auto protocol = protocol_member(r, p, ipath);
    if (!protocol) continue;
    port.protocol = *protocol;
    if (const json* number = r.member(p, "port")) {
      port.port =
          static_cast<std::uint16_t>(r.integer_in(*number, join_path(ipath, "port"), 1, 65535));
    }
    out.push_back(std::move(port));
  }
  return out;
}

// `default_api_version` stands for a missing apiVersion (the items of an EndpointSliceList).
EndpointSlice decode_endpoint_slice(const json& j, std::string_view default_api_version) {
  JsonReader r("EndpointSlice");
  r.object(j, "");
  check_object_kind(r, j, "EndpointSlice");
  EndpointSlice out;
  out.meta = meta_from_json(r, r.member(j, "metadata"), "metadata", true);
  const std::string version =
      r.string_member(j, "apiVersion", "", std::string(default_api_version));
  if (version != kDiscoveryV1 && version != kDiscoveryV1beta1) {
    r.fail("apiVersion", quote(version) + " is not " + std::string(kDiscoveryV1) + " or " +
                             std::string(kDiscoveryV1beta1));
  }
  check_object_meta(r, out.meta, dns1123_subdomain_problem);
  const json* address_type = r.member(j, "addressType");
  if (!address_type) r.fail("addressType", "missing; accepted: IPv4, IPv6, FQDN");
  const std::string type_text = r.string(*address_type, "addressType");
  const auto type = parse_address_type(type_text);
  if (!type)
    r.fail("addressType", quote(type_text) + " is not an address type; accepted: IPv4, IPv6, FQDN");
  out.address_type = *type;
  if (const json* endpoints = r.member(j, "endpoints")) {
    r.array(*endpoints, "endpoints");
    for (std::size_t i = 0; i < endpoints->size(); ++i) {
      Endpoint endpoint =
          endpoint_from_json(r, (*endpoints)[i], index_path("endpoints", i), out.address_type,
                             version == kDiscoveryV1beta1, out.meta.namespace_);
      if (out.address_type != AddressType::fqdn) out.endpoints.push_back(std::move(endpoint));
    }
  }
  out.ports = endpoint_ports_from_json(r, r.member(j, "ports"));
  return out;
}

json endpoint_to_json(const Endpoint& endpoint) {
  json j = {{"addresses", ip_texts(endpoint.addresses)}};
  json conditions = json::object();
  if (endpoint.conditions.ready) conditions["ready"] = *endpoint.conditions.ready;
  if (endpoint.conditions.serving) conditions["serving"] = *endpoint.conditions.serving;
  if (endpoint.conditions.terminating) conditions["terminating"] = *endpoint.conditions.terminating;
  if (!conditions.empty()) j["conditions"] = std::move(conditions);
  if (!endpoint.hostname.empty()) j["hostname"] = endpoint.hostname;
  if (!endpoint.node_name.empty()) j["nodeName"] = endpoint.node_name;
  if (!endpoint.zone.empty()) j["zone"] = endpoint.zone;
  if (!endpoint.target_pod.empty()) {
    const auto slash = endpoint.target_pod.find('/');
    json ref = {{"kind", "Pod"}};
    if (slash == std::string::npos) {
      ref["name"] = endpoint.target_pod;
    } else {
      ref["namespace"] = endpoint.target_pod.substr(0, slash);
      ref["name"] = endpoint.target_pod.substr(slash + 1);
    }
    j["targetRef"] = std::move(ref);
  }
  return j;
}

// --- lists ---

// "v1 Pod default/web" for an object this decoder does not read; lenient about its shape.
std::string describe_object(const json& j, const std::string& kind) {
  std::string out;
  if (const auto it = j.find("apiVersion"); it != j.end() && it->is_string()) {
    out = it->get<std::string>() + " ";
  }
  out += kind;
  if (const auto meta = j.find("metadata"); meta != j.end() && meta->is_object()) {
    const auto name = meta->find("name");
    if (name != meta->end() && name->is_string()) {
      out += " ";
      const auto ns = meta->find("namespace");
      if (ns != meta->end() && ns->is_string()) out += ns->get<std::string>() + "/";
      out += name->get<std::string>();
    }
  }
  return out;
}

class ObjectsBuilder {
 public:
  // Adds the object `j` of `kind`, found at `where` ("" for the whole document, else
  // "items[3]"); `default_api_version` stands for a missing apiVersion.
  void add(const json& j, const std::string& kind, std::string_view default_api_version,
           const std::string& where) {
    try {
      if (kind == "Service") {
        Service service = decode_service(j);
        note(services_seen_, "Service", service.meta, where);
        note_sctp(j, "spec", service.spec.ports.size(), "v1 Service", service.meta);
        out_.services.push_back(std::move(service));
      } else if (kind == "EndpointSlice") {
        EndpointSlice slice = decode_endpoint_slice(j, default_api_version);
        note(slices_seen_, "EndpointSlice", slice.meta, where);
        note_sctp(j, "", slice.ports.size(), "EndpointSlice", slice.meta);
        out_.endpoint_slices.push_back(std::move(slice));
      } else {
        out_.skipped.push_back(describe_object(j, kind));
      }
    } catch (const K8sDecodeError& e) {
      if (where.empty()) throw;
      throw K8sDecodeError(where + ": " + e.what());
    }
  }

  ServiceObjects take() { return std::move(out_); }

 private:
  // Ports left out (SCTP) are named in `skipped`: "v1 Service default/sip: 1 SCTP port".
  void note_sctp(const json& j, const char* parent, std::size_t kept, const std::string& kind,
                 const ObjectMeta& meta) {
    const json* holder = &j;
    if (*parent != '\0') {
      const auto it = j.find(parent);
      if (it == j.end() || !it->is_object()) return;
      holder = &*it;
    }
    const auto ports = holder->find("ports");
    if (ports == holder->end() || !ports->is_array() || ports->size() <= kept) return;
    const std::size_t left_out = ports->size() - kept;
    out_.skipped.push_back(kind + " " + meta.namespace_ + "/" + meta.name + ": " +
                           std::to_string(left_out) + " SCTP port" + (left_out > 1 ? "s" : ""));
  }

  static void note(std::map<std::string, std::string>& seen, const std::string& kind,
                   const ObjectMeta& meta, const std::string& where) {
    const std::string key = meta.namespace_ + "/" + meta.name;
    const auto [it, inserted] = seen.emplace(key, where);
    if (!inserted) {
      throw K8sDecodeError("decode " + kind + " " + quote(key) + ": duplicate of " + it->second);
    }
  }

  ServiceObjects out_;
  std::map<std::string, std::string> services_seen_;
  std::map<std::string, std::string> slices_seen_;
};

// The reason and the position of a JSON syntax error: nlohmann's byte count (1-based, the last
// character read) turned into a line and a column of `text`.
std::string parse_error_text(std::string_view text, const json::parse_error& e) {
  std::size_t offset = e.byte == 0 ? 0 : e.byte - 1;
  offset = std::min(offset, text.size());
  const std::string_view before = text.substr(0, offset);
  const std::size_t line =
      1 + static_cast<std::size_t>(std::count(before.begin(), before.end(), '\n'));
  const auto newline = before.rfind('\n');
  const std::size_t column = newline == std::string_view::npos ? offset + 1 : offset - newline;
  // what() is "[json.exception.parse_error.101] parse error at line 1, column 2: <reason>".
  std::string reason = e.what();
  if (const auto at = reason.find("parse error"); at != std::string::npos) {
    if (const auto colon = reason.find(": ", at); colon != std::string::npos) {
      reason = reason.substr(colon + 2);
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(column) + ": " + reason;
}

}  // namespace

// --- enums ---

std::string to_string(ServiceType type) {
  switch (type) {
    case ServiceType::cluster_ip:
      return "ClusterIP";
    case ServiceType::node_port:
      return "NodePort";
    case ServiceType::load_balancer:
      return "LoadBalancer";
    case ServiceType::external_name:
      return "ExternalName";
  }
  return "?";
}

std::optional<ServiceType> parse_service_type(std::string_view text) {
  for (const auto type : {ServiceType::cluster_ip, ServiceType::node_port,
                          ServiceType::load_balancer, ServiceType::external_name}) {
    if (text == to_string(type)) return type;
  }
  return std::nullopt;
}

std::string to_string(TrafficPolicy policy) {
  return policy == TrafficPolicy::local ? "Local" : "Cluster";
}

std::optional<TrafficPolicy> parse_traffic_policy(std::string_view text) {
  if (text == "Cluster") return TrafficPolicy::cluster;
  if (text == "Local") return TrafficPolicy::local;
  return std::nullopt;
}

std::string to_string(SessionAffinity affinity) {
  return affinity == SessionAffinity::client_ip ? "ClientIP" : "None";
}

std::optional<SessionAffinity> parse_session_affinity(std::string_view text) {
  if (text == "None") return SessionAffinity::none;
  if (text == "ClientIP") return SessionAffinity::client_ip;
  return std::nullopt;
}

std::string to_string(AddressType type) {
  switch (type) {
    case AddressType::ipv4:
      return "IPv4";
    case AddressType::ipv6:
      return "IPv6";
    case AddressType::fqdn:
      return "FQDN";
  }
  return "?";
}

std::optional<AddressType> parse_address_type(std::string_view text) {
  for (const auto type : {AddressType::ipv4, AddressType::ipv6, AddressType::fqdn}) {
    if (text == to_string(type)) return type;
  }
  return std::nullopt;
}

std::string EndpointSlice::service_name() const {
  const auto it = meta.labels.find(std::string(kServiceNameLabel));
  return it == meta.labels.end() ? "" : it->second;
}

// --- JSON ---

void to_json(json& j, const Service& service) {
  j = {{"apiVersion", kServiceApiVersion},
       {"kind", "Service"},
       {"metadata", meta_to_json(service.meta, false)},
       {"spec", service_spec_to_json(service.spec)}};
  if (!service.load_balancer_ips.empty()) {
    json ingress = json::array();
    for (const auto& ip : service.load_balancer_ips)
      ingress.push_back({{"ip", ip.to_string()}});
    j["status"] = {{"loadBalancer", {{"ingress", std::move(ingress)}}}};
  }
}

void from_json(const json& j, Service& service) {
  service = decode_service(j);
}

void to_json(json& j, const EndpointSlice& slice) {
  json endpoints = json::array();
  if (slice.address_type != AddressType::fqdn) {
    for (const auto& endpoint : slice.endpoints)
      endpoints.push_back(endpoint_to_json(endpoint));
  }
  j = {{"apiVersion", kDiscoveryV1},
       {"kind", "EndpointSlice"},
       {"metadata", meta_to_json(slice.meta, false)},
       {"addressType", to_string(slice.address_type)},
       {"endpoints", std::move(endpoints)}};
  if (!slice.ports.empty()) {
    json ports = json::array();
    for (const auto& p : slice.ports) {
      json port = json::object();
      if (!p.name.empty()) port["name"] = p.name;
      port["protocol"] = to_string(p.protocol);
      if (p.port) port["port"] = *p.port;
      ports.push_back(std::move(port));
    }
    j["ports"] = std::move(ports);
  }
}

void from_json(const json& j, EndpointSlice& slice) {
  slice = decode_endpoint_slice(j, kDiscoveryV1);
}

ServiceObjects decode_service_objects(const json& document) {
  JsonReader r("service objects");
  r.object(document, "");
  const json* kind_json = r.member(document, "kind");
  if (!kind_json) r.fail("kind", "missing; expected Service, EndpointSlice or a List of them");
  const std::string kind = r.string(*kind_json, "kind");
  ObjectsBuilder builder;
  if (kind != "List" && kind != "ServiceList" && kind != "EndpointSliceList") {
    // A lone object of another kind is not a state at all: taking it for "no services" would
    // remove every rule because of a stray file.
    if (kind != "Service" && kind != "EndpointSlice") {
      r.fail("kind", quote(kind) + " is not Service, EndpointSlice or a List of them");
    }
    builder.add(document, kind, kDiscoveryV1, "");
    return builder.take();
  }

  JsonReader list(kind);
  const bool slices = kind == "EndpointSliceList";
  const std::string version = list.string_member(
      document, "apiVersion", "", std::string(slices ? kDiscoveryV1 : kServiceApiVersion));
  if (slices ? version != kDiscoveryV1 && version != kDiscoveryV1beta1
             : version != kServiceApiVersion) {
    list.fail("apiVersion",
              quote(version) + " is not " +
                  (slices ? std::string(kDiscoveryV1) + " or " + std::string(kDiscoveryV1beta1)
                          : std::string(kServiceApiVersion)));
  }
  const json* items = list.member(document, "items");
  if (!items) return builder.take();
  list.array(*items, "items");
  for (std::size_t i = 0; i < items->size(); ++i) {
    const std::string where = index_path("items", i);
    const json& item = list.object((*items)[i], where);
    // The items of a typed list may leave out kind and apiVersion (the API server's own lists
    // do); a List's items carry their own.
    std::string item_kind;
    if (kind == "List") {
      const json* k = list.member(item, "kind");
      if (!k) list.fail(join_path(where, "kind"), "missing");
      item_kind = list.string(*k, join_path(where, "kind"));
    } else {
      item_kind = list.string_member(item, "kind", where, slices ? "EndpointSlice" : "Service");
    }
    builder.add(item, item_kind, slices ? std::string_view(version) : kDiscoveryV1, where);
  }
  return builder.take();
}

ServiceObjects parse_service_objects(std::string_view text) {
  json document;
  try {
    document = json::parse(text);
  } catch (const json::parse_error& e) {
    throw K8sDecodeError("parse service objects: " + parse_error_text(text, e));
  }
  return decode_service_objects(document);
}

json encode_service_objects(const ServiceObjects& objects) {
  json items = json::array();
  for (const auto& service : objects.services)
    items.push_back(service);
  for (const auto& slice : objects.endpoint_slices)
    items.push_back(slice);
  return {{"apiVersion", "v1"}, {"kind", "List"}, {"items", std::move(items)}};
}

}  // namespace flatnet::netmodel
