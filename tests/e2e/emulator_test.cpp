// The emulator as a user gets it: `flatnet` installed by `cmake --install` (into a staging
// DESTDIR, never onto this machine) and run as a program, its output read as a person reads it.
// Each test brings up clusters of its own (`up --name e2e-<role>-<pid>`), so tests run in
// parallel with each other and with other test programs, and a guard takes every cluster down
// when the test ends, passed or not, then proves nothing of it is left: no namespace named
// flatnet-<cluster>-..., no /run/flatnet/<cluster>, no process in one of its namespaces.
//
// Faults are injected as a user (or a chaos tool) would: `ip` and `iptables` run through
// `ip netns exec` inside the cluster's own namespaces, and workloads killed by pid. Nothing
// touches the host's namespace.

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "flatnet/netmodel/address.hpp"

extern char** environ;

namespace flatnet::emulator {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using netmodel::IpAddress;
using netmodel::IpPrefix;
using nlohmann::json;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;

// --- running programs ---

// A finished program: how it ended and what it wrote.
struct Outcome {
  std::string command;
  int status = -1;  // the exit status; 128 + the signal when it was killed
  bool timed_out = false;
  std::string out, err;
};

// For failure messages: the command line, its status and everything it wrote.
std::string describe(const Outcome& run) {
  std::string text = "`" + run.command + "` exited " + std::to_string(run.status);
  if (run.timed_out) text += " (killed: timed out)";
  if (!run.out.empty()) text += "\n--- stdout\n" + run.out;
  if (!run.err.empty()) text += "\n--- stderr\n" + run.err;
  return text;
}

// Starts argv[0] (looked up in PATH when it has no slash) with stdin from /dev/null and stdout
// and stderr on the given descriptors; `env` entries ("NAME=value") replace or extend this
// process's environment.
struct Spawned {
  pid_t pid = -1;
  int error = 0;  // of posix_spawn, when it failed
};
Spawned spawn(const std::vector<std::string>& argv, int out_fd, int err_fd,
              const std::vector<std::string>& env = {}) {
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  ::posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  ::posix_spawn_file_actions_adddup2(&actions, err_fd, 2);
  std::vector<char*> args;
  for (const auto& arg : argv)
    args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_text;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    const std::string key = entry.substr(0, entry.find('=') + 1);
    if (std::none_of(env.begin(), env.end(), [&](const auto& e) { return e.starts_with(key); })) {
      env_text.push_back(entry);
    }
  }
  env_text.insert(env_text.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& entry : env_text)
    envp.push_back(entry.data());
  envp.push_back(nullptr);
  pid_t pid = -1;
  const int error = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), envp.data());
  ::posix_spawn_file_actions_destroy(&actions);
  return {error == 0 ? pid : -1, error};
}

// Runs a program to its end, capturing stdout and stderr (see spawn). A program still running
// after `timeout` is killed. Reading stops once the program has exited and its pipes are
// drained, so a daemon it started cannot hold the caller.
Outcome run_program(const std::vector<std::string>& argv, std::chrono::milliseconds timeout = 60s,
                    const std::vector<std::string>& env = {}) {
  Outcome run;
  for (const auto& arg : argv)
    run.command += (run.command.empty() ? "" : " ") + arg;
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    throw std::system_error(errno, std::generic_category(), "pipe");
  }
  const auto spawned = spawn(argv, out[1], err[1], env);
  ::close(out[1]);
  ::close(err[1]);
  if (spawned.error) {
    ::close(out[0]);
    ::close(err[0]);
    run.status = 127;
    run.err = "spawn " + argv[0] + ": " + std::strerror(spawned.error);
    return run;
  }
  const pid_t pid = spawned.pid;

  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::array<pollfd, 2> fds{{{out[0], POLLIN, 0}, {err[0], POLLIN, 0}}};
  std::array<std::string*, 2> sinks{&run.out, &run.err};
  bool exited = false;
  int wait_status = 0;
  while (fds[0].fd >= 0 || fds[1].fd >= 0) {
    const int ready = ::poll(fds.data(), fds.size(), exited ? 0 : 50);
    if (ready < 0 && errno != EINTR) break;
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buffer[16384];
      const ssize_t got = ::read(fds[i].fd, buffer, sizeof buffer);
      if (got > 0) {
        sinks[i]->append(buffer, static_cast<std::size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
      }
    }
    if (exited) {
      if (ready == 0) break;  // gone, and nothing more to read
      continue;
    }
    if (::waitpid(pid, &wait_status, WNOHANG) == pid) {
      exited = true;
    } else if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &wait_status, 0);
      exited = true;
      run.timed_out = true;
    }
  }
  for (auto& fd : fds) {
    if (fd.fd >= 0) ::close(fd.fd);
  }
  if (!exited) ::waitpid(pid, &wait_status, 0);
  run.status = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
  return run;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  ASSERT_TRUE(out.good()) << "write " << path;
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size()))
    ++n;
  return n;
}

// --- processes and namespaces, read from /proc and /run ---

struct ProcessStat {
  char state = '?';
  unsigned long long start_time = 0;  // clock ticks after boot: with the pid, one process
};

std::optional<ProcessStat> process_stat(pid_t pid) {
  const std::string text = read_text("/proc/" + std::to_string(pid) + "/stat");
  const auto paren = text.rfind(')');
  if (paren == std::string::npos) return std::nullopt;
  std::istringstream fields(text.substr(paren + 1));
  ProcessStat stat;
  fields >> stat.state;  // field 3
  std::string skipped;
  for (int field = 4; field <= 21; ++field)
    fields >> skipped;
  fields >> stat.start_time;  // field 22
  if (!fields) return std::nullopt;
  return stat;
}

bool running(pid_t pid, unsigned long long start_time) {
  const auto stat = process_stat(pid);
  return stat && stat->state != 'Z' && stat->start_time == start_time;
}

unsigned long long ticks_since_boot() {
  std::istringstream uptime(read_text("/proc/uptime"));
  double seconds = 0;
  uptime >> seconds;
  return static_cast<unsigned long long>(seconds * static_cast<double>(::sysconf(_SC_CLK_TCK)));
}

using NamespaceId = std::pair<dev_t, ino_t>;

std::optional<NamespaceId> namespace_id(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return NamespaceId{st.st_dev, st.st_ino};
}

// The named network namespaces (what `ip netns list` shows) starting with `prefix`.
std::vector<std::string> named_namespaces(const std::string& prefix) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/run/netns", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) == 0) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

bool namespace_exists(const std::string& name) {
  return fs::exists("/run/netns/" + name);
}

std::string cmdline(pid_t pid) {
  std::string text = read_text("/proc/" + std::to_string(pid) + "/cmdline");
  std::replace(text.begin(), text.end(), '\0', ' ');
  return text;
}

// A program left running (output to /dev/null) while the test goes on; killed and reaped at the
// end if it still runs.
class Background {
 public:
  explicit Background(const std::vector<std::string>& argv) {
    const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    pid_ = spawn(argv, null, null).pid;
    ::close(null);
  }
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;
  ~Background() {
    if (pid_ > 0 && !status_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  // Its wait status once it has ended, waiting up to `timeout`.
  std::optional<int> wait_for(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (pid_ > 0 && !status_) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        status_ = status;
      } else if (std::chrono::steady_clock::now() > deadline) {
        break;
      } else {
        std::this_thread::sleep_for(10ms);
      }
    }
    return status_;
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// --- the staged installation ---

// `cmake --install` into a DESTDIR of this process, once per test program; every test drives
// the staged `usr/local/bin/flatnet`, which finds its workload and CNI plugins beside itself.
class StagedInstall : public ::testing::Environment {
 public:
  void SetUp() override {
    stage_ =
        fs::path(::testing::TempDir()) / ("flatnet-e2e-emulator-" + std::to_string(::getpid()));
    fs::remove_all(stage_);
    const Outcome install = run_program({CMAKE_COMMAND, "--install", FLATNET_BUILD_DIR}, 120s,
                                        {"DESTDIR=" + stage_.string()});
    if (install.status != 0) problem_ = "cmake --install failed: " + describe(install);
    if (::geteuid() == 0 && problem_.empty()) reap_stale();
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(stage_, ec);
  }

  static fs::path flatnet() { return stage_ / "usr/local/bin/flatnet"; }
  static const std::string& problem() { return problem_; }

 private:
  // Clusters of test processes that were killed (e2e-<role>-<pid> whose pid no longer runs),
  // found by their state or their fabric namespace, are taken down.
  static void reap_stale() {
    std::set<std::string> names;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator("/run/flatnet", ec))
      names.insert(entry.path().filename().string());
    const std::string suffix = "-fabric";
    for (const auto& ns : named_namespaces("flatnet-e2e-")) {
      if (ns.size() > suffix.size() + 8 && ns.ends_with(suffix)) {
        names.insert(ns.substr(8, ns.size() - 8 - suffix.size()));
      }
    }
    static const std::regex ours("e2e-[a-z0-9-]+-([0-9]+)");
    for (const auto& name : names) {
      std::smatch match;
      if (!std::regex_match(name, match, ours)) continue;
      const pid_t pid = static_cast<pid_t>(std::stoll(match[1].str()));
      if (::kill(pid, 0) == 0 || errno != ESRCH) continue;
      run_program({flatnet().string(), "down", name});
    }
  }

  static fs::path stage_;
  static std::string problem_;
};

fs::path StagedInstall::stage_;
std::string StagedInstall::problem_;
::testing::Environment* const kStagedInstall =
    ::testing::AddGlobalTestEnvironment(new StagedInstall);

Outcome flatnet(std::vector<std::string> args, std::chrono::milliseconds timeout = 60s) {
  args.insert(args.begin(), StagedInstall::flatnet().string());
  return run_program(args, timeout);
}

// A command run inside a namespace of a cluster, as `ip netns exec NS CMD...`.
Outcome in_namespace(const std::string& netns, std::vector<std::string> command) {
  command.insert(command.begin(), {"ip", "netns", "exec", netns});
  return run_program(command, 20s);
}

// --- what `get -o json` says ---

struct PodView {
  std::string name, node, netns, host_veth, owner;
  IpAddress ip;
  pid_t pid = 0;
  int restarts = 0;
  bool ready = false;
};

struct NodeView {
  std::string name, netns;
  IpAddress address;
  IpPrefix pod_cidr;
};

PodView pod_view(const json& item) {
  PodView pod;
  pod.name = item.at("metadata").at("name").get<std::string>();
  pod.node = item.at("spec").value("nodeName", "");
  pod.ip = IpAddress::parse(item.at("status").at("podIP").get<std::string>());
  pod.netns = item.at("flatnet").at("netns").get<std::string>();
  pod.host_veth = item.at("flatnet").at("hostVeth").get<std::string>();
  pod.pid = item.at("flatnet").at("pid").get<pid_t>();
  const json& container = item.at("status").at("containerStatuses").at(0);
  pod.restarts = container.at("restartCount").get<int>();
  pod.ready = container.at("ready").get<bool>();
  if (item.at("metadata").contains("ownerReferences")) {
    pod.owner = item.at("metadata").at("ownerReferences").at(0).at("name").get<std::string>();
  }
  return pod;
}

NodeView node_view(const json& item) {
  NodeView node;
  node.name = item.at("metadata").at("name").get<std::string>();
  node.netns = item.at("flatnet").at("netns").get<std::string>();
  node.pod_cidr = IpPrefix::parse(item.at("spec").at("podCIDR").get<std::string>());
  for (const auto& address : item.at("status").at("addresses")) {
    if (address.at("type") == "InternalIP") {
      node.address = IpAddress::parse(address.at("address").get<std::string>());
    }
  }
  return node;
}

std::string pod_names(const std::vector<PodView>& pods) {
  std::string names;
  for (const auto& pod : pods)
    names += (names.empty() ? "" : " ") + pod.name;
  return names;
}

// --- a cluster of one test ---

// The namespaces and processes of a cluster just before `down`: after it, none may remain.
struct Footprint {
  std::set<NamespaceId> namespaces;
  std::vector<std::pair<pid_t, unsigned long long>> workloads;  // pid, start time
  unsigned long long taken = 0;                                 // ticks since boot
};

// A cluster named e2e-<role>-<pid>. Destroying it runs `flatnet down` and checks that nothing
// of the cluster is left, whether the test passed, failed an assertion or threw.
class TestCluster {
 public:
  explicit TestCluster(const std::string& role)
      : name_("e2e-" + role + "-" + std::to_string(::getpid())) {}
  TestCluster(const TestCluster&) = delete;
  TestCluster& operator=(const TestCluster&) = delete;
  ~TestCluster() {
    if (down_) return;
    try {
      down();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "down " << name_ << ": " << e.what();
    }
  }

  const std::string& name() const { return name_; }
  std::string prefix() const { return "flatnet-" + name_ + "-"; }
  std::string fabric_netns() const { return prefix() + "fabric"; }

  Outcome up(const fs::path& file) const {
    return flatnet({"up", "-f", file.string(), "--name", name_});
  }
  // `flatnet ARGS --cluster NAME`.
  Outcome cli(std::vector<std::string> args) const {
    args.insert(args.end(), {"--cluster", name_});
    return flatnet(std::move(args));
  }

  // `get pods -o json`; a failure is reported and gives no pods.
  std::vector<PodView> pods() const { return views("pods", pod_view); }
  std::vector<NodeView> nodes() const { return views("nodes", node_view); }
  PodView pod(const std::string& name) const {
    for (auto& pod : pods()) {
      if (pod.name == name) return pod;
    }
    ADD_FAILURE() << "no pod " << name << " in cluster " << name_;
    return {};
  }
  NodeView node(const std::string& name) const {
    for (auto& node : nodes()) {
      if (node.name == name) return node;
    }
    ADD_FAILURE() << "no node " << name << " in cluster " << name_;
    return {};
  }

  // `flatnet down NAME`; then no namespace, state or process of the cluster may remain.
  Outcome down() {
    down_ = true;
    const Footprint footprint = take_footprint();
    const Outcome run = flatnet({"down", name_});
    EXPECT_EQ(run.status, 0) << describe(run);
    expect_nothing_left(footprint);
    return run;
  }

  void expect_nothing_left(const Footprint& footprint) const {
    EXPECT_THAT(named_namespaces(prefix()), ::testing::IsEmpty())
        << "namespaces of cluster " << name_ << " left after down";
    EXPECT_FALSE(fs::exists("/run/flatnet/" + name_)) << "state of cluster " << name_ << " left";
    for (const auto& [pid, start] : footprint.workloads) {
      EXPECT_FALSE(running(pid, start))
          << "workload pid " << pid << " of cluster " << name_ << " still runs: " << cmdline(pid);
    }
    // Any process, workload or not, still inside one of the cluster's namespaces. Started
    // before `down`: a namespace made later may reuse a freed inode number.
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator("/proc", ec)) {
      const std::string pid_text = entry.path().filename().string();
      if (pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
      const auto ns = namespace_id(entry.path() / "ns/net");
      if (!ns || !footprint.namespaces.count(*ns)) continue;
      const pid_t pid = static_cast<pid_t>(std::stoll(pid_text));
      const auto stat = process_stat(pid);
      if (!stat || stat->state == 'Z' || stat->start_time > footprint.taken) continue;
      ADD_FAILURE() << "process " << pid << " (" << cmdline(pid)
                    << ") is still in a namespace of cluster " << name_;
    }
  }

 private:
  template <typename View>
  std::vector<View> views(const std::string& kind, View (*view)(const json&)) const {
    const Outcome run = cli({"get", kind, "-o", "json"});
    if (run.status != 0) {
      ADD_FAILURE() << describe(run);
      return {};
    }
    std::vector<View> views;
    try {
      const json list = json::parse(run.out);
      for (const auto& item : list.at("items"))
        views.push_back(view(item));
    } catch (const std::exception& e) {
      ADD_FAILURE() << "get " << kind << " -o json: " << e.what() << "\n" << run.out;
    }
    return views;
  }

  Footprint take_footprint() const {
    Footprint footprint;
    for (const auto& ns : named_namespaces(prefix())) {
      if (auto id = namespace_id("/run/netns/" + ns)) footprint.namespaces.insert(*id);
    }
    if (fs::exists("/run/flatnet/" + name_)) {
      for (const auto& pod : pods()) {
        if (const auto stat = process_stat(pod.pid); stat && pod.pid > 0) {
          footprint.workloads.emplace_back(pod.pid, stat->start_time);
        }
      }
    }
    footprint.taken = ticks_since_boot();
    return footprint;
  }

  std::string name_;
  bool down_ = false;
};

// Temporary files of one test, removed at its end.
class ScratchDir {
 public:
  ScratchDir() {
    static int serial = 0;
    path_ = fs::path(::testing::TempDir()) /
            ("flatnet-e2e-" + std::to_string(::getpid()) + "-" + std::to_string(++serial));
    fs::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

fs::path example(const std::string& name) {
  return fs::path(FLATNET_SOURCE_DIR) / "examples" / name;
}

class Emulator : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (flatnet creates network namespaces)";
    ASSERT_EQ(StagedInstall::problem(), "");
  }
  ScratchDir scratch_;
};

// `check` with its arguments, for clusters that must pass.
void expect_check_passes(const TestCluster& cluster, std::vector<std::string> args = {}) {
  args.insert(args.begin(), "check");
  const Outcome check = cluster.cli(args);
  EXPECT_EQ(check.status, 0) << describe(check);
  EXPECT_THAT(check.out, HasSubstr("check passed")) << describe(check);
}

// --- 1. the examples ---

struct ExampleCase {
  std::string name;
  std::string file;                              // in examples/
  std::function<std::string(std::string)> edit;  // applied to the file's text, if set
  std::size_t nodes, pods;
  bool even;  // the scheduler spreads the pods evenly over the nodes
  std::vector<std::string> check_args;
  friend void PrintTo(const ExampleCase& c, std::ostream* out) { *out << c.name; }
};

class Examples : public Emulator, public ::testing::WithParamInterface<ExampleCase> {};

TEST_P(Examples, ComeUpPassCheckAndLeaveNothingBehind) {
  const ExampleCase& row = GetParam();
  fs::path file = example(row.file);
  if (row.edit) {
    file = scratch_ / row.file;
    write_text(file, row.edit(read_text(example(row.file))));
  }
  TestCluster cluster(row.name);
  const Outcome up = cluster.up(file);
  ASSERT_EQ(up.status, 0) << describe(up);
  EXPECT_THAT(up.out,
              HasSubstr("cluster " + cluster.name() + " is up: " + std::to_string(row.nodes) +
                        " nodes, " + std::to_string(row.pods) + " pods"));

  const auto nodes = cluster.nodes();
  const auto pods = cluster.pods();
  ASSERT_EQ(nodes.size(), row.nodes);
  ASSERT_EQ(pods.size(), row.pods);
  std::map<std::string, std::size_t> per_node;
  for (const auto& pod : pods) {
    EXPECT_TRUE(pod.ready) << pod.name;
    ++per_node[pod.node];
    auto node = std::find_if(nodes.begin(), nodes.end(),
                             [&](const NodeView& n) { return n.name == pod.node; });
    ASSERT_NE(node, nodes.end()) << pod.name << " on unknown node " << pod.node;
    EXPECT_TRUE(node->pod_cidr.contains(pod.ip))
        << pod.name << " has " << pod.ip.to_string() << ", outside " << node->name << "'s "
        << node->pod_cidr.to_string();
    EXPECT_TRUE(namespace_exists(pod.netns)) << pod.netns;
  }
  if (row.even) {
    for (const auto& node : nodes)
      EXPECT_EQ(per_node[node.name], row.pods / row.nodes) << "pods on " << node.name;
  }

  std::vector<std::string> check = {"check", "-o", "json"};
  check.insert(check.end(), row.check_args.begin(), row.check_args.end());
  const Outcome run = cluster.cli(check);
  EXPECT_EQ(run.status, 0) << describe(run);
  const json report = json::parse(run.out, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << describe(run);
  EXPECT_EQ(report.value("passed", false), true) << report.value("summary", "");
  std::set<std::string> sources;
  for (const auto& pair : report.at("pairs")) {
    if (pair.at("from").at("kind") == "pod") sources.insert(pair.at("from").at("name"));
  }
  const auto sample = std::find(row.check_args.begin(), row.check_args.end(), "--sample");
  const std::size_t expected_sources =
      sample == row.check_args.end() ? row.pods : std::stoul(*(sample + 1));
  EXPECT_EQ(sources.size(), expected_sources) << "pods probed from";

  cluster.down();
}

std::string scaled_down_large(std::string text) {
  static const std::regex replicas("replicas: [0-9]+");
  EXPECT_EQ(std::distance(std::sregex_iterator(text.begin(), text.end(), replicas),
                          std::sregex_iterator()),
            10)
      << "examples/large.yaml no longer has ten Deployments";
  return std::regex_replace(text, replicas, "replicas: 10");
}

const std::vector<std::string> kSampleTen = {"--sample", "10"};

// The same cluster wired by Debian's reference bridge + host-local instead of flatnet's plugins.
std::string with_reference_plugins(std::string text) {
  static const std::regex cni("cni: flatnet");
  EXPECT_TRUE(std::regex_search(text, cni)) << "the example no longer says cni: flatnet";
  return std::regex_replace(text, cni, "cni: bridge");
}

INSTANTIATE_TEST_SUITE_P(
    Emulator, Examples,
    ::testing::Values(
        ExampleCase{"two-node", "two-node.yaml", nullptr, 2, 5, false, {}},
        ExampleCase{"flat", "flat.yaml", nullptr, 3, 6, true, {}},
        ExampleCase{"two-node-bridge", "two-node.yaml", with_reference_plugins, 2, 5, false, {}},
        // The example's 1000 pods take too long for the suite: 10 nodes and
        // 10 Deployments of 10, and 10 pods probing every pod.
        ExampleCase{"large", "large.yaml", scaled_down_large, 10, 100, true, kSampleTen}),
    [](const auto& info) {
      std::string name = info.param.name;
      name.erase(std::remove(name.begin(), name.end(), '-'), name.end());
      return name;
    });

// --- 2. up twice ---

TEST_F(Emulator, UpTwiceChangesNothingTheSecondTime) {
  TestCluster cluster("twice");
  const Outcome first = cluster.up(example("two-node.yaml"));
  ASSERT_EQ(first.status, 0) << describe(first);
  const auto before = cluster.pods();
  ASSERT_EQ(before.size(), 5u);

  const Outcome second = cluster.up(example("two-node.yaml"));
  ASSERT_EQ(second.status, 0) << describe(second);
  EXPECT_THAT(second.out, HasSubstr("cluster " + cluster.name() + " unchanged: 2 nodes, 5 pods"))
      << describe(second);
  const auto after = cluster.pods();
  ASSERT_EQ(after.size(), before.size());
  for (std::size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(after[i].name, before[i].name);
    EXPECT_EQ(after[i].ip, before[i].ip) << before[i].name;
    EXPECT_EQ(after[i].pid, before[i].pid) << before[i].name;
    EXPECT_EQ(after[i].node, before[i].node) << before[i].name;
    EXPECT_EQ(after[i].host_veth, before[i].host_veth) << before[i].name;
    EXPECT_EQ(after[i].restarts, 0) << before[i].name;
  }
}

// --- 3. an edited file ---

// The documents of a YAML stream, without the one that names `name` (exactly one must).
std::string without_document(const std::string& text, const std::string& name) {
  std::vector<std::string> documents;
  std::size_t start = 0;
  for (std::size_t at; (at = text.find("\n---\n", start)) != std::string::npos; start = at + 5)
    documents.push_back(text.substr(start, at - start + 1));
  documents.push_back(text.substr(start));
  const std::string needle = "\n  name: " + name + "\n";
  const auto removed = std::remove_if(documents.begin(), documents.end(), [&](const auto& doc) {
    return doc.find(needle) != std::string::npos;
  });
  EXPECT_EQ(documents.end() - removed, 1) << "documents naming " << name;
  documents.erase(removed, documents.end());
  std::string joined;
  for (const auto& doc : documents)
    joined += (joined.empty() ? "" : "---\n") + doc;
  return joined;
}

std::string replaced_once(std::string text, const std::string& from, const std::string& to) {
  EXPECT_EQ(count_of(text, from), 1u) << from;
  if (const auto at = text.find(from); at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

TEST_F(Emulator, UpReconcilesAnEditedFile) {
  TestCluster cluster("edited");
  const Outcome first = cluster.up(example("two-node.yaml"));
  ASSERT_EQ(first.status, 0) << describe(first);
  const auto before = cluster.pods();
  ASSERT_EQ(before.size(), 5u);
  const PodView dns = cluster.pod("dns");

  // Five web replicas instead of three, and the dns pod gone.
  const fs::path edited = scratch_ / "two-node-edited.yaml";
  write_text(edited, without_document(replaced_once(read_text(example("two-node.yaml")),
                                                    "replicas: 3", "replicas: 5"),
                                      "dns"));
  const Outcome up = cluster.up(edited);
  ASSERT_EQ(up.status, 0) << describe(up);
  EXPECT_THAT(up.out, HasSubstr("2 pods created")) << describe(up);
  EXPECT_THAT(up.out, ContainsRegex("1 pods? removed")) << describe(up);

  const auto after = cluster.pods();
  std::size_t webs = 0;
  for (const auto& pod : after) {
    EXPECT_NE(pod.name, "dns");
    webs += pod.owner == "web";
  }
  EXPECT_EQ(webs, 5u) << pod_names(after);
  EXPECT_EQ(after.size(), 6u) << pod_names(after);
  // The pods that stay are the same pods, untouched.
  for (const auto& old : before) {
    if (old.name == "dns") continue;
    auto same = std::find_if(after.begin(), after.end(), [&](const PodView& p) {
      return p.name == old.name && p.ip == old.ip && p.pid == old.pid;
    });
    EXPECT_NE(same, after.end()) << old.name << " was replaced or changed";
  }
  EXPECT_FALSE(namespace_exists(dns.netns));
  const auto stat = process_stat(dns.pid);
  EXPECT_TRUE(!stat || stat->state == 'Z') << "the dns workload still runs: " << cmdline(dns.pid);
  expect_check_passes(cluster);

  // And back: the file as it was.
  const Outcome again = cluster.up(example("two-node.yaml"));
  ASSERT_EQ(again.status, 0) << describe(again);
  EXPECT_EQ(cluster.pods().size(), 5u);
  expect_check_passes(cluster);
}

// --- 4. scale, delete, apply ---

std::vector<PodView> owned_by(const std::vector<PodView>& pods, const std::string& owner) {
  std::vector<PodView> owned;
  std::copy_if(pods.begin(), pods.end(), std::back_inserter(owned),
               [&](const PodView& p) { return p.owner == owner; });
  return owned;
}

TEST_F(Emulator, ScaleDeleteAndApplyConverge) {
  TestCluster cluster("verbs");
  const Outcome up = cluster.up(example("two-node.yaml"));
  ASSERT_EQ(up.status, 0) << describe(up);

  for (const int replicas : {6, 1}) {
    SCOPED_TRACE("replicas " + std::to_string(replicas));
    const Outcome scale =
        cluster.cli({"scale", "deployment", "web", "--replicas", std::to_string(replicas)});
    ASSERT_EQ(scale.status, 0) << describe(scale);
    const auto pods = cluster.pods();
    EXPECT_EQ(owned_by(pods, "web").size(), static_cast<std::size_t>(replicas)) << pod_names(pods);
    EXPECT_EQ(pods.size(), static_cast<std::size_t>(replicas) + 2) << pod_names(pods);
    for (const auto& pod : pods)
      EXPECT_TRUE(pod.ready) << pod.name;
    expect_check_passes(cluster);
  }

  // A deployment's pod deleted is replaced by a new pod of another name.
  const auto webs = owned_by(cluster.pods(), "web");
  ASSERT_EQ(webs.size(), 1u);
  const Outcome delete_pod = cluster.cli({"delete", "pod", webs[0].name});
  ASSERT_EQ(delete_pod.status, 0) << describe(delete_pod);
  const auto replaced = owned_by(cluster.pods(), "web");
  ASSERT_EQ(replaced.size(), 1u);
  EXPECT_NE(replaced[0].name, webs[0].name);
  EXPECT_FALSE(namespace_exists(webs[0].netns));
  expect_check_passes(cluster);

  // The deployment deleted: its pods go, the standalone pods stay.
  const Outcome delete_deployment = cluster.cli({"delete", "deployment", "web"});
  ASSERT_EQ(delete_deployment.status, 0) << describe(delete_deployment);
  auto pods = cluster.pods();
  EXPECT_EQ(pod_names(pods), "client dns");
  EXPECT_FALSE(namespace_exists(replaced[0].netns));

  // apply adds a pod and removes nothing.
  const fs::path extra = scratch_ / "extra.yaml";
  write_text(extra,
             "apiVersion: v1\nkind: Pod\nmetadata:\n  name: extra\nspec:\n  containers:\n"
             "    - name: extra\n      ports:\n        - containerPort: 7000\n");
  const Outcome apply = cluster.cli({"apply", "-f", extra.string()});
  ASSERT_EQ(apply.status, 0) << describe(apply);
  EXPECT_THAT(apply.out, ContainsRegex("1 pods? created")) << describe(apply);
  const auto applied = cluster.pods();
  EXPECT_EQ(pod_names(applied), "client dns extra");
  for (const auto& pod : pods) {
    auto same = std::find_if(applied.begin(), applied.end(),
                             [&](const PodView& p) { return p.name == pod.name; });
    ASSERT_NE(same, applied.end());
    EXPECT_EQ(same->pid, pod.pid) << pod.name << " was restarted by apply";
  }
  expect_check_passes(cluster);
}

// --- 5. two clusters side by side ---

TEST_F(Emulator, TwoClustersFromOneFileLiveSideBySide) {
  TestCluster a("side-a");
  TestCluster b("side-b");
  for (TestCluster* cluster : {&a, &b}) {
    const Outcome up = cluster->up(example("two-node.yaml"));
    ASSERT_EQ(up.status, 0) << describe(up);
  }
  expect_check_passes(a);
  expect_check_passes(b);
  const auto b_pods = b.pods();
  ASSERT_EQ(b_pods.size(), 5u);

  a.down();
  const auto b_after = b.pods();
  ASSERT_EQ(b_after.size(), b_pods.size());
  for (std::size_t i = 0; i < b_pods.size(); ++i) {
    EXPECT_EQ(b_after[i].name, b_pods[i].name);
    EXPECT_EQ(b_after[i].pid, b_pods[i].pid) << b_pods[i].name;
    EXPECT_TRUE(b_after[i].ready) << b_pods[i].name;
    EXPECT_TRUE(namespace_exists(b_pods[i].netns)) << b_pods[i].netns;
  }
  EXPECT_TRUE(namespace_exists(b.fabric_netns()));
  expect_check_passes(b);
}

// `down` ends every process in the cluster's namespaces, not only the workloads: here commands
// a user left running through `flatnet exec` in a pod and a node, and `ip netns exec` in the
// fabric.
TEST_F(Emulator, DownEndsEveryProcessInTheClustersNamespaces) {
  TestCluster cluster("strays");
  const Outcome up = cluster.up(example("two-node.yaml"));
  ASSERT_EQ(up.status, 0) << describe(up);
  const std::string bin = StagedInstall::flatnet().string();
  const std::vector<std::pair<std::string, std::vector<std::string>>> commands = {
      {cluster.prefix() + "pod.default.client",
       {bin, "exec", "client", "--cluster", cluster.name(), "--", "sleep", "600"}},
      {cluster.prefix() + "node.node-1",
       {bin, "exec", "node-1", "--cluster", cluster.name(), "--", "sleep", "600"}},
      {cluster.fabric_netns(), {"ip", "netns", "exec", cluster.fabric_netns(), "sleep", "600"}},
  };
  std::vector<std::unique_ptr<Background>> strays;
  for (const auto& [netns, argv] : commands) {
    strays.push_back(std::make_unique<Background>(argv));
    const pid_t pid = strays.back()->pid();
    ASSERT_GT(pid, 0) << argv.front();
    // In place once it runs `sleep` inside the namespace (both commands enter, then exec).
    const auto wanted = namespace_id("/run/netns/" + netns);
    bool inside = false;
    for (int i = 0; i < 500 && !inside; ++i) {
      inside = namespace_id("/proc/" + std::to_string(pid) + "/ns/net") == wanted &&
               cmdline(pid).starts_with("sleep");
      if (!inside) std::this_thread::sleep_for(10ms);
    }
    ASSERT_TRUE(inside) << "pid " << pid << " (" << cmdline(pid) << ") never ran in " << netns;
  }

  // 8 namespaces: the fabric, 2 nodes, 5 pods; 8 processes: 5 workloads and the 3 commands.
  const Outcome down = cluster.down();
  EXPECT_THAT(down.out, HasSubstr("removed: 8 namespaces, 8 processes")) << describe(down);
  for (auto& stray : strays) {
    const auto status = stray->wait_for(5s);
    ASSERT_TRUE(status) << "pid " << stray->pid() << " still runs after down";
    EXPECT_TRUE(WIFSIGNALED(*status)) << "pid " << stray->pid() << " exited " << *status;
  }
}

// --- 6. faults: check names the broken hop; repair makes it pass ---

// A fault put into a running two-node cluster.
struct Injected {
  // The broken hop as `check` must name it: each is part of a BROKEN HOPS row, every row holds
  // one of them, and so does the "hop" of every failed pair of `check -o json`.
  std::vector<std::string> hops;
  // The pairs (check -o json "pairs" entries) that the fault breaks; all others pass.
  std::function<bool(const json& pair)> breaks;
  // Undoes the fault; when unset, `flatnet up` again must (its stdout then matches `up_says`).
  std::function<void()> repair;
  std::string up_says;
};

struct FaultCase {
  std::string name;
  std::function<Injected(const TestCluster&)> inject;
  friend void PrintTo(const FaultCase& c, std::ostream* out) { *out << c.name; }
};

class Faults : public Emulator, public ::testing::WithParamInterface<FaultCase> {};

bool pod_pair(const json& pair) {
  return pair.at("from").at("kind") == "pod";
}
std::string from_node(const json& pair) {
  return pair.at("from").at("node");
}
std::string to_node(const json& pair) {
  return pair.at("to").at("node");
}

void expect_ok(const Outcome& run) {
  EXPECT_EQ(run.status, 0) << describe(run);
}

// The BROKEN HOPS table of `check`'s output: its rows' text.
std::string broken_hops(const std::string& out) {
  const auto start = out.find("BROKEN HOPS");
  if (start == std::string::npos) return "";
  const auto end = out.find("\nFAILURES", start);
  return out.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

TEST_P(Faults, CheckNamesTheBrokenHopAndPassesAfterRepair) {
  TestCluster cluster(GetParam().name);
  const Outcome up = cluster.up(example("two-node.yaml"));
  ASSERT_EQ(up.status, 0) << describe(up);
  expect_check_passes(cluster, {"--timeout", "500"});

  const Injected fault = GetParam().inject(cluster);
  ASSERT_FALSE(HasFailure());

  const Outcome table = cluster.cli({"check", "--timeout", "500"});
  EXPECT_EQ(table.status, 1) << describe(table);
  // Every expected hop is named, and every row of the table is one of them.
  const std::string hops = broken_hops(table.out);
  for (const auto& hop : fault.hops)
    EXPECT_THAT(hops, HasSubstr(hop)) << describe(table);
  std::istringstream rows(hops);
  std::string row;
  std::getline(rows, row);  // BROKEN HOPS
  std::getline(rows, row);  // PAIRS HOP
  while (std::getline(rows, row) && !row.empty()) {
    EXPECT_TRUE(std::any_of(fault.hops.begin(), fault.hops.end(),
                            [&](const std::string& h) { return row.find(h) != std::string::npos; }))
        << "unexpected hop: " << row;
  }

  const Outcome run = cluster.cli({"check", "--timeout", "500", "-o", "json"});
  EXPECT_EQ(run.status, 1) << describe(run);
  const json report = json::parse(run.out, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << describe(run);
  EXPECT_EQ(report.at("passed"), false);
  std::size_t broken = 0;
  for (const auto& pair : report.at("pairs")) {
    const bool expected_broken = fault.breaks(pair);
    broken += expected_broken;
    EXPECT_EQ(pair.at("passed").get<bool>(), !expected_broken) << pair.dump();
    if (pair.at("passed").get<bool>()) continue;
    const std::string hop = pair.value("hop", "");
    EXPECT_TRUE(std::any_of(fault.hops.begin(), fault.hops.end(),
                            [&](const std::string& h) { return hop.find(h) != std::string::npos; }))
        << "hop: " << hop << "\npair: " << pair.dump();
  }
  EXPECT_GT(broken, 0u);
  EXPECT_EQ(report.at("failed").get<std::size_t>(), broken);

  if (fault.repair) {
    fault.repair();
  } else {
    const Outcome repair = cluster.up(example("two-node.yaml"));
    EXPECT_EQ(repair.status, 0) << describe(repair);
    EXPECT_THAT(repair.out, ContainsRegex(fault.up_says)) << describe(repair);
  }
  // The default timeout: a neighbour left INCOMPLETE while a link was down is resolved by the
  // next ARP retransmission, up to a second later (net.ipv4.neigh.*.retrans_time_ms).
  expect_check_passes(cluster);
}

// (a) The route on node-1 to node-2's pod subnet deleted: node-1 cannot send to node-2's pods,
// and no reply of node-1's pods reaches them. `up` puts the route back.
Injected delete_node_route(const TestCluster& cluster) {
  const NodeView node2 = cluster.node("node-2");
  expect_ok(in_namespace(cluster.prefix() + "node.node-1",
                         {"ip", "route", "del", node2.pod_cidr.to_string()}));
  Injected fault;
  for (const auto& pod : cluster.pods()) {
    if (pod.node != "node-2") continue;
    fault.hops.push_back("node node-1: no route to " + pod.ip.to_string() + " (pod " + pod.name +
                         ") (the route " + node2.pod_cidr.to_string() + " via " +
                         node2.address.to_string() + " to node node-2 is missing)");
  }
  fault.breaks = [](const json& pair) {
    return to_node(pair) != from_node(pair) && (pod_pair(pair) || from_node(pair) == "node-1");
  };
  return fault;
}

// (b) The host side of the client pod's veth down on node-2: the pod is cut off.
Injected pod_veth_down(const TestCluster& cluster) {
  const PodView client = cluster.pod("client");
  const std::string node = cluster.prefix() + "node." + client.node;
  expect_ok(run_program({"ip", "-n", node, "link", "set", client.host_veth, "down"}));
  Injected fault;
  fault.hops = {"node " + client.node + ": " + client.host_veth +
                " (the veth of pod client) is down"};
  fault.breaks = [](const json& pair) {
    return pair.at("to").at("name") == "client" ||
           (pod_pair(pair) && pair.at("from").at("name") == "client");
  };
  fault.repair = [node, veth = client.host_veth] {
    expect_ok(run_program({"ip", "-n", node, "link", "set", veth, "up"}));
  };
  return fault;
}

// (c) The dns pod's workload killed: nothing answers on its ports. `up` restarts it.
Injected kill_workload(const TestCluster& cluster) {
  const PodView dns = cluster.pod("dns");
  const std::string command = cmdline(dns.pid);
  EXPECT_THAT(command, HasSubstr("flatnet-netexec")) << "pid " << dns.pid;
  EXPECT_THAT(command, HasSubstr("--hostname dns")) << "pid " << dns.pid;
  if (::testing::Test::HasFailure()) return {};
  const auto start = process_stat(dns.pid)->start_time;
  EXPECT_EQ(::kill(dns.pid, SIGKILL), 0) << std::strerror(errno);
  for (int i = 0; i < 200 && running(dns.pid, start); ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_FALSE(running(dns.pid, start));
  Injected fault;
  for (const char* protocol : {"TCP", "UDP"}) {
    fault.hops.push_back("nothing listening on " + dns.ip.to_string() + ":53/" + protocol +
                         " in pod dns (its workload, pid " + std::to_string(dns.pid) +
                         ", is not running)");
  }
  fault.breaks = [](const json& pair) { return pair.at("to").at("name") == "dns"; };
  fault.up_says = "1 workloads? restarted";
  return fault;
}

// (d) The fabric end of node-2's uplink down: node-2 is off the node LAN. `up` sets it up.
Injected fabric_link_down(const TestCluster& cluster) {
  expect_ok(run_program({"ip", "-n", cluster.fabric_netns(), "link", "set", "n2", "down"}));
  Injected fault;
  fault.hops = {"fabric: n2 (uplink of node node-2) is down"};
  fault.breaks = [](const json& pair) { return to_node(pair) != from_node(pair); };
  return fault;
}

// (e) A masquerade rule on node-1 for traffic to node-2's pods: those pods see node-1's
// address instead of the client pod's.
Injected masquerade_on_node(const TestCluster& cluster) {
  const NodeView node1 = cluster.node("node-1");
  const NodeView node2 = cluster.node("node-2");
  const std::string netns = cluster.prefix() + "node.node-1";
  const std::vector<std::string> rule = {
      "POSTROUTING", "-s",        node1.pod_cidr.to_string(), "-d", node2.pod_cidr.to_string(),
      "-j",          "MASQUERADE"};
  auto iptables = [netns, rule](const char* op) {
    std::vector<std::string> command = {"iptables", "-w", "-t", "nat", op};
    command.insert(command.end(), rule.begin(), rule.end());
    expect_ok(in_namespace(netns, command));
  };
  iptables("-A");
  Injected fault;
  // One rule, one broken hop: the address the pods' sources were rewritten to.
  fault.hops.push_back("source NATed to " + node1.address.to_string() +
                       " (node node-1, eth0): a NAT rule on node node-1 rewrites pod addresses");
  fault.breaks = [](const json& pair) {
    return pod_pair(pair) && from_node(pair) == "node-1" && to_node(pair) == "node-2";
  };
  fault.repair = [iptables] { iptables("-D"); };
  return fault;
}

INSTANTIATE_TEST_SUITE_P(Emulator, Faults,
                         ::testing::Values(FaultCase{"route", delete_node_route},
                                           FaultCase{"veth", pod_veth_down},
                                           FaultCase{"workload", kill_workload},
                                           FaultCase{"fabric", fabric_link_down},
                                           FaultCase{"snat", masquerade_on_node}),
                         [](const auto& info) { return info.param.name; });

// --- 7. check's, get's and graph's outputs ---

struct JunitCounts {
  std::size_t tests = 0, failures = 0, testcases = 0, failure_elements = 0;
};

// The counts a JUnit file declares on its <testsuite> and the elements it has.
JunitCounts junit_counts(const std::string& xml) {
  JunitCounts counts;
  static const std::regex suite(R"re(<testsuite [^>]*tests="([0-9]+)" failures="([0-9]+)")re");
  std::smatch match;
  if (std::regex_search(xml, match, suite)) {
    counts.tests = std::stoul(match[1].str());
    counts.failures = std::stoul(match[2].str());
  }
  counts.testcases = count_of(xml, "<testcase ");
  counts.failure_elements = count_of(xml, "<failure ");
  return counts;
}

void expect_wellformed_junit(const std::string& xml) {
  EXPECT_EQ(xml.rfind("<?xml version=\"1.0\"", 0), 0u) << xml.substr(0, 200);
  EXPECT_EQ(count_of(xml, "<testsuites "), 1u);
  EXPECT_EQ(count_of(xml, "</testsuites>"), 1u);
  EXPECT_EQ(count_of(xml, "<testsuite "), count_of(xml, "</testsuite>"));
  EXPECT_EQ(count_of(xml, "<failure "), count_of(xml, "</failure>"));
}

TEST_F(Emulator, CheckGetAndGraphWriteWhatTheySay) {
  TestCluster cluster("outputs");
  const Outcome up = cluster.up(example("two-node.yaml"));
  ASSERT_EQ(up.status, 0) << describe(up);

  // get nodes / pods -o json agree with each other and with the kernel.
  const auto nodes = cluster.nodes();
  const auto pods = cluster.pods();
  ASSERT_EQ(nodes.size(), 2u);
  ASSERT_EQ(pods.size(), 5u);
  for (const auto& node : nodes) {
    EXPECT_EQ(node.netns, cluster.prefix() + "node." + node.name);
    EXPECT_TRUE(namespace_exists(node.netns)) << node.netns;
  }
  for (const auto& pod : pods) {
    EXPECT_EQ(pod.netns, cluster.prefix() + "pod.default." + pod.name);
    EXPECT_TRUE(pod.ready) << pod.name;
    EXPECT_THAT(cmdline(pod.pid), HasSubstr("flatnet-netexec")) << pod.name;
    expect_ok(run_program(
        {"ip", "-n", cluster.prefix() + "node." + pod.node, "link", "show", "dev", pod.host_veth}));
  }

  // check -o json --junit: the same pairs, all passed, the servers saw the clients' own addresses.
  const fs::path junit = scratch_ / "check.xml";
  const Outcome check = cluster.cli({"check", "-o", "json", "--junit", junit.string()});
  EXPECT_EQ(check.status, 0) << describe(check);
  const json report = json::parse(check.out, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << describe(check);
  EXPECT_EQ(report.at("passed"), true);
  EXPECT_EQ(report.at("failed"), 0);
  // Pod to pod: 4 others each over TCP, to the 4 pods with a UDP port (client has none) over
  // UDP; both nodes to every pod.
  EXPECT_EQ(report.at("pairs").size(), 20u + 16u + 10u);
  std::map<std::string, std::string> ip_of;
  for (const auto& pod : pods)
    ip_of[pod.name] = pod.ip.to_string();
  for (const auto& pair : report.at("pairs")) {
    EXPECT_EQ(pair.at("passed"), true) << pair.dump();
    if (pod_pair(pair)) {
      EXPECT_EQ(pair.value("seenClient", ""), ip_of[pair.at("from").at("name")]) << pair.dump();
    }
  }
  const std::string xml = read_text(junit);
  expect_wellformed_junit(xml);
  const JunitCounts passing = junit_counts(xml);
  EXPECT_EQ(passing.tests, report.at("pairs").size()) << xml.substr(0, 400);
  EXPECT_EQ(passing.testcases, passing.tests);
  EXPECT_EQ(passing.failures, 0u);
  EXPECT_EQ(passing.failure_elements, 0u);

  // A failing check writes failures, one element per failed pair.
  const PodView client = cluster.pod("client");
  const std::string node = cluster.prefix() + "node." + client.node;
  expect_ok(run_program({"ip", "-n", node, "link", "set", client.host_veth, "down"}));
  const Outcome failing = cluster.cli({"check", "--timeout", "300", "--junit", junit.string()});
  EXPECT_EQ(failing.status, 1) << describe(failing);
  const std::string failing_xml = read_text(junit);
  expect_wellformed_junit(failing_xml);
  const JunitCounts failed = junit_counts(failing_xml);
  EXPECT_EQ(failed.tests, passing.tests);
  EXPECT_EQ(failed.testcases, failed.tests);
  EXPECT_GT(failed.failures, 0u);
  EXPECT_EQ(failed.failure_elements, failed.failures);
  EXPECT_THAT(failing_xml, HasSubstr(client.host_veth + " (the veth of pod client) is down"));
  expect_ok(run_program({"ip", "-n", node, "link", "set", client.host_veth, "up"}));

  // graph: DOT naming every node and pod; SVG drawn by Graphviz.
  const fs::path dot = scratch_ / "cluster.dot";
  const Outcome graph_dot = cluster.cli({"graph", "-o", dot.string()});
  ASSERT_EQ(graph_dot.status, 0) << describe(graph_dot);
  const std::string dot_text = read_text(dot);
  EXPECT_EQ(dot_text.rfind("digraph ", 0), 0u) << dot_text.substr(0, 200);
  EXPECT_EQ(dot_text.find_last_not_of(" \n"), dot_text.rfind('}'));
  for (const auto& pod : pods) {
    EXPECT_THAT(dot_text, HasSubstr("pod " + pod.name)) << pod.name;
    EXPECT_THAT(dot_text, HasSubstr(pod.ip.to_string())) << pod.name;
  }
  for (const auto& n : nodes)
    EXPECT_THAT(dot_text, HasSubstr("node " + n.name)) << n.name;

  const fs::path svg = scratch_ / "cluster.svg";
  const Outcome graph_svg = cluster.cli({"graph", "-o", svg.string()});
  ASSERT_EQ(graph_svg.status, 0) << describe(graph_svg);
  EXPECT_THAT(graph_svg.out, HasSubstr("wrote " + svg.string()));
  const std::string svg_text = read_text(svg);
  EXPECT_THAT(svg_text, HasSubstr("<svg"));
  EXPECT_THAT(svg_text, HasSubstr("</svg>"));
  for (const auto& pod : pods) {
    std::string drawn = pod.name;  // Graphviz writes '-' as &#45;
    for (std::size_t at; (at = drawn.find('-')) != std::string::npos;)
      drawn.replace(at, 1, "&#45;");
    EXPECT_THAT(svg_text, HasSubstr(drawn)) << pod.name;
  }
  // Labels break lines; a literal "\n" means the label's escapes were escaped again.
  EXPECT_THAT(svg_text, Not(HasSubstr("\\n")));
}

// --- 8. errors, as a user sees them ---

struct UserErrorCase {
  std::string name;
  bool running_cluster;              // a two-node cluster runs first; {cluster} is its name
  std::string file_text;             // written to {file} when not empty
  std::vector<std::string> args;     // {cluster}, {new} (a cluster name never used), {file}
  int status;                        // the exit status expected
  std::vector<std::string> err_has;  // parts of stderr ({file}, {new}, {cluster} substituted)
  std::string out_has;
  bool as_nobody = false;  // run as uid/gid 65534 (through setpriv)
  friend void PrintTo(const UserErrorCase& c, std::ostream* out) { *out << c.name; }
};

class UserErrors : public Emulator, public ::testing::WithParamInterface<UserErrorCase> {};

TEST_P(UserErrors, FailClearlyAndCreateNothing) {
  const UserErrorCase& row = GetParam();
  TestCluster cluster(row.name);
  const std::string fresh = "e2e-new-" + std::to_string(::getpid());
  const fs::path file = scratch_ / "cluster.yaml";
  if (!row.file_text.empty()) write_text(file, row.file_text);
  std::vector<PodView> before;
  if (row.running_cluster) {
    const Outcome up = cluster.up(example("two-node.yaml"));
    ASSERT_EQ(up.status, 0) << describe(up);
    before = cluster.pods();
  }
  auto substitute = [&](std::string text) {
    for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
             {"{cluster}", cluster.name()}, {"{new}", fresh}, {"{file}", file.string()}}) {
      for (std::size_t at; (at = text.find(key)) != std::string::npos;)
        text.replace(at, key.size(), value);
    }
    return text;
  };
  std::vector<std::string> args;
  for (const auto& arg : row.args)
    args.push_back(substitute(arg));

  if (row.as_nobody) {
    args.insert(args.begin(), {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               StagedInstall::flatnet().string()});
  }
  const Outcome run = row.as_nobody ? run_program(args) : flatnet(args);
  EXPECT_EQ(run.status, row.status) << describe(run);
  for (const auto& part : row.err_has)
    EXPECT_THAT(run.err, HasSubstr(substitute(part))) << describe(run);
  if (!row.out_has.empty()) {
    EXPECT_THAT(run.out, HasSubstr(substitute(row.out_has))) << describe(run);
  }
  EXPECT_THAT(run.err, Not(HasSubstr("terminate called"))) << describe(run);

  // Nothing made for a cluster that failed to come up; a running cluster untouched.
  EXPECT_THAT(named_namespaces("flatnet-" + fresh + "-"), ::testing::IsEmpty());
  EXPECT_FALSE(fs::exists("/run/flatnet/" + fresh));
  if (row.running_cluster) {
    const auto after = cluster.pods();
    EXPECT_EQ(pod_names(after), pod_names(before));
    for (std::size_t i = 0; i < std::min(before.size(), after.size()); ++i)
      EXPECT_EQ(after[i].pid, before[i].pid) << before[i].name;
  }
}

// A valid cluster with one bad value, on line 15.
const std::string kBadPort = R"(apiVersion: flatnet/v1alpha1
kind: Cluster
metadata:
  name: bad
nodes: 2
---
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
    - name: web
      ports:
        - containerPort: 70000
)";

const std::string kBadNetwork = R"(apiVersion: flatnet/v1alpha1
kind: Cluster
metadata:
  name: bad
nodes: 2
network: mesh
)";

const std::string kBadReplicas = R"(apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: -1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
)";

// `up -f {file} --name {new}` of a file that fails: exit 1, stderr naming `err_has`.
UserErrorCase bad_file(std::string name, std::string text, std::vector<std::string> err_has) {
  return {std::move(name),    false, std::move(text), {"up", "-f", "{file}", "--name", "{new}"}, 1,
          std::move(err_has), ""};
}

// A verb on a running cluster (`--cluster {cluster}` after the verb) that fails with `status`.
UserErrorCase bad_verb(std::string name, std::vector<std::string> args, int status,
                       std::string err_has) {
  args.insert(args.begin() + 1, {"--cluster", "{cluster}"});
  return {std::move(name), true, "", std::move(args), status, {std::move(err_has)}, ""};
}

// Any command line, with no cluster running.
UserErrorCase bad_command(std::string name, std::vector<std::string> args, int status,
                          std::string err_has, std::string out_has = "") {
  return {std::move(name),
          false,
          "",
          std::move(args),
          status,
          err_has.empty() ? std::vector<std::string>{} : std::vector<std::string>{err_has},
          std::move(out_has)};
}

std::vector<UserErrorCase> user_error_cases() {
  const std::string two_node = FLATNET_SOURCE_DIR "/examples/two-node.yaml";
  std::vector<UserErrorCase> rows = {
      bad_command("missing-file", {"up", "-f", "{file}.missing.yaml", "--name", "{new}"}, 1,
                  "read cluster file \"{file}.missing.yaml\": No such file or directory"),
      bad_file("bad-port", kBadPort,
               {"{file}:15:", "spec.containers[0].ports[0].containerPort", "70000"}),
      bad_file("bad-network", kBadNetwork, {"{file}:6:", "network", "mesh"}),
      bad_file("bad-replicas", kBadReplicas, {"{file}:6:", "spec.replicas", "-1"}),
      bad_file("bad-yaml", "nodes: [2\n", {"{file}:", "invalid YAML"}),
      bad_command("bad-name", {"up", "-f", two_node, "--name", "Bad_Name"}, 2,
                  "--name: \"Bad_Name\" is not a valid RFC 1123 label"),
      bad_command("long-name", {"up", "-f", two_node, "--name", "{new}-much-longer-than-allowed"},
                  2, "is longer than 32 characters"),
      bad_command("get-nosuch", {"get", "pods", "--cluster", "{new}"}, 1,
                  "cluster {new} is not running"),
      bad_command("check-nosuch", {"check", "--cluster", "{new}"}, 1,
                  "cluster {new} is not running"),
      bad_command("down-nosuch", {"down", "{new}"}, 0, "", "cluster {new}: nothing to remove"),
      bad_verb("delete-pod", {"delete", "pod", "nosuch"}, 1,
               "pod nosuch not found in cluster {cluster}"),
      bad_verb("delete-deploy", {"delete", "deployment", "nosuch"}, 1,
               "deployment nosuch not found in cluster {cluster}"),
      bad_verb("scale-nosuch", {"scale", "deployment", "nosuch", "--replicas", "2"}, 1,
               "deployment nosuch not found in cluster {cluster}"),
      bad_verb("exec-nosuch", {"exec", "nosuch", "--", "true"}, 1,
               "no pod or node nosuch in cluster {cluster}"),
      bad_verb("check-output", {"check", "-o", "yaml"}, 2, "-o yaml is not wide or json"),
  };
  // Not root: refused before anything is read or made.
  UserErrorCase not_root =
      bad_command("not-root", {"up", "-f", two_node, "--name", "{new}"}, 1, "must run as root");
  not_root.as_nobody = true;
  rows.push_back(not_root);
  return rows;
}

INSTANTIATE_TEST_SUITE_P(Emulator, UserErrors, ::testing::ValuesIn(user_error_cases()),
                         [](const auto& info) {
                           std::string name = info.param.name;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace flatnet::emulator
