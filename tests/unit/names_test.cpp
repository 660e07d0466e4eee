// Validation of the names that reach the kernel: interface names, namespace names, sysctl keys.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "flatnet/netmodel/netlink.hpp"
#include "flatnet/netmodel/netns.hpp"
#include "flatnet/netmodel/sysctl.hpp"

namespace flatnet::netmodel {
namespace {

using ::testing::HasSubstr;

struct NameCase {
  std::string name;
  std::string problem;  // empty when valid, else a fragment of the message
  friend void PrintTo(const NameCase& c, std::ostream* out) {
    *out << "\"" << c.name.substr(0, 40) << "\"";
  }
};

class InterfaceName : public ::testing::TestWithParam<NameCase> {};

TEST_P(InterfaceName, FollowsTheKernelRules) {
  const auto& c = GetParam();
  const std::string problem = interface_name_problem(c.name);
  if (c.problem.empty()) {
    EXPECT_EQ(problem, "");
    EXPECT_NO_THROW(validate_interface_name(c.name));
  } else {
    EXPECT_THAT(problem, HasSubstr(c.problem));
    if (!c.name.empty()) {
      EXPECT_THAT(problem, HasSubstr("\"" + c.name + "\""));
    }
    EXPECT_THROW(validate_interface_name(c.name), std::invalid_argument);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, InterfaceName,
    ::testing::Values(NameCase{"eth0", ""}, NameCase{"veth1a2b3c4d", ""},
                      NameCase{"123456789012345", ""}, NameCase{"flat0.10", ""},
                      NameCase{"", "empty"}, NameCase{"1234567890123456", "16 bytes long"},
                      NameCase{"eth/0", "\"/\""}, NameCase{"eth:0", "\":\""},
                      NameCase{"eth 0", "whitespace"}, NameCase{"eth\t0", "whitespace"},
                      NameCase{".", "not allowed"}, NameCase{"..", "not allowed"}));

class NetnsName : public ::testing::TestWithParam<NameCase> {};

TEST_P(NetnsName, AllowsOnlySafeFileNames) {
  const auto& c = GetParam();
  if (c.problem.empty()) {
    EXPECT_NO_THROW(NetNs::validate_name(c.name));
    EXPECT_EQ(NetNs::path_of(c.name), "/run/netns/" + c.name);
  } else {
    try {
      NetNs::validate_name(c.name);
      FAIL() << "accepted " << c.name;
    } catch (const std::invalid_argument& e) {
      EXPECT_THAT(e.what(), HasSubstr(c.problem));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, NetnsName,
    ::testing::Values(NameCase{"flatnet-demo-node-1", ""}, NameCase{"a.b_c-D9", ""},
                      NameCase{"", "invalid netns name"}, NameCase{"..", "invalid netns name"},
                      NameCase{"../etc", "invalid netns name \"../etc\""},
                      NameCase{"a/b", "invalid netns name"}, NameCase{"a b", "invalid netns name"},
                      NameCase{std::string(256, 'x'), "1-255 characters"}));

TEST(SysctlPath, MapsDottedKeysAndRefusesEscapes) {
  EXPECT_EQ(sysctl_path("net.ipv4.ip_forward"), "/proc/sys/net/ipv4/ip_forward");
  EXPECT_EQ(sysctl_path("net/ipv4/conf/eth0.10/rp_filter"),
            "/proc/sys/net/ipv4/conf/eth0.10/rp_filter");
  EXPECT_THROW(sysctl_path(""), std::invalid_argument);
  EXPECT_THROW(sysctl_path("net/../../etc/passwd"), std::invalid_argument);
  EXPECT_THROW(sysctl_path("net..ipv4"), std::invalid_argument);
  EXPECT_THROW(sysctl_path("net.ipv4.ip_forward=1"), std::invalid_argument);
  EXPECT_THROW(sysctl_path("/net/ipv4"), std::invalid_argument);
}

TEST(Route, DescribesItselfLikeIpRoute) {
  Route r;
  r.destination = IpPrefix::parse("10.244.2.0/24");
  r.gateway = IpAddress::parse("172.18.0.3");
  EXPECT_EQ(r.to_string(), "10.244.2.0/24 via 172.18.0.3");
  Route d;
  d.family = Family::v6;
  d.oif = 4;
  d.metric = 1024;
  EXPECT_EQ(d.effective_family(), Family::v6);
  EXPECT_EQ(d.to_string(), "default (IPv6) dev #4 metric 1024");
}

}  // namespace
}  // namespace flatnet::netmodel
