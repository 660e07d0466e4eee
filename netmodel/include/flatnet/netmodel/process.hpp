#pragma once

// Running another program and talking to it through pipes: the CNI runtime runs plugins this way,
// flatnet-proxy runs iptables-restore, the benchmarks their peers.

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "flatnet/netmodel/netns.hpp"

namespace flatnet::netmodel {

struct ProcessOutput {
  int status = 0;  // exit status, or 128 + signal
  std::string out;
  std::string err;
};

// Runs `program` with `args` (argv[1...]), exactly `variables` as its environment (plus PATH
// from ours when absent) and `input` on stdin, and collects what it prints; inside `netns` when
// given (the child enters it before exec). The child is started with vfork, so starting it costs
// the same however big the caller is. Throws std::system_error naming the program when it
// cannot be started or its end cannot be learned.
ProcessOutput run_program(const std::filesystem::path& program,
                          const std::map<std::string, std::string>& variables,
                          const std::string& input, const std::vector<std::string>& args = {},
                          const NetNs* netns = nullptr);

}  // namespace flatnet::netmodel
