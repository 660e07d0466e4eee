// flatnet-proxy on a real node: a node namespace with a bridge and pod namespaces (as flatnet-cni
// wires them), flatnet-netexec in every pod, another namespace outside playing a second host,
// and the real flatnet-proxy binary running in the node, following a state file the test
// rewrites. Every check is real traffic: which pod answered, and which client address it saw.

#include <arpa/inet.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "flatnet/netmodel/address.hpp"
#include "flatnet/netmodel/netlink.hpp"
#include "flatnet/netmodel/netns.hpp"
#include "flatnet/netmodel/socket_address.hpp"
#include "flatnet/netmodel/sysctl.hpp"
#include "flatnet/testing/child_process.hpp"
#include "flatnet/testing/scratch_netns.hpp"
#include "flatnet/testing/traffic.hpp"

namespace flatnet {
namespace {

using namespace std::chrono_literals;
using netmodel::IpAddress;
using netmodel::IpPrefix;
using netmodel::Netlink;
using netmodel::NetNs;
using nlohmann::json;
using testing::ChildProcess;
using ::testing::HasSubstr;
using testing::Socket;

constexpr const char* kProxy = FLATNET_BIN_DIR "/flatnet-proxy";
constexpr const char* kNetexec = FLATNET_BIN_DIR "/flatnet-netexec";

IpAddress ip(const std::string& text) {
  return IpAddress::parse(text);
}

// --- a client, run from any namespace ------------------------------------------------------------

struct Answer {
  bool ok = false;
  int error = 0;       // errno of a failed exchange (ECONNREFUSED, ETIMEDOUT, ...)
  std::string body{};  // the HTTP body or the UDP datagram
};

bool wait_fd(int fd, short events, std::chrono::milliseconds timeout) {
  pollfd p{fd, events, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
}

Socket socket_in(const NetNs& ns, int type) {
  return netmodel::run_in(
      ns, [type] { return Socket(::socket(AF_INET, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)); });
}

// GET `path` from address:port over a new connection made from `ns`.
Answer http_get(const NetNs& ns, const IpAddress& address, std::uint16_t port,
                const std::string& path, std::chrono::milliseconds timeout = 2000ms) {
  Answer answer;
  Socket s = socket_in(ns, SOCK_STREAM);
  const auto target = netmodel::SocketAddress::of(address, port);
  if (::connect(s.fd(), target.get(), target.length) != 0 && errno != EINPROGRESS) {
    answer.error = errno;
    return answer;
  }
  if (!wait_fd(s.fd(), POLLOUT, timeout)) {
    answer.error = ETIMEDOUT;
    return answer;
  }
  int so_error = 0;
  socklen_t len = sizeof so_error;
  ::getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &so_error, &len);
  if (so_error != 0) {
    answer.error = so_error;
    return answer;
  }
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  if (::send(s.fd(), request.data(), request.size(), MSG_NOSIGNAL) < 0) {
    answer.error = errno;
    return answer;
  }
  std::string response;
  while (wait_fd(s.fd(), POLLIN, timeout)) {
    char buffer[4096];
    const ssize_t n = ::recv(s.fd(), buffer, sizeof buffer, 0);
    if (n < 0) {
      answer.error = errno;
      return answer;
    }
    if (n == 0) break;
    response.append(buffer, static_cast<std::size_t>(n));
  }
  const auto body = response.find("\r\n\r\n");
  if (!response.starts_with("HTTP/1.1 200") || body == std::string::npos) {
    answer.error = response.empty() ? ETIMEDOUT : EPROTO;
    answer.body = response;
    return answer;
  }
  answer.ok = true;
  answer.body = response.substr(body + 4);
  return answer;
}

// The address part of netexec's "IP:PORT" answer to /clientip.
std::string client_ip_of(const std::string& body) {
  return body.substr(0, body.rfind(':'));
}

// One UDP datagram from `ns`, sent from `source_port` (0: any), and its answer.
Answer udp_ask(const NetNs& ns, const IpAddress& address, std::uint16_t port,
               const std::string& message, std::uint16_t source_port = 0,
               std::chrono::milliseconds timeout = 500ms) {
  Answer answer;
  Socket s = socket_in(ns, SOCK_DGRAM);
  const int one = 1;
  ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (source_port != 0) {
    const auto local = netmodel::SocketAddress::of(IpAddress::v4(0), source_port);
    if (::bind(s.fd(), local.get(), local.length) != 0) {
      answer.error = errno;
      return answer;
    }
  }
  const auto target = netmodel::SocketAddress::of(address, port);
  if (::connect(s.fd(), target.get(), target.length) != 0 ||
      ::send(s.fd(), message.data(), message.size(), 0) < 0) {
    answer.error = errno;
    return answer;
  }
  if (!wait_fd(s.fd(), POLLIN, timeout)) {
    answer.error = ETIMEDOUT;
    return answer;
  }
  char buffer[512];
  const ssize_t n = ::recv(s.fd(), buffer, sizeof buffer, 0);
  if (n < 0) {
    answer.error = errno;
    return answer;
  }
  answer.ok = true;
  answer.body.assign(buffer, static_cast<std::size_t>(n));
  return answer;
}

// Polls `condition` every 50 ms until it holds or `timeout` passes.
bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
  return true;
}

// --- the objects the proxy follows ---------------------------------------------------------------

struct Port {
  std::string name;
  std::string protocol;  // "TCP" or "UDP"
  int port;
  int target;
  int node_port = 0;
};

json service(const std::string& name, const std::string& cluster_ip, const std::vector<Port>& ports,
             const std::string& type = "ClusterIP") {
  json spec = {{"type", type}, {"clusterIP", cluster_ip}, {"clusterIPs", {cluster_ip}}};
  for (const auto& p : ports) {
    json port = {{"protocol", p.protocol}, {"port", p.port}, {"targetPort", p.target}};
    if (!p.name.empty()) port["name"] = p.name;
    if (p.node_port != 0) port["nodePort"] = p.node_port;
    spec["ports"].push_back(port);
  }
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", {{"name", name}, {"namespace", "default"}}},
          {"spec", spec}};
}

struct Backend {
  std::string ip;
  std::string node = "node-1";
  bool ready = true;
};

json slice(const std::string& service_name, const std::vector<Backend>& backends,
           const std::vector<Port>& ports) {
  json endpoints = json::array();
  for (const auto& b : backends) {
    endpoints.push_back(
        {{"addresses", {b.ip}}, {"nodeName", b.node}, {"conditions", {{"ready", b.ready}}}});
  }
  json slice_ports = json::array();
  for (const auto& p : ports) {
    json port = {{"protocol", p.protocol}, {"port", p.target}};
    if (!p.name.empty()) port["name"] = p.name;
    slice_ports.push_back(port);
  }
  return {{"apiVersion", "discovery.k8s.io/v1"},
          {"kind", "EndpointSlice"},
          {"metadata",
           {{"name", service_name + "-x1"},
            {"namespace", "default"},
            {"labels", {{"kubernetes.io/service-name", service_name}}}}},
          {"addressType", "IPv4"},
          {"endpoints", endpoints},
          {"ports", slice_ports}};
}

// --- the node ------------------------------------------------------------------------------------

constexpr const char* kNodeIp = "172.18.0.2";
constexpr const char* kOutsideIp = "172.18.0.1";
constexpr const char* kGateway = "10.244.1.1";
const std::vector<std::string> kPods = {"pod-a", "pod-b", "pod-c", "client"};

class ProxyTest : public testing::NetnsTest {
 protected:
  void SetUp() override {
    NetnsTest::SetUp();
    if (IsSkipped()) return;
    node_ = &scratch_.add("node");
    outside_ = &scratch_.add("outside");
    auto nl = Netlink::open(*node_);
    nl.add_bridge({"cbr0", 0, {}});
    const int bridge = nl.link("cbr0").index;
    nl.add_address(bridge, IpPrefix::parse("10.244.1.1/24"));
    nl.set_up(bridge);
    netmodel::write_sysctl(*node_, "net.ipv4.ip_forward", "1");

    // The outside host: a veth to the node; it routes the pod network through the node.
    nl.add_veth({"eth0", "eth0", nullptr, outside_, 0, {}, {}, 0, true});
    nl.add_address(nl.link("eth0").index, IpPrefix::parse(std::string(kNodeIp) + "/24"));
    nl.replace_route({std::nullopt, netmodel::Family::v4, ip(kOutsideIp)});
    auto out = Netlink::open(*outside_);
    const int out_eth = out.link("eth0").index;
    out.add_address(out_eth, IpPrefix::parse(std::string(kOutsideIp) + "/24"));
    out.set_up(out_eth);
    out.add_route({IpPrefix::parse("10.244.0.0/16"), netmodel::Family::v4, ip(kNodeIp)});
    out.add_route({IpPrefix::parse("192.0.2.0/24"), netmodel::Family::v4, ip(kNodeIp)});

    int n = 2;
    for (const auto& name : kPods) {
      auto& pod = scratch_.add(name);
      pods_[name] = &pod;
      pod_ip_[name] = "10.244.1." + std::to_string(n++);
      const std::string host_end = "veth-" + name;
      nl.add_veth({host_end, "eth0", nullptr, &pod, 0, {}, {}, bridge, true});
      nl.set_hairpin(nl.link(host_end).index, true);
      auto pl = Netlink::open(pod);
      const int eth = pl.link("eth0").index;
      pl.add_address(eth, IpPrefix::parse(pod_ip_[name] + "/24"));
      pl.set_up(eth);
      pl.add_route({std::nullopt, netmodel::Family::v4, ip(kGateway)});
      if (name != "client") {
        workloads_.push_back(ChildProcess::start(pod,
                                                 {kNetexec, "--http-port", "8080", "--udp-port",
                                                  "8081", "--hostname", name, "--ready-fd", "3"},
                                                 true));
        ASSERT_TRUE(workloads_.back().ready()) << workloads_.back().log();
      }
    }
    char dir[] = "/tmp/flatnet-proxy-test-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    state_file_ = dir_ / "services.json";
  }

  void TearDown() override {
    if (proxy_.running()) proxy_.stop(SIGKILL);
    workloads_.clear();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

  // Replaces the state file atomically, as a writer must.
  void write_state(const std::vector<json>& items) {
    const json list = {{"apiVersion", "v1"}, {"kind", "List"}, {"items", items}};
    const auto temporary = dir_ / "services.json.tmp";
    std::ofstream(temporary) << list.dump(2);
    std::filesystem::rename(temporary, state_file_);
  }

  void start_proxy(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {kProxy,
                                     "--source",
                                     "file:" + state_file_.string(),
                                     "--hostname-override",
                                     "node-1",
                                     "--cluster-cidr",
                                     "10.244.0.0/16",
                                     "--iptables-min-sync-period",
                                     "0s",
                                     "--healthz-bind-address",
                                     std::string(kNodeIp) + ":10256",
                                     "--metrics-bind-address",
                                     "127.0.0.1:10249",
                                     "-v",
                                     "2"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    proxy_ = ChildProcess::start(*node_, argv);
    // Up once the first sync is done (/healthz answers 200 before that, as kube-proxy's does).
    ASSERT_TRUE(eventually([&] {
      return metric("_duration_seconds_count") >= 1 || !proxy_.running();
    })) << proxy_.log();
    ASSERT_TRUE(proxy_.running()) << proxy_.log();
  }

  // A kubeproxy_sync_proxy_rules<suffix> value from /metrics; -1 when it cannot be read.
  double metric(const std::string& suffix) {
    const auto answer = http_get(*node_, ip("127.0.0.1"), 10249, "/metrics", 500ms);
    const std::string name = "kubeproxy_sync_proxy_rules" + suffix + " ";
    const auto at = answer.body.find("\n" + name);
    if (!answer.ok || at == std::string::npos) return -1;
    return std::stod(answer.body.substr(at + 1 + name.size()));
  }

  // Rewrites the state and waits until the proxy has synced it.
  void update_state(const std::vector<json>& items) {
    const double syncs = metric("_duration_seconds_count");
    write_state(items);
    ASSERT_TRUE(eventually([&] {
      return metric("_duration_seconds_count") > syncs &&
             metric("_last_timestamp_seconds") >= metric("_last_queued_timestamp_seconds");
    })) << proxy_.log();
  }

  std::string hostname_via(const std::string& from, const std::string& address, int port) {
    const auto answer =
        http_get(*pods_[from], ip(address), static_cast<std::uint16_t>(port), "/hostname");
    return answer.ok ? answer.body : "error " + std::to_string(answer.error);
  }

  // The pods that answered `count` requests from the client pod.
  std::map<std::string, int> spread(const std::string& address, int port, int count) {
    std::map<std::string, int> seen;
    for (int i = 0; i < count; ++i)
      ++seen[hostname_via("client", address, port)];
    return seen;
  }

  // The node's rules and chains in both iptables backends, without what says nothing about them:
  // comments (timestamps), packet counters, and tables that hold only the built-in chains with
  // their default policy (the kernel keeps a table once anything has looked at it).
  std::string iptables_save() {
    std::string text;
    for (const char* tool : {"/usr/sbin/iptables-nft-save", "/usr/sbin/iptables-legacy-save"}) {
      auto save = ChildProcess::start(*node_, {tool});
      EXPECT_EQ(save.wait(10s), 0) << save.log();
      std::string table;
      bool only_defaults = true;
      for (const auto& line : split_lines(save.log())) {
        if (line.starts_with("#")) continue;
        if (line == "COMMIT") {
          if (!only_defaults) text += table + "COMMIT\n";
          table.clear();
          only_defaults = true;
          continue;
        }
        if (line.starts_with(":")) {
          const std::string chain = line.substr(0, line.find(" ["));  // no counters
          const std::string name = chain.substr(1, chain.find(' ') - 1);
          const bool builtin = name == "PREROUTING" || name == "INPUT" || name == "FORWARD" ||
                               name == "OUTPUT" || name == "POSTROUTING";
          if (!builtin || !chain.ends_with(" ACCEPT")) only_defaults = false;
          table += chain + "\n";
          continue;
        }
        if (!line.starts_with("*")) only_defaults = false;
        table += line + "\n";
      }
    }
    return text;
  }

  static std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> lines;
    std::size_t pos = 0;
    while (pos < text.size()) {
      auto end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      lines.push_back(text.substr(pos, end - pos));
      pos = end + 1;
    }
    return lines;
  }

  NetNs* node_ = nullptr;
  NetNs* outside_ = nullptr;
  std::map<std::string, NetNs*> pods_;
  std::map<std::string, std::string> pod_ip_;
  std::vector<ChildProcess> workloads_;
  ChildProcess proxy_;
  std::filesystem::path dir_;
  std::filesystem::path state_file_;
};

const std::vector<Port> kHttp = {{"http", "TCP", 80, 8080}};
const std::vector<Backend> kAllPods = {{"10.244.1.2"}, {"10.244.1.3"}, {"10.244.1.4"}};

TEST_F(ProxyTest, EveryEndpointOfAClusterIpIsReachedAndTheClientIpIsKept) {
  write_state({service("web", "10.96.0.10", kHttp), slice("web", kAllPods, kHttp)});
  start_proxy();
  const auto seen = spread("10.96.0.10", 80, 60);
  ASSERT_EQ(seen.size(), 3U) << ::testing::PrintToString(seen) << proxy_.log();
  for (const auto& [pod, count] : seen) {
    // A fair choice gives each of 3 pods 20 of 60; below 5 happens with probability < 1e-4.
    EXPECT_GE(count, 5) << pod;
  }
  // Pod to ClusterIP inside the cluster CIDR: never masqueraded.
  const auto answer = http_get(*pods_["client"], ip("10.96.0.10"), 80, "/clientip");
  ASSERT_TRUE(answer.ok) << answer.error;
  EXPECT_EQ(client_ip_of(answer.body), pod_ip_["client"]);
}

TEST_F(ProxyTest, AServiceWithoutEndpointsIsRefusedAtOnce) {
  write_state({service("empty", "10.96.0.11", kHttp)});
  start_proxy();
  const auto start = std::chrono::steady_clock::now();
  const auto answer = http_get(*pods_["client"], ip("10.96.0.11"), 80, "/hostname");
  EXPECT_FALSE(answer.ok);
  EXPECT_EQ(answer.error, ECONNREFUSED) << std::strerror(answer.error);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  // Once an endpoint appears, the same address answers.
  write_state({service("empty", "10.96.0.11", kHttp), slice("empty", {{"10.244.1.3"}}, kHttp)});
  EXPECT_TRUE(eventually([&] { return hostname_via("client", "10.96.0.11", 80) == "pod-b"; }))
      << proxy_.log();
}

TEST_F(ProxyTest, NodePortAnswersFromAnotherHostAndIsMasqueraded) {
  const std::vector<Port> ports = {{"http", "TCP", 80, 8080, 30080}};
  write_state({service("np", "10.96.0.12", ports, "NodePort"), slice("np", kAllPods, ports)});
  start_proxy();
  std::set<std::string> seen;
  for (int i = 0; i < 30; ++i) {
    const auto answer = http_get(*outside_, ip(kNodeIp), 30080, "/hostname");
    ASSERT_TRUE(answer.ok) << answer.error << proxy_.log();
    seen.insert(answer.body);
  }
  EXPECT_EQ(seen.size(), 3U);
  // externalTrafficPolicy Cluster: the source is rewritten to the node's.
  const auto answer = http_get(*outside_, ip(kNodeIp), 30080, "/clientip");
  ASSERT_TRUE(answer.ok);
  EXPECT_NE(client_ip_of(answer.body), kOutsideIp);
}

TEST_F(ProxyTest, ExternalTrafficPolicyLocalKeepsTheClientIpAndServesHealth) {
  const std::vector<Port> ports = {{"http", "TCP", 80, 8080, 30081}};
  // Kubernetes gives only LoadBalancer services a health check node port.
  auto svc = service("local", "10.96.0.13", ports, "LoadBalancer");
  svc["spec"]["externalTrafficPolicy"] = "Local";
  svc["spec"]["healthCheckNodePort"] = 32100;
  // One endpoint here, one on another node.
  const std::vector<Backend> backends = {{"10.244.1.2", "node-1"}, {"10.244.2.9", "node-2"}};
  write_state({svc, slice("local", backends, ports)});
  start_proxy();
  for (int i = 0; i < 10; ++i) {
    const auto answer = http_get(*outside_, ip(kNodeIp), 30081, "/clientip");
    ASSERT_TRUE(answer.ok) << answer.error << proxy_.log();
    EXPECT_EQ(client_ip_of(answer.body), kOutsideIp);  // only the local pod, no SNAT
  }
  const auto health = http_get(*outside_, ip(kNodeIp), 32100, "/healthz");
  ASSERT_TRUE(health.ok) << health.error << health.body;
  EXPECT_THAT(health.body, HasSubstr("\"localEndpoints\":1"));

  // No local endpoint left: node-port traffic is dropped (not sent to node-2) and health is 503.
  write_state({svc, slice("local", {{"10.244.2.9", "node-2"}}, ports)});
  EXPECT_TRUE(eventually([&] {
    const auto h = http_get(*outside_, ip(kNodeIp), 32100, "/healthz", 500ms);
    return !h.ok && h.body.starts_with("HTTP/1.1 503");
  })) << proxy_.log();
  const auto dropped = http_get(*outside_, ip(kNodeIp), 30081, "/hostname", 700ms);
  EXPECT_FALSE(dropped.ok);
  EXPECT_EQ(dropped.error, ETIMEDOUT) << std::strerror(dropped.error);
}

TEST_F(ProxyTest, SessionAffinityPinsAClientAndNoneSpreadsAgain) {
  auto svc = service("sticky", "10.96.0.14", kHttp);
  svc["spec"]["sessionAffinity"] = "ClientIP";
  svc["spec"]["sessionAffinityConfig"] = {{"clientIP", {{"timeoutSeconds", 600}}}};
  write_state({svc, slice("sticky", kAllPods, kHttp)});
  start_proxy();
  const auto first = hostname_via("client", "10.96.0.14", 80);
  ASSERT_TRUE(first.starts_with("pod-")) << first << proxy_.log();
  for (int i = 0; i < 15; ++i)
    EXPECT_EQ(hostname_via("client", "10.96.0.14", 80), first);

  svc["spec"]["sessionAffinity"] = "None";
  svc["spec"].erase("sessionAffinityConfig");
  write_state({svc, slice("sticky", kAllPods, kHttp)});
  EXPECT_TRUE(eventually([&] { return spread("10.96.0.14", 80, 30).size() >= 2; })) << proxy_.log();
}

TEST_F(ProxyTest, APodReachesItselfThroughItsService) {
  write_state({service("self", "10.96.0.15", kHttp), slice("self", {{"10.244.1.2"}}, kHttp)});
  start_proxy();
  const auto answer = http_get(*pods_["pod-a"], ip("10.96.0.15"), 80, "/clientip");
  ASSERT_TRUE(answer.ok) << answer.error << proxy_.log();
  // Hairpin: masqueraded, or the reply would come from the pod to itself and be dropped.
  EXPECT_NE(client_ip_of(answer.body), pod_ip_["pod-a"]);
}

TEST_F(ProxyTest, AUdpClientWithAFixedPortReachesTheNewBackendAfterASwap) {
  const std::vector<Port> dns = {{"dns", "UDP", 53, 8081}};
  write_state({service("dns", "10.96.0.53", dns), slice("dns", {{"10.244.1.2"}}, dns)});
  start_proxy();
  constexpr std::uint16_t kSourcePort = 40053;
  auto ask = [&] {
    const auto a = udp_ask(*pods_["client"], ip("10.96.0.53"), 53, "hostname", kSourcePort);
    return a.ok ? a.body : "error " + std::to_string(a.error);
  };
  ASSERT_EQ(ask(), "pod-a") << proxy_.log();
  ASSERT_EQ(ask(), "pod-a");  // the conntrack entry now points at pod-a

  write_state({service("dns", "10.96.0.53", dns), slice("dns", {{"10.244.1.3"}}, dns)});
  const auto swapped = std::chrono::steady_clock::now();
  EXPECT_TRUE(eventually([&] { return ask() == "pod-b"; }, 2s)) << proxy_.log();
  EXPECT_LT(std::chrono::steady_clock::now() - swapped, 2500ms);
  EXPECT_THAT(proxy_.log(), HasSubstr("deleted stale conntrack entry udp " + pod_ip_["client"] +
                                      ":40053 -> 10.96.0.53:53 (backend 10.244.1.2:8081)"));
}

TEST_F(ProxyTest, TheLegacyBackendServesAndCleansUpToo) {
  const auto before = iptables_save();
  write_state({service("web", "10.96.0.10", kHttp), slice("web", kAllPods, kHttp)});
  start_proxy({"--iptables-backend", "legacy"});
  EXPECT_EQ(spread("10.96.0.10", 80, 30).size(), 3U) << proxy_.log();
  EXPECT_EQ(proxy_.stop(SIGTERM), 0);
  auto cleanup = ChildProcess::start(*node_, {kProxy, "--cleanup", "--iptables-backend", "legacy"});
  EXPECT_EQ(cleanup.wait(20s), 0) << cleanup.log();
  EXPECT_EQ(iptables_save(), before);
}

TEST_F(ProxyTest, RestartingTheProxyKeepsEstablishedConnections) {
  // The backend is a plain TCP socket in pod-c, so that one connection can carry many messages.
  write_state({service("stream", "10.96.0.16", {{"s", "TCP", 9000, 9000}}),
               slice("stream", {{"10.244.1.4"}}, {{"s", "TCP", 9000, 9000}})});
  start_proxy();
  Socket listener = testing::listen_tcp(*pods_["pod-c"], ip("10.244.1.4"), 9000);
  Socket client = socket_in(*pods_["client"], SOCK_STREAM);
  const auto target = netmodel::SocketAddress::of(ip("10.96.0.16"), 9000);
  ::connect(client.fd(), target.get(), target.length);
  ASSERT_TRUE(wait_fd(listener.fd(), POLLIN, 2000ms)) << proxy_.log();
  Socket server(::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_GE(server.fd(), 0);
  auto round_trip = [&](const std::string& message) {
    if (::send(client.fd(), message.data(), message.size(), MSG_NOSIGNAL) < 0) return false;
    char buffer[64];
    if (!wait_fd(server.fd(), POLLIN, 1000ms)) return false;
    const ssize_t n = ::recv(server.fd(), buffer, sizeof buffer, 0);
    return n == static_cast<ssize_t>(message.size());
  };
  ASSERT_TRUE(round_trip("before"));

  EXPECT_EQ(proxy_.stop(SIGTERM), 0) << proxy_.log();
  EXPECT_TRUE(round_trip("while stopped"));  // the rules stay in place
  start_proxy();
  EXPECT_TRUE(round_trip("after restart")) << proxy_.log();
}

TEST_F(ProxyTest, CleanupLeavesTheNodeAsItWas) {
  const auto before = iptables_save();
  const std::vector<Port> ports = {{"http", "TCP", 80, 8080, 30082}};
  write_state({service("np", "10.96.0.17", ports, "NodePort"), slice("np", kAllPods, ports),
               service("empty", "10.96.0.18", kHttp)});
  start_proxy();
  ASSERT_EQ(hostname_via("client", "10.96.0.17", 80).substr(0, 4), "pod-");
  EXPECT_EQ(proxy_.stop(SIGTERM), 0);
  EXPECT_NE(iptables_save(), before);  // the rules outlive the daemon

  auto cleanup = ChildProcess::start(*node_, {kProxy, "--cleanup"});
  EXPECT_EQ(cleanup.wait(20s), 0) << cleanup.log();
  EXPECT_EQ(iptables_save(), before);
  const auto answer = http_get(*pods_["client"], ip("10.96.0.17"), 80, "/hostname", 500ms);
  EXPECT_FALSE(answer.ok);
}

TEST_F(ProxyTest, HealthAndMetricsAnswer) {
  write_state({service("web", "10.96.0.10", kHttp), slice("web", kAllPods, kHttp)});
  start_proxy();
  const auto health = http_get(*outside_, ip(kNodeIp), 10256, "/healthz");
  ASSERT_TRUE(health.ok);
  const auto parsed = json::parse(health.body);
  EXPECT_TRUE(parsed.contains("lastUpdated"));
  EXPECT_TRUE(parsed.contains("currentTime"));
  const auto metrics = http_get(*node_, ip("127.0.0.1"), 10249, "/metrics");
  ASSERT_TRUE(metrics.ok) << metrics.error;
  EXPECT_THAT(metrics.body, HasSubstr("kubeproxy_sync_proxy_rules_duration_seconds_bucket"));
  EXPECT_THAT(metrics.body, HasSubstr("kubeproxy_sync_proxy_rules_last_timestamp_seconds"));
  EXPECT_THAT(metrics.body, HasSubstr("kubeproxy_network_programming_duration_seconds"));
  const auto mode = http_get(*node_, ip("127.0.0.1"), 10249, "/proxyMode");
  ASSERT_TRUE(mode.ok);
  EXPECT_EQ(mode.body, "iptables");
}

TEST_F(ProxyTest, AMalformedUpdateKeepsTheLastGoodState) {
  write_state({service("web", "10.96.0.10", kHttp), slice("web", {{"10.244.1.2"}}, kHttp)});
  start_proxy();
  ASSERT_EQ(hostname_via("client", "10.96.0.10", 80), "pod-a");
  const auto temporary = dir_ / "broken.tmp";
  std::ofstream(temporary) << "{\"kind\": \"List\", \"items\": [";
  std::filesystem::rename(temporary, state_file_);
  EXPECT_TRUE(eventually([&] { return proxy_.log().find("services.json") != std::string::npos; }));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(hostname_via("client", "10.96.0.10", 80), "pod-a");
  EXPECT_TRUE(proxy_.running());
}

}  // namespace
}  // namespace flatnet
