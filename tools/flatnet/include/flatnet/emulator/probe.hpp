#pragma once

// Probes: many short request/response exchanges with flatnet-netexec workloads, run
// concurrently from one thread. Each probe's socket is created inside its source namespace (a
// socket stays bound to the namespace it was made in), then all of them are driven by one
// epoll loop, so thousands of pairs cost about as much time as the slowest one.
//
// TCP: connect, send `GET /clientip HTTP/1.1`, read the whole answer; netexec replies 200 with
// the body "IP:PORT" of the client it saw. UDP: one datagram "clientip" on a connected socket,
// answered with "IP:PORT"; sent again up to `udp_attempts` times while no answer came.
//
// The engine runs on a thread of its own that enters each source's namespace in turn (the
// caller's thread never changes namespace). Probes are started grouped by source, so each
// namespace is entered about once per run.
//
// Kernel quirk for UDP: "refused" relies on the ICMP port unreachable, which the server's
// namespace rate-limits per destination (net.ipv4.icmp_ratelimit, a burst of about 6 and then
// one a second): many UDP probes from one client to closed ports see `timeout` after the first
// few `refused`.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flatnet/netmodel/address.hpp"
#include "flatnet/netmodel/netns.hpp"

namespace flatnet::emulator {

enum class Protocol { tcp, udp };
std::string_view to_string(Protocol protocol);  // "TCP", "UDP"

struct ProbeSource {
  std::string name{};                      // for messages: a pod or node name
  const netmodel::NetNs* netns = nullptr;  // where the client socket is created
};

struct ProbeTarget {
  std::string name{};
  netmodel::IpAddress address{};
  std::uint16_t port = 0;
  Protocol protocol = Protocol::tcp;
};

// One exchange: indexes into the sources and targets.
struct Probe {
  std::size_t source = 0;
  std::size_t target = 0;
};

enum class ProbeOutcome {
  ok,           // a well-formed answer came back
  refused,      // ECONNREFUSED: a RST, or ICMP port unreachable for UDP (nothing listening)
  unreachable,  // EHOSTUNREACH / ENETUNREACH / EADDRNOTAVAIL / ENETDOWN / EPERM ...: see `error`
  timeout,      // no answer within the timeout
  reset,        // the connection was reset or closed before a whole answer arrived
  bad_reply,    // an answer that is not netexec's (wrong status, unparsable client address)
  error,        // the socket could not even be created (EMFILE, no namespace, ...): see `error`
};
std::string_view to_string(ProbeOutcome outcome);

struct ProbeResult {
  ProbeOutcome outcome = ProbeOutcome::error;
  int error = 0;  // the errno behind refused, unreachable, reset or error; 0 otherwise
  // The client address the server reported (outcome ok). An IPv4-mapped IPv6 address
  // ("[::ffff:10.0.0.1]:port", from a dual-stack listener) is reported as the IPv4 address.
  std::optional<netmodel::IpAddress> seen_client{};
  std::string reply{};  // the body (TCP) or datagram (UDP) received, truncated to 256 bytes
  // What was wrong, when the outcome alone does not say: for bad_reply the status line or the
  // unparsable text, for error the step that failed, for timeout how far the exchange got.
  std::string detail{};
  // From the probe's start to its end; for a timeout, the timeout itself.
  std::chrono::microseconds elapsed{0};
  // Lower-case text: "connection refused", "no route to host (EHOSTUNREACH)", "no answer within
  // 2000 ms", "unexpected answer: HTTP/1.1 404 Not Found", ...
  std::string describe() const;
};

struct ProbeOptions {
  std::chrono::milliseconds timeout{2000};  // per probe, from its start
  std::size_t max_in_flight = 512;          // sockets open at once (stays under RLIMIT_NOFILE)
  int udp_attempts = 3;                     // datagrams sent, spread over the timeout
};

// Runs every probe and returns one result per probe, in the same order. Never throws for
// conditions of the network: a source without a namespace handle (nullptr or a moved-from
// NetNs) or a socket that cannot be created makes outcome error for its probes. Throws
// std::system_error only when the machinery itself fails (epoll, entering a namespace), and
// std::out_of_range for a probe whose source or target index is out of range. Raises the soft
// RLIMIT_NOFILE (up to the hard limit) when max_in_flight needs more descriptors; when the limit
// still does not allow max_in_flight, fewer probes run at once.
std::vector<ProbeResult> run_probes(const std::vector<ProbeSource>& sources,
                                    const std::vector<ProbeTarget>& targets,
                                    const std::vector<Probe>& probes,
                                    const ProbeOptions& options = {});

}  // namespace flatnet::emulator
