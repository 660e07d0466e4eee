#pragma once

// Socket addresses as netexec writes them (the body of /clientip, Go's net.Addr text).

#include <sys/socket.h>

#include <string>

namespace flatnet::netexec {

// "10.244.1.5:43210" for IPv4 and for IPv4-mapped IPv6 (a dual-stack socket's view of an IPv4
// client); "[fd00::5]:43210" for IPv6, with "%<interface>" after a link-local address that has a
// scope. Empty for other families.
std::string format_endpoint(const sockaddr* address, socklen_t length);

}  // namespace flatnet::netexec
