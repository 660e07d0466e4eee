#include "flatnet/testing/scratch_netns.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <iostream>

#include "flatnet/netmodel/sysctl.hpp"

namespace flatnet::testing {
namespace {

std::atomic<unsigned> next_id{0};

// The PID in "flatnet-test-<pid>-...", or 0 when the name does not have that shape.
pid_t owner_pid(std::string_view name) {
  if (name.substr(0, ScratchNamespaces::kPrefix.size()) != ScratchNamespaces::kPrefix) return 0;
  name.remove_prefix(ScratchNamespaces::kPrefix.size());
  pid_t pid = 0;
  const auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), pid);
  return ec == std::errc{} && end != name.data() && *end == '-' ? pid : 0;
}

}  // namespace

std::string ScratchNamespaces::reserve_name(std::string_view role) {
  names_.push_back(std::string(kPrefix) + std::to_string(::getpid()) + "-" +
                   std::to_string(next_id++) + "-" + std::string(role));
  return names_.back();
}

netmodel::NetNs& ScratchNamespaces::add(std::string_view role) {
  // The name is recorded first: if create() fails it cleans up after itself, and remove() of a
  // name that is not there is a no-op.
  handles_.push_back(netmodel::NetNs::create(reserve_name(role)));
  // Link-local IPv6 addresses would stay tentative for a second (duplicate address detection),
  // delaying the first neighbour discovery; tests want links usable at once.
  netmodel::write_sysctl(handles_.back(), "net.ipv6.conf.all.accept_dad", "0");
  netmodel::write_sysctl(handles_.back(), "net.ipv6.conf.default.accept_dad", "0");
  return handles_.back();
}

void ScratchNamespaces::destroy(netmodel::NetNs& ns) {
  const std::string name = ns.name();
  { netmodel::NetNs closed = std::move(ns); }
  netmodel::NetNs::remove(name);
}

void ScratchNamespaces::remove_all() noexcept {
  handles_.clear();
  for (const auto& name : names_) {
    try {
      netmodel::NetNs::remove(name);
    } catch (const std::exception& e) {
      std::cerr << "warning: could not remove test namespace " << name << ": " << e.what() << "\n";
    }
  }
  names_.clear();
}

std::vector<std::string> ScratchNamespaces::reap_stale() {
  std::vector<std::string> reaped;
  for (const auto& name : netmodel::NetNs::list_named()) {
    const pid_t pid = owner_pid(name);
    if (pid == 0 || pid == ::getpid()) continue;
    if (::kill(pid, 0) == 0 || errno == EPERM) continue;  // its test process still runs
    if (netmodel::NetNs::remove(name)) reaped.push_back(name);
  }
  return reaped;
}

void NetnsTest::SetUp() {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces)";
}

}  // namespace flatnet::testing
