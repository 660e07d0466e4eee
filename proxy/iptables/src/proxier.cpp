#include "flatnet/proxy/iptables/proxier.hpp"

#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <utility>

#include "flatnet/netmodel/netlink.hpp"
#include "flatnet/proxy/iptables/render.hpp"
#include "flatnet/proxy/log.hpp"

namespace flatnet::proxy::iptables {
namespace {

constexpr std::string_view kLog = "proxier";

using Clock = std::chrono::steady_clock;

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
    text.pop_back();
  return text;
}

// Whether `listing` (`iptables -S CHAIN`) has the jump: a rule of that chain that ends with its
// target and carries its comment (iptables may print the matches in another order).
bool holds_jump(const std::string& listing, const JumpRule& rule) {
  const std::string target = " -j " + rule.args.back();
  std::string comment;
  for (std::size_t i = 0; i + 1 < rule.args.size(); ++i) {
    if (rule.args[i] == "--comment") comment = rule.args[i + 1];
  }
  const std::string prefix = "-A " + rule.chain + " ";
  std::size_t pos = 0;
  while (pos < listing.size()) {
    auto end = listing.find('\n', pos);
    if (end == std::string::npos) end = listing.size();
    const std::string_view line(listing.data() + pos, end - pos);
    if (line.starts_with(prefix) && line.ends_with(target) &&
        line.find(comment) != std::string_view::npos) {
      return true;
    }
    pos = end + 1;
  }
  return false;
}

bool has_udp(const ProxyState& state) {
  for (const auto& [name, info] : state.services) {
    if (name.protocol == Protocol::udp) return true;
  }
  return false;
}

std::vector<std::string> rule_args(const JumpRule& rule, const char* action) {
  std::vector<std::string> args = {"-t", rule.table, action, rule.chain};
  args.insert(args.end(), rule.args.begin(), rule.args.end());
  return args;
}

class IptablesProxier final : public Proxier {
 public:
  IptablesProxier(const ProxyConfig& config, std::unique_ptr<Iptables> iptables,
                  std::unique_ptr<Conntrack> conntrack, AddressSource addresses)
      : config_(config),
        iptables_(std::move(iptables)),
        conntrack_(std::move(conntrack)),
        addresses_(std::move(addresses)) {
    options_.cluster_cidr = config.cluster_cidr;
    options_.masquerade_all = config.masquerade_all;
    options_.masquerade_bit = config.masquerade_bit;
  }

  std::string mode() const override { return "iptables"; }

  SyncOutcome sync(const SyncRequest& request) override {
    const auto start = Clock::now();
    SyncOutcome outcome;
    const bool full = request.full || !synced_once_;
    outcome.partial = !full;
    try {
      if (full) refresh_node();
      auto rendered = render(request.state, options_, full ? nullptr : &request.changes.changed,
                             nat_chains_, full ? nullptr : &entry_rules_);
      // Full syncs also put back missing jumps from the built-in chains, in the same transaction.
      if (full) add_missing_jumps(rendered.text);
      const auto restored = iptables_->restore(rendered.text);
      if (!restored.ok()) {
        outcome.ok = false;
        outcome.restore_failed = true;
        outcome.error =
            "iptables-restore (" + iptables_->backend() + ") failed: " + trimmed(restored.error);
        // The kernel kept the old ruleset; what exists is unknown to us now: read it again.
        synced_once_ = false;
      } else {
        nat_chains_ = rendered.nat_chains;
        entry_rules_ = std::move(rendered.entry_rules);
        outcome.partial = rendered.partial;
        outcome.rules_written = rendered.rules;
        synced_once_ = true;
        clean_conntrack(request.state);
        last_state_ = request.state;
      }
    } catch (const std::exception& e) {
      outcome.ok = false;
      outcome.error = e.what();
      synced_once_ = false;
    }
    outcome.duration = Clock::now() - start;
    return outcome;
  }

  bool cleanup(std::string& error) override {
    bool ok = true;
    auto fail = [&](const std::string& what) {
      if (!error.empty()) error += "; ";
      error += what;
      ok = false;
    };
    // First the jumps into our chains, so that the chains can go.
    for (const auto& rule : jump_rules()) {
      for (int guard = 0; guard < 16; ++guard) {
        if (!iptables_->run(rule_args(rule, "-C")).ok()) break;
        const auto removed = iptables_->run(rule_args(rule, "-D"));
        if (!removed.ok()) {
          fail("delete jump " + rule.table + " " + rule.chain + ": " + trimmed(removed.error));
          break;
        }
      }
    }
    std::string text;
    for (const char* table : {"filter", "nat"}) {
      const auto saved = iptables_->save(table);
      if (!saved.ok()) {
        fail(std::string("iptables-save -t ") + table + ": " + trimmed(saved.error));
        continue;
      }
      const auto chains = our_chains(saved.output);
      if (chains.empty()) continue;
      text += std::string("*") + table + "\n";
      for (const auto& chain : chains)
        text += ":" + chain + " - [0:0]\n";
      for (const auto& chain : chains)
        text += "-X " + chain + "\n";
      text += "COMMIT\n";
    }
    if (!text.empty()) {
      const auto restored = iptables_->restore(text);
      if (!restored.ok()) fail("iptables-restore: " + trimmed(restored.error));
    }
    nat_chains_.clear();
    entry_rules_.clear();
    synced_once_ = false;
    return ok;
  }

 private:
  // What a full sync reads from the node: its addresses, and the chains already there (left by
  // an earlier run, which this one must take over or delete).
  void refresh_node() {
    node_addresses_ = addresses_ ? addresses_() : std::vector<IpAddress>{};
    options_.node_port_addresses.clear();
    options_.node_ports_restricted = !config_.nodeport_addresses.empty();
    if (options_.node_ports_restricted) {
      for (const auto& address : node_addresses_) {
        for (const auto& cidr : config_.nodeport_addresses) {
          if (cidr.contains(address)) {
            options_.node_port_addresses.push_back(address);
            break;
          }
        }
      }
      if (options_.node_port_addresses.empty()) {
        log::warning(kLog,
                     "no node address is inside --nodeport-addresses: no node port answers "
                     "until one is");
      }
    }
    saved_nat_.reset();
    if (!synced_once_) {
      const auto saved = iptables_->save("nat");
      if (saved.ok()) {
        nat_chains_ = our_chains(saved.output);
        saved_nat_ = saved.output;
      } else {
        // Chains an earlier run left stay until a later full sync can read them.
        log::warning(kLog, "iptables-save -t nat (" + iptables_->backend() +
                               "): " + trimmed(saved.error) + "; leftover chains are kept");
      }
    }
  }

  // Adds `-I` lines for the jump rules missing from the built-in chains to `text`, before each
  // table's COMMIT (kube-proxy inserts each at the top of its chain; so does -I). What exists is
  // read once per chain with `iptables -S`, or from the nat dump the first sync already made:
  // one `iptables -C` per jump would read the whole table each time with iptables-legacy, and
  // one `-I` per jump would write it back each time.
  void add_missing_jumps(std::string& text) {
    std::map<std::pair<std::string, std::string>, std::string> listed;
    std::map<std::string, std::string> lines;  // table -> "-I ..." lines
    for (const auto& rule : jump_rules()) {
      const std::pair<std::string, std::string> key{rule.table, rule.chain};
      if (!listed.contains(key)) {
        if (rule.table == "nat" && saved_nat_) {
          listed[key] = *saved_nat_;
        } else {
          const auto list = iptables_->run({"-t", rule.table, "-S", rule.chain});
          listed[key] = list.ok() ? list.output : "";
        }
      }
      if (holds_jump(listed[key], rule)) continue;
      std::string line = "-I " + rule.chain;
      for (const auto& arg : rule.args) {
        line += ' ';
        line += arg.find(' ') == std::string::npos ? arg : "\"" + arg + "\"";
      }
      lines[rule.table] += line + "\n";
    }
    for (const auto& [table, add] : lines) {
      const auto start = text.find("*" + table + "\n");
      const auto commit = start == std::string::npos ? start : text.find("COMMIT\n", start);
      if (commit == std::string::npos) {
        text += "*" + table + "\n" + add + "COMMIT\n";
      } else {
        text.insert(commit, add);
      }
    }
  }

  void clean_conntrack(const ProxyState& state) {
    // Only UDP service ports, present or just removed, can have stale entries: without any, the
    // table is not read at all.
    if (!conntrack_ || (!has_udp(state) && !has_udp(last_state_))) return;
    try {
      const auto stale =
          stale_udp_flows(state, last_state_, conntrack_->udp_flows(), node_addresses_);
      for (const auto& flow : stale) {
        if (conntrack_->remove(flow)) {
          log::info(2, kLog, "deleted stale conntrack entry " + flow.to_string());
        }
      }
    } catch (const std::exception& e) {
      // Stale entries age out by themselves (30 s for UDP): worth a warning, not a failed sync.
      log::warning(kLog, std::string("conntrack cleanup: ") + e.what());
    }
  }

  ProxyConfig config_;
  std::unique_ptr<Iptables> iptables_;
  std::unique_ptr<Conntrack> conntrack_;
  AddressSource addresses_;
  RenderOptions options_;
  std::vector<IpAddress> node_addresses_;
  std::set<std::string> nat_chains_;
  std::string entry_rules_;  // KUBE-SERVICES and KUBE-NODEPORTS in nat, as last applied
  ProxyState last_state_;
  std::optional<std::string> saved_nat_;  // the nat dump of this full sync, when one was made
  bool synced_once_ = false;
};

}  // namespace

std::set<std::string> our_chains(const std::string& saved) {
  static const std::set<std::string> kubelet = {"KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY",
                                                "KUBE-FIREWALL"};
  std::set<std::string> chains;
  std::size_t pos = 0;
  while (pos < saved.size()) {
    auto end = saved.find('\n', pos);
    if (end == std::string::npos) end = saved.size();
    const std::string_view line(saved.data() + pos, end - pos);
    if (line.starts_with(":KUBE-")) {
      const auto name = line.substr(1, line.find(' ') - 1);
      if (!kubelet.contains(std::string(name))) chains.emplace(name);
    }
    pos = end + 1;
  }
  return chains;
}

std::vector<IpAddress> local_addresses() {
  std::vector<IpAddress> out;
  auto netlink = netmodel::Netlink::open();
  for (const auto& address : netlink.addresses(0, netmodel::Family::v4)) {
    out.push_back(address.prefix.address());
  }
  return out;
}

std::unique_ptr<Proxier> make_proxier(const ProxyConfig& config) {
  return make_proxier(config, make_iptables(config.iptables_backend), make_conntrack(),
                      local_addresses);
}

std::unique_ptr<Proxier> make_proxier(const ProxyConfig& config, std::unique_ptr<Iptables> iptables,
                                      std::unique_ptr<Conntrack> conntrack,
                                      AddressSource addresses) {
  return std::make_unique<IptablesProxier>(config, std::move(iptables), std::move(conntrack),
                                           std::move(addresses));
}

}  // namespace flatnet::proxy::iptables
