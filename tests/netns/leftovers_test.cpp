// Runs after every other netns test (a ctest FIXTURES_CLEANUP): the suite must leave no
// flatnet-test namespace behind, and nothing it made may have reached the host's namespace.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "flatnet/netmodel/netlink.hpp"
#include "flatnet/netmodel/netns.hpp"
#include "flatnet/testing/scratch_netns.hpp"

namespace flatnet::netmodel {
namespace {

TEST(Leftovers, NoTestNamespaceRemains) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  // A test process that was killed could not clean up: its namespaces are removed here, and
  // reported, since the test that made them should have survived.
  const auto reaped = testing::ScratchNamespaces::reap_stale();
  EXPECT_THAT(reaped, ::testing::IsEmpty()) << "namespaces of dead test processes were left";
  for (const auto& name : NetNs::list_named()) {
    EXPECT_NE(name.rfind(testing::ScratchNamespaces::kPrefix, 0), 0u) << "left behind: " << name;
  }
}

TEST(Leftovers, NoTestLinkInTheHostNamespace) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  // Tests name their links fnt-* (or eth0/to-* inside their own namespaces).
  for (const auto& link : Netlink::open().links()) {
    EXPECT_NE(link.name.rfind("fnt-", 0), 0u) << "test link in the host namespace: " << link.name;
    EXPECT_NE(link.name.rfind("to-", 0), 0u) << "test link in the host namespace: " << link.name;
  }
}

}  // namespace
}  // namespace flatnet::netmodel
