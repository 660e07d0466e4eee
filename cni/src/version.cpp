#include "flatnet/cni/version.hpp"

#include <algorithm>
#include <charconv>

namespace flatnet::cni {

bool is_supported_version(std::string_view version) {
  return std::find(kSupportedVersions.begin(), kSupportedVersions.end(), version) !=
         kSupportedVersions.end();
}

int compare_versions(std::string_view a, std::string_view b) {
  auto next = [](std::string_view& s) {
    const auto dot = s.find('.');
    const std::string_view part = s.substr(0, dot);
    s = dot == std::string_view::npos ? std::string_view{} : s.substr(dot + 1);
    int value = 0;
    std::from_chars(part.data(), part.data() + part.size(), value);
    return value;
  };
  for (int i = 0; i < 3; ++i) {
    const int x = next(a), y = next(b);
    if (x != y) return x < y ? -1 : 1;
  }
  return 0;
}

}  // namespace flatnet::cni
