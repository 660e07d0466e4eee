#pragma once

// flatnet-cni: the bridge-mode CNI plugin, a drop-in for the reference "bridge" plugin's
// configuration. ADD connects the container to a bridge in the plugin's (the node's) namespace
// through a veth pair and applies the addresses and routes IPAM hands out; DEL undoes that and
// always releases the addresses; CHECK verifies it; GC and STATUS go to IPAM.

#include <optional>
#include <string>

#include "flatnet/cni/plugin.hpp"
#include "flatnet/netmodel/address.hpp"

namespace flatnet::cni {

struct BridgeConfig {
  std::string bridge = "cni0";
  bool is_gateway = false;
  bool is_default_gateway = false;  // implies is_gateway
  bool force_address = false;
  bool hairpin_mode = false;
  bool promisc_mode = false;
  bool enable_dad = false;
  bool ip_masq = false;  // SNAT for traffic leaving the pod subnet (see masquerade.hpp)
  unsigned mtu = 0;      // 0: the kernel's default
  std::optional<netmodel::MacAddress> mac;  // runtimeConfig.mac, args.cni.mac or CNI_ARGS MAC
  std::string ipam_type;                    // empty: no addresses (layer 2 only)
};

// Reads the bridge fields of `request`. Throws CniError: invalid_network_config naming the field
// and value for a wrong value, unsupported_field for a reference-plugin field that flatnet-cni
// does not implement and that is set to something other than its default.
BridgeConfig parse_bridge_config(const Request& request);

class BridgePlugin : public Plugin {
 public:
  Result add(const Request& request) override;
  void del(const Request& request) override;
  void check(const Request& request) override;
  void status(const Request& request) override;
  void gc(const Request& request) override;
};

}  // namespace flatnet::cni
