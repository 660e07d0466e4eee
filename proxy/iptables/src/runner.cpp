#include "flatnet/proxy/iptables/runner.hpp"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>

#include "flatnet/cni/error.hpp"
#include "flatnet/cni/exec.hpp"

namespace flatnet::proxy::iptables {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> search_dirs() {
  std::vector<std::string> dirs = {"/usr/sbin", "/sbin", "/usr/bin", "/bin"};
  if (const char* path = ::getenv("PATH"); path != nullptr) {
    std::string all = path;
    std::size_t start = 0;
    while (start <= all.size()) {
      const auto end = all.find(':', start);
      const auto dir =
          all.substr(start, end == std::string::npos ? std::string::npos : end - start);
      if (!dir.empty()) dirs.push_back(dir);
      if (end == std::string::npos) break;
      start = end + 1;
    }
  }
  return dirs;
}

std::optional<fs::path> find_binary(const std::string& name) {
  for (const auto& dir : search_dirs()) {
    const fs::path candidate = fs::path(dir) / name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

fs::path require_binary(const std::string& name) {
  if (auto found = find_binary(name)) return *found;
  throw std::runtime_error("cannot find " + name +
                           " in /usr/sbin, /sbin or PATH (install Debian's iptables package)");
}

class ExecIptables final : public Iptables {
 public:
  explicit ExecIptables(IptablesBackend backend)
      : backend_(backend == IptablesBackend::legacy ? "legacy" : "nft"),
        iptables_(require_binary("iptables-" + backend_)),
        restore_(require_binary("iptables-" + backend_ + "-restore")),
        save_(require_binary("iptables-" + backend_ + "-save")) {
    if (const char* path = ::getenv("PATH"); path != nullptr) environment_["PATH"] = path;
  }

  std::string backend() const override { return backend_; }

  CommandResult restore(const std::string& text) override {
    return execute(restore_, {"--noflush", "--wait"}, text);
  }
  CommandResult save(const std::string& table) override {
    return execute(save_, {"-t", table}, "");
  }
  CommandResult run(const std::vector<std::string>& args) override {
    std::vector<std::string> all = {"--wait"};
    all.insert(all.end(), args.begin(), args.end());
    return execute(iptables_, all, "");
  }

 private:
  CommandResult execute(const fs::path& program, const std::vector<std::string>& args,
                        const std::string& input) {
    try {
      const auto out = cni::exec_program(program, environment_, input, args);
      return {out.status, out.out, out.err};
    } catch (const std::exception& e) {
      return {127, "", e.what()};
    }
  }

  std::string backend_;
  fs::path iptables_, restore_, save_;
  std::map<std::string, std::string> environment_;
};

bool legacy_table_exists(const std::string& table) {
  // /proc/thread-self: the namespace of the calling thread, which is where the binaries run.
  std::ifstream names("/proc/thread-self/net/ip_tables_names");
  std::string name;
  while (std::getline(names, name)) {
    if (name == table) return true;
  }
  return false;
}

// How much of Kubernetes a backend's tables already hold: chains kubelet and kube-proxy leave
// as markers count most, then every rule.
long long presence(const std::string& backend) {
  const auto save = find_binary("iptables-" + backend + "-save");
  if (!save) return -1;
  long long score = 0;
  for (const char* table : {"mangle", "nat", "filter"}) {
    // Asking the legacy backend for a table makes the kernel create it in this namespace: ask
    // only for those that exist.
    if (backend == "legacy" && !legacy_table_exists(table)) continue;
    try {
      const auto out = cni::exec_program(*save, {}, "", {"-t", table});
      if (out.status != 0) continue;
      for (std::size_t pos = 0; pos < out.out.size();) {
        const auto end = out.out.find('\n', pos);
        const std::string_view line(out.out.data() + pos,
                                    (end == std::string::npos ? out.out.size() : end) - pos);
        if (line.starts_with(":KUBE-IPTABLES-HINT") || line.starts_with(":KUBE-KUBELET-CANARY") ||
            line.starts_with(":KUBE-PROXY-CANARY")) {
          score += 1'000'000;
        } else if (line.starts_with("-A ")) {
          ++score;
        }
        if (end == std::string::npos) break;
        pos = end + 1;
      }
    } catch (const std::exception&) {
      // A backend that cannot be run holds nothing.
    }
  }
  return score;
}

}  // namespace

IptablesBackend system_default_backend() {
  std::error_code ec;
  const auto target = fs::canonical(find_binary("iptables").value_or("/usr/sbin/iptables"), ec);
  if (!ec && target.filename().string().find("legacy") != std::string::npos) {
    return IptablesBackend::legacy;
  }
  return IptablesBackend::nft;
}

std::unique_ptr<Iptables> make_iptables(IptablesBackend backend) {
  if (backend == IptablesBackend::automatic) {
    const auto legacy = presence("legacy");
    const auto nft = presence("nft");
    if (legacy > 0 && legacy > nft) {
      backend = IptablesBackend::legacy;
    } else if (nft > 0) {
      backend = IptablesBackend::nft;
    } else {
      backend = system_default_backend();
    }
  }
  return std::make_unique<ExecIptables>(backend);
}

}  // namespace flatnet::proxy::iptables
