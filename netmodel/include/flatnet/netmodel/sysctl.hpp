#pragma once

// Sysctls of a chosen network namespace. The net.* tree under /proc/sys belongs to the
// namespace of the thread that opens the file, so each call opens it on a thread inside `ns`
// (see run_in). Keys use dots ("net.ipv4.ip_forward"); interface names inside a key may hold
// dots as the kernel's own names do, so pass those with slashes
// ("net/ipv4/conf/eth0.10/rp_filter").

#include <string>
#include <string_view>

#include "flatnet/netmodel/netns.hpp"

namespace flatnet::netmodel {

// The value without its trailing newline. Throws std::system_error naming the key and namespace.
// `how` says which thread enters `ns` (see run_in); a namespace that is the calling thread's
// own is not entered at all.
std::string read_sysctl(const NetNs& ns, std::string_view key, Enter how = Enter::dedicated_thread);
// Only net.* keys may be written: they are the ones a network namespace owns, so a write can
// never reach beyond `ns`. Throws std::invalid_argument for other keys.
void write_sysctl(const NetNs& ns, std::string_view key, std::string_view value,
                  Enter how = Enter::dedicated_thread);

// The /proc/sys path of `key`; throws std::invalid_argument for keys with "..", empty parts or
// characters other than [A-Za-z0-9_.-/].
std::string sysctl_path(std::string_view key);

}  // namespace flatnet::netmodel
