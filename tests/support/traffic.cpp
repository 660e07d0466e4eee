#include "flatnet/testing/traffic.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "flatnet/netmodel/error.hpp"
#include "flatnet/netmodel/socket_address.hpp"

namespace flatnet::testing {
namespace {

using netmodel::IpAddress;

using SockAddr = netmodel::SocketAddress;

SockAddr to_sockaddr(const IpAddress& address, std::uint16_t port) {
  return SockAddr::of(address, port);
}

IpAddress from_sockaddr(const sockaddr_storage& s) {
  return netmodel::SocketAddress::address_of(s);
}

Socket make_bound(const netmodel::NetNs& ns, const IpAddress& address, std::uint16_t port,
                  int type) {
  return netmodel::run_in(ns, [&] {
    Socket s(::socket(address.af(), type | SOCK_CLOEXEC, 0));
    if (s.fd() < 0) netmodel::throw_errno(errno, "socket");
    const int one = 1;
    ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    const SockAddr sa = to_sockaddr(address, port);
    if (::bind(s.fd(), sa.get(), sa.length) != 0) {
      netmodel::throw_errno(errno, "bind " + address.to_string() + ":" + std::to_string(port));
    }
    if (type == SOCK_STREAM && ::listen(s.fd(), 16) != 0) netmodel::throw_errno(errno, "listen");
    return s;
  });
}

// Waits for `events` on fd; false on timeout.
bool wait_for(int fd, short events, std::chrono::milliseconds timeout) {
  pollfd p{fd, events, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
}

std::string errno_text(const std::string& what, int err) {
  return what + ": " + std::strerror(err);
}

}  // namespace

Socket& Socket::operator=(Socket&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

Socket::~Socket() {
  if (fd_ >= 0) ::close(fd_);
}

Socket listen_tcp(const netmodel::NetNs& ns, const IpAddress& address, std::uint16_t port) {
  return make_bound(ns, address, port, SOCK_STREAM);
}

Socket bind_udp(const netmodel::NetNs& ns, const IpAddress& address, std::uint16_t port) {
  return make_bound(ns, address, port, SOCK_DGRAM);
}

Exchange tcp_exchange(const netmodel::NetNs& client_ns, const Socket& listener,
                      const IpAddress& server, std::uint16_t port, const std::string& message,
                      std::chrono::milliseconds timeout) {
  Exchange result;
  int socket_errno = 0;
  Socket client = netmodel::run_in(client_ns, [&] {
    Socket s(::socket(server.af(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    socket_errno = errno;
    return s;
  });
  if (client.fd() < 0) return {false, errno_text("client socket", socket_errno), {}, {}};
  const SockAddr sa = to_sockaddr(server, port);
  if (::connect(client.fd(), sa.get(), sa.length) != 0 && errno != EINPROGRESS) {
    result.error = errno_text("connect", errno);
    return result;
  }
  if (!wait_for(client.fd(), POLLOUT, timeout)) {
    result.error = "connect: timed out";
    return result;
  }
  int so_error = 0;
  socklen_t len = sizeof so_error;
  ::getsockopt(client.fd(), SOL_SOCKET, SO_ERROR, &so_error, &len);
  if (so_error != 0) {
    result.error = errno_text("connect", so_error);
    return result;
  }
  if (!wait_for(listener.fd(), POLLIN, timeout)) {
    result.error = "accept: nothing arrived at the listener";
    return result;
  }
  sockaddr_storage peer{};
  socklen_t peer_len = sizeof peer;
  Socket served(
      ::accept4(listener.fd(), reinterpret_cast<sockaddr*>(&peer), &peer_len, SOCK_CLOEXEC));
  if (served.fd() < 0) {
    result.error = errno_text("accept", errno);
    return result;
  }
  result.seen_client = from_sockaddr(peer);
  ::send(client.fd(), message.data(), message.size(), MSG_NOSIGNAL);
  char buffer[512];
  if (!wait_for(served.fd(), POLLIN, timeout)) {
    result.error = "server: request did not arrive";
    return result;
  }
  const ssize_t n = ::recv(served.fd(), buffer, sizeof buffer, 0);
  const std::string answer = std::string(buffer, n > 0 ? static_cast<std::size_t>(n) : 0) +
                             " from " + result.seen_client->to_string();
  ::send(served.fd(), answer.data(), answer.size(), MSG_NOSIGNAL);
  if (!wait_for(client.fd(), POLLIN, timeout)) {
    result.error = "client: no answer";
    return result;
  }
  const ssize_t m = ::recv(client.fd(), buffer, sizeof buffer, 0);
  result.reply.assign(buffer, m > 0 ? static_cast<std::size_t>(m) : 0);
  result.ok = result.reply == answer;
  if (!result.ok) result.error = "client: unexpected answer \"" + result.reply + "\"";
  return result;
}

Exchange udp_exchange(const netmodel::NetNs& client_ns, const Socket& server_socket,
                      const IpAddress& server, std::uint16_t port, const std::string& message,
                      std::chrono::milliseconds timeout) {
  Exchange result;
  Socket client = netmodel::run_in(
      client_ns, [&] { return Socket(::socket(server.af(), SOCK_DGRAM | SOCK_CLOEXEC, 0)); });
  if (client.fd() < 0) return {false, errno_text("client socket", errno), {}, {}};
  const SockAddr sa = to_sockaddr(server, port);
  if (::sendto(client.fd(), message.data(), message.size(), 0, sa.get(), sa.length) < 0) {
    result.error = errno_text("sendto", errno);
    return result;
  }
  if (!wait_for(server_socket.fd(), POLLIN, timeout)) {
    result.error = "server: datagram did not arrive";
    return result;
  }
  char buffer[512];
  sockaddr_storage peer{};
  socklen_t peer_len = sizeof peer;
  const ssize_t n = ::recvfrom(server_socket.fd(), buffer, sizeof buffer, 0,
                               reinterpret_cast<sockaddr*>(&peer), &peer_len);
  result.seen_client = from_sockaddr(peer);
  const std::string answer = std::string(buffer, n > 0 ? static_cast<std::size_t>(n) : 0) +
                             " from " + result.seen_client->to_string();
  ::sendto(server_socket.fd(), answer.data(), answer.size(), 0,
           reinterpret_cast<const sockaddr*>(&peer), peer_len);
  if (!wait_for(client.fd(), POLLIN, timeout)) {
    result.error = "client: no answer";
    return result;
  }
  const ssize_t m = ::recv(client.fd(), buffer, sizeof buffer, 0);
  result.reply.assign(buffer, m > 0 ? static_cast<std::size_t>(m) : 0);
  result.ok = result.reply == answer;
  if (!result.ok) result.error = "client: unexpected answer \"" + result.reply + "\"";
  return result;
}

}  // namespace flatnet::testing
