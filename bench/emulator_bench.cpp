// bench/emulator: the emulator driven as a user drives it, timed from outside.
//
//  1. `flatnet up` of a big cluster (default: examples/large.yaml's shape, 10 nodes and 1000
//     pods) until every pod answers (up returns only then), and `flatnet down`, once with
//     `cni: flatnet` and once with `cni: bridge` (Debian's reference bridge + host-local), in
//     alternating rounds; prints the medians and the ratio bridge / flatnet.
//  2. `flatnet check` of a 100-pod cluster (9,900 pod pairs over TCP and again over UDP, plus
//     every node to every pod); prints the median time.
//
// Usage: sudo flatnet-bench-emulator [--nodes N] [--pods N] [--rounds R] [--check-pods N]
//                                    [--parallel N] [--flatnet PATH]
// Each timed command starts on a quiet machine (see wait_until_quiet).
// Clusters are named bench-<pid>-*, and removed at exit.

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string flatnet_path;
std::vector<std::string> clusters_made;

// Runs flatnet with `args`, its output discarded unless it fails; returns seconds taken.
double run(const std::vector<std::string>& args, bool must_succeed = true) {
  const auto start = Clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(flatnet_path.c_str()));
    for (const auto& arg : args)
      argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (must_succeed && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
    std::string command = "flatnet";
    for (const auto& arg : args)
      command += " " + arg;
    throw std::runtime_error(command + " failed (exit " + std::to_string(WEXITSTATUS(status)) +
                             ")");
  }
  return seconds;
}

std::string cluster_file(const std::string& name, int nodes, int pods, const std::string& cni) {
  const int deployments = std::max(1, pods / 100);
  std::string text = "apiVersion: flatnet/v1alpha1\nkind: Cluster\nmetadata:\n  name: " + name +
                     "\nnodes: " + std::to_string(nodes) + "\ncni: " + cni + "\n";
  for (int d = 0; d < deployments; ++d) {
    const int replicas = pods / deployments + (d < pods % deployments ? 1 : 0);
    const std::string app = "app-" + std::to_string(d);
    text += "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: " + app +
            "\nspec:\n  replicas: " + std::to_string(replicas) +
            "\n  selector:\n    matchLabels:\n      app: " + app +
            "\n  template:\n    metadata:\n      labels:\n        app: " + app +
            "\n    spec:\n      containers:\n        - name: netexec\n          ports:\n"
            "            - containerPort: 8080\n            - containerPort: 8081\n"
            "              protocol: UDP\n";
  }
  const fs::path path = fs::temp_directory_path() / (name + ".yaml");
  std::ofstream(path) << text;
  return path.string();
}

// Waits until the machine is quiet again: the kernel destroys removed namespaces in the
// background for seconds after a `down`, and a run that starts meanwhile pays for the previous
// one. Quiet: at least 85% idle over two half-second windows in a row (at most 60 s).
void wait_until_quiet() {
  auto sample = [] {
    std::ifstream in("/proc/stat");
    std::string cpu;
    unsigned long long user, nice, system, idle, iowait, irq, softirq, steal;
    in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
    return std::pair{idle + iowait, user + nice + system + idle + iowait + irq + softirq + steal};
  };
  int quiet = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (quiet < 2 && Clock::now() < deadline) {
    const auto [idle0, total0] = sample();
    ::usleep(500000);
    const auto [idle1, total1] = sample();
    const double idle_share =
        total1 > total0 ? double(idle1 - idle0) / double(total1 - total0) : 1.0;
    quiet = idle_share >= 0.85 ? quiet + 1 : 0;
  }
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

void cleanup() {
  for (const auto& name : clusters_made) {
    try {
      run({"down", name}, false);
    } catch (...) {
    }
    std::error_code ec;
    fs::remove(fs::temp_directory_path() / (name + ".yaml"), ec);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int nodes = 10, pods = 1000, rounds = 3, check_pods = 100;
  std::string parallel;  // flatnet up --parallel; empty: flatnet's default
  std::error_code ec;
  flatnet_path = (fs::read_symlink("/proc/self/exe", ec).parent_path() / "flatnet").string();
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
      return argv[++i];
    };
    try {
      if (arg == "--nodes") {
        nodes = std::stoi(next());
      } else if (arg == "--pods") {
        pods = std::stoi(next());
      } else if (arg == "--rounds") {
        rounds = std::stoi(next());
      } else if (arg == "--check-pods") {
        check_pods = std::stoi(next());
      } else if (arg == "--parallel") {
        parallel = next();
      } else if (arg == "--flatnet") {
        flatnet_path = next();
      } else {
        std::cerr << "usage: flatnet-bench-emulator [--nodes N] [--pods N] [--rounds R] "
                     "[--check-pods N] [--parallel N] [--flatnet PATH]\n";
        return arg == "--help" ? 0 : 2;
      }
    } catch (const std::exception& e) {
      std::cerr << "flatnet-bench-emulator: " << arg << ": " << e.what() << "\n";
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::cerr << "flatnet-bench-emulator must run as root (it creates network namespaces)\n";
    return 1;
  }
  const std::string prefix = "bench-" + std::to_string(::getpid());
  try {
    std::vector<double> up_flatnet, up_bridge, down_flatnet, down_bridge;
    for (int round = 0; round < rounds; ++round) {
      // Alternate which goes first, so that neither always meets a machine warmed by the other.
      const bool flatnet_first = round % 2 == 0;
      for (int k = 0; k < 2; ++k) {
        const bool flatnet = (k == 0) == flatnet_first;
        const std::string name = prefix + (flatnet ? "-f" : "-b");
        const std::string file = cluster_file(name, nodes, pods, flatnet ? "flatnet" : "bridge");
        clusters_made.push_back(name);
        std::vector<std::string> up_args = {"up", "-f", file};
        if (!parallel.empty()) up_args.insert(up_args.end(), {"--parallel", parallel});
        wait_until_quiet();
        const double up = run(up_args);
        wait_until_quiet();
        const double down = run({"down", name});
        (flatnet ? up_flatnet : up_bridge).push_back(up);
        (flatnet ? down_flatnet : down_bridge).push_back(down);
        std::printf("round %d  cni %-7s  up %6.2f s  down %6.2f s\n", round + 1,
                    flatnet ? "flatnet" : "bridge", up, down);
        std::fflush(stdout);
      }
    }
    std::printf("\n%d nodes, %d pods, median of %d rounds:\n", nodes, pods, rounds);
    std::printf(
        "  up (every pod answering)  flatnet %6.2f s  bridge %6.2f s  bridge/flatnet %.2fx\n",
        median(up_flatnet), median(up_bridge), median(up_bridge) / median(up_flatnet));
    std::printf(
        "  down                      flatnet %6.2f s  bridge %6.2f s  bridge/flatnet %.2fx\n",
        median(down_flatnet), median(down_bridge), median(down_bridge) / median(down_flatnet));

    const std::string name = prefix + "-c";
    const std::string file = cluster_file(name, 2, check_pods, "flatnet");
    clusters_made.push_back(name);
    run({"up", "-f", file});
    std::vector<double> checks;
    for (int round = 0; round < rounds; ++round) {
      wait_until_quiet();
      checks.push_back(run({"check", "-c", name}));
    }
    run({"down", name});
    const double pairs = static_cast<double>(check_pods) * (check_pods - 1);
    std::printf(
        "  check of %d pods (%.0f pairs over TCP and UDP, plus node to pod): median %.2f s\n",
        check_pods, pairs, median(checks));
  } catch (const std::exception& e) {
    std::cerr << "flatnet-bench-emulator: " << e.what() << "\n";
    cleanup();
    return 1;
  }
  cleanup();
  return 0;
}
