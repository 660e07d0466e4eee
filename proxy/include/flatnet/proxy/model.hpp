#pragma once

// What flatnet-proxy programs, as plain values shared by every proxy mode: the service ports this
// node must serve and, for each, the endpoints it may send to. Built from netmodel's Services and
// EndpointSlices by build_state (kube-proxy's ServicePortMap and EndpointsMap in one value), and
// compared by diff (kube-proxy's change trackers), so that a mode rewrites only what changed.

#include <compare>
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "flatnet/netmodel/address.hpp"
#include "flatnet/netmodel/k8s.hpp"
#include "flatnet/netmodel/service.hpp"

namespace flatnet::proxy {

using netmodel::IpAddress;
using netmodel::Protocol;

// One port of one service: kube-proxy's ServicePortName. The unit every mode programs.
struct ServicePortName {
  std::string namespace_{};
  std::string name{};
  std::string port{};  // the ServicePort's name, "" for an unnamed port
  Protocol protocol = Protocol::tcp;

  // kube-proxy's form: "default/web:http", or "default/web" for an unnamed port.
  std::string to_string() const;
  // to_string() followed by the lower-case protocol, "default/web:httptcp": the text kube-proxy
  // hashes into chain names (portProtoHash).
  std::string hash_key() const;

  friend auto operator<=>(const ServicePortName&, const ServicePortName&) = default;
  friend bool operator==(const ServicePortName&, const ServicePortName&) = default;
};

// How a service port is reached.
struct ServicePortInfo {
  IpAddress cluster_ip{};  // always set: services without one are not proxied
  std::uint16_t port = 0;
  Protocol protocol = Protocol::tcp;
  std::uint16_t node_port = 0;  // 0: none
  std::vector<IpAddress> external_ips{};
  std::vector<IpAddress> load_balancer_ips{};
  bool session_affinity = false;  // ClientIP
  std::uint32_t affinity_timeout_seconds = netmodel::ServiceSpec::kDefaultAffinityTimeoutSeconds;
  bool external_policy_local = false;  // externalTrafficPolicy: Local
  bool internal_policy_local = false;  // internalTrafficPolicy: Local
  std::uint16_t health_check_node_port = 0;

  // Reached from outside the cluster: a node port, external IPs or load-balancer IPs. Only these
  // get a KUBE-EXT chain and obey externalTrafficPolicy.
  bool externally_accessible() const {
    return node_port != 0 || !external_ips.empty() || !load_balancer_ips.empty();
  }

  friend bool operator==(const ServicePortInfo&, const ServicePortInfo&) = default;
};

// One backend of a service port, with the conditions kube-proxy reads (EndpointSlice v1).
struct EndpointInfo {
  IpAddress ip{};
  std::uint16_t port = 0;
  bool ready = true;
  bool serving = true;
  bool terminating = false;
  bool is_local = false;  // on this node (nodeName equals the proxy's hostname)
  std::string node_name{};

  // "10.244.1.5:8080", the key kube-proxy hashes into KUBE-SEP chain names.
  std::string to_string() const;

  friend bool operator==(const EndpointInfo&, const EndpointInfo&) = default;
};

// Everything a mode programs. Endpoint lists are sorted by (ip, port) and hold each address once.
struct ProxyState {
  std::map<ServicePortName, ServicePortInfo> services{};
  std::map<ServicePortName, std::vector<EndpointInfo>> endpoints{};

  // The endpoints of `name`, empty when it has none.
  const std::vector<EndpointInfo>& endpoints_of(const ServicePortName& name) const;

  friend bool operator==(const ProxyState&, const ProxyState&) = default;
};

// Which of a service port's endpoints take traffic, by kube-proxy's rules (topology.go,
// CategorizeEndpoints): ready endpoints; if none is ready, the serving-and-terminating ones.
// `local` keeps only endpoints on this node (for the Local traffic policies). A list the service's
// policies do not use stays empty: `cluster` when internalTrafficPolicy is Local and the service
// is not reachable from outside, `local` when neither policy is Local.
struct UsableEndpoints {
  std::vector<EndpointInfo> cluster{};  // for Cluster policies
  std::vector<EndpointInfo> local{};    // for Local policies
  // Some usable endpoint exists anywhere, local or not: when false, traffic to the service is
  // rejected outright; when true but the policy's list is empty, it is dropped.
  bool has_any = false;
  bool any() const { return has_any; }
};
UsableEndpoints usable_endpoints(const ServicePortInfo& service,
                                 const std::vector<EndpointInfo>& endpoints);

// Builds the state this node programs from a set of objects. Skipped, with a line in `notes`
// ("skip service default/x: ExternalName"): ExternalName and headless services, services without
// a cluster IP, those labelled service.kubernetes.io/service-proxy-name or
// service.kubernetes.io/headless, non-IPv4 cluster IPs and slices, slices without the
// kubernetes.io/service-name label. `hostname` marks local endpoints (nodeName equal to it).
// Endpoint ports come from the slices (they resolve named target ports); an endpoint listed in
// several slices of a service counts once, the ready copy winning.
ProxyState build_state(const netmodel::ServiceObjects& objects, const std::string& hostname,
                       std::vector<std::string>* notes = nullptr);

// What differs between two states, for a mode's partial sync and for the metrics.
struct StateChanges {
  // Service ports whose service or endpoints differ (added, removed or changed).
  std::set<ServicePortName> changed{};
  std::size_t services_changed = 0;   // service ports added, removed or changed
  std::size_t endpoints_changed = 0;  // service ports whose endpoint list changed
  bool empty() const { return changed.empty(); }
};
StateChanges diff(const ProxyState& before, const ProxyState& after);

}  // namespace flatnet::proxy
