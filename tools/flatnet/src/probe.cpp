#include "flatnet/emulator/probe.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <exception>
#include <functional>
#include <numeric>
#include <queue>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>

#include "flatnet/netmodel/error.hpp"
#include "flatnet/netmodel/socket_address.hpp"

namespace flatnet::emulator {
namespace {

using Clock = std::chrono::steady_clock;
using netmodel::IpAddress;

constexpr std::size_t kAnswerCap = 4096;  // bytes of a TCP answer kept; more is a bad reply
constexpr std::size_t kReplyKept = 256;   // bytes of body or datagram copied into the result
constexpr std::size_t kShownCap = 100;    // bytes of unexpected text quoted in `detail`
constexpr rlim_t kSpareDescriptors = 64;  // left to the rest of the process
constexpr int kMaxEvents = 256;
constexpr std::string_view kUdpRequest = "clientip";

// --- text ---

// `errno` as lower-case text with its symbolic name: "no route to host (EHOSTUNREACH)".
std::string errno_text(int err) {
  std::string text = std::generic_category().message(err);
  if (!text.empty() && text[0] >= 'A' && text[0] <= 'Z') text[0] = static_cast<char>(text[0] + 32);
  const char* name = ::strerrorname_np(err);
  return text + " (" + (name != nullptr ? name : "errno " + std::to_string(err)) + ")";
}

// At most kShownCap bytes of `text` in quotes, control characters escaped.
std::string shown(std::string_view text) {
  if (text.size() <= kShownCap) return netmodel::quote(text);
  return netmodel::quote(text.substr(0, kShownCap)) + "...";
}

std::string_view trimmed(std::string_view text) {
  constexpr std::string_view kSpace = " \t\r\n";
  const auto first = text.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(kSpace) - first + 1);
}

bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return (x >= 'A' && x <= 'Z' ? x + 32 : x) == (y >= 'A' && y <= 'Z' ? y + 32 : y);
  });
}

// "10.0.0.1:80" or "[fd00::1]:80".
std::string host_port(const IpAddress& address, std::uint16_t port) {
  const std::string host = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
  return host + ":" + std::to_string(port);
}

// The address of netexec's "IP:PORT" ("[IPv6]:PORT"); nullopt for anything else. IPv4-mapped
// IPv6 addresses become IPv4.
std::optional<IpAddress> parse_client(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || port.size() > 5 || ec != std::errc{} || end != port.data() + port.size() ||
      value > 65535) {
    return std::nullopt;
  }
  auto address = IpAddress::try_parse(host);
  if (!address || address->is_v6() != text.starts_with('[')) return std::nullopt;
  const auto b = address->bytes();
  if (address->is_v6() && std::all_of(b.begin(), b.begin() + 10, [](auto x) { return x == 0; }) &&
      b[10] == 0xff && b[11] == 0xff) {
    return IpAddress::from_bytes(b.subspan(12, 4));
  }
  return address;
}

// What a (possibly partial) TCP answer amounts to.
struct Verdict {
  enum Kind { incomplete, ok, bad } kind = incomplete;
  std::string body;
  std::string detail;
  std::optional<IpAddress> client;
};

Verdict bad(std::string detail, std::string_view body = {}) {
  return {Verdict::bad, std::string(body.substr(0, kReplyKept)), std::move(detail), {}};
}

// Decodes a chunked body; incomplete until the last (empty) chunk has arrived.
Verdict dechunk(std::string_view raw) {
  std::string body;
  for (;;) {
    const auto line_end = raw.find("\r\n");
    if (line_end == std::string_view::npos) return {};
    const std::string_view size_text = raw.substr(0, std::min(line_end, raw.find(';')));
    std::size_t size = 0;
    const auto [end, ec] =
        std::from_chars(size_text.data(), size_text.data() + size_text.size(), size, 16);
    if (size_text.empty() || ec != std::errc{} || end != size_text.data() + size_text.size()) {
      return bad("bad chunk size " + shown(size_text), body);
    }
    if (size == 0) return {Verdict::ok, std::move(body), {}, {}};
    raw.remove_prefix(line_end + 2);
    if (raw.size() < size + 2) return {};
    if (raw.substr(size, 2) != "\r\n") return bad("a chunk does not end in CRLF", body);
    body.append(raw.substr(0, size));
    raw.remove_prefix(size + 2);
  }
}

// Judges what arrived so far; `at_eof` when the server has closed its side, which is the end
// of a body sent without Content-Length.
Verdict judge_http(std::string_view answer, bool at_eof) {
  constexpr std::string_view kVersion = "HTTP/";
  if (answer.substr(0, kVersion.size()) != kVersion.substr(0, answer.size())) {
    return bad("not HTTP: " + shown(answer.substr(0, answer.find("\r\n"))), answer);
  }
  const auto line_end = answer.find("\r\n");
  if (line_end == std::string_view::npos) return {};
  const std::string_view status_line = answer.substr(0, line_end);
  // "HTTP/1.1 200 OK": the code follows the first space.
  const auto space = status_line.find(' ');
  const std::string_view code =
      space == std::string_view::npos ? std::string_view{} : status_line.substr(space + 1, 3);
  const std::string_view after_code =
      space == std::string_view::npos || status_line.size() <= space + 4
          ? std::string_view{}
          : status_line.substr(space + 4, 1);
  const auto headers_end = answer.find("\r\n\r\n");
  const std::string_view raw_body =
      headers_end == std::string_view::npos ? std::string_view{} : answer.substr(headers_end + 4);
  if (code.size() != 3 || (!after_code.empty() && after_code != " ") ||
      !std::all_of(code.begin(), code.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return bad("not an HTTP status line: " + shown(status_line), raw_body);
  }
  if (code != "200") {
    return bad(status_line.size() <= kShownCap ? std::string(status_line) : shown(status_line),
               raw_body);
  }
  if (headers_end == std::string_view::npos) return {};

  std::optional<std::size_t> content_length;
  bool chunked = false;
  std::string_view headers = answer.substr(line_end + 2, headers_end - line_end - 2);
  while (!headers.empty()) {
    const auto eol = headers.find("\r\n");
    const std::string_view line = headers.substr(0, eol);
    headers.remove_prefix(eol == std::string_view::npos ? headers.size() : eol + 2);
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string_view name = trimmed(line.substr(0, colon));
    const std::string_view value = trimmed(line.substr(colon + 1));
    if (iequals(name, "content-length")) {
      std::size_t length = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
      if (value.empty() || ec != std::errc{} || end != value.data() + value.size()) {
        return bad("bad Content-Length " + shown(value), raw_body);
      }
      content_length = length;
    } else if (iequals(name, "transfer-encoding")) {
      chunked = iequals(value, "chunked");
    }
  }

  Verdict verdict;
  if (chunked) {
    verdict = dechunk(raw_body);
    if (verdict.kind != Verdict::ok) return verdict;
  } else if (content_length) {
    if (raw_body.size() < *content_length) return {};
    verdict = {Verdict::ok, std::string(raw_body.substr(0, *content_length)), {}, {}};
  } else {
    if (!at_eof) return {};
    verdict = {Verdict::ok, std::string(raw_body), {}, {}};
  }
  verdict.client = parse_client(trimmed(verdict.body));
  if (!verdict.client)
    return bad("the body " + shown(verdict.body) + " is not IP:PORT", verdict.body);
  verdict.body.resize(std::min(verdict.body.size(), kReplyKept));
  return verdict;
}

ProbeOutcome outcome_of(int err) {
  switch (err) {
    case ECONNREFUSED:
      return ProbeOutcome::refused;
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EADDRNOTAVAIL:
    case ENETDOWN:
    case EHOSTDOWN:
    case ENONET:
    case EPERM:  // a local firewall dropped the packet
    case EACCES:
      return ProbeOutcome::unreachable;
    case ECONNRESET:
    case ECONNABORTED:
    case EPIPE:
      return ProbeOutcome::reset;
    case ETIMEDOUT:
      return ProbeOutcome::timeout;
    default:
      return ProbeOutcome::error;
  }
}

ProbeResult failed(ProbeOutcome outcome, int error, std::string detail) {
  ProbeResult result;
  result.outcome = outcome;
  result.error = error;
  result.detail = std::move(detail);
  return result;
}

ProbeResult answered(IpAddress client, std::string reply) {
  ProbeResult result;
  result.outcome = ProbeOutcome::ok;
  result.seen_client = client;
  result.reply = std::move(reply);
  return result;
}

// --- the engine ---

using SockAddr = netmodel::SocketAddress;

SockAddr to_sockaddr(const IpAddress& address, std::uint16_t port) {
  return SockAddr::of(address, port);
}

// Where a target is and what is sent to it, computed once per target.
struct Destination {
  SockAddr address;
  std::string request;
};

class Engine {
 public:
  Engine(const std::vector<ProbeSource>& sources, const std::vector<ProbeTarget>& targets,
         const std::vector<Probe>& probes, const ProbeOptions& options, std::size_t in_flight)
      : sources_(sources),
        targets_(targets),
        probes_(probes),
        timeout_(std::max(options.timeout, std::chrono::milliseconds(1))),
        resend_interval_(timeout_ / std::max(options.udp_attempts, 1)),
        udp_attempts_(std::max(options.udp_attempts, 1)),
        results_(probes.size()),
        slots_(std::min(in_flight, probes.size())) {
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) netmodel::throw_errno(errno, "create the probes' epoll instance");
    destinations_.reserve(targets.size());
    for (const auto& t : targets) {
      destinations_.push_back({to_sockaddr(t.address, t.port),
                               t.protocol == Protocol::udp ? std::string(kUdpRequest)
                                                           : "GET /clientip HTTP/1.1\r\nHost: " +
                                                                 host_port(t.address, t.port) +
                                                                 "\r\nConnection: close\r\n\r\n"});
    }
    // Started grouped by source, so that each namespace is entered about once.
    order_.resize(probes.size());
    std::iota(order_.begin(), order_.end(), std::size_t{0});
    std::stable_sort(order_.begin(), order_.end(), [&](std::size_t a, std::size_t b) {
      return probes[a].source < probes[b].source;
    });
    for (std::size_t i = slots_.size(); i > 0; --i)
      free_.push_back(i - 1);
  }

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  ~Engine() {
    for (auto& slot : slots_) {
      if (slot.fd >= 0) ::close(slot.fd);
    }
    ::close(epoll_);
  }

  // Runs every probe. Precondition: on a thread of its own, which it leaves in the namespace of
  // the last source it entered.
  std::vector<ProbeResult> run() {
    epoll_event events[kMaxEvents];
    start_more();
    // start_more() leaves nothing unstarted when nothing is in flight.
    while (free_.size() < slots_.size()) {
      drop_stale_timers();
      int wait_ms = -1;
      if (!timers_.empty()) {
        const auto until = timers_.top().when - Clock::now();
        wait_ms = static_cast<int>(
            std::max<Clock::rep>(0, std::chrono::ceil<std::chrono::milliseconds>(until).count()));
      }
      const int n = ::epoll_wait(epoll_, events, kMaxEvents, wait_ms);
      if (n < 0 && errno != EINTR) netmodel::throw_errno(errno, "wait for the probes' sockets");
      for (int i = 0; i < n; ++i) {
        const auto index = static_cast<std::uint32_t>(events[i].data.u64);
        const auto generation = static_cast<std::uint32_t>(events[i].data.u64 >> 32);
        if (index < slots_.size() && slots_[index].generation == generation &&
            slots_[index].fd >= 0) {
          on_ready(index);
        }
      }
      fire_timers();
      start_more();
    }
    return std::move(results_);
  }

 private:
  enum class Stage { connecting, sending, reading, waiting_udp };

  struct Slot {
    int fd = -1;
    std::uint32_t generation = 0;
    std::size_t probe = 0;
    Stage stage = Stage::connecting;
    Clock::time_point start;
    Clock::time_point deadline;
    Clock::time_point wake;  // the one timer that counts for this slot
    std::size_t sent = 0;    // request bytes (TCP) or datagrams (UDP) sent
    std::string answer;
  };

  struct Timer {
    Clock::time_point when;
    std::uint32_t slot;
    std::uint32_t generation;
    bool operator>(const Timer& other) const { return when > other.when; }
  };

  const ProbeTarget& target_of(const Slot& slot) const {
    return targets_[probes_[slot.probe].target];
  }
  const Destination& destination_of(const Slot& slot) const {
    return destinations_[probes_[slot.probe].target];
  }

  // Fills free slots with the next probes; a source's sockets are made inside its namespace.
  void start_more() {
    while (!free_.empty() && next_ < order_.size()) {
      const std::size_t probe = order_[next_];
      const ProbeSource& source = sources_[probes_[probe].source];
      if (source.netns == nullptr || source.netns->fd() < 0) {
        results_[probe] =
            failed(ProbeOutcome::error, source.netns == nullptr ? EINVAL : EBADF,
                   "source " + netmodel::quote(source.name) + " has no network namespace handle");
        ++next_;
        continue;
      }
      enter(source);
      const ProbeTarget& target = targets_[probes_[probe].target];
      const int type = target.protocol == Protocol::tcp ? SOCK_STREAM : SOCK_DGRAM;
      const int fd = ::socket(target.address.af(), type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        // Out of descriptors while others are open: try again when some have closed.
        if ((errno == EMFILE || errno == ENFILE) && free_.size() < slots_.size()) return;
        results_[probe] =
            failed(ProbeOutcome::error, errno,
                   "create a socket in the namespace of " + netmodel::quote(source.name));
        ++next_;
        continue;
      }
      ++next_;
      const std::uint32_t index = free_.back();
      free_.pop_back();
      Slot& slot = slots_[index];
      slot.fd = fd;
      slot.probe = probe;
      slot.stage = target.protocol == Protocol::tcp ? Stage::connecting : Stage::waiting_udp;
      slot.sent = 0;
      slot.answer.clear();
      slot.start = Clock::now();
      slot.deadline = slot.start + timeout_;
      begin(index);
    }
  }

  // Switches the engine's thread into the namespace of `source` unless it is there already.
  void enter(const ProbeSource& source) {
    if (entered_ == source.netns) return;
    if (::setns(source.netns->fd(), CLONE_NEWNET) != 0) {
      netmodel::throw_errno(errno, "enter netns " + netmodel::quote(source.netns->path().string()) +
                                       " of probe source " + netmodel::quote(source.name));
    }
    entered_ = source.netns;
  }

  void begin(std::uint32_t index) {
    Slot& slot = slots_[index];
    const Destination& to = destination_of(slot);
    if (::connect(slot.fd, to.address.get(), to.address.length) != 0 && errno != EINPROGRESS) {
      fail(index, errno, "connect");
      return;
    }
    if (slot.stage == Stage::connecting) {
      watch(index, EPOLL_CTL_ADD, EPOLLOUT);
    } else {
      if (!send_datagram(index)) return;
      watch(index, EPOLL_CTL_ADD, EPOLLIN);
    }
    schedule(index, target_of(slot).protocol == Protocol::udp && udp_attempts_ > 1
                        ? std::min(slot.deadline, slot.start + resend_interval_)
                        : slot.deadline);
  }

  void watch(std::uint32_t index, int op, std::uint32_t events) {
    epoll_event event{};
    event.events = events;
    event.data.u64 = (std::uint64_t{slots_[index].generation} << 32) | index;
    if (::epoll_ctl(epoll_, op, slots_[index].fd, &event) != 0) {
      netmodel::throw_errno(errno, "watch a probe socket with epoll");
    }
  }

  void schedule(std::uint32_t index, Clock::time_point when) {
    slots_[index].wake = when;
    timers_.push({when, index, slots_[index].generation});
  }

  void on_ready(std::uint32_t index) {
    Slot& slot = slots_[index];
    switch (slot.stage) {
      case Stage::connecting: {
        int err = 0;
        socklen_t length = sizeof err;
        if (::getsockopt(slot.fd, SOL_SOCKET, SO_ERROR, &err, &length) != 0) err = errno;
        if (err != 0) {
          fail(index, err, "connect");
          return;
        }
        slot.stage = Stage::sending;
        [[fallthrough]];
      }
      case Stage::sending:
        send_request(index);
        return;
      case Stage::reading:
        read_answer(index);
        return;
      case Stage::waiting_udp:
        read_datagram(index);
        return;
    }
  }

  void send_request(std::uint32_t index) {
    Slot& slot = slots_[index];
    const std::string& request = destination_of(slot).request;
    while (slot.sent < request.size()) {
      const ssize_t n =
          ::send(slot.fd, request.data() + slot.sent, request.size() - slot.sent, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return;  // still watched for EPOLLOUT
        fail(index, errno, "send the request");
        return;
      }
      slot.sent += static_cast<std::size_t>(n);
    }
    slot.stage = Stage::reading;
    watch(index, EPOLL_CTL_MOD, EPOLLIN);
  }

  void read_answer(std::uint32_t index) {
    Slot& slot = slots_[index];
    char buffer[kAnswerCap];
    for (;;) {
      const ssize_t n = ::recv(slot.fd, buffer, sizeof buffer, 0);
      if (n > 0) {
        const auto room = kAnswerCap - slot.answer.size();
        slot.answer.append(buffer, std::min(room, static_cast<std::size_t>(n)));
        if (static_cast<std::size_t>(n) > room) {
          Verdict verdict = judge_http(slot.answer, false);
          if (verdict.kind == Verdict::incomplete) {
            verdict = bad("an answer longer than " + std::to_string(kAnswerCap) + " bytes");
          }
          finish_with(index, std::move(verdict));
          return;
        }
        continue;
      }
      if (n == 0) {
        Verdict verdict = judge_http(slot.answer, true);
        if (verdict.kind != Verdict::incomplete) {
          finish_with(index, std::move(verdict));
        } else {
          finish(index,
                 failed(ProbeOutcome::reset, 0,
                        slot.answer.empty() ? "closed without an answer"
                                            : "closed after " + std::to_string(slot.answer.size()) +
                                                  " bytes of the answer"));
        }
        return;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      const int err = errno;
      Verdict verdict = judge_http(slot.answer, false);
      if (verdict.kind != Verdict::incomplete) {
        finish_with(index, std::move(verdict));
      } else {
        fail(index, err, "read the answer");
      }
      return;
    }
  }

  // Sends the UDP request once more; false when that failed and the probe is finished.
  bool send_datagram(std::uint32_t index) {
    Slot& slot = slots_[index];
    const std::string& request = destination_of(slot).request;
    while (::send(slot.fd, request.data(), request.size(), MSG_NOSIGNAL) < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == ENOBUFS) break;  // lost like any datagram; sent again later
      fail(index, errno, "send the datagram");
      return false;
    }
    ++slot.sent;
    return true;
  }

  void read_datagram(std::uint32_t index) {
    Slot& slot = slots_[index];
    char buffer[kAnswerCap];
    ssize_t n;
    do {
      n = ::recv(slot.fd, buffer, sizeof buffer, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno != EAGAIN) fail(index, errno, "receive the answer");
      return;
    }
    const std::string_view datagram(buffer, static_cast<std::size_t>(n));
    if (auto client = parse_client(trimmed(datagram))) {
      finish(index, answered(*client, std::string(datagram.substr(0, kReplyKept))));
    } else {
      finish_with(index, bad("the datagram " + shown(datagram) + " is not IP:PORT", datagram));
    }
  }

  bool is_current(const Timer& timer) const {
    const Slot& slot = slots_[timer.slot];
    return slot.fd >= 0 && slot.generation == timer.generation && slot.wake == timer.when;
  }

  // Timers of finished probes would only wake the loop for nothing.
  void drop_stale_timers() {
    while (!timers_.empty() && !is_current(timers_.top()))
      timers_.pop();
  }

  void fire_timers() {
    const auto now = Clock::now();
    while (!timers_.empty() && timers_.top().when <= now) {
      const Timer timer = timers_.top();
      timers_.pop();
      if (!is_current(timer)) continue;
      Slot& slot = slots_[timer.slot];
      if (now < slot.deadline) {
        // A UDP resend.
        if (!send_datagram(timer.slot)) continue;
        schedule(timer.slot, slot.sent < static_cast<std::size_t>(udp_attempts_)
                                 ? std::min(slot.deadline, now + resend_interval_)
                                 : slot.deadline);
        continue;
      }
      time_out(timer.slot);
    }
  }

  void time_out(std::uint32_t index) {
    Slot& slot = slots_[index];
    if (slot.stage == Stage::reading && !slot.answer.empty()) {
      // A whole answer from a server that does not close the connection still counts.
      Verdict verdict = judge_http(slot.answer, false);
      if (verdict.kind != Verdict::incomplete) {
        finish_with(index, std::move(verdict));
        return;
      }
    }
    std::string detail;
    switch (slot.stage) {
      case Stage::connecting:
        detail = "the connection was not established";
        break;
      case Stage::sending:
        detail = "connected, the request could not be sent";
        break;
      case Stage::reading:
        detail = slot.answer.empty() ? "connected, nothing came back"
                                     : "connected, " + std::to_string(slot.answer.size()) +
                                           " bytes of an unfinished answer";
        break;
      case Stage::waiting_udp:
        detail =
            std::to_string(slot.sent) + (slot.sent == 1 ? " datagram" : " datagrams") + " sent";
        break;
    }
    finish(index, failed(ProbeOutcome::timeout, 0, std::move(detail)));
  }

  void fail(std::uint32_t index, int err, std::string_view step) {
    const ProbeOutcome outcome = outcome_of(err);
    std::string detail;
    if (outcome == ProbeOutcome::error || outcome == ProbeOutcome::timeout) detail = step;
    if (outcome == ProbeOutcome::reset && !slots_[index].answer.empty()) {
      detail = "after " + std::to_string(slots_[index].answer.size()) + " bytes of the answer";
    }
    finish(index, failed(outcome, outcome == ProbeOutcome::timeout ? 0 : err, std::move(detail)));
  }

  void finish_with(std::uint32_t index, Verdict verdict) {
    if (verdict.kind == Verdict::ok) {
      finish(index, answered(*verdict.client, std::move(verdict.body)));
    } else {
      ProbeResult result = failed(ProbeOutcome::bad_reply, 0, std::move(verdict.detail));
      result.reply = std::move(verdict.body);
      finish(index, std::move(result));
    }
  }

  // Records the result, closes the socket and frees the slot.
  void finish(std::uint32_t index, ProbeResult result) {
    Slot& slot = slots_[index];
    result.elapsed =
        result.outcome == ProbeOutcome::timeout
            ? std::chrono::duration_cast<std::chrono::microseconds>(timeout_)
            : std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - slot.start);
    // A TCP connection we give up on is reset rather than closed gracefully, so that no socket
    // lingers in FIN_WAIT; connections the server closed first end normally (its side keeps
    // the TIME_WAIT).
    if (target_of(slot).protocol == Protocol::tcp && result.outcome != ProbeOutcome::ok &&
        (slot.stage == Stage::reading || slot.stage == Stage::sending)) {
      const linger abort{.l_onoff = 1, .l_linger = 0};
      ::setsockopt(slot.fd, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
    }
    ::close(slot.fd);  // also removes it from the epoll set
    slot.fd = -1;
    ++slot.generation;
    slot.answer = std::string();
    results_[slot.probe] = std::move(result);
    free_.push_back(index);
  }

  const std::vector<ProbeSource>& sources_;
  const std::vector<ProbeTarget>& targets_;
  const std::vector<Probe>& probes_;
  const std::chrono::milliseconds timeout_;
  const Clock::duration resend_interval_;
  const int udp_attempts_;
  std::vector<Destination> destinations_;
  std::vector<ProbeResult> results_;
  std::vector<std::size_t> order_;  // probe indexes, grouped by source
  std::size_t next_ = 0;            // the next entry of order_ to start
  std::vector<Slot> slots_;
  std::vector<std::uint32_t> free_;  // indexes of unused slots
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;
  const netmodel::NetNs* entered_ = nullptr;
  int epoll_ = -1;
};

// How many sockets may be open at once: `wanted`, or fewer when RLIMIT_NOFILE does not allow
// that even after raising the soft limit to the hard one.
std::size_t allowed_in_flight(std::size_t wanted) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return wanted;
  const rlim_t needed = static_cast<rlim_t>(wanted) + kSpareDescriptors;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < needed) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max == RLIM_INFINITY ? needed : limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= needed) return wanted;
  return limit.rlim_cur > 2 * kSpareDescriptors
             ? static_cast<std::size_t>(limit.rlim_cur - kSpareDescriptors)
             : static_cast<std::size_t>(std::max<rlim_t>(limit.rlim_cur / 2, 1));
}

}  // namespace

std::string_view to_string(Protocol protocol) {
  switch (protocol) {
    case Protocol::tcp:
      return "TCP";
    case Protocol::udp:
      return "UDP";
  }
  return "?";
}

std::string_view to_string(ProbeOutcome outcome) {
  switch (outcome) {
    case ProbeOutcome::ok:
      return "ok";
    case ProbeOutcome::refused:
      return "refused";
    case ProbeOutcome::unreachable:
      return "unreachable";
    case ProbeOutcome::timeout:
      return "timeout";
    case ProbeOutcome::reset:
      return "reset";
    case ProbeOutcome::bad_reply:
      return "bad_reply";
    case ProbeOutcome::error:
      return "error";
  }
  return "?";
}

std::string ProbeResult::describe() const {
  const std::string more = detail.empty() ? "" : " (" + detail + ")";
  switch (outcome) {
    case ProbeOutcome::ok:
      return seen_client ? "ok, the server saw the client as " + seen_client->to_string() : "ok";
    case ProbeOutcome::refused:
      return "connection refused";
    case ProbeOutcome::unreachable:
      return errno_text(error);
    case ProbeOutcome::timeout:
      return "no answer within " +
             std::to_string(
                 std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()) +
             " ms" + more;
    case ProbeOutcome::reset:
      return (error != 0 ? "connection reset before a whole answer"
                         : "connection closed before a whole answer") +
             more;
    case ProbeOutcome::bad_reply:
      return "unexpected answer: " + detail;
    case ProbeOutcome::error:
      return detail.empty() ? errno_text(error) : detail + ": " + errno_text(error);
  }
  return std::string(to_string(outcome));
}

std::vector<ProbeResult> run_probes(const std::vector<ProbeSource>& sources,
                                    const std::vector<ProbeTarget>& targets,
                                    const std::vector<Probe>& probes, const ProbeOptions& options) {
  for (std::size_t i = 0; i < probes.size(); ++i) {
    if (probes[i].source >= sources.size() || probes[i].target >= targets.size()) {
      throw std::out_of_range("probe " + std::to_string(i) + " names source " +
                              std::to_string(probes[i].source) + " and target " +
                              std::to_string(probes[i].target) + ", but there are " +
                              std::to_string(sources.size()) + " sources and " +
                              std::to_string(targets.size()) + " targets");
    }
  }
  if (probes.empty()) return {};
  const std::size_t in_flight = allowed_in_flight(std::max<std::size_t>(options.max_in_flight, 1));

  // A thread of its own: it switches namespaces freely and is discarded afterwards.
  std::vector<ProbeResult> results;
  std::exception_ptr failure;
  std::thread([&] {
    try {
      results = Engine(sources, targets, probes, options, in_flight).run();
    } catch (...) {
      failure = std::current_exception();
    }
  }).join();
  if (failure) std::rethrow_exception(failure);
  return results;
}

}  // namespace flatnet::emulator
