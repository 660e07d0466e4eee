#pragma once

// The iptables ruleset of flatnet-proxy, rendered as plain text from a ProxyState: the input of
// one `iptables-restore --noflush` transaction. Pure: no kernel, no clock, no randomness.
//
// The chain structure and the rule text are kube-proxy's (pkg/proxy/iptables/proxier.go,
// syncProxyRules, Kubernetes 1.29-1.31), so an operator reads it with kube-proxy habits:
//   filter: KUBE-SERVICES, KUBE-EXTERNAL-SERVICES, KUBE-FORWARD, KUBE-NODEPORTS,
//           KUBE-PROXY-FIREWALL (REJECT for services without endpoints, DROP for Local policies
//           without local endpoints, health check node ports, forwarding of marked traffic)
//   nat:    KUBE-SERVICES, KUBE-NODEPORTS, KUBE-POSTROUTING, KUBE-MARK-MASQ and per service port
//           KUBE-SVC (Cluster policy), KUBE-SVL (Local policy), KUBE-EXT (external destinations),
//           KUBE-SEP (one endpoint each)
// Options within a rule are in the order iptables-save prints them (addresses and protocol
// first, addresses with their prefix length, comments quoted), so the text reads like
// `iptables-save` output; match and target options are kube-proxy's own text.
//
// Node ports never answer on 127.0.0.0/8: the proxy does not set route_localnet, which is
// kube-proxy with --iptables-localhost-nodeports=false ("! -d 127.0.0.0/8" on the node-port jump).

#include <cstddef>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "flatnet/netmodel/address.hpp"
#include "flatnet/proxy/model.hpp"

namespace flatnet::proxy::iptables {

struct RenderOptions {
  std::optional<netmodel::IpPrefix> cluster_cidr{};  // --cluster-cidr (local-traffic detector)
  bool masquerade_all = false;
  unsigned masquerade_bit = 14;  // mark 1<<bit, "0x4000/0x4000" by default
  // Node ports: unrestricted, they answer on every local address ("-m addrtype --dst-type
  // LOCAL"); restricted (kube-proxy with --nodeport-addresses), one "-d <ip>/32" rule per address
  // in node_port_addresses, and none at all when no node address matched.
  bool node_ports_restricted = false;
  std::vector<netmodel::IpAddress> node_port_addresses{};
};

struct RenderResult {
  std::string text;                     // "*filter ... COMMIT\n*nat ... COMMIT\n"
  std::set<std::string> filter_chains;  // every chain of ours in filter once applied
  std::set<std::string> nat_chains;     // every chain of ours in nat once applied
  std::size_t rules = 0;                // "-A" lines written
  bool partial = false;
  // The nat rules of KUBE-SERVICES and KUBE-NODEPORTS, as rendered (in `text` unless
  // !wrote_entry_rules): what a later partial render compares with.
  std::string entry_rules;
  bool wrote_entry_rules = true;
};

// changed == nullptr: full render, every chain declared and written. Otherwise a partial render:
// the top-level chains (KUBE-SERVICES, KUBE-NODEPORTS, KUBE-EXTERNAL-SERVICES, KUBE-POSTROUTING,
// KUBE-MARK-MASQ, KUBE-FORWARD, KUBE-PROXY-FIREWALL) are rewritten, except nat's KUBE-SERVICES
// and KUBE-NODEPORTS when their rules equal *previous_entry_rules (the entry_rules of the render
// last applied; kube-proxy rewrites them every time); per-service chains (KUBE-SVC/SVL/EXT/FW/SEP)
// only for service ports in *changed, and for any service port one of whose chains is not in
// previous_nat_chains (it did not exist before).
// In both cases every per-service chain in previous_nat_chains that is no longer wanted is
// flushed (declared) and deleted ("-X"), exactly as kube-proxy does. Other names in
// previous_nat_chains (top-level or foreign chains, e.g. from iptables-save) are left alone.
// masquerade_bit must be 0..31 (checked by the settings parser; larger values are masked).
RenderResult render(const ProxyState& state, const RenderOptions& options,
                    const std::set<ServicePortName>* changed,
                    const std::set<std::string>& previous_nat_chains,
                    const std::string* previous_entry_rules = nullptr);

// The rules in built-in chains that lead into ours (kube-proxy's iptablesJumpChains), which the
// proxier ensures with `iptables -C` / `iptables -I` (restore --noflush cannot edit built-in
// chains idempotently). In kube-proxy's order; each is inserted at the top of its chain.
struct JumpRule {
  std::string table;
  std::string chain;
  std::vector<std::string> args;  // args end with "-j", target
};
const std::vector<JumpRule>& jump_rules();

}  // namespace flatnet::proxy::iptables
