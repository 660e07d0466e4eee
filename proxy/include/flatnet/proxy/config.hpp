#pragma once

// flatnet-proxy's settings: kube-proxy's flags and the KubeProxyConfiguration fields that hold the
// same values. Parsed once at startup; every mode reads the settings it needs from here.

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "flatnet/netmodel/address.hpp"
#include "flatnet/netmodel/socket_address.hpp"

namespace flatnet::proxy {

enum class ProxyMode { iptables, userspace };
// "iptables", "userspace".
std::string to_string(ProxyMode mode);

// Which iptables binaries the iptables mode runs: auto detects the system's choice as kube-proxy
// does (the backend that already holds rules, else the one `iptables` points to).
enum class IptablesBackend { automatic, nft, legacy };
std::string to_string(IptablesBackend backend);

struct ProxyConfig {
  ProxyMode mode = ProxyMode::iptables;
  // --source file:PATH: the Services and EndpointSlices this proxy follows.
  std::string source_path{};
  // --hostname-override; empty means the machine's hostname.
  std::string hostname{};
  // --cluster-cidr: traffic to a ClusterIP from outside it is masqueraded. Unset: no such rule.
  std::optional<netmodel::IpPrefix> cluster_cidr{};
  bool masquerade_all = false;
  // --iptables-masquerade-bit (0..31, default 14): the fwmark bit KUBE-MARK-MASQ sets.
  unsigned masquerade_bit = 14;
  // --nodeport-addresses: node ports answer only on node addresses inside these CIDRs; empty means
  // every local address.
  std::vector<netmodel::IpPrefix> nodeport_addresses{};
  std::chrono::milliseconds sync_period{std::chrono::seconds(30)};
  std::chrono::milliseconds min_sync_period{std::chrono::seconds(1)};
  IptablesBackend iptables_backend = IptablesBackend::automatic;
  // --healthz-bind-address / --metrics-bind-address; port 0 disables the server.
  std::string healthz_bind_address = "0.0.0.0:10256";
  std::string metrics_bind_address = "127.0.0.1:10249";
  // --cleanup: remove what the proxy created and exit.
  bool cleanup = false;
  int verbosity = 0;
};

// --- parsing: kube-proxy's flags and its KubeProxyConfiguration file
// ------------------------------

// A bad flag, flag value or configuration file. what() is one line naming the flag (`--proxy-mode:
// "ipvs" is not supported ...`) or the file, line, column and field (`proxy.yaml:7:3:
// iptables.masqueradeBit: 40 is out of range 0..31`).
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr std::uint16_t kDefaultHealthzPort = 10256;
inline constexpr std::uint16_t kDefaultMetricsPort = 10249;
inline constexpr std::string_view kConfigApiVersion = "kubeproxy.config.k8s.io/v1alpha1";

// A Go duration ("30s", "1m30s", "500ms", "1.5h", "0"; units ns, us, µs, ms, s, m, h), kept to
// the millisecond (finer parts are dropped). Throws std::invalid_argument saying what is wrong.
std::chrono::milliseconds parse_duration(std::string_view text);
// Go's form of a duration: "1m30s", "500ms", "0s".
std::string format_duration(std::chrono::milliseconds duration);

// Where a server listens. Port 0: the server is off.
struct BindAddress {
  netmodel::IpAddress ip{};
  std::uint16_t port = 0;
  bool enabled() const { return port != 0; }
  // "0.0.0.0:10256", "[::]:10256".
  std::string to_string() const;
};
// "IP:PORT", "[IPv6]:PORT", or a bare IP meaning `default_port` (as kube-proxy reads
// --healthz-bind-address); "" and port 0 turn the server off. Throws std::invalid_argument.
BindAddress parse_bind_address(std::string_view text, std::uint16_t default_port);

// What the command line asks for.
struct CommandLine {
  enum class Action { run, help, version };
  Action action = Action::run;
  ProxyConfig config{};
  // Warnings about the configuration file (known KubeProxyConfiguration fields that flatnet-proxy
  // does not use), each `proxy.yaml:4:1: warning: conntrack: not supported by flatnet-proxy;
  // ignored`.
  std::vector<std::string> warnings{};
};

// Parses the arguments (without the program name). --config FILE is read first and flags given
// on the command line override its values. Validates the result: --source is required unless
// --cleanup is given. Throws ConfigError.
CommandLine parse_command_line(const std::vector<std::string>& args);

// Applies a KubeProxyConfiguration document to `config`: only the fields it sets change. `origin`
// names it in errors. Unknown fields are errors; known fields flatnet-proxy does not use are
// returned as warnings. Throws ConfigError.
std::vector<std::string> apply_config_file(std::string_view yaml, const std::string& origin,
                                           ProxyConfig& config);

// Checks the relations between settings (sync periods, --source). Throws ConfigError.
void validate(const ProxyConfig& config);

// The --help text: every flag, its default and the configuration file's fields.
std::string usage();
// "flatnet-proxy 0.1.0".
std::string version_text();

}  // namespace flatnet::proxy
