#include "flatnet/emulator/cluster.hpp"

#include <fcntl.h>
#include <linux/neighbour.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "flatnet/cni/error.hpp"
#include "flatnet/cni/runtime.hpp"
#include "flatnet/cni/types.hpp"
#include "flatnet/emulator/probe.hpp"
#include "flatnet/emulator/workload.hpp"
#include "flatnet/netmodel/error.hpp"
#include "flatnet/netmodel/netlink.hpp"
#include "flatnet/netmodel/netns.hpp"
#include "flatnet/netmodel/sysctl.hpp"

namespace flatnet::emulator {

namespace fs = std::filesystem;
using netmodel::IpPrefix;
using netmodel::Netlink;
using netmodel::NetNs;
using nlohmann::json;

// --- tools ---

Toolbox Toolbox::discover() {
  Toolbox tools;
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  std::vector<std::string> dirs;
  if (!ec) dirs.push_back(self.parent_path().string());
  for (const char* dir : {"/usr/local/bin", "/opt/cni/bin", "/usr/lib/cni"}) {
    if (std::find(dirs.begin(), dirs.end(), dir) == dirs.end()) dirs.push_back(dir);
  }
  tools.cni_path = dirs;
  for (const auto& dir : dirs) {
    const fs::path candidate = fs::path(dir) / "flatnet-netexec";
    if (::access(candidate.c_str(), X_OK) == 0) {
      tools.netexec = candidate.string();
      break;
    }
  }
  return tools;
}

// --- spec changes ---

void check_spec_change(const netmodel::ClusterSpec& running, const netmodel::ClusterSpec& wanted) {
  auto refuse = [&](const std::string& field, const std::string& from, const std::string& to) {
    throw std::invalid_argument("cluster " + running.name + ": " + field + " cannot change in a " +
                                "running cluster (it is " + from + ", the file says " + to +
                                "); run `flatnet down " + running.name + "` first");
  };
  if (running.pod_cidr != wanted.pod_cidr) {
    refuse("podCIDR", running.pod_cidr.to_string(), wanted.pod_cidr.to_string());
  }
  if (running.node_cidr != wanted.node_cidr) {
    refuse("nodeCIDR", running.node_cidr.to_string(), wanted.node_cidr.to_string());
  }
  if (running.service_cidr != wanted.service_cidr) {
    refuse("serviceCIDR", running.service_cidr.to_string(), wanted.service_cidr.to_string());
  }
  if (running.pod_subnet_prefix_length != wanted.pod_subnet_prefix_length) {
    refuse("podCIDRMaskSize", std::to_string(running.pod_subnet_prefix_length),
           std::to_string(wanted.pod_subnet_prefix_length));
  }
  if (running.network != wanted.network) {
    refuse("network", std::string(netmodel::to_string(running.network)),
           std::string(netmodel::to_string(wanted.network)));
  }
  if (running.cni != wanted.cni) {
    refuse("cni", std::string(netmodel::to_string(running.cni)),
           std::string(netmodel::to_string(wanted.cni)));
  }
  if (running.mtu != wanted.mtu) {
    refuse("mtu", std::to_string(running.mtu), std::to_string(wanted.mtu));
  }
}

namespace {

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::uint64_t monotonic_stamp() {
  static std::atomic<std::uint64_t> last{0};
  std::uint64_t now =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  std::uint64_t previous = last.load();
  while (true) {
    const std::uint64_t next = std::max(now, previous + 1);
    if (last.compare_exchange_weak(previous, next)) return next;
  }
}

std::string random_hex(std::mt19937_64& random, std::size_t length) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string text;
  for (std::size_t i = 0; i < length; ++i)
    text += kDigits[random() & 15];
  return text;
}

std::string random_uid(std::mt19937_64& random) {
  std::string hex = random_hex(random, 32);
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-4" + hex.substr(13, 3) + "-a" +
         hex.substr(17, 3) + "-" + hex.substr(20, 12);
}

// The clusters are IPv4 only: IPv6 is turned off in every namespace they make, so that no link
// gets link-local addresses, duplicate address detection and multicast listener reports (kernel
// work at every veth, and noise in every capture). `default` covers the links made later (a pod's
// veth), `all` those there already.
void disable_ipv6(const NetNs& ns, netmodel::Enter how) {
  netmodel::write_sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1", how);
  netmodel::write_sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1", how);
}

// The same for a namespace being made, from inside it: only `default` (its one link, lo, keeps
// ::1, which costs nothing), because writing `all` walks every link under the kernel's RTNL lock.
void disable_ipv6_here() {
  netmodel::write_sysctl(NetNs::current(), "net.ipv6.conf.default.disable_ipv6", "1",
                         netmodel::Enter::calling_thread);
}

NetNs open_or_create(const std::string& name, bool& created) {
  created = false;
  try {
    return NetNs::open_named(name);
  } catch (const std::system_error& e) {
    if (!netmodel::is_errno(e, ENOENT)) throw;
  }
  created = true;
  NetNs ns = NetNs::create(name);
  disable_ipv6(ns, netmodel::Enter::dedicated_thread);
  return ns;
}

bool add_address_once(Netlink& nl, int index, const IpPrefix& address) {
  try {
    nl.add_address(index, address);
    return true;
  } catch (const std::system_error& e) {
    if (!netmodel::is_errno(e, EEXIST)) throw;
    return false;
  }
}

// Runs `work(i)` for i in [0, count) on `threads` threads. `work` reports its own failures; an
// exception that escapes it anyway is rethrown after every item ran.
void parallel_for(std::size_t count, std::size_t threads,
                  const std::function<void(std::size_t)>& work) {
  if (count == 0) return;
  threads = std::max<std::size_t>(1, std::min(threads, count));
  std::atomic<std::size_t> next{0};
  std::mutex mutex;
  std::exception_ptr first_error;
  auto run = [&] {
    for (std::size_t i = next++; i < count; i = next++) {
      try {
        work(i);
      } catch (...) {
        // Every item still runs; the first error is rethrown once all threads are joined (an
        // exception escaping a thread would end the process).
        std::lock_guard lock(mutex);
        if (!first_error) first_error = std::current_exception();
      }
    }
  };
  std::vector<std::thread> pool;
  for (std::size_t t = 1; t < threads; ++t)
    pool.emplace_back(run);
  run();
  for (auto& thread : pool)
    thread.join();
  if (first_error) std::rethrow_exception(first_error);
}

std::size_t default_parallelism() {
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  return std::max<std::size_t>(4, 2 * cpus);
}

// The node's end of the pod's veth, from a CNI result: the interface without a sandbox that is
// not the bridge.
std::string host_veth_of(const cni::Result& result) {
  for (const auto& interface : result.interfaces) {
    if (interface.sandbox.empty() && interface.name != kPodBridge) return interface.name;
  }
  return "";
}

// The CNI attachment of a pod, as a kubelet's runtime describes it: its sandbox's id and
// namespace, eth0, and the K8S_POD_* arguments.
cni::Attachment attachment_of(const PodRecord& record) {
  cni::Attachment attachment;
  attachment.container_id = record.container_id;
  attachment.netns = NetNs::path_of(record.netns).string();
  attachment.ifname = "eth0";
  attachment.args = {{"IgnoreUnknown", "1"},
                     {"K8S_POD_NAMESPACE", record.id.pod_namespace},
                     {"K8S_POD_NAME", record.id.name},
                     {"K8S_POD_INFRA_CONTAINER_ID", record.container_id},
                     {"K8S_POD_UID", record.uid}};
  return attachment;
}

}  // namespace

// --- the applier ---

namespace {

// One converge: the handles and state it shares between steps and worker threads.
class Converger {
 public:
  Converger(ClusterState& state, const Toolbox& tools, Reporter& reporter,
            const ApplyOptions& options)
      : state_(state),
        tools_(tools),
        reporter_(reporter),
        options_(options),
        random_(std::random_device{}()) {}

  ApplyReport run(StoredCluster declared, const std::vector<std::string>& evict);

 private:
  void ensure_fabric();
  void remove_node(const std::string& name, std::size_t index);
  void ensure_node(const NodePlan& node);
  void add_fabric_link(Netlink& fabric, const NetNs& node_ns, const std::string& fabric_end,
                       const std::string& node_end, const std::string& bridge,
                       const std::string& alias);
  void ensure_routes(const NodePlan& node);
  void converge_pods(const StoredCluster& declared, const std::vector<std::string>& evict);
  void create_pod(PodRecord& record, const DesiredPod& desired);
  void remove_pod(const PodRecord& record);
  void restart_workload(PodRecord& record);
  void wait_until_answering(std::vector<PodRecord>& pods);
  void repair_pod_links(const std::vector<PodRecord>& pods);
  // `fresh`: keys of the pods made by this converge (their links have no entries yet).
  void sync_neighbors(const std::vector<PodRecord>& pods, const std::set<std::string>& changed,
                      const std::set<std::string>& fresh);
  // Drift put right: counted and said.
  void repaired(const std::string& what) {
    std::lock_guard lock(mutex_);
    ++report_.repaired;
    reporter_.note("repaired: " + what);
  }
  void fail(const std::string& message) {
    std::lock_guard lock(mutex_);
    report_.failures.push_back(message);
  }

  // Present while a node's permanent neighbour entries match its pods.
  fs::path neighbors_marker(const std::string& node) const {
    return state_.node_dir(node) / "neighbors-synced";
  }
  void invalidate_neighbors(const std::string& node) {
    std::error_code ec;
    fs::remove(neighbors_marker(node), ec);
  }

  const NodePlan* node_plan(const std::string& name) const {
    for (const auto& node : nodes_) {
      if (node.name == name) return &node;
    }
    return nullptr;
  }

  ClusterState& state_;
  const Toolbox& tools_;
  Reporter& reporter_;
  ApplyOptions options_;
  std::mt19937_64 random_;
  std::mutex mutex_;  // guards report_ and random_ from the pod workers
  ApplyReport report_;

  netmodel::ClusterSpec spec_;
  std::vector<NodePlan> nodes_;
  std::optional<NetNs> fabric_;
  std::map<std::string, NetNs> node_ns_;
  std::map<std::string, cni::NetworkConfigList> conflists_;
  std::set<std::string> fresh_nodes_;             // created by this converge
  std::set<netmodel::IpPrefix> removed_subnets_;  // of the nodes removed by this converge
};

ApplyReport Converger::run(StoredCluster declared, const std::vector<std::string>& evict) {
  const auto previous = state_.load();
  if (previous) {
    check_spec_change(previous->spec, declared.spec);
    declared.created = previous->created;
  } else {
    declared.created = unix_now();
  }
  declared.node_indexes = assign_node_indexes(
      declared.spec, previous ? previous->node_indexes : decltype(declared.node_indexes){});
  spec_ = declared.spec;
  nodes_ = plan_nodes(spec_, declared.node_indexes);
  // The declared state is stored first, so `down` knows the cluster whatever happens next.
  state_.save(declared);

  ensure_fabric();
  if (previous) {
    for (const auto& [name, index] : previous->node_indexes) {
      if (!declared.node_indexes.count(name)) remove_node(name, index);
    }
  }
  for (const auto& node : nodes_)
    ensure_node(node);
  for (const auto& node : nodes_)
    ensure_routes(node);
  converge_pods(declared, evict);
  return report_;
}

void Converger::ensure_fabric() {
  bool created = false;
  fabric_ = open_or_create(fabric_netns(spec_.name), created);
  Netlink nl = Netlink::open(*fabric_);
  auto ensure_bridge = [&](const char* name) {
    auto link = nl.find_link(name);
    if (!link) {
      nl.add_bridge({name, spec_.mtu, {}});
      link = nl.link(name);
    }
    if (!link->up()) {
      nl.set_up(link->index);
      if (!created) repaired("fabric bridge " + std::string(name) + " was down");
    }
  };
  ensure_bridge(kFabricBridge);
  if (spec_.network == netmodel::Network::flat) ensure_bridge(kPodSegmentBridge);
  if (created) reporter_.note("fabric " + fabric_netns(spec_.name) + " created");
}

void Converger::remove_node(const std::string& name, std::size_t index) {
  for (const auto& pod : state_.pods()) {
    if (pod.id.node == name) {
      terminate_workload(pod.workload);
      NetNs::remove(pod.netns);
      state_.remove_pod(pod);
      ++report_.pods_removed;
    }
  }
  NetNs::remove(node_netns(spec_.name, name));
  Netlink nl = Netlink::open(*fabric_);
  nl.delete_link("n" + std::to_string(index));
  nl.delete_link("p" + std::to_string(index));
  std::error_code ec;
  fs::remove_all(state_.node_dir(name), ec);
  removed_subnets_.insert(spec_.node_pod_cidr(index - 1));
  ++report_.nodes_removed;
  reporter_.note("node " + name + " removed");
}

// A veth between the fabric (`fabric_end`, a port of `bridge`, up, aliased `alias`, which names
// the cluster and node for whoever lists the fabric's links) and a node (`node_end`).
void Converger::add_fabric_link(Netlink& fabric, const NetNs& node_ns,
                                const std::string& fabric_end, const std::string& node_end,
                                const std::string& bridge, const std::string& alias) {
  netmodel::VethSpec veth;
  veth.name = fabric_end;
  veth.peer_name = node_end;
  veth.peer_ns = &node_ns;
  veth.mtu = spec_.mtu;
  veth.master = fabric.link(bridge).index;
  veth.up = true;
  fabric.add_veth(veth);
  fabric.set_alias(fabric.link(fabric_end).index, alias);
}

void Converger::ensure_node(const NodePlan& node) {
  bool created = false;
  NetNs ns = open_or_create(node.netns, created);
  Netlink fabric = Netlink::open(*fabric_);
  Netlink nl = Netlink::open(ns);

  // The uplink: eth0 in the node, its peer n<index> a port of fabric0.
  auto uplink = nl.find_link(kNodeUplink);
  if (!uplink) {
    fabric.delete_link(node.fabric_port);  // a half-made pair from an earlier crash
    add_fabric_link(fabric, ns, node.fabric_port, kNodeUplink, kFabricBridge,
                    "flatnet:" + spec_.name + ":" + node.name + ":uplink");
    uplink = nl.link(kNodeUplink);
  } else if (auto port = fabric.find_link(node.fabric_port); port && !port->up()) {
    fabric.set_up(port->index);
    repaired("fabric link " + node.fabric_port + " of node " + node.name + " was down");
  }
  if (!uplink->up()) {
    nl.set_up(uplink->index);
    if (!created) repaired("node " + node.name + ": eth0 was down");
  }
  if (add_address_once(nl, uplink->index, node.address) && !created) {
    repaired("node " + node.name + ": address " + node.address.to_string() + " was missing");
  }

  // Forwarding: a node routes between its pods and the other nodes.
  if (netmodel::read_sysctl(ns, "net.ipv4.ip_forward") != "1") {
    netmodel::write_sysctl(ns, "net.ipv4.ip_forward", "1");
  }

  // The pod bridge, there before the first pod so that the node's place in the pod network is
  // fixed (the CNI plugin puts the gateway address on it with the first pod).
  auto bridge = nl.find_link(kPodBridge);
  const bool bridge_lost = !bridge && !created;
  if (!bridge) {
    // A MAC of its own: otherwise a bridge takes its lowest port's, which changes as pods come
    // and go, and the pods' permanent entries for their gateway would go stale.
    nl.add_bridge({kPodBridge, spec_.mtu, netmodel::MacAddress::random_local(random_)});
    bridge = nl.link(kPodBridge);
  }
  if (!bridge->up()) {
    nl.set_up(bridge->index);
    if (!created && !bridge_lost) {
      repaired("node " + node.name + ": pod bridge " + kPodBridge + " was down");
    }
  }
  if (bridge_lost) {
    // Deleted under a running node: made again with the pods' gateway, and every pod's veth
    // (which the kernel detached) joined to it again.
    add_address_once(nl, bridge->index, node.gateway);
    std::size_t rejoined = 0;
    for (const auto& pod : state_.pods()) {
      if (pod.id.node != node.name || pod.host_veth.empty()) continue;
      if (auto veth = nl.find_link(pod.host_veth)) {
        nl.set_master(veth->index, bridge->index);
        if (!veth->up()) nl.set_up(veth->index);
        ++rejoined;
      }
    }
    invalidate_neighbors(node.name);
    repaired("node " + node.name + ": pod bridge " + kPodBridge + " was gone; made again with " +
             std::to_string(rejoined) + " pod veths");
  }

  if (spec_.network == netmodel::Network::flat) {
    // The node's pod bridge joins the shared pod segment pods0 in the fabric.
    auto segment = nl.find_link(kNodeSegmentLink);
    if (!segment) {
      fabric.delete_link(node.segment_port);
      add_fabric_link(fabric, ns, node.segment_port, kNodeSegmentLink, kPodSegmentBridge,
                      "flatnet:" + spec_.name + ":" + node.name + ":pods");
      segment = nl.link(kNodeSegmentLink);
    }
    if (segment->master != bridge->index) nl.set_master(segment->index, bridge->index);
    if (!segment->up()) {
      nl.set_up(segment->index);
      if (!created) repaired("node " + node.name + ": " + kNodeSegmentLink + " was down");
    }
  }

  // The node's CNI configuration, as a kubelet's node has it in /etc/cni/net.d.
  std::error_code ec;
  fs::create_directories(state_.ipam_dir(node.name), ec);
  if (ec) netmodel::throw_errno(ec.value(), "create " + state_.ipam_dir(node.name).string());
  const std::string conflist = cni_conflist(spec_, node, state_.ipam_dir(node.name).string());
  const fs::path path = state_.conflist_path(node.name);
  std::ifstream existing(path);
  std::stringstream text;
  text << existing.rdbuf();
  if (!existing || text.str() != conflist) write_file_atomically(path, conflist);
  conflists_[node.name] = cni::parse_network_config(conflist, path.string());

  node_ns_.insert_or_assign(node.name, std::move(ns));
  if (created) {
    fresh_nodes_.insert(node.name);
    ++report_.nodes_created;
    reporter_.note("node " + node.name + " created: " + node.address.address().to_string() +
                   ", pods " + node.pod_subnet.to_string());
  }
}

void Converger::ensure_routes(const NodePlan& node) {
  Netlink nl = Netlink::open(node_ns_.at(node.name));
  const int uplink = nl.link(kNodeUplink).index;
  std::vector<netmodel::Route> wanted;
  if (spec_.network == netmodel::Network::routed) {
    for (const auto& other : nodes_) {
      if (other.name == node.name) continue;
      netmodel::Route route;
      route.destination = other.pod_subnet;
      route.gateway = other.address.address();
      route.oif = uplink;
      route.protocol = kRouteProtocol;
      wanted.push_back(route);
    }
  }
  const auto present = nl.routes(netmodel::Family::v4);
  for (const auto& route : present) {
    if (route.protocol != kRouteProtocol || !route.destination) continue;
    if (!spec_.pod_cidr.contains(*route.destination)) continue;
    const bool keep = std::any_of(wanted.begin(), wanted.end(), [&](const netmodel::Route& w) {
      return w.destination == route.destination && w.gateway == route.gateway && w.oif == route.oif;
    });
    if (!keep) {
      nl.delete_route(route);
      if (!removed_subnets_.count(*route.destination)) {
        repaired("node " + node.name + ": removed the stray route " + route.to_string());
      }
    }
  }
  for (const auto& route : wanted) {
    const bool there = std::any_of(present.begin(), present.end(), [&](const netmodel::Route& p) {
      return p.protocol == kRouteProtocol && p.destination == route.destination &&
             p.gateway == route.gateway && p.oif == route.oif;
    });
    if (!there) {
      nl.replace_route(route);
      const bool to_fresh = std::any_of(nodes_.begin(), nodes_.end(), [&](const NodePlan& n) {
        return n.pod_subnet == *route.destination && fresh_nodes_.count(n.name);
      });
      if (!fresh_nodes_.count(node.name) && !to_fresh) {
        repaired("node " + node.name + ": route " + route.destination->to_string() + " via " +
                 route.gateway->to_string() + " was missing");
      }
    }
  }
}

void Converger::converge_pods(const StoredCluster& declared,
                              const std::vector<std::string>& evict) {
  std::vector<PodRecord> records = state_.pods();
  // The links of every node, to find pods whose veth is gone.
  std::map<std::string, std::set<std::string>> node_links;
  for (const auto& [name, ns] : node_ns_) {
    Netlink nl = Netlink::open(ns, netmodel::Enter::calling_thread);
    for (const auto& link : nl.links())
      node_links[name].insert(link.name);
  }
  std::vector<PodRecord> running;
  std::vector<PodRecord> pending;  // not placed yet: kept by name, placed again below
  std::vector<PodRecord> stale;    // half-made (a crash), broken or evicted: removed
  for (auto& record : records) {
    const bool evicted = std::find(evict.begin(), evict.end(), record.key()) != evict.end();
    if (evicted && record.phase == PodPhase::running) {
      remove_pod(record);
      ++report_.pods_removed;
      reporter_.note("pod " + record.key() + " deleted");
      continue;
    }
    if (record.phase == PodPhase::pending) {
      pending.push_back(std::move(record));
      continue;
    }
    if (record.phase != PodPhase::running || !node_plan(record.id.node)) {
      stale.push_back(std::move(record));
      continue;
    }
    // A running pod whose namespace or veth disappeared is made again, as a kubelet recreates
    // a pod sandbox that died.
    std::string broken;
    if (!fs::exists(NetNs::path_of(record.netns))) {
      broken = "its network namespace " + record.netns + " was gone";
    } else if (!record.host_veth.empty() && !node_links[record.id.node].count(record.host_veth)) {
      broken = "its veth " + record.host_veth + " on node " + record.id.node + " was gone";
    }
    if (!broken.empty()) {
      repaired("pod " + record.key() + ": " + broken + "; made again");
      stale.push_back(std::move(record));
      continue;
    }
    running.push_back(std::move(record));
  }
  std::vector<PodIdentity> identities;
  for (const auto& record : running)
    identities.push_back(record.id);
  for (const auto& record : pending)
    identities.push_back(record.id);
  PodChanges changes = reconcile_pods(declared.pods, declared.deployments, identities, random_);
  // Pending pods that are still wanted are placed again under their own names.
  for (const auto& record : pending) {
    const bool unwanted =
        std::any_of(changes.remove.begin(), changes.remove.end(), [&](const PodIdentity& id) {
          return id.pod_namespace == record.id.pod_namespace && id.name == record.id.name;
        });
    if (unwanted) continue;
    DesiredPod retry;
    retry.owner = record.id.owner;
    retry.template_hash = record.id.template_hash;
    if (record.id.owner.empty()) {
      for (const auto& pod : declared.pods) {
        if (pod.meta.namespace_ == record.id.pod_namespace && pod.meta.name == record.id.name) {
          retry.pod = pod;
        }
      }
    } else {
      for (const auto& deployment : declared.deployments) {
        if (deployment.meta.namespace_ + "/" + deployment.meta.name != record.id.owner) continue;
        retry.pod.meta = deployment.template_.meta;
        retry.pod.meta.namespace_ = record.id.pod_namespace;
        retry.pod.meta.name = record.id.name;
        retry.pod.meta.labels["pod-template-hash"] = record.id.template_hash;
        retry.pod.spec = deployment.template_.spec;
      }
    }
    if (retry.pod.meta.name.empty()) continue;  // its object is gone: removed below
    changes.create.push_back(std::move(retry));
  }
  for (auto& record : pending) {
    const bool retried =
        std::any_of(changes.create.begin(), changes.create.end(), [&](const DesiredPod& d) {
          return d.pod.meta.namespace_ == record.id.pod_namespace &&
                 d.pod.meta.name == record.id.name;
        });
    if (!retried) stale.push_back(std::move(record));  // a pending pod no longer wanted
  }

  // Removals first: they free room on the nodes.
  std::vector<PodRecord> removals = std::move(stale);
  for (const auto& identity : changes.remove) {
    for (const auto& record : running) {
      if (record.id.pod_namespace == identity.pod_namespace && record.id.name == identity.name) {
        removals.push_back(record);
      }
    }
  }
  for (const auto& record : removals)
    invalidate_neighbors(record.id.node);
  const std::size_t threads = options_.parallelism ? options_.parallelism : default_parallelism();
  std::atomic<std::size_t> removed{0};
  parallel_for(removals.size(), threads, [&](std::size_t i) {
    remove_pod(removals[i]);
    reporter_.progress("removing pods", ++removed, removals.size());
  });
  for (const auto& record : removals) {
    if (record.phase == PodPhase::running) {
      ++report_.pods_removed;
      reporter_.note("pod " + record.key() + " removed");
    }
  }

  std::map<std::string, std::size_t> pods_per_node;
  std::set<std::pair<std::string, std::string>> removed_keys;
  for (const auto& record : removals)
    removed_keys.insert({record.id.pod_namespace, record.id.name});
  std::vector<PodRecord> kept;
  for (auto& record : running) {
    if (removed_keys.count({record.id.pod_namespace, record.id.name})) continue;
    ++pods_per_node[record.id.node];
    kept.push_back(std::move(record));
  }

  // Workloads that died are started again, as a kubelet restarts a container; a pod's veth
  // found down on its node is brought up again.
  for (auto& record : kept) {
    if (!record.workload.alive()) restart_workload(record);
  }
  repair_pod_links(kept);

  const auto placements = schedule(changes.create, nodes_, pods_per_node);
  std::vector<PodRecord> created(changes.create.size());
  std::vector<std::size_t> to_make;
  for (std::size_t i = 0; i < changes.create.size(); ++i) {
    const auto& desired = changes.create[i];
    PodRecord& record = created[i];
    record.id.pod_namespace = desired.pod.meta.namespace_;
    record.id.name = desired.pod.meta.name;
    record.id.owner = desired.owner;
    record.id.template_hash = desired.template_hash;
    record.id.node = placements[i].node;
    record.id.created = monotonic_stamp();
    record.uid = random_uid(random_);
    record.container_id = random_hex(random_, 64);
    record.netns = pod_netns(spec_.name, record.id.pod_namespace, record.id.name);
    record.labels = desired.pod.meta.labels;
    record.ports = workload_ports(desired.pod);
    record.created_unix = unix_now();
    if (placements[i].node.empty()) {
      // Kept as a Pending pod, tried again by the next converge.
      record.phase = PodPhase::pending;
      record.message = placements[i].reason;
      state_.save_pod(record);
      fail("pod " + record.key() + " cannot be scheduled: " + placements[i].reason);
      continue;
    }
    to_make.push_back(i);
  }
  for (std::size_t i : to_make)
    invalidate_neighbors(created[i].id.node);
  std::atomic<std::size_t> made{0};
  parallel_for(to_make.size(), threads, [&](std::size_t n) {
    const std::size_t i = to_make[n];
    create_pod(created[i], changes.create[i]);
    reporter_.progress("creating pods", ++made, to_make.size());
  });
  std::vector<PodRecord> fresh;
  for (std::size_t i : to_make) {
    if (created[i].phase == PodPhase::running) {
      ++report_.pods_created;
      fresh.push_back(created[i]);
    }
  }
  // The neighbour entries of every node whose pods changed, before anything talks to them, and
  // of nodes whose last sync did not finish (a crash, a failure).
  std::set<std::string> changed_nodes;
  for (const auto& record : removals)
    changed_nodes.insert(record.id.node);
  for (const auto& record : fresh)
    changed_nodes.insert(record.id.node);
  for (const auto& node : nodes_) {
    if (!fs::exists(neighbors_marker(node.name))) changed_nodes.insert(node.name);
  }
  std::vector<PodRecord> all = kept;
  all.insert(all.end(), fresh.begin(), fresh.end());
  std::set<std::string> fresh_keys;
  for (const auto& record : fresh)
    fresh_keys.insert(record.key());
  sync_neighbors(all, changed_nodes, fresh_keys);
  wait_until_answering(fresh);
}

void Converger::create_pod(PodRecord& record, const DesiredPod& desired) {
  (void)desired;
  const NetNs& node_ns = node_ns_.at(record.id.node);
  const auto& conflist = conflists_.at(record.id.node);
  const cni::Attachment attachment = attachment_of(record);
  cni::Runtime runtime(tools_.cni_path, &node_ns);
  try {
    state_.save_pod(record);  // before the namespace exists: `down` must find it
    std::optional<NetNs> ns;
    try {
      ns = NetNs::create(record.netns, true, netmodel::Enter::calling_thread, disable_ipv6_here);
    } catch (const std::system_error& e) {
      if (!netmodel::is_errno(e, EEXIST)) throw;
      // Left by a crash of an earlier run making this very pod (the record said so, or the
      // namespace could not exist: names are unique per pod): whatever runs there goes.
      terminate_all(processes_in({record.netns}));
      NetNs::remove(record.netns);
      ns = NetNs::create(record.netns, true, netmodel::Enter::calling_thread, disable_ipv6_here);
    }
    const json raw = runtime.add(conflist, attachment);
    const cni::Result result = cni::parse_result(raw);
    record.cni_result = raw;
    record.host_veth = host_veth_of(result);
    if (!result.ips.empty()) record.ip = result.ips.front().address.address();
    record.workload = start_workload(*ns, record, tools_.netexec, state_.log_path(record));
    record.phase = PodPhase::running;
    state_.save_pod(record);
  } catch (const std::exception& e) {
    // Roll back whatever this pod got, so that the next converge starts clean. DEL runs even
    // when ADD failed: a plugin that died halfway may hold an address (DEL is idempotent).
    auto quietly = [](const auto& step) {
      try {
        step();
      } catch (const std::exception&) {
      }
    };
    quietly([&] { terminate_workload(record.workload); });
    quietly([&] { runtime.del(conflist, attachment, record.cni_result); });
    quietly([&] { terminate_all(processes_in({record.netns})); });
    quietly([&] { NetNs::remove(record.netns); });
    quietly([&] { state_.remove_pod(record); });
    record.phase = PodPhase::failed;
    fail("pod " + record.key() + " on node " + record.id.node + ": " + e.what());
  }
}

void Converger::remove_pod(const PodRecord& record) {
  terminate_workload(record.workload);
  if (record.phase != PodPhase::running) {
    // A record left halfway (a crash) may not know its workload's pid: find what runs inside.
    terminate_all(processes_in({record.netns}));
  }
  auto node = node_ns_.find(record.id.node);
  if (node != node_ns_.end() && conflists_.count(record.id.node) &&
      record.phase != PodPhase::pending) {
    cni::Attachment attachment = attachment_of(record);
    if (!fs::exists(attachment.netns)) attachment.netns.clear();  // DEL without the namespace
    try {
      cni::Runtime(tools_.cni_path, &node->second)
          .del(conflists_.at(record.id.node), attachment,
               record.cni_result.is_null() ? json() : record.cni_result);
    } catch (const std::exception& e) {
      reporter_.warn("pod " + record.key() + ": CNI DEL: " + e.what());
    }
  }
  try {
    NetNs::remove(record.netns);
  } catch (const std::exception& e) {
    // Kept: the record lets the next converge (or `down`) try again.
    fail("pod " + record.key() + ": " + e.what());
    return;
  }
  state_.remove_pod(record);
}

void Converger::restart_workload(PodRecord& record) {
  try {
    NetNs ns = NetNs::open_named(record.netns);
    record.workload = start_workload(ns, record, tools_.netexec, state_.log_path(record));
    ++record.restarts;
    state_.save_pod(record);
    ++report_.workloads_restarted;
    reporter_.note("pod " + record.key() + ": workload restarted (pid " +
                   std::to_string(record.workload.pid) + ")");
  } catch (const std::exception& e) {
    fail("pod " + record.key() + ": restart workload: " + e.what());
  }
}

// Makes the permanent entries of `ns`'s link `index` exactly `wanted` (by address): replaced
// when present, added when missing, other permanent entries on that link deleted.
// `prune` false skips looking for others: a link made moments ago has none.
void make_permanent_entries(Netlink& nl, int index, std::vector<netmodel::NeighborInfo> wanted,
                            bool prune = true) {
  std::set<netmodel::IpAddress> keep;
  for (auto& entry : wanted) {
    entry.index = index;
    keep.insert(entry.address);
  }
  if (!prune) {
    nl.set_permanent_neighbors(wanted);
    return;
  }
  for (const auto& entry : nl.neighbors(index, netmodel::Family::v4)) {
    if ((entry.state & NUD_PERMANENT) && !keep.count(entry.address)) {
      nl.delete_neighbor(index, entry.address);
    }
  }
  nl.set_permanent_neighbors(wanted);
}

// Every neighbour a node or pod talks to on its own segment gets a permanent entry: a node's own
// pods and the other nodes, a pod's gateway and the pods beside it (in flat mode, every pod).
// The data path stays the kernel's; only address resolution is filled in ahead. This is what lets
// a host emulate a thousand machines: the kernel's neighbour table is one for the whole host,
// capped by gc_thresh3 (1024 by default, a host setting flatnet must not change), while a
// thousand pods need several thousand entries; permanent entries are exempt from that cap.
void Converger::sync_neighbors(const std::vector<PodRecord>& pods,
                               const std::set<std::string>& changed,
                               const std::set<std::string>& fresh) {
  const bool flat = spec_.network == netmodel::Network::flat;
  // Flat mode would need every pod in every pod (n squared entries): up to this many pods.
  constexpr std::size_t kFlatMeshLimit = 400;
  const bool mesh = !flat || pods.size() <= kFlatMeshLimit;
  if (flat && !mesh && !changed.empty()) {
    reporter_.warn("flat network with " + std::to_string(pods.size()) +
                   " pods: pods resolve each other by ARP, and the host's neighbour table "
                   "(gc_thresh3) may overflow when many pairs talk at once");
  }
  struct Peer {
    netmodel::IpAddress ip;
    netmodel::MacAddress mac;
    std::string node;
  };
  std::vector<Peer> peers;
  for (const auto& pod : pods) {
    auto mac = pod_mac(pod);
    if (pod.ip && mac) peers.push_back({*pod.ip, *mac, pod.id.node});
  }
  std::set<std::string> unsynced;  // nodes whose entries could not all be set
  // The nodes' uplink and bridge MACs.
  std::map<std::string, netmodel::MacAddress> uplink_mac, bridge_mac;
  for (const auto& node : nodes_) {
    Netlink nl = Netlink::open(node_ns_.at(node.name), netmodel::Enter::calling_thread);
    uplink_mac[node.name] = nl.link(kNodeUplink).mac;
    bridge_mac[node.name] = nl.link(kPodBridge).mac;
  }

  // Each node: its uplink neighbours always (cheap), its pod bridge's when its pods changed.
  std::vector<const NodePlan*> nodes;
  for (const auto& node : nodes_)
    nodes.push_back(&node);
  parallel_for(nodes.size(), default_parallelism(), [&](std::size_t i) {
    const NodePlan& node = *nodes[i];
    try {
      Netlink nl = Netlink::open(node_ns_.at(node.name), netmodel::Enter::calling_thread);
      std::vector<netmodel::NeighborInfo> uplink;
      for (const auto& other : nodes_) {
        if (other.name == node.name) continue;
        netmodel::NeighborInfo entry;
        entry.address = other.address.address();
        entry.mac = uplink_mac.at(other.name);
        uplink.push_back(entry);
      }
      make_permanent_entries(nl, nl.link(kNodeUplink).index, uplink);
      if (!changed.count(node.name) && !(flat && !changed.empty())) return;
      std::vector<netmodel::NeighborInfo> bridge;
      for (const auto& peer : peers) {
        if (peer.node != node.name && !(flat && mesh)) continue;
        netmodel::NeighborInfo entry;
        entry.address = peer.ip;
        entry.mac = peer.mac;
        bridge.push_back(entry);
      }
      if (flat) {
        for (const auto& other : nodes_) {  // the other nodes' bridges, on the shared segment
          if (other.name == node.name) continue;
          netmodel::NeighborInfo entry;
          entry.address = other.gateway.address();
          entry.mac = bridge_mac.at(other.name);
          bridge.push_back(entry);
        }
      }
      make_permanent_entries(nl, nl.link(kPodBridge).index, bridge);
    } catch (const std::exception& e) {
      fail("node " + node.name + ": neighbour entries: " + e.what());
      std::lock_guard lock(mutex_);
      unsynced.insert(node.name);
    }
  });

  // Each pod on a changed node (every pod, in flat mode): its gateway and its segment's pods.
  std::vector<const PodRecord*> targets;
  for (const auto& pod : pods) {
    if (pod.ip && (changed.count(pod.id.node) || (flat && !changed.empty()))) {
      targets.push_back(&pod);
    }
  }
  std::atomic<std::size_t> done{0};
  parallel_for(targets.size(), default_parallelism(), [&](std::size_t i) {
    const PodRecord& pod = *targets[i];
    try {
      const NodePlan* node = node_plan(pod.id.node);
      std::vector<netmodel::NeighborInfo> entries;
      netmodel::NeighborInfo gateway;
      gateway.address = node->gateway.address();
      gateway.mac = bridge_mac.at(node->name);
      entries.push_back(gateway);
      for (const auto& peer : peers) {
        if (peer.ip == *pod.ip) continue;
        if (peer.node != pod.id.node && !(flat && mesh)) continue;
        netmodel::NeighborInfo entry;
        entry.address = peer.ip;
        entry.mac = peer.mac;
        entries.push_back(entry);
      }
      NetNs ns = NetNs::open_named(pod.netns);
      Netlink nl = Netlink::open(ns, netmodel::Enter::calling_thread);
      make_permanent_entries(nl, nl.link("eth0").index, entries, !fresh.count(pod.key()));
    } catch (const std::exception& e) {
      fail("pod " + pod.key() + ": neighbour entries: " + e.what());
      std::lock_guard lock(mutex_);
      unsynced.insert(pod.id.node);
    }
    reporter_.progress("neighbour entries", ++done, targets.size());
  });
  for (const auto& node : nodes_) {
    if (unsynced.count(node.name) || !changed.count(node.name)) continue;
    try {
      write_file_atomically(neighbors_marker(node.name), "");
    } catch (const std::exception&) {
      // Without the marker the next converge syncs the node again: nothing is lost.
    }
  }
}

void Converger::repair_pod_links(const std::vector<PodRecord>& pods) {
  std::map<std::string, std::vector<const PodRecord*>> by_node;
  for (const auto& pod : pods) {
    if (!pod.host_veth.empty()) by_node[pod.id.node].push_back(&pod);
  }
  for (const auto& [node, on_node] : by_node) {
    auto ns = node_ns_.find(node);
    if (ns == node_ns_.end()) continue;
    Netlink nl = Netlink::open(ns->second, netmodel::Enter::calling_thread);
    std::map<std::string, netmodel::LinkInfo> links;
    for (auto& link : nl.links())
      links[link.name] = link;
    const auto bridge = links.find(kPodBridge);
    for (const PodRecord* pod : on_node) {
      auto link = links.find(pod->host_veth);
      if (link == links.end()) continue;  // a pod without its veth is made again instead
      if (bridge != links.end() && link->second.master != bridge->second.index) {
        nl.set_master(link->second.index, bridge->second.index);
        repaired("pod " + pod->key() + ": veth " + pod->host_veth + " on node " + node +
                 " had left the pod bridge");
      }
      if (!link->second.up()) {
        nl.set_up(link->second.index);
        repaired("pod " + pod->key() + ": veth " + pod->host_veth + " on node " + node +
                 " was down");
      }
    }
  }
}

void Converger::wait_until_answering(std::vector<PodRecord>& pods) {
  if (pods.empty()) return;
  // From each node to its own pods, on each pod's first port: the pod is up when it answers.
  std::vector<ProbeSource> sources;
  std::map<std::string, std::size_t> source_of;
  for (const auto& node : nodes_) {
    source_of[node.name] = sources.size();
    sources.push_back({node.name, &node_ns_.at(node.name)});
  }
  std::vector<ProbeTarget> targets;
  std::vector<Probe> probes;
  std::vector<const PodRecord*> owners;
  for (const auto& pod : pods) {
    if (!pod.ip || pod.ports.empty()) continue;
    const auto& port = pod.ports.front();
    targets.push_back({pod.key(), *pod.ip, port.container_port,
                       port.protocol == netmodel::Protocol::udp ? Protocol::udp : Protocol::tcp});
    probes.push_back({source_of.at(pod.id.node), targets.size() - 1});
    owners.push_back(&pod);
  }
  const auto deadline = std::chrono::steady_clock::now() + options_.answer_timeout;
  ProbeOptions probe_options;
  probe_options.timeout = std::chrono::milliseconds(1000);
  std::vector<std::size_t> waiting(probes.size());
  for (std::size_t i = 0; i < waiting.size(); ++i)
    waiting[i] = i;
  std::vector<ProbeResult> last(probes.size());
  while (!waiting.empty()) {
    std::vector<Probe> round;
    for (std::size_t i : waiting)
      round.push_back(probes[i]);
    const auto results = run_probes(sources, targets, round, probe_options);
    std::vector<std::size_t> still;
    for (std::size_t k = 0; k < waiting.size(); ++k) {
      last[waiting[k]] = results[k];
      if (results[k].outcome != ProbeOutcome::ok) still.push_back(waiting[k]);
    }
    reporter_.progress("waiting for pods to answer", probes.size() - still.size(), probes.size());
    waiting = std::move(still);
    if (waiting.empty() || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (std::size_t i : waiting) {
    const PodRecord& pod = *owners[i];
    const ProbeTarget& target = targets[probes[i].target];
    fail("pod " + pod.key() + " does not answer on " + target.address.to_string() + ":" +
         std::to_string(target.port) + "/" + std::string(to_string(target.protocol)) +
         " from node " + pod.id.node + ": " + last[i].describe());
  }
}

}  // namespace

Cluster::Cluster(ClusterState& state, Toolbox tools, Reporter& reporter, ApplyOptions options)
    : state_(state), tools_(std::move(tools)), reporter_(reporter), options_(options) {}

ApplyReport Cluster::converge(StoredCluster declared, const std::vector<std::string>& evict) {
  if (tools_.netexec.empty()) {
    throw std::runtime_error(
        "flatnet-netexec not found beside flatnet nor in /usr/local/bin: build or install it");
  }
  Converger converger(state_, tools_, reporter_, options_);
  return converger.run(std::move(declared), evict);
}

// --- down ---

namespace {}  // namespace

DownReport tear_down(const std::string& name, Reporter& reporter) {
  if (const std::string problem = cluster_name_problem(name); !problem.empty()) {
    throw std::invalid_argument("invalid cluster name: " + problem);
  }
  DownReport report;
  // The namespaces: exactly the names a cluster of this name has (owns_netns).
  std::vector<std::string> pods, nodes, fabric;
  for (const auto& ns : NetNs::list_named()) {
    if (!owns_netns(name, ns)) continue;
    if (ns == fabric_netns(name)) {
      fabric.push_back(ns);
    } else if (ns.rfind(netns_prefix(name) + "pod.", 0) == 0) {
      pods.push_back(ns);
    } else {
      nodes.push_back(ns);
    }
  }

  // Every process inside one of them: the workloads, and whatever `flatnet exec` left running.
  std::vector<std::string> all = pods;
  all.insert(all.end(), nodes.begin(), nodes.end());
  all.insert(all.end(), fabric.begin(), fabric.end());
  report.processes = terminate_all(processes_in(all));

  // Pods first, then nodes, then the fabric: each group's names removed by several threads, since
  // each unmount waits for the kernel (an RCU grace period) more than it works.
  std::atomic<std::size_t> done{0}, removed{0};
  std::mutex errors_mutex;
  const std::size_t total = pods.size() + nodes.size() + fabric.size();
  for (const auto* group : {&pods, &nodes, &fabric}) {
    parallel_for(group->size(), default_parallelism(), [&](std::size_t i) {
      try {
        if (NetNs::remove((*group)[i])) ++removed;
      } catch (const std::exception& e) {
        std::lock_guard lock(errors_mutex);
        report.errors.push_back(e.what());
      }
      reporter.progress("removing namespaces", ++done, total);
    });
  }
  report.namespaces = removed;
  ClusterState state(name);
  if (state.exists()) {
    try {
      state.remove();
      report.state_removed = true;
    } catch (const std::exception& e) {
      report.errors.push_back(e.what());
    }
  }
  return report;
}

}  // namespace flatnet::emulator
