#include "flatnet/emulator/check.hpp"

#include <algorithm>
#include <deque>
#include <iomanip>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "flatnet/emulator/table.hpp"
#include "flatnet/netmodel/error.hpp"
#include "flatnet/netmodel/netlink.hpp"
#include "flatnet/netmodel/netns.hpp"

namespace flatnet::emulator {

using netmodel::IpAddress;
using netmodel::LinkInfo;
using netmodel::Netlink;
using netmodel::NetNs;
using nlohmann::json;

namespace {

std::string kind_name(EndpointKind kind) {
  return kind == EndpointKind::pod ? "pod" : "node";
}
std::string label(const CheckEndpoint& endpoint) {
  return kind_name(endpoint.kind) + " " + endpoint.name;
}

// The kernel's view of one namespace, read once and kept for the whole diagnosis.
class NamespaceView {
 public:
  explicit NamespaceView(const std::string& name) : name_(name) {
    try {
      ns_.emplace(NetNs::open_named(name));
      nl_.emplace(Netlink::open(*ns_, netmodel::Enter::calling_thread));
      links_ = nl_->links();
    } catch (const std::exception&) {
      ns_.reset();
      nl_.reset();
    }
  }
  bool exists() const { return nl_.has_value(); }
  const LinkInfo* link(const std::string& name) const {
    for (const auto& link : links_) {
      if (link.name == name) return &link;
    }
    return nullptr;
  }
  const LinkInfo* link(int index) const {
    for (const auto& link : links_) {
      if (link.index == index) return &link;
    }
    return nullptr;
  }
  std::optional<netmodel::Route> route(const IpAddress& destination) {
    auto it = routes_.find(destination.to_string());
    if (it != routes_.end()) return it->second;
    std::optional<netmodel::Route> route;
    try {
      route = nl_->lookup_route(destination);
    } catch (const std::exception&) {
    }
    routes_[destination.to_string()] = route;
    return route;
  }
  // The neighbour entry for `address`, when the kernel has one.
  std::optional<netmodel::NeighborInfo> neighbor(const IpAddress& address) {
    if (!neighbors_) {
      try {
        neighbors_ = nl_->neighbors(0, netmodel::Family::v4);
      } catch (const std::exception&) {
        neighbors_.emplace();
      }
    }
    for (const auto& entry : *neighbors_) {
      if (entry.address == address) return entry;
    }
    return std::nullopt;
  }

 private:
  std::string name_;
  std::optional<NetNs> ns_;
  std::optional<Netlink> nl_;
  std::vector<LinkInfo> links_;
  std::map<std::string, std::optional<netmodel::Route>> routes_;
  std::optional<std::vector<netmodel::NeighborInfo>> neighbors_;
};

// Walks the path of one pair through the kernel's tables and names the first broken hop.
class Walker {
 public:
  Walker(const StoredCluster& cluster, const std::vector<NodePlan>& nodes,
         const std::vector<PodRecord>& pods)
      : cluster_(cluster), nodes_(nodes), pods_(pods) {}

  std::string diagnose(const PairResult& pair) {
    const PodRecord* dst = pod(pair.to.name);
    if (!dst) return "pod " + pair.to.name + " is not in the cluster's records";
    const IpAddress src_ip = source_address(pair, *dst);
    // A well-formed answer from the wrong client address: NAT on the way.
    // The hop names the address the source was rewritten to, not the pair, so that one rule
    // shows as one broken hop; each pair's own addresses are in its row and in the JSON.
    if (pair.probe.outcome == ProbeOutcome::ok && pair.probe.seen_client) {
      return "source NATed to " + pair.probe.seen_client->to_string() +
             who(*pair.probe.seen_client) + nat_hint(pair, *dst);
    }
    if (auto broken = walk(pair, *dst, src_ip)) return *broken;
    if (pair.probe.outcome == ProbeOutcome::refused) {
      return listener_problem(pair, *dst);
    }
    return pair.probe.describe() +
           "; every hop looks right (links up, routes and ARP entries in place): something on "
           "the path drops the traffic (look for iptables filter rules)";
  }

 private:
  NamespaceView& view(const std::string& ns) {
    auto it = views_.find(ns);
    if (it == views_.end()) it = views_.emplace(ns, NamespaceView(ns)).first;
    return it->second;
  }
  const PodRecord* pod(const std::string& key) const {
    for (const auto& p : pods_) {
      if (p.key() == key) return &p;
    }
    return nullptr;
  }
  const NodePlan* node(const std::string& name) const {
    for (const auto& n : nodes_) {
      if (n.name == name) return &n;
    }
    return nullptr;
  }
  std::string who(const IpAddress& address) const {
    for (const auto& p : pods_) {
      if (p.ip && *p.ip == address) return " (pod " + p.key() + ")";
    }
    for (const auto& n : nodes_) {
      if (n.address.address() == address) return " (node " + n.name + ", eth0)";
      if (n.gateway.address() == address) return " (node " + n.name + ", bridge flat0)";
    }
    return "";
  }
  std::string nat_hint(const PairResult& pair, const PodRecord& dst) const {
    (void)dst;
    if (!pair.probe.seen_client) return "";
    for (const auto& n : nodes_) {
      if (n.address.address() == *pair.probe.seen_client ||
          n.gateway.address() == *pair.probe.seen_client) {
        return ": a NAT rule on node " + n.name +
               " rewrites pod addresses (iptables -t nat -S there)";
      }
    }
    return "";
  }

  IpAddress source_address(const PairResult& pair, const PodRecord& dst) {
    if (pair.from.kind == EndpointKind::pod) {
      if (const PodRecord* src = pod(pair.from.name); src && src->ip) return *src->ip;
    } else if (const NodePlan* n = node(pair.from.name)) {
      auto route = view(n->netns).route(*dst.ip);
      if (route && route->source) return *route->source;
      return n->address.address();
    }
    return *dst.ip;
  }

  // Link checks: missing, administratively down, or without carrier (its peer is down).
  std::optional<std::string> link_problem(const std::string& where, NamespaceView& ns,
                                          const std::string& link, const std::string& what) {
    const LinkInfo* info = ns.link(link);
    const std::string name = where + ": " + link + " (" + what + ")";
    if (!info) return name + " is gone";
    if (!info->up()) return name + " is down";
    if (!info->lower_up()) return name + " has no carrier: its peer is down or gone";
    return std::nullopt;
  }

  // The MAC that `address` really has: a pod's interface, a node's uplink or pod bridge.
  std::optional<netmodel::MacAddress> real_mac(const IpAddress& address) {
    for (const auto& p : pods_) {
      if (p.ip && *p.ip == address) return pod_mac(p);
    }
    for (const auto& n : nodes_) {
      const bool uplink = n.address.address() == address;
      if (!uplink && n.gateway.address() != address) continue;
      NamespaceView& node_ns = view(n.netns);
      if (const LinkInfo* link = node_ns.link(uplink ? kNodeUplink : kPodBridge)) {
        return link->mac;
      }
    }
    return std::nullopt;
  }

  std::optional<std::string> arp_problem(const std::string& where, NamespaceView& ns,
                                         const IpAddress& next_hop, const std::string& device) {
    auto entry = ns.neighbor(next_hop);
    if (!entry) return std::nullopt;
    if (entry->failed() || entry->incomplete()) {
      return where + ": no ARP answer from " + next_hop.to_string() + who(next_hop) + " on " +
             device + " (neighbour " + entry->state_name() + ")";
    }
    // A resolved entry pointing at the wrong MAC (stale or forged) sends frames nowhere.
    if (entry->mac) {
      auto real = real_mac(next_hop);
      if (real && *real != *entry->mac) {
        return where + ": the neighbour entry for " + next_hop.to_string() + who(next_hop) +
               " on " + device + " says " + entry->mac->to_string() + ", but its MAC is " +
               real->to_string() + " (neighbour " + entry->state_name() + ")";
      }
    }
    return std::nullopt;
  }

  // From a pod's own namespace to its node.
  std::optional<std::string> pod_side(const PodRecord& p, const IpAddress& peer, bool outbound) {
    const std::string where = "pod " + p.key();
    NamespaceView& ns = view(p.netns);
    if (!ns.exists()) return where + ": its network namespace " + p.netns + " is gone";
    const NodePlan* n = node(p.id.node);
    if (n) {
      NamespaceView& node_ns = view(n->netns);
      if (auto bad = link_problem("node " + n->name, node_ns, kPodBridge, "the pod bridge")) {
        return bad;
      }
      if (!p.host_veth.empty()) {
        if (auto bad = link_problem("node " + n->name, node_ns, p.host_veth,
                                    "the veth of pod " + p.key())) {
          return bad;
        }
        const LinkInfo* veth = node_ns.link(p.host_veth);
        const LinkInfo* bridge = node_ns.link(kPodBridge);
        if (veth && bridge && veth->master != bridge->index) {
          return "node " + n->name + ": " + p.host_veth + " (the veth of pod " + p.key() +
                 ") is not a port of the pod bridge " + kPodBridge;
        }
      }
    }
    if (auto bad = link_problem(where, ns, "eth0", "the pod's interface")) return bad;
    auto route = ns.route(peer);
    if (!route) {
      return where + ": no route " + (outbound ? "to " : "back to ") + peer.to_string() + who(peer);
    }
    const IpAddress next_hop = route->gateway.value_or(peer);
    if (auto bad = arp_problem(where, ns, next_hop, "eth0")) return bad;
    return std::nullopt;
  }

  // Inside a node: from `from` toward `to` (a pod address), crossing to node `to_node` when the
  // pod lives elsewhere.
  std::optional<std::string> node_side(const NodePlan& from, const NodePlan& to_node,
                                       const IpAddress& to) {
    const std::string where = "node " + from.name;
    NamespaceView& ns = view(from.netns);
    if (!ns.exists()) return where + ": its network namespace " + from.netns + " is gone";
    auto route = ns.route(to);
    if (!route) {
      std::string expected;
      if (from.name != to_node.name && cluster_.spec.network == netmodel::Network::routed) {
        expected = " (the route " + to_node.pod_subnet.to_string() + " via " +
                   to_node.address.address().to_string() + " to node " + to_node.name +
                   " is missing)";
      }
      return where + ": no route to " + to.to_string() + who(to) + expected;
    }
    const LinkInfo* out = ns.link(route->oif);
    const std::string out_name = out ? out->name : "link #" + std::to_string(route->oif);
    if (out_name == kNodeUplink) {
      if (from.name != to_node.name) {
        if (auto bad = fabric_problem(from, to_node, false)) return bad;
      }
      if (auto bad = link_problem(where, ns, kNodeUplink, "the uplink")) return bad;
      const IpAddress next_hop = route->gateway.value_or(to);
      if (route->gateway && from.name != to_node.name &&
          *route->gateway != to_node.address.address()) {
        return where + ": routes " + to.to_string() + " via " + route->gateway->to_string() +
               who(*route->gateway) + ", not via node " + to_node.name + " (" +
               to_node.address.address().to_string() + ")";
      }
      if (auto bad = arp_problem(where, ns, next_hop, kNodeUplink)) return bad;
    } else if (out_name == kPodBridge) {
      if (auto bad = link_problem(where, ns, kPodBridge, "the pod bridge")) return bad;
      if (from.name != to_node.name) {
        if (auto bad = fabric_problem(from, to_node, true)) return bad;
      }
      if (auto bad = arp_problem(where, ns, route->gateway.value_or(to), kPodBridge)) return bad;
    } else if (from.name != to_node.name || to != from.gateway.address()) {
      return where + ": routes " + to.to_string() + who(to) + " out of " + out_name +
             ", not toward the pod network";
    }
    return std::nullopt;
  }

  // The fabric links between two nodes: the uplinks (routed) or the pod segment (flat).
  std::optional<std::string> fabric_problem(const NodePlan& a, const NodePlan& b, bool segment) {
    NamespaceView& fabric = view(fabric_netns(cluster_.spec.name));
    if (!fabric.exists())
      return "the fabric namespace " + fabric_netns(cluster_.spec.name) + " is gone";
    const char* bridge = segment ? kPodSegmentBridge : kFabricBridge;
    if (auto bad =
            link_problem("fabric", fabric, bridge, segment ? "the pod segment" : "the node LAN"))
      return bad;
    for (const NodePlan* n : {&a, &b}) {
      const std::string port = segment ? n->segment_port : n->fabric_port;
      const std::string what =
          (segment ? "pod segment link of node " : "uplink of node ") + n->name;
      if (auto bad = link_problem("fabric", fabric, port, what)) return bad;
      NamespaceView& ns = view(n->netns);
      if (auto bad = link_problem("node " + n->name, ns, segment ? kNodeSegmentLink : kNodeUplink,
                                  segment ? "the pod segment link" : "the uplink")) {
        return bad;
      }
    }
    return std::nullopt;
  }

  std::optional<std::string> walk(const PairResult& pair, const PodRecord& dst,
                                  const IpAddress& src_ip) {
    const NodePlan* dst_node = node(dst.id.node);
    if (!dst_node) return "pod " + dst.key() + " runs on node " + dst.id.node + ", which is gone";
    const NodePlan* src_node = nullptr;
    const PodRecord* src_pod = nullptr;
    if (pair.from.kind == EndpointKind::pod) {
      src_pod = pod(pair.from.name);
      if (!src_pod) return "pod " + pair.from.name + " is not in the cluster's records";
      src_node = node(src_pod->id.node);
      if (auto bad = pod_side(*src_pod, *dst.ip, true)) return bad;
    } else {
      src_node = node(pair.from.name);
    }
    if (!src_node) return "the source's node is gone";
    // Out of the source node toward the destination pod.
    if (auto bad = node_side(*src_node, *dst_node, *dst.ip)) return bad;
    if (src_node->name != dst_node->name && cluster_.spec.network == netmodel::Network::routed) {
      if (auto bad = node_side(*dst_node, *dst_node, *dst.ip)) return bad;
    }
    // The destination pod, and its way back.
    if (auto bad = pod_side(dst, src_ip, false)) return bad;
    if (src_node->name != dst_node->name && cluster_.spec.network == netmodel::Network::routed) {
      if (auto bad = node_side(*dst_node, *src_node, src_ip)) return bad;
    }
    return std::nullopt;
  }

  std::string listener_problem(const PairResult& pair, const PodRecord& dst) {
    std::string text = "nothing listening on " + dst.ip->to_string() + ":" +
                       std::to_string(pair.port) + "/" + std::string(to_string(pair.protocol)) +
                       " in pod " + dst.key();
    if (dst.workload.pid > 0 && !dst.workload.alive()) {
      text += " (its workload, pid " + std::to_string(dst.workload.pid) + ", is not running)";
    }
    return text;
  }

  const StoredCluster& cluster_;
  const std::vector<NodePlan>& nodes_;
  const std::vector<PodRecord>& pods_;
  std::map<std::string, NamespaceView> views_;
};

std::string percent_line(std::size_t ok, std::size_t total, const std::string& what) {
  return std::to_string(ok) + "/" + std::to_string(total) + " " + what;
}

}  // namespace

std::string diagnose(const StoredCluster& cluster, const std::vector<NodePlan>& nodes,
                     const std::vector<PodRecord>& pods, const PairResult& pair) {
  Walker walker(cluster, nodes, pods);
  return walker.diagnose(pair);
}

CheckReport run_check(const StoredCluster& cluster, const std::vector<NodePlan>& nodes,
                      const std::vector<PodRecord>& pods, const CheckOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  CheckReport report;

  std::vector<const PodRecord*> running;
  for (const auto& pod : pods) {
    if (pod.phase == PodPhase::running && pod.ip) running.push_back(&pod);
  }
  // Sources: every running pod (or a sample of them), then every node.
  std::vector<bool> is_source(running.size(), true);
  if (options.sample > 0 && options.sample < running.size()) {
    std::vector<std::size_t> order(running.size());
    for (std::size_t i = 0; i < order.size(); ++i)
      order[i] = i;
    std::mt19937_64 random(std::random_device{}());
    std::shuffle(order.begin(), order.end(), random);
    is_source.assign(running.size(), false);
    for (std::size_t i = 0; i < options.sample; ++i)
      is_source[order[i]] = true;
  }
  std::deque<NetNs> handles;
  std::vector<ProbeSource> sources;
  std::vector<CheckEndpoint> source_endpoints;
  for (const PodRecord* pod : running) {
    const NetNs* handle = nullptr;
    try {
      handles.push_back(NetNs::open_named(pod->netns));
      handle = &handles.back();
    } catch (const std::exception&) {
    }
    sources.push_back({pod->key(), handle});
    source_endpoints.push_back({EndpointKind::pod, pod->key(), pod->id.node});
  }
  const std::size_t first_node_source = sources.size();
  if (options.nodes) {
    for (const auto& node : nodes) {
      const NetNs* handle = nullptr;
      try {
        handles.push_back(NetNs::open_named(node.netns));
        handle = &handles.back();
      } catch (const std::exception&) {
      }
      sources.push_back({node.name, handle});
      source_endpoints.push_back({EndpointKind::node, node.name, node.name});
    }
  }

  // Targets: each pod's first TCP port and first UDP port.
  std::vector<ProbeTarget> targets;
  struct TargetInfo {
    std::size_t pod = 0;
  };
  std::vector<TargetInfo> target_info;
  std::vector<std::optional<std::size_t>> tcp_target(running.size()), udp_target(running.size());
  for (std::size_t i = 0; i < running.size(); ++i) {
    const PodRecord& pod = *running[i];
    for (const auto& port : pod.ports) {
      const bool udp = port.protocol == netmodel::Protocol::udp;
      auto& slot = udp ? udp_target[i] : tcp_target[i];
      if (slot) continue;
      slot = targets.size();
      targets.push_back(
          {pod.key(), *pod.ip, port.container_port, udp ? Protocol::udp : Protocol::tcp});
      target_info.push_back({i});
    }
  }

  std::vector<Probe> probes;
  for (std::size_t s = 0; s < running.size(); ++s) {
    if (!is_source[s]) continue;
    for (std::size_t d = 0; d < running.size(); ++d) {
      if (s == d) continue;
      if (tcp_target[d]) {
        probes.push_back({s, *tcp_target[d]});
        ++report.pod_pods_tcp;
      }
      if (options.udp && udp_target[d]) {
        probes.push_back({s, *udp_target[d]});
        ++report.pod_pods_udp;
      }
    }
  }
  if (options.nodes) {
    for (std::size_t n = 0; n < nodes.size(); ++n) {
      for (std::size_t d = 0; d < running.size(); ++d) {
        auto target = tcp_target[d] ? tcp_target[d] : udp_target[d];
        if (!target) continue;
        probes.push_back({first_node_source + n, *target});
        ++report.node_pods;
      }
    }
  }

  ProbeOptions probe_options;
  probe_options.timeout = options.timeout;
  const auto results = run_probes(sources, targets, probes, probe_options);

  Walker walker(cluster, nodes, pods);
  report.pairs.reserve(probes.size());
  for (std::size_t i = 0; i < probes.size(); ++i) {
    const Probe& probe = probes[i];
    const ProbeTarget& target = targets[probe.target];
    const PodRecord& dst = *running[target_info[probe.target].pod];
    PairResult pair;
    pair.from = source_endpoints[probe.source];
    pair.to = {EndpointKind::pod, dst.key(), dst.id.node};
    pair.protocol = target.protocol;
    pair.address = target.address;
    pair.port = target.port;
    pair.probe = results[i];
    if (results[i].outcome == ProbeOutcome::ok && results[i].seen_client) {
      const IpAddress seen = *results[i].seen_client;
      if (pair.from.kind == EndpointKind::pod) {
        pair.passed = seen == *running[probe.source]->ip;
      } else {
        // A node's source is one of its own addresses (eth0 or the pod bridge's gateway).
        const NodePlan& node = nodes[probe.source - first_node_source];
        pair.passed = seen == node.address.address() || seen == node.gateway.address();
      }
    }
    if (!pair.passed) {
      ++report.failed;
      pair.hop = walker.diagnose(pair);
    }
    report.pairs.push_back(std::move(pair));
  }
  report.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  return report;
}

// --- output ---

std::string check_summary(const CheckReport& report) {
  std::size_t tcp_ok = 0, udp_ok = 0, node_ok = 0;
  for (const auto& pair : report.pairs) {
    if (!pair.passed) continue;
    if (pair.from.kind == EndpointKind::node) {
      ++node_ok;
    } else if (pair.protocol == Protocol::tcp) {
      ++tcp_ok;
    } else {
      ++udp_ok;
    }
  }
  std::ostringstream line;
  std::size_t nated = 0;
  for (const auto& pair : report.pairs) {
    nated += !pair.passed && pair.probe.outcome == ProbeOutcome::ok;
  }
  line << "check " << (report.passed() ? "passed" : "FAILED") << ": "
       << percent_line(tcp_ok, report.pod_pods_tcp, "pod→pod TCP") << ", "
       << percent_line(udp_ok, report.pod_pods_udp, "pod→pod UDP") << ", "
       << percent_line(node_ok, report.node_pods, "node→pod") << ", "
       << (nated ? std::to_string(nated) + " NATed" : std::string("no NAT"));
  if (!report.passed()) line << "; " << report.failed << " failed";
  line << " (" << std::fixed << std::setprecision(1) << report.elapsed.count() / 1000.0 << " s)";
  return line.str();
}

void print_check_table(std::ostream& out, const CheckReport& report, bool wide) {
  // One row per source.
  struct Row {
    std::string kind, node;
    std::size_t tcp = 0, tcp_ok = 0, udp = 0, udp_ok = 0;
  };
  std::map<std::string, Row> rows;
  std::vector<std::string> order;
  for (const auto& pair : report.pairs) {
    const std::string key = label(pair.from);
    auto [it, fresh] = rows.try_emplace(key);
    if (fresh) {
      order.push_back(key);
      it->second.kind = kind_name(pair.from.kind);
      it->second.node = pair.from.node;
    }
    if (pair.protocol == Protocol::tcp) {
      ++it->second.tcp;
      it->second.tcp_ok += pair.passed;
    } else {
      ++it->second.udp;
      it->second.udp_ok += pair.passed;
    }
  }
  Table sources({"SOURCE", "KIND", "NODE", "TCP", "UDP", "RESULT"});
  for (const auto& key : order) {
    const Row& row = rows[key];
    const bool ok = row.tcp_ok == row.tcp && row.udp_ok == row.udp;
    sources.add({key.substr(key.find(' ') + 1), row.kind, row.node,
                 std::to_string(row.tcp_ok) + "/" + std::to_string(row.tcp),
                 row.udp ? std::to_string(row.udp_ok) + "/" + std::to_string(row.udp) : "-",
                 ok ? "ok" : "FAILED"});
  }
  sources.print(out);
  if (report.passed()) return;

  // The broken hops, each with how many pairs it breaks.
  std::map<std::string, std::size_t> hops;
  for (const auto& pair : report.pairs) {
    if (!pair.passed) ++hops[pair.hop];
  }
  std::vector<std::pair<std::string, std::size_t>> sorted(hops.begin(), hops.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second > b.second; });
  out << "\nBROKEN HOPS\n";
  Table broken({"PAIRS", "HOP"});
  for (const auto& [hop, count] : sorted)
    broken.add({std::to_string(count), hop});
  broken.print(out);

  out << "\nFAILURES\n";
  Table failures({"FROM", "TO", "PROTO", "DESTINATION", "RESULT", "HOP"});
  std::size_t shown = 0, total = 0;
  for (const auto& pair : report.pairs) {
    if (pair.passed) continue;
    ++total;
    if (!wide && shown >= 20) continue;
    ++shown;
    const std::string result = pair.probe.outcome == ProbeOutcome::ok && pair.probe.seen_client
                                   ? "NAT: seen as " + pair.probe.seen_client->to_string()
                                   : std::string(to_string(pair.probe.outcome));
    failures.add({label(pair.from), label(pair.to), std::string(to_string(pair.protocol)),
                  pair.address.to_string() + ":" + std::to_string(pair.port), result, pair.hop});
  }
  failures.print(out);
  if (shown < total) {
    out << "... and " << (total - shown) << " more failures (-o wide lists them all)\n";
  }
}

json check_to_json(const CheckReport& report) {
  json pairs = json::array();
  for (const auto& pair : report.pairs) {
    json entry = {
        {"from",
         {{"kind", kind_name(pair.from.kind)}, {"name", pair.from.name}, {"node", pair.from.node}}},
        {"to", {{"kind", "pod"}, {"name", pair.to.name}, {"node", pair.to.node}}},
        {"protocol", std::string(to_string(pair.protocol))},
        {"address", pair.address.to_string()},
        {"port", pair.port},
        {"passed", pair.passed},
        {"outcome", std::string(to_string(pair.probe.outcome))},
        {"elapsedMicroseconds", pair.probe.elapsed.count()},
    };
    if (pair.probe.seen_client) entry["seenClient"] = pair.probe.seen_client->to_string();
    if (!pair.passed) entry["hop"] = pair.hop;
    pairs.push_back(entry);
  }
  return {
      {"passed", report.passed()},
      {"summary", check_summary(report)},
      {"pairs", pairs},
      {"failed", report.failed},
      {"elapsedSeconds", report.elapsed.count() / 1000.0},
  };
}

namespace {
std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}
}  // namespace

void write_junit(std::ostream& out, const std::string& cluster, const CheckReport& report) {
  out << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  out << "<testsuites name=\"flatnet check\" tests=\"" << report.pairs.size() << "\" failures=\""
      << report.failed << "\" time=\"" << report.elapsed.count() / 1000.0 << "\">\n";
  out << "  <testsuite name=\"" << xml_escape("flatnet check " + cluster) << "\" tests=\""
      << report.pairs.size() << "\" failures=\"" << report.failed << "\" time=\""
      << report.elapsed.count() / 1000.0 << "\">\n";
  for (const auto& pair : report.pairs) {
    const std::string name = label(pair.from) + " -> " + label(pair.to) + " " +
                             std::string(to_string(pair.protocol)) + " " +
                             pair.address.to_string() + ":" + std::to_string(pair.port);
    out << "    <testcase classname=\"" << xml_escape(label(pair.from)) << "\" name=\""
        << xml_escape(name) << "\" time=\"" << pair.probe.elapsed.count() / 1e6 << "\"";
    if (pair.passed) {
      out << "/>\n";
      continue;
    }
    out << ">\n      <failure message=\"" << xml_escape(pair.hop) << "\">"
        << xml_escape(pair.probe.describe()) << "</failure>\n    </testcase>\n";
  }
  out << "  </testsuite>\n</testsuites>\n";
}

}  // namespace flatnet::emulator
