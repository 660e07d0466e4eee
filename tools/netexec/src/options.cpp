#include "flatnet/netexec/options.hpp"

#include <fcntl.h>

#include <algorithm>
#include <charconv>
#include <optional>
#include <string_view>

#include "flatnet/netexec/http.hpp"
#include "flatnet/netmodel/error.hpp"

namespace flatnet::netexec {
namespace {

using netmodel::quote;

[[noreturn]] void bad_value(std::string_view flag, std::string_view value, std::string_view why) {
  throw UsageError("invalid value " + quote(value) + " for --" + std::string(flag) + ": " +
                   std::string(why));
}

std::optional<int> parse_int(std::string_view text) {
  int value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::uint16_t parse_port(std::string_view flag, std::string_view value, std::string_view text) {
  const auto port = parse_int(text);
  if (!port || *port < 1 || *port > 65535) {
    bad_value(flag, value, "expected a port number from 1 to 65535");
  }
  return static_cast<std::uint16_t>(*port);
}

void sort_unique(std::vector<std::uint16_t>& ports) {
  std::sort(ports.begin(), ports.end());
  ports.erase(std::unique(ports.begin(), ports.end()), ports.end());
}

}  // namespace

Command parse_command_line(std::span<const char* const> args) {
  Command command;
  Options& options = command.options;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg.size() < 2 || arg.front() != '-') {
      throw UsageError("unexpected argument " + quote(arg) + ": flatnet-netexec takes only flags");
    }
    std::string_view name = arg.substr(arg[1] == '-' ? 2 : 1);
    std::optional<std::string_view> inline_value;
    if (const auto eq = name.find('='); eq != std::string_view::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }

    auto no_value = [&] {
      if (inline_value) throw UsageError("flag --" + std::string(name) + " takes no value");
    };
    if (name == "help" || name == "h") {
      no_value();
      command.action = Command::Action::help;
      continue;
    }
    if (name == "version") {
      no_value();
      command.action = Command::Action::version;
      continue;
    }
    if (name == "verbose" || name == "v") {
      no_value();
      options.verbose = true;
      continue;
    }

    static constexpr std::string_view kWithValue[] = {"http-port", "udp-port", "port", "hostname",
                                                      "ready-fd"};
    if (std::find(std::begin(kWithValue), std::end(kWithValue), name) == std::end(kWithValue)) {
      throw UsageError("unknown flag " + quote(arg) + " (see --help)");
    }
    std::string_view value;
    if (inline_value) {
      value = *inline_value;
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      throw UsageError("flag --" + std::string(name) + " needs a value");
    }

    if (name == "http-port") {
      options.http_ports.push_back(parse_port(name, value, value));
    } else if (name == "udp-port") {
      options.udp_ports.push_back(parse_port(name, value, value));
    } else if (name == "port") {
      // A containerPort: "8080/tcp", "53/UDP", or "8080" (TCP, Kubernetes' default protocol).
      const auto slash = value.find('/');
      const std::string_view protocol =
          slash == std::string_view::npos ? std::string_view("tcp") : value.substr(slash + 1);
      const std::uint16_t port = parse_port(name, value, value.substr(0, slash));
      if (iequals_ascii(protocol, "tcp")) {
        options.http_ports.push_back(port);
      } else if (iequals_ascii(protocol, "udp")) {
        options.udp_ports.push_back(port);
      } else {
        bad_value(name, value, "protocol " + quote(protocol) + " is not supported (tcp or udp)");
      }
    } else if (name == "hostname") {
      if (value.empty()) bad_value(name, value, "the hostname may not be empty");
      if (std::any_of(value.begin(), value.end(),
                      [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
        bad_value(name, value, "control characters are not allowed");
      }
      options.hostname = std::string(value);
    } else {  // ready-fd
      const auto fd = parse_int(value);
      if (!fd || *fd < 0) bad_value(name, value, "expected a file descriptor number");
      if (*fd == 2) bad_value(name, value, "stderr carries the log");
      if (::fcntl(*fd, F_GETFD) < 0) bad_value(name, value, "not an open file descriptor");
      options.ready_fd = *fd;
    }
  }
  if (options.http_ports.empty() && options.udp_ports.empty()) {
    options.http_ports.push_back(kDefaultHttpPort);
    options.udp_ports.push_back(kDefaultUdpPort);
  }
  sort_unique(options.http_ports);
  sort_unique(options.udp_ports);
  return command;
}

std::string usage() {
  return R"(usage: flatnet-netexec [flags]

The pod workload of flatnet, answering as Kubernetes' agnhost netexec does: HTTP on every TCP
port, one-datagram commands on every UDP port, on all addresses (IPv4 and IPv6).

flags:
  --http-port N        serve HTTP on TCP port N (repeatable)
  --udp-port N         serve UDP commands on port N (repeatable)
  --port N/tcp|N/udp   a containerPort: HTTP for tcp, UDP commands for udp (repeatable)
                       (with no port flag at all: --http-port 8080 --udp-port 8081)
  --hostname NAME      what /hostname and "hostname" answer (default: the system hostname)
  --ready-fd N         once every port is bound, write "ready\n" to descriptor N and close it
  -v, --verbose        log every request to stderr
  -h, --help           print this help
  --version            print the version

HTTP (GET or HEAD): /  /hostname  /clientip  /echo?msg=M  /header?key=K  /healthz
  /dial?host=H&port=P&protocol=http|udp&request=R&tries=N  (JSON {"errors":[],"responses":[]})
  /exit?code=N
UDP datagrams: "hostname", "clientip", "echo <msg>"

exit status: 0 after SIGTERM or SIGINT, N after /exit?code=N, 1 when a port cannot be bound,
2 for a bad command line.
)";
}

}  // namespace flatnet::netexec
