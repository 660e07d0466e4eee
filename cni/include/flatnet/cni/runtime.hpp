#pragma once

// The runtime side of CNI, as libcni does it for containerd and CRI-O: load a network
// configuration list (a .conflist, or a single .conf), and add, check or delete an attachment
// by executing each plugin of the list in order (in reverse for DEL), with the network's name
// and cniVersion injected into every plugin's configuration, the previous plugin's result as
// prevResult, and the runtime's values for the capabilities a plugin declares as runtimeConfig.
// The emulator attaches pods through it; tests and benchmarks drive plugins through it.

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "flatnet/cni/environment.hpp"
#include "flatnet/netmodel/netns.hpp"

namespace flatnet::cni {

struct NetworkConfigList {
  std::string cni_version;
  std::string name;
  std::vector<nlohmann::json> plugins;  // each with at least "type"
  bool disable_check = false;
};

// Parses a conflist ({"cniVersion", "name", "plugins": [...]}) or a single plugin config
// ({"cniVersion", "name", "type", ...}). Throws CniError(invalid_network_config) naming
// `origin`, the field and the value.
NetworkConfigList parse_network_config(std::string_view text, const std::string& origin);
NetworkConfigList load_network_config(const std::filesystem::path& path);

struct Attachment {
  std::string container_id;
  std::string netns;  // path of the container's network namespace
  std::string ifname = "eth0";
  std::vector<std::pair<std::string, std::string>> args;  // CNI_ARGS, in order
  // Values for capabilities ("portMappings", "ips", "mac", ...), given to the plugins that
  // declare them under "capabilities".
  nlohmann::json capability_args = nlohmann::json::object();
};

class Runtime {
 public:
  // Plugins are looked up in `plugin_dirs` (CNI_PATH) and run inside `netns` when given (the
  // node), else in the caller's namespace.
  explicit Runtime(std::vector<std::string> plugin_dirs, const netmodel::NetNs* netns = nullptr)
      : plugin_dirs_(std::move(plugin_dirs)), netns_(netns) {}

  // Runs ADD through the list; returns the last plugin's result (in the list's cniVersion).
  // When a plugin fails, the plugins already run are deleted again (in reverse) before the error
  // is rethrown as a CniError naming the plugin.
  nlohmann::json add(const NetworkConfigList& list, const Attachment& attachment) const;
  // CHECK through the list with the cached result of ADD. Skipped when disableCheck is set.
  void check(const NetworkConfigList& list, const Attachment& attachment,
             const nlohmann::json& result) const;
  // DEL through the list in reverse; `result` (the cached ADD result) may be null.
  void del(const NetworkConfigList& list, const Attachment& attachment,
           const nlohmann::json& result = nullptr) const;
  // STATUS of every plugin, and GC with the attachments that are still valid (CNI 1.1.0).
  void status(const NetworkConfigList& list) const;
  void gc(const NetworkConfigList& list, const std::vector<Attachment>& valid) const;

 private:
  nlohmann::json invoke(const nlohmann::json& plugin, Command command, const Attachment* attachment,
                        const nlohmann::json& config) const;
  nlohmann::json plugin_config(const NetworkConfigList& list, const nlohmann::json& plugin,
                               const Attachment& attachment,
                               const nlohmann::json& prev_result) const;

  std::vector<std::string> plugin_dirs_;
  const netmodel::NetNs* netns_;
};

}  // namespace flatnet::cni
