#include "flatnet/cni/runtime.hpp"

#include <fstream>
#include <sstream>

#include "flatnet/cni/error.hpp"
#include "flatnet/cni/exec.hpp"
#include "flatnet/cni/version.hpp"

namespace flatnet::cni {
namespace {

using nlohmann::json;

[[noreturn]] void invalid(const std::string& origin, const std::string& field, const json& value,
                          const std::string& why) {
  throw CniError(ErrorCode::invalid_network_config,
                 origin + ": field " + field + " = " + value.dump() + ": " + why, field);
}

std::string join(const std::vector<std::string>& parts, char separator) {
  std::string text;
  for (const auto& p : parts)
    text += (text.empty() ? "" : std::string(1, separator)) + p;
  return text;
}

}  // namespace

NetworkConfigList parse_network_config(std::string_view text, const std::string& origin) {
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    throw CniError(ErrorCode::decoding_failure, origin + ": not a JSON object");
  }
  NetworkConfigList list;
  auto string_field = [&](const char* key) {
    if (!j.contains(key) || !j[key].is_string() || j[key].get<std::string>().empty()) {
      invalid(origin, key, j.value(key, json()), "required string");
    }
    return j[key].get<std::string>();
  };
  list.cni_version = string_field("cniVersion");
  if (!is_supported_version(list.cni_version)) {
    invalid(origin, "cniVersion", j["cniVersion"], "not a version flatnet speaks");
  }
  list.name = string_field("name");
  if (!is_valid_identifier(list.name)) {
    invalid(origin, "name", j["name"],
            "invalid characters (allowed: ^[A-Za-z0-9][A-Za-z0-9_.-]*$)");
  }
  list.disable_check = j.value("disableCheck", false);
  if (j.contains("plugins")) {
    if (!j["plugins"].is_array() || j["plugins"].empty()) {
      invalid(origin, "plugins", j["plugins"], "expected a non-empty list");
    }
    for (std::size_t i = 0; i < j["plugins"].size(); ++i) {
      const json& p = j["plugins"][i];
      if (!p.is_object() || !p.contains("type") || !p["type"].is_string()) {
        invalid(origin, "plugins[" + std::to_string(i) + "].type", p.value("type", json()),
                "required string");
      }
      list.plugins.push_back(p);
    }
  } else {
    string_field("type");
    list.plugins.push_back(j);
  }
  return list;
}

NetworkConfigList load_network_config(const std::filesystem::path& path) {
  std::ifstream file(path);
  if (!file) {
    throw CniError(ErrorCode::io_failure, "cannot read network configuration " + path.string());
  }
  std::stringstream text;
  text << file.rdbuf();
  return parse_network_config(text.str(), path.string());
}

json Runtime::plugin_config(const NetworkConfigList& list, const json& plugin,
                            const Attachment& attachment, const json& prev_result) const {
  json config = plugin;
  config["cniVersion"] = list.cni_version;
  config["name"] = list.name;
  if (!prev_result.is_null()) config["prevResult"] = prev_result;
  // runtimeConfig carries the runtime's value of each capability the plugin declares.
  if (plugin.contains("capabilities") && plugin["capabilities"].is_object()) {
    json runtime_config = json::object();
    for (const auto& [capability, enabled] : plugin["capabilities"].items()) {
      if (enabled == true && attachment.capability_args.contains(capability)) {
        runtime_config[capability] = attachment.capability_args[capability];
      }
    }
    if (!runtime_config.empty()) config["runtimeConfig"] = runtime_config;
  }
  return config;
}

json Runtime::invoke(const json& plugin, Command command, const Attachment* attachment,
                     const json& config) const {
  const std::string type = plugin["type"].get<std::string>();
  std::map<std::string, std::string> vars = {{"CNI_COMMAND", std::string(to_string(command))},
                                             {"CNI_PATH", join(plugin_dirs_, ':')}};
  if (attachment) {
    vars["CNI_CONTAINERID"] = attachment->container_id;
    if (!attachment->netns.empty()) vars["CNI_NETNS"] = attachment->netns;
    vars["CNI_IFNAME"] = attachment->ifname;
    std::vector<std::string> pairs;
    for (const auto& [k, v] : attachment->args)
      pairs.push_back(k + "=" + v);
    if (!pairs.empty()) vars["CNI_ARGS"] = join(pairs, ';');
  }
  return invoke_plugin(type, plugin_dirs_, vars, config.dump(), netns_);
}

json Runtime::add(const NetworkConfigList& list, const Attachment& attachment) const {
  json result;
  std::size_t done = 0;
  try {
    for (; done < list.plugins.size(); ++done) {
      const json& plugin = list.plugins[done];
      result = invoke(plugin, Command::add, &attachment,
                      plugin_config(list, plugin, attachment, result));
    }
  } catch (...) {
    // Undo the plugins that succeeded, as libcni leaves it to the runtime to do.
    for (std::size_t i = done; i-- > 0;) {
      try {
        invoke(list.plugins[i], Command::del, &attachment,
               plugin_config(list, list.plugins[i], attachment, json()));
      } catch (...) {
      }
    }
    throw;
  }
  return result;
}

void Runtime::check(const NetworkConfigList& list, const Attachment& attachment,
                    const json& result) const {
  if (list.disable_check) return;
  for (const auto& plugin : list.plugins) {
    invoke(plugin, Command::check, &attachment, plugin_config(list, plugin, attachment, result));
  }
}

void Runtime::del(const NetworkConfigList& list, const Attachment& attachment,
                  const json& result) const {
  for (auto it = list.plugins.rbegin(); it != list.plugins.rend(); ++it) {
    invoke(*it, Command::del, &attachment, plugin_config(list, *it, attachment, result));
  }
}

void Runtime::status(const NetworkConfigList& list) const {
  for (const auto& plugin : list.plugins) {
    invoke(plugin, Command::status, nullptr, plugin_config(list, plugin, Attachment{}, json()));
  }
}

void Runtime::gc(const NetworkConfigList& list, const std::vector<Attachment>& valid) const {
  json attachments = json::array();
  for (const auto& a : valid) {
    attachments.push_back({{"containerID", a.container_id}, {"ifname", a.ifname}});
  }
  for (const auto& plugin : list.plugins) {
    json config = plugin_config(list, plugin, Attachment{}, json());
    config["cni.dev/valid-attachments"] = attachments;
    invoke(plugin, Command::gc, nullptr, config);
  }
}

}  // namespace flatnet::cni
