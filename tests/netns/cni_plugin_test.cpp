// flatnet-cni and flatnet-ipam executed exactly as a container runtime executes them: the binary
// with CNI_* variables and the configuration on stdin, inside a test "node" namespace (never the
// host's), against pod namespaces of the test's own. Also the reference plugins of Debian's
// containernetworking-plugins, for interoperability.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "flatnet/cni/exec.hpp"
#include "flatnet/cni/masquerade.hpp"
#include "flatnet/cni/version.hpp"
#include "flatnet/netmodel/netlink.hpp"
#include "flatnet/netmodel/sysctl.hpp"
#include "flatnet/testing/scratch_netns.hpp"
#include "flatnet/testing/traffic.hpp"

namespace flatnet::cni {
namespace {

using netmodel::IpAddress;
using netmodel::IpPrefix;
using netmodel::Netlink;
using netmodel::NetNs;
using nlohmann::json;
using ::testing::HasSubstr;

namespace fs = std::filesystem;

const std::string kFlatnetDir = FLATNET_PLUGIN_DIR;
const std::string kReferenceDir = REFERENCE_PLUGIN_DIR;

bool reference_plugins_installed() {
  return ::access((kReferenceDir + "/bridge").c_str(), X_OK) == 0;
}

struct Invocation {
  int status = 0;
  json out;  // stdout parsed (null when empty)
  std::string raw;
  std::string err;
};

class CniPlugins : public testing::NetnsTest {
 protected:
  void SetUp() override {
    NetnsTest::SetUp();
    if (IsSkipped()) return;
    node_ = &scratch_.add("node");
    // Parameterised tests are named "Case/param": keep the name one path component.
    std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(test.begin(), test.end(), '/', '-');
    data_dir_ = fs::path(::testing::TempDir()) /
                ("flatnet-cni-test-" + std::to_string(::getpid()) + "-" + test);
    fs::remove_all(data_dir_);
  }
  void TearDown() override {
    if (!data_dir_.empty()) fs::remove_all(data_dir_);
  }

  // Runs `plugin` (a file in the flatnet or reference plugin directory) in the node namespace.
  Invocation run(const std::string& plugin, const std::string& command, const std::string& id,
                 const std::string& netns, const std::string& ifname, const json& config,
                 const std::string& args = "",
                 const std::map<std::string, std::string>& extra_vars = {}) {
    std::map<std::string, std::string> vars = {{"CNI_COMMAND", command},
                                               {"CNI_PATH", kFlatnetDir + ":" + kReferenceDir}};
    if (!id.empty()) vars["CNI_CONTAINERID"] = id;
    if (!netns.empty()) vars["CNI_NETNS"] = netns;
    if (!ifname.empty()) vars["CNI_IFNAME"] = ifname;
    if (!args.empty()) vars["CNI_ARGS"] = args;
    vars.insert(extra_vars.begin(), extra_vars.end());
    const std::string dir = plugin.rfind("flatnet", 0) == 0 ? kFlatnetDir : kReferenceDir;
    const ExecOutput output = exec_program(dir + "/" + plugin, vars, config.dump(), {}, node_);
    Invocation inv{output.status, json(), output.out, output.err};
    if (!output.out.empty()) inv.out = json::parse(output.out, nullptr, false);
    return inv;
  }

  json conf(const std::string& version = "1.1.0", const std::string& ipam_type = "flatnet-ipam",
            const std::string& subnet = "10.30.0.0/24") {
    return {{"cniVersion", version},
            {"name", "testnet"},
            {"type", "flatnet-cni"},
            {"bridge", "cni0"},
            {"isGateway", true},
            {"ipam",
             {{"type", ipam_type},
              {"subnet", subnet},
              {"dataDir", data_dir_.string()},
              {"routes", json::array({{{"dst", "0.0.0.0/0"}}})}}}};
  }

  // Names of the reservation files of "testnet" (addresses only).
  std::set<std::string> reservations() {
    std::set<std::string> out;
    const fs::path dir = data_dir_ / "testnet";
    if (!fs::exists(dir)) return out;
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename();
      if (IpAddress::try_parse(name)) out.insert(name);
    }
    return out;
  }

  std::set<std::string> node_links() {
    std::set<std::string> names;
    for (const auto& l : Netlink::open(*node_).links())
      names.insert(l.name);
    return names;
  }

  NetNs* node_ = nullptr;
  fs::path data_dir_;
};

// --- every supported version ---

class CniVersions : public CniPlugins, public ::testing::WithParamInterface<std::string> {};

TEST_P(CniVersions, AddCheckDelAsARuntimeDoes) {
  const std::string version = GetParam();
  NetNs& pod = scratch_.add("pod");
  const json config = conf(version);
  // Forwarding off, whatever the host lends a new namespace: isGateway must turn it on.
  netmodel::write_sysctl(*node_, "net.ipv4.ip_forward", "0");

  const Invocation add = run("flatnet-cni", "ADD", "ctr1", pod.path(), "eth0", config);
  ASSERT_EQ(add.status, 0) << add.raw << add.err;
  EXPECT_EQ(add.out["cniVersion"], version);
  ASSERT_EQ(add.out["interfaces"].size(), 3u);
  EXPECT_EQ(add.out["interfaces"][0]["name"], "cni0");
  EXPECT_EQ(add.out["interfaces"][2]["name"], "eth0");
  EXPECT_EQ(add.out["interfaces"][2]["sandbox"], pod.path().string());
  ASSERT_EQ(add.out["ips"].size(), 1u);
  const json& ip = add.out["ips"][0];
  EXPECT_EQ(ip["interface"], 2);
  EXPECT_EQ(ip["gateway"], "10.30.0.1");
  EXPECT_EQ(ip.contains("version"), compare_versions(version, "1.0.0") < 0);
  const IpPrefix address = IpPrefix::parse(ip["address"].get<std::string>());

  // The kernel agrees with the result.
  Netlink pod_nl = Netlink::open(pod);
  const auto eth0 = pod_nl.link("eth0");
  EXPECT_TRUE(eth0.up());
  EXPECT_EQ(eth0.mac.to_string(), add.out["interfaces"][2]["mac"]);
  const auto addresses = pod_nl.addresses(eth0.index, netmodel::Family::v4);
  ASSERT_EQ(addresses.size(), 1u);
  EXPECT_EQ(addresses[0].prefix, address);
  Netlink node_nl = Netlink::open(*node_);
  const auto host_veth = node_nl.link(add.out["interfaces"][1]["name"].get<std::string>());
  EXPECT_EQ(host_veth.master, node_nl.link("cni0").index);
  EXPECT_EQ(netmodel::read_sysctl(*node_, "net.ipv4.ip_forward"), "1") << "isGateway";

  if (compare_versions(version, "0.4.0") >= 0) {
    json with_prev = config;
    with_prev["prevResult"] = add.out;
    const Invocation check = run("flatnet-cni", "CHECK", "ctr1", pod.path(), "eth0", with_prev);
    EXPECT_EQ(check.status, 0) << check.raw;
  } else {
    const Invocation check = run("flatnet-cni", "CHECK", "ctr1", pod.path(), "eth0", config);
    EXPECT_EQ(check.status, 1);
    EXPECT_EQ(check.out["code"], 1) << "CHECK needs 0.4.0";
  }

  const Invocation del = run("flatnet-cni", "DEL", "ctr1", pod.path(), "eth0", config);
  EXPECT_EQ(del.status, 0) << del.raw;
  EXPECT_EQ(del.raw, "") << "DEL prints nothing on success";
  EXPECT_FALSE(pod_nl.find_link("eth0"));
  EXPECT_FALSE(node_nl.find_link(host_veth.name));
  EXPECT_TRUE(reservations().empty());
}

INSTANTIATE_TEST_SUITE_P(Spec, CniVersions,
                         ::testing::Values("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"),
                         [](const auto& info) {
                           std::string name = "v" + info.param;
                           std::replace(name.begin(), name.end(), '.', '_');
                           return name;
                         });

// --- traffic ---

TEST_F(CniPlugins, PodsReachEachOtherAndTheNodeReachesPods) {
  NetNs& a = scratch_.add("poda");
  NetNs& b = scratch_.add("podb");
  const json config = conf();
  const Invocation add_a = run("flatnet-cni", "ADD", "a", a.path(), "eth0", config);
  const Invocation add_b = run("flatnet-cni", "ADD", "b", b.path(), "eth0", config);
  ASSERT_EQ(add_a.status, 0) << add_a.raw;
  ASSERT_EQ(add_b.status, 0) << add_b.raw;
  const IpAddress ip_a =
      IpPrefix::parse(add_a.out["ips"][0]["address"].get<std::string>()).address();
  const IpAddress ip_b =
      IpPrefix::parse(add_b.out["ips"][0]["address"].get<std::string>()).address();

  auto listener = testing::listen_tcp(b, ip_b, 8080);
  const auto tcp = testing::tcp_exchange(a, listener, ip_b, 8080, "hi");
  EXPECT_TRUE(tcp.ok) << tcp.error;
  EXPECT_EQ(tcp.seen_client, ip_a) << "pod to pod is not NATed";
  auto udp_socket = testing::bind_udp(a, ip_a, 5353);
  const auto udp = testing::udp_exchange(b, udp_socket, ip_a, 5353, "ping");
  EXPECT_TRUE(udp.ok) << udp.error;
  EXPECT_EQ(udp.seen_client, ip_b);

  // The node reaches a pod from its gateway address on the bridge.
  auto from_node = testing::tcp_exchange(*node_, listener, ip_b, 8080, "node");
  EXPECT_TRUE(from_node.ok) << from_node.error;
  EXPECT_EQ(from_node.seen_client, IpAddress::parse("10.30.0.1"));
  // And the pod's default route leads to the node.
  auto node_listener = testing::listen_tcp(*node_, IpAddress::parse("10.30.0.1"), 9090);
  const auto to_node =
      testing::tcp_exchange(a, node_listener, IpAddress::parse("10.30.0.1"), 9090, "up");
  EXPECT_TRUE(to_node.ok) << to_node.error;

  EXPECT_EQ(run("flatnet-cni", "DEL", "a", a.path(), "eth0", config).status, 0);
  EXPECT_EQ(run("flatnet-cni", "DEL", "b", b.path(), "eth0", config).status, 0);
}

TEST_F(CniPlugins, HairpinModeFollowsTheConfig) {
  for (const bool on : {true, false}) {
    NetNs& pod = scratch_.add(on ? "hpon" : "hpoff");
    json config = conf();
    config["hairpinMode"] = on;
    const Invocation add = run("flatnet-cni", "ADD", "hp", pod.path(), "eth0", config);
    ASSERT_EQ(add.status, 0) << add.raw;
    Netlink node_nl = Netlink::open(*node_);
    const auto port = node_nl.link(add.out["interfaces"][1]["name"].get<std::string>());
    EXPECT_EQ(node_nl.hairpin(port.index), on);
    EXPECT_EQ(run("flatnet-cni", "DEL", "hp", pod.path(), "eth0", config).status, 0);
  }
}

// --- DEL edge cases: each succeeds and releases the address ---

TEST_F(CniPlugins, DelSucceedsWhateverIsAlreadyGone) {
  const json config = conf();
  struct Case {
    std::string name;
    std::function<void(NetNs&)> damage;
    bool pass_netns;
  };
  const std::vector<Case> cases = {
      {"twice", [](NetNs&) {}, true},
      {"empty CNI_NETNS", [](NetNs&) {}, false},
      {"interface gone", [](NetNs& ns) { Netlink::open(ns).delete_link("eth0"); }, true},
      {"namespace gone", [&](NetNs& ns) { scratch_.destroy(ns); }, true},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    NetNs& pod = scratch_.add("del");
    const std::string ns_path = pod.path();
    ASSERT_EQ(run("flatnet-cni", "ADD", "d", ns_path, "eth0", config).status, 0);
    ASSERT_EQ(reservations().size(), 1u);
    c.damage(pod);
    const json no_prev = config;  // DEL never needs prevResult
    const Invocation del =
        run("flatnet-cni", "DEL", "d", c.pass_netns ? ns_path : "", "eth0", no_prev);
    EXPECT_EQ(del.status, 0) << del.raw;
    EXPECT_TRUE(reservations().empty()) << "the address is always released";
    const Invocation again =
        run("flatnet-cni", "DEL", "d", c.pass_netns ? ns_path : "", "eth0", no_prev);
    EXPECT_EQ(again.status, 0) << again.raw;
    if (!c.pass_netns) Netlink::open(pod).delete_link("eth0");  // what the runtime would tear down
  }
  // The veth of the destroyed namespace goes with it, asynchronously.
  for (int i = 0; i < 300 && node_links().size() > 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(node_links(), (std::set<std::string>{"lo", "cni0"})) << "no veth left on the node";
}

// --- failures roll back everything the ADD made ---

TEST_F(CniPlugins, AFailedAddLeavesNothingBehind) {
  struct Case {
    std::string name;
    std::function<void(json&, NetNs& pod)> arrange;
    int code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"pool exhausted",
       [&](json& c, NetNs&) {
         c["ipam"]["subnet"] = "10.31.0.0/30";  // one usable address after the gateway
         NetNs& other = scratch_.add("filler");
         ASSERT_EQ(run("flatnet-cni", "ADD", "filler", other.path(), "eth0", c).status, 0);
       },
       101, "no free address"},
      {"bridge name taken by a veth",
       [&](json& c, NetNs&) {
         c["bridge"] = "notabridge";
         Netlink::open(*node_).add_veth({.name = "notabridge", .peer_name = "notabridge-p"});
       },
       7, "notabridge"},
      {"route via an unreachable gateway",
       [&](json& c, NetNs&) {
         c["ipam"]["routes"] = json::array({{{"dst", "192.0.2.0/24"}, {"gw", "10.99.0.1"}}});
       },
       100, "10.99.0.1"},
      {"bridge holds another address",
       [&](json& c, NetNs&) {
         Netlink nl = Netlink::open(*node_);
         nl.add_bridge({.name = "cni9"});
         nl.add_address(nl.link("cni9").index, IpPrefix::parse("10.77.0.1/24"));
         c["bridge"] = "cni9";
       },
       7, "forceAddress"},
      {"IPAM plugin not in CNI_PATH", [&](json& c, NetNs&) { c["ipam"]["type"] = "no-such-ipam"; },
       100, "no-such-ipam"},
      {"interface name taken in the pod",
       [&](json&, NetNs& pod) { Netlink::open(pod).add_bridge({.name = "eth0"}); }, 100,
       "already exists"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    NetNs& pod = scratch_.add("fail");
    json config = conf();
    c.arrange(config, pod);
    const auto links_before = node_links();
    const auto reserved_before = reservations();
    const Invocation add = run("flatnet-cni", "ADD", "victim", pod.path(), "eth0", config);
    EXPECT_EQ(add.status, 1) << add.raw;
    EXPECT_EQ(add.out["code"], c.code) << add.raw;
    EXPECT_THAT(add.out["msg"].get<std::string>(), HasSubstr(c.message));
    EXPECT_EQ(node_links(), links_before) << "no link left on the node";
    EXPECT_EQ(reservations(), reserved_before) << "the address was released";
    const auto pod_links = Netlink::open(pod).links();
    const bool pod_has_veth = std::any_of(pod_links.begin(), pod_links.end(),
                                          [](const auto& l) { return l.kind == "veth"; });
    EXPECT_FALSE(pod_has_veth) << "no veth left in the pod";
  }
}

TEST_F(CniPlugins, ARepeatedAddThatFailsLeavesTheFirstAttachmentItsAddress) {
  NetNs& first = scratch_.add("dup1");
  NetNs& second = scratch_.add("dup2");
  const json config = conf();
  const Invocation add = run("flatnet-cni", "ADD", "dup", first.path(), "eth0", config);
  ASSERT_EQ(add.status, 0) << add.raw;
  const std::string address =
      IpPrefix::parse(add.out["ips"][0]["address"].get<std::string>()).address().to_string();
  // IPAM answers the repeated ADD with the address it holds; the ADD then fails.
  const Invocation again = run("flatnet-cni", "ADD", "dup", second.path(), "eth0", config, "",
                               {{"FLATNET_CNI_FAILPOINTS", "veth-created"}});
  EXPECT_EQ(again.status, 1);
  EXPECT_EQ(reservations(), (std::set<std::string>{address}))
      << "the rollback gave back only what the failed ADD reserved";
}

TEST_F(CniPlugins, DelSucceedsWhenTheResolvConfIsGone) {
  NetNs& pod = scratch_.add("resolv");
  const fs::path resolv = data_dir_ / "resolv.conf";
  fs::create_directories(data_dir_);
  std::ofstream(resolv) << "nameserver 10.96.0.10\nsearch default.svc.cluster.local\n";
  json config = conf();
  config["ipam"]["resolvConf"] = resolv.string();
  const Invocation add = run("flatnet-cni", "ADD", "rc", pod.path(), "eth0", config);
  ASSERT_EQ(add.status, 0) << add.raw;
  EXPECT_EQ(add.out["dns"]["nameservers"][0], "10.96.0.10");
  fs::remove(resolv);
  const Invocation del = run("flatnet-cni", "DEL", "rc", pod.path(), "eth0", config);
  EXPECT_EQ(del.status, 0) << del.raw;
  EXPECT_TRUE(reservations().empty());
}

TEST_F(CniPlugins, RefusesToConfigureItsOwnNamespace) {
  const Invocation add = run("flatnet-cni", "ADD", "self", node_->path(), "eth0", conf());
  EXPECT_EQ(add.status, 1);
  EXPECT_EQ(add.out["code"], 4) << add.raw;
  EXPECT_THAT(add.out["msg"].get<std::string>(), HasSubstr("own network namespace"));
  EXPECT_TRUE(reservations().empty());
}

// --- ipMasq ---

class CniMasquerade : public CniPlugins {
 protected:
  std::string nat_rules() {
    const ExecOutput out = exec_program("/usr/sbin/iptables-save", {}, "", {"-t", "nat"}, node_);
    EXPECT_EQ(out.status, 0) << out.err;
    return out.out;
  }
  json masq_conf() {
    json c = conf();
    c["ipMasq"] = true;
    return c;
  }
};

TEST_F(CniMasquerade, TrafficLeavingTheSubnetIsNatedTrafficInsideIsNot) {
  NetNs& pod = scratch_.add("masqpod");
  NetNs& peer = scratch_.add("masqpeer");
  NetNs& outside = scratch_.add("outside");
  Netlink node_nl = Netlink::open(*node_);
  node_nl.add_veth({.name = "fnt-out", .peer_name = "eth0", .peer_ns = &outside});
  node_nl.add_address(node_nl.link("fnt-out").index, IpPrefix::parse("172.31.0.1/24"));
  node_nl.set_up(node_nl.link("fnt-out").index);
  Netlink out_nl = Netlink::open(outside);
  out_nl.add_address(out_nl.link("eth0").index, IpPrefix::parse("172.31.0.2/24"));
  out_nl.set_up(out_nl.link("eth0").index);  // no route back to the pod subnet: replies need NAT

  const json config = masq_conf();
  const Invocation add = run("flatnet-cni", "ADD", "m1", pod.path(), "eth0", config);
  ASSERT_EQ(add.status, 0) << add.raw;
  ASSERT_EQ(run("flatnet-cni", "ADD", "m2", peer.path(), "eth0", config).status, 0);
  const IpAddress pod_ip =
      IpPrefix::parse(add.out["ips"][0]["address"].get<std::string>()).address();
  EXPECT_THAT(nat_rules(), HasSubstr(masquerade_chain({"testnet", "m1", "eth0"})));
  EXPECT_THAT(nat_rules(), HasSubstr("name: \\\"testnet\\\" id: \\\"m1\\\" ifname: \\\"eth0\\\""));

  auto far = testing::listen_tcp(outside, IpAddress::parse("172.31.0.2"), 8000);
  const auto out = testing::tcp_exchange(pod, far, IpAddress::parse("172.31.0.2"), 8000, "x");
  EXPECT_TRUE(out.ok) << out.error;
  EXPECT_EQ(out.seen_client, IpAddress::parse("172.31.0.1")) << "masqueraded to the node";

  auto near = testing::listen_tcp(pod, pod_ip, 8001);
  const auto in = testing::tcp_exchange(peer, near, pod_ip, 8001, "y");
  EXPECT_TRUE(in.ok) << in.error;
  EXPECT_NE(in.seen_client, IpAddress::parse("10.30.0.1")) << "pod to pod is never NATed";

  // The spec forbids a second ADD of one attachment; it fails and loses nothing.
  EXPECT_EQ(run("flatnet-cni", "ADD", "m1", pod.path(), "eth0", config).status, 1);
  EXPECT_EQ(reservations().count(pod_ip.to_string()), 1u);
  EXPECT_THAT(nat_rules(), HasSubstr(masquerade_chain({"testnet", "m1", "eth0"})));
  EXPECT_EQ(run("flatnet-cni", "DEL", "m1", pod.path(), "eth0", config).status, 0);
  EXPECT_THAT(nat_rules(), ::testing::Not(HasSubstr(masquerade_chain({"testnet", "m1", "eth0"}))));
  EXPECT_EQ(run("flatnet-cni", "DEL", "m2", peer.path(), "eth0", config).status, 0);
  EXPECT_THAT(nat_rules(), ::testing::Not(HasSubstr("FLATNET-")));
}

TEST_F(CniMasquerade, DelWithoutTheNamespaceStillRemovesTheRules) {
  NetNs& pod = scratch_.add("masqgone");
  const json config = masq_conf();
  ASSERT_EQ(run("flatnet-cni", "ADD", "gone", pod.path(), "eth0", config).status, 0);
  const std::string path = pod.path();
  scratch_.destroy(pod);
  EXPECT_EQ(run("flatnet-cni", "DEL", "gone", path, "eth0", config).status, 0);
  EXPECT_THAT(nat_rules(), ::testing::Not(HasSubstr("FLATNET-")))
      << "the reference plugin leaks its rules here";
  EXPECT_TRUE(reservations().empty());
}

TEST_F(CniMasquerade, GcRemovesRulesAndAddressesOfAttachmentsNoLongerValid) {
  NetNs& keep = scratch_.add("gckeep");
  NetNs& drop = scratch_.add("gcdrop");
  json config = masq_conf();
  ASSERT_EQ(run("flatnet-cni", "ADD", "keep", keep.path(), "eth0", config).status, 0);
  ASSERT_EQ(run("flatnet-cni", "ADD", "drop", drop.path(), "eth0", config).status, 0);
  config["cni.dev/valid-attachments"] =
      json::array({{{"containerID", "keep"}, {"ifname", "eth0"}}});
  const Invocation gc = run("flatnet-cni", "GC", "", "", "", config);
  EXPECT_EQ(gc.status, 0) << gc.raw;
  const std::string rules = nat_rules();
  EXPECT_THAT(rules, HasSubstr(masquerade_chain({"testnet", "keep", "eth0"})));
  EXPECT_THAT(rules, ::testing::Not(HasSubstr(masquerade_chain({"testnet", "drop", "eth0"}))));
  EXPECT_EQ(reservations().size(), 1u);
  const Invocation status = run("flatnet-cni", "STATUS", "", "", "", conf());
  EXPECT_EQ(status.status, 0) << status.raw;
}

TEST_F(CniMasquerade, TwoInterfacesOfOneContainerKeepTheirOwnRules) {
  NetNs& pod = scratch_.add("multi");
  json config = masq_conf();
  config["ipam"].erase("routes");  // two default routes in one pod would collide
  ASSERT_EQ(run("flatnet-cni", "ADD", "c1", pod.path(), "eth0", config).status, 0);
  const Invocation second = run("flatnet-cni", "ADD", "c1", pod.path(), "net1", config);
  ASSERT_EQ(second.status, 0) << second.raw;
  EXPECT_THAT(nat_rules(), HasSubstr(masquerade_chain({"testnet", "c1", "eth0"})));
  EXPECT_THAT(nat_rules(), HasSubstr(masquerade_chain({"testnet", "c1", "net1"})));
  EXPECT_EQ(run("flatnet-cni", "DEL", "c1", pod.path(), "net1", config).status, 0);
  EXPECT_THAT(nat_rules(), HasSubstr(masquerade_chain({"testnet", "c1", "eth0"})));
  EXPECT_THAT(nat_rules(), ::testing::Not(HasSubstr(masquerade_chain({"testnet", "c1", "net1"}))));
  EXPECT_EQ(reservations().size(), 1u);
}

// Every step of ADD, made to fail after it is done (fail points), with every option on that
// makes ADD do more: whatever the step, nothing of this ADD survives.
TEST_F(CniMasquerade, AFailureAfterAnyStepOfAddIsRolledBack) {
  json config = masq_conf();
  config["hairpinMode"] = true;
  config["isDefaultGateway"] = true;
  config["ipam"]["routes"] = json::array({{{"dst", "192.0.2.0/24"}}});
  // The bridge and its gateway address are shared by every pod: make them exist first.
  NetNs& first = scratch_.add("first");
  ASSERT_EQ(run("flatnet-cni", "ADD", "first", first.path(), "eth0", config).status, 0);
  const auto links_before = node_links();
  const auto reserved_before = reservations();
  for (const char* point : {"ipam-added", "bridge-ready", "veth-created", "hairpin-set",
                            "addresses-added", "routes-added", "gateway-set", "masquerade-set"}) {
    SCOPED_TRACE(point);
    NetNs& pod = scratch_.add("step");
    const Invocation add = run("flatnet-cni", "ADD", "victim", pod.path(), "eth0", config, "",
                               {{"FLATNET_CNI_FAILPOINTS", point}});
    EXPECT_EQ(add.status, 1);
    EXPECT_EQ(add.out["code"], 100) << add.raw;
    EXPECT_THAT(add.out["msg"].get<std::string>(),
                HasSubstr(std::string("injected failure at ") + point));
    EXPECT_EQ(node_links(), links_before);
    EXPECT_EQ(reservations(), reserved_before);
    EXPECT_THAT(nat_rules(),
                ::testing::Not(HasSubstr(masquerade_chain({"testnet", "victim", "eth0"}))));
    EXPECT_FALSE(Netlink::open(pod).find_link("eth0"));
  }
  // And without the fail point the same ADD goes through.
  NetNs& pod = scratch_.add("nofail");
  EXPECT_EQ(run("flatnet-cni", "ADD", "victim", pod.path(), "eth0", config).status, 0);
}

// --- a parallel storm ---

TEST_F(CniPlugins, AParallelStormHandsOutNoAddressTwiceAndLeaksNothing) {
  constexpr int kWorkers = 8, kCycles = 50;
  json config = conf("1.1.0", "flatnet-ipam", "10.40.0.0/24");
  std::vector<NetNs*> pods;
  for (int w = 0; w < kWorkers; ++w)
    pods.push_back(&scratch_.add("storm"));

  std::mutex mutex;
  std::set<std::string> held;
  std::vector<std::string> failures;
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      for (int i = 0; i < kCycles; ++i) {
        const std::string id = "storm-" + std::to_string(w) + "-" + std::to_string(i);
        const Invocation add = run("flatnet-cni", "ADD", id, pods[w]->path(), "eth0", config);
        std::string address;
        if (add.status == 0) address = add.out["ips"][0]["address"].get<std::string>();
        {
          std::lock_guard lock(mutex);
          if (add.status != 0) failures.push_back(id + " ADD: " + add.raw);
          if (!address.empty() && !held.insert(address).second) {
            failures.push_back(id + " got " + address + ", which another pod holds");
          }
        }
        const Invocation del = run("flatnet-cni", "DEL", id, pods[w]->path(), "eth0", config);
        std::lock_guard lock(mutex);
        if (del.status != 0) failures.push_back(id + " DEL: " + del.raw);
        held.erase(address);
      }
    });
  }
  for (auto& t : workers)
    t.join();
  EXPECT_THAT(failures, ::testing::IsEmpty());
  EXPECT_TRUE(reservations().empty());
  EXPECT_EQ(node_links(), (std::set<std::string>{"lo", "cni0"}));
  for (const auto& entry : fs::directory_iterator(data_dir_ / "testnet")) {
    const std::string name = entry.path().filename();
    EXPECT_TRUE(name == "lock" || name.rfind("last_reserved_ip.", 0) == 0) << "leaked " << name;
  }
}

// --- interoperability with the reference plugins ---

TEST_F(CniPlugins, ReferenceBridgeDelegatesToFlatnetIpam) {
  if (!reference_plugins_installed()) GTEST_SKIP() << "containernetworking-plugins missing";
  NetNs& pod = scratch_.add("refbr");
  json config = conf("1.0.0");
  config["type"] = "bridge";
  const Invocation add = run("bridge", "ADD", "rb", pod.path(), "eth0", config);
  ASSERT_EQ(add.status, 0) << add.raw << add.err;
  EXPECT_EQ(add.out["ips"][0]["address"], "10.30.0.2/24");
  EXPECT_EQ(reservations(), (std::set<std::string>{"10.30.0.2"}));
  EXPECT_EQ(run("bridge", "DEL", "rb", pod.path(), "eth0", config).status, 0);
  EXPECT_TRUE(reservations().empty());
}

TEST_F(CniPlugins, FlatnetCniDelegatesToHostLocal) {
  if (!reference_plugins_installed()) GTEST_SKIP() << "containernetworking-plugins missing";
  NetNs& pod = scratch_.add("hostlocal");
  const json config = conf("1.0.0", "host-local");
  const Invocation add = run("flatnet-cni", "ADD", "hl", pod.path(), "eth0", config);
  ASSERT_EQ(add.status, 0) << add.raw;
  EXPECT_EQ(add.out["ips"][0]["address"], "10.30.0.2/24");
  json with_prev = config;
  with_prev["prevResult"] = add.out;
  EXPECT_EQ(run("flatnet-cni", "CHECK", "hl", pod.path(), "eth0", with_prev).status, 0);
  EXPECT_EQ(run("flatnet-cni", "DEL", "hl", pod.path(), "eth0", config).status, 0);
  EXPECT_TRUE(reservations().empty());
}

TEST_F(CniPlugins, TuningAndPortmapChainAfterFlatnetCni) {
  if (!reference_plugins_installed()) GTEST_SKIP() << "containernetworking-plugins missing";
  NetNs& pod = scratch_.add("chain");
  const json config = conf("1.0.0");
  const Invocation add = run("flatnet-cni", "ADD", "ch", pod.path(), "eth0", config);
  ASSERT_EQ(add.status, 0) << add.raw;

  json tuning = {{"cniVersion", "1.0.0"},
                 {"name", "testnet"},
                 {"type", "tuning"},
                 {"sysctl", {{"net.ipv4.conf.eth0.rp_filter", "2"}}},
                 {"prevResult", add.out}};
  const Invocation tuned = run("tuning", "ADD", "ch", pod.path(), "eth0", tuning);
  ASSERT_EQ(tuned.status, 0) << tuned.raw << tuned.err;
  EXPECT_EQ(netmodel::read_sysctl(pod, "net.ipv4.conf.eth0.rp_filter"), "2");

  json portmap = {
      {"cniVersion", "1.0.0"},
      {"name", "testnet"},
      {"type", "portmap"},
      {"capabilities", {{"portMappings", true}}},
      {"runtimeConfig",
       {{"portMappings",
         json::array({{{"hostPort", 18080}, {"containerPort", 80}, {"protocol", "tcp"}}})}}},
      {"prevResult", tuned.out}};
  const Invocation mapped = run("portmap", "ADD", "ch", pod.path(), "eth0", portmap);
  ASSERT_EQ(mapped.status, 0) << mapped.raw << mapped.err;
  EXPECT_EQ(mapped.out["ips"], add.out["ips"]) << "the result passes through the chain";

  EXPECT_EQ(run("portmap", "DEL", "ch", pod.path(), "eth0", portmap).status, 0);
  EXPECT_EQ(run("tuning", "DEL", "ch", pod.path(), "eth0", tuning).status, 0);
  EXPECT_EQ(run("flatnet-cni", "DEL", "ch", pod.path(), "eth0", config).status, 0);
  EXPECT_TRUE(reservations().empty());
}

TEST_F(CniPlugins, HostLocalAndFlatnetIpamShareADataDirUnderLoad) {
  if (!reference_plugins_installed()) GTEST_SKIP() << "containernetworking-plugins missing";
  // Both IPAM plugins, called directly, in parallel, on one dataDir and one network.
  json flatnet_conf = conf("1.0.0", "flatnet-ipam", "10.50.0.0/25");
  json host_local_conf = conf("1.0.0", "host-local", "10.50.0.0/25");
  std::mutex mutex;
  std::set<std::string> held;
  std::vector<std::string> failures;
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&, w] {
      const bool reference = w % 2 == 1;
      const std::string plugin = reference ? "host-local" : "flatnet-ipam";
      const json& c = reference ? host_local_conf : flatnet_conf;
      for (int i = 0; i < 25; ++i) {
        const std::string id = plugin + "-" + std::to_string(w) + "-" + std::to_string(i);
        const Invocation add = run(plugin, "ADD", id, "/dev/null", "eth0", c);
        std::lock_guard lock(mutex);
        if (add.status != 0) {
          failures.push_back(id + ": " + add.raw);
          continue;
        }
        const std::string address = add.out["ips"][0]["address"];
        if (!held.insert(address).second) failures.push_back(id + " duplicate " + address);
      }
    });
  }
  for (auto& t : workers)
    t.join();
  EXPECT_THAT(failures, ::testing::IsEmpty());
  EXPECT_EQ(held.size(), 100u);
  EXPECT_EQ(reservations().size(), 100u);
  // Each plugin releases what the other reserved.
  for (int w = 0; w < 4; ++w) {
    for (int i = 0; i < 25; ++i) {
      const bool reserved_by_reference = w % 2 == 1;
      const std::string id = std::string(reserved_by_reference ? "host-local" : "flatnet-ipam") +
                             "-" + std::to_string(w) + "-" + std::to_string(i);
      const std::string releaser = reserved_by_reference ? "flatnet-ipam" : "host-local";
      const json& c = reserved_by_reference ? flatnet_conf : host_local_conf;
      EXPECT_EQ(run(releaser, "DEL", id, "", "eth0", c).status, 0) << id;
    }
  }
  EXPECT_TRUE(reservations().empty());
}

}  // namespace
}  // namespace flatnet::cni
