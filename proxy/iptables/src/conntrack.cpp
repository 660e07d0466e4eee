#include "flatnet/proxy/iptables/conntrack.hpp"

#include <arpa/inet.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <stdexcept>
#include <utility>

namespace flatnet::proxy::iptables {
namespace {

using Key = std::pair<IpAddress, std::uint16_t>;

// For every UDP service address and port: the backends it may be translated to.
struct UdpTargets {
  std::map<Key, std::set<Key>> by_address;  // cluster, external and load-balancer IPs
  std::map<std::uint16_t, std::set<Key>> by_node_port;
};

UdpTargets udp_targets(const ProxyState& state) {
  UdpTargets targets;
  for (const auto& [name, service] : state.services) {
    if (service.protocol != Protocol::udp) continue;
    const auto usable = usable_endpoints(service, state.endpoints_of(name));
    std::set<Key> backends;
    for (const auto& e : usable.cluster)
      backends.emplace(e.ip, e.port);
    for (const auto& e : usable.local)
      backends.emplace(e.ip, e.port);
    targets.by_address[{service.cluster_ip, service.port}] = backends;
    for (const auto& ip : service.external_ips)
      targets.by_address[{ip, service.port}] = backends;
    for (const auto& ip : service.load_balancer_ips) {
      targets.by_address[{ip, service.port}] = backends;
    }
    if (service.node_port != 0) targets.by_node_port[service.node_port] = backends;
  }
  return targets;
}

bool stale(const Flow& flow, const std::set<Key>& backends) {
  // Untranslated: sent while the port had no endpoint; it must be translated now that one exists.
  if (!flow.translated()) return !backends.empty();
  return !backends.contains({flow.reply_source, flow.reply_source_port});
}

IpAddress v4_of(const nf_conntrack* ct, nf_conntrack_attr attr) {
  return IpAddress::v4(ntohl(nfct_get_attr_u32(ct, attr)));
}

std::uint16_t port_of(const nf_conntrack* ct, nf_conntrack_attr attr) {
  return ntohs(nfct_get_attr_u16(ct, attr));
}

int collect(nf_conntrack_msg_type, nf_conntrack* ct, void* data) {
  auto* flows = static_cast<std::vector<Flow>*>(data);
  if (nfct_get_attr_u8(ct, ATTR_L3PROTO) != AF_INET) return NFCT_CB_CONTINUE;
  if (nfct_get_attr_u8(ct, ATTR_ORIG_L4PROTO) != IPPROTO_UDP) return NFCT_CB_CONTINUE;
  Flow flow;
  flow.protocol = Protocol::udp;
  flow.source = v4_of(ct, ATTR_ORIG_IPV4_SRC);
  flow.source_port = port_of(ct, ATTR_ORIG_PORT_SRC);
  flow.destination = v4_of(ct, ATTR_ORIG_IPV4_DST);
  flow.destination_port = port_of(ct, ATTR_ORIG_PORT_DST);
  flow.reply_source = v4_of(ct, ATTR_REPL_IPV4_SRC);
  flow.reply_source_port = port_of(ct, ATTR_REPL_PORT_SRC);
  flows->push_back(flow);
  return NFCT_CB_CONTINUE;
}

class Handle {
 public:
  Handle() : handle_(nfct_open(CONNTRACK, 0)) {
    if (handle_ == nullptr) {
      throw std::runtime_error(std::string("open conntrack netlink socket: ") +
                               std::strerror(errno));
    }
  }
  ~Handle() { nfct_close(handle_); }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  nfct_handle* get() const { return handle_; }

 private:
  nfct_handle* handle_;
};

class NetlinkConntrack final : public Conntrack {
 public:
  std::vector<Flow> udp_flows() override {
    Handle handle;
    std::vector<Flow> flows;
    nfct_callback_register(handle.get(), NFCT_T_ALL, collect, &flows);
    std::uint32_t family = AF_INET;
    if (nfct_query(handle.get(), NFCT_Q_DUMP, &family) < 0) {
      throw std::runtime_error(std::string("dump conntrack table: ") + std::strerror(errno));
    }
    return flows;
  }

  bool remove(const Flow& flow) override {
    Handle handle;
    nf_conntrack* ct = nfct_new();
    if (ct == nullptr) throw std::bad_alloc();
    nfct_set_attr_u8(ct, ATTR_L3PROTO, AF_INET);
    nfct_set_attr_u8(ct, ATTR_L4PROTO, IPPROTO_UDP);
    nfct_set_attr_u32(ct, ATTR_IPV4_SRC, htonl(flow.source.to_v4_integer()));
    nfct_set_attr_u32(ct, ATTR_IPV4_DST, htonl(flow.destination.to_v4_integer()));
    nfct_set_attr_u16(ct, ATTR_PORT_SRC, htons(flow.source_port));
    nfct_set_attr_u16(ct, ATTR_PORT_DST, htons(flow.destination_port));
    const int result = nfct_query(handle.get(), NFCT_Q_DESTROY, ct);
    const int error = errno;
    nfct_destroy(ct);
    if (result == 0) return true;
    if (error == ENOENT) return false;
    throw std::runtime_error("delete conntrack entry " + flow.to_string() + ": " +
                             std::strerror(error));
  }
};

}  // namespace

std::string Flow::to_string() const {
  std::string text = protocol == Protocol::udp ? "udp " : "tcp ";
  text += source.to_string() + ":" + std::to_string(source_port) + " -> " +
          destination.to_string() + ":" + std::to_string(destination_port);
  if (translated()) {
    text += " (backend " + reply_source.to_string() + ":" + std::to_string(reply_source_port) + ")";
  }
  return text;
}

std::unique_ptr<Conntrack> make_conntrack() {
  return std::make_unique<NetlinkConntrack>();
}

std::vector<Flow> stale_udp_flows(const ProxyState& state, const ProxyState& previous,
                                  const std::vector<Flow>& flows,
                                  const std::vector<IpAddress>& node_addresses) {
  auto targets = udp_targets(state);
  // What went away keeps an empty set of backends (emplace leaves current entries alone).
  auto gone = udp_targets(previous);
  for (auto& [key, backends] : gone.by_address)
    targets.by_address.emplace(key, std::set<Key>{});
  for (auto& [port, backends] : gone.by_node_port) {
    targets.by_node_port.emplace(port, std::set<Key>{});
  }
  const std::set<IpAddress> node(node_addresses.begin(), node_addresses.end());
  std::vector<Flow> out;
  for (const auto& flow : flows) {
    if (flow.protocol != Protocol::udp) continue;
    if (const auto it = targets.by_address.find({flow.destination, flow.destination_port});
        it != targets.by_address.end()) {
      if (stale(flow, it->second)) out.push_back(flow);
      continue;
    }
    if (node.contains(flow.destination)) {
      if (const auto it = targets.by_node_port.find(flow.destination_port);
          it != targets.by_node_port.end() && stale(flow, it->second)) {
        out.push_back(flow);
      }
    }
  }
  return out;
}

}  // namespace flatnet::proxy::iptables
