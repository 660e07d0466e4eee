// Services and EndpointSlices (service.hpp): decoding real `kubectl get -o json` output, defaults,
// Kubernetes' validation rules with exact messages, lists and skipped kinds, and round trips.

#include "flatnet/netmodel/service.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

namespace flatnet::netmodel {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

IpAddress ip(std::string_view text) {
  return IpAddress::parse(text);
}

// What parse_service_objects throws for `text`, or "" when it accepts it.
std::string decode_error(std::string_view text) {
  try {
    (void)parse_service_objects(text);
  } catch (const K8sDecodeError& e) {
    return e.what();
  }
  return "";
}

// A trimmed `kubectl get svc,endpointslices,pods -A -o json` of a small cluster, with the fields
// the API server adds (managedFields, uid, resourceVersion, ipFamilies, status) left in.
constexpr std::string_view kKubectlDump = R"({
  "apiVersion": "v1",
  "kind": "List",
  "metadata": {"resourceVersion": ""},
  "items": [
    {
      "apiVersion": "v1",
      "kind": "Service",
      "metadata": {
        "creationTimestamp": "2024-05-02T09:11:04Z",
        "labels": {"component": "apiserver", "provider": "kubernetes"},
        "managedFields": [{"apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}},
                           "manager": "kube-apiserver", "operation": "Update",
                           "time": "2024-05-02T09:11:04Z"}],
        "name": "kubernetes",
        "namespace": "default",
        "resourceVersion": "198",
        "uid": "6e0b3f4e-2d6c-4f5a-9a57-1c1f6a0e9b1d"
      },
      "spec": {
        "clusterIP": "10.96.0.1",
        "clusterIPs": ["10.96.0.1"],
        "internalTrafficPolicy": "Cluster",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
        "sessionAffinity": "None",
        "type": "ClusterIP"
      },
      "status": {"loadBalancer": {}}
    },
    {
      "apiVersion": "v1",
      "kind": "Service",
      "metadata": {
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\"}\n"},
        "labels": {"k8s-app": "kube-dns"},
        "name": "kube-dns",
        "namespace": "kube-system",
        "uid": "0d1c7a55-8f1e-4c0b-8c43-8b9f2d7e6a10"
      },
      "spec": {
        "clusterIP": "10.96.0.10",
        "clusterIPs": ["10.96.0.10"],
        "ports": [
          {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
          {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
          {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}
        ],
        "selector": {"k8s-app": "kube-dns"},
        "sessionAffinity": "None",
        "type": "ClusterIP"
      },
      "status": {"loadBalancer": {}}
    },
    {
      "apiVersion": "v1",
      "kind": "Service",
      "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "5012"},
      "spec": {
        "allocateLoadBalancerNodePorts": true,
        "clusterIP": "10.96.20.5",
        "clusterIPs": ["10.96.20.5", "fd00:10:96::5"],
        "externalIPs": ["192.0.2.10"],
        "externalTrafficPolicy": "Local",
        "healthCheckNodePort": 32001,
        "ipFamilies": ["IPv4", "IPv6"],
        "ipFamilyPolicy": "PreferDualStack",
        "ports": [
          {"name": "http", "nodePort": 30080, "port": 80, "protocol": "TCP", "targetPort": "http"}
        ],
        "selector": {"app": "web"},
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
        "type": "LoadBalancer"
      },
      "status": {
        "loadBalancer": {
          "ingress": [{"ip": "203.0.113.7", "ipMode": "VIP"}, {"hostname": "lb.example.com"}]
        }
      }
    },
    {
      "apiVersion": "v1",
      "kind": "Service",
      "metadata": {"name": "db", "namespace": "shop"},
      "spec": {
        "clusterIP": "None",
        "clusterIPs": ["None"],
        "ports": [{"port": 5432, "protocol": "TCP", "targetPort": 5432}],
        "publishNotReadyAddresses": true,
        "selector": {"app": "db"},
        "type": "ClusterIP"
      },
      "status": {"loadBalancer": {}}
    },
    {
      "apiVersion": "v1",
      "kind": "Service",
      "metadata": {"name": "search", "namespace": "shop"},
      "spec": {"externalName": "search.example.com.", "sessionAffinity": "None",
               "type": "ExternalName"},
      "status": {"loadBalancer": {}}
    },
    {
      "addressType": "IPv4",
      "apiVersion": "discovery.k8s.io/v1",
      "endpoints": [
        {
          "addresses": ["10.244.1.5"],
          "conditions": {"ready": true, "serving": true, "terminating": false},
          "nodeName": "node-1",
          "targetRef": {"kind": "Pod", "name": "web-7d4b9c-abcde", "namespace": "shop",
                        "uid": "a3c1e2f0-0000-4000-8000-000000000001"},
          "zone": "zone-a",
          "hints": {"forZones": [{"name": "zone-a"}]}
        },
        {
          "addresses": ["10.244.2.7"],
          "conditions": {"ready": false, "serving": true, "terminating": true},
          "hostname": "web-1",
          "nodeName": "node-2",
          "targetRef": {"kind": "Pod", "name": "web-7d4b9c-fghij", "namespace": "shop"}
        }
      ],
      "kind": "EndpointSlice",
      "metadata": {
        "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2024-05-02T09:12:00Z"},
        "generateName": "web-",
        "generation": 3,
        "labels": {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                   "kubernetes.io/service-name": "web"},
        "name": "web-x7k2p",
        "namespace": "shop",
        "ownerReferences": [{"apiVersion": "v1", "blockOwnerDeletion": true, "controller": true,
                             "kind": "Service", "name": "web", "uid": "x"}]
      },
      "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]
    },
    {
      "addressType": "IPv4",
      "apiVersion": "discovery.k8s.io/v1",
      "endpoints": null,
      "kind": "EndpointSlice",
      "metadata": {"labels": {"kubernetes.io/service-name": "db"}, "name": "db-9sd8f",
                   "namespace": "shop"},
      "ports": null
    },
    {
      "apiVersion": "v1",
      "kind": "Pod",
      "metadata": {"name": "web-7d4b9c-abcde", "namespace": "shop"},
      "spec": {"containers": [{"name": "web", "image": "nginx"}]}
    },
    {
      "apiVersion": "v1",
      "kind": "Node",
      "metadata": {"name": "node-1"}
    }
  ]
})";

// --- enums ---

TEST(ServiceEnums, NamesRoundTrip) {
  for (const auto type : {ServiceType::cluster_ip, ServiceType::node_port,
                          ServiceType::load_balancer, ServiceType::external_name}) {
    EXPECT_EQ(parse_service_type(to_string(type)), type);
  }
  for (const auto policy : {TrafficPolicy::cluster, TrafficPolicy::local}) {
    EXPECT_EQ(parse_traffic_policy(to_string(policy)), policy);
  }
  for (const auto affinity : {SessionAffinity::none, SessionAffinity::client_ip}) {
    EXPECT_EQ(parse_session_affinity(to_string(affinity)), affinity);
  }
  for (const auto type : {AddressType::ipv4, AddressType::ipv6, AddressType::fqdn}) {
    EXPECT_EQ(parse_address_type(to_string(type)), type);
  }
}

TEST(ServiceEnums, KubernetesSpellings) {
  EXPECT_EQ(to_string(ServiceType::load_balancer), "LoadBalancer");
  EXPECT_EQ(to_string(ServiceType::external_name), "ExternalName");
  EXPECT_EQ(to_string(SessionAffinity::client_ip), "ClientIP");
  EXPECT_EQ(to_string(AddressType::fqdn), "FQDN");
  EXPECT_EQ(to_string(TrafficPolicy::local), "Local");
}

TEST(ServiceEnums, ParsingIsCaseSensitive) {
  EXPECT_EQ(parse_service_type("clusterip"), std::nullopt);
  EXPECT_EQ(parse_traffic_policy("local"), std::nullopt);
  EXPECT_EQ(parse_traffic_policy("Global"), std::nullopt);  // only the decoder maps it
  EXPECT_EQ(parse_session_affinity("none"), std::nullopt);
  EXPECT_EQ(parse_address_type("ipv4"), std::nullopt);
  EXPECT_EQ(parse_address_type(""), std::nullopt);
}

TEST(EndpointConditions, UnsetConditionsKeepKubernetesMeaning) {
  const EndpointConditions unset;
  EXPECT_TRUE(unset.is_ready());
  EXPECT_TRUE(unset.is_serving());
  EXPECT_FALSE(unset.is_terminating());
  const EndpointConditions not_ready{.ready = false};
  EXPECT_FALSE(not_ready.is_ready());
  // kube-proxy reads an unset serving as true: a terminating endpoint without the field is
  // still a fallback.
  EXPECT_TRUE(not_ready.is_serving());
  const EndpointConditions draining{.ready = false, .serving = true, .terminating = true};
  EXPECT_TRUE(draining.is_serving());
  EXPECT_TRUE(draining.is_terminating());
}

TEST(EndpointSlice, ServiceNameComesFromTheLabel) {
  EndpointSlice slice;
  EXPECT_EQ(slice.service_name(), "");
  slice.meta.labels[std::string(kServiceNameLabel)] = "web";
  EXPECT_EQ(slice.service_name(), "web");
}

// --- a real cluster's dump ---

class KubectlDump : public ::testing::Test {
 protected:
  void SetUp() override { objects_ = parse_service_objects(kKubectlDump); }
  ServiceObjects objects_;
};

TEST_F(KubectlDump, ReadsEveryServiceAndSliceAndNamesTheRest) {
  ASSERT_EQ(objects_.services.size(), 5u);
  ASSERT_EQ(objects_.endpoint_slices.size(), 2u);
  EXPECT_THAT(objects_.skipped, ElementsAre("v1 Pod shop/web-7d4b9c-abcde", "v1 Node node-1"));
}

TEST_F(KubectlDump, TheKubernetesService) {
  const Service& s = objects_.services[0];
  EXPECT_EQ(s.meta.name, "kubernetes");
  EXPECT_EQ(s.meta.namespace_, "default");
  EXPECT_EQ(s.meta.labels, (Labels{{"component", "apiserver"}, {"provider", "kubernetes"}}));
  EXPECT_EQ(s.spec.type, ServiceType::cluster_ip);
  EXPECT_THAT(s.spec.cluster_ips, ElementsAre(ip("10.96.0.1")));
  EXPECT_FALSE(s.spec.headless);
  ASSERT_EQ(s.spec.ports.size(), 1u);
  EXPECT_EQ(s.spec.ports[0], (ServicePort{.name = "https",
                                          .protocol = Protocol::tcp,
                                          .port = 443,
                                          .target_port = {.number = 6443}}));
  EXPECT_TRUE(s.spec.selector.empty());
  EXPECT_TRUE(s.load_balancer_ips.empty());
}

TEST_F(KubectlDump, ServicePortsKeepProtocols) {
  const Service& dns = objects_.services[1];
  EXPECT_EQ(dns.meta.namespace_, "kube-system");
  ASSERT_EQ(dns.spec.ports.size(), 3u);
  EXPECT_EQ(dns.spec.ports[0].protocol, Protocol::udp);
  EXPECT_EQ(dns.spec.ports[1].protocol, Protocol::tcp);
  EXPECT_EQ(dns.spec.ports[1].name, "dns-tcp");
  EXPECT_EQ(dns.spec.selector, (Labels{{"k8s-app", "kube-dns"}}));
  EXPECT_EQ(dns.meta.annotations.count("kubectl.kubernetes.io/last-applied-configuration"), 1u);
}

TEST_F(KubectlDump, DualStackLoadBalancer) {
  const Service& web = objects_.services[2];
  EXPECT_EQ(web.spec.type, ServiceType::load_balancer);
  EXPECT_THAT(web.spec.cluster_ips, ElementsAre(ip("10.96.20.5"), ip("fd00:10:96::5")));
  EXPECT_THAT(web.spec.external_ips, ElementsAre(ip("192.0.2.10")));
  EXPECT_EQ(web.spec.external_traffic_policy, TrafficPolicy::local);
  EXPECT_EQ(web.spec.internal_traffic_policy, TrafficPolicy::cluster);
  EXPECT_EQ(web.spec.health_check_node_port, 32001);
  EXPECT_EQ(web.spec.session_affinity, SessionAffinity::client_ip);
  EXPECT_EQ(web.spec.affinity_timeout_seconds, 600u);
  ASSERT_EQ(web.spec.ports.size(), 1u);
  EXPECT_EQ(web.spec.ports[0].node_port, 30080);
  EXPECT_EQ(web.spec.ports[0].target_port, (TargetPort{.name = "http"}));
  // The hostname-only ingress entry gives no address.
  EXPECT_THAT(web.load_balancer_ips, ElementsAre(ip("203.0.113.7")));
}

TEST_F(KubectlDump, HeadlessAndExternalName) {
  const Service& db = objects_.services[3];
  EXPECT_TRUE(db.spec.headless);
  EXPECT_TRUE(db.spec.cluster_ips.empty());
  EXPECT_EQ(db.spec.ports[0].name, "");
  const Service& search = objects_.services[4];
  EXPECT_EQ(search.spec.type, ServiceType::external_name);
  EXPECT_EQ(search.spec.external_name, "search.example.com.");
  EXPECT_TRUE(search.spec.cluster_ips.empty());
  EXPECT_FALSE(search.spec.headless);
}

TEST_F(KubectlDump, EndpointSliceWithConditionsAndTargets) {
  const EndpointSlice& slice = objects_.endpoint_slices[0];
  EXPECT_EQ(slice.meta.name, "web-x7k2p");
  EXPECT_EQ(slice.meta.namespace_, "shop");
  EXPECT_EQ(slice.service_name(), "web");
  EXPECT_EQ(slice.address_type, AddressType::ipv4);
  ASSERT_EQ(slice.endpoints.size(), 2u);
  EXPECT_EQ(slice.endpoints[0],
            (Endpoint{.addresses = {ip("10.244.1.5")},
                      .conditions = {.ready = true, .serving = true, .terminating = false},
                      .node_name = "node-1",
                      .zone = "zone-a",
                      .target_pod = "shop/web-7d4b9c-abcde"}));
  EXPECT_EQ(slice.endpoints[1].hostname, "web-1");
  EXPECT_FALSE(slice.endpoints[1].conditions.is_ready());
  EXPECT_TRUE(slice.endpoints[1].conditions.is_serving());
  EXPECT_TRUE(slice.endpoints[1].conditions.is_terminating());
  EXPECT_THAT(slice.ports,
              ElementsAre(EndpointPort{.name = "http", .protocol = Protocol::tcp, .port = 8080}));
}

TEST_F(KubectlDump, NullEndpointsAndPortsAreEmpty) {
  const EndpointSlice& slice = objects_.endpoint_slices[1];
  EXPECT_EQ(slice.service_name(), "db");
  EXPECT_TRUE(slice.endpoints.empty());
  EXPECT_TRUE(slice.ports.empty());
}

TEST_F(KubectlDump, SurvivesAnEncodeDecodeRoundTrip) {
  ServiceObjects again = decode_service_objects(encode_service_objects(objects_));
  EXPECT_EQ(again.services, objects_.services);
  EXPECT_EQ(again.endpoint_slices, objects_.endpoint_slices);
  EXPECT_TRUE(again.skipped.empty());  // skipped is not written
}

// --- lists and single objects ---

TEST(ServiceObjects, SingleService) {
  const auto objects = parse_service_objects(
      R"({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
          "spec": {"ports": [{"port": 80}]}})");
  ASSERT_EQ(objects.services.size(), 1u);
  EXPECT_TRUE(objects.endpoint_slices.empty());
  EXPECT_EQ(objects.services[0].meta.namespace_, "default");
}

TEST(ServiceObjects, SingleEndpointSlice) {
  const auto objects = parse_service_objects(
      R"({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
          "metadata": {"name": "web-abc", "namespace": "shop"}, "addressType": "IPv6",
          "endpoints": [{"addresses": ["fd00:244:1::5"]}], "ports": [{"port": 8080}]})");
  ASSERT_EQ(objects.endpoint_slices.size(), 1u);
  const EndpointSlice& slice = objects.endpoint_slices[0];
  EXPECT_EQ(slice.address_type, AddressType::ipv6);
  EXPECT_THAT(slice.endpoints[0].addresses, ElementsAre(ip("fd00:244:1::5")));
  EXPECT_EQ(slice.endpoints[0].conditions, EndpointConditions{});
  EXPECT_EQ(slice.ports[0], (EndpointPort{.name = "", .protocol = Protocol::tcp, .port = 8080}));
}

TEST(ServiceObjects, ASingleObjectOfAnotherKindIsRefused) {
  // A stray file is not "no services": it must not wipe the proxy's rules.
  try {
    parse_service_objects(
        R"({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "y"}})");
    FAIL() << "a ConfigMap was accepted";
  } catch (const K8sDecodeError& e) {
    EXPECT_STREQ(e.what(),
                 "decode service objects: kind: \"ConfigMap\" is not Service, EndpointSlice or a "
                 "List of them");
  }
}

TEST(ServiceObjects, SctpPortsAreLeftOutAndNamedTheRestIsKept) {
  const auto objects = parse_service_objects(R"({"kind": "List", "items": [
      {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sip", "namespace": "voip"},
       "spec": {"clusterIP": "10.96.0.5", "ports": [
         {"name": "sip", "protocol": "SCTP", "port": 5060},
         {"name": "sip-udp", "protocol": "UDP", "port": 5060}]}},
      {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
       "metadata": {"name": "sip-1", "namespace": "voip",
                    "labels": {"kubernetes.io/service-name": "sip"}},
       "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.1.5"]}],
       "ports": [{"name": "sip", "protocol": "SCTP", "port": 5060},
                 {"name": "sip-udp", "protocol": "UDP", "port": 5060}]}]})");
  ASSERT_EQ(objects.services.size(), 1U);
  ASSERT_EQ(objects.services[0].spec.ports.size(), 1U);
  EXPECT_EQ(objects.services[0].spec.ports[0].protocol, Protocol::udp);
  ASSERT_EQ(objects.endpoint_slices.size(), 1U);
  EXPECT_EQ(objects.endpoint_slices[0].ports.size(), 1U);
  EXPECT_THAT(objects.skipped, ElementsAre("v1 Service voip/sip: 1 SCTP port",
                                           "EndpointSlice voip/sip-1: 1 SCTP port"));
}

TEST(ServiceObjects, SkippedItemsOfOddShapesAreStillNamed) {
  const auto objects = parse_service_objects(
      R"({"kind": "List", "items": [{"kind": "Thing"}, {"kind": "Other", "apiVersion": 3,
          "metadata": {"name": 4}}]})");
  EXPECT_THAT(objects.skipped, ElementsAre("Thing", "Other"));
}

TEST(ServiceObjects, ServiceListItemsNeedNoKind) {
  // The API server's own list: items carry neither kind nor apiVersion.
  const auto objects = parse_service_objects(
      R"({"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "77"},
          "items": [{"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}]}},
                    {"metadata": {"name": "b"}, "spec": {"ports": [{"port": 81}]}}]})");
  ASSERT_EQ(objects.services.size(), 2u);
  EXPECT_EQ(objects.services[1].meta.name, "b");
}

TEST(ServiceObjects, EndpointSliceListV1beta1ReadsTopology) {
  const auto objects = parse_service_objects(
      R"({"apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSliceList",
          "items": [{"metadata": {"name": "web-1"}, "addressType": "IPv4",
                     "endpoints": [{"addresses": ["10.244.1.5"],
                                    "topology": {"kubernetes.io/hostname": "node-1",
                                                 "topology.kubernetes.io/zone": "z1",
                                                 "topology.kubernetes.io/region": "r"}},
                                   {"addresses": ["10.244.2.5"], "nodeName": "node-2",
                                    "topology": {"kubernetes.io/hostname": "ignored"}}]}]})");
  ASSERT_EQ(objects.endpoint_slices.size(), 1u);
  const auto& endpoints = objects.endpoint_slices[0].endpoints;
  ASSERT_EQ(endpoints.size(), 2u);
  EXPECT_EQ(endpoints[0].node_name, "node-1");
  EXPECT_EQ(endpoints[0].zone, "z1");
  EXPECT_EQ(endpoints[1].node_name, "node-2");  // nodeName wins over the topology key
}

TEST(ServiceObjects, V1IgnoresDeprecatedTopology) {
  const auto objects = parse_service_objects(
      R"({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
          "metadata": {"name": "web-1"}, "addressType": "IPv4",
          "endpoints": [{"addresses": ["10.244.1.5"],
                         "deprecatedTopology": {"kubernetes.io/hostname": "node-9"}}]})");
  EXPECT_EQ(objects.endpoint_slices[0].endpoints[0].node_name, "");
}

TEST(ServiceObjects, EmptyAndItemlessListsHoldNothing) {
  EXPECT_EQ(parse_service_objects(R"({"apiVersion": "v1", "kind": "List", "items": []})"),
            ServiceObjects{});
  EXPECT_EQ(parse_service_objects(R"({"kind": "List"})"), ServiceObjects{});
  EXPECT_EQ(parse_service_objects(R"({"kind": "List", "items": null})"), ServiceObjects{});
}

TEST(ServiceObjects, EncodeWritesAListOfServicesThenSlices) {
  ServiceObjects objects;
  objects.services.push_back({.meta = {.name = "web"}});
  objects.endpoint_slices.push_back({.meta = {.name = "web-1"}});
  objects.skipped.push_back("v1 Pod default/x");
  const json j = encode_service_objects(objects);
  EXPECT_EQ(j["apiVersion"], "v1");
  EXPECT_EQ(j["kind"], "List");
  ASSERT_EQ(j["items"].size(), 2u);
  EXPECT_EQ(j["items"][0]["kind"], "Service");
  EXPECT_EQ(j["items"][1]["kind"], "EndpointSlice");
  EXPECT_EQ(j["items"][1]["apiVersion"], "discovery.k8s.io/v1");
}

TEST(ServiceObjects, SlicesMayShareANameAcrossNamespacesAndKinds) {
  const auto objects = parse_service_objects(
      R"({"kind": "List", "items": [
          {"kind": "Service", "apiVersion": "v1", "metadata": {"name": "web", "namespace": "a"}},
          {"kind": "Service", "apiVersion": "v1", "metadata": {"name": "web", "namespace": "b"}},
          {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
           "metadata": {"name": "web", "namespace": "a"}, "addressType": "IPv4"}]})");
  EXPECT_EQ(objects.services.size(), 2u);
  EXPECT_EQ(objects.endpoint_slices.size(), 1u);
}

// --- defaults and value forms ---

Service decode_service_json(std::string_view spec) {
  return json::parse(R"({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                         "spec": )" +
                     std::string(spec) + "}")
      .get<Service>();
}

TEST(ServiceDecode, Defaults) {
  const Service s = decode_service_json(R"({"ports": [{"port": 80}]})");
  EXPECT_EQ(s.spec.type, ServiceType::cluster_ip);
  EXPECT_TRUE(s.spec.cluster_ips.empty());
  EXPECT_FALSE(s.spec.headless);
  EXPECT_EQ(s.spec.ports[0].protocol, Protocol::tcp);
  EXPECT_FALSE(s.spec.ports[0].target_port.is_set());
  EXPECT_EQ(s.spec.session_affinity, SessionAffinity::none);
  EXPECT_EQ(s.spec.affinity_timeout_seconds, ServiceSpec::kDefaultAffinityTimeoutSeconds);
  EXPECT_EQ(s.spec.external_traffic_policy, TrafficPolicy::cluster);
  EXPECT_EQ(s.spec.internal_traffic_policy, TrafficPolicy::cluster);
}

TEST(ServiceDecode, MissingSpecIsTheDefaultSpec) {
  const Service s =
      json::parse(R"({"kind": "Service", "metadata": {"name": "web"}})").get<Service>();
  EXPECT_EQ(s.spec, ServiceSpec{});
}

TEST(ServiceDecode, ClientIpAffinityDefaultsToThreeHours) {
  const Service s = decode_service_json(R"({"sessionAffinity": "ClientIP"})");
  EXPECT_EQ(s.spec.session_affinity, SessionAffinity::client_ip);
  EXPECT_EQ(s.spec.affinity_timeout_seconds, 10800u);
}

TEST(ServiceDecode, LegacyGlobalPolicyIsCluster) {
  const Service s =
      decode_service_json(R"({"type": "NodePort", "externalTrafficPolicy": "Global"})");
  EXPECT_EQ(s.spec.external_traffic_policy, TrafficPolicy::cluster);
}

TEST(ServiceDecode, InternalTrafficPolicyLocal) {
  const Service s = decode_service_json(R"({"internalTrafficPolicy": "Local"})");
  EXPECT_EQ(s.spec.internal_traffic_policy, TrafficPolicy::local);
}

TEST(ServiceDecode, ClusterIpAloneOrListAlone) {
  EXPECT_THAT(decode_service_json(R"({"clusterIP": "10.96.0.9"})").spec.cluster_ips,
              ElementsAre(ip("10.96.0.9")));
  EXPECT_THAT(decode_service_json(R"({"clusterIPs": ["fd00::9", "10.96.0.9"]})").spec.cluster_ips,
              ElementsAre(ip("fd00::9"), ip("10.96.0.9")));
  EXPECT_TRUE(decode_service_json(R"({"clusterIP": ""})").spec.cluster_ips.empty());
  EXPECT_TRUE(decode_service_json(R"({"clusterIP": "None"})").spec.headless);
}

struct TargetPortCase {
  std::string name;
  std::string json_value;
  TargetPort expected;
};

class TargetPortDecode : public ::testing::TestWithParam<TargetPortCase> {};

TEST_P(TargetPortDecode, IntOrString) {
  const auto& c = GetParam();
  const Service s =
      decode_service_json(R"({"ports": [{"port": 80, "targetPort": )" + c.json_value + "}]}");
  EXPECT_EQ(s.spec.ports[0].target_port, c.expected);
}

INSTANTIATE_TEST_SUITE_P(
    Service, TargetPortDecode,
    ::testing::Values(TargetPortCase{"number", "8080", {.number = 8080}},
                      TargetPortCase{"highest", "65535", {.number = 65535}},
                      TargetPortCase{"name", R"("http")", {.name = "http"}},
                      TargetPortCase{"name_with_digits", R"("h2c-8080")", {.name = "h2c-8080"}},
                      TargetPortCase{"numeric_string", R"("8080")", {.number = 8080}},
                      TargetPortCase{"null_is_unset", "null", {}}),
    [](const auto& info) { return info.param.name; });

TEST(EndpointSliceDecode, FqdnSlicesKeepNoEndpoints) {
  const auto objects = parse_service_objects(
      R"({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
          "metadata": {"name": "ext-1"}, "addressType": "FQDN",
          "endpoints": [{"addresses": ["db.example.com"], "conditions": {"ready": true}}],
          "ports": [{"name": "pg", "port": 5432}]})");
  const EndpointSlice& slice = objects.endpoint_slices.at(0);
  EXPECT_EQ(slice.address_type, AddressType::fqdn);
  EXPECT_TRUE(slice.endpoints.empty());
  EXPECT_EQ(slice.ports.size(), 1u);
}

TEST(EndpointSliceDecode, PortWithoutNumberIsUnresolvable) {
  const auto objects = parse_service_objects(
      R"({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
          "metadata": {"name": "web-1"}, "addressType": "IPv4",
          "ports": [{"name": "http", "protocol": "UDP"}]})");
  EXPECT_EQ(objects.endpoint_slices[0].ports[0],
            (EndpointPort{.name = "http", .protocol = Protocol::udp, .port = std::nullopt}));
}

TEST(EndpointSliceDecode, TargetRefOfAnotherKindOrNamespace) {
  const auto objects = parse_service_objects(
      R"({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
          "metadata": {"name": "web-1", "namespace": "shop"}, "addressType": "IPv4",
          "endpoints": [{"addresses": ["10.0.0.1"], "targetRef": {"kind": "Node", "name": "n"}},
                        {"addresses": ["10.0.0.2"], "targetRef": {"kind": "Pod", "name": "p"}},
                        {"addresses": ["10.0.0.3", "10.0.0.4"]}]})");
  const auto& endpoints = objects.endpoint_slices[0].endpoints;
  EXPECT_EQ(endpoints[0].target_pod, "");
  EXPECT_EQ(endpoints[1].target_pod, "shop/p");  // the slice's namespace
  EXPECT_THAT(endpoints[2].addresses, ElementsAre(ip("10.0.0.3"), ip("10.0.0.4")));
}

// --- encoding ---

TEST(ServiceEncode, MinimalServiceLeavesDefaultsOut) {
  Service s;
  s.meta.name = "web";
  s.spec.ports.push_back({.port = 80});
  EXPECT_EQ(json(s), json::parse(R"({"apiVersion": "v1", "kind": "Service",
                                     "metadata": {"name": "web", "namespace": "default"},
                                     "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}})"));
}

TEST(ServiceEncode, EveryFieldInKubernetesShape) {
  Service s;
  s.meta = {.name = "web", .namespace_ = "shop", .labels = {{"app", "web"}}};
  s.spec.type = ServiceType::load_balancer;
  s.spec.cluster_ips = {ip("10.96.0.5"), ip("fd00::5")};
  s.spec.ports = {
      {.name = "http",
       .protocol = Protocol::tcp,
       .port = 80,
       .target_port = {.name = "web"},
       .node_port = 30080},
      {.name = "q", .protocol = Protocol::udp, .port = 53, .target_port = {.number = 5353}}};
  s.spec.selector = {{"app", "web"}};
  s.spec.external_ips = {ip("192.0.2.1")};
  s.spec.session_affinity = SessionAffinity::client_ip;
  s.spec.affinity_timeout_seconds = 60;
  s.spec.external_traffic_policy = TrafficPolicy::local;
  s.spec.internal_traffic_policy = TrafficPolicy::local;
  s.spec.health_check_node_port = 31000;
  s.load_balancer_ips = {ip("203.0.113.1")};
  EXPECT_EQ(json(s), json::parse(R"({
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
    "spec": {
      "type": "LoadBalancer",
      "clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5", "fd00::5"],
      "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web",
                 "nodePort": 30080},
                {"name": "q", "protocol": "UDP", "port": 53, "targetPort": 5353}],
      "selector": {"app": "web"},
      "externalIPs": ["192.0.2.1"],
      "sessionAffinity": "ClientIP",
      "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
      "externalTrafficPolicy": "Local",
      "internalTrafficPolicy": "Local",
      "healthCheckNodePort": 31000
    },
    "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}})"));
}

TEST(ServiceEncode, HeadlessWritesNone) {
  Service s;
  s.meta.name = "db";
  s.spec.headless = true;
  const json j = s;
  EXPECT_EQ(j["spec"]["clusterIP"], "None");
  EXPECT_EQ(j["spec"]["clusterIPs"], json::array({"None"}));
}

TEST(EndpointSliceEncode, KubernetesShape) {
  EndpointSlice slice;
  slice.meta = {
      .name = "web-1", .namespace_ = "shop", .labels = {{"kubernetes.io/service-name", "web"}}};
  slice.endpoints = {{.addresses = {ip("10.244.1.5")},
                      .conditions = {.ready = true, .terminating = false},
                      .hostname = "h",
                      .node_name = "node-1",
                      .zone = "z",
                      .target_pod = "shop/web-abc"},
                     {.addresses = {ip("10.244.2.5")}}};
  slice.ports = {{.name = "http", .port = 8080}, {.name = "any", .protocol = Protocol::udp}};
  EXPECT_EQ(json(slice), json::parse(R"({
    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
    "metadata": {"name": "web-1", "namespace": "shop",
                 "labels": {"kubernetes.io/service-name": "web"}},
    "addressType": "IPv4",
    "endpoints": [
      {"addresses": ["10.244.1.5"], "conditions": {"ready": true, "terminating": false},
       "hostname": "h", "nodeName": "node-1", "zone": "z",
       "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-abc"}},
      {"addresses": ["10.244.2.5"]}],
    "ports": [{"name": "http", "protocol": "TCP", "port": 8080},
              {"name": "any", "protocol": "UDP"}]})"));
}

TEST(EndpointSliceEncode, EmptySliceStillWritesItsEndpointsList) {
  EndpointSlice slice;
  slice.meta.name = "web-1";
  const json j = slice;
  EXPECT_EQ(j["endpoints"], json::array());
  EXPECT_FALSE(j.contains("ports"));
}

// --- round trips ---

struct RoundTripCase {
  std::string name;
  ServiceObjects objects;
};

class ServiceRoundTrip : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(ServiceRoundTrip, EncodeThenDecodeGivesAnEqualValue) {
  const ServiceObjects& objects = GetParam().objects;
  EXPECT_EQ(decode_service_objects(encode_service_objects(objects)), objects);
  // And through text, as the proxy's state file carries it.
  EXPECT_EQ(parse_service_objects(encode_service_objects(objects).dump(2)), objects);
  for (const auto& service : objects.services)
    EXPECT_EQ(json(service).get<Service>(), service);
  for (const auto& slice : objects.endpoint_slices)
    EXPECT_EQ(json(slice).get<EndpointSlice>(), slice);
}

ServiceObjects services(std::vector<Service> list) {
  return {.services = std::move(list)};
}
ServiceObjects slices(std::vector<EndpointSlice> list) {
  return {.endpoint_slices = std::move(list)};
}

Service named(std::string name, ServiceSpec spec) {
  return {.meta = {.name = std::move(name)}, .spec = std::move(spec)};
}

INSTANTIATE_TEST_SUITE_P(
    Service, ServiceRoundTrip,
    ::testing::Values(
        RoundTripCase{"empty", {}}, RoundTripCase{"bare_service", services({named("a", {})})},
        RoundTripCase{"cluster_ip", services({named("a", {.cluster_ips = {ip("10.96.0.1")},
                                                          .ports = {{.port = 80}}})})},
        RoundTripCase{"dual_stack_v6_first",
                      services({named("a", {.cluster_ips = {ip("fd00::1"), ip("10.96.0.1")},
                                            .ports = {{.port = 80}}})})},
        RoundTripCase{"headless", services({named("a", {.headless = true})})},
        RoundTripCase{
            "node_port",
            services({named("a", {.type = ServiceType::node_port,
                                  .cluster_ips = {ip("10.96.0.2")},
                                  .ports = {{.name = "tcp", .port = 80, .node_port = 30000},
                                            {.name = "udp",
                                             .protocol = Protocol::udp,
                                             .port = 80,
                                             .target_port = {.number = 8080},
                                             .node_port = 30000}},
                                  .external_traffic_policy = TrafficPolicy::local})})},
        RoundTripCase{
            "load_balancer",
            services({{.meta = {.name = "lb",
                                .namespace_ = "x",
                                .labels = {{"a", "b"}},
                                .annotations = {{"note", "multi\nline"}}},
                       .spec = {.type = ServiceType::load_balancer,
                                .ports = {{.port = 443, .target_port = {.name = "https"}}},
                                .external_traffic_policy = TrafficPolicy::local,
                                .health_check_node_port = 32000},
                       .load_balancer_ips = {ip("203.0.113.9"), ip("2001:db8::9")}}})},
        RoundTripCase{"external_name", services({named("a", {.type = ServiceType::external_name,
                                                             .external_name = "db.example.com"})})},
        RoundTripCase{"affinity_and_policies",
                      services({named("a", {.ports = {{.port = 1}},
                                            .selector = {{"app", "a"}, {"tier", "b"}},
                                            .external_ips = {ip("192.0.2.1"), ip("2001:db8::1")},
                                            .session_affinity = SessionAffinity::client_ip,
                                            .affinity_timeout_seconds = 86400,
                                            .internal_traffic_policy = TrafficPolicy::local})})},
        RoundTripCase{"affinity_default_timeout",
                      services({named("a", {.session_affinity = SessionAffinity::client_ip})})},
        RoundTripCase{"timeout_without_affinity",
                      services({named("a", {.affinity_timeout_seconds = 5})})},
        RoundTripCase{"slice_minimal", slices({{.meta = {.name = "s"}}})},
        RoundTripCase{
            "slice_full",
            slices({{.meta = {.name = "web-abc",
                              .namespace_ = "shop",
                              .labels = {{std::string(kServiceNameLabel), "web"}}},
                     .endpoints =
                         {{.addresses = {ip("10.244.1.5"), ip("10.244.1.6")},
                           .conditions = {.ready = false, .serving = true, .terminating = true},
                           .hostname = "web-0",
                           .node_name = "node-1",
                           .zone = "zone-a",
                           .target_pod = "shop/web-0"},
                          {.addresses = {ip("10.244.2.5")}, .conditions = {.ready = true}}},
                     .ports = {{.name = "http", .port = 8080},
                               {.name = "dns", .protocol = Protocol::udp, .port = 53},
                               {.name = "unresolved"}}}})},
        RoundTripCase{"slice_ipv6", slices({{.meta = {.name = "s6"},
                                             .address_type = AddressType::ipv6,
                                             .endpoints = {{.addresses = {ip("fd00:244::5")},
                                                            .conditions = {.serving = false}}},
                                             .ports = {{.port = 80}}}})},
        RoundTripCase{"slice_fqdn", slices({{.meta = {.name = "f"},
                                             .address_type = AddressType::fqdn,
                                             .ports = {{.name = "pg", .port = 5432}}}})},
        RoundTripCase{
            "mixed",
            {.services = {named("a", {.ports = {{.port = 80}}}), named("b", {.headless = true})},
             .endpoint_slices = {{.meta = {.name = "a-1"}}, {.meta = {.name = "b-1"}}}}}),
    [](const auto& info) { return info.param.name; });

// --- refusals, with the exact message ---

struct RefusalCase {
  std::string name;
  std::string text;
  std::string message;
};

class ServiceRefusal : public ::testing::TestWithParam<RefusalCase> {};

TEST_P(ServiceRefusal, NamesTheObjectTheFieldAndTheValue) {
  const auto& c = GetParam();
  EXPECT_EQ(decode_error(c.text), c.message) << c.text;
}

// A Service document with `spec`.
std::string svc(std::string_view spec) {
  return R"({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": )" +
         std::string(spec) + "}";
}
// An EndpointSlice document with the fields `rest` (written after addressType).
std::string eps(std::string_view address_type, std::string_view rest) {
  return R"({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": "web-1"}, "addressType": ")" +
         std::string(address_type) + "\"" + (rest.empty() ? "" : ", ") + std::string(rest) + "}";
}

constexpr std::string_view kSvc = "decode Service \"default/web\": ";
constexpr std::string_view kEps = "decode EndpointSlice \"default/web-1\": ";

std::string svc_error(std::string_view rest) {
  return std::string(kSvc) + std::string(rest);
}
std::string eps_error(std::string_view rest) {
  return std::string(kEps) + std::string(rest);
}

INSTANTIATE_TEST_SUITE_P(
    Service, ServiceRefusal,
    ::testing::Values(
        // documents and lists
        RefusalCase{"not_an_object", "[1]",
                    "decode service objects: expected an object, found a list"},
        RefusalCase{"no_kind", "{}",
                    "decode service objects: kind: missing; expected Service, EndpointSlice or a "
                    "List of them"},
        RefusalCase{"kind_not_a_string", R"({"kind": 5})",
                    "decode service objects: kind: expected a string, found a number"},
        RefusalCase{"list_items_not_a_list", R"({"kind": "List", "items": {}})",
                    "decode List: items: expected a list, found an object"},
        RefusalCase{"list_item_not_an_object", R"({"kind": "List", "items": ["x"]})",
                    "decode List: items[0]: expected an object, found a string"},
        RefusalCase{"list_item_without_kind", R"({"kind": "List", "items": [{}]})",
                    "decode List: items[0].kind: missing"},
        RefusalCase{"list_version", R"({"apiVersion": "v2", "kind": "List"})",
                    "decode List: apiVersion: \"v2\" is not v1"},
        RefusalCase{"slice_list_version",
                    R"({"apiVersion": "v1", "kind": "EndpointSliceList", "items": []})",
                    "decode EndpointSliceList: apiVersion: \"v1\" is not discovery.k8s.io/v1 or "
                    "discovery.k8s.io/v1beta1"},
        RefusalCase{"item_error_names_the_item",
                    R"({"kind": "List", "items": [{"kind": "Pod"}, {"apiVersion": "v1",
                        "kind": "Service", "metadata": {"name": "web"},
                        "spec": {"ports": [{"port": 70000}]}}]})",
                    "items[1]: decode Service \"default/web\": spec.ports[0].port: 70000 is out "
                    "of range 1..65535"},
        RefusalCase{"duplicate_service",
                    R"({"kind": "List", "items": [
                        {"kind": "Service", "metadata": {"name": "web"}},
                        {"kind": "Service", "metadata": {"name": "web", "namespace": "default"}}]})",
                    "items[1]: decode Service \"default/web\": duplicate of items[0]"},
        RefusalCase{"duplicate_slice",
                    R"({"kind": "EndpointSliceList", "items": [
                        {"metadata": {"name": "s"}, "addressType": "IPv4"},
                        {"metadata": {"name": "s"}, "addressType": "IPv4"}]})",
                    "items[1]: decode EndpointSlice \"default/s\": duplicate of items[0]"},
        // Service objects
        RefusalCase{"service_version", R"({"apiVersion": "v2", "kind": "Service",
                        "metadata": {"name": "web"}})",
                    svc_error("apiVersion: \"v2\" is not v1")},
        RefusalCase{"service_discovery_version",
                    R"({"apiVersion": "discovery.k8s.io/v1", "kind": "Service",
                        "metadata": {"name": "web"}})",
                    svc_error("apiVersion: \"discovery.k8s.io/v1\" is not v1")},
        RefusalCase{"service_without_name", R"({"apiVersion": "v1", "kind": "Service"})",
                    "decode Service: metadata.name: missing"},
        RefusalCase{"service_name_empty",
                    R"({"kind": "Service", "metadata": {"name": "", "namespace": "x"}})",
                    "decode Service: metadata.name: missing"},
        RefusalCase{"service_name_starts_with_digit",
                    R"({"kind": "Service", "metadata": {"name": "1web"}})",
                    "decode Service \"default/1web\": metadata.name: \"1web\" is not a valid RFC "
                    "1035 label: it must start with a lower-case letter"},
        RefusalCase{"service_name_upper_case",
                    R"({"kind": "Service", "metadata": {"name": "Web"}})",
                    "decode Service \"default/Web\": metadata.name: \"Web\" is not a valid RFC "
                    "1123 label: character \"W\" is not allowed (use lower-case letters, digits "
                    "and '-')"},
        RefusalCase{"service_bad_namespace",
                    R"({"kind": "Service", "metadata": {"name": "web", "namespace": "a.b"}})",
                    "decode Service \"a.b/web\": metadata.namespace: \"a.b\" is not a valid RFC "
                    "1123 label: character \".\" is not allowed (use lower-case letters, digits "
                    "and '-')"},
        RefusalCase{"label_not_a_string",
                    R"({"kind": "Service", "metadata": {"name": "web", "labels": {"a": true}}})",
                    svc_error("metadata.labels[a]: expected a string, found a boolean")},
        RefusalCase{"spec_not_an_object", svc("[]"),
                    svc_error("spec: expected an object, found a list")},
        RefusalCase{"type", svc(R"({"type": "Internal"})"),
                    svc_error("spec.type: \"Internal\" is not a service type; accepted: "
                              "ClusterIP, NodePort, LoadBalancer, ExternalName")},
        RefusalCase{"port_missing", svc(R"({"ports": [{"name": "a"}]})"),
                    svc_error("spec.ports[0].port: missing")},
        RefusalCase{"port_zero", svc(R"({"ports": [{"port": 0}]})"),
                    svc_error("spec.ports[0].port: 0 is out of range 1..65535")},
        RefusalCase{"port_too_big", svc(R"({"ports": [{"port": 70000}]})"),
                    svc_error("spec.ports[0].port: 70000 is out of range 1..65535")},
        RefusalCase{"port_a_string", svc(R"({"ports": [{"port": "80"}]})"),
                    svc_error("spec.ports[0].port: \"80\" is not an integer")},
        RefusalCase{"port_a_float", svc(R"({"ports": [{"port": 80.5}]})"),
                    svc_error("spec.ports[0].port: 80.5 is not an integer")},
        RefusalCase{"protocol_lower_case", svc(R"({"ports": [{"port": 80, "protocol": "tcp"}]})"),
                    svc_error("spec.ports[0].protocol: \"tcp\" is not TCP or UDP")},
        RefusalCase{"target_port_zero", svc(R"({"ports": [{"port": 80, "targetPort": 0}]})"),
                    svc_error("spec.ports[0].targetPort: 0 is out of range 1..65535")},
        RefusalCase{"target_port_numeric_string_too_big",
                    svc(R"({"ports": [{"port": 80, "targetPort": "99999"}]})"),
                    svc_error("spec.ports[0].targetPort: \"99999\" is out of range 1..65535")},
        RefusalCase{"target_port_bad_name",
                    svc(R"({"ports": [{"port": 80, "targetPort": "HTTP"}]})"),
                    svc_error("spec.ports[0].targetPort: \"HTTP\" is not a valid port name: "
                              "character \"H\" is not allowed (use lower-case letters, digits "
                              "and '-')")},
        RefusalCase{"target_port_long_name",
                    svc(R"({"ports": [{"port": 80, "targetPort": "a-very-long-port-name"}]})"),
                    svc_error("spec.ports[0].targetPort: \"a-very-long-port-name\" is not a "
                              "valid port name: it is longer than 15 characters")},
        RefusalCase{"target_port_a_list", svc(R"({"ports": [{"port": 80, "targetPort": []}]})"),
                    svc_error("spec.ports[0].targetPort: expected a number or a port name, found "
                              "a list")},
        RefusalCase{"node_port_too_big",
                    svc(R"({"type": "NodePort", "ports": [{"port": 80, "nodePort": 65536}]})"),
                    svc_error("spec.ports[0].nodePort: 65536 is out of range 0..65535")},
        RefusalCase{
            "node_port_on_cluster_ip", svc(R"({"ports": [{"port": 80, "nodePort": 30000}]})"),
            svc_error("spec.ports[0].nodePort: 30000 is not allowed for ClusterIP services")},
        RefusalCase{"second_port_unnamed",
                    svc(R"({"ports": [{"name": "a", "port": 80}, {"port": 81}]})"),
                    svc_error("spec.ports[1].name: missing (required when a service has more "
                              "than one port)")},
        RefusalCase{"port_name_twice",
                    svc(R"({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]})"),
                    svc_error("spec.ports[1].name: \"a\" is also the name of spec.ports[0]")},
        RefusalCase{"port_name_invalid", svc(R"({"ports": [{"name": "HTTP", "port": 80}]})"),
                    svc_error("spec.ports[0].name: \"HTTP\" is not a valid RFC 1123 label: "
                              "character \"H\" is not allowed (use lower-case letters, digits "
                              "and '-')")},
        RefusalCase{"port_and_protocol_twice",
                    svc(R"({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80,
                            "protocol": "TCP"}]})"),
                    svc_error("spec.ports[1]: 80/TCP is also spec.ports[0]")},
        RefusalCase{
            "node_port_twice",
            svc(R"({"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 30001},
                            {"name": "b", "port": 81, "nodePort": 30001}]})"),
            svc_error("spec.ports[1].nodePort: 30001/TCP is also the node port of "
                      "spec.ports[0]")},
        RefusalCase{"cluster_ip_invalid", svc(R"({"clusterIP": "10.96.0.300"})"),
                    svc_error("spec.clusterIP: invalid IPv4 address \"10.96.0.300\": octet "
                              "\"300\" is greater than 255")},
        RefusalCase{"cluster_ips_mismatch",
                    svc(R"({"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.2"]})"),
                    svc_error("spec.clusterIPs[0]: \"10.96.0.2\" does not match spec.clusterIP "
                              "\"10.96.0.1\"")},
        RefusalCase{"cluster_ips_same_family", svc(R"({"clusterIPs": ["10.96.0.1", "10.96.0.2"]})"),
                    svc_error("spec.clusterIPs[1]: \"10.96.0.2\" is of the same IP family as "
                              "spec.clusterIPs[0]; a dual-stack service has one IPv4 and one IPv6 "
                              "address")},
        RefusalCase{"cluster_ips_three",
                    svc(R"({"clusterIPs": ["10.96.0.1", "fd00::1", "10.96.0.3"]})"),
                    svc_error("spec.clusterIPs: has 3 addresses; at most 2 (one per IP family) "
                              "are allowed")},
        RefusalCase{"none_with_another", svc(R"({"clusterIPs": ["None", "fd00::1"]})"),
                    svc_error("spec.clusterIPs[0]: \"None\" must be the only cluster IP")},
        RefusalCase{"headless_node_port",
                    svc(R"({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]})"),
                    svc_error("spec.clusterIP: \"None\" (headless) is not allowed for NodePort "
                              "services")},
        RefusalCase{"external_name_missing", svc(R"({"type": "ExternalName"})"),
                    svc_error("spec.externalName: missing (required for ExternalName services)")},
        RefusalCase{"external_name_invalid",
                    svc(R"({"type": "ExternalName", "externalName": "db_1.example.com"})"),
                    svc_error("spec.externalName: \"db_1.example.com\" is not a valid RFC 1123 "
                              "subdomain: character \"_\" is not allowed (use lower-case letters, "
                              "digits and '-')")},
        RefusalCase{
            "external_name_with_cluster_ip",
            svc(R"({"type": "ExternalName", "externalName": "a.b", "clusterIP": "10.96.0.1"})"),
            svc_error("spec.clusterIP: may not be set for ExternalName services")},
        RefusalCase{"external_ip_invalid", svc(R"({"externalIPs": ["192.0.2"]})"),
                    svc_error("spec.externalIPs[0]: invalid IPv4 address \"192.0.2\": expected "
                              "four octets")},
        RefusalCase{"session_affinity", svc(R"({"sessionAffinity": "Cookie"})"),
                    svc_error("spec.sessionAffinity: \"Cookie\" is not a session affinity; "
                              "accepted: None, ClientIP")},
        RefusalCase{"affinity_timeout_zero",
                    svc(R"({"sessionAffinity": "ClientIP", "sessionAffinityConfig":
                            {"clientIP": {"timeoutSeconds": 0}}})"),
                    svc_error("spec.sessionAffinityConfig.clientIP.timeoutSeconds: 0 is out of "
                              "range 1..86400")},
        RefusalCase{"affinity_timeout_too_long",
                    svc(R"({"sessionAffinity": "ClientIP", "sessionAffinityConfig":
                            {"clientIP": {"timeoutSeconds": 86401}}})"),
                    svc_error("spec.sessionAffinityConfig.clientIP.timeoutSeconds: 86401 is out "
                              "of range 1..86400")},
        RefusalCase{"external_traffic_policy", svc(R"({"externalTrafficPolicy": "Node"})"),
                    svc_error("spec.externalTrafficPolicy: \"Node\" is not a traffic policy; "
                              "accepted: Cluster, Local")},
        RefusalCase{"internal_traffic_policy_global", svc(R"({"internalTrafficPolicy": "Global"})"),
                    svc_error("spec.internalTrafficPolicy: \"Global\" is not a traffic policy; "
                              "accepted: Cluster, Local")},
        RefusalCase{"health_check_without_local",
                    svc(R"({"type": "LoadBalancer", "healthCheckNodePort": 32000})"),
                    svc_error("spec.healthCheckNodePort: 32000 is only allowed for LoadBalancer "
                              "services with externalTrafficPolicy Local")},
        RefusalCase{"selector_value_not_a_string", svc(R"({"selector": {"app": 1}})"),
                    svc_error("spec.selector[app]: expected a string, found a number")},
        RefusalCase{"ingress_ip_invalid",
                    R"({"kind": "Service", "metadata": {"name": "web"},
                        "status": {"loadBalancer": {"ingress": [{"ip": "x"}]}}})",
                    svc_error("status.loadBalancer.ingress[0].ip: invalid IP address \"x\": "
                              "neither a dotted IPv4 address nor an IPv6 address")},
        // EndpointSlice objects
        RefusalCase{"slice_version",
                    R"({"apiVersion": "v1", "kind": "EndpointSlice", "metadata": {"name": "web-1"},
                        "addressType": "IPv4"})",
                    eps_error("apiVersion: \"v1\" is not discovery.k8s.io/v1 or "
                              "discovery.k8s.io/v1beta1")},
        RefusalCase{"slice_without_address_type",
                    R"({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": "web-1"}})",
                    eps_error("addressType: missing; accepted: IPv4, IPv6, FQDN")},
        RefusalCase{"slice_address_type", eps("ipv4", ""),
                    eps_error("addressType: \"ipv4\" is not an address type; accepted: IPv4, "
                              "IPv6, FQDN")},
        RefusalCase{"slice_name_invalid",
                    R"({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": "web..1"}, "addressType": "IPv4"})",
                    "decode EndpointSlice \"default/web..1\": metadata.name: \"web..1\" is not a "
                    "valid RFC 1123 subdomain: it has an empty part between dots or at an end"},
        RefusalCase{"endpoint_without_addresses", eps("IPv4", R"("endpoints": [{}])"),
                    eps_error("endpoints[0].addresses: missing")},
        RefusalCase{"endpoint_empty_addresses", eps("IPv4", R"("endpoints": [{"addresses": []}])"),
                    eps_error("endpoints[0].addresses: is empty; an endpoint has at least one "
                              "address")},
        RefusalCase{"endpoint_wrong_family",
                    eps("IPv4", R"("endpoints": [{"addresses": ["fd00::1"]}])"),
                    eps_error("endpoints[0].addresses[0]: \"fd00::1\" is not an IPv4 address (the "
                              "slice's addressType)")},
        RefusalCase{"endpoint_v4_in_v6_slice",
                    eps("IPv6", R"("endpoints": [{"addresses": ["10.0.0.1"]}])"),
                    eps_error("endpoints[0].addresses[0]: \"10.0.0.1\" is not an IPv6 address (the "
                              "slice's addressType)")},
        RefusalCase{"endpoint_bad_address",
                    eps("IPv4", R"("endpoints": [{"addresses": ["10.0.0.01"]}])"),
                    eps_error("endpoints[0].addresses[0]: invalid IPv4 address \"10.0.0.01\": "
                              "octet \"01\" has a leading zero")},
        RefusalCase{
            "condition_not_a_boolean",
            eps("IPv4",
                R"("endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": "yes"}}])"),
            eps_error("endpoints[0].conditions.ready: expected a boolean, found a string")},
        RefusalCase{"endpoint_hostname",
                    eps("IPv4", R"("endpoints": [{"addresses": ["10.0.0.1"], "hostname": "a.b"}])"),
                    eps_error("endpoints[0].hostname: \"a.b\" is not a valid RFC 1123 label: "
                              "character \".\" is not allowed (use lower-case letters, digits and "
                              "'-')")},
        RefusalCase{"target_ref_not_an_object",
                    eps("IPv4", R"("endpoints": [{"addresses": ["10.0.0.1"], "targetRef": "p"}])"),
                    eps_error("endpoints[0].targetRef: expected an object, found a string")},
        RefusalCase{"fqdn_address_not_a_string",
                    eps("FQDN", R"("endpoints": [{"addresses": [1]}])"),
                    eps_error("endpoints[0].addresses[0]: expected a string, found a number")},
        RefusalCase{"slice_port_range", eps("IPv4", R"("ports": [{"port": 0}])"),
                    eps_error("ports[0].port: 0 is out of range 1..65535")},
        RefusalCase{"slice_port_names_twice",
                    eps("IPv4", R"("ports": [{"port": 80}, {"port": 81}])"),
                    eps_error("ports[1].name: \"\" is also the name of ports[0]")},
        RefusalCase{"slice_ports_not_a_list", eps("IPv4", R"("ports": {"port": 80})"),
                    eps_error("ports: expected a list, found an object")}),
    [](const auto& info) { return info.param.name; });

TEST(ServiceRefusal, TooManyAddressesOnOneEndpoint) {
  json addresses = json::array();
  for (int i = 0; i < 101; ++i)
    addresses.push_back("10.0.0." + std::to_string(i + 1));
  const std::string text = eps("IPv4", R"("endpoints": [{"addresses": )" + addresses.dump() + "}]");
  EXPECT_EQ(decode_error(text),
            eps_error("endpoints[0].addresses: has 101 addresses; at most 100 are allowed"));
}

TEST(ServiceRefusal, FromJsonThrowsTheSameErrors) {
  EXPECT_THROW((void)json::parse(svc(R"({"ports": [{"port": 0}]})")).get<Service>(),
               K8sDecodeError);
  EXPECT_THROW((void)json::parse(R"({"kind": "Service"})").get<EndpointSlice>(), K8sDecodeError);
  try {
    (void)json::parse(R"({"kind": "Pod", "metadata": {"name": "a"}})").get<Service>();
    ADD_FAILURE() << "a Pod decoded as a Service";
  } catch (const K8sDecodeError& e) {
    EXPECT_STREQ(e.what(), "decode Service: kind: \"Pod\" is not Service");
  }
}

// --- malformed text ---

TEST(ServiceParse, MalformedJsonNamesLineAndColumn) {
  const std::string message = decode_error("{\n  \"kind\": \"List\",\n  \"items\": [,]\n}");
  EXPECT_THAT(message, StartsWith("parse service objects: line 3, column 13: "));
  EXPECT_THAT(message, HasSubstr("syntax error"));
  EXPECT_THAT(message, Not(HasSubstr("json.exception")));
}

TEST(ServiceParse, MalformedFirstLine) {
  EXPECT_THAT(decode_error("{x}"), StartsWith("parse service objects: line 1, column 2: "));
}

TEST(ServiceParse, TruncatedDocumentPointsAtTheEnd) {
  EXPECT_THAT(decode_error("{\"kind\": \"List\",\n\"items\": ["),
              StartsWith("parse service objects: line 2, column 11: "));
}

TEST(ServiceParse, EmptyText) {
  EXPECT_THAT(decode_error(""), StartsWith("parse service objects: line 1, column 1: "));
}

}  // namespace
}  // namespace flatnet::netmodel
