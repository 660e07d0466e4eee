#include "flatnet/cni/bridge.hpp"

#include <algorithm>
#include <functional>
#include <random>
#include <set>
#include <system_error>

#include "flatnet/cni/error.hpp"
#include "flatnet/cni/exec.hpp"
#include "flatnet/cni/failpoint.hpp"
#include "flatnet/cni/ipam.hpp"
#include "flatnet/cni/masquerade.hpp"
#include "flatnet/netmodel/error.hpp"
#include "flatnet/netmodel/netlink.hpp"
#include "flatnet/netmodel/sysctl.hpp"

namespace flatnet::cni {
namespace {

using netmodel::Family;
using netmodel::IpAddress;
using netmodel::IpPrefix;
using netmodel::LinkInfo;
using netmodel::MacAddress;
using netmodel::Netlink;
using netmodel::NetNs;
using nlohmann::json;

constexpr const char* kInProcessIpam = "flatnet-ipam";

// flatnet-cni is a single-threaded process that lives for one command: entering the container's
// namespace on the main thread (and leaving it right after) is safe there, and a thread per
// entry would cost more than the rest of the work on a busy machine.
constexpr netmodel::Enter kEnter = netmodel::Enter::calling_thread;

// Undo steps of a half-done ADD, run in reverse unless dismissed.
class Rollback {
 public:
  Rollback() = default;
  Rollback(const Rollback&) = delete;
  Rollback& operator=(const Rollback&) = delete;
  ~Rollback() {
    for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) {
      try {
        (*it)();
      } catch (...) {
        // Best effort: the original error is what the runtime must see.
      }
    }
  }
  void add(std::function<void()> step) { steps_.push_back(std::move(step)); }
  void dismiss() { steps_.clear(); }

 private:
  std::vector<std::function<void()>> steps_;
};

// Runs the configured IPAM for `command`: in this process when it is flatnet-ipam (same code,
// same on-disk state as the binary), else the plugin found in CNI_PATH.
// For ADD, `undo` becomes what gives back exactly what this call reserved: in-process that is only
// the new reservations (a repeated ADD is handed addresses an earlier ADD still uses); a delegated
// plugin gets DEL, as the reference plugin does.
Result run_ipam(const Request& request, const BridgeConfig& config, Command command,
                std::function<void()>* undo = nullptr) {
  if (config.ipam_type.empty()) return {};
  if (config.ipam_type != kInProcessIpam) {
    Result result = delegate(config.ipam_type, command, request.env, request.conf.raw.dump());
    if (undo) {
      *undo = [&request, type = config.ipam_type] {
        delegate(type, Command::del, request.env, request.conf.raw.dump());
      };
    }
    return result;
  }
  const IpamConfig ipam = parse_ipam_config(
      request.conf, request.env, command == Command::add ? IpamUse::add : IpamUse::other);
  switch (command) {
    case Command::add: {
      std::vector<IpAddress> reserved;
      Result result = ipam_add(ipam, request.env, &reserved);
      if (undo) *undo = [ipam, reserved] { ipam_release(ipam, reserved); };
      return result;
    }
    case Command::del:
      ipam_del(ipam, request.env);
      break;
    case Command::check:
      ipam_check(ipam, request.env, request.conf.prev_result);
      break;
    case Command::gc:
      ipam_gc(ipam, request.conf.raw);
      break;
    case Command::status:
      ipam_status(ipam);
      break;
    case Command::version:
      break;
  }
  return {};
}

NetNs open_container_netns(const std::string& path) {
  try {
    return NetNs::open(path);
  } catch (const std::system_error& e) {
    throw CniError(ErrorCode::unknown_container, std::string("CNI_NETNS: ") + e.what(), path);
  }
}

std::string random_host_name() {
  static thread_local std::mt19937 random{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string name = "veth";
  for (int i = 0; i < 8; ++i)
    name += kHex[random() % 16];
  return name;
}

// The bridge, created when missing. Concurrent ADDs on a fresh node race to create it: losing
// that race (EEXIST) is fine as long as what exists is a bridge.
LinkInfo ensure_bridge(Netlink& host, const BridgeConfig& config) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (auto existing = host.find_link(config.bridge)) {
      if (existing->kind != "bridge") {
        throw CniError(ErrorCode::invalid_network_config,
                       "config field bridge = \"" + config.bridge + "\": a link of kind \"" +
                           existing->kind + "\" already has that name",
                       config.bridge);
      }
      if (!existing->up()) host.set_up(existing->index);
      if (config.promisc_mode && !existing->promiscuous()) {
        host.set_promiscuous(existing->index, true);
      }
      return *existing;
    }
    try {
      host.add_bridge({.name = config.bridge, .mtu = config.mtu});
    } catch (const std::system_error& e) {
      if (!netmodel::is_errno(e, EEXIST)) throw;
    }
  }
  throw CniError(ErrorCode::try_again_later,
                 "bridge \"" + config.bridge + "\" keeps disappearing while being set up");
}

// Puts the gateway address on the bridge, as the reference plugin does: an equal address is
// kept; another IPv4 address, or an IPv6 one of an overlapping subnet, is an error unless
// forceAddress, which replaces it.
void ensure_gateway_address(Netlink& host, const LinkInfo& bridge, const IpPrefix& gateway,
                            bool force) {
  for (const auto& a : host.addresses(bridge.index, gateway.family())) {
    if (a.prefix == gateway) return;
    if (a.prefix.address().is_link_local()) continue;
    if (gateway.family() == Family::v4 || a.prefix.overlaps(gateway)) {
      if (!force) {
        throw CniError(ErrorCode::invalid_network_config,
                       "bridge \"" + bridge.name + "\" already has address " +
                           a.prefix.to_string() + ", not " + gateway.to_string() +
                           " (set forceAddress to replace it)");
      }
      host.delete_address(bridge.index, a.prefix);
    }
  }
  try {
    host.add_address(bridge.index, gateway, {.nodad = true});
  } catch (const std::system_error& e) {
    // A concurrent ADD put the same address there between our listing and our request.
    if (!netmodel::is_errno(e, EEXIST)) throw;
  }
}

void enable_forwarding(Netlink& host, Family family) {
  // Written only when off: the read is a netlink request, the write a /proc/sys path walk that
  // costs more the more namespaces the host has (about 0.8 ms with a thousand pods).
  try {
    if (host.forwarding(family) == true) return;
  } catch (const std::system_error&) {
    // Unknown: write it.
  }
  const NetNs self = NetNs::current();
  if (family == Family::v4) {
    netmodel::write_sysctl(self, "net.ipv4.ip_forward", "1");
  } else {
    netmodel::write_sysctl(self, "net.ipv6.conf.all.forwarding", "1");
  }
}

IpPrefix default_route(Family family) {
  return IpPrefix(IpAddress::from_integer(family, 0), 0);
}

// Which reference-plugin fields are refused, and what their harmless default is.
void refuse_unimplemented(const json& raw) {
  struct Field {
    const char* key;
    std::function<bool(const json&)> is_default;
  };
  const Field fields[] = {
      {"ipMasqBackend",
       [](const json& v) {
         return v.is_string() &&
                (v.get<std::string>().empty() || v.get<std::string>() == "iptables");
       }},
      {"vlan", [](const json& v) { return v.is_number_integer() && v.get<long long>() == 0; }},
      {"vlanTrunk", [](const json& v) { return v.is_array() && v.empty(); }},
      {"preserveDefaultVlan", [](const json& v) { return v.is_boolean() && v.get<bool>(); }},
      {"macspoofchk", [](const json& v) { return v.is_boolean() && !v.get<bool>(); }},
      {"disableContainerInterface", [](const json& v) { return v.is_boolean() && !v.get<bool>(); }},
      {"portIsolation", [](const json& v) { return v.is_boolean() && !v.get<bool>(); }},
  };
  for (const auto& f : fields) {
    if (!raw.contains(f.key) || raw[f.key].is_null() || f.is_default(raw[f.key])) continue;
    throw CniError(ErrorCode::unsupported_field,
                   std::string("config field ") + f.key + " = " + raw[f.key].dump() +
                       " is not supported by flatnet-cni; remove it or set it to its default",
                   f.key);
  }
}

std::optional<MacAddress> requested_mac(const Request& request) {
  auto parse = [](const std::string& text, const std::string& where) {
    try {
      return MacAddress::parse(text);
    } catch (const netmodel::AddressError& e) {
      throw CniError(ErrorCode::invalid_network_config, where + ": " + e.what(), text);
    }
  };
  const json& raw = request.conf.raw;
  if (raw.contains("runtimeConfig") && raw["runtimeConfig"].is_object()) {
    const std::string mac = get_string(raw["runtimeConfig"], "mac", "", "runtimeConfig.mac");
    if (!mac.empty()) return parse(mac, "runtimeConfig.mac");
  }
  if (raw.contains("args") && raw["args"].is_object() && raw["args"].contains("cni")) {
    const std::string mac = get_string(raw["args"]["cni"], "mac", "", "args.cni.mac");
    if (!mac.empty()) return parse(mac, "args.cni.mac");
  }
  const std::string mac = request.env.args.get("MAC");
  if (!mac.empty()) return parse(mac, "CNI_ARGS MAC");
  return std::nullopt;
}

}  // namespace

BridgeConfig parse_bridge_config(const Request& request) {
  const json& raw = request.conf.raw;
  refuse_unimplemented(raw);
  BridgeConfig c;
  c.bridge = get_string(raw, "bridge", "cni0", "bridge");
  if (auto problem = netmodel::interface_name_problem(c.bridge); !problem.empty()) {
    throw CniError(ErrorCode::invalid_network_config, "config field bridge: " + problem, c.bridge);
  }
  c.is_default_gateway = get_bool(raw, "isDefaultGateway", false, "isDefaultGateway");
  c.is_gateway = get_bool(raw, "isGateway", false, "isGateway") || c.is_default_gateway;
  c.force_address = get_bool(raw, "forceAddress", false, "forceAddress");
  c.hairpin_mode = get_bool(raw, "hairpinMode", false, "hairpinMode");
  c.promisc_mode = get_bool(raw, "promiscMode", false, "promiscMode");
  c.enable_dad = get_bool(raw, "enabledad", false, "enabledad");
  c.ip_masq = get_bool(raw, "ipMasq", false, "ipMasq");
  c.mtu = static_cast<unsigned>(get_int(raw, "mtu", 0, "mtu", 0, 65535));
  if (c.mtu != 0 && c.mtu < 68) {
    throw CniError(ErrorCode::invalid_network_config,
                   "config field mtu = " + std::to_string(c.mtu) + ": at least 68", "mtu");
  }
  c.mac = requested_mac(request);
  if (c.mac && (c.mac->is_multicast() || c.mac->is_zero())) {
    throw CniError(ErrorCode::invalid_network_config,
                   "MAC " + c.mac->to_string() + " is not a unicast address", c.mac->to_string());
  }
  c.ipam_type = request.conf.ipam_type;
  return c;
}

Result BridgePlugin::add(const Request& request) {
  const BridgeConfig config = parse_bridge_config(request);
  request.env.args.require_known({"IP", "MAC"});
  const Environment& env = request.env;
  const NetNs container_ns = open_container_netns(env.netns);
  if (container_ns.is_current()) {
    throw CniError(ErrorCode::invalid_environment,
                   "CNI_NETNS \"" + env.netns +
                       "\" is the plugin's own network namespace; refusing to configure it",
                   "CNI_NETNS");
  }
  Netlink host = Netlink::open();
  Netlink container = Netlink::open(container_ns, kEnter);
  if (container.find_link(env.ifname)) {
    throw CniError(ErrorCode::plugin_failure,
                   "interface \"" + env.ifname + "\" already exists in " + env.netns, env.ifname);
  }

  Rollback rollback;
  std::function<void()> release_addresses;
  Result ipam = run_ipam(request, config, Command::add, &release_addresses);
  if (release_addresses) rollback.add(release_addresses);
  fail_point("ipam-added");
  if (config.is_default_gateway) {
    for (const auto& route : ipam.routes) {
      if (route.dst.length() == 0) {
        throw CniError(ErrorCode::invalid_network_config,
                       "isDefaultGateway conflicts with the default route IPAM returns (" +
                           route.dst.to_string() + ")");
      }
    }
  }

  const LinkInfo bridge = ensure_bridge(host, config);
  fail_point("bridge-ready");

  // The veth pair: container end named CNI_IFNAME, made directly in the container's namespace.
  // The container MAC is chosen here (when the runtime gave none) so that it need not be read
  // back; the kernel would pick the same kind of address.
  static thread_local std::mt19937_64 random{std::random_device{}()};
  const MacAddress container_mac = config.mac.value_or(MacAddress::random_local(random));
  std::string host_name;
  for (int attempt = 0;; ++attempt) {
    host_name = random_host_name();
    try {
      host.add_veth({.name = host_name,
                     .peer_name = env.ifname,
                     .peer_ns = &container_ns,
                     .mtu = config.mtu,
                     .peer_mac = container_mac,
                     .master = bridge.index,
                     .up = true});
      break;
    } catch (const std::system_error& e) {
      // EEXIST with a free container name means the random host name was taken.
      if (!netmodel::is_errno(e, EEXIST) || attempt >= 4 || container.find_link(env.ifname)) throw;
    }
  }
  rollback.add([&] { host.delete_link(host_name); });
  fail_point("veth-created");
  const LinkInfo host_veth = host.link(host_name);
  if (config.hairpin_mode) host.set_hairpin(host_veth.index, true);
  fail_point("hairpin-set");
  // The host end's IFLA_LINK is the container end's index there.
  struct {
    int index;
    MacAddress mac;
  } const inside{host_veth.peer_index, container_mac};

  // Addresses and routes inside the container.
  Result result = request.conf.prev_result.value_or(Result{});
  const int first = static_cast<int>(result.interfaces.size());
  // Re-read: a bridge without a MAC of its own takes its ports' lowest, which just changed.
  const LinkInfo bridge_now = host.find_link(bridge.index).value_or(bridge);
  result.interfaces.push_back({.name = bridge.name, .mac = bridge_now.mac.to_string()});
  result.interfaces.push_back({.name = host_name,
                               .mac = host_veth.mac.to_string(),
                               .mtu = config.mtu ? std::optional(config.mtu) : std::nullopt});
  result.interfaces.push_back({.name = env.ifname,
                               .mac = inside.mac.to_string(),
                               .mtu = config.mtu ? std::optional(config.mtu) : std::nullopt,
                               .sandbox = env.netns});
  std::vector<RouteEntry> routes = ipam.routes;
  for (auto ip : ipam.ips) {
    const bool v6 = ip.address.family() == Family::v6;
    container.add_address(inside.index, ip.address, {.nodad = v6 && !config.enable_dad});
    ip.interface = first + 2;
    result.ips.push_back(ip);
    if (config.is_default_gateway && ip.gateway) {
      routes.push_back({.dst = default_route(ip.address.family()), .gw = ip.gateway});
    }
  }
  container.set_up(inside.index);
  fail_point("addresses-added");
  for (const auto& route : routes) {
    std::optional<IpAddress> gw = route.gw;
    if (!gw) {
      for (const auto& ip : ipam.ips) {
        if (ip.gateway && ip.address.family() == route.dst.family()) {
          gw = ip.gateway;
          break;
        }
      }
    }
    container.add_route({.destination = route.dst,
                         .gateway = gw,
                         .oif = inside.index,
                         .metric = static_cast<unsigned>(route.priority.value_or(0))});
  }
  result.routes.insert(result.routes.end(), routes.begin(), routes.end());
  fail_point("routes-added");

  // The gateway side: addresses on the bridge, forwarding on.
  if (config.is_gateway) {
    for (const auto& ip : ipam.ips) {
      if (!ip.gateway) continue;
      ensure_gateway_address(host, bridge, IpPrefix(*ip.gateway, ip.address.length()),
                             config.force_address);
      enable_forwarding(host, ip.address.family());
    }
  }
  fail_point("gateway-set");
  if (config.ip_masq && !ipam.ips.empty()) {
    std::vector<IpPrefix> addresses;
    for (const auto& ip : ipam.ips)
      addresses.push_back(ip.address);
    const MasqueradeOwner owner{request.conf.name, env.container_id, env.ifname};
    rollback.add([owner] { teardown_masquerade(owner); });
    setup_masquerade(owner, addresses);
  }
  fail_point("masquerade-set");
  result.dns = ipam.dns;
  if (request.conf.raw.contains("dns")) {
    const Dns configured = parse_dns(request.conf.raw["dns"]);
    if (!configured.empty()) result.dns = configured;
  }
  rollback.dismiss();
  return result;
}

void BridgePlugin::del(const Request& request) {
  const BridgeConfig config = parse_bridge_config(request);
  // The addresses and the masquerade rules go whatever state the container is in.
  run_ipam(request, config, Command::del);
  if (config.ip_masq) {
    teardown_masquerade({request.conf.name, request.env.container_id, request.env.ifname});
  }
  if (request.env.netns.empty()) return;
  std::optional<NetNs> ns;
  try {
    ns = NetNs::open(request.env.netns);
  } catch (const std::system_error& e) {
    if (netmodel::is_errno(e, ENOENT) || netmodel::is_errno(e, EINVAL)) return;  // gone
    throw;
  }
  // Deleting the container end deletes the pair.
  Netlink::open(*ns, kEnter).delete_link(request.env.ifname);
}

void BridgePlugin::check(const Request& request) {
  const BridgeConfig config = parse_bridge_config(request);
  const Environment& env = request.env;
  const NetNs container_ns = open_container_netns(env.netns);
  Netlink container = Netlink::open(container_ns, kEnter);
  Netlink host = Netlink::open();
  const auto inside = container.find_link(env.ifname);
  if (!inside) {
    throw CniError(ErrorCode::plugin_failure,
                   "interface \"" + env.ifname + "\" does not exist in " + env.netns);
  }
  if (inside->kind != "veth") {
    throw CniError(ErrorCode::plugin_failure,
                   "interface \"" + env.ifname + "\" is a " + inside->kind + " link, not a veth");
  }
  if (!inside->up()) {
    throw CniError(ErrorCode::plugin_failure, "interface \"" + env.ifname + "\" is down");
  }
  const auto bridge = host.find_link(config.bridge);
  if (!bridge || bridge->kind != "bridge") {
    throw CniError(ErrorCode::plugin_failure, "bridge \"" + config.bridge + "\" is missing");
  }
  const auto peer = host.find_link(inside->peer_index);
  if (!peer || peer->master != bridge->index) {
    throw CniError(
        ErrorCode::plugin_failure,
        "the host end of \"" + env.ifname + "\" is not a port of bridge \"" + config.bridge + "\"");
  }
  if (config.mtu && inside->mtu != config.mtu) {
    throw CniError(ErrorCode::plugin_failure,
                   "interface \"" + env.ifname + "\" has mtu " + std::to_string(inside->mtu) +
                       ", the configuration says " + std::to_string(config.mtu));
  }
  run_ipam(request, config, Command::check);

  // Every address and route the previous result lists for the container must be in place.
  if (!request.conf.prev_result) return;
  const Result& prev = *request.conf.prev_result;
  const auto addresses = container.addresses(inside->index);
  for (const auto& ip : prev.ips) {
    if (ip.interface && (*ip.interface >= static_cast<int>(prev.interfaces.size()) ||
                         prev.interfaces[*ip.interface].name != env.ifname ||
                         prev.interfaces[*ip.interface].sandbox != env.netns)) {
      continue;  // not ours
    }
    const bool present = std::any_of(addresses.begin(), addresses.end(),
                                     [&](const auto& a) { return a.prefix == ip.address; });
    if (!present) {
      throw CniError(ErrorCode::plugin_failure, "address " + ip.address.to_string() +
                                                    " is missing from \"" + env.ifname + "\"");
    }
  }
  for (const auto& route : prev.routes) {
    const auto table = container.routes(route.dst.family());
    const bool present = std::any_of(table.begin(), table.end(), [&](const netmodel::Route& r) {
      const IpPrefix dst = r.destination.value_or(default_route(route.dst.family()));
      return dst == route.dst.network() && (!route.gw || r.gateway == route.gw);
    });
    if (!present) {
      throw CniError(ErrorCode::plugin_failure,
                     "route to " + route.dst.to_string() + " is missing in " + env.netns);
    }
  }
}

void BridgePlugin::status(const Request& request) {
  run_ipam(request, parse_bridge_config(request), Command::status);
}

void BridgePlugin::gc(const Request& request) {
  const BridgeConfig config = parse_bridge_config(request);
  run_ipam(request, config, Command::gc);
  const auto attachments = valid_attachments(request.conf.raw);
  if (!config.ip_masq || !attachments) return;
  gc_masquerade(request.conf.name, {attachments->begin(), attachments->end()});
}

}  // namespace flatnet::cni
