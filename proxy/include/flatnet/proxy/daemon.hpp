#pragma once

// flatnet-proxy's daemon: the sync loop that turns the source's objects into Proxier syncs on
// kube-proxy's schedule, the health kube-proxy reports (/healthz, /livez, the health check node
// ports of externalTrafficPolicy: Local services), and the process that joins them with the source,
// the HTTP servers and the signals.
//
// Scheduling follows kube-proxy's BoundedFrequencyRunner: at most one sync per min sync period
// (changes arriving meanwhile are batched into the next one), a full sync at least every sync
// period, after the first objects, and after a failed sync (retried after the min sync period, at
// least 1 s); partial syncs otherwise, carrying every change since the last successful sync. The
// clock and the Proxier are passed in, so the loop runs under a fake clock in unit tests.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "flatnet/netmodel/address.hpp"
#include "flatnet/netmodel/service.hpp"
#include "flatnet/proxy/config.hpp"
#include "flatnet/proxy/http.hpp"
#include "flatnet/proxy/metrics.hpp"
#include "flatnet/proxy/model.hpp"
#include "flatnet/proxy/proxier.hpp"

namespace flatnet::proxy {

using SteadyTime = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  // For scheduling and timeouts.
  virtual SteadyTime now() const = 0;
  // For timestamps that are shown (healthz, metrics).
  virtual WallTime wall() const = 0;
};

class SystemClock : public Clock {
 public:
  SteadyTime now() const override { return std::chrono::steady_clock::now(); }
  WallTime wall() const override { return std::chrono::system_clock::now(); }
};

// RFC 3339 in UTC with the fraction Go's RFC3339Nano keeps: "2024-05-01T12:00:03.25Z".
std::string format_rfc3339(WallTime time);
// "2024-05-01T12:00:03Z", "2024-05-01T14:00:03.5+02:00"; nullopt when `text` is not one.
std::optional<WallTime> parse_rfc3339(std::string_view text);

// The EndpointSlice annotation that carries when the change behind it was triggered.
inline constexpr std::string_view kLastChangeTriggerTime =
    "endpoints.kubernetes.io/last-change-trigger-time";

// kube-proxy's proxier health (healthcheck/proxier_health.go): healthy while nothing waits, and
// while the oldest change waiting for a sync has waited less than the timeout (2 x sync period).
// Thread-safe.
class ProxierHealth {
 public:
  ProxierHealth(const Clock& clock, std::chrono::milliseconds timeout);

  // A change waits for a sync (the oldest such moment is kept).
  void queued();
  // A sync programmed everything that waited.
  void updated();

  struct Status {
    bool healthy = true;
    // The last successful sync; shown as current_time while healthy, as kube-proxy does.
    WallTime last_updated{};
    WallTime current_time{};
  };
  Status status() const;
  // 200 or 503 with {"lastUpdated": "...", "currentTime": "..."}.
  HttpResponse response() const;

 private:
  const Clock& clock_;
  std::chrono::milliseconds timeout_;
  mutable std::mutex mutex_;
  std::optional<SteadyTime> oldest_queued_{};
  WallTime last_updated_{};
};

// One health check node port: kube-proxy answers it for a service with externalTrafficPolicy
// Local, 200 while the node has a usable local endpoint, 503 otherwise.
struct ServiceHealthCheck {
  std::string namespace_{};
  std::string name{};
  std::uint16_t port = 0;
  std::size_t local_endpoints = 0;  // distinct usable local endpoint IPs over the service's ports
  friend bool operator==(const ServiceHealthCheck&, const ServiceHealthCheck&) = default;
};
// The health checks `state` asks for, sorted by namespace and name.
std::vector<ServiceHealthCheck> health_checks(const ProxyState& state);

// Opens one listener per health check node port on each of `addresses`, and closes them as the
// services go. Any path is answered: {"service": {"namespace": ..., "name": ...},
// "localEndpoints": N, "serviceProxyHealthy": B}, 200 when N > 0 and the proxier is healthy.
class ServiceHealthServer {
 public:
  ServiceHealthServer(HttpServer& server, std::vector<netmodel::IpAddress> addresses,
                      const ProxierHealth& health);
  ~ServiceHealthServer();
  // A port that cannot be opened is logged and tried again at the next sync.
  void sync(const std::vector<ServiceHealthCheck>& checks);
  // The ports open now, by "namespace/name".
  std::map<std::string, std::uint16_t> open_ports() const;

 private:
  struct Instance {
    std::uint16_t port = 0;
    std::size_t local_endpoints = 0;
    std::vector<HttpServer::ListenerId> listeners{};
  };
  HttpResponse answer(const std::string& namespace_, const std::string& name) const;

  HttpServer& server_;
  std::vector<netmodel::IpAddress> addresses_;
  const ProxierHealth& health_;
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, std::string>, Instance> services_{};  // guarded by mutex_
};

// The sync loop, without threads or I/O of its own: feed it the source's objects with update(),
// and call run_due() when next_sync() has come.
class SyncLoop {
 public:
  // `hostname` marks local endpoints. The references must outlive the loop.
  SyncLoop(const ProxyConfig& config, std::string hostname, Proxier& proxier, const Clock& clock,
           Metrics& metrics, ProxierHealth& health);

  // A new version of the objects, read at `seen` (the trigger time of EndpointSlice changes that
  // carry no last-change-trigger-time annotation).
  void update(const netmodel::ServiceObjects& objects, WallTime seen);
  // When the next sync is due; nullopt before the first objects.
  std::optional<SteadyTime> next_sync() const;
  // Syncs when one is due at clock.now(); returns whether the Proxier was called.
  bool run_due();

  // The state programmed by the last successful sync.
  const ProxyState& synced() const { return synced_; }
  const ProxyState& desired() const { return desired_; }
  // The last sync failed: the next one is full.
  bool needs_full_sync() const { return need_full_; }
  std::chrono::milliseconds retry_delay() const;

 private:
  const ProxyConfig& config_;
  std::string hostname_;
  Proxier& proxier_;
  const Clock& clock_;
  Metrics& metrics_;
  ProxierHealth& health_;

  bool has_input_ = false;
  bool dirty_ = false;
  bool need_full_ = true;
  netmodel::ServiceObjects objects_{};
  ProxyState desired_{};
  ProxyState synced_{};
  std::optional<SteadyTime> last_attempt_{};
  std::optional<SteadyTime> last_full_{};
  std::optional<SteadyTime> retry_at_{};
  std::vector<WallTime> pending_triggers_{};  // of changes not yet programmed
  WallTime started_{};  // trigger times before this are older than the proxy: not measured
};

// Blocks SIGTERM and SIGINT in the calling thread, so that threads started later inherit the mask
// and Daemon::run receives them through a signalfd. Call it first in main.
void block_stop_signals();

// The whole process: the source, the sync loop, the HTTP servers, the signals.
class Daemon {
 public:
  Daemon(ProxyConfig config, std::unique_ptr<Proxier> proxier);
  ~Daemon();
  // Runs until SIGTERM, SIGINT or stop(); leaves the rules in place. Returns the exit code: 0
  // after a clean stop, 1 when startup failed (logged).
  int run();
  // Makes run() return; callable from any thread.
  void stop();

 private:
  ProxyConfig config_;
  std::unique_ptr<Proxier> proxier_;
  int stop_fd_ = -1;
};

// --cleanup: Proxier::cleanup, logged. Returns the exit code (0 when everything is gone).
int run_cleanup(Proxier& proxier);

// The node's name: the configured one, else the machine's hostname, in lower case.
std::string node_name(const ProxyConfig& config);

}  // namespace flatnet::proxy
