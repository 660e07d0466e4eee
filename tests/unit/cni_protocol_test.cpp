// The CNI protocol library as a runtime sees it: the CNI_* environment and the stdin
// configuration go in through run_plugin, and what comes out is a result in the configuration's
// spec version or an error JSON whose code the spec defines and whose message names the culprit.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "flatnet/cni/environment.hpp"
#include "flatnet/cni/error.hpp"
#include "flatnet/cni/netconf.hpp"
#include "flatnet/cni/plugin.hpp"
#include "flatnet/cni/types.hpp"
#include "flatnet/cni/version.hpp"

namespace flatnet::cni {
namespace {

using netmodel::IpAddress;
using netmodel::IpPrefix;
using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

using Vars = std::map<std::string, std::string>;
// Changes to the standard environment: a value to set, or nullptr to leave the variable out.
using Changes = std::vector<std::pair<std::string, const char*>>;

// What a runtime sets for `command` on a valid attachment, with `changes` applied.
Vars env(const std::string& command, const Changes& changes = {}) {
  Vars vars = {{"CNI_COMMAND", command},
               {"CNI_CONTAINERID", "3f1c9e0a7b2d"},
               {"CNI_NETNS", "/run/netns/flatnet-pod-1"},
               {"CNI_IFNAME", "eth0"},
               {"CNI_PATH", "/opt/cni/bin:/usr/lib/cni"}};
  for (const auto& [name, value] : changes) {
    if (value) {
      vars[name] = value;
    } else {
      vars.erase(name);
    }
  }
  return vars;
}

// A valid network configuration of `version`, with `extra` fields appended.
std::string conf(const std::string& version, const std::string& extra = "") {
  return R"({"cniVersion":")" + version + R"(","name":"flatnet-net","type":"flatnet-cni")" +
         (extra.empty() ? "" : "," + extra) + "}";
}

std::set<std::string> keys_of(const json& object) {
  std::set<std::string> keys;
  for (const auto& [key, value] : object.items())
    keys.insert(key);
  return keys;
}

// A recording plugin: counts the calls, keeps the last request, returns `result` from add and
// runs `fail` (when set) at the start of every command.
class FakePlugin : public Plugin {
 public:
  Result result{};
  std::function<void()> fail{};
  int adds = 0, dels = 0, checks = 0, statuses = 0, gcs = 0;
  std::optional<Request> last{};

  int calls() const { return adds + dels + checks + statuses + gcs; }

  Result add(const Request& request) override {
    record(request, adds);
    return result;
  }
  void del(const Request& request) override { record(request, dels); }
  void check(const Request& request) override { record(request, checks); }
  void status(const Request& request) override { record(request, statuses); }
  void gc(const Request& request) override { record(request, gcs); }

 private:
  void record(const Request& request, int& counter) {
    ++counter;
    last = request;
    if (fail) fail();
  }
};

struct Outcome {
  int status = -1;
  std::string out{};
  std::string err{};
};

// Runs the plugin as a runtime executes it: `vars` is the whole environment (getenv returns
// nullptr for anything else), `stdin_text` the whole of stdin.
Outcome run(FakePlugin& plugin, const Vars& vars, const std::string& stdin_text) {
  std::string out, err;
  const Getenv getenv = [&vars](const char* name) -> const char* {
    const auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
  const int status =
      run_plugin(plugin, PluginIo{getenv, stdin_text, &out, &err}, "flatnet-cni (test)");
  return {status, out, err};
}

// The spec's rule for the cniVersion of an error: the configuration's, when it is one the plugin
// speaks; otherwise the plugin's latest.
std::string expected_error_version(const std::string& stdin_text) {
  const json j = json::parse(stdin_text, nullptr, false);
  if (j.is_object() && j.contains("cniVersion") && j["cniVersion"].is_string() &&
      is_supported_version(j["cniVersion"].get<std::string>())) {
    return j["cniVersion"].get<std::string>();
  }
  return std::string(kLatestVersion);
}

// A result that uses every field: two interfaces (one on the host, one in the sandbox with the
// 1.1.0 fields), an IPv4 and an IPv6 address on the sandbox interface, routes with and without
// a gateway and with the 1.1.0 route fields, and DNS.
Result sample_result() {
  Result r;
  r.interfaces = {Interface{.name = "flatnet-br0", .mac = "0a:58:0a:f4:01:01", .mtu = 1500},
                  Interface{.name = "eth0",
                            .mac = "0a:58:0a:f4:01:05",
                            .mtu = 9000,
                            .sandbox = "/run/netns/flatnet-pod-1",
                            .socket_path = "/run/vhost-user/eth0.sock",
                            .pci_id = "0000:00:1f.6"}};
  r.ips = {IpConfig{.address = IpPrefix::parse("10.244.1.5/24"),
                    .gateway = IpAddress::parse("10.244.1.1"),
                    .interface = 1},
           IpConfig{.address = IpPrefix::parse("fd00:10:244:1::5/64"),
                    .gateway = IpAddress::parse("fd00:10:244:1::1"),
                    .interface = 1}};
  r.routes = {
      RouteEntry{.dst = IpPrefix::parse("0.0.0.0/0"),
                 .gw = IpAddress::parse("10.244.1.1"),
                 .mtu = 1400,
                 .advmss = 1360,
                 .priority = 100,
                 .table = 254,
                 .scope = 0},
      RouteEntry{.dst = IpPrefix::parse("10.96.0.0/12")},
      RouteEntry{.dst = IpPrefix::parse("::/0"), .gw = IpAddress::parse("fd00:10:244:1::1")}};
  r.dns = Dns{.nameservers = {"10.96.0.10"},
              .domain = "cluster.local",
              .search = {"default.svc.cluster.local", "svc.cluster.local"},
              .options = {"ndots:5"}};
  return r;
}

// `r` as a version without the 1.1.0 fields carries it.
Result without_v11_fields(Result r) {
  for (auto& iface : r.interfaces) {
    iface.mtu.reset();
    iface.socket_path.clear();
    iface.pci_id.clear();
  }
  for (auto& route : r.routes) {
    route.mtu.reset();
    route.advmss.reset();
    route.priority.reset();
    route.table.reset();
    route.scope.reset();
  }
  return r;
}

// --- the spec's error codes ---

TEST(ErrorCode, NumbersAreTheSpecs) {
  EXPECT_EQ(static_cast<int>(ErrorCode::incompatible_version), 1);
  EXPECT_EQ(static_cast<int>(ErrorCode::unsupported_field), 2);
  EXPECT_EQ(static_cast<int>(ErrorCode::unknown_container), 3);
  EXPECT_EQ(static_cast<int>(ErrorCode::invalid_environment), 4);
  EXPECT_EQ(static_cast<int>(ErrorCode::io_failure), 5);
  EXPECT_EQ(static_cast<int>(ErrorCode::decoding_failure), 6);
  EXPECT_EQ(static_cast<int>(ErrorCode::invalid_network_config), 7);
  EXPECT_EQ(static_cast<int>(ErrorCode::try_again_later), 11);
  EXPECT_EQ(static_cast<int>(ErrorCode::plugin_not_available), 50);
  EXPECT_EQ(static_cast<int>(ErrorCode::limited_connectivity), 51);
  EXPECT_GE(static_cast<int>(ErrorCode::plugin_failure), 100) << "codes below 100 are the spec's";
}

TEST(CniError, JsonRoundTripKeepsCodeMessageAndDetails) {
  const CniError e(ErrorCode::try_again_later, "store locked", "/var/lib/cni/networks/x");
  const json j = e.to_json("1.0.0");
  EXPECT_EQ(keys_of(j), (std::set<std::string>{"cniVersion", "code", "msg", "details"}));
  EXPECT_EQ(j["cniVersion"], "1.0.0");
  const CniError back = CniError::from_json(j);
  EXPECT_EQ(back.code(), ErrorCode::try_again_later);
  EXPECT_STREQ(back.what(), "store locked");
  EXPECT_EQ(back.details(), "/var/lib/cni/networks/x");
  EXPECT_FALSE(CniError(ErrorCode::io_failure, "x").to_json("1.1.0").contains("details"));
}

TEST(CniError, FromJsonRefusesWhatIsNotAnError) {
  for (const char* text : {R"([])", R"({"msg":"x"})", R"({"code":"7"})", R"("x")"}) {
    try {
      CniError::from_json(json::parse(text));
      ADD_FAILURE() << "accepted " << text;
    } catch (const CniError& e) {
      EXPECT_EQ(e.code(), ErrorCode::decoding_failure) << text;
    }
  }
}

// --- bad input through run_plugin: the error table ---

struct ErrorCase {
  std::string label{};
  Vars env{};
  std::string stdin_text{};
  ErrorCode code{};
  std::vector<std::string> culprits{};   // each must appear in msg
  std::vector<std::string> not_named{};  // none may appear in msg
  friend void PrintTo(const ErrorCase& c, std::ostream* out) { *out << c.label; }
};

class ErrorCodes : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(ErrorCodes, PrintsTheSpecErrorNamingTheCulpritAndNeverCallsThePlugin) {
  const auto& c = GetParam();
  FakePlugin plugin;
  const Outcome o = run(plugin, c.env, c.stdin_text);
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(plugin.calls(), 0) << "the plugin ran on bad input";
  const json j = json::parse(o.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << "stdout is not a JSON object: " << o.out;
  ASSERT_TRUE(j.contains("code") && j["code"].is_number_integer()) << o.out;
  EXPECT_EQ(j["code"].get<int>(), static_cast<int>(c.code)) << o.out;
  ASSERT_TRUE(j.contains("msg") && j["msg"].is_string()) << o.out;
  const std::string msg = j["msg"].get<std::string>();
  for (const auto& culprit : c.culprits)
    EXPECT_THAT(msg, HasSubstr(culprit));
  for (const auto& other : c.not_named)
    EXPECT_THAT(msg, Not(HasSubstr(other)));
  ASSERT_TRUE(j.contains("cniVersion") && j["cniVersion"].is_string()) << o.out;
  EXPECT_EQ(j["cniVersion"].get<std::string>(), expected_error_version(c.stdin_text));
  EXPECT_EQ(CniError::from_json(j).numeric_code(), static_cast<int>(c.code));
}

const std::string kConf = conf("1.0.0");
constexpr auto kEnv = ErrorCode::invalid_environment;
constexpr auto kVersion = ErrorCode::incompatible_version;
constexpr auto kDecoding = ErrorCode::decoding_failure;
constexpr auto kConfig = ErrorCode::invalid_network_config;

// A configuration whose prevResult is `prev`.
std::string with_prev(const std::string& prev) {
  return conf("1.0.0", R"("prevResult":)" + prev);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ErrorCodes,
    ::testing::Values(
        // CNI_COMMAND
        ErrorCase{"command_missing",
                  env("ADD", {{"CNI_COMMAND", nullptr}}),
                  kConf,
                  kEnv,
                  {"CNI_COMMAND"}},
        ErrorCase{"command_empty", env("ADD", {{"CNI_COMMAND", ""}}), kConf, kEnv, {"CNI_COMMAND"}},
        ErrorCase{"command_unknown", env("GET"), kConf, kEnv, {"CNI_COMMAND", "\"GET\""}},
        ErrorCase{"command_lower_case", env("add"), kConf, kEnv, {"CNI_COMMAND", "\"add\""}},
        // required variables, alone and together
        ErrorCase{"add_without_containerid",
                  env("ADD", {{"CNI_CONTAINERID", nullptr}}),
                  kConf,
                  kEnv,
                  {"CNI_CONTAINERID"},
                  {"CNI_NETNS", "CNI_IFNAME", "CNI_PATH"}},
        ErrorCase{"add_without_netns",
                  env("ADD", {{"CNI_NETNS", nullptr}}),
                  kConf,
                  kEnv,
                  {"CNI_NETNS"},
                  {"CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"}},
        ErrorCase{"add_without_ifname",
                  env("ADD", {{"CNI_IFNAME", nullptr}}),
                  kConf,
                  kEnv,
                  {"CNI_IFNAME"},
                  {"CNI_CONTAINERID", "CNI_NETNS", "CNI_PATH"}},
        ErrorCase{"add_without_path",
                  env("ADD", {{"CNI_PATH", nullptr}}),
                  kConf,
                  kEnv,
                  {"CNI_PATH"},
                  {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"}},
        ErrorCase{
            "add_with_empty_netns", env("ADD", {{"CNI_NETNS", ""}}), kConf, kEnv, {"CNI_NETNS"}},
        ErrorCase{"add_without_four",
                  Vars{{"CNI_COMMAND", "ADD"}},
                  kConf,
                  kEnv,
                  {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"}},
        ErrorCase{"add_without_netns_and_path",
                  env("ADD", {{"CNI_NETNS", nullptr}, {"CNI_PATH", nullptr}}),
                  kConf,
                  kEnv,
                  {"CNI_NETNS", "CNI_PATH"},
                  {"CNI_CONTAINERID", "CNI_IFNAME"}},
        ErrorCase{"check_without_netns_and_ifname",
                  env("CHECK", {{"CNI_NETNS", nullptr}, {"CNI_IFNAME", nullptr}}),
                  conf("0.4.0"),
                  kEnv,
                  {"CNI_NETNS", "CNI_IFNAME"},
                  {"CNI_CONTAINERID", "CNI_PATH"}},
        ErrorCase{"del_needs_ifname_but_not_netns",
                  env("DEL", {{"CNI_NETNS", nullptr}, {"CNI_IFNAME", nullptr}}),
                  kConf,
                  kEnv,
                  {"CNI_IFNAME"},
                  {"CNI_NETNS"}},
        ErrorCase{"del_without_containerid",
                  env("DEL", {{"CNI_CONTAINERID", nullptr}}),
                  kConf,
                  kEnv,
                  {"CNI_CONTAINERID"}},
        ErrorCase{"status_without_path",
                  Vars{{"CNI_COMMAND", "STATUS"}},
                  conf("1.1.0"),
                  kEnv,
                  {"CNI_PATH"},
                  {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"}},
        // CNI_CONTAINERID: ^[A-Za-z0-9][A-Za-z0-9_.-]*$
        ErrorCase{"containerid_leading_dash",
                  env("ADD", {{"CNI_CONTAINERID", "-3f1c"}}),
                  kConf,
                  kEnv,
                  {"CNI_CONTAINERID", "\"-3f1c\""}},
        ErrorCase{"containerid_leading_dot",
                  env("ADD", {{"CNI_CONTAINERID", ".."}}),
                  kConf,
                  kEnv,
                  {"CNI_CONTAINERID", "\"..\""}},
        ErrorCase{"containerid_slash",
                  env("ADD", {{"CNI_CONTAINERID", "3f1c/../etc"}}),
                  kConf,
                  kEnv,
                  {"CNI_CONTAINERID", "\"3f1c/../etc\""}},
        ErrorCase{"containerid_space",
                  env("DEL", {{"CNI_CONTAINERID", "3f1c 9e0a"}}),
                  kConf,
                  kEnv,
                  {"CNI_CONTAINERID", "\"3f1c 9e0a\""}},
        ErrorCase{"containerid_empty",
                  env("ADD", {{"CNI_CONTAINERID", ""}}),
                  kConf,
                  kEnv,
                  {"CNI_CONTAINERID"}},
        ErrorCase{"containerid_not_utf8",
                  env("ADD", {{"CNI_CONTAINERID", "3f1c\xff\xfe"}}),
                  kConf,
                  kEnv,
                  {"CNI_CONTAINERID"}},
        // CNI_IFNAME: what the kernel refuses
        ErrorCase{"ifname_16_bytes",
                  env("ADD", {{"CNI_IFNAME", "eth0123456789abc"}}),
                  kConf,
                  kEnv,
                  {"CNI_IFNAME", "\"eth0123456789abc\"", "16 bytes"}},
        ErrorCase{"ifname_slash",
                  env("ADD", {{"CNI_IFNAME", "eth/0"}}),
                  kConf,
                  kEnv,
                  {"CNI_IFNAME", "\"eth/0\""}},
        ErrorCase{"ifname_colon",
                  env("ADD", {{"CNI_IFNAME", "eth0:1"}}),
                  kConf,
                  kEnv,
                  {"CNI_IFNAME", "\"eth0:1\""}},
        ErrorCase{"ifname_space",
                  env("ADD", {{"CNI_IFNAME", "eth 0"}}),
                  kConf,
                  kEnv,
                  {"CNI_IFNAME", "\"eth 0\"", "whitespace"}},
        ErrorCase{"ifname_tab",
                  env("CHECK", {{"CNI_IFNAME", "eth0\t"}}),
                  conf("1.0.0"),
                  kEnv,
                  {"CNI_IFNAME", "whitespace"}},
        ErrorCase{
            "ifname_dot", env("ADD", {{"CNI_IFNAME", "."}}), kConf, kEnv, {"CNI_IFNAME", "\".\""}},
        ErrorCase{"ifname_dot_dot",
                  env("DEL", {{"CNI_IFNAME", ".."}}),
                  kConf,
                  kEnv,
                  {"CNI_IFNAME", "\"..\""}},
        ErrorCase{"ifname_not_utf8_with_slash",
                  env("ADD", {{"CNI_IFNAME", "\xff/"}}),
                  kConf,
                  kEnv,
                  {"CNI_IFNAME"}},
        // CNI_ARGS
        ErrorCase{"args_pair_without_value",
                  env("ADD", {{"CNI_ARGS", "novalue"}}),
                  kConf,
                  kEnv,
                  {"CNI_ARGS", "\"novalue\""}},
        ErrorCase{"args_pair_without_key",
                  env("ADD", {{"CNI_ARGS", "=x"}}),
                  kConf,
                  kEnv,
                  {"CNI_ARGS", "\"=x\""}},
        ErrorCase{"args_bad_pair_among_good",
                  env("DEL", {{"CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME;K8S_POD_NAMESPACE=x"}}),
                  kConf,
                  kEnv,
                  {"CNI_ARGS", "\"K8S_POD_NAME\""}},
        ErrorCase{"args_bad_on_gc",
                  env("GC", {{"CNI_ARGS", "x"}}),
                  conf("1.1.0"),
                  kEnv,
                  {"CNI_ARGS", "\"x\""}},
        // stdin that is not a JSON object
        ErrorCase{
            "stdin_not_json", env("ADD"), "{\"cniVersion\": \"1.0.0\",", kDecoding, {"stdin"}},
        ErrorCase{"stdin_empty", env("ADD"), "", kDecoding, {"stdin"}},
        ErrorCase{"stdin_not_utf8",
                  env("ADD"),
                  "{\"cniVersion\":\"1.0.0\",\"name\":\"\xff\"}",
                  kDecoding,
                  {"stdin"}},
        ErrorCase{"stdin_array", env("ADD"), "[" + kConf + "]", kDecoding, {"JSON object"}},
        ErrorCase{"stdin_string", env("DEL"), "\"1.0.0\"", kDecoding, {"JSON object"}},
        // cniVersion
        ErrorCase{"version_missing",
                  env("ADD"),
                  R"({"name":"flatnet-net","type":"flatnet-cni"})",
                  kVersion,
                  {"cniVersion"}},
        ErrorCase{"version_not_a_string",
                  env("ADD"),
                  R"({"cniVersion":1.0,"name":"flatnet-net","type":"flatnet-cni"})",
                  kVersion,
                  {"cniVersion"}},
        ErrorCase{"version_0_2_0", env("ADD"), conf("0.2.0"), kVersion, {"\"0.2.0\""}},
        ErrorCase{"version_0_1_0", env("DEL"), conf("0.1.0"), kVersion, {"\"0.1.0\""}},
        ErrorCase{"version_2_0_0", env("ADD"), conf("2.0.0"), kVersion, {"\"2.0.0\""}},
        ErrorCase{"version_1_0", env("ADD"), conf("1.0"), kVersion, {"\"1.0\""}},
        // name and type
        ErrorCase{"name_missing",
                  env("ADD"),
                  R"({"cniVersion":"1.0.0","type":"flatnet-cni"})",
                  kConfig,
                  {"name", "required"}},
        ErrorCase{"name_empty",
                  env("ADD"),
                  R"({"cniVersion":"1.0.0","name":"","type":"flatnet-cni"})",
                  kConfig,
                  {"name", "required"}},
        ErrorCase{"name_with_space",
                  env("ADD"),
                  R"({"cniVersion":"1.0.0","name":"pod net","type":"flatnet-cni"})",
                  kConfig,
                  {"name", "\"pod net\""}},
        ErrorCase{"name_with_slash",
                  env("DEL"),
                  R"({"cniVersion":"0.3.1","name":"pods/net","type":"flatnet-cni"})",
                  kConfig,
                  {"name", "\"pods/net\""}},
        ErrorCase{"name_leading_underscore",
                  env("ADD"),
                  R"({"cniVersion":"1.1.0","name":"_net","type":"flatnet-cni"})",
                  kConfig,
                  {"name", "\"_net\""}},
        ErrorCase{"name_not_a_string",
                  env("ADD"),
                  R"({"cniVersion":"1.0.0","name":42,"type":"flatnet-cni"})",
                  kConfig,
                  {"name", "42"}},
        ErrorCase{"type_missing",
                  env("ADD"),
                  R"({"cniVersion":"1.0.0","name":"flatnet-net"})",
                  kConfig,
                  {"type", "required"}},
        ErrorCase{"type_empty",
                  env("ADD"),
                  R"({"cniVersion":"1.0.0","name":"flatnet-net","type":""})",
                  kConfig,
                  {"type", "required"}},
        ErrorCase{"type_not_a_string",
                  env("ADD"),
                  R"({"cniVersion":"1.0.0","name":"flatnet-net","type":["bridge"]})",
                  kConfig,
                  {"type", "[\"bridge\"]"}},
        // ipam
        ErrorCase{"ipam_a_string",
                  env("ADD"),
                  conf("1.0.0", R"("ipam":"host-local")"),
                  kConfig,
                  {"ipam", "\"host-local\""}},
        ErrorCase{"ipam_a_list",
                  env("ADD"),
                  conf("1.0.0", R"("ipam":[{"type":"host-local"}])"),
                  kConfig,
                  {"ipam"}},
        ErrorCase{"ipam_type_not_a_string",
                  env("ADD"),
                  conf("1.0.0", R"("ipam":{"type":7})"),
                  kConfig,
                  {"ipam.type", "7"}},
        // prevResult
        ErrorCase{
            "prev_result_not_an_object", env("CHECK"), with_prev("[]"), kDecoding, {"result"}},
        ErrorCase{"prev_result_bad_address",
                  env("CHECK"),
                  with_prev(R"({"ips":[{"address":"10.244.1.300/24"}]})"),
                  kDecoding,
                  {"ips[0].address", "10.244.1.300/24"}},
        ErrorCase{"prev_result_address_without_length",
                  env("DEL"),
                  with_prev(R"({"ips":[{"address":"10.244.1.5"}]})"),
                  kDecoding,
                  {"ips[0].address", "10.244.1.5"}},
        ErrorCase{"prev_result_bad_gateway",
                  env("CHECK"),
                  with_prev(R"({"ips":[{"address":"10.244.1.5/24","gateway":"gw"}]})"),
                  kDecoding,
                  {"ips[0].gateway", "\"gw\""}},
        ErrorCase{"prev_result_interface_out_of_range",
                  env("CHECK"),
                  with_prev(R"({"interfaces":[{"name":"eth0"}],
                                "ips":[{"address":"10.244.1.5/24","interface":1}]})"),
                  kDecoding,
                  {"ips[0].interface", "1"}},
        ErrorCase{"prev_result_interface_negative",
                  env("CHECK"),
                  with_prev(R"({"interfaces":[{"name":"eth0"}],
                                "ips":[{"address":"10.244.1.5/24","interface":-1}]})"),
                  kDecoding,
                  {"ips[0].interface", "-1"}},
        ErrorCase{"prev_result_interface_past_int",
                  env("CHECK"),
                  with_prev(R"({"interfaces":[{"name":"eth0"}],
                                "ips":[{"address":"10.244.1.5/24","interface":4294967296}]})"),
                  kDecoding,
                  {"ips[0].interface", "4294967296"}},
        ErrorCase{"prev_result_version_mismatch",
                  env("CHECK"),
                  with_prev(R"({"ips":[{"version":"6","address":"10.244.1.5/24"}]})"),
                  kDecoding,
                  {"ips[0].version", "\"6\""}},
        ErrorCase{"prev_result_route_without_dst",
                  env("CHECK"),
                  with_prev(R"({"routes":[{"gw":"10.244.1.1"}]})"),
                  kDecoding,
                  {"routes[0].dst", "required"}},
        ErrorCase{"prev_result_mtu_negative",
                  env("CHECK"),
                  with_prev(R"({"interfaces":[{"name":"eth0","mtu":-1}]})"),
                  kDecoding,
                  {"interfaces[0].mtu", "-1"}},
        ErrorCase{"prev_result_dns_a_list",
                  env("CHECK"),
                  with_prev(R"({"dns":["10.96.0.10"]})"),
                  kDecoding,
                  {"dns"}},
        // the commands a version allows
        ErrorCase{"check_with_0_3_1", env("CHECK"), conf("0.3.1"), kVersion, {"CHECK", "0.3.1"}},
        ErrorCase{"check_with_0_3_0", env("CHECK"), conf("0.3.0"), kVersion, {"CHECK", "0.3.0"}},
        ErrorCase{"status_with_1_0_0", env("STATUS"), conf("1.0.0"), kVersion, {"STATUS", "1.0.0"}},
        ErrorCase{"gc_with_1_0_0", env("GC"), conf("1.0.0"), kVersion, {"GC", "1.0.0"}},
        ErrorCase{"gc_with_0_4_0",
                  Vars{{"CNI_COMMAND", "GC"}, {"CNI_PATH", "/opt/cni/bin"}},
                  conf("0.4.0"),
                  kVersion,
                  {"GC", "0.4.0"}}));

// --- what the spec leaves to the environment ---

TEST(RunPlugin, MissingCommandPrintsAboutOnStderr) {
  FakePlugin plugin;
  const Outcome o = run(plugin, Vars{}, "");
  EXPECT_THAT(o.err, HasSubstr("flatnet-cni (test)"));
  EXPECT_EQ(o.status, 1);
}

TEST(RunPlugin, ErrorsAreInTheConfigurationsVersion) {
  FakePlugin plugin;
  const Outcome o = run(plugin, env("ADD", {{"CNI_IFNAME", "eth/0"}}), conf("0.3.1"));
  EXPECT_EQ(json::parse(o.out)["cniVersion"], "0.3.1");
}

TEST(RunPlugin, DelWithoutNetnsRunsThePlugin) {
  FakePlugin plugin;
  const Outcome o = run(plugin, env("DEL", {{"CNI_NETNS", nullptr}}), conf("1.0.0"));
  EXPECT_EQ(o.status, 0) << o.out;
  EXPECT_EQ(plugin.dels, 1);
  ASSERT_TRUE(plugin.last);
  EXPECT_EQ(plugin.last->env.netns, "");
}

TEST(RunPlugin, StatusAndGcNeedNoAttachment) {
  for (const char* command : {"STATUS", "GC"}) {
    FakePlugin plugin;
    const Outcome o =
        run(plugin, Vars{{"CNI_COMMAND", command}, {"CNI_PATH", "/opt/cni/bin"}}, conf("1.1.0"));
    EXPECT_EQ(o.status, 0) << command << ": " << o.out;
    EXPECT_EQ(o.out, "") << command;
    EXPECT_EQ(plugin.statuses + plugin.gcs, 1) << command;
  }
}

TEST(RunPlugin, CheckFrom040RunsThePlugin) {
  for (const char* version : {"0.4.0", "1.0.0", "1.1.0"}) {
    FakePlugin plugin;
    const Outcome o =
        run(plugin, env("CHECK"),
            conf(version,
                 R"("prevResult":{"ips":[{"address":"10.244.1.5/24","gateway":"10.244.1.1"}]})"));
    EXPECT_EQ(o.status, 0) << version << ": " << o.out;
    EXPECT_EQ(plugin.checks, 1) << version;
    ASSERT_TRUE(plugin.last && plugin.last->conf.prev_result) << version;
    EXPECT_EQ(plugin.last->conf.prev_result->ips.at(0).address, IpPrefix::parse("10.244.1.5/24"));
  }
}

TEST(RunPlugin, PluginErrorsKeepTheirCodeAndOthersBecomeCode100) {
  FakePlugin plugin;
  plugin.fail = [] { throw CniError(ErrorCode::try_again_later, "store is locked"); };
  Outcome o = run(plugin, env("ADD"), conf("1.0.0"));
  EXPECT_EQ(o.status, 1);
  json j = json::parse(o.out);
  EXPECT_EQ(j["code"], 11);
  EXPECT_EQ(j["msg"], "store is locked");
  EXPECT_EQ(j["cniVersion"], "1.0.0");

  plugin.fail = [] { throw std::runtime_error("create veth \"veth1\": File exists"); };
  o = run(plugin, env("DEL"), conf("0.4.0"));
  EXPECT_EQ(o.status, 1);
  j = json::parse(o.out);
  EXPECT_EQ(j["code"], static_cast<int>(ErrorCode::plugin_failure));
  EXPECT_THAT(j["msg"].get<std::string>(), HasSubstr("veth1"));
  EXPECT_EQ(j["cniVersion"], "0.4.0");
}

TEST(RunPlugin, HandsThePluginTheParsedRequest) {
  FakePlugin plugin;
  const Outcome o = run(
      plugin,
      env("ADD", {{"CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"}}),
      conf("1.1.0", R"("ipam":{"type":"flatnet-ipam","subnet":"10.244.1.0/24"},"mtu":1450)"));
  ASSERT_EQ(o.status, 0) << o.out;
  ASSERT_TRUE(plugin.last);
  const Request& r = *plugin.last;
  EXPECT_EQ(r.env.command, Command::add);
  EXPECT_EQ(r.env.container_id, "3f1c9e0a7b2d");
  EXPECT_EQ(r.env.netns, "/run/netns/flatnet-pod-1");
  EXPECT_EQ(r.env.ifname, "eth0");
  EXPECT_THAT(r.env.path, ElementsAre("/opt/cni/bin", "/usr/lib/cni"));
  EXPECT_EQ(r.env.args.get("K8S_POD_NAME"), "web-0");
  EXPECT_EQ(r.conf.cni_version, "1.1.0");
  EXPECT_EQ(r.conf.name, "flatnet-net");
  EXPECT_EQ(r.conf.type, "flatnet-cni");
  EXPECT_EQ(r.conf.ipam_type, "flatnet-ipam");
  EXPECT_FALSE(r.conf.prev_result);
  EXPECT_EQ(r.conf.raw["mtu"], 1450);
  // What a delegated plugin gets: the same variables, CNI_COMMAND replaced.
  const auto vars = r.env.to_variables(Command::del);
  EXPECT_EQ(vars.at("CNI_COMMAND"), "DEL");
  EXPECT_EQ(vars.at("CNI_PATH"), "/opt/cni/bin:/usr/lib/cni");
  EXPECT_EQ(vars.at("CNI_ARGS"), "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0");
}

// --- VERSION ---

class VersionCommand : public ::testing::TestWithParam<std::string> {};

TEST_P(VersionCommand, ListsEverySupportedVersionAndEchoesTheRequestedOne) {
  FakePlugin plugin;
  const std::string requested = GetParam();
  const Outcome o =
      run(plugin, Vars{{"CNI_COMMAND", "VERSION"}}, R"({"cniVersion":")" + requested + R"("})");
  EXPECT_EQ(o.status, 0);
  EXPECT_EQ(plugin.calls(), 0);
  const json j = json::parse(o.out);
  EXPECT_EQ(keys_of(j), (std::set<std::string>{"cniVersion", "supportedVersions"}));
  EXPECT_EQ(j["cniVersion"], requested);
  EXPECT_EQ(j["supportedVersions"], json::array({"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}));
}

INSTANTIATE_TEST_SUITE_P(Table, VersionCommand,
                         ::testing::Values("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"));

TEST(VersionCommand, WorksWithEmptyStdinAndNoOtherVariables) {
  FakePlugin plugin;
  const Outcome o = run(plugin, Vars{{"CNI_COMMAND", "VERSION"}}, "");
  EXPECT_EQ(o.status, 0) << o.out;
  const json j = json::parse(o.out);
  EXPECT_EQ(j["cniVersion"], std::string(kLatestVersion));
  EXPECT_EQ(j["supportedVersions"].size(), kSupportedVersions.size());
  EXPECT_EQ(o.err, "");
}

TEST(VersionCommand, IgnoresTheAttachmentVariablesAndAnUnsupportedRequest) {
  FakePlugin plugin;
  // A runtime probing with a version flatnet does not speak still learns what it does speak.
  const Outcome o = run(plugin, env("VERSION", {{"CNI_IFNAME", "eth/0"}, {"CNI_ARGS", "x"}}),
                        R"({"cniVersion":"0.2.0"})");
  EXPECT_EQ(o.status, 0) << o.out;
  EXPECT_EQ(json::parse(o.out)["cniVersion"], std::string(kLatestVersion));
}

// --- results in every spec version ---

struct ConversionCase {
  std::string version{};
  bool ip_version{};  // ips[].version (0.3.0 to 0.4.0)
  bool v11{};         // interface mtu/socketPath/pciID, route mtu/advmss/priority/table/scope
  friend void PrintTo(const ConversionCase& c, std::ostream* out) { *out << c.version; }
};

class ResultConversion : public ::testing::TestWithParam<ConversionCase> {};

TEST_P(ResultConversion, WritesExactlyTheFieldsOfTheVersion) {
  const auto& c = GetParam();
  const json j = to_json(sample_result(), c.version);
  using Keys = std::set<std::string>;
  EXPECT_EQ(keys_of(j), (Keys{"cniVersion", "interfaces", "ips", "routes", "dns"}));
  EXPECT_EQ(j["cniVersion"], c.version);

  ASSERT_EQ(j["interfaces"].size(), 2u);
  EXPECT_EQ(keys_of(j["interfaces"][0]),
            (c.v11 ? Keys{"name", "mac", "mtu"} : Keys{"name", "mac"}));
  EXPECT_EQ(keys_of(j["interfaces"][1]),
            (c.v11 ? Keys{"name", "mac", "mtu", "sandbox", "socketPath", "pciID"}
                   : Keys{"name", "mac", "sandbox"}));
  EXPECT_EQ(j["interfaces"][1]["sandbox"], "/run/netns/flatnet-pod-1");
  if (c.v11) {
    EXPECT_EQ(j["interfaces"][1]["mtu"], 9000);
    EXPECT_EQ(j["interfaces"][1]["socketPath"], "/run/vhost-user/eth0.sock");
    EXPECT_EQ(j["interfaces"][1]["pciID"], "0000:00:1f.6");
  }

  ASSERT_EQ(j["ips"].size(), 2u);
  const Keys ip_keys = c.ip_version ? Keys{"version", "interface", "address", "gateway"}
                                    : Keys{"interface", "address", "gateway"};
  EXPECT_EQ(keys_of(j["ips"][0]), ip_keys);
  EXPECT_EQ(keys_of(j["ips"][1]), ip_keys);
  EXPECT_EQ(j["ips"][0]["address"], "10.244.1.5/24");
  EXPECT_EQ(j["ips"][0]["gateway"], "10.244.1.1");
  EXPECT_EQ(j["ips"][0]["interface"], 1);
  EXPECT_EQ(j["ips"][1]["address"], "fd00:10:244:1::5/64");
  if (c.ip_version) {
    EXPECT_EQ(j["ips"][0]["version"], "4");
    EXPECT_EQ(j["ips"][1]["version"], "6");
  }

  ASSERT_EQ(j["routes"].size(), 3u);
  EXPECT_EQ(keys_of(j["routes"][0]),
            (c.v11 ? Keys{"dst", "gw", "mtu", "advmss", "priority", "table", "scope"}
                   : Keys{"dst", "gw"}));
  EXPECT_EQ(keys_of(j["routes"][1]), Keys{"dst"});
  EXPECT_EQ(keys_of(j["routes"][2]), (Keys{"dst", "gw"}));
  if (c.v11) {
    EXPECT_EQ(j["routes"][0]["scope"], 0) << "a scope of 0 (universe) is still written";
    EXPECT_EQ(j["routes"][0]["table"], 254);
  }

  EXPECT_EQ(keys_of(j["dns"]), (Keys{"nameservers", "domain", "search", "options"}));

  // What a reader of this version gets back: everything the version carries.
  const Result back = parse_result(j);
  EXPECT_EQ(back, c.v11 ? sample_result() : without_v11_fields(sample_result()));
}

INSTANTIATE_TEST_SUITE_P(Table, ResultConversion,
                         ::testing::Values(ConversionCase{"0.3.0", true, false},
                                           ConversionCase{"0.3.1", true, false},
                                           ConversionCase{"0.4.0", true, false},
                                           ConversionCase{"1.0.0", false, false},
                                           ConversionCase{"1.1.0", false, true}));

TEST(ResultConversion, RoundTripsThroughTheLatestVersion) {
  const Result r = sample_result();
  EXPECT_EQ(parse_result(to_json(r, "1.1.0")), r);
  EXPECT_EQ(parse_result(json::parse(to_json(r, "1.1.0").dump())), r) << "through text";
}

TEST(ResultConversion, EmptyResultStillCarriesDns) {
  const json j = to_json(Result{}, "1.0.0");
  EXPECT_EQ(j, json::parse(R"({"cniVersion":"1.0.0","dns":{}})"));
  EXPECT_EQ(parse_result(j), Result{});
}

TEST(ResultConversion, ParsesA031ResultWithIpVersions) {
  const json j = json::parse(R"({
    "cniVersion": "0.3.1",
    "interfaces": [{"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/run/netns/p"}],
    "ips": [
      {"version": "4", "interface": 0, "address": "10.244.1.5/24", "gateway": "10.244.1.1"},
      {"version": "6", "address": "fd00::5/64"}
    ],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}, {"dst": "10.96.0.0/12"}],
    "dns": {"nameservers": ["10.96.0.10"], "search": ["cluster.local"]}
  })");
  Result expected;
  expected.interfaces = {
      Interface{.name = "eth0", .mac = "0a:58:0a:f4:01:05", .sandbox = "/run/netns/p"}};
  expected.ips = {IpConfig{.address = IpPrefix::parse("10.244.1.5/24"),
                           .gateway = IpAddress::parse("10.244.1.1"),
                           .interface = 0},
                  IpConfig{.address = IpPrefix::parse("fd00::5/64")}};
  expected.routes = {
      RouteEntry{.dst = IpPrefix::parse("0.0.0.0/0"), .gw = IpAddress::parse("10.244.1.1")},
      RouteEntry{.dst = IpPrefix::parse("10.96.0.0/12")}};
  expected.dns = Dns{.nameservers = {"10.96.0.10"}, .search = {"cluster.local"}};
  EXPECT_EQ(parse_result(j), expected);
  // And written back in 0.3.1 it is the same document.
  EXPECT_EQ(to_json(expected, "0.3.1"), j);
}

// --- CNI_ARGS ---

TEST(CniArgs, ParsesPairsAndSkipsEmptyOnes) {
  EXPECT_THAT(parse_cni_args("").values, IsEmpty());
  EXPECT_THAT(parse_cni_args(";;").values, IsEmpty());
  const CniArgs args =
      parse_cni_args(";IgnoreUnknown=1;;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;IP=;");
  EXPECT_EQ(args.values, (std::map<std::string, std::string>{{"IgnoreUnknown", "1"},
                                                             {"K8S_POD_NAMESPACE", "default"},
                                                             {"K8S_POD_NAME", "web-0"},
                                                             {"IP", ""}}));
  EXPECT_TRUE(args.ignore_unknown());
  EXPECT_EQ(args.get("K8S_POD_NAME"), "web-0");
  EXPECT_EQ(args.get("absent"), "");
  // Only the first '=' separates: the value may hold more.
  EXPECT_EQ(parse_cni_args("MAC=a=b").get("MAC"), "a=b");
}

TEST(CniArgs, MalformedPairsAreNamed) {
  for (const char* text : {"novalue", "=x", "A=1;novalue", "A=1;=x;B=2"}) {
    try {
      parse_cni_args(text);
      ADD_FAILURE() << "accepted " << text;
    } catch (const CniError& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_environment) << text;
      EXPECT_THAT(e.what(), HasSubstr("CNI_ARGS")) << text;
    }
  }
}

struct KnownKeysCase {
  std::string label{};
  std::string args{};
  std::vector<std::string> known{};
  std::string refused{};  // the key named in the error; empty when the args are accepted
  friend void PrintTo(const KnownKeysCase& c, std::ostream* out) { *out << c.label; }
};

class RequireKnown : public ::testing::TestWithParam<KnownKeysCase> {};

TEST_P(RequireKnown, RefusesUnknownKeysUnlessTold) {
  const auto& c = GetParam();
  const CniArgs args = parse_cni_args(c.args);
  if (c.refused.empty()) {
    EXPECT_NO_THROW(args.require_known(c.known));
    return;
  }
  try {
    args.require_known(c.known);
    FAIL() << "accepted " << c.args;
  } catch (const CniError& e) {
    EXPECT_EQ(e.numeric_code(), 4);
    EXPECT_THAT(e.what(), HasSubstr("\"" + c.refused + "\""));
    EXPECT_THAT(e.what(), HasSubstr("IgnoreUnknown"));
    EXPECT_THAT(e.details(), HasSubstr(c.refused + "="));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, RequireKnown,
    ::testing::Values(
        KnownKeysCase{"empty", "", {}, ""}, KnownKeysCase{"known_key", "IP=10.244.1.9", {"IP"}, ""},
        KnownKeysCase{"unknown_key", "IP=10.244.1.9;MAC=0a:58:0a:f4:01:09", {"IP"}, "MAC"},
        KnownKeysCase{"unknown_key_nothing_known", "MAC=x", {}, "MAC"},
        KnownKeysCase{"keys_are_case_sensitive", "ip=10.244.1.9", {"IP"}, "ip"},
        KnownKeysCase{"ignore_unknown_1", "IgnoreUnknown=1;MAC=x", {"IP"}, ""},
        KnownKeysCase{"ignore_unknown_true", "MAC=x;IgnoreUnknown=true", {}, ""},
        KnownKeysCase{"ignore_unknown_0", "IgnoreUnknown=0;MAC=x", {}, "MAC"},
        KnownKeysCase{"ignore_unknown_false", "IgnoreUnknown=false;MAC=x", {}, "MAC"},
        KnownKeysCase{"ignore_unknown_alone", "IgnoreUnknown=0", {}, ""},
        KnownKeysCase{"k8s_pod_keys",
                      "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
                      "K8S_POD_INFRA_CONTAINER_ID=3f1c;K8S_POD_UID=1234",
                      {},
                      ""},
        KnownKeysCase{"k8s_pod_without_underscore", "K8S_PODNAME=web-0", {}, "K8S_PODNAME"},
        KnownKeysCase{"empty_pairs_skipped", ";;IP=10.244.1.9;;", {"IP"}, ""}));

// --- netconf field helpers ---

enum class Getter { boolean, string, integer };

struct FieldCase {
  std::string label{};
  Getter getter{};
  std::string object{};  // JSON text holding the field
  std::string key{};
  std::string path{};
  long long min{};  // for integers
  long long max{};
  std::vector<std::string> culprits{};
  friend void PrintTo(const FieldCase& c, std::ostream* out) { *out << c.label; }
};

class FieldHelpers : public ::testing::TestWithParam<FieldCase> {};

TEST_P(FieldHelpers, WrongTypeOrRangeIsCode7NamingPathAndValue) {
  const auto& c = GetParam();
  const json object = json::parse(c.object);
  try {
    switch (c.getter) {
      case Getter::boolean:
        get_bool(object, c.key.c_str(), false, c.path);
        break;
      case Getter::string:
        get_string(object, c.key.c_str(), "", c.path);
        break;
      case Getter::integer:
        get_int(object, c.key.c_str(), 0, c.path, c.min, c.max);
        break;
    }
    FAIL() << "accepted " << c.object;
  } catch (const CniError& e) {
    EXPECT_EQ(e.numeric_code(), 7);
    EXPECT_THAT(e.what(), HasSubstr(c.path));
    for (const auto& culprit : c.culprits)
      EXPECT_THAT(e.what(), HasSubstr(culprit));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, FieldHelpers,
    ::testing::Values(
        FieldCase{"bool_from_string",
                  Getter::boolean,
                  R"({"isGateway":"true"})",
                  "isGateway",
                  "isGateway",
                  0,
                  0,
                  {"\"true\"", "true or false"}},
        FieldCase{"bool_from_number",
                  Getter::boolean,
                  R"({"hairpinMode":1})",
                  "hairpinMode",
                  "hairpinMode",
                  0,
                  0,
                  {"= 1"}},
        FieldCase{"bool_from_object",
                  Getter::boolean,
                  R"({"ipMasq":{}})",
                  "ipMasq",
                  "ipMasq",
                  0,
                  0,
                  {"{}"}},
        FieldCase{"string_from_number",
                  Getter::string,
                  R"({"bridge":0})",
                  "bridge",
                  "bridge",
                  0,
                  0,
                  {"= 0", "string"}},
        FieldCase{"string_from_bool",
                  Getter::string,
                  R"({"dataDir":false})",
                  "dataDir",
                  "ipam.dataDir",
                  0,
                  0,
                  {"false"}},
        FieldCase{"string_from_list",
                  Getter::string,
                  R"({"subnet":["10.244.1.0/24"]})",
                  "subnet",
                  "ipam.ranges[0][1].subnet",
                  0,
                  0,
                  {"[\"10.244.1.0/24\"]"}},
        FieldCase{"int_from_string",
                  Getter::integer,
                  R"({"mtu":"1500"})",
                  "mtu",
                  "mtu",
                  68,
                  65535,
                  {"\"1500\"", "integer"}},
        FieldCase{"int_from_float",
                  Getter::integer,
                  R"({"mtu":1500.5})",
                  "mtu",
                  "mtu",
                  68,
                  65535,
                  {"1500.5"}},
        FieldCase{"int_from_integral_float",
                  Getter::integer,
                  R"({"mtu":1500.0})",
                  "mtu",
                  "mtu",
                  68,
                  65535,
                  {"1500.0", "integer"}},
        FieldCase{"int_from_bool",
                  Getter::integer,
                  R"({"vlan":true})",
                  "vlan",
                  "vlan",
                  0,
                  4094,
                  {"true"}},
        FieldCase{"int_below_min",
                  Getter::integer,
                  R"({"mtu":67})",
                  "mtu",
                  "mtu",
                  68,
                  65535,
                  {"67", "68..65535"}},
        FieldCase{"int_above_max",
                  Getter::integer,
                  R"({"vlan":4095})",
                  "vlan",
                  "vlan",
                  0,
                  4094,
                  {"4095", "0..4094"}},
        FieldCase{
            "int_negative", Getter::integer, R"({"vlan":-1})", "vlan", "vlan", 0, 4094, {"-1"}},
        FieldCase{"int_past_long_long",
                  Getter::integer,
                  R"({"vlan":18446744073709551615})",
                  "vlan",
                  "vlan",
                  -1,
                  4094,
                  {"18446744073709551615"}},
        FieldCase{"int_most_negative",
                  Getter::integer,
                  R"({"vlan":-9223372036854775808})",
                  "vlan",
                  "vlan",
                  -1,
                  4094,
                  {"-9223372036854775808"}}));

TEST(FieldHelpers, ReturnTheValueOrTheFallback) {
  const json object = json::parse(
      R"({"isGateway":true,"bridge":"flatnet-br0","mtu":1450,"vlan":null,"ipMasq":null})");
  EXPECT_TRUE(get_bool(object, "isGateway", false, "isGateway"));
  EXPECT_TRUE(get_bool(object, "ipMasq", true, "ipMasq")) << "null means absent";
  EXPECT_FALSE(get_bool(object, "hairpinMode", false, "hairpinMode"));
  EXPECT_EQ(get_string(object, "bridge", "cni0", "bridge"), "flatnet-br0");
  EXPECT_EQ(get_string(object, "dataDir", "/var/lib/cni", "dataDir"), "/var/lib/cni");
  EXPECT_EQ(get_int(object, "mtu", 1500, "mtu", 68, 65535), 1450);
  EXPECT_EQ(get_int(object, "vlan", 0, "vlan", 0, 4094), 0);
  EXPECT_EQ(get_int(object, "mtu", 1500, "mtu", 1450, 1450), 1450) << "bounds are inclusive";
  // A section that is not an object has no fields (its own type is checked by its reader).
  EXPECT_EQ(get_string(json::array(), "type", "x", "ipam.type"), "x");
}

// --- success through run_plugin ---

class AddSuccess : public ::testing::TestWithParam<std::string> {};

TEST_P(AddSuccess, PrintsThePluginsResultInTheConfigurationsVersion) {
  const std::string version = GetParam();
  FakePlugin plugin;
  plugin.result = sample_result();
  const Outcome o = run(plugin, env("ADD"), conf(version));
  EXPECT_EQ(o.status, 0) << o.out;
  EXPECT_EQ(plugin.adds, 1);
  EXPECT_EQ(plugin.calls(), 1);
  const json j = json::parse(o.out);
  EXPECT_EQ(j["cniVersion"], version);
  EXPECT_EQ(j, to_json(sample_result(), version));
  EXPECT_EQ(j["ips"][0].contains("version"), compare_versions(version, "1.0.0") < 0);
}

INSTANTIATE_TEST_SUITE_P(Table, AddSuccess,
                         ::testing::Values("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"));

TEST(AddSuccess, EmptyResultIsStillAResult) {
  FakePlugin plugin;
  const Outcome o = run(plugin, env("ADD"), conf("1.1.0"));
  EXPECT_EQ(o.status, 0);
  EXPECT_EQ(json::parse(o.out), json::parse(R"({"cniVersion":"1.1.0","dns":{}})"));
}

TEST(DelSuccess, PrintsNothing) {
  FakePlugin plugin;
  plugin.result = sample_result();
  const Outcome o = run(plugin, env("DEL"), conf("1.0.0"));
  EXPECT_EQ(o.status, 0);
  EXPECT_EQ(o.out, "");
  EXPECT_EQ(plugin.dels, 1);
  EXPECT_EQ(plugin.calls(), 1);
}

// --- versions ---

TEST(Versions, SupportedAndOrdered) {
  for (auto v : kSupportedVersions)
    EXPECT_TRUE(is_supported_version(v)) << v;
  for (const char* v : {"0.1.0", "0.2.0", "1.0", "1.2.0", "", "v1.0.0"})
    EXPECT_FALSE(is_supported_version(v)) << v;
  EXPECT_EQ(compare_versions("0.10.0", "0.4.0"), 1);
  EXPECT_EQ(compare_versions("0.4.0", "1.0.0"), -1);
  EXPECT_EQ(compare_versions("1.1.0", "1.1.0"), 0);
  EXPECT_EQ(compare_versions("1.0", "1.0.0"), 0);
  for (std::size_t i = 1; i < kSupportedVersions.size(); ++i)
    EXPECT_LT(compare_versions(kSupportedVersions[i - 1], kSupportedVersions[i]), 0);
}

}  // namespace
}  // namespace flatnet::cni
