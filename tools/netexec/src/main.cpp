// flatnet-netexec: the pod workload. Flags in, the library's server out (see --help).

#include <cstdio>
#include <exception>
#include <span>

#include "flatnet/netexec/options.hpp"
#include "flatnet/netexec/server.hpp"

int main(int argc, char** argv) {
  using namespace flatnet::netexec;
  Command command;
  try {
    command = parse_command_line(std::span<const char* const>(argv + 1, argc - 1));
  } catch (const UsageError& e) {
    std::fprintf(stderr, "flatnet-netexec: %s\n", e.what());
    return 2;
  }
  switch (command.action) {
    case Command::Action::help:
      std::fputs(usage().c_str(), stdout);
      return 0;
    case Command::Action::version:
      std::puts("flatnet-netexec " FLATNET_VERSION);
      return 0;
    case Command::Action::serve:
      break;
  }
  try {
    return serve(command.options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "flatnet-netexec: %s\n", e.what());
    return 1;
  }
}
