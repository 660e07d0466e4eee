#pragma once

// Namespaces for root tests: each test makes uniquely named `flatnet-test-<pid>-<n>-<role>`
// namespaces through a ScratchNamespaces, which removes them when it goes out of scope (the test
// passed, failed an assertion or threw). Namespaces left by a test process that was killed are
// found and removed by reap_stale(), which the last netns test (netns.leftovers) runs and
// reports as a failure.

#include <gtest/gtest.h>

#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "flatnet/netmodel/netns.hpp"

namespace flatnet::testing {

class ScratchNamespaces {
 public:
  static constexpr std::string_view kPrefix = "flatnet-test-";

  ScratchNamespaces() = default;
  ScratchNamespaces(const ScratchNamespaces&) = delete;
  ScratchNamespaces& operator=(const ScratchNamespaces&) = delete;
  ~ScratchNamespaces() { remove_all(); }

  // A new namespace with its loopback up. The reference stays valid until remove_all().
  netmodel::NetNs& add(std::string_view role);
  // A fresh unique name, removed (if it then exists) with the others; for tests that create or
  // fake the namespace themselves.
  std::string reserve_name(std::string_view role);
  const std::vector<std::string>& names() const { return names_; }
  // Destroys one namespace made by add(): closes this object's handle (moving out of `ns`) and
  // removes its name, so the kernel tears it down once nothing else holds it.
  void destroy(netmodel::NetNs& ns);
  // Closes every handle and removes every name this object created; never throws.
  void remove_all() noexcept;

  // Removes flatnet-test-<pid>-* namespaces whose process no longer runs; returns their names.
  static std::vector<std::string> reap_stale();

 private:
  std::vector<std::string> names_;
  std::deque<netmodel::NetNs> handles_;  // deque: references stay valid as it grows
};

// A fixture for tests that need root and namespaces of their own.
class NetnsTest : public ::testing::Test {
 protected:
  void SetUp() override;
  ScratchNamespaces scratch_;
};

}  // namespace flatnet::testing
