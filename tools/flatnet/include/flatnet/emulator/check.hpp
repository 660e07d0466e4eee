#pragma once

// `flatnet check`: proof that the Kubernetes network model holds in a running cluster. Every
// pod reaches every other pod over TCP and UDP, every node reaches every pod, and the address
// each server saw (netexec's /clientip) is the client's own: nothing on the way was NATed.
// When a pair fails, the path it should take is walked hop by hop in the kernel's own tables
// (links, routes, ARP entries, the workload) to name the first broken hop.

#include <chrono>
#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "flatnet/emulator/plan.hpp"
#include "flatnet/emulator/probe.hpp"
#include "flatnet/emulator/state.hpp"

namespace flatnet::emulator {

enum class EndpointKind { pod, node };

struct CheckEndpoint {
  EndpointKind kind = EndpointKind::pod;
  std::string name;
  std::string node;  // the node a pod runs on; for a node, itself
};

struct PairResult {
  CheckEndpoint from, to;
  Protocol protocol = Protocol::tcp;
  netmodel::IpAddress address;  // the destination
  std::uint16_t port = 0;
  bool passed = false;
  ProbeResult probe;
  // For a failure: the broken hop ("node-1: no route to 10.244.2.5 ...") or what was wrong
  // with the answer ("source NATed: ...").
  std::string hop;
};

struct CheckReport {
  std::vector<PairResult> pairs;
  std::size_t pod_pods_tcp = 0, pod_pods_udp = 0, node_pods = 0;  // pairs of each kind
  std::size_t failed = 0;
  std::chrono::milliseconds elapsed{0};
  bool passed() const { return failed == 0; }
};

struct CheckOptions {
  std::chrono::milliseconds timeout{2000};
  bool udp = true;
  bool nodes = true;
  std::size_t sample = 0;  // > 0: only this many source pods, chosen at random, to every pod
};

// Runs every pair against the running cluster (its plan and pod records).
CheckReport run_check(const StoredCluster& cluster, const std::vector<NodePlan>& nodes,
                      const std::vector<PodRecord>& pods, const CheckOptions& options = {});

// Output: a table (per source, with each failure and its hop), the summary line, JSON, JUnit.
void print_check_table(std::ostream& out, const CheckReport& report, bool wide);
std::string check_summary(const CheckReport& report);
nlohmann::json check_to_json(const CheckReport& report);
void write_junit(std::ostream& out, const std::string& cluster, const CheckReport& report);

// The diagnosis alone, for a failed pair (exposed for tests).
struct PathContext;
std::string diagnose(const StoredCluster& cluster, const std::vector<NodePlan>& nodes,
                     const std::vector<PodRecord>& pods, const PairResult& pair);

}  // namespace flatnet::emulator
