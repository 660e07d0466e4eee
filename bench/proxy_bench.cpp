// bench/proxy: flatnet-proxy's iptables mode against plain iptables-restore, with each iptables
// backend (iptables-nft and iptables-legacy), for services of 5 endpoints each.
//
//  (a) Full sync: the proxier's first sync of N services in a fresh node namespace (iptables-save,
//      render, one `iptables-restore --noflush`, the jump rules, conntrack cleanup) against the
//      iptables-<backend>-restore binary run directly, in another fresh namespace, on the text
//      that restore got (the rendered rules and the jump rules; without --noflush: the same
//      result from empty tables), in alternating order;
//      prints the medians and the ratio proxier / plain. Up to --noflush-peer-max services, the
//      binary with --noflush too (iptables-nft's quadratic case, runner.hpp). Rendering alone
//      (render() in-process, on a new thread and again on the same thread) is printed beside them.
//  (b) Partial sync: after that full sync, the sync after one endpoint of one service changed.
//  (c) Connect latency: a node namespace with a bridge, a pod listening on 10.244.1.2:8080 and a
//      client pod; the service whose rule is the last of N in KUBE-SERVICES points at the pod, the
//      others at fake addresses. TCP connects from the client to that ClusterIP and, interleaved,
//      to the pod directly; prints the median connect() time of each and the ratio.
//
// Usage: sudo flatnet-bench-proxy [--rounds R (3)] [--services LIST (1000,5000,10000)]
//            [--backends LIST (nft,legacy)] [--endpoints N (5)] [--connect-services LIST
//            (10,10000)] [--connects N (200)] [--only sync|connect] [--quiet-timeout S (20)]
//            [--noflush-peer-max N (2000)]
//        flatnet-bench-proxy --write-ruleset PATH [--services N]: writes the rendered ruleset.
// Every timed step starts on a quiet machine (see wait_until_quiet). Everything happens in
// namespaces named flatnet-bench-proxy-<pid>-*, removed at exit, on failure and on SIGINT/SIGTERM.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "flatnet/netmodel/netlink.hpp"
#include "flatnet/netmodel/netns.hpp"
#include "flatnet/netmodel/process.hpp"
#include "flatnet/netmodel/sysctl.hpp"
#include "flatnet/proxy/iptables/chains.hpp"
#include "flatnet/proxy/iptables/conntrack.hpp"
#include "flatnet/proxy/iptables/proxier.hpp"
#include "flatnet/proxy/iptables/render.hpp"
#include "flatnet/proxy/iptables/runner.hpp"
#include "flatnet/proxy/model.hpp"

namespace {

namespace ipt = flatnet::proxy::iptables;
using flatnet::netmodel::IpAddress;
using flatnet::netmodel::IpPrefix;
using flatnet::netmodel::Netlink;
using flatnet::netmodel::NetNs;
using flatnet::proxy::EndpointInfo;
using flatnet::proxy::IptablesBackend;
using flatnet::proxy::ProxyConfig;
using flatnet::proxy::ProxyState;
using flatnet::proxy::ServicePortInfo;
using flatnet::proxy::ServicePortName;
using flatnet::proxy::StateChanges;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// --- namespaces ----------------------------------------------------------------------------------

// "flatnet-bench-proxy-<pid>-": every namespace of this run starts so.
std::string ns_prefix;

// Removes every namespace of this run by name, open handles or not: at exit, after a failure,
// and from the signal thread.
void remove_our_namespaces() {
  for (const auto& name : NetNs::list_named()) {
    if (!name.starts_with(ns_prefix)) continue;
    try {
      NetNs::remove(name);
    } catch (...) {
    }
  }
}

// A namespace of this run, its name removed when the handle goes.
class BenchNs {
 public:
  explicit BenchNs(const std::string& role)
      : name_(ns_prefix + role + "-" + std::to_string(++counter_)), ns_(NetNs::create(name_)) {}
  BenchNs(const BenchNs&) = delete;
  BenchNs& operator=(const BenchNs&) = delete;
  ~BenchNs() {
    try {
      NetNs::remove(name_);
    } catch (...) {
    }
  }
  const NetNs& ns() const { return ns_; }

 private:
  static inline int counter_ = 0;
  std::string name_;
  NetNs ns_;
};

// SIGINT, SIGTERM and SIGHUP are blocked in every thread (threads inherit the mask; exec'd
// iptables binaries get theirs reset) and taken by one thread, which removes the namespaces and
// exits: a signal handler itself could not safely list and unmount them.
void start_signal_thread() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    int signal = 0;
    if (sigwait(&set, &signal) != 0) return;
    std::fprintf(stderr, "\nflatnet-bench-proxy: %s: removing namespaces %s*\n", strsignal(signal),
                 ns_prefix.c_str());
    remove_our_namespaces();
    std::_Exit(128 + signal);
  }).detach();
}

// Waits until the machine is quiet: the kernel destroys a removed namespace (and its 100,000
// rules) in the background, and a measurement that starts meanwhile pays for the previous one.
// Quiet: at least 85% idle over two half-second windows in a row, for at most `timeout` seconds
// (the build machine is shared). Returns the idle share of the last window.
double quiet_timeout_seconds = 20;
double wait_until_quiet() {
  auto sample = [] {
    std::ifstream in("/proc/stat");
    std::string cpu;
    unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0,
                       steal = 0;
    in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
    return std::pair{idle + iowait, user + nice + system + idle + iowait + irq + softirq + steal};
  };
  int quiet = 0;
  double idle_share = 1.0;
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(static_cast<long>(quiet_timeout_seconds * 1000));
  while (quiet < 2 && Clock::now() < deadline) {
    const auto [idle0, total0] = sample();
    ::usleep(500000);
    const auto [idle1, total1] = sample();
    idle_share = total1 > total0 ? double(idle1 - idle0) / double(total1 - total0) : 1.0;
    quiet = idle_share >= 0.85 ? quiet + 1 : 0;
  }
  return idle_share;
}

// --- the workload --------------------------------------------------------------------------------

constexpr std::uint16_t kServicePort = 80;
constexpr std::uint16_t kPodPort = 8080;
const IpAddress kPodIp = IpAddress::parse("10.244.1.2");
const IpAddress kClientIp = IpAddress::parse("10.244.1.3");
const IpAddress kNodeIp = IpAddress::parse("10.244.1.1");

ServicePortName service_name(int index) {
  char name[16];
  std::snprintf(name, sizeof name, "svc-%05d", index);  // map order is index order
  return {"bench", name, "http", flatnet::netmodel::Protocol::tcp};
}

IpAddress cluster_ip(int index) {
  return IpAddress::v4(0x0A600001u + static_cast<std::uint32_t>(index));  // 10.96.0.1 on
}

// `services` service ports with `endpoints` ready endpoints each, at fake addresses from
// 10.250.0.0 on; when `last_endpoint` is set, the last service has that endpoint alone.
// `real`, when given, is the only endpoint of service `real_index`.
ProxyState make_state(int services, int endpoints, std::optional<EndpointInfo> real,
                      int real_index = -1) {
  ProxyState state;
  std::uint32_t next_fake = 0x0AFA0000u;  // 10.250.0.0
  for (int i = 0; i < services; ++i) {
    const auto name = service_name(i);
    ServicePortInfo info;
    info.cluster_ip = cluster_ip(i);
    info.port = kServicePort;
    state.services.emplace(name, info);
    std::vector<EndpointInfo> list;
    if (real && i == real_index) {
      list.push_back(*real);
    } else {
      for (int j = 0; j < endpoints; ++j) {
        EndpointInfo endpoint;
        endpoint.ip = IpAddress::v4(next_fake++);
        endpoint.port = kPodPort;
        endpoint.node_name = "node-2";
        list.push_back(endpoint);
      }
    }
    state.endpoints.emplace(name, std::move(list));
  }
  return state;
}

// The same state after one endpoint of the middle service moved to a new address (its KUBE-SEP
// chain goes, a new one comes, the KUBE-SVC chain is rewritten).
ProxyState with_one_endpoint_changed(const ProxyState& state, int services) {
  ProxyState changed = state;
  auto& list = changed.endpoints.at(service_name(services / 2));
  list.back().ip = IpAddress::parse("10.251.0.1");  // above every fake address: stays sorted
  return changed;
}

ProxyConfig proxy_config(IptablesBackend backend) {
  ProxyConfig config;
  config.iptables_backend = backend;
  config.cluster_cidr = IpPrefix::parse("10.244.0.0/16");
  return config;
}

ipt::RenderOptions render_options(const ProxyConfig& config) {
  ipt::RenderOptions options;
  options.cluster_cidr = config.cluster_cidr;
  options.masquerade_all = config.masquerade_all;
  options.masquerade_bit = config.masquerade_bit;
  return options;
}

std::string backend_name(IptablesBackend backend) {
  return backend == IptablesBackend::legacy ? "legacy" : "nft";
}

// --- the iptables seam, timed --------------------------------------------------------------------

// Where a proxier's sync spent its time in the iptables binaries.
struct IptablesTimes {
  double restore = 0;  // iptables-restore
  double other = 0;    // iptables-save and iptables -S (finding missing jump rules)
  int other_calls = 0;
  std::string first_restore;  // the text of the first restore, as the proxier passed it
};

class TimedIptables final : public ipt::Iptables {
 public:
  TimedIptables(std::unique_ptr<ipt::Iptables> inner, IptablesTimes& times)
      : inner_(std::move(inner)), times_(times) {}
  std::string backend() const override { return inner_->backend(); }
  ipt::CommandResult restore(const std::string& text) override {
    if (times_.first_restore.empty()) times_.first_restore = text;
    const auto start = Clock::now();
    auto result = inner_->restore(text);
    times_.restore += seconds_since(start);
    return result;
  }
  ipt::CommandResult save(const std::string& table) override {
    const auto start = Clock::now();
    auto result = inner_->save(table);
    times_.other += seconds_since(start);
    ++times_.other_calls;
    return result;
  }
  ipt::CommandResult run(const std::vector<std::string>& args) override {
    const auto start = Clock::now();
    auto result = inner_->run(args);
    times_.other += seconds_since(start);
    ++times_.other_calls;
    return result;
  }

 private:
  std::unique_ptr<ipt::Iptables> inner_;
  IptablesTimes& times_;
};

// --- (a) and (b): syncs --------------------------------------------------------------------------

struct ProxierSample {
  double full = 0;
  IptablesTimes full_times;
  double partial = 0;
  IptablesTimes partial_times;
  std::size_t rules = 0;
  std::size_t partial_rules = 0;
};

// A full sync of `state` in a fresh namespace, then the partial sync to `changed`.
ProxierSample measure_proxier(IptablesBackend backend, const ProxyState& state,
                              const ProxyState& changed) {
  const StateChanges from_empty = flatnet::proxy::diff(ProxyState{}, state);
  const StateChanges one_endpoint = flatnet::proxy::diff(state, changed);
  BenchNs node("sync");
  return flatnet::netmodel::run_in(node.ns(), [&] {
    ProxierSample sample;
    IptablesTimes times;
    auto proxier = ipt::make_proxier(
        proxy_config(backend), std::make_unique<TimedIptables>(ipt::make_iptables(backend), times),
        ipt::make_conntrack(), ipt::local_addresses);
    wait_until_quiet();
    auto start = Clock::now();
    const auto full = proxier->sync({state, from_empty, true});
    sample.full = seconds_since(start);
    if (!full.ok)
      throw std::runtime_error("full sync (" + backend_name(backend) + "): " + full.error);
    sample.full_times = std::exchange(times, IptablesTimes{});
    sample.rules = full.rules_written;

    wait_until_quiet();
    start = Clock::now();
    const auto partial = proxier->sync({changed, one_endpoint, false});
    sample.partial = seconds_since(start);
    if (!partial.ok) {
      throw std::runtime_error("partial sync (" + backend_name(backend) + "): " + partial.error);
    }
    if (!partial.partial) {
      throw std::runtime_error("sync after one endpoint change (" + backend_name(backend) +
                               ") was not partial");
    }
    sample.partial_times = times;
    sample.partial_rules = partial.rules_written;
    return sample;
  });
}

// Plain iptables-<backend>-restore of `text`, the binary run directly, in a fresh namespace.
// Without --noflush it first flushes the (empty) tables: the same result, and the least any
// program can spend loading this text. With --noflush it is what a proxy would run without
// flatnet-proxy's listing for iptables-nft (runner.hpp).
double measure_plain(IptablesBackend backend, const std::string& text, bool noflush) {
  BenchNs node(noflush ? "noflush" : "plain");
  const std::string binary = "/usr/sbin/iptables-" + backend_name(backend) + "-restore";
  std::vector<std::string> args = {"--wait"};
  if (noflush) args.insert(args.begin(), "--noflush");
  return flatnet::netmodel::run_in(node.ns(), [&] {
    wait_until_quiet();
    const auto start = Clock::now();
    const auto result = flatnet::netmodel::run_program(binary, {}, text, args);
    const double took = seconds_since(start);
    if (result.status != 0) {
      throw std::runtime_error(binary + (noflush ? " --noflush" : "") + ": " + result.err);
    }
    return took;
  });
}

struct RenderSample {
  double cold = 0;  // a new thread: chain-name hashes not yet cached
  double warm = 0;  // the same state again on that thread
  std::string text;
  std::size_t rules = 0;
};

RenderSample measure_render(const ProxyState& state, const ipt::RenderOptions& options) {
  RenderSample sample;
  std::exception_ptr failure;
  std::thread([&] {
    try {
      auto start = Clock::now();
      auto result = ipt::render(state, options, nullptr, {});
      sample.cold = seconds_since(start);
      start = Clock::now();
      result = ipt::render(state, options, nullptr, {});
      sample.warm = seconds_since(start);
      sample.rules = result.rules;
      sample.text = std::move(result.text);
    } catch (...) {
      failure = std::current_exception();
    }
  }).join();
  if (failure) std::rethrow_exception(failure);
  return sample;
}

struct SyncCell {
  std::vector<double> render_cold, render_warm, full, full_restore, full_other, plain, noflush,
      partial, partial_restore;
  std::size_t rules = 0, partial_rules = 0, text_bytes = 0;
  std::string restored;  // by the proxier's full sync
};

void run_syncs(const std::vector<IptablesBackend>& backends, const std::vector<int>& sizes,
               int endpoints, int rounds, int noflush_peer_max) {
  std::map<std::pair<int, int>, SyncCell> cells;  // (backend, services)
  for (const auto backend : backends) {
    for (const int services : sizes) {
      const ProxyState state = make_state(services, endpoints, std::nullopt);
      const ProxyState changed = with_one_endpoint_changed(state, services);
      const auto options = render_options(proxy_config(backend));
      auto& cell = cells[{static_cast<int>(backend), services}];
      for (int round = 0; round < rounds; ++round) {
        const RenderSample rendered = measure_render(state, options);
        cell.render_cold.push_back(rendered.cold);
        cell.render_warm.push_back(rendered.warm);
        cell.text_bytes = rendered.text.size();
        // Alternate which goes first, so that neither always meets a machine warmed by the other.
        // The peers restore what the proxier's full sync restored (the rendered text and the
        // jump rules it inserts), known from round 1 on, where the proxier goes first.
        ProxierSample proxier;
        double plain = 0, noflush = -1;
        for (int k = 0; k < 2; ++k) {
          if ((k == 0) == (round % 2 == 0)) {
            proxier = measure_proxier(backend, state, changed);
            if (cell.restored.empty()) cell.restored = proxier.full_times.first_restore;
          } else {
            plain = measure_plain(backend, cell.restored, false);
          }
        }
        if (services <= noflush_peer_max) {
          noflush = measure_plain(backend, cell.restored, true);
          cell.noflush.push_back(noflush);
        }
        if (proxier.rules != rendered.rules) {
          throw std::runtime_error("the proxier wrote " + std::to_string(proxier.rules) +
                                   " rules, render() " + std::to_string(rendered.rules));
        }
        cell.full.push_back(proxier.full);
        cell.full_restore.push_back(proxier.full_times.restore);
        cell.full_other.push_back(proxier.full_times.other);
        cell.plain.push_back(plain);
        cell.partial.push_back(proxier.partial);
        cell.partial_restore.push_back(proxier.partial_times.restore);
        cell.rules = proxier.rules;
        cell.partial_rules = proxier.partial_rules;
        std::printf(
            "%-6s %6d services  round %d  render %.3f s (warm %.3f)  proxier full %.3f s "
            "(restore %.3f, save+jumps %.3f in %d calls)  plain restore %.3f s  ratio %.3f  "
            "plain --noflush %.3f s  partial %.3f s (restore %.3f)\n",
            backend_name(backend).c_str(), services, round + 1, rendered.cold, rendered.warm,
            proxier.full, proxier.full_times.restore, proxier.full_times.other,
            proxier.full_times.other_calls, plain, proxier.full / plain, noflush, proxier.partial,
            proxier.partial_times.restore);
        std::fflush(stdout);
      }
    }
  }
  std::printf("\nsyncs, %d endpoints per service, median of %d rounds (seconds):\n", endpoints,
              rounds);
  std::printf("%-7s %8s %8s %7s %7s %8s %8s %8s %8s %7s %8s %8s %9s\n", "backend", "services",
              "rules", "MB", "render", "proxier", "restore", "other", "plain", "ratio", "noflush",
              "partial", "part/full");
  for (const auto& [key, cell] : cells) {
    const double full = median(cell.full), plain = median(cell.plain);
    const double partial = median(cell.partial);
    char noflush[16] = "-";
    if (!cell.noflush.empty()) std::snprintf(noflush, sizeof noflush, "%.3f", median(cell.noflush));
    std::printf("%-7s %8d %8zu %7.1f %7.3f %8.3f %8.3f %8.3f %8.3f %7.3f %8s %8.3f %9.3f\n",
                backend_name(static_cast<IptablesBackend>(key.first)).c_str(), key.second,
                cell.rules, double(cell.text_bytes) / 1e6, median(cell.render_cold), full,
                median(cell.full_restore), median(cell.full_other), plain, full / plain, noflush,
                partial, partial / full);
  }
  std::printf(
      "(render: render() on a new thread; proxier: its whole first sync; restore / other: the "
      "iptables-restore call / iptables-save and the jump rules inside it; plain: the binary "
      "iptables-<backend>-restore run directly, in an empty namespace, on the text the proxier "
      "restored (rendered rules and jump rules), without --noflush (same result); ratio: proxier / "
      "plain, target <= 1.2; noflush: the binary with "
      "--noflush, up to --noflush-peer-max services; partial: the sync after one endpoint "
      "changed, target <= 0.1 of a full sync)\n");
}

// --- (c): connect latency ------------------------------------------------------------------------

std::string errno_text(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

sockaddr_in socket_address(const IpAddress& ip, std::uint16_t port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  std::memcpy(&address.sin_addr, ip.bytes().data(), 4);
  return address;
}

// A TCP listener in the pod namespace that accepts and closes every connection on its own thread,
// counting them.
class Listener {
 public:
  explicit Listener(const NetNs& pod) {
    fd_ = flatnet::netmodel::run_in(pod, [] {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) throw std::runtime_error(errno_text("listener socket"));
      const int one = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      const auto address = socket_address(kPodIp, kPodPort);
      if (::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
          ::listen(fd, 4096) != 0) {
        const std::string error = errno_text("listen on 10.244.1.2:8080");
        ::close(fd);
        throw std::runtime_error(error);
      }
      return fd;
    });
    thread_ = std::thread([this] {
      for (;;) {
        const int connection = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (connection < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          return;  // shut down
        }
        ::close(connection);
        accepted_.fetch_add(1);
      }
    });
  }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener() {
    ::shutdown(fd_, SHUT_RDWR);  // wakes accept()
    thread_.join();
    ::close(fd_);
  }
  long accepted() const { return accepted_.load(); }

 private:
  int fd_ = -1;
  std::atomic<long> accepted_{0};
  std::thread thread_;
};

// One TCP connect from the calling thread's namespace; returns its duration in seconds.
double time_connect(const IpAddress& ip, std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(errno_text("client socket"));
  const auto address = socket_address(ip, port);
  const auto start = Clock::now();
  const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address);
  const double took = seconds_since(start);
  if (rc != 0) {
    const std::string error =
        errno_text("connect to " + ip.to_string() + ":" + std::to_string(port));
    ::close(fd);
    throw std::runtime_error(error);
  }
  ::close(fd);
  return took;
}

// A pod namespace wired into the node's bridge: veth `host_side` in the node, eth0 in the pod
// with `ip`/24 and a default route through the node.
void attach_pod(Netlink& node, int bridge, const NetNs& pod, const std::string& host_side,
                const IpAddress& ip) {
  flatnet::netmodel::VethSpec veth;
  veth.name = host_side;
  veth.peer_name = "eth0";
  veth.peer_ns = &pod;
  veth.master = bridge;
  veth.up = true;
  node.add_veth(veth);
  auto inside = Netlink::open(pod);
  const int eth0 = inside.link("eth0").index;
  inside.set_up(eth0);
  inside.add_address(eth0, IpPrefix(ip, 24));
  flatnet::netmodel::Route route;
  route.gateway = kNodeIp;
  inside.add_route(route);
}

struct ConnectCell {
  double service = 0, pod = 0;
};

ConnectCell measure_connects(IptablesBackend backend, int services, int endpoints, int connects) {
  BenchNs node("node"), pod("pod"), client("client");
  auto netlink = Netlink::open(node.ns());
  netlink.add_bridge({"flat0"});
  const int bridge = netlink.link("flat0").index;
  netlink.set_up(bridge);
  netlink.add_address(bridge, IpPrefix(kNodeIp, 24));
  attach_pod(netlink, bridge, pod.ns(), "vpod", kPodIp);
  attach_pod(netlink, bridge, client.ns(), "vclient", kClientIp);
  flatnet::netmodel::write_sysctl(node.ns(), "net.ipv4.ip_forward", "1");
  // Pod to pod through the bridge crosses the node's iptables only with br_netfilter on, which
  // the reply to a ClusterIP connection needs (it must be un-DNATed).
  flatnet::netmodel::write_sysctl(node.ns(), "net.bridge.bridge-nf-call-iptables", "1");

  EndpointInfo real;
  real.ip = kPodIp;
  real.port = kPodPort;
  real.node_name = "node-1";
  real.is_local = true;
  // KUBE-SERVICES holds its rules sorted by target, last name first: the service whose
  // KUBE-SVC chain name sorts first is the last rule, the one every new connection reaches last.
  int last = 0;
  std::string first_name = ipt::svc_chain(service_name(0));
  for (int i = 1; i < services; ++i) {
    if (auto name = ipt::svc_chain(service_name(i)); name < first_name) {
      first_name = std::move(name);
      last = i;
    }
  }
  const ProxyState state = make_state(services, endpoints, real, last);
  {
    const auto text = ipt::render(state, render_options(proxy_config(backend)), nullptr, {}).text;
    const auto rule = text.rfind("\n-A KUBE-SERVICES -d ");
    const auto expected = "-d " + cluster_ip(last).to_string() + "/32 ";
    if (rule == std::string::npos || text.compare(rule + 18, expected.size(), expected) != 0) {
      throw std::runtime_error("the pod's service is not the last rule of KUBE-SERVICES");
    }
  }
  flatnet::netmodel::run_in(node.ns(), [&] {
    auto proxier = ipt::make_proxier(proxy_config(backend), ipt::make_iptables(backend),
                                     ipt::make_conntrack(), ipt::local_addresses);
    const auto outcome = proxier->sync({state, flatnet::proxy::diff(ProxyState{}, state), true});
    if (!outcome.ok) {
      throw std::runtime_error("sync of " + std::to_string(services) + " services (" +
                               backend_name(backend) + "): " + outcome.error);
    }
  });

  Listener listener(pod.ns());
  const IpAddress last_service = cluster_ip(last);
  constexpr int kWarmup = 10;
  std::vector<double> via_service, direct;
  wait_until_quiet();
  flatnet::netmodel::run_in(client.ns(), [&] {
    for (int i = 0; i < kWarmup; ++i) {  // neighbour entries, caches
      time_connect(last_service, kServicePort);
      time_connect(kPodIp, kPodPort);
    }
    for (int i = 0; i < connects; ++i) {
      // Interleaved, alternating which goes first, so both see the same machine.
      if (i % 2 == 0) {
        via_service.push_back(time_connect(last_service, kServicePort));
        direct.push_back(time_connect(kPodIp, kPodPort));
      } else {
        direct.push_back(time_connect(kPodIp, kPodPort));
        via_service.push_back(time_connect(last_service, kServicePort));
      }
    }
  });
  // Every connection, through the service too, must have reached the pod's listener.
  const long expected = 2L * (kWarmup + connects);
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (listener.accepted() < expected && Clock::now() < deadline)
    ::usleep(10000);
  if (listener.accepted() != expected) {
    throw std::runtime_error("the pod accepted " + std::to_string(listener.accepted()) +
                             " connections, expected " + std::to_string(expected));
  }
  return {median(via_service), median(direct)};
}

void run_connects(const std::vector<IptablesBackend>& backends, const std::vector<int>& sizes,
                  int endpoints, int connects) {
  std::printf(
      "\nconnect latency to the last service's ClusterIP and to the pod directly, median "
      "of %d connects each (microseconds):\n",
      connects);
  std::printf("%-7s %8s %10s %10s %7s\n", "backend", "services", "service", "pod", "ratio");
  for (const auto backend : backends) {
    for (const int services : sizes) {
      const auto cell = measure_connects(backend, services, endpoints, connects);
      std::printf("%-7s %8d %10.1f %10.1f %7.3f\n", backend_name(backend).c_str(), services,
                  cell.service * 1e6, cell.pod * 1e6, cell.service / cell.pod);
      std::fflush(stdout);
    }
  }
}

// --- command line --------------------------------------------------------------------------------

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');) {
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

std::vector<int> parse_sizes(const std::string& text, const std::string& flag) {
  std::vector<int> sizes;
  for (const auto& part : split(text)) {
    std::size_t used = 0;
    const int value = std::stoi(part, &used);
    // Cluster IPs come from 10.96.0.0/16 and fake endpoints from 10.250.0.0/16.
    if (used != part.size() || value < 1 || value > 13000) {
      throw std::invalid_argument(flag + ": \"" + part + "\" is not a count of 1-13000");
    }
    sizes.push_back(value);
  }
  if (sizes.empty()) throw std::invalid_argument(flag + " is empty");
  return sizes;
}

std::vector<IptablesBackend> parse_backends(const std::string& text) {
  std::vector<IptablesBackend> backends;
  for (const auto& part : split(text)) {
    if (part == "nft") {
      backends.push_back(IptablesBackend::nft);
    } else if (part == "legacy") {
      backends.push_back(IptablesBackend::legacy);
    } else {
      throw std::invalid_argument("--backends: \"" + part + "\" is not nft or legacy");
    }
  }
  if (backends.empty()) throw std::invalid_argument("--backends is empty");
  return backends;
}

constexpr const char* kUsage =
    "usage: sudo flatnet-bench-proxy [--rounds R (3)] [--services LIST (1000,5000,10000)]\n"
    "           [--backends LIST (nft,legacy)] [--endpoints N (5)]\n"
    "           [--connect-services LIST (10,10000)] [--connects N (200)]\n"
    "           [--only sync|connect] [--quiet-timeout SECONDS (20)]\n"
    "           [--noflush-peer-max N (2000): also time plain --noflush up to N services]\n"
    "       flatnet-bench-proxy --write-ruleset PATH [--services N] [--endpoints N]\n";

}  // namespace

int main(int argc, char** argv) {
  int rounds = 3, endpoints = 5, connects = 200, noflush_peer_max = 2000;
  std::vector<int> sizes = {1000, 5000, 10000}, connect_sizes = {10, 10000};
  std::vector<IptablesBackend> backends = {IptablesBackend::nft, IptablesBackend::legacy};
  std::string only, ruleset_path;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
      return argv[++i];
    };
    try {
      if (arg == "--rounds") {
        rounds = std::stoi(next());
      } else if (arg == "--services") {
        sizes = parse_sizes(next(), arg);
      } else if (arg == "--backends") {
        backends = parse_backends(next());
      } else if (arg == "--endpoints") {
        endpoints = std::stoi(next());
      } else if (arg == "--connect-services") {
        connect_sizes = parse_sizes(next(), arg);
      } else if (arg == "--connects") {
        connects = std::stoi(next());
      } else if (arg == "--only") {
        only = next();
        if (only != "sync" && only != "connect") {
          throw std::invalid_argument("\"" + only + "\" is not sync or connect");
        }
      } else if (arg == "--noflush-peer-max") {
        noflush_peer_max = std::stoi(next());
      } else if (arg == "--write-ruleset") {
        ruleset_path = next();
      } else if (arg == "--quiet-timeout") {
        quiet_timeout_seconds = std::stod(next());
      } else if (arg == "--help" || arg == "-h") {
        std::cout << kUsage;
        return 0;
      } else {
        throw std::invalid_argument("unknown argument (see --help)");
      }
    } catch (const std::exception& e) {
      std::cerr << "flatnet-bench-proxy: " << arg << ": " << e.what() << "\n";
      return 2;
    }
  }
  if (rounds < 1 || endpoints < 1 || endpoints > 5 || connects < 1) {
    std::cerr << "flatnet-bench-proxy: --rounds and --connects must be at least 1, --endpoints "
                 "1-5\n";
    return 2;
  }
  if (!ruleset_path.empty()) {
    // The full ruleset of the first --services size, for running iptables-restore by hand.
    const auto state = make_state(sizes.front(), endpoints, std::nullopt);
    const auto text =
        ipt::render(state, render_options(proxy_config(IptablesBackend::nft)), nullptr, {}).text;
    std::ofstream out(ruleset_path);
    out << text;
    if (!out.flush()) {
      std::cerr << "flatnet-bench-proxy: write " << ruleset_path << ": " << std::strerror(errno)
                << "\n";
      return 1;
    }
    return 0;
  }
  if (::geteuid() != 0) {
    std::cerr << "flatnet-bench-proxy must run as root (it creates network namespaces)\n";
    return 1;
  }
  ns_prefix = "flatnet-bench-proxy-" + std::to_string(::getpid()) + "-";
  start_signal_thread();
  int status = 0;
  try {
    if (only != "connect") run_syncs(backends, sizes, endpoints, rounds, noflush_peer_max);
    if (only != "sync") run_connects(backends, connect_sizes, endpoints, connects);
  } catch (const std::exception& e) {
    std::cerr << "flatnet-bench-proxy: " << e.what() << "\n";
    status = 1;
  }
  remove_our_namespaces();
  return status;
}
