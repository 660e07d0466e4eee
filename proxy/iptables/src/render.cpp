#include "flatnet/proxy/iptables/render.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <string_view>
#include <unordered_map>

#include "flatnet/proxy/iptables/chains.hpp"

namespace flatnet::proxy::iptables {
namespace {

using netmodel::IpAddress;
using netmodel::IpPrefix;

// Past this many endpoints kube-proxy drops the comments of the per-endpoint rules, which makes
// the ruleset 40% smaller (largeClusterEndpointsThreshold).
constexpr std::size_t kLargeClusterEndpoints = 1000;

constexpr std::string_view kNodePortsComment =
    "\"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"";

// --- text pieces, appended without allocating ---------------------------------------------------

struct Num {
  std::uint64_t value;
};
struct Ip {  // "10.0.0.1"
  const IpAddress& address;
};
struct Host {  // "10.0.0.1/32", as iptables-save prints a single address
  const IpAddress& address;
};
struct Cidr {  // "10.0.0.0/8"
  const IpPrefix& prefix;
};

void put(std::string& out, std::string_view text) {
  out.append(text);
}
void put(std::string& out, char c) {
  out.push_back(c);
}
void put(std::string& out, Num n) {
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, n.value).ptr;
  out.append(digits, end);
}
void put(std::string& out, Ip ip) {
  if (!ip.address.is_v4()) {
    out.append(ip.address.to_string());
    return;
  }
  const auto bytes = ip.address.bytes();
  for (std::size_t i = 0; i < 4; ++i) {
    if (i > 0) out.push_back('.');
    put(out, Num{bytes[i]});
  }
}
void put(std::string& out, Host host) {
  put(out, Ip{host.address});
  out.append(host.address.is_v4() ? "/32" : "/128");
}
void put(std::string& out, Cidr cidr) {
  put(out, Ip{cidr.prefix.address()});
  out.push_back('/');
  put(out, Num{cidr.prefix.length()});
}

// --- chain names --------------------------------------------------------------------------------

// A chain name held inline: the longest is "KUBE-SVC-" plus 16 characters.
class ChainName {
 public:
  ChainName() = default;
  ChainName(std::string_view prefix, std::string_view hash) {
    size_ = static_cast<std::uint8_t>(prefix.size() + hash.size());
    auto* end = std::copy(prefix.begin(), prefix.end(), data_.data());
    std::copy(hash.begin(), hash.end(), end);
  }
  std::string_view view() const { return {data_.data(), size_}; }
  operator std::string_view() const { return view(); }

 private:
  std::array<char, 32> data_{};
  std::uint8_t size_ = 0;
};

void put(std::string& out, const ChainName& chain) {
  out.append(chain.view());
}

template <typename... Parts>
void line_part(std::string& out, const Parts&... parts) {
  (put(out, parts), ...);
}

template <typename... Parts>
void line(std::string& out, const Parts&... parts) {
  (put(out, parts), ...);
  out.push_back('\n');
}

struct TransparentHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view text) const noexcept {
    return std::hash<std::string_view>{}(text);
  }
};

// SHA-256 costs more than writing the rest of a rule, and the same service ports and endpoints
// come back sync after sync: remember each hash (per thread, so render needs no lock).
class HashCache {
 public:
  std::string_view get(std::string_view text) {
    if (auto it = hashes_.find(text); it != hashes_.end()) {
      return {it->second.data(), kChainHashLength};
    }
    std::array<char, kChainHashLength> hash{};
    write_chain_hash(text, hash.data());
    auto [it, inserted] = hashes_.emplace(std::string(text), hash);
    return {it->second.data(), kChainHashLength};
  }
  // Called between renders only: views handed out stay valid during one render.
  void trim(std::size_t wanted) {
    if (hashes_.size() > 2 * wanted + 1024) hashes_.clear();
  }

 private:
  std::unordered_map<std::string, std::array<char, kChainHashLength>, TransparentHash,
                     std::equal_to<>>
      hashes_;
};

// One line of entry_text: [begin, end) and the chain it jumps to.
struct EntryRule {
  ChainName target;
  std::size_t begin, end;
};

// Buffers reused from one render to the next (kube-proxy keeps its line buffers the same way).
struct Scratch {
  HashCache hashes;
  std::string filter_rules;
  std::string nat_chains;
  std::string nat_rules;
  // The nat rules of KUBE-SERVICES and KUBE-NODEPORTS that jump to a service's chain, written
  // out sorted by that chain (see Renderer::write_entry_rules).
  std::string entry_text;
  std::vector<EntryRule> entry_rules;
  std::string stale;                           // "-X" lines
  std::string key;                             // the text hashed into an endpoint chain name
  std::vector<std::string> probabilities{""};  // [n]: "1/n", as kube-proxy precomputes them
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// kube-proxy's computeProbability: fmt.Sprintf("%0.10f", 1.0/float64(n)).
std::string probability_text(std::size_t n) {
  char text[32];
  const int size = std::snprintf(text, sizeof text, "%0.10f", 1.0 / static_cast<double>(n));
  return std::string(text, static_cast<std::size_t>(size));
}

std::string_view protocol_text(Protocol protocol) {
  return protocol == Protocol::tcp ? "tcp" : "udp";
}

// Where traffic of one kind goes: the chain in nat, or the verdict in filter when there is no
// endpoint for it.
struct FilterVerdict {
  std::string_view target;  // "REJECT" or "DROP"
  std::string_view reason;  // "has no endpoints" or "has no local endpoints"
};

class Renderer {
 public:
  Renderer(const ProxyState& state, const RenderOptions& options,
           const std::set<ServicePortName>* changed, const std::set<std::string>& previous,
           const std::string* previous_entries, Scratch& scratch, RenderResult& result)
      : state_(state),
        options_(options),
        changed_(changed),
        previous_(previous),
        previous_entries_(previous_entries),
        s_(scratch),
        result_(result) {}

  void run();

 private:
  void write_service(const ServicePortName& name, const ServicePortInfo& info);
  // An endpoint the service port may reach and its chain, computed once per render.
  struct Target {
    const EndpointInfo* endpoint;
    ChainName chain;
    bool cluster;  // in the Cluster-policy list
    bool local;    // in the Local-policy list
  };
  void write_endpoint_jumps(const ChainName& chain, const ServicePortInfo& info, bool local,
                            std::size_t count);
  ChainName endpoint_chain(const EndpointInfo& endpoint);
  void declare_nat(std::string_view chain) { line(s_.nat_chains, ':', chain, " - [0:0]"); }
  // A nat rule of KUBE-SERVICES or KUBE-NODEPORTS jumping to `target`.
  template <typename... Parts>
  void entry_rule(std::string_view chain, const ChainName& target, const Parts&... parts) {
    const std::size_t begin = s_.entry_text.size();
    line(s_.entry_text, "-A ", chain, parts..., " -j ", target);
    s_.entry_rules.push_back({target, begin, s_.entry_text.size()});
  }
  void write_entry_rules();
  // The start of an "-A" line, counted.
  std::string& rule(std::string& out) {
    ++result_.rules;
    out.append("-A ");
    return out;
  }
  std::string_view probability(std::size_t n) {
    auto& cache = s_.probabilities;
    while (cache.size() <= n)
      cache.push_back(probability_text(cache.size()));
    return cache[n];
  }
  // Appends `-m comment --comment "<text>"` unless in large-cluster mode.
  void endpoint_comment(std::string& out, std::string_view text) {
    if (large_cluster_) return;
    line_part(out, " -m comment --comment \"", text, '"');
  }

  const ProxyState& state_;
  const RenderOptions& options_;
  const std::set<ServicePortName>* changed_;
  const std::set<std::string>& previous_;
  const std::string* previous_entries_;
  Scratch& s_;
  RenderResult& result_;
  bool large_cluster_ = false;
  // Every per-service chain wanted, gathered here and turned into result_.nat_chains once at
  // the end (sorted first: inserting 10^5 names one by one into a std::set costs more than
  // rendering them).
  std::vector<ChainName> wanted_;
  std::vector<Target> targets_;  // of the service port being written
  std::size_t entry_count_ = 0;  // lines in result_.entry_rules

  // The service port being written.
  std::string name_text_;  // "ns/svc:port"
  std::string hash_key_;   // "ns/svc:porttcp"
};

void Renderer::run() {
  std::size_t total_endpoints = 0;
  for (const auto& [name, info] : state_.services) {
    total_endpoints += state_.endpoints_of(name).size();
  }
  large_cluster_ = total_endpoints > kLargeClusterEndpoints;
  s_.hashes.trim(state_.services.size() + total_endpoints);

  s_.filter_rules.clear();
  s_.nat_chains.clear();
  s_.nat_rules.clear();
  s_.entry_text.clear();
  s_.entry_rules.clear();
  // Roughly what each line costs, so that the buffers grow at most once.
  const std::size_t services = state_.services.size();
  s_.filter_rules.reserve(1024 + services * 160);
  s_.nat_chains.reserve(256 + (services * 3 + total_endpoints) * 40);
  s_.nat_rules.reserve(1024 + services * 700 + total_endpoints * 400);

  const unsigned bit = options_.masquerade_bit & 31u;
  char mark_text[16];
  const int mark_size = std::snprintf(mark_text, sizeof mark_text, "0x%x", 1u << bit);
  const std::string_view mark(mark_text, static_cast<std::size_t>(mark_size));

  // Declared at the end: KUBE-SERVICES and KUBE-NODEPORTS only when they are written.
  for (const auto chain : {kServicesChain, kNodePortsChain, kPostroutingChain, kMarkMasqChain}) {
    result_.nat_chains.emplace(chain);
  }

  // Masquerade what KUBE-MARK-MASQ marked, once: the mark is cleared so that a packet that
  // traverses the stack again is not masqueraded twice.
  line(rule(s_.nat_rules), kPostroutingChain, " -m mark ! --mark ", mark, '/', mark, " -j RETURN");
  line(rule(s_.nat_rules), kPostroutingChain, " -j MARK --xor-mark ", mark);
  line(rule(s_.nat_rules), kPostroutingChain,
       " -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE "
       "--random-fully");
  line(rule(s_.nat_rules), kMarkMasqChain, " -j MARK --or-mark ", mark);

  wanted_.clear();
  wanted_.reserve(services * 3 + total_endpoints);
  for (const auto& [name, info] : state_.services)
    write_service(name, info);
  std::sort(wanted_.begin(), wanted_.end(),
            [](const ChainName& a, const ChainName& b) { return a.view() < b.view(); });
  for (const auto& chain : wanted_) {
    result_.nat_chains.emplace_hint(result_.nat_chains.end(), chain.view());
  }

  write_entry_rules();

  // Chains that existed and are no longer wanted: a chain line flushes each, then "-X" deletes
  // it (flushing all first lets stale chains that jump to each other go in one transaction).
  s_.stale.clear();
  for (const auto& chain : previous_) {
    if (!is_service_chain(chain) || result_.nat_chains.contains(chain)) continue;
    declare_nat(chain);
    line(s_.stale, "-X ", chain);
  }

  // Drop packets conntrack calls INVALID: they would otherwise reach a pod un-NATed and be
  // answered with a reset (https://github.com/kubernetes/kubernetes/issues/74839).
  line(rule(s_.filter_rules), kForwardChain, " -m conntrack --ctstate INVALID -j DROP");
  line(rule(s_.filter_rules), kForwardChain,
       " -m comment --comment \"kubernetes forwarding rules\" -m mark --mark ", mark, '/', mark,
       " -j ACCEPT");
  line(rule(s_.filter_rules), kForwardChain,
       " -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate "
       "RELATED,ESTABLISHED -j ACCEPT");

  auto& text = result_.text;
  constexpr std::string_view kFilterChains[] = {
      kServicesChain, kExternalServicesChain, kForwardChain, kNodePortsChain, kProxyFirewallChain};
  text.reserve(256 + s_.filter_rules.size() + s_.nat_chains.size() + s_.nat_rules.size() +
               result_.entry_rules.size() + s_.stale.size());
  text.append("*filter\n");
  for (const auto chain : kFilterChains) {
    line(text, ':', chain, " - [0:0]");
    result_.filter_chains.emplace(chain);
  }
  text.append(s_.filter_rules);
  text.append("COMMIT\n*nat\n");
  // A partial sync leaves KUBE-SERVICES and KUBE-NODEPORTS alone when their rules are the ones
  // the kernel has: with 10,000 services they are most of what such a sync would write.
  const bool write_entries =
      !changed_ || !previous_entries_ || *previous_entries_ != result_.entry_rules;
  if (write_entries) {
    line(text, ':', kServicesChain, " - [0:0]");
    line(text, ':', kNodePortsChain, " - [0:0]");
    result_.rules += entry_count_;
  }
  line(text, ':', kPostroutingChain, " - [0:0]");
  line(text, ':', kMarkMasqChain, " - [0:0]");
  text.append(s_.nat_chains);
  text.append(s_.nat_rules);
  if (write_entries) text.append(result_.entry_rules);
  text.append(s_.stale);
  text.append("COMMIT\n");
  result_.wrote_entry_rules = write_entries;
}

// The rules that send traffic into a service match distinct destinations (address, protocol,
// port), so their order does not matter; kube-proxy writes them in map order. Here they are
// sorted by the chain they jump to, last name first. iptables-nft 1.8.x restoring with --noflush
// keeps every chain name a transaction mentions in a sorted linked list searched from its head
// (see runner.hpp); names that arrive in descending order are each found at the head, so a
// partial sync that rewrites these chains for 10,000 services costs it 10^5 steps, not 10^8.
void Renderer::write_entry_rules() {
  auto& rules = s_.entry_rules;
  std::stable_sort(rules.begin(), rules.end(), [](const EntryRule& a, const EntryRule& b) {
    return a.target.view() > b.target.view();
  });
  auto& out = result_.entry_rules;
  out.reserve(s_.entry_text.size() + 256);
  for (const auto& entry : rules) {
    out.append(s_.entry_text, entry.begin, entry.end - entry.begin);
  }
  entry_count_ = rules.size();

  // The jump to KUBE-NODEPORTS must stay the last rule of KUBE-SERVICES.
  const auto last = [&](const auto&... parts) {
    ++entry_count_;
    line(out, "-A ", kServicesChain, parts..., " -j ", kNodePortsChain);
  };
  if (!options_.node_ports_restricted && options_.node_port_addresses.empty()) {
    last(" ! -d 127.0.0.0/8 -m comment --comment ", kNodePortsComment,
         " -m addrtype --dst-type LOCAL");
  } else {
    for (const auto& address : options_.node_port_addresses) {
      // Node ports on loopback need route_localnet, which flatnet-proxy does not set.
      if (address.is_loopback() || !address.is_v4()) continue;
      last(" -d ", Host{address}, " -m comment --comment ", kNodePortsComment);
    }
  }
}

ChainName Renderer::endpoint_chain(const EndpointInfo& endpoint) {
  s_.key.assign(hash_key_);
  put(s_.key, Ip{endpoint.ip});
  s_.key.push_back(':');
  put(s_.key, Num{endpoint.port});
  return ChainName(kEndpointChainPrefix, s_.hashes.get(s_.key));
}

void Renderer::write_service(const ServicePortName& name, const ServicePortInfo& info) {
  name_text_ = name.to_string();
  hash_key_ = name.hash_key();
  const std::string_view hash = s_.hashes.get(hash_key_);
  const ChainName svc(kServiceChainPrefix, hash);
  const ChainName svl(kLocalChainPrefix, hash);
  const ChainName ext(kExternalChainPrefix, hash);
  const std::string_view proto = protocol_text(info.protocol);
  const std::string_view name_text = name_text_;

  const auto& endpoints = state_.endpoints_of(name);
  const UsableEndpoints usable = usable_endpoints(info, endpoints);

  const bool has_endpoints = usable.any();
  const bool uses_cluster_chain = !usable.cluster.empty();
  const bool uses_local_chain = !usable.local.empty();
  const ChainName& internal_chain = info.internal_policy_local ? svl : svc;
  const bool has_internal = has_endpoints && (!info.internal_policy_local || uses_local_chain);
  const ChainName& external_policy_chain = info.external_policy_local ? svl : svc;
  const bool has_external = has_endpoints && (!info.external_policy_local || uses_local_chain);
  // Built whenever there are endpoints anywhere: the short-circuit rules for traffic from this
  // node and its pods apply even when no local endpoint takes external traffic.
  const bool uses_ext_chain = has_endpoints && info.externally_accessible();

  FilterVerdict internal_verdict{};
  FilterVerdict external_verdict{};
  if (!has_endpoints) {
    internal_verdict = external_verdict = {"REJECT", " has no endpoints"};
  } else {
    if (!has_internal) internal_verdict = {"DROP", " has no local endpoints"};
    if (!has_external) external_verdict = {"DROP", " has no local endpoints"};
  }

  auto& filter = s_.filter_rules;
  auto& nat = s_.nat_rules;

  // Traffic to the cluster IP.
  if (has_internal) {
    entry_rule(kServicesChain, internal_chain, " -d ", Host{info.cluster_ip}, " -p ", proto,
               " -m comment --comment \"", name_text, " cluster IP\" -m ", proto, " --dport ",
               Num{info.port});
  } else {
    line(rule(filter), kServicesChain, " -d ", Host{info.cluster_ip}, " -p ", proto,
         " -m comment --comment \"", name_text, internal_verdict.reason, "\" -m ", proto,
         " --dport ", Num{info.port}, " -j ", internal_verdict.target);
  }

  // External IPs and load-balancer IPs go to KUBE-EXT; without endpoints for them, filter
  // rejects or drops what KUBE-EXT did not short-circuit.
  const auto external_destination = [&](const IpAddress& address, std::string_view what) {
    if (has_endpoints) {
      entry_rule(kServicesChain, ext, " -d ", Host{address}, " -p ", proto,
                 " -m comment --comment \"", name_text, what, "\" -m ", proto, " --dport ",
                 Num{info.port});
    }
    if (!has_external) {
      line(rule(filter), kExternalServicesChain, " -d ", Host{address}, " -p ", proto,
           " -m comment --comment \"", name_text, external_verdict.reason, "\" -m ", proto,
           " --dport ", Num{info.port}, " -j ", external_verdict.target);
    }
  };
  for (const auto& address : info.external_ips)
    external_destination(address, " external IP");
  for (const auto& address : info.load_balancer_ips) {
    external_destination(address, " loadbalancer IP");
  }

  if (info.node_port != 0) {
    if (has_endpoints) {
      entry_rule(kNodePortsChain, ext, " -p ", proto, " -m comment --comment \"", name_text,
                 "\" -m ", proto, " --dport ", Num{info.node_port});
    }
    if (!has_external) {
      line(rule(filter), kExternalServicesChain, " -p ", proto, " -m comment --comment \"",
           name_text, external_verdict.reason, "\" -m addrtype --dst-type LOCAL -m ", proto,
           " --dport ", Num{info.node_port}, " -j ", external_verdict.target);
    }
  }

  // The health check node port answers whether or not this node has local endpoints.
  if (info.health_check_node_port != 0) {
    line(rule(filter), kNodePortsChain, " -p tcp -m comment --comment \"", name_text,
         " health check node port\" -m tcp --dport ", Num{info.health_check_node_port},
         " -j ACCEPT");
  }

  // The per-service chains this service port wants, all recorded as ours; written unless this
  // is a partial render, the service port did not change and its chains all exist already.
  const bool partial = changed_ != nullptr;
  bool write = !partial || changed_->contains(name);
  const auto want = [&](const ChainName& chain) {
    wanted_.push_back(chain);
    if (!write && !previous_.contains(std::string(chain.view()))) write = true;
  };
  if (uses_ext_chain) want(ext);
  if (uses_cluster_chain) want(svc);
  if (uses_local_chain) want(svl);
  // Every endpoint a packet handled on this node may reach (kube-proxy's
  // allLocallyReachableEndpoints): the union of the two lists, which usable_endpoints filters
  // from `endpoints` keeping its order.
  targets_.clear();
  {
    std::size_t in_cluster = 0, in_local = 0;
    for (const auto& endpoint : endpoints) {
      const bool cluster =
          in_cluster < usable.cluster.size() && usable.cluster[in_cluster] == endpoint;
      const bool local = in_local < usable.local.size() && usable.local[in_local] == endpoint;
      in_cluster += cluster;
      in_local += local;
      if (!cluster && !local) continue;
      targets_.push_back({&endpoint, endpoint_chain(endpoint), cluster, local});
      want(targets_.back().chain);
    }
  }
  if (!write) return;

  // Masquerade traffic to the cluster IP that does not come from a pod (or all of it).
  if (has_internal && (options_.masquerade_all || options_.cluster_cidr)) {
    auto& out = rule(nat);
    put(out, internal_chain.view());
    if (!options_.masquerade_all) line_part(out, " ! -s ", Cidr{*options_.cluster_cidr});
    line(out, " -d ", Host{info.cluster_ip}, " -p ", proto, " -m comment --comment \"", name_text,
         " cluster IP\" -m ", proto, " --dport ", Num{info.port}, " -j ", kMarkMasqChain);
  }

  if (uses_ext_chain) {
    declare_nat(ext);
    if (!info.external_policy_local) {
      // The endpoint may be on another node: masquerade so that replies come back here.
      line(rule(nat), ext, " -m comment --comment \"masquerade traffic for ", name_text,
           " external destinations\" -j ", kMarkMasqChain);
    } else {
      // Local policy keeps the client's address. Pods of this node reaching an external
      // destination are treated as if they went out to a load balancer and came back: any
      // endpoint will do.
      if (options_.cluster_cidr) {
        line(rule(nat), ext, " -s ", Cidr{*options_.cluster_cidr},
             " -m comment --comment \"pod traffic for ", name_text, " external destinations\" -j ",
             svc);
      }
      // The node itself: its source address is a local one, which the reply could not reach
      // on another node, so masquerade it and let it use any endpoint.
      line(rule(nat), ext, " -m comment --comment \"masquerade LOCAL traffic for ", name_text,
           " external destinations\" -m addrtype --src-type LOCAL -j ", kMarkMasqChain);
      line(rule(nat), ext, " -m comment --comment \"route LOCAL traffic for ", name_text,
           " external destinations\" -m addrtype --src-type LOCAL -j ", svc);
    }
    if (has_external) line(rule(nat), ext, " -j ", external_policy_chain);
  }

  if (uses_cluster_chain) {
    declare_nat(svc);
    write_endpoint_jumps(svc, info, false, usable.cluster.size());
  }
  if (uses_local_chain) {
    declare_nat(svl);
    write_endpoint_jumps(svl, info, true, usable.local.size());
  }

  for (const auto& target : targets_) {
    const EndpointInfo& endpoint = *target.endpoint;
    const ChainName& sep = target.chain;
    declare_nat(sep);
    // Hairpin: a pod that reaches itself through the service must see the node as the
    // source, or it would answer itself directly.
    auto& hairpin = rule(nat);
    put(hairpin, sep);
    line_part(hairpin, " -s ", Host{endpoint.ip});
    endpoint_comment(hairpin, name_text);
    line(hairpin, " -j ", kMarkMasqChain);

    auto& dnat = rule(nat);
    line_part(dnat, sep, " -p ", proto);
    endpoint_comment(dnat, name_text);
    if (info.session_affinity) line_part(dnat, " -m recent --name ", sep, " --set");
    line(dnat, " -m ", proto, " -j DNAT --to-destination ", Ip{endpoint.ip}, ':',
         Num{endpoint.port});
  }
}

void Renderer::write_endpoint_jumps(const ChainName& chain, const ServicePortInfo& info, bool local,
                                    std::size_t count) {
  auto& nat = s_.nat_rules;
  const auto start = [&](const EndpointInfo& endpoint) -> std::string& {
    auto& out = rule(nat);
    put(out, chain);
    if (!large_cluster_) {
      line_part(out, " -m comment --comment \"", std::string_view(name_text_), " -> ",
                Ip{endpoint.ip}, ':', Num{endpoint.port}, '"');
    }
    return out;
  };
  // Client affinity first: a client seen recently goes back to the same endpoint.
  if (info.session_affinity) {
    for (const auto& target : targets_) {
      if (!(local ? target.local : target.cluster)) continue;
      line(start(*target.endpoint), " -m recent --name ", target.chain, " --rcheck --seconds ",
           Num{info.affinity_timeout_seconds}, " --reap -j ", target.chain);
    }
  }
  // Then a uniform choice: rule i of n matches with probability 1/(n-i), the last always.
  std::size_t i = 0;
  for (const auto& target : targets_) {
    if (!(local ? target.local : target.cluster)) continue;
    auto& out = start(*target.endpoint);
    if (i + 1 < count) {
      out.append(" -m statistic --mode random --probability ");
      out.append(probability(count - i));
    }
    line(out, " -j ", target.chain);
    ++i;
  }
}

}  // namespace

RenderResult render(const ProxyState& state, const RenderOptions& options,
                    const std::set<ServicePortName>* changed,
                    const std::set<std::string>& previous_nat_chains,
                    const std::string* previous_entry_rules) {
  RenderResult result;
  result.partial = changed != nullptr;
  Renderer(state, options, changed, previous_nat_chains, previous_entry_rules, scratch(), result)
      .run();
  return result;
}

const std::vector<JumpRule>& jump_rules() {
  static const std::vector<JumpRule> rules = [] {
    struct Jump {
      std::string_view table;
      std::string_view target;
      std::string_view chain;
      std::string_view comment;
      bool new_only;  // "-m conntrack --ctstate NEW"
    };
    // kube-proxy's iptablesJumpChains, in its order.
    constexpr Jump kJumps[] = {
        {"filter", kExternalServicesChain, "INPUT", "kubernetes externally-visible service portals",
         true},
        {"filter", kExternalServicesChain, "FORWARD",
         "kubernetes externally-visible service portals", true},
        {"filter", kNodePortsChain, "INPUT", "kubernetes health check service ports", false},
        {"filter", kServicesChain, "FORWARD", "kubernetes service portals", true},
        {"filter", kServicesChain, "OUTPUT", "kubernetes service portals", true},
        {"filter", kForwardChain, "FORWARD", "kubernetes forwarding rules", false},
        {"filter", kProxyFirewallChain, "INPUT", "kubernetes load balancer firewall", true},
        {"filter", kProxyFirewallChain, "OUTPUT", "kubernetes load balancer firewall", true},
        {"filter", kProxyFirewallChain, "FORWARD", "kubernetes load balancer firewall", true},
        {"nat", kServicesChain, "OUTPUT", "kubernetes service portals", false},
        {"nat", kServicesChain, "PREROUTING", "kubernetes service portals", false},
        {"nat", kPostroutingChain, "POSTROUTING", "kubernetes postrouting rules", false},
    };
    std::vector<JumpRule> out;
    for (const auto& jump : kJumps) {
      JumpRule rule{std::string(jump.table), std::string(jump.chain), {}};
      if (jump.new_only) rule.args = {"-m", "conntrack", "--ctstate", "NEW"};
      for (const std::string_view arg :
           {std::string_view("-m"), std::string_view("comment"), std::string_view("--comment"),
            jump.comment, std::string_view("-j"), jump.target}) {
        rule.args.emplace_back(arg);
      }
      out.push_back(std::move(rule));
    }
    return out;
  }();
  return rules;
}

}  // namespace flatnet::proxy::iptables
