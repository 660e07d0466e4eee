#pragma once

// The applier: makes the kernel match a cluster's declared state. Every operation converges:
// it computes the plan (plan.hpp) from the declared objects and what runs, then creates what is
// missing and removes what is extra, so running it twice changes nothing the second time.
//
//   fabric namespace      bridge fabric0 joining every node's uplink (and pods0, the shared
//                         pod segment, in flat mode)
//   node namespaces       eth0 (the uplink) with the node address, forwarding on, the pod
//                         bridge flat0, routes to the other nodes' pod subnets (routed mode)
//   pod namespaces        made as a container runtime makes them: the namespace, CNI ADD with
//                         the node's conflist (run inside the node), the workload started inside
//
// Nothing is connected to the host's own namespace, and no route leads to its interfaces.

#include <chrono>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "flatnet/emulator/plan.hpp"
#include "flatnet/emulator/state.hpp"
#include "flatnet/netmodel/cluster_file.hpp"

namespace flatnet::emulator {

// Where the programs the emulator runs are found.
struct Toolbox {
  std::vector<std::string> cni_path;  // CNI_PATH: the plugins' directories
  std::string netexec;                // the pod workload
  // The defaults: the directory of the running `flatnet` executable first (a build tree works
  // uninstalled), then /usr/local/bin, /opt/cni/bin and Debian's /usr/lib/cni.
  static Toolbox discover();
};

// Progress and outcome lines: `progress` is transient (a terminal shows it in place), `note`
// says what changed and stays, `warn` goes to stderr. The applier calls them from its worker
// threads: implementations must be thread-safe.
class Reporter {
 public:
  virtual ~Reporter() = default;
  virtual void note(const std::string& line) = 0;
  virtual void warn(const std::string& line) = 0;
  virtual void progress(const std::string& what, std::size_t done, std::size_t total) = 0;
};

// What one converge did.
struct ApplyReport {
  std::size_t nodes_created = 0, nodes_removed = 0;
  std::size_t pods_created = 0, pods_removed = 0, workloads_restarted = 0;
  std::size_t repaired = 0;           // links brought up again, routes and addresses put back
  std::vector<std::string> failures;  // pods that could not be placed or created, and why
  bool changed() const {
    return nodes_created || nodes_removed || pods_created || pods_removed || workloads_restarted ||
           repaired;
  }
};

struct ApplyOptions {
  std::size_t parallelism = 0;  // pods made at once; 0: twice the CPUs, at least 4
  // How long `up` waits for every pod to answer on its first port after its workload started.
  std::chrono::milliseconds answer_timeout{10000};
};

class Cluster {
 public:
  // Operates on the cluster whose state `state` holds (locked by the caller).
  Cluster(ClusterState& state, Toolbox tools, Reporter& reporter, ApplyOptions options = {});

  // Makes the cluster exactly what `declared` says: creates it when new, reconciles it
  // otherwise. Fields of the spec that cannot change in a running cluster (podCIDR, nodeCIDR,
  // network, cni, mtu...) are refused with a message naming them. The pods named in `evict`
  // (pod keys) are removed first, so that a Deployment's controller replaces them.
  ApplyReport converge(StoredCluster declared, const std::vector<std::string>& evict = {});

  // The declared state now stored, if the cluster exists.
  std::optional<StoredCluster> declared() const { return state_.load(); }

 private:
  ClusterState& state_;
  Toolbox tools_;
  Reporter& reporter_;
  ApplyOptions options_;
};

// What `down` removed.
struct DownReport {
  std::size_t namespaces = 0, processes = 0;
  bool state_removed = false;
  std::vector<std::string> errors;
};

// Removes everything cluster `name` owns: its workloads (by recorded pid and start time), every
// namespace named flatnet-<name>-..., and /run/flatnet/<name>. Works on a half-made cluster
// and on one already gone (then it removes nothing and says so).
DownReport tear_down(const std::string& name, Reporter& reporter);

// Refuses changes a running cluster cannot take; throws std::invalid_argument naming the field.
void check_spec_change(const netmodel::ClusterSpec& running, const netmodel::ClusterSpec& wanted);

}  // namespace flatnet::emulator
