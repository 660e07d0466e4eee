#include "flatnet/cni/netconf.hpp"

#include <limits>

#include "flatnet/cni/environment.hpp"
#include "flatnet/cni/error.hpp"
#include "flatnet/cni/version.hpp"

namespace flatnet::cni {

using nlohmann::json;

namespace {

[[noreturn]] void invalid(const std::string& path, const json& value, const std::string& why) {
  throw CniError(ErrorCode::invalid_network_config,
                 "config field " + path + " = " + value.dump() + ": " + why, path);
}

std::string supported_list() {
  std::string text;
  for (auto v : kSupportedVersions)
    text += (text.empty() ? "" : ", ") + std::string(v);
  return text;
}

}  // namespace

NetConf parse_netconf(std::string_view text) {
  json raw;
  try {
    raw = json::parse(text);
  } catch (const json::parse_error& e) {
    throw CniError(ErrorCode::decoding_failure,
                   std::string("cannot decode the network configuration on stdin: ") + e.what());
  }
  if (!raw.is_object()) {
    throw CniError(ErrorCode::decoding_failure,
                   "the network configuration on stdin is not a JSON object");
  }
  NetConf conf;
  conf.raw = raw;
  if (!raw.contains("cniVersion") || !raw["cniVersion"].is_string()) {
    throw CniError(ErrorCode::incompatible_version,
                   "config field cniVersion is missing; supported versions: " + supported_list());
  }
  conf.cni_version = raw["cniVersion"].get<std::string>();
  if (!is_supported_version(conf.cni_version)) {
    throw CniError(ErrorCode::incompatible_version,
                   "cniVersion \"" + conf.cni_version +
                       "\" is not supported; supported versions: " + supported_list(),
                   conf.cni_version);
  }
  conf.name = get_string(raw, "name", "", "name");
  if (!is_valid_identifier(conf.name)) {
    invalid("name", raw.value("name", json()),
            conf.name.empty() ? "required"
                              : "invalid characters (allowed: ^[A-Za-z0-9][A-Za-z0-9_.-]*$)");
  }
  conf.type = get_string(raw, "type", "", "type");
  if (conf.type.empty()) invalid("type", raw.value("type", json()), "required");
  if (raw.contains("ipam") && !raw["ipam"].is_null()) {
    if (!raw["ipam"].is_object()) invalid("ipam", raw["ipam"], "expected an object");
    conf.ipam_type = get_string(raw["ipam"], "type", "", "ipam.type");
  }
  if (raw.contains("prevResult") && !raw["prevResult"].is_null()) {
    try {
      conf.prev_result = parse_result(raw["prevResult"]);
    } catch (const CniError& e) {
      throw CniError(e.code(), std::string("prevResult: ") + e.what(), e.details());
    }
  }
  return conf;
}

std::optional<std::vector<std::pair<std::string, std::string>>> valid_attachments(const json& raw) {
  const char* key = raw.contains("cni.dev/valid-attachments") ? "cni.dev/valid-attachments"
                    : raw.contains("cni.dev/attachments")     ? "cni.dev/attachments"
                                                              : nullptr;
  if (!key) return std::nullopt;
  const json& list = raw[key];
  if (!list.is_array()) invalid(key, list, "expected a list");
  std::vector<std::pair<std::string, std::string>> out;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const std::string path = std::string(key) + "[" + std::to_string(i) + "]";
    const std::string id = get_string(list[i], "containerID", "", path + ".containerID");
    if (id.empty()) {
      throw CniError(ErrorCode::invalid_network_config,
                     "config field " + path + ".containerID is required", path);
    }
    out.emplace_back(id, get_string(list[i], "ifname", "", path + ".ifname"));
  }
  return out;
}

bool get_bool(const json& object, const char* key, bool fallback, const std::string& path) {
  if (!object.is_object() || !object.contains(key) || object[key].is_null()) return fallback;
  if (!object[key].is_boolean()) invalid(path, object[key], "expected true or false");
  return object[key].get<bool>();
}

std::string get_string(const json& object, const char* key, const std::string& fallback,
                       const std::string& path) {
  if (!object.is_object() || !object.contains(key) || object[key].is_null()) return fallback;
  if (!object[key].is_string()) invalid(path, object[key], "expected a string");
  return object[key].get<std::string>();
}

long long get_int(const json& object, const char* key, long long fallback, const std::string& path,
                  long long min, long long max) {
  if (!object.is_object() || !object.contains(key) || object[key].is_null()) return fallback;
  if (!object[key].is_number_integer()) invalid(path, object[key], "expected an integer");
  // A number past LLONG_MAX is stored unsigned; get<long long>() would wrap it to a negative.
  const bool past_long_long =
      object[key].is_number_unsigned() &&
      object[key].get<unsigned long long>() >
          static_cast<unsigned long long>(std::numeric_limits<long long>::max());
  const long long value = past_long_long ? max : object[key].get<long long>();
  if (past_long_long || value < min || value > max) {
    invalid(path, object[key], "out of range " + std::to_string(min) + ".." + std::to_string(max));
  }
  return value;
}

}  // namespace flatnet::cni
