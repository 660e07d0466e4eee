#include "flatnet/cni/types.hpp"

#include <cstdint>
#include <limits>

#include "flatnet/cni/error.hpp"
#include "flatnet/cni/version.hpp"

namespace flatnet::cni {
namespace {

using netmodel::IpAddress;
using netmodel::IpPrefix;
using nlohmann::json;

[[noreturn]] void bad(const std::string& path, const json& value, const std::string& why) {
  throw CniError(ErrorCode::decoding_failure,
                 "result field " + path + " = " + value.dump() + ": " + why, path);
}

std::string string_at(const json& object, const char* key, const std::string& path) {
  if (!object.contains(key) || object[key].is_null()) return {};
  if (!object[key].is_string()) bad(path + "." + key, object[key], "expected a string");
  return object[key].get<std::string>();
}

std::optional<int> int_at(const json& object, const char* key, const std::string& path) {
  if (!object.contains(key) || object[key].is_null()) return std::nullopt;
  const json& value = object[key];
  if (!value.is_number_integer()) bad(path + "." + key, value, "expected an integer");
  // get<int>() would wrap 4294967296 to 0.
  const bool fits = value.is_number_unsigned()
                        ? value.get<std::uint64_t>() <=
                              static_cast<std::uint64_t>(std::numeric_limits<int>::max())
                        : value.get<std::int64_t>() >= std::numeric_limits<int>::min() &&
                              value.get<std::int64_t>() <= std::numeric_limits<int>::max();
  if (!fits) bad(path + "." + key, value, "out of range");
  return value.get<int>();
}

IpPrefix prefix_at(const json& object, const char* key, const std::string& path) {
  const std::string text = string_at(object, key, path);
  if (text.empty()) bad(path + "." + key, object.value(key, json()), "required");
  try {
    return IpPrefix::parse(text);
  } catch (const netmodel::AddressError& e) {
    bad(path + "." + key, object[key], e.what());
  }
}

std::optional<IpAddress> address_at(const json& object, const char* key, const std::string& path) {
  const std::string text = string_at(object, key, path);
  if (text.empty()) return std::nullopt;
  try {
    return IpAddress::parse(text);
  } catch (const netmodel::AddressError& e) {
    bad(path + "." + key, object[key], e.what());
  }
}

std::vector<std::string> strings_at(const json& object, const char* key, const std::string& path) {
  std::vector<std::string> out;
  if (!object.contains(key) || object[key].is_null()) return out;
  if (!object[key].is_array()) bad(path + "." + key, object[key], "expected a list of strings");
  for (const auto& item : object[key]) {
    if (!item.is_string()) bad(path + "." + key, item, "expected a string");
    out.push_back(item.get<std::string>());
  }
  return out;
}

const json& array_at(const json& object, const char* key, const std::string& path) {
  static const json kEmpty = json::array();
  if (!object.contains(key) || object[key].is_null()) return kEmpty;
  if (!object[key].is_array()) bad(path + "." + key, object[key], "expected a list");
  return object[key];
}

void require_object(const json& value, const std::string& path) {
  if (!value.is_object()) bad(path, value, "expected an object");
}

}  // namespace

Dns parse_dns(const json& j) {
  Dns dns;
  if (j.is_null()) return dns;
  require_object(j, "dns");
  dns.nameservers = strings_at(j, "nameservers", "dns");
  dns.domain = string_at(j, "domain", "dns");
  dns.search = strings_at(j, "search", "dns");
  dns.options = strings_at(j, "options", "dns");
  return dns;
}

json to_json(const Dns& dns) {
  json j = json::object();
  if (!dns.nameservers.empty()) j["nameservers"] = dns.nameservers;
  if (!dns.domain.empty()) j["domain"] = dns.domain;
  if (!dns.search.empty()) j["search"] = dns.search;
  if (!dns.options.empty()) j["options"] = dns.options;
  return j;
}

Result parse_result(const json& j) {
  require_object(j, "result");
  Result r;
  const json& interfaces = array_at(j, "interfaces", "result");
  for (std::size_t i = 0; i < interfaces.size(); ++i) {
    const std::string path = "interfaces[" + std::to_string(i) + "]";
    require_object(interfaces[i], path);
    Interface iface;
    iface.name = string_at(interfaces[i], "name", path);
    iface.mac = string_at(interfaces[i], "mac", path);
    if (auto mtu = int_at(interfaces[i], "mtu", path)) {
      if (*mtu < 0) bad(path + ".mtu", interfaces[i]["mtu"], "must not be negative");
      iface.mtu = static_cast<unsigned>(*mtu);
    }
    iface.sandbox = string_at(interfaces[i], "sandbox", path);
    iface.socket_path = string_at(interfaces[i], "socketPath", path);
    iface.pci_id = string_at(interfaces[i], "pciID", path);
    r.interfaces.push_back(iface);
  }
  const json& ips = array_at(j, "ips", "result");
  for (std::size_t i = 0; i < ips.size(); ++i) {
    const std::string path = "ips[" + std::to_string(i) + "]";
    require_object(ips[i], path);
    IpConfig ip;
    ip.address = prefix_at(ips[i], "address", path);
    ip.gateway = address_at(ips[i], "gateway", path);
    ip.interface = int_at(ips[i], "interface", path);
    if (ip.interface &&
        (*ip.interface < 0 || *ip.interface >= static_cast<int>(r.interfaces.size()))) {
      bad(path + ".interface", ips[i]["interface"], "no such entry in interfaces");
    }
    const std::string version = string_at(ips[i], "version", path);
    if (!version.empty() && version != (ip.address.address().is_v4() ? "4" : "6")) {
      bad(path + ".version", ips[i]["version"], "does not match the address family");
    }
    r.ips.push_back(ip);
  }
  const json& routes = array_at(j, "routes", "result");
  for (std::size_t i = 0; i < routes.size(); ++i) {
    const std::string path = "routes[" + std::to_string(i) + "]";
    require_object(routes[i], path);
    RouteEntry route;
    route.dst = prefix_at(routes[i], "dst", path);
    route.gw = address_at(routes[i], "gw", path);
    route.mtu = int_at(routes[i], "mtu", path);
    route.advmss = int_at(routes[i], "advmss", path);
    route.priority = int_at(routes[i], "priority", path);
    route.table = int_at(routes[i], "table", path);
    route.scope = int_at(routes[i], "scope", path);
    r.routes.push_back(route);
  }
  if (j.contains("dns")) r.dns = parse_dns(j["dns"]);
  return r;
}

json to_json(const Result& result, const std::string& version) {
  const bool has_ip_version = compare_versions(version, "1.0.0") < 0;
  const bool v11 = compare_versions(version, "1.1.0") >= 0;
  json j = {{"cniVersion", version}};
  if (!result.interfaces.empty()) {
    json list = json::array();
    for (const auto& iface : result.interfaces) {
      json i = {{"name", iface.name}};
      if (!iface.mac.empty()) i["mac"] = iface.mac;
      if (v11 && iface.mtu) i["mtu"] = *iface.mtu;
      if (!iface.sandbox.empty()) i["sandbox"] = iface.sandbox;
      if (v11 && !iface.socket_path.empty()) i["socketPath"] = iface.socket_path;
      if (v11 && !iface.pci_id.empty()) i["pciID"] = iface.pci_id;
      list.push_back(i);
    }
    j["interfaces"] = list;
  }
  if (!result.ips.empty()) {
    json list = json::array();
    for (const auto& ip : result.ips) {
      json i;
      if (has_ip_version) i["version"] = ip.address.address().is_v4() ? "4" : "6";
      if (ip.interface) i["interface"] = *ip.interface;
      i["address"] = ip.address.to_string();
      if (ip.gateway) i["gateway"] = ip.gateway->to_string();
      list.push_back(i);
    }
    j["ips"] = list;
  }
  if (!result.routes.empty()) {
    json list = json::array();
    for (const auto& route : result.routes) {
      json r = {{"dst", route.dst.to_string()}};
      if (route.gw) r["gw"] = route.gw->to_string();
      if (v11) {
        if (route.mtu) r["mtu"] = *route.mtu;
        if (route.advmss) r["advmss"] = *route.advmss;
        if (route.priority) r["priority"] = *route.priority;
        if (route.table) r["table"] = *route.table;
        if (route.scope) r["scope"] = *route.scope;
      }
      list.push_back(r);
    }
    j["routes"] = list;
  }
  // The reference plugins always print dns (an empty object when there is none).
  j["dns"] = to_json(result.dns);
  return j;
}

}  // namespace flatnet::cni
