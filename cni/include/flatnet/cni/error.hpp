#pragma once

// CNI errors as the spec defines them: a numeric code, a message and details, printed as JSON on
// stdout with a non-zero exit status. Codes 1-99 are the spec's; flatnet's own start at 100.

#include <nlohmann/json_fwd.hpp>
#include <stdexcept>
#include <string>

namespace flatnet::cni {

enum class ErrorCode : int {
  incompatible_version = 1,
  unsupported_field = 2,
  unknown_container = 3,
  invalid_environment = 4,
  io_failure = 5,
  decoding_failure = 6,
  invalid_network_config = 7,
  try_again_later = 11,
  plugin_not_available = 50,
  limited_connectivity = 51,
  // flatnet's own: a failure the spec has no code for (kernel errors, a delegated plugin that
  // could not run, an exhausted address pool). The message says what to do.
  plugin_failure = 100,
  address_pool_exhausted = 101,
  address_taken = 102,
};

class CniError : public std::runtime_error {
 public:
  CniError(ErrorCode code, std::string message, std::string details = {})
      : std::runtime_error(message), code_(code), details_(std::move(details)) {}

  ErrorCode code() const { return code_; }
  int numeric_code() const { return static_cast<int>(code_); }
  const std::string& details() const { return details_; }

  // {"cniVersion": version, "code": n, "msg": ..., "details": ... (only when set)}.
  nlohmann::json to_json(const std::string& version) const;
  // The error a plugin printed; throws CniError(decoding_failure) when it is not one.
  static CniError from_json(const nlohmann::json& j);

 private:
  ErrorCode code_;
  std::string details_;
};

}  // namespace flatnet::cni
