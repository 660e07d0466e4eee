#include "flatnet/emulator/graph.hpp"

#include <sstream>

namespace flatnet::emulator {

namespace {

// A DOT string literal. Backslashes pass through: labels use DOT's own "\n" line breaks, and the
// names that go into labels (DNS labels, addresses) hold none of their own.
std::string q(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string id(const std::string& kind, const std::string& name) {
  return q(kind + ":" + name);
}

}  // namespace

std::string cluster_graph(const StoredCluster& cluster, const std::vector<NodePlan>& nodes,
                          const std::vector<PodRecord>& pods) {
  const auto& spec = cluster.spec;
  const bool flat = spec.network == netmodel::Network::flat;
  std::ostringstream dot;
  dot << "digraph " << q("flatnet " + spec.name) << " {\n"
      << "  graph [rankdir=TB, fontname=\"Helvetica\", fontsize=11, compound=true, label="
      << q("cluster " + spec.name + " — " + std::string(netmodel::to_string(spec.network)) +
           " network, cni " + std::string(netmodel::to_string(spec.cni)) + ", pods " +
           spec.pod_cidr.to_string() + ", nodes " + spec.node_cidr.to_string())
      << ", labelloc=t];\n"
      << "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=10];\n"
      << "  edge [dir=none, color=\"#555555\"];\n";

  dot << "  subgraph \"cluster_fabric\" {\n"
      << "    label=" << q("fabric (" + fabric_netns(spec.name) + ")") << "; style=dashed;\n"
      << "    " << id("bridge", kFabricBridge)
      << " [label=" << q(std::string(kFabricBridge) + "\\nnode LAN " + spec.node_cidr.to_string())
      << ", fillcolor=\"#dde6f5\"];\n";
  if (flat) {
    dot << "    " << id("bridge", kPodSegmentBridge) << " [label="
        << q(std::string(kPodSegmentBridge) + "\\npod segment " + spec.pod_cidr.to_string())
        << ", fillcolor=\"#e3f2e1\"];\n";
  }
  dot << "  }\n";

  for (const auto& node : nodes) {
    dot << "  subgraph " << q("cluster_node_" + node.name) << " {\n"
        << "    label=" << q("node " + node.name + " (" + node.netns + ")")
        << "; style=rounded; color=\"#6b7b99\";\n"
        << "    " << id("eth0", node.name) << " [label=" << q("eth0\\n" + node.address.to_string())
        << ", fillcolor=\"#dde6f5\"];\n"
        << "    " << id("flat0", node.name) << " [label="
        << q(std::string(kPodBridge) + "\\n" + node.gateway.to_string() + "\\npods " +
             node.pod_subnet.to_string())
        << ", fillcolor=\"#e3f2e1\"];\n";
    for (const auto& pod : pods) {
      if (pod.id.node != node.name) continue;
      std::string ports;
      for (const auto& port : pod.ports) {
        ports += (ports.empty() ? "" : " ") + std::to_string(port.container_port) + "/" +
                 std::string(netmodel::to_string(port.protocol));
      }
      dot << "    " << id("pod", pod.key()) << " [label="
          << q("pod " + pod.key() + "\\n" + (pod.ip ? pod.ip->to_string() : "no address") +
               (ports.empty() ? "" : "\\n" + ports))
          << ", fillcolor=" << (pod.phase == PodPhase::running ? "\"#fff4d6\"" : "\"#f8d7d7\"")
          << "];\n";
    }
    dot << "  }\n";
    dot << "  " << id("bridge", kFabricBridge) << " -> " << id("eth0", node.name)
        << " [label=" << q(node.fabric_port) << ", fontsize=8];\n";
    dot << "  " << id("eth0", node.name) << " -> " << id("flat0", node.name)
        << " [style=dotted, label=" << (flat ? "\"forwards\"" : "\"routes\"") << ", fontsize=8];\n";
    if (flat) {
      dot << "  " << id("bridge", kPodSegmentBridge) << " -> " << id("flat0", node.name)
          << " [label=" << q(node.segment_port) << ", fontsize=8];\n";
    }
    for (const auto& pod : pods) {
      if (pod.id.node != node.name) continue;
      dot << "  " << id("flat0", node.name) << " -> " << id("pod", pod.key())
          << " [label=" << q(pod.host_veth) << ", fontsize=8];\n";
    }
  }
  dot << "}\n";
  return dot.str();
}

}  // namespace flatnet::emulator
