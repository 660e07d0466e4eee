// The iptables-restore text of ipMasq: what ADD installs, what DEL and GC remove.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "flatnet/cni/masquerade.hpp"

namespace flatnet::cni {
namespace {

using netmodel::IpPrefix;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(Masquerade, ChainNamesAreStableShortAndDistinct) {
  const std::string chain = masquerade_chain("flatnet", "abc");
  EXPECT_EQ(chain, masquerade_chain("flatnet", "abc"));
  EXPECT_EQ(chain.rfind("FLATNET-", 0), 0u);
  EXPECT_EQ(chain.size(), 24u) << "iptables allows 28 characters";
  EXPECT_NE(chain, masquerade_chain("flatnet", "abd"));
  EXPECT_NE(masquerade_chain("a", "bc"), masquerade_chain("ab", "c")) << "the parts are separated";
}

TEST(Masquerade, SetupRendersOneTransactionPerFamily) {
  const std::string chain = masquerade_chain("net", "c1");
  const std::string text = render_masquerade_setup("net", "c1", {IpPrefix::parse("10.244.1.5/24")},
                                                   "*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n");
  const std::string comment = "-m comment --comment \"name: \\\"net\\\" id: \\\"c1\\\"\"";
  EXPECT_EQ(text, "*nat\n:" + chain + " - [0:0]\n" + "-A POSTROUTING -s 10.244.1.5/32 " + comment +
                      " -j " + chain + "\n" + "-A " + chain + " -d 10.244.1.0/24 " + comment +
                      " -j ACCEPT\n" + "-A " + chain + " ! -d 224.0.0.0/4 " + comment +
                      " -j MASQUERADE\n" + "COMMIT\n");
  const std::string v6 = render_masquerade_setup("net", "c1", {IpPrefix::parse("fd00::5/64")}, "");
  EXPECT_THAT(v6, HasSubstr("-s fd00::5/128"));
  EXPECT_THAT(v6, HasSubstr("-d fd00::/64"));
  EXPECT_THAT(v6, HasSubstr("! -d ff00::/8"));
}

TEST(Masquerade, SetupReplacesTheJumpsOfAnEarlierAdd) {
  const std::string chain = masquerade_chain("net", "c1");
  const std::string existing =
      "*nat\n:" + chain +
      " - [0:0]\n-A POSTROUTING -s 10.244.1.9/32 -m comment --comment \"x\" -j " + chain +
      "\nCOMMIT\n";
  const std::string text =
      render_masquerade_setup("net", "c1", {IpPrefix::parse("10.244.1.5/24")}, existing);
  EXPECT_THAT(text,
              HasSubstr("-D POSTROUTING -s 10.244.1.9/32 -m comment --comment \"x\" -j " + chain));
  EXPECT_THAT(text, HasSubstr("-A POSTROUTING -s 10.244.1.5/32"));
}

TEST(Masquerade, TeardownRemovesOnlyWhatTheAttachmentOwns) {
  const std::string mine = masquerade_chain("net", "c1");
  const std::string other = masquerade_chain("net", "c2");
  const std::string existing = "*nat\n:POSTROUTING ACCEPT [0:0]\n:" + mine + " - [0:0]\n:" + other +
                               " - [0:0]\n" +
                               "-A POSTROUTING -s 10.244.1.5/32 -m comment --comment \"name: "
                               "\\\"net\\\" id: \\\"c1\\\"\" -j " +
                               mine + "\n" +
                               "-A POSTROUTING -s 10.244.1.6/32 -m comment --comment \"name: "
                               "\\\"net\\\" id: \\\"c2\\\"\" -j " +
                               other + "\nCOMMIT\n";
  const std::string text = render_masquerade_teardown("net", "c1", existing);
  EXPECT_THAT(text, HasSubstr("-D POSTROUTING -s 10.244.1.5/32"));
  EXPECT_THAT(text, HasSubstr("-F " + mine + "\n-X " + mine));
  EXPECT_THAT(text, Not(HasSubstr(other)));
  EXPECT_EQ(render_masquerade_teardown("net", "gone", existing), "") << "nothing to remove";

  const auto owners = masquerade_owners(existing);
  EXPECT_EQ(owners, (std::set<std::pair<std::string, std::string>>{{"net", "c1"}, {"net", "c2"}}));
}

}  // namespace
}  // namespace flatnet::cni
