#include "flatnet/cni/environment.hpp"

#include <algorithm>

#include "flatnet/cni/error.hpp"
#include "flatnet/netmodel/netlink.hpp"

namespace flatnet::cni {
namespace {

bool is_runtime_key(const std::string& key) {
  return key == "IgnoreUnknown" || key.rfind("K8S_POD_", 0) == 0;
}

std::string join(const std::vector<std::string>& items) {
  std::string text;
  for (const auto& item : items)
    text += (text.empty() ? "" : ", ") + item;
  return text;
}

}  // namespace

std::string_view to_string(Command command) {
  switch (command) {
    case Command::add:
      return "ADD";
    case Command::del:
      return "DEL";
    case Command::check:
      return "CHECK";
    case Command::version:
      return "VERSION";
    case Command::status:
      return "STATUS";
    case Command::gc:
      return "GC";
  }
  return "?";
}

bool CniArgs::ignore_unknown() const {
  const std::string v = get("IgnoreUnknown");
  return v == "1" || v == "true" || v == "True";
}

std::string CniArgs::get(const std::string& key) const {
  const auto it = values.find(key);
  return it == values.end() ? std::string() : it->second;
}

void CniArgs::require_known(const std::vector<std::string>& known) const {
  if (ignore_unknown()) return;
  for (const auto& [key, value] : values) {
    if (is_runtime_key(key) || std::find(known.begin(), known.end(), key) != known.end()) continue;
    throw CniError(ErrorCode::invalid_environment,
                   "CNI_ARGS: unknown key \"" + key + "\" (value \"" + value +
                       "\"); this plugin knows " + (known.empty() ? "none" : join(known)) +
                       ", or set IgnoreUnknown=1",
                   key + "=" + value);
  }
}

CniArgs parse_cni_args(std::string_view text) {
  CniArgs args;
  while (!text.empty()) {
    const auto semi = text.find(';');
    const std::string_view pair = text.substr(0, semi);
    text = semi == std::string_view::npos ? std::string_view{} : text.substr(semi + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      throw CniError(ErrorCode::invalid_environment,
                     "CNI_ARGS: \"" + std::string(pair) + "\" is not a KEY=VALUE pair",
                     std::string(pair));
    }
    args.values[std::string(pair.substr(0, eq))] = std::string(pair.substr(eq + 1));
  }
  return args;
}

bool is_valid_identifier(std::string_view text) {
  if (text.empty()) return false;
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(text[0])) return false;
  return std::all_of(text.begin() + 1, text.end(),
                     [&](char c) { return alnum(c) || c == '_' || c == '.' || c == '-'; });
}

std::map<std::string, std::string> Environment::to_variables(Command cmd) const {
  std::map<std::string, std::string> v;
  v["CNI_COMMAND"] = std::string(to_string(cmd));
  if (!container_id.empty()) v["CNI_CONTAINERID"] = container_id;
  if (!netns.empty()) v["CNI_NETNS"] = netns;
  if (!ifname.empty()) v["CNI_IFNAME"] = ifname;
  if (!args_text.empty()) v["CNI_ARGS"] = args_text;
  std::string joined;
  for (const auto& dir : path)
    joined += (joined.empty() ? "" : ":") + dir;
  v["CNI_PATH"] = joined;
  return v;
}

Environment parse_environment(const Getenv& getenv) {
  auto read = [&](const char* name) {
    const char* value = getenv(name);
    return value ? std::string(value) : std::string();
  };
  Environment env;
  const std::string command = read("CNI_COMMAND");
  static const std::pair<const char*, Command> kCommands[] = {
      {"ADD", Command::add},         {"DEL", Command::del},       {"CHECK", Command::check},
      {"VERSION", Command::version}, {"STATUS", Command::status}, {"GC", Command::gc}};
  bool known = false;
  for (const auto& [name, cmd] : kCommands) {
    if (command == name) {
      env.command = cmd;
      known = true;
    }
  }
  if (command.empty()) {
    throw CniError(ErrorCode::invalid_environment,
                   "required environment variable CNI_COMMAND is missing", "CNI_COMMAND");
  }
  if (!known) {
    throw CniError(
        ErrorCode::invalid_environment,
        "CNI_COMMAND \"" + command + "\" is not one of ADD, DEL, CHECK, VERSION, STATUS, GC",
        "CNI_COMMAND");
  }
  env.container_id = read("CNI_CONTAINERID");
  env.netns = read("CNI_NETNS");
  env.ifname = read("CNI_IFNAME");
  env.args_text = read("CNI_ARGS");
  const std::string path = read("CNI_PATH");
  for (std::size_t start = 0; start <= path.size();) {
    const auto colon = path.find(':', start);
    const std::string dir =
        path.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (!dir.empty()) env.path.push_back(dir);
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  if (env.command == Command::version) return env;

  // What the spec requires per command (CNI_NETNS is optional for DEL).
  std::vector<std::string> missing;
  const bool per_attachment =
      env.command == Command::add || env.command == Command::del || env.command == Command::check;
  if (per_attachment) {
    if (env.container_id.empty()) missing.push_back("CNI_CONTAINERID");
    if (env.netns.empty() && env.command != Command::del) missing.push_back("CNI_NETNS");
    if (env.ifname.empty()) missing.push_back("CNI_IFNAME");
  }
  if (path.empty()) missing.push_back("CNI_PATH");
  if (!missing.empty()) {
    throw CniError(ErrorCode::invalid_environment,
                   "required environment variable" + std::string(missing.size() > 1 ? "s " : " ") +
                       join(missing) + (missing.size() > 1 ? " are" : " is") + " missing",
                   join(missing));
  }
  if (per_attachment) {
    if (!is_valid_identifier(env.container_id)) {
      throw CniError(ErrorCode::invalid_environment,
                     "CNI_CONTAINERID \"" + env.container_id +
                         "\" has invalid characters (allowed: ^[A-Za-z0-9][A-Za-z0-9_.-]*$)",
                     env.container_id);
    }
    if (auto problem = netmodel::interface_name_problem(env.ifname); !problem.empty()) {
      throw CniError(ErrorCode::invalid_environment, "CNI_IFNAME: " + problem, env.ifname);
    }
  }
  env.args = parse_cni_args(env.args_text);
  return env;
}

}  // namespace flatnet::cni
