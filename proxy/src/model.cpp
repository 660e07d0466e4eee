#include "flatnet/proxy/model.hpp"

#include <algorithm>
#include <utility>

namespace flatnet::proxy {
namespace {

using netmodel::EndpointSlice;
using netmodel::Service;
using netmodel::ServiceType;

void note(std::vector<std::string>* notes, std::string text) {
  if (notes != nullptr) notes->push_back(std::move(text));
}

std::string lower_protocol(Protocol protocol) {
  return protocol == Protocol::tcp ? "tcp" : "udp";
}

// Why kube-proxy would not program `service`, or "".
std::string skip_reason(const Service& service) {
  const auto& labels = service.meta.labels;
  if (labels.contains(std::string(netmodel::kServiceProxyNameLabel))) {
    return "labelled " + std::string(netmodel::kServiceProxyNameLabel) + "=" +
           labels.at(std::string(netmodel::kServiceProxyNameLabel));
  }
  if (labels.contains(std::string(netmodel::kHeadlessLabel))) {
    return "labelled " + std::string(netmodel::kHeadlessLabel);
  }
  if (service.spec.type == ServiceType::external_name) return "type ExternalName";
  if (service.spec.headless) return "headless (clusterIP None)";
  if (service.spec.cluster_ips.empty()) return "no cluster IP allocated";
  if (!service.spec.cluster_ips.front().is_v4()) return "cluster IP is not IPv4";
  return "";
}

template <typename T>
std::vector<T> v4_only(const std::vector<T>& addresses) {
  std::vector<T> kept;
  for (const auto& a : addresses) {
    if (a.is_v4()) kept.push_back(a);
  }
  return kept;
}

std::string object_key(const netmodel::ObjectMeta& meta) {
  return meta.namespace_ + "/" + meta.name;
}

// Which copy of an endpoint listed twice counts: the ready one, else the serving one.
int rank(const EndpointInfo& e) {
  return e.ready ? 2 : (e.serving ? 1 : 0);
}

template <typename Predicate>
std::vector<EndpointInfo> filtered(const std::vector<EndpointInfo>& endpoints, Predicate keep) {
  std::vector<EndpointInfo> out;
  for (const auto& e : endpoints) {
    if (keep(e)) out.push_back(e);
  }
  return out;
}

}  // namespace

std::string ServicePortName::to_string() const {
  std::string text = namespace_ + "/" + name;
  if (!port.empty()) text += ":" + port;
  return text;
}

std::string ServicePortName::hash_key() const {
  return to_string() + lower_protocol(protocol);
}

std::string EndpointInfo::to_string() const {
  return ip.to_string() + ":" + std::to_string(port);
}

const std::vector<EndpointInfo>& ProxyState::endpoints_of(const ServicePortName& name) const {
  static const std::vector<EndpointInfo> none;
  const auto it = endpoints.find(name);
  return it == endpoints.end() ? none : it->second;
}

UsableEndpoints usable_endpoints(const ServicePortInfo& service,
                                 const std::vector<EndpointInfo>& endpoints) {
  UsableEndpoints usable;
  const bool externally_accessible = service.externally_accessible();
  // Externally reachable services always need the Cluster list: KUBE-EXT sends traffic from this
  // node and its pods there, whatever the external policy (kube-proxy's UsesClusterEndpoints).
  const bool uses_cluster = !service.internal_policy_local || externally_accessible;
  const bool uses_local =
      service.internal_policy_local || (externally_accessible && service.external_policy_local);

  if (uses_cluster) {
    usable.cluster = filtered(endpoints, [](const EndpointInfo& e) { return e.ready; });
    // No ready endpoint anywhere: fall back to those still serving while terminating.
    if (usable.cluster.empty()) {
      usable.cluster =
          filtered(endpoints, [](const EndpointInfo& e) { return e.serving && e.terminating; });
    }
    usable.has_any = !usable.cluster.empty();
  }
  if (!uses_local) return usable;

  bool local_ready = false;
  bool local_serving_terminating = false;
  for (const auto& e : endpoints) {
    if (e.ready) {
      usable.has_any = true;
      local_ready = local_ready || e.is_local;
    } else if (e.serving && e.terminating) {
      usable.has_any = true;
      local_serving_terminating = local_serving_terminating || e.is_local;
    }
  }
  if (local_ready) {
    usable.local = filtered(endpoints, [](const EndpointInfo& e) { return e.is_local && e.ready; });
  } else if (local_serving_terminating) {
    usable.local = filtered(
        endpoints, [](const EndpointInfo& e) { return e.is_local && e.serving && e.terminating; });
  }
  return usable;
}

ProxyState build_state(const netmodel::ServiceObjects& objects, const std::string& hostname,
                       std::vector<std::string>* notes) {
  ProxyState state;
  for (const auto& service : objects.services) {
    if (const auto reason = skip_reason(service); !reason.empty()) {
      note(notes, "skip service " + object_key(service.meta) + ": " + reason);
      continue;
    }
    const auto& spec = service.spec;
    const bool has_node_ports =
        spec.type == ServiceType::node_port || spec.type == ServiceType::load_balancer;
    for (const auto& port : spec.ports) {
      ServicePortName name{service.meta.namespace_, service.meta.name, port.name, port.protocol};
      ServicePortInfo info;
      info.cluster_ip = spec.cluster_ips.front();
      info.port = port.port;
      info.protocol = port.protocol;
      info.node_port = has_node_ports ? port.node_port : 0;
      info.external_ips = v4_only(spec.external_ips);
      if (spec.type == ServiceType::load_balancer) {
        info.load_balancer_ips = v4_only(service.load_balancer_ips);
      }
      info.session_affinity = spec.session_affinity == netmodel::SessionAffinity::client_ip;
      info.affinity_timeout_seconds = spec.affinity_timeout_seconds;
      info.internal_policy_local = spec.internal_traffic_policy == netmodel::TrafficPolicy::local;
      // externalTrafficPolicy only means something for traffic that can come from outside.
      info.external_policy_local = info.externally_accessible() &&
                                   spec.external_traffic_policy == netmodel::TrafficPolicy::local;
      info.health_check_node_port = info.external_policy_local ? spec.health_check_node_port : 0;
      if (state.services.contains(name)) {
        note(notes, "skip service port " + name.to_string() + "/" + lower_protocol(name.protocol) +
                        ": listed twice");
        continue;
      }
      state.services.emplace(std::move(name), std::move(info));
    }
  }

  for (const EndpointSlice& slice : objects.endpoint_slices) {
    const std::string service_name = slice.service_name();
    if (service_name.empty()) {
      note(notes, "skip endpointslice " + object_key(slice.meta) + ": no " +
                      std::string(netmodel::kServiceNameLabel) + " label");
      continue;
    }
    if (slice.address_type != netmodel::AddressType::ipv4) {
      note(notes, "skip endpointslice " + object_key(slice.meta) + ": address type " +
                      netmodel::to_string(slice.address_type));
      continue;
    }
    for (const auto& port : slice.ports) {
      if (!port.port) continue;  // not resolvable for these endpoints
      const ServicePortName name{slice.meta.namespace_, service_name, port.name, port.protocol};
      if (!state.services.contains(name)) continue;
      auto& list = state.endpoints[name];
      for (const auto& endpoint : slice.endpoints) {
        if (endpoint.addresses.empty() || !endpoint.addresses.front().is_v4()) continue;
        EndpointInfo info;
        info.ip = endpoint.addresses.front();
        info.port = *port.port;
        info.ready = endpoint.conditions.is_ready();
        info.serving = endpoint.conditions.is_serving();
        info.terminating = endpoint.conditions.is_terminating();
        info.node_name = endpoint.node_name;
        info.is_local = !hostname.empty() && endpoint.node_name == hostname;
        list.push_back(std::move(info));
      }
    }
  }

  // Sort, and keep one copy of an endpoint listed in several slices.
  for (auto it = state.endpoints.begin(); it != state.endpoints.end();) {
    auto& list = it->second;
    std::stable_sort(list.begin(), list.end(), [](const EndpointInfo& a, const EndpointInfo& b) {
      if (a.ip != b.ip) return a.ip < b.ip;
      if (a.port != b.port) return a.port < b.port;
      return rank(a) > rank(b);
    });
    list.erase(std::unique(list.begin(), list.end(),
                           [](const EndpointInfo& a, const EndpointInfo& b) {
                             return a.ip == b.ip && a.port == b.port;
                           }),
               list.end());
    it = list.empty() ? state.endpoints.erase(it) : std::next(it);
  }
  return state;
}

StateChanges diff(const ProxyState& before, const ProxyState& after) {
  StateChanges changes;
  // Walk both sorted maps together.
  auto a = before.services.begin();
  auto b = after.services.begin();
  while (a != before.services.end() || b != after.services.end()) {
    if (b == after.services.end() || (a != before.services.end() && a->first < b->first)) {
      changes.changed.insert(a->first);
      ++changes.services_changed;
      if (!before.endpoints_of(a->first).empty()) ++changes.endpoints_changed;
      ++a;
    } else if (a == before.services.end() || b->first < a->first) {
      changes.changed.insert(b->first);
      ++changes.services_changed;
      if (!after.endpoints_of(b->first).empty()) ++changes.endpoints_changed;
      ++b;
    } else {
      const bool service_differs = a->second != b->second;
      const bool endpoints_differ = before.endpoints_of(a->first) != after.endpoints_of(b->first);
      if (service_differs || endpoints_differ) changes.changed.insert(a->first);
      if (service_differs) ++changes.services_changed;
      if (endpoints_differ) ++changes.endpoints_changed;
      ++a;
      ++b;
    }
  }
  return changes;
}

}  // namespace flatnet::proxy
