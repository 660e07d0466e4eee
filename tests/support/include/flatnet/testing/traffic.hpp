#pragma once

// Real traffic between namespaces for tests. Sockets are created inside a namespace (run_in)
// and stay bound to it, so the exchanges themselves run on the test's own thread.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "flatnet/netmodel/address.hpp"
#include "flatnet/netmodel/netns.hpp"

namespace flatnet::testing {

class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& other) noexcept : fd_(other.release()) {}
  Socket& operator=(Socket&& other) noexcept;
  ~Socket();
  int fd() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_ = -1;
};

// What one request/response exchange achieved.
struct Exchange {
  bool ok = false;
  std::string error;                               // why it failed, when it did
  std::string reply;                               // what the client received
  std::optional<netmodel::IpAddress> seen_client;  // the source address the server saw
};

// A TCP listener (or UDP socket) bound to address:port inside `ns`.
Socket listen_tcp(const netmodel::NetNs& ns, const netmodel::IpAddress& address,
                  std::uint16_t port);
Socket bind_udp(const netmodel::NetNs& ns, const netmodel::IpAddress& address, std::uint16_t port);

// Connects from `client_ns` to server:port, sends `message`, lets `listener` accept and answer
// "<message> from <client address>", and reads the answer back.
Exchange tcp_exchange(const netmodel::NetNs& client_ns, const Socket& listener,
                      const netmodel::IpAddress& server, std::uint16_t port,
                      const std::string& message,
                      std::chrono::milliseconds timeout = std::chrono::milliseconds(3000));

// The same over one UDP datagram each way, `server_socket` from bind_udp().
Exchange udp_exchange(const netmodel::NetNs& client_ns, const Socket& server_socket,
                      const netmodel::IpAddress& server, std::uint16_t port,
                      const std::string& message,
                      std::chrono::milliseconds timeout = std::chrono::milliseconds(3000));

}  // namespace flatnet::testing
