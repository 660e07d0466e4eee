// iptables mode without a kernel: the proxier's transactions against a recording fake of the
// iptables binaries and of the conntrack table, and the choice of stale UDP entries.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "flatnet/proxy/iptables/conntrack.hpp"
#include "flatnet/proxy/iptables/proxier.hpp"
#include "flatnet/proxy/iptables/render.hpp"
#include "flatnet/proxy/iptables/runner.hpp"

namespace flatnet::proxy::iptables {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

IpAddress ip(const char* text) {
  return IpAddress::parse(text);
}

// Records every call; chains declared by a restore are "created", so that `iptables-save` and
// `-C` answer as the kernel would for what the proxy made.
struct FakeIptablesLog {
  std::vector<std::string> restores;
  std::vector<std::vector<std::string>> commands;
  std::set<std::string> jumps;  // "nat PREROUTING -m comment ... -j KUBE-SERVICES"
  std::map<std::string, std::set<std::string>> chains{{"filter", {}}, {"nat", {}}};
  int fail_next_restores = 0;
};

class FakeIptables final : public Iptables {
 public:
  explicit FakeIptables(FakeIptablesLog* log) : log_(log) {}
  std::string backend() const override { return "nft"; }
  CommandResult restore(const std::string& text) override {
    log_->restores.push_back(text);
    if (log_->fail_next_restores > 0) {
      --log_->fail_next_restores;
      return {2, "", "iptables-restore: line 7 failed\n"};
    }
    std::string table;
    std::size_t pos = 0;
    while (pos < text.size()) {
      auto end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      const std::string line = text.substr(pos, end - pos);
      if (line.starts_with("*")) table = line.substr(1);
      if (line.starts_with(":")) log_->chains[table].insert(line.substr(1, line.find(' ') - 1));
      if (line.starts_with("-X ")) log_->chains[table].erase(line.substr(3));
      if (line.starts_with("-I ")) {  // a jump: stored as "table chain args", quotes dropped
        std::string jump = table + " " + line.substr(3);
        std::erase(jump, '"');
        log_->jumps.insert(jump);
      }
      pos = end + 1;
    }
    return {};
  }
  CommandResult save(const std::string& table) override {
    std::string out = "*" + table + "\n";
    for (const auto& chain : log_->chains[table])
      out += ":" + chain + " - [0:0]\n";
    return {0, out + "COMMIT\n", ""};
  }
  CommandResult run(const std::vector<std::string>& args) override {
    log_->commands.push_back(args);
    if (args.at(2) == "-S") {  // -t TABLE -S CHAIN
      std::string out = "-P " + args.at(3) + " ACCEPT\n";
      for (const auto& jump : log_->jumps) {
        const std::string head = args.at(1) + " " + args.at(3) + " ";
        if (!jump.starts_with(head)) continue;
        // iptables quotes a comment with spaces.
        std::string rule = "-A " + args.at(3);
        std::istringstream words(jump.substr(head.size()));
        for (std::string word; words >> word;)
          rule += " " + word;
        out += rule + "\n";
      }
      return {0, out, ""};
    }
    // args: -t TABLE -C|-I|-D CHAIN rule...
    std::string rule = args.at(1) + " " + args.at(3);
    for (std::size_t i = 4; i < args.size(); ++i)
      rule += " " + args[i];
    const auto& action = args.at(2);
    if (action == "-C")
      return log_->jumps.contains(rule) ? CommandResult{} : CommandResult{1, "", "no such rule"};
    if (action == "-I") log_->jumps.insert(rule);
    if (action == "-D") log_->jumps.erase(rule);
    return {};
  }

 private:
  FakeIptablesLog* log_;
};

class FakeConntrack final : public Conntrack {
 public:
  explicit FakeConntrack(std::vector<Flow>* table) : table_(table) {}
  std::vector<Flow> udp_flows() override { return *table_; }
  bool remove(const Flow& flow) override {
    const auto it = std::find(table_->begin(), table_->end(), flow);
    if (it == table_->end()) return false;
    table_->erase(it);
    return true;
  }

 private:
  std::vector<Flow>* table_;
};

const ServicePortName kDns{"kube-system", "dns", "dns", Protocol::udp};
const ServicePortName kWeb{"default", "web", "", Protocol::tcp};

EndpointInfo endpoint(const char* address, std::uint16_t port) {
  EndpointInfo e;
  e.ip = ip(address);
  e.port = port;
  return e;
}

ProxyState state_with(std::vector<EndpointInfo> dns_endpoints) {
  ProxyState state;
  ServicePortInfo dns;
  dns.cluster_ip = ip("10.96.0.10");
  dns.port = 53;
  dns.protocol = Protocol::udp;
  dns.node_port = 30053;
  state.services[kDns] = dns;
  if (!dns_endpoints.empty()) state.endpoints[kDns] = std::move(dns_endpoints);
  ServicePortInfo web;
  web.cluster_ip = ip("10.96.0.20");
  web.port = 80;
  state.services[kWeb] = web;
  state.endpoints[kWeb] = {endpoint("10.244.1.7", 8080)};
  return state;
}

Flow flow(const char* destination, std::uint16_t port, const char* backend,
          std::uint16_t backend_port) {
  Flow f;
  f.source = ip("10.244.1.50");
  f.source_port = 40000;
  f.destination = ip(destination);
  f.destination_port = port;
  f.reply_source = ip(backend);
  f.reply_source_port = backend_port;
  return f;
}

TEST(ProxyConntrack, EntriesToAnEndpointThatLeftAreStale) {
  const auto state = state_with({endpoint("10.244.2.5", 5353)});
  const std::vector<Flow> flows = {flow("10.96.0.10", 53, "10.244.2.5", 5353),   // current
                                   flow("10.96.0.10", 53, "10.244.1.9", 5353),   // gone
                                   flow("10.96.0.10", 53, "10.244.2.5", 5354),   // old port
                                   flow("10.96.0.99", 53, "10.244.1.9", 5353)};  // not a service
  const auto stale = stale_udp_flows(state, ProxyState{}, flows, {});
  ASSERT_EQ(stale.size(), 2U);
  EXPECT_EQ(stale[0], flows[1]);
  EXPECT_EQ(stale[1], flows[2]);
  EXPECT_EQ(stale[0].to_string(),
            "udp 10.244.1.50:40000 -> 10.96.0.10:53 (backend 10.244.1.9:5353)");
}

TEST(ProxyConntrack, UntranslatedEntriesGoOnceThereAreEndpoints) {
  const std::vector<Flow> flows = {flow("10.96.0.10", 53, "10.96.0.10", 53)};
  EXPECT_TRUE(stale_udp_flows(state_with({}), ProxyState{}, flows, {}).empty());
  EXPECT_EQ(
      stale_udp_flows(state_with({endpoint("10.244.2.5", 5353)}), ProxyState{}, flows, {}).size(),
      1U);
}

TEST(ProxyConntrack, NodePortEntriesCountOnlyOnNodeAddresses) {
  const auto state = state_with({endpoint("10.244.2.5", 5353)});
  const std::vector<Flow> flows = {flow("172.18.0.2", 30053, "10.244.1.9", 5353),
                                   flow("172.18.0.9", 30053, "10.244.1.9", 5353)};
  const auto stale = stale_udp_flows(state, ProxyState{}, flows, {ip("172.18.0.2")});
  ASSERT_EQ(stale.size(), 1U);
  EXPECT_EQ(stale[0], flows[0]);
}

TEST(ProxyConntrack, TcpServicesAreLeftAlone) {
  const std::vector<Flow> flows = {flow("10.96.0.20", 80, "10.244.9.9", 8080)};
  EXPECT_TRUE(stale_udp_flows(state_with({}), ProxyState{}, flows, {}).empty());
}

TEST(ProxyConntrack, EntriesToADeletedServiceAreStale) {
  const auto before = state_with({endpoint("10.244.2.5", 5353)});
  ProxyState after = before;
  after.services.erase(kDns);
  after.endpoints.erase(kDns);
  const std::vector<Flow> flows = {flow("10.96.0.10", 53, "10.244.2.5", 5353)};
  EXPECT_EQ(stale_udp_flows(after, before, flows, {}).size(), 1U);
  EXPECT_TRUE(stale_udp_flows(before, before, flows, {}).empty());
}

struct Harness {
  FakeIptablesLog log;
  std::vector<Flow> conntrack;
  std::unique_ptr<Proxier> proxier;

  explicit Harness(ProxyConfig config = {}) {
    proxier = make_proxier(config, std::make_unique<FakeIptables>(&log),
                           std::make_unique<FakeConntrack>(&conntrack),
                           [] { return std::vector<IpAddress>{ip("172.18.0.2")}; });
  }

  SyncOutcome sync(const ProxyState& state, const StateChanges& changes, bool full) {
    return proxier->sync({state, changes, full});
  }
};

TEST(ProxyIptablesProxier, AFullSyncIsOneRestoreThenTheJumps) {
  Harness h;
  const auto state = state_with({endpoint("10.244.2.5", 5353)});
  const auto outcome = h.sync(state, diff({}, state), true);
  ASSERT_TRUE(outcome.ok) << outcome.error;
  EXPECT_FALSE(outcome.partial);
  ASSERT_EQ(h.log.restores.size(), 1U);
  EXPECT_THAT(h.log.restores[0], HasSubstr("-A KUBE-SERVICES"));
  EXPECT_GT(outcome.rules_written, 0U);
  EXPECT_EQ(h.log.jumps.size(), jump_rules().size());
  // A second full sync lists each built-in chain once, finds the jumps and inserts none.
  const auto commands = h.log.commands.size();
  ASSERT_TRUE(h.sync(state, {}, true).ok);
  std::set<std::string> listed;
  for (auto i = commands; i < h.log.commands.size(); ++i) {
    const auto& command = h.log.commands[i];
    EXPECT_EQ(command.at(2), "-S");
    EXPECT_TRUE(listed.insert(command.at(1) + " " + command.at(3)).second) << "listed twice";
  }
  EXPECT_EQ(listed.size(), 6U);  // filter INPUT FORWARD OUTPUT, nat PREROUTING OUTPUT POSTROUTING
  EXPECT_EQ(h.log.jumps.size(), jump_rules().size());
}

TEST(ProxyIptablesProxier, APartialSyncRewritesOnlyTheChangedService) {
  Harness h;
  const auto before = state_with({endpoint("10.244.2.5", 5353)});
  ASSERT_TRUE(h.sync(before, diff({}, before), true).ok);
  auto after = before;
  after.endpoints[kWeb] = {endpoint("10.244.1.8", 8080)};
  const auto changes = diff(before, after);
  const auto outcome = h.sync(after, changes, false);
  ASSERT_TRUE(outcome.ok) << outcome.error;
  EXPECT_TRUE(outcome.partial);
  const auto& text = h.log.restores.back();
  EXPECT_THAT(text, HasSubstr("10.244.1.8:8080"));
  EXPECT_THAT(text, Not(HasSubstr("10.244.2.5:5353")));  // dns's chains are not rewritten
  EXPECT_THAT(text, HasSubstr("-X KUBE-SEP-"));          // web's old endpoint chain goes
}

TEST(ProxyIptablesProxier, AFailedRestoreIsReportedAndTheNextSyncIsFull) {
  Harness h;
  const auto state = state_with({endpoint("10.244.2.5", 5353)});
  h.log.fail_next_restores = 1;
  const auto failed = h.sync(state, diff({}, state), true);
  EXPECT_FALSE(failed.ok);
  EXPECT_THAT(failed.error, HasSubstr("iptables-restore (nft) failed: iptables-restore: line 7"));
  EXPECT_TRUE(h.log.jumps.empty());
  // Asked for a partial sync, the proxier still writes everything: it does not know what exists.
  const auto retried = h.sync(state, {}, false);
  ASSERT_TRUE(retried.ok) << retried.error;
  EXPECT_FALSE(retried.partial);
}

TEST(ProxyIptablesProxier, ChainsLeftByAnEarlierRunAreDeletedAtTheFirstSync) {
  Harness h;
  h.log.chains["nat"] = {"KUBE-SERVICES", "KUBE-SVC-LEFTOVER0000000", "KUBE-SEP-LEFTOVER0000000"};
  const auto state = state_with({});
  ASSERT_TRUE(h.sync(state, diff({}, state), true).ok);
  EXPECT_THAT(h.log.restores[0], HasSubstr("-X KUBE-SVC-LEFTOVER0000000"));
  EXPECT_THAT(h.log.restores[0], HasSubstr("-X KUBE-SEP-LEFTOVER0000000"));
}

TEST(ProxyIptablesProxier, StaleUdpEntriesAreDeletedAfterASync) {
  Harness h;
  const auto before = state_with({endpoint("10.244.2.5", 5353)});
  ASSERT_TRUE(h.sync(before, diff({}, before), true).ok);
  h.conntrack = {flow("10.96.0.10", 53, "10.244.2.5", 5353)};
  const auto after = state_with({endpoint("10.244.2.6", 5353)});
  ASSERT_TRUE(h.sync(after, diff(before, after), false).ok);
  EXPECT_TRUE(h.conntrack.empty());
}

TEST(ProxyIptablesProxier, CleanupRemovesJumpsAndChainsButNotKubeletsOwn) {
  Harness h;
  const auto state = state_with({endpoint("10.244.2.5", 5353)});
  ASSERT_TRUE(h.sync(state, diff({}, state), true).ok);
  h.log.chains["filter"].insert("KUBE-FIREWALL");  // kubelet's
  std::string error;
  EXPECT_TRUE(h.proxier->cleanup(error)) << error;
  EXPECT_TRUE(h.log.jumps.empty());
  EXPECT_EQ(h.log.chains["nat"], std::set<std::string>{});
  EXPECT_EQ(h.log.chains["filter"], std::set<std::string>{"KUBE-FIREWALL"});
  // Repeating it is safe and does nothing.
  const auto restores = h.log.restores.size();
  EXPECT_TRUE(h.proxier->cleanup(error)) << error;
  EXPECT_EQ(h.log.restores.size(), restores);
}

TEST(ProxyIptablesProxier, NodePortAddressesThatMatchNothingOpenNoNodePort) {
  ProxyConfig config;
  config.nodeport_addresses = {netmodel::IpPrefix::parse("192.168.50.0/24")};
  Harness h(config);  // the node's address is 172.18.0.2
  const auto state = state_with({endpoint("10.244.2.5", 5353)});
  ASSERT_TRUE(h.sync(state, diff({}, state), true).ok);
  // No jump from KUBE-SERVICES to KUBE-NODEPORTS at all (its comment names it).
  EXPECT_THAT(h.log.restores[0], Not(HasSubstr("kubernetes service nodeports")));
  EXPECT_THAT(h.log.restores[0], Not(HasSubstr("--dst-type LOCAL")));

  ProxyConfig matching;
  matching.nodeport_addresses = {netmodel::IpPrefix::parse("172.18.0.0/24")};
  Harness m(matching);
  ASSERT_TRUE(m.sync(state, diff({}, state), true).ok);
  EXPECT_THAT(m.log.restores[0], HasSubstr("-A KUBE-SERVICES -d 172.18.0.2/32"));
}

TEST(ProxyIptablesProxier, OurChainsAreReadFromASavedTable) {
  const std::string saved =
      "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-ABC - [0:0]\n"
      ":KUBE-KUBELET-CANARY - [0:0]\n:DOCKER - [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n";
  EXPECT_EQ(our_chains(saved), (std::set<std::string>{"KUBE-SERVICES", "KUBE-SVC-ABC"}));
}

// --- iptables-nft's chain list (runner.hpp) -----------------------------------------------------

TEST(NftChainList, EachLookupWalksPastTheSmallerNamesInTheList) {
  // B: empty list, 1. A: before B, 1. "-A A": A first, 1; its target B: after A, 2. "-A B -j
  // ACCEPT": B, 2 (ACCEPT is a verdict, no chain).
  EXPECT_EQ(nft_chain_list_steps(":B - [0:0]\n:A - [0:0]\n-A A -j B\n-A B -j ACCEPT\n"), 7u);
  // Lines without a chain cost nothing; a quoted comment that reads like a jump is no jump.
  EXPECT_EQ(nft_chain_list_steps("# -A X -j Y\n-A X -m comment --comment \"a -j B\" -j DNAT "
                                 "--to-destination 10.0.0.1:80\n"),
            1u);
  // -g and renames count; a chain the block declares counts as a target even in capitals. FOO:
  // 1. KUBE-X: after FOO, 2; FOO: 1. KUBE-X: 2; KUBE-Y: after FOO and KUBE-X, 3.
  EXPECT_EQ(nft_chain_list_steps(":FOO - [0:0]\n-A KUBE-X -g FOO\n-E KUBE-X KUBE-Y\n"),
            1u + (2u + 1u) + (2u + 3u));
}

TEST(NftChainList, AscendingNamesCostTheirSquareDescendingOnlyTheirCount) {
  std::string ascending, descending;
  for (int i = 0; i < 1000; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "KUBE-SVC-%04d", i);
    ascending += std::string(":") + name + " - [0:0]\n";
    std::snprintf(name, sizeof name, "KUBE-SVC-%04d", 999 - i);
    descending += std::string(":") + name + " - [0:0]\n";
  }
  EXPECT_EQ(nft_chain_list_steps(ascending), 1000u * 1001u / 2u);
  EXPECT_EQ(nft_chain_list_steps(descending), 1000u);
  // Counting stops once past the limit.
  EXPECT_LT(nft_chain_list_steps(ascending, 10'000), 20'000u);
}

TEST(NftChainList, OnlyCostlyBlocksGetTheListing) {
  std::string nat = "*nat\n";
  for (int i = 0; i < 200; ++i)
    nat += ":KUBE-SVC-" + std::to_string(1000 + i) + " - [0:0]\n";
  nat += "COMMIT\n";
  const std::string text = "*filter\n:KUBE-FORWARD - [0:0]\nCOMMIT\n" + nat;
  std::vector<std::size_t> inserted;
  EXPECT_EQ(with_full_table_cache(text, 1'000'000, inserted), text);
  EXPECT_TRUE(inserted.empty());
  const auto out = with_full_table_cache(text, 1'000, inserted);
  EXPECT_EQ(inserted, (std::vector<std::size_t>{5, 6, 7, 8, 9}));
  EXPECT_EQ(out,
            "*filter\n:KUBE-FORWARD - [0:0]\nCOMMIT\n*nat\n:PREROUTING - [0:0]\n:INPUT - "
            "[0:0]\n:OUTPUT - [0:0]\n:POSTROUTING - [0:0]\n-S\n" +
                nat.substr(5));
  // An empty block costs nothing; a text without a final newline.
  EXPECT_EQ(with_full_table_cache("*nat\nCOMMIT\n*filter\n:A - [0:0]", 0, inserted),
            "*nat\nCOMMIT\n*filter\n:INPUT - [0:0]\n:FORWARD - [0:0]\n:OUTPUT - [0:0]\n-S\n:A "
            "- [0:0]");
  EXPECT_EQ(inserted, (std::vector<std::size_t>{4, 5, 6, 7}));
  // A table iptables-nft does not know is left as it is.
  EXPECT_EQ(with_full_table_cache("*other\n:A - [0:0]\nCOMMIT\n", 0, inserted),
            "*other\n:A - [0:0]\nCOMMIT\n");
  EXPECT_TRUE(inserted.empty());
}

TEST(NftChainList, ErrorsNameTheLinesOfTheTextAsRendered) {
  const std::vector<std::size_t> inserted = {5, 6, 40};
  EXPECT_EQ(renumber_lines("iptables-nft-restore: line 12 failed: No such file\n", inserted),
            "iptables-nft-restore: line 10 failed: No such file\n");
  EXPECT_EQ(renumber_lines("Bad argument\nError occurred at line: 41\n", inserted),
            "Bad argument\nError occurred at line: 38\n");
  EXPECT_EQ(renumber_lines("line 3 failed; line 6 failed", inserted),
            "line 3 failed; line 4 failed");  // an added line: its "*table" line
  EXPECT_EQ(renumber_lines("no line number here, lines", inserted), "no line number here, lines");
  EXPECT_EQ(renumber_lines("line 7 failed", {}), "line 7 failed");
}

}  // namespace
}  // namespace flatnet::proxy::iptables
