#pragma once

// iptables mode: renders the whole desired ruleset in memory (render.hpp), applies it with one
// `iptables-restore --noflush` transaction (runner.hpp), keeps the jump rules in the built-in
// chains, and removes UDP conntrack entries that point at backends no longer in use
// (conntrack.hpp).

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "flatnet/proxy/config.hpp"
#include "flatnet/proxy/iptables/conntrack.hpp"
#include "flatnet/proxy/iptables/runner.hpp"
#include "flatnet/proxy/proxier.hpp"

namespace flatnet::proxy::iptables {

// The node's own IPv4 addresses, read at each full sync (node ports and conntrack cleanup).
using AddressSource = std::function<std::vector<IpAddress>()>;

// Every IPv4 address of this network namespace's interfaces, through netlink.
std::vector<IpAddress> local_addresses();

// The iptables binaries of config.iptables_backend, the kernel's conntrack table and this
// namespace's addresses. Throws std::runtime_error when the iptables binaries cannot be found.
std::unique_ptr<Proxier> make_proxier(const ProxyConfig& config);
// The same with its seams given (tests pass fakes).
std::unique_ptr<Proxier> make_proxier(const ProxyConfig& config, std::unique_ptr<Iptables> iptables,
                                      std::unique_ptr<Conntrack> conntrack,
                                      AddressSource addresses);

// The chains of ours in an iptables-save dump of one table: KUBE- chains except those kubelet
// owns (KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY, KUBE-FIREWALL).
std::set<std::string> our_chains(const std::string& saved);

}  // namespace flatnet::proxy::iptables
