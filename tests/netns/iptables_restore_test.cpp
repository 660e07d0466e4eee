// flatnet-proxy's iptables-restore runner against the real binaries in a scratch namespace: a
// large transaction through iptables-nft gets the "-S" listing that turns off its quadratic chain
// list (runner.hpp), and that listing changes nothing: another program's rules and counters stay,
// the ruleset is what the text says, and an error still names the line of the text as written.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "flatnet/netmodel/netns.hpp"
#include "flatnet/proxy/iptables/runner.hpp"
#include "flatnet/testing/scratch_netns.hpp"

namespace flatnet::proxy::iptables {
namespace {

using ::testing::HasSubstr;

// `count` chains named in ascending order, each with one rule: a list walk of count^2 steps.
std::string ascending_chains(int count, const std::string& table = "filter",
                             const std::string& tail = "") {
  std::string text = "*" + table + "\n";
  char name[32];
  for (int i = 0; i < count; ++i) {
    std::snprintf(name, sizeof name, "KUBE-T-%05d", i);
    text += std::string(":") + name + " - [0:0]\n";
  }
  for (int i = 0; i < count; ++i) {
    std::snprintf(name, sizeof name, "KUBE-T-%05d", i);
    text += std::string("-A ") + name + " -p tcp -m tcp --dport 9 -j RETURN\n";
  }
  return text + tail + "COMMIT\n";
}

// Five UDP datagrams to 127.0.0.1:9, through filter OUTPUT.
void send_udp() {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(9);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < 5; ++i) {
    ::sendto(fd, "x", 1, 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
  }
  ::close(fd);
}

std::vector<std::string> lines_with(const std::string& text, const std::string& part) {
  std::vector<std::string> found;
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const auto line = text.substr(pos, end - pos);
    if (line.find(part) != std::string::npos) found.push_back(line);
    pos = end + 1;
  }
  return found;
}

class IptablesRestoreTest : public testing::NetnsTest {};

TEST_F(IptablesRestoreTest, ALargeNftTransactionIsListedFirstAndChangesNothingElse) {
  auto& node = scratch_.add("node");
  const auto text = ascending_chains(6000);
  std::vector<std::size_t> inserted;
  with_full_table_cache(text, kNftFullCacheSteps, inserted);
  ASSERT_FALSE(inserted.empty()) << "the text must be costly enough";

  netmodel::run_in(node, [&] {
    const auto iptables = make_iptables(IptablesBackend::nft);
    // Another program's chain and rules, with counters.
    ASSERT_TRUE(iptables->run({"-t", "filter", "-N", "OTHER"}).ok());
    ASSERT_TRUE(iptables->run({"-t", "filter", "-A", "OUTPUT", "-p", "udp", "-j", "OTHER"}).ok());
    ASSERT_TRUE(iptables->run({"-t", "filter", "-A", "OTHER", "-p", "udp", "-j", "RETURN"}).ok());
    ASSERT_TRUE(iptables->run({"-t", "nat", "-N", "OTHER-NAT"}).ok());
    send_udp();
    const auto counted = iptables->run({"-t", "filter", "-S", "-v"});
    ASSERT_TRUE(counted.ok()) << counted.error;
    const auto other_before = lines_with(counted.output, "OTHER");
    const auto policies_before = lines_with(counted.output, "-P ");
    ASSERT_THAT(other_before, ::testing::Contains(HasSubstr("-c 5 ")));

    const auto restored = iptables->restore(text);
    ASSERT_TRUE(restored.ok()) << restored.error;
    EXPECT_EQ(restored.output, "") << "the listing is not the restore's output";

    const auto after = iptables->run({"-t", "filter", "-S", "-v"});
    ASSERT_TRUE(after.ok()) << after.error;
    EXPECT_EQ(lines_with(after.output, "OTHER"), other_before);
    EXPECT_EQ(lines_with(after.output, "-P "), policies_before) << "policies and their counters";
    EXPECT_EQ(lines_with(after.output, "-N KUBE-T-").size(), 6000u);
    EXPECT_EQ(lines_with(after.output, "-A KUBE-T-").size(), 6000u);
    const auto nat = iptables->save("nat");
    ASSERT_TRUE(nat.ok()) << nat.error;
    EXPECT_THAT(nat.output, HasSubstr(":OTHER-NAT - [0:0]"));

    // Again, over the chains now there: each is flushed and written once more.
    ASSERT_TRUE(iptables->restore(text).ok());
    const auto again = iptables->run({"-t", "filter", "-S", "-v"});
    EXPECT_EQ(lines_with(again.output, "-A KUBE-T-").size(), 6000u);
    EXPECT_EQ(lines_with(again.output, "OTHER"), other_before);
  });
}

// A proxy's first sync on a new node: no nat table yet, and jumps into its built-in chains.
TEST_F(IptablesRestoreTest, JumpsIntoBuiltInChainsWorkOnANodeWithoutTables) {
  auto& node = scratch_.add("node");
  const auto text = ascending_chains(6000, "nat",
                                     "-I PREROUTING -p tcp -j KUBE-T-00000\n"
                                     "-I OUTPUT -p tcp -j KUBE-T-00001\n"
                                     "-I POSTROUTING -p tcp -j KUBE-T-00002\n");
  std::vector<std::size_t> inserted;
  with_full_table_cache(text, kNftFullCacheSteps, inserted);
  ASSERT_FALSE(inserted.empty());
  netmodel::run_in(node, [&] {
    const auto iptables = make_iptables(IptablesBackend::nft);
    const auto restored = iptables->restore(text);
    ASSERT_TRUE(restored.ok()) << restored.error;
    const auto nat = iptables->save("nat");
    EXPECT_THAT(nat.output, HasSubstr("-A PREROUTING -p tcp -j KUBE-T-00000\n"));
    EXPECT_THAT(nat.output, HasSubstr("-A OUTPUT -p tcp -j KUBE-T-00001\n"));
    EXPECT_THAT(nat.output, HasSubstr("-A POSTROUTING -p tcp -j KUBE-T-00002\n"));
    EXPECT_EQ(lines_with(nat.output, "-A KUBE-T-").size(), 6000u);
  });
}

TEST_F(IptablesRestoreTest, AnErrorNamesTheLineOfTheTextAsRendered) {
  auto& node = scratch_.add("node");
  auto text = ascending_chains(6000);
  text.insert(text.rfind("COMMIT\n"), "-A KUBE-T-00001 -m tcp --no-such-option 1 -j RETURN\n");
  const auto bad_line = 1 + 6000 + 6000 + 1;  // *filter, chains, rules, then this one
  netmodel::run_in(node, [&] {
    const auto iptables = make_iptables(IptablesBackend::nft);
    const auto restored = iptables->restore(text);
    ASSERT_FALSE(restored.ok());
    EXPECT_THAT(restored.error, HasSubstr("line: " + std::to_string(bad_line)));
    // Nothing of the failed transaction was applied.
    const auto after = iptables->run({"-t", "filter", "-S"});
    EXPECT_TRUE(lines_with(after.output, "KUBE-T-").empty());
  });
}

}  // namespace
}  // namespace flatnet::proxy::iptables
