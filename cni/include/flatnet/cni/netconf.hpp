#pragma once

// The network configuration a plugin reads on stdin: the fields every plugin shares, with the
// whole document kept for plugin-specific fields and for delegation.

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "flatnet/cni/types.hpp"

namespace flatnet::cni {

struct NetConf {
  std::string cni_version;
  std::string name;
  std::string type;
  std::string ipam_type;              // ipam.type, empty when there is no ipam section
  std::optional<Result> prev_result;  // parsed prevResult, when present
  nlohmann::json raw;                 // the whole document as received
};

// Parses stdin. Throws CniError: decoding_failure for text that is not a JSON object,
// incompatible_version for a cniVersion flatnet does not speak, invalid_network_config for a
// missing or malformed name or type, decoding_failure for a malformed prevResult.
NetConf parse_netconf(std::string_view text);

// The attachments a GC request says are still valid: cni.dev/valid-attachments, else
// cni.dev/attachments, as (container ID, ifname) pairs. nullopt when neither key is present (GC
// must then release nothing). Throws CniError(invalid_network_config) naming the entry at fault.
std::optional<std::vector<std::pair<std::string, std::string>>> valid_attachments(
    const nlohmann::json& raw);

// Helpers for plugin-specific fields: each throws CniError(invalid_network_config) naming the
// field path and the value when the type is wrong, and returns `fallback` when absent or null.
bool get_bool(const nlohmann::json& object, const char* key, bool fallback,
              const std::string& path);
std::string get_string(const nlohmann::json& object, const char* key, const std::string& fallback,
                       const std::string& path);
long long get_int(const nlohmann::json& object, const char* key, long long fallback,
                  const std::string& path, long long min, long long max);

}  // namespace flatnet::cni
