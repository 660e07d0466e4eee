// flatnet-ipam as a library: the host-local configuration, allocation, the on-disk layout
// host-local reads and writes, DEL/CHECK/GC/STATUS, many writers on one dataDir, and the real
// host-local binary sharing a dataDir with us. No root needed: every test works in a fresh
// directory under ::testing::TempDir().

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "flatnet/cni/environment.hpp"
#include "flatnet/cni/error.hpp"
#include "flatnet/cni/exec.hpp"
#include "flatnet/cni/ipam.hpp"
#include "flatnet/cni/netconf.hpp"
#include "flatnet/cni/types.hpp"

namespace flatnet::cni {
namespace {

using netmodel::IpAddress;
using netmodel::IpPrefix;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;
using ::testing::UnorderedElementsAreArray;

namespace fs = std::filesystem;

constexpr const char* kNetwork = "testnet";
constexpr const char* kHostLocal = "/usr/lib/cni/host-local";

// ---------------------------------------------------------------------------------------------
// Helpers

Environment env_for(const std::string& id, const std::string& ifname = "eth0",
                    const std::string& cni_args = "") {
  Environment env;
  env.command = Command::add;
  env.container_id = id;
  env.netns = "/var/run/netns/" + id;
  env.ifname = ifname;
  env.args_text = cni_args;
  env.args = parse_cni_args(cni_args);
  env.path = {"/usr/lib/cni"};
  return env;
}

// A whole network configuration around `ipam` (left out when null), with `top` merged in.
json make_conf(const json& ipam, const json& top = json::object()) {
  json conf = {{"cniVersion", "1.0.0"}, {"name", kNetwork}, {"type", "bridge"}};
  if (!ipam.is_null()) conf["ipam"] = ipam;
  for (const auto& [key, value] : top.items())
    conf[key] = value;
  return conf;
}

IpamConfig parse_config(const json& conf, const Environment& env = env_for("parse")) {
  return parse_ipam_config(parse_netconf(conf.dump()), env);
}

// The CniError `f` throws; a test failure when it throws none.
CniError error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const CniError& e) {
    return e;
  }
  ADD_FAILURE() << "expected a CniError";
  return CniError(ErrorCode::plugin_failure, "<no error thrown>");
}

void expect_error(const std::function<void()>& f, ErrorCode code,
                  const std::vector<std::string>& parts) {
  const CniError e = error_of(f);
  EXPECT_EQ(e.numeric_code(), static_cast<int>(code)) << e.what();
  for (const auto& part : parts)
    EXPECT_THAT(e.what(), HasSubstr(part));
}

std::string slurp(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

void write_file(const fs::path& path, const std::string& content) {
  std::ofstream file(path, std::ios::binary);
  file << content;
}

std::set<std::string> listing(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir))
    names.insert(entry.path().filename().string());
  return names;
}

std::vector<std::string> addresses_of(const Result& result) {
  std::vector<std::string> out;
  for (const auto& ip : result.ips)
    out.push_back(ip.address.to_string());
  return out;
}

std::string describe(const IpRange& r) {
  return r.subnet.to_string() + " " + r.range_start.to_string() + "-" + r.range_end.to_string() +
         " gw " + r.gateway.to_string();
}

// Each test gets a fresh dataDir, removed afterwards.
class IpamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = fs::path(::testing::TempDir()) /
           ("flatnet-ipam-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }

  fs::path state_dir() const { return dir_ / kNetwork; }

  // `ipam` (fields besides type and dataDir) wrapped into a whole configuration on our dataDir.
  json conf(json ipam, const json& top = json::object()) const {
    ipam["type"] = "host-local";
    ipam["dataDir"] = dir_.string();
    return make_conf(ipam, top);
  }
  json v4_conf(const std::string& subnet = "10.0.0.0/24") const {
    return conf({{"ranges", {{{{"subnet", subnet}}}}}});
  }
  json dual_conf() const {
    return conf({{"ranges", {{{{"subnet", "10.0.0.0/24"}}}, {{{"subnet", "fd00::/64"}}}}}});
  }

  Result add(const json& c, const std::string& id, const std::string& ifname = "eth0",
             const std::string& cni_args = "") {
    const Environment env = env_for(id, ifname, cni_args);
    return ipam_add(parse_config(c, env), env);
  }
  void del(const json& c, const std::string& id, const std::string& ifname = "eth0") {
    const Environment env = env_for(id, ifname);
    ipam_del(parse_config(c, env), env);
  }
  std::vector<Reservation> reservations() const {
    IpamStore store(state_dir());
    const auto lock = store.lock();
    return store.reservations();
  }
  // "ip id ifname" of every reservation.
  std::vector<std::string> holders() const {
    std::vector<std::string> out;
    for (const auto& r : reservations())
      out.push_back(r.address.to_string() + " " + r.container_id + " " + r.ifname);
    return out;
  }

  fs::path dir_;
};

// ---------------------------------------------------------------------------------------------
// 1. parse_ipam_config: valid forms

struct ValidRangesCase {
  std::string name{};
  std::string ipam{};                            // the ipam section, JSON
  std::vector<std::vector<std::string>> sets{};  // describe() of each range, per set
};

void PrintTo(const ValidRangesCase& c, std::ostream* os) {
  *os << c.name;
}

class IpamValidRanges : public ::testing::TestWithParam<ValidRangesCase> {};

TEST_P(IpamValidRanges, RangeSetsWithDefaults) {
  const ValidRangesCase& c = GetParam();
  const IpamConfig config = parse_config(make_conf(json::parse(c.ipam)));
  std::vector<std::vector<std::string>> sets;
  for (const auto& set : config.range_sets) {
    sets.emplace_back();
    for (const auto& r : set)
      sets.back().push_back(describe(r));
  }
  EXPECT_EQ(sets, c.sets);
  EXPECT_EQ(config.network, kNetwork);
  EXPECT_EQ(config.requested.size(), config.range_sets.size());
}

const ValidRangesCase kValidRanges[] = {
    {"legacy_v4",
     R"({"type": "host-local", "subnet": "10.1.0.0/24"})",
     {{"10.1.0.0/24 10.1.0.1-10.1.0.254 gw 10.1.0.1"}}},
    {"legacy_v6",
     R"({"type": "host-local", "subnet": "fd00:1::/64"})",
     {{"fd00:1::/64 fd00:1::1-fd00:1::ffff:ffff:ffff:ffff gw fd00:1::1"}}},
    {"legacy_explicit",
     R"({"subnet": "10.1.0.0/16", "rangeStart": "10.1.1.20", "rangeEnd": "10.1.3.50",
         "gateway": "10.1.0.254"})",
     {{"10.1.0.0/16 10.1.1.20-10.1.3.50 gw 10.1.0.254"}}},
    {"smallest_v4",
     R"({"ranges": [[{"subnet": "192.168.7.0/30"}]]})",
     {{"192.168.7.0/30 192.168.7.1-192.168.7.2 gw 192.168.7.1"}}},
    {"smallest_v6",
     R"({"ranges": [[{"subnet": "fd00::/126"}]]})",
     {{"fd00::/126 fd00::1-fd00::3 gw fd00::1"}}},
    {"several_sets",
     R"({"ranges": [
          [{"subnet": "10.10.0.0/16", "rangeStart": "10.10.1.20", "rangeEnd": "10.10.3.50",
            "gateway": "10.10.0.254"},
           {"subnet": "172.16.5.0/24"}],
          [{"subnet": "3ffe:ffff:0:1ff::/64", "rangeStart": "3ffe:ffff:0:1ff::10",
            "rangeEnd": "3ffe:ffff:0:1ff::20"}]]})",
     {{"10.10.0.0/16 10.10.1.20-10.10.3.50 gw 10.10.0.254",
       "172.16.5.0/24 172.16.5.1-172.16.5.254 gw 172.16.5.1"},
      {"3ffe:ffff:0:1ff::/64 3ffe:ffff:0:1ff::10-3ffe:ffff:0:1ff::20 gw 3ffe:ffff:0:1ff::1"}}},
    {"legacy_first_then_ranges",
     R"({"subnet": "10.1.0.0/24", "ranges": [[{"subnet": "fd00::/120"}]]})",
     {{"10.1.0.0/24 10.1.0.1-10.1.0.254 gw 10.1.0.1"}, {"fd00::/120 fd00::1-fd00::ff gw fd00::1"}}},
    // host-local compares the allocatable ranges, not the subnets: disjoint ranges may share one.
    {"disjoint_ranges_in_one_subnet",
     R"({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.20"},
                     {"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.100"}],
                    [{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.30", "rangeEnd": "10.0.0.40"}]]})",
     {{"10.0.0.0/24 10.0.0.10-10.0.0.20 gw 10.0.0.1",
       "10.0.0.0/24 10.0.0.100-10.0.0.254 gw 10.0.0.1"},
      {"10.0.0.0/24 10.0.0.30-10.0.0.40 gw 10.0.0.1"}}},
    {"null_fields_take_defaults",
     R"({"ranges": [[{"subnet": "10.2.0.0/24", "rangeStart": null, "rangeEnd": null,
                      "gateway": null}]], "routes": null})",
     {{"10.2.0.0/24 10.2.0.1-10.2.0.254 gw 10.2.0.1"}}},
};

INSTANTIATE_TEST_SUITE_P(Ipam, IpamValidRanges, ::testing::ValuesIn(kValidRanges),
                         [](const auto& info) { return info.param.name; });

TEST(IpamParse, DataDirDefaultsToVarLibCniNetworks) {
  const IpamConfig config = parse_config(make_conf({{"subnet", "10.0.0.0/24"}}));
  EXPECT_EQ(config.data_dir, fs::path("/var/lib/cni/networks"));
  EXPECT_EQ(config.state_dir(), fs::path("/var/lib/cni/networks") / kNetwork);
  // host-local treats an empty dataDir as absent.
  EXPECT_EQ(parse_config(make_conf({{"subnet", "10.0.0.0/24"}, {"dataDir", ""}})).data_dir,
            fs::path(kDefaultIpamDataDir));
  EXPECT_EQ(
      parse_config(make_conf({{"subnet", "10.0.0.0/24"}, {"dataDir", "/run/ipam"}})).state_dir(),
      fs::path("/run/ipam") / kNetwork);
}

TEST(IpamParse, Routes) {
  const IpamConfig config = parse_config(make_conf(json::parse(R"({
      "subnet": "10.0.0.0/24",
      "routes": [{"dst": "0.0.0.0/0"},
                 {"dst": "192.168.0.0/16", "gw": "10.0.0.254"},
                 {"dst": "10.96.0.7/12"},
                 {"dst": "::/0", "gw": "fd00::1"}]})")));
  ASSERT_EQ(config.routes.size(), 4u);
  EXPECT_EQ(config.routes[0].dst, IpPrefix::parse("0.0.0.0/0"));
  EXPECT_FALSE(config.routes[0].gw);
  EXPECT_EQ(config.routes[1].dst, IpPrefix::parse("192.168.0.0/16"));
  EXPECT_EQ(config.routes[1].gw, IpAddress::parse("10.0.0.254"));
  EXPECT_EQ(config.routes[2].dst, IpPrefix::parse("10.96.0.0/12"));  // host bits cleared
  EXPECT_EQ(config.routes[3].dst, IpPrefix::parse("::/0"));
  EXPECT_EQ(config.routes[3].gw, IpAddress::parse("fd00::1"));
}

using IpamParseFiles = IpamTest;

TEST_F(IpamParseFiles, ResolvConfIsReadFromTheFile) {
  const fs::path resolv = dir_ / "resolv.conf";
  write_file(resolv,
             "# generated\n"
             "; also a comment\n"
             "nameserver 10.96.0.10\n"
             "nameserver fd00::10\n"
             "\n"
             "domain cluster.local\n"
             "search default.svc.cluster.local svc.cluster.local\n"
             "search cluster.local\n"
             "options ndots:5 edns0\n");
  json ipam = {{"subnet", "10.0.0.0/24"}, {"resolvConf", resolv.string()}};
  const IpamConfig config = parse_config(make_conf(ipam));
  EXPECT_THAT(config.dns.nameservers, ::testing::ElementsAre("10.96.0.10", "fd00::10"));
  EXPECT_EQ(config.dns.domain, "cluster.local");
  EXPECT_THAT(config.dns.search, ::testing::ElementsAre("default.svc.cluster.local",
                                                        "svc.cluster.local", "cluster.local"))
      << "every search line adds its domains, as host-local reads them";
  EXPECT_THAT(config.dns.options, ::testing::ElementsAre("ndots:5", "edns0"));

  // The DNS goes into the ADD result.
  const Result result = add(conf(ipam), "c1");
  EXPECT_EQ(result.dns, config.dns);
}

TEST(IpamParse, RequestedAddressesGoToTheirRangeSet) {
  const json ipam = json::parse(R"({"ranges": [[{"subnet": "10.0.0.0/24"}],
                                               [{"subnet": "fd00::/64"}]]})");
  {
    const IpamConfig c =
        parse_config(make_conf(ipam, {{"args", {{"cni", {{"ips", {"fd00::9"}}}}}}}));
    ASSERT_EQ(c.requested.size(), 2u);
    EXPECT_FALSE(c.requested[0]);
    EXPECT_EQ(c.requested[1], IpAddress::parse("fd00::9"));
  }
  {
    const IpamConfig c = parse_config(
        make_conf(ipam, {{"runtimeConfig", {{"ips", {"10.0.0.7/24", "fd00::7/64"}}}}}));
    EXPECT_EQ(c.requested[0], IpAddress::parse("10.0.0.7"));
    EXPECT_EQ(c.requested[1], IpAddress::parse("fd00::7"));
  }
  {
    const IpamConfig c = parse_config(make_conf(ipam), env_for("c", "eth0", "IP=10.0.0.5"));
    EXPECT_EQ(c.requested[0], IpAddress::parse("10.0.0.5"));
    EXPECT_FALSE(c.requested[1]);
  }
  {
    // The same address from two sources counts once (host-local keeps them in a map).
    const IpamConfig c =
        parse_config(make_conf(ipam, {{"runtimeConfig", {{"ips", {"10.0.0.5/24"}}}}}),
                     env_for("c", "eth0", "IP=10.0.0.5"));
    EXPECT_EQ(c.requested[0], IpAddress::parse("10.0.0.5"));
  }
}

// ---------------------------------------------------------------------------------------------
// 1. parse_ipam_config: bad configurations

struct BadConfigCase {
  std::string name{};
  std::string ipam{};                  // the ipam section, JSON; empty: none
  std::string top{};                   // more top-level fields, a JSON object; empty: none
  std::string cni_args{};              // CNI_ARGS
  std::vector<std::string> message{};  // parts of the message: the field path and the value
};

void PrintTo(const BadConfigCase& c, std::ostream* os) {
  *os << c.name;
}

class IpamBadConfig : public ::testing::TestWithParam<BadConfigCase> {};

TEST_P(IpamBadConfig, RefusedWithCode7NamingFieldAndValue) {
  const BadConfigCase& c = GetParam();
  const json conf = make_conf(c.ipam.empty() ? json() : json::parse(c.ipam),
                              c.top.empty() ? json::object() : json::parse(c.top));
  expect_error([&] { parse_config(conf, env_for("c1", "eth0", c.cni_args)); },
               ErrorCode::invalid_network_config, c.message);
}

const BadConfigCase kBadConfigs[] = {
    {"missing_ipam", "", "", "", {"ipam", "required"}},
    {"host_bits_in_subnet",
     R"({"ranges": [[{"subnet": "10.0.0.1/24"}]]})",
     "",
     "",
     {"ipam.ranges[0][0].subnet", "10.0.0.1/24", "10.0.0.0/24"}},
    {"host_bits_in_v6_subnet",
     R"({"ranges": [[{"subnet": "fd00::1/64"}]]})",
     "",
     "",
     {"ipam.ranges[0][0].subnet", "fd00::1/64"}},
    {"subnet_not_a_cidr", R"({"subnet": "banana"})", "", "", {"ipam.subnet", "banana"}},
    {"subnet_slash_31",
     R"({"ranges": [[{"subnet": "10.0.0.0/31"}]]})",
     "",
     "",
     {"ipam.ranges[0][0].subnet", "10.0.0.0/31", "too small"}},
    {"subnet_slash_32",
     R"({"subnet": "10.0.0.7/32"})",
     "",
     "",
     {"ipam.subnet", "10.0.0.7/32", "too small"}},
    {"subnet_slash_127",
     R"({"ranges": [[{"subnet": "fd00::/127"}]]})",
     "",
     "",
     {"ipam.ranges[0][0].subnet", "fd00::/127", "too small"}},
    {"missing_subnet",
     R"({"ranges": [[{"rangeStart": "10.0.0.5"}]]})",
     "",
     "",
     {"ipam.ranges[0][0].subnet", "required"}},
    {"range_start_outside_subnet",
     R"({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"}]]})",
     "",
     "",
     {"ipam.ranges[0][0].rangeStart", "10.0.1.5", "10.0.0.0/24"}},
    {"range_end_outside_subnet",
     R"({"subnet": "10.0.0.0/24", "rangeEnd": "10.0.1.5"})",
     "",
     "",
     {"ipam.rangeEnd", "10.0.1.5"}},
    {"gateway_outside_subnet",
     R"({"ranges": [[{"subnet": "10.0.0.0/24", "gateway": "10.9.0.1"}]]})",
     "",
     "",
     {"ipam.ranges[0][0].gateway", "10.9.0.1"}},
    {"range_start_not_an_address",
     R"({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.300"}]]})",
     "",
     "",
     {"ipam.ranges[0][0].rangeStart", "10.0.0.300"}},
    {"range_start_after_range_end",
     R"({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.50",
                      "rangeEnd": "10.0.0.20"}]]})",
     "",
     "",
     {"ipam.ranges[0][0].rangeStart", "10.0.0.50", "10.0.0.20"}},
    {"mixed_families_in_a_set",
     R"({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]})",
     "",
     "",
     {"ipam.ranges[0][1].subnet", "fd00::/64", "IPv4 and IPv6"}},
    {"overlapping_subnets_in_a_set",
     R"({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.0/25"}]]})",
     "",
     "",
     {"ipam.ranges[0][1].subnet", "10.0.0.0/25", "overlaps", "ipam.ranges[0][0]"}},
    {"overlapping_subnets_across_sets",
     R"({"ranges": [[{"subnet": "10.0.0.0/16"}], [{"subnet": "fd00::/64"}],
                    [{"subnet": "10.0.5.0/24"}]]})",
     "",
     "",
     {"ipam.ranges[2][0].subnet", "10.0.5.0/24", "overlaps", "ipam.ranges[0][0]"}},
    {"overlapping_v6_subnets_across_sets",
     R"({"ranges": [[{"subnet": "fd00::/64"}], [{"subnet": "fd00::/48"}]]})",
     "",
     "",
     {"ipam.ranges[1][0].subnet", "fd00::/48", "overlaps", "ipam.ranges[0][0]"}},
    {"overlapping_ranges_in_one_subnet",
     R"({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.20"},
                     {"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.20"}]]})",
     "",
     "",
     {"ipam.ranges[0][1].subnet", "10.0.0.0/24", "overlaps", "10.0.0.10-10.0.0.20"}},
    // The legacy range is set 0, but the paths still name the fields as written.
    {"legacy_range_overlaps_ranges",
     R"({"subnet": "10.0.0.0/24", "ranges": [[{"subnet": "fd00::/64"}],
                                            [{"subnet": "10.0.0.128/25"}]]})",
     "",
     "",
     {"ipam.ranges[1][0].subnet", "10.0.0.128/25", "overlaps", "of ipam"}},
    {"route_without_dst",
     R"({"subnet": "10.0.0.0/24", "routes": [{"gw": "10.0.0.1"}]})",
     "",
     "",
     {"ipam.routes[0].dst", "required"}},
    {"route_dst_not_a_cidr",
     R"({"subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.0.0.0/33"}]})",
     "",
     "",
     {"ipam.routes[1].dst", "10.0.0.0/33"}},
    {"route_gw_of_the_wrong_family",
     R"({"subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]})",
     "",
     "",
     {"ipam.routes[0].gw", "fd00::1", "0.0.0.0/0"}},
    {"routes_not_a_list",
     R"({"subnet": "10.0.0.0/24", "routes": {"dst": "0.0.0.0/0"}})",
     "",
     "",
     {"ipam.routes", "0.0.0.0/0"}},
    {"relative_data_dir",
     R"({"subnet": "10.0.0.0/24", "dataDir": "var/lib/cni"})",
     "",
     "",
     {"ipam.dataDir", "var/lib/cni", "absolute"}},
    {"data_dir_not_a_string",
     R"({"subnet": "10.0.0.0/24", "dataDir": 17})",
     "",
     "",
     {"ipam.dataDir", "17"}},
    {"resolv_conf_missing",
     R"({"subnet": "10.0.0.0/24", "resolvConf": "/nonexistent/flatnet/resolv.conf"})",
     "",
     "",
     {"ipam.resolvConf", "/nonexistent/flatnet/resolv.conf"}},
    {"ranges_not_a_list",
     R"({"ranges": {"subnet": "10.0.0.0/24"}})",
     "",
     "",
     {"ipam.ranges", "10.0.0.0/24", "list"}},
    {"range_set_not_a_list",
     R"({"ranges": [{"subnet": "10.0.0.0/24"}]})",
     "",
     "",
     {"ipam.ranges[0]", "10.0.0.0/24"}},
    {"empty_range_set",
     R"({"ranges": [[{"subnet": "10.0.0.0/24"}], []]})",
     "",
     "",
     {"ipam.ranges[1]", "[]", "non-empty"}},
    {"no_ranges_at_all", R"({"ranges": []})", "", "", {"ipam.ranges", "no address range"}},
    {"range_not_an_object",
     R"({"ranges": [["10.0.0.0/24"]]})",
     "",
     "",
     {"ipam.ranges[0][0]", "10.0.0.0/24"}},
    {"requested_ip_outside_every_range",
     R"({"ranges": [[{"subnet": "10.0.0.0/24"}]]})",
     R"({"args": {"cni": {"ips": ["192.168.1.5"]}}})",
     "",
     {"args.cni.ips[0]", "192.168.1.5", "not in any configured range"}},
    {"requested_ip_in_subnet_outside_range",
     R"({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.100"}]]})",
     R"({"runtimeConfig": {"ips": ["10.0.0.5/24"]}})",
     "",
     {"runtimeConfig.ips[0]", "10.0.0.5/24", "not in any configured range"}},
    {"requested_ip_from_cni_args_outside",
     R"({"subnet": "10.0.0.0/24"})",
     "",
     "IP=10.1.0.5",
     {"CNI_ARGS IP", "10.1.0.5"}},
    {"requested_ip_not_an_address",
     R"({"subnet": "10.0.0.0/24"})",
     R"({"args": {"cni": {"ips": ["10.0.0.5", "nonsense"]}}})",
     "",
     {"args.cni.ips[1]", "nonsense"}},
    {"requested_ips_not_a_list",
     R"({"subnet": "10.0.0.0/24"})",
     R"({"runtimeConfig": {"ips": "10.0.0.5"}})",
     "",
     {"runtimeConfig.ips", "10.0.0.5"}},
    {"two_requested_ips_for_one_set",
     R"({"ranges": [[{"subnet": "10.0.0.0/24"}]]})",
     R"({"args": {"cni": {"ips": ["10.0.0.5", "10.0.0.6"]}}})",
     "",
     {"args.cni.ips[1]", "10.0.0.6", "already has requested IP 10.0.0.5"}},
    {"two_requested_ips_across_sources",
     R"({"ranges": [[{"subnet": "10.0.0.0/24"}]]})",
     R"({"runtimeConfig": {"ips": ["10.0.0.6/24"]}})",
     "IP=10.0.0.5",
     {"runtimeConfig.ips[0]", "10.0.0.6/24", "already has requested IP 10.0.0.5"}},
};

INSTANTIATE_TEST_SUITE_P(Ipam, IpamBadConfig, ::testing::ValuesIn(kBadConfigs),
                         [](const auto& info) { return info.param.name; });

// ---------------------------------------------------------------------------------------------
// 2. Allocation

using IpamAllocation = IpamTest;

TEST_F(IpamAllocation, RoundRobinAfterTheLastReservedAddress) {
  const json c = v4_conf();
  EXPECT_THAT(addresses_of(add(c, "c1")), UnorderedElementsAre("10.0.0.2/24"));
  EXPECT_THAT(addresses_of(add(c, "c2")), UnorderedElementsAre("10.0.0.3/24"));
  del(c, "c1");
  // The freed .2 is not handed out again before the range wraps.
  EXPECT_THAT(addresses_of(add(c, "c3")), UnorderedElementsAre("10.0.0.4/24"));
  EXPECT_EQ(slurp(state_dir() / "last_reserved_ip.0"), "10.0.0.4");
}

TEST_F(IpamAllocation, ResultCarriesGatewayAndRoutes) {
  const json c = conf(json::parse(R"({"ranges": [[{"subnet": "10.0.0.0/24",
                                                   "gateway": "10.0.0.254"}]],
                                      "routes": [{"dst": "0.0.0.0/0"}]})"));
  const Result r = add(c, "c1");
  ASSERT_EQ(r.ips.size(), 1u);
  EXPECT_EQ(r.ips[0].address, IpPrefix::parse("10.0.0.1/24"));
  EXPECT_EQ(r.ips[0].gateway, IpAddress::parse("10.0.0.254"));
  EXPECT_FALSE(r.ips[0].interface);
  ASSERT_EQ(r.routes.size(), 1u);
  EXPECT_EQ(r.routes[0].dst, IpPrefix::parse("0.0.0.0/0"));
  EXPECT_TRUE(r.interfaces.empty());
}

TEST_F(IpamAllocation, SkipsTheGateway) {
  const json c = conf(json::parse(R"({"ranges": [[{"subnet": "10.0.0.0/29",
                                                   "gateway": "10.0.0.3"}]]})"));
  std::vector<std::string> got;
  for (const char* id : {"c1", "c2", "c3", "c4", "c5"})
    got.push_back(addresses_of(add(c, id)).at(0));
  EXPECT_THAT(got, ::testing::ElementsAre("10.0.0.1/29", "10.0.0.2/29", "10.0.0.4/29",
                                          "10.0.0.5/29", "10.0.0.6/29"));
  EXPECT_FALSE(fs::exists(state_dir() / "10.0.0.3"));
}

TEST_F(IpamAllocation, WrapsIntoTheNextRangeAndBackToTheFirst) {
  const json c = conf(json::parse(R"({"ranges": [[
      {"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.11"},
      {"subnet": "10.0.1.0/24", "rangeStart": "10.0.1.10", "rangeEnd": "10.0.1.11"}]]})"));
  std::vector<std::string> got;
  for (const char* id : {"a", "b", "c", "d"})
    got.push_back(addresses_of(add(c, id)).at(0));
  EXPECT_THAT(
      got, ::testing::ElementsAre("10.0.0.10/24", "10.0.0.11/24", "10.0.1.10/24", "10.0.1.11/24"));
  del(c, "a");
  del(c, "c");
  // After 10.0.1.11 (the end of the last range) comes the start of the first range...
  EXPECT_THAT(addresses_of(add(c, "e")), UnorderedElementsAre("10.0.0.10/24"));
  // ...and after it, past the taken 10.0.0.11, the second range again.
  EXPECT_THAT(addresses_of(add(c, "f")), UnorderedElementsAre("10.0.1.10/24"));
}

TEST_F(IpamAllocation, WrapsAroundWithinOneRange) {
  const json c = conf(json::parse(R"({"ranges": [[{"subnet": "10.0.0.0/24",
      "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.12"}]]})"));
  add(c, "a");
  add(c, "b");
  del(c, "a");
  add(c, "c");  // .12
  EXPECT_THAT(addresses_of(add(c, "d")), UnorderedElementsAre("10.0.0.10/24"));
}

TEST_F(IpamAllocation, Slash29HandsOutItsUsableAddressesThenFails) {
  const json c = v4_conf("10.0.0.0/29");
  std::set<std::string> got;
  for (int i = 0; i < 5; ++i)
    got.insert(addresses_of(add(c, "c" + std::to_string(i))).at(0));
  EXPECT_THAT(got, UnorderedElementsAre("10.0.0.2/29", "10.0.0.3/29", "10.0.0.4/29", "10.0.0.5/29",
                                        "10.0.0.6/29"));
  expect_error([&] { add(c, "c5"); }, ErrorCode::address_pool_exhausted,
               {"10.0.0.0/29 (10.0.0.1-10.0.0.6)", kNetwork});
  EXPECT_EQ(reservations().size(), 5u);
  // One freed address is found again, wherever the cursor is.
  del(c, "c2");
  EXPECT_THAT(addresses_of(add(c, "c6")), UnorderedElementsAre("10.0.0.4/29"));
}

TEST_F(IpamAllocation, OneAddressPerRangeSet) {
  const json c = dual_conf();
  const Result r = add(c, "c1");
  ASSERT_EQ(r.ips.size(), 2u);
  EXPECT_EQ(r.ips[0].address, IpPrefix::parse("10.0.0.2/24"));
  EXPECT_EQ(r.ips[0].gateway, IpAddress::parse("10.0.0.1"));
  EXPECT_EQ(r.ips[1].address, IpPrefix::parse("fd00::2/64"));
  EXPECT_EQ(r.ips[1].gateway, IpAddress::parse("fd00::1"));
  EXPECT_EQ(slurp(state_dir() / "last_reserved_ip.0"), "10.0.0.2");
  EXPECT_EQ(slurp(state_dir() / "last_reserved_ip.1"), "fd00::2");
  EXPECT_THAT(addresses_of(add(c, "c2")), ::testing::ElementsAre("10.0.0.3/24", "fd00::3/64"));
}

TEST_F(IpamAllocation, RepeatedAddReturnsTheSameAddresses) {
  const json c = dual_conf();
  const Result first = add(c, "c1");
  add(c, "c2");
  const Result again = add(c, "c1");
  EXPECT_EQ(again, first);
  EXPECT_EQ(reservations().size(), 4u);
  // Another interface of the same container is another attachment.
  const Result eth1 = add(c, "c1", "eth1");
  EXPECT_THAT(addresses_of(eth1), ::testing::ElementsAre("10.0.0.4/24", "fd00::4/64"));
}

TEST_F(IpamAllocation, AllOrNothingWhenASecondRangeSetFails) {
  const json c = conf(json::parse(R"({"ranges": [[{"subnet": "10.0.0.0/24"}],
                                                 [{"subnet": "10.0.1.0/30"}]]})"));
  EXPECT_THAT(addresses_of(add(c, "c1")), ::testing::ElementsAre("10.0.0.2/24", "10.0.1.2/30"));
  expect_error([&] { add(c, "c2"); }, ErrorCode::address_pool_exhausted, {"10.0.1.0/30"});
  // c2's address of the first set was given back.
  EXPECT_THAT(holders(), UnorderedElementsAre("10.0.0.2 c1 eth0", "10.0.1.2 c1 eth0"));
  // A requested address taken in the second set rolls back the first set too.
  expect_error([&] { add(c, "c3", "eth0", "IP=10.0.1.2"); }, ErrorCode::address_taken,
               {"10.0.1.2"});
  EXPECT_THAT(holders(), UnorderedElementsAre("10.0.0.2 c1 eth0", "10.0.1.2 c1 eth0"));
  EXPECT_FALSE(fs::exists(state_dir() / "10.0.0.3"));
  EXPECT_FALSE(fs::exists(state_dir() / "10.0.0.4"));
}

struct RequestedIpCase {
  std::string name{};
  std::string top{};       // more top-level fields, a JSON object; empty: none
  std::string cni_args{};  // CNI_ARGS
  std::vector<std::string> expected{};
};

void PrintTo(const RequestedIpCase& c, std::ostream* os) {
  *os << c.name;
}

class IpamRequested : public IpamTest, public ::testing::WithParamInterface<RequestedIpCase> {};

TEST_P(IpamRequested, Honoured) {
  const RequestedIpCase& c = GetParam();
  const json cfg = conf(json::parse(R"({"ranges": [[{"subnet": "10.0.0.0/24"}],
                                                   [{"subnet": "fd00::/64"}]]})"),
                        c.top.empty() ? json::object() : json::parse(c.top));
  EXPECT_THAT(addresses_of(add(cfg, "c1", "eth0", c.cni_args)),
              ::testing::ElementsAreArray(c.expected));
  for (const auto& prefix : c.expected) {
    const std::string ip = IpPrefix::parse(prefix).address().to_string();
    EXPECT_EQ(slurp(state_dir() / ip), "c1\r\neth0") << ip;
  }
}

const RequestedIpCase kRequested[] = {
    {"args_cni_ips",
     R"({"args": {"cni": {"ips": ["10.0.0.7"]}}})",
     "",
     {"10.0.0.7/24", "fd00::2/64"}},
    {"runtime_config_ips_with_prefix",
     R"({"runtimeConfig": {"ips": ["10.0.0.7/24", "fd00::7/64"]}})",
     "",
     {"10.0.0.7/24", "fd00::7/64"}},
    {"cni_args_ip", "", "IP=fd00::9", {"10.0.0.2/24", "fd00::9/64"}},
    {"cni_args_ip_and_args_cni_ips",
     R"({"args": {"cni": {"ips": ["fd00::8"]}}})",
     "IgnoreUnknown=1;IP=10.0.0.8",
     {"10.0.0.8/24", "fd00::8/64"}},
    {"same_ip_from_two_sources",
     R"({"runtimeConfig": {"ips": ["10.0.0.5/24"]}})",
     "IP=10.0.0.5",
     {"10.0.0.5/24", "fd00::2/64"}},
};

INSTANTIATE_TEST_SUITE_P(Ipam, IpamRequested, ::testing::ValuesIn(kRequested),
                         [](const auto& info) { return info.param.name; });

TEST_F(IpamAllocation, RequestedAddressTakenIsCode102) {
  const json c = v4_conf();
  EXPECT_THAT(addresses_of(add(c, "c1", "eth0", "IP=10.0.0.7")),
              UnorderedElementsAre("10.0.0.7/24"));
  expect_error([&] { add(c, "c2", "eth0", "IP=10.0.0.7"); }, ErrorCode::address_taken,
               {"10.0.0.7"});
  EXPECT_EQ(slurp(state_dir() / "10.0.0.7"), "c1\r\neth0");
  // Round robin continues after the requested address.
  EXPECT_THAT(addresses_of(add(c, "c3")), UnorderedElementsAre("10.0.0.8/24"));
}

TEST_F(IpamAllocation, RequestedGatewayIsRefused) {
  const json c = v4_conf();
  expect_error([&] { add(c, "c1", "eth0", "IP=10.0.0.1"); }, ErrorCode::invalid_network_config,
               {"10.0.0.1", "gateway"});
  EXPECT_TRUE(reservations().empty());
}

// ---------------------------------------------------------------------------------------------
// 3. The on-disk layout

using IpamDisk = IpamTest;

TEST_F(IpamDisk, FilesAsHostLocalWritesThem) {
  const json c = dual_conf();
  add(c, "c1");
  EXPECT_EQ(slurp(state_dir() / "10.0.0.2"), "c1\r\neth0");
  EXPECT_EQ(slurp(state_dir() / "fd00::2"), "c1\r\neth0");
  EXPECT_EQ(slurp(state_dir() / "last_reserved_ip.0"), "10.0.0.2");
  EXPECT_EQ(slurp(state_dir() / "last_reserved_ip.1"), "fd00::2");
  // Nothing else: no temporary file is left behind.
  EXPECT_THAT(listing(state_dir()),
              UnorderedElementsAre("lock", "last_reserved_ip.0", "last_reserved_ip.1", "10.0.0.2",
                                   "fd00::2"));
  del(c, "c1");
  EXPECT_THAT(listing(state_dir()),
              UnorderedElementsAre("lock", "last_reserved_ip.0", "last_reserved_ip.1"));
}

TEST_F(IpamDisk, StaleTemporaryFileIsRemovedByTheNextAdd) {
  const json c = v4_conf();
  fs::create_directories(state_dir());
  write_file(state_dir() / ".flatnet-tmp-4242-123456", "dead\r\neth0");
  write_file(state_dir() / ".flatnet-tmp-4243-7", "");
  add(c, "c1");
  EXPECT_THAT(listing(state_dir()), UnorderedElementsAre("lock", "last_reserved_ip.0", "10.0.0.2"));
}

TEST_F(IpamDisk, ReservationsOfOldHostLocalVersionsAreReadAndReleased) {
  const json c = v4_conf();
  fs::create_directories(state_dir());
  write_file(state_dir() / "10.0.0.9", "old-container");  // host-local before v0.8: ID only
  write_file(state_dir() / "10.0.0.10", "other\n");
  EXPECT_THAT(holders(), UnorderedElementsAre("10.0.0.9 old-container ", "10.0.0.10 other "));
  // CHECK finds it; a repeated ADD returns it.
  const Environment env = env_for("old-container");
  EXPECT_NO_THROW(ipam_check(parse_config(c, env), env, std::nullopt));
  EXPECT_THAT(addresses_of(add(c, "old-container")), UnorderedElementsAre("10.0.0.9/24"));
  del(c, "old-container");
  EXPECT_FALSE(fs::exists(state_dir() / "10.0.0.9"));
  EXPECT_TRUE(fs::exists(state_dir() / "10.0.0.10"));
}

TEST_F(IpamDisk, StoreReserveFindRelease) {
  IpamStore store(state_dir());
  const auto lock = store.lock();
  const IpAddress a = IpAddress::parse("10.0.0.5");
  EXPECT_TRUE(store.reserve(a, "  c1 \n", "eth0", 3));  // the ID is trimmed, as host-local does
  EXPECT_FALSE(store.reserve(a, "c2", "eth0", 3));
  EXPECT_EQ(slurp(state_dir() / "10.0.0.5"), "c1\r\neth0");
  EXPECT_EQ(store.last_reserved(3), a);
  EXPECT_FALSE(store.last_reserved(0));
  EXPECT_THAT(store.find("c1", "eth0"), ::testing::ElementsAre(a));
  EXPECT_TRUE(store.find("c1", "eth1").empty());
  EXPECT_EQ(store.release("c1", "eth1"), 0u);
  EXPECT_EQ(store.release("c1", "eth0"), 1u);
  EXPECT_FALSE(store.release(a));
  EXPECT_THAT(listing(state_dir()), UnorderedElementsAre("lock", "last_reserved_ip.3"));
}

// ---------------------------------------------------------------------------------------------
// 4. DEL, CHECK, GC, STATUS

using IpamDel = IpamTest;

TEST_F(IpamDel, IsIdempotent) {
  const json c = v4_conf();
  add(c, "c1");
  add(c, "c2");
  del(c, "c1");
  EXPECT_NO_THROW(del(c, "c1"));
  EXPECT_NO_THROW(del(c, "never-added"));
  EXPECT_NO_THROW(del(c, "c2", "eth9"));  // another interface: c2's eth0 stays
  EXPECT_THAT(holders(), UnorderedElementsAre("10.0.0.3 c2 eth0"));
}

TEST_F(IpamDel, OnAFreshDataDir) {
  EXPECT_NO_THROW(del(v4_conf(), "c1"));
  EXPECT_TRUE(reservations().empty());
}

using IpamCheck = IpamTest;

TEST_F(IpamCheck, PassesAfterAddFailsAfterDel) {
  const json c = dual_conf();
  const Result result = add(c, "c1");
  json with_prev = c;
  with_prev["prevResult"] = to_json(result, "1.0.0");
  const NetConf netconf = parse_netconf(with_prev.dump());
  const Environment env = env_for("c1");
  const IpamConfig config = parse_ipam_config(netconf, env);
  EXPECT_NO_THROW(ipam_check(config, env, netconf.prev_result));
  EXPECT_NO_THROW(ipam_check(config, env, std::nullopt));

  const Environment other = env_for("c1", "eth1");
  expect_error([&] { ipam_check(config, other, std::nullopt); }, ErrorCode::plugin_failure,
               {"c1", "eth1"});

  del(c, "c1");
  expect_error([&] { ipam_check(config, env, netconf.prev_result); }, ErrorCode::plugin_failure,
               {"container c1", "10.0.0.0/24"});
}

TEST_F(IpamCheck, FailsWhenPrevResultListsAnAddressNotReserved) {
  const json c = v4_conf();
  add(c, "c1");
  add(c, "c2");
  const Environment env = env_for("c1");
  const IpamConfig config = parse_config(c, env);
  Result prev;
  prev.ips.push_back({IpPrefix::parse("10.0.0.3/24"), IpAddress::parse("10.0.0.1"), {}});
  expect_error([&] { ipam_check(config, env, prev); }, ErrorCode::plugin_failure,
               {"10.0.0.3", "c1"});
  // Addresses outside our ranges (another plugin's) are not ours to check.
  prev.ips = {{IpPrefix::parse("10.0.0.2/24"), {}, {}},
              {IpPrefix::parse("192.168.0.5/24"), {}, {}}};
  EXPECT_NO_THROW(ipam_check(config, env, prev));
}

class IpamGc : public IpamTest {
 protected:
  void SetUp() override {
    IpamTest::SetUp();
    c_ = v4_conf();
    add(c_, "a");          // .2
    add(c_, "b");          // .3
    add(c_, "c");          // .4
    add(c_, "c", "eth1");  // .5
    fs::create_directories(state_dir());
    write_file(state_dir() / "10.0.0.50", "d");  // old host-local: ID only
    write_file(state_dir() / "10.0.0.51", "e");
  }
  void gc(const json& top) {
    json raw = c_;
    for (const auto& [key, value] : top.items())
      raw[key] = value;
    const NetConf netconf = parse_netconf(raw.dump());
    ipam_gc(parse_ipam_config(netconf, env_for("gc")), netconf.raw);
  }
  json c_;
};

TEST_F(IpamGc, ReleasesWhatIsNotAValidAttachment) {
  gc({{"cni.dev/valid-attachments",
       {{{"containerID", "a"}, {"ifname", "eth0"}},
        {{"containerID", "c"}, {"ifname", "eth0"}},
        {{"containerID", "d"}, {"ifname", "eth0"}}}},
      // Ignored when cni.dev/valid-attachments is present.
      {"cni.dev/attachments", {{{"containerID", "b"}, {"ifname", "eth0"}}}}});
  EXPECT_THAT(holders(),
              UnorderedElementsAre("10.0.0.2 a eth0", "10.0.0.4 c eth0", "10.0.0.50 d "));
}

TEST_F(IpamGc, FallsBackToAttachments) {
  gc({{"cni.dev/attachments", {{{"containerID", "b"}, {"ifname", "eth0"}}}}});
  EXPECT_THAT(holders(), UnorderedElementsAre("10.0.0.3 b eth0"));
}

TEST_F(IpamGc, EmptyListReleasesEverything) {
  gc({{"cni.dev/valid-attachments", json::array()}});
  EXPECT_TRUE(holders().empty());
  EXPECT_THAT(listing(state_dir()), UnorderedElementsAre("lock", "last_reserved_ip.0"));
}

TEST_F(IpamGc, ReleasesNothingWithoutEitherKey) {
  gc(json::object());
  EXPECT_EQ(holders().size(), 6u);
}

TEST_F(IpamGc, RejectsAMalformedList) {
  expect_error(
      [&] {
        gc({{"cni.dev/valid-attachments", "a"}});
      },
      ErrorCode::invalid_network_config, {"cni.dev/valid-attachments", "\"a\""});
  expect_error(
      [&] {
        gc({{"cni.dev/attachments", {{{"ifname", "eth0"}}}}});
      },
      ErrorCode::invalid_network_config, {"cni.dev/attachments[0].containerID"});
  expect_error(
      [&] {
        gc({{"cni.dev/valid-attachments", {{{"containerID", "a"}, {"ifname", 7}}}}});
      },
      ErrorCode::invalid_network_config, {"cni.dev/valid-attachments[0].ifname", "7"});
  EXPECT_EQ(holders().size(), 6u);  // nothing released on a bad list
}

using IpamStatus = IpamTest;

TEST_F(IpamStatus, OkWhileFreeAddressesRemain) {
  const json c = dual_conf();
  EXPECT_NO_THROW(ipam_status(parse_config(c)));  // nothing on disk yet
  add(c, "c1");
  EXPECT_NO_THROW(ipam_status(parse_config(c)));
}

TEST_F(IpamStatus, Code50NamingTheFullRangeSet) {
  const json c = conf(json::parse(R"({"ranges": [[{"subnet": "fd00::/64"}],
                                                 [{"subnet": "10.0.0.0/29"}]]})"));
  for (int i = 0; i < 4; ++i)
    add(c, "c" + std::to_string(i));
  EXPECT_NO_THROW(ipam_status(parse_config(c)));
  add(c, "c4");
  expect_error([&] { ipam_status(parse_config(c)); }, ErrorCode::plugin_not_available,
               {"10.0.0.0/29", kNetwork});
  del(c, "c0");
  EXPECT_NO_THROW(ipam_status(parse_config(c)));
}

// ---------------------------------------------------------------------------------------------
// 5. Many writers on one dataDir

using IpamConcurrency = IpamTest;

TEST_F(IpamConcurrency, ParallelAddDelNeverSharesAnAddress) {
  constexpr int kThreads = 8;
  constexpr int kCycles = 50;
  const json c = v4_conf("10.0.0.0/28");  // 13 addresses for 8 holders: plenty of reuse
  const IpamConfig config = parse_config(c);

  std::mutex mutex;
  std::map<std::string, std::string> held;  // address -> holder, as the threads see it
  std::vector<std::string> failures;
  auto fail = [&](const std::string& what) {
    std::lock_guard guard(mutex);
    failures.push_back(what);
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < kCycles; ++k) {
        const std::string id = "t" + std::to_string(t) + "-" + std::to_string(k);
        const Environment env = env_for(id);
        try {
          const Result r = ipam_add(config, env);
          if (r.ips.size() != 1) {
            fail(id + ": " + std::to_string(r.ips.size()) + " addresses");
            continue;
          }
          const std::string ip = r.ips[0].address.address().to_string();
          const std::string content = slurp(config.state_dir() / ip);
          if (content != id + "\r\neth0") fail(id + ": " + ip + " holds \"" + content + "\"");
          {
            std::lock_guard guard(mutex);
            const auto [it, inserted] = held.emplace(ip, id);
            if (!inserted) failures.push_back(ip + " given to " + id + " and " + it->second);
          }
          {
            std::lock_guard guard(mutex);
            held.erase(ip);
          }
          ipam_del(config, env);
        } catch (const std::exception& e) {
          fail(id + ": " + e.what());
        }
      }
    });
  }
  for (auto& thread : threads)
    thread.join();
  EXPECT_THAT(failures, ::testing::IsEmpty());
  EXPECT_THAT(listing(state_dir()), UnorderedElementsAre("lock", "last_reserved_ip.0"));
}

// ---------------------------------------------------------------------------------------------
// 6. The reference host-local on the same dataDir

class IpamInterop : public IpamTest {
 protected:
  void SetUp() override {
    IpamTest::SetUp();
    if (::access(kHostLocal, X_OK) != 0) GTEST_SKIP() << kHostLocal << " is not installed";
  }

  ExecOutput run_host_local(const std::string& command, const std::string& id, const json& c,
                            const std::string& ifname = "eth0") {
    std::map<std::string, std::string> vars = {{"CNI_COMMAND", command},
                                               {"CNI_CONTAINERID", id},
                                               {"CNI_IFNAME", ifname},
                                               {"CNI_PATH", "/usr/lib/cni"}};
    if (command != "DEL") vars["CNI_NETNS"] = "/var/run/netns/" + id;  // never opened
    return exec_program(kHostLocal, vars, c.dump());
  }
  Result host_local_add(const json& c, const std::string& id) {
    const ExecOutput out = run_host_local("ADD", id, c);
    EXPECT_EQ(out.status, 0) << out.out << out.err;
    if (out.status != 0) return {};
    return parse_result(json::parse(out.out));
  }
  void host_local(const std::string& command, const json& c, const std::string& id) {
    const ExecOutput out = run_host_local(command, id, c);
    EXPECT_EQ(out.status, 0) << command << " " << id << ": " << out.out << out.err;
  }
};

TEST_F(IpamInterop, AlternatingAddsNeverDuplicate) {
  const json c = dual_conf();
  std::vector<std::string> v4, all;
  std::map<std::string, std::vector<std::string>> by_container;
  for (int i = 0; i < 8; ++i) {
    for (const bool reference : {true, false}) {
      const std::string id = (reference ? "hl-" : "fn-") + std::to_string(i);
      const Result r = reference ? host_local_add(c, id) : add(c, id);
      ASSERT_EQ(r.ips.size(), 2u) << id;
      v4.push_back(r.ips[0].address.to_string());
      for (const auto& ip : r.ips) {
        all.push_back(ip.address.address().to_string());
        by_container[id].push_back(ip.address.address().to_string());
      }
    }
  }
  EXPECT_EQ(std::set<std::string>(all.begin(), all.end()).size(), all.size());
  // Both follow last_reserved_ip.0, so the addresses come in order.
  std::vector<std::string> expected_v4;
  for (int i = 2; i < 18; ++i)
    expected_v4.push_back("10.0.0." + std::to_string(i) + "/24");
  EXPECT_EQ(v4, expected_v4);

  // host-local's files are read as ours.
  std::vector<std::string> expected_holders;
  for (const auto& [id, ips] : by_container) {
    for (const auto& ip : ips)
      expected_holders.push_back(ip + " " + id + " eth0");
  }
  EXPECT_THAT(holders(), UnorderedElementsAreArray(expected_holders));
  IpamStore store(state_dir());
  const auto lock = store.lock();
  std::vector<std::string> found;
  for (const auto& a : store.find("hl-3", "eth0"))
    found.push_back(a.to_string());
  EXPECT_THAT(found, UnorderedElementsAreArray(by_container["hl-3"]));
}

TEST_F(IpamInterop, HostLocalDelReleasesOurReservations) {
  const json c = dual_conf();
  add(c, "fn-1");
  add(c, "fn-2");
  host_local("CHECK", c, "fn-1");
  host_local("DEL", c, "fn-1");
  EXPECT_THAT(holders(), UnorderedElementsAre("10.0.0.3 fn-2 eth0", "fd00::3 fn-2 eth0"));
  // After a host-local ADD continues where we stopped, our DEL frees it again.
  const Result r = host_local_add(c, "hl-1");
  EXPECT_THAT(addresses_of(r), ::testing::ElementsAre("10.0.0.4/24", "fd00::4/64"));
  del(c, "fn-2");
  host_local("DEL", c, "hl-1");
  EXPECT_THAT(listing(state_dir()),
              UnorderedElementsAre("lock", "last_reserved_ip.0", "last_reserved_ip.1"));
}

TEST_F(IpamInterop, OurDelReleasesHostLocalReservations) {
  const json c = dual_conf();
  const Result r = host_local_add(c, "hl-1");
  host_local_add(c, "hl-2");
  const Environment env = env_for("hl-1");
  const IpamConfig config = parse_config(c, env);
  EXPECT_NO_THROW(ipam_check(config, env, r));
  // A repeated ADD through us returns what host-local gave.
  EXPECT_EQ(ipam_add(config, env), r);
  ipam_del(config, env);
  EXPECT_THAT(holders(), UnorderedElementsAre("10.0.0.3 hl-2 eth0", "fd00::3 hl-2 eth0"));
  // Files written by an old host-local (ID only) are released by both.
  write_file(state_dir() / "10.0.0.40", "old-1");
  write_file(state_dir() / "10.0.0.41", "old-2");
  host_local("DEL", c, "old-1");
  del(c, "old-2");
  EXPECT_THAT(holders(), UnorderedElementsAre("10.0.0.3 hl-2 eth0", "fd00::3 hl-2 eth0"));
}

TEST_F(IpamInterop, ConcurrentWithHostLocalOnOneLock) {
  constexpr int kEach = 12;
  const json c = v4_conf();
  std::vector<std::string> ours, theirs;
  std::thread reference([&] {
    for (int i = 0; i < kEach; ++i) {
      const ExecOutput out = run_host_local("ADD", "hl-" + std::to_string(i), c);
      if (out.status == 0) {
        for (const auto& ip : parse_result(json::parse(out.out)).ips)
          theirs.push_back(ip.address.address().to_string());
      }
    }
  });
  for (int i = 0; i < kEach; ++i) {
    for (const auto& ip : add(c, "fn-" + std::to_string(i)).ips)
      ours.push_back(ip.address.address().to_string());
  }
  reference.join();
  EXPECT_EQ(ours.size(), static_cast<std::size_t>(kEach));
  EXPECT_EQ(theirs.size(), static_cast<std::size_t>(kEach));
  std::set<std::string> all(ours.begin(), ours.end());
  all.insert(theirs.begin(), theirs.end());
  EXPECT_EQ(all.size(), ours.size() + theirs.size());
  EXPECT_EQ(reservations().size(), all.size());
  for (const auto& name : listing(state_dir()))
    EXPECT_EQ(name.rfind(".flatnet-tmp-", 0), std::string::npos) << name;
}

}  // namespace
}  // namespace flatnet::cni
