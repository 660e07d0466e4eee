// The libnl kernel adapter: links, addresses, routes, each checked against what the kernel
// reports afterwards, and the errors it gives for what cannot be done.

#include "flatnet/netmodel/netlink.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "flatnet/netmodel/error.hpp"
#include "flatnet/netmodel/sysctl.hpp"
#include "flatnet/testing/scratch_netns.hpp"

namespace flatnet::netmodel {
namespace {

using ::testing::HasSubstr;
using testing::NetnsTest;

class NetlinkTest : public NetnsTest {
 protected:
  bool has_address(Netlink& nl, int index, const std::string& prefix) {
    const auto all = nl.addresses(index);
    return std::any_of(all.begin(), all.end(),
                       [&](const AddressInfo& a) { return a.prefix.to_string() == prefix; });
  }
  std::optional<Route> route_to(Netlink& nl, const std::string& destination,
                                Family family = Family::v4) {
    for (const auto& r : nl.routes(family)) {
      if (destination == "default" ? !r.destination
                                   : r.destination && r.destination->to_string() == destination) {
        return r;
      }
    }
    return std::nullopt;
  }
};

TEST_F(NetlinkTest, VethEndsAreCreatedInTheirNamespacesWithTheirNames) {
  NetNs& host = scratch_.add("vhost");
  NetNs& pod = scratch_.add("vpod");
  Netlink nl = Netlink::open(host);
  const MacAddress pod_mac = MacAddress::parse("0a:58:0a:f4:01:05");
  nl.add_veth({.name = "fnt-host0",
               .peer_name = "eth0",
               .peer_ns = &pod,
               .mtu = 1400,
               .peer_mac = pod_mac});

  const LinkInfo near = nl.link("fnt-host0");
  EXPECT_EQ(near.kind, "veth");
  EXPECT_EQ(near.mtu, 1400u);
  EXPECT_GE(near.link_netnsid, 0) << "the peer lives in another namespace";
  EXPECT_FALSE(nl.find_link("eth0")) << "the peer is not in the host namespace";

  Netlink pod_nl = Netlink::open(pod);
  const LinkInfo far = pod_nl.link("eth0");
  EXPECT_EQ(far.kind, "veth");
  EXPECT_EQ(far.mac, pod_mac);
  EXPECT_EQ(far.peer_index, near.index);
  EXPECT_EQ(near.peer_index, far.index);
  EXPECT_EQ(pod_nl.link(far.index).name, "eth0") << "lookup by index";

  // Both ends in other namespaces than the socket's.
  NetNs& a = scratch_.add("va");
  nl.add_veth({.name = "fnt-a", .peer_name = "fnt-b", .ns = &a, .peer_ns = &pod});
  EXPECT_FALSE(nl.find_link("fnt-a"));
  EXPECT_TRUE(Netlink::open(a).find_link("fnt-a"));
  EXPECT_TRUE(pod_nl.find_link("fnt-b"));
}

TEST_F(NetlinkTest, CreatingATakenNameFailsWithEexistNamingTheLink) {
  NetNs& ns = scratch_.add("exist");
  Netlink nl = Netlink::open(ns);
  nl.add_bridge({.name = "fnt-br0"});
  try {
    nl.add_veth({.name = "fnt-br0", .peer_name = "fnt-x"});
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_TRUE(is_errno(e, EEXIST)) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("create veth \"fnt-br0\" with peer \"fnt-x\""));
    EXPECT_THAT(e.what(), HasSubstr("File exists"));
  }
  EXPECT_FALSE(nl.find_link("fnt-x")) << "nothing half-made";
  EXPECT_THROW(nl.add_bridge({.name = "fnt-br0"}), std::system_error);
  EXPECT_THROW(nl.add_veth({.name = "this-name-is-too-long", .peer_name = "x"}),
               std::invalid_argument);
}

TEST_F(NetlinkTest, BridgePortsTakeMasterHairpinPromiscMtuMacAndAlias) {
  NetNs& ns = scratch_.add("bridge");
  Netlink nl = Netlink::open(ns);
  const MacAddress bridge_mac = MacAddress::parse("0a:58:0a:f4:01:01");
  nl.add_bridge({.name = "fnt-br0", .mtu = 1450, .mac = bridge_mac});
  nl.add_veth({.name = "fnt-p0", .peer_name = "fnt-p1"});
  const LinkInfo bridge = nl.link("fnt-br0");
  EXPECT_EQ(bridge.kind, "bridge");
  EXPECT_EQ(bridge.mac, bridge_mac);
  EXPECT_FALSE(bridge.up());

  const int port = nl.link("fnt-p0").index;
  nl.set_master(port, bridge.index);
  EXPECT_EQ(nl.link(port).master, bridge.index);
  EXPECT_FALSE(nl.hairpin(port)) << "hairpin is off by default";
  nl.set_hairpin(port, true);
  EXPECT_TRUE(nl.hairpin(port));
  nl.set_hairpin(port, false);
  EXPECT_FALSE(nl.hairpin(port));

  nl.set_up(bridge.index);
  nl.set_up(port);
  EXPECT_TRUE(nl.link(bridge.index).up());
  EXPECT_TRUE(nl.link(port).up());
  nl.set_down(port);
  EXPECT_FALSE(nl.link(port).up());

  nl.set_promiscuous(port, true);
  EXPECT_TRUE(nl.link(port).promiscuous());
  nl.set_promiscuous(port, false);
  EXPECT_FALSE(nl.link(port).promiscuous());

  nl.set_mtu(port, 1300);
  EXPECT_EQ(nl.link(port).mtu, 1300u);
  const MacAddress mac = MacAddress::parse("0a:58:00:00:00:07");
  nl.set_mac(port, mac);
  EXPECT_EQ(nl.link(port).mac, mac);
  nl.set_alias(port, "flatnet test port");
  EXPECT_EQ(nl.link(port).alias, "flatnet test port");

  nl.set_master(port, 0);
  EXPECT_EQ(nl.link(port).master, 0);
  EXPECT_THROW(nl.hairpin(port), std::system_error) << "no longer a bridge port";
}

TEST_F(NetlinkTest, ChangesToAMissingLinkNameTheLinkAndTheErrno) {
  NetNs& ns = scratch_.add("missing");
  Netlink nl = Netlink::open(ns);
  try {
    nl.set_mtu(9999, 1400);
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_TRUE(is_errno(e, ENODEV)) << e.what();
    EXPECT_EQ(std::string(e.what()), "set mtu 1400 on link #9999: No such device");
  }
  try {
    nl.link("fnt-nothing");
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_EQ(std::string(e.what()), "find link \"fnt-nothing\": No such device");
  }
  nl.add_veth({.name = "fnt-v0", .peer_name = "fnt-v1"});
  const int veth = nl.link("fnt-v0").index;
  try {
    nl.set_mtu(veth, 10);  // below Ethernet's minimum of 68
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_TRUE(is_errno(e, EINVAL)) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("set mtu 10 on link #" + std::to_string(veth)));
  }
}

TEST_F(NetlinkTest, DeleteLinkIsIdempotent) {
  NetNs& ns = scratch_.add("delete");
  Netlink nl = Netlink::open(ns);
  nl.add_veth({.name = "fnt-d0", .peer_name = "fnt-d1"});
  EXPECT_TRUE(nl.delete_link("fnt-d0"));
  EXPECT_FALSE(nl.find_link("fnt-d1")) << "deleting one end deletes the pair";
  EXPECT_FALSE(nl.delete_link("fnt-d0"));
  EXPECT_FALSE(nl.delete_link(123456));
}

TEST_F(NetlinkTest, DummyLinksWorkOrTheMissingFeatureIsNamed) {
  NetNs& ns = scratch_.add("dummy");
  Netlink nl = Netlink::open(ns);
  try {
    nl.add_dummy("fnt-dummy0");
    EXPECT_EQ(nl.link("fnt-dummy0").kind, "dummy");
  } catch (const KernelFeatureMissing& e) {
    EXPECT_TRUE(is_errno(e, EOPNOTSUPP)) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("create dummy link \"fnt-dummy0\""));
    EXPECT_THAT(e.what(), HasSubstr("no dummy link type"));
    EXPECT_FALSE(nl.find_link("fnt-dummy0"));
  }
}

TEST_F(NetlinkTest, MoveToNetnsRenamesOnTheWay) {
  NetNs& a = scratch_.add("mva");
  NetNs& b = scratch_.add("mvb");
  Netlink na = Netlink::open(a);
  na.add_veth({.name = "fnt-m0", .peer_name = "fnt-m1"});
  na.move_to_netns(na.link("fnt-m1").index, b, "eth0");
  EXPECT_FALSE(na.find_link("fnt-m1"));
  Netlink nb = Netlink::open(b);
  const LinkInfo moved = nb.link("eth0");
  EXPECT_EQ(moved.kind, "veth");
  EXPECT_GE(moved.link_netnsid, 0);
  EXPECT_THROW(nb.move_to_netns(moved.index, a, "bad/name"), std::invalid_argument);
}

TEST_F(NetlinkTest, AddressesAreAddedListedAndDeleted) {
  NetNs& ns = scratch_.add("addr");
  Netlink nl = Netlink::open(ns);
  nl.add_bridge({.name = "fnt-br0"});
  const int br = nl.link("fnt-br0").index;
  nl.add_address(br, IpPrefix::parse("10.244.1.1/24"));
  nl.add_address(br, IpPrefix::parse("fd00:10:244:1::1/64"), {.nodad = true});
  EXPECT_TRUE(has_address(nl, br, "10.244.1.1/24"));
  EXPECT_TRUE(has_address(nl, br, "fd00:10:244:1::1/64"));
  EXPECT_EQ(nl.addresses(br, Family::v4).size(), 1u);
  const auto v6 = nl.addresses(br, Family::v6);
  const auto global = std::find_if(v6.begin(), v6.end(), [](const AddressInfo& a) {
    return a.prefix.to_string() == "fd00:10:244:1::1/64";
  });
  ASSERT_NE(global, v6.end());
  EXPECT_TRUE(global->flags & IFA_F_NODAD);

  try {
    nl.add_address(br, IpPrefix::parse("10.244.1.1/24"));
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_TRUE(is_errno(e, EEXIST));
    EXPECT_THAT(e.what(), HasSubstr("add address 10.244.1.1/24 to link #" + std::to_string(br)));
  }
  EXPECT_TRUE(nl.delete_address(br, IpPrefix::parse("10.244.1.1/24")));
  EXPECT_FALSE(nl.delete_address(br, IpPrefix::parse("10.244.1.1/24")));
  EXPECT_FALSE(has_address(nl, br, "10.244.1.1/24"));
  EXPECT_THROW(nl.add_address(4242, IpPrefix::parse("10.0.0.1/24")), std::system_error);
}

TEST_F(NetlinkTest, RoutesViaGatewayScopeLinkDefaultReplaceAndDelete) {
  NetNs& ns = scratch_.add("routes");
  Netlink nl = Netlink::open(ns);
  nl.add_veth({.name = "fnt-r0", .peer_name = "fnt-r1"});
  const int dev = nl.link("fnt-r0").index;
  nl.set_up(dev);
  nl.add_address(dev, IpPrefix::parse("172.18.0.2/24"));
  nl.add_address(dev, IpPrefix::parse("fd00:18::2/64"), {.nodad = true});

  // A node route to another node's pod subnet, as the emulator writes them.
  nl.add_route(
      {.destination = IpPrefix::parse("10.244.2.0/24"), .gateway = IpAddress::parse("172.18.0.3")});
  auto r = route_to(nl, "10.244.2.0/24");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->gateway, IpAddress::parse("172.18.0.3"));
  EXPECT_EQ(r->oif, dev) << "the kernel resolved the interface from the gateway";
  EXPECT_EQ(r->scope, RouteScope::universe);
  EXPECT_THROW(nl.add_route({.destination = IpPrefix::parse("10.244.2.0/24"),
                             .gateway = IpAddress::parse("172.18.0.3")}),
               std::system_error);

  // Scope link, no gateway; a host-bit prefix is normalised to its network.
  nl.add_route({.destination = IpPrefix::parse("10.96.0.1/16"), .oif = dev});
  r = route_to(nl, "10.96.0.0/16");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->scope, RouteScope::link);
  EXPECT_FALSE(r->gateway);

  // Default routes of both families.
  nl.add_route({.family = Family::v4, .gateway = IpAddress::parse("172.18.0.1")});
  nl.add_route({.family = Family::v6, .gateway = IpAddress::parse("fd00:18::1")});
  ASSERT_TRUE(route_to(nl, "default"));
  ASSERT_TRUE(route_to(nl, "default", Family::v6));
  EXPECT_EQ(route_to(nl, "default", Family::v6)->gateway, IpAddress::parse("fd00:18::1"));

  // Replace moves the route to a new gateway.
  nl.replace_route(
      {.destination = IpPrefix::parse("10.244.2.0/24"), .gateway = IpAddress::parse("172.18.0.4")});
  EXPECT_EQ(route_to(nl, "10.244.2.0/24")->gateway, IpAddress::parse("172.18.0.4"));
  nl.replace_route(
      {.destination = IpPrefix::parse("10.244.3.0/24"), .gateway = IpAddress::parse("172.18.0.5")});
  EXPECT_TRUE(route_to(nl, "10.244.3.0/24")) << "replace adds what is missing";

  EXPECT_TRUE(nl.delete_route({.destination = IpPrefix::parse("10.244.2.0/24")}));
  EXPECT_FALSE(nl.delete_route({.destination = IpPrefix::parse("10.244.2.0/24")}));
  EXPECT_FALSE(route_to(nl, "10.244.2.0/24"));
  EXPECT_TRUE(nl.delete_route({.family = Family::v4}));
  EXPECT_FALSE(route_to(nl, "default"));

  // An unreachable gateway is refused with the kernel's reason.
  try {
    nl.add_route({.destination = IpPrefix::parse("10.244.9.0/24"),
                  .gateway = IpAddress::parse("192.0.2.77")});
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_TRUE(is_errno(e, ENETUNREACH)) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("add route 10.244.9.0/24 via 192.0.2.77"));
  }
  EXPECT_THROW(nl.add_route({.destination = IpPrefix::parse("10.244.9.0/24"),
                             .gateway = IpAddress::parse("fd00:18::1")}),
               std::invalid_argument);
}

TEST_F(NetlinkTest, ASocketKeepsItsNamespaceOnAnyThread) {
  NetNs& ns = scratch_.add("bound");
  Netlink nl = Netlink::open(ns);
  EXPECT_TRUE(nl.netns().same_as(ns));
  nl.add_bridge({.name = "fnt-here"});
  // The test thread is in the host namespace, yet the link went to `ns`.
  EXPECT_TRUE(run_in(ns, [] { return Netlink::open().find_link("fnt-here").has_value(); }));
  const auto names = [&] {
    std::vector<std::string> out;
    for (const auto& l : nl.links())
      out.push_back(l.name);
    return out;
  }();
  EXPECT_THAT(names, ::testing::UnorderedElementsAre("lo", "fnt-here"));
}

// `ip route get`: the kernel's own choice of route, interface and source, and none for an
// address it cannot reach.
TEST_F(NetlinkTest, RouteLookupAsksTheKernel) {
  NetNs& ns = scratch_.add("lookup");
  Netlink nl = Netlink::open(ns);
  nl.add_veth({.name = "fnt-l0", .peer_name = "fnt-l1", .up = true});
  const int link = nl.link("fnt-l0").index;
  nl.set_up(nl.link("fnt-l1").index);
  nl.add_address(link, IpPrefix::parse("10.77.0.1/24"));
  Route via;
  via.destination = IpPrefix::parse("10.88.0.0/16");
  via.gateway = IpAddress::parse("10.77.0.9");
  nl.add_route(via);

  auto direct = nl.lookup_route(IpAddress::parse("10.77.0.5"));
  ASSERT_TRUE(direct);
  EXPECT_EQ(direct->oif, link);
  EXPECT_FALSE(direct->gateway);
  EXPECT_EQ(direct->source, IpAddress::parse("10.77.0.1"));

  auto routed = nl.lookup_route(IpAddress::parse("10.88.3.4"));
  ASSERT_TRUE(routed);
  EXPECT_EQ(routed->gateway, IpAddress::parse("10.77.0.9"));
  EXPECT_EQ(routed->oif, link);

  EXPECT_FALSE(nl.lookup_route(IpAddress::parse("192.0.2.1"))) << "no default route";
  nl.delete_route(via);
  EXPECT_FALSE(nl.lookup_route(IpAddress::parse("10.88.3.4")));
}

// Forwarding read over netlink follows the sysctls, per family and per namespace.
TEST_F(NetlinkTest, ForwardingIsReadAsTheSysctlsSayIt) {
  NetNs& ns = scratch_.add("fwd");
  NetNs& other = scratch_.add("fwd-other");
  // A new namespace may copy the host's setting: start from off.
  for (NetNs* each : {&ns, &other}) {
    netmodel::write_sysctl(*each, "net.ipv4.ip_forward", "0");
    netmodel::write_sysctl(*each, "net.ipv6.conf.all.forwarding", "0");
  }
  Netlink nl = Netlink::open(ns);
  EXPECT_EQ(nl.forwarding(Family::v4), false);
  EXPECT_EQ(nl.forwarding(Family::v6), false);
  netmodel::write_sysctl(ns, "net.ipv4.ip_forward", "1");
  EXPECT_EQ(nl.forwarding(Family::v4), true);
  EXPECT_EQ(nl.forwarding(Family::v6), false);
  netmodel::write_sysctl(ns, "net.ipv6.conf.all.forwarding", "1");
  EXPECT_EQ(nl.forwarding(Family::v6), true);
  EXPECT_EQ(Netlink::open(other).forwarding(Family::v4), false);
  // The socket still answers ordinary requests afterwards.
  EXPECT_NO_THROW(nl.link("lo"));
}

// Permanent entries, many at once (more than one batch), visible per link with their MAC;
// replacing is idempotent; deleting says whether there was anything to delete.
TEST_F(NetlinkTest, PermanentNeighboursAreSetListedAndDeleted) {
  NetNs& ns = scratch_.add("neigh");
  Netlink nl = Netlink::open(ns);
  nl.add_veth({.name = "fnt-n0", .peer_name = "fnt-n1", .up = true});
  const int n0 = nl.link("fnt-n0").index;
  const int n1 = nl.link("fnt-n1").index;
  nl.set_up(n1);
  nl.add_address(n0, IpPrefix::parse("10.66.0.1/16"));
  std::vector<NeighborInfo> entries;
  for (int i = 0; i < 150; ++i) {
    NeighborInfo entry;
    entry.index = n0;
    entry.address = IpAddress::parse("10.66.1." + std::to_string(i + 1));
    entry.mac = MacAddress({0x02, 0, 0, 0, 0x01, static_cast<std::uint8_t>(i)});
    entries.push_back(entry);
  }
  NeighborInfo other;
  other.index = n1;
  other.address = IpAddress::parse("10.66.2.1");
  other.mac = MacAddress::parse("02:00:00:00:02:01");
  entries.push_back(other);
  nl.set_permanent_neighbors(entries);
  nl.set_permanent_neighbors(entries);  // again: replaced, not refused

  const auto on_n0 = nl.neighbors(n0, Family::v4);
  EXPECT_EQ(on_n0.size(), 150u);
  for (const auto& entry : on_n0) {
    EXPECT_EQ(entry.index, n0);
    EXPECT_EQ(entry.state_name(), "PERMANENT");
    EXPECT_FALSE(entry.failed() || entry.incomplete());
    ASSERT_TRUE(entry.mac);
  }
  const auto on_n1 = nl.neighbors(n1, Family::v4);
  ASSERT_EQ(on_n1.size(), 1u);
  EXPECT_EQ(on_n1[0].mac, other.mac);
  EXPECT_EQ(nl.neighbors(0, Family::v4).size(), 151u);

  EXPECT_TRUE(nl.delete_neighbor(n1, other.address));
  EXPECT_FALSE(nl.delete_neighbor(n1, other.address));
  EXPECT_TRUE(nl.neighbors(n1, Family::v4).empty());

  NeighborInfo no_mac;
  no_mac.index = n0;
  no_mac.address = IpAddress::parse("10.66.3.1");
  EXPECT_THROW(nl.set_permanent_neighbors({no_mac}), std::invalid_argument);
  NeighborInfo bad_link = other;
  bad_link.index = 987654;
  try {
    nl.set_permanent_neighbors({bad_link});
    FAIL() << "a missing link must be refused";
  } catch (const std::system_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("10.66.2.1"));
  }
}

}  // namespace
}  // namespace flatnet::netmodel
