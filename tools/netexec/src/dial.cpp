#include "flatnet/netexec/dial.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "flatnet/netexec/http.hpp"
#include "flatnet/netmodel/address.hpp"

namespace flatnet::netexec {
namespace {

using Clock = std::chrono::steady_clock;

// The most a /dial exchange reads back.
constexpr std::size_t kMaxAnswerBytes = 1 << 20;

// "connection refused": the errno text as Go writes it, lower case.
std::string errno_text(int err) {
  std::string text = std::generic_category().message(err);
  if (!text.empty() && text[0] >= 'A' && text[0] <= 'Z') text[0] = static_cast<char>(text[0] + 32);
  return text;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

struct Target {
  sockaddr_storage address{};
  socklen_t length = 0;
};

// The address of host:port; an error message when the name does not resolve.
std::variant<Target, std::string> resolve(const DialRequest& request, int socktype) {
  Target target;
  if (const auto ip = netmodel::IpAddress::try_parse(request.host)) {
    const auto bytes = ip->bytes();
    if (ip->is_v4()) {
      auto* in = reinterpret_cast<sockaddr_in*>(&target.address);
      in->sin_family = AF_INET;
      in->sin_port = htons(request.port);
      std::memcpy(&in->sin_addr, bytes.data(), 4);
      target.length = sizeof(sockaddr_in);
    } else {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&target.address);
      in6->sin6_family = AF_INET6;
      in6->sin6_port = htons(request.port);
      std::memcpy(&in6->sin6_addr, bytes.data(), 16);
      target.length = sizeof(sockaddr_in6);
    }
    return target;
  }
  addrinfo hints{};
  hints.ai_socktype = socktype;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(request.port);
  const int rc = ::getaddrinfo(request.host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0) {
    return "lookup " + request.host + ": " +
           (rc == EAI_SYSTEM ? errno_text(errno) : std::string(::gai_strerror(rc)));
  }
  std::memcpy(&target.address, found->ai_addr, found->ai_addrlen);
  target.length = found->ai_addrlen;
  ::freeaddrinfo(found);
  return target;
}

// "10.0.0.2:8080", "[fd00::2]:8080", "name:8080"
std::string host_port(const DialRequest& request) {
  const bool v6 = request.host.find(':') != std::string::npos;
  return (v6 ? "[" + request.host + "]" : request.host) + ":" + std::to_string(request.port);
}

// Waits until `fd` reports `events`: 0, ETIMEDOUT at `deadline`, or the poll errno.
int wait_for(int fd, short events, Clock::time_point deadline) {
  while (true) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return ETIMEDOUT;
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left) + 1);
    if (n > 0) return 0;
    if (n < 0 && errno != EINTR) return errno;
  }
}

std::string timeout_text(std::chrono::milliseconds timeout) {
  return std::to_string(timeout.count()) + " ms";
}

DialAnswer failure(std::string text) {
  return {false, std::move(text)};
}

DialAnswer dial_http(const DialRequest& request, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const std::string where = host_port(request);
  const std::string_view path = !request.request.empty() && request.request.front() == '/'
                                    ? std::string_view(request.request).substr(1)
                                    : std::string_view(request.request);
  const std::string url = "http://" + where + "/" + std::string(path);
  auto target = resolve(request, SOCK_STREAM);
  if (auto* error = std::get_if<std::string>(&target)) return failure("dial tcp " + *error);
  const Target& to = std::get<Target>(target);

  Fd fd(::socket(to.address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return failure("dial tcp " + where + ": socket: " + errno_text(errno));
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&to.address), to.length) < 0) {
    if (errno != EINPROGRESS) {
      return failure("dial tcp " + where + ": connect: " + errno_text(errno));
    }
    if (const int err = wait_for(fd.get(), POLLOUT, deadline); err != 0) {
      return failure(
          "dial tcp " + where + ": connect: " +
          (err == ETIMEDOUT ? "timeout after " + timeout_text(timeout) : errno_text(err)));
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return failure("dial tcp " + where + ": connect: " + errno_text(err));
  }

  const std::string message = "GET /" + encode_target(path) + " HTTP/1.1\r\nHost: " + where +
                              "\r\nUser-Agent: flatnet-netexec/" FLATNET_VERSION
                              "\r\nConnection: close\r\n\r\n";
  std::size_t sent = 0;
  while (sent < message.size()) {
    const ssize_t n = ::send(fd.get(), message.data() + sent, message.size() - sent, MSG_NOSIGNAL);
    if (n >= 0) {
      sent += static_cast<std::size_t>(n);
    } else if (errno == EAGAIN) {
      if (const int err = wait_for(fd.get(), POLLOUT, deadline); err != 0) {
        return failure(
            "GET " + url + ": write: " +
            (err == ETIMEDOUT ? "timeout after " + timeout_text(timeout) : errno_text(err)));
      }
    } else if (errno != EINTR) {
      return failure("GET " + url + ": write: " + errno_text(errno));
    }
  }

  std::string input;
  char buffer[16 * 1024];
  bool eof = false;
  while (true) {
    const ParsedResponse response = parse_response(input, eof);
    if (response.status == ParsedResponse::Status::complete) return {true, response.body};
    if (response.status == ParsedResponse::Status::error) {
      return failure("GET " + url + ": " + response.error);
    }
    if (input.size() > kMaxAnswerBytes) {
      return failure("GET " + url + ": response larger than " + std::to_string(kMaxAnswerBytes) +
                     " bytes");
    }
    const ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
    if (n > 0) {
      input.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0) {
      eof = true;
    } else if (errno == EAGAIN) {
      if (const int err = wait_for(fd.get(), POLLIN, deadline); err != 0) {
        return failure("GET " + url + ": " +
                       (err == ETIMEDOUT ? "no complete response within " + timeout_text(timeout)
                                         : "read: " + errno_text(err)));
      }
    } else if (errno != EINTR) {
      return failure("GET " + url + ": read: " + errno_text(errno));
    }
  }
}

DialAnswer dial_udp(const DialRequest& request, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const std::string where = "udp " + host_port(request);
  auto target = resolve(request, SOCK_DGRAM);
  if (auto* error = std::get_if<std::string>(&target)) return failure("dial udp " + *error);
  const Target& to = std::get<Target>(target);

  Fd fd(::socket(to.address.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return failure(where + ": socket: " + errno_text(errno));
  // Connected: errors from ICMP (port unreachable: "connection refused") reach this socket.
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&to.address), to.length) < 0) {
    return failure(where + ": connect: " + errno_text(errno));
  }
  if (::send(fd.get(), request.request.data(), request.request.size(), MSG_NOSIGNAL) < 0) {
    return failure(where + ": write: " + errno_text(errno));
  }
  std::string reply(64 * 1024, '\0');
  while (true) {
    if (const int err = wait_for(fd.get(), POLLIN, deadline); err != 0) {
      return failure(where + ": " +
                     (err == ETIMEDOUT ? "no reply within " + timeout_text(timeout)
                                       : "read: " + errno_text(err)));
    }
    const ssize_t n = ::recv(fd.get(), reply.data(), reply.size(), 0);
    if (n >= 0) {
      reply.resize(static_cast<std::size_t>(n));
      return {true, std::move(reply)};
    }
    if (errno != EAGAIN && errno != EINTR) return failure(where + ": read: " + errno_text(errno));
  }
}

}  // namespace

DialAnswer dial_once(const DialRequest& request, std::chrono::milliseconds timeout) {
  try {
    return request.protocol == DialProtocol::http ? dial_http(request, timeout)
                                                  : dial_udp(request, timeout);
  } catch (const std::exception& e) {  // std::bad_alloc and the like
    return failure(e.what());
  }
}

DialResult dial(const DialRequest& request, std::chrono::milliseconds timeout) {
  DialResult result;
  for (int i = 0; i < request.tries; ++i) {
    DialAnswer answer = dial_once(request, timeout);
    (answer.ok ? result.responses : result.errors).push_back(std::move(answer.text));
  }
  return result;
}

}  // namespace flatnet::netexec
