#pragma once

// Pod workloads: flatnet-netexec started inside a pod's namespace, as a container runtime
// starts a container's process there, and stopped again by pid and start time.

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "flatnet/emulator/state.hpp"
#include "flatnet/netmodel/netns.hpp"

namespace flatnet::emulator {

// The command line of a pod's workload: its name and every port it serves.
std::vector<std::string> workload_command(const std::string& netexec, const PodRecord& pod);

// Starts the workload inside `ns` in a session of its own, stdin from /dev/null and its output
// appended to `log`, and waits until it reports every port bound (netexec's --ready-fd). Throws
// with the log's last lines when it exits or stays silent for `timeout`.
ProcessRef start_workload(const netmodel::NetNs& ns, const PodRecord& pod,
                          const std::string& netexec, const std::filesystem::path& log,
                          std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

// Every process (but this one) whose network namespace is one of the named ones, matched by the
// namespace's device and inode as /proc/PID/ns/net shows them. Names that are not mounted
// namespaces match nothing.
std::vector<ProcessRef> processes_in(const std::vector<std::string>& netns_names);

// SIGTERM, then SIGKILL after `grace`; does nothing when the process is gone (or the pid now
// belongs to another process). Reaps it when it is a child of ours.
void terminate_workload(const ProcessRef& process,
                        std::chrono::milliseconds grace = std::chrono::milliseconds(1000));
// The same for many processes at once; returns how many were running.
std::size_t terminate_all(const std::vector<ProcessRef>& processes,
                          std::chrono::milliseconds grace = std::chrono::milliseconds(1000));

}  // namespace flatnet::emulator
