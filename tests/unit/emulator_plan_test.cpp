// The emulator's plan as plain values: names, node addressing, the node CNI configuration, the
// Deployment controller's diff, the scheduler, and the pod records' JSON.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "flatnet/emulator/check.hpp"
#include "flatnet/emulator/graph.hpp"
#include "flatnet/emulator/plan.hpp"
#include "flatnet/emulator/state.hpp"
#include "flatnet/emulator/table.hpp"
#include "flatnet/emulator/workload.hpp"
#include "flatnet/netmodel/cluster_file.hpp"

namespace flatnet::emulator {
namespace {

using netmodel::ClusterSpec;
using netmodel::IpAddress;
using netmodel::IpPrefix;
using nlohmann::json;

ClusterSpec spec_with(std::size_t nodes) {
  ClusterSpec spec = netmodel::default_cluster();
  spec.name = "demo";
  spec.nodes.clear();
  for (std::size_t i = 0; i < nodes; ++i)
    spec.nodes.push_back({netmodel::default_node_name(i), {}});
  return spec;
}

netmodel::Pod pod(const std::string& name, const std::string& node = "",
                  netmodel::Labels selector = {}) {
  netmodel::Pod p;
  p.meta.name = name;
  p.meta.labels = {{"app", name}};
  p.spec.node_name = node;
  p.spec.node_selector = std::move(selector);
  p.spec.containers.push_back({"c", {{"http", 8080, netmodel::Protocol::tcp}}});
  return p;
}

netmodel::Deployment deployment(const std::string& name, int replicas) {
  netmodel::Deployment d;
  d.meta.name = name;
  d.replicas = replicas;
  d.selector.match_labels = {{"app", name}};
  d.template_.meta.labels = {{"app", name}};
  d.template_.spec.containers.push_back({"c", {{"", 80, netmodel::Protocol::tcp}}});
  return d;
}

// --- names ---

TEST(EmulatorNames, NamespacesCarryTheClusterName) {
  EXPECT_EQ(fabric_netns("demo"), "flatnet-demo-fabric");
  EXPECT_EQ(node_netns("demo", "node-1"), "flatnet-demo-node.node-1");
  EXPECT_EQ(pod_netns("demo", "default", "web-1"), "flatnet-demo-pod.default.web-1");
  EXPECT_EQ(pod_netns("demo", "team-a", "web-1"), "flatnet-demo-pod.team-a.web-1");
  EXPECT_EQ(pod_key("default", "web"), "web");
  EXPECT_EQ(pod_key("team-a", "web"), "team-a/web");
  // Every name is a valid `ip netns` name.
  for (const auto& name : {fabric_netns("demo"), node_netns("demo", "node-1"),
                           pod_netns("demo", "team-a", "web.x-1")}) {
    EXPECT_NO_THROW(netmodel::NetNs::validate_name(name)) << name;
  }
}

// Clusters whose names extend each other ("a", "a-pod", "a-node") never claim each other's
// namespaces, and no node's namespace can be a pod's.
TEST(EmulatorNames, OwnershipIsExact) {
  EXPECT_TRUE(owns_netns("a", "flatnet-a-fabric"));
  EXPECT_TRUE(owns_netns("a", "flatnet-a-node.x"));
  EXPECT_TRUE(owns_netns("a", "flatnet-a-pod.default.web.v2"));
  for (const std::string& other : std::vector<std::string>{"a-pod", "a-node", "a-b", "a-fabric"}) {
    for (const auto& name : {fabric_netns(other), node_netns(other, "x"),
                             pod_netns(other, "default", "web"), node_netns(other, "fabric")}) {
      EXPECT_FALSE(owns_netns("a", name)) << name;
      EXPECT_TRUE(owns_netns(other, name)) << name;
    }
  }
  EXPECT_FALSE(owns_netns("a", "flatnet-a-fabricx"));
  EXPECT_FALSE(owns_netns("a", "flatnet-ab-fabric"));
  EXPECT_FALSE(owns_netns("a", "flatnet-test-1-node"));
  // A pod "team.web" in "default" and a pod "web" in "team" get different names.
  EXPECT_NE(pod_netns("c", "default", "team.web"), pod_netns("c", "team", "web"));
}

TEST(EmulatorNames, ClusterNamesAreDnsLabels) {
  EXPECT_EQ(cluster_name_problem("demo-1"), "");
  for (const std::string& bad : std::vector<std::string>{"", "..", "../../tmp/x", "/", "Demo",
                                                         "a_b", "a.b", std::string(33, 'a')}) {
    EXPECT_NE(cluster_name_problem(bad), "") << bad;
    EXPECT_THROW(ClusterState{bad}, std::invalid_argument) << bad;
  }
}

// --- nodes ---

TEST(EmulatorNodes, AddressesFollowTheNodeNumber) {
  const ClusterSpec spec = spec_with(3);
  const auto indexes = assign_node_indexes(spec, {});
  const auto nodes = plan_nodes(spec, indexes);
  ASSERT_EQ(nodes.size(), 3u);
  EXPECT_EQ(nodes[0].index, 1u);
  EXPECT_EQ(nodes[0].address, IpPrefix::parse("172.18.0.2/24"));
  EXPECT_EQ(nodes[0].pod_subnet, IpPrefix::parse("10.244.1.0/24"));
  EXPECT_EQ(nodes[0].gateway, IpPrefix::parse("10.244.1.1/24"));
  EXPECT_EQ(nodes[2].address, IpPrefix::parse("172.18.0.4/24"));
  EXPECT_EQ(nodes[2].pod_subnet, IpPrefix::parse("10.244.3.0/24"));
  EXPECT_EQ(nodes[2].netns, "flatnet-demo-node.node-3");
  EXPECT_EQ(nodes[2].fabric_port, "n3");
  EXPECT_TRUE(nodes[2].segment_port.empty());
  EXPECT_EQ(nodes[0].capacity, 253u);
  EXPECT_EQ(nodes[0].labels.at("kubernetes.io/hostname"), "node-1");
}

TEST(EmulatorNodes, FlatNetworkGatewaysSpanThePodCidr) {
  ClusterSpec spec = spec_with(2);
  spec.network = netmodel::Network::flat;
  const auto nodes = plan_nodes(spec, assign_node_indexes(spec, {}));
  EXPECT_EQ(nodes[1].gateway, IpPrefix::parse("10.244.2.1/16"));
  EXPECT_EQ(nodes[1].segment_port, "p2");
}

TEST(EmulatorNodes, IndexesStayWhenNodesComeAndGo) {
  ClusterSpec spec = spec_with(3);
  auto first = assign_node_indexes(spec, {});
  // node-2 leaves, node-9 arrives: the others keep their numbers, node-9 takes the free one.
  spec.nodes = {{"node-1", {}}, {"node-3", {}}, {"node-9", {}}};
  auto second = assign_node_indexes(spec, first);
  EXPECT_EQ(second.at("node-1"), 1u);
  EXPECT_EQ(second.at("node-3"), 3u);
  EXPECT_EQ(second.at("node-9"), 2u);
}

TEST(EmulatorNodes, TooManyNodesForTheRangesIsRefused) {
  ClusterSpec spec = spec_with(4);
  spec.node_cidr = IpPrefix::parse("172.18.0.0/29");  // .2 .. .6: five nodes at most
  EXPECT_NO_THROW(assign_node_indexes(spec, {}));
  spec = spec_with(6);
  spec.node_cidr = IpPrefix::parse("172.18.0.0/29");
  EXPECT_THROW(assign_node_indexes(spec, {}), std::invalid_argument);
}

TEST(EmulatorNodes, ConflistForFlatnetAndForTheReferencePlugins) {
  ClusterSpec spec = spec_with(2);
  const auto nodes = plan_nodes(spec, assign_node_indexes(spec, {}));
  json list = json::parse(cni_conflist(spec, nodes[1], "/run/flatnet/demo/nodes/node-2/ipam"));
  EXPECT_EQ(list["cniVersion"], "1.0.0");
  EXPECT_EQ(list["name"], "flatnet-demo");
  const json& plugin = list["plugins"][0];
  EXPECT_EQ(plugin["type"], "flatnet-cni");
  EXPECT_EQ(plugin["bridge"], "flat0");
  EXPECT_EQ(plugin["isGateway"], true);
  EXPECT_EQ(plugin["ipMasq"], false);
  EXPECT_EQ(plugin["mtu"], 1500);
  EXPECT_EQ(plugin["ipam"]["type"], "flatnet-ipam");
  EXPECT_EQ(plugin["ipam"]["dataDir"], "/run/flatnet/demo/nodes/node-2/ipam");
  EXPECT_EQ(plugin["ipam"]["ranges"][0][0]["subnet"], "10.244.2.0/24");
  EXPECT_EQ(plugin["ipam"]["ranges"][0][0]["gateway"], "10.244.2.1");

  spec.cni = netmodel::CniKind::bridge;
  spec.network = netmodel::Network::flat;
  list = json::parse(cni_conflist(spec, plan_node(spec, spec.nodes[1], 2), "/x"));
  EXPECT_EQ(list["plugins"][0]["type"], "bridge");
  EXPECT_EQ(list["plugins"][0]["ipam"]["type"], "host-local");
  const json& range = list["plugins"][0]["ipam"]["ranges"][0][0];
  EXPECT_EQ(range["subnet"], "10.244.0.0/16");
  EXPECT_EQ(range["rangeStart"], "10.244.2.2");
  EXPECT_EQ(range["rangeEnd"], "10.244.2.254");
  EXPECT_EQ(range["gateway"], "10.244.2.1");
}

// --- the Deployment controller ---

std::vector<PodIdentity> identities(const PodChanges& changes, std::uint64_t first_stamp = 1) {
  std::vector<PodIdentity> result;
  for (const auto& desired : changes.create) {
    result.push_back({desired.pod.meta.namespace_, desired.pod.meta.name, desired.owner,
                      desired.template_hash, "node-1", first_stamp++});
  }
  return result;
}

TEST(EmulatorController, CreatesEveryDeclaredPodOnce) {
  std::mt19937_64 random(1);
  const auto changes = reconcile_pods({pod("a"), pod("b")}, {deployment("web", 3)}, {}, random);
  ASSERT_EQ(changes.create.size(), 5u);
  EXPECT_TRUE(changes.remove.empty());
  std::set<std::string> names;
  for (const auto& desired : changes.create)
    names.insert(desired.pod.meta.name);
  EXPECT_EQ(names.size(), 5u);
  const std::string hash = netmodel::pod_template_hash(deployment("web", 3).template_);
  for (const auto& desired : changes.create) {
    if (desired.owner.empty()) continue;
    EXPECT_EQ(desired.owner, "default/web");
    EXPECT_EQ(desired.template_hash, hash);
    EXPECT_EQ(desired.pod.meta.name.rfind("web-" + hash + "-", 0), 0u) << desired.pod.meta.name;
    EXPECT_EQ(desired.pod.meta.name.size(), std::string("web-").size() + 10 + 1 + 5);
    EXPECT_EQ(desired.pod.meta.labels.at("pod-template-hash"), hash);
    EXPECT_EQ(desired.pod.meta.labels.at("app"), "web");
  }
}

TEST(EmulatorController, RunningTwiceChangesNothing) {
  std::mt19937_64 random(2);
  const auto first = reconcile_pods({pod("a")}, {deployment("web", 3)}, {}, random);
  const auto again = reconcile_pods({pod("a")}, {deployment("web", 3)}, identities(first), random);
  EXPECT_TRUE(again.create.empty());
  EXPECT_TRUE(again.remove.empty());
}

TEST(EmulatorController, ScalesDownTheNewestPodsFirst) {
  std::mt19937_64 random(3);
  const auto first = reconcile_pods({}, {deployment("web", 4)}, {}, random);
  const auto current = identities(first);
  const auto down = reconcile_pods({}, {deployment("web", 1)}, current, random);
  EXPECT_TRUE(down.create.empty());
  ASSERT_EQ(down.remove.size(), 3u);
  for (const auto& removed : down.remove)
    EXPECT_NE(removed.name, current[0].name);
  const auto up = reconcile_pods({}, {deployment("web", 6)}, current, random);
  EXPECT_EQ(up.create.size(), 2u);
  EXPECT_TRUE(up.remove.empty());
}

TEST(EmulatorController, AnEditedTemplateReplacesThePods) {
  std::mt19937_64 random(4);
  const auto first = reconcile_pods({}, {deployment("web", 2)}, {}, random);
  auto edited = deployment("web", 2);
  edited.template_.spec.containers[0].ports[0].container_port = 81;
  const auto changes = reconcile_pods({}, {edited}, identities(first), random);
  EXPECT_EQ(changes.create.size(), 2u);
  EXPECT_EQ(changes.remove.size(), 2u);
  EXPECT_NE(changes.create[0].template_hash, first.create[0].template_hash);
}

TEST(EmulatorController, ObjectsNoLongerDeclaredAreRemoved) {
  std::mt19937_64 random(5);
  const auto first = reconcile_pods({pod("a"), pod("b")}, {deployment("web", 2)}, {}, random);
  const auto changes = reconcile_pods({pod("a")}, {}, identities(first), random);
  EXPECT_TRUE(changes.create.empty());
  std::set<std::string> removed;
  for (const auto& r : changes.remove)
    removed.insert(r.name);
  EXPECT_EQ(removed.size(), 3u);
  EXPECT_TRUE(removed.count("b"));
  EXPECT_FALSE(removed.count("a"));
}

TEST(EmulatorController, AChangedStandalonePodIsRecreated) {
  std::mt19937_64 random(6);
  const auto first = reconcile_pods({pod("a")}, {}, {}, random);
  auto changed = pod("a");
  changed.meta.labels["tier"] = "front";
  const auto changes = reconcile_pods({changed}, {}, identities(first), random);
  ASSERT_EQ(changes.create.size(), 1u);
  ASSERT_EQ(changes.remove.size(), 1u);
  EXPECT_EQ(changes.remove[0].name, "a");
}

TEST(EmulatorController, AStandalonePodTakesTheNameOfADeploymentsPod) {
  std::mt19937_64 random(8);
  const auto first = reconcile_pods({}, {deployment("web", 2)}, {}, random);
  const auto current = identities(first);
  auto standalone = pod(current[0].name);
  const auto changes = reconcile_pods({standalone}, {deployment("web", 2)}, current, random);
  ASSERT_EQ(changes.remove.size(), 1u);
  EXPECT_EQ(changes.remove[0].name, current[0].name);
  ASSERT_EQ(changes.create.size(), 2u);  // the standalone pod and a replacement replica
  std::set<std::string> names;
  for (const auto& created : changes.create)
    names.insert(created.pod.meta.name);
  EXPECT_EQ(names.size(), 2u);
}

TEST(EmulatorController, DeploymentsInOtherNamespacesAreDistinct) {
  std::mt19937_64 random(7);
  auto other = deployment("web", 1);
  other.meta.namespace_ = "team-a";
  const auto changes = reconcile_pods({}, {deployment("web", 1), other}, {}, random);
  ASSERT_EQ(changes.create.size(), 2u);
  EXPECT_EQ(changes.create[1].owner, "team-a/web");
  EXPECT_EQ(changes.create[1].pod.meta.namespace_, "team-a");
}

// --- the scheduler ---

struct ScheduleCase {
  std::string name;
  std::vector<netmodel::Pod> pods;
  std::vector<std::string> expected_nodes;  // "" when unschedulable
  std::string reason_contains;
};

class EmulatorSchedule : public ::testing::TestWithParam<ScheduleCase> {};

TEST_P(EmulatorSchedule, PlacesLikeTheScheduler) {
  const ScheduleCase& c = GetParam();
  ClusterSpec spec = spec_with(3);
  spec.nodes[0].labels = {{"zone", "a"}};
  spec.nodes[1].labels = {{"zone", "b"}};
  spec.nodes[2].labels = {{"zone", "b"}};
  spec.pod_subnet_prefix_length = 29;  // 8 addresses, 5 pods per node
  auto nodes = plan_nodes(spec, assign_node_indexes(spec, {}));
  std::vector<DesiredPod> desired;
  for (const auto& p : c.pods)
    desired.push_back({p, "", ""});
  std::map<std::string, std::size_t> counts;
  const auto placements = schedule(desired, nodes, counts);
  ASSERT_EQ(placements.size(), c.expected_nodes.size());
  for (std::size_t i = 0; i < placements.size(); ++i) {
    EXPECT_EQ(placements[i].node, c.expected_nodes[i]) << "pod " << i;
    if (c.expected_nodes[i].empty()) {
      EXPECT_NE(placements[i].reason.find(c.reason_contains), std::string::npos)
          << placements[i].reason;
    }
  }
}

std::vector<netmodel::Pod> many(int n, netmodel::Labels selector = {}) {
  std::vector<netmodel::Pod> pods;
  for (int i = 0; i < n; ++i)
    pods.push_back(pod("p" + std::to_string(i), "", selector));
  return pods;
}

INSTANTIATE_TEST_SUITE_P(
    Table, EmulatorSchedule,
    ::testing::Values(
        ScheduleCase{"spread", many(4), {"node-1", "node-2", "node-3", "node-1"}, ""},
        ScheduleCase{
            "node_name", {pod("x", "node-3"), pod("y", "node-3")}, {"node-3", "node-3"}, ""},
        ScheduleCase{"selector", many(3, {{"zone", "b"}}), {"node-2", "node-3", "node-2"}, ""},
        ScheduleCase{"hostname_label",
                     many(2, {{"kubernetes.io/hostname", "node-2"}}),
                     {"node-2", "node-2"},
                     ""},
        ScheduleCase{"no_match", many(1, {{"zone", "c"}}), {""}, "none matches"},
        ScheduleCase{"missing_node", {pod("x", "node-9")}, {""}, "not a node"},
        ScheduleCase{"full_node",
                     {pod("a", "node-1"), pod("b", "node-1"), pod("c", "node-1"),
                      pod("d", "node-1"), pod("e", "node-1"), pod("f", "node-1")},
                     {"node-1", "node-1", "node-1", "node-1", "node-1", ""},
                     "is full"},
        ScheduleCase{"full_zone",
                     many(11, {{"zone", "b"}}),
                     {"node-2", "node-3", "node-2", "node-3", "node-2", "node-3", "node-2",
                      "node-3", "node-2", "node-3", ""},
                     "matching nodes are full"}),
    [](const auto& info) { return info.param.name; });

TEST(EmulatorWorkload, PortsAndCommand) {
  auto p = pod("a");
  p.spec.containers.push_back({"d", {{"dns", 53, netmodel::Protocol::udp}}});
  auto ports = workload_ports(p);
  ASSERT_EQ(ports.size(), 2u);
  EXPECT_EQ(ports[1].container_port, 53);

  netmodel::Pod bare;
  bare.meta.name = "bare";
  ports = workload_ports(bare);
  ASSERT_EQ(ports.size(), 2u);
  EXPECT_EQ(ports[0].container_port, 8080);
  EXPECT_EQ(ports[0].protocol, netmodel::Protocol::tcp);
  EXPECT_EQ(ports[1].container_port, 8081);
  EXPECT_EQ(ports[1].protocol, netmodel::Protocol::udp);

  PodRecord record;
  record.id.name = "a";
  record.ports = workload_ports(p);
  EXPECT_EQ(workload_command("/bin/netexec", record),
            (std::vector<std::string>{"/bin/netexec", "--hostname", "a", "--port", "8080/tcp",
                                      "--port", "53/udp", "--ready-fd", "3"}));
}

// --- state ---

TEST(EmulatorState, PodRecordsRoundTrip) {
  PodRecord record;
  record.id = {"team-a", "web-abc", "team-a/web", "hash", "node-2", 42};
  record.uid = "u";
  record.container_id = "c";
  record.netns = "flatnet-demo-pod.team-a.web-abc";
  record.labels = {{"app", "web"}};
  record.ports = {{"http", 8080, netmodel::Protocol::tcp}, {"", 53, netmodel::Protocol::udp}};
  record.phase = PodPhase::running;
  record.ip = IpAddress::parse("10.244.2.5");
  record.host_veth = "veth1234";
  record.cni_result = {{"cniVersion", "1.0.0"}};
  record.workload = {1234, 5678};
  record.restarts = 2;
  record.created_unix = 99;
  const PodRecord back = pod_record_from_json(json::parse(to_json(record).dump()));
  EXPECT_EQ(back.key(), "team-a/web-abc");
  EXPECT_EQ(back.id.owner, "team-a/web");
  EXPECT_EQ(back.id.created, 42u);
  EXPECT_EQ(back.ports, record.ports);
  EXPECT_EQ(back.phase, PodPhase::running);
  EXPECT_EQ(back.ip, record.ip);
  EXPECT_EQ(back.workload.pid, 1234);
  EXPECT_EQ(back.workload.start_time, 5678u);
  EXPECT_EQ(back.restarts, 2);
  EXPECT_EQ(back.cni_result, record.cni_result);
  for (PodPhase phase :
       {PodPhase::pending, PodPhase::creating, PodPhase::running, PodPhase::failed}) {
    record.phase = phase;
    EXPECT_EQ(pod_record_from_json(to_json(record)).phase, phase);
  }
}

TEST(EmulatorState, ProcessIdentityNeedsTheStartTime) {
  const auto self = process_start_time(::getpid());
  ASSERT_TRUE(self);
  EXPECT_TRUE((ProcessRef{::getpid(), *self}.alive()));
  EXPECT_FALSE((ProcessRef{::getpid(), *self + 1}.alive()));  // a reused pid is not ours
  EXPECT_FALSE((ProcessRef{0, 0}.alive()));
}

// --- output ---

TEST(EmulatorOutput, TablesPadColumnsLikeKubectl) {
  Table table({"NAME", "IP"});
  table.add({"a", "10.0.0.1"});
  table.add({"longer-name", "10.0.0.22"});
  std::ostringstream out;
  table.print(out);
  EXPECT_EQ(out.str(),
            "NAME          IP\n"
            "a             10.0.0.1\n"
            "longer-name   10.0.0.22\n");
}

PairResult pair(const std::string& from, const std::string& to, bool passed) {
  PairResult p;
  p.from = {EndpointKind::pod, from, "node-1"};
  p.to = {EndpointKind::pod, to, "node-2"};
  p.address = IpAddress::parse("10.244.2.5");
  p.port = 8080;
  p.passed = passed;
  p.probe.outcome = passed ? ProbeOutcome::ok : ProbeOutcome::timeout;
  if (!passed) p.hop = "node node-1: no route to 10.244.2.5 <&\">";
  return p;
}

TEST(EmulatorOutput, CheckReportsSayWhatFailed) {
  CheckReport report;
  report.pairs = {pair("a", "b", true), pair("b", "a", false)};
  report.pod_pods_tcp = 2;
  report.failed = 1;
  EXPECT_NE(check_summary(report).find("check FAILED: 1/2 pod→pod TCP"), std::string::npos)
      << check_summary(report);
  std::ostringstream table;
  print_check_table(table, report, false);
  EXPECT_NE(table.str().find("BROKEN HOPS"), std::string::npos);
  EXPECT_NE(table.str().find("no route to 10.244.2.5"), std::string::npos);
  const json j = check_to_json(report);
  EXPECT_EQ(j["passed"], false);
  EXPECT_EQ(j["pairs"].size(), 2u);
  EXPECT_EQ(j["pairs"][1]["hop"], "node node-1: no route to 10.244.2.5 <&\">");
  std::ostringstream junit;
  write_junit(junit, "demo", report);
  EXPECT_NE(junit.str().find("tests=\"2\" failures=\"1\""), std::string::npos) << junit.str();
  EXPECT_NE(junit.str().find("&lt;&amp;&quot;&gt;"), std::string::npos);  // escaped
}

TEST(EmulatorOutput, GraphNamesEveryNodeAndPod) {
  StoredCluster cluster;
  cluster.spec = spec_with(2);
  const auto nodes = plan_nodes(cluster.spec, assign_node_indexes(cluster.spec, {}));
  PodRecord record;
  record.id = {"default", "web-1", "", "", "node-2", 1};
  record.ip = IpAddress::parse("10.244.2.2");
  record.host_veth = "veth0001";
  record.phase = PodPhase::running;
  const std::string dot = cluster_graph(cluster, nodes, {record});
  EXPECT_EQ(dot.rfind("digraph", 0), 0u);
  for (const char* text : {"node node-1", "node node-2", "pod web-1", "10.244.2.2", "veth0001",
                           "172.18.0.3/24", "fabric0"}) {
    EXPECT_NE(dot.find(text), std::string::npos) << text;
  }
}

}  // namespace
}  // namespace flatnet::emulator
