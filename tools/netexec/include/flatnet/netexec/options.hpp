#pragma once

// The command line of flatnet-netexec. Parsed by hand: a thousand of these processes start
// during `flatnet up`, and the flags are few.
//
// Long flags take their value as "--flag VALUE" or "--flag=VALUE"; a single leading dash works
// too ("-http-port=8080"), as in agnhost command lines written for Go's flag package.

#include <chrono>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace flatnet::netexec {

// Ports served when the command line names none at all.
inline constexpr std::uint16_t kDefaultHttpPort = 8080;
inline constexpr std::uint16_t kDefaultUdpPort = 8081;

struct Options {
  std::vector<std::uint16_t> http_ports;  // sorted, no duplicates
  std::vector<std::uint16_t> udp_ports;   // sorted, no duplicates
  std::string hostname;                   // what /hostname answers; empty: gethostname()
  int ready_fd = -1;                      // where "ready\n" is written once listening; -1: none
  bool verbose = false;                   // one log line per request
  // Not flags; the library's users (and tests) may change them.
  std::chrono::milliseconds idle_timeout{30'000};  // a connection with nothing to do is closed
  std::chrono::milliseconds dial_timeout{5'000};   // per /dial exchange
};

// A bad command line; what() names the flag and the value.
class UsageError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

struct Command {
  enum class Action { serve, help, version };
  Action action = Action::serve;
  Options options;
};

// Parses the arguments after the program name. Throws UsageError. --ready-fd must name an open
// descriptor other than 2 (stderr carries the log).
Command parse_command_line(std::span<const char* const> args);

// The --help text.
std::string usage();

}  // namespace flatnet::netexec
