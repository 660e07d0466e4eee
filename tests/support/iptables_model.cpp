#include "flatnet/testing/iptables_model.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>
#include <sstream>
#include <utility>

namespace flatnet::testing {
namespace {

constexpr std::size_t kMaxChainNameLength = 28;  // XT_EXTENSION_MAXNAMELEN - 1
constexpr int kMaxJumpDepth = 64;

[[noreturn]] void fail(const std::string& message) {
  throw IptablesError(message);
}

std::string quoted(std::string_view text) {
  return "\"" + std::string(text) + "\"";
}

std::string lower_protocol(Protocol protocol) {
  return protocol == Protocol::tcp ? "tcp" : "udp";
}

bool is_builtin_target(std::string_view name) {
  return name == "ACCEPT" || name == "DROP" || name == "RETURN" || name == "REJECT" ||
         name == "DNAT" || name == "SNAT" || name == "MASQUERADE" || name == "MARK" ||
         name == "QUEUE" || name == "LOG";
}

std::uint32_t parse_u32(const std::string& option, const std::string& text) {
  std::uint64_t value = 0;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  int base = 10;
  if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
    begin += 2;
    base = 16;
  }
  const auto [ptr, ec] = std::from_chars(begin, end, value, base);
  if (begin == end || ec != std::errc() || ptr != end || value > 0xffffffffull) {
    fail(option + ": invalid value " + quoted(text));
  }
  return static_cast<std::uint32_t>(value);
}

std::uint16_t parse_port(const std::string& option, const std::string& text) {
  const auto value = parse_u32(option, text);
  if (value > 65535) fail(option + ": port " + quoted(text) + " is out of range 0..65535");
  return static_cast<std::uint16_t>(value);
}

// "80" or "80:90".
PortRange parse_port_range(const std::string& option, const std::string& text) {
  const auto colon = text.find(':');
  if (colon == std::string::npos) {
    const auto port = parse_port(option, text);
    return {port, port};
  }
  PortRange range{parse_port(option, text.substr(0, colon)),
                  parse_port(option, text.substr(colon + 1))};
  if (range.first > range.last) fail(option + ": empty port range " + quoted(text));
  return range;
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    const auto at = text.find(separator, start);
    parts.push_back(text.substr(start, at - start));
    if (at == std::string::npos) break;
    start = at + 1;
  }
  return parts;
}

// "V" or "V/M".
std::pair<std::uint32_t, std::uint32_t> parse_value_mask(const std::string& option,
                                                         const std::string& text) {
  const auto slash = text.find('/');
  if (slash == std::string::npos) return {parse_u32(option, text), 0xffffffffu};
  return {parse_u32(option, text.substr(0, slash)), parse_u32(option, text.substr(slash + 1))};
}

AddressMatch parse_address(const std::string& option, const std::string& text, bool negated) {
  if (text.find(',') != std::string::npos) {
    fail(option + ": address lists are not modelled: " + quoted(text));
  }
  if (text.find('/') != std::string::npos) {
    const auto prefix = IpPrefix::try_parse(text);
    if (!prefix || !prefix->address().is_v4()) {
      fail(option + ": invalid IPv4 prefix " + quoted(text));
    }
    return {prefix->network(), negated};
  }
  const auto address = IpAddress::try_parse(text);
  if (!address || !address->is_v4()) fail(option + ": invalid IPv4 address " + quoted(text));
  return {IpPrefix::host(*address), negated};
}

unsigned parse_ct_states(const std::string& text) {
  unsigned states = 0;
  for (const auto& name : split(text, ',')) {
    if (name == "INVALID") {
      states |= kCtInvalid;
    } else if (name == "NEW") {
      states |= kCtNew;
    } else if (name == "ESTABLISHED") {
      states |= kCtEstablished;
    } else if (name == "RELATED") {
      states |= kCtRelated;
    } else if (name == "UNTRACKED") {
      states |= kCtUntracked;
    } else if (name == "SNAT") {
      states |= kCtSnat;
    } else if (name == "DNAT") {
      states |= kCtDnat;
    } else {
      fail("--ctstate: unknown state " + quoted(name));
    }
  }
  return states;
}

// addrtype: only LOCAL is modelled.
bool parse_addrtype(const std::string& option, const std::string& text) {
  if (text != "LOCAL") fail(option + ": address type " + quoted(text) + " is not modelled");
  return true;
}

// "ip" or "ip:port".
std::pair<IpAddress, std::uint16_t> parse_nat_address(const std::string& option,
                                                      const std::string& text) {
  const auto colon = text.find(':');
  const auto address_text = text.substr(0, colon);
  const auto address = IpAddress::try_parse(address_text);
  if (!address || !address->is_v4()) {
    fail(option + ": invalid IPv4 address " + quoted(address_text));
  }
  if (colon == std::string::npos) return {*address, 0};
  const auto port_text = text.substr(colon + 1);
  if (port_text.find_first_of(":-") != std::string::npos) {
    fail(option + ": port ranges are not modelled: " + quoted(text));
  }
  const auto port = parse_port(option, port_text);
  if (port == 0) fail(option + ": port 0 in " + quoted(text));
  return {*address, port};
}

bool is_port_option(const std::string& option) {
  return option == "--dport" || option == "--destination-port" || option == "--sport" ||
         option == "--source-port";
}

// Applies one option of a match; false when the match has no such option.
bool apply_match_option(Match& match, const std::string& option, bool negated,
                        const std::function<const std::string&()>& take) {
  switch (match.kind) {
    case Match::Kind::comment:
      if (option != "--comment") return false;
      if (negated) fail("--comment cannot be negated");
      match.comment = take();
      return true;
    case Match::Kind::port:
      if (option == "--dport" || option == "--destination-port") {
        match.destination_ports = {parse_port_range(option, take())};
        match.destination_ports_negated = negated;
        return true;
      }
      if (option == "--sport" || option == "--source-port") {
        match.source_ports = {parse_port_range(option, take())};
        match.source_ports_negated = negated;
        return true;
      }
      return false;
    case Match::Kind::multiport: {
      const bool destination = option == "--dports" || option == "--destination-ports";
      const bool source = option == "--sports" || option == "--source-ports";
      if (!destination && !source) return false;
      std::vector<PortRange> ranges;
      for (const auto& part : split(take(), ','))
        ranges.push_back(parse_port_range(option, part));
      if (ranges.empty() || ranges.size() > 15) fail(option + ": 1 to 15 ports allowed");
      (destination ? match.destination_ports : match.source_ports) = ranges;
      (destination ? match.destination_ports_negated : match.source_ports_negated) = negated;
      return true;
    }
    case Match::Kind::addrtype:
      if (option == "--src-type") {
        match.source_local = parse_addrtype(option, take()) != negated;
        return true;
      }
      if (option == "--dst-type") {
        match.destination_local = parse_addrtype(option, take()) != negated;
        return true;
      }
      return false;
    case Match::Kind::statistic:
      if (negated) fail(option + ": negated statistic matches are not modelled");
      if (option == "--mode") {
        const auto& mode = take();
        if (mode != "random") fail("--mode: statistic mode " + quoted(mode) + " is not modelled");
        return true;
      }
      if (option == "--probability") {
        const auto& text = take();
        std::size_t used = 0;
        double p = -1;
        try {
          p = std::stod(text, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used != text.size() || !(p >= 0.0 && p <= 1.0)) {
          fail("--probability: invalid value " + quoted(text) + " (0 to 1)");
        }
        match.probability = p;
        return true;
      }
      return false;
    case Match::Kind::recent: {
      using Command = Match::RecentCommand;
      auto command = [&](Command c) {
        if (match.recent_command != Command::none) {
          fail(option + ": recent takes one of --set, --rcheck, --update, --remove");
        }
        match.recent_command = c;
        match.recent_negated = negated;
        return true;
      };
      if (option == "--set") return command(Command::set);
      if (option == "--rcheck") return command(Command::rcheck);
      if (option == "--update") return command(Command::update);
      if (option == "--remove") return command(Command::remove);
      if (negated) fail(option + " cannot be negated");
      if (option == "--name") {
        match.recent_name = take();
        if (match.recent_name.empty() || match.recent_name.size() > 200) {
          fail("--name: invalid list name " + quoted(match.recent_name));
        }
        return true;
      }
      if (option == "--seconds") {
        match.recent_seconds = parse_u32(option, take());
        return true;
      }
      if (option == "--reap") {
        match.recent_reap = true;
        return true;
      }
      if (option == "--rsource") {
        match.recent_destination = false;
        return true;
      }
      if (option == "--rdest") {
        match.recent_destination = true;
        return true;
      }
      if (option == "--mask") {
        const auto& text = take();
        const auto mask = IpAddress::try_parse(text);
        if (!mask || !mask->is_v4()) fail("--mask: invalid IPv4 mask " + quoted(text));
        match.recent_mask = *mask;
        return true;
      }
      return false;
    }
    case Match::Kind::mark:
      if (option != "--mark") return false;
      std::tie(match.mark_value, match.mark_mask) = parse_value_mask(option, take());
      match.mark_negated = negated;
      return true;
    case Match::Kind::conntrack:
      if (option != "--ctstate") return false;
      match.ct_states = parse_ct_states(take());
      match.ct_negated = negated;
      return true;
  }
  return false;
}

// Applies one option of a target; false when the target has no such option.
bool apply_target_option(Target& target, const std::string& option, bool negated,
                         const std::function<const std::string&()>& take) {
  if (negated) fail(option + ": target options cannot be negated");
  switch (target.kind) {
    case Target::Kind::reject:
      if (option != "--reject-with") return false;
      target.reject_with = take();
      return true;
    case Target::Kind::dnat:
    case Target::Kind::snat: {
      const bool dnat = target.kind == Target::Kind::dnat;
      if (option == (dnat ? "--to-destination" : "--to-source")) {
        if (!target.nat_address.is_unspecified()) fail(option + ": given twice");
        std::tie(target.nat_address, target.nat_port) = parse_nat_address(option, take());
        return true;
      }
      if (!dnat && option == "--random-fully") {
        target.random_fully = true;
        return true;
      }
      return false;
    }
    case Target::Kind::masquerade:
      if (option == "--random-fully" || option == "--random") {
        target.random_fully = option == "--random-fully";
        return true;
      }
      return false;
    case Target::Kind::mark: {
      if (target.mark_and != 0xffffffffu || target.mark_xor != 0) {
        fail(option + ": MARK takes one operation");
      }
      if (option == "--set-xmark" || option == "--set-mark") {
        const auto [value, mask] = parse_value_mask(option, take());
        // --set-mark V/M is --set-xmark V/(V|M) (iptables' own translation).
        const auto clear = option == "--set-mark" ? (value | mask) : mask;
        target.mark_and = ~clear;
        target.mark_xor = value;
        return true;
      }
      if (option == "--or-mark") {
        const auto value = parse_u32(option, take());
        target.mark_and = ~value;
        target.mark_xor = value;
        return true;
      }
      if (option == "--and-mark") {
        target.mark_and = parse_u32(option, take());
        return true;
      }
      if (option == "--xor-mark") {
        target.mark_xor = parse_u32(option, take());
        return true;
      }
      return false;
    }
    default:
      return false;
  }
}

Target make_target(const std::string& name, bool go_to) {
  Target target;
  if (go_to) {
    if (is_builtin_target(name)) fail("-g: " + quoted(name) + " is not a chain");
    target.kind = Target::Kind::go_to;
    target.chain = name;
    return target;
  }
  if (name == "ACCEPT") {
    target.kind = Target::Kind::accept;
  } else if (name == "DROP") {
    target.kind = Target::Kind::drop;
  } else if (name == "RETURN") {
    target.kind = Target::Kind::ret;
  } else if (name == "REJECT") {
    target.kind = Target::Kind::reject;
  } else if (name == "DNAT") {
    target.kind = Target::Kind::dnat;
  } else if (name == "SNAT") {
    target.kind = Target::Kind::snat;
  } else if (name == "MASQUERADE") {
    target.kind = Target::Kind::masquerade;
  } else if (name == "MARK") {
    target.kind = Target::Kind::mark;
  } else if (is_builtin_target(name)) {
    fail("-j: target " + quoted(name) + " is not modelled");
  } else {
    if (name.empty() || name[0] == '-') fail("-j: invalid chain name " + quoted(name));
    target.kind = Target::Kind::jump;
    target.chain = name;
  }
  return target;
}

bool needs_quotes(const std::string& token) {
  return token.empty() || token.find_first_of(" \t\"\\'") != std::string::npos;
}

std::string quote_token(const std::string& token) {
  if (!needs_quotes(token)) return token;
  std::string out = "\"";
  for (char c : token) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

bool parse_index(const std::string& text, std::size_t& index) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos) return false;
  index = std::stoul(text);
  return true;
}

void check_chain_name(const std::string& name) {
  if (name.empty() || name[0] == '-' || name[0] == '!') {
    fail("invalid chain name " + quoted(name));
  }
  if (name.size() > kMaxChainNameLength) {
    fail("chain name " + quoted(name) + " is longer than " + std::to_string(kMaxChainNameLength) +
         " characters");
  }
  if (is_builtin_target(name)) fail("chain name " + quoted(name) + " is a target's name");
}

Table make_table(const std::string& name, std::vector<std::string> builtins) {
  Table table;
  table.name = name;
  table.builtin_order = builtins;
  for (const auto& chain : builtins) {
    table.chains[chain] = Chain{chain, true, "ACCEPT", {}};
  }
  return table;
}

Chain& chain_of(Table& table, const std::string& name) {
  const auto it = table.chains.find(name);
  if (it == table.chains.end()) {
    fail("chain " + quoted(name) + " does not exist in table " + quoted(table.name));
  }
  return it->second;
}

std::size_t count_references(const Table& table, const std::string& chain) {
  std::size_t count = 0;
  for (const auto& [name, c] : table.chains) {
    for (const auto& rule : c.rules) {
      if ((rule.target.kind == Target::Kind::jump || rule.target.kind == Target::Kind::go_to) &&
          rule.target.chain == chain) {
        ++count;
      }
    }
  }
  return count;
}

// The table a target may be used in, checked when a rule is added.
void check_rule_for_table(const Table& table, const Rule& rule) {
  const auto kind = rule.target.kind;
  const bool nat_only =
      kind == Target::Kind::dnat || kind == Target::Kind::snat || kind == Target::Kind::masquerade;
  if (nat_only && table.name != "nat") {
    const char* name = kind == Target::Kind::dnat   ? "DNAT"
                       : kind == Target::Kind::snat ? "SNAT"
                                                    : "MASQUERADE";
    fail(std::string("target ") + name + " is only valid in the nat table, not " +
         quoted(table.name));
  }
  if (kind == Target::Kind::reject && table.name != "filter") {
    fail("target REJECT is only valid in the filter table, not " + quoted(table.name));
  }
  if (kind == Target::Kind::drop && table.name == "nat") {
    fail("target DROP is not allowed in the nat table");
  }
  if (kind == Target::Kind::jump || kind == Target::Kind::go_to) {
    const auto it = table.chains.find(rule.target.chain);
    if (it == table.chains.end()) {
      fail("chain " + quoted(rule.target.chain) + " does not exist in table " + quoted(table.name) +
           " (jump target)");
    }
    if (it->second.builtin) fail("cannot jump to built-in chain " + quoted(rule.target.chain));
  }
}

// Runs one command (tokens[0] is -A, -I, ...) against `table`.
bool execute(Table& table, const std::vector<std::string>& tokens) {
  if (tokens.empty()) fail("empty command");
  const auto& command = tokens[0];
  auto need_chain = [&]() -> const std::string& {
    if (tokens.size() < 2) fail(command + ": missing chain name");
    return tokens[1];
  };
  auto rule_from = [&](std::size_t index) {
    Rule rule = parse_rule(
        std::vector<std::string>(tokens.begin() + static_cast<long>(index), tokens.end()));
    check_rule_for_table(table, rule);
    return rule;
  };
  if (command == "-A" || command == "--append") {
    auto& chain = chain_of(table, need_chain());
    chain.rules.push_back(rule_from(2));
    return true;
  }
  if (command == "-I" || command == "--insert") {
    auto& chain = chain_of(table, need_chain());
    std::size_t position = 1;
    std::size_t first = 2;
    if (tokens.size() > 2 && parse_index(tokens[2], position)) first = 3;
    if (position < 1 || position > chain.rules.size() + 1) {
      fail("-I: index " + std::to_string(position) + " is out of range for chain " +
           quoted(chain.name) + " of " + std::to_string(chain.rules.size()) + " rules");
    }
    chain.rules.insert(chain.rules.begin() + static_cast<long>(position - 1), rule_from(first));
    return true;
  }
  if (command == "-R" || command == "--replace") {
    auto& chain = chain_of(table, need_chain());
    std::size_t position = 0;
    if (tokens.size() < 3 || !parse_index(tokens[2], position)) fail("-R: missing rule number");
    if (position < 1 || position > chain.rules.size()) {
      fail("-R: index " + std::to_string(position) + " is out of range for chain " +
           quoted(chain.name));
    }
    chain.rules[position - 1] = rule_from(3);
    return true;
  }
  if (command == "-D" || command == "--delete" || command == "-C" || command == "--check") {
    const bool check = command == "-C" || command == "--check";
    auto& chain = chain_of(table, need_chain());
    std::size_t position = 0;
    if (!check && tokens.size() == 3 && parse_index(tokens[2], position)) {
      if (position < 1 || position > chain.rules.size()) {
        fail("-D: index " + std::to_string(position) + " is out of range for chain " +
             quoted(chain.name));
      }
      chain.rules.erase(chain.rules.begin() + static_cast<long>(position - 1));
      return true;
    }
    const Rule rule = rule_from(2);
    const auto it = std::find(chain.rules.begin(), chain.rules.end(), rule);
    if (check) return it != chain.rules.end();
    if (it == chain.rules.end()) {
      fail("-D: no rule " + quoted(rule.text()) + " in chain " + quoted(chain.name) +
           " (does a matching rule exist in that chain?)");
    }
    chain.rules.erase(it);
    return true;
  }
  if (command == "-F" || command == "--flush") {
    if (tokens.size() > 2) fail("-F: unexpected argument " + quoted(tokens[2]));
    if (tokens.size() == 1) {
      for (auto& [name, chain] : table.chains)
        chain.rules.clear();
    } else {
      chain_of(table, tokens[1]).rules.clear();
    }
    return true;
  }
  if (command == "-N" || command == "--new-chain") {
    const auto& name = need_chain();
    if (tokens.size() > 2) fail("-N: unexpected argument " + quoted(tokens[2]));
    check_chain_name(name);
    if (table.chains.contains(name)) fail("-N: chain " + quoted(name) + " already exists");
    table.chains[name] = Chain{name, false, "-", {}};
    return true;
  }
  if (command == "-X" || command == "--delete-chain") {
    if (tokens.size() != 2)
      fail("-X: exactly one chain name expected (deleting all is not modelled)");
    const auto& name = tokens[1];
    const auto& chain = chain_of(table, name);
    if (chain.builtin) fail("-X: cannot delete built-in chain " + quoted(name));
    if (const auto refs = count_references(table, name); refs != 0) {
      fail("-X: chain " + quoted(name) + " is referenced by " + std::to_string(refs) + " rule(s)");
    }
    if (!chain.rules.empty()) {
      fail("-X: chain " + quoted(name) + " is not empty (" + std::to_string(chain.rules.size()) +
           " rules)");
    }
    table.chains.erase(name);
    return true;
  }
  if (command == "-P" || command == "--policy") {
    if (tokens.size() != 3) fail("-P: chain and policy expected");
    auto& chain = chain_of(table, tokens[1]);
    if (!chain.builtin) fail("-P: " + quoted(chain.name) + " is not a built-in chain");
    if (tokens[2] != "ACCEPT" && tokens[2] != "DROP") {
      fail("-P: invalid policy " + quoted(tokens[2]));
    }
    chain.policy = tokens[2];
    return true;
  }
  fail("unknown or unsupported command " + quoted(command));
}

// The kernel refuses rulesets with jump loops (ELOOP).
void check_loops(const Table& table) {
  std::map<std::string, int> state;  // 0 unvisited, 1 on stack, 2 done
  std::function<void(const std::string&, std::vector<std::string>&)> visit =
      [&](const std::string& name, std::vector<std::string>& path) {
        state[name] = 1;
        path.push_back(name);
        for (const auto& rule : table.chains.at(name).rules) {
          if (rule.target.kind != Target::Kind::jump && rule.target.kind != Target::Kind::go_to) {
            continue;
          }
          const auto& next = rule.target.chain;
          if (state[next] == 1) {
            std::string cycle;
            for (const auto& p : path)
              cycle += p + " -> ";
            fail("table " + quoted(table.name) + " has a jump loop: " + cycle + next);
          }
          if (state[next] == 0) visit(next, path);
        }
        path.pop_back();
        state[name] = 2;
      };
  for (const auto& [name, chain] : table.chains) {
    std::vector<std::string> path;
    if (state[name] == 0) visit(name, path);
  }
}

void save_table(const Table& table, std::string& out) {
  out += "*" + table.name + "\n";
  std::vector<const Chain*> order;
  for (const auto& name : table.builtin_order)
    order.push_back(&table.chains.at(name));
  for (const auto& [name, chain] : table.chains) {
    if (!chain.builtin) order.push_back(&chain);
  }
  for (const auto* chain : order)
    out += ":" + chain->name + " " + chain->policy + " [0:0]\n";
  for (const auto* chain : order) {
    for (const auto& rule : chain->rules)
      out += "-A " + chain->name + " " + rule.text() + "\n";
  }
  out += "COMMIT\n";
}

}  // namespace

// --- rules
// -----------------------------------------------------------------------------------------

bool InterfaceMatch::matches(const std::string& interface_name) const {
  bool hit = false;
  if (!name.empty() && name.back() == '+') {
    hit = interface_name.starts_with(std::string_view(name).substr(0, name.size() - 1)) &&
          !interface_name.empty();
  } else {
    hit = interface_name == name;
  }
  return hit != negated;
}

bool Target::terminal() const {
  switch (kind) {
    case Kind::none:
    case Kind::jump:
    case Kind::mark:
      return false;
    default:
      return true;
  }
}

std::string Rule::text() const {
  std::string out;
  for (const auto& token : args) {
    if (!out.empty()) out += ' ';
    out += quote_token(token);
  }
  return out;
}

std::string Rule::comment() const {
  for (const auto& match : matches) {
    if (match.kind == Match::Kind::comment) return match.comment;
  }
  return "";
}

Rule parse_rule(const std::vector<std::string>& args) {
  Rule rule;
  rule.args = args;
  bool negated = false;
  bool have_target = false;
  std::size_t i = 0;
  std::optional<std::size_t> current_match;
  auto take_value = [&](const std::string& option) -> const std::string& {
    if (i + 1 >= args.size()) fail(option + ": missing value");
    return args[++i];
  };
  for (; i < args.size(); ++i) {
    const auto& token = args[i];
    if (token == "!") {
      if (negated) fail("\"!\" given twice");
      negated = true;
      continue;
    }
    const bool neg = std::exchange(negated, false);
    if (token == "-p" || token == "--protocol") {
      if (rule.protocol) fail("-p given twice");
      const auto& name = take_value(token);
      if (name == "tcp" || name == "TCP" || name == "6") {
        rule.protocol = std::pair{Protocol::tcp, neg};
      } else if (name == "udp" || name == "UDP" || name == "17") {
        rule.protocol = std::pair{Protocol::udp, neg};
      } else if (name == "all") {
        if (neg) fail("-p: \"! all\" matches nothing");
      } else {
        fail("-p: protocol " + quoted(name) + " is not modelled");
      }
    } else if (token == "-s" || token == "--source" || token == "--src") {
      if (rule.source) fail("-s given twice");
      rule.source = parse_address(token, take_value(token), neg);
    } else if (token == "-d" || token == "--destination" || token == "--dst") {
      if (rule.destination) fail("-d given twice");
      rule.destination = parse_address(token, take_value(token), neg);
    } else if (token == "-i" || token == "--in-interface") {
      rule.in_interface = InterfaceMatch{take_value(token), neg};
    } else if (token == "-o" || token == "--out-interface") {
      rule.out_interface = InterfaceMatch{take_value(token), neg};
    } else if (token == "-m" || token == "--match") {
      if (neg) fail("-m cannot be negated");
      const auto& name = take_value(token);
      Match match;
      match.module = name;
      if (name == "comment") {
        match.kind = Match::Kind::comment;
      } else if (name == "tcp" || name == "udp") {
        match.kind = Match::Kind::port;
      } else if (name == "multiport") {
        match.kind = Match::Kind::multiport;
      } else if (name == "addrtype") {
        match.kind = Match::Kind::addrtype;
      } else if (name == "statistic") {
        match.kind = Match::Kind::statistic;
      } else if (name == "recent") {
        match.kind = Match::Kind::recent;
      } else if (name == "mark") {
        match.kind = Match::Kind::mark;
      } else if (name == "conntrack") {
        match.kind = Match::Kind::conntrack;
      } else {
        fail("-m: match " + quoted(name) + " is not modelled");
      }
      rule.matches.push_back(match);
      current_match = rule.matches.size() - 1;
    } else if (token == "-j" || token == "--jump" || token == "-g" || token == "--goto") {
      if (neg) fail(token + " cannot be negated");
      if (have_target) fail(token + ": a rule has one target");
      rule.target = make_target(take_value(token), token == "-g" || token == "--goto");
      have_target = true;
    } else if (token.starts_with("--")) {
      auto take = [&]() -> const std::string& { return take_value(token); };
      bool used = false;
      if (have_target) {
        used = apply_target_option(rule.target, token, neg, take);
      } else if (current_match) {
        used = apply_match_option(rule.matches[*current_match], token, neg, take);
      }
      if (!used && !have_target && is_port_option(token) && rule.protocol &&
          (!current_match || rule.matches[*current_match].kind != Match::Kind::port)) {
        // "-p tcp --dport 80": iptables loads the protocol's match implicitly.
        Match match;
        match.kind = Match::Kind::port;
        match.module = lower_protocol(rule.protocol->first);
        rule.matches.push_back(match);
        current_match = rule.matches.size() - 1;
        used = apply_match_option(rule.matches.back(), token, neg, take);
      }
      if (!used) fail("unknown option " + quoted(token));
    } else {
      fail("unexpected argument " + quoted(token));
    }
  }
  if (negated) fail("\"!\" at the end of the rule");
  // Checks done once the whole rule is known, as iptables does.
  for (const auto& match : rule.matches) {
    if (match.kind == Match::Kind::port || match.kind == Match::Kind::multiport) {
      const bool tcp_or_udp = rule.protocol && !rule.protocol->second;
      if (!tcp_or_udp) fail("-m " + match.module + " needs -p tcp or -p udp");
      if (match.kind == Match::Kind::port && match.module != lower_protocol(rule.protocol->first)) {
        fail("-m " + match.module + " does not match -p " + lower_protocol(rule.protocol->first));
      }
    }
    if (match.kind == Match::Kind::addrtype && !match.source_local && !match.destination_local) {
      fail("-m addrtype needs --src-type or --dst-type");
    }
    if (match.kind == Match::Kind::recent && match.recent_command == Match::RecentCommand::none) {
      fail("-m recent needs --set, --rcheck, --update or --remove");
    }
    if (match.kind == Match::Kind::recent && match.recent_command == Match::RecentCommand::set &&
        match.recent_seconds) {
      fail("-m recent: --seconds is only valid with --rcheck or --update");
    }
    if (match.kind == Match::Kind::conntrack && match.ct_states == 0) {
      fail("-m conntrack needs --ctstate");
    }
    if (match.kind == Match::Kind::mark &&
        std::find(args.begin(), args.end(), "--mark") == args.end()) {
      fail("-m mark needs --mark");
    }
  }
  switch (rule.target.kind) {
    case Target::Kind::dnat:
    case Target::Kind::snat: {
      const bool dnat = rule.target.kind == Target::Kind::dnat;
      if (rule.target.nat_address.is_unspecified()) {
        fail(std::string(dnat ? "DNAT needs --to-destination" : "SNAT needs --to-source"));
      }
      if (rule.target.nat_port != 0 && !(rule.protocol && !rule.protocol->second)) {
        fail(std::string(dnat ? "DNAT" : "SNAT") + ": a port needs -p tcp or -p udp");
      }
      break;
    }
    case Target::Kind::mark:
      if (rule.target.mark_and == 0xffffffffu && rule.target.mark_xor == 0 &&
          std::none_of(args.begin(), args.end(),
                       [](const std::string& a) { return a.ends_with("-mark"); })) {
        fail("MARK needs --set-xmark, --set-mark, --or-mark, --and-mark or --xor-mark");
      }
      break;
    default:
      break;
  }
  return rule;
}

std::vector<std::string> split_restore_line(std::string_view line) {
  std::vector<std::string> tokens;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t'))
      ++i;
    if (i >= line.size()) break;
    std::string token;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') {
      if (line[i] == '"') {
        ++i;
        while (true) {
          if (i >= line.size()) fail("unterminated quoted string");
          if (line[i] == '\\' && i + 1 < line.size() &&
              (line[i + 1] == '"' || line[i + 1] == '\\')) {
            token += line[i + 1];
            i += 2;
            continue;
          }
          if (line[i] == '"') {
            ++i;
            break;
          }
          token += line[i++];
        }
      } else {
        token += line[i++];
      }
    }
    tokens.push_back(std::move(token));
  }
  return tokens;
}

// --- the model
// -------------------------------------------------------------------------------------

const Chain* Table::find(const std::string& chain) const {
  const auto it = chains.find(chain);
  return it == chains.end() ? nullptr : &it->second;
}

IptablesModel::IptablesModel() {
  tables_["filter"] = make_table("filter", {"INPUT", "FORWARD", "OUTPUT"});
  tables_["nat"] = make_table("nat", {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"});
}

void IptablesModel::apply_restore(std::string_view text, bool noflush) {
  auto work = tables_;
  Table* table = nullptr;
  std::size_t line_number = 0;
  std::size_t last_commit = 0;
  std::set<std::string> seen_tables;
  auto at_line = [&](const std::string& message) {
    throw IptablesError("line " + std::to_string(line_number) + ": " + message);
  };
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto end = text.find('\n', start);
    auto line =
        text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    start = end == std::string_view::npos ? text.size() + 1 : end + 1;
    ++line_number;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
      line.remove_suffix(1);
    }
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t'))
      line.remove_prefix(1);
    if (line.empty() || line.front() == '#') continue;
    try {
      if (line.front() == '*') {
        if (table != nullptr) {
          fail("table " + quoted(table->name) + " was not committed before " + quoted(line));
        }
        const std::string name(line.substr(1));
        const auto it = work.find(name);
        if (it == work.end()) fail("table " + quoted(name) + " is not modelled");
        table = &it->second;
        seen_tables.insert(name);
        if (!noflush) {
          for (auto chain = table->chains.begin(); chain != table->chains.end();) {
            if (chain->second.builtin) {
              chain->second.rules.clear();
              ++chain;
            } else {
              chain = table->chains.erase(chain);
            }
          }
        }
        continue;
      }
      if (table == nullptr) fail(quoted(line) + " outside of a table (expected *filter or *nat)");
      if (line == "COMMIT") {
        table = nullptr;
        last_commit = line_number;
        continue;
      }
      if (line.front() == ':') {
        const auto tokens = split_restore_line(line.substr(1));
        if (tokens.size() < 2 || tokens.size() > 3) {
          fail("chain line " + quoted(line) + " is not \":NAME POLICY [packets:bytes]\"");
        }
        const auto& name = tokens[0];
        const auto& policy = tokens[1];
        const auto it = table->chains.find(name);
        if (it != table->chains.end() && it->second.builtin) {
          if (policy != "-") {
            if (policy != "ACCEPT" && policy != "DROP") {
              fail("invalid policy " + quoted(policy) + " for chain " + quoted(name));
            }
            it->second.policy = policy;
          }
          continue;
        }
        if (policy != "-") {
          fail("chain " + quoted(name) + " is not built-in and cannot have policy " +
               quoted(policy));
        }
        check_chain_name(name);
        if (it != table->chains.end()) {
          it->second.rules.clear();  // noflush: an existing user chain is flushed
        } else {
          table->chains[name] = Chain{name, false, "-", {}};
        }
        continue;
      }
      if (line.front() == '[') fail("rule counters are not modelled");
      execute(*table, split_restore_line(line));
    } catch (const IptablesError& e) {
      const std::string message = e.what();
      if (message.starts_with("line ")) throw;
      at_line(message);
    }
  }
  if (table != nullptr) {
    throw IptablesError("line " + std::to_string(line_number) + ": table " + quoted(table->name) +
                        " is not committed (COMMIT expected)");
  }
  for (const auto& name : seen_tables) {
    try {
      check_loops(work.at(name));
    } catch (const IptablesError& e) {
      throw IptablesError("line " + std::to_string(last_commit) + ": " + e.what());
    }
  }
  tables_ = std::move(work);
}

bool IptablesModel::apply_command(const std::string& table_name,
                                  const std::vector<std::string>& args) {
  const auto it = tables_.find(table_name);
  if (it == tables_.end()) fail("table " + quoted(table_name) + " is not modelled");
  Table work = it->second;
  const bool result = execute(work, args);
  check_loops(work);
  it->second = std::move(work);
  return result;
}

std::string IptablesModel::save() const {
  std::string out;
  save_table(tables_.at("filter"), out);
  save_table(tables_.at("nat"), out);
  return out;
}

std::string IptablesModel::save(const std::string& table_name) const {
  std::string out;
  save_table(table(table_name), out);
  return out;
}

const Table& IptablesModel::table(const std::string& name) const {
  const auto it = tables_.find(name);
  if (it == tables_.end()) fail("table " + quoted(name) + " is not modelled");
  return it->second;
}

const Chain* IptablesModel::find_chain(const std::string& table_name,
                                       const std::string& chain) const {
  return table(table_name).find(chain);
}

std::size_t IptablesModel::references(const std::string& table_name,
                                      const std::string& chain) const {
  return count_references(table(table_name), chain);
}

// --- the tracer
// ------------------------------------------------------------------------------------

std::string to_string(Verdict verdict) {
  switch (verdict) {
    case Verdict::accept:
      return "accept";
    case Verdict::drop:
      return "drop";
    case Verdict::reject:
      return "reject";
  }
  return "?";
}

std::string Outcome::endpoint() const {
  return destination.to_string() + ":" + std::to_string(destination_port);
}

namespace {

const IpPrefix kLoopback = IpPrefix::parse("127.0.0.0/8");

// One branch of the walk: the packet as the rules have changed it so far.
struct Walk {
  Outcome outcome{};
  IpAddress source{};
  std::uint16_t source_port = 0;
  unsigned ct_state = kCtNew;
  bool finished = false;
};

enum class Exit { fall_through, ret, accept, drop, reject, nat };

// Where in the stack a chain runs.
struct Hook {
  std::string table;
  std::string chain;  // the built-in chain
  std::string in_interface;
  std::string out_interface;
};

class Tracer {
 public:
  Tracer(const IptablesModel& model, const Packet& packet, const TraceEnv& env)
      : model_(model), packet_(packet), env_(env) {}

  bool is_local(const IpAddress& address) const {
    return kLoopback.contains(address) || env_.local_addresses.contains(address);
  }

  // Runs `chain` for `walk`; every branch ends with how it left the chain.
  std::vector<std::pair<Walk, Exit>> run_chain(Walk walk, const Hook& hook,
                                               const std::string& chain_name, int depth) {
    if (depth > kMaxJumpDepth) fail("jump depth exceeds " + std::to_string(kMaxJumpDepth));
    const Chain* chain = model_.find_chain(hook.table, chain_name);
    if (chain == nullptr) {
      fail("chain " + quoted(chain_name) + " does not exist in table " + quoted(hook.table));
    }
    const std::string label = hook.table + "/" + chain_name;
    walk.outcome.chains.push_back(label);
    std::vector<std::pair<Walk, Exit>> done;
    std::vector<Walk> live{std::move(walk)};
    for (const auto& rule : chain->rules) {
      std::vector<Walk> next;
      for (auto& w : live) {
        for (auto& [branch, matched] : match_rule(std::move(w), rule, hook)) {
          if (!matched) {
            next.push_back(std::move(branch));
            continue;
          }
          branch.outcome.rules.push_back(label + ": " + rule.text());
          apply_target(std::move(branch), rule, hook, depth, next, done);
        }
      }
      live = std::move(next);
      if (live.empty()) break;
    }
    for (auto& w : live)
      done.emplace_back(std::move(w), Exit::fall_through);
    return done;
  }

  // Runs the built-in chain of `hook` for every unfinished walk.
  std::vector<Walk> run_hook(std::vector<Walk> walks, const Hook& hook) {
    std::vector<Walk> out;
    const bool nat = hook.table == "nat";
    for (auto& w : walks) {
      if (w.finished || (nat && !(w.ct_state & kCtNew))) {
        out.push_back(std::move(w));
        continue;
      }
      const auto& policy = model_.find_chain(hook.table, hook.chain)->policy;
      for (auto& [branch, exit] : run_chain(std::move(w), hook, hook.chain, 0)) {
        switch (exit) {
          case Exit::fall_through:
          case Exit::ret:
            if (policy == "DROP") finish(branch, Verdict::drop);
            break;
          case Exit::drop:
            finish(branch, Verdict::drop);
            break;
          case Exit::reject:
            finish(branch, Verdict::reject);
            break;
          case Exit::accept:
          case Exit::nat:
            break;
        }
        out.push_back(std::move(branch));
      }
    }
    return out;
  }

  TraceResult run() {
    Walk first;
    first.source = packet_.source;
    first.source_port = packet_.source_port;
    first.ct_state = env_.ct_state;
    first.outcome.destination = packet_.destination;
    first.outcome.destination_port = packet_.destination_port;
    first.outcome.mark = env_.mark;
    first.outcome.recent = env_.recent;
    std::vector<Walk> walks{std::move(first)};
    const auto& in = packet_.in_interface;
    const auto& out = packet_.out_interface;

    // Splits walks by the routing decision after DNAT.
    auto route = [&](std::vector<Walk> all, std::vector<Walk>& local, std::vector<Walk>& away) {
      for (auto& w : all) {
        if (!w.finished && is_local(w.outcome.destination)) {
          w.outcome.local_delivery = true;
          local.push_back(std::move(w));
        } else {
          away.push_back(std::move(w));
        }
      }
    };
    std::vector<Walk> local;
    std::vector<Walk> away;
    if (packet_.origin == Origin::arriving) {
      walks = run_hook(std::move(walks), {"nat", "PREROUTING", in, ""});
      route(std::move(walks), local, away);
      local = run_hook(std::move(local), {"filter", "INPUT", in, ""});
      local = run_hook(std::move(local), {"nat", "INPUT", in, ""});
      away = run_hook(std::move(away), {"filter", "FORWARD", in, out});
      away = run_hook(std::move(away), {"nat", "POSTROUTING", "", out});
    } else {
      walks = run_hook(std::move(walks), {"nat", "OUTPUT", "", out});
      route(std::move(walks), local, away);
      local = run_hook(std::move(local), {"filter", "OUTPUT", "", "lo"});
      local = run_hook(std::move(local), {"nat", "POSTROUTING", "", "lo"});
      local = run_hook(std::move(local), {"filter", "INPUT", "lo", ""});
      local = run_hook(std::move(local), {"nat", "INPUT", "lo", ""});
      away = run_hook(std::move(away), {"filter", "OUTPUT", "", out});
      away = run_hook(std::move(away), {"nat", "POSTROUTING", "", out});
    }
    TraceResult result;
    for (auto* group : {&local, &away}) {
      for (auto& w : *group)
        result.outcomes.push_back(std::move(w.outcome));
    }
    return result;
  }

 private:
  static void finish(Walk& walk, Verdict verdict) {
    walk.finished = true;
    walk.outcome.verdict = verdict;
  }

  static bool ports_match(const std::vector<PortRange>& ranges, bool negated, std::uint16_t port) {
    if (ranges.empty()) return true;
    const bool hit = std::any_of(ranges.begin(), ranges.end(), [&](const PortRange& r) {
      return port >= r.first && port <= r.last;
    });
    return hit != negated;
  }

  static IpAddress masked(const IpAddress& address, const IpAddress& mask) {
    return IpAddress::v4(address.to_v4_integer() & mask.to_v4_integer());
  }

  bool basic_match(const Walk& w, const Rule& rule, const Hook& hook) const {
    if (rule.protocol && (rule.protocol->first == packet_.protocol) == rule.protocol->second) {
      return false;
    }
    if (rule.source && !rule.source->matches(w.source)) return false;
    if (rule.destination && !rule.destination->matches(w.outcome.destination)) return false;
    if (rule.in_interface && !rule.in_interface->matches(hook.in_interface)) return false;
    if (rule.out_interface && !rule.out_interface->matches(hook.out_interface)) return false;
    return true;
  }

  // Evaluates the matches of `rule` in order; a statistic match splits the walk.
  std::vector<std::pair<Walk, bool>> match_rule(Walk walk, const Rule& rule, const Hook& hook) {
    std::vector<std::pair<Walk, bool>> out;
    if (!basic_match(walk, rule, hook)) {
      out.emplace_back(std::move(walk), false);
      return out;
    }
    match_from(std::move(walk), rule, 0, out);
    return out;
  }

  void match_from(Walk walk, const Rule& rule, std::size_t index,
                  std::vector<std::pair<Walk, bool>>& out) {
    for (; index < rule.matches.size(); ++index) {
      const auto& m = rule.matches[index];
      bool hit = true;
      switch (m.kind) {
        case Match::Kind::comment:
          break;
        case Match::Kind::port:
        case Match::Kind::multiport:
          hit = ports_match(m.destination_ports, m.destination_ports_negated,
                            walk.outcome.destination_port) &&
                ports_match(m.source_ports, m.source_ports_negated, walk.source_port);
          break;
        case Match::Kind::addrtype:
          if (m.source_local && is_local(walk.source) != *m.source_local) hit = false;
          if (m.destination_local && is_local(walk.outcome.destination) != *m.destination_local) {
            hit = false;
          }
          break;
        case Match::Kind::statistic: {
          if (m.probability >= 1.0) break;
          if (m.probability <= 0.0) {
            hit = false;
            break;
          }
          Walk other = walk;
          other.outcome.probability *= 1.0 - m.probability;
          out.emplace_back(std::move(other), false);
          walk.outcome.probability *= m.probability;
          break;
        }
        case Match::Kind::recent:
          hit = recent_match(walk, m);
          break;
        case Match::Kind::mark:
          hit = ((walk.outcome.mark & m.mark_mask) == m.mark_value) != m.mark_negated;
          break;
        case Match::Kind::conntrack:
          hit = ((walk.ct_state & m.ct_states) != 0) != m.ct_negated;
          break;
      }
      if (!hit) {
        out.emplace_back(std::move(walk), false);
        return;
      }
    }
    out.emplace_back(std::move(walk), true);
  }

  bool recent_match(Walk& walk, const Match& m) const {
    const auto key =
        masked(m.recent_destination ? walk.outcome.destination : walk.source, m.recent_mask);
    auto& list = walk.outcome.recent[m.recent_name];
    const auto it = list.find(key);
    auto fresh = [&]() {
      if (it == list.end()) return false;
      // xt_recent: the entry matches when it was seen strictly after now - seconds.
      return !m.recent_seconds || env_.now - it->second < static_cast<double>(*m.recent_seconds);
    };
    bool hit = false;
    switch (m.recent_command) {
      case Match::RecentCommand::set:
        list[key] = env_.now;
        hit = true;
        break;
      case Match::RecentCommand::rcheck:
        hit = fresh();
        break;
      case Match::RecentCommand::update:
        hit = fresh();
        if (it != list.end()) it->second = env_.now;
        break;
      case Match::RecentCommand::remove:
        hit = it != list.end();
        if (hit) list.erase(it);
        break;
      case Match::RecentCommand::none:
        break;
    }
    if (list.empty()) walk.outcome.recent.erase(m.recent_name);
    return hit != m.recent_negated;
  }

  void apply_target(Walk walk, const Rule& rule, const Hook& hook, int depth,
                    std::vector<Walk>& next, std::vector<std::pair<Walk, Exit>>& done) {
    const auto& t = rule.target;
    auto refuse_outside = [&](std::initializer_list<const char*> hooks, const char* name) {
      for (const char* h : hooks) {
        if (hook.chain == h) return;
      }
      fail(std::string("target ") + name + " reached from built-in chain " +
           quoted(hook.table + "/" + hook.chain) + ", where the kernel refuses it (rule " +
           quoted(rule.text()) + ")");
    };
    switch (t.kind) {
      case Target::Kind::none:
        next.push_back(std::move(walk));
        return;
      case Target::Kind::mark:
        walk.outcome.mark = (walk.outcome.mark & t.mark_and) ^ t.mark_xor;
        next.push_back(std::move(walk));
        return;
      case Target::Kind::jump:
      case Target::Kind::go_to:
        for (auto& [branch, exit] : run_chain(std::move(walk), hook, t.chain, depth + 1)) {
          if (t.kind == Target::Kind::jump && (exit == Exit::ret || exit == Exit::fall_through)) {
            next.push_back(std::move(branch));
          } else {
            done.emplace_back(std::move(branch), exit == Exit::fall_through ? Exit::ret : exit);
          }
        }
        return;
      case Target::Kind::ret:
        done.emplace_back(std::move(walk), Exit::ret);
        return;
      case Target::Kind::accept:
        done.emplace_back(std::move(walk), Exit::accept);
        return;
      case Target::Kind::drop:
        done.emplace_back(std::move(walk), Exit::drop);
        return;
      case Target::Kind::reject:
        walk.outcome.reject_with = t.reject_with.empty() ? "icmp-port-unreachable" : t.reject_with;
        done.emplace_back(std::move(walk), Exit::reject);
        return;
      case Target::Kind::dnat:
        refuse_outside({"PREROUTING", "OUTPUT"}, "DNAT");
        walk.outcome.destination = t.nat_address;
        if (t.nat_port != 0) walk.outcome.destination_port = t.nat_port;
        walk.outcome.dnat = true;
        walk.ct_state |= kCtDnat;
        done.emplace_back(std::move(walk), Exit::nat);
        return;
      case Target::Kind::snat:
        refuse_outside({"POSTROUTING", "INPUT"}, "SNAT");
        walk.source = t.nat_address;
        if (t.nat_port != 0) walk.source_port = t.nat_port;
        walk.outcome.masqueraded = true;
        walk.outcome.snat_source = t.nat_address;
        walk.ct_state |= kCtSnat;
        done.emplace_back(std::move(walk), Exit::nat);
        return;
      case Target::Kind::masquerade:
        refuse_outside({"POSTROUTING"}, "MASQUERADE");
        walk.outcome.masqueraded = true;
        walk.ct_state |= kCtSnat;
        done.emplace_back(std::move(walk), Exit::nat);
        return;
    }
  }

  const IptablesModel& model_;
  const Packet& packet_;
  const TraceEnv& env_;
};

}  // namespace

std::map<std::string, double> TraceResult::endpoint_probabilities() const {
  std::map<std::string, double> out;
  for (const auto& o : outcomes) {
    if (o.verdict == Verdict::accept) out[o.endpoint()] += o.probability;
  }
  return out;
}

std::set<std::string> TraceResult::endpoints() const {
  std::set<std::string> out;
  for (const auto& o : outcomes) {
    if (o.verdict == Verdict::accept) out.insert(o.endpoint());
  }
  return out;
}

double TraceResult::probability(Verdict verdict) const {
  double p = 0;
  for (const auto& o : outcomes) {
    if (o.verdict == verdict) p += o.probability;
  }
  return p;
}

bool TraceResult::any_masqueraded() const {
  return std::any_of(outcomes.begin(), outcomes.end(), [](const Outcome& o) {
    return o.verdict == Verdict::accept && o.masqueraded;
  });
}

bool TraceResult::all_masqueraded() const {
  bool any_accepted = false;
  for (const auto& o : outcomes) {
    if (o.verdict != Verdict::accept) continue;
    any_accepted = true;
    if (!o.masqueraded) return false;
  }
  return any_accepted;
}

bool TraceResult::all(Verdict verdict) const {
  return !outcomes.empty() && std::all_of(outcomes.begin(), outcomes.end(),
                                          [&](const Outcome& o) { return o.verdict == verdict; });
}

bool TraceResult::any(Verdict verdict) const {
  return std::any_of(outcomes.begin(), outcomes.end(),
                     [&](const Outcome& o) { return o.verdict == verdict; });
}

double TraceResult::total_probability() const {
  double p = 0;
  for (const auto& o : outcomes)
    p += o.probability;
  return p;
}

std::string TraceResult::describe() const {
  std::ostringstream out;
  for (const auto& o : outcomes) {
    out << "p=" << o.probability << " " << to_string(o.verdict);
    if (o.verdict == Verdict::accept) out << " to " << o.endpoint();
    if (o.verdict == Verdict::reject) out << " (" << o.reject_with << ")";
    out << (o.masqueraded ? " masqueraded" : "") << (o.local_delivery ? " local" : "") << " mark=0x"
        << std::hex << o.mark << std::dec << "\n  chains:";
    for (const auto& c : o.chains)
      out << " " << c;
    out << "\n";
    for (const auto& r : o.rules)
      out << "  " << r << "\n";
  }
  return out.str();
}

TraceResult trace(const IptablesModel& model, const Packet& packet, const TraceEnv& env) {
  if (!packet.source.is_v4() || !packet.destination.is_v4()) {
    fail("trace: only IPv4 packets are modelled");
  }
  return Tracer(model, packet, env).run();
}

}  // namespace flatnet::testing
