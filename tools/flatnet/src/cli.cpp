#include "flatnet/emulator/cli.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "flatnet/emulator/check.hpp"
#include "flatnet/emulator/cluster.hpp"
#include "flatnet/emulator/graph.hpp"
#include "flatnet/emulator/table.hpp"
#include "flatnet/netmodel/cluster_file.hpp"
#include "flatnet/netmodel/netns.hpp"

namespace flatnet::emulator {

namespace po = boost::program_options;
using nlohmann::json;

namespace {

constexpr const char* kUsage =
    R"(flatnet: Kubernetes network model emulator: clusters of nodes and pods from Kubernetes YAML

usage: flatnet VERB [options]

verbs:
  up -f FILE                        create a cluster, or make a running one match FILE
  apply -f FILE                     add or change objects in a running cluster
  delete pod|deployment NAME        delete an object (a deployment's pod is replaced)
  scale deployment NAME --replicas N
  down [NAME | --all]               remove a cluster and everything it owns
  get nodes|pods [-o wide|json]     list the cluster's nodes or pods
  exec POD|NODE -- CMD [ARGS...]    run a command inside a pod's or node's network namespace
  check [-o wide|json] [--junit F]  prove the network model: every pod to every pod (TCP, UDP),
                                    every node to every pod, no NAT
  graph -o FILE.svg|.png|.dot       draw the cluster with Graphviz

Every verb takes --help. Verbs that act on a running cluster take --cluster NAME (-c), which may
be left out when only one cluster runs. flatnet must run as root: it creates network namespaces.
)";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Progress on a terminal (one line rewritten in place), nothing when stderr is not one.
class ConsoleReporter : public Reporter {
 public:
  ConsoleReporter() : tty_(::isatty(STDERR_FILENO)) {}
  ~ConsoleReporter() override { clear(); }
  void note(const std::string& line) override {
    std::lock_guard lock(mutex_);
    clear();
    std::cout << line << std::endl;
  }
  void warn(const std::string& line) override {
    std::lock_guard lock(mutex_);
    clear();
    std::cerr << "warning: " << line << std::endl;
  }
  void progress(const std::string& what, std::size_t done, std::size_t total) override {
    if (!tty_) return;
    std::lock_guard lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    if (done < total && now - last_ < std::chrono::milliseconds(50)) return;
    last_ = now;
    std::cerr << "\r\033[K" << what << " " << done << "/" << total << std::flush;
    shown_ = true;
  }
  void clear() {
    if (shown_) std::cerr << "\r\033[K" << std::flush;
    shown_ = false;
  }

 private:
  bool tty_;
  bool shown_ = false;
  std::mutex mutex_;
  std::chrono::steady_clock::time_point last_{};
};

void require_root() {
  if (::geteuid() != 0) {
    throw std::runtime_error(
        "must run as root: it creates network namespaces, links and routes (try sudo)");
  }
}

// --- option parsing ---

struct Parsed {
  po::variables_map vm;
  std::vector<std::string> positional;
};

Parsed parse(const std::string& verb, const std::vector<std::string>& args,
             po::options_description options, const std::string& usage) {
  options.add_options()("help,h", "show this help");
  po::options_description all;
  all.add(options);
  all.add_options()("positional", po::value<std::vector<std::string>>(), "");
  po::positional_options_description positional;
  positional.add("positional", -1);
  Parsed parsed;
  try {
    po::store(po::command_line_parser(args).options(all).positional(positional).run(), parsed.vm);
    po::notify(parsed.vm);
  } catch (const po::error& e) {
    throw UsageError("flatnet " + verb + ": " + e.what() + " (see flatnet " + verb + " --help)");
  }
  if (parsed.vm.count("help")) {
    std::cout << "usage: " << usage << "\n\n" << options;
    throw 0;  // caught by run_cli: help printed, exit 0
  }
  if (parsed.vm.count("positional")) {
    parsed.positional = parsed.vm["positional"].as<std::vector<std::string>>();
  }
  return parsed;
}

po::options_description cluster_option() {
  po::options_description options("options");
  options.add_options()("cluster,c", po::value<std::string>(),
                        "the cluster to act on (default: the only one running)");
  return options;
}

std::string choose_cluster(const po::variables_map& vm) {
  if (vm.count("cluster")) {
    const std::string name = vm["cluster"].as<std::string>();
    if (!ClusterState(name).exists()) {
      throw std::runtime_error("cluster " + name + " is not running (flatnet up -f FILE)");
    }
    return name;
  }
  const auto names = ClusterState::list();
  if (names.empty()) throw std::runtime_error("no cluster is running (flatnet up -f FILE)");
  if (names.size() > 1) {
    std::string list;
    for (const auto& name : names)
      list += (list.empty() ? "" : ", ") + name;
    throw std::runtime_error("several clusters are running (" + list +
                             "): choose one with --cluster NAME");
  }
  return names.front();
}

// -o: "" (a table), "wide" or "json".
std::string output_format(const std::string& verb, const po::variables_map& vm) {
  const std::string output = vm["output"].as<std::string>();
  if (output != "" && output != "wide" && output != "json") {
    throw UsageError("flatnet " + verb + ": -o " + output + " is not wide or json");
  }
  return output;
}

StoredCluster load_running(const ClusterState& state) {
  auto stored = state.load();
  if (!stored) {
    throw std::runtime_error("cluster " + state.cluster() + " is not running (flatnet up -f FILE)");
  }
  return *stored;
}

netmodel::ClusterFile read_file(const std::string& path) {
  netmodel::ClusterFile file = netmodel::load_cluster_file(path);
  for (const auto& warning : file.warnings)
    std::cerr << warning.to_string() << "\n";
  return file;
}

// Pod names the API server accepts (253 characters) can be too long for a network namespace's
// name (255 bytes) once the cluster's prefix is added: refused here, naming the object, before
// anything is made.
void check_name_lengths(const netmodel::ClusterFile& file, const std::string& cluster) {
  constexpr std::size_t kMax = 255;
  auto check = [&](const std::string& kind, const netmodel::ObjectMeta& meta,
                   const netmodel::ObjectSource& source, std::size_t suffix) {
    const std::size_t length = pod_netns(cluster, meta.namespace_, meta.name).size() + suffix;
    if (length <= kMax) return;
    const std::string object = kind + " \"" +
                               (meta.namespace_ == "default" ? "" : meta.namespace_ + "/") +
                               meta.name + "\"";
    throw netmodel::ClusterFileError(
        file.origin, source.at("metadata.name"), object, "metadata.name", meta.name,
        "too long for flatnet: its pods' network namespace names would have " +
            std::to_string(length) + " characters, and at most " + std::to_string(kMax) +
            " are possible");
  };
  for (std::size_t i = 0; i < file.pods.size(); ++i) {
    check("Pod", file.pods[i].meta, file.pod_sources[i], 0);
  }
  for (std::size_t i = 0; i < file.deployments.size(); ++i) {
    check("Deployment", file.deployments[i].meta, file.deployment_sources[i],
          std::string("-0123456789-abcde").size());  // -<template hash>-<suffix>
  }
}

std::string seconds_since(std::chrono::steady_clock::time_point start) {
  std::ostringstream text;
  text << std::fixed << std::setprecision(1)
       << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s";
  return text.str();
}

std::string age(std::int64_t created_unix) {
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  const std::int64_t s = std::max<std::int64_t>(0, now - created_unix);
  if (s < 120) return std::to_string(s) + "s";
  if (s < 7200) return std::to_string(s / 60) + "m";
  if (s < 172800) return std::to_string(s / 3600) + "h";
  return std::to_string(s / 86400) + "d";
}

// "1 pod", "2 pods".
std::string count(std::size_t n, const std::string& noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

int finish(const ApplyReport& report, const std::string& cluster, std::size_t pods,
           std::size_t nodes, const std::string& verb,
           std::chrono::steady_clock::time_point start) {
  std::ostringstream line;
  const std::string failed =
      report.failures.empty() ? "" : ", " + count(report.failures.size(), "error") + ":";
  if (report.changed()) {
    line << "cluster " << cluster << " " << (failed.empty() ? verb : "changed") << ": "
         << count(nodes, "node") << ", " << count(pods, "pod");
    std::vector<std::string> parts;
    if (report.nodes_created) parts.push_back(count(report.nodes_created, "node") + " created");
    if (report.nodes_removed) parts.push_back(count(report.nodes_removed, "node") + " removed");
    if (report.pods_created) parts.push_back(count(report.pods_created, "pod") + " created");
    if (report.pods_removed) parts.push_back(count(report.pods_removed, "pod") + " removed");
    if (report.workloads_restarted) {
      parts.push_back(count(report.workloads_restarted, "workload") + " restarted");
    }
    if (report.repaired) parts.push_back(count(report.repaired, "repair"));
    std::string joined;
    for (const auto& part : parts)
      joined += (joined.empty() ? "" : ", ") + part;
    line << " (" << joined << ") in " << seconds_since(start) << failed;
  } else {
    line << "cluster " << cluster << " unchanged: " << count(nodes, "node") << ", "
         << count(pods, "pod") << failed;
  }
  std::cout << line.str() << std::endl;
  for (const auto& failure : report.failures)
    std::cerr << "error: " << failure << "\n";
  return report.failures.empty() ? 0 : 1;
}

std::size_t running_pods(const ClusterState& state) {
  std::size_t n = 0;
  for (const auto& pod : state.pods())
    n += pod.phase == PodPhase::running;
  return n;
}

// --- verbs ---

int cmd_up(const std::vector<std::string>& args, bool apply) {
  po::options_description options("options");
  options.add_options()("filename,f", po::value<std::string>(), "the cluster file (YAML)")(
      "parallel", po::value<std::size_t>()->default_value(0),
      "pods made at once (0: twice the CPUs, at least 4)");
  if (!apply) {
    options.add_options()("name", po::value<std::string>(),
                          "the cluster's name, instead of the file's (one file, several clusters)");
  }
  if (apply) options.add(cluster_option());
  const std::string verb = apply ? "apply" : "up";
  auto parsed = parse(verb, args, options,
                      apply ? "flatnet apply -f FILE [--cluster NAME]\n\nAdds the file's pods and "
                              "deployments to a running cluster, or changes those of the same "
                              "name.\nObjects not in the file stay. A Cluster document in the "
                              "file may add nodes."
                            : "flatnet up -f FILE [--name NAME]\n\nCreates the cluster the file "
                              "describes, or makes the running cluster of that name match\nthe "
                              "file exactly (objects no longer in it are removed), repairing and "
                              "naming any\ndrift (links down, routes gone, dead workloads). "
                              "Running it twice changes nothing\nthe second time. Exit status 1 "
                              "when a pod could not be placed or made.");
  if (!parsed.vm.count("filename")) throw UsageError("flatnet " + verb + ": -f FILE is required");
  if (!parsed.positional.empty()) {
    throw UsageError("flatnet " + verb + ": unexpected argument " + parsed.positional.front());
  }
  require_root();
  const auto start = std::chrono::steady_clock::now();
  const std::string path = parsed.vm["filename"].as<std::string>();
  netmodel::ClusterFile file = read_file(path);

  std::string name;
  if (apply) {
    if (parsed.vm.count("cluster")) {
      name = choose_cluster(parsed.vm);
    } else if (file.cluster) {
      name = file.cluster->name;
    } else {
      name = choose_cluster(parsed.vm);
    }
    if (file.cluster && file.cluster->name != name && !parsed.vm.count("cluster")) {
      throw std::runtime_error(path + ": the Cluster document names cluster " + file.cluster->name +
                               ", not " + name);
    }
  } else {
    name = file.cluster ? file.cluster->name : netmodel::default_cluster().name;
    if (parsed.vm.count("name")) {
      name = parsed.vm["name"].as<std::string>();
      if (const std::string problem = netmodel::dns1123_label_problem(name); !problem.empty()) {
        throw UsageError("flatnet up: --name: " + problem);
      }
      if (name.size() > netmodel::ClusterSpec::kMaxNameLength) {
        throw UsageError("flatnet up: --name " + name + " is longer than " +
                         std::to_string(netmodel::ClusterSpec::kMaxNameLength) + " characters");
      }
    }
  }

  ClusterState state(name);
  if (apply && !state.exists()) {
    throw std::runtime_error("cluster " + name + " is not running (flatnet up -f FILE)");
  }
  state.lock(!apply);
  StoredCluster declared;
  if (apply) {
    declared = load_running(state);
    if (file.cluster) {
      declared.spec = *file.cluster;
      declared.spec.name = name;
    }
    auto same = [](const netmodel::ObjectMeta& a, const netmodel::ObjectMeta& b) {
      return a.namespace_ == b.namespace_ && a.name == b.name;
    };
    for (const auto& pod : file.pods) {
      auto it = std::find_if(declared.pods.begin(), declared.pods.end(),
                             [&](const netmodel::Pod& p) { return same(p.meta, pod.meta); });
      if (it != declared.pods.end()) {
        *it = pod;
      } else {
        declared.pods.push_back(pod);
      }
    }
    for (const auto& deployment : file.deployments) {
      auto it = std::find_if(
          declared.deployments.begin(), declared.deployments.end(),
          [&](const netmodel::Deployment& d) { return same(d.meta, deployment.meta); });
      if (it != declared.deployments.end()) {
        *it = deployment;
      } else {
        declared.deployments.push_back(deployment);
      }
    }
  } else {
    declared.spec = file.cluster ? *file.cluster : netmodel::default_cluster();
    declared.spec.name = name;
    declared.pods = file.pods;
    declared.deployments = file.deployments;
  }
  netmodel::validate_against(file, declared.spec);
  check_name_lengths(file, name);

  ConsoleReporter reporter;
  ApplyOptions apply_options;
  apply_options.parallelism = parsed.vm["parallel"].as<std::size_t>();
  Cluster cluster(state, Toolbox::discover(), reporter, apply_options);
  const ApplyReport report = cluster.converge(declared);
  reporter.clear();
  return finish(report, name, running_pods(state), declared.spec.nodes.size(),
                apply ? "applied" : "is up", start);
}

// Resolves "NAME" or "NAMESPACE/NAME" with -n.
std::pair<std::string, std::string> object_name(const std::string& text,
                                                const po::variables_map& vm) {
  std::string ns = vm.count("namespace") ? vm["namespace"].as<std::string>() : "default";
  const auto slash = text.find('/');
  if (slash != std::string::npos) return {text.substr(0, slash), text.substr(slash + 1)};
  return {ns, text};
}

int cmd_delete(const std::vector<std::string>& args) {
  po::options_description options = cluster_option();
  options.add_options()("namespace,n", po::value<std::string>(),
                        "the object's namespace (default: default)");
  auto parsed = parse("delete", args, options,
                      "flatnet delete pod|deployment NAME [-n NAMESPACE]\n\nDeletes a pod (its "
                      "workload, CNI DEL, its namespace) or a deployment and its pods.\nA pod "
                      "that belongs to a deployment is replaced by a new one, as the\ndeployment "
                      "controller does.");
  if (parsed.positional.size() != 2) {
    throw UsageError("flatnet delete: expected `pod NAME` or `deployment NAME`");
  }
  const std::string kind = parsed.positional[0];
  if (kind != "pod" && kind != "pods" && kind != "po" && kind != "deployment" &&
      kind != "deployments" && kind != "deploy") {
    throw UsageError("flatnet delete: unknown kind " + kind + " (pod or deployment)");
  }
  require_root();
  const auto start = std::chrono::steady_clock::now();
  const std::string name = choose_cluster(parsed.vm);
  ClusterState state(name);
  state.lock();
  StoredCluster stored_cluster = load_running(state);
  StoredCluster* stored = &stored_cluster;
  const auto [ns, object] = object_name(parsed.positional[1], parsed.vm);
  std::vector<std::string> evict;
  if (kind.rfind("po", 0) == 0) {
    auto it = std::find_if(stored->pods.begin(), stored->pods.end(), [&](const netmodel::Pod& p) {
      return p.meta.namespace_ == ns && p.meta.name == object;
    });
    if (it != stored->pods.end()) {
      stored->pods.erase(it);
    } else if (state.pod(ns, object)) {
      evict.push_back(pod_key(ns, object));  // a deployment's pod: replaced
    } else {
      throw std::runtime_error("pod " + pod_key(ns, object) + " not found in cluster " + name);
    }
  } else {
    auto it = std::find_if(stored->deployments.begin(), stored->deployments.end(),
                           [&](const netmodel::Deployment& d) {
                             return d.meta.namespace_ == ns && d.meta.name == object;
                           });
    if (it == stored->deployments.end()) {
      throw std::runtime_error("deployment " + pod_key(ns, object) + " not found in cluster " +
                               name);
    }
    stored->deployments.erase(it);
  }
  ConsoleReporter reporter;
  Cluster cluster(state, Toolbox::discover(), reporter);
  const ApplyReport report = cluster.converge(*stored, evict);
  reporter.clear();
  return finish(report, name, running_pods(state), stored->spec.nodes.size(), "changed", start);
}

int cmd_scale(const std::vector<std::string>& args) {
  po::options_description options = cluster_option();
  options.add_options()("replicas", po::value<int>(), "the number of pods wanted")(
      "namespace,n", po::value<std::string>(), "the deployment's namespace (default: default)");
  auto parsed = parse("scale", args, options,
                      "flatnet scale deployment NAME --replicas N\n\nSets a deployment's replica "
                      "count; its pods are created or removed to match.");
  if (parsed.positional.size() != 2 ||
      (parsed.positional[0] != "deployment" && parsed.positional[0] != "deploy" &&
       parsed.positional[0] != "deployments")) {
    throw UsageError("flatnet scale: expected `deployment NAME --replicas N`");
  }
  if (!parsed.vm.count("replicas")) throw UsageError("flatnet scale: --replicas N is required");
  const int replicas = parsed.vm["replicas"].as<int>();
  if (replicas < 0) {
    throw UsageError("flatnet scale: --replicas " + std::to_string(replicas) + " is negative");
  }
  require_root();
  const auto start = std::chrono::steady_clock::now();
  const std::string name = choose_cluster(parsed.vm);
  ClusterState state(name);
  state.lock();
  StoredCluster stored_cluster = load_running(state);
  StoredCluster* stored = &stored_cluster;
  const auto [ns, object] = object_name(parsed.positional[1], parsed.vm);
  auto it = std::find_if(stored->deployments.begin(), stored->deployments.end(),
                         [&](const netmodel::Deployment& d) {
                           return d.meta.namespace_ == ns && d.meta.name == object;
                         });
  if (it == stored->deployments.end()) {
    throw std::runtime_error("deployment " + pod_key(ns, object) + " not found in cluster " + name);
  }
  it->replicas = replicas;
  ConsoleReporter reporter;
  Cluster cluster(state, Toolbox::discover(), reporter);
  const ApplyReport report = cluster.converge(*stored);
  reporter.clear();
  return finish(report, name, running_pods(state), stored->spec.nodes.size(), "scaled", start);
}

int cmd_down(const std::vector<std::string>& args) {
  po::options_description options("options");
  options.add_options()("all", "remove every flatnet cluster");
  auto parsed = parse(
      "down", args, options,
      "flatnet down [NAME | --all]\n\nRemoves a cluster: its workloads and any "
      "process inside its namespaces, its\nnamespaces (flatnet-NAME-fabric, "
      "-node.*, -pod.*), and /run/flatnet/NAME.\nWorks on a half-made cluster (a crash during up) "
      "and succeeds when there is nothing\nleft to remove.");
  require_root();
  std::vector<std::string> names;
  if (parsed.vm.count("all")) {
    if (!parsed.positional.empty())
      throw UsageError("flatnet down: NAME and --all exclude each other");
    names = ClusterState::list();
    // Clusters whose state is gone but whose namespaces are left are found by their fabric.
    for (const auto& ns : netmodel::NetNs::list_named()) {
      const std::string suffix = "-fabric";
      if (ns.rfind("flatnet-", 0) == 0 && ns.size() > 8 + suffix.size() &&
          ns.compare(ns.size() - suffix.size(), suffix.size(), suffix) == 0) {
        const std::string cluster = ns.substr(8, ns.size() - 8 - suffix.size());
        if (!cluster_name_problem(cluster).empty()) continue;
        if (std::find(names.begin(), names.end(), cluster) == names.end()) names.push_back(cluster);
      }
    }
    if (names.empty()) {
      std::cout << "no flatnet cluster to remove" << std::endl;
      return 0;
    }
  } else if (parsed.positional.size() == 1) {
    names = {parsed.positional.front()};
    if (const std::string problem = cluster_name_problem(names.front()); !problem.empty()) {
      throw UsageError("flatnet down: " + problem);
    }
  } else if (parsed.positional.empty()) {
    const auto running = ClusterState::list();
    if (running.empty()) {
      std::cout << "no flatnet cluster to remove" << std::endl;
      return 0;
    }
    if (running.size() > 1) {
      std::string list;
      for (const auto& name : running)
        list += (list.empty() ? "" : ", ") + name;
      throw UsageError("flatnet down: several clusters are running (" + list +
                       "): name one, or use --all");
    }
    names = running;
  } else {
    throw UsageError("flatnet down: expected one cluster name");
  }
  int status = 0;
  for (const auto& name : names) {
    const auto start = std::chrono::steady_clock::now();
    std::optional<ClusterState> state;
    if (ClusterState(name).exists()) {
      state.emplace(name);
      try {
        state->lock();
      } catch (const std::runtime_error&) {
        // Removed meanwhile by another `down`: what is left (if anything) goes below.
      }
    }
    ConsoleReporter reporter;
    const DownReport report = tear_down(name, reporter);
    reporter.clear();
    if (report.namespaces == 0 && report.processes == 0 && !report.state_removed) {
      std::cout << "cluster " << name << ": nothing to remove" << std::endl;
    } else {
      std::cout << "cluster " << name << " removed: " << report.namespaces << " namespaces, "
                << report.processes << " processes"
                << (report.state_removed
                        ? ", state " + (std::string(ClusterState::kRoot) + "/" + name)
                        : "")
                << " in " << seconds_since(start) << std::endl;
    }
    for (const auto& error : report.errors) {
      std::cerr << "error: " << error << "\n";
      status = 1;
    }
  }
  return status;
}

std::vector<NodePlan> nodes_of(const StoredCluster& cluster) {
  return plan_nodes(cluster.spec, cluster.node_indexes);
}

json pod_json(const PodRecord& pod) {
  netmodel::Pod object;
  object.meta.name = pod.id.name;
  object.meta.namespace_ = pod.id.pod_namespace;
  object.meta.labels = pod.labels;
  object.spec.node_name = pod.id.node;
  netmodel::Container container;
  container.name = "netexec";
  container.ports = pod.ports;
  object.spec.containers.push_back(container);
  json j = object;
  j["metadata"]["uid"] = pod.uid;
  if (!pod.id.owner.empty()) {
    j["metadata"]["ownerReferences"] = json::array(
        {{{"kind", "Deployment"}, {"name", pod.id.owner.substr(pod.id.owner.find('/') + 1)}}});
  }
  json status = {{"phase", std::string(to_string(pod.phase))}};
  if (pod.ip) {
    status["podIP"] = pod.ip->to_string();
    status["podIPs"] = json::array({{{"ip", pod.ip->to_string()}}});
  }
  if (!pod.message.empty()) status["message"] = pod.message;
  status["containerStatuses"] =
      json::array({{{"name", "netexec"},
                    {"ready", pod.phase == PodPhase::running && pod.workload.alive()},
                    {"restartCount", pod.restarts}}});
  j["status"] = status;
  j["flatnet"] = {{"netns", pod.netns},
                  {"hostVeth", pod.host_veth},
                  {"containerID", pod.container_id},
                  {"pid", pod.workload.pid}};
  return j;
}

int cmd_get(const std::vector<std::string>& args) {
  po::options_description options = cluster_option();
  options.add_options()("output,o", po::value<std::string>()->default_value(""), "wide or json");
  auto parsed = parse("get", args, options,
                      "flatnet get nodes|pods [-o wide|json]\n\nLists the cluster's nodes or "
                      "pods as kubectl does.");
  if (parsed.positional.size() != 1) throw UsageError("flatnet get: expected nodes or pods");
  const std::string what = parsed.positional.front();
  const std::string output = output_format("get", parsed.vm);
  require_root();
  const std::string name = choose_cluster(parsed.vm);
  ClusterState state(name);
  const StoredCluster stored_cluster = load_running(state);
  const StoredCluster* stored = &stored_cluster;
  const auto nodes = nodes_of(*stored);
  const auto pods = state.pods();
  if (what == "nodes" || what == "node" || what == "no") {
    if (output == "json") {
      json items = json::array();
      for (const auto& node : nodes) {
        std::size_t count = 0;
        for (const auto& pod : pods)
          count += pod.id.node == node.name;
        items.push_back(
            {{"apiVersion", "v1"},
             {"kind", "Node"},
             {"metadata", {{"name", node.name}, {"labels", node.labels}}},
             {"spec",
              {{"podCIDR", node.pod_subnet.to_string()},
               {"podCIDRs", json::array({node.pod_subnet.to_string()})}}},
             {"status",
              {{"addresses", json::array({{{"type", "InternalIP"},
                                           {"address", node.address.address().to_string()}},
                                          {{"type", "Hostname"}, {"address", node.name}}})}}},
             {"flatnet", {{"netns", node.netns}, {"pods", count}}}});
      }
      std::cout << json({{"apiVersion", "v1"}, {"kind", "List"}, {"items", items}}).dump(2)
                << std::endl;
      return 0;
    }
    Table table(output == "wide"
                    ? std::vector<std::string>{"NAME", "STATUS", "AGE", "INTERNAL-IP", "POD-CIDR",
                                               "PODS", "NETNS"}
                    : std::vector<std::string>{"NAME", "STATUS", "AGE", "INTERNAL-IP", "POD-CIDR"});
    for (const auto& node : nodes) {
      std::size_t count = 0;
      for (const auto& pod : pods)
        count += pod.id.node == node.name;
      const bool ready = std::filesystem::exists(netmodel::NetNs::path_of(node.netns));
      std::vector<std::string> row = {node.name, ready ? "Ready" : "NotReady", age(stored->created),
                                      node.address.address().to_string(),
                                      node.pod_subnet.to_string()};
      if (output == "wide") {
        row.push_back(std::to_string(count));
        row.push_back(node.netns);
      }
      table.add(row);
    }
    table.print(std::cout);
    return 0;
  }
  if (what == "pods" || what == "pod" || what == "po") {
    if (output == "json") {
      json items = json::array();
      for (const auto& pod : pods)
        items.push_back(pod_json(pod));
      std::cout << json({{"apiVersion", "v1"}, {"kind", "List"}, {"items", items}}).dump(2)
                << std::endl;
      return 0;
    }
    const bool namespaces = std::any_of(pods.begin(), pods.end(), [](const PodRecord& p) {
      return p.id.pod_namespace != "default";
    });
    std::vector<std::string> headers;
    if (namespaces) headers.push_back("NAMESPACE");
    for (const char* h : {"NAME", "READY", "STATUS", "RESTARTS", "AGE"})
      headers.push_back(h);
    if (output == "wide") {
      for (const char* h : {"IP", "NODE", "PORTS", "NETNS"})
        headers.push_back(h);
    }
    Table table(headers);
    if (pods.empty()) {
      std::cerr << "No resources found in cluster " << name << "." << std::endl;
      return 0;
    }
    for (const auto& pod : pods) {
      const bool alive = pod.phase == PodPhase::running && pod.workload.alive();
      std::string status = std::string(to_string(pod.phase));
      if (pod.phase == PodPhase::running && !alive) status = "Error";
      std::vector<std::string> row;
      if (namespaces) row.push_back(pod.id.pod_namespace);
      row.insert(row.end(), {pod.id.name, alive ? "1/1" : "0/1", status,
                             std::to_string(pod.restarts), age(pod.created_unix)});
      if (output == "wide") {
        std::string ports;
        for (const auto& port : pod.ports) {
          ports += (ports.empty() ? "" : ",") + std::to_string(port.container_port) + "/" +
                   netmodel::to_string(port.protocol);
        }
        row.insert(row.end(), {pod.ip ? pod.ip->to_string() : "<none>",
                               pod.id.node.empty() ? "<none>" : pod.id.node, ports, pod.netns});
      }
      table.add(row);
    }
    table.print(std::cout);
    return 0;
  }
  throw UsageError("flatnet get: unknown kind " + what + " (nodes or pods)");
}

int cmd_exec(const std::vector<std::string>& args) {
  std::vector<std::string> mine, command;
  auto dashes = std::find(args.begin(), args.end(), "--");
  mine.assign(args.begin(), dashes);
  if (dashes != args.end()) command.assign(dashes + 1, args.end());
  po::options_description options = cluster_option();
  options.add_options()("namespace,n", po::value<std::string>(),
                        "the pod's namespace (default: default)");
  auto parsed = parse("exec", mine, options,
                      "flatnet exec POD|NODE -- CMD [ARGS...]\n\nRuns CMD inside the network "
                      "namespace of a pod or a node (as `ip netns exec` does);\nits exit status "
                      "is flatnet's. Pods are looked up first, then nodes; `fabric` is the\n"
                      "fabric namespace.");
  if (parsed.positional.size() != 1) throw UsageError("flatnet exec: expected POD or NODE");
  if (command.empty()) throw UsageError("flatnet exec: expected -- CMD [ARGS...]");
  require_root();
  const std::string name = choose_cluster(parsed.vm);
  ClusterState state(name);
  const StoredCluster stored_cluster = load_running(state);
  const StoredCluster* stored = &stored_cluster;
  const auto [ns, object] = object_name(parsed.positional.front(), parsed.vm);
  std::string netns;
  if (auto pod = state.pod(ns, object)) {
    netns = pod->netns;
  } else if (object == "fabric") {
    netns = fabric_netns(name);
  } else {
    for (const auto& node : nodes_of(*stored)) {
      if (node.name == object) netns = node.netns;
    }
  }
  if (netns.empty()) {
    throw std::runtime_error("no pod or node " + parsed.positional.front() + " in cluster " + name);
  }
  netmodel::NetNs target = netmodel::NetNs::open_named(netns);
  if (::setns(target.fd(), CLONE_NEWNET) != 0) {
    throw std::system_error(errno, std::generic_category(), "enter " + netns);
  }
  std::vector<char*> argv;
  for (auto& arg : command)
    argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::cout.flush();
  ::execvp(argv[0], argv.data());
  throw std::system_error(errno, std::generic_category(), "run " + command.front());
}

int cmd_check(const std::vector<std::string>& args) {
  po::options_description options = cluster_option();
  options.add_options()("output,o", po::value<std::string>()->default_value(""),
                        "wide (every failure listed) or json")(
      "junit", po::value<std::string>(), "also write a JUnit XML report to this file")(
      "timeout", po::value<unsigned>()->default_value(2000), "per-probe timeout in milliseconds")(
      "no-udp", "skip the UDP pairs")("no-nodes", "skip the node-to-pod pairs")(
      "sample", po::value<std::size_t>()->default_value(0),
      "only this many source pods, chosen at random, each to every pod (0: every pod; for "
      "big clusters, where every pair means n*(n-1) probes)");
  auto parsed = parse("check", args, options,
                      "flatnet check [-o wide|json] [--junit FILE]\n\nProves the Kubernetes "
                      "network model in the running cluster: every pod reaches every\nother pod "
                      "over TCP and UDP, every node reaches every pod, and the client address\n"
                      "each server saw (netexec's /clientip) is the client's own: no NAT. A "
                      "failing pair\nnames the broken hop: a link down, no route, no ARP "
                      "answer, nothing listening,\nor the NAT that rewrote the source. Exit "
                      "status 1 when anything failed.");
  if (!parsed.positional.empty()) {
    throw UsageError("flatnet check: unexpected argument " + parsed.positional.front());
  }
  const std::string output = output_format("check", parsed.vm);
  require_root();
  const std::string name = choose_cluster(parsed.vm);
  ClusterState state(name);
  const StoredCluster stored_cluster = load_running(state);
  const StoredCluster* stored = &stored_cluster;
  CheckOptions check_options;
  check_options.timeout = std::chrono::milliseconds(parsed.vm["timeout"].as<unsigned>());
  check_options.udp = !parsed.vm.count("no-udp");
  check_options.nodes = !parsed.vm.count("no-nodes");
  check_options.sample = parsed.vm["sample"].as<std::size_t>();
  const auto pods = state.pods();
  const CheckReport report = run_check(*stored, nodes_of(*stored), pods, check_options);
  if (parsed.vm.count("junit")) {
    const std::string path = parsed.vm["junit"].as<std::string>();
    std::ofstream out(path);
    if (!out) throw std::system_error(errno, std::generic_category(), "write " + path);
    write_junit(out, name, report);
  }
  if (output == "json") {
    std::cout << check_to_json(report).dump(2) << std::endl;
  } else {
    print_check_table(std::cout, report, output == "wide");
    std::cout << "\n" << check_summary(report) << std::endl;
  }
  std::size_t not_running = 0;
  for (const auto& pod : pods)
    not_running += pod.phase != PodPhase::running;
  if (not_running) {
    // The model cannot be proven for a pod that does not run: that is a failure too.
    std::cerr << "error: " << count(not_running, "pod") << " not running, so not checked "
              << "(flatnet get pods says why)" << std::endl;
  }
  return report.passed() && not_running == 0 ? 0 : 1;
}

int cmd_graph(const std::vector<std::string>& args) {
  po::options_description options = cluster_option();
  options.add_options()("output,o", po::value<std::string>(),
                        "FILE.dot (Graphviz text), or FILE.svg, FILE.png, FILE.pdf (drawn by "
                        "Graphviz's dot); - writes DOT to stdout");
  auto parsed = parse("graph", args, options,
                      "flatnet graph -o FILE.svg|.png|.pdf|.dot\n\nDraws the cluster: the fabric, "
                      "each node with its uplink and pod bridge, each pod\nwith its address, "
                      "ports and veth.");
  if (!parsed.vm.count("output")) throw UsageError("flatnet graph: -o FILE is required");
  require_root();
  const std::string name = choose_cluster(parsed.vm);
  ClusterState state(name);
  const StoredCluster stored_cluster = load_running(state);
  const StoredCluster* stored = &stored_cluster;
  const std::string dot = cluster_graph(*stored, nodes_of(*stored), state.pods());
  const std::string path = parsed.vm["output"].as<std::string>();
  if (path == "-") {
    std::cout << dot;
    return 0;
  }
  const auto ext_pos = path.rfind('.');
  const std::string ext = ext_pos == std::string::npos ? "" : path.substr(ext_pos + 1);
  if (ext == "dot" || ext == "gv") {
    write_file_atomically(path, dot);
  } else if (ext == "svg" || ext == "png" || ext == "pdf") {
    const std::string command = "dot -T" + ext + " -o '" + path + "'";
    if (path.find('\'') != std::string::npos) {
      throw UsageError("flatnet graph: the file name may not contain a quote");
    }
    FILE* pipe = ::popen(command.c_str(), "w");
    if (!pipe) throw std::system_error(errno, std::generic_category(), "run dot");
    std::fwrite(dot.data(), 1, dot.size(), pipe);
    const int status = ::pclose(pipe);
    if (status != 0) {
      throw std::runtime_error(
          "Graphviz's dot failed (exit " + std::to_string(WEXITSTATUS(status)) +
          "); is graphviz installed (scripts/setup.sh installs it)? -o FILE.dot needs no dot");
    }
  } else {
    throw UsageError("flatnet graph: " + path + ": the name must end in .svg, .png, .pdf or .dot");
  }
  std::cout << "wrote " << path << std::endl;
  return 0;
}

}  // namespace

int run_cli(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
      std::cout << kUsage;
      return args.empty() ? 2 : 0;
    }
    if (args[0] == "--version" || args[0] == "version") {
      std::cout << "flatnet " << FLATNET_VERSION << std::endl;
      return 0;
    }
    const std::string verb = args[0];
    const std::vector<std::string> rest(args.begin() + 1, args.end());
    if (verb == "up") return cmd_up(rest, false);
    if (verb == "apply") return cmd_up(rest, true);
    if (verb == "delete") return cmd_delete(rest);
    if (verb == "scale") return cmd_scale(rest);
    if (verb == "down") return cmd_down(rest);
    if (verb == "get") return cmd_get(rest);
    if (verb == "exec") return cmd_exec(rest);
    if (verb == "check") return cmd_check(rest);
    if (verb == "graph") return cmd_graph(rest);
    throw UsageError("flatnet: unknown verb " + verb + " (flatnet --help lists them)");
  } catch (int) {
    return 0;  // --help was printed
  } catch (const UsageError& e) {
    std::cerr << e.what() << std::endl;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "flatnet: " << e.what() << std::endl;
    return 1;
  }
}

}  // namespace flatnet::emulator
