#pragma once

// Fail points: named places in a plugin's work where a test can make it fail on purpose, to
// prove that what was done before is undone. FLATNET_CNI_FAILPOINTS="a,b" in the plugin's
// environment makes fail_point("a") throw CniError(plugin_failure, "injected failure at a").
// Unset (as it always is outside tests), a fail point costs one getenv.

#include <string_view>

namespace flatnet::cni {

void fail_point(std::string_view name);

}  // namespace flatnet::cni
