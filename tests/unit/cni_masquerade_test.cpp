// The iptables-restore text of ipMasq: what ADD installs, what DEL and GC remove.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "flatnet/cni/masquerade.hpp"

namespace flatnet::cni {
namespace {

using netmodel::IpPrefix;
using ::testing::HasSubstr;
using ::testing::Not;

const MasqueradeOwner kC1{"net", "c1", "eth0"};

std::string comment_of(const MasqueradeOwner& o) {
  return "-m comment --comment \"name: \\\"" + o.network + "\\\" id: \\\"" + o.container_id +
         "\\\" ifname: \\\"" + o.ifname + "\\\"\"";
}

TEST(Masquerade, ChainNamesAreStableShortAndDistinct) {
  const std::string chain = masquerade_chain({"flatnet", "abc", "eth0"});
  EXPECT_EQ(chain, masquerade_chain({"flatnet", "abc", "eth0"}));
  EXPECT_EQ(chain.rfind("FLATNET-", 0), 0u);
  EXPECT_EQ(chain.size(), 24u) << "iptables allows 28 characters";
  EXPECT_NE(chain, masquerade_chain({"flatnet", "abd", "eth0"}));
  EXPECT_NE(chain, masquerade_chain({"flatnet", "abc", "net1"})) << "one chain per interface";
  EXPECT_NE(masquerade_chain({"a", "bc", "e"}), masquerade_chain({"ab", "c", "e"}))
      << "the parts are separated";
}

TEST(Masquerade, SetupRendersOneTransactionPerFamily) {
  const std::string chain = masquerade_chain(kC1);
  const std::string text = render_masquerade_setup(kC1, {IpPrefix::parse("10.244.1.5/24")},
                                                   "*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n");
  const std::string comment = comment_of(kC1);
  EXPECT_EQ(text, "*nat\n:" + chain + " - [0:0]\n" + "-A POSTROUTING -s 10.244.1.5/32 " + comment +
                      " -j " + chain + "\n" + "-A " + chain + " -d 10.244.1.0/24 " + comment +
                      " -j ACCEPT\n" + "-A " + chain + " ! -d 224.0.0.0/4 " + comment +
                      " -j MASQUERADE\n" + "COMMIT\n");
  const std::string v6 = render_masquerade_setup(kC1, {IpPrefix::parse("fd00::5/64")}, "");
  EXPECT_THAT(v6, HasSubstr("-s fd00::5/128"));
  EXPECT_THAT(v6, HasSubstr("-d fd00::/64"));
  EXPECT_THAT(v6, HasSubstr("! -d ff00::/8"));
}

TEST(Masquerade, SetupReplacesOnlyTheSameInterfacesEarlierJumps) {
  const MasqueradeOwner net1{"net", "c1", "net1"};
  const std::string existing = "*nat\n:" + masquerade_chain(kC1) +
                               " - [0:0]\n-A POSTROUTING -s 10.244.1.9/32 " + comment_of(kC1) +
                               " -j " + masquerade_chain(kC1) + "\nCOMMIT\n";
  // The same interface again: its old jump goes.
  const std::string again =
      render_masquerade_setup(kC1, {IpPrefix::parse("10.244.1.5/24")}, existing);
  EXPECT_THAT(again, HasSubstr("-D POSTROUTING -s 10.244.1.9/32"));
  EXPECT_THAT(again, HasSubstr("-A POSTROUTING -s 10.244.1.5/32"));
  // A second interface of the same container: eth0's rules stay.
  const std::string second =
      render_masquerade_setup(net1, {IpPrefix::parse("10.244.2.5/24")}, existing);
  EXPECT_THAT(second, Not(HasSubstr("-D ")));
  EXPECT_THAT(second, Not(HasSubstr(masquerade_chain(kC1))));
}

TEST(Masquerade, TeardownRemovesOnlyWhatTheAttachmentOwns) {
  const MasqueradeOwner c2{"net", "c2", "eth0"};
  const std::string mine = masquerade_chain(kC1);
  const std::string other = masquerade_chain(c2);
  const std::string existing = "*nat\n:POSTROUTING ACCEPT [0:0]\n:" + mine + " - [0:0]\n:" + other +
                               " - [0:0]\n" + "-A POSTROUTING -s 10.244.1.5/32 " + comment_of(kC1) +
                               " -j " + mine + "\n" + "-A POSTROUTING -s 10.244.1.6/32 " +
                               comment_of(c2) + " -j " + other + "\nCOMMIT\n";
  const std::string text = render_masquerade_teardown(kC1, existing);
  EXPECT_THAT(text, HasSubstr("-D POSTROUTING -s 10.244.1.5/32"));
  EXPECT_THAT(text, HasSubstr("-F " + mine + "\n-X " + mine));
  EXPECT_THAT(text, Not(HasSubstr(other)));
  EXPECT_EQ(render_masquerade_teardown({"net", "gone", "eth0"}, existing), "")
      << "nothing to remove";
  EXPECT_EQ(masquerade_owners(existing), (std::set<MasqueradeOwner>{kC1, c2}));
}

}  // namespace
}  // namespace flatnet::cni
