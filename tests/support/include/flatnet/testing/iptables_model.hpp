#pragma once

// An in-memory iptables (tables filter and nat) that applies iptables-restore input and single
// iptables commands with the kernel's semantics, and a tracer that walks a packet through it hook
// by hook. Tests use it to prove what a rendered ruleset does to a packet, the way kube-proxy's
// proxier_test.go does with its packet-flow tables (tracePacket), but following every statistic
// branch with its probability and keeping xt_recent state between packets.
//
// Rules are parsed in full: a match or target the model does not know is an error, so a renderer
// that emits something new fails loudly instead of being traced wrongly.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "flatnet/netmodel/address.hpp"
#include "flatnet/netmodel/k8s.hpp"

namespace flatnet::testing {

using netmodel::IpAddress;
using netmodel::IpPrefix;
using netmodel::Protocol;

// A restore input or command the model refuses, as iptables-restore would: "line 12: chain
// \"KUBE-SVC-X\" does not exist (jump target)". Nothing of the transaction was applied.
class IptablesError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// --- rules
// -----------------------------------------------------------------------------------------

struct AddressMatch {
  IpPrefix prefix{};
  bool negated = false;
  bool matches(const IpAddress& address) const { return prefix.contains(address) != negated; }
};

struct InterfaceMatch {
  std::string name{};  // a trailing '+' matches every name with that prefix
  bool negated = false;
  bool matches(const std::string& interface_name) const;
};

struct PortRange {
  std::uint16_t first = 0;
  std::uint16_t last = 0;
};

// Connection tracking states (-m conntrack --ctstate): bit flags.
enum CtStateBits : unsigned {
  kCtInvalid = 1u << 0,
  kCtNew = 1u << 1,
  kCtEstablished = 1u << 2,
  kCtRelated = 1u << 3,
  kCtUntracked = 1u << 4,
  kCtSnat = 1u << 5,
  kCtDnat = 1u << 6,
};

// One match of a rule (-m NAME and its options, or an implicit tcp/udp match).
struct Match {
  enum class Kind { comment, port, multiport, addrtype, statistic, recent, mark, conntrack };
  Kind kind = Kind::comment;
  std::string module{};  // the -m name as written ("tcp", "udp", "multiport", ...)
  // comment
  std::string comment{};
  // port (tcp/udp) and multiport: empty lists match every port
  std::vector<PortRange> source_ports{};
  bool source_ports_negated = false;
  std::vector<PortRange> destination_ports{};
  bool destination_ports_negated = false;
  // addrtype: only LOCAL is modelled
  std::optional<bool> source_local{};  // --src-type LOCAL: true; ! --src-type LOCAL: false
  std::optional<bool> destination_local{};
  // statistic --mode random
  double probability = 1.0;
  // recent
  enum class RecentCommand { none, set, rcheck, update, remove };
  std::string recent_name = "DEFAULT";
  RecentCommand recent_command = RecentCommand::none;
  std::optional<std::uint32_t> recent_seconds{};
  bool recent_reap = false;
  bool recent_destination = false;  // --rdest; --rsource is the default
  IpAddress recent_mask = IpAddress::v4(0xffffffffu);
  bool recent_negated = false;
  // mark
  std::uint32_t mark_value = 0;
  std::uint32_t mark_mask = 0xffffffffu;
  bool mark_negated = false;
  // conntrack --ctstate
  unsigned ct_states = 0;
  bool ct_negated = false;
};

struct Target {
  enum class Kind { none, jump, go_to, accept, drop, reject, ret, dnat, snat, masquerade, mark };
  Kind kind = Kind::none;
  std::string chain{};         // jump, go_to
  std::string reject_with{};   // reject; "" means icmp-port-unreachable
  IpAddress nat_address{};     // dnat, snat
  std::uint16_t nat_port = 0;  // dnat, snat; 0 keeps the port
  bool random_fully = false;   // masquerade
  // mark: new = (old & and_mask) ^ xor_value  (every MARK form reduces to this)
  std::uint32_t mark_and = 0xffffffffu;
  std::uint32_t mark_xor = 0;
  bool terminal() const;
};

struct Rule {
  // The rule as given, without the command and chain: {"-p", "tcp", "-m", "tcp", "--dport", "80",
  // "-j", "KUBE-SVC-X"}. Two rules are the same rule (for -C and -D) when these are equal.
  std::vector<std::string> args{};
  std::optional<std::pair<Protocol, bool>> protocol{};  // protocol, negated
  std::optional<AddressMatch> source{};
  std::optional<AddressMatch> destination{};
  std::optional<InterfaceMatch> in_interface{};
  std::optional<InterfaceMatch> out_interface{};
  std::vector<Match> matches{};
  Target target{};

  // The args joined as iptables-save prints them, strings with spaces in double quotes.
  std::string text() const;
  // The comment of the first comment match, or "".
  std::string comment() const;

  friend bool operator==(const Rule& a, const Rule& b) { return a.args == b.args; }
};

// Parses a rule specification (everything after "-A CHAIN"). Throws IptablesError naming the
// token for an unknown option, match or target, or a value that does not parse.
Rule parse_rule(const std::vector<std::string>& args);

// Splits a line as iptables-restore does: whitespace separates tokens, double quotes group
// (with \" and \\ escapes inside). Throws IptablesError for an unterminated quote.
std::vector<std::string> split_restore_line(std::string_view line);

// --- the model
// -------------------------------------------------------------------------------------

struct Chain {
  std::string name{};
  bool builtin = false;
  std::string policy = "-";  // ACCEPT or DROP for a built-in chain, "-" for a user chain
  std::vector<Rule> rules{};
  friend bool operator==(const Chain&, const Chain&) = default;
};

struct Table {
  std::string name{};
  std::vector<std::string> builtin_order{};  // kernel order of the built-in chains
  std::map<std::string, Chain> chains{};
  const Chain* find(const std::string& chain) const;
  friend bool operator==(const Table&, const Table&) = default;
};

class IptablesModel {
 public:
  // filter (INPUT FORWARD OUTPUT) and nat (PREROUTING INPUT OUTPUT POSTROUTING), empty, every
  // policy ACCEPT.
  IptablesModel();

  // Applies iptables-restore input in one transaction: on any error nothing changes and the
  // IptablesError names the line ("line 7: ..."). Without `noflush` every table the input names
  // is emptied first (rules flushed, user chains deleted), as iptables-restore does. With it, a
  // ":CHAIN - [0:0]" line creates a user chain or flushes an existing one, and a built-in
  // chain's line only sets its policy. Tables must end with COMMIT. Jumps must name a chain that
  // exists at that line; rule loops are refused at the end (the kernel's ELOOP).
  void apply_restore(std::string_view text, bool noflush);

  // One iptables command on `table`: args as passed to iptables after "-t TABLE", e.g.
  // {"-C", "INPUT", "-m", "comment", ...}. -C returns whether the rule exists; -A, -I [n], -D,
  // -N, -X and -F return true. Errors (missing chain or rule) throw IptablesError.
  bool apply_command(const std::string& table, const std::vector<std::string>& args);

  // iptables-save-like text of both tables: built-in chains in kernel order, then user chains
  // sorted by name, then the rules of each chain in the same order. Counters are always [0:0].
  std::string save() const;
  // One table only ("nat" or "filter").
  std::string save(const std::string& table) const;

  const Table& table(const std::string& name) const;
  const Chain* find_chain(const std::string& table, const std::string& chain) const;
  // How many rules in `table` jump or go to `chain`.
  std::size_t references(const std::string& table, const std::string& chain) const;

  friend bool operator==(const IptablesModel&, const IptablesModel&) = default;

 private:
  std::map<std::string, Table> tables_;
};

// --- the tracer
// ------------------------------------------------------------------------------------

// Where a packet enters the node: from a process on the node itself (nat OUTPUT, filter OUTPUT,
// nat POSTROUTING, and filter INPUT and nat INPUT when it stays on the node), or arriving from a
// pod or another host (nat PREROUTING, then filter INPUT and nat INPUT for the node itself, or
// filter FORWARD and nat POSTROUTING).
enum class Origin { local_process, arriving };

struct Packet {
  IpAddress source{};
  Protocol protocol = Protocol::tcp;
  IpAddress destination{};
  std::uint16_t destination_port = 0;
  std::uint16_t source_port = 40000;
  Origin origin = Origin::arriving;
  std::string in_interface{};   // seen by -i in PREROUTING, INPUT and FORWARD for arriving packets
  std::string out_interface{};  // seen by -o in OUTPUT, FORWARD and POSTROUTING
};

// xt_recent's lists: name -> address -> time of the last --set or --update (seconds).
using RecentLists = std::map<std::string, std::map<IpAddress, double>>;

struct TraceEnv {
  // The node's own addresses (addrtype LOCAL, and local delivery after routing). 127.0.0.0/8 is
  // always local.
  std::set<IpAddress> local_addresses{};
  // The packet's conntrack state before NAT; the nat table sees only NEW packets (later packets
  // of a connection reuse its NAT binding, which the model does not keep: nat chains are skipped).
  unsigned ct_state = kCtNew;
  std::uint32_t mark = 0;
  RecentLists recent{};
  double now = 0;  // seconds, compared with recent --seconds
};

enum class Verdict { accept, drop, reject };
std::string to_string(Verdict verdict);

// One way the packet can go (a statistic match splits the walk in two).
struct Outcome {
  double probability = 1.0;
  Verdict verdict = Verdict::accept;
  std::string reject_with{};
  IpAddress destination{};  // after DNAT
  std::uint16_t destination_port = 0;
  bool dnat = false;
  bool masqueraded = false;  // MASQUERADE or SNAT in POSTROUTING/INPUT
  std::optional<IpAddress> snat_source{};
  bool local_delivery = false;  // routed to the node itself
  std::uint32_t mark = 0;
  std::vector<std::string> chains{};  // "nat/PREROUTING", "nat/KUBE-SERVICES", ...
  std::vector<std::string> rules{};   // every rule that matched: "nat/KUBE-SERVICES: -d ..."
  RecentLists recent{};               // the xt_recent lists after this packet

  // "10.244.1.5:8080"
  std::string endpoint() const;
};

struct TraceResult {
  std::vector<Outcome> outcomes{};

  // Destinations of accepted outcomes ("ip:port"), with the probability of reaching each.
  std::map<std::string, double> endpoint_probabilities() const;
  std::set<std::string> endpoints() const;
  double probability(Verdict verdict) const;
  bool any_masqueraded() const;
  bool all_masqueraded() const;  // every accepted outcome
  bool all(Verdict verdict) const;
  bool any(Verdict verdict) const;
  double total_probability() const;
  // Every outcome with its chains and rules, for failure messages.
  std::string describe() const;
};

// Walks `packet` through `model`. Throws IptablesError when the rules do something the kernel
// would refuse at that hook (DNAT in POSTROUTING, MASQUERADE outside it).
TraceResult trace(const IptablesModel& model, const Packet& packet, const TraceEnv& env);

}  // namespace flatnet::testing
