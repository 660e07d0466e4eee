#pragma once

// `flatnet graph`: a Graphviz picture of a running cluster: the fabric and its bridges, each node
// with its uplink address, its pod bridge and its pod subnet, and each pod with its address and
// ports, joined as the links join them.

#include <string>
#include <vector>

#include "flatnet/emulator/plan.hpp"
#include "flatnet/emulator/state.hpp"

namespace flatnet::emulator {

// The DOT text.
std::string cluster_graph(const StoredCluster& cluster, const std::vector<NodePlan>& nodes,
                          const std::vector<PodRecord>& pods);

}  // namespace flatnet::emulator
