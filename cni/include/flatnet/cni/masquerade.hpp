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

// "FLATNET-" and 16 hex digits of a hash of network and container ID (iptables allows 28).
std::string masquerade_chain(const std::string& network, const std::string& container_id);
// name: "<network>" id: "<container id>", the reference plugin's comment format.
std::string masquerade_comment(const std::string& network, const std::string& container_id);

// The iptables-restore input that installs the rules for `addresses` (one family), replacing
// any earlier rules of the same attachment (`existing` is iptables-save -t nat output).
std::string render_masquerade_setup(const std::string& network, const std::string& container_id,
                                    const std::vector<netmodel::IpPrefix>& addresses,
                                    const std::string& existing);
// The input that removes every rule of the attachment found in `existing`; empty when none.
std::string render_masquerade_teardown(const std::string& network, const std::string& container_id,
                                       const std::string& existing);
// The (network, container ID) pairs that own flatnet masquerade chains in `existing`.
std::set<std::pair<std::string, std::string>> masquerade_owners(const std::string& existing);

// Apply in the calling process's namespace, for both families as needed. Throw CniError with
// iptables' own message on failure.
void setup_masquerade(const std::string& network, const std::string& container_id,
                      const std::vector<netmodel::IpPrefix>& addresses);
void teardown_masquerade(const std::string& network, const std::string& container_id);
// Removes the rules of every attachment of `network` whose container ID is not in `valid_ids`.
void gc_masquerade(const std::string& network, const std::set<std::string>& valid_ids);

}  // namespace flatnet::cni
