#include "flatnet/netmodel/address.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

namespace flatnet::netmodel {
namespace {

using ::testing::HasSubstr;

// --- IpAddress::parse ---

struct AddressCase {
  std::string text;
  bool valid;
  std::string expect;  // canonical text when valid, a fragment of the error otherwise
  friend void PrintTo(const AddressCase& c, std::ostream* out) { *out << c.text; }
};

class AddressParse : public ::testing::TestWithParam<AddressCase> {};

TEST_P(AddressParse, ParsesOrNamesTheProblem) {
  const auto& c = GetParam();
  if (c.valid) {
    const IpAddress a = IpAddress::parse(c.text);
    EXPECT_EQ(a.to_string(), c.expect);
    EXPECT_EQ(IpAddress::parse(a.to_string()), a) << "round trip";
  } else {
    try {
      IpAddress::parse(c.text);
      FAIL() << "accepted " << c.text;
    } catch (const AddressError& e) {
      const bool has_nul = c.text.find('\0') != std::string::npos;
      EXPECT_THAT(e.what(), HasSubstr(has_nul ? "\\x00" : "\"" + c.text + "\""));
      EXPECT_THAT(e.what(), HasSubstr(c.expect));
    }
    EXPECT_FALSE(IpAddress::try_parse(c.text));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, AddressParse,
    ::testing::Values(
        AddressCase{"10.244.1.5", true, "10.244.1.5"}, AddressCase{"0.0.0.0", true, "0.0.0.0"},
        AddressCase{"255.255.255.255", true, "255.255.255.255"},
        AddressCase{"fd00::1", true, "fd00::1"}, AddressCase{"FD00:0:0:0:0:0:0:1", true, "fd00::1"},
        AddressCase{"::", true, "::"}, AddressCase{"::ffff:10.0.0.1", true, "::ffff:10.0.0.1"},
        AddressCase{"2001:db8:0:0:1:0:0:1", true, "2001:db8::1:0:0:1"},
        AddressCase{"::1:2", true, "::1:2"}, AddressCase{"::102:304", true, "::102:304"},
        AddressCase{"1:0:0:1:0:0:0:1", true, "1:0:0:1::1"},
        AddressCase{"1:0:0:0:1:0:0:1", true, "1::1:0:0:1"},
        AddressCase{"2001:db8:0:1:1:1:1:1", true, "2001:db8:0:1:1:1:1:1"},
        AddressCase{"2001:0DB8:0000:0000:0000:0000:0000:0000", true, "2001:db8::"},
        AddressCase{"0:0:0:0:0:ffff:a00:1", true, "::ffff:10.0.0.1"},
        AddressCase{std::string("::1\0x", 5), false, "RFC 4291"}, AddressCase{"", false, "empty"},
        AddressCase{"10.0.0", false, "four octets"},
        AddressCase{"10.0.0.1.2", false, "not a number"},
        AddressCase{"10.0.0.256", false, "greater than 255"},
        AddressCase{"10.0.0.01", false, "leading zero"},
        AddressCase{"10..0.1", false, "empty octet"},
        AddressCase{"10.0.0.-1", false, "not a number"},
        AddressCase{"10.0.0.1 ", false, "not a number"}, AddressCase{"fe80::1%eth0", false, "zone"},
        AddressCase{"fd00:::1", false, "RFC 4291"},
        AddressCase{"1:2:3:4:5:6:7:8:9", false, "RFC 4291"},
        AddressCase{"localhost", false, "neither"}));

TEST(IpAddress, ClassifiesSpecialAddresses) {
  EXPECT_TRUE(IpAddress::parse("0.0.0.0").is_unspecified());
  EXPECT_TRUE(IpAddress::parse("::").is_unspecified());
  EXPECT_TRUE(IpAddress::parse("127.1.2.3").is_loopback());
  EXPECT_TRUE(IpAddress::parse("::1").is_loopback());
  EXPECT_TRUE(IpAddress::parse("169.254.0.9").is_link_local());
  EXPECT_TRUE(IpAddress::parse("fe80::9").is_link_local());
  EXPECT_TRUE(IpAddress::parse("224.0.0.1").is_multicast());
  EXPECT_TRUE(IpAddress::parse("ff02::1").is_multicast());
  EXPECT_FALSE(IpAddress::parse("10.0.0.1").is_multicast());
  EXPECT_FALSE(IpAddress::parse("fd00::1").is_link_local());
}

TEST(IpAddress, ArithmeticStopsAtTheEdgesOfTheFamily) {
  EXPECT_EQ(IpAddress::parse("10.0.0.255").next(), IpAddress::parse("10.0.1.0"));
  EXPECT_EQ(IpAddress::parse("255.255.255.255").next(), std::nullopt);
  EXPECT_EQ(IpAddress::parse("0.0.0.0").previous(), std::nullopt);
  EXPECT_EQ(IpAddress::parse("fd00::ffff").next(), IpAddress::parse("fd00::1:0"));
  EXPECT_EQ(IpAddress::parse("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe").advanced(2), std::nullopt);
  EXPECT_EQ(IpAddress::parse("10.0.0.1").advanced(256), IpAddress::parse("10.0.1.1"));
  EXPECT_EQ(IpAddress::v4(0x0af40105u), IpAddress::parse("10.244.1.5"));
  EXPECT_EQ(IpAddress::parse("10.244.1.5").to_v4_integer(), 0x0af40105u);
  EXPECT_THROW(IpAddress::parse("fd00::1").to_v4_integer(), AddressError);
}

TEST(IpAddress, OrdersIpv4BeforeIpv6AndNumericallyWithin) {
  EXPECT_LT(IpAddress::parse("10.0.0.2"), IpAddress::parse("10.0.0.10"));
  EXPECT_LT(IpAddress::parse("255.255.255.255"), IpAddress::parse("::"));
  EXPECT_NE(IpAddress::parse("0.0.0.0"), IpAddress::parse("::"));
  EXPECT_EQ(std::hash<IpAddress>{}(IpAddress::parse("10.0.0.1")),
            std::hash<IpAddress>{}(IpAddress::parse("10.0.0.1")));
}

TEST(IpAddress, FromBytesNeedsFourOrSixteen) {
  const std::uint8_t three[3] = {1, 2, 3};
  EXPECT_THROW(IpAddress::from_bytes(three), AddressError);
}

// --- IpPrefix ---

struct PrefixCase {
  std::string text;
  std::string network;
  std::string broadcast;
  std::string size;  // decimal: IPv6 sizes need all 128 bits
  std::string hosts;
  std::string first_host;
  std::string last_host;
  friend void PrintTo(const PrefixCase& c, std::ostream* out) { *out << c.text; }
};

class PrefixMath : public ::testing::TestWithParam<PrefixCase> {};

TEST_P(PrefixMath, ComputesNetworkBroadcastSizeAndHosts) {
  const auto& c = GetParam();
  const IpPrefix p = IpPrefix::parse(c.text);
  EXPECT_EQ(p.to_string(), c.text) << "host bits are kept";
  EXPECT_EQ(p.network().to_string(), c.network);
  EXPECT_EQ(p.broadcast().to_string(), c.broadcast);
  EXPECT_EQ(to_decimal(p.size()), c.size);
  EXPECT_EQ(to_decimal(p.host_count()), c.hosts);
  EXPECT_EQ(p.nth_host(1).to_string(), c.first_host);
  EXPECT_EQ(p.nth_host(p.host_count()).to_string(), c.last_host);
  EXPECT_THROW(p.nth_host(p.host_count() + 1), std::out_of_range);
  EXPECT_THROW(p.nth_host(0), std::out_of_range);
  EXPECT_TRUE(p.contains(p.nth_host(1)));
  EXPECT_TRUE(p.contains(p.broadcast()));
}

INSTANTIATE_TEST_SUITE_P(
    Table, PrefixMath,
    ::testing::Values(
        PrefixCase{"10.244.1.5/24", "10.244.1.0/24", "10.244.1.255", "256", "254", "10.244.1.1",
                   "10.244.1.254"},
        PrefixCase{"10.244.0.0/16", "10.244.0.0/16", "10.244.255.255", "65536", "65534",
                   "10.244.0.1", "10.244.255.254"},
        PrefixCase{"172.18.0.0/30", "172.18.0.0/30", "172.18.0.3", "4", "2", "172.18.0.1",
                   "172.18.0.2"},
        PrefixCase{"192.168.7.1/31", "192.168.7.0/31", "192.168.7.1", "2", "2", "192.168.7.0",
                   "192.168.7.1"},
        PrefixCase{"192.168.7.9/32", "192.168.7.9/32", "192.168.7.9", "1", "1", "192.168.7.9",
                   "192.168.7.9"},
        PrefixCase{"0.0.0.0/0", "0.0.0.0/0", "255.255.255.255", "4294967296", "4294967294",
                   "0.0.0.1", "255.255.255.254"},
        PrefixCase{"fd00:10:244:1::5/64", "fd00:10:244:1::/64", "fd00:10:244:1:ffff:ffff:ffff:ffff",
                   "18446744073709551616", "18446744073709551615", "fd00:10:244:1::1",
                   "fd00:10:244:1:ffff:ffff:ffff:ffff"},
        PrefixCase{"2001:db8::/32", "2001:db8::/32", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                   "79228162514264337593543950336", "79228162514264337593543950335", "2001:db8::1",
                   "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"},
        PrefixCase{"64:ff9b::/96", "64:ff9b::/96", "64:ff9b::ffff:ffff", "4294967296", "4294967295",
                   "64:ff9b::1", "64:ff9b::ffff:ffff"},
        PrefixCase{"fd00::/120", "fd00::/120", "fd00::ff", "256", "255", "fd00::1", "fd00::ff"},
        PrefixCase{"fd00::1/128", "fd00::1/128", "fd00::1", "1", "1", "fd00::1", "fd00::1"}));

struct BadPrefixCase {
  std::string text;
  std::string fragment;
  friend void PrintTo(const BadPrefixCase& c, std::ostream* out) { *out << c.text; }
};

class PrefixParseError : public ::testing::TestWithParam<BadPrefixCase> {};

TEST_P(PrefixParseError, NamesInputAndProblem) {
  const auto& c = GetParam();
  try {
    IpPrefix::parse_network(c.text);
    FAIL() << "accepted " << c.text;
  } catch (const AddressError& e) {
    EXPECT_THAT(e.what(), HasSubstr("\"" + c.text + "\""));
    EXPECT_THAT(e.what(), HasSubstr(c.fragment));
  }
}

INSTANTIATE_TEST_SUITE_P(Table, PrefixParseError,
                         ::testing::Values(BadPrefixCase{"10.244.0.0", "missing \"/\""},
                                           BadPrefixCase{"10.244.0.0/33", "exceeds 32"},
                                           BadPrefixCase{"fd00::/129", "exceeds 128"},
                                           BadPrefixCase{"10.244.0.0/", "not a number"},
                                           BadPrefixCase{"10.244.0.0/x", "not a number"},
                                           BadPrefixCase{"10.244.0.0/016", "not a number"},
                                           BadPrefixCase{"10.244.0.0/-1", "not a number"},
                                           BadPrefixCase{"10.244.0.300/16", "greater than 255"},
                                           BadPrefixCase{"10.244.0.1/16",
                                                         "did you mean 10.244.0.0/16"},
                                           BadPrefixCase{"fd00::1/64", "did you mean fd00::/64"}));

struct RelationCase {
  std::string a;
  std::string b;
  bool a_contains_b;
  bool overlap;
  friend void PrintTo(const RelationCase& c, std::ostream* out) { *out << c.a << " vs " << c.b; }
};

class PrefixRelation : public ::testing::TestWithParam<RelationCase> {};

TEST_P(PrefixRelation, ContainsAndOverlaps) {
  const auto& c = GetParam();
  const IpPrefix a = IpPrefix::parse(c.a), b = IpPrefix::parse(c.b);
  EXPECT_EQ(a.contains(b), c.a_contains_b);
  EXPECT_EQ(a.overlaps(b), c.overlap);
  EXPECT_EQ(b.overlaps(a), c.overlap) << "overlap is symmetric";
}

INSTANTIATE_TEST_SUITE_P(
    Table, PrefixRelation,
    ::testing::Values(RelationCase{"10.244.0.0/16", "10.244.3.0/24", true, true},
                      RelationCase{"10.244.3.0/24", "10.244.0.0/16", false, true},
                      RelationCase{"10.244.0.0/16", "10.245.0.0/16", false, false},
                      RelationCase{"10.0.0.0/8", "10.96.0.0/12", true, true},
                      RelationCase{"10.96.0.0/12", "10.244.0.0/16", false, false},
                      RelationCase{"0.0.0.0/0", "192.0.2.0/24", true, true},
                      RelationCase{"10.0.0.0/8", "fd00::/8", false, false},
                      RelationCase{"fd00::/8", "fd00:10:244::/48", true, true},
                      RelationCase{"10.244.1.7/24", "10.244.1.200/32", true, true}));

TEST(IpPrefix, ContainsAddressesOfItsOwnFamilyOnly) {
  const IpPrefix pods = IpPrefix::parse("10.244.0.0/16");
  EXPECT_TRUE(pods.contains(IpAddress::parse("10.244.255.1")));
  EXPECT_FALSE(pods.contains(IpAddress::parse("10.245.0.1")));
  EXPECT_FALSE(pods.contains(IpAddress::parse("::ffff:10.244.0.1")));
  EXPECT_TRUE(IpPrefix::parse("::/0").contains(IpAddress::parse("fd00::1")));
}

TEST(IpPrefix, SplitsIntoSubnets) {
  const IpPrefix pods = IpPrefix::parse("10.244.0.0/16");
  EXPECT_EQ(pods.subnet(24, 0).to_string(), "10.244.0.0/24");
  EXPECT_EQ(pods.subnet(24, 3).to_string(), "10.244.3.0/24");
  EXPECT_EQ(pods.subnet(24, 255).to_string(), "10.244.255.0/24");
  EXPECT_THROW(pods.subnet(24, 256), std::out_of_range);
  EXPECT_THROW(pods.subnet(8, 0), std::out_of_range);
  EXPECT_EQ(IpPrefix::parse("fd00:10:244::/56").subnet(64, 2).to_string(), "fd00:10:244:2::/64");
}

TEST(IpPrefix, NetmaskNthAndHugeSizes) {
  EXPECT_EQ(IpPrefix::parse("10.0.0.0/20").netmask().to_string(), "255.255.240.0");
  EXPECT_EQ(IpPrefix::parse("fd00::/64").netmask().to_string(), "ffff:ffff:ffff:ffff::");
  EXPECT_EQ(IpPrefix::parse("10.0.0.0/24").nth(0).to_string(), "10.0.0.0");
  EXPECT_THROW(IpPrefix::parse("10.0.0.0/24").nth(256), std::out_of_range);
  EXPECT_EQ(IpPrefix::parse("0.0.0.0/0").size(), uint128{1} << 32);
  EXPECT_EQ(IpPrefix::parse("::/0").size(), ~uint128{0}) << "saturates";
  EXPECT_EQ(IpPrefix::parse("::/0").host_count(), ~uint128{0});
  try {
    IpPrefix::parse("10.0.0.0/16").subnet(24, 256);
    FAIL();
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "10.0.0.0/16 has only 256 /24 subnets");
  }
  EXPECT_EQ(IpPrefix::parse("::/0").nth(~uint128{0}).to_string(),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
  EXPECT_THROW(IpPrefix(IpAddress::parse("10.0.0.0"), 40), AddressError);
  EXPECT_EQ(IpPrefix::host(IpAddress::parse("fd00::7")).to_string(), "fd00::7/128");
}

// --- MacAddress ---

struct MacCase {
  std::string text;
  bool valid;
  std::string expect;
  friend void PrintTo(const MacCase& c, std::ostream* out) { *out << c.text; }
};

class MacParse : public ::testing::TestWithParam<MacCase> {};

TEST_P(MacParse, ParsesOrNamesTheProblem) {
  const auto& c = GetParam();
  if (c.valid) {
    EXPECT_EQ(MacAddress::parse(c.text).to_string(), c.expect);
  } else {
    try {
      MacAddress::parse(c.text);
      FAIL() << "accepted " << c.text;
    } catch (const AddressError& e) {
      EXPECT_THAT(e.what(), HasSubstr("\"" + c.text + "\""));
      EXPECT_THAT(e.what(), HasSubstr(c.expect));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, MacParse,
    ::testing::Values(MacCase{"0a:58:0a:f4:01:05", true, "0a:58:0a:f4:01:05"},
                      MacCase{"0A-58-0A-F4-01-05", true, "0a:58:0a:f4:01:05"},
                      MacCase{"ff:ff:ff:ff:ff:ff", true, "ff:ff:ff:ff:ff:ff"},
                      MacCase{"0a:58:0a:f4:01", false, "six hex pairs"},
                      MacCase{"0a:58:0a:f4:01:0g", false, "\"0g\" is not two hex digits"},
                      MacCase{"0a:58-0a:f4:01:05", false, "separators"},
                      MacCase{"0a.58.0a.f4.01.05", false, "separated by"},
                      MacCase{"0a:58:0a:f4:01:+5", false, "not two hex digits"}));

TEST(MacAddress, RandomLocalIsUnicastAndLocallyAdministered) {
  std::mt19937_64 random(42);
  for (int i = 0; i < 200; ++i) {
    const MacAddress mac = MacAddress::random_local(random);
    EXPECT_FALSE(mac.is_multicast()) << mac;
    EXPECT_TRUE(mac.is_locally_administered()) << mac;
    EXPECT_EQ(MacAddress::parse(mac.to_string()), mac);
  }
  EXPECT_TRUE(MacAddress::parse("ff:ff:ff:ff:ff:ff").is_broadcast());
  EXPECT_TRUE(MacAddress().is_zero());
}

}  // namespace
}  // namespace flatnet::netmodel
