// Real packets between namespaces wired with the kernel adapter: a veth pair, a bridge, and a
// routed hop. Each exchange also checks the source address the server saw (no NAT anywhere).

#include "flatnet/testing/traffic.hpp"

#include <gtest/gtest.h>

#include "flatnet/netmodel/netlink.hpp"
#include "flatnet/netmodel/sysctl.hpp"
#include "flatnet/testing/scratch_netns.hpp"

namespace flatnet::netmodel {
namespace {

using testing::bind_udp;
using testing::listen_tcp;
using testing::NetnsTest;
using testing::tcp_exchange;
using testing::udp_exchange;

class Traffic : public NetnsTest {
 protected:
  // Brings `name` up in `ns` with `addresses` on it.
  static int configure(const NetNs& ns, const std::string& name,
                       std::initializer_list<const char*> addresses) {
    Netlink nl = Netlink::open(ns);
    const int index = nl.link(name).index;
    for (const char* a : addresses)
      nl.add_address(index, IpPrefix::parse(a), {.nodad = true});
    nl.set_up(index);
    return index;
  }

  static void expect_tcp_and_udp(const NetNs& client, const NetNs& server,
                                 const std::string& server_ip, const std::string& client_ip,
                                 std::uint16_t port) {
    const IpAddress to = IpAddress::parse(server_ip);
    const auto listener = listen_tcp(server, to, port);
    const auto tcp = tcp_exchange(client, listener, to, port, "hello");
    EXPECT_TRUE(tcp.ok) << "tcp " << client_ip << " -> " << server_ip << ": " << tcp.error;
    EXPECT_EQ(tcp.seen_client, IpAddress::parse(client_ip)) << "tcp source was rewritten";

    const auto udp_socket = bind_udp(server, to, port);
    const auto udp = udp_exchange(client, udp_socket, to, port, "ping");
    EXPECT_TRUE(udp.ok) << "udp " << client_ip << " -> " << server_ip << ": " << udp.error;
    EXPECT_EQ(udp.seen_client, IpAddress::parse(client_ip)) << "udp source was rewritten";
    EXPECT_EQ(udp.reply, "ping from " + client_ip);
  }
};

TEST_F(Traffic, AVethPairCarriesTcpAndUdpOverIpv4AndIpv6) {
  NetNs& a = scratch_.add("ta");
  NetNs& b = scratch_.add("tb");
  Netlink::open(a).add_veth({.name = "eth0", .peer_name = "eth0", .peer_ns = &b});
  configure(a, "eth0", {"10.0.0.1/24", "fd00:0:0:1::1/64"});
  configure(b, "eth0", {"10.0.0.2/24", "fd00:0:0:1::2/64"});

  expect_tcp_and_udp(a, b, "10.0.0.2", "10.0.0.1", 8080);
  expect_tcp_and_udp(b, a, "10.0.0.1", "10.0.0.2", 8081);
  expect_tcp_and_udp(a, b, "fd00:0:0:1::2", "fd00:0:0:1::1", 8082);
}

TEST_F(Traffic, ThreeNamespacesOnABridgeInAFourthReachEachOther) {
  NetNs& sw = scratch_.add("switch");
  Netlink nl = Netlink::open(sw);
  nl.add_bridge({.name = "fnt-br0"});
  const int bridge = nl.link("fnt-br0").index;
  nl.set_up(bridge);

  std::vector<NetNs*> hosts;
  for (int i = 1; i <= 3; ++i) {
    NetNs& h = scratch_.add("h" + std::to_string(i));
    const std::string port = "fnt-port" + std::to_string(i);
    nl.add_veth({.name = port, .peer_name = "eth0", .peer_ns = &h});
    const int index = nl.link(port).index;
    nl.set_master(index, bridge);
    nl.set_up(index);
    configure(h, "eth0", {("10.1.0." + std::to_string(i) + "/24").c_str()});
    hosts.push_back(&h);
  }
  std::uint16_t port = 9000;
  for (int from = 0; from < 3; ++from) {
    for (int to = 0; to < 3; ++to) {
      if (from == to) continue;
      expect_tcp_and_udp(*hosts[from], *hosts[to], "10.1.0." + std::to_string(to + 1),
                         "10.1.0." + std::to_string(from + 1), port++);
    }
  }
}

TEST_F(Traffic, ARoutedHopForwardsOnlyWhereForwardingIsOn) {
  NetNs& a = scratch_.add("ra");
  NetNs& router = scratch_.add("router");
  NetNs& b = scratch_.add("rb");
  Netlink rnl = Netlink::open(router);
  rnl.add_veth({.name = "to-a", .peer_name = "eth0", .peer_ns = &a});
  rnl.add_veth({.name = "to-b", .peer_name = "eth0", .peer_ns = &b});
  configure(router, "to-a", {"10.2.1.1/24"});
  configure(router, "to-b", {"10.2.2.1/24"});
  configure(a, "eth0", {"10.2.1.2/24"});
  configure(b, "eth0", {"10.2.2.2/24"});
  Netlink::open(a).add_route({.family = Family::v4, .gateway = IpAddress::parse("10.2.1.1")});
  Netlink::open(b).add_route({.family = Family::v4, .gateway = IpAddress::parse("10.2.2.1")});

  // New namespaces inherit the host's IPv4 forwarding setting (net.core.devconf_inherit_init_net
  // = 0), so set every one explicitly.
  const std::string host_forward = read_sysctl(NetNs::current(), "net.ipv4.ip_forward");
  write_sysctl(a, "net.ipv4.ip_forward", "0");
  write_sysctl(b, "net.ipv4.ip_forward", "0");
  write_sysctl(router, "net.ipv4.ip_forward", "1");

  expect_tcp_and_udp(a, b, "10.2.2.2", "10.2.1.2", 7000);
  expect_tcp_and_udp(b, a, "10.2.1.2", "10.2.2.2", 7001);

  // Without forwarding in the router the datagram never arrives.
  write_sysctl(router, "net.ipv4.ip_forward", "0");
  const auto socket = bind_udp(b, IpAddress::parse("10.2.2.2"), 7002);
  const auto blocked = udp_exchange(a, socket, IpAddress::parse("10.2.2.2"), 7002, "ping",
                                    std::chrono::milliseconds(300));
  EXPECT_FALSE(blocked.ok);
  EXPECT_EQ(blocked.error, "server: datagram did not arrive");
  EXPECT_EQ(read_sysctl(NetNs::current(), "net.ipv4.ip_forward"), host_forward);
}

}  // namespace
}  // namespace flatnet::netmodel
