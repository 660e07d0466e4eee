#pragma once

// The netexec server: every HTTP and UDP port on all addresses, served by one epoll loop on the
// calling thread (only /dial exchanges run on short-lived threads of their own).
//
// Each port is one dual-stack socket bound to [::] (IPV6_V6ONLY off), or to 0.0.0.0 when the
// namespace has no IPv6. UDP replies leave from the address the datagram was sent to
// (IPV6_PKTINFO / IP_PKTINFO), so a pod with several addresses answers from the one targeted.

#include "flatnet/netexec/options.hpp"

namespace flatnet::netexec {

// Binds every port of `options` (throwing std::system_error naming the port when one cannot be
// bound), signals readiness on options.ready_fd, logs one line to stderr, and serves until
// SIGTERM or SIGINT (returns 0) or /exit?code=N (returns N). Blocks SIGTERM, SIGINT and SIGPIPE
// in the calling thread; call it from a single-threaded program.
int serve(const Options& options);

}  // namespace flatnet::netexec
