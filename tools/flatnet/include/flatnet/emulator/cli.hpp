#pragma once

// The `flatnet` command line: its verbs parse their flags and call the emulator library.

namespace flatnet::emulator {

// Runs one invocation; returns the exit status (0 success, 1 failure, 2 usage error).
int run_cli(int argc, char** argv);

}  // namespace flatnet::emulator
