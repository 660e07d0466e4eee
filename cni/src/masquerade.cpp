#include "flatnet/cni/masquerade.hpp"

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

// iptables-save -t nat of one family ("" when the tool has nothing to say).
std::string save_nat(Family family) {
  const std::string name = tool(family, "save");
  const ExecOutput out = exec_program(find_plugin(name, kToolDirs), {}, "", {"-t", "nat"});
  if (out.status != 0) {
    throw CniError(ErrorCode::plugin_failure, name + " -t nat failed: " + out.err);
  }
  return out.out;
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

std::string masquerade_chain(const std::string& network, const std::string& container_id) {
  // FNV-1a, 64 bits: stable across builds and machines (std::hash is not).
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (const char c : network + "/" + container_id) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ull;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string chain = "FLATNET-";
  for (int shift = 60; shift >= 0; shift -= 4)
    chain += kHex[(hash >> shift) & 0xf];
  return chain;
}

std::string masquerade_comment(const std::string& network, const std::string& container_id) {
  return "name: \"" + network + "\" id: \"" + container_id + "\"";
}

std::string render_masquerade_setup(const std::string& network, const std::string& container_id,
                                    const std::vector<IpPrefix>& addresses,
                                    const std::string& existing) {
  const std::string chain = masquerade_chain(network, container_id);
  const std::string comment =
      "-m comment --comment " + quoted(masquerade_comment(network, container_id));
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

std::string render_masquerade_teardown(const std::string& network, const std::string& container_id,
                                       const std::string& existing) {
  const std::string chain = masquerade_chain(network, container_id);
  const auto jumps = jumps_to(chain, existing);
  if (jumps.empty() && !chain_exists(chain, existing)) return "";
  std::string out = "*nat\n";
  for (const auto& line : jumps)
    out += "-D" + line.substr(2) + "\n";
  if (chain_exists(chain, existing)) out += "-F " + chain + "\n-X " + chain + "\n";
  return out + "COMMIT\n";
}

std::set<std::pair<std::string, std::string>> masquerade_owners(const std::string& existing) {
  std::set<std::pair<std::string, std::string>> owners;
  std::istringstream in(existing);
  std::string line;
  const std::string marker = "--comment \"name: \\\"";
  while (std::getline(in, line)) {
    if (line.find(" -j FLATNET-") == std::string::npos) continue;
    const auto start = line.find(marker);
    if (start == std::string::npos) continue;
    const auto name_begin = start + marker.size();
    const auto name_end = line.find("\\\" id: \\\"", name_begin);
    if (name_end == std::string::npos) continue;
    const auto id_begin = name_end + 9;
    const auto id_end = line.find("\\\"", id_begin);
    if (id_end == std::string::npos) continue;
    owners.emplace(line.substr(name_begin, name_end - name_begin),
                   line.substr(id_begin, id_end - id_begin));
  }
  return owners;
}

void setup_masquerade(const std::string& network, const std::string& container_id,
                      const std::vector<IpPrefix>& addresses) {
  for (const Family family : {Family::v4, Family::v6}) {
    std::vector<IpPrefix> of_family;
    for (const auto& a : addresses) {
      if (a.family() == family) of_family.push_back(a);
    }
    if (of_family.empty()) continue;
    restore(family, render_masquerade_setup(network, container_id, of_family, save_nat(family)));
  }
}

void teardown_masquerade(const std::string& network, const std::string& container_id) {
  for (const Family family : {Family::v4, Family::v6}) {
    restore(family, render_masquerade_teardown(network, container_id, save_nat(family)));
  }
}

void gc_masquerade(const std::string& network, const std::set<std::string>& valid_ids) {
  for (const Family family : {Family::v4, Family::v6}) {
    const std::string existing = save_nat(family);
    std::string input;
    for (const auto& [owner_network, id] : masquerade_owners(existing)) {
      if (owner_network != network || valid_ids.count(id)) continue;
      const std::string part = render_masquerade_teardown(owner_network, id, existing);
      // Merge the transactions: strip each part's own "*nat" and "COMMIT".
      input += part.substr(5, part.size() - 5 - 7);
    }
    if (!input.empty()) restore(family, "*nat\n" + input + "COMMIT\n");
  }
}

}  // namespace flatnet::cni
