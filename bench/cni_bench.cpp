// bench/cni: flatnet-cni + flatnet-ipam against the reference bridge + host-local, driven by
// the same libcni-like runtime, alternating, with the same settings. For each round and each
// plugin pair: ADD 50 pods, CHECK them, DEL them, timing every call. Prints the median latency
// per operation and the ratio flatnet / reference.
//
// Usage: sudo flatnet-bench-cni [--pods N] [--rounds R] [--reference-dir DIR] [--flatnet-dir DIR]
// Everything happens in namespaces named flatnet-bench-<pid>-*, removed at exit.

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "flatnet/cni/runtime.hpp"
#include "flatnet/netmodel/netns.hpp"

namespace {

namespace fs = std::filesystem;
using flatnet::cni::Attachment;
using flatnet::cni::NetworkConfigList;
using flatnet::cni::Runtime;
using flatnet::netmodel::NetNs;
using Clock = std::chrono::steady_clock;

// Namespaces made by this run, removed however it ends.
class Namespaces {
 public:
  ~Namespaces() {
    handles_.clear();
    for (const auto& n : names_) {
      try {
        NetNs::remove(n);
      } catch (...) {
      }
    }
  }
  NetNs& add(const std::string& role) {
    names_.push_back("flatnet-bench-" + std::to_string(::getpid()) + "-" + role);
    handles_.push_back(std::make_unique<NetNs>(NetNs::create(names_.back())));
    return *handles_.back();
  }

 private:
  std::vector<std::string> names_;
  std::vector<std::unique_ptr<NetNs>> handles_;
};

struct Pair {
  std::string label;
  NetworkConfigList list;
  std::map<std::string, std::vector<double>> samples;  // operation -> milliseconds
};

NetworkConfigList make_list(const std::string& type, const std::string& ipam,
                            const std::string& bridge, const std::string& subnet,
                            const fs::path& data_dir) {
  nlohmann::json plugin = {{"type", type},
                           {"bridge", bridge},
                           {"isGateway", true},
                           {"ipam",
                            {{"type", ipam},
                             {"subnet", subnet},
                             {"dataDir", data_dir.string()},
                             {"routes", nlohmann::json::array({{{"dst", "0.0.0.0/0"}}})}}}};
  // 1.0.0: the newest version Debian 12's reference plugins speak.
  return {"1.0.0", "bench", {plugin}, false};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

template <class F>
double time_ms(F&& f) {
  const auto start = Clock::now();
  f();
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  int pods = 50, rounds = 5;
  std::string reference_dir = "/usr/lib/cni", flatnet_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << arg << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--pods") {
      pods = std::stoi(value());
    } else if (arg == "--rounds") {
      rounds = std::stoi(value());
    } else if (arg == "--reference-dir") {
      reference_dir = value();
    } else if (arg == "--flatnet-dir") {
      flatnet_dir = value();
    } else if (arg == "--help" || arg == "-h") {
      std::cout << "usage: sudo " << argv[0]
                << " [--pods N (50)] [--rounds R (5)] [--reference-dir DIR (/usr/lib/cni)]"
                   " [--flatnet-dir DIR (this program's directory)]\n";
      return 0;
    } else {
      std::cerr << argv[0] << ": unknown argument \"" << arg << "\" (see --help)\n";
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::cerr << argv[0] << ": must run as root (it creates network namespaces)\n";
    return 1;
  }
  if (flatnet_dir.empty()) flatnet_dir = fs::canonical("/proc/self/exe").parent_path();
  if (pods < 1 || pods > 250 || rounds < 1) {
    std::cerr << argv[0] << ": --pods must be 1-250 and --rounds at least 1\n";
    return 2;
  }

  const fs::path work =
      fs::temp_directory_path() / ("flatnet-bench-cni-" + std::to_string(::getpid()));
  try {
    Namespaces namespaces;
    NetNs& node = namespaces.add("node");
    std::vector<NetNs*> pod_ns;
    for (int p = 0; p < pods; ++p)
      pod_ns.push_back(&namespaces.add("pod" + std::to_string(p)));
    const Runtime runtime({flatnet_dir, reference_dir}, &node);

    std::vector<Pair> pairs = {
        {"flatnet-cni + flatnet-ipam",
         make_list("flatnet-cni", "flatnet-ipam", "cni-flat", "10.60.0.0/24", work / "flatnet"),
         {}},
        {"bridge + host-local (reference)",
         make_list("bridge", "host-local", "cni-ref", "10.61.0.0/24", work / "reference"),
         {}},
    };
    for (int round = 0; round < rounds; ++round) {
      // Alternate which pair goes first, so neither always meets a warmer machine.
      for (int k = 0; k < 2; ++k) {
        Pair& pair = pairs[(round + k) % 2];
        std::vector<nlohmann::json> results(pods);
        std::vector<Attachment> attachments;
        for (int p = 0; p < pods; ++p) {
          attachments.push_back({"bench-" + std::to_string(round) + "-" + std::to_string(p),
                                 pod_ns[p]->path(),
                                 "eth0",
                                 {},
                                 nlohmann::json::object()});
        }
        for (int p = 0; p < pods; ++p) {
          pair.samples["ADD"].push_back(
              time_ms([&] { results[p] = runtime.add(pair.list, attachments[p]); }));
        }
        for (int p = 0; p < pods; ++p) {
          pair.samples["CHECK"].push_back(
              time_ms([&] { runtime.check(pair.list, attachments[p], results[p]); }));
        }
        for (int p = 0; p < pods; ++p) {
          pair.samples["DEL"].push_back(
              time_ms([&] { runtime.del(pair.list, attachments[p], results[p]); }));
        }
      }
    }
    std::printf("CNI plugin latency, %d pods x %d rounds, median of %d calls per cell\n", pods,
                rounds, pods * rounds);
    std::printf("%-6s %14s %14s %10s\n", "op", "flatnet (ms)", "reference (ms)", "ratio");
    for (const char* op : {"ADD", "CHECK", "DEL"}) {
      const double f = median(pairs[0].samples[op]);
      const double r = median(pairs[1].samples[op]);
      std::printf("%-6s %14.2f %14.2f %10.3f\n", op, f, r, r > 0 ? f / r : 0.0);
    }
  } catch (const std::exception& e) {
    std::cerr << argv[0] << ": " << e.what() << "\n";
    fs::remove_all(work);
    return 1;
  }
  fs::remove_all(work);
  return 0;
}
