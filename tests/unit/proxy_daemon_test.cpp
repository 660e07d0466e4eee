// flatnet-proxy's daemon without root: flags and the KubeProxyConfiguration file, the YAML reader,
// the sync loop under a fake clock with a recording Proxier, health, metrics, the HTTP server on
// loopback, and the watched source file.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "flatnet/netmodel/socket_address.hpp"
#include "flatnet/netmodel/yaml.hpp"
#include "flatnet/proxy/config.hpp"
#include "flatnet/proxy/daemon.hpp"
#include "flatnet/proxy/http.hpp"
#include "flatnet/proxy/metrics.hpp"
#include "flatnet/proxy/source.hpp"

namespace flatnet::proxy {
namespace {

using namespace std::chrono_literals;
using netmodel::IpPrefix;
using nlohmann::json;
using ::testing::HasSubstr;

IpAddress ip(const char* text) {
  return IpAddress::parse(text);
}

// --- flags ------------------------------------------------------------------------------------

struct FlagCase {
  const char* name;
  std::vector<std::string> args;
  // Either a check of the result, or the text the error must hold.
  std::function<void(const ProxyConfig&)> check;
  const char* error;
};

void PrintTo(const FlagCase& c, std::ostream* out) {
  *out << c.name;
}

class ProxyFlags : public ::testing::TestWithParam<FlagCase> {};

TEST_P(ProxyFlags, Parse) {
  const FlagCase& c = GetParam();
  if (c.error != nullptr) {
    try {
      parse_command_line(c.args);
      FAIL() << "expected an error holding " << c.error;
    } catch (const ConfigError& e) {
      EXPECT_THAT(e.what(), HasSubstr(c.error));
    }
    return;
  }
  const CommandLine result = parse_command_line(c.args);
  EXPECT_EQ(result.action, CommandLine::Action::run);
  c.check(result.config);
}

std::vector<std::string> with_source(std::vector<std::string> args) {
  args.insert(args.begin(), "--source=file:/run/flatnet/state.json");
  return args;
}

const FlagCase kFlagCases[] = {
    {"defaults", with_source({}),
     [](const ProxyConfig& c) {
       EXPECT_EQ(c.mode, ProxyMode::iptables);
       EXPECT_EQ(c.source_path, "/run/flatnet/state.json");
       EXPECT_EQ(c.masquerade_bit, 14u);
       EXPECT_EQ(c.sync_period, 30s);
       EXPECT_EQ(c.min_sync_period, 1s);
       EXPECT_EQ(c.healthz_bind_address, "0.0.0.0:10256");
       EXPECT_EQ(c.metrics_bind_address, "127.0.0.1:10249");
       EXPECT_EQ(c.iptables_backend, IptablesBackend::automatic);
       EXPECT_FALSE(c.cluster_cidr.has_value());
       EXPECT_FALSE(c.masquerade_all);
       EXPECT_FALSE(c.cleanup);
     },
     nullptr},
    {"source with a space",
     {"--source", "file:/tmp/a b.json"},
     [](const ProxyConfig& c) { EXPECT_EQ(c.source_path, "/tmp/a b.json"); },
     nullptr},
    {"userspace mode parses", with_source({"--proxy-mode=userspace"}),
     [](const ProxyConfig& c) { EXPECT_EQ(c.mode, ProxyMode::userspace); }, nullptr},
    {"hostname lower-cased and trimmed", with_source({"--hostname-override", " Node-1 "}),
     [](const ProxyConfig& c) { EXPECT_EQ(c.hostname, "node-1"); }, nullptr},
    {"cluster cidr", with_source({"--cluster-cidr=10.244.0.0/16"}),
     [](const ProxyConfig& c) { EXPECT_EQ(c.cluster_cidr, IpPrefix::parse("10.244.0.0/16")); },
     nullptr},
    {"cluster cidr host bits cleared", with_source({"--cluster-cidr=10.244.3.4/16"}),
     [](const ProxyConfig& c) { EXPECT_EQ(c.cluster_cidr, IpPrefix::parse("10.244.0.0/16")); },
     nullptr},
    {"dual-stack cluster cidr keeps IPv4", with_source({"--cluster-cidr=fd00::/48,10.244.0.0/16"}),
     [](const ProxyConfig& c) { EXPECT_EQ(c.cluster_cidr, IpPrefix::parse("10.244.0.0/16")); },
     nullptr},
    {"masquerade-all alone", with_source({"--masquerade-all"}),
     [](const ProxyConfig& c) { EXPECT_TRUE(c.masquerade_all); }, nullptr},
    {"masquerade-all=false", with_source({"--masquerade-all=false"}),
     [](const ProxyConfig& c) { EXPECT_FALSE(c.masquerade_all); }, nullptr},
    {"masquerade bit", with_source({"--iptables-masquerade-bit=0"}),
     [](const ProxyConfig& c) { EXPECT_EQ(c.masquerade_bit, 0u); }, nullptr},
    {"nodeport addresses", with_source({"--nodeport-addresses=172.18.0.0/24, 127.0.0.0/8"}),
     [](const ProxyConfig& c) {
       EXPECT_EQ(c.nodeport_addresses, (std::vector<IpPrefix>{IpPrefix::parse("172.18.0.0/24"),
                                                              IpPrefix::parse("127.0.0.0/8")}));
     },
     nullptr},
    {"go durations",
     with_source({"--iptables-sync-period=1m30s", "--iptables-min-sync-period=500ms"}),
     [](const ProxyConfig& c) {
       EXPECT_EQ(c.sync_period, 90s);
       EXPECT_EQ(c.min_sync_period, 500ms);
     },
     nullptr},
    {"min sync period 0", with_source({"--iptables-min-sync-period=0"}),
     [](const ProxyConfig& c) { EXPECT_EQ(c.min_sync_period, 0ms); }, nullptr},
    {"backend", with_source({"--iptables-backend=legacy"}),
     [](const ProxyConfig& c) { EXPECT_EQ(c.iptables_backend, IptablesBackend::legacy); }, nullptr},
    {"healthz bare IP takes the default port", with_source({"--healthz-bind-address=127.0.0.1"}),
     [](const ProxyConfig& c) { EXPECT_EQ(c.healthz_bind_address, "127.0.0.1:10256"); }, nullptr},
    {"healthz port 0 disables", with_source({"--healthz-bind-address=0.0.0.0:0"}),
     [](const ProxyConfig& c) { EXPECT_EQ(c.healthz_bind_address, ""); }, nullptr},
    {"metrics IPv6", with_source({"--metrics-bind-address=[::1]:9999"}),
     [](const ProxyConfig& c) { EXPECT_EQ(c.metrics_bind_address, "[::1]:9999"); }, nullptr},
    {"metrics empty disables", with_source({"--metrics-bind-address="}),
     [](const ProxyConfig& c) { EXPECT_EQ(c.metrics_bind_address, ""); }, nullptr},
    {"cleanup needs no source",
     {"--cleanup"},
     [](const ProxyConfig& c) { EXPECT_TRUE(c.cleanup); },
     nullptr},
    {"-v 3", with_source({"-v", "3"}), [](const ProxyConfig& c) { EXPECT_EQ(c.verbosity, 3); },
     nullptr},
    {"--v=4", with_source({"--v=4"}), [](const ProxyConfig& c) { EXPECT_EQ(c.verbosity, 4); },
     nullptr},
    // Bad input: one line naming the flag and the value.
    {"source missing", {}, nullptr, "--source is required"},
    {"source not file:",
     {"--source=http://api:6443"},
     nullptr,
     "--source: \"http://api:6443\" is not file:PATH"},
    {"source empty path", {"--source=file:"}, nullptr, "--source: \"file:\" names no file"},
    {"unknown flag", with_source({"--proxy-mod=iptables"}), nullptr, "unknown flag --proxy-mod"},
    {"ipvs mode", with_source({"--proxy-mode=ipvs"}), nullptr,
     "--proxy-mode: \"ipvs\" is not a proxy mode"},
    {"bad cidr", with_source({"--cluster-cidr=10.244.0.0/33"}), nullptr,
     "--cluster-cidr: \"10.244.0.0/33\" is not a CIDR"},
    {"two IPv4 cluster cidrs", with_source({"--cluster-cidr=10.0.0.0/8,10.244.0.0/16"}), nullptr,
     "--cluster-cidr: \"10.0.0.0/8,10.244.0.0/16\" holds more than one IPv4 CIDR"},
    {"masquerade-all=maybe", with_source({"--masquerade-all=maybe"}), nullptr,
     "--masquerade-all: \"maybe\" is not true or false"},
    {"masquerade bit 32", with_source({"--iptables-masquerade-bit=32"}), nullptr,
     "--iptables-masquerade-bit: 32 is out of range 0..31"},
    {"masquerade bit text", with_source({"--iptables-masquerade-bit=x"}), nullptr,
     "--iptables-masquerade-bit: \"x\" is not an integer"},
    {"nodeport address", with_source({"--nodeport-addresses=172.18.0.0/24,nope"}), nullptr,
     "--nodeport-addresses: \"nope\" is not a CIDR"},
    {"duration without unit", with_source({"--iptables-sync-period=30"}), nullptr,
     "--iptables-sync-period: \"30\" is not a duration (missing unit after 30"},
    {"duration with bad unit", with_source({"--iptables-sync-period=3d"}), nullptr,
     "unknown unit \"d\""},
    {"sync period 0", with_source({"--iptables-sync-period=0"}), nullptr,
     "--iptables-sync-period: 0s must be greater than 0"},
    {"negative min sync", with_source({"--iptables-min-sync-period=-1s"}), nullptr,
     "--iptables-min-sync-period: -1s must not be negative"},
    {"min above sync", with_source({"--iptables-sync-period=10s", "--iptables-min-sync-period=1m"}),
     nullptr,
     "--iptables-min-sync-period: 1m0s must not be longer than --iptables-sync-period 10s"},
    {"backend", with_source({"--iptables-backend=iptables"}), nullptr,
     "--iptables-backend: \"iptables\" is not auto, nft or legacy"},
    {"healthz port too big", with_source({"--healthz-bind-address=0.0.0.0:70000"}), nullptr,
     "--healthz-bind-address: \"0.0.0.0:70000\": \"70000\" is not a port number"},
    {"healthz host", with_source({"--healthz-bind-address=localhost:10256"}), nullptr,
     "\"localhost\" is not an IP address"},
    {"metrics IPv6 without brackets", with_source({"--metrics-bind-address=::1:10249x"}), nullptr,
     "--metrics-bind-address"},
    {"verbosity text", with_source({"-v", "high"}), nullptr,
     "-v: \"high\" is not a verbosity level"},
    {"positional argument", with_source({"extra"}), nullptr, "unexpected argument \"extra\""},
    {"missing value", with_source({"--cluster-cidr"}), nullptr, "cluster-cidr"},
    {"missing config file", with_source({"--config=/nonexistent/proxy.yaml"}), nullptr,
     "--config: read \"/nonexistent/proxy.yaml\": No such file or directory"},
};

INSTANTIATE_TEST_SUITE_P(Cases, ProxyFlags, ::testing::ValuesIn(kFlagCases));

TEST(ProxyFlagsAction, HelpAndVersion) {
  EXPECT_EQ(parse_command_line({"--help"}).action, CommandLine::Action::help);
  EXPECT_EQ(parse_command_line({"-h"}).action, CommandLine::Action::help);
  EXPECT_EQ(parse_command_line({"--version"}).action, CommandLine::Action::version);
  EXPECT_THAT(version_text(), HasSubstr("flatnet-proxy " FLATNET_VERSION));
}

TEST(ProxyFlagsAction, HelpNamesEveryFlagAndTheFileFields) {
  const std::string help = usage();
  for (const char* flag : {"--proxy-mode",
                           "--source",
                           "--hostname-override",
                           "--cluster-cidr",
                           "--masquerade-all",
                           "--iptables-masquerade-bit",
                           "--nodeport-addresses",
                           "--iptables-sync-period",
                           "--iptables-min-sync-period",
                           "--iptables-backend",
                           "--healthz-bind-address",
                           "--metrics-bind-address",
                           "--config",
                           "--cleanup",
                           "--v",
                           "--help",
                           "--version",
                           "iptables.masqueradeBit",
                           "nodePortAddresses",
                           "metricsBindAddress"}) {
    EXPECT_THAT(help, HasSubstr(flag));
  }
}

// --- the configuration file -------------------------------------------------------------------

class ConfigFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("flatnet-proxy-config-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& text) {
    const auto path = dir_ / "proxy.yaml";
    std::ofstream(path) << text;
    return path.string();
  }
  std::filesystem::path dir_;
};

constexpr const char* kFullConfig = R"(apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: Node-2
clusterCIDR: 10.244.0.0/16
nodePortAddresses: [172.18.0.0/24]
healthzBindAddress: 127.0.0.1
metricsBindAddress: 127.0.0.1:0
iptables:
  masqueradeAll: true
  masqueradeBit: 15
  syncPeriod: 1m
  minSyncPeriod: 2s
)";

TEST_F(ConfigFile, EveryFieldIsRead) {
  ProxyConfig config;
  const auto warnings = apply_config_file(kFullConfig, "proxy.yaml", config);
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(config.hostname, "node-2");
  EXPECT_EQ(config.cluster_cidr, IpPrefix::parse("10.244.0.0/16"));
  EXPECT_EQ(config.nodeport_addresses, std::vector<IpPrefix>{IpPrefix::parse("172.18.0.0/24")});
  EXPECT_EQ(config.healthz_bind_address, "127.0.0.1:10256");
  EXPECT_EQ(config.metrics_bind_address, "");
  EXPECT_TRUE(config.masquerade_all);
  EXPECT_EQ(config.masquerade_bit, 15u);
  EXPECT_EQ(config.sync_period, 60s);
  EXPECT_EQ(config.min_sync_period, 2s);
}

TEST_F(ConfigFile, FlagsOverrideTheFile) {
  const std::string path = write(kFullConfig);
  const CommandLine line =
      parse_command_line({"--config", path, "--source=file:/tmp/s.json",
                          "--iptables-masquerade-bit=3", "--hostname-override=node-9"});
  EXPECT_EQ(line.config.masquerade_bit, 3u);
  EXPECT_EQ(line.config.hostname, "node-9");
  EXPECT_EQ(line.config.sync_period, 60s);  // from the file
  EXPECT_TRUE(line.config.masquerade_all);  // from the file
}

TEST_F(ConfigFile, KnownButUnsupportedFieldsWarnWithTheirPlace) {
  ProxyConfig config;
  const auto warnings = apply_config_file(R"(apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
conntrack:
  maxPerCore: 32768
iptables:
  localhostNodePorts: false
)",
                                          "p.yaml", config);
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_THAT(warnings[0], HasSubstr("p.yaml:3:1: warning: conntrack: not supported"));
  EXPECT_THAT(warnings[1], HasSubstr("p.yaml:6:3: warning: iptables.localhostNodePorts"));
}

struct BadFile {
  const char* name;
  const char* body;  // after apiVersion and kind (lines 1 and 2)
  const char* error;
};

class ConfigFileErrors : public ::testing::TestWithParam<BadFile> {};

TEST_P(ConfigFileErrors, NameFileLineColumnFieldAndValue) {
  const BadFile& c = GetParam();
  ProxyConfig config;
  const std::string text = std::string(
                               "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n"
                               "kind: KubeProxyConfiguration\n") +
                           c.body;
  try {
    apply_config_file(text, "proxy.yaml", config);
    FAIL() << "expected " << c.error;
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr(c.error));
  }
  EXPECT_EQ(config.masquerade_bit, 14u) << "a refused file changes nothing";
}

const BadFile kBadFiles[] = {
    {"unknown field", "iptables:\n  masqueradeBit: 3\nhostnameOverid: x\n",
     "proxy.yaml:5:1: unknown field \"hostnameOverid\" (did you mean hostnameOverride?)"},
    {"unknown nested field", "iptables:\n  syncPeriods: 1s\n",
     "proxy.yaml:4:3: unknown field \"iptables.syncPeriods\" (did you mean iptables.syncPeriod?)"},
    {"bit out of range", "iptables:\n  masqueradeBit: 40\n",
     "proxy.yaml:4:18: iptables.masqueradeBit: 40 is out of range 0..31"},
    {"bit as text", "iptables:\n  masqueradeBit: \"3\"\n",
     "proxy.yaml:4:18: iptables.masqueradeBit: must be an integer, not \"3\""},
    {"bad duration", "iptables:\n  syncPeriod: 30\n",
     "proxy.yaml:4:15: iptables.syncPeriod: must be a duration string"},
    {"bad duration text", "iptables:\n  minSyncPeriod: 1x\n",
     "proxy.yaml:4:18: iptables.minSyncPeriod: \"1x\" is not a duration"},
    {"masqueradeAll text", "iptables:\n  masqueradeAll: sometimes\n",
     "proxy.yaml:4:18: iptables.masqueradeAll: must be true or false, not \"sometimes\""},
    {"mode", "mode: ipvs\n", "proxy.yaml:3:7: mode: \"ipvs\" is not a proxy mode"},
    {"cidr", "clusterCIDR: 10.244.0.0\n",
     "proxy.yaml:3:14: clusterCIDR: \"10.244.0.0\" is not a CIDR"},
    {"node port list item", "nodePortAddresses:\n- 10.0.0.0/8\n- bogus\n",
     "proxy.yaml:5:3: nodePortAddresses[1]: \"bogus\" is not a CIDR"},
    {"node port not a list", "nodePortAddresses: 10.0.0.0/8\n",
     "proxy.yaml:3:20: nodePortAddresses: must be a list of CIDRs"},
    {"bind address", "healthzBindAddress: 0.0.0.0:x\n",
     "proxy.yaml:3:21: healthzBindAddress: \"0.0.0.0:x\": \"x\" is not a port number"},
    {"iptables not a map", "iptables: 5\n", "proxy.yaml:3:11: iptables: must be a map"},
    {"duplicate key", "mode: iptables\nmode: iptables\n", "proxy.yaml:4:1: duplicate key mode"},
    {"bad YAML", "iptables: [1, 2\n", "proxy.yaml:"},
};

INSTANTIATE_TEST_SUITE_P(Cases, ConfigFileErrors, ::testing::ValuesIn(kBadFiles));

TEST(ConfigFileHeader, ApiVersionAndKindAreChecked) {
  ProxyConfig config;
  EXPECT_THROW(
      {
        try {
          apply_config_file(
              "apiVersion: kubeproxy.config.k8s.io/v1beta9\nkind: "
              "KubeProxyConfiguration\n",
              "p.yaml", config);
        } catch (const ConfigError& e) {
          EXPECT_THAT(e.what(), HasSubstr("p.yaml:1:13: apiVersion: "
                                          "\"kubeproxy.config.k8s.io/v1beta9\" is not supported"));
          throw;
        }
      },
      ConfigError);
  EXPECT_THROW(apply_config_file("apiVersion: kubeproxy.config.k8s.io/v1alpha1\n", "p", config),
               ConfigError);
  EXPECT_THROW(apply_config_file("", "p", config), ConfigError);
  EXPECT_THROW(apply_config_file("- a\n", "p", config), ConfigError);
}

// --- durations, bind addresses ----------------------------------------------------------------

TEST(Durations, GoForms) {
  EXPECT_EQ(parse_duration("0"), 0ms);
  EXPECT_EQ(parse_duration("30s"), 30s);
  EXPECT_EQ(parse_duration("1m30s"), 90s);
  EXPECT_EQ(parse_duration("500ms"), 500ms);
  EXPECT_EQ(parse_duration("1.5h"), 90min);
  EXPECT_EQ(parse_duration("2h45m"), 165min);
  EXPECT_EQ(parse_duration("1500us"), 1ms);
  EXPECT_EQ(parse_duration("-2s"), -2s);
  EXPECT_THROW(parse_duration(""), std::invalid_argument);
  EXPECT_THROW(parse_duration("s"), std::invalid_argument);
  EXPECT_THROW(parse_duration("1..2s"), std::invalid_argument);
  EXPECT_EQ(format_duration(90s), "1m30s");
  EXPECT_EQ(format_duration(500ms), "500ms");
  EXPECT_EQ(format_duration(0ms), "0s");
  EXPECT_EQ(format_duration(3600s), "1h0m0s");
  EXPECT_EQ(format_duration(1500ms), "1.5s");
}

TEST(BindAddresses, KubeProxyForms) {
  EXPECT_EQ(parse_bind_address("0.0.0.0:10256", 1).to_string(), "0.0.0.0:10256");
  EXPECT_EQ(parse_bind_address("10.0.0.1", 10249).to_string(), "10.0.0.1:10249");
  EXPECT_EQ(parse_bind_address("::", 10256).to_string(), "[::]:10256");
  EXPECT_EQ(parse_bind_address("[::1]:80", 1).to_string(), "[::1]:80");
  EXPECT_FALSE(parse_bind_address("", 10256).enabled());
  EXPECT_FALSE(parse_bind_address("127.0.0.1:0", 10256).enabled());
  EXPECT_THROW(parse_bind_address("127.0.0.1:", 1), std::invalid_argument);
  EXPECT_THROW(parse_bind_address("[127.0.0.1]:80", 1), std::invalid_argument);
}

// --- YAML -------------------------------------------------------------------------------------

TEST(Yaml, ScalarsTakeYaml11TypesAndQuotedOnesStayStrings) {
  const json j = netmodel::yaml_to_json(R"(
a: yes
b: "yes"
c: 0x1F
d: 017
e: 1.5e3
f: ~
g: 10.244.0.0/16
h: [1, "2", off]
i: !!str 5
)");
  EXPECT_EQ(j["a"], true);
  EXPECT_EQ(j["b"], "yes");
  EXPECT_EQ(j["c"], 31);
  EXPECT_EQ(j["d"], 15);
  EXPECT_EQ(j["e"], 1500.0);
  EXPECT_TRUE(j["f"].is_null());
  EXPECT_EQ(j["g"], "10.244.0.0/16");
  EXPECT_EQ(j["h"], json::parse(R"([1, "2", false])"));
  EXPECT_EQ(j["i"], "5");
}

TEST(Yaml, PositionsOfKeysAndValues) {
  const auto doc = netmodel::parse_yaml("top:\n  inner: [a, b]\nnull_value:\n", "f.yaml");
  EXPECT_EQ(doc.key_at("top.inner"), (netmodel::SourcePosition{2, 3}));
  EXPECT_EQ(doc.value_at("top.inner[1]"), (netmodel::SourcePosition{2, 14}));
  EXPECT_EQ(doc.value_at("null_value"), (netmodel::SourcePosition{3, 1}));
  EXPECT_EQ(doc.key_at("missing"), (netmodel::SourcePosition{}));
}

TEST(Yaml, ErrorsSayWhere) {
  try {
    netmodel::parse_yaml("a: 1\nb: [\n", "x.yaml");
    FAIL();
  } catch (const netmodel::YamlError& e) {
    EXPECT_THAT(e.what(), HasSubstr("x.yaml:"));
    EXPECT_THAT(e.what(), HasSubstr("invalid YAML"));
  }
  EXPECT_THROW(netmodel::parse_yaml("a: 1\n---\nb: 2\n", "x"), netmodel::YamlError);
  EXPECT_THROW(netmodel::parse_yaml("base: &b {x: 1}\nc:\n  <<: *b\n", "x"), netmodel::YamlError);
  EXPECT_TRUE(netmodel::parse_yaml("", "x").value.is_null());
}

// --- metrics ----------------------------------------------------------------------------------

TEST(Metrics, HistogramBucketsAreKubeProxys) {
  const auto buckets = sync_duration_buckets();
  ASSERT_EQ(buckets.size(), 15u);
  EXPECT_DOUBLE_EQ(buckets.front(), 0.001);
  EXPECT_DOUBLE_EQ(buckets.back(), 16.384);
  Histogram h({1, 2, 4});
  h.observe(0.5);
  h.observe(2);
  h.observe(9);
  EXPECT_EQ(h.cumulative_counts(), (std::vector<std::uint64_t>{1, 2, 2}));
  EXPECT_EQ(h.count(), 3u);
  EXPECT_DOUBLE_EQ(h.sum(), 11.5);
}

TEST(Metrics, RenderedInPrometheusTextFormat) {
  Metrics m;
  m.observe_sync(3ms, true);
  m.observe_sync(1500us, false);
  m.count_changes(2, 5);
  m.count_sync_failure();
  m.set_last_sync(WallTime(std::chrono::seconds(1700000000)));
  m.observe_network_programming(700ms);
  m.count_healthz(200);
  const std::string text = m.render();
  EXPECT_THAT(text, HasSubstr("# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram\n"));
  EXPECT_THAT(text,
              HasSubstr("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.001\"} 0\n"));
  EXPECT_THAT(text,
              HasSubstr("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.002\"} 1\n"));
  EXPECT_THAT(text,
              HasSubstr("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\"} 2\n"));
  EXPECT_THAT(text,
              HasSubstr("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("kubeproxy_sync_proxy_rules_duration_seconds_count 2\n"));
  EXPECT_THAT(text, HasSubstr("kubeproxy_sync_full_proxy_rules_duration_seconds_count 1\n"));
  EXPECT_THAT(text, HasSubstr("kubeproxy_sync_partial_proxy_rules_duration_seconds_count 1\n"));
  EXPECT_THAT(text, HasSubstr("kubeproxy_sync_proxy_rules_last_timestamp_seconds 1.7e+09\n"));
  EXPECT_THAT(text,
              HasSubstr("kubeproxy_network_programming_duration_seconds_bucket{le=\"1\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("kubeproxy_sync_proxy_rules_service_changes_total 2\n"));
  EXPECT_THAT(text, HasSubstr("kubeproxy_sync_proxy_rules_endpoint_changes_total 5\n"));
  EXPECT_THAT(text, HasSubstr("kubeproxy_sync_proxy_rules_iptables_restore_failures_total 1\n"));
  EXPECT_THAT(text, HasSubstr("kubeproxy_proxy_healthz_total{code=\"200\"} 1\n"));
}

// --- the sync loop ----------------------------------------------------------------------------

class FakeClock : public Clock {
 public:
  SteadyTime now() const override { return steady_; }
  WallTime wall() const override { return wall_; }
  void advance(std::chrono::milliseconds d) {
    steady_ += d;
    wall_ += d;
  }

 private:
  SteadyTime steady_{std::chrono::hours(100)};
  WallTime wall_{std::chrono::seconds(1700000000)};
};

struct RecordedSync {
  bool full;
  std::set<ServicePortName> changed;
  std::size_t services;
  SteadyTime at;
};

class RecordingProxier : public Proxier {
 public:
  explicit RecordingProxier(const FakeClock& clock) : clock_(clock) {}
  std::string mode() const override { return "iptables"; }
  SyncOutcome sync(const SyncRequest& request) override {
    syncs.push_back(
        {request.full, request.changes.changed, request.state.services.size(), clock_.now()});
    SyncOutcome outcome;
    outcome.duration = 2ms;
    outcome.partial = !request.full;
    if (fail_next > 0) {
      --fail_next;
      outcome.ok = false;
      outcome.restore_failed = true;
      outcome.error = "iptables-restore: line 3 failed";
    }
    return outcome;
  }
  bool cleanup(std::string& error) override {
    error = cleanup_error;
    return cleanup_error.empty();
  }
  std::vector<RecordedSync> syncs;
  int fail_next = 0;
  std::string cleanup_error;

 private:
  const FakeClock& clock_;
};

netmodel::Service service(const std::string& name, const char* cluster_ip,
                          std::uint16_t health_port = 0) {
  netmodel::Service s;
  s.meta.name = name;
  s.spec.cluster_ips = {ip(cluster_ip)};
  s.spec.ports = {{"", Protocol::tcp, 80, {8080, ""}, 0}};
  if (health_port != 0) {
    s.spec.type = netmodel::ServiceType::load_balancer;
    s.spec.ports[0].node_port = 30080;
    s.spec.external_traffic_policy = netmodel::TrafficPolicy::local;
    s.spec.health_check_node_port = health_port;
  }
  return s;
}

netmodel::EndpointSlice slice(const std::string& service_name, std::vector<const char*> ips,
                              const char* node = "node-1", const char* trigger = nullptr) {
  netmodel::EndpointSlice s;
  s.meta.name = service_name + "-abcde";
  s.meta.labels[std::string(netmodel::kServiceNameLabel)] = service_name;
  if (trigger != nullptr) s.meta.annotations[std::string(kLastChangeTriggerTime)] = trigger;
  for (const char* address : ips) {
    netmodel::Endpoint e;
    e.addresses = {ip(address)};
    e.node_name = node;
    s.endpoints.push_back(e);
  }
  s.ports = {{"", Protocol::tcp, 8080}};
  return s;
}

const ServicePortName kWeb{"default", "web", "", Protocol::tcp};
const ServicePortName kDb{"default", "db", "", Protocol::tcp};

class Loop : public ::testing::Test {
 protected:
  Loop() {
    config_.sync_period = 30s;
    config_.min_sync_period = 2s;
  }
  SyncLoop& loop() {
    if (!loop_)
      loop_ = std::make_unique<SyncLoop>(config_, "node-1", proxier_, clock_, metrics_, health_);
    return *loop_;
  }
  void update(netmodel::ServiceObjects objects) { loop().update(objects, clock_.wall()); }
  // Advances to each due sync up to `d` later, running them.
  void run_for(std::chrono::milliseconds d) {
    const SteadyTime end = clock_.now() + d;
    for (;;) {
      const auto next = loop().next_sync();
      if (!next || *next > end) break;
      if (*next > clock_.now())
        clock_.advance(std::chrono::ceil<std::chrono::milliseconds>(*next - clock_.now()));
      if (!loop().run_due()) break;
    }
    if (end > clock_.now())
      clock_.advance(std::chrono::ceil<std::chrono::milliseconds>(end - clock_.now()));
  }

  ProxyConfig config_;
  FakeClock clock_;
  RecordingProxier proxier_{clock_};
  Metrics metrics_;
  ProxierHealth health_{clock_, 60s};
  std::unique_ptr<SyncLoop> loop_;
};

TEST_F(Loop, NothingBeforeTheFirstObjectsThenAFullSync) {
  EXPECT_FALSE(loop().next_sync());
  EXPECT_FALSE(loop().run_due());
  update({{service("web", "10.96.0.10")}, {slice("web", {"10.244.1.5"})}, {}});
  EXPECT_TRUE(loop().run_due());
  ASSERT_EQ(proxier_.syncs.size(), 1u);
  EXPECT_TRUE(proxier_.syncs[0].full);
  EXPECT_EQ(proxier_.syncs[0].changed, std::set<ServicePortName>{kWeb});
  EXPECT_EQ(loop().synced().services.size(), 1u);
}

TEST_F(Loop, AnEmptyFirstStateIsSyncedToo) {
  update({});
  EXPECT_TRUE(loop().run_due());
  ASSERT_EQ(proxier_.syncs.size(), 1u);
  EXPECT_TRUE(proxier_.syncs[0].full);
}

TEST_F(Loop, ChangesWithinTheMinSyncPeriodAreBatchedIntoOnePartialSync) {
  update({{service("web", "10.96.0.10")}, {slice("web", {"10.244.1.5"})}, {}});
  ASSERT_TRUE(loop().run_due());
  clock_.advance(100ms);
  update({{service("web", "10.96.0.10")}, {slice("web", {"10.244.1.6"})}, {}});
  EXPECT_FALSE(loop().run_due()) << "min sync period not over";
  clock_.advance(500ms);
  update({{service("web", "10.96.0.10"), service("db", "10.96.0.11")},
          {slice("web", {"10.244.1.6"}), slice("db", {"10.244.2.3"})},
          {}});
  EXPECT_FALSE(loop().run_due());
  EXPECT_EQ(*loop().next_sync(), proxier_.syncs[0].at + 2s);
  clock_.advance(1400ms);
  EXPECT_TRUE(loop().run_due());
  ASSERT_EQ(proxier_.syncs.size(), 2u);
  EXPECT_FALSE(proxier_.syncs[1].full);
  EXPECT_EQ(proxier_.syncs[1].changed, (std::set<ServicePortName>{kDb, kWeb}));
  EXPECT_EQ(proxier_.syncs[1].services, 2u);
}

TEST_F(Loop, AFullSyncEverySyncPeriodEvenWithoutChanges) {
  update({{service("web", "10.96.0.10")}, {slice("web", {"10.244.1.5"})}, {}});
  run_for(95s);
  ASSERT_EQ(proxier_.syncs.size(), 4u);  // at 0, 30, 60, 90 s
  for (const auto& sync : proxier_.syncs)
    EXPECT_TRUE(sync.full);
  EXPECT_EQ(proxier_.syncs[3].at - proxier_.syncs[0].at, 90s);
  EXPECT_TRUE(proxier_.syncs[3].changed.empty());
}

TEST_F(Loop, AFailedSyncIsRetriedFullAfterTheMinSyncPeriodWithAllChanges) {
  update({{service("web", "10.96.0.10")}, {slice("web", {"10.244.1.5"})}, {}});
  ASSERT_TRUE(loop().run_due());
  clock_.advance(5s);
  update({{service("web", "10.96.0.10")}, {slice("web", {"10.244.1.6"})}, {}});
  proxier_.fail_next = 1;
  ASSERT_TRUE(loop().run_due());
  EXPECT_FALSE(proxier_.syncs[1].full);
  EXPECT_TRUE(loop().needs_full_sync());
  // A change that arrives while the failed one is pending is carried by the retry too.
  clock_.advance(1s);
  update({{service("web", "10.96.0.10"), service("db", "10.96.0.11")},
          {slice("web", {"10.244.1.6"}), slice("db", {"10.244.2.3"})},
          {}});
  EXPECT_FALSE(loop().run_due()) << "retry waits for the min sync period";
  clock_.advance(1s);
  ASSERT_TRUE(loop().run_due());
  ASSERT_EQ(proxier_.syncs.size(), 3u);
  EXPECT_TRUE(proxier_.syncs[2].full);
  EXPECT_EQ(proxier_.syncs[2].at - proxier_.syncs[1].at, 2s);
  EXPECT_EQ(proxier_.syncs[2].changed, (std::set<ServicePortName>{kDb, kWeb}));
  EXPECT_FALSE(loop().needs_full_sync());
  EXPECT_THAT(metrics_.render(),
              HasSubstr("kubeproxy_sync_proxy_rules_iptables_restore_failures_total 1\n"));
}

TEST_F(Loop, RetryWaitsAtLeastASecondWhenMinSyncPeriodIsZero) {
  config_.min_sync_period = 0ms;
  update({});
  proxier_.fail_next = 5;
  ASSERT_TRUE(loop().run_due());
  EXPECT_FALSE(loop().run_due());
  EXPECT_EQ(*loop().next_sync() - proxier_.syncs[0].at, 1s);
}

TEST_F(Loop, ObjectsThatChangeBackNeedNoSync) {
  const netmodel::ServiceObjects a{
      {service("web", "10.96.0.10")}, {slice("web", {"10.244.1.5"})}, {}};
  update(a);
  ASSERT_TRUE(loop().run_due());
  clock_.advance(3s);
  update({{service("web", "10.96.0.10")}, {slice("web", {"10.244.1.6"})}, {}});
  update(a);
  EXPECT_FALSE(loop().run_due());
  EXPECT_EQ(proxier_.syncs.size(), 1u);
}

TEST_F(Loop, HealthzTurns503WhenAChangeWaitsLongerThanTheTimeoutAndRecovers) {
  EXPECT_TRUE(health_.status().healthy) << "healthy while starting up";
  update({{service("web", "10.96.0.10")}, {slice("web", {"10.244.1.5"})}, {}});
  EXPECT_TRUE(health_.status().healthy);
  proxier_.fail_next = 1000;
  run_for(59s);
  EXPECT_TRUE(health_.status().healthy);
  run_for(2s);
  const auto status = health_.status();
  EXPECT_FALSE(status.healthy);
  EXPECT_EQ(health_.response().status, 503);
  proxier_.fail_next = 0;
  run_for(31s);
  EXPECT_TRUE(health_.status().healthy);
  const json body = json::parse(health_.response().body);
  EXPECT_EQ(body["lastUpdated"], body["currentTime"]);
  EXPECT_EQ(body["currentTime"], format_rfc3339(clock_.wall()));
}

TEST_F(Loop, MetricsCountChangesSyncsAndNetworkProgrammingFromTheTriggerTime) {
  update({{service("web", "10.96.0.10")}, {slice("web", {"10.244.1.5"})}, {}});
  ASSERT_TRUE(loop().run_due());
  clock_.advance(10s);
  // The trigger time says the change happened 10 s before the source saw it.
  const std::string trigger = format_rfc3339(clock_.wall() - 10s);
  update({{service("web", "10.96.0.10")},
          {slice("web", {"10.244.1.6"}, "node-1", trigger.c_str())},
          {}});
  ASSERT_TRUE(loop().run_due());
  const std::string text = metrics_.render();
  EXPECT_THAT(text, HasSubstr("kubeproxy_sync_proxy_rules_service_changes_total 1\n"));
  EXPECT_THAT(text, HasSubstr("kubeproxy_sync_proxy_rules_endpoint_changes_total 2\n"));
  EXPECT_THAT(text,
              HasSubstr("kubeproxy_network_programming_duration_seconds_bucket{le=\"9\"} 1\n"));
  EXPECT_THAT(text,
              HasSubstr("kubeproxy_network_programming_duration_seconds_bucket{le=\"10\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("kubeproxy_sync_partial_proxy_rules_duration_seconds_count 1\n"));
  EXPECT_THAT(text, HasSubstr("kubeproxy_sync_proxy_rules_last_timestamp_seconds 1700000010\n"));
}

TEST_F(Loop, TriggerTimesFromBeforeTheProxyStartedAreNotMeasured) {
  // A slice last changed a day ago: its annotation says nothing about this proxy's speed.
  const std::string day_ago = format_rfc3339(clock_.wall() - 24h);
  update({{service("web", "10.96.0.10")},
          {slice("web", {"10.244.1.5"}, "node-1", day_ago.c_str())},
          {}});
  ASSERT_TRUE(loop().run_due());
  EXPECT_THAT(metrics_.render(),
              HasSubstr("kubeproxy_network_programming_duration_seconds_count 0\n"));
}

TEST(Rfc3339, RoundTripAndOffsets) {
  const WallTime t{std::chrono::seconds(1700000000) + 250ms};
  EXPECT_EQ(format_rfc3339(t), "2023-11-14T22:13:20.25Z");
  EXPECT_EQ(parse_rfc3339("2023-11-14T22:13:20.25Z"), t);
  EXPECT_EQ(parse_rfc3339("2023-11-15T00:13:20.25+02:00"), t);
  EXPECT_FALSE(parse_rfc3339("2023-11-14 22:13:20Z"));
  EXPECT_FALSE(parse_rfc3339("2023-11-14T22:13:20"));
}

TEST(HealthChecks, LocalUsableEndpointsPerService) {
  netmodel::ServiceObjects objects{
      {service("lb", "10.96.0.20", 31999), service("web", "10.96.0.10")},
      {slice("lb", {"10.244.1.5", "10.244.1.6"}, "node-1"), slice("web", {"10.244.1.7"})},
      {}};
  objects.endpoint_slices.push_back(slice("lb", {"10.244.2.9"}, "node-2"));
  objects.endpoint_slices.back().meta.name = "lb-other";
  const auto checks = health_checks(build_state(objects, "node-1"));
  ASSERT_EQ(checks.size(), 1u);
  EXPECT_EQ(checks[0], (ServiceHealthCheck{"default", "lb", 31999, 2}));
  EXPECT_EQ(health_checks(build_state(objects, "node-3"))[0].local_endpoints, 0u);
}

TEST(HealthChecks, TerminatingLocalEndpointsDoNotCount) {
  // A draining node (its endpoints serving but terminating) must fail the check, so that load
  // balancers stop sending it new connections (kube-proxy counts ready local endpoints).
  netmodel::ServiceObjects objects{
      {service("lb", "10.96.0.20", 31999)}, {slice("lb", {"10.244.1.5"}, "node-1")}, {}};
  objects.endpoint_slices[0].endpoints[0].conditions = {false, true, true};
  const auto checks = health_checks(build_state(objects, "node-1"));
  ASSERT_EQ(checks.size(), 1u);
  EXPECT_EQ(checks[0].local_endpoints, 0u);
}

TEST(Cleanup, ExitCodeFollowsTheProxier) {
  FakeClock clock;
  RecordingProxier proxier(clock);
  EXPECT_EQ(run_cleanup(proxier), 0);
  proxier.cleanup_error = "delete chain KUBE-SERVICES: busy";
  EXPECT_EQ(run_cleanup(proxier), 1);
}

// --- HTTP -------------------------------------------------------------------------------------

const IpAddress kLoopback = IpAddress::parse("127.0.0.1");

HttpResponse echo(const HttpRequest& request) {
  if (request.path == "/missing") return {404, "text/plain", "no\n"};
  return {200, "text/plain", request.path + "?" + request.query};
}

int connect_raw(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const auto address = netmodel::SocketAddress::of(kLoopback, port);
  EXPECT_EQ(::connect(fd, address.get(), address.length), 0);
  return fd;
}

std::string read_all(int fd) {
  std::string data;
  char buffer[4096];
  ssize_t n;
  while ((n = ::recv(fd, buffer, sizeof buffer, 0)) > 0)
    data.append(buffer, static_cast<std::size_t>(n));
  ::close(fd);
  return data;
}

TEST(Http, ServesGetOnAKernelChosenPort) {
  HttpServer server;
  const auto listener = server.listen(kLoopback, 0, echo);
  ASSERT_NE(listener.port, 0);
  const HttpReply reply = http_get(kLoopback, listener.port, "/healthz?x=1");
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, "/healthz?x=1");
  EXPECT_EQ(reply.headers.at("connection"), "close");
  EXPECT_EQ(reply.headers.at("content-length"), "12");
  EXPECT_EQ(http_get(kLoopback, listener.port, "/missing").status, 404);
}

TEST(Http, RefusesOtherMethodsBadRequestsAndOversizedOnes) {
  HttpServer server(HttpLimits{.max_request_bytes = 256, .timeout = 2s, .max_connections = 8});
  const auto port = server.listen(kLoopback, 0, echo).port;
  const auto send_raw = [&](const std::string& request) {
    const int fd = connect_raw(port);
    EXPECT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(request.size()));
    return read_all(fd);
  };
  EXPECT_THAT(send_raw("POST / HTTP/1.1\r\n\r\n"), HasSubstr("HTTP/1.1 405 Method Not Allowed"));
  EXPECT_THAT(send_raw("garbage\r\n\r\n"), HasSubstr("HTTP/1.1 400"));
  EXPECT_THAT(send_raw("GET / SPDY/3\r\n\r\n"), HasSubstr("HTTP/1.1 505"));
  EXPECT_THAT(send_raw("GET / HTTP/1.1\r\nX: " + std::string(1000, 'a') + "\r\n\r\n"),
              HasSubstr("HTTP/1.1 431"));
  const std::string head = send_raw("HEAD /abc HTTP/1.0\r\n\r\n");
  EXPECT_THAT(head, HasSubstr("Content-Length: 5\r\n"));
  EXPECT_TRUE(head.ends_with("\r\n\r\n")) << "HEAD has no body";
}

TEST(Http, ASlowClientIsDroppedAndOthersAreServedMeanwhile) {
  HttpServer server(HttpLimits{.max_request_bytes = 1024, .timeout = 300ms, .max_connections = 8});
  const auto port = server.listen(kLoopback, 0, echo).port;
  const int slow = connect_raw(port);
  ASSERT_EQ(::send(slow, "GET /", 5, MSG_NOSIGNAL), 5);
  EXPECT_EQ(http_get(kLoopback, port, "/fast").status, 200);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(read_all(slow), "") << "closed without an answer";
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

TEST(Http, AClosedListenerFreesItsPortAtOnce) {
  HttpServer server;
  const auto first = server.listen(kLoopback, 0, echo);
  server.close(first.id);
  EXPECT_THROW(http_get(kLoopback, first.port, "/", 1s), std::system_error);
  const auto again = server.listen(kLoopback, first.port, echo);
  EXPECT_EQ(http_get(kLoopback, again.port, "/x").status, 200);
}

TEST(Http, ABusyPortIsAnErrorNamingTheAddress) {
  HttpServer server;
  const auto port = server.listen(kLoopback, 0, echo).port;
  try {
    server.listen(kLoopback, port, echo);
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("listen on 127.0.0.1:" + std::to_string(port)));
    EXPECT_THAT(e.what(), HasSubstr("Address already in use"));
  }
}

// A port that was free a moment ago.
std::uint16_t free_port() {
  HttpServer probe;
  const auto listener = probe.listen(kLoopback, 0, echo);
  probe.close(listener.id);
  return listener.port;
}

TEST(ServiceHealth, ListenersFollowTheServicesAndAnswerWithLocalEndpoints) {
  FakeClock clock;
  ProxierHealth health(clock, 60s);
  HttpServer server;
  ServiceHealthServer services(server, {kLoopback}, health);
  const std::uint16_t port = free_port();
  services.sync({{"default", "lb", port, 2}});
  EXPECT_EQ(services.open_ports(), (std::map<std::string, std::uint16_t>{{"default/lb", port}}));
  HttpReply reply = http_get(kLoopback, port, "/healthz");
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(json::parse(reply.body), json::parse(R"({"service": {"namespace": "default",
      "name": "lb"}, "localEndpoints": 2, "serviceProxyHealthy": true})"));
  EXPECT_EQ(http_get(kLoopback, port, "/any/path").status, 200);

  services.sync({{"default", "lb", port, 0}});
  reply = http_get(kLoopback, port, "/");
  EXPECT_EQ(reply.status, 503);
  EXPECT_EQ(json::parse(reply.body)["localEndpoints"], 0);

  services.sync({});
  EXPECT_TRUE(services.open_ports().empty());
  EXPECT_THROW(http_get(kLoopback, port, "/", 1s), std::system_error);
}

TEST(ServiceHealth, AnUnhealthyProxierMakesEveryServiceUnhealthy) {
  FakeClock clock;
  ProxierHealth health(clock, 60s);
  HttpServer server;
  ServiceHealthServer services(server, {kLoopback}, health);
  const std::uint16_t port = free_port();
  services.sync({{"default", "lb", port, 1}});
  health.queued();
  clock.advance(61s);
  const HttpReply reply = http_get(kLoopback, port, "/");
  EXPECT_EQ(reply.status, 503);
  EXPECT_EQ(json::parse(reply.body)["serviceProxyHealthy"], false);
}

// --- the source file --------------------------------------------------------------------------

class Source : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("flatnet-proxy-source-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    path_ = dir_ / "state.json";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  // Writes as the endpoints controller does: a temporary file renamed into place.
  void replace(const std::string& text) {
    const auto tmp = dir_ / ".state.json.tmp";
    std::ofstream(tmp) << text;
    std::filesystem::rename(tmp, path_);
  }
  // Waits for the next update, as the daemon's poll loop does.
  std::optional<FileSource::Update> wait(FileSource& source) {
    for (int i = 0; i < 50; ++i) {
      pollfd p{source.fd(), POLLIN, 0};
      if (::poll(&p, 1, 100) > 0) {
        if (auto update = source.next()) return update;
      }
    }
    return std::nullopt;
  }
  static std::string objects_json(const char* cluster_ip) {
    netmodel::ServiceObjects objects{
        {service("web", cluster_ip)}, {slice("web", {"10.244.1.5"})}, {}};
    return netmodel::encode_service_objects(objects).dump();
  }
  std::filesystem::path dir_;
  std::filesystem::path path_;
};

TEST_F(Source, AMissingFileIsWaitedForThenEachRenamedVersionIsRead) {
  FileSource source(path_);
  EXPECT_FALSE(source.read());
  EXPECT_FALSE(source.has_objects());
  replace(objects_json("10.96.0.10"));
  auto update = wait(source);
  ASSERT_TRUE(update);
  ASSERT_EQ(update->objects.services.size(), 1u);
  EXPECT_EQ(update->objects.services[0].spec.cluster_ips[0], ip("10.96.0.10"));
  replace(objects_json("10.96.0.99"));
  update = wait(source);
  ASSERT_TRUE(update);
  EXPECT_EQ(update->objects.services[0].spec.cluster_ips[0], ip("10.96.0.99"));
}

TEST_F(Source, AMalformedVersionIsRejectedAndTheLastGoodOneStays) {
  replace(objects_json("10.96.0.10"));
  FileSource source(path_);
  ASSERT_TRUE(source.read());
  replace(
      R"({"kind": "List", "items": [{"kind": "Service", "spec": {"ports": [{"port": 70000}]}}]})");
  EXPECT_FALSE(wait(source));
  EXPECT_TRUE(source.has_objects());
  // The same content again is not a change; a good version is.
  replace(objects_json("10.96.0.10"));
  EXPECT_FALSE(wait(source));
  replace(objects_json("10.96.0.11"));
  EXPECT_TRUE(wait(source));
}

TEST_F(Source, AFileWrittenInPlaceIsReadOnClose) {
  FileSource source(path_);
  std::ofstream(path_) << objects_json("10.96.0.12");
  const auto update = wait(source);
  ASSERT_TRUE(update);
  EXPECT_EQ(update->objects.services[0].spec.cluster_ips[0], ip("10.96.0.12"));
}

TEST_F(Source, AMissingDirectoryIsAnErrorNamingIt) {
  try {
    FileSource source(dir_ / "nope" / "state.json");
    FAIL();
  } catch (const std::system_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("watch directory"));
    EXPECT_THAT(e.what(), HasSubstr("No such file or directory"));
  }
}

// --- the whole daemon, on loopback with a fake proxier ------------------------------------------

TEST_F(Source, TheDaemonSyncsServesHealthAndMetricsAndStopsCleanly) {
  replace(objects_json("10.96.0.10"));
  const std::uint16_t healthz_port = free_port();
  const std::uint16_t metrics_port = free_port();
  ProxyConfig config;
  config.source_path = path_.string();
  config.hostname = "node-1";
  config.min_sync_period = 0ms;
  config.healthz_bind_address = "127.0.0.1:" + std::to_string(healthz_port);
  config.metrics_bind_address = "127.0.0.1:" + std::to_string(metrics_port);
  FakeClock unused;
  auto owned = std::make_unique<RecordingProxier>(unused);
  RecordingProxier* proxier = owned.get();
  Daemon daemon(config, std::move(owned));
  std::atomic<int> exit_code{-1};
  std::thread runner([&] { exit_code = daemon.run(); });
  const auto metrics_text = [&] { return http_get(kLoopback, metrics_port, "/metrics").body; };
  // Wait for the first sync, then a changed file for a second one.
  for (int i = 0; i < 100; ++i) {
    try {
      if (metrics_text().find("kubeproxy_sync_proxy_rules_duration_seconds_count 1\n") !=
          std::string::npos) {
        break;
      }
    } catch (const std::system_error&) {
    }
    std::this_thread::sleep_for(50ms);
  }
  replace(objects_json("10.96.0.11"));
  std::string text;
  for (int i = 0; i < 100; ++i) {
    text = metrics_text();
    if (text.find("kubeproxy_sync_proxy_rules_duration_seconds_count 2\n") != std::string::npos)
      break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_THAT(text, HasSubstr("kubeproxy_sync_proxy_rules_duration_seconds_count 2\n"));
  EXPECT_EQ(http_get(kLoopback, healthz_port, "/healthz").status, 200);
  EXPECT_EQ(http_get(kLoopback, healthz_port, "/livez").status, 200);
  EXPECT_EQ(http_get(kLoopback, metrics_port, "/healthz").status, 200);
  EXPECT_EQ(http_get(kLoopback, metrics_port, "/proxyMode").body, "iptables");
  EXPECT_EQ(http_get(kLoopback, healthz_port, "/metrics").status, 404);
  daemon.stop();
  runner.join();
  EXPECT_EQ(exit_code, 0);
  ASSERT_EQ(proxier->syncs.size(), 2u);  // the proxier outlives run(): the daemon owns it
  EXPECT_TRUE(proxier->syncs[0].full);
  EXPECT_FALSE(proxier->syncs[1].full);
}

}  // namespace
}  // namespace flatnet::proxy
