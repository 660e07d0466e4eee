#include "flatnet/netexec/server.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "flatnet/netexec/dial.hpp"
#include "flatnet/netexec/endpoint.hpp"
#include "flatnet/netexec/http.hpp"
#include "flatnet/netexec/router.hpp"
#include "flatnet/netmodel/error.hpp"

namespace flatnet::netexec {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Input buffered per connection before reading pauses (a pipelining client waits on /dial).
constexpr std::size_t kMaxInput = 64 * 1024;
// Unsent output above which no further pipelined request is answered until the client reads.
constexpr std::size_t kMaxPendingOutput = 256 * 1024;
// /dial requests running at once; more get 503.
constexpr int kMaxDials = 256;
// After answering with "Connection: close": how long unread input is drained before closing,
// so that the close does not turn into a RST that destroys the answer in flight (RFC 9112
// section 9.6).
constexpr auto kLinger = 2s;
// How long /exit waits for its answer to be sent.
constexpr auto kExitGrace = 1s;

// epoll tags: small numbers for the fixed descriptors, listeners from kListenerTag, and
// connections by their id (>= kFirstConnection).
constexpr std::uint64_t kSignalTag = 1;
constexpr std::uint64_t kWakeTag = 2;
constexpr std::uint64_t kListenerTag = 16;
constexpr std::uint64_t kFirstConnection = std::uint64_t{1} << 32;

void log(const char* format, ...) __attribute__((format(printf, 1, 2)));
void log(const char* format, ...) {
  char line[1024];
  va_list args;
  va_start(args, format);
  std::vsnprintf(line, sizeof line, format, args);
  va_end(args);
  std::fprintf(stderr, "flatnet-netexec: %s\n", line);
}

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

enum class Kind { http, udp };

struct Listener {
  Kind kind;
  std::uint16_t port;
  bool dual_stack;  // [::] with IPV6_V6ONLY off; else 0.0.0.0
  Fd fd;
};

int set_int_option(int fd, int level, int name, int value) {
  return ::setsockopt(fd, level, name, &value, sizeof value);
}

// A socket bound to every address on `port`: [::] dual-stack, or 0.0.0.0 when the kernel or
// the namespace has no IPv6.
Listener bind_port(Kind kind, std::uint16_t port) {
  const int type = (kind == Kind::http ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC;
  const std::string what =
      std::string(kind == Kind::http ? "tcp" : "udp") + " port " + std::to_string(port);
  Listener listener{kind, port, true, Fd(::socket(AF_INET6, type, 0))};
  if (listener.fd.get() >= 0) {
    const int fd = listener.fd.get();
    set_int_option(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0);
    if (kind == Kind::http) set_int_option(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    sockaddr_in6 any{};
    any.sin6_family = AF_INET6;
    any.sin6_port = htons(port);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof any) == 0) {
      if (kind == Kind::udp && set_int_option(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1) < 0) {
        netmodel::throw_errno(errno, "set IPV6_RECVPKTINFO on " + what);
      }
      return listener;
    }
    if (errno != EADDRNOTAVAIL && errno != EAFNOSUPPORT) {
      netmodel::throw_errno(errno, "bind " + what + " on [::]");
    }
  } else if (errno != EAFNOSUPPORT) {
    netmodel::throw_errno(errno, "socket for " + what);
  }

  listener.dual_stack = false;
  listener.fd = Fd(::socket(AF_INET, type, 0));
  const int fd = listener.fd.get();
  if (fd < 0) netmodel::throw_errno(errno, "socket for " + what);
  if (kind == Kind::http) set_int_option(fd, SOL_SOCKET, SO_REUSEADDR, 1);
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_port = htons(port);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof any) < 0) {
    netmodel::throw_errno(errno, "bind " + what + " on 0.0.0.0");
  }
  if (kind == Kind::udp && set_int_option(fd, IPPROTO_IP, IP_PKTINFO, 1) < 0) {
    netmodel::throw_errno(errno, "set IP_PKTINFO on " + what);
  }
  return listener;
}

struct Connection {
  std::uint64_t id = 0;
  Fd fd;
  std::string client;  // "IP:PORT"
  std::string input;
  std::string output;
  std::size_t output_sent = 0;
  std::uint64_t body_left = 0;   // bytes of a request body still to discard
  bool reading = true;           // the client has not closed its side
  bool awaiting_dial = false;    // a /dial runs; later requests wait for its answer
  bool closing = false;          // no further requests: close once the output is sent
  bool draining = false;         // answered and write side shut: discard input until EOF
  std::optional<int> exit_code;  // /exit: the process exits once this answer is sent
  std::uint32_t events = 0;      // registered with epoll
  Clock::time_point last_active;
  // How the pending /dial is answered.
  bool dial_keep_alive = true;
  int dial_minor_version = 1;
  bool dial_head_only = false;

  std::size_t pending_output() const { return output.size() - output_sent; }
};

// Results of /dial threads, handed to the loop. Shared with the threads, which may outlive the
// server (they are detached and bounded by their timeouts).
struct Mailbox {
  std::mutex mutex;
  std::vector<std::pair<std::uint64_t, DialResult>> done;
  Fd wake;  // eventfd: readable while `done` may hold results
};

class Server {
 public:
  explicit Server(const Options& options);
  int run();
  // The startup line: version, hostname, ports, address family.
  std::string describe() const;

 private:
  void add_to_epoll(int fd, std::uint32_t events, std::uint64_t tag);
  void accept_connections(Listener& listener);
  void answer_datagrams(Listener& listener);
  void collect_dials();

  // Reads, answers and writes what it can; false when the connection is finished.
  bool step(Connection& c, bool readable);
  bool read_input(Connection& c);
  // Answers complete requests; true when it stopped only because output is piling up.
  bool answer_requests(Connection& c);
  void handle(Connection& c, const HttpRequest& request);
  void queue(Connection& c, const HttpResponse& response, bool keep_alive, int minor_version,
             bool head_only);
  bool flush(Connection& c);
  void update_events(Connection& c);
  void drop(std::uint64_t id);
  void sweep(Clock::time_point now);
  int wait_timeout(Clock::time_point now) const;

  Options options_;
  Router router_;
  std::vector<Listener> listeners_;
  Fd epoll_;
  Fd signals_;
  Fd spare_;  // closed to accept (and refuse) a connection when out of descriptors
  std::shared_ptr<Mailbox> mailbox_ = std::make_shared<Mailbox>();
  std::unordered_map<std::uint64_t, std::unique_ptr<Connection>> connections_;
  std::uint64_t next_id_ = kFirstConnection;
  int dials_ = 0;
  bool stop_ = false;
  int exit_code_ = 0;
  std::optional<Clock::time_point> exit_deadline_;
  Clock::time_point last_sweep_;
  std::array<char, 64 * 1024> buffer_;
};

std::string describe_ports(const std::vector<Listener>& listeners, Kind kind) {
  std::string text;
  for (const auto& l : listeners) {
    if (l.kind != kind) continue;
    text += text.empty() ? "" : ",";
    text += std::to_string(l.port);
  }
  return text.empty() ? "none" : text;
}

std::string default_hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) < 0) return "localhost";
  return name;
}

Server::Server(const Options& options)
    : options_(options), router_(options.hostname.empty() ? default_hostname() : options.hostname) {
  for (const auto port : options.http_ports)
    listeners_.push_back(bind_port(Kind::http, port));
  for (const auto port : options.udp_ports)
    listeners_.push_back(bind_port(Kind::udp, port));
  for (auto& l : listeners_) {
    if (l.kind == Kind::http && ::listen(l.fd.get(), SOMAXCONN) < 0) {
      netmodel::throw_errno(errno, "listen on tcp port " + std::to_string(l.port));
    }
  }

  epoll_ = Fd(::epoll_create1(EPOLL_CLOEXEC));
  if (epoll_.get() < 0) netmodel::throw_errno(errno, "epoll_create1");
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  signals_ = Fd(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
  if (signals_.get() < 0) netmodel::throw_errno(errno, "signalfd");
  mailbox_->wake = Fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (mailbox_->wake.get() < 0) netmodel::throw_errno(errno, "eventfd");
  spare_ = Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));

  add_to_epoll(signals_.get(), EPOLLIN, kSignalTag);
  add_to_epoll(mailbox_->wake.get(), EPOLLIN, kWakeTag);
  for (std::size_t i = 0; i < listeners_.size(); ++i) {
    add_to_epoll(listeners_[i].fd.get(), EPOLLIN, kListenerTag + i);
  }
}

void Server::add_to_epoll(int fd, std::uint32_t events, std::uint64_t tag) {
  epoll_event event{};
  event.events = events;
  event.data.u64 = tag;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) < 0) {
    netmodel::throw_errno(errno, "epoll_ctl add");
  }
}

std::string Server::describe() const {
  const bool dual_stack = std::all_of(listeners_.begin(), listeners_.end(),
                                      [](const Listener& l) { return l.dual_stack; });
  return "version " FLATNET_VERSION " serving as " + netmodel::quote(router_.hostname()) +
         ": http " + describe_ports(listeners_, Kind::http) + ", udp " +
         describe_ports(listeners_, Kind::udp) +
         (dual_stack ? " on [::] (dual-stack)" : " on 0.0.0.0 (IPv6 is not available)");
}

int Server::run() {
  std::array<epoll_event, 64> events;
  while (!stop_) {
    const int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()),
                               wait_timeout(Clock::now()));
    if (n < 0) {
      if (errno == EINTR) continue;
      netmodel::throw_errno(errno, "epoll_wait");
    }
    for (int i = 0; i < n && !stop_; ++i) {
      const std::uint64_t tag = events[i].data.u64;
      if (tag == kSignalTag) {
        signalfd_siginfo info;
        if (::read(signals_.get(), &info, sizeof info) == sizeof info) {
          log("%s: stopping", info.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
          stop_ = true;
          exit_code_ = 0;
        }
      } else if (tag == kWakeTag) {
        collect_dials();
      } else if (tag < kFirstConnection) {
        Listener& listener = listeners_[tag - kListenerTag];
        listener.kind == Kind::http ? accept_connections(listener) : answer_datagrams(listener);
      } else if (const auto it = connections_.find(tag); it != connections_.end()) {
        const bool broken = events[i].events & (EPOLLERR | EPOLLHUP);
        if (!step(*it->second, true) || (broken && !it->second->reading)) drop(tag);
      }
    }
    sweep(Clock::now());
  }
  return exit_code_;
}

int Server::wait_timeout(Clock::time_point now) const {
  if (exit_deadline_) {
    return static_cast<int>(std::max<std::int64_t>(
        0, std::chrono::ceil<std::chrono::milliseconds>(*exit_deadline_ - now).count()));
  }
  // Idle connections are swept once a second; with none, nothing wakes an idle pod.
  return connections_.empty() ? -1 : 1000;
}

void Server::accept_connections(Listener& listener) {
  for (int i = 0; i < 64; ++i) {
    sockaddr_storage peer{};
    socklen_t length = sizeof peer;
    const int fd = ::accept4(listener.fd.get(), reinterpret_cast<sockaddr*>(&peer), &length,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      if ((errno == EMFILE || errno == ENFILE) && spare_.get() >= 0) {
        // Out of descriptors: take the connection off the queue and close it, rather than
        // having epoll report it again and again.
        log("accept on tcp port %u: %s; refusing a connection", listener.port,
            std::strerror(errno));
        spare_.reset();
        Fd refused(::accept4(listener.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
        refused.reset();
        spare_ = Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        continue;
      }
      log("accept on tcp port %u: %s", listener.port, std::strerror(errno));
      return;
    }
    set_int_option(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    auto c = std::make_unique<Connection>();
    c->id = next_id_++;
    c->fd = Fd(fd);
    c->client = format_endpoint(reinterpret_cast<sockaddr*>(&peer), length);
    c->last_active = Clock::now();
    c->events = EPOLLIN;
    epoll_event event{};
    event.events = c->events;
    event.data.u64 = c->id;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) < 0) {
      log("epoll_ctl add: %s", std::strerror(errno));
      continue;
    }
    connections_.emplace(c->id, std::move(c));
  }
}

void Server::answer_datagrams(Listener& listener) {
  const int fd = listener.fd.get();
  for (int i = 0; i < 64; ++i) {
    sockaddr_storage peer{};
    iovec iov{buffer_.data(), buffer_.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(in6_pktinfo)) + CMSG_SPACE(sizeof(in_pktinfo))];
    msghdr message{};
    message.msg_name = &peer;
    message.msg_namelen = sizeof peer;
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd, &message, 0);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      // ICMP errors for earlier replies land here (ECONNREFUSED, ...): not this datagram's.
      if (errno == EINTR || errno == ECONNREFUSED || errno == EHOSTUNREACH ||
          errno == ENETUNREACH) {
        continue;
      }
      log("recvmsg on udp port %u: %s", listener.port, std::strerror(errno));
      return;
    }
    const std::string client =
        format_endpoint(reinterpret_cast<sockaddr*>(&peer), message.msg_namelen);
    const std::string reply =
        router_.udp_reply(std::string_view(buffer_.data(), static_cast<std::size_t>(n)), client);
    if (options_.verbose) {
      log("%s udp port %u: %zd bytes, %zu back", client.c_str(), listener.port, n, reply.size());
    }

    // The reply leaves from the address the datagram was sent to. Only a link-local address
    // needs its interface; elsewhere routing picks it, as for any reply.
    alignas(cmsghdr) char reply_control[CMSG_SPACE(sizeof(in6_pktinfo))] = {};
    std::size_t reply_control_length = 0;
    for (cmsghdr* cm = CMSG_FIRSTHDR(&message); cm; cm = CMSG_NXTHDR(&message, cm)) {
      if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_PKTINFO) {
        in6_pktinfo info;
        std::memcpy(&info, CMSG_DATA(cm), sizeof info);
        if (IN6_IS_ADDR_MULTICAST(&info.ipi6_addr)) break;
        if (!IN6_IS_ADDR_LINKLOCAL(&info.ipi6_addr)) info.ipi6_ifindex = 0;
        auto* out = reinterpret_cast<cmsghdr*>(reply_control);
        out->cmsg_level = IPPROTO_IPV6;
        out->cmsg_type = IPV6_PKTINFO;
        out->cmsg_len = CMSG_LEN(sizeof info);
        std::memcpy(CMSG_DATA(out), &info, sizeof info);
        reply_control_length = CMSG_SPACE(sizeof info);
      } else if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO) {
        in_pktinfo info;
        std::memcpy(&info, CMSG_DATA(cm), sizeof info);
        if (IN_MULTICAST(ntohl(info.ipi_addr.s_addr))) break;
        in_pktinfo source{};
        source.ipi_spec_dst = info.ipi_addr;
        auto* out = reinterpret_cast<cmsghdr*>(reply_control);
        out->cmsg_level = IPPROTO_IP;
        out->cmsg_type = IP_PKTINFO;
        out->cmsg_len = CMSG_LEN(sizeof source);
        std::memcpy(CMSG_DATA(out), &source, sizeof source);
        reply_control_length = CMSG_SPACE(sizeof source);
      }
    }
    iovec reply_iov{const_cast<char*>(reply.data()), reply.size()};
    msghdr answer{};
    answer.msg_name = &peer;
    answer.msg_namelen = message.msg_namelen;
    answer.msg_iov = &reply_iov;
    answer.msg_iovlen = 1;
    answer.msg_control = reply_control_length ? reply_control : nullptr;
    answer.msg_controllen = reply_control_length;
    ssize_t sent = ::sendmsg(fd, &answer, MSG_NOSIGNAL);
    if (sent < 0 && errno == EINVAL && reply_control_length) {
      // The datagram went to an address we cannot send from (a subnet broadcast address).
      answer.msg_control = nullptr;
      answer.msg_controllen = 0;
      sent = ::sendmsg(fd, &answer, MSG_NOSIGNAL);
    }
    if (sent < 0 && options_.verbose) {
      log("reply to %s from udp port %u: %s", client.c_str(), listener.port, std::strerror(errno));
    }
  }
}

bool Server::step(Connection& c, bool readable) {
  if (readable && !read_input(c)) return false;
  if (c.draining) {
    c.input.clear();
    return c.reading;
  }
  while (true) {
    const bool pressed = answer_requests(c);
    if (!flush(c)) return false;
    if (!pressed || c.pending_output() > 0) break;
  }
  if (!c.draining && !c.reading && !c.awaiting_dial && c.pending_output() == 0) {
    return false;  // the client is gone and everything it asked for is answered
  }
  update_events(c);
  return !c.draining || c.reading;
}

bool Server::read_input(Connection& c) {
  while (c.reading && (c.draining || c.input.size() < kMaxInput)) {
    const ssize_t n = ::recv(c.fd.get(), buffer_.data(), buffer_.size(), 0);
    if (n > 0) {
      c.last_active = Clock::now();
      if (!c.draining) c.input.append(buffer_.data(), static_cast<std::size_t>(n));
      if (static_cast<std::size_t>(n) < buffer_.size()) return true;  // probably all there was
    } else if (n == 0) {
      c.reading = false;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return true;
    } else if (errno != EINTR) {
      return false;  // reset by the peer
    }
  }
  return true;
}

bool Server::answer_requests(Connection& c) {
  while (!c.awaiting_dial && !c.closing) {
    if (c.pending_output() > kMaxPendingOutput) return true;
    if (c.body_left > 0) {
      const auto skip = std::min<std::uint64_t>(c.body_left, c.input.size());
      c.input.erase(0, skip);
      c.body_left -= skip;
      if (c.body_left > 0) return false;
    }
    if (c.input.empty()) {
      if (!c.reading) c.closing = true;
      return false;
    }
    ParseResult parsed = parse_request(c.input);
    if (parsed.status == ParseResult::Status::incomplete) {
      if (!c.reading) c.closing = true;  // a partial request, then EOF: nothing to answer
      return false;
    }
    if (parsed.status == ParseResult::Status::error) {
      if (options_.verbose) {
        log("%s: %d %s", c.client.c_str(), parsed.error_status, parsed.error_message.c_str());
      }
      queue(c, error_response(parsed.error_status, parsed.error_message), false, 1, false);
      c.closing = true;
      c.input.clear();
      return false;
    }
    c.input.erase(0, parsed.consumed);
    c.body_left = parsed.request.content_length;
    handle(c, parsed.request);
  }
  return false;
}

void Server::handle(Connection& c, const HttpRequest& request) {
  Route route = router_.route(request, c.client);
  const bool keep_alive = request.keep_alive();
  const bool head_only = request.method == "HEAD";
  if (options_.verbose) {
    log("%s %s %s -> %d", c.client.c_str(), request.method.c_str(), request.target.c_str(),
        route.response.status);
  }
  if (route.dial) {
    if (dials_ >= kMaxDials) {
      queue(c, error_response(503, "too many /dial requests in progress"), keep_alive,
            request.minor_version, head_only);
      c.closing = !keep_alive;
      return;
    }
    try {
      std::thread([mailbox = mailbox_, id = c.id, dial_request = std::move(*route.dial),
                   timeout = options_.dial_timeout] {
        DialResult result = dial(dial_request, timeout);
        {
          std::lock_guard lock(mailbox->mutex);
          mailbox->done.emplace_back(id, std::move(result));
        }
        const std::uint64_t one = 1;
        [[maybe_unused]] const auto written = ::write(mailbox->wake.get(), &one, sizeof one);
      }).detach();
    } catch (const std::system_error& e) {
      log("starting a /dial thread: %s", e.what());
      queue(c, error_response(503, std::string("cannot start /dial: ") + e.what()), keep_alive,
            request.minor_version, head_only);
      c.closing = !keep_alive;
      return;
    }
    ++dials_;
    c.awaiting_dial = true;
    c.dial_keep_alive = keep_alive;
    c.dial_minor_version = request.minor_version;
    c.dial_head_only = head_only;
    return;
  }
  if (route.exit_code) {
    c.exit_code = route.exit_code;
    exit_deadline_ = Clock::now() + kExitGrace;
    exit_code_ = *route.exit_code;
  }
  const bool keep = keep_alive && !route.exit_code;
  queue(c, route.response, keep, request.minor_version, head_only);
  if (!keep) c.closing = true;
}

void Server::queue(Connection& c, const HttpResponse& response, bool keep_alive, int minor_version,
                   bool head_only) {
  c.output += render_response(response, keep_alive, minor_version, head_only);
}

bool Server::flush(Connection& c) {
  while (c.pending_output() > 0) {
    const ssize_t n =
        ::send(c.fd.get(), c.output.data() + c.output_sent, c.pending_output(), MSG_NOSIGNAL);
    if (n >= 0) {
      c.output_sent += static_cast<std::size_t>(n);
      c.last_active = Clock::now();
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return true;
    } else if (errno != EINTR) {
      if (c.exit_code) stop_ = true;
      return false;
    }
  }
  c.output.clear();
  c.output_sent = 0;
  if (c.exit_code) {
    stop_ = true;
    return true;
  }
  if (c.closing && !c.awaiting_dial && !c.draining) {
    ::shutdown(c.fd.get(), SHUT_WR);
    c.draining = true;
    c.input.clear();
    c.last_active = Clock::now();
  }
  return true;
}

void Server::update_events(Connection& c) {
  std::uint32_t want = 0;
  if (c.reading && (c.draining || c.input.size() < kMaxInput)) want |= EPOLLIN;
  if (c.pending_output() > 0) want |= EPOLLOUT;
  if (want == c.events) return;
  epoll_event event{};
  event.events = want;
  event.data.u64 = c.id;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &event) == 0) c.events = want;
}

void Server::collect_dials() {
  std::uint64_t count = 0;
  [[maybe_unused]] const auto read = ::read(mailbox_->wake.get(), &count, sizeof count);
  std::vector<std::pair<std::uint64_t, DialResult>> done;
  {
    std::lock_guard lock(mailbox_->mutex);
    done.swap(mailbox_->done);
  }
  for (auto& [id, result] : done) {
    --dials_;
    const auto it = connections_.find(id);
    if (it == connections_.end()) continue;  // the client left meanwhile
    Connection& c = *it->second;
    c.awaiting_dial = false;
    queue(c, dial_response(result), c.dial_keep_alive, c.dial_minor_version, c.dial_head_only);
    if (!c.dial_keep_alive) c.closing = true;
    if (!step(c, false)) drop(id);
  }
}

void Server::drop(std::uint64_t id) {
  const auto it = connections_.find(id);
  if (it == connections_.end()) return;
  if (it->second->exit_code) stop_ = true;
  // Closing the descriptor removes it from the epoll set.
  connections_.erase(it);
}

void Server::sweep(Clock::time_point now) {
  if (exit_deadline_ && now >= *exit_deadline_) stop_ = true;
  if (now - last_sweep_ < 1s) return;
  last_sweep_ = now;
  for (auto it = connections_.begin(); it != connections_.end();) {
    const Connection& c = *it->second;
    const auto limit = c.draining ? std::chrono::milliseconds(kLinger) : options_.idle_timeout;
    if (!c.awaiting_dial && now - c.last_active > limit) {
      if (options_.verbose) log("%s: closing an idle connection", c.client.c_str());
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

void signal_ready(int fd) {
  static constexpr char kReady[] = "ready\n";
  ssize_t n;
  do {
    n = ::write(fd, kReady, sizeof kReady - 1);
  } while (n < 0 && errno == EINTR);
  if (n < 0) log("warning: --ready-fd %d: write: %s", fd, std::strerror(errno));
  ::close(fd);
}

}  // namespace

int serve(const Options& options) {
  // Before any thread starts, so that every thread inherits the mask and the signals reach the
  // signalfd.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGPIPE);
  if (::sigprocmask(SIG_BLOCK, &set, nullptr) < 0) netmodel::throw_errno(errno, "sigprocmask");

  Server server(options);
  if (options.ready_fd >= 0) signal_ready(options.ready_fd);
  log("%s", server.describe().c_str());
  return server.run();
}

}  // namespace flatnet::netexec
