#include <algorithm>
#include <fstream>
#include <sstream>

#include "flatnet/cni/error.hpp"
#include "flatnet/cni/ipam.hpp"

namespace flatnet::cni {
namespace {

using netmodel::IpAddress;
using netmodel::IpPrefix;
using nlohmann::json;

[[noreturn]] void invalid(const std::string& path, const json& value, const std::string& why) {
  throw CniError(ErrorCode::invalid_network_config,
                 "config field " + path + " = " + value.dump() + ": " + why, path);
}

IpAddress parse_address_field(const json& object, const char* key, const std::string& path) {
  const std::string text = get_string(object, key, "", path);
  try {
    return IpAddress::parse(text);
  } catch (const netmodel::AddressError& e) {
    invalid(path, object[key], e.what());
  }
}

// An address, or an address with a prefix length as runtimeConfig.ips carries them.
IpAddress parse_requested(const std::string& text, const std::string& path) {
  const auto slash = text.find('/');
  try {
    return slash == std::string::npos ? IpAddress::parse(text) : IpPrefix::parse(text).address();
  } catch (const netmodel::AddressError& e) {
    invalid(path, text, e.what());
  }
}

IpRange parse_range(const json& object, const std::string& path) {
  if (!object.is_object()) invalid(path, object, "expected an object");
  if (!object.contains("subnet")) invalid(path + ".subnet", json(), "required");
  IpRange r;
  const std::string subnet = get_string(object, "subnet", "", path + ".subnet");
  try {
    r.subnet = IpPrefix::parse_network(subnet);
  } catch (const netmodel::AddressError& e) {
    invalid(path + ".subnet", object["subnet"], e.what());
  }
  const bool v4 = r.subnet.family() == netmodel::Family::v4;
  if (r.subnet.host_bits() < 2) {
    invalid(path + ".subnet", object["subnet"],
            "too small to allocate from (at least a /" + std::to_string(v4 ? 30 : 126) + ")");
  }
  const IpAddress first = *r.subnet.network_address().next();
  const IpAddress last = v4 ? *r.subnet.broadcast().previous() : r.subnet.broadcast();
  auto inside = [&](const char* key, IpAddress fallback) {
    if (!object.contains(key) || object[key].is_null()) return fallback;
    const IpAddress a = parse_address_field(object, key, path + "." + key);
    if (!r.subnet.contains(a)) invalid(path + "." + key, object[key], "not in " + subnet);
    return a;
  };
  r.gateway = inside("gateway", first);
  r.range_start = inside("rangeStart", first);
  r.range_end = inside("rangeEnd", last);
  if (r.range_start > r.range_end) {
    invalid(path + ".rangeStart", object["rangeStart"],
            "after rangeEnd " + r.range_end.to_string());
  }
  return r;
}

Dns read_resolv_conf(const std::string& path) {
  std::ifstream file(path);
  if (!file) invalid("ipam.resolvConf", path, "cannot read the file");
  Dns dns;
  std::string line;
  while (std::getline(file, line)) {
    std::istringstream words(line);
    std::string key;
    words >> key;
    if (key.empty() || key[0] == '#' || key[0] == ';') continue;
    std::string value;
    if (key == "nameserver" && words >> value) dns.nameservers.push_back(value);
    if (key == "domain" && words >> value) dns.domain = value;
    if (key == "search") {
      // Every search line adds its domains, as host-local reads the file.
      while (words >> value)
        dns.search.push_back(value);
    }
    if (key == "options") {
      while (words >> value)
        dns.options.push_back(value);
    }
  }
  return dns;
}

// A requested address and the field it came from.
struct Requested {
  std::string text;
  std::string path;
};

// In host-local's order: CNI_ARGS IP= (comma separated), args.cni.ips, runtimeConfig.ips.
std::vector<Requested> requested_texts(const NetConf& conf, const Environment& env) {
  std::vector<Requested> texts;
  const std::string from_args = env.args.get("IP");
  for (std::size_t start = 0; !from_args.empty() && start <= from_args.size();) {
    const auto comma = from_args.find(',', start);
    std::string item = from_args.substr(start, comma - start);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    texts.push_back({item, "CNI_ARGS IP"});
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  auto list_at = [&](const json& parent, const char* key, const std::string& path) {
    if (!parent.is_object() || !parent.contains(key) || parent[key].is_null()) return;
    if (!parent[key].is_array()) invalid(path, parent[key], "expected a list of addresses");
    for (std::size_t i = 0; i < parent[key].size(); ++i) {
      const json& item = parent[key][i];
      const std::string item_path = path + "[" + std::to_string(i) + "]";
      if (!item.is_string()) invalid(item_path, item, "expected an address");
      texts.push_back({item.get<std::string>(), item_path});
    }
  };
  const json& raw = conf.raw;
  if (raw.contains("args") && raw["args"].is_object() && raw["args"].contains("cni")) {
    list_at(raw["args"]["cni"], "ips", "args.cni.ips");
  }
  if (raw.contains("runtimeConfig")) list_at(raw["runtimeConfig"], "ips", "runtimeConfig.ips");
  return texts;
}

// host-local's overlap test: the allocatable ranges, not the subnets (two ranges may share a
// subnet when their rangeStart-rangeEnd do not meet).
bool overlaps(const IpRange& a, const IpRange& b) {
  return a.subnet.family() == b.subnet.family() && a.range_start <= b.range_end &&
         b.range_start <= a.range_end;
}

}  // namespace

bool IpRange::contains(const IpAddress& address) const {
  return subnet.contains(address) && address >= range_start && address <= range_end;
}

netmodel::uint128 IpRange::usable() const {
  const netmodel::uint128 n = range_end.to_integer() - range_start.to_integer() + 1;
  return contains(gateway) ? n - 1 : n;
}

std::string IpRange::to_string() const {
  return subnet.to_string() + " (" + range_start.to_string() + "-" + range_end.to_string() + ")";
}

std::string to_string(const RangeSet& set) {
  std::string text;
  for (const auto& r : set)
    text += (text.empty() ? "" : ", ") + r.to_string();
  return text;
}

IpamConfig parse_ipam_config(const NetConf& conf, const Environment& env, IpamUse use) {
  const json& ipam = conf.raw.contains("ipam") ? conf.raw["ipam"] : json();
  if (!ipam.is_object()) invalid("ipam", ipam, "an ipam section is required");
  IpamConfig config;
  config.network = conf.name;
  // An empty dataDir means the default, as in host-local.
  const std::string data_dir = get_string(ipam, "dataDir", "", "ipam.dataDir");
  if (!data_dir.empty()) config.data_dir = data_dir;
  if (!config.data_dir.is_absolute()) {
    invalid("ipam.dataDir", ipam["dataDir"], "must be an absolute path");
  }

  // The legacy single range comes first, as host-local orders it. range_paths[i][j] is the
  // field path of range_sets[i][j].
  std::vector<std::vector<std::string>> range_paths;
  if (ipam.contains("subnet")) {
    config.range_sets.push_back({parse_range(ipam, "ipam")});
    range_paths.push_back({"ipam"});
  }
  if (ipam.contains("ranges") && !ipam["ranges"].is_null()) {
    const json& sets = ipam["ranges"];
    if (!sets.is_array()) invalid("ipam.ranges", sets, "expected a list of range sets");
    for (std::size_t i = 0; i < sets.size(); ++i) {
      const std::string path = "ipam.ranges[" + std::to_string(i) + "]";
      if (!sets[i].is_array() || sets[i].empty()) {
        invalid(path, sets[i], "expected a non-empty list of ranges");
      }
      RangeSet set;
      std::vector<std::string> paths;
      for (std::size_t j = 0; j < sets[i].size(); ++j) {
        paths.push_back(path + "[" + std::to_string(j) + "]");
        set.push_back(parse_range(sets[i][j], paths.back()));
      }
      config.range_sets.push_back(set);
      range_paths.push_back(paths);
    }
  }
  if (config.range_sets.empty()) {
    invalid("ipam.ranges", ipam.value("ranges", json()), "no address range given");
  }
  // Within a set: one family, no overlap. Across sets: no overlap either.
  std::vector<std::pair<IpRange, std::string>> seen;
  for (std::size_t i = 0; i < config.range_sets.size(); ++i) {
    const RangeSet& set = config.range_sets[i];
    for (std::size_t j = 0; j < set.size(); ++j) {
      const std::string& path = range_paths[i][j];
      if (set[j].subnet.family() != set[0].subnet.family()) {
        invalid(path + ".subnet", set[j].subnet.to_string(),
                "a range set cannot mix IPv4 and IPv6 (" + range_paths[i][0] + " is " +
                    set[0].subnet.to_string() + ")");
      }
      for (const auto& [other, other_path] : seen) {
        if (overlaps(other, set[j])) {
          invalid(path + ".subnet", set[j].subnet.to_string(),
                  "range " + set[j].to_string() + " overlaps " + other.to_string() + " of " +
                      other_path);
        }
      }
      seen.emplace_back(set[j], path);
    }
  }

  if (ipam.contains("routes") && !ipam["routes"].is_null()) {
    if (!ipam["routes"].is_array()) invalid("ipam.routes", ipam["routes"], "expected a list");
    for (std::size_t i = 0; i < ipam["routes"].size(); ++i) {
      const json& r = ipam["routes"][i];
      const std::string path = "ipam.routes[" + std::to_string(i) + "]";
      if (!r.is_object()) invalid(path, r, "expected an object");
      RouteEntry route;
      const std::string dst = get_string(r, "dst", "", path + ".dst");
      try {
        route.dst = IpPrefix::parse(dst).network();
      } catch (const netmodel::AddressError& e) {
        invalid(path + ".dst", r.value("dst", json()), dst.empty() ? "required" : e.what());
      }
      if (r.contains("gw") && !r["gw"].is_null()) {
        route.gw = parse_address_field(r, "gw", path + ".gw");
        if (route.gw->family() != route.dst.family()) {
          invalid(path + ".gw", r["gw"], "not the family of dst " + dst);
        }
      }
      config.routes.push_back(route);
    }
  }
  config.requested.resize(config.range_sets.size());
  if (use != IpamUse::add) return config;
  const std::string resolv = get_string(ipam, "resolvConf", "", "ipam.resolvConf");
  if (!resolv.empty()) config.dns = read_resolv_conf(resolv);

  // Each requested address goes to the range set whose ranges hold it (host-local's
  // RangeSet.Contains); the same address requested twice counts once.
  for (const auto& [text, path] : requested_texts(conf, env)) {
    const IpAddress address = parse_requested(text, path);
    std::size_t i = 0;
    while (i < config.range_sets.size() &&
           std::none_of(config.range_sets[i].begin(), config.range_sets[i].end(),
                        [&](const IpRange& r) { return r.contains(address); })) {
      ++i;
    }
    if (i == config.range_sets.size()) invalid(path, text, "not in any configured range");
    if (config.requested[i] && *config.requested[i] != address) {
      invalid(path, text,
              "range set " + to_string(config.range_sets[i]) + " already has requested IP " +
                  config.requested[i]->to_string());
    }
    config.requested[i] = address;
  }
  return config;
}

}  // namespace flatnet::cni
