#pragma once

// The CNI result (interfaces, IP configurations, routes, DNS) and its JSON forms in every
// supported spec version: 0.3.x and 0.4.0 carry ips[].version; 1.0.0 drops it; 1.1.0 adds the
// interface mtu, socketPath and pciID and the route mtu, advmss, priority, table and scope.

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "flatnet/netmodel/address.hpp"

namespace flatnet::cni {

struct Interface {
  std::string name{};
  std::string mac{};
  std::optional<unsigned> mtu{};  // 1.1.0
  std::string sandbox{};          // the netns path for container interfaces
  std::string socket_path{};      // 1.1.0
  std::string pci_id{};           // 1.1.0

  friend bool operator==(const Interface&, const Interface&) = default;
};

struct IpConfig {
  netmodel::IpPrefix address{};  // the address with its subnet's prefix length
  std::optional<netmodel::IpAddress> gateway{};
  std::optional<int> interface {};  // index into Result::interfaces

  friend bool operator==(const IpConfig&, const IpConfig&) = default;
};

struct RouteEntry {
  netmodel::IpPrefix dst{};
  std::optional<netmodel::IpAddress> gw{};
  // 1.1.0
  std::optional<int> mtu{};
  std::optional<int> advmss{};
  std::optional<int> priority{};
  std::optional<int> table{};
  std::optional<int> scope{};

  friend bool operator==(const RouteEntry&, const RouteEntry&) = default;
};

struct Dns {
  std::vector<std::string> nameservers{};
  std::string domain{};
  std::vector<std::string> search{};
  std::vector<std::string> options{};

  bool empty() const {
    return nameservers.empty() && domain.empty() && search.empty() && options.empty();
  }
  friend bool operator==(const Dns&, const Dns&) = default;
};

struct Result {
  std::vector<Interface> interfaces{};
  std::vector<IpConfig> ips{};
  std::vector<RouteEntry> routes{};
  Dns dns{};

  friend bool operator==(const Result&, const Result&) = default;
};

// Reads a result of any supported version. Throws CniError(decoding_failure) naming the field
// and value that are wrong.
Result parse_result(const nlohmann::json& j);
// Writes `result` in the form of `version` (which must be supported), fields that version does
// not know left out.
nlohmann::json to_json(const Result& result, const std::string& version);

Dns parse_dns(const nlohmann::json& j);
nlohmann::json to_json(const Dns& dns);

}  // namespace flatnet::cni
