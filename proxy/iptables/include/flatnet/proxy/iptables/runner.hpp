#pragma once

// The seam between iptables mode and the iptables binaries: restore a ruleset, save a table, run
// one command. The real one executes iptables-restore / iptables-save / iptables of the chosen
// backend (nft or legacy); tests pass a recording fake.

#include <memory>
#include <string>
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

}  // namespace flatnet::proxy::iptables
