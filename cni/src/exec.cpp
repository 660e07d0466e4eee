#include "flatnet/cni/exec.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <system_error>

#include "flatnet/cni/error.hpp"

namespace flatnet::cni {

ExecOutput exec_program(const std::filesystem::path& program,
                        const std::map<std::string, std::string>& variables,
                        const std::string& input, const std::vector<std::string>& args,
                        const netmodel::NetNs* netns) {
  try {
    return netmodel::run_program(program, variables, input, args, netns);
  } catch (const std::system_error& e) {
    throw CniError(ErrorCode::plugin_failure, e.what());
  }
}

std::map<std::string, std::string> environment_with(const std::map<std::string, std::string>& cni) {
  std::map<std::string, std::string> vars;
  for (char** e = environ; e && *e; ++e) {
    const std::string_view entry = *e;
    const auto eq = entry.find('=');
    if (eq == std::string_view::npos || entry.rfind("CNI_", 0) == 0) continue;
    vars.emplace(entry.substr(0, eq), entry.substr(eq + 1));
  }
  for (const auto& [k, v] : cni)
    vars[k] = v;
  return vars;
}

std::filesystem::path find_plugin(const std::string& type, const std::vector<std::string>& dirs) {
  if (type.empty() || type.find('/') != std::string::npos || type == "." || type == "..") {
    throw CniError(ErrorCode::invalid_network_config,
                   "plugin type \"" + type + "\" is not a plain file name", type);
  }
  std::string searched;
  for (const auto& dir : dirs) {
    const std::filesystem::path candidate = std::filesystem::path(dir) / type;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    searched += (searched.empty() ? "" : ":") + dir;
  }
  throw CniError(ErrorCode::plugin_failure,
                 "cannot find plugin \"" + type + "\" in CNI_PATH \"" + searched + "\"", type);
}

nlohmann::json invoke_plugin(const std::string& type, const std::vector<std::string>& dirs,
                             const std::map<std::string, std::string>& cni,
                             const std::string& config, const netmodel::NetNs* netns) {
  const ExecOutput output =
      exec_program(find_plugin(type, dirs), environment_with(cni), config, {}, netns);
  const nlohmann::json out =
      output.out.empty() ? nlohmann::json() : nlohmann::json::parse(output.out, nullptr, false);
  const auto command = cni.count("CNI_COMMAND") ? cni.at("CNI_COMMAND") : std::string("?");
  if (output.status != 0) {
    if (out.is_object() && out.contains("code")) {
      const CniError e = CniError::from_json(out);
      throw CniError(e.code(), type + ": " + e.what(), e.details());
    }
    const std::string stderr_text = output.err.substr(0, 500);
    throw CniError(ErrorCode::plugin_failure, type + " " + command + " failed with status " +
                                                  std::to_string(output.status) +
                                                  (stderr_text.empty() ? "" : ": " + stderr_text));
  }
  if (out.is_discarded()) {
    throw CniError(
        ErrorCode::decoding_failure,
        type + " " + command + " printed something that is not JSON: " + output.out.substr(0, 200));
  }
  return out;
}

Result delegate(const std::string& type, Command command, const Environment& env,
                const std::string& config) {
  const nlohmann::json out = invoke_plugin(type, env.path, env.to_variables(command), config);
  return command == Command::add ? parse_result(out) : Result{};
}

}  // namespace flatnet::cni
