#pragma once

// kube-proxy's metrics, under kube-proxy's names, in the Prometheus text format (version 0.0.4)
// that /metrics serves: sync durations (all, full and partial syncs), the time of the last sync
// and of the last queued change, network programming latency, change and failure counters.
// Dashboards and alerts written for kube-proxy read them unchanged. Thread-safe: the sync loop
// records, the HTTP thread renders.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace flatnet::proxy {

// A Prometheus histogram: counts of observations at or below each upper bound, plus +Inf.
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);

  const std::vector<double>& upper_bounds() const { return bounds_; }
  // Cumulative counts, one per upper bound (the +Inf bucket is count()).
  std::vector<std::uint64_t> cumulative_counts() const;
  std::uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;  // per bucket, not cumulative
  std::uint64_t count_ = 0;
  double sum_ = 0;
};

// start, start*factor, ... (`count` bounds): Prometheus' ExponentialBuckets.
std::vector<double> exponential_buckets(double start, double factor, std::size_t count);
// kube-proxy's sync buckets: 0.001 * 2^i for i in 0..14 (1 ms to 16.4 s).
std::vector<double> sync_duration_buckets();
// kube-proxy's network programming buckets: 0.25 s, 0.5 s, 1..59 s, 60..115 s by 5, 120..300 s
// by 30.
std::vector<double> network_programming_buckets();

class Metrics {
 public:
  using WallTime = std::chrono::system_clock::time_point;

  Metrics();

  // One sync that succeeded or failed, full or partial.
  void observe_sync(std::chrono::nanoseconds duration, bool full);
  // kubeproxy_sync_proxy_rules_last_timestamp_seconds: the last successful sync.
  void set_last_sync(WallTime when);
  // kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds: the last change waiting for a sync.
  void set_last_queued(WallTime when);
  // From a change's trigger time to the sync that programmed it.
  void observe_network_programming(std::chrono::nanoseconds latency);
  // Service ports and endpoint lists that changed in the source.
  void count_changes(std::size_t services, std::size_t endpoints);
  // kubeproxy_sync_proxy_rules_iptables_restore_failures_total.
  void count_sync_failure();
  // kubeproxy_proxy_healthz_total{code} and kubeproxy_proxy_livez_total{code}.
  void count_healthz(int status);
  void count_livez(int status);

  // Every metric in the Prometheus text exposition format.
  std::string render() const;

 private:
  mutable std::mutex mutex_;
  Histogram sync_{sync_duration_buckets()};
  Histogram full_sync_{sync_duration_buckets()};
  Histogram partial_sync_{sync_duration_buckets()};
  Histogram network_programming_{network_programming_buckets()};
  double last_sync_seconds_ = 0;
  double last_queued_seconds_ = 0;
  std::uint64_t service_changes_ = 0;
  std::uint64_t endpoint_changes_ = 0;
  std::uint64_t sync_failures_ = 0;
  std::map<int, std::uint64_t> healthz_{};
  std::map<int, std::uint64_t> livez_{};
};

// The content type of Metrics::render().
inline constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace flatnet::proxy
