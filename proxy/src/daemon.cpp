#include "flatnet/proxy/daemon.hpp"

#include <ifaddrs.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <set>

#include "flatnet/netmodel/error.hpp"
#include "flatnet/netmodel/socket_address.hpp"
#include "flatnet/proxy/log.hpp"
#include "flatnet/proxy/source.hpp"

namespace flatnet::proxy {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

std::string milliseconds_text(std::chrono::nanoseconds d) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1fms", std::chrono::duration<double, std::milli>(d).count());
  return text;
}

bool digits(std::string_view s, std::size_t at, std::size_t count) {
  if (at + count > s.size()) return false;
  for (std::size_t i = at; i < at + count; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
  }
  return true;
}

int number_at(std::string_view s, std::size_t at, std::size_t count) {
  int value = 0;
  for (std::size_t i = at; i < at + count; ++i)
    value = value * 10 + (s[i] - '0');
  return value;
}

// The addresses of this host inside any of `prefixes` (the node port addresses).
std::vector<netmodel::IpAddress> local_addresses_in(
    const std::vector<netmodel::IpPrefix>& prefixes) {
  std::vector<netmodel::IpAddress> addresses;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) {
    log::error("health", "list local addresses: " + std::string(std::strerror(errno)));
    return addresses;
  }
  for (const ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr) continue;
    if (a->ifa_addr->sa_family != AF_INET && a->ifa_addr->sa_family != AF_INET6) continue;
    sockaddr_storage storage{};
    std::memcpy(&storage, a->ifa_addr,
                a->ifa_addr->sa_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
    const auto ip = netmodel::SocketAddress::address_of(storage);
    const bool inside = std::any_of(prefixes.begin(), prefixes.end(),
                                    [&](const netmodel::IpPrefix& p) { return p.contains(ip); });
    if (inside && std::find(addresses.begin(), addresses.end(), ip) == addresses.end()) {
      addresses.push_back(ip);
    }
  }
  ::freeifaddrs(list);
  std::sort(addresses.begin(), addresses.end());
  return addresses;
}

HttpResponse not_found() {
  return {404, "text/plain; charset=utf-8", "404 page not found\n"};
}

}  // namespace

// --- time ---

std::string format_rfc3339(WallTime time) {
  const auto since = time.time_since_epoch();
  auto seconds = std::chrono::floor<std::chrono::seconds>(since);
  const auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(since - seconds).count();
  const std::time_t t = static_cast<std::time_t>(seconds.count());
  tm utc{};
  ::gmtime_r(&t, &utc);
  char text[64];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
  std::string out = text;
  if (nanos > 0) {
    char fraction[32];
    std::snprintf(fraction, sizeof fraction, ".%09lld", static_cast<long long>(nanos));
    std::string f = fraction;
    while (f.back() == '0')
      f.pop_back();
    out += f;
  }
  return out + "Z";
}

std::optional<WallTime> parse_rfc3339(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)
  if (!digits(s, 0, 4) || s.size() < 20 || s[4] != '-' || !digits(s, 5, 2) || s[7] != '-' ||
      !digits(s, 8, 2) || (s[10] != 'T' && s[10] != 't') || !digits(s, 11, 2) || s[13] != ':' ||
      !digits(s, 14, 2) || s[16] != ':' || !digits(s, 17, 2)) {
    return std::nullopt;
  }
  tm fields{};
  fields.tm_year = number_at(s, 0, 4) - 1900;
  fields.tm_mon = number_at(s, 5, 2) - 1;
  fields.tm_mday = number_at(s, 8, 2);
  fields.tm_hour = number_at(s, 11, 2);
  fields.tm_min = number_at(s, 14, 2);
  fields.tm_sec = number_at(s, 17, 2);
  if (fields.tm_mon > 11 || fields.tm_mday < 1 || fields.tm_mday > 31 || fields.tm_hour > 23 ||
      fields.tm_min > 59 || fields.tm_sec > 60) {
    return std::nullopt;
  }
  std::size_t i = 19;
  std::int64_t nanos = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    std::size_t count = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      if (count < 9) nanos = nanos * 10 + (s[i] - '0');
      ++count;
      ++i;
    }
    if (count == 0) return std::nullopt;
    for (std::size_t k = count; k < 9; ++k)
      nanos *= 10;
  }
  int offset_minutes = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i < s.size() && (s[i] == '+' || s[i] == '-') && digits(s, i + 1, 2) &&
             i + 3 < s.size() && s[i + 3] == ':' && digits(s, i + 4, 2)) {
    offset_minutes = number_at(s, i + 1, 2) * 60 + number_at(s, i + 4, 2);
    if (s[i] == '-') offset_minutes = -offset_minutes;
    i += 6;
  } else {
    return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  const std::time_t t = ::timegm(&fields);
  return WallTime(std::chrono::duration_cast<WallTime::duration>(
      std::chrono::seconds(t) - std::chrono::minutes(offset_minutes) +
      std::chrono::nanoseconds(nanos)));
}

// --- proxier health ---

ProxierHealth::ProxierHealth(const Clock& clock, std::chrono::milliseconds timeout)
    : clock_(clock), timeout_(timeout) {}

void ProxierHealth::queued() {
  std::lock_guard lock(mutex_);
  if (!oldest_queued_) oldest_queued_ = clock_.now();
}

void ProxierHealth::updated() {
  std::lock_guard lock(mutex_);
  oldest_queued_.reset();
  last_updated_ = clock_.wall();
}

ProxierHealth::Status ProxierHealth::status() const {
  std::lock_guard lock(mutex_);
  Status status;
  status.current_time = clock_.wall();
  status.healthy = !oldest_queued_ || clock_.now() - *oldest_queued_ < timeout_;
  status.last_updated = status.healthy ? status.current_time : last_updated_;
  return status;
}

HttpResponse ProxierHealth::response() const {
  const Status s = status();
  json body = {{"lastUpdated", s.last_updated == WallTime{} ? "" : format_rfc3339(s.last_updated)},
               {"currentTime", format_rfc3339(s.current_time)}};
  return {s.healthy ? 200 : 503, "application/json", body.dump() + "\n"};
}

// --- service health check node ports ---

std::vector<ServiceHealthCheck> health_checks(const ProxyState& state) {
  std::map<std::pair<std::string, std::string>, std::pair<std::uint16_t, std::set<IpAddress>>>
      by_service;
  for (const auto& [name, info] : state.services) {
    if (info.health_check_node_port == 0) continue;
    auto& entry = by_service[{name.namespace_, name.name}];
    entry.first = info.health_check_node_port;
    // Ready local endpoints only, as kube-proxy counts them (LocalReadyEndpoints): a node whose
    // endpoints are all terminating must fail the check, so load balancers drain it.
    for (const auto& endpoint : state.endpoints_of(name)) {
      if (endpoint.is_local && endpoint.ready) entry.second.insert(endpoint.ip);
    }
  }
  std::vector<ServiceHealthCheck> checks;
  for (const auto& [key, entry] : by_service) {
    checks.push_back({key.first, key.second, entry.first, entry.second.size()});
  }
  return checks;
}

ServiceHealthServer::ServiceHealthServer(HttpServer& server,
                                         std::vector<netmodel::IpAddress> addresses,
                                         const ProxierHealth& health)
    : server_(server), addresses_(std::move(addresses)), health_(health) {}

ServiceHealthServer::~ServiceHealthServer() {
  std::map<std::pair<std::string, std::string>, Instance> services;
  {
    std::lock_guard lock(mutex_);
    services.swap(services_);
  }
  for (const auto& [key, instance] : services) {
    for (const auto id : instance.listeners)
      server_.close(id);
  }
}

void ServiceHealthServer::sync(const std::vector<ServiceHealthCheck>& checks) {
  std::map<std::pair<std::string, std::string>, const ServiceHealthCheck*> wanted;
  for (const auto& check : checks)
    wanted[{check.namespace_, check.name}] = &check;

  // Closing waits for the server's thread, whose handlers take mutex_: close outside the lock.
  std::vector<HttpServer::ListenerId> to_close;
  std::vector<const ServiceHealthCheck*> to_open;
  {
    std::lock_guard lock(mutex_);
    for (auto it = services_.begin(); it != services_.end();) {
      const auto w = wanted.find(it->first);
      if (w == wanted.end() || w->second->port != it->second.port) {
        log::info(2, "health",
                  "closing health check port " + std::to_string(it->second.port) + " of " +
                      it->first.first + "/" + it->first.second);
        to_close.insert(to_close.end(), it->second.listeners.begin(), it->second.listeners.end());
        it = services_.erase(it);
      } else {
        it->second.local_endpoints = w->second->local_endpoints;
        ++it;
      }
    }
    for (const auto& [key, check] : wanted) {
      if (!services_.contains(key)) to_open.push_back(check);
    }
  }
  for (const auto id : to_close)
    server_.close(id);

  for (const ServiceHealthCheck* check : to_open) {
    Instance instance{check->port, check->local_endpoints, {}};
    const std::string service = check->namespace_ + "/" + check->name;
    try {
      for (const auto& address : addresses_) {
        const auto namespace_ = check->namespace_;
        const auto name = check->name;
        instance.listeners.push_back(server_
                                         .listen(address, check->port,
                                                 [this, namespace_, name](const HttpRequest&) {
                                                   return answer(namespace_, name);
                                                 })
                                         .id);
      }
    } catch (const std::exception& e) {
      log::error("health", "open health check port " + std::to_string(check->port) + " of " +
                               service + ": " + e.what() + " (tried again at the next sync)");
      for (const auto id : instance.listeners)
        server_.close(id);
      continue;
    }
    log::info(2, "health",
              "opened health check port " + std::to_string(check->port) + " of " + service);
    std::lock_guard lock(mutex_);
    services_[{check->namespace_, check->name}] = std::move(instance);
  }
}

std::map<std::string, std::uint16_t> ServiceHealthServer::open_ports() const {
  std::lock_guard lock(mutex_);
  std::map<std::string, std::uint16_t> ports;
  for (const auto& [key, instance] : services_)
    ports[key.first + "/" + key.second] = instance.port;
  return ports;
}

HttpResponse ServiceHealthServer::answer(const std::string& namespace_,
                                         const std::string& name) const {
  std::size_t count = 0;
  {
    std::lock_guard lock(mutex_);
    const auto it = services_.find({namespace_, name});
    if (it != services_.end()) count = it->second.local_endpoints;
  }
  const bool proxy_healthy = health_.status().healthy;
  json body = {{"service", {{"namespace", namespace_}, {"name", name}}},
               {"localEndpoints", count},
               {"serviceProxyHealthy", proxy_healthy}};
  return {count != 0 && proxy_healthy ? 200 : 503, "application/json", body.dump() + "\n"};
}

// --- the sync loop ---

SyncLoop::SyncLoop(const ProxyConfig& config, std::string hostname, Proxier& proxier,
                   const Clock& clock, Metrics& metrics, ProxierHealth& health)
    : config_(config),
      hostname_(std::move(hostname)),
      proxier_(proxier),
      clock_(clock),
      metrics_(metrics),
      health_(health),
      started_(clock.wall()) {}

std::chrono::milliseconds SyncLoop::retry_delay() const {
  return std::max<milliseconds>(config_.min_sync_period, std::chrono::seconds(1));
}

void SyncLoop::update(const netmodel::ServiceObjects& objects, WallTime seen) {
  std::vector<std::string> notes;
  ProxyState state = build_state(objects, hostname_, &notes);
  for (const auto& note : notes)
    log::info(4, "sync", note);
  const StateChanges changes = diff(desired_, state);
  metrics_.count_changes(changes.services_changed, changes.endpoints_changed);

  // Trigger times of the EndpointSlice changes behind changed service ports.
  std::set<std::pair<std::string, std::string>> changed_services;
  for (const auto& name : changes.changed)
    changed_services.insert({name.namespace_, name.name});
  const auto slice_key = [](const netmodel::EndpointSlice& s) {
    return std::make_pair(s.meta.namespace_, s.meta.name);
  };
  std::map<std::pair<std::string, std::string>, const netmodel::EndpointSlice*> before;
  for (const auto& slice : objects_.endpoint_slices)
    before[slice_key(slice)] = &slice;
  for (const auto& slice : objects.endpoint_slices) {
    if (!changed_services.contains({slice.meta.namespace_, slice.service_name()})) continue;
    const auto old = before.find(slice_key(slice));
    const bool changed = old == before.end() || !(*old->second == slice);
    if (old != before.end()) before.erase(old);
    if (!changed) continue;
    const auto annotation = slice.meta.annotations.find(std::string(kLastChangeTriggerTime));
    std::optional<WallTime> trigger;
    if (annotation != slice.meta.annotations.end()) trigger = parse_rfc3339(annotation->second);
    // A change made before the proxy started measures the proxy's absence, not its programming
    // (kube-proxy ignores those too).
    if (trigger && *trigger < started_) continue;
    pending_triggers_.push_back(trigger.value_or(seen));
  }
  for (const auto& [key, slice] : before) {  // removed slices
    if (changed_services.contains({slice->meta.namespace_, slice->service_name()})) {
      pending_triggers_.push_back(seen);
    }
  }

  const bool first = !has_input_;
  has_input_ = true;
  desired_ = std::move(state);
  objects_ = objects;
  if (first || !changes.empty()) {
    dirty_ = true;
    health_.queued();
    metrics_.set_last_queued(clock_.wall());
    log::info(4, "sync",
              "queued " + std::to_string(changes.changed.size()) + " changed service ports");
  }
}

std::optional<SteadyTime> SyncLoop::next_sync() const {
  if (!has_input_) return std::nullopt;
  std::optional<SteadyTime> next;
  if (dirty_ || need_full_) {
    // Never synced: due at once (the clock's epoch is before any now()).
    SteadyTime at = last_attempt_ ? *last_attempt_ + config_.min_sync_period : SteadyTime{};
    if (retry_at_) at = std::max(at, *retry_at_);
    next = at;
  }
  if (last_full_) {
    const SteadyTime periodic = *last_full_ + config_.sync_period;
    if (!next || periodic < *next) next = periodic;
  }
  return next;
}

bool SyncLoop::run_due() {
  const SteadyTime now = clock_.now();
  const auto due = next_sync();
  if (!due || now < *due) return false;
  const bool full = need_full_ || !last_full_ || now >= *last_full_ + config_.sync_period;
  const StateChanges changes = diff(synced_, desired_);
  if (!full && changes.empty()) {
    // The objects changed and changed back: nothing to program, nothing to measure.
    dirty_ = false;
    pending_triggers_.clear();
    health_.updated();
    return false;
  }

  const auto started = std::chrono::steady_clock::now();
  SyncOutcome outcome = proxier_.sync({desired_, changes, full});
  const auto measured = std::chrono::steady_clock::now() - started;
  const auto duration = outcome.duration.count() > 0
                            ? outcome.duration
                            : std::chrono::duration_cast<std::chrono::nanoseconds>(measured);
  last_attempt_ = now;
  if (full) last_full_ = now;
  const bool was_full = full || !outcome.partial;
  metrics_.observe_sync(duration, was_full);

  if (!outcome.ok) {
    need_full_ = true;
    retry_at_ = now + retry_delay();
    if (outcome.restore_failed) metrics_.count_sync_failure();
    log::error("sync", std::string(full ? "full" : "partial") + " sync failed: " + outcome.error +
                           " (a full sync follows in " + format_duration(retry_delay()) + ")");
    return true;
  }
  synced_ = desired_;
  need_full_ = false;
  dirty_ = false;
  retry_at_.reset();
  health_.updated();
  const WallTime wall = clock_.wall();
  metrics_.set_last_sync(wall);
  for (const WallTime trigger : pending_triggers_) {
    metrics_.observe_network_programming(
        std::chrono::duration_cast<std::chrono::nanoseconds>(wall - trigger));
  }
  pending_triggers_.clear();
  log::info(2, "sync",
            std::string(was_full ? "full" : "partial") + " sync of " +
                std::to_string(desired_.services.size()) + " service ports (" +
                std::to_string(changes.changed.size()) + " changed, " +
                std::to_string(outcome.rules_written) + " rules) in " +
                milliseconds_text(duration));
  return true;
}

// --- the process ---

void block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

std::string node_name(const ProxyConfig& config) {
  std::string name = config.hostname;
  if (name.empty()) {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) == 0) name = host;
  }
  for (char& c : name)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

int run_cleanup(Proxier& proxier) {
  std::string error;
  if (!proxier.cleanup(error)) {
    log::error("cleanup", "cleanup incomplete: " + error);
    return 1;
  }
  log::info("cleanup", "removed every " + proxier.mode() + " rule and chain flatnet-proxy made");
  return 0;
}

Daemon::Daemon(ProxyConfig config, std::unique_ptr<Proxier> proxier)
    : config_(std::move(config)), proxier_(std::move(proxier)) {
  stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (stop_fd_ < 0) netmodel::throw_errno(errno, "eventfd");
}

Daemon::~Daemon() {
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

void Daemon::stop() {
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(stop_fd_, &one, sizeof one);
}

int Daemon::run() {
  SystemClock clock;
  Metrics metrics;
  ProxierHealth health(clock, 2 * config_.sync_period);
  const std::string hostname = node_name(config_);
  SyncLoop loop(config_, hostname, *proxier_, clock, metrics, health);
  const std::string mode = proxier_->mode();

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  const int signal_fd = ::signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_fd < 0) {
    log::error("daemon", "signalfd: " + std::string(std::strerror(errno)));
    return 1;
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } signal_closer{signal_fd};

  HttpServer http;
  const auto healthz = [&](const HttpRequest& request) -> HttpResponse {
    if (request.path == "/healthz") {
      HttpResponse response = health.response();
      metrics.count_healthz(response.status);
      return response;
    }
    if (request.path == "/livez") {
      HttpResponse response = health.response();
      metrics.count_livez(response.status);
      return response;
    }
    return not_found();
  };
  std::unique_ptr<ServiceHealthServer> service_health;
  std::unique_ptr<FileSource> source;
  try {
    const BindAddress healthz_address =
        parse_bind_address(config_.healthz_bind_address, kDefaultHealthzPort);
    if (healthz_address.enabled()) {
      http.listen(healthz_address.ip, healthz_address.port, healthz);
      log::info("daemon", "serving /healthz and /livez on " + healthz_address.to_string());
    }
    const BindAddress metrics_address =
        parse_bind_address(config_.metrics_bind_address, kDefaultMetricsPort);
    if (metrics_address.enabled()) {
      http.listen(metrics_address.ip, metrics_address.port,
                  [&](const HttpRequest& request) -> HttpResponse {
                    if (request.path == "/metrics") {
                      return {200, kPrometheusContentType, metrics.render()};
                    }
                    if (request.path == "/proxyMode")
                      return {200, "text/plain; charset=utf-8", mode};
                    return healthz(request);
                  });
      log::info("daemon", "serving /metrics and /proxyMode on " + metrics_address.to_string());
    }
    std::vector<netmodel::IpAddress> health_addresses = {netmodel::IpAddress()};
    if (!config_.nodeport_addresses.empty()) {
      health_addresses = local_addresses_in(config_.nodeport_addresses);
      if (health_addresses.empty()) {
        log::warning("health",
                     "no local address inside --nodeport-addresses: health check "
                     "ports are not opened");
      }
    }
    service_health = std::make_unique<ServiceHealthServer>(http, health_addresses, health);
    source = std::make_unique<FileSource>(config_.source_path);
  } catch (const std::exception& e) {
    log::error("daemon", e.what());
    return 1;
  }
  log::info("daemon", "flatnet-proxy " + std::string(FLATNET_VERSION) + " in " + mode +
                          " mode on node " + hostname + ", following " + config_.source_path);

  if (auto update = source->read()) loop.update(update->objects, update->seen);
  for (;;) {
    int timeout = -1;
    if (const auto next = loop.next_sync()) {
      const auto wait = std::chrono::ceil<milliseconds>(*next - clock.now());
      timeout = static_cast<int>(std::clamp<long long>(wait.count(), 0, 3'600'000));
    }
    pollfd fds[3] = {{source->fd(), POLLIN, 0}, {signal_fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(fds, 3, timeout) < 0 && errno != EINTR) {
      log::error("daemon", "poll: " + std::string(std::strerror(errno)));
      return 1;
    }
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo info{};
      [[maybe_unused]] auto n = ::read(signal_fd, &info, sizeof info);
      log::info("daemon", std::string("received ") + ::strsignal(static_cast<int>(info.ssi_signo)) +
                              ": stopping, the rules stay in place");
      return 0;
    }
    if (fds[2].revents & POLLIN) {
      log::info("daemon", "stopping, the rules stay in place");
      return 0;
    }
    if (fds[0].revents & POLLIN) {
      if (auto update = source->next()) loop.update(update->objects, update->seen);
    }
    if (loop.run_due()) service_health->sync(health_checks(loop.synced()));
  }
}

}  // namespace flatnet::proxy
