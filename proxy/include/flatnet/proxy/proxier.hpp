#pragma once

// The seam between the daemon and a proxy mode. The daemon owns the inputs (the source, change
// tracking, scheduling, health and metrics); a mode only turns a ProxyState into kernel state.
// iptables/ is the first mode; userspace/ and nftables/ implement the same interface.

#include <chrono>
#include <string>

#include "flatnet/proxy/model.hpp"

namespace flatnet::proxy {

struct SyncRequest {
  const ProxyState& state;
  // What changed since the last successful sync. A mode may rewrite only these service ports.
  const StateChanges& changes;
  // Rewrite everything: the first sync, every sync period, and after any failure.
  bool full = true;
};

struct SyncOutcome {
  bool ok = true;
  std::string error{};   // what failed, for the log: `iptables-restore: line 12: ...`
  bool partial = false;  // only the changed service ports were (to be) rewritten
  // The kernel refused the ruleset (iptables-restore failed), as opposed to a failure around it.
  bool restore_failed = false;
  std::size_t rules_written = 0;
  std::chrono::nanoseconds duration{};
};

class Proxier {
 public:
  virtual ~Proxier() = default;
  // "iptables", as /proxyMode reports it.
  virtual std::string mode() const = 0;
  // Programs the node. Never throws for conditions the environment causes: a failed sync is
  // reported and the daemon retries with a full one.
  virtual SyncOutcome sync(const SyncRequest& request) = 0;
  // Removes every rule, chain and listener this mode created (--cleanup). Returns false and says
  // why in `error` when something could not be removed.
  virtual bool cleanup(std::string& error) = 0;
};

}  // namespace flatnet::proxy
