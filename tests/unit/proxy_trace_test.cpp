// The in-memory iptables (tests/support/iptables_model) on hand-written rules, then the packet-flow
// table: flatnet-proxy's rendered ruleset applied to it and packets traced through, each row
// asserting where a packet ends up and whether it is masqueraded, as kube-proxy's
// proxier_test.go does with runPacketFlowTests.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "flatnet/proxy/iptables/render.hpp"
#include "flatnet/proxy/model.hpp"
#include "flatnet/testing/iptables_model.hpp"

namespace flatnet::testing {
namespace {

using netmodel::IpAddress;
using netmodel::IpPrefix;
using netmodel::Protocol;
using proxy::EndpointInfo;
using proxy::ProxyState;
using proxy::ServicePortInfo;
using proxy::ServicePortName;
using proxy::iptables::RenderOptions;

IpAddress ip(const char* text) {
  return IpAddress::parse(text);
}

std::string empty_save() {
  return "*filter\n"
         ":INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
         "COMMIT\n"
         "*nat\n"
         ":PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
         ":POSTROUTING ACCEPT [0:0]\n"
         "COMMIT\n";
}

// Expects apply_restore to throw an error containing `needle`, and the model to be unchanged.
void expect_restore_error(IptablesModel& model, const std::string& text, bool noflush,
                          const std::string& needle) {
  const std::string before = model.save();
  try {
    model.apply_restore(text, noflush);
    ADD_FAILURE() << "restore succeeded, expected an error containing \"" << needle << "\"";
  } catch (const IptablesError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
  EXPECT_EQ(model.save(), before) << "a failed restore changed the model";
}

std::vector<std::string> rules_of(const IptablesModel& model, const std::string& table,
                                  const std::string& chain) {
  std::vector<std::string> out;
  const Chain* c = model.find_chain(table, chain);
  if (c == nullptr) return out;
  for (const auto& rule : c->rules)
    out.push_back(rule.text());
  return out;
}

// --- the model ----------------------------------------------------------------------------------

TEST(IptablesModel, StartsWithTheBuiltInChainsOnly) {
  IptablesModel model;
  EXPECT_EQ(model.save(), empty_save());
  EXPECT_NE(model.find_chain("nat", "POSTROUTING"), nullptr);
  EXPECT_EQ(model.find_chain("filter", "PREROUTING"), nullptr);
  EXPECT_THROW(model.table("mangle"), IptablesError);
}

TEST(IptablesModel, RestoreCreatesChainsAndSaveRoundTrips) {
  IptablesModel model;
  model.apply_restore(R"(# written by hand
*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-A
-A KUBE-SVC-A -p tcp -m tcp -j DNAT --to-destination 10.244.1.5:6443
COMMIT
)",
                      true);
  EXPECT_EQ(rules_of(model, "nat", "KUBE-SERVICES"),
            std::vector<std::string>{"-d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-A"});
  EXPECT_EQ(rules_of(model, "nat", "PREROUTING"),
            std::vector<std::string>{
                "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"});
  EXPECT_EQ(model.references("nat", "KUBE-SVC-A"), 1u);

  IptablesModel copy;
  copy.apply_restore(model.save(), false);
  EXPECT_EQ(copy, model);
  EXPECT_EQ(copy.save(), model.save());
}

TEST(IptablesModel, NoflushFlushesDeclaredUserChainsAndKeepsTheRest) {
  IptablesModel model;
  model.apply_restore(
      "*nat\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-A KUBE-A -j KUBE-B\n-A KUBE-B -j RETURN\n"
      "-A OUTPUT -j KUBE-A\nCOMMIT\n",
      true);
  // KUBE-A declared again: flushed and refilled. KUBE-B and OUTPUT are not declared: kept.
  model.apply_restore("*nat\n:KUBE-A - [0:0]\n-A KUBE-A -j MARK --or-mark 0x1\nCOMMIT\n", true);
  EXPECT_EQ(rules_of(model, "nat", "KUBE-A"), std::vector<std::string>{"-j MARK --or-mark 0x1"});
  EXPECT_EQ(rules_of(model, "nat", "KUBE-B"), std::vector<std::string>{"-j RETURN"});
  EXPECT_EQ(rules_of(model, "nat", "OUTPUT"), std::vector<std::string>{"-j KUBE-A"});
}

TEST(IptablesModel, NoflushBuiltInChainLineSetsOnlyThePolicy) {
  IptablesModel model;
  model.apply_restore("*filter\n-A FORWARD -p udp -j ACCEPT\nCOMMIT\n", true);
  model.apply_restore("*filter\n:FORWARD DROP [12:345]\n:INPUT - [0:0]\nCOMMIT\n", true);
  EXPECT_EQ(model.find_chain("filter", "FORWARD")->policy, "DROP");
  EXPECT_EQ(model.find_chain("filter", "INPUT")->policy, "ACCEPT");
  EXPECT_EQ(rules_of(model, "filter", "FORWARD"), std::vector<std::string>{"-p udp -j ACCEPT"});
}

TEST(IptablesModel, WithoutNoflushEveryNamedTableIsReplaced) {
  IptablesModel model;
  model.apply_restore(
      "*filter\n:KUBE-X - [0:0]\n-A INPUT -j KUBE-X\nCOMMIT\n"
      "*nat\n:KUBE-Y - [0:0]\n-A OUTPUT -j KUBE-Y\nCOMMIT\n",
      true);
  model.apply_restore("*filter\n:KUBE-Z - [0:0]\nCOMMIT\n", false);
  EXPECT_EQ(model.find_chain("filter", "KUBE-X"), nullptr);
  EXPECT_NE(model.find_chain("filter", "KUBE-Z"), nullptr);
  EXPECT_TRUE(rules_of(model, "filter", "INPUT").empty());
  // nat was not named: untouched.
  EXPECT_EQ(rules_of(model, "nat", "OUTPUT"), std::vector<std::string>{"-j KUBE-Y"});
}

TEST(IptablesModel, JumpToAMissingChainFailsWithItsLineAndAppliesNothing) {
  IptablesModel model;
  expect_restore_error(
      model, "*nat\n:KUBE-A - [0:0]\n-A KUBE-A -j ACCEPT\n-A KUBE-A -j KUBE-NOPE\nCOMMIT\n", true,
      "line 4: chain \"KUBE-NOPE\" does not exist");
  EXPECT_EQ(model.find_chain("nat", "KUBE-A"), nullptr);
}

TEST(IptablesModel, AnErrorInTheSecondTableDiscardsTheFirst) {
  IptablesModel model;
  expect_restore_error(model,
                       "*filter\n:KUBE-F - [0:0]\n-A INPUT -j KUBE-F\nCOMMIT\n"
                       "*nat\n-A NOCHAIN -j ACCEPT\nCOMMIT\n",
                       true, "line 6: chain \"NOCHAIN\" does not exist in table \"nat\"");
  EXPECT_EQ(model.save(), empty_save());
}

TEST(IptablesModel, DeletingAReferencedChainFailsUntilTheReferenceIsGone) {
  IptablesModel model;
  model.apply_restore("*nat\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-A KUBE-A -j KUBE-B\nCOMMIT\n",
                      true);
  expect_restore_error(model, "*nat\n-X KUBE-B\nCOMMIT\n", true,
                       "line 2: -X: chain \"KUBE-B\" is referenced by 1 rule(s)");
  // Flushing the referrer in the same transaction (what kube-proxy does) makes it deletable.
  model.apply_restore("*nat\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-X KUBE-B\nCOMMIT\n", true);
  EXPECT_EQ(model.find_chain("nat", "KUBE-B"), nullptr);
  EXPECT_NE(model.find_chain("nat", "KUBE-A"), nullptr);
}

TEST(IptablesModel, DeletingAMissingNonEmptyOrBuiltInChainFails) {
  IptablesModel model;
  model.apply_restore("*nat\n:KUBE-A - [0:0]\n-A KUBE-A -j RETURN\nCOMMIT\n", true);
  expect_restore_error(model, "*nat\n-X KUBE-GONE\nCOMMIT\n", true,
                       "chain \"KUBE-GONE\" does not exist");
  expect_restore_error(model, "*nat\n-X KUBE-A\nCOMMIT\n", true, "is not empty (1 rules)");
  expect_restore_error(model, "*nat\n-X OUTPUT\nCOMMIT\n", true, "built-in chain \"OUTPUT\"");
}

TEST(IptablesModel, InsertAppendAndDeleteKeepKernelOrder) {
  IptablesModel model;
  model.apply_restore(
      "*filter\n:KUBE-A - [0:0]\n-A KUBE-A -s 10.0.0.1 -j ACCEPT\n-A KUBE-A -s 10.0.0.3 -j ACCEPT\n"
      "-I KUBE-A 2 -s 10.0.0.2 -j ACCEPT\n-I KUBE-A -s 10.0.0.0 -j ACCEPT\nCOMMIT\n",
      true);
  EXPECT_EQ(rules_of(model, "filter", "KUBE-A"),
            (std::vector<std::string>{"-s 10.0.0.0 -j ACCEPT", "-s 10.0.0.1 -j ACCEPT",
                                      "-s 10.0.0.2 -j ACCEPT", "-s 10.0.0.3 -j ACCEPT"}));
  model.apply_restore("*filter\n-D KUBE-A -s 10.0.0.2 -j ACCEPT\n-D KUBE-A 1\nCOMMIT\n", true);
  EXPECT_EQ(rules_of(model, "filter", "KUBE-A"),
            (std::vector<std::string>{"-s 10.0.0.1 -j ACCEPT", "-s 10.0.0.3 -j ACCEPT"}));
  expect_restore_error(model, "*filter\n-D KUBE-A -s 10.0.0.9 -j ACCEPT\nCOMMIT\n", true,
                       "does a matching rule exist");
  expect_restore_error(model, "*filter\n-I KUBE-A 4 -j ACCEPT\nCOMMIT\n", true,
                       "index 4 is out of range");
}

TEST(IptablesModel, MalformedInputIsRefusedWithTheLine) {
  IptablesModel model;
  expect_restore_error(model, "*nat\n:KUBE-A - [0:0]\n", true,
                       "table \"nat\" is not committed (COMMIT expected)");
  expect_restore_error(model, "*mangle\nCOMMIT\n", true,
                       "line 1: table \"mangle\" is not modelled");
  expect_restore_error(model, "-A INPUT -j ACCEPT\n", true, "line 1: ");
  expect_restore_error(model, "*filter\n*nat\nCOMMIT\n", true,
                       "line 2: table \"filter\" was not committed");
  expect_restore_error(model, "*filter\n-Z INPUT\nCOMMIT\n", true,
                       "line 2: unknown or unsupported command \"-Z\"");
  expect_restore_error(model, "*filter\n:KUBE-A ACCEPT [0:0]\nCOMMIT\n", true,
                       "line 2: chain \"KUBE-A\" is not built-in and cannot have policy");
  expect_restore_error(model, "*filter\n-A INPUT -m comment --comment \"open\nCOMMIT\n", true,
                       "line 2: unterminated quoted string");
  expect_restore_error(model, "*nat\n:KUBE-SVC-ABCDEFGHIJKLMNOPQRSTUVWXYZ - [0:0]\nCOMMIT\n", true,
                       "is longer than 28 characters");
}

TEST(IptablesModel, UnknownMatchesTargetsAndOptionsAreErrors) {
  auto error_of = [](std::vector<std::string> args) -> std::string {
    try {
      parse_rule(args);
    } catch (const IptablesError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(error_of({"-m", "physdev", "--physdev-is-in", "-j", "ACCEPT"}),
            "-m: match \"physdev\" is not modelled");
  EXPECT_EQ(error_of({"-j", "LOG"}), "-j: target \"LOG\" is not modelled");
  EXPECT_EQ(error_of({"--dport", "80", "-j", "ACCEPT"}), "unknown option \"--dport\"");
  EXPECT_EQ(error_of({"-p", "udp", "-m", "tcp", "--dport", "80", "-j", "ACCEPT"}),
            "-m tcp does not match -p udp");
  EXPECT_EQ(error_of({"-m", "tcp", "--dport", "80", "-j", "ACCEPT"}),
            "-m tcp needs -p tcp or -p udp");
  EXPECT_EQ(error_of({"-j", "DNAT"}), "DNAT needs --to-destination");
  EXPECT_EQ(error_of({"-j", "DNAT", "--to-destination", "10.0.0.1:80"}),
            "DNAT: a port needs -p tcp or -p udp");
  EXPECT_EQ(error_of({"-m", "statistic", "--mode", "nth", "-j", "ACCEPT"}),
            "--mode: statistic mode \"nth\" is not modelled");
  EXPECT_EQ(error_of({"-m", "statistic", "--mode", "random", "--probability", "1.5"}),
            "--probability: invalid value \"1.5\" (0 to 1)");
  EXPECT_EQ(error_of({"-m", "addrtype", "--dst-type", "UNICAST"}),
            "--dst-type: address type \"UNICAST\" is not modelled");
  EXPECT_EQ(error_of({"-s", "10.0.0.256", "-j", "ACCEPT"}),
            "-s: invalid IPv4 address \"10.0.0.256\"");
  EXPECT_EQ(error_of({"-j", "MARK"}),
            "MARK needs --set-xmark, --set-mark, --or-mark, --and-mark or --xor-mark");
  EXPECT_EQ(error_of({"-j", "ACCEPT", "--reject-with", "tcp-reset"}),
            "unknown option \"--reject-with\"");
  EXPECT_EQ(error_of({"-m", "recent", "--name", "X", "-j", "ACCEPT"}),
            "-m recent needs --set, --rcheck, --update or --remove");
  EXPECT_EQ(error_of({"-m", "conntrack", "--ctstate", "NEW,BOGUS"}),
            "--ctstate: unknown state \"BOGUS\"");
}

TEST(IptablesModel, TargetsAreCheckedAgainstTheirTable) {
  IptablesModel model;
  expect_restore_error(model,
                       "*filter\n-A INPUT -p tcp -j DNAT --to-destination 10.0.0.1:80\nCOMMIT\n",
                       true, "target DNAT is only valid in the nat table, not \"filter\"");
  expect_restore_error(model, "*nat\n-A OUTPUT -j REJECT\nCOMMIT\n", true,
                       "REJECT is only valid in the filter table");
  expect_restore_error(model, "*nat\n-A OUTPUT -j DROP\nCOMMIT\n", true,
                       "DROP is not allowed in the nat table");
  expect_restore_error(model, "*nat\n-A OUTPUT -j POSTROUTING\nCOMMIT\n", true,
                       "cannot jump to built-in chain \"POSTROUTING\"");
}

TEST(IptablesModel, JumpLoopsAreRefusedAtCommit) {
  IptablesModel model;
  expect_restore_error(model,
                       "*nat\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-A KUBE-A -j KUBE-B\n"
                       "-A KUBE-B -g KUBE-A\nCOMMIT\n",
                       true, "line 6: table \"nat\" has a jump loop: KUBE-A -> KUBE-B -> KUBE-A");
}

TEST(IptablesModel, SingleCommandsCheckInsertAndDelete) {
  IptablesModel model;
  const std::vector<std::string> rule = {
      "-m", "conntrack",    "--ctstate", "NEW",
      "-m", "comment",      "--comment", "kubernetes service portals",
      "-j", "KUBE-SERVICES"};
  auto with = [&](std::vector<std::string> head) {
    head.insert(head.end(), rule.begin(), rule.end());
    return head;
  };
  EXPECT_THROW(model.apply_command("filter", with({"-I", "OUTPUT"})), IptablesError);
  EXPECT_TRUE(model.apply_command("filter", {"-N", "KUBE-SERVICES"}));
  EXPECT_THROW(model.apply_command("filter", {"-N", "KUBE-SERVICES"}), IptablesError);
  EXPECT_FALSE(model.apply_command("filter", with({"-C", "OUTPUT"})));
  EXPECT_TRUE(model.apply_command("filter", {"-A", "OUTPUT", "-j", "ACCEPT"}));
  EXPECT_TRUE(model.apply_command("filter", with({"-I", "OUTPUT"})));
  EXPECT_TRUE(model.apply_command("filter", with({"-C", "OUTPUT"})));
  EXPECT_EQ(rules_of(model, "filter", "OUTPUT").front(),
            "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j "
            "KUBE-SERVICES");
  EXPECT_TRUE(model.apply_command("filter", with({"-D", "OUTPUT"})));
  EXPECT_FALSE(model.apply_command("filter", with({"-C", "OUTPUT"})));
  EXPECT_THROW(model.apply_command("filter", with({"-D", "OUTPUT"})), IptablesError);
  EXPECT_THROW(model.apply_command("raw", {"-N", "X"}), IptablesError);
}

TEST(IptablesModel, RestoreLinesSplitLikeIptablesRestore) {
  EXPECT_EQ(split_restore_line(R"(-A X -m comment --comment "a b \"c\"" -j  ACCEPT)"),
            (std::vector<std::string>{"-A", "X", "-m", "comment", "--comment", "a b \"c\"", "-j",
                                      "ACCEPT"}));
  EXPECT_EQ(split_restore_line("--comment ns1/svc1:p80"),
            (std::vector<std::string>{"--comment", "ns1/svc1:p80"}));
  EXPECT_EQ(split_restore_line("\"\""), std::vector<std::string>{""});
}

TEST(IptablesModel, RulesParseInAnyOptionOrder) {
  const Rule a =
      parse_rule({"-m", "tcp", "-p", "tcp", "!", "-s", "10.244.0.0/16", "-d", "10.96.0.10",
                  "--dport", "80", "-m", "comment", "--comment", "web", "-j", "KUBE-MARK-MASQ"});
  ASSERT_TRUE(a.source);
  EXPECT_TRUE(a.source->negated);
  EXPECT_EQ(a.source->prefix, IpPrefix::parse("10.244.0.0/16"));
  EXPECT_EQ(a.destination->prefix, IpPrefix::parse("10.96.0.10/32"));
  ASSERT_EQ(a.matches.size(), 2u);
  EXPECT_EQ(a.matches[0].destination_ports.front().first, 80);
  EXPECT_EQ(a.comment(), "web");
  EXPECT_EQ(a.target.kind, Target::Kind::jump);

  // Host bits of a prefix are dropped, as iptables does; "-p tcp --dport" loads tcp implicitly.
  const Rule b = parse_rule({"-s", "10.244.1.7/24", "-p", "tcp", "--dport", "30000:30010", "-j",
                             "MARK", "--set-xmark", "0x4000/0x4000"});
  EXPECT_EQ(b.source->prefix, IpPrefix::parse("10.244.1.0/24"));
  ASSERT_EQ(b.matches.size(), 1u);
  EXPECT_EQ(b.matches[0].module, "tcp");
  EXPECT_EQ(b.matches[0].destination_ports.front().last, 30010);
  EXPECT_EQ(b.target.mark_and, ~0x4000u);
  EXPECT_EQ(b.target.mark_xor, 0x4000u);

  const Rule c = parse_rule({"-m", "recent", "--rcheck", "--seconds", "10800", "--reap", "--name",
                             "KUBE-SEP-X", "--mask", "255.255.255.0", "--rsource", "-j", "RETURN"});
  EXPECT_EQ(c.matches[0].recent_command, Match::RecentCommand::rcheck);
  EXPECT_EQ(c.matches[0].recent_seconds, 10800u);
  EXPECT_EQ(c.matches[0].recent_mask, ip("255.255.255.0"));
}

// --- the tracer on hand-written rules
// -------------------------------------------------------------

const char* kHandRules = R"(*filter
:KUBE-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
-A FORWARD -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -j KUBE-SERVICES
-A OUTPUT -m conntrack --ctstate NEW -j KUBE-SERVICES
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-SERVICES -d 10.96.0.9/32 -p tcp -m tcp --dport 80 -j REJECT
-A KUBE-SERVICES -d 10.96.0.8/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SEP-1 - [0:0]
:KUBE-SEP-2 - [0:0]
:KUBE-SEP-3 - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-SKIP - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A OUTPUT -j KUBE-SERVICES
-A POSTROUTING -j KUBE-POSTROUTING
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A
-A KUBE-SERVICES -p tcp -j KUBE-SKIP
-A KUBE-SERVICES ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SKIP -p tcp -m tcp --sport 1:1023 -j RETURN
-A KUBE-NODEPORTS -p tcp -m tcp --dport 30001 -g KUBE-SVC-A
-A KUBE-SVC-A ! -s 10.244.0.0/16 -d 10.96.0.1/32 -j KUBE-MARK-MASQ
-A KUBE-SVC-A -m recent --name KUBE-SEP-1 --rcheck --seconds 60 --reap -j KUBE-SEP-1
-A KUBE-SVC-A -m recent --name KUBE-SEP-2 --rcheck --seconds 60 --reap -j KUBE-SEP-2
-A KUBE-SVC-A -m recent --name KUBE-SEP-3 --rcheck --seconds 60 --reap -j KUBE-SEP-3
-A KUBE-SVC-A -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-1
-A KUBE-SVC-A -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-2
-A KUBE-SVC-A -j KUBE-SEP-3
-A KUBE-SEP-1 -s 10.244.1.5/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-1 -p tcp -m recent --name KUBE-SEP-1 --set -m tcp -j DNAT --to-destination 10.244.1.5:8080
-A KUBE-SEP-2 -s 10.244.2.6/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-2 -p tcp -m recent --name KUBE-SEP-2 --set -m tcp -j DNAT --to-destination 10.244.2.6:8080
-A KUBE-SEP-3 -s 10.244.2.7/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-3 -p tcp -m recent --name KUBE-SEP-3 --set -m tcp -j DNAT --to-destination 10.244.2.7:8080
COMMIT
)";

Packet tcp_packet(const char* source, const char* destination, std::uint16_t port,
                  Origin origin = Origin::arriving) {
  Packet p;
  p.source = ip(source);
  p.destination = ip(destination);
  p.destination_port = port;
  p.origin = origin;
  return p;
}

class HandTrace : public ::testing::Test {
 protected:
  void SetUp() override {
    model_.apply_restore(kHandRules, true);
    env_.local_addresses = {ip("172.18.0.2")};
  }
  IptablesModel model_;
  TraceEnv env_;
};

TEST_F(HandTrace, StatisticBranchesGiveAUniformChoice) {
  const auto result = trace(model_, tcp_packet("10.244.1.20", "10.96.0.1", 80), env_);
  EXPECT_NEAR(result.total_probability(), 1.0, 1e-9);
  const auto probabilities = result.endpoint_probabilities();
  ASSERT_EQ(probabilities.size(), 3u) << result.describe();
  for (const auto& [endpoint, p] : probabilities)
    EXPECT_NEAR(p, 1.0 / 3, 1e-6) << endpoint;
  EXPECT_FALSE(result.any_masqueraded()) << result.describe();
  for (const auto& o : result.outcomes) {
    EXPECT_FALSE(o.local_delivery);
    EXPECT_TRUE(std::find(o.chains.begin(), o.chains.end(), "filter/KUBE-SERVICES") !=
                o.chains.end());
  }
}

TEST_F(HandTrace, NegatedSourceAndHairpinMarkLeadToMasquerade) {
  // From outside 10.244.0.0/16: every branch masqueraded, the mark cleared afterwards.
  const auto outside = trace(model_, tcp_packet("192.168.5.5", "10.96.0.1", 80), env_);
  EXPECT_TRUE(outside.all_masqueraded()) << outside.describe();
  for (const auto& o : outside.outcomes)
    EXPECT_EQ(o.mark, 0u);
  // The pod behind SEP-1 reaching itself: only that branch is masqueraded.
  const auto hairpin = trace(model_, tcp_packet("10.244.1.5", "10.96.0.1", 80), env_);
  for (const auto& o : hairpin.outcomes) {
    EXPECT_EQ(o.masqueraded, o.endpoint() == "10.244.1.5:8080") << hairpin.describe();
  }
}

TEST_F(HandTrace, RejectDropReturnAndGoto) {
  const auto rejected = trace(model_, tcp_packet("10.244.1.20", "10.96.0.9", 80), env_);
  ASSERT_TRUE(rejected.all(Verdict::reject)) << rejected.describe();
  EXPECT_EQ(rejected.outcomes[0].reject_with, "icmp-port-unreachable");
  const auto reset = trace(model_, tcp_packet("10.244.1.20", "10.96.0.8", 80), env_);
  EXPECT_EQ(reset.outcomes.at(0).reject_with, "tcp-reset");

  auto invalid_env = env_;
  invalid_env.ct_state = kCtInvalid;
  const auto invalid = trace(model_, tcp_packet("10.244.1.20", "10.96.0.1", 80), invalid_env);
  // Not NEW: the nat table is not traversed, and KUBE-FORWARD drops it.
  EXPECT_TRUE(invalid.all(Verdict::drop)) << invalid.describe();
  EXPECT_FALSE(invalid.outcomes.at(0).dnat);

  // A low source port returns from KUBE-SKIP and goes on; a node port is sent with -g, whose
  // chain's end returns past KUBE-SERVICES.
  auto low = tcp_packet("10.244.1.20", "10.96.0.1", 80);
  low.source_port = 999;
  EXPECT_EQ(trace(model_, low, env_).endpoints().size(), 3u);
  const auto node_port = trace(model_, tcp_packet("203.0.113.1", "172.18.0.2", 30001), env_);
  EXPECT_EQ(node_port.endpoints().size(), 3u) << node_port.describe();
  // The loopback address is local but excluded from node ports.
  const auto loopback =
      trace(model_, tcp_packet("127.0.0.1", "127.0.0.1", 30001, Origin::local_process), env_);
  EXPECT_EQ(loopback.endpoints(), std::set<std::string>{"127.0.0.1:30001"});
  EXPECT_TRUE(loopback.outcomes.at(0).local_delivery);
}

TEST_F(HandTrace, RecentListsKeepAClientOnItsEndpointUntilTheTimeout) {
  const auto first = trace(model_, tcp_packet("10.244.1.20", "10.96.0.1", 80), env_);
  ASSERT_EQ(first.outcomes.size(), 3u);
  for (const auto& chosen : first.outcomes) {
    auto next = env_;
    next.recent = chosen.recent;
    next.now = 30;
    const auto again = trace(model_, tcp_packet("10.244.1.20", "10.96.0.1", 80), next);
    EXPECT_EQ(again.endpoint_probabilities(),
              (std::map<std::string, double>{{chosen.endpoint(), 1.0}}))
        << again.describe();
    // Another client is not affected.
    EXPECT_EQ(trace(model_, tcp_packet("10.244.1.21", "10.96.0.1", 80), next).endpoints().size(),
              3u);
    // After the 60 s timeout the choice is made again.
    next.now = 60;
    EXPECT_EQ(trace(model_, tcp_packet("10.244.1.20", "10.96.0.1", 80), next).endpoints().size(),
              3u);
  }
}

TEST_F(HandTrace, TargetsReachedFromTheWrongHookAreErrors) {
  IptablesModel model;
  model.apply_restore(
      "*nat\n:KUBE-X - [0:0]\n-A POSTROUTING -j KUBE-X\n"
      "-A KUBE-X -p tcp -j DNAT --to-destination 10.0.0.1:80\nCOMMIT\n",
      true);
  EXPECT_THROW(trace(model, tcp_packet("10.244.1.20", "10.96.0.1", 80), env_), IptablesError);
}

TEST(TraceMatches, MultiportInterfacesMarksAndSnat) {
  IptablesModel model;
  model.apply_restore(R"(*filter
-A FORWARD -i flat+ -m mark --mark 0x1/0x1 -j DROP
-A FORWARD -i flat+ -p tcp ! --dport 80 -j REJECT --reject-with tcp-reset
COMMIT
*nat
:KUBE-MARK - [0:0]
-A PREROUTING -s 10.244.1.66 -j KUBE-MARK
-A KUBE-MARK -j MARK --set-xmark 0x1/0x1
-A POSTROUTING -o eth0 -p udp -m multiport --dports 53,5000:5010 -j SNAT --to-source 172.18.0.2
COMMIT
)",
                      true);
  TraceEnv env;
  Packet p;
  p.source = ip("10.244.1.20");
  p.protocol = Protocol::udp;
  p.destination = ip("8.8.8.8");
  p.destination_port = 5005;
  p.in_interface = "flat0";
  p.out_interface = "eth0";
  auto result = trace(model, p, env);
  ASSERT_TRUE(result.all(Verdict::accept)) << result.describe();
  EXPECT_TRUE(result.outcomes[0].masqueraded);
  EXPECT_EQ(result.outcomes[0].snat_source, ip("172.18.0.2"));
  p.destination_port = 5011;  // outside the range
  EXPECT_FALSE(trace(model, p, env).any_masqueraded());
  p.out_interface = "eth1";  // another interface
  p.destination_port = 53;
  EXPECT_FALSE(trace(model, p, env).any_masqueraded());
  p.source = ip("10.244.1.66");  // marked in PREROUTING, dropped when forwarded from flat0
  EXPECT_TRUE(trace(model, p, env).all(Verdict::drop));
  p.in_interface = "eth1";
  EXPECT_TRUE(trace(model, p, env).all(Verdict::accept));
  p.source = ip("10.244.1.20");
  p.in_interface = "flat1";
  p.protocol = Protocol::tcp;
  EXPECT_EQ(trace(model, p, env).outcomes.at(0).reject_with, "tcp-reset");
  p.destination_port = 80;
  EXPECT_TRUE(trace(model, p, env).all(Verdict::accept));
}

// --- the packet-flow table over the rendered ruleset
// ----------------------------------------------

constexpr const char* kNodeIp = "172.18.0.2";
constexpr const char* kOtherNodeIp = "172.18.0.3";
constexpr const char* kSecondNodeIp = "192.168.1.2";  // another address of this node
constexpr const char* kLocalPod = "10.244.1.20";
constexpr const char* kRemotePod = "10.244.2.20";
constexpr const char* kClient = "203.0.113.9";

ServicePortName port_name(const char* ns, const char* name, const char* port,
                          Protocol protocol = Protocol::tcp) {
  return ServicePortName{ns, name, port, protocol};
}

EndpointInfo endpoint(const char* address, std::uint16_t port, bool local) {
  EndpointInfo e;
  e.ip = ip(address);
  e.port = port;
  e.is_local = local;
  e.node_name = local ? "node-1" : "node-2";
  return e;
}

EndpointInfo terminating(EndpointInfo e, bool serving) {
  e.ready = false;
  e.serving = serving;
  e.terminating = true;
  return e;
}

ServicePortInfo cluster_ip(const char* address, std::uint16_t port,
                           Protocol protocol = Protocol::tcp) {
  ServicePortInfo info;
  info.cluster_ip = ip(address);
  info.port = port;
  info.protocol = protocol;
  return info;
}

void add(ProxyState& state, const ServicePortName& name, const ServicePortInfo& info,
         std::vector<EndpointInfo> endpoints) {
  std::sort(endpoints.begin(), endpoints.end(), [](const EndpointInfo& a, const EndpointInfo& b) {
    return std::tie(a.ip, a.port) < std::tie(b.ip, b.port);
  });
  state.services[name] = info;
  if (!endpoints.empty()) state.endpoints[name] = std::move(endpoints);
}

// Node "node-1" (172.18.0.2, pods 10.244.1.0/24) in a cluster of pods 10.244.0.0/16.
ProxyState flow_state() {
  ProxyState state;
  add(state, port_name("default", "web", "http"), cluster_ip("10.96.0.10", 80),
      {endpoint("10.244.1.5", 8080, true), endpoint("10.244.2.7", 8080, false),
       endpoint("10.244.2.8", 8080, false)});
  add(state, port_name("default", "web", "metrics"), cluster_ip("10.96.0.10", 9090),
      {endpoint("10.244.1.5", 9090, true), endpoint("10.244.2.7", 9090, false)});
  add(state, port_name("kube-system", "dns", "dns", Protocol::udp),
      cluster_ip("10.96.0.53", 53, Protocol::udp),
      {endpoint("10.244.1.6", 53, true), endpoint("10.244.2.9", 53, false)});
  add(state, port_name("kube-system", "dns", "dns-tcp"), cluster_ip("10.96.0.53", 53),
      {endpoint("10.244.1.6", 5353, true), endpoint("10.244.2.9", 5353, false)});
  {
    auto info = cluster_ip("10.96.0.20", 80);
    info.node_port = 30020;
    add(state, port_name("default", "empty", ""), info, {});
  }
  {
    auto info = cluster_ip("10.96.0.30", 80);
    info.node_port = 30030;
    add(state, port_name("default", "np-cluster", ""), info,
        {endpoint("10.244.1.10", 80, true), endpoint("10.244.2.10", 80, false)});
  }
  {
    auto info = cluster_ip("10.96.0.31", 80);
    info.node_port = 30031;
    info.external_policy_local = true;
    info.health_check_node_port = 32031;
    add(state, port_name("default", "np-local", ""), info,
        {endpoint("10.244.1.11", 80, true), endpoint("10.244.2.11", 80, false)});
  }
  {
    auto info = cluster_ip("10.96.0.32", 80);
    info.node_port = 30032;
    info.external_policy_local = true;
    info.health_check_node_port = 32032;
    add(state, port_name("default", "np-local-none", ""), info,
        {endpoint("10.244.2.12", 80, false)});
  }
  {
    auto info = cluster_ip("10.96.0.40", 80);
    info.external_ips = {ip("192.0.2.40")};
    add(state, port_name("default", "ext", ""), info, {endpoint("10.244.2.40", 80, false)});
  }
  {
    auto info = cluster_ip("10.96.0.41", 80);
    info.node_port = 30041;
    info.load_balancer_ips = {ip("198.51.100.41")};
    add(state, port_name("default", "lb", ""), info,
        {endpoint("10.244.1.41", 80, true), endpoint("10.244.2.41", 80, false)});
  }
  {
    auto info = cluster_ip("10.96.0.42", 80);
    info.node_port = 30042;
    info.load_balancer_ips = {ip("198.51.100.42")};
    info.external_policy_local = true;
    info.health_check_node_port = 32042;
    add(state, port_name("default", "lb-local", ""), info,
        {endpoint("10.244.1.42", 80, true), endpoint("10.244.2.42", 80, false)});
  }
  {
    auto info = cluster_ip("10.96.0.50", 80);
    info.session_affinity = true;
    info.affinity_timeout_seconds = 600;
    add(state, port_name("default", "sticky", ""), info,
        {endpoint("10.244.1.50", 80, true), endpoint("10.244.2.50", 80, false),
         endpoint("10.244.2.51", 80, false)});
  }
  {
    auto info = cluster_ip("10.96.0.60", 80);
    info.internal_policy_local = true;
    add(state, port_name("default", "itp-local", ""), info,
        {endpoint("10.244.1.60", 80, true), endpoint("10.244.2.60", 80, false)});
  }
  {
    auto info = cluster_ip("10.96.0.61", 80);
    info.internal_policy_local = true;
    add(state, port_name("default", "itp-local-none", ""), info,
        {endpoint("10.244.2.61", 80, false)});
  }
  add(state, port_name("default", "terminating", ""), cluster_ip("10.96.0.70", 80),
      {terminating(endpoint("10.244.2.70", 80, false), true),
       terminating(endpoint("10.244.2.71", 80, false), false)});
  add(state, port_name("default", "mixed", ""), cluster_ip("10.96.0.71", 80),
      {endpoint("10.244.2.72", 80, false), terminating(endpoint("10.244.2.73", 80, false), true)});
  add(state, port_name("default", "not-serving", ""), cluster_ip("10.96.0.72", 80),
      {terminating(endpoint("10.244.2.74", 80, false), false)});
  return state;
}

enum class Config { cluster_cidr, no_cluster_cidr, masquerade_all, node_port_addresses };

RenderOptions options_for(Config config) {
  RenderOptions options;
  if (config != Config::no_cluster_cidr) options.cluster_cidr = IpPrefix::parse("10.244.0.0/16");
  options.masquerade_all = config == Config::masquerade_all;
  // --nodeport-addresses: node ports answer on the first node address only.
  if (config == Config::node_port_addresses) {
    options.node_ports_restricted = true;
    options.node_port_addresses = {ip("172.18.0.2")};
  }
  return options;
}

// What the proxier does on every sync: the chains its jump rules name exist (-N), each jump
// rule is ensured (-C, else -I at the top), then the rendered text is restored with --noflush.
void apply_jump_rules(IptablesModel& model) {
  for (const auto& jump : proxy::iptables::jump_rules()) {
    const std::string& target = jump.args.back();
    if (model.find_chain(jump.table, target) == nullptr) {
      model.apply_command(jump.table, {"-N", target});
    }
    std::vector<std::string> check = {"-C", jump.chain};
    check.insert(check.end(), jump.args.begin(), jump.args.end());
    if (!model.apply_command(jump.table, check)) {
      std::vector<std::string> insert = {"-I", jump.chain};
      insert.insert(insert.end(), jump.args.begin(), jump.args.end());
      model.apply_command(jump.table, insert);
    }
  }
}

IptablesModel full_model(const ProxyState& state, const RenderOptions& options,
                         std::set<std::string>* nat_chains = nullptr) {
  IptablesModel model;
  apply_jump_rules(model);
  const auto result = proxy::iptables::render(state, options, nullptr, {});
  model.apply_restore(result.text, true);
  if (nat_chains != nullptr) *nat_chains = result.nat_chains;
  return model;
}

const IptablesModel& flow_model(Config config) {
  static std::map<Config, IptablesModel> models;
  auto it = models.find(config);
  if (it == models.end()) {
    it = models.emplace(config, full_model(flow_state(), options_for(config))).first;
  }
  return it->second;
}

TraceEnv node_env() {
  TraceEnv env;
  env.local_addresses = {ip(kNodeIp), ip(kSecondNodeIp)};
  return env;
}

// Which accepted outcomes must be masqueraded.
enum class Masq { none, all, hairpin /* exactly those whose endpoint is the source itself */ };

struct FlowRow {
  const char* name;
  Config config;
  const char* source;
  Origin origin;
  Protocol protocol;
  const char* destination;
  std::uint16_t port;
  std::vector<std::string> endpoints;  // accepted destinations after DNAT (empty if none)
  Masq masq;
  Verdict verdict;  // of every outcome
};

std::ostream& operator<<(std::ostream& out, const FlowRow& row) {
  return out << row.name;
}

Packet packet_of(const FlowRow& row) {
  Packet p;
  p.source = ip(row.source);
  p.protocol = row.protocol;
  p.destination = ip(row.destination);
  p.destination_port = row.port;
  p.origin = row.origin;
  return p;
}

// Checks one row; returns "" or what went wrong.
std::string check_row(const FlowRow& row, const TraceResult& result) {
  std::string problems;
  for (const auto& o : result.outcomes) {
    if (o.verdict != row.verdict) {
      problems += "outcome " + to_string(o.verdict) + " (want " + to_string(row.verdict) + "); ";
      break;
    }
  }
  if (std::abs(result.total_probability() - 1.0) > 1e-6)
    problems += "probabilities do not sum to 1; ";
  const auto reached = result.endpoints();
  const std::set<std::string> wanted(row.endpoints.begin(), row.endpoints.end());
  if (reached != wanted) {
    problems += "endpoints {";
    for (const auto& e : reached)
      problems += e + " ";
    problems += "} (want {";
    for (const auto& e : wanted)
      problems += e + " ";
    problems += "}); ";
  }
  if (!wanted.empty()) {
    for (const auto& [e, p] : result.endpoint_probabilities()) {
      if (std::abs(p - 1.0 / static_cast<double>(wanted.size())) > 1e-6) {
        problems += e + " has probability " + std::to_string(p) + "; ";
      }
    }
  }
  const std::string self = std::string(row.source);
  for (const auto& o : result.outcomes) {
    if (o.verdict != Verdict::accept) continue;
    const bool want =
        row.masq == Masq::all || (row.masq == Masq::hairpin && o.destination.to_string() == self);
    if (o.masqueraded != want) {
      problems += o.endpoint() + (o.masqueraded ? " masqueraded" : " not masqueraded") + "; ";
    }
    // KUBE-POSTROUTING clears the masquerade mark, so a packet that passes again is not
    // masqueraded twice.
    if (o.mark != 0)
      problems += o.endpoint() + " leaves with mark " + std::to_string(o.mark) + "; ";
  }
  return problems;
}

class PacketFlow : public ::testing::TestWithParam<FlowRow> {};

TEST_P(PacketFlow, Trace) {
  const auto& row = GetParam();
  const auto result = trace(flow_model(row.config), packet_of(row), node_env());
  const auto problems = check_row(row, result);
  EXPECT_EQ(problems, "") << row.name << ": " << row.source << " -> " << row.destination << ":"
                          << row.port << "\n"
                          << result.describe();
}

constexpr auto kCidr = Config::cluster_cidr;
constexpr auto kNoCidr = Config::no_cluster_cidr;
constexpr auto kMasqAll = Config::masquerade_all;
constexpr auto kNpAddr = Config::node_port_addresses;
constexpr auto kIn = Origin::arriving;
constexpr auto kLocal = Origin::local_process;
constexpr auto kTcp = Protocol::tcp;
constexpr auto kUdp = Protocol::udp;
constexpr auto kAccept = Verdict::accept;
constexpr auto kDrop = Verdict::drop;
constexpr auto kReject = Verdict::reject;

const std::vector<std::string> kWeb = {"10.244.1.5:8080", "10.244.2.7:8080", "10.244.2.8:8080"};
const std::vector<std::string> kNpCluster = {"10.244.1.10:80", "10.244.2.10:80"};
const std::vector<std::string> kNpLocalAll = {"10.244.1.11:80", "10.244.2.11:80"};
const std::vector<std::string> kLb = {"10.244.1.41:80", "10.244.2.41:80"};
const std::vector<std::string> kLbLocalAll = {"10.244.1.42:80", "10.244.2.42:80"};

// clang-format off
const FlowRow kFlowRows[] = {
    // ClusterIP, TCP, three endpoints.
    {"pod_to_cluster_ip", kCidr, kLocalPod, kIn, kTcp, "10.96.0.10", 80, kWeb, Masq::none, kAccept},
    {"remote_pod_to_cluster_ip", kCidr, kRemotePod, kIn, kTcp, "10.96.0.10", 80, kWeb, Masq::none, kAccept},
    {"pod_to_itself_via_cluster_ip_hairpin", kCidr, "10.244.1.5", kIn, kTcp, "10.96.0.10", 80, kWeb, Masq::hairpin, kAccept},
    {"node_to_cluster_ip", kCidr, kNodeIp, kLocal, kTcp, "10.96.0.10", 80, kWeb, Masq::all, kAccept},
    {"outside_client_to_cluster_ip", kCidr, kClient, kIn, kTcp, "10.96.0.10", 80, kWeb, Masq::all, kAccept},
    {"no_cidr_pod_to_cluster_ip", kNoCidr, kLocalPod, kIn, kTcp, "10.96.0.10", 80, kWeb, Masq::none, kAccept},
    {"no_cidr_node_to_cluster_ip", kNoCidr, kNodeIp, kLocal, kTcp, "10.96.0.10", 80, kWeb, Masq::none, kAccept},
    {"no_cidr_outside_client_to_cluster_ip", kNoCidr, kClient, kIn, kTcp, "10.96.0.10", 80, kWeb, Masq::none, kAccept},
    {"no_cidr_hairpin", kNoCidr, "10.244.2.8", kIn, kTcp, "10.96.0.10", 80, kWeb, Masq::hairpin, kAccept},
    {"masquerade_all_pod_to_cluster_ip", kMasqAll, kLocalPod, kIn, kTcp, "10.96.0.10", 80, kWeb, Masq::all, kAccept},
    {"masquerade_all_node_to_cluster_ip", kMasqAll, kNodeIp, kLocal, kTcp, "10.96.0.10", 80, kWeb, Masq::all, kAccept},
    // A second port of the same service, and ports and protocols nobody serves.
    {"pod_to_second_port", kCidr, kLocalPod, kIn, kTcp, "10.96.0.10", 9090, {"10.244.1.5:9090", "10.244.2.7:9090"}, Masq::none, kAccept},
    {"pod_to_unserved_port_is_not_translated", kCidr, kLocalPod, kIn, kTcp, "10.96.0.10", 81, {"10.96.0.10:81"}, Masq::none, kAccept},
    {"udp_to_tcp_service_is_not_translated", kCidr, kLocalPod, kIn, kUdp, "10.96.0.10", 80, {"10.96.0.10:80"}, Masq::none, kAccept},
    {"pod_to_unknown_ip_is_not_translated", kCidr, kLocalPod, kIn, kTcp, "10.96.0.99", 80, {"10.96.0.99:80"}, Masq::none, kAccept},
    // UDP and TCP ports of one service with different target ports.
    {"pod_to_dns_udp", kCidr, kLocalPod, kIn, kUdp, "10.96.0.53", 53, {"10.244.1.6:53", "10.244.2.9:53"}, Masq::none, kAccept},
    {"pod_to_dns_tcp", kCidr, kLocalPod, kIn, kTcp, "10.96.0.53", 53, {"10.244.1.6:5353", "10.244.2.9:5353"}, Masq::none, kAccept},
    {"node_to_dns_udp", kCidr, kNodeIp, kLocal, kUdp, "10.96.0.53", 53, {"10.244.1.6:53", "10.244.2.9:53"}, Masq::all, kAccept},
    // No endpoints: rejected everywhere.
    {"pod_to_service_without_endpoints", kCidr, kLocalPod, kIn, kTcp, "10.96.0.20", 80, {}, Masq::none, kReject},
    {"node_to_service_without_endpoints", kCidr, kNodeIp, kLocal, kTcp, "10.96.0.20", 80, {}, Masq::none, kReject},
    {"client_to_node_port_without_endpoints", kCidr, kClient, kIn, kTcp, kNodeIp, 30020, {}, Masq::none, kReject},
    {"no_cidr_pod_to_service_without_endpoints", kNoCidr, kLocalPod, kIn, kTcp, "10.96.0.20", 80, {}, Masq::none, kReject},
    // NodePort, externalTrafficPolicy Cluster: always masqueraded.
    {"client_to_node_port", kCidr, kClient, kIn, kTcp, kNodeIp, 30030, kNpCluster, Masq::all, kAccept},
    {"other_node_to_node_port", kCidr, kOtherNodeIp, kIn, kTcp, kNodeIp, 30030, kNpCluster, Masq::all, kAccept},
    {"node_to_own_node_port", kCidr, kNodeIp, kLocal, kTcp, kNodeIp, 30030, kNpCluster, Masq::all, kAccept},
    {"pod_to_node_port", kCidr, kLocalPod, kIn, kTcp, kNodeIp, 30030, kNpCluster, Masq::all, kAccept},
    {"client_to_node_port_on_second_address", kCidr, kClient, kIn, kTcp, kSecondNodeIp, 30030, kNpCluster, Masq::all, kAccept},
    {"node_port_addresses_client_to_listed_address", kNpAddr, kClient, kIn, kTcp, kNodeIp, 30030, kNpCluster, Masq::all, kAccept},
    {"node_port_addresses_client_to_unlisted_address", kNpAddr, kClient, kIn, kTcp, kSecondNodeIp, 30030, {"192.168.1.2:30030"}, Masq::none, kAccept},
    {"node_port_addresses_no_endpoints_still_rejected", kNpAddr, kClient, kIn, kTcp, kNodeIp, 30020, {}, Masq::none, kReject},
    {"no_cidr_client_to_node_port", kNoCidr, kClient, kIn, kTcp, kNodeIp, 30030, kNpCluster, Masq::all, kAccept},
    {"node_port_on_loopback_is_not_served", kCidr, "127.0.0.1", kLocal, kTcp, "127.0.0.1", 30030, {"127.0.0.1:30030"}, Masq::none, kAccept},
    {"node_port_on_other_protocol_is_not_served", kCidr, kClient, kIn, kUdp, kNodeIp, 30030, {"172.18.0.2:30030"}, Masq::none, kAccept},
    {"pod_to_node_port_service_cluster_ip", kCidr, kLocalPod, kIn, kTcp, "10.96.0.30", 80, kNpCluster, Masq::none, kAccept},
    // NodePort, externalTrafficPolicy Local with a local endpoint.
    {"client_to_local_node_port_keeps_source", kCidr, kClient, kIn, kTcp, kNodeIp, 30031, {"10.244.1.11:80"}, Masq::none, kAccept},
    {"other_node_to_local_node_port", kCidr, kOtherNodeIp, kIn, kTcp, kNodeIp, 30031, {"10.244.1.11:80"}, Masq::none, kAccept},
    {"node_to_local_node_port_uses_any_endpoint", kCidr, kNodeIp, kLocal, kTcp, kNodeIp, 30031, kNpLocalAll, Masq::all, kAccept},
    {"pod_to_local_node_port_uses_any_endpoint", kCidr, kLocalPod, kIn, kTcp, kNodeIp, 30031, kNpLocalAll, Masq::none, kAccept},
    {"no_cidr_pod_to_local_node_port_stays_local", kNoCidr, kLocalPod, kIn, kTcp, kNodeIp, 30031, {"10.244.1.11:80"}, Masq::none, kAccept},
    {"pod_to_local_policy_cluster_ip_uses_any_endpoint", kCidr, kLocalPod, kIn, kTcp, "10.96.0.31", 80, kNpLocalAll, Masq::none, kAccept},
    {"client_to_local_policy_cluster_ip", kCidr, kClient, kIn, kTcp, "10.96.0.31", 80, kNpLocalAll, Masq::all, kAccept},
    {"client_to_health_check_node_port", kCidr, kClient, kIn, kTcp, kNodeIp, 32031, {"172.18.0.2:32031"}, Masq::none, kAccept},
    // NodePort, externalTrafficPolicy Local without a local endpoint.
    {"client_to_local_node_port_without_local_endpoint", kCidr, kClient, kIn, kTcp, kNodeIp, 30032, {}, Masq::none, kDrop},
    {"no_cidr_pod_to_local_node_port_without_local_endpoint", kNoCidr, kLocalPod, kIn, kTcp, kNodeIp, 30032, {}, Masq::none, kDrop},
    {"pod_to_local_node_port_without_local_endpoint", kCidr, kLocalPod, kIn, kTcp, kNodeIp, 30032, {"10.244.2.12:80"}, Masq::none, kAccept},
    {"node_to_local_node_port_without_local_endpoint", kCidr, kNodeIp, kLocal, kTcp, kNodeIp, 30032, {"10.244.2.12:80"}, Masq::all, kAccept},
    {"pod_to_cluster_ip_without_local_endpoint", kCidr, kLocalPod, kIn, kTcp, "10.96.0.32", 80, {"10.244.2.12:80"}, Masq::none, kAccept},
    // External IPs (policy Cluster).
    {"client_to_external_ip", kCidr, kClient, kIn, kTcp, "192.0.2.40", 80, {"10.244.2.40:80"}, Masq::all, kAccept},
    {"pod_to_external_ip", kCidr, kLocalPod, kIn, kTcp, "192.0.2.40", 80, {"10.244.2.40:80"}, Masq::all, kAccept},
    {"node_to_external_ip", kCidr, kNodeIp, kLocal, kTcp, "192.0.2.40", 80, {"10.244.2.40:80"}, Masq::all, kAccept},
    {"client_to_external_ip_other_port", kCidr, kClient, kIn, kTcp, "192.0.2.40", 81, {"192.0.2.40:81"}, Masq::none, kAccept},
    // Load balancers, policy Cluster and Local.
    {"client_to_load_balancer_ip", kCidr, kClient, kIn, kTcp, "198.51.100.41", 80, kLb, Masq::all, kAccept},
    {"client_to_load_balancer_node_port", kCidr, kClient, kIn, kTcp, kNodeIp, 30041, kLb, Masq::all, kAccept},
    {"pod_to_load_balancer_ip", kCidr, kLocalPod, kIn, kTcp, "198.51.100.41", 80, kLb, Masq::all, kAccept},
    {"client_to_local_load_balancer_ip", kCidr, kClient, kIn, kTcp, "198.51.100.42", 80, {"10.244.1.42:80"}, Masq::none, kAccept},
    {"pod_to_local_load_balancer_ip", kCidr, kLocalPod, kIn, kTcp, "198.51.100.42", 80, kLbLocalAll, Masq::none, kAccept},
    {"node_to_local_load_balancer_ip", kCidr, kNodeIp, kLocal, kTcp, "198.51.100.42", 80, kLbLocalAll, Masq::all, kAccept},
    // The cluster IPs of services also reached from outside, from pods, the node and clients.
    {"pod_to_external_ip_service_cluster_ip", kCidr, kLocalPod, kIn, kTcp, "10.96.0.40", 80, {"10.244.2.40:80"}, Masq::none, kAccept},
    {"node_to_external_ip_service_cluster_ip", kCidr, kNodeIp, kLocal, kTcp, "10.96.0.40", 80, {"10.244.2.40:80"}, Masq::all, kAccept},
    {"node_to_load_balancer_cluster_ip", kCidr, kNodeIp, kLocal, kTcp, "10.96.0.41", 80, kLb, Masq::all, kAccept},
    {"pod_to_load_balancer_cluster_ip", kCidr, kLocalPod, kIn, kTcp, "10.96.0.41", 80, kLb, Masq::none, kAccept},
    {"pod_to_local_load_balancer_cluster_ip", kCidr, kLocalPod, kIn, kTcp, "10.96.0.42", 80, kLbLocalAll, Masq::none, kAccept},
    {"client_to_local_load_balancer_cluster_ip", kCidr, kClient, kIn, kTcp, "10.96.0.42", 80, kLbLocalAll, Masq::all, kAccept},
    {"client_to_local_load_balancer_node_port", kCidr, kClient, kIn, kTcp, kNodeIp, 30042, {"10.244.1.42:80"}, Masq::none, kAccept},
    {"client_to_health_check_node_port_of_load_balancer", kCidr, kClient, kIn, kTcp, kNodeIp, 32042, {"172.18.0.2:32042"}, Masq::none, kAccept},
    {"client_to_health_check_node_port_without_local_endpoint", kCidr, kClient, kIn, kTcp, kNodeIp, 32032, {"172.18.0.2:32032"}, Masq::none, kAccept},
    {"client_to_cluster_ip_without_local_endpoint", kCidr, kClient, kIn, kTcp, "10.96.0.32", 80, {"10.244.2.12:80"}, Masq::all, kAccept},
    {"node_to_node_port_service_cluster_ip", kCidr, kNodeIp, kLocal, kTcp, "10.96.0.30", 80, kNpCluster, Masq::all, kAccept},
    {"client_to_second_port", kCidr, kClient, kIn, kTcp, "10.96.0.10", 9090, {"10.244.1.5:9090", "10.244.2.7:9090"}, Masq::all, kAccept},
    {"node_to_dns_tcp", kCidr, kNodeIp, kLocal, kTcp, "10.96.0.53", 53, {"10.244.1.6:5353", "10.244.2.9:5353"}, Masq::all, kAccept},
    {"node_to_sticky_service", kCidr, kNodeIp, kLocal, kTcp, "10.96.0.50", 80, {"10.244.1.50:80", "10.244.2.50:80", "10.244.2.51:80"}, Masq::all, kAccept},
    {"node_to_terminating_service", kCidr, kNodeIp, kLocal, kTcp, "10.96.0.70", 80, {"10.244.2.70:80"}, Masq::all, kAccept},
    {"client_to_service_with_terminating_endpoint", kCidr, kClient, kIn, kTcp, "10.96.0.71", 80, {"10.244.2.72:80"}, Masq::all, kAccept},
    // Session affinity: the first packet chooses uniformly (stickiness: AffinityFlow below).
    {"pod_to_sticky_service", kCidr, kLocalPod, kIn, kTcp, "10.96.0.50", 80, {"10.244.1.50:80", "10.244.2.50:80", "10.244.2.51:80"}, Masq::none, kAccept},
    // internalTrafficPolicy Local.
    {"pod_to_internal_local_service", kCidr, kLocalPod, kIn, kTcp, "10.96.0.60", 80, {"10.244.1.60:80"}, Masq::none, kAccept},
    {"node_to_internal_local_service", kCidr, kNodeIp, kLocal, kTcp, "10.96.0.60", 80, {"10.244.1.60:80"}, Masq::all, kAccept},
    {"pod_to_internal_local_service_without_local_endpoint", kCidr, kLocalPod, kIn, kTcp, "10.96.0.61", 80, {}, Masq::none, kDrop},
    // Terminating endpoints serve only when nothing is ready.
    {"terminating_serving_endpoint_used_when_none_ready", kCidr, kLocalPod, kIn, kTcp, "10.96.0.70", 80, {"10.244.2.70:80"}, Masq::none, kAccept},
    {"terminating_endpoint_unused_when_one_is_ready", kCidr, kLocalPod, kIn, kTcp, "10.96.0.71", 80, {"10.244.2.72:80"}, Masq::none, kAccept},
    {"terminating_not_serving_endpoint_is_rejected", kCidr, kLocalPod, kIn, kTcp, "10.96.0.72", 80, {}, Masq::none, kReject},
};
// clang-format on

INSTANTIATE_TEST_SUITE_P(Rendered, PacketFlow, ::testing::ValuesIn(kFlowRows),
                         [](const ::testing::TestParamInfo<FlowRow>& info) {
                           return std::string(info.param.name);
                         });

TEST(PacketFlowTable, HasAtLeastFortyRowsAndCoversEveryRule) {
  EXPECT_GE(std::size(kFlowRows), 40u);
  // Every rule of the cluster-CIDR ruleset is matched by some row (or by the extra packets
  // below, for the connection-state and affinity rules): no rule goes untested.
  const auto& model = flow_model(kCidr);
  std::set<std::string> matched;
  auto collect = [&](const TraceResult& result) {
    for (const auto& o : result.outcomes)
      matched.insert(o.rules.begin(), o.rules.end());
  };
  for (const auto& row : kFlowRows) {
    if (row.config == kCidr) collect(trace(model, packet_of(row), node_env()));
  }
  // Each pod-sourced row again from each of its endpoints (hairpin): only the branch back to the
  // sender itself is masqueraded.
  for (const auto& row : kFlowRows) {
    const bool from_pod =
        std::string(row.source) == kLocalPod || std::string(row.source) == kRemotePod;
    if (row.config != kCidr || !from_pod || row.masq != Masq::none || row.verdict != kAccept) {
      continue;
    }
    for (const auto& e : row.endpoints) {
      const auto address = e.substr(0, e.find(':'));
      if (address == row.destination) continue;  // not translated
      FlowRow hairpin = row;
      hairpin.source = address.c_str();
      hairpin.masq = Masq::hairpin;
      const auto result = trace(model, packet_of(hairpin), node_env());
      EXPECT_EQ(check_row(hairpin, result), "") << row.name << " from " << address << "\n"
                                                << result.describe();
      collect(result);
    }
  }
  // A second packet of a sticky client, and forwarded packets of existing or invalid connections.
  auto env = node_env();
  const auto first = trace(model, tcp_packet(kLocalPod, "10.96.0.50", 80), env);
  for (const auto& o : first.outcomes) {
    env.recent = o.recent;
    collect(trace(model, tcp_packet(kLocalPod, "10.96.0.50", 80), env));
  }
  env = node_env();
  env.ct_state = kCtEstablished;
  collect(trace(model, tcp_packet(kClient, "10.244.2.7", 8080), env));
  env.ct_state = kCtInvalid;
  collect(trace(model, tcp_packet(kClient, "10.244.2.7", 8080), env));

  std::vector<std::string> unmatched;
  for (const auto* table : {"filter", "nat"}) {
    for (const auto& [name, chain] : model.table(table).chains) {
      for (const auto& rule : chain.rules) {
        const auto key = std::string(table) + "/" + name + ": " + rule.text();
        if (!matched.contains(key)) unmatched.push_back(key);
      }
    }
  }
  std::string listing;
  for (const auto& u : unmatched)
    listing += u + "\n";
  EXPECT_TRUE(unmatched.empty()) << "rules no row exercises:\n" << listing;
}

// --- affinity across packets
// ----------------------------------------------------------------------

TEST(AffinityFlow, AClientStaysOnItsEndpointUntilTheTimeout) {
  const auto& model = flow_model(kCidr);
  auto env = node_env();
  const auto first = trace(model, tcp_packet(kLocalPod, "10.96.0.50", 80), env);
  ASSERT_EQ(first.endpoints().size(), 3u) << first.describe();
  for (const auto& chosen : first.outcomes) {
    auto next = node_env();
    next.recent = chosen.recent;
    next.now = 599;
    const auto again = trace(model, tcp_packet(kLocalPod, "10.96.0.50", 80), next);
    EXPECT_EQ(again.endpoint_probabilities(),
              (std::map<std::string, double>{{chosen.endpoint(), 1.0}}))
        << again.describe();
    const auto other = trace(model, tcp_packet(kRemotePod, "10.96.0.50", 80), next);
    EXPECT_EQ(other.endpoints().size(), 3u) << other.describe();
    next.now = 600;  // timeoutSeconds 600 has passed
    EXPECT_EQ(trace(model, tcp_packet(kLocalPod, "10.96.0.50", 80), next).endpoints().size(), 3u);
  }
}

TEST(AffinityFlow, ServicesWithoutAffinityKeepNoClientState) {
  const auto& model = flow_model(kCidr);
  const auto result = trace(model, tcp_packet(kLocalPod, "10.96.0.10", 80), node_env());
  for (const auto& o : result.outcomes)
    EXPECT_TRUE(o.recent.empty());
}

// --- a host whose FORWARD policy is DROP (Docker sets it)
// -----------------------------------------

TEST(ForwardPolicy, KubeForwardAcceptsMarkedAndEstablishedTrafficOnly) {
  auto model = full_model(flow_state(), options_for(kCidr));
  model.apply_restore("*filter\n:FORWARD DROP [0:0]\nCOMMIT\n", true);
  // Masqueraded service traffic is forwarded by the mark rule of KUBE-FORWARD.
  const auto node_port = trace(model, tcp_packet(kClient, kNodeIp, 30030), node_env());
  EXPECT_TRUE(node_port.all(Verdict::accept)) << node_port.describe();
  EXPECT_TRUE(node_port.all_masqueraded());
  // Unmarked pod traffic is left to the policy (the network plugin must accept it), as is a
  // packet of no connection; packets of established connections pass.
  EXPECT_TRUE(trace(model, tcp_packet(kLocalPod, "10.96.0.10", 80), node_env()).all(Verdict::drop));
  auto env = node_env();
  env.ct_state = kCtEstablished;
  EXPECT_TRUE(trace(model, tcp_packet(kLocalPod, "10.244.2.7", 8080), env).all(Verdict::accept));
  env.ct_state = kCtInvalid;
  const auto invalid = trace(model, tcp_packet(kLocalPod, "10.244.2.7", 8080), env);
  ASSERT_TRUE(invalid.all(Verdict::drop));
  EXPECT_NE(invalid.outcomes[0].rules.back().find("--ctstate INVALID -j DROP"), std::string::npos)
      << invalid.describe();
}

// --- partial syncs ----------------------------------------------------------------------------

// A sequence of states as the proxier sees them: each is rendered partially (only what diff
// reports) on top of the previous one, and must leave the model exactly as a full render does;
// once rewriting KUBE-SERVICES and KUBE-NODEPORTS every time (kube-proxy), once as the proxier
// does, leaving them alone when their rules did not change.
void expect_partial_equals_full(const std::vector<ProxyState>& states, const RenderOptions& options,
                                const std::function<void(const IptablesModel&)>& check_last) {
  for (const bool keep_unchanged_entries : {false, true}) {
    SCOPED_TRACE(keep_unchanged_entries ? "unchanged entry rules left alone"
                                        : "entry rules rewritten");
    IptablesModel model;
    apply_jump_rules(model);
    auto result = proxy::iptables::render(states.front(), options, nullptr, {});
    model.apply_restore(result.text, true);
    for (std::size_t i = 1; i < states.size(); ++i) {
      const auto changes = proxy::diff(states[i - 1], states[i]);
      apply_jump_rules(model);
      const auto previous_entries = result.entry_rules;
      result = proxy::iptables::render(states[i], options, &changes.changed, result.nat_chains,
                                       keep_unchanged_entries ? &previous_entries : nullptr);
      ASSERT_TRUE(result.partial);
      ASSERT_NO_THROW(model.apply_restore(result.text, true)) << result.text;
      std::set<std::string> fresh_chains;
      const auto fresh = full_model(states[i], options, &fresh_chains);
      EXPECT_EQ(model.save(), fresh.save()) << "after partial sync " << i;
      EXPECT_EQ(result.nat_chains, fresh_chains);
    }
    check_last(model);
  }
}

TEST(PartialSync, EndpointChangesServiceRemovalAndAdditionEqualAFullRender) {
  const ProxyState before = flow_state();
  ProxyState after = before;
  const auto web = port_name("default", "web", "http");
  after.endpoints[web] = {endpoint("10.244.1.5", 8080, true), endpoint("10.244.2.9", 8080, false)};
  const auto sticky = port_name("default", "sticky", "");
  after.services.erase(sticky);
  after.endpoints.erase(sticky);
  add(after, port_name("default", "new", ""), cluster_ip("10.96.0.80", 80),
      {endpoint("10.244.2.80", 80, false)});
  expect_partial_equals_full({before, after}, options_for(kCidr), [](const IptablesModel& model) {
    const auto env = node_env();
    EXPECT_EQ(trace(model, tcp_packet(kLocalPod, "10.96.0.10", 80), env).endpoints(),
              (std::set<std::string>{"10.244.1.5:8080", "10.244.2.9:8080"}));
    EXPECT_EQ(trace(model, tcp_packet(kLocalPod, "10.96.0.80", 80), env).endpoints(),
              std::set<std::string>{"10.244.2.80:80"});
    // The removed service is no longer translated, and its chains are gone.
    EXPECT_EQ(trace(model, tcp_packet(kLocalPod, "10.96.0.50", 80), env).endpoints(),
              std::set<std::string>{"10.96.0.50:80"});
    for (const auto& [name, chain] : model.table("nat").chains) {
      for (const auto& rule : chain.rules) {
        EXPECT_EQ(rule.comment().find("default/sticky"), std::string::npos) << rule.text();
      }
    }
  });
}

TEST(PartialSync, LosingAndRegainingEndpointsEqualsAFullRender) {
  const ProxyState start = flow_state();
  ProxyState none = start;
  const auto np = port_name("default", "np-cluster", "");
  none.endpoints.erase(np);
  ProxyState back = none;
  back.endpoints[np] = {endpoint("10.244.2.99", 80, false)};
  ProxyState unchanged = back;
  expect_partial_equals_full(
      {start, none, back, unchanged}, options_for(kCidr), [](const IptablesModel& model) {
        const auto result = trace(model, tcp_packet(kClient, kNodeIp, 30030), node_env());
        EXPECT_EQ(result.endpoints(), std::set<std::string>{"10.244.2.99:80"});
        EXPECT_TRUE(result.all_masqueraded());
      });
  // In the middle state the node port was rejected.
  const auto middle = full_model(none, options_for(kCidr));
  EXPECT_TRUE(trace(middle, tcp_packet(kClient, kNodeIp, 30030), node_env()).all(Verdict::reject));
}

TEST(PartialSync, PolicyChangesEqualAFullRender) {
  const ProxyState start = flow_state();
  ProxyState changed = start;
  const auto np = port_name("default", "np-cluster", "");
  changed.services[np].external_policy_local = true;
  const auto itp = port_name("default", "itp-local", "");
  changed.services[itp].internal_policy_local = false;
  expect_partial_equals_full(
      {start, changed}, options_for(kNoCidr), [](const IptablesModel& model) {
        const auto env = node_env();
        const auto external = trace(model, tcp_packet(kClient, kNodeIp, 30030), env);
        EXPECT_EQ(external.endpoints(), std::set<std::string>{"10.244.1.10:80"});
        EXPECT_FALSE(external.any_masqueraded());
        EXPECT_EQ(trace(model, tcp_packet(kLocalPod, "10.96.0.60", 80), env).endpoints(),
                  (std::set<std::string>{"10.244.1.60:80", "10.244.2.60:80"}));
      });
}

TEST(PartialSync, ReapplyingTheSameFullRenderChangesNothing) {
  const auto state = flow_state();
  std::set<std::string> chains;
  auto model = full_model(state, options_for(kCidr), &chains);
  const auto before = model.save();
  apply_jump_rules(model);
  model.apply_restore(proxy::iptables::render(state, options_for(kCidr), nullptr, chains).text,
                      true);
  EXPECT_EQ(model.save(), before);
}

}  // namespace
}  // namespace flatnet::testing
