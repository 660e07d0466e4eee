#pragma once

// The CNI spec versions flatnet speaks, and the commands each one allows.

#include <array>
#include <string_view>

namespace flatnet::cni {

inline constexpr std::array<std::string_view, 5> kSupportedVersions = {"0.3.0", "0.3.1", "0.4.0",
                                                                       "1.0.0", "1.1.0"};
inline constexpr std::string_view kLatestVersion = "1.1.0";

bool is_supported_version(std::string_view version);
// Orders dotted versions numerically ("0.10.0" > "0.4.0"); malformed parts count as 0.
int compare_versions(std::string_view a, std::string_view b);

}  // namespace flatnet::cni
