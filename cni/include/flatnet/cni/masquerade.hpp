#pragma once

// ipMasq: source NAT for traffic that leaves the pod subnet, as the reference bridge plugin
// sets it up, with one difference: every rule is tagged with the network and container, and the
// chain is named after them, so DEL and GC find and remove the rules without knowing the pod's
// addresses (the reference plugin needs them, and leaks its rules when the namespace is gone).
//
// In the nat table of the plugin's namespace, per attachment:
//   -A POSTROUTING -s <pod address> -m comment --comment <tag> -j <chain>
//   -A <chain> -d <pod subnet> -m comment --comment <tag> -j ACCEPT
//   -A <chain> ! -d <multicast> -m comment --comment <tag> -j MASQUERADE
// applied with iptables-restore --noflush (ip6tables-restore for IPv6) in one transaction.

#include <set>
#include <string>
#include <vector>

#include "flatnet/netmodel/address.hpp"

namespace flatnet::cni {

// Whose rules: an attachment (one interface of one container) of one network. A container with
// two interfaces on the network (Multus) has two sets of rules.
struct MasqueradeOwner {
  std::string network;
  std::string container_id;
  std::string ifname;

  friend auto operator<=>(const MasqueradeOwner&, const MasqueradeOwner&) = default;
};

// "FLATNET-" and 16 hex digits of a hash of the owner (iptables allows 28 characters).
std::string masquerade_chain(const MasqueradeOwner& owner);
// name: "<network>" id: "<container id>" ifname: "<ifname>": the reference plugin's comment,
// and the interface.
std::string masquerade_comment(const MasqueradeOwner& owner);

// The iptables-restore input that installs the rules for `addresses` (one family), replacing
// any earlier rules of the same owner (`existing` is iptables-save -t nat output).
std::string render_masquerade_setup(const MasqueradeOwner& owner,
                                    const std::vector<netmodel::IpPrefix>& addresses,
                                    const std::string& existing);
// The input that removes every rule of the owner found in `existing`; empty when none.
std::string render_masquerade_teardown(const MasqueradeOwner& owner, const std::string& existing);
// The owners of flatnet masquerade chains in `existing`.
std::set<MasqueradeOwner> masquerade_owners(const std::string& existing);

// Apply in the calling process's namespace, for both families as needed. Throw CniError with
// iptables' own message on failure. Teardown and GC treat a family whose tables cannot be read
// (no IPv6 on this host, say) as having no rules.
void setup_masquerade(const MasqueradeOwner& owner,
                      const std::vector<netmodel::IpPrefix>& addresses);
void teardown_masquerade(const MasqueradeOwner& owner);
// Removes the rules of every attachment of `network` that is not in `valid` (container ID,
// ifname).
void gc_masquerade(const std::string& network,
                   const std::set<std::pair<std::string, std::string>>& valid);

}  // namespace flatnet::cni
