#pragma once

// UDP has no connection to close: the kernel keeps sending a client's datagrams wherever its
// conntrack entry says, even after that backend is gone. After each sync the proxy removes every
// UDP entry to a service address that points at a backend no longer serving it (or was made
// before the service had any), as kube-proxy's conntrack reconciler does, so that a client with
// a fixed source port reaches a live backend at its next datagram.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "flatnet/proxy/model.hpp"

namespace flatnet::proxy::iptables {

// One conntrack entry, as the original direction and the reply direction saw it.
struct Flow {
  Protocol protocol = Protocol::udp;
  IpAddress source{};
  std::uint16_t source_port = 0;
  IpAddress destination{};  // what the client sent to (a service address)
  std::uint16_t destination_port = 0;
  IpAddress reply_source{};  // who answers: the backend after DNAT, else the destination
  std::uint16_t reply_source_port = 0;

  bool translated() const {
    return reply_source != destination || reply_source_port != destination_port;
  }
  // "udp 10.244.1.5:40000 -> 10.96.0.10:53 (backend 10.244.2.7:5353)"
  std::string to_string() const;
  friend bool operator==(const Flow&, const Flow&) = default;
};

// The kernel's conntrack table (this network namespace's), over netlink.
class Conntrack {
 public:
  virtual ~Conntrack() = default;
  // Every IPv4 UDP entry. Throws std::runtime_error when the table cannot be read.
  virtual std::vector<Flow> udp_flows() = 0;
  // Deletes the entry; false when it was already gone.
  virtual bool remove(const Flow& flow) = 0;
};

// libnetfilter_conntrack in the calling thread's network namespace.
std::unique_ptr<Conntrack> make_conntrack();

// The entries of `flows` that must go: UDP entries to a service port's cluster IP, external IP,
// load-balancer IP, or node port on one of `node_addresses`, that were translated to an address
// which is no longer a usable endpoint of that port, or were not translated although the port
// now has endpoints. Service addresses and node ports that `previous` had and `state` lost keep
// no backend at all: every translated entry to them goes.
std::vector<Flow> stale_udp_flows(const ProxyState& state, const ProxyState& previous,
                                  const std::vector<Flow>& flows,
                                  const std::vector<IpAddress>& node_addresses);

}  // namespace flatnet::proxy::iptables
