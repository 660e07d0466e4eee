// flatnet-cni: the bridge-mode CNI plugin.

#include "flatnet/cni/bridge.hpp"

namespace {

constexpr const char* kAbout =
    "flatnet-cni " FLATNET_VERSION ": bridge-mode CNI plugin (drop-in for the reference bridge)";

constexpr const char* kHelp =
    R"(A CNI plugin. A runtime executes it with CNI_COMMAND (ADD, DEL, CHECK, VERSION,
STATUS, GC), CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS and CNI_PATH set, and the
network configuration on stdin; it runs in the node's (host's) network namespace.

ADD puts a veth pair between the container (named CNI_IFNAME) and the bridge, creating the
bridge when missing, and applies the addresses and routes of the IPAM plugin in ipam.type
(flatnet-ipam runs in-process; any other is executed from CNI_PATH).

Configuration fields (those of the reference bridge plugin):
  bridge             bridge name (default cni0)
  isGateway          put the gateway address on the bridge and enable forwarding
  isDefaultGateway   also add a default route via the gateway in the container
  forceAddress       replace a different address already on the bridge
  mtu                MTU of the bridge (when created) and of both veth ends
  hairpinMode        let frames leave the bridge port they came in by
  promiscMode        turn promiscuous mode on on the bridge
  enabledad          run IPv6 duplicate address detection on the container's addresses
  ipMasq             SNAT traffic from the pod that leaves its subnet (iptables rules tagged
                     with the network and container, removed by DEL and GC)
  ipam               the IPAM configuration (see flatnet-ipam --help)
The container MAC may come from runtimeConfig.mac, args.cni.mac or CNI_ARGS MAC=.
Not implemented, refused when set: vlan, vlanTrunk, macspoofchk, portIsolation,
disableContainerInterface, ipMasqBackend other than iptables. See docs/cni.md.
)";

}  // namespace

int main(int argc, char** argv) {
  flatnet::cni::BridgePlugin plugin;
  return flatnet::cni::plugin_main(argc, argv, plugin, kAbout, kHelp);
}
