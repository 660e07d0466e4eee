#include "flatnet/cni/masquerade.hpp"

#include <optional>
#include <sstream>

#include "flatnet/cni/error.hpp"
#include "flatnet/cni/exec.hpp"

namespace flatnet::cni {
namespace {

using netmodel::Family;
using netmodel::IpPrefix;

const std::vector<std::string> kToolDirs = {"/usr/sbin", "/sbin", "/usr/bin", "/bin"};

std::string tool(Family family, const char* what) {
  return std::string(family == Family::v4 ? "iptables-" : "ip6tables-") + what;
}

// iptables-save -t nat of one family; nullopt when that family's tables cannot be read (no
// IPv6 on this host, or no such tool).
std::optional<std::string> save_nat(Family family) {
  const std::string name = tool(family, "save");
  try {
    const ExecOutput out = exec_program(find_plugin(name, kToolDirs), {}, "", {"-t", "nat"});
    if (out.status != 0) return std::nullopt;
    return out.out;
  } catch (const CniError&) {
    return std::nullopt;
  }
}

void restore(Family family, const std::string& input) {
  if (input.empty()) return;
  const std::string name = tool(family, "restore");
  const ExecOutput out =
      exec_program(find_plugin(name, kToolDirs), {}, input, {"--noflush", "-w", "5"});
  if (out.status != 0) {
    throw CniError(ErrorCode::plugin_failure,
                   name + " failed: " + out.err + "(input:\n" + input + ")");
  }
}

// The rule lines of `existing` that jump to `chain` from POSTROUTING.
std::vector<std::string> jumps_to(const std::string& chain, const std::string& existing) {
  std::vector<std::string> lines;
  std::istringstream in(existing);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("-A POSTROUTING ", 0) == 0 && line.size() > chain.size() + 4 &&
        line.compare(line.size() - chain.size() - 4, std::string::npos, " -j " + chain) == 0) {
      lines.push_back(line);
    }
  }
  return lines;
}

bool chain_exists(const std::string& chain, const std::string& existing) {
  return existing.find("\n:" + chain + " ") != std::string::npos ||
         existing.rfind(":" + chain + " ", 0) == 0;
}

std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::string masquerade_chain(const MasqueradeOwner& owner) {
  // FNV-1a, 64 bits: stable across builds and machines (std::hash is not). The parts are joined
  // with characters none of them can hold.
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (const char c : owner.network + "/" + owner.container_id + "/" + owner.ifname) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ull;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string chain = "FLATNET-";
  for (int shift = 60; shift >= 0; shift -= 4)
    chain += kHex[(hash >> shift) & 0xf];
  return chain;
}

std::string masquerade_comment(const MasqueradeOwner& owner) {
  return "name: \"" + owner.network + "\" id: \"" + owner.container_id + "\" ifname: \"" +
         owner.ifname + "\"";
}

std::string render_masquerade_setup(const MasqueradeOwner& owner,
                                    const std::vector<IpPrefix>& addresses,
                                    const std::string& existing) {
  const std::string chain = masquerade_chain(owner);
  const std::string comment = "-m comment --comment " + quoted(masquerade_comment(owner));
  std::string out = "*nat\n:" + chain + " - [0:0]\n";  // declaring the chain also flushes it
  for (const auto& line : jumps_to(chain, existing))
    out += "-D" + line.substr(2) + "\n";
  for (const auto& a : addresses) {
    const bool v4 = a.family() == Family::v4;
    out += "-A POSTROUTING -s " + IpPrefix::host(a.address()).to_string() + " " + comment + " -j " +
           chain + "\n";
    out += "-A " + chain + " -d " + a.network().to_string() + " " + comment + " -j ACCEPT\n";
    out += "-A " + chain + " ! -d " + (v4 ? "224.0.0.0/4" : "ff00::/8") + " " + comment +
           " -j MASQUERADE\n";
  }
  return out + "COMMIT\n";
}

std::string render_masquerade_teardown(const MasqueradeOwner& owner, const std::string& existing) {
  const std::string chain = masquerade_chain(owner);
  const auto jumps = jumps_to(chain, existing);
  if (jumps.empty() && !chain_exists(chain, existing)) return "";
  std::string out = "*nat\n";
  for (const auto& line : jumps)
    out += "-D" + line.substr(2) + "\n";
  if (chain_exists(chain, existing)) out += "-F " + chain + "\n-X " + chain + "\n";
  return out + "COMMIT\n";
}

std::set<MasqueradeOwner> masquerade_owners(const std::string& existing) {
  // iptables-save writes the comment back as --comment "name: \"n\" id: \"c\" ifname: \"i\"".
  std::set<MasqueradeOwner> owners;
  std::istringstream in(existing);
  std::string line;
  auto field = [](const std::string& text, const std::string& key, std::size_t from,
                  std::size_t* end) -> std::optional<std::string> {
    const std::string open = key + ": \\\"";
    const auto begin = text.find(open, from);
    if (begin == std::string::npos) return std::nullopt;
    const auto value_begin = begin + open.size();
    const auto value_end = text.find("\\\"", value_begin);
    if (value_end == std::string::npos) return std::nullopt;
    *end = value_end + 2;
    return text.substr(value_begin, value_end - value_begin);
  };
  while (std::getline(in, line)) {
    if (line.rfind("-A POSTROUTING ", 0) != 0 || line.find(" -j FLATNET-") == std::string::npos) {
      continue;
    }
    const auto comment = line.find("--comment \"");
    if (comment == std::string::npos) continue;
    std::size_t at = comment;
    const auto network = field(line, "name", at, &at);
    const auto id = network ? field(line, "id", at, &at) : std::nullopt;
    const auto ifname = id ? field(line, "ifname", at, &at) : std::nullopt;
    if (ifname) owners.insert({*network, *id, *ifname});
  }
  return owners;
}

void setup_masquerade(const MasqueradeOwner& owner, const std::vector<IpPrefix>& addresses) {
  for (const Family family : {Family::v4, Family::v6}) {
    std::vector<IpPrefix> of_family;
    for (const auto& a : addresses) {
      if (a.family() == family) of_family.push_back(a);
    }
    if (of_family.empty()) continue;
    const auto existing = save_nat(family);
    if (!existing) {
      throw CniError(ErrorCode::plugin_failure,
                     tool(family, "save") + " cannot read the nat table of this namespace");
    }
    restore(family, render_masquerade_setup(owner, of_family, *existing));
  }
}

void teardown_masquerade(const MasqueradeOwner& owner) {
  for (const Family family : {Family::v4, Family::v6}) {
    if (const auto existing = save_nat(family)) {
      restore(family, render_masquerade_teardown(owner, *existing));
    }
  }
}

void gc_masquerade(const std::string& network,
                   const std::set<std::pair<std::string, std::string>>& valid) {
  for (const Family family : {Family::v4, Family::v6}) {
    const auto existing = save_nat(family);
    if (!existing) continue;
    std::string input;
    for (const auto& owner : masquerade_owners(*existing)) {
      if (owner.network != network || valid.count({owner.container_id, owner.ifname})) continue;
      const std::string part = render_masquerade_teardown(owner, *existing);
      // Merge the transactions: strip each part's own "*nat\n" and "COMMIT\n".
      input += part.substr(5, part.size() - 5 - 7);
    }
    if (!input.empty()) restore(family, "*nat\n" + input + "COMMIT\n");
  }
}

}  // namespace flatnet::cni
