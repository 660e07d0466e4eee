#include "flatnet/proxy/http.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "flatnet/netmodel/error.hpp"
#include "flatnet/netmodel/socket_address.hpp"
#include "flatnet/proxy/log.hpp"

namespace flatnet::proxy {
namespace {

using Clock = std::chrono::steady_clock;

std::string address_text(const netmodel::IpAddress& address, std::uint16_t port) {
  const std::string host = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
  return host + ":" + std::to_string(port);
}

std::string lower(std::string s) {
  for (char& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return std::string(s);
}

// The end of the header block ("\r\n\r\n", or "\n\n" from lenient clients), npos if not yet.
std::size_t header_end(const std::string& data, std::size_t& terminator) {
  const auto crlf = data.find("\r\n\r\n");
  const auto lf = data.find("\n\n");
  if (crlf != std::string::npos && (lf == std::string::npos || crlf < lf)) {
    terminator = 4;
    return crlf;
  }
  terminator = 2;
  return lf;
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

struct HttpServer::Connection {
  int fd = -1;
  std::shared_ptr<const HttpHandler> handler{};
  netmodel::IpAddress peer{};
  Clock::time_point deadline{};
  std::string in{};
  std::string out{};
  std::size_t sent = 0;
  bool writing = false;
  bool done = false;
};

std::string http_reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Status " + std::to_string(status);
  }
}

HttpServer::HttpServer(HttpLimits limits) : limits_(limits) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) netmodel::throw_errno(errno, "eventfd for the HTTP server");
  thread_ = std::thread([this] { run(); });
}

HttpServer::~HttpServer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  thread_.join();
  for (auto& [id, listener] : listeners_)
    close_fd(listener.fd);
  for (auto& connection : connections_)
    close_fd(connection->fd);
  close_fd(wake_fd_);
}

HttpServer::Listener HttpServer::listen(const netmodel::IpAddress& address, std::uint16_t port,
                                        HttpHandler handler) {
  const std::string where = "listen on " + address_text(address, port);
  int fd = ::socket(address.af(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) netmodel::throw_errno(errno, where);
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  const auto socket_address = netmodel::SocketAddress::of(address, port);
  if (::bind(fd, socket_address.get(), socket_address.length) != 0 || ::listen(fd, 128) != 0) {
    const int err = errno;
    ::close(fd);
    netmodel::throw_errno(err, where);
  }
  sockaddr_storage bound{};
  socklen_t length = sizeof bound;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length);
  const std::uint16_t bound_port =
      ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                       : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  ListenerId id;
  {
    std::lock_guard lock(mutex_);
    id = next_id_++;
    listeners_[id] = {fd, std::make_shared<const HttpHandler>(std::move(handler))};
  }
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  return {id, bound_port};
}

void HttpServer::close(ListenerId id) {
  std::unique_lock lock(mutex_);
  if (!listeners_.contains(id)) return;
  to_remove_.insert(id);
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  removed_.wait(lock, [&] { return !listeners_.contains(id) || stopping_; });
}

void HttpServer::apply_removals() {
  std::lock_guard lock(mutex_);
  for (const ListenerId id : to_remove_) {
    auto it = listeners_.find(id);
    if (it == listeners_.end()) continue;
    close_fd(it->second.fd);
    listeners_.erase(it);
  }
  to_remove_.clear();
  removed_.notify_all();
}

void HttpServer::run() {
  std::vector<pollfd> fds;
  std::vector<ListenerSocket> polled_listeners;
  for (;;) {
    apply_removals();
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      polled_listeners.clear();
      for (const auto& [id, listener] : listeners_)
        polled_listeners.push_back(listener);
    }
    const auto now = Clock::now();
    // Deadlines passed: the connection is dropped without an answer.
    std::erase_if(connections_, [&](const std::unique_ptr<Connection>& c) {
      if (!c->done && c->deadline > now) return false;
      close_fd(c->fd);
      return true;
    });
    fds.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    for (const auto& listener : polled_listeners)
      fds.push_back({listener.fd, POLLIN, 0});
    Clock::time_point next_deadline = now + std::chrono::hours(1);
    for (const auto& c : connections_) {
      fds.push_back({c->fd, static_cast<short>(c->writing ? POLLOUT : POLLIN), 0});
      next_deadline = std::min(next_deadline, c->deadline);
    }
    const auto wait = std::chrono::ceil<std::chrono::milliseconds>(next_deadline - now);
    const int ready =
        ::poll(fds.data(), fds.size(), static_cast<int>(std::max<long>(0, wait.count())));
    if (ready < 0) {
      if (errno == EINTR) continue;
      log::error("http", "poll: " + std::string(std::strerror(errno)));
      return;
    }
    if (fds[0].revents & POLLIN) {
      std::uint64_t count;
      [[maybe_unused]] auto n = ::read(wake_fd_, &count, sizeof count);
    }
    for (std::size_t i = 0; i < polled_listeners.size(); ++i) {
      if (fds[1 + i].revents & POLLIN) accept_from(polled_listeners[i]);
    }
    const std::size_t first = 1 + polled_listeners.size();
    for (std::size_t i = first; i < fds.size(); ++i) {
      Connection& c = *connections_[i - first];
      if (fds[i].revents == 0) continue;
      if (c.writing) {
        on_writable(c);
      } else {
        on_readable(c);
      }
    }
  }
}

void HttpServer::accept_from(const ListenerSocket& listener) {
  for (;;) {
    sockaddr_storage peer{};
    socklen_t length = sizeof peer;
    const int fd = ::accept4(listener.fd, reinterpret_cast<sockaddr*>(&peer), &length,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // The listener stays readable while the connection waits: without a pause, poll would
        // return at once, forever. Connections being served free descriptors meanwhile.
        log::warning("http", "accept: " + std::string(std::strerror(errno)) +
                                 "; pausing 100ms before accepting again");
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        log::warning("http", "accept: " + std::string(std::strerror(errno)));
      }
      return;
    }
    if (connections_.size() >= limits_.max_connections) {
      ::close(fd);
      continue;
    }
    auto connection = std::make_unique<Connection>();
    connection->fd = fd;
    connection->handler = listener.handler;
    connection->peer = netmodel::SocketAddress::address_of(peer);
    connection->deadline = Clock::now() + limits_.timeout;
    connections_.push_back(std::move(connection));
  }
}

void HttpServer::on_readable(Connection& c) {
  char buffer[4096];
  const ssize_t n = ::recv(c.fd, buffer, sizeof buffer, 0);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    c.done = true;
    return;
  }
  if (n == 0) {  // closed before a whole request arrived
    c.done = true;
    return;
  }
  c.in.append(buffer, static_cast<std::size_t>(n));
  std::size_t terminator = 0;
  const std::size_t end = header_end(c.in, terminator);
  if (end == std::string::npos || end + terminator > limits_.max_request_bytes) {
    if (c.in.size() > limits_.max_request_bytes) {
      respond(c, {431, "text/plain; charset=utf-8", "request too large\n"}, false);
    }
    return;
  }

  HttpRequest request;
  request.peer = c.peer;
  const std::string head = c.in.substr(0, end);
  std::size_t line_end = head.find('\n');
  const std::string request_line = trim(head.substr(0, line_end));
  const auto sp1 = request_line.find(' ');
  const auto sp2 = sp1 == std::string::npos ? std::string::npos : request_line.find(' ', sp1 + 1);
  if (sp2 == std::string::npos || request_line.find(' ', sp2 + 1) != std::string::npos) {
    respond(c, {400, "text/plain; charset=utf-8", "malformed request line\n"}, false);
    return;
  }
  request.method = request_line.substr(0, sp1);
  std::string target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string version = request_line.substr(sp2 + 1);
  if (version.rfind("HTTP/1.", 0) != 0) {
    respond(c, {505, "text/plain; charset=utf-8", "only HTTP/1.x is served\n"}, false);
    return;
  }
  // Absolute form (proxies send it): keep the path.
  if (target.rfind("http://", 0) == 0 || target.rfind("https://", 0) == 0) {
    const auto slash = target.find('/', target.find("//") + 2);
    target = slash == std::string::npos ? "/" : target.substr(slash);
  }
  if (target.empty() || target.front() != '/') {
    respond(c, {400, "text/plain; charset=utf-8", "malformed request target\n"}, false);
    return;
  }
  const auto question = target.find('?');
  request.path = target.substr(0, question);
  if (question != std::string::npos) request.query = target.substr(question + 1);
  while (line_end != std::string::npos) {
    const auto next = head.find('\n', line_end + 1);
    const std::string line = trim(head.substr(line_end + 1, next - line_end - 1));
    line_end = next;
    if (line.empty()) continue;
    const auto colon = line.find(':');
    if (colon == std::string::npos || colon == 0) {
      respond(c, {400, "text/plain; charset=utf-8", "malformed header line\n"}, false);
      return;
    }
    request.headers[lower(line.substr(0, colon))] = trim(line.substr(colon + 1));
  }
  if (request.method != "GET" && request.method != "HEAD") {
    respond(c, {405, "text/plain; charset=utf-8", "only GET and HEAD are served\n"}, false);
    return;
  }
  HttpResponse response;
  try {
    response = (*c.handler)(request);
  } catch (const std::exception& e) {
    log::error("http", "handler for " + request.path + ": " + e.what());
    response = {500, "text/plain; charset=utf-8", "internal error\n"};
  }
  respond(c, response, request.method == "HEAD");
}

void HttpServer::respond(Connection& c, const HttpResponse& response, bool head) {
  c.out =
      "HTTP/1.1 " + std::to_string(response.status) + " " + http_reason(response.status) + "\r\n";
  c.out += "Content-Type: " + response.content_type + "\r\n";
  c.out += "Content-Length: " + std::to_string(response.body.size()) + "\r\n";
  c.out += "X-Content-Type-Options: nosniff\r\n";
  if (response.status == 405) c.out += "Allow: GET, HEAD\r\n";
  c.out += "Connection: close\r\n\r\n";
  if (!head) c.out += response.body;
  c.writing = true;
  on_writable(c);
}

void HttpServer::on_writable(Connection& c) {
  while (c.sent < c.out.size()) {
    const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      c.done = true;
      return;
    }
    c.sent += static_cast<std::size_t>(n);
  }
  ::shutdown(c.fd, SHUT_WR);
  c.done = true;
}

HttpReply http_get(const netmodel::IpAddress& address, std::uint16_t port, const std::string& path,
                   std::chrono::milliseconds timeout) {
  const std::string where = "GET http://" + address_text(address, port) + path;
  int fd = ::socket(address.af(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) netmodel::throw_errno(errno, where);
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>(timeout.count() % 1000 * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  const auto socket_address = netmodel::SocketAddress::of(address, port);
  const auto fail = [&](int err) {
    ::close(fd);
    netmodel::throw_errno(err, where);
  };
  if (::connect(fd, socket_address.get(), socket_address.length) != 0) fail(errno);
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: " + address_text(address, port) +
                              "\r\nConnection: close\r\n\r\n";
  std::size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(errno);
    }
    sent += static_cast<std::size_t>(n);
  }
  std::string data;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(errno);
    }
    if (n == 0) break;
    data.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  std::size_t terminator = 0;
  const std::size_t end = header_end(data, terminator);
  if (data.rfind("HTTP/1.", 0) != 0 || end == std::string::npos) {
    throw std::runtime_error(where +
                             ": the answer is not HTTP: " + netmodel::quote(data.substr(0, 64)));
  }
  HttpReply reply;
  const std::string head = data.substr(0, end);
  reply.body = data.substr(end + terminator);
  std::size_t line_end = head.find('\n');
  const std::string status_line = trim(head.substr(0, line_end));
  const auto space = status_line.find(' ');
  try {
    reply.status = std::stoi(status_line.substr(space + 1, 3));
  } catch (const std::exception&) {
    throw std::runtime_error(where + ": bad status line " + netmodel::quote(status_line));
  }
  while (line_end != std::string::npos) {
    const auto next = head.find('\n', line_end + 1);
    const std::string line = trim(head.substr(line_end + 1, next - line_end - 1));
    line_end = next;
    const auto colon = line.find(':');
    if (colon != std::string::npos) {
      reply.headers[lower(line.substr(0, colon))] = trim(line.substr(colon + 1));
    }
  }
  return reply;
}

}  // namespace flatnet::proxy
