#include "flatnet/cni/failpoint.hpp"

#include <cstdlib>
#include <string>

#include "flatnet/cni/error.hpp"

namespace flatnet::cni {

void fail_point(std::string_view name) {
  const char* armed = std::getenv("FLATNET_CNI_FAILPOINTS");
  if (armed == nullptr) return;
  const std::string_view list = armed;
  for (std::size_t start = 0; start <= list.size();) {
    const auto comma = list.find(',', start);
    const std::string_view item = list.substr(start, comma - start);
    if (item == name) {
      throw CniError(ErrorCode::plugin_failure,
                     "injected failure at " + std::string(name) + " (FLATNET_CNI_FAILPOINTS)");
    }
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
}

}  // namespace flatnet::cni
