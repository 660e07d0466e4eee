// Namespace handles, persistent names, run_in and sysctls against the real kernel.

#include "flatnet/netmodel/netns.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "flatnet/netmodel/error.hpp"
#include "flatnet/netmodel/netlink.hpp"
#include "flatnet/netmodel/sysctl.hpp"
#include "flatnet/testing/scratch_netns.hpp"

namespace flatnet::netmodel {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using testing::NetnsTest;
using ::testing::Not;
using testing::ScratchNamespaces;

class Netns : public NetnsTest {};

TEST_F(Netns, CreateMakesANamedNamespaceThatIpNetnsCanUse) {
  NetNs& ns = scratch_.add("named");
  const std::string name = scratch_.names().back();
  EXPECT_EQ(ns.name(), name);
  EXPECT_THAT(NetNs::list_named(), Contains(name));
  EXPECT_FALSE(ns.is_current());
  EXPECT_TRUE(NetNs::current().is_current());

  // iproute2 sees it and can run a command inside it; its loopback is up.
  const std::string out = ::testing::TempDir() + "/ipnetns-" + std::to_string(::getpid());
  const std::string command = "ip netns exec " + name + " ip -o link show lo > " + out;
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  std::ifstream file(out);
  const std::string line((std::istreambuf_iterator<char>(file)), {});
  std::remove(out.c_str());
  EXPECT_THAT(line, HasSubstr("lo:"));
  EXPECT_THAT(line, HasSubstr("UP"));

  // Opening the name again gives the same namespace.
  EXPECT_TRUE(NetNs::open_named(name).same_as(ns));
  EXPECT_TRUE(ns.dup().same_as(ns));
}

TEST_F(Netns, CreateRefusesATakenNameAndRemoveIsIdempotent) {
  scratch_.add("taken");
  const std::string name = scratch_.names().back();
  try {
    NetNs::create(name);
    FAIL() << "created " << name << " twice";
  } catch (const std::system_error& e) {
    EXPECT_TRUE(is_errno(e, EEXIST)) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("create netns \"/run/netns/" + name + "\""));
    EXPECT_THAT(e.what(), HasSubstr("File exists"));
  }
  EXPECT_TRUE(NetNs::open_named(name).fd() >= 0) << "the first one is untouched";
  EXPECT_TRUE(NetNs::remove(name));
  EXPECT_FALSE(NetNs::remove(name)) << "removing what is gone is not an error";
  EXPECT_THAT(NetNs::list_named(), Not(Contains(name)));
}

TEST_F(Netns, OpenNamesThePathAndTheErrno) {
  try {
    NetNs::open_named("flatnet-test-does-not-exist");
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_TRUE(is_errno(e, ENOENT));
    EXPECT_THAT(e.what(), HasSubstr("open netns \"/run/netns/flatnet-test-does-not-exist\""));
    EXPECT_THAT(e.what(), HasSubstr("No such file or directory"));
  }
  // A regular file is not a namespace (what a crash between create's steps would leave).
  const std::string path = ::testing::TempDir() + "/not-a-netns-" + std::to_string(::getpid());
  std::ofstream(path) << "x";
  EXPECT_THROW(
      {
        try {
          NetNs::open(path);
        } catch (const std::system_error& e) {
          EXPECT_THAT(e.what(), HasSubstr("not a network namespace"));
          throw;
        }
      },
      std::system_error);
  std::remove(path.c_str());
}

TEST_F(Netns, RemoveClearsAPlaceholderLeftByACrash) {
  const std::string name = scratch_.reserve_name("placeholder");
  // An empty file with no namespace mounted on it.
  std::filesystem::create_directories(std::string(NetNs::kRunDir));
  std::ofstream(NetNs::path_of(name).string());
  ASSERT_TRUE(std::filesystem::exists(NetNs::path_of(name)));
  EXPECT_THROW(NetNs::open_named(name), std::system_error);
  EXPECT_TRUE(NetNs::remove(name));
  EXPECT_THAT(NetNs::list_named(), Not(Contains(name)));
}

TEST_F(Netns, RunInRunsOnAnotherThreadAndLeavesTheCallerWhereItWas) {
  NetNs& ns = scratch_.add("runin");
  const NetNs before = NetNs::current();
  const auto caller = std::this_thread::get_id();
  const auto [inside, thread] = run_in(
      ns, [&] { return std::make_pair(NetNs::current().same_as(ns), std::this_thread::get_id()); });
  EXPECT_TRUE(inside);
  EXPECT_NE(thread, caller);
  EXPECT_TRUE(NetNs::current().same_as(before)) << "the caller never moved";
  EXPECT_FALSE(NetNs::current().same_as(ns));
}

TEST_F(Netns, RunInReturnsErrorsOfTheFunction) {
  NetNs& ns = scratch_.add("errors");
  EXPECT_THROW(run_in(ns, []() -> int { throw std::runtime_error("boom"); }), std::runtime_error);
  int calls = 0;
  run_in(ns, [&] { ++calls; });
  EXPECT_EQ(calls, 1);
  // An error from inside names the namespace it happened in.
  try {
    write_sysctl(ns, "net.ipv4.no_such_key", "1");
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("net.ipv4.no_such_key"));
    EXPECT_THAT(e.what(), HasSubstr(ns.path().string()));
  }
}

TEST_F(Netns, IsCurrentNetnsComparesWithTheCallingThread) {
  NetNs& ns = scratch_.add("current");
  EXPECT_TRUE(is_current_netns("/proc/self/ns/net"));
  EXPECT_FALSE(is_current_netns(ns.path()));
  EXPECT_TRUE(run_in(ns, [&] { return is_current_netns(ns.path()); }));
  EXPECT_THROW(is_current_netns("/run/netns/flatnet-test-missing"), std::system_error);
}

TEST_F(Netns, SysctlsBelongToTheirNamespace) {
  NetNs& a = scratch_.add("sysa");
  NetNs& b = scratch_.add("sysb");
  const NetNs host = NetNs::current();
  const std::string host_forward = read_sysctl(host, "net.ipv4.ip_forward");

  write_sysctl(a, "net.ipv4.ip_forward", "1");
  write_sysctl(b, "net.ipv4.ip_forward", "0");
  EXPECT_EQ(read_sysctl(a, "net.ipv4.ip_forward"), "1");
  EXPECT_EQ(read_sysctl(b, "net.ipv4.ip_forward"), "0");
  write_sysctl(a, "net/ipv4/conf/lo/rp_filter", "2");
  EXPECT_EQ(read_sysctl(a, "net.ipv4.conf.lo.rp_filter"), "2");
  EXPECT_EQ(read_sysctl(host, "net.ipv4.ip_forward"), host_forward) << "the host is untouched";

  EXPECT_THROW(write_sysctl(a, "kernel.hostname", "x"), std::invalid_argument);
  EXPECT_THROW(write_sysctl(a, "vm.swappiness", "1"), std::invalid_argument);
}

// The contract in netns.hpp: removing the name leaves a namespace alive while a handle is open;
// closing the last handle destroys it, and a veth peer elsewhere goes with it.
TEST_F(Netns, ANamespaceRemovedWhileAHandleIsOpenLivesUntilTheHandleCloses) {
  NetNs& other = scratch_.add("peerside");
  const std::string name = scratch_.reserve_name("doomed");
  std::optional<NetNs> doomed = NetNs::create(name);
  Netlink other_nl = Netlink::open(other);
  other_nl.add_veth({.name = "fnt-peer", .peer_name = "fnt-doomed", .peer_ns = &*doomed});

  ASSERT_TRUE(NetNs::remove(name));
  EXPECT_THROW(NetNs::open_named(name), std::system_error) << "the name is gone";
  // ... but the namespace is not: the handle enters it and its link is still there.
  EXPECT_TRUE(run_in(*doomed, [] { return Netlink::open().find_link("fnt-doomed").has_value(); }));
  EXPECT_TRUE(other_nl.find_link("fnt-peer").has_value());

  doomed.reset();  // the last reference
  // The kernel tears the namespace down asynchronously (cleanup_net); wait a bounded time.
  bool peer_gone = false;
  // Generous: teardown is slower while other tests destroy namespaces in parallel.
  for (int i = 0; i < 600 && !peer_gone; ++i) {
    peer_gone = !other_nl.find_link("fnt-peer").has_value();
    if (!peer_gone) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(peer_gone) << "the veth peer should disappear with its namespace";
}

TEST_F(Netns, ScratchNamespacesAreRemovedWhenATestThrows) {
  std::vector<std::string> names;
  try {
    ScratchNamespaces local;
    local.add("one");
    local.add("two");
    names = local.names();
    throw std::runtime_error("a failing test");
  } catch (const std::runtime_error&) {
  }
  ASSERT_EQ(names.size(), 2u);
  for (const auto& n : names)
    EXPECT_THAT(NetNs::list_named(), Not(Contains(n)));
}

}  // namespace
}  // namespace flatnet::netmodel
