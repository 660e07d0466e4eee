#include "flatnet/proxy/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <sstream>

namespace flatnet::proxy {
namespace {

// Go's shortest form of a float, as the Prometheus client writes sample values.
std::string number(double value) {
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (std::isnan(value)) return "NaN";
  char buffer[64];
  const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  if (ec != std::errc()) return "NaN";
  return std::string(buffer, end);
}

double seconds(std::chrono::nanoseconds d) {
  return std::chrono::duration<double>(d).count();
}

double unix_seconds(Metrics::WallTime t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

void header(std::ostringstream& out, const std::string& name, const std::string& type,
            const std::string& help) {
  out << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
}

void histogram(std::ostringstream& out, const std::string& name, const std::string& help,
               const Histogram& h) {
  header(out, name, "histogram", help);
  const auto counts = h.cumulative_counts();
  for (std::size_t i = 0; i < counts.size(); ++i) {
    out << name << "_bucket{le=\"" << number(h.upper_bounds()[i]) << "\"} " << counts[i] << "\n";
  }
  out << name << "_bucket{le=\"+Inf\"} " << h.count() << "\n";
  out << name << "_sum " << number(h.sum()) << "\n";
  out << name << "_count " << h.count() << "\n";
}

void gauge(std::ostringstream& out, const std::string& name, const std::string& help,
           double value) {
  header(out, name, "gauge", help);
  out << name << " " << number(value) << "\n";
}

void counter(std::ostringstream& out, const std::string& name, const std::string& help,
             std::uint64_t value) {
  header(out, name, "counter", help);
  out << name << " " << value << "\n";
}

void counter_by_code(std::ostringstream& out, const std::string& name, const std::string& help,
                     const std::map<int, std::uint64_t>& values) {
  header(out, name, "counter", help);
  for (const auto& [code, value] : values) {
    out << name << "{code=\"" << code << "\"} " << value << "\n";
  }
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size(), 0) {
  std::sort(bounds_.begin(), bounds_.end());
}

void Histogram::observe(double value) {
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
  if (it != bounds_.end()) ++counts_[static_cast<std::size_t>(it - bounds_.begin())];
  ++count_;
  sum_ += value;
}

std::vector<std::uint64_t> Histogram::cumulative_counts() const {
  std::vector<std::uint64_t> cumulative(counts_.size());
  std::uint64_t running = 0;
  for (std::size_t i = 0; i < counts_.size(); ++i) {
    running += counts_[i];
    cumulative[i] = running;
  }
  return cumulative;
}

std::vector<double> exponential_buckets(double start, double factor, std::size_t count) {
  std::vector<double> bounds;
  double bound = start;
  for (std::size_t i = 0; i < count; ++i) {
    bounds.push_back(bound);
    bound *= factor;
  }
  return bounds;
}

std::vector<double> sync_duration_buckets() {
  return exponential_buckets(0.001, 2, 15);
}

std::vector<double> network_programming_buckets() {
  std::vector<double> bounds = {0.25, 0.5};
  for (int s = 1; s <= 59; ++s)
    bounds.push_back(s);
  for (int s = 60; s <= 115; s += 5)
    bounds.push_back(s);
  for (int s = 120; s <= 300; s += 30)
    bounds.push_back(s);
  return bounds;
}

Metrics::Metrics() = default;

void Metrics::observe_sync(std::chrono::nanoseconds duration, bool full) {
  std::lock_guard lock(mutex_);
  sync_.observe(seconds(duration));
  (full ? full_sync_ : partial_sync_).observe(seconds(duration));
}

void Metrics::set_last_sync(WallTime when) {
  std::lock_guard lock(mutex_);
  last_sync_seconds_ = unix_seconds(when);
}

void Metrics::set_last_queued(WallTime when) {
  std::lock_guard lock(mutex_);
  last_queued_seconds_ = unix_seconds(when);
}

void Metrics::observe_network_programming(std::chrono::nanoseconds latency) {
  std::lock_guard lock(mutex_);
  network_programming_.observe(std::max(0.0, seconds(latency)));
}

void Metrics::count_changes(std::size_t services, std::size_t endpoints) {
  std::lock_guard lock(mutex_);
  service_changes_ += services;
  endpoint_changes_ += endpoints;
}

void Metrics::count_sync_failure() {
  std::lock_guard lock(mutex_);
  ++sync_failures_;
}

void Metrics::count_healthz(int status) {
  std::lock_guard lock(mutex_);
  ++healthz_[status];
}

void Metrics::count_livez(int status) {
  std::lock_guard lock(mutex_);
  ++livez_[status];
}

std::string Metrics::render() const {
  std::lock_guard lock(mutex_);
  std::ostringstream out;
  histogram(out, "kubeproxy_sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds",
            sync_);
  histogram(out, "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs", full_sync_);
  histogram(out, "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs", partial_sync_);
  gauge(out, "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "The last time proxy rules were successfully synced", last_sync_seconds_);
  gauge(out, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
        "The last time a sync of proxy rules was queued", last_queued_seconds_);
  histogram(out, "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds", network_programming_);
  counter(out, "kubeproxy_sync_proxy_rules_service_changes_total",
          "Cumulative proxy rules Service changes", service_changes_);
  counter(out, "kubeproxy_sync_proxy_rules_endpoint_changes_total",
          "Cumulative proxy rules Endpoint changes", endpoint_changes_);
  counter(out, "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
          "Cumulative proxy iptables restore failures", sync_failures_);
  counter_by_code(out, "kubeproxy_proxy_healthz_total", "Cumulative proxy healthz HTTP status",
                  healthz_);
  counter_by_code(out, "kubeproxy_proxy_livez_total", "Cumulative proxy livez HTTP status", livez_);
  return out.str();
}

}  // namespace flatnet::proxy
