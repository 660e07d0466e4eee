#pragma once

// The client side of /dial: blocking exchanges with a deadline each, meant to run on a thread
// of their own (the server loop never calls them). They open their sockets in the calling
// thread's network namespace, which is the pod's.

#include <chrono>
#include <string>
#include <variant>

#include "flatnet/netexec/router.hpp"

namespace flatnet::netexec {

inline constexpr std::chrono::milliseconds kDialTimeout{5000};

// One exchange: the body (http) or datagram (udp) received, or an error that says what failed
// ("dial tcp 10.0.0.2:9999: connect: connection refused", "... no reply within 5000 ms").
struct DialAnswer {
  bool ok = false;
  std::string text;  // the answer when ok, else the error
};

// One exchange with the target of `request`; never throws.
DialAnswer dial_once(const DialRequest& request, std::chrono::milliseconds timeout);

// `request.tries` exchanges, one after another.
DialResult dial(const DialRequest& request, std::chrono::milliseconds timeout = kDialTimeout);

}  // namespace flatnet::netexec
