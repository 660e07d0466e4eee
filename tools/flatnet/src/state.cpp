#include "flatnet/emulator/state.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <sstream>

#include "flatnet/cni/types.hpp"
#include "flatnet/netmodel/error.hpp"

namespace flatnet::emulator {

namespace fs = std::filesystem;
using netmodel::throw_errno;
using nlohmann::json;

// --- processes ---

std::optional<std::uint64_t> process_start_time(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!in || !std::getline(in, text)) return std::nullopt;
  // The command name (field 2) is in parentheses and may hold spaces: skip past its ')'.
  const auto close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  char state = 0;
  fields >> state;
  if (state == 'Z' || state == 'X') return std::nullopt;  // exited, not yet reaped
  // Fields 4..21 lie between the state (3) and the start time (22).
  for (int i = 4; i <= 21; ++i)
    fields >> field;
  std::uint64_t start = 0;
  if (!(fields >> start)) return std::nullopt;
  return start;
}

bool ProcessRef::alive() const {
  auto start = process_start_time(pid);
  return start && *start == start_time;
}

std::string_view to_string(PodPhase phase) {
  switch (phase) {
    case PodPhase::pending:
      return "Pending";
    case PodPhase::creating:
      return "ContainerCreating";
    case PodPhase::running:
      return "Running";
    case PodPhase::failed:
      return "Failed";
  }
  return "Unknown";
}

// --- files ---

void write_file_atomically(const fs::path& path, const std::string& text) {
  const fs::path temporary = path.string() + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw_errno(errno, "create " + netmodel::quote(temporary.string()));
  std::size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(temporary.c_str());
      throw_errno(err, "write " + netmodel::quote(temporary.string()));
    }
    written += static_cast<std::size_t>(n);
  }
  ::close(fd);
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temporary.c_str());
    throw_errno(err, "rename " + netmodel::quote(temporary.string()) + " to " +
                         netmodel::quote(path.string()));
  }
}

namespace {

std::optional<std::string> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

json parse_json_file(const fs::path& path, const std::string& text) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw std::runtime_error("state file " + netmodel::quote(path.string()) +
                             " is damaged: " + e.what() + " (flatnet down removes the cluster)");
  }
}

}  // namespace

// --- records ---

json to_json(const PodRecord& pod) {
  json ports = json::array();
  for (const auto& port : pod.ports) {
    ports.push_back({{"name", port.name},
                     {"containerPort", port.container_port},
                     {"protocol", netmodel::to_string(port.protocol)}});
  }
  json result = {
      {"namespace", pod.id.pod_namespace},
      {"name", pod.id.name},
      {"owner", pod.id.owner},
      {"templateHash", pod.id.template_hash},
      {"node", pod.id.node},
      {"created", pod.id.created},
      {"uid", pod.uid},
      {"containerId", pod.container_id},
      {"netns", pod.netns},
      {"labels", pod.labels},
      {"ports", ports},
      {"phase", std::string(to_string(pod.phase))},
      {"message", pod.message},
      {"hostVeth", pod.host_veth},
      {"cniResult", pod.cni_result},
      {"pid", pod.workload.pid},
      {"pidStartTime", pod.workload.start_time},
      {"restarts", pod.restarts},
      {"createdUnix", pod.created_unix},
  };
  if (pod.ip) result["ip"] = pod.ip->to_string();
  return result;
}

PodRecord pod_record_from_json(const json& j) {
  PodRecord pod;
  pod.id.pod_namespace = j.at("namespace").get<std::string>();
  pod.id.name = j.at("name").get<std::string>();
  pod.id.owner = j.value("owner", "");
  pod.id.template_hash = j.value("templateHash", "");
  pod.id.node = j.value("node", "");
  pod.id.created = j.value("created", std::uint64_t{0});
  pod.uid = j.value("uid", "");
  pod.container_id = j.value("containerId", "");
  pod.netns = j.value("netns", "");
  pod.labels = j.value("labels", std::map<std::string, std::string>{});
  for (const auto& port : j.value("ports", json::array())) {
    netmodel::ContainerPort p;
    p.name = port.value("name", "");
    p.container_port = port.at("containerPort").get<std::uint16_t>();
    p.protocol =
        port.value("protocol", "TCP") == "UDP" ? netmodel::Protocol::udp : netmodel::Protocol::tcp;
    pod.ports.push_back(p);
  }
  const std::string phase = j.value("phase", "");
  pod.phase = phase == "Running"   ? PodPhase::running
              : phase == "Failed"  ? PodPhase::failed
              : phase == "Pending" ? PodPhase::pending
                                   : PodPhase::creating;
  pod.message = j.value("message", "");
  if (j.contains("ip")) pod.ip = netmodel::IpAddress::parse(j.at("ip").get<std::string>());
  pod.host_veth = j.value("hostVeth", "");
  pod.cni_result = j.value("cniResult", json());
  pod.workload.pid = j.value("pid", 0);
  pod.workload.start_time = j.value("pidStartTime", std::uint64_t{0});
  pod.restarts = j.value("restarts", 0);
  pod.created_unix = j.value("createdUnix", std::int64_t{0});
  return pod;
}

std::optional<netmodel::MacAddress> pod_mac(const PodRecord& pod) {
  if (pod.cni_result.is_null()) return std::nullopt;
  try {
    for (const auto& interface : cni::parse_result(pod.cni_result).interfaces) {
      if (!interface.sandbox.empty() && !interface.mac.empty()) {
        return netmodel::MacAddress::parse(interface.mac);
      }
    }
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

// --- the state directory ---

ClusterState::ClusterState(std::string cluster)
    : cluster_(std::move(cluster)), dir_(fs::path(kRoot) / cluster_) {
  // The name becomes a path under /run/flatnet: nothing but a valid cluster name may.
  if (const std::string problem = cluster_name_problem(cluster_); !problem.empty()) {
    throw std::invalid_argument("invalid cluster name: " + problem);
  }
}

ClusterState::~ClusterState() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

bool ClusterState::exists() const {
  std::error_code ec;
  return fs::is_directory(dir_, ec);
}

std::vector<std::string> ClusterState::list() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(kRoot, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory(ec) && cluster_name_problem(name).empty()) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

void ClusterState::create() {
  for (const auto& sub : {dir_, dir_ / "pods", dir_ / "nodes", dir_ / "logs"}) {
    std::error_code ec;
    fs::create_directories(sub, ec);
    if (ec) throw_errno(ec.value(), "create " + netmodel::quote(sub.string()));
  }
}

void ClusterState::lock(bool create_cluster) {
  if (lock_fd_ >= 0) return;
  const fs::path path = dir_ / "lock";
  bool said = false;
  for (;;) {
    if (create_cluster) create();
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      if (errno == ENOENT && !create_cluster) {
        throw std::runtime_error("cluster " + cluster_ + " is not running (flatnet up -f FILE)");
      }
      throw_errno(errno, "open " + netmodel::quote(path.string()));
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      if (!said)
        std::cerr << "waiting for another flatnet command on cluster " << cluster_ << "...\n";
      said = true;
      while (::flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
          const int err = errno;
          ::close(fd);
          throw_errno(err, "lock " + netmodel::quote(path.string()));
        }
      }
    }
    // `down` removes the directory, lock file included, while it holds the lock: a lock taken
    // on a file that is no longer there guards nothing. Try again on the current one.
    struct stat held {
    }, current{};
    if (::fstat(fd, &held) == 0 && ::stat(path.c_str(), &current) == 0 &&
        held.st_dev == current.st_dev && held.st_ino == current.st_ino) {
      lock_fd_ = fd;
      return;
    }
    ::close(fd);
  }
}

std::optional<StoredCluster> ClusterState::load() const {
  const fs::path path = dir_ / "cluster.json";
  auto text = read_file(path);
  if (!text) return std::nullopt;
  const json j = parse_json_file(path, *text);
  try {
    StoredCluster cluster;
    cluster.spec = j.at("spec").get<netmodel::ClusterSpec>();
    cluster.node_indexes = j.at("nodeIndexes").get<std::map<std::string, std::size_t>>();
    for (const auto& pod : j.at("pods"))
      cluster.pods.push_back(pod.get<netmodel::Pod>());
    for (const auto& deployment : j.at("deployments")) {
      cluster.deployments.push_back(deployment.get<netmodel::Deployment>());
    }
    cluster.created = j.value("created", std::int64_t{0});
    return cluster;
  } catch (const std::exception& e) {
    throw std::runtime_error("state file " + netmodel::quote(path.string()) +
                             " is damaged: " + e.what() + " (flatnet down removes the cluster)");
  }
}

void ClusterState::save(const StoredCluster& cluster) const {
  json pods = json::array(), deployments = json::array();
  for (const auto& pod : cluster.pods)
    pods.push_back(json(pod));
  for (const auto& deployment : cluster.deployments) {
    deployments.push_back(json(deployment));
  }
  const json j = {
      {"spec", json(cluster.spec)}, {"nodeIndexes", cluster.node_indexes}, {"pods", pods},
      {"deployments", deployments}, {"created", cluster.created},
  };
  write_file_atomically(dir_ / "cluster.json", j.dump(1) + "\n");
}

fs::path ClusterState::pod_path(const std::string& pod_namespace, const std::string& name) const {
  // '_' occurs in neither a namespace nor a pod name.
  return dir_ / "pods" / (pod_namespace + "_" + name + ".json");
}

std::vector<PodRecord> ClusterState::pods() const {
  std::vector<PodRecord> pods;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_ / "pods", ec)) {
    if (entry.path().extension() != ".json") continue;
    auto text = read_file(entry.path());
    if (!text) continue;  // removed meanwhile
    try {
      pods.push_back(pod_record_from_json(parse_json_file(entry.path(), *text)));
    } catch (const json::exception& e) {
      throw std::runtime_error("state file " + netmodel::quote(entry.path().string()) +
                               " is damaged: " + e.what());
    }
  }
  std::sort(pods.begin(), pods.end(), [](const PodRecord& a, const PodRecord& b) {
    return std::tie(a.id.pod_namespace, a.id.name) < std::tie(b.id.pod_namespace, b.id.name);
  });
  return pods;
}

std::optional<PodRecord> ClusterState::pod(const std::string& pod_namespace,
                                           const std::string& name) const {
  const fs::path path = pod_path(pod_namespace, name);
  auto text = read_file(path);
  if (!text) return std::nullopt;
  return pod_record_from_json(parse_json_file(path, *text));
}

void ClusterState::save_pod(const PodRecord& pod) const {
  write_file_atomically(pod_path(pod.id.pod_namespace, pod.id.name), to_json(pod).dump() + "\n");
}

void ClusterState::remove_pod(const PodRecord& pod) const {
  std::error_code ec;
  fs::remove(pod_path(pod.id.pod_namespace, pod.id.name), ec);
}

fs::path ClusterState::node_dir(const std::string& node) const {
  return dir_ / "nodes" / node;
}
fs::path ClusterState::conflist_path(const std::string& node) const {
  return node_dir(node) / "10-flatnet.conflist";
}
fs::path ClusterState::ipam_dir(const std::string& node) const {
  return node_dir(node) / "ipam";
}
fs::path ClusterState::log_path(const PodRecord& pod) const {
  return dir_ / "logs" / (pod.id.pod_namespace + "_" + pod.id.name + ".log");
}

void ClusterState::remove() const {
  if (dir_.parent_path() != fs::path(kRoot) || cluster_.empty()) {
    throw std::logic_error("refusing to remove " + netmodel::quote(dir_.string()));
  }
  std::error_code ec;
  fs::remove_all(dir_, ec);
  if (ec) throw_errno(ec.value(), "remove " + netmodel::quote(dir_.string()));
}

}  // namespace flatnet::emulator
