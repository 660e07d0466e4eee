#pragma once

// Executing another plugin as a runtime would: find it in CNI_PATH, pass the CNI_* variables
// and the configuration on stdin, read its result or error from stdout.

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "flatnet/cni/environment.hpp"
#include "flatnet/cni/types.hpp"
#include "flatnet/netmodel/netns.hpp"
#include "flatnet/netmodel/process.hpp"

namespace flatnet::cni {

using ExecOutput = netmodel::ProcessOutput;

// netmodel::run_program, for a runtime running a plugin (in a node's namespace when `netns` is
// given): throws CniError(plugin_failure) when it cannot be started.
ExecOutput exec_program(const std::filesystem::path& program,
                        const std::map<std::string, std::string>& variables,
                        const std::string& input, const std::vector<std::string>& args = {},
                        const netmodel::NetNs* netns = nullptr);

// This process's environment with its CNI_* variables replaced by `cni`: what a plugin executed on
// behalf of a runtime sees (libcni passes the runtime's environment on the same way).
std::map<std::string, std::string> environment_with(const std::map<std::string, std::string>& cni);

// The first executable file named `type` in `dirs`; throws CniError(plugin_failure) naming the
// plugin and the directories searched.
std::filesystem::path find_plugin(const std::string& type, const std::vector<std::string>& dirs);

// Runs the plugin `type` (found in `dirs`) as a runtime does: `cni` are its CNI_* variables
// (the rest of our environment goes along), `config` its stdin, `netns` where it runs. Returns
// what it printed as JSON (null when it printed nothing); a plugin that fails has its error
// rethrown as a CniError with the same code and message, prefixed with the plugin's name.
nlohmann::json invoke_plugin(const std::string& type, const std::vector<std::string>& dirs,
                             const std::map<std::string, std::string>& cni,
                             const std::string& config, const netmodel::NetNs* netns = nullptr);

// Runs the plugin `type` for `command` with `env` and `config`; returns its parsed result
// (ADD; an empty Result for the others). A plugin that fails has its error rethrown as a
// CniError with the same code and message, prefixed with the plugin's name.
Result delegate(const std::string& type, Command command, const Environment& env,
                const std::string& config);

}  // namespace flatnet::cni
