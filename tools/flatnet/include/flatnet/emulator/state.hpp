#pragma once

// What the emulator knows about a running cluster, under /run/flatnet/<cluster>/:
//   lock                    flock'ed by every command that changes the cluster
//   cluster.json            the spec, the node numbering and the declared objects
//   pods/<ns>_<name>.json   one record per pod: where it runs, its CNI result, its workload
//   nodes/<node>/           the node's CNI conflist and IPAM data directory
//   logs/<ns>_<name>.log    the pod workload's output
// Every file is replaced atomically (write a temporary, rename). A pod's record is written
// before its namespace is created, so `down` finds everything even after a crash halfway.

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "flatnet/emulator/plan.hpp"
#include "flatnet/netmodel/address.hpp"
#include "flatnet/netmodel/k8s.hpp"

namespace flatnet::emulator {

// The declared state of a cluster.
struct StoredCluster {
  netmodel::ClusterSpec spec;
  std::map<std::string, std::size_t> node_indexes;
  std::vector<netmodel::Pod> pods;  // standalone pods as declared
  std::vector<netmodel::Deployment> deployments;
  std::int64_t created = 0;  // unix seconds
};

// A process the emulator started, known by pid and start time (so a reused pid is never
// mistaken for it).
struct ProcessRef {
  pid_t pid = 0;
  std::uint64_t start_time = 0;  // field 22 of /proc/PID/stat
  bool alive() const;
};
// The start time of `pid`, or nullopt when it does not run.
std::optional<std::uint64_t> process_start_time(pid_t pid);

// pending: not placed on a node (the reason is in `message`); creating: its namespace and CNI
// ADD are under way (a record left in this phase by a crash is made again).
enum class PodPhase { pending, creating, running, failed };
std::string_view to_string(PodPhase phase);

struct PodRecord {
  PodIdentity id;
  std::string uid;
  std::string container_id;
  std::string netns;
  std::map<std::string, std::string> labels;
  std::vector<netmodel::ContainerPort> ports;
  PodPhase phase = PodPhase::creating;
  std::string message;  // why it failed
  std::optional<netmodel::IpAddress> ip;
  std::string host_veth;  // the node's end of the pod's veth, from the CNI result
  nlohmann::json cni_result;
  ProcessRef workload;
  int restarts = 0;
  std::int64_t created_unix = 0;

  std::string key() const { return pod_key(id.pod_namespace, id.name); }
};

class ClusterState {
 public:
  static constexpr const char* kRoot = "/run/flatnet";

  // Throws std::invalid_argument unless `cluster` is a valid cluster name (cluster_name_problem):
  // the name becomes a path, and nothing else may.
  explicit ClusterState(std::string cluster);

  const std::string& cluster() const { return cluster_; }
  const std::filesystem::path& dir() const { return dir_; }
  bool exists() const;
  // Cluster names with a state directory.
  static std::vector<std::string> list();

  // Creates the directory tree (idempotent).
  void create();
  // Takes the cluster's lock for this object's lifetime (blocking while another command holds
  // it); says so on stderr when it has to wait. With `create_cluster` the state directory is made
  // when missing (up); without, a cluster that is not (or no longer) running is an error.
  void lock(bool create_cluster = false);

  std::optional<StoredCluster> load() const;
  void save(const StoredCluster& cluster) const;

  std::vector<PodRecord> pods() const;
  std::optional<PodRecord> pod(const std::string& pod_namespace, const std::string& name) const;
  void save_pod(const PodRecord& pod) const;
  void remove_pod(const PodRecord& pod) const;

  std::filesystem::path node_dir(const std::string& node) const;
  std::filesystem::path conflist_path(const std::string& node) const;
  std::filesystem::path ipam_dir(const std::string& node) const;
  std::filesystem::path log_path(const PodRecord& pod) const;

  // Removes the whole directory.
  void remove() const;

  ClusterState(const ClusterState&) = delete;
  ClusterState& operator=(const ClusterState&) = delete;
  ~ClusterState();

 private:
  std::filesystem::path pod_path(const std::string& pod_namespace, const std::string& name) const;

  std::string cluster_;
  std::filesystem::path dir_;
  int lock_fd_ = -1;
};

// Writes `text` to `path` atomically (a temporary beside it, then rename).
void write_file_atomically(const std::filesystem::path& path, const std::string& text);

// The MAC of the pod's interface, from its CNI result (the interface inside its namespace).
std::optional<netmodel::MacAddress> pod_mac(const PodRecord& pod);

nlohmann::json to_json(const PodRecord& pod);
PodRecord pod_record_from_json(const nlohmann::json& json);

}  // namespace flatnet::emulator
