// The proxy's model: which services and endpoints a node programs (build_state), which endpoints
// take traffic under each policy (usable_endpoints), and what changed between two states (diff).

#include <gtest/gtest.h>

#include "flatnet/proxy/model.hpp"

namespace flatnet::proxy {
namespace {

using netmodel::AddressType;
using netmodel::EndpointSlice;
using netmodel::Service;
using netmodel::ServiceObjects;
using netmodel::ServiceType;

IpAddress ip(const char* text) {
  return IpAddress::parse(text);
}

Service service(const char* name, const char* cluster_ip,
                std::vector<netmodel::ServicePort> ports = {
                    {"", Protocol::tcp, 80, {8080, ""}, 0}}) {
  Service s;
  s.meta.name = name;
  s.spec.cluster_ips = {ip(cluster_ip)};
  s.spec.ports = std::move(ports);
  return s;
}

netmodel::Endpoint endpoint(const char* address, const char* node = "node-1",
                            std::optional<bool> ready = {}, std::optional<bool> serving = {},
                            std::optional<bool> terminating = {}) {
  netmodel::Endpoint e;
  e.addresses = {ip(address)};
  e.node_name = node;
  e.conditions = {ready, serving, terminating};
  return e;
}

EndpointSlice slice(const char* service_name, std::vector<netmodel::Endpoint> endpoints,
                    std::vector<netmodel::EndpointPort> ports = {{"", Protocol::tcp, 8080}}) {
  EndpointSlice s;
  s.meta.name = std::string(service_name) + "-abcde";
  s.meta.labels[std::string(netmodel::kServiceNameLabel)] = service_name;
  s.endpoints = std::move(endpoints);
  s.ports = std::move(ports);
  return s;
}

const ServicePortName kWeb{"default", "web", "", Protocol::tcp};

TEST(ProxyModel, NamesReadLikeKubeProxys) {
  EXPECT_EQ(kWeb.to_string(), "default/web");
  EXPECT_EQ(kWeb.hash_key(), "default/webtcp");
  const ServicePortName dns{"kube-system", "dns", "dns", Protocol::udp};
  EXPECT_EQ(dns.to_string(), "kube-system/dns:dns");
  EXPECT_EQ(dns.hash_key(), "kube-system/dns:dnsudp");
  EndpointInfo e;
  e.ip = ip("10.244.1.5");
  e.port = 8080;
  EXPECT_EQ(e.to_string(), "10.244.1.5:8080");
}

TEST(ProxyModel, BuildsServicePortsWithTheirEndpoints) {
  ServiceObjects objects;
  objects.services.push_back(service("web", "10.96.0.10"));
  objects.endpoint_slices.push_back(
      slice("web", {endpoint("10.244.2.7", "node-2"), endpoint("10.244.1.5", "node-1")}));
  const auto state = build_state(objects, "node-1");
  ASSERT_EQ(state.services.size(), 1U);
  const auto& info = state.services.at(kWeb);
  EXPECT_EQ(info.cluster_ip, ip("10.96.0.10"));
  EXPECT_EQ(info.port, 80);
  EXPECT_EQ(info.node_port, 0);
  const auto& endpoints = state.endpoints_of(kWeb);
  ASSERT_EQ(endpoints.size(), 2U);
  EXPECT_EQ(endpoints[0].to_string(), "10.244.1.5:8080");  // sorted
  EXPECT_TRUE(endpoints[0].is_local);
  EXPECT_FALSE(endpoints[1].is_local);
  EXPECT_EQ(endpoints[1].node_name, "node-2");
}

TEST(ProxyModel, EachPortOfAServiceIsItsOwnUnitWithPortsFromTheSlices) {
  ServiceObjects objects;
  objects.services.push_back(service("dns", "10.96.0.53",
                                     {{"dns", Protocol::udp, 53, {0, "dns"}, 0},
                                      {"dns-tcp", Protocol::tcp, 53, {0, "dns-tcp"}, 0}}));
  objects.endpoint_slices.push_back(
      slice("dns", {endpoint("10.244.1.9")},
            {{"dns", Protocol::udp, 5353}, {"dns-tcp", Protocol::tcp, 5354}}));
  const auto state = build_state(objects, "node-1");
  const ServicePortName udp{"default", "dns", "dns", Protocol::udp};
  const ServicePortName tcp{"default", "dns", "dns-tcp", Protocol::tcp};
  ASSERT_EQ(state.services.size(), 2U);
  ASSERT_EQ(state.endpoints_of(udp).size(), 1U);
  EXPECT_EQ(state.endpoints_of(udp)[0].port, 5353);
  EXPECT_EQ(state.endpoints_of(tcp)[0].port, 5354);
}

TEST(ProxyModel, SkipsWhatKubeProxySkipsAndSaysWhy) {
  ServiceObjects objects;
  auto external = service("ext", "10.96.0.1");
  external.spec.type = ServiceType::external_name;
  auto headless = service("headless", "10.96.0.2");
  headless.spec.cluster_ips.clear();
  headless.spec.headless = true;
  auto unallocated = service("new", "10.96.0.3");
  unallocated.spec.cluster_ips.clear();
  auto other_proxy = service("other", "10.96.0.4");
  other_proxy.meta.labels[std::string(netmodel::kServiceProxyNameLabel)] = "cilium";
  auto labelled = service("labelled", "10.96.0.5");
  labelled.meta.labels[std::string(netmodel::kHeadlessLabel)] = "";
  auto v6 = service("v6", "fd00::10");
  objects.services = {external, headless, unallocated, other_proxy, labelled, v6};
  auto no_label = slice("web", {endpoint("10.244.1.5")});
  no_label.meta.labels.clear();
  auto fqdn = slice("web", {});
  fqdn.address_type = AddressType::fqdn;
  objects.endpoint_slices = {no_label, fqdn};
  std::vector<std::string> notes;
  const auto state = build_state(objects, "node-1", &notes);
  EXPECT_TRUE(state.services.empty());
  EXPECT_TRUE(state.endpoints.empty());
  const std::vector<std::string> expected = {
      "skip service default/ext: type ExternalName",
      "skip service default/headless: headless (clusterIP None)",
      "skip service default/new: no cluster IP allocated",
      "skip service default/other: labelled service.kubernetes.io/service-proxy-name=cilium",
      "skip service default/labelled: labelled service.kubernetes.io/headless",
      "skip service default/v6: cluster IP is not IPv4",
      "skip endpointslice default/web-abcde: no kubernetes.io/service-name label",
      "skip endpointslice default/web-abcde: address type FQDN",
  };
  EXPECT_EQ(notes, expected);
}

TEST(ProxyModel, NodePortsAndLoadBalancerAddressesFollowTheType) {
  auto node_port = service("np", "10.96.0.20", {{"", Protocol::tcp, 80, {8080, ""}, 30080}});
  auto cluster_ip = node_port;
  cluster_ip.meta.name = "cip";  // a stale nodePort on a ClusterIP service is ignored
  node_port.spec.type = ServiceType::node_port;
  auto lb = service("lb", "10.96.0.21", {{"", Protocol::tcp, 80, {8080, ""}, 30081}});
  lb.spec.type = ServiceType::load_balancer;
  lb.load_balancer_ips = {ip("192.0.2.10"), ip("2001:db8::1")};
  node_port.load_balancer_ips = {ip("192.0.2.11")};  // only LoadBalancer services use them
  ServiceObjects objects;
  objects.services = {node_port, cluster_ip, lb};
  const auto state = build_state(objects, "node-1");
  EXPECT_EQ(state.services.at({"default", "np", "", Protocol::tcp}).node_port, 30080);
  EXPECT_TRUE(state.services.at({"default", "np", "", Protocol::tcp}).load_balancer_ips.empty());
  EXPECT_EQ(state.services.at({"default", "cip", "", Protocol::tcp}).node_port, 0);
  const auto& lb_info = state.services.at({"default", "lb", "", Protocol::tcp});
  EXPECT_EQ(lb_info.node_port, 30081);
  EXPECT_EQ(lb_info.load_balancer_ips, std::vector<IpAddress>{ip("192.0.2.10")});
}

TEST(ProxyModel, ExternalPolicyLocalOnlyForExternallyReachableServices) {
  auto internal = service("internal", "10.96.0.30");
  internal.spec.external_traffic_policy = netmodel::TrafficPolicy::local;
  internal.spec.health_check_node_port = 32000;
  auto node_port = service("np", "10.96.0.31", {{"", Protocol::tcp, 80, {8080, ""}, 30080}});
  node_port.spec.type = ServiceType::node_port;
  node_port.spec.external_traffic_policy = netmodel::TrafficPolicy::local;
  node_port.spec.health_check_node_port = 32001;
  auto external_ip = service("eip", "10.96.0.32");
  external_ip.spec.external_ips = {ip("192.0.2.50")};
  external_ip.spec.external_traffic_policy = netmodel::TrafficPolicy::local;
  ServiceObjects objects;
  objects.services = {internal, node_port, external_ip};
  const auto state = build_state(objects, "node-1");
  const auto& a = state.services.at({"default", "internal", "", Protocol::tcp});
  EXPECT_FALSE(a.external_policy_local);
  EXPECT_EQ(a.health_check_node_port, 0);
  const auto& b = state.services.at({"default", "np", "", Protocol::tcp});
  EXPECT_TRUE(b.external_policy_local);
  EXPECT_EQ(b.health_check_node_port, 32001);
  EXPECT_TRUE(state.services.at({"default", "eip", "", Protocol::tcp}).external_policy_local);
}

TEST(ProxyModel, AffinityAndInternalPolicyAreCarried) {
  auto s = service("web", "10.96.0.10");
  s.spec.session_affinity = netmodel::SessionAffinity::client_ip;
  s.spec.affinity_timeout_seconds = 60;
  s.spec.internal_traffic_policy = netmodel::TrafficPolicy::local;
  ServiceObjects objects;
  objects.services = {s};
  const auto& info = build_state(objects, "node-1").services.at(kWeb);
  EXPECT_TRUE(info.session_affinity);
  EXPECT_EQ(info.affinity_timeout_seconds, 60U);
  EXPECT_TRUE(info.internal_policy_local);
}

TEST(ProxyModel, AnEndpointInSeveralSlicesCountsOnceAndTheReadyCopyWins) {
  ServiceObjects objects;
  objects.services.push_back(service("web", "10.96.0.10"));
  objects.endpoint_slices.push_back(slice("web", {endpoint("10.244.1.5", "node-1", false)}));
  auto second = slice("web", {endpoint("10.244.1.5", "node-1", true)});
  second.meta.name = "web-fghij";
  objects.endpoint_slices.push_back(second);
  const auto state = build_state(objects, "node-1");
  ASSERT_EQ(state.endpoints_of(kWeb).size(), 1U);
  EXPECT_TRUE(state.endpoints_of(kWeb)[0].ready);
}

TEST(ProxyModel, EndpointsNeedAResolvedPortAMatchingServicePortAndAnIpv4Address) {
  ServiceObjects objects;
  objects.services.push_back(service("web", "10.96.0.10"));
  auto unresolved = slice("web", {endpoint("10.244.1.5")}, {{"", Protocol::tcp, std::nullopt}});
  auto wrong_port = slice("web", {endpoint("10.244.1.6")}, {{"http", Protocol::tcp, 8080}});
  auto wrong_protocol = slice("web", {endpoint("10.244.1.7")}, {{"", Protocol::udp, 8080}});
  auto other_namespace = slice("web", {endpoint("10.244.1.8")});
  other_namespace.meta.namespace_ = "prod";
  objects.endpoint_slices = {unresolved, wrong_port, wrong_protocol, other_namespace};
  EXPECT_TRUE(build_state(objects, "node-1").endpoints.empty());
}

TEST(ProxyModel, NoHostnameMeansNoLocalEndpoints) {
  ServiceObjects objects;
  objects.services.push_back(service("web", "10.96.0.10"));
  objects.endpoint_slices.push_back(slice("web", {endpoint("10.244.1.5", "")}));
  EXPECT_FALSE(build_state(objects, "").endpoints_of(kWeb)[0].is_local);
}

TEST(ProxyModel, ConditionsDefaultAsKubernetesDefinesThem) {
  ServiceObjects objects;
  objects.services.push_back(service("web", "10.96.0.10"));
  objects.endpoint_slices.push_back(
      slice("web", {endpoint("10.244.1.1"), endpoint("10.244.1.2", "node-1", false),
                    endpoint("10.244.1.3", "node-1", false, true, true)}));
  const auto& list = build_state(objects, "node-1").endpoints_of(kWeb);
  ASSERT_EQ(list.size(), 3U);
  EXPECT_TRUE(list[0].ready && list[0].serving && !list[0].terminating);
  EXPECT_TRUE(!list[1].ready && list[1].serving && !list[1].terminating);  // serving unset: true
  EXPECT_TRUE(!list[2].ready && list[2].serving && list[2].terminating);
}

EndpointInfo info(const char* address, bool ready, bool serving, bool terminating, bool local) {
  EndpointInfo e;
  e.ip = ip(address);
  e.port = 8080;
  e.ready = ready;
  e.serving = serving;
  e.terminating = terminating;
  e.is_local = local;
  return e;
}

std::vector<std::string> texts(const std::vector<EndpointInfo>& endpoints) {
  std::vector<std::string> out;
  for (const auto& e : endpoints)
    out.push_back(e.ip.to_string());
  return out;
}

using Texts = std::vector<std::string>;

TEST(ProxyModelUsable, ReadyEndpointsOnly) {
  ServicePortInfo svc;
  const auto usable = usable_endpoints(
      svc, {info("10.0.0.1", true, true, false, false), info("10.0.0.2", false, false, false, true),
            info("10.0.0.3", false, true, true, true)});
  EXPECT_EQ(texts(usable.cluster), Texts{"10.0.0.1"});
  EXPECT_TRUE(usable.local.empty());  // no Local policy
  EXPECT_TRUE(usable.any());
}

TEST(ProxyModelUsable, TerminatingButServingOnlyWhenNoneIsReady) {
  ServicePortInfo svc;
  const auto usable = usable_endpoints(
      svc, {info("10.0.0.1", false, true, true, false), info("10.0.0.2", false, false, true, false),
            info("10.0.0.3", false, false, false, false)});
  EXPECT_EQ(texts(usable.cluster), Texts{"10.0.0.1"});
  EXPECT_TRUE(usable.any());
}

TEST(ProxyModelUsable, NothingUsableMeansNoEndpoints) {
  ServicePortInfo svc;
  const auto usable = usable_endpoints(svc, {info("10.0.0.2", false, false, true, false)});
  EXPECT_TRUE(usable.cluster.empty());
  EXPECT_FALSE(usable.any());
  EXPECT_FALSE(usable_endpoints(svc, {}).any());
}

TEST(ProxyModelUsable, ExternalPolicyLocalKeepsBothListsForNodePorts) {
  ServicePortInfo svc;
  svc.node_port = 30080;
  svc.external_policy_local = true;
  const auto usable = usable_endpoints(
      svc, {info("10.0.0.1", true, true, false, false), info("10.0.0.2", true, true, false, true)});
  EXPECT_EQ(texts(usable.cluster), (Texts{"10.0.0.1", "10.0.0.2"}));  // internal traffic
  EXPECT_EQ(texts(usable.local), Texts{"10.0.0.2"});                  // external traffic
}

TEST(ProxyModelUsable, InternalPolicyLocalWithoutLocalEndpointsStillHasAny) {
  ServicePortInfo svc;
  svc.internal_policy_local = true;
  const auto usable = usable_endpoints(svc, {info("10.0.0.1", true, true, false, false)});
  EXPECT_TRUE(usable.cluster.empty());  // internal-only and Local: the cluster list is unused
  EXPECT_TRUE(usable.local.empty());
  EXPECT_TRUE(usable.any());  // so traffic is dropped, not rejected
}

TEST(ProxyModelUsable, BothPoliciesLocalStillKeepTheClusterListForNodePorts) {
  // KUBE-EXT sends the node's own traffic to the Cluster chain (kube-proxy's
  // UsesClusterEndpoints): it must exist even when both policies are Local.
  ServicePortInfo svc;
  svc.node_port = 30080;
  svc.internal_policy_local = true;
  svc.external_policy_local = true;
  const auto usable = usable_endpoints(
      svc, {info("10.0.0.1", true, true, false, false), info("10.0.0.2", true, true, false, true)});
  EXPECT_EQ(texts(usable.cluster), (Texts{"10.0.0.1", "10.0.0.2"}));
  EXPECT_EQ(texts(usable.local), Texts{"10.0.0.2"});
}

TEST(ProxyModelUsable, LocalTerminatingFallbackIsPerNode) {
  ServicePortInfo svc;
  svc.internal_policy_local = true;
  const auto usable = usable_endpoints(
      svc, {info("10.0.0.1", true, true, false, false), info("10.0.0.2", false, true, true, true)});
  // A ready endpoint exists elsewhere, but this node only has a terminating one: use it.
  EXPECT_EQ(texts(usable.local), Texts{"10.0.0.2"});
}

ProxyState two_services() {
  ServiceObjects objects;
  objects.services = {service("web", "10.96.0.10"), service("api", "10.96.0.11")};
  objects.endpoint_slices = {slice("web", {endpoint("10.244.1.5")}),
                             slice("api", {endpoint("10.244.1.6")})};
  return build_state(objects, "node-1");
}

TEST(ProxyModelDiff, EqualStatesHaveNoChanges) {
  const auto changes = diff(two_services(), two_services());
  EXPECT_TRUE(changes.empty());
  EXPECT_EQ(changes.services_changed, 0U);
  EXPECT_EQ(changes.endpoints_changed, 0U);
}

TEST(ProxyModelDiff, FromNothingEverythingChanged) {
  const auto changes = diff(ProxyState{}, two_services());
  EXPECT_EQ(changes.changed.size(), 2U);
  EXPECT_EQ(changes.services_changed, 2U);
  EXPECT_EQ(changes.endpoints_changed, 2U);
  const auto removed = diff(two_services(), ProxyState{});
  EXPECT_EQ(removed.changed.size(), 2U);
}

TEST(ProxyModelDiff, AnEndpointChangeNamesOnlyItsServicePort) {
  auto after = two_services();
  after.endpoints[kWeb][0].ready = false;
  const auto changes = diff(two_services(), after);
  EXPECT_EQ(changes.changed, std::set<ServicePortName>{kWeb});
  EXPECT_EQ(changes.services_changed, 0U);
  EXPECT_EQ(changes.endpoints_changed, 1U);
}

TEST(ProxyModelDiff, AServiceChangeNamesOnlyItsServicePort) {
  auto after = two_services();
  after.services[kWeb].session_affinity = true;
  const auto changes = diff(two_services(), after);
  EXPECT_EQ(changes.changed, std::set<ServicePortName>{kWeb});
  EXPECT_EQ(changes.services_changed, 1U);
  EXPECT_EQ(changes.endpoints_changed, 0U);
}

TEST(ProxyModelDiff, LosingAllEndpointsIsAChange) {
  auto after = two_services();
  after.endpoints.erase(kWeb);
  const auto changes = diff(two_services(), after);
  EXPECT_EQ(changes.changed, std::set<ServicePortName>{kWeb});
  EXPECT_EQ(changes.endpoints_changed, 1U);
}

}  // namespace
}  // namespace flatnet::proxy
