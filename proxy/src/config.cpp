#include "flatnet/proxy/config.hpp"

#include <algorithm>
#include <boost/program_options.hpp>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "flatnet/netmodel/error.hpp"
#include "flatnet/netmodel/yaml.hpp"

namespace flatnet::proxy {

namespace po = boost::program_options;
using netmodel::edit_distance;
using netmodel::IpAddress;
using netmodel::IpPrefix;
using netmodel::quote;
using nlohmann::json;

std::string to_string(ProxyMode mode) {
  switch (mode) {
    case ProxyMode::iptables:
      return "iptables";
    case ProxyMode::userspace:
      return "userspace";
  }
  return "iptables";
}

std::string to_string(IptablesBackend backend) {
  switch (backend) {
    case IptablesBackend::automatic:
      return "auto";
    case IptablesBackend::nft:
      return "nft";
    case IptablesBackend::legacy:
      return "legacy";
  }
  return "auto";
}

namespace {

std::string trim(std::string_view s) {
  const auto is_space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  while (!s.empty() && is_space(s.front()))
    s.remove_prefix(1);
  while (!s.empty() && is_space(s.back()))
    s.remove_suffix(1);
  return std::string(s);
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::vector<std::string> split_commas(std::string_view text) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string part = trim(text.substr(start, comma - start));
    if (!part.empty()) parts.push_back(part);
    start = comma + 1;
  }
  return parts;
}

ProxyMode parse_mode(std::string_view text) {
  if (text.empty() || text == "iptables") return ProxyMode::iptables;
  if (text == "userspace") return ProxyMode::userspace;
  throw std::invalid_argument(quote(text) +
                              " is not a proxy mode flatnet-proxy has (iptables or userspace)");
}

IptablesBackend parse_backend(std::string_view text) {
  if (text == "auto") return IptablesBackend::automatic;
  if (text == "nft") return IptablesBackend::nft;
  if (text == "legacy") return IptablesBackend::legacy;
  throw std::invalid_argument(quote(text) + " is not auto, nft or legacy");
}

// Go's strconv.ParseBool, as pflag reads --flag=VALUE.
bool parse_flag_bool(std::string_view text) {
  static const std::set<std::string_view> kTrue = {"1", "t", "T", "true", "TRUE", "True"};
  static const std::set<std::string_view> kFalse = {"0", "f", "F", "false", "FALSE", "False"};
  if (kTrue.contains(text)) return true;
  if (kFalse.contains(text)) return false;
  throw std::invalid_argument(quote(text) + " is not true or false");
}

unsigned checked_masquerade_bit(long long bit, const std::string& shown) {
  if (bit < 0 || bit > 31) throw std::invalid_argument(shown + " is out of range 0..31");
  return static_cast<unsigned>(bit);
}

unsigned parse_masquerade_bit(std::string_view text) {
  long long bit = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), bit);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    throw std::invalid_argument(quote(text) + " is not an integer");
  }
  return checked_masquerade_bit(bit, std::string(text));
}

// One IPv4 CIDR from a comma list (kube-proxy takes one per family; this proxy is IPv4 only).
// IPv6 entries are left out, with a warning.
std::optional<IpPrefix> parse_cluster_cidr(std::string_view text,
                                           std::vector<std::string>& warnings,
                                           const std::string& where) {
  std::optional<IpPrefix> chosen;
  for (const auto& part : split_commas(text)) {
    IpPrefix prefix;
    try {
      prefix = IpPrefix::parse(part);
    } catch (const netmodel::AddressError& e) {
      throw std::invalid_argument(quote(part) + " is not a CIDR: " + e.what());
    }
    if (prefix.family() != netmodel::Family::v4) {
      warnings.push_back(where + ": warning: " + quote(part) +
                         " is IPv6 and flatnet-proxy programs IPv4 only; ignored");
      continue;
    }
    if (chosen) {
      throw std::invalid_argument(quote(std::string(text)) +
                                  " holds more than one IPv4 CIDR (one per family)");
    }
    chosen = prefix.network();
  }
  return chosen;
}

std::vector<IpPrefix> parse_cidr_list(const std::vector<std::string>& parts) {
  std::vector<IpPrefix> prefixes;
  for (const auto& part : parts) {
    try {
      prefixes.push_back(IpPrefix::parse(part).network());
    } catch (const netmodel::AddressError& e) {
      throw std::invalid_argument(quote(part) + " is not a CIDR: " + e.what());
    }
  }
  return prefixes;
}

std::string normalized_bind_address(std::string_view text, std::uint16_t default_port) {
  const BindAddress address = parse_bind_address(text, default_port);
  return address.enabled() ? address.to_string() : "";
}

// --- the configuration file ---

struct FieldRule {
  bool supported = true;
  std::string note{};  // for an unsupported field: why it is ignored
};

const std::map<std::string, FieldRule, std::less<>>& known_fields() {
  static const std::map<std::string, FieldRule, std::less<>> kFields = {
      {"apiVersion", {}},
      {"kind", {}},
      {"mode", {}},
      {"hostnameOverride", {}},
      {"clusterCIDR", {}},
      {"iptables", {}},
      {"iptables.masqueradeAll", {}},
      {"iptables.masqueradeBit", {}},
      {"iptables.syncPeriod", {}},
      {"iptables.minSyncPeriod", {}},
      {"iptables.localhostNodePorts", {false, "node ports are not served on localhost"}},
      {"nodePortAddresses", {}},
      {"healthzBindAddress", {}},
      {"metricsBindAddress", {}},
      {"bindAddress", {false, "not used by the iptables mode"}},
      {"bindAddressHardFail", {false, "not used"}},
      {"clientConnection", {false, "the proxy follows a file (--source), not an API server"}},
      {"configSyncPeriod", {false, "the source file is watched with inotify"}},
      {"conntrack", {false, "conntrack sysctls are left as they are"}},
      {"detectLocalMode", {false, "local traffic is detected by clusterCIDR"}},
      {"detectLocal", {false, "local traffic is detected by clusterCIDR"}},
      {"enableProfiling", {false, "no profiling handlers"}},
      {"featureGates", {false, "no feature gates"}},
      {"ipvs", {false, "no IPVS mode"}},
      {"nftables", {false, "no nftables mode yet"}},
      {"winkernel", {false, "Windows only"}},
      {"windowsRunAsService", {false, "Windows only"}},
      {"oomScoreAdj", {false, "the OOM score is left as it is"}},
      {"portRange", {false, "the userspace mode chooses its own ports"}},
      {"udpIdleTimeout", {false, "not used"}},
      {"showHiddenMetricsForAlphaFeatures", {false, "no hidden metrics"}},
      {"logging", {false, "use -v"}},
  };
  return kFields;
}

// The known field at the same level that `path` most likely misspells, or "".
std::string suggestion(const std::string& path) {
  const auto dot = path.rfind('.');
  const std::string prefix = dot == std::string::npos ? "" : path.substr(0, dot + 1);
  const std::string key = lower(dot == std::string::npos ? path : path.substr(dot + 1));
  for (const auto& [known, rule] : known_fields()) {
    if (known.size() <= prefix.size() || known.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string name = known.substr(prefix.size());
    if (name.find('.') != std::string::npos) continue;
    if (lower(name) == key || (key.size() >= 5 && edit_distance(lower(name), key) <= 2)) {
      return known;
    }
  }
  return "";
}

class FileReader {
 public:
  FileReader(const netmodel::YamlDocument& document, const std::string& origin)
      : document_(document), origin_(origin) {}

  [[noreturn]] void fail(const std::string& path, const std::string& message) const {
    throw ConfigError(where(document_.value_at(path)) + ": " + (path.empty() ? "" : path + ": ") +
                      message);
  }
  [[noreturn]] void fail_key(const std::string& path, const std::string& message) const {
    throw ConfigError(where(document_.key_at(path)) + ": " + message);
  }
  std::string where(netmodel::SourcePosition position) const {
    if (position.line == 0) return origin_;
    return origin_ + ":" + std::to_string(position.line) + ":" + std::to_string(position.column);
  }
  std::string warning(const std::string& path, const std::string& message) const {
    return where(document_.key_at(path)) + ": warning: " + path + ": " + message;
  }

  // Unknown fields are errors; known, unsupported ones warnings.
  void check_fields(const json& object, const std::string& prefix,
                    std::vector<std::string>& warnings) const {
    for (const auto& [key, value] : object.items()) {
      const std::string path = prefix.empty() ? key : prefix + "." + key;
      const auto it = known_fields().find(path);
      if (it == known_fields().end()) {
        const std::string hint = suggestion(path);
        fail_key(path, "unknown field " + quote(path) +
                           (hint.empty() ? "" : " (did you mean " + hint + "?)"));
      }
      if (!it->second.supported && !value.is_null()) {
        warnings.push_back(
            warning(path, "not supported by flatnet-proxy (" + it->second.note + "); ignored"));
      }
    }
  }

  // The value at `path`, nullptr when absent or null.
  const json* find(const json& object, const std::string& key) const {
    const auto it = object.find(key);
    if (it == object.end() || it->is_null()) return nullptr;
    return &*it;
  }

  std::optional<std::string> string_at(const json& object, const std::string& key,
                                       const std::string& path) const {
    const json* value = find(object, key);
    if (value == nullptr) return std::nullopt;
    if (!value->is_string()) fail(path, "must be a string, not " + value->dump());
    return value->get<std::string>();
  }

  template <typename Parse>
  void parse_at(const std::string& path, const std::string& text, Parse parse) const {
    try {
      parse(text);
    } catch (const std::invalid_argument& e) {
      fail(path, e.what());
    }
  }

 private:
  const netmodel::YamlDocument& document_;
  const std::string& origin_;
};

// "--flag=VALUE"-style problems: `--iptables-sync-period: "x" is not a duration ...`.
template <typename Parse>
void parse_flag(const std::string& flag, const std::string& text, Parse parse) {
  try {
    parse(text);
  } catch (const std::invalid_argument& e) {
    throw ConfigError("--" + flag + ": " + e.what());
  }
}

std::string read_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw ConfigError("--config: read " + quote(path) + ": " + std::strerror(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ConfigError("--config: read " + quote(path) + ": input/output error");
  return text.str();
}

po::options_description flag_descriptions() {
  po::options_description options("flags");
  // clang-format off
  options.add_options()
    ("source", po::value<std::string>()->value_name("file:PATH"),
     "where Services and EndpointSlices come from (required unless --cleanup): a JSON file "
     "(a List of them) that writers replace by renaming; changes are picked up at once")
    ("config", po::value<std::string>()->value_name("FILE"),
     "a KubeProxyConfiguration file (apiVersion kubeproxy.config.k8s.io/v1alpha1); flags given "
     "on the command line override its values")
    ("proxy-mode", po::value<std::string>()->value_name("MODE"),
     "iptables (default) or userspace (not built yet)")
    ("hostname-override", po::value<std::string>()->value_name("NAME"),
     "this node's name, which marks local endpoints (default: the machine's hostname)")
    ("cluster-cidr", po::value<std::string>()->value_name("CIDR"),
     "the pod network: traffic to a service IP from outside it is masqueraded (default: none)")
    ("masquerade-all", po::value<std::string>()->value_name("BOOL")->implicit_value("true"),
     "masquerade all traffic sent to service IPs (default: false)")
    ("iptables-masquerade-bit", po::value<std::string>()->value_name("N"),
     "the fwmark bit (0..31) that marks packets to masquerade (default: 14)")
    ("nodeport-addresses", po::value<std::string>()->value_name("CIDRS"),
     "comma-separated CIDRs: node ports answer only on node addresses inside them "
     "(default: every local address)")
    ("iptables-sync-period", po::value<std::string>()->value_name("DURATION"),
     "the longest time between full syncs of the rules, e.g. 30s, 1m30s (default: 30s)")
    ("iptables-min-sync-period", po::value<std::string>()->value_name("DURATION"),
     "the shortest time between syncs; changes arriving meanwhile are batched; 0 syncs at "
     "every change (default: 1s)")
    ("iptables-backend", po::value<std::string>()->value_name("auto|nft|legacy"),
     "the iptables binaries to run; auto takes the backend that already holds rules, else "
     "the system's iptables (default: auto)")
    ("healthz-bind-address", po::value<std::string>()->value_name("IP:PORT"),
     "where /healthz and /livez answer; a bare IP takes port 10256; port 0 or \"\" turns it off "
     "(default: 0.0.0.0:10256)")
    ("metrics-bind-address", po::value<std::string>()->value_name("IP:PORT"),
     "where /metrics, /healthz and /proxyMode answer; a bare IP takes port 10249; port 0 or \"\" "
     "turns it off (default: 127.0.0.1:10249)")
    ("cleanup", po::value<std::string>()->value_name("BOOL")->implicit_value("true"),
     "remove every rule and chain the proxy made, then exit (0 when all is gone, 1 otherwise)")
    ("v,v", po::value<std::string>()->value_name("N"),
     "log verbosity: 0 (default) to 4; -v 2 shows every sync, -v 4 every change")
    ("help,h", "show this help and exit")
    ("version", "print the version and exit");
  // clang-format on
  return options;
}

}  // namespace

// --- durations and addresses ---

std::chrono::milliseconds parse_duration(std::string_view text) {
  const std::string shown = quote(text);
  const auto bad = [&](const std::string& why) {
    return std::invalid_argument(shown + " is not a duration (" + why +
                                 "; e.g. 30s, 1m30s, 500ms)");
  };
  std::string_view s = text;
  bool negative = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s == "0") return std::chrono::milliseconds(0);
  if (s.empty()) throw bad("it is empty");
  // Sum in nanoseconds, as Go does; a long double keeps fractions of large units exact enough.
  long double total_ns = 0;
  while (!s.empty()) {
    std::size_t i = 0;
    std::string number;
    while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.'))
      number += s[i++];
    if (number.empty() || number == "." || std::count(number.begin(), number.end(), '.') > 1) {
      throw bad("expected a number at " + quote(s));
    }
    s.remove_prefix(i);
    std::size_t u = 0;
    while (u < s.size() && !((s[u] >= '0' && s[u] <= '9') || s[u] == '.'))
      ++u;
    const std::string_view unit = s.substr(0, u);
    s.remove_prefix(u);
    long double scale = 0;
    if (unit == "ns") {
      scale = 1;
    } else if (unit == "us" || unit == "\u00b5s" || unit == "\u03bcs") {
      scale = 1e3L;
    } else if (unit == "ms") {
      scale = 1e6L;
    } else if (unit == "s") {
      scale = 1e9L;
    } else if (unit == "m") {
      scale = 60e9L;
    } else if (unit == "h") {
      scale = 3600e9L;
    } else if (unit.empty()) {
      throw bad("missing unit after " + number);
    } else {
      throw bad("unknown unit " + quote(unit));
    }
    total_ns += std::strtold(number.c_str(), nullptr) * scale;
    if (total_ns > static_cast<long double>(std::numeric_limits<std::int64_t>::max())) {
      throw bad("it is too long");
    }
  }
  const auto ms = static_cast<std::int64_t>(total_ns / 1e6L);
  return std::chrono::milliseconds(negative ? -ms : ms);
}

std::string format_duration(std::chrono::milliseconds duration) {
  std::int64_t ms = duration.count();
  if (ms == 0) return "0s";
  std::string sign;
  if (ms < 0) {
    sign = "-";
    ms = -ms;
  }
  if (ms < 1000) return sign + std::to_string(ms) + "ms";
  const std::int64_t hours = ms / 3'600'000;
  const std::int64_t minutes = ms / 60'000 % 60;
  const std::int64_t seconds = ms / 1000 % 60;
  const std::int64_t millis = ms % 1000;
  std::string text = sign;
  if (hours > 0) text += std::to_string(hours) + "h";
  if (hours > 0 || minutes > 0) text += std::to_string(minutes) + "m";
  text += std::to_string(seconds);
  if (millis > 0) {
    char fraction[8];
    std::snprintf(fraction, sizeof fraction, ".%03lld", static_cast<long long>(millis));
    std::string f = fraction;
    while (f.back() == '0')
      f.pop_back();
    text += f;
  }
  return text + "s";
}

std::string BindAddress::to_string() const {
  const std::string host = ip.is_v6() ? "[" + ip.to_string() + "]" : ip.to_string();
  return host + ":" + std::to_string(port);
}

BindAddress parse_bind_address(std::string_view text, std::uint16_t default_port) {
  const std::string shown = quote(text);
  if (trim(text).empty()) return {};
  // A bare address (IPv6 without brackets included) takes the default port.
  if (const auto ip = IpAddress::try_parse(text)) return {.ip = *ip, .port = default_port};
  std::string_view host;
  std::string_view port;
  if (text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      throw std::invalid_argument(shown + " is not IP:PORT or [IPv6]:PORT");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      throw std::invalid_argument(shown + " is not an IP address or IP:PORT");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  const auto ip = IpAddress::try_parse(host);
  if (!ip || (text.front() == '[' && !ip->is_v6())) {
    throw std::invalid_argument(shown + ": " + quote(host) + " is not an IP address");
  }
  if (text.front() != '[' && ip->is_v6()) {
    throw std::invalid_argument(shown + ": write an IPv6 address with a port as [IPv6]:PORT");
  }
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535) {
    throw std::invalid_argument(shown + ": " + quote(port) + " is not a port number (0-65535)");
  }
  return {.ip = *ip, .port = static_cast<std::uint16_t>(value)};
}

// --- the configuration file ---

std::vector<std::string> apply_config_file(std::string_view yaml, const std::string& origin,
                                           ProxyConfig& config) {
  netmodel::YamlDocument document;
  try {
    document = netmodel::parse_yaml(yaml, origin);
  } catch (const netmodel::YamlError& e) {
    throw ConfigError(e.what());
  }
  const FileReader file(document, origin);
  const json& root = document.value;
  if (root.is_null()) file.fail("", "the file is empty: expected a KubeProxyConfiguration");
  if (!root.is_object()) file.fail("", "expected a KubeProxyConfiguration map, not " + root.dump());

  const auto api_version = file.string_at(root, "apiVersion", "apiVersion");
  if (!api_version) {
    file.fail("", "apiVersion is missing: expected " + std::string(kConfigApiVersion));
  }
  if (*api_version != kConfigApiVersion) {
    file.fail("apiVersion", quote(*api_version) + " is not supported: expected " +
                                std::string(kConfigApiVersion));
  }
  const auto kind = file.string_at(root, "kind", "kind");
  if (!kind) file.fail("", "kind is missing: expected KubeProxyConfiguration");
  if (*kind != "KubeProxyConfiguration") {
    file.fail("kind", quote(*kind) + " is not KubeProxyConfiguration");
  }

  std::vector<std::string> warnings;
  file.check_fields(root, "", warnings);
  ProxyConfig result = config;

  if (auto mode = file.string_at(root, "mode", "mode")) {
    file.parse_at("mode", *mode, [&](const std::string& t) { result.mode = parse_mode(t); });
  }
  if (auto hostname = file.string_at(root, "hostnameOverride", "hostnameOverride")) {
    result.hostname = lower(trim(*hostname));
  }
  if (auto cidr = file.string_at(root, "clusterCIDR", "clusterCIDR")) {
    file.parse_at("clusterCIDR", *cidr, [&](const std::string& t) {
      result.cluster_cidr =
          parse_cluster_cidr(t, warnings, file.where(document.value_at("clusterCIDR")));
    });
  }
  if (const json* list = file.find(root, "nodePortAddresses")) {
    if (!list->is_array())
      file.fail("nodePortAddresses", "must be a list of CIDRs, not " + list->dump());
    std::vector<IpPrefix> prefixes;
    for (std::size_t i = 0; i < list->size(); ++i) {
      const std::string path = "nodePortAddresses[" + std::to_string(i) + "]";
      const json& item = (*list)[i];
      if (!item.is_string()) file.fail(path, "must be a CIDR string, not " + item.dump());
      file.parse_at(path, item.get<std::string>(), [&](const std::string& t) {
        prefixes.push_back(parse_cidr_list({trim(t)}).front());
      });
    }
    result.nodeport_addresses = prefixes;
  }
  if (auto address = file.string_at(root, "healthzBindAddress", "healthzBindAddress")) {
    file.parse_at("healthzBindAddress", *address, [&](const std::string& t) {
      result.healthz_bind_address = normalized_bind_address(t, kDefaultHealthzPort);
    });
  }
  if (auto address = file.string_at(root, "metricsBindAddress", "metricsBindAddress")) {
    file.parse_at("metricsBindAddress", *address, [&](const std::string& t) {
      result.metrics_bind_address = normalized_bind_address(t, kDefaultMetricsPort);
    });
  }
  if (const json* iptables = file.find(root, "iptables")) {
    if (!iptables->is_object()) file.fail("iptables", "must be a map, not " + iptables->dump());
    file.check_fields(*iptables, "iptables", warnings);
    if (const json* all = file.find(*iptables, "masqueradeAll")) {
      if (!all->is_boolean()) {
        file.fail("iptables.masqueradeAll", "must be true or false, not " + all->dump());
      }
      result.masquerade_all = all->get<bool>();
    }
    if (const json* bit = file.find(*iptables, "masqueradeBit")) {
      if (!bit->is_number_integer()) {
        file.fail("iptables.masqueradeBit", "must be an integer, not " + bit->dump());
      }
      const long long value =
          bit->is_number_unsigned()
              ? static_cast<long long>(std::min<std::uint64_t>(
                    bit->get<std::uint64_t>(), std::numeric_limits<long long>::max()))
              : bit->get<long long>();
      file.parse_at("iptables.masqueradeBit", bit->dump(), [&](const std::string& t) {
        result.masquerade_bit = checked_masquerade_bit(value, t);
      });
    }
    const auto duration = [&](const char* key, std::chrono::milliseconds& target) {
      const std::string path = std::string("iptables.") + key;
      const json* value = file.find(*iptables, key);
      if (value == nullptr) return;
      if (!value->is_string()) {
        file.fail(path, "must be a duration string such as \"30s\", not " + value->dump());
      }
      file.parse_at(path, value->get<std::string>(),
                    [&](const std::string& t) { target = parse_duration(t); });
    };
    duration("syncPeriod", result.sync_period);
    duration("minSyncPeriod", result.min_sync_period);
  }
  config = result;
  return warnings;
}

// --- validation and the command line ---

void validate(const ProxyConfig& config) {
  if (!config.cleanup) {
    if (config.source_path.empty()) {
      throw ConfigError(
          "--source is required: the file of Services and EndpointSlices to follow, as "
          "file:PATH");
    }
  }
  if (config.sync_period <= std::chrono::milliseconds(0)) {
    throw ConfigError("--iptables-sync-period: " + format_duration(config.sync_period) +
                      " must be greater than 0");
  }
  if (config.min_sync_period < std::chrono::milliseconds(0)) {
    throw ConfigError("--iptables-min-sync-period: " + format_duration(config.min_sync_period) +
                      " must not be negative");
  }
  if (config.min_sync_period > config.sync_period) {
    throw ConfigError("--iptables-min-sync-period: " + format_duration(config.min_sync_period) +
                      " must not be longer than --iptables-sync-period " +
                      format_duration(config.sync_period));
  }
  if (config.masquerade_bit > 31) {
    throw ConfigError("--iptables-masquerade-bit: " + std::to_string(config.masquerade_bit) +
                      " is out of range 0..31");
  }
  if (config.verbosity < 0) {
    throw ConfigError("-v: " + std::to_string(config.verbosity) + " must not be negative");
  }
}

CommandLine parse_command_line(const std::vector<std::string>& args) {
  const po::options_description options = flag_descriptions();
  po::options_description all;
  all.add(options);
  all.add_options()("positional", po::value<std::vector<std::string>>(), "");
  po::positional_options_description positional;
  positional.add("positional", -1);
  // "--flag=" (an empty value, as pflag allows) becomes "--flag" "": program_options refuses it.
  std::vector<std::string> tokens;
  for (const auto& arg : args) {
    if (arg.size() > 3 && arg.starts_with("--") && arg.back() == '=' &&
        arg.find('=') == arg.size() - 1) {
      tokens.push_back(arg.substr(0, arg.size() - 1));
      tokens.emplace_back();
    } else {
      tokens.push_back(arg);
    }
  }
  po::variables_map vm;
  try {
    po::store(
        po::command_line_parser(tokens)
            .options(all)
            .positional(positional)
            .style(po::command_line_style::unix_style & ~po::command_line_style::allow_guessing)
            .run(),
        vm);
  } catch (const po::unknown_option& e) {
    throw ConfigError("unknown flag " + e.get_option_name() + " (see flatnet-proxy --help)");
  } catch (const po::error& e) {
    throw ConfigError(std::string(e.what()) + " (see flatnet-proxy --help)");
  }
  CommandLine result;
  if (vm.count("help")) {
    result.action = CommandLine::Action::help;
    return result;
  }
  if (vm.count("version")) {
    result.action = CommandLine::Action::version;
    return result;
  }
  if (vm.count("positional")) {
    throw ConfigError("unexpected argument " +
                      quote(vm["positional"].as<std::vector<std::string>>().front()) +
                      ": flatnet-proxy takes flags only (see flatnet-proxy --help)");
  }
  const auto given = [&](const char* name) -> const std::string* {
    return vm.count(name) ? &vm[name].as<std::string>() : nullptr;
  };

  ProxyConfig& config = result.config;
  if (const auto* path = given("config")) {
    if (path->empty()) throw ConfigError("--config: the file name is empty");
    result.warnings = apply_config_file(read_config_file(*path), *path, config);
  }
  if (const auto* text = given("source")) {
    parse_flag("source", *text, [&](const std::string& t) {
      constexpr std::string_view kScheme = "file:";
      if (t.rfind(kScheme, 0) != 0) {
        throw std::invalid_argument(quote(t) + " is not file:PATH (the only source there is)");
      }
      config.source_path = t.substr(kScheme.size());
      if (config.source_path.empty()) throw std::invalid_argument(quote(t) + " names no file");
    });
  }
  if (const auto* text = given("proxy-mode")) {
    parse_flag("proxy-mode", *text, [&](const std::string& t) { config.mode = parse_mode(t); });
  }
  if (const auto* text = given("hostname-override")) config.hostname = lower(trim(*text));
  if (const auto* text = given("cluster-cidr")) {
    parse_flag("cluster-cidr", *text, [&](const std::string& t) {
      config.cluster_cidr = parse_cluster_cidr(t, result.warnings, "--cluster-cidr");
    });
  }
  if (const auto* text = given("masquerade-all")) {
    parse_flag("masquerade-all", *text,
               [&](const std::string& t) { config.masquerade_all = parse_flag_bool(t); });
  }
  if (const auto* text = given("iptables-masquerade-bit")) {
    parse_flag("iptables-masquerade-bit", *text,
               [&](const std::string& t) { config.masquerade_bit = parse_masquerade_bit(t); });
  }
  if (const auto* text = given("nodeport-addresses")) {
    parse_flag("nodeport-addresses", *text, [&](const std::string& t) {
      config.nodeport_addresses = parse_cidr_list(split_commas(t));
    });
  }
  if (const auto* text = given("iptables-sync-period")) {
    parse_flag("iptables-sync-period", *text,
               [&](const std::string& t) { config.sync_period = parse_duration(t); });
  }
  if (const auto* text = given("iptables-min-sync-period")) {
    parse_flag("iptables-min-sync-period", *text,
               [&](const std::string& t) { config.min_sync_period = parse_duration(t); });
  }
  if (const auto* text = given("iptables-backend")) {
    parse_flag("iptables-backend", *text,
               [&](const std::string& t) { config.iptables_backend = parse_backend(t); });
  }
  if (const auto* text = given("healthz-bind-address")) {
    parse_flag("healthz-bind-address", *text, [&](const std::string& t) {
      config.healthz_bind_address = normalized_bind_address(t, kDefaultHealthzPort);
    });
  }
  if (const auto* text = given("metrics-bind-address")) {
    parse_flag("metrics-bind-address", *text, [&](const std::string& t) {
      config.metrics_bind_address = normalized_bind_address(t, kDefaultMetricsPort);
    });
  }
  if (const auto* text = given("cleanup")) {
    parse_flag("cleanup", *text,
               [&](const std::string& t) { config.cleanup = parse_flag_bool(t); });
  }
  if (const auto* text = given("v")) {
    parse_flag("v", *text, [&](const std::string& t) {
      int level = 0;
      const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), level);
      if (t.empty() || ec != std::errc() || end != t.data() + t.size() || level < 0) {
        throw std::invalid_argument(quote(t) + " is not a verbosity level (0 or more)");
      }
      config.verbosity = level;
    });
  }
  validate(config);
  return result;
}

std::string usage() {
  std::ostringstream text;
  text << "flatnet-proxy: a kube-proxy for flatnet clusters and real nodes (iptables mode)\n"
          "\n"
          "usage: flatnet-proxy --source file:PATH [flags]\n"
          "       flatnet-proxy --cleanup [--iptables-backend B]\n"
          "\n"
          "It follows the Services and EndpointSlices in PATH and programs this node so that\n"
          "service IPs, node ports and external IPs reach ready endpoints. SIGTERM or SIGINT stop\n"
          "it and leave the rules in place; --cleanup removes them.\n"
          "\n"
       << flag_descriptions()
       << "\n"
          "configuration file (--config): apiVersion kubeproxy.config.k8s.io/v1alpha1, kind\n"
          "KubeProxyConfiguration; fields mode, hostnameOverride, clusterCIDR, nodePortAddresses\n"
          "(a list), healthzBindAddress, metricsBindAddress, iptables.masqueradeAll,\n"
          "iptables.masqueradeBit, iptables.syncPeriod, iptables.minSyncPeriod. Other\n"
          "KubeProxyConfiguration fields are accepted with a warning; unknown fields are errors.\n"
          "\n"
          "endpoints: /healthz and /livez (200, or 503 when a change has waited longer than twice\n"
          "the sync period), /metrics (Prometheus text), /proxyMode. Services with\n"
          "externalTrafficPolicy Local get their healthCheckNodePort answered (200 with local\n"
          "endpoints, 503 without).\n";
  return text.str();
}

std::string version_text() {
  return std::string("flatnet-proxy ") + FLATNET_VERSION;
}

}  // namespace flatnet::proxy
