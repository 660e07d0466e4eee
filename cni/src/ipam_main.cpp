// flatnet-ipam: a host-local compatible IPAM plugin.

#include "flatnet/cni/ipam.hpp"

namespace {

constexpr const char* kAbout =
    "flatnet-ipam " FLATNET_VERSION ": host-local compatible IP address management for CNI";

constexpr const char* kHelp =
    R"(A CNI IPAM plugin. A runtime (or a main plugin such as flatnet-cni or bridge)
executes it with CNI_COMMAND (ADD, DEL, CHECK, VERSION, STATUS, GC), CNI_CONTAINERID,
CNI_NETNS, CNI_IFNAME, CNI_ARGS and CNI_PATH set, and the network configuration on stdin.

The "ipam" section takes host-local's fields:
  ranges       list of range sets, each a list of {subnet, rangeStart, rangeEnd, gateway}
  subnet, rangeStart, rangeEnd, gateway
               the legacy single-range form
  routes       list of {dst, gw}
  dataDir      where reservations live (default /var/lib/cni/networks)
  resolvConf   a resolv.conf whose nameservers, domain, search and options go into the result
Requested addresses come from args.cni.ips, runtimeConfig.ips or CNI_ARGS IP=a,b.

State: dataDir/<network>/<ip> per reservation, last_reserved_ip.<n>, and a lock file, as
host-local writes them; both plugins can share one dataDir. See docs/cni.md.
)";

}  // namespace

int main(int argc, char** argv) {
  flatnet::cni::IpamPlugin plugin;
  return flatnet::cni::plugin_main(argc, argv, plugin, kAbout, kHelp);
}
