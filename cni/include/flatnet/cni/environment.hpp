#pragma once

// The CNI_* environment a runtime sets when it executes a plugin.

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace flatnet::cni {

enum class Command { add, del, check, version, status, gc };

std::string_view to_string(Command command);

// CNI_ARGS: "K=V;K2=V2". Keys a plugin does not know are an error unless IgnoreUnknown=1
// (checked by require_known()).
struct CniArgs {
  std::map<std::string, std::string> values;

  bool ignore_unknown() const;
  std::string get(const std::string& key) const;  // empty when absent
  // Throws CniError(invalid_environment) naming the first key that is neither in `known` nor
  // one of the keys every runtime may send (IgnoreUnknown, K8S_POD_*), unless IgnoreUnknown=1.
  void require_known(const std::vector<std::string>& known) const;
};

// Throws CniError(invalid_environment) for a malformed pair, naming it.
CniArgs parse_cni_args(std::string_view text);

struct Environment {
  Command command = Command::version;
  std::string container_id;
  std::string netns;  // may be empty for DEL
  std::string ifname;
  CniArgs args;
  std::string args_text;
  std::vector<std::string> path;  // CNI_PATH split on ':'

  // The variables to pass on to a delegated plugin (CNI_COMMAND set to `command`).
  std::map<std::string, std::string> to_variables(Command command) const;
};

using Getenv = std::function<const char*(const char*)>;

// Reads and validates the environment for the command in CNI_COMMAND. Every required variable
// that is missing is named in one CniError(invalid_environment); a container ID or interface
// name with characters the spec forbids is refused too.
Environment parse_environment(const Getenv& getenv);

// ^[A-Za-z0-9][A-Za-z0-9_.-]*$ (container IDs and network names).
bool is_valid_identifier(std::string_view text);

}  // namespace flatnet::cni
