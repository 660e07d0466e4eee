#include "flatnet/emulator/plan.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

namespace flatnet::emulator {

using netmodel::ClusterSpec;
using netmodel::IpAddress;
using netmodel::IpPrefix;

// --- names ---

std::string netns_prefix(const std::string& cluster) {
  return "flatnet-" + cluster + "-";
}
std::string fabric_netns(const std::string& cluster) {
  return netns_prefix(cluster) + "fabric";
}
std::string node_netns(const std::string& cluster, const std::string& node) {
  return netns_prefix(cluster) + "node." + node;
}
std::string pod_netns(const std::string& cluster, const std::string& pod_namespace,
                      const std::string& pod) {
  return netns_prefix(cluster) + "pod." + pod_namespace + "." + pod;
}
bool owns_netns(const std::string& cluster, const std::string& netns) {
  const std::string prefix = netns_prefix(cluster);
  if (netns.rfind(prefix, 0) != 0) return false;
  const std::string rest = netns.substr(prefix.size());
  return rest == "fabric" || rest.rfind("node.", 0) == 0 || rest.rfind("pod.", 0) == 0;
}
std::string cluster_name_problem(const std::string& name) {
  if (name.empty()) return "a cluster name may not be empty";
  if (std::string problem = netmodel::dns1123_label_problem(name); !problem.empty()) {
    return problem;
  }
  if (name.size() > ClusterSpec::kMaxNameLength) {
    return "\"" + name + "\" is longer than " + std::to_string(ClusterSpec::kMaxNameLength) +
           " characters";
  }
  return "";
}
std::string pod_key(const std::string& pod_namespace, const std::string& pod) {
  return pod_namespace == "default" ? pod : pod_namespace + "/" + pod;
}

// --- nodes ---

namespace {

// Node number i (1-based) is placed as ClusterSpec's convention places nodes[i - 1].
std::size_t max_nodes(const ClusterSpec& spec) {
  return std::min(
      {spec.pod_cidr_node_capacity(), spec.node_cidr_node_capacity(), ClusterSpec::kMaxNodes});
}

}  // namespace

std::map<std::string, std::size_t> assign_node_indexes(
    const ClusterSpec& spec, const std::map<std::string, std::size_t>& previous) {
  std::map<std::string, std::size_t> result;
  std::set<std::size_t> used;
  for (const auto& node : spec.nodes) {
    auto it = previous.find(node.name);
    if (it != previous.end()) {
      result[node.name] = it->second;
      used.insert(it->second);
    }
  }
  const std::size_t limit = max_nodes(spec);
  std::size_t next = 1;
  for (const auto& node : spec.nodes) {
    if (result.count(node.name)) continue;
    while (used.count(next))
      ++next;
    result[node.name] = next;
    used.insert(next);
  }
  for (const auto& [name, index] : result) {
    if (index > limit) {
      throw std::invalid_argument(
          "node " + name + " would be node number " + std::to_string(index) + ", but podCIDR " +
          spec.pod_cidr.to_string() + " and nodeCIDR " + spec.node_cidr.to_string() +
          " hold only " + std::to_string(limit) + " nodes");
    }
  }
  return result;
}

NodePlan plan_node(const ClusterSpec& spec, const netmodel::NodeSpec& node, std::size_t index) {
  NodePlan plan;
  plan.name = node.name;
  plan.labels = netmodel::effective_node_labels(node);
  plan.index = index;
  plan.address = IpPrefix(spec.node_address(index - 1), spec.node_cidr.length());
  plan.pod_subnet = spec.node_pod_cidr(index - 1);
  const IpAddress gateway = plan.pod_subnet.nth(1);
  plan.gateway =
      IpPrefix(gateway, spec.network == netmodel::Network::flat ? spec.pod_cidr.length()
                                                                : plan.pod_subnet.length());
  plan.netns = node_netns(spec.name, node.name);
  plan.fabric_port = "n" + std::to_string(index);
  if (spec.network == netmodel::Network::flat) plan.segment_port = "p" + std::to_string(index);
  // Every address but the subnet's first two (network, gateway) and its last (broadcast).
  plan.capacity = static_cast<std::size_t>(plan.pod_subnet.size() - 3);
  return plan;
}

std::vector<NodePlan> plan_nodes(const ClusterSpec& spec,
                                 const std::map<std::string, std::size_t>& indexes) {
  std::vector<NodePlan> nodes;
  for (const auto& node : spec.nodes)
    nodes.push_back(plan_node(spec, node, indexes.at(node.name)));
  return nodes;
}

std::string cni_conflist(const ClusterSpec& spec, const NodePlan& node,
                         const std::string& ipam_dir) {
  const bool flatnet = spec.cni == netmodel::CniKind::flatnet;
  nlohmann::json range = {{"gateway", node.gateway.address().to_string()}};
  if (spec.network == netmodel::Network::flat) {
    // One subnet for every pod; each node hands out addresses from its own slice of it.
    range["subnet"] = spec.pod_cidr.to_string();
    range["rangeStart"] = node.pod_subnet.nth(2).to_string();
    range["rangeEnd"] = node.pod_subnet.nth(node.pod_subnet.size() - 2).to_string();
  } else {
    range["subnet"] = node.pod_subnet.to_string();
  }
  nlohmann::json ipam = {
      {"type", flatnet ? "flatnet-ipam" : "host-local"},
      {"dataDir", ipam_dir},
      {"ranges", nlohmann::json::array({nlohmann::json::array({range})})},
  };
  nlohmann::json plugin = {
      {"type", flatnet ? "flatnet-cni" : "bridge"},
      {"bridge", kPodBridge},
      {"isGateway", true},
      {"isDefaultGateway", true},
      {"ipMasq", false},
      {"hairpinMode", true},
      {"mtu", spec.mtu},
      {"ipam", ipam},
  };
  nlohmann::json list = {
      {"cniVersion", "1.0.0"},  // the newest version Debian 12's reference plugins speak
      {"name", "flatnet-" + spec.name},
      {"plugins", nlohmann::json::array({plugin})},
  };
  return list.dump(2);
}

// --- pods ---

std::string pod_spec_hash(const netmodel::Pod& pod) {
  netmodel::PodTemplate pod_template;
  pod_template.meta.labels = pod.meta.labels;
  pod_template.spec = pod.spec;
  return netmodel::pod_template_hash(pod_template);
}

namespace {

std::string random_suffix(std::mt19937_64& random) {
  static constexpr std::string_view kAlphabet = "bcdfghjklmnpqrstvwxz2456789";
  std::uniform_int_distribution<std::size_t> pick(0, kAlphabet.size() - 1);
  std::string suffix;
  for (int i = 0; i < 5; ++i)
    suffix += kAlphabet[pick(random)];
  return suffix;
}

std::string owner_key(const netmodel::Deployment& deployment) {
  return deployment.meta.namespace_ + "/" + deployment.meta.name;
}

}  // namespace

PodChanges reconcile_pods(const std::vector<netmodel::Pod>& pods,
                          const std::vector<netmodel::Deployment>& deployments,
                          const std::vector<PodIdentity>& current, std::mt19937_64& random) {
  PodChanges changes;
  std::set<std::pair<std::string, std::string>> taken;  // (namespace, name) of every pod kept
  std::map<std::string, std::vector<const PodIdentity*>> by_owner;
  std::map<std::pair<std::string, std::string>, const PodIdentity*> standalone;
  for (const auto& pod : current) {
    if (pod.owner.empty()) {
      standalone[{pod.pod_namespace, pod.name}] = &pod;
    } else {
      by_owner[pod.owner].push_back(&pod);
    }
  }

  // Standalone pods: kept when unchanged, replaced when their spec changed (pods are immutable).
  std::set<std::pair<std::string, std::string>> declared;
  for (const auto& pod : pods) {
    const std::pair key{pod.meta.namespace_, pod.meta.name};
    declared.insert(key);
    const std::string hash = pod_spec_hash(pod);
    auto it = standalone.find(key);
    if (it != standalone.end() && it->second->template_hash == hash) {
      taken.insert(key);
      continue;
    }
    if (it != standalone.end()) changes.remove.push_back(*it->second);
    changes.create.push_back({pod, "", hash});
    taken.insert(key);
  }
  for (const auto& [key, pod] : standalone) {
    if (!declared.count(key)) changes.remove.push_back(*pod);
  }

  // Deployments: `replicas` pods of the current template.
  std::set<std::string> owners;
  std::vector<std::pair<const netmodel::Deployment*, std::string>> to_fill;
  for (const auto& deployment : deployments) {
    const std::string owner = owner_key(deployment);
    owners.insert(owner);
    const std::string hash = netmodel::pod_template_hash(deployment.template_);
    std::vector<const PodIdentity*> current_template;
    for (const PodIdentity* pod : by_owner[owner]) {
      if (declared.count({pod->pod_namespace, pod->name})) {
        // A standalone pod of the same name is declared: it takes the name, this one goes.
        changes.remove.push_back(*pod);
      } else if (pod->template_hash == hash) {
        current_template.push_back(pod);
      } else {
        changes.remove.push_back(*pod);
      }
    }
    // Scale down the newest first, as the ReplicaSet controller prefers younger pods.
    std::sort(current_template.begin(), current_template.end(),
              [](const PodIdentity* a, const PodIdentity* b) {
                return a->created != b->created ? a->created < b->created : a->name < b->name;
              });
    const auto replicas = static_cast<std::size_t>(std::max(deployment.replicas, 0));
    for (std::size_t i = 0; i < current_template.size(); ++i) {
      if (i < replicas) {
        taken.insert({current_template[i]->pod_namespace, current_template[i]->name});
      } else {
        changes.remove.push_back(*current_template[i]);
      }
    }
    for (std::size_t i = current_template.size(); i < replicas; ++i) {
      netmodel::Pod pod;
      pod.meta = deployment.template_.meta;
      pod.meta.namespace_ = deployment.meta.namespace_;
      pod.spec = deployment.template_.spec;
      pod.meta.labels["pod-template-hash"] = hash;
      std::string name;
      do {
        name = deployment.meta.name + "-" + hash + "-" + random_suffix(random);
      } while (taken.count({pod.meta.namespace_, name}));
      pod.meta.name = name;
      taken.insert({pod.meta.namespace_, name});
      changes.create.push_back({pod, owner, hash});
    }
  }
  for (const auto& [owner, owned] : by_owner) {
    if (owners.count(owner)) continue;
    for (const PodIdentity* pod : owned)
      changes.remove.push_back(*pod);
  }
  return changes;
}

// --- scheduling ---

std::vector<Placement> schedule(const std::vector<DesiredPod>& pods,
                                const std::vector<NodePlan>& nodes,
                                std::map<std::string, std::size_t>& pods_per_node) {
  std::vector<Placement> placements;
  placements.reserve(pods.size());
  for (const auto& desired : pods) {
    const auto& spec = desired.pod.spec;
    Placement placement;
    if (!spec.node_name.empty()) {
      auto node = std::find_if(nodes.begin(), nodes.end(),
                               [&](const NodePlan& n) { return n.name == spec.node_name; });
      if (node == nodes.end()) {
        placement.reason = "nodeName " + spec.node_name + " is not a node of this cluster";
      } else if (pods_per_node[node->name] >= node->capacity) {
        placement.reason = "node " + node->name + " is full (" + std::to_string(node->capacity) +
                           " pods, its pod subnet " + node->pod_subnet.to_string() + ")";
      } else {
        placement.node = node->name;
      }
    } else {
      const NodePlan* best = nullptr;
      std::size_t matching = 0, full = 0;
      for (const auto& node : nodes) {
        const bool selected = std::all_of(
            spec.node_selector.begin(), spec.node_selector.end(), [&](const auto& term) {
              auto label = node.labels.find(term.first);
              return label != node.labels.end() && label->second == term.second;
            });
        if (!selected) continue;
        ++matching;
        if (pods_per_node[node.name] >= node.capacity) {
          ++full;
          continue;
        }
        if (!best || pods_per_node[node.name] < pods_per_node[best->name]) best = &node;
      }
      if (best) {
        placement.node = best->name;
      } else if (nodes.empty()) {
        placement.reason = "the cluster has no nodes";
      } else if (matching == 0) {
        placement.reason = "0/" + std::to_string(nodes.size()) +
                           " nodes are available: none matches the pod's node selector";
      } else {
        placement.reason = "0/" + std::to_string(nodes.size()) +
                           " nodes are available: " + std::to_string(full) +
                           " matching nodes are full";
      }
    }
    if (!placement.node.empty()) ++pods_per_node[placement.node];
    placements.push_back(std::move(placement));
  }
  return placements;
}

std::vector<netmodel::ContainerPort> workload_ports(const netmodel::Pod& pod) {
  std::vector<netmodel::ContainerPort> ports;
  for (const auto& container : pod.spec.containers) {
    for (const auto& port : container.ports)
      ports.push_back(port);
  }
  if (ports.empty()) {
    netmodel::ContainerPort http;
    http.name = "http";
    http.container_port = 8080;
    http.protocol = netmodel::Protocol::tcp;
    netmodel::ContainerPort udp;
    udp.name = "udp";
    udp.container_port = 8081;
    udp.protocol = netmodel::Protocol::udp;
    ports = {http, udp};
  }
  return ports;
}

}  // namespace flatnet::emulator
