#pragma once

// The seam between iptables mode and the iptables binaries: restore a ruleset, save a table, run
// one command. The real one executes iptables-restore / iptables-save / iptables of the chosen
// backend (nft or legacy); tests pass a recording fake.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "flatnet/proxy/config.hpp"

namespace flatnet::proxy::iptables {

struct CommandResult {
  int status = 0;      // exit status; 0 is success
  std::string output;  // stdout
  std::string error;   // stderr, as the tool printed it
  bool ok() const { return status == 0; }
};

class Iptables {
 public:
  virtual ~Iptables() = default;
  // "nft" or "legacy".
  virtual std::string backend() const = 0;
  // iptables-restore --noflush --wait with `text` on stdin: one atomic transaction.
  virtual CommandResult restore(const std::string& text) = 0;
  // iptables-save -t `table`.
  virtual CommandResult save(const std::string& table) = 0;
  // iptables --wait with `args` ("-t", "nat", "-C", "PREROUTING", ...).
  virtual CommandResult run(const std::vector<std::string>& args) = 0;
};

// The binaries of `backend`, looked up in /usr/sbin, /sbin and PATH. `automatic` detects the
// system's choice as kube-proxy's images do (iptables-wrapper): the backend whose tables already
// hold Kubernetes chains or more rules, else the one `iptables` itself runs. Throws
// std::runtime_error naming the binary that is missing.
std::unique_ptr<Iptables> make_iptables(IptablesBackend backend);

// The backend `iptables` points to on this system ("nft" unless it runs xtables-legacy-multi).
IptablesBackend system_default_backend();

// iptables-nft 1.8.x restoring with --noflush records the name of every chain a line of the
// transaction names (its own chain, a jump target) in a sorted linked list, so that it can later
// fetch just those chains: each line walks the list from its start. A transaction that names n
// chains then costs about n^2/2 string compares: 2,000 services took 5.9 s here against 0.65 s
// for the same text without --noflush, 5,000 services minutes. A command that names no chain
// turns that list off (the cache is then the whole table); "-S" is the one without side effects:
// it reads the table and prints it.
// Measured with Debian 12's iptables 1.8.9 (docs/benchmarks.md): 10,000 services then load as
// fast as without --noflush.

// The list steps iptables-nft-restore --noflush spends on the chain names of one table's block
// (the lines between "*table" and "COMMIT"): for each name looked up, the names before it in the
// list, plus one. Counting stops soon after the count passes `stop_above`.
std::uint64_t nft_chain_list_steps(std::string_view block, std::uint64_t stop_above = UINT64_MAX);

// Blocks above this many steps (about 0.5 s here) get the "-S": listing a table of 10,000
// services (230,000 lines) costs about 1.6 s, and nothing at all when the table is empty.
inline constexpr std::uint64_t kNftFullCacheSteps = 25'000'000;

// `text` with a "-S" line after each "*table" line whose block costs more than `threshold` steps,
// preceded by a line for each built-in chain of the table (":PREROUTING - [0:0]": it creates the
// chain if missing and changes nothing else; the listing would otherwise show a missing built-in
// chain as present, and a rule for it would then fail). `inserted` receives the 1-based line
// numbers, in the returned text, of the lines added.
std::string with_full_table_cache(std::string_view text, std::uint64_t threshold,
                                  std::vector<std::size_t>& inserted);

// iptables-restore's error text with its line numbers ("line 12 failed", "Error occurred at line:
// 12") mapped back to the text before the lines in `inserted` were added.
std::string renumber_lines(std::string_view error, const std::vector<std::size_t>& inserted);

}  // namespace flatnet::proxy::iptables
