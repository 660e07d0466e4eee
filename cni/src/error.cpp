#include "flatnet/cni/error.hpp"

#include <nlohmann/json.hpp>

namespace flatnet::cni {

nlohmann::json CniError::to_json(const std::string& version) const {
  nlohmann::json j = {{"cniVersion", version}, {"code", numeric_code()}, {"msg", what()}};
  if (!details_.empty()) j["details"] = details_;
  return j;
}

CniError CniError::from_json(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("code") || !j["code"].is_number_integer()) {
    throw CniError(ErrorCode::decoding_failure, "not a CNI error: " + j.dump());
  }
  return CniError(static_cast<ErrorCode>(j["code"].get<int>()), j.value("msg", std::string()),
                  j.value("details", std::string()));
}

}  // namespace flatnet::cni
