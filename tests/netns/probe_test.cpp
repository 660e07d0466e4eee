// The probe engine against real sockets: clients in their own namespaces on a bridge, a fake
// netexec in the server's namespace (threads answering /clientip over TCP and "clientip" over
// UDP, or answering wrongly on purpose), and destinations that refuse, have no route or never
// answer.

#include "flatnet/emulator/probe.hpp"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "flatnet/netmodel/error.hpp"
#include "flatnet/netmodel/netlink.hpp"
#include "flatnet/testing/scratch_netns.hpp"

namespace flatnet::emulator {
namespace {

using netmodel::IpAddress;
using netmodel::IpPrefix;
using netmodel::Netlink;
using netmodel::NetNs;
using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using namespace std::chrono_literals;

// How the fake server answers.
enum class Answer {
  netexec,        // 200, Content-Length, body "IP:PORT" (UDP: the datagram "IP:PORT")
  no_length,      // 200 without Content-Length: the body ends with the connection
  chunked,        // 200, the body in two chunks
  not_found,      // 404
  not_ip_port,    // 200 with the body "hello" (UDP: the datagram "hello")
  not_http,       // an SSH banner
  close_at_once,  // closes after reading the request, without a word
  reset,          // a RST after reading the request
  silent,         // reads the request and keeps the connection (UDP: the datagram) unanswered
};

std::string peer_text(const sockaddr_storage& peer) {
  char text[INET6_ADDRSTRLEN] = {};
  if (peer.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&peer);
    ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
    return std::string(text) + ":" + std::to_string(ntohs(in->sin_port));
  }
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&peer);
  ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
  return "[" + std::string(text) + "]:" + std::to_string(ntohs(in6->sin6_port));
}

// A stand-in for flatnet-netexec: one thread serving one TCP listener or UDP socket made in
// `ns`, until destroyed. Binding "::" makes a dual-stack socket, which sees IPv4 clients as
// IPv4-mapped IPv6 addresses.
class FakeServer {
 public:
  FakeServer(const NetNs& ns, const std::string& address, std::uint16_t port, Protocol protocol,
             Answer answer)
      : protocol_(protocol), answer_(answer) {
    const IpAddress ip = IpAddress::parse(address);
    socket_ = netmodel::run_in(ns, [&] {
      const int type = protocol == Protocol::tcp ? SOCK_STREAM : SOCK_DGRAM;
      const int fd = ::socket(ip.af(), type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (fd < 0) netmodel::throw_errno(errno, "socket");
      const int one = 1;
      const int zero = 0;
      const int buffer = 4 << 20;  // room for a burst of thousands of datagrams
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer, sizeof buffer);
      if (ip.is_v6()) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
      sockaddr_storage sa{};
      socklen_t length = 0;
      if (ip.is_v4()) {
        auto* in = reinterpret_cast<sockaddr_in*>(&sa);
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        std::memcpy(&in->sin_addr, ip.bytes().data(), 4);
        length = sizeof(sockaddr_in);
      } else {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&sa);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        std::memcpy(&in6->sin6_addr, ip.bytes().data(), 16);
        length = sizeof(sockaddr_in6);
      }
      if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), length) != 0) {
        const int err = errno;
        ::close(fd);
        netmodel::throw_errno(err, "bind " + address + ":" + std::to_string(port));
      }
      if (protocol == Protocol::tcp) ::listen(fd, 4096);
      return fd;
    });
    stop_ = ::eventfd(0, EFD_CLOEXEC);
    thread_ = std::thread([this] { protocol_ == Protocol::tcp ? serve_tcp() : serve_udp(); });
  }

  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  ~FakeServer() {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto written = ::write(stop_, &one, sizeof one);
    thread_.join();
    for (const int fd : held_)
      ::close(fd);
    ::close(socket_);
    ::close(stop_);
  }

 private:
  // Waits for `fd` to be readable; false when stopped.
  bool wait_readable(int fd) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {stop_, POLLIN, 0}};
    while (::poll(fds, 2, -1) < 0) {
    }
    return (fds[1].revents & POLLIN) == 0;
  }

  void serve_tcp() {
    while (wait_readable(socket_)) {
      sockaddr_storage peer{};
      socklen_t length = sizeof peer;
      int fd;
      while ((fd = ::accept4(socket_, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_CLOEXEC)) >=
             0) {
        answer_tcp(fd, peer_text(peer));
        length = sizeof peer;
      }
    }
  }

  void answer_tcp(int fd, const std::string& peer) {
    // The whole request first: closing with unread data would reset the connection.
    std::string request;
    char buffer[1024];
    while (request.find("\r\n\r\n") == std::string::npos) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 1000) != 1) break;
      const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) break;
      request.append(buffer, static_cast<std::size_t>(n));
    }
    std::string reply;
    switch (answer_) {
      case Answer::netexec:
        reply = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
                std::to_string(peer.size()) + "\r\nConnection: close\r\n\r\n" + peer;
        break;
      case Answer::no_length:
        reply = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + peer;
        break;
      case Answer::chunked: {
        const std::string first = peer.substr(0, 3);
        const std::string rest = peer.substr(3);
        char sizes[32];
        std::snprintf(sizes, sizeof sizes, "%zx", rest.size());
        reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n" + first + "\r\n" +
                sizes + "\r\n" + rest + "\r\n0\r\n\r\n";
        break;
      }
      case Answer::not_found:
        reply = "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found";
        break;
      case Answer::not_ip_port:
        reply = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        break;
      case Answer::not_http:
        reply = "SSH-2.0-OpenSSH_9.2\r\n";
        break;
      case Answer::close_at_once:
        break;
      case Answer::reset: {
        const linger abort{1, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
        break;
      }
      case Answer::silent:
        held_.push_back(fd);
        return;
    }
    ::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL);
    ::close(fd);
  }

  void serve_udp() {
    while (wait_readable(socket_)) {
      char buffer[1024];
      sockaddr_storage peer{};
      socklen_t length = sizeof peer;
      while (::recvfrom(socket_, buffer, sizeof buffer, 0, reinterpret_cast<sockaddr*>(&peer),
                        &length) >= 0) {
        const std::string reply = answer_ == Answer::netexec ? peer_text(peer) : "hello";
        if (answer_ != Answer::silent) {
          ::sendto(socket_, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&peer),
                   length);
        }
        length = sizeof peer;
      }
    }
  }

  Protocol protocol_;
  Answer answer_;
  int socket_ = -1;
  int stop_ = -1;
  std::thread thread_;
  std::vector<int> held_;  // connections kept open unanswered
};

// Adds the static neighbour entry `ip` -> `mac` on link `index` of `ns`.
//
// The kernel's neighbour tables are shared by all namespaces, and their limit
// (net.ipv4.neigh.default.gc_thresh3, 1024 entries by default, settable only in the host's
// namespace) counts the dynamic entries of every namespace together: while a large emulated
// cluster runs on the same host, new entries fail ("neighbor table overflow" in the kernel log)
// and every packet needing one is dropped. Permanent entries do not count (Linux >= 4.20), so the
// tests give their hosts those and stay independent of whatever else the machine runs.
void add_permanent_neighbour(const NetNs& ns, int index, const IpAddress& ip,
                             const netmodel::MacAddress& mac) {
  netmodel::run_in(ns, [&] {
    struct {
      nlmsghdr header;
      ndmsg neighbour;
      char attributes[64];
    } request{};
    request.header.nlmsg_len = NLMSG_LENGTH(sizeof(ndmsg));
    request.header.nlmsg_type = RTM_NEWNEIGH;
    request.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    request.neighbour.ndm_family = static_cast<unsigned char>(ip.af());
    request.neighbour.ndm_ifindex = index;
    request.neighbour.ndm_state = NUD_PERMANENT;
    const auto add = [&](unsigned short type, const void* data, std::size_t length) {
      auto* attribute = reinterpret_cast<rtattr*>(reinterpret_cast<char*>(&request) +
                                                  NLMSG_ALIGN(request.header.nlmsg_len));
      attribute->rta_type = type;
      attribute->rta_len = static_cast<unsigned short>(RTA_LENGTH(length));
      std::memcpy(RTA_DATA(attribute), data, length);
      request.header.nlmsg_len =
          NLMSG_ALIGN(request.header.nlmsg_len) + RTA_ALIGN(RTA_LENGTH(length));
    };
    add(NDA_DST, ip.bytes().data(), ip.bytes().size());
    add(NDA_LLADDR, mac.bytes().data(), mac.bytes().size());

    const int fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) netmodel::throw_errno(errno, "open an rtnetlink socket");
    char answer[512];
    const bool sent = ::send(fd, &request, request.header.nlmsg_len, 0) >= 0;
    const ssize_t n = sent ? ::recv(fd, answer, sizeof answer, 0) : -1;
    const int err = errno;
    ::close(fd);
    if (n < 0) netmodel::throw_errno(err, "add neighbour " + ip.to_string());
    const auto* reply = reinterpret_cast<const nlmsghdr*>(answer);
    if (reply->nlmsg_type == NLMSG_ERROR) {
      const int code = -static_cast<const nlmsgerr*>(NLMSG_DATA(reply))->error;
      if (code != 0) netmodel::throw_errno(code, "add neighbour " + ip.to_string());
    }
  });
}

// Waits until link `name` is operational (IFF_RUNNING). A link whose carrier just came up
// drops what it is given until the kernel's linkwatch work has attached its queueing discipline
// (and, for a bridge port, set it forwarding); that work is shared by the whole host and lags
// on a busy one, and a lost SYN is retransmitted only after a second.
void wait_until_running(Netlink& nl, const std::string& name) {
  const auto give_up = std::chrono::steady_clock::now() + 5s;
  while ((nl.link(name).flags & IFF_RUNNING) == 0) {
    if (std::chrono::steady_clock::now() > give_up) {
      throw std::runtime_error("link " + name + " did not come up within 5 s");
    }
    std::this_thread::sleep_for(2ms);
  }
}

// The cluster of every test: the server's namespace holds a bridge (10.9.0.1/24,
// fd00:9::1/64) that three client namespaces join (10.9.0.11-13, fd00:9::11-13). 10.9.0.99 is
// on the link but nobody answers its neighbour solicitations; nothing routes to 192.0.2.0/24.
// The hosts know each other's link addresses from static entries (see add_permanent_neighbour).
class ProbeTest : public testing::NetnsTest {
 protected:
  static constexpr int kClients = 3;
  static constexpr const char* kServer = "10.9.0.1";
  static constexpr const char* kServer6 = "fd00:9::1";
  static constexpr const char* kSilentNeighbour = "10.9.0.99";
  static constexpr const char* kNoRoute = "192.0.2.1";

  void SetUp() override {
    testing::NetnsTest::SetUp();
    if (IsSkipped()) return;
    server_ = &scratch_.add("psrv");
    Netlink nl = Netlink::open(*server_);
    const auto bridge_mac = netmodel::MacAddress::parse("02:00:0a:09:00:01");
    nl.add_bridge({.name = "br0", .mac = bridge_mac});
    const int bridge = nl.link("br0").index;
    nl.add_address(bridge, IpPrefix::parse("10.9.0.1/24"));
    nl.add_address(bridge, IpPrefix::parse("fd00:9::1/64"), {.nodad = true});
    nl.set_up(bridge);
    for (int i = 1; i <= kClients; ++i) {
      NetNs& client = scratch_.add("pc" + std::to_string(i));
      const std::string port = "port" + std::to_string(i);
      nl.add_veth({.name = port, .peer_name = "eth0", .peer_ns = &client, .master = bridge});
      nl.set_up(nl.link(port).index);
      Netlink cnl = Netlink::open(client);
      const int eth0 = cnl.link("eth0").index;
      cnl.add_address(eth0, IpPrefix::parse("10.9.0.1" + std::to_string(i) + "/24"));
      cnl.add_address(eth0, IpPrefix::parse("fd00:9::1" + std::to_string(i) + "/64"),
                      {.nodad = true});
      cnl.set_up(eth0);
      const auto client_mac = cnl.link(eth0).mac;
      for (const bool v6 : {false, true}) {
        add_permanent_neighbour(client, eth0, IpAddress::parse(v6 ? kServer6 : kServer),
                                bridge_mac);
        add_permanent_neighbour(*server_, bridge, client_address(i - 1, v6), client_mac);
      }
      sources_.push_back({"client-" + std::to_string(i), &client});
      wait_until_running(cnl, "eth0");
      wait_until_running(nl, port);
    }
    wait_until_running(nl, "br0");
  }

  static IpAddress client_address(std::size_t source, bool v6 = false) {
    return IpAddress::parse((v6 ? "fd00:9::1" : "10.9.0.1") + std::to_string(source + 1));
  }

  static ProbeTarget target(const std::string& address, std::uint16_t port, Protocol protocol) {
    return {address + ":" + std::to_string(port), IpAddress::parse(address), port, protocol};
  }

  NetNs* server_ = nullptr;
  std::vector<ProbeSource> sources_;
};

// The suite name that `ctest -R probe` selects.
using probes = ProbeTest;

// --- one row per kind of answer ---

struct AnswerCase {
  std::string name;
  Protocol protocol;
  Answer answer;
  std::string listen_on;  // the fake server's address
  std::string probe;      // the address probed
  ProbeOutcome outcome;
  std::string describe;  // a prefix of describe()
};

std::ostream& operator<<(std::ostream& out, const AnswerCase& c) {
  return out << c.name;
}

class ProbeAnswers : public ProbeTest, public ::testing::WithParamInterface<AnswerCase> {};

TEST_P(ProbeAnswers, AreJudgedAsNetexecWouldBe) {
  const AnswerCase& c = GetParam();
  const FakeServer server(*server_, c.listen_on, 8080, c.protocol, c.answer);
  const bool v6 = IpAddress::parse(c.probe).is_v6();
  const std::vector<ProbeTarget> targets = {target(c.probe, 8080, c.protocol)};
  const auto results = run_probes(sources_, targets, {{0, 0}, {2, 0}}, {.timeout = 300ms});

  ASSERT_EQ(results.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    const ProbeResult& r = results[i];
    const std::size_t source = i == 0 ? 0 : 2;
    EXPECT_EQ(r.outcome, c.outcome) << r.describe();
    EXPECT_THAT(r.describe(), StartsWith(c.describe));
    if (c.outcome == ProbeOutcome::ok) {
      EXPECT_EQ(r.seen_client, client_address(source, v6)) << r.reply;
      EXPECT_EQ(r.error, 0);
    } else {
      EXPECT_FALSE(r.seen_client);
    }
    EXPECT_LT(r.elapsed, c.outcome == ProbeOutcome::timeout ? 301ms : 250ms);
  }
}

INSTANTIATE_TEST_SUITE_P(
    probe, ProbeAnswers,
    ::testing::Values(
        AnswerCase{"tcp_netexec", Protocol::tcp, Answer::netexec, "10.9.0.1", "10.9.0.1",
                   ProbeOutcome::ok, "ok, the server saw the client as 10.9.0."},
        AnswerCase{"tcp_netexec_ipv6", Protocol::tcp, Answer::netexec, "fd00:9::1", "fd00:9::1",
                   ProbeOutcome::ok, "ok, the server saw the client as fd00:9::1"},
        AnswerCase{"tcp_dual_stack_listener", Protocol::tcp, Answer::netexec, "::", "10.9.0.1",
                   ProbeOutcome::ok, "ok, the server saw the client as 10.9.0."},
        AnswerCase{"tcp_body_until_close", Protocol::tcp, Answer::no_length, "10.9.0.1", "10.9.0.1",
                   ProbeOutcome::ok, "ok"},
        AnswerCase{"tcp_chunked", Protocol::tcp, Answer::chunked, "10.9.0.1", "10.9.0.1",
                   ProbeOutcome::ok, "ok"},
        AnswerCase{"tcp_404", Protocol::tcp, Answer::not_found, "10.9.0.1", "10.9.0.1",
                   ProbeOutcome::bad_reply, "unexpected answer: HTTP/1.1 404 Not Found"},
        AnswerCase{"tcp_body_not_ip_port", Protocol::tcp, Answer::not_ip_port, "10.9.0.1",
                   "10.9.0.1", ProbeOutcome::bad_reply,
                   "unexpected answer: the body \"hello\" is not IP:PORT"},
        AnswerCase{"tcp_not_http", Protocol::tcp, Answer::not_http, "10.9.0.1", "10.9.0.1",
                   ProbeOutcome::bad_reply, "unexpected answer: not HTTP: \"SSH-2.0-OpenSSH_9.2\""},
        AnswerCase{"tcp_closed_without_answer", Protocol::tcp, Answer::close_at_once, "10.9.0.1",
                   "10.9.0.1", ProbeOutcome::reset,
                   "connection closed before a whole answer (closed without an answer)"},
        AnswerCase{"tcp_reset", Protocol::tcp, Answer::reset, "10.9.0.1", "10.9.0.1",
                   ProbeOutcome::reset, "connection reset before a whole answer"},
        AnswerCase{"tcp_silent", Protocol::tcp, Answer::silent, "10.9.0.1", "10.9.0.1",
                   ProbeOutcome::timeout, "no answer within 300 ms (connected, nothing came back)"},
        AnswerCase{"udp_netexec", Protocol::udp, Answer::netexec, "10.9.0.1", "10.9.0.1",
                   ProbeOutcome::ok, "ok, the server saw the client as 10.9.0."},
        AnswerCase{"udp_netexec_ipv6", Protocol::udp, Answer::netexec, "fd00:9::1", "fd00:9::1",
                   ProbeOutcome::ok, "ok, the server saw the client as fd00:9::1"},
        AnswerCase{"udp_dual_stack_socket", Protocol::udp, Answer::netexec, "::", "10.9.0.1",
                   ProbeOutcome::ok, "ok, the server saw the client as 10.9.0."},
        AnswerCase{"udp_not_ip_port", Protocol::udp, Answer::not_ip_port, "10.9.0.1", "10.9.0.1",
                   ProbeOutcome::bad_reply,
                   "unexpected answer: the datagram \"hello\" is not IP:PORT"},
        AnswerCase{"udp_silent", Protocol::udp, Answer::silent, "10.9.0.1", "10.9.0.1",
                   ProbeOutcome::timeout, "no answer within 300 ms (3 datagrams sent)"}),
    [](const auto& info) { return info.param.name; });

// --- what the network itself says ---

TEST_F(probes, ClosedPortsAreRefused) {
  const auto results =
      run_probes(sources_,
                 {target(kServer, 81, Protocol::tcp), target(kServer, 81, Protocol::udp),
                  target(kServer6, 81, Protocol::tcp)},
                 {{0, 0}, {0, 1}, {1, 2}}, {.timeout = 1000ms});
  for (const auto& r : results) {
    EXPECT_EQ(r.outcome, ProbeOutcome::refused) << r.describe();
    EXPECT_EQ(r.error, ECONNREFUSED);
    EXPECT_EQ(r.describe(), "connection refused");
    EXPECT_LT(r.elapsed, 200ms);
  }
}

TEST_F(probes, ADestinationWithoutARouteIsUnreachable) {
  const auto results = run_probes(
      sources_, {target(kNoRoute, 80, Protocol::tcp), target(kNoRoute, 80, Protocol::udp)},
      {{0, 0}, {1, 1}}, {.timeout = 1000ms});
  for (const auto& r : results) {
    EXPECT_EQ(r.outcome, ProbeOutcome::unreachable) << r.describe();
    EXPECT_THAT(r.error, AnyOf(ENETUNREACH, EHOSTUNREACH));
    EXPECT_THAT(r.describe(),
                AnyOf("network is unreachable (ENETUNREACH)", "no route to host (EHOSTUNREACH)"));
  }
}

TEST_F(probes, ANeighbourThatNeverAnswersTimesOut) {
  const auto start = std::chrono::steady_clock::now();
  const auto results = run_probes(
      sources_,
      {target(kSilentNeighbour, 80, Protocol::tcp), target(kSilentNeighbour, 80, Protocol::udp)},
      {{0, 0}, {1, 1}, {2, 0}}, {.timeout = 300ms});
  const auto took = std::chrono::steady_clock::now() - start;
  for (const auto& r : results) {
    EXPECT_EQ(r.outcome, ProbeOutcome::timeout) << r.describe();
    EXPECT_EQ(r.error, 0);
    EXPECT_EQ(r.elapsed, 300ms);
  }
  EXPECT_EQ(results[0].describe(), "no answer within 300 ms (the connection was not established)");
  EXPECT_EQ(results[1].describe(), "no answer within 300 ms (3 datagrams sent)");
  EXPECT_LT(took, 800ms) << "the probes wait side by side";
}

// --- many probes, few slots, order ---

TEST_F(probes, TwoThousandProbesFromSeveralSourcesAllSucceedQuickly) {
  const FakeServer tcp(*server_, kServer, 8080, Protocol::tcp, Answer::netexec);
  const FakeServer udp(*server_, kServer, 8081, Protocol::udp, Answer::netexec);
  const FakeServer tcp6(*server_, kServer6, 8082, Protocol::tcp, Answer::netexec);
  const std::vector<ProbeTarget> targets = {target(kServer, 8080, Protocol::tcp),
                                            target(kServer, 8081, Protocol::udp),
                                            target(kServer6, 8082, Protocol::tcp)};
  std::vector<Probe> list;
  for (std::size_t i = 0; i < 2000; ++i)
    list.push_back({i % kClients, i % targets.size()});

  const auto start = std::chrono::steady_clock::now();
  const auto results = run_probes(sources_, targets, list);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  std::cout << "2000 probes took " << took.count() << " ms\n";
  RecordProperty("milliseconds", static_cast<int>(took.count()));

  ASSERT_EQ(results.size(), list.size());
  int failed = 0;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const ProbeResult& r = results[i];
    if (r.outcome != ProbeOutcome::ok ||
        r.seen_client != client_address(list[i].source, list[i].target == 2)) {
      if (++failed <= 5) ADD_FAILURE() << "probe " << i << ": " << r.describe();
    }
  }
  EXPECT_EQ(failed, 0);
  EXPECT_LT(took, 1500ms);
}

TEST_F(probes, FewerSlotsThanProbesStillRunEveryProbeInOrder) {
  const FakeServer tcp(*server_, kServer, 8080, Protocol::tcp, Answer::netexec);
  const FakeServer udp(*server_, kServer, 8081, Protocol::udp, Answer::netexec);
  const std::vector<ProbeTarget> targets = {
      target(kServer, 8080, Protocol::tcp), target(kServer, 8081, Protocol::udp),
      target(kServer, 81, Protocol::tcp), target(kNoRoute, 80, Protocol::tcp)};
  const ProbeOutcome expected[] = {ProbeOutcome::ok, ProbeOutcome::ok, ProbeOutcome::refused,
                                   ProbeOutcome::unreachable};
  // Sources in descending order and targets cycling, so the engine's grouping by source
  // reorders the work but must not reorder the results.
  std::vector<Probe> list;
  for (std::size_t i = 0; i < 90; ++i)
    list.push_back({kClients - 1 - i % kClients, (i / kClients) % targets.size()});

  const auto results = run_probes(sources_, targets, list, {.timeout = 1000ms, .max_in_flight = 4});
  ASSERT_EQ(results.size(), list.size());
  for (std::size_t i = 0; i < list.size(); ++i) {
    const ProbeResult& r = results[i];
    EXPECT_EQ(r.outcome, expected[list[i].target]) << "probe " << i << ": " << r.describe();
    if (r.outcome == ProbeOutcome::ok) {
      EXPECT_EQ(r.seen_client, client_address(list[i].source)) << "probe " << i;
    }
  }
}

TEST_F(probes, ASourceWithoutANamespaceIsAnErrorOfItsOwnProbes) {
  const FakeServer tcp(*server_, kServer, 8080, Protocol::tcp, Answer::netexec);
  NetNs moved_from = NetNs::current();
  { const NetNs taken = std::move(moved_from); }
  std::vector<ProbeSource> sources = sources_;
  sources.push_back({"no-netns", nullptr});
  sources.push_back({"closed", &moved_from});
  const std::size_t none = sources.size() - 2;
  const std::size_t closed = sources.size() - 1;

  const auto results = run_probes(sources, {target(kServer, 8080, Protocol::tcp)},
                                  {{none, 0}, {0, 0}, {closed, 0}, {1, 0}}, {.timeout = 1000ms});
  EXPECT_EQ(results[0].outcome, ProbeOutcome::error);
  EXPECT_EQ(results[0].error, EINVAL);
  EXPECT_EQ(results[0].describe(),
            "source \"no-netns\" has no network namespace handle: invalid argument (EINVAL)");
  EXPECT_EQ(results[2].outcome, ProbeOutcome::error);
  EXPECT_EQ(results[2].error, EBADF);
  EXPECT_EQ(results[1].outcome, ProbeOutcome::ok) << results[1].describe();
  EXPECT_EQ(results[3].outcome, ProbeOutcome::ok) << results[3].describe();
}

// --- without the network ---

TEST(probe_results, DescribeSaysWhatHappenedInLowerCase) {
  EXPECT_EQ(to_string(Protocol::tcp), "TCP");
  EXPECT_EQ(to_string(Protocol::udp), "UDP");
  EXPECT_EQ(to_string(ProbeOutcome::ok), "ok");
  EXPECT_EQ(to_string(ProbeOutcome::bad_reply), "bad_reply");
  EXPECT_EQ(to_string(ProbeOutcome::unreachable), "unreachable");

  ProbeResult r;
  r.outcome = ProbeOutcome::unreachable;
  r.error = EHOSTUNREACH;
  EXPECT_EQ(r.describe(), "no route to host (EHOSTUNREACH)");
  r.error = EADDRNOTAVAIL;
  EXPECT_EQ(r.describe(), "cannot assign requested address (EADDRNOTAVAIL)");
  r.outcome = ProbeOutcome::timeout;
  r.error = 0;
  r.elapsed = 2000ms;
  EXPECT_EQ(r.describe(), "no answer within 2000 ms");
  r.outcome = ProbeOutcome::reset;
  r.error = ECONNRESET;
  EXPECT_EQ(r.describe(), "connection reset before a whole answer");
  r.outcome = ProbeOutcome::error;
  r.error = EMFILE;
  r.detail = "create a socket";
  EXPECT_EQ(r.describe(), "create a socket: too many open files (EMFILE)");
}

TEST(probe_results, BadIndexesThrowAndNoProbesIsNoResults) {
  EXPECT_TRUE(run_probes({}, {}, {}).empty());
  const std::vector<ProbeSource> sources = {{"a", nullptr}};
  const std::vector<ProbeTarget> targets = {{"t", IpAddress::parse("10.0.0.1"), 80}};
  EXPECT_THROW(run_probes(sources, targets, {{1, 0}}), std::out_of_range);
  EXPECT_THROW(run_probes(sources, targets, {{0, 1}}), std::out_of_range);
}

}  // namespace
}  // namespace flatnet::emulator
