// The iptables-mode renderer (render.hpp) and its chain names (chains.hpp): one golden file per
// service shape (tests/unit/golden/proxy/<case>.rules, regenerated with FLATNET_UPDATE_GOLDEN=1),
// kube-proxy's known chain names, the probability text, partial renders and stale chains.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "flatnet/proxy/iptables/chains.hpp"
#include "flatnet/proxy/iptables/render.hpp"
#include "flatnet/proxy/iptables/runner.hpp"
#include "flatnet/proxy/model.hpp"

namespace flatnet::proxy::iptables {
namespace {

using netmodel::IpAddress;
using netmodel::IpPrefix;
using ::testing::HasSubstr;
using ::testing::Not;

// Addresses follow kube-proxy's proxier_test.go conventions: pods 10.0.0.0/8 (endpoints
// 10.180.0.0/16), cluster IPs 172.30.0.0/16, node 192.168.0.2, external IPs 192.168.99.0/24,
// load-balancer IPs 1.2.3.4 and 5.6.7.8.

IpAddress ip(std::string_view text) {
  return IpAddress::parse(text);
}

ServicePortName port_name(std::string ns, std::string svc, std::string port,
                          Protocol protocol = Protocol::tcp) {
  return ServicePortName{std::move(ns), std::move(svc), std::move(port), protocol};
}

ServicePortInfo service(std::string_view cluster_ip, std::uint16_t port,
                        Protocol protocol = Protocol::tcp) {
  ServicePortInfo info;
  info.cluster_ip = ip(cluster_ip);
  info.port = port;
  info.protocol = protocol;
  return info;
}

struct EndpointSpec {
  std::string_view ip;
  std::uint16_t port = 80;
  bool local = false;
  bool ready = true;
  bool serving = true;
  bool terminating = false;
};

EndpointInfo endpoint(const EndpointSpec& spec) {
  EndpointInfo e;
  e.ip = ip(spec.ip);
  e.port = spec.port;
  e.is_local = spec.local;
  e.node_name = spec.local ? "test-node" : "other-node";
  e.ready = spec.ready;
  e.serving = spec.serving;
  e.terminating = spec.terminating;
  return e;
}

void add(ProxyState& state, const ServicePortName& name, const ServicePortInfo& info,
         std::vector<EndpointSpec> endpoints = {}) {
  state.services[name] = info;
  if (endpoints.empty()) return;
  auto& list = state.endpoints[name];
  for (const auto& spec : endpoints)
    list.push_back(endpoint(spec));
  std::sort(list.begin(), list.end(), [](const EndpointInfo& a, const EndpointInfo& b) {
    return std::tie(a.ip, a.port) < std::tie(b.ip, b.port);
  });
}

RenderOptions with_cluster_cidr() {
  RenderOptions options;
  options.cluster_cidr = IpPrefix::parse("10.0.0.0/8");
  return options;
}

// --- checks every rendering must pass ------------------------------------------------------------

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);)
    lines.push_back(l);
  return lines;
}

// The text is two well-formed tables; every "-A" names a declared chain; every jump to a KUBE-
// chain reaches one that is declared here or (partial renders) already exists; the counts agree.
void expect_consistent(const RenderResult& result, const std::set<std::string>& previous) {
  const auto lines = lines_of(result.text);
  ASSERT_FALSE(lines.empty());
  std::string table;
  std::map<std::string, std::set<std::string>> declared;
  std::size_t rules = 0;
  std::vector<std::pair<std::string, std::string>> jumps;  // table, target
  std::set<std::string> deleted;
  for (const auto& l : lines) {
    if (l.starts_with('*')) {
      EXPECT_TRUE(table.empty()) << "table " << l << " opened inside " << table;
      table = l.substr(1);
    } else if (l == "COMMIT") {
      EXPECT_FALSE(table.empty());
      table.clear();
    } else if (l.starts_with(':')) {
      EXPECT_TRUE(l.ends_with(" - [0:0]")) << l;
      declared[table].insert(l.substr(1, l.find(' ') - 1));
    } else if (l.starts_with("-A ")) {
      ++rules;
      const auto chain = l.substr(3, l.find(' ', 3) - 3);
      EXPECT_TRUE(declared[table].contains(chain)) << "undeclared chain in: " << l;
      if (const auto j = l.find(" -j "); j != std::string::npos) {
        const auto target = l.substr(j + 4, l.find(' ', j + 4) - j - 4);
        if (target.starts_with("KUBE-")) jumps.emplace_back(table, target);
      } else {
        ADD_FAILURE() << "rule without a target: " << l;
      }
    } else if (l.starts_with("-X ")) {
      EXPECT_EQ(table, "nat");
      deleted.insert(l.substr(3));
    } else {
      ADD_FAILURE() << "unexpected line: " << l;
    }
  }
  EXPECT_TRUE(table.empty()) << "last table not committed";
  EXPECT_EQ(rules, result.rules);
  for (const auto& [t, target] : jumps) {
    const bool here = declared[t].contains(target) && !deleted.contains(target);
    const bool kept = t == "nat" && previous.contains(target) && result.nat_chains.contains(target);
    EXPECT_TRUE(here || kept) << "jump to missing chain " << target << " in " << t;
  }
  for (const auto& chain : deleted) {
    EXPECT_TRUE(declared["nat"].contains(chain)) << chain << " deleted without a flush";
    EXPECT_FALSE(result.nat_chains.contains(chain)) << chain;
  }
  for (const auto& chain : declared["filter"])
    EXPECT_TRUE(result.filter_chains.contains(chain));
  for (const auto& chain : declared["nat"]) {
    EXPECT_TRUE(result.nat_chains.contains(chain) || deleted.contains(chain)) << chain;
  }
}

// --- golden files --------------------------------------------------------------------------------

struct GoldenCase {
  std::string name;
  std::function<ProxyState()> state;
  RenderOptions options{};
  // Partial renders: the changed service ports and the chains that existed before.
  std::optional<std::set<ServicePortName>> changed{};
  std::set<std::string> previous{};
};

ProxyState clusterip_tcp() {
  ProxyState state;
  add(state, port_name("ns1", "svc1", "p80"), service("172.30.0.41", 80),
      {{"10.180.0.1", 80}, {"10.180.0.2", 80}});
  return state;
}

ProxyState clusterip_udp_multiport() {
  ProxyState state;
  const std::vector<EndpointSpec> dns = {{"10.180.0.10", 53}, {"10.180.1.10", 53}};
  add(state, port_name("kube-system", "kube-dns", "dns", Protocol::udp),
      service("172.30.0.10", 53, Protocol::udp), dns);
  add(state, port_name("kube-system", "kube-dns", "dns-tcp"), service("172.30.0.10", 53), dns);
  add(state, port_name("kube-system", "kube-dns", "metrics"), service("172.30.0.10", 9153),
      {{"10.180.0.10", 9153}, {"10.180.1.10", 9153}, {"10.180.2.10", 9153}});
  return state;
}

// targetPort "http" resolves per slice: pods of one slice listen on 8080, of the other on 8081.
ProxyState named_target_ports() {
  netmodel::ServiceObjects objects;
  netmodel::Service web;
  web.meta.name = "web";
  web.meta.namespace_ = "ns1";
  web.spec.cluster_ips = {ip("172.30.0.50")};
  web.spec.ports = {{"http", Protocol::tcp, 80, {0, "http"}, 0}};
  objects.services.push_back(web);
  const auto slice = [](std::string name, std::uint16_t port, std::vector<std::string> ips) {
    netmodel::EndpointSlice s;
    s.meta.name = std::move(name);
    s.meta.namespace_ = "ns1";
    s.meta.labels[std::string(netmodel::kServiceNameLabel)] = "web";
    for (const auto& address : ips) {
      netmodel::Endpoint e;
      e.addresses = {ip(address)};
      e.node_name = "other-node";
      s.endpoints.push_back(e);
    }
    s.ports = {{"http", Protocol::tcp, port}};
    return s;
  };
  objects.endpoint_slices.push_back(slice("web-v1", 8080, {"10.180.0.5", "10.180.0.6"}));
  objects.endpoint_slices.push_back(slice("web-v2", 8081, {"10.180.0.7"}));
  return build_state(objects, "test-node");
}

ProxyState no_endpoints() {
  ProxyState state;
  auto info = service("172.30.0.42", 80);
  info.node_port = 3001;
  info.external_ips = {ip("192.168.99.22")};
  info.load_balancer_ips = {ip("1.2.3.4")};
  add(state, port_name("ns2", "svc2", "p80"), info);
  // Endpoints that take no traffic: not ready and not serving-while-terminating.
  add(state, port_name("ns2", "svc2b", "p80"), service("172.30.0.43", 80),
      {{"10.180.0.3", 80, false, false, false, false}, {"10.180.0.4", 80, false, false, true}});
  return state;
}

ProxyState nodeport() {
  ProxyState state;
  auto info = service("172.30.0.42", 80);
  info.node_port = 3001;
  add(state, port_name("ns2", "svc2", "p80"), info, {{"10.180.0.2", 80}, {"10.180.1.2", 80}});
  return state;
}

ProxyState external_ips() {
  ProxyState state;
  auto info = service("172.30.0.44", 80);
  info.external_ips = {ip("192.168.99.33"), ip("192.168.99.34")};
  add(state, port_name("ns4", "svc4", "p80"), info, {{"10.180.0.4", 80}});
  return state;
}

ProxyState loadbalancer_ips() {
  ProxyState state;
  auto info = service("172.30.0.45", 80);
  info.node_port = 3005;
  info.load_balancer_ips = {ip("1.2.3.4"), ip("5.6.7.8")};
  add(state, port_name("ns5", "svc5", "p80"), info, {{"10.180.0.5", 80}, {"10.180.1.5", 80}});
  return state;
}

ProxyState affinity() {
  ProxyState state;
  auto info = service("172.30.0.46", 80);
  info.session_affinity = true;
  add(state, port_name("ns6", "svc6", "p80"), info,
      {{"10.180.0.6", 80}, {"10.180.1.6", 80}, {"10.180.2.6", 80}});
  auto short_info = service("172.30.0.47", 443);
  short_info.session_affinity = true;
  short_info.affinity_timeout_seconds = 60;
  add(state, port_name("ns6", "svc7", ""), short_info, {{"10.180.0.7", 8443}});
  return state;
}

ProxyState etp_local(bool with_local_endpoints) {
  ProxyState state;
  auto info = service("172.30.0.42", 80);
  info.node_port = 3001;
  info.external_ips = {ip("192.168.99.22")};
  info.load_balancer_ips = {ip("1.2.3.4")};
  info.external_policy_local = true;
  info.health_check_node_port = 30000;
  add(state, port_name("ns2", "svc2", "p80"), info,
      {{"10.180.0.2", 80, with_local_endpoints}, {"10.180.1.2", 80, false}});
  return state;
}

ProxyState itp_local(bool with_local_endpoints) {
  ProxyState state;
  auto info = service("172.30.0.48", 80);
  info.internal_policy_local = true;
  add(state, port_name("ns8", "svc8", "p80"), info,
      {{"10.180.0.8", 80, with_local_endpoints}, {"10.180.1.8", 80, false}});
  // Both policies Local and a node port: KUBE-SVC is still built for the short-circuit rules.
  auto both = service("172.30.0.49", 80);
  both.internal_policy_local = true;
  both.external_policy_local = true;
  both.node_port = 3009;
  add(state, port_name("ns9", "svc9", "p80"), both,
      {{"10.180.0.9", 80, with_local_endpoints}, {"10.180.1.9", 80, false}});
  return state;
}

ProxyState terminating_fallback() {
  ProxyState state;
  // No ready endpoint: the serving ones that are terminating take the traffic; the one that
  // stopped serving does not.
  add(state, port_name("ns1", "svc1", "p80"), service("172.30.0.41", 80),
      {{"10.180.0.1", 80, false, false, true, true},
       {"10.180.0.2", 80, false, false, true, true},
       {"10.180.0.3", 80, false, false, false, true}});
  // A ready endpoint exists: the terminating one is left out.
  add(state, port_name("ns2", "svc2", "p80"), service("172.30.0.42", 80),
      {{"10.180.1.1", 80}, {"10.180.1.2", 80, false, false, true, true}});
  return state;
}

ProxyState mixed() {
  ProxyState state = clusterip_tcp();
  auto info = service("172.30.0.42", 80);
  info.node_port = 3001;
  add(state, port_name("ns2", "svc2", "p80"), info, {{"10.180.0.2", 80}});
  add(state, port_name("ns3", "svc3", "p80"), service("172.30.0.43", 80), {{"10.180.0.3", 80}});
  return state;
}

// The chains the mixed state had one sync ago, when ns1/svc1 had a third endpoint and a service
// ns9/gone existed; plus chains that are not ours to delete.
std::set<std::string> mixed_previous() {
  ProxyState before = mixed();
  add(before, port_name("ns1", "svc1", "p80"), service("172.30.0.41", 80),
      {{"10.180.0.1", 80}, {"10.180.0.2", 80}, {"10.180.0.99", 80}});
  add(before, port_name("ns9", "gone", "p80"), service("172.30.0.99", 80), {{"10.180.9.9", 80}});
  auto chains = render(before, {}, nullptr, {}).nat_chains;
  chains.insert("DOCKER");
  chains.insert("KUBE-KUBELET-CANARY");
  return chains;
}

std::vector<GoldenCase> golden_cases() {
  std::vector<GoldenCase> cases;
  cases.push_back({"clusterip-tcp", clusterip_tcp});
  cases.push_back({"clusterip-udp-multiport", clusterip_udp_multiport, with_cluster_cidr()});
  cases.push_back({"named-target-ports", named_target_ports, with_cluster_cidr()});
  cases.push_back({"no-endpoints", no_endpoints, with_cluster_cidr()});
  cases.push_back({"nodeport", nodeport, with_cluster_cidr()});
  {
    RenderOptions options = with_cluster_cidr();
    // Loopback is skipped: node ports there need route_localnet.
    options.node_ports_restricted = true;
    options.node_port_addresses = {ip("192.168.0.2"), ip("127.0.0.1"), ip("192.168.1.2")};
    cases.push_back({"nodeport-addresses", nodeport, options});
  }
  cases.push_back({"external-ips", external_ips, with_cluster_cidr()});
  cases.push_back({"loadbalancer-ips", loadbalancer_ips, with_cluster_cidr()});
  cases.push_back({"affinity", affinity, with_cluster_cidr()});
  {
    RenderOptions options = with_cluster_cidr();
    options.masquerade_all = true;
    cases.push_back({"masquerade-all", mixed, options});
  }
  cases.push_back({"cluster-cidr", mixed, with_cluster_cidr()});
  cases.push_back({"etp-local", [] { return etp_local(true); }, with_cluster_cidr()});
  cases.push_back(
      {"etp-local-no-local-endpoints", [] { return etp_local(false); }, with_cluster_cidr()});
  cases.push_back({"etp-local-no-cluster-cidr", [] { return etp_local(true); }});
  cases.push_back({"itp-local", [] { return itp_local(true); }, with_cluster_cidr()});
  cases.push_back(
      {"itp-local-no-local-endpoints", [] { return itp_local(false); }, with_cluster_cidr()});
  cases.push_back({"terminating-fallback", terminating_fallback, with_cluster_cidr()});
  {
    RenderOptions options = with_cluster_cidr();
    options.masquerade_bit = 0;
    cases.push_back({"masquerade-bit", clusterip_tcp, options});
  }
  cases.push_back(
      {"partial-stale-chains", mixed, with_cluster_cidr(),
       std::set<ServicePortName>{port_name("ns1", "svc1", "p80"), port_name("ns9", "gone", "p80")},
       mixed_previous()});
  cases.push_back(
      {"full-stale-chains", mixed, with_cluster_cidr(), std::nullopt, mixed_previous()});
  return cases;
}

class Golden : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(Golden, MatchesFile) {
  const auto& c = GetParam();
  const ProxyState state = c.state();
  const auto result = render(state, c.options, c.changed ? &*c.changed : nullptr, c.previous);
  EXPECT_EQ(result.partial, c.changed.has_value());
  expect_consistent(result, c.previous);

  const std::filesystem::path path =
      std::filesystem::path(FLATNET_GOLDEN_DIR) / (c.name + ".rules");
  const char* update = std::getenv("FLATNET_UPDATE_GOLDEN");
  if (update != nullptr && std::string_view(update) == "1") {
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << result.text;
    GTEST_SKIP() << "wrote " << path;
  }
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in) << "missing golden file " << path << " (run with FLATNET_UPDATE_GOLDEN=1)";
  std::stringstream expected;
  expected << in.rdbuf();
  EXPECT_EQ(result.text, expected.str())
      << "rendered text differs from " << path << " (regenerate with FLATNET_UPDATE_GOLDEN=1 "
      << "and review the diff)";
}

INSTANTIATE_TEST_SUITE_P(Proxy, Golden, ::testing::ValuesIn(golden_cases()),
                         [](const ::testing::TestParamInfo<GoldenCase>& info) {
                           std::string name = info.param.name;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// --- chain names ---------------------------------------------------------------------------------

TEST(ChainNames, Base32IsRfc4648) {
  const auto encode = [](std::string_view text) {
    return base32({reinterpret_cast<const std::uint8_t*>(text.data()), text.size()});
  };
  // RFC 4648 section 10.
  EXPECT_EQ(encode(""), "");
  EXPECT_EQ(encode("f"), "MY======");
  EXPECT_EQ(encode("fo"), "MZXQ====");
  EXPECT_EQ(encode("foo"), "MZXW6===");
  EXPECT_EQ(encode("foob"), "MZXW6YQ=");
  EXPECT_EQ(encode("fooba"), "MZXW6YTB");
  EXPECT_EQ(encode("foobar"), "MZXW6YTBOI======");
}

struct KnownName {
  ServicePortName name;
  std::string svc;  // kube-proxy's name, from pkg/proxy/iptables/proxier_test.go
  std::optional<std::string> endpoint{};
  std::string sep{};
};

TEST(ChainNames, MatchKubeProxy) {
  const std::vector<KnownName> known = {
      {port_name("ns1", "svc1", "p80"), "KUBE-SVC-XPGD46QRK7WJZT7O", "10.180.0.1",
       "KUBE-SEP-SXIVWICOYRO3J4NJ"},
      {port_name("ns2", "svc2", "p80"), "KUBE-SVC-GNZBNJ2PO5MGZ6GT", "10.180.0.2",
       "KUBE-SEP-RS4RBKLTHTF2IUXJ"},
      {port_name("ns3", "svc3", "p80"), "KUBE-SVC-X27LE4BHSL4DOUIK"},
      {port_name("ns4", "svc4", "p80"), "KUBE-SVC-4SW47YFZTEDKD3PK"},
      {port_name("ns5", "svc5", "p80"), "KUBE-SVC-NUKIZ6OKUXPJNT4C"},
  };
  for (const auto& k : known) {
    SCOPED_TRACE(k.name.to_string());
    EXPECT_EQ(svc_chain(k.name), k.svc);
    const std::string hash = k.svc.substr(9);
    EXPECT_EQ(chain_hash(k.name.hash_key()), hash);
    EXPECT_EQ(svl_chain(k.name), "KUBE-SVL-" + hash);
    EXPECT_EQ(ext_chain(k.name), "KUBE-EXT-" + hash);
    EXPECT_EQ(fw_chain(k.name), "KUBE-FW-" + hash);
    if (k.endpoint) {
      EXPECT_EQ(sep_chain(k.name, endpoint({*k.endpoint, 80})), k.sep);
    }
  }
  // The protocol is part of the hash: the same port name over UDP is another chain.
  EXPECT_NE(svc_chain(port_name("ns1", "svc1", "p80", Protocol::udp)), "KUBE-SVC-XPGD46QRK7WJZT7O");
}

TEST(ChainNames, RenderedNamesAreTheChainFunctions) {
  const auto result = render(clusterip_tcp(), {}, nullptr, {});
  const auto name = port_name("ns1", "svc1", "p80");
  EXPECT_EQ(result.nat_chains,
            (std::set<std::string>{"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING",
                                   "KUBE-MARK-MASQ", "KUBE-SVC-XPGD46QRK7WJZT7O",
                                   "KUBE-SEP-SXIVWICOYRO3J4NJ",
                                   sep_chain(name, endpoint({"10.180.0.2", 80}))}));
  EXPECT_EQ(result.filter_chains,
            (std::set<std::string>{"KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD",
                                   "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL"}));
}

TEST(ChainNames, OnlyPerServiceChainsAreOurs) {
  EXPECT_TRUE(is_service_chain("KUBE-SVC-XPGD46QRK7WJZT7O"));
  EXPECT_TRUE(is_service_chain("KUBE-SVL-XPGD46QRK7WJZT7O"));
  EXPECT_TRUE(is_service_chain("KUBE-EXT-XPGD46QRK7WJZT7O"));
  EXPECT_TRUE(is_service_chain("KUBE-FW-XPGD46QRK7WJZT7O"));
  EXPECT_TRUE(is_service_chain("KUBE-SEP-SXIVWICOYRO3J4NJ"));
  EXPECT_FALSE(is_service_chain("KUBE-SERVICES"));
  EXPECT_FALSE(is_service_chain("KUBE-MARK-MASQ"));
  EXPECT_FALSE(is_service_chain("DOCKER"));
}

// --- rule text -----------------------------------------------------------------------------------

std::vector<std::string> rules_of(const std::string& text, std::string_view chain) {
  std::vector<std::string> out;
  const std::string prefix = "-A " + std::string(chain) + " ";
  for (const auto& l : lines_of(text)) {
    if (l.starts_with(prefix)) out.push_back(l);
  }
  return out;
}

TEST(Render, ProbabilitiesAreKubeProxyText) {
  ProxyState state;
  std::vector<EndpointSpec> endpoints;
  static const std::vector<std::string> ips = {"10.180.0.1", "10.180.0.2", "10.180.0.3",
                                               "10.180.0.4", "10.180.0.5", "10.180.0.6",
                                               "10.180.0.7"};
  for (const auto& address : ips)
    endpoints.push_back({address, 80});
  const auto name = port_name("ns1", "svc1", "p80");
  add(state, name, service("172.30.0.41", 80), endpoints);
  const auto rules = rules_of(render(state, {}, nullptr, {}).text, svc_chain(name));
  ASSERT_EQ(rules.size(), 7u);
  const std::vector<std::string> expected = {"0.1428571429", "0.1666666667", "0.2000000000",
                                             "0.2500000000", "0.3333333333", "0.5000000000"};
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_THAT(rules[i], HasSubstr("-m statistic --mode random --probability " + expected[i] +
                                    " -j KUBE-SEP-"));
  }
  EXPECT_THAT(rules[6], Not(HasSubstr("statistic")));
  EXPECT_EQ(rules[0],
            "-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 -> "
            "10.180.0.1:80\" -m statistic --mode random --probability 0.1428571429 "
            "-j KUBE-SEP-SXIVWICOYRO3J4NJ");
}

TEST(Render, ExactRulesForOneService) {
  const auto result = render(clusterip_tcp(), with_cluster_cidr(), nullptr, {});
  EXPECT_EQ(rules_of(result.text, "KUBE-SEP-SXIVWICOYRO3J4NJ"),
            (std::vector<std::string>{
                "-A KUBE-SEP-SXIVWICOYRO3J4NJ -s 10.180.0.1/32 -m comment --comment "
                "\"ns1/svc1:p80\" -j KUBE-MARK-MASQ",
                "-A KUBE-SEP-SXIVWICOYRO3J4NJ -p tcp -m comment --comment \"ns1/svc1:p80\" -m tcp "
                "-j DNAT --to-destination 10.180.0.1:80"}));
  EXPECT_THAT(result.text,
              HasSubstr("\n-A KUBE-SERVICES -d 172.30.0.41/32 -p tcp -m comment --comment "
                        "\"ns1/svc1:p80 cluster IP\" -m tcp --dport 80 -j "
                        "KUBE-SVC-XPGD46QRK7WJZT7O\n"));
  EXPECT_THAT(result.text,
              HasSubstr("\n-A KUBE-SVC-XPGD46QRK7WJZT7O ! -s 10.0.0.0/8 -d 172.30.0.41/32 -p tcp "
                        "-m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp --dport 80 -j "
                        "KUBE-MARK-MASQ\n"));
  // 4 fixed nat rules + node-port jump + 3 forward rules; per service: the cluster IP, the
  // masquerade rule, 2 endpoint jumps, 2 rules per endpoint.
  EXPECT_EQ(result.rules, 8u + 1 + 1 + 2 + 4);
}

TEST(Render, MasqueradeBitSetsTheMark) {
  RenderOptions options;
  options.masquerade_bit = 5;
  const auto text = render(clusterip_tcp(), options, nullptr, {}).text;
  EXPECT_THAT(text, HasSubstr("-A KUBE-MARK-MASQ -j MARK --or-mark 0x20\n"));
  EXPECT_THAT(text, HasSubstr("-A KUBE-POSTROUTING -m mark ! --mark 0x20/0x20 -j RETURN\n"));
  EXPECT_THAT(text, HasSubstr("-A KUBE-POSTROUTING -j MARK --xor-mark 0x20\n"));
  EXPECT_THAT(text, HasSubstr("--mark 0x20/0x20 -j ACCEPT\n"));
  EXPECT_THAT(text, Not(HasSubstr("0x4000")));
}

TEST(Render, LargeClustersDropEndpointComments) {
  ProxyState state;
  const auto name = port_name("ns1", "big", "p80");
  auto& list = state.endpoints[name];
  state.services[name] = service("172.30.0.41", 80);
  for (std::uint32_t i = 0; i < 1001; ++i) {
    EndpointInfo e;
    e.ip = IpAddress::v4((10u << 24) | (180u << 16) | i);
    e.port = 80;
    list.push_back(e);
  }
  const auto result = render(state, {}, nullptr, {});
  expect_consistent(result, {});
  const auto svc_rules = rules_of(result.text, svc_chain(name));
  ASSERT_EQ(svc_rules.size(), 1001u);
  EXPECT_THAT(svc_rules.front(), Not(HasSubstr("comment")));
  EXPECT_THAT(result.text, HasSubstr("\"ns1/big:p80 cluster IP\""));  // still on the service
  const auto sep = sep_chain(name, list.front());
  EXPECT_EQ(rules_of(result.text, sep),
            (std::vector<std::string>{
                "-A " + sep + " -s 10.180.0.0/32 -j KUBE-MARK-MASQ",
                "-A " + sep + " -p tcp -m tcp -j DNAT --to-destination 10.180.0.0:80"}));
  // One below the threshold keeps them.
  list.pop_back();
  EXPECT_THAT(rules_of(render(state, {}, nullptr, {}).text, svc_chain(name)).front(),
              HasSubstr("-m comment --comment \"ns1/big:p80 -> 10.180.0.0:80\""));
}

// --- partial renders ----------------------------------------------------------------------------

TEST(Partial, WritesOnlyChangedServiceChains) {
  const ProxyState state = mixed();
  const auto full = render(state, with_cluster_cidr(), nullptr, {});
  EXPECT_FALSE(full.partial);
  const auto svc1 = port_name("ns1", "svc1", "p80");
  const auto svc2 = port_name("ns2", "svc2", "p80");
  const std::set<ServicePortName> changed = {svc1};
  const auto partial = render(state, with_cluster_cidr(), &changed, full.nat_chains);
  EXPECT_TRUE(partial.partial);
  expect_consistent(partial, full.nat_chains);
  // Same chains once applied, fewer written.
  EXPECT_EQ(partial.nat_chains, full.nat_chains);
  EXPECT_EQ(partial.filter_chains, full.filter_chains);
  EXPECT_LT(partial.rules, full.rules);
  EXPECT_THAT(partial.text, HasSubstr(":" + svc_chain(svc1) + " - [0:0]\n"));
  EXPECT_THAT(partial.text, Not(HasSubstr(":" + svc_chain(svc2) + " - [0:0]")));
  EXPECT_THAT(partial.text, Not(HasSubstr(":" + ext_chain(svc2) + " - [0:0]")));
  EXPECT_THAT(partial.text, Not(HasSubstr("-A " + svc_chain(svc2) + " ")));
  EXPECT_THAT(partial.text,
              Not(HasSubstr(":" + sep_chain(svc2, endpoint({"10.180.0.2", 80})) + " ")));
  // Top-level chains are always rewritten, jumps to unchanged services included.
  EXPECT_THAT(partial.text, HasSubstr("--comment \"ns2/svc2:p80 cluster IP\" -m tcp --dport 80 "
                                      "-j " +
                                      svc_chain(svc2) + "\n"));
  EXPECT_THAT(partial.text, HasSubstr("-A KUBE-NODEPORTS -p tcp -m comment --comment "
                                      "\"ns2/svc2:p80\" -m tcp --dport 3001 -j " +
                                      ext_chain(svc2) + "\n"));
  EXPECT_THAT(partial.text, HasSubstr("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n"));
  EXPECT_EQ(partial.text.find("-X "), std::string::npos);

  // Nothing changed: only the top-level chains.
  const std::set<ServicePortName> none;
  const auto idle = render(state, with_cluster_cidr(), &none, full.nat_chains);
  // Two table lines, two COMMITs, 5 + 4 top-level chains, the rules.
  EXPECT_EQ(lines_of(idle.text).size(), 4u + 5 + 4 + idle.rules);
  for (const auto& l : lines_of(idle.text)) {
    if (l.starts_with(':')) {
      EXPECT_FALSE(is_service_chain(l.substr(1))) << l;
    }
  }
}

TEST(Partial, WritesServicesWhoseChainsAreMissing) {
  const ProxyState state = mixed();
  const auto full = render(state, with_cluster_cidr(), nullptr, {});
  const auto svc3 = port_name("ns3", "svc3", "p80");
  auto previous = full.nat_chains;
  previous.erase(sep_chain(svc3, endpoint({"10.180.0.3", 80})));
  const std::set<ServicePortName> none;
  const auto partial = render(state, with_cluster_cidr(), &none, previous);
  expect_consistent(partial, previous);
  EXPECT_THAT(partial.text, HasSubstr(":" + svc_chain(svc3) + " - [0:0]\n"));
  EXPECT_THAT(partial.text, HasSubstr(":" + sep_chain(svc3, endpoint({"10.180.0.3", 80}))));
  EXPECT_THAT(partial.text, Not(HasSubstr(":" + svc_chain(port_name("ns2", "svc2", "p80")))));
}

TEST(Partial, DeletesStaleChainsAfterFlushingThem) {
  const ProxyState state = mixed();
  const auto previous = mixed_previous();
  const std::set<ServicePortName> changed = {port_name("ns1", "svc1", "p80"),
                                             port_name("ns9", "gone", "p80")};
  for (const auto* c : {&changed, static_cast<const std::set<ServicePortName>*>(nullptr)}) {
    const auto result = render(state, with_cluster_cidr(), c, previous);
    const auto stale_sep = sep_chain(port_name("ns1", "svc1", "p80"), endpoint({"10.180.0.99"}));
    const auto gone_svc = svc_chain(port_name("ns9", "gone", "p80"));
    const auto gone_sep = sep_chain(port_name("ns9", "gone", "p80"), endpoint({"10.180.9.9"}));
    std::vector<std::string> deleted;
    for (const auto& l : lines_of(result.text)) {
      if (l.starts_with("-X ")) deleted.push_back(l.substr(3));
    }
    std::sort(deleted.begin(), deleted.end());
    std::vector<std::string> expected = {stale_sep, gone_svc, gone_sep};
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(deleted, expected);
    for (const auto& chain : expected) {
      EXPECT_THAT(result.text, HasSubstr("\n:" + chain + " - [0:0]\n"));
      EXPECT_FALSE(result.nat_chains.contains(chain));
    }
    // Foreign and top-level chains are never deleted.
    EXPECT_THAT(result.text, Not(HasSubstr("-X DOCKER")));
    EXPECT_THAT(result.text, Not(HasSubstr("-X KUBE-KUBELET-CANARY")));
    EXPECT_THAT(result.text, Not(HasSubstr("-X KUBE-SERVICES")));
  }
}

// N services of one port and two endpoints, every other one with a node port if asked.
ProxyState many_services(std::uint32_t n, bool node_ports) {
  ProxyState state;
  for (std::uint32_t i = 0; i < n; ++i) {
    const auto name = port_name("ns", "svc-" + std::to_string(i), "p80");
    auto info = service("172.30.0.1", 80);
    info.cluster_ip = IpAddress::v4((172u << 24) | (30u << 16) | (i + 1));
    if (node_ports && i % 2 == 0) info.node_port = static_cast<std::uint16_t>(30000 + i);
    auto& list = state.endpoints[name];
    for (std::uint32_t k = 0; k < 2; ++k) {
      EndpointInfo e;
      e.ip = IpAddress::v4((10u << 24) | (180u << 16) | (2 * i + k));
      e.port = 8080;
      list.push_back(e);
    }
    state.services[name] = info;
  }
  return state;
}

TEST(Render, EntryRulesComeSortedByTheirTargetLastFirst) {
  const auto result = render(many_services(300, true), with_cluster_cidr(), nullptr, {});
  expect_consistent(result, {});
  std::vector<std::string> targets;
  std::size_t services_rules = 0;
  bool nodeports_jump_last = false;
  for (const auto& l : lines_of(result.text.substr(result.text.find("*nat")))) {
    const bool services = l.starts_with("-A KUBE-SERVICES ");
    if (!services && !l.starts_with("-A KUBE-NODEPORTS ")) continue;
    nodeports_jump_last = l.ends_with("-j KUBE-NODEPORTS");
    if (nodeports_jump_last) continue;
    services_rules += services ? 1 : 0;
    targets.push_back(l.substr(l.rfind(" -j ") + 4));
  }
  EXPECT_TRUE(nodeports_jump_last);
  EXPECT_EQ(services_rules, 300u);
  ASSERT_EQ(targets.size(), 450u);
  EXPECT_TRUE(std::is_sorted(targets.rbegin(), targets.rend())) << "not in descending order";
}

// iptables-nft keeps the chain names of a --noflush transaction in a sorted list (runner.hpp).
// A full render names every chain; a partial one names the top-level chains' targets in an order
// that list finds at its head, so its cost grows with the services, not with their square.
// (Rules that jump to KUBE-EXT chains are the exception: that name sorts before KUBE-NODEPORTS
// and KUBE-SERVICES, so each such rule walks past the targets of the ones before it.)
TEST(Render, APartialRenderOfManyServicesIsCheapForIptablesNft) {
  const auto state = many_services(2000, false);
  const auto full = render(state, with_cluster_cidr(), nullptr, {});
  const auto nat = [](const std::string& text) {
    return std::string_view(text).substr(text.find("*nat\n") + 5);
  };
  EXPECT_GT(nft_chain_list_steps(nat(full.text)), kNftFullCacheSteps);
  const std::set<ServicePortName> changed = {port_name("ns", "svc-1000", "p80")};
  const auto partial = render(state, with_cluster_cidr(), &changed, full.nat_chains);
  const auto steps = nft_chain_list_steps(nat(partial.text));
  EXPECT_LT(steps, 20u * 2000u) << "2000 entry rules";
  // The same rules with their targets in ascending order cost the square of their count.
  auto lines = lines_of(std::string(nat(partial.text)));
  std::vector<std::size_t> at;
  std::vector<std::string> entry;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (!lines[i].starts_with("-A KUBE-SERVICES -d")) continue;
    at.push_back(i);
    entry.push_back(lines[i]);
  }
  const auto target = [](const std::string& l) { return l.substr(l.rfind(" -j ") + 4); };
  std::sort(entry.begin(), entry.end(),
            [&](const std::string& a, const std::string& b) { return target(a) < target(b); });
  for (std::size_t k = 0; k < at.size(); ++k)
    lines[at[k]] = entry[k];
  std::string reordered;
  for (const auto& l : lines)
    reordered += l + "\n";
  EXPECT_GT(nft_chain_list_steps(reordered), 50 * steps);
}

TEST(Partial, LeavesUnchangedEntryChainsAlone) {
  const auto state = many_services(50, true);
  const auto full = render(state, with_cluster_cidr(), nullptr, {});
  EXPECT_TRUE(full.wrote_entry_rules);
  EXPECT_THAT(full.entry_rules, HasSubstr("-j KUBE-NODEPORTS\n"));
  // One endpoint moves: the service's chains are rewritten, KUBE-SERVICES and KUBE-NODEPORTS in
  // nat are not (filter's chains still are).
  auto moved = state;
  const auto name = port_name("ns", "svc-7", "p80");
  moved.endpoints[name].front().ip = ip("10.181.0.1");
  const std::set<ServicePortName> changed = {name};
  const auto partial =
      render(moved, with_cluster_cidr(), &changed, full.nat_chains, &full.entry_rules);
  expect_consistent(partial, full.nat_chains);
  EXPECT_FALSE(partial.wrote_entry_rules);
  EXPECT_EQ(partial.entry_rules, full.entry_rules);
  const auto nat = partial.text.substr(partial.text.find("*nat\n"));
  EXPECT_THAT(nat, Not(HasSubstr(":KUBE-SERVICES ")));
  EXPECT_THAT(nat, Not(HasSubstr(":KUBE-NODEPORTS ")));
  EXPECT_THAT(nat, Not(HasSubstr("-A KUBE-SERVICES ")));
  EXPECT_THAT(nat, Not(HasSubstr("-A KUBE-NODEPORTS ")));
  EXPECT_THAT(nat, HasSubstr(":" + svc_chain(name) + " - [0:0]\n"));
  EXPECT_THAT(partial.text.substr(0, partial.text.find("*nat\n")),
              HasSubstr(":KUBE-SERVICES - [0:0]\n"));
  std::size_t lines = 0;
  for (const auto& l : lines_of(partial.text))
    lines += l.starts_with("-A ") ? 1 : 0;
  EXPECT_EQ(partial.rules, lines);
  // The same change without the previous entry rules, or a full render, writes them.
  EXPECT_TRUE(render(moved, with_cluster_cidr(), &changed, full.nat_chains).wrote_entry_rules);
  EXPECT_TRUE(render(moved, with_cluster_cidr(), nullptr, full.nat_chains, &full.entry_rules)
                  .wrote_entry_rules);
  // A service that loses its endpoints leaves KUBE-SERVICES: written.
  auto lost = state;
  lost.endpoints.erase(name);
  const auto rewritten =
      render(lost, with_cluster_cidr(), &changed, full.nat_chains, &full.entry_rules);
  expect_consistent(rewritten, full.nat_chains);
  EXPECT_TRUE(rewritten.wrote_entry_rules);
  EXPECT_THAT(rewritten.text, HasSubstr("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n"));
  EXPECT_THAT(rewritten.text, Not(HasSubstr("-j " + svc_chain(name) + "\n")));
}

TEST(Render, RepeatedRendersAreIdentical) {
  const ProxyState state = mixed();
  const auto a = render(state, with_cluster_cidr(), nullptr, {});
  const auto b = render(state, with_cluster_cidr(), nullptr, {});
  EXPECT_EQ(a.text, b.text);
  EXPECT_EQ(a.rules, b.rules);
  EXPECT_EQ(a.nat_chains, b.nat_chains);
}

TEST(Render, EmptyStateHasOnlyTopLevelChains) {
  const auto result = render({}, {}, nullptr, {});
  expect_consistent(result, {});
  EXPECT_EQ(result.text,
            "*filter\n"
            ":KUBE-SERVICES - [0:0]\n"
            ":KUBE-EXTERNAL-SERVICES - [0:0]\n"
            ":KUBE-FORWARD - [0:0]\n"
            ":KUBE-NODEPORTS - [0:0]\n"
            ":KUBE-PROXY-FIREWALL - [0:0]\n"
            "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n"
            "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark "
            "0x4000/0x4000 -j ACCEPT\n"
            "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m "
            "conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
            "COMMIT\n"
            "*nat\n"
            ":KUBE-SERVICES - [0:0]\n"
            ":KUBE-NODEPORTS - [0:0]\n"
            ":KUBE-POSTROUTING - [0:0]\n"
            ":KUBE-MARK-MASQ - [0:0]\n"
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n"
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n"
            "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring "
            "SNAT\" -j MASQUERADE --random-fully\n"
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n"
            "-A KUBE-SERVICES ! -d 127.0.0.0/8 -m comment --comment \"kubernetes service "
            "nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type "
            "LOCAL -j KUBE-NODEPORTS\n"
            "COMMIT\n");
  EXPECT_EQ(result.rules, 8u);
}

// --- jump rules ---------------------------------------------------------------------------------

TEST(JumpRules, AreKubeProxys) {
  const auto& rules = jump_rules();
  ASSERT_EQ(rules.size(), 12u);
  EXPECT_EQ(rules.front().table, "filter");
  EXPECT_EQ(rules.front().chain, "INPUT");
  EXPECT_EQ(rules.front().args,
            (std::vector<std::string>{"-m", "conntrack", "--ctstate", "NEW", "-m", "comment",
                                      "--comment", "kubernetes externally-visible service portals",
                                      "-j", "KUBE-EXTERNAL-SERVICES"}));
  EXPECT_EQ(rules.back().table, "nat");
  EXPECT_EQ(rules.back().chain, "POSTROUTING");
  EXPECT_EQ(rules.back().args,
            (std::vector<std::string>{"-m", "comment", "--comment", "kubernetes postrouting rules",
                                      "-j", "KUBE-POSTROUTING"}));
  std::set<std::tuple<std::string, std::string, std::string>> seen;
  for (const auto& rule : rules) {
    ASSERT_GE(rule.args.size(), 2u);
    EXPECT_EQ(rule.args[rule.args.size() - 2], "-j");
    const auto& target = rule.args.back();
    const auto result = render({}, {}, nullptr, {});
    const auto& ours = rule.table == "nat" ? result.nat_chains : result.filter_chains;
    EXPECT_TRUE(ours.contains(target)) << rule.table << " " << target;
    EXPECT_TRUE(seen.emplace(rule.table, rule.chain, target).second) << rule.chain;
  }
}

}  // namespace
}  // namespace flatnet::proxy::iptables
