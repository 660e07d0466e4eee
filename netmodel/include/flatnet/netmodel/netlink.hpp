#pragma once

// The kernel adapter for links, addresses and routes, through libnl (never by running `ip`).
//
// A Netlink object owns one rtnetlink socket bound to one network namespace: the socket is
// opened inside that namespace, so every call acts there whatever thread makes it. An object is
// not safe to share between threads without a lock; open one per thread instead (it is cheap).
//
// Errors are std::system_error (see error.hpp) whose code is the kernel's errno and whose what()
// names the operation and object: `set mtu of link "veth1": Invalid argument`. Transient answers
// (EBUSY, EAGAIN, an interrupted dump) are retried up to kRetries times before they are reported.
// Deleting what is already gone is not an error: delete_* return false instead.

#include <linux/if.h>
#include <linux/rtnetlink.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flatnet/netmodel/address.hpp"
#include "flatnet/netmodel/netns.hpp"

struct nl_sock;

namespace flatnet::netmodel {

// Throws std::invalid_argument unless `name` is a valid interface name: 1-15 bytes, no '/',
// ':' or whitespace, not "." or "..". The message names the value and the rule it breaks.
void validate_interface_name(std::string_view name);
// The same check, returning the reason instead of throwing (empty when valid).
std::string interface_name_problem(std::string_view name);

struct LinkInfo {
  int index = 0;
  std::string name;
  // IFLA_INFO_KIND: "veth", "bridge", "dummy", ...; empty for loopback and physical devices.
  std::string kind;
  MacAddress mac;
  unsigned mtu = 0;
  unsigned flags = 0;  // IFF_*
  int master = 0;      // ifindex of the bridge this link is a port of; 0 when none
  // IFLA_LINK: for a veth, its peer's ifindex, in the namespace given by link_netnsid.
  int peer_index = 0;
  // IFLA_LINK_NETNSID: the peer namespace's id as seen from here; -1 when it is this namespace.
  int link_netnsid = -1;
  std::string alias;

  bool up() const { return flags & IFF_UP; }
  bool lower_up() const { return flags & IFF_LOWER_UP; }
  bool promiscuous() const { return flags & IFF_PROMISC; }
};

struct VethSpec {
  std::string name{};
  std::string peer_name{};
  // Where each end is created; nullptr means the Netlink object's own namespace.
  const NetNs* ns = nullptr;
  const NetNs* peer_ns = nullptr;
  unsigned mtu = 0;  // 0: the kernel's default
  std::optional<MacAddress> mac{};
  std::optional<MacAddress> peer_mac{};
  // Set in the same request that creates the pair (no extra round trips): the bridge the first
  // end joins (its ifindex in that end's namespace; 0: none) and whether it comes up. The peer
  // cannot come up in that request: the kernel opens it before the pair is joined (ENOTCONN).
  int master = 0;
  bool up = false;
};

struct BridgeSpec {
  std::string name;
  unsigned mtu = 0;
  std::optional<MacAddress> mac{};
};

enum class RouteScope : std::uint8_t {
  universe = RT_SCOPE_UNIVERSE,
  link = RT_SCOPE_LINK,
  host = RT_SCOPE_HOST,
};

struct Route {
  // nullopt: the default route (0.0.0.0/0 or ::/0) of `family`.
  std::optional<IpPrefix> destination{};
  Family family = Family::v4;
  std::optional<IpAddress> gateway{};
  int oif = 0;  // output interface index; 0: any (the kernel resolves it from the gateway)
  // nullopt on add: universe with a gateway, link without (what `ip route add` picks).
  std::optional<RouteScope> scope{};
  std::optional<IpAddress> source{};  // preferred source address
  unsigned table = RT_TABLE_MAIN;
  unsigned metric = 0;
  unsigned protocol = RTPROT_BOOT;

  // The family actually meant: the destination's when there is one.
  Family effective_family() const { return destination ? destination->family() : family; }
  // "10.244.2.0/24 via 172.18.0.3 dev #2", as `ip route` would say it.
  std::string to_string() const;
};

// A neighbour table entry (ARP for IPv4, NDP for IPv6).
struct NeighborInfo {
  int index = 0;
  IpAddress address;
  std::optional<MacAddress> mac{};  // absent until resolved
  unsigned state = 0;               // NUD_* (linux/neighbour.h)
  bool incomplete() const;          // still asking: NUD_INCOMPLETE
  bool failed() const;              // nobody answered: NUD_FAILED
  // "REACHABLE", "STALE", "FAILED", ... as `ip neigh` prints it.
  std::string state_name() const;
};

struct AddressOptions {
  bool nodad = false;          // IFA_F_NODAD: IPv6 addresses usable at once
  bool noprefixroute = false;  // IFA_F_NOPREFIXROUTE: no route for the subnet
};

struct AddressInfo {
  int index = 0;
  IpPrefix prefix;  // the address with its prefix length
  RouteScope scope = RouteScope::universe;
  unsigned flags = 0;  // IFA_F_*
};

class Netlink {
 public:
  static constexpr int kRetries = 5;

  // A socket in the calling thread's namespace.
  static Netlink open();
  // A socket in `ns`.
  static Netlink open(const NetNs& ns, Enter how = Enter::dedicated_thread);

  Netlink(Netlink&& other) noexcept;
  Netlink& operator=(Netlink&& other) noexcept;
  ~Netlink();

  const NetNs& netns() const { return netns_; }

  // --- links ---
  std::optional<LinkInfo> find_link(std::string_view name);
  std::optional<LinkInfo> find_link(int index);
  // Like find_link, but throws ENODEV naming the link when it does not exist.
  LinkInfo link(std::string_view name);
  LinkInfo link(int index);
  std::vector<LinkInfo> links();

  // A veth pair with each end named and placed as `spec` says. Throws EEXIST when a name is
  // taken in its namespace.
  void add_veth(const VethSpec& spec);
  void add_bridge(const BridgeSpec& spec);
  // Throws KernelFeatureMissing on kernels built without the dummy link type.
  void add_dummy(std::string_view name);
  // Returns false when there was no such link.
  bool delete_link(std::string_view name);
  bool delete_link(int index);

  void set_up(int index);
  void set_down(int index);
  void set_mtu(int index, unsigned mtu);
  void set_mac(int index, const MacAddress& mac);
  // Attach the link to a bridge (master_index) or detach it (0).
  void set_master(int index, int master_index);
  void set_promiscuous(int index, bool on);
  void set_alias(int index, std::string_view alias);
  // Bridge port hairpin mode (IFLA_BRPORT_MODE): frames may leave by the port they came in.
  void set_hairpin(int port_index, bool on);
  bool hairpin(int port_index);
  // Moves the link into `target`, renamed to `new_name` when given.
  void move_to_netns(int index, const NetNs& target, std::string_view new_name = {});

  // --- addresses ---
  // IPv4 addresses shorter than /31 get their broadcast address, as CNI plugins set it.
  // Throws EEXIST when the address is already there.
  void add_address(int index, const IpPrefix& address, AddressOptions options = {});
  bool delete_address(int index, const IpPrefix& address);
  // Addresses of one link (index > 0) or all links (0), of one family or both.
  std::vector<AddressInfo> addresses(int index = 0, std::optional<Family> family = {});

  // --- routes ---
  // Throws EEXIST when an equal route exists.
  void add_route(const Route& route);
  // Adds or replaces the route to the same destination, table and metric.
  void replace_route(const Route& route);
  // Matches destination, table and, when given, gateway, interface and metric.
  bool delete_route(const Route& route);
  // Unicast routes of one table, the kernel's cached clones left out.
  std::vector<Route> routes(Family family, unsigned table = RT_TABLE_MAIN);
  // The route the kernel would use for a packet to `destination` (RTM_GETROUTE, as `ip route
  // get`): nullopt when there is none (ENETUNREACH), or when the answer is not unicast
  // (unreachable, blackhole, prohibit routes). `oif` and `source` are the kernel's choice.
  std::optional<Route> lookup_route(const IpAddress& destination);
  // Whether this namespace forwards `family` (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding),
  // read over netlink (RTM_GETNETCONF); nullopt when the kernel does not say. Cheaper than
  // /proc/sys with many namespaces: every namespace's sysctl entries share /proc/sys's dentries,
  // and a path lookup there compares against all of them.
  std::optional<bool> forwarding(Family family);

  // --- neighbours ---
  // The neighbour entries of one link (index > 0) or all links, of one family or both.
  std::vector<NeighborInfo> neighbors(int index = 0, std::optional<Family> family = {});
  // Adds or replaces permanent entries (`ip neigh replace ... nud permanent`), many per system
  // call. Permanent entries are exempt from the kernel's neighbour table limits (gc_thresh3,
  // which the whole host shares across namespaces). Throws naming the first entry refused.
  void set_permanent_neighbors(const std::vector<NeighborInfo>& entries);
  // Returns false when there was no such entry.
  bool delete_neighbor(int index, const IpAddress& address);

  // Where the socket's error callback leaves the kernel's errno (an implementation detail).
  struct ErrorSlot;

 private:
  Netlink(nl_sock* socket, NetNs netns, ErrorSlot* slot);
  // A socket in the calling thread's namespace, described by `netns`.
  static Netlink open_with_handle(NetNs netns);
  void close();

  nl_sock* socket_ = nullptr;
  NetNs netns_;
  ErrorSlot* error_ = nullptr;  // where the socket's error callback stores the kernel's errno
};

}  // namespace flatnet::netmodel
