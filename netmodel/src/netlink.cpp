#include "flatnet/netmodel/netlink.hpp"

#include <linux/if_bridge.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/netconf.h>
#include <linux/netlink.h>
#include <netlink/addr.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>
#include <sys/socket.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <thread>

#include "flatnet/netmodel/error.hpp"

namespace flatnet::netmodel {

// The kernel's errno for the last failed request on a socket. libnl folds errno values into its
// own smaller set of codes (ENETUNREACH and EHOSTUNREACH both become NLE_FAILURE, for one); the
// socket's error callback keeps the original.
struct Netlink::ErrorSlot {
  int kernel_errno = 0;
};

namespace {

// Interface and link names, quoted verbatim.
std::string quote_name(std::string_view text) {
  return "\"" + std::string(text) + "\"";
}
std::string link_ref(int index) {
  return "link #" + std::to_string(index);
}

int on_netlink_error(sockaddr_nl*, nlmsgerr* error, void* arg) {
  static_cast<Netlink::ErrorSlot*>(arg)->kernel_errno = -error->error;
  return NL_STOP;  // libnl then returns the error, mapped to its own code, to the caller
}

// The errno for a libnl error code when the kernel did not send one (a local failure).
int errno_of_nle(int nle) {
  switch (nle < 0 ? -nle : nle) {
    case NLE_NOMEM:
      return ENOMEM;
    case NLE_EXIST:
      return EEXIST;
    case NLE_INVAL:
      return EINVAL;
    case NLE_RANGE:
      return ERANGE;
    case NLE_OPNOTSUPP:
      return EOPNOTSUPP;
    case NLE_AF_NOSUPPORT:
      return EAFNOSUPPORT;
    case NLE_OBJ_NOTFOUND:
      return ENOENT;
    case NLE_NODEV:
      return ENODEV;
    case NLE_BUSY:
      return EBUSY;
    case NLE_AGAIN:
      return EAGAIN;
    case NLE_PERM:
      return EPERM;
    case NLE_NOACCESS:
      return EACCES;
    case NLE_INTR:
      return EINTR;
    case NLE_DUMP_INTR:
      return EINTR;
    case NLE_NOADDR:
      return EADDRNOTAVAIL;
    case NLE_MSGSIZE:
      return EMSGSIZE;
    default:
      return EIO;
  }
}

bool is_transient(int err) {
  return err == EBUSY || err == EAGAIN || err == EINTR;
}

template <class T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const {
    if (p) Free(p);
  }
};
void put_link(rtnl_link* l) {
  rtnl_link_put(l);
}
void put_addr(rtnl_addr* a) {
  rtnl_addr_put(a);
}
void put_route(rtnl_route* r) {
  rtnl_route_put(r);
}
void put_nl_addr(nl_addr* a) {
  nl_addr_put(a);
}
void free_cache(nl_cache* c) {
  nl_cache_free(c);
}
void free_msg(nl_msg* m) {
  nlmsg_free(m);
}
void put_cb(nl_cb* c) {
  nl_cb_put(c);
}
using LinkPtr = std::unique_ptr<rtnl_link, Deleter<rtnl_link, put_link>>;
using AddrPtr = std::unique_ptr<rtnl_addr, Deleter<rtnl_addr, put_addr>>;
using RoutePtr = std::unique_ptr<rtnl_route, Deleter<rtnl_route, put_route>>;
using NlAddrPtr = std::unique_ptr<nl_addr, Deleter<nl_addr, put_nl_addr>>;
using CachePtr = std::unique_ptr<nl_cache, Deleter<nl_cache, free_cache>>;
using MsgPtr = std::unique_ptr<nl_msg, Deleter<nl_msg, free_msg>>;
using CbPtr = std::unique_ptr<nl_cb, Deleter<nl_cb, put_cb>>;

template <class T>
T* checked_alloc(T* p) {
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

NlAddrPtr to_nl_addr(const IpAddress& address, unsigned prefix_length) {
  NlAddrPtr a(
      checked_alloc(nl_addr_build(address.af(), address.bytes().data(), address.bytes().size())));
  nl_addr_set_prefixlen(a.get(), static_cast<int>(prefix_length));
  return a;
}

NlAddrPtr to_nl_addr(const IpPrefix& prefix) {
  return to_nl_addr(prefix.address(), prefix.length());
}

IpAddress from_nl_addr(nl_addr* a) {
  const auto* data = static_cast<const std::uint8_t*>(nl_addr_get_binary_addr(a));
  return IpAddress::from_bytes({data, nl_addr_get_len(a)});
}

LinkInfo to_link_info(rtnl_link* l) {
  LinkInfo info;
  info.index = rtnl_link_get_ifindex(l);
  if (const char* name = rtnl_link_get_name(l)) info.name = name;
  if (const char* kind = rtnl_link_get_type(l)) info.kind = kind;
  if (nl_addr* a = rtnl_link_get_addr(l); a && nl_addr_get_len(a) == 6) {
    const auto* b = static_cast<const std::uint8_t*>(nl_addr_get_binary_addr(a));
    info.mac = MacAddress({b[0], b[1], b[2], b[3], b[4], b[5]});
  }
  info.mtu = rtnl_link_get_mtu(l);
  info.flags = rtnl_link_get_flags(l);
  info.master = rtnl_link_get_master(l);
  info.peer_index = rtnl_link_get_link(l);
  std::int32_t nsid = -1;
  if (rtnl_link_get_link_netnsid(l, &nsid) == 0) info.link_netnsid = nsid;
  if (const char* alias = rtnl_link_get_ifalias(l)) info.alias = alias;
  return info;
}

}  // namespace

std::string interface_name_problem(std::string_view name) {
  if (name.empty()) return "interface name is empty";
  if (name.size() >= IFNAMSIZ) {
    return "interface name " + quote_name(name) + " is " + std::to_string(name.size()) +
           " bytes long; at most " + std::to_string(IFNAMSIZ - 1) + " are allowed";
  }
  if (name == "." || name == "..") return "interface name " + quote_name(name) + " is not allowed";
  for (const char c : name) {
    if (c == '/' || c == ':' || std::isspace(static_cast<unsigned char>(c))) {
      return "interface name " + quote_name(name) + " contains " +
             (c == '/'   ? "\"/\""
              : c == ':' ? "\":\""
                         : "whitespace");
    }
  }
  return {};
}

void validate_interface_name(std::string_view name) {
  if (auto problem = interface_name_problem(name); !problem.empty()) {
    throw std::invalid_argument(problem);
  }
}

std::string Route::to_string() const {
  std::string text =
      destination ? destination->to_string()
                  : std::string(effective_family() == Family::v4 ? "default" : "default (IPv6)");
  if (gateway) text += " via " + gateway->to_string();
  if (oif) text += " dev #" + std::to_string(oif);
  if (table != RT_TABLE_MAIN) text += " table " + std::to_string(table);
  if (metric) text += " metric " + std::to_string(metric);
  return text;
}

namespace {

// Runs one libnl request with bounded retries of transient failures, turning a failure into a
// system_error for `operation`.
class Request {
 public:
  Request(nl_sock* socket, Netlink::ErrorSlot* slot) : socket_(socket), slot_(slot) {}

  // `send` returns a libnl result (negative NLE_* on failure). Returns the failing errno when it
  // is in `tolerated` (so callers can treat "already gone" as success), else 0.
  int run(const std::string& operation, const std::function<int(nl_sock*)>& send,
          std::initializer_list<int> tolerated = {}) {
    for (int attempt = 0;; ++attempt) {
      slot_->kernel_errno = 0;
      const int result = send(socket_);
      if (result >= 0) return 0;
      const int err = slot_->kernel_errno ? slot_->kernel_errno : errno_of_nle(result);
      for (int t : tolerated) {
        if (err == t) return err;
      }
      if (is_transient(err) && attempt + 1 < Netlink::kRetries) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1 << attempt));
        continue;
      }
      if (slot_->kernel_errno == 0 && err == EIO) {
        throw_errno(err, operation + " (" + nl_geterror(result) + ")");
      }
      throw_errno(err, operation);
    }
  }

 private:
  nl_sock* socket_;
  Netlink::ErrorSlot* slot_;
};

// An RTM_SETLINK request for one link: the ifinfomsg header plus the attributes to change.
class LinkChange {
 public:
  explicit LinkChange(int index, unsigned char family = AF_UNSPEC)
      : msg_(checked_alloc(nlmsg_alloc_simple(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK))) {
    ifinfomsg header{};
    header.ifi_family = family;
    header.ifi_index = index;
    nlmsg_append(msg_.get(), &header, sizeof header, NLMSG_ALIGNTO);
  }

  ifinfomsg& header() { return *static_cast<ifinfomsg*>(nlmsg_data(nlmsg_hdr(msg_.get()))); }
  nl_msg* msg() { return msg_.get(); }

  LinkChange& flags(unsigned flags, unsigned mask) {
    header().ifi_flags = flags;
    header().ifi_change = mask;
    return *this;
  }
  LinkChange& u32(int type, std::uint32_t value) {
    checked(nla_put_u32(msg(), type, value));
    return *this;
  }
  LinkChange& bytes(int type, const void* data, std::size_t size) {
    checked(nla_put(msg(), type, static_cast<int>(size), data));
    return *this;
  }
  LinkChange& string(int type, std::string_view value) {
    const std::string copy(value);
    checked(nla_put_string(msg(), type, copy.c_str()));
    return *this;
  }
  // A put that does not fit would otherwise send the request without the attribute, and the
  // kernel would acknowledge a change that never happened.
  static void checked(int result) {
    if (result < 0) throw_errno(EMSGSIZE, "build netlink request (attribute too large)");
  }

  // Sends the request and waits for the kernel's acknowledgement.
  int send(nl_sock* socket) {
    // A fresh sequence number for every attempt, or libnl would reject the answer to a resend.
    nlmsg_hdr(msg())->nlmsg_seq = NL_AUTO_SEQ;
    // nl_send_sync frees the message; take a reference so a retry can resend it.
    nlmsg_get(msg());
    return nl_send_sync(socket, msg());
  }

 private:
  MsgPtr msg_;
};

}  // namespace

Netlink::Netlink(nl_sock* socket, NetNs netns, ErrorSlot* slot)
    : socket_(socket), netns_(std::move(netns)), error_(slot) {}

Netlink::Netlink(Netlink&& other) noexcept
    : socket_(std::exchange(other.socket_, nullptr)),
      netns_(std::move(other.netns_)),
      error_(std::exchange(other.error_, nullptr)) {}

Netlink& Netlink::operator=(Netlink&& other) noexcept {
  if (this != &other) {
    close();
    socket_ = std::exchange(other.socket_, nullptr);
    netns_ = std::move(other.netns_);
    error_ = std::exchange(other.error_, nullptr);
  }
  return *this;
}

Netlink::~Netlink() {
  close();
}

void Netlink::close() {
  if (socket_) nl_socket_free(socket_);
  delete error_;
  socket_ = nullptr;
  error_ = nullptr;
}

Netlink Netlink::open() {
  return open_with_handle(NetNs::current());
}

Netlink Netlink::open(const NetNs& ns, Enter how) {
  // The socket belongs to the namespace it was created in; the handle names ns itself.
  NetNs handle = ns.dup();
  if (ns.is_current()) return open_with_handle(std::move(handle));
  return run_in(
      ns, [&] { return open_with_handle(std::move(handle)); }, how);
}

Netlink Netlink::open_with_handle(NetNs netns) {
  auto slot = std::make_unique<ErrorSlot>();
  std::unique_ptr<nl_sock, void (*)(nl_sock*)> socket(checked_alloc(nl_socket_alloc()),
                                                      nl_socket_free);
  if (const int err = nl_connect(socket.get(), NETLINK_ROUTE); err < 0) {
    throw_errno(errno_of_nle(err), std::string("open rtnetlink socket (") + nl_geterror(err) + ")");
  }
  nl_socket_modify_err_cb(socket.get(), NL_CB_CUSTOM, on_netlink_error, slot.get());
  return Netlink(socket.release(), std::move(netns), slot.release());
}

// --- links ---

std::optional<LinkInfo> Netlink::find_link(std::string_view name) {
  validate_interface_name(name);
  rtnl_link* found = nullptr;
  const std::string n(name);
  const int gone =
      Request(socket_, error_)
          .run("find link " + quote_name(name),
               [&](nl_sock* s) { return rtnl_link_get_kernel(s, 0, n.c_str(), &found); }, {ENODEV});
  if (gone) return std::nullopt;
  LinkPtr link(found);
  return to_link_info(link.get());
}

std::optional<LinkInfo> Netlink::find_link(int index) {
  rtnl_link* found = nullptr;
  const int gone =
      Request(socket_, error_)
          .run("find " + link_ref(index),
               [&](nl_sock* s) { return rtnl_link_get_kernel(s, index, nullptr, &found); },
               {ENODEV});
  if (gone) return std::nullopt;
  LinkPtr link(found);
  return to_link_info(link.get());
}

LinkInfo Netlink::link(std::string_view name) {
  if (auto info = find_link(name)) return *info;
  throw_errno(ENODEV, "find link " + quote_name(name));
}

LinkInfo Netlink::link(int index) {
  if (auto info = find_link(index)) return *info;
  throw_errno(ENODEV, "find " + link_ref(index));
}

std::vector<LinkInfo> Netlink::links() {
  nl_cache* raw = nullptr;
  Request(socket_, error_).run("list links", [&](nl_sock* s) {
    return rtnl_link_alloc_cache(s, AF_UNSPEC, &raw);
  });
  CachePtr cache(raw);
  std::vector<LinkInfo> result;
  for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
    result.push_back(to_link_info(reinterpret_cast<rtnl_link*>(o)));
  }
  return result;
}

void Netlink::add_veth(const VethSpec& spec) {
  validate_interface_name(spec.name);
  validate_interface_name(spec.peer_name);
  LinkPtr link(checked_alloc(rtnl_link_veth_alloc()));
  // rtnl_link_veth_get_peer takes a reference; the link keeps its own, so drop ours at once.
  rtnl_link* peer = rtnl_link_veth_get_peer(link.get());
  rtnl_link_put(peer);
  rtnl_link_set_name(link.get(), spec.name.c_str());
  rtnl_link_set_name(peer, spec.peer_name.c_str());
  // Name both namespaces explicitly: without IFLA_NET_NS_FD the kernel puts an end in the
  // socket's namespace.
  rtnl_link_set_ns_fd(link.get(), (spec.ns ? *spec.ns : netns_).fd());
  rtnl_link_set_ns_fd(peer, (spec.peer_ns ? *spec.peer_ns : netns_).fd());
  if (spec.mtu) {
    rtnl_link_set_mtu(link.get(), spec.mtu);
    rtnl_link_set_mtu(peer, spec.mtu);
  }
  if (spec.master) rtnl_link_set_master(link.get(), spec.master);
  if (spec.up) rtnl_link_set_flags(link.get(), IFF_UP);
  NlAddrPtr mac, peer_mac;
  if (spec.mac) {
    mac.reset(checked_alloc(nl_addr_build(AF_LLC, spec.mac->bytes().data(), 6)));
    rtnl_link_set_addr(link.get(), mac.get());
  }
  if (spec.peer_mac) {
    peer_mac.reset(checked_alloc(nl_addr_build(AF_LLC, spec.peer_mac->bytes().data(), 6)));
    rtnl_link_set_addr(peer, peer_mac.get());
  }
  Request(socket_, error_)
      .run("create veth " + quote_name(spec.name) + " with peer " + quote_name(spec.peer_name),
           [&](nl_sock* s) { return rtnl_link_add(s, link.get(), NLM_F_CREATE | NLM_F_EXCL); });
}

void Netlink::add_bridge(const BridgeSpec& spec) {
  validate_interface_name(spec.name);
  LinkPtr link(checked_alloc(rtnl_link_alloc()));
  rtnl_link_set_type(link.get(), "bridge");
  rtnl_link_set_name(link.get(), spec.name.c_str());
  if (spec.mtu) rtnl_link_set_mtu(link.get(), spec.mtu);
  NlAddrPtr mac;
  if (spec.mac) {
    mac.reset(checked_alloc(nl_addr_build(AF_LLC, spec.mac->bytes().data(), 6)));
    rtnl_link_set_addr(link.get(), mac.get());
  }
  Request(socket_, error_).run("create bridge " + quote_name(spec.name), [&](nl_sock* s) {
    return rtnl_link_add(s, link.get(), NLM_F_CREATE | NLM_F_EXCL);
  });
}

void Netlink::add_dummy(std::string_view name) {
  validate_interface_name(name);
  LinkPtr link(checked_alloc(rtnl_link_alloc()));
  rtnl_link_set_type(link.get(), "dummy");
  rtnl_link_set_name(link.get(), std::string(name).c_str());
  const std::string operation = "create dummy link " + quote_name(name);
  const int missing =
      Request(socket_, error_)
          .run(operation,
               [&](nl_sock* s) { return rtnl_link_add(s, link.get(), NLM_F_CREATE | NLM_F_EXCL); },
               {EOPNOTSUPP});
  if (missing) {
    throw KernelFeatureMissing(missing, operation +
                                            ": this kernel has no dummy link type "
                                            "(CONFIG_DUMMY is off); use a bridge without ports "
                                            "as a stand-in");
  }
}

bool Netlink::delete_link(std::string_view name) {
  validate_interface_name(name);
  LinkPtr link(checked_alloc(rtnl_link_alloc()));
  rtnl_link_set_name(link.get(), std::string(name).c_str());
  return Request(socket_, error_)
             .run("delete link " + quote_name(name),
                  [&](nl_sock* s) { return rtnl_link_delete(s, link.get()); }, {ENODEV}) == 0;
}

bool Netlink::delete_link(int index) {
  LinkPtr link(checked_alloc(rtnl_link_alloc()));
  rtnl_link_set_ifindex(link.get(), index);
  return Request(socket_, error_)
             .run("delete " + link_ref(index),
                  [&](nl_sock* s) { return rtnl_link_delete(s, link.get()); }, {ENODEV}) == 0;
}

void Netlink::set_up(int index) {
  LinkChange change(index);
  change.flags(IFF_UP, IFF_UP);
  Request(socket_, error_).run("set " + link_ref(index) + " up", [&](nl_sock* s) {
    return change.send(s);
  });
}

void Netlink::set_down(int index) {
  LinkChange change(index);
  change.flags(0, IFF_UP);
  Request(socket_, error_).run("set " + link_ref(index) + " down", [&](nl_sock* s) {
    return change.send(s);
  });
}

void Netlink::set_mtu(int index, unsigned mtu) {
  LinkChange change(index);
  change.u32(IFLA_MTU, mtu);
  Request(socket_, error_)
      .run("set mtu " + std::to_string(mtu) + " on " + link_ref(index),
           [&](nl_sock* s) { return change.send(s); });
}

void Netlink::set_mac(int index, const MacAddress& mac) {
  LinkChange change(index);
  change.bytes(IFLA_ADDRESS, mac.bytes().data(), 6);
  Request(socket_, error_)
      .run("set mac " + mac.to_string() + " on " + link_ref(index),
           [&](nl_sock* s) { return change.send(s); });
}

void Netlink::set_master(int index, int master_index) {
  LinkChange change(index);
  change.u32(IFLA_MASTER, static_cast<std::uint32_t>(master_index));
  const std::string what =
      master_index ? "attach " + link_ref(index) + " to bridge " + link_ref(master_index)
                   : "detach " + link_ref(index) + " from its master";
  Request(socket_, error_).run(what, [&](nl_sock* s) { return change.send(s); });
}

void Netlink::set_promiscuous(int index, bool on) {
  LinkChange change(index);
  change.flags(on ? IFF_PROMISC : 0, IFF_PROMISC);
  Request(socket_, error_)
      .run(std::string("turn promiscuous mode ") + (on ? "on" : "off") + " on " + link_ref(index),
           [&](nl_sock* s) { return change.send(s); });
}

void Netlink::set_alias(int index, std::string_view alias) {
  LinkChange change(index);
  change.string(IFLA_IFALIAS, alias);
  Request(socket_, error_)
      .run("set alias " + quote_name(alias) + " on " + link_ref(index),
           [&](nl_sock* s) { return change.send(s); });
}

void Netlink::set_hairpin(int port_index, bool on) {
  // Bridge port attributes travel in IFLA_PROTINFO of an AF_BRIDGE RTM_SETLINK.
  LinkChange change(port_index, AF_BRIDGE);
  nlattr* protinfo = nla_nest_start(change.msg(), IFLA_PROTINFO | NLA_F_NESTED);
  if (!protinfo) LinkChange::checked(-NLE_NOMEM);
  LinkChange::checked(nla_put_u8(change.msg(), IFLA_BRPORT_MODE, on ? 1 : 0));
  nla_nest_end(change.msg(), protinfo);
  Request(socket_, error_)
      .run(std::string("turn hairpin mode ") + (on ? "on" : "off") + " on bridge port " +
               link_ref(port_index),
           [&](nl_sock* s) { return change.send(s); });
}

namespace {

// Sends a dump request (`header` is the family-specific message header) and calls
// on_message(nlmsghdr*) for every answer. With `strict`, the socket asks the kernel to apply the
// header's filters (NETLINK_GET_STRICT_CHK, Linux 4.20) for this request only: libnl's own
// dumps send short headers that strict checking refuses.
template <class F>
int dump(nl_sock* s, int type, const void* header, std::size_t length, bool strict, F& on_message) {
  const int fd = nl_socket_get_fd(s);
  const int on = 1, off = 0;
  const bool strict_set =
      strict && ::setsockopt(fd, SOL_NETLINK, NETLINK_GET_STRICT_CHK, &on, sizeof on) == 0;
  int err = nl_send_simple(s, type, NLM_F_DUMP, const_cast<void*>(header), length);
  if (err >= 0) {
    nl_cb* base = nl_socket_get_cb(s);
    CbPtr cb(nl_cb_clone(base));
    nl_cb_put(base);
    if (!cb) {
      err = -NLE_NOMEM;
    } else {
      nl_cb_set(
          cb.get(), NL_CB_VALID, NL_CB_CUSTOM,
          [](nl_msg* msg, void* arg) -> int {
            (*static_cast<F*>(arg))(nlmsg_hdr(msg));
            return NL_OK;
          },
          &on_message);
      err = nl_recvmsgs(s, cb.get());
    }
  }
  if (strict_set) ::setsockopt(fd, SOL_NETLINK, NETLINK_GET_STRICT_CHK, &off, sizeof off);
  return err;
}

}  // namespace

bool Netlink::hairpin(int port_index) {
  // The kernel reports bridge port attributes only in an AF_BRIDGE dump.
  std::optional<bool> mode;
  auto on_message = [&](nlmsghdr* header) {
    if (header->nlmsg_type != RTM_NEWLINK) return;
    const auto* info = static_cast<const ifinfomsg*>(nlmsg_data(header));
    if (info->ifi_index != port_index) return;
    nlattr* attrs[IFLA_MAX + 1] = {};
    if (nlmsg_parse(header, sizeof(ifinfomsg), attrs, IFLA_MAX, nullptr) < 0) return;
    mode = false;
    if (!attrs[IFLA_PROTINFO]) return;
    nlattr* port[IFLA_BRPORT_MAX + 1] = {};
    if (nla_parse_nested(port, IFLA_BRPORT_MAX, attrs[IFLA_PROTINFO], nullptr) < 0) return;
    if (port[IFLA_BRPORT_MODE]) mode = nla_get_u8(port[IFLA_BRPORT_MODE]) != 0;
  };
  const std::string operation = "read hairpin mode of " + link_ref(port_index);
  Request(socket_, error_).run(operation, [&](nl_sock* s) {
    mode.reset();
    ifinfomsg request{};
    request.ifi_family = AF_BRIDGE;
    return dump(s, RTM_GETLINK, &request, sizeof request, false, on_message);
  });
  if (!mode) throw_errno(ENOENT, operation + " (not a bridge port)");
  return *mode;
}

void Netlink::move_to_netns(int index, const NetNs& target, std::string_view new_name) {
  LinkChange change(index);
  change.u32(IFLA_NET_NS_FD, static_cast<std::uint32_t>(target.fd()));
  if (!new_name.empty()) {
    validate_interface_name(new_name);
    change.string(IFLA_IFNAME, new_name);
  }
  Request(socket_, error_)
      .run("move " + link_ref(index) + " to netns " + quote_name(target.path().string()) +
               (new_name.empty() ? "" : " as " + quote_name(new_name)),
           [&](nl_sock* s) { return change.send(s); });
}

// --- addresses ---

namespace {

AddrPtr build_address(int index, const IpPrefix& address) {
  AddrPtr addr(checked_alloc(rtnl_addr_alloc()));
  rtnl_addr_set_ifindex(addr.get(), index);
  rtnl_addr_set_family(addr.get(), address.address().af());
  NlAddrPtr local = to_nl_addr(address);
  rtnl_addr_set_local(addr.get(), local.get());
  return addr;
}

}  // namespace

void Netlink::add_address(int index, const IpPrefix& address, AddressOptions options) {
  AddrPtr addr = build_address(index, address);
  if (address.family() == Family::v4 && address.length() < 31) {
    NlAddrPtr broadcast = to_nl_addr(address.broadcast(), 32);
    rtnl_addr_set_broadcast(addr.get(), broadcast.get());
  }
  unsigned flags = 0;
  if (options.nodad) flags |= IFA_F_NODAD;
  if (options.noprefixroute) flags |= IFA_F_NOPREFIXROUTE;
  if (flags) rtnl_addr_set_flags(addr.get(), flags);
  Request(socket_, error_)
      .run("add address " + address.to_string() + " to " + link_ref(index),
           [&](nl_sock* s) { return rtnl_addr_add(s, addr.get(), NLM_F_EXCL); });
}

bool Netlink::delete_address(int index, const IpPrefix& address) {
  AddrPtr addr = build_address(index, address);
  return Request(socket_, error_)
             .run("delete address " + address.to_string() + " from " + link_ref(index),
                  [&](nl_sock* s) { return rtnl_addr_delete(s, addr.get(), 0); },
                  {EADDRNOTAVAIL, ENODEV}) == 0;
}

std::vector<AddressInfo> Netlink::addresses(int index, std::optional<Family> family) {
  // A raw dump rather than libnl's address cache: the kernel filters by family, and by link
  // under strict checking, so a node with hundreds of veths (each with an IPv6 link-local
  // address) answers with the few addresses asked for.
  std::vector<AddressInfo> result;
  auto on_message = [&](nlmsghdr* header) {
    if (header->nlmsg_type != RTM_NEWADDR) return;
    const auto* msg = static_cast<const ifaddrmsg*>(nlmsg_data(header));
    if (msg->ifa_family != AF_INET && msg->ifa_family != AF_INET6) return;
    if (index && static_cast<int>(msg->ifa_index) != index) return;  // a kernel without filters
    nlattr* attrs[IFA_MAX + 1] = {};
    if (nlmsg_parse(header, sizeof(ifaddrmsg), attrs, IFA_MAX, nullptr) < 0) return;
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS the peer's on point-to-point links
    // (and the only one IPv6 sends).
    nlattr* local = attrs[IFA_LOCAL] ? attrs[IFA_LOCAL] : attrs[IFA_ADDRESS];
    if (!local) return;
    const std::size_t size = static_cast<std::size_t>(nla_len(local));
    if (size != (msg->ifa_family == AF_INET ? 4u : 16u)) return;
    AddressInfo info;
    info.index = static_cast<int>(msg->ifa_index);
    info.prefix =
        IpPrefix(IpAddress::from_bytes({static_cast<const std::uint8_t*>(nla_data(local)), size}),
                 msg->ifa_prefixlen);
    info.scope = static_cast<RouteScope>(msg->ifa_scope);
    info.flags = attrs[IFA_FLAGS] ? nla_get_u32(attrs[IFA_FLAGS]) : msg->ifa_flags;
    result.push_back(info);
  };
  ifaddrmsg request{};
  request.ifa_family = family ? (*family == Family::v4 ? AF_INET : AF_INET6) : AF_UNSPEC;
  request.ifa_index = static_cast<std::uint32_t>(index);
  Request(socket_, error_).run("list addresses", [&](nl_sock* s) {
    result.clear();
    return dump(s, RTM_GETADDR, &request, sizeof request, index != 0, on_message);
  });
  return result;
}

// --- routes ---

namespace {

RoutePtr build_route(const Route& route, bool for_delete) {
  if (route.gateway && route.gateway->family() != route.effective_family()) {
    throw std::invalid_argument("route " + route.to_string() +
                                ": gateway family differs from "
                                "destination family");
  }
  RoutePtr r(checked_alloc(rtnl_route_alloc()));
  const Family family = route.effective_family();
  const int af = family == Family::v4 ? AF_INET : AF_INET6;
  rtnl_route_set_family(r.get(), static_cast<std::uint8_t>(af));
  const IpPrefix destination =
      route.destination ? *route.destination : IpPrefix(IpAddress::from_integer(family, 0), 0);
  NlAddrPtr dst = to_nl_addr(destination.network());
  rtnl_route_set_dst(r.get(), dst.get());
  rtnl_route_set_table(r.get(), route.table);
  rtnl_route_set_type(r.get(), RTN_UNICAST);
  if (route.metric) rtnl_route_set_priority(r.get(), route.metric);
  if (for_delete) {
    // Scope "nowhere" and protocol 0 match any route to the destination (as `ip route del`).
    rtnl_route_set_scope(r.get(), RT_SCOPE_NOWHERE);
    rtnl_route_set_protocol(r.get(), RTPROT_UNSPEC);
  } else {
    const RouteScope scope =
        route.scope.value_or(route.gateway ? RouteScope::universe : RouteScope::link);
    rtnl_route_set_scope(r.get(), static_cast<std::uint8_t>(scope));
    rtnl_route_set_protocol(r.get(), static_cast<std::uint8_t>(route.protocol));
  }
  if (route.source) {
    NlAddrPtr src = to_nl_addr(*route.source, route.source->bit_width());
    rtnl_route_set_pref_src(r.get(), src.get());
  }
  if (route.gateway || route.oif) {
    rtnl_nexthop* nh = checked_alloc(rtnl_route_nh_alloc());
    if (route.oif) rtnl_route_nh_set_ifindex(nh, route.oif);
    if (route.gateway) {
      NlAddrPtr gw = to_nl_addr(*route.gateway, route.gateway->bit_width());
      rtnl_route_nh_set_gateway(nh, gw.get());
    }
    rtnl_route_add_nexthop(r.get(), nh);  // the route owns nh now
  }
  return r;
}

}  // namespace

void Netlink::add_route(const Route& route) {
  RoutePtr r = build_route(route, false);
  Request(socket_, error_).run("add route " + route.to_string(), [&](nl_sock* s) {
    return rtnl_route_add(s, r.get(), NLM_F_EXCL);
  });
}

void Netlink::replace_route(const Route& route) {
  RoutePtr r = build_route(route, false);
  Request(socket_, error_).run("replace route " + route.to_string(), [&](nl_sock* s) {
    return rtnl_route_add(s, r.get(), NLM_F_REPLACE);
  });
}

bool Netlink::delete_route(const Route& route) {
  RoutePtr r = build_route(route, true);
  return Request(socket_, error_)
             .run("delete route " + route.to_string(),
                  [&](nl_sock* s) { return rtnl_route_delete(s, r.get(), 0); }, {ESRCH}) == 0;
}

std::vector<Route> Netlink::routes(Family family, unsigned table) {
  nl_cache* raw = nullptr;
  const int af = family == Family::v4 ? AF_INET : AF_INET6;
  Request(socket_, error_).run("list routes", [&](nl_sock* s) {
    return rtnl_route_alloc_cache(s, af, 0, &raw);
  });
  CachePtr cache(raw);
  std::vector<Route> result;
  for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
    auto* r = reinterpret_cast<rtnl_route*>(o);
    if (rtnl_route_get_table(r) != table || rtnl_route_get_type(r) != RTN_UNICAST) continue;
    if (rtnl_route_get_flags(r) & RTM_F_CLONED) continue;
    Route route;
    route.family = family;
    nl_addr* dst = rtnl_route_get_dst(r);
    const unsigned length = dst ? static_cast<unsigned>(nl_addr_get_prefixlen(dst)) : 0;
    if (dst && length > 0) route.destination = IpPrefix(from_nl_addr(dst), length);
    route.scope = static_cast<RouteScope>(rtnl_route_get_scope(r));
    route.table = table;
    route.metric = rtnl_route_get_priority(r);
    route.protocol = rtnl_route_get_protocol(r);
    if (nl_addr* src = rtnl_route_get_pref_src(r)) route.source = from_nl_addr(src);
    if (rtnl_route_get_nnexthops(r) > 0) {
      rtnl_nexthop* nh = rtnl_route_nexthop_n(r, 0);
      route.oif = rtnl_route_nh_get_ifindex(nh);
      if (nl_addr* gw = rtnl_route_nh_get_gateway(nh)) route.gateway = from_nl_addr(gw);
    }
    result.push_back(route);
  }
  return result;
}

std::optional<Route> Netlink::lookup_route(const IpAddress& destination) {
  struct {
    nlmsghdr header;
    rtmsg message;
    char attrs[64];
  } request{};
  const bool v4 = destination.family() == Family::v4;
  request.header.nlmsg_len = NLMSG_LENGTH(sizeof(rtmsg));
  request.header.nlmsg_type = RTM_GETROUTE;
  request.header.nlmsg_flags = NLM_F_REQUEST;
  request.message.rtm_family = static_cast<unsigned char>(v4 ? AF_INET : AF_INET6);
  request.message.rtm_dst_len = static_cast<unsigned char>(destination.bit_width());
  const auto bytes = destination.bytes();
  auto* attr = reinterpret_cast<rtattr*>(reinterpret_cast<char*>(&request.header) +
                                         NLMSG_ALIGN(request.header.nlmsg_len));
  attr->rta_type = RTA_DST;
  attr->rta_len = static_cast<unsigned short>(RTA_LENGTH(bytes.size()));
  std::memcpy(RTA_DATA(attr), bytes.data(), bytes.size());
  request.header.nlmsg_len = NLMSG_ALIGN(request.header.nlmsg_len) + RTA_ALIGN(attr->rta_len);

  std::optional<Route> found;
  bool unreachable = false;
  auto on_message = [&](nlmsghdr* header) {
    if (header->nlmsg_type != RTM_NEWROUTE) return;
    const auto* msg = static_cast<const rtmsg*>(nlmsg_data(header));
    if (msg->rtm_type != RTN_UNICAST && msg->rtm_type != RTN_LOCAL) return;
    nlattr* attrs[RTA_MAX + 1] = {};
    if (nlmsg_parse(header, sizeof(rtmsg), attrs, RTA_MAX, nullptr) < 0) return;
    const Family family = v4 ? Family::v4 : Family::v6;
    auto address_of = [&](nlattr* a) -> std::optional<IpAddress> {
      if (!a) return std::nullopt;
      const std::size_t size = static_cast<std::size_t>(nla_len(a));
      if (size != (v4 ? 4u : 16u)) return std::nullopt;
      return IpAddress::from_bytes({static_cast<const std::uint8_t*>(nla_data(a)), size});
    };
    Route route;
    route.family = family;
    route.destination = IpPrefix(destination, destination.bit_width());
    route.scope = static_cast<RouteScope>(msg->rtm_scope);
    route.table = attrs[RTA_TABLE] ? nla_get_u32(attrs[RTA_TABLE]) : msg->rtm_table;
    route.protocol = msg->rtm_protocol;
    route.gateway = address_of(attrs[RTA_GATEWAY]);
    route.source = address_of(attrs[RTA_PREFSRC]);
    if (attrs[RTA_OIF]) route.oif = static_cast<int>(nla_get_u32(attrs[RTA_OIF]));
    found = route;
  };
  const int fd = nl_socket_get_fd(socket_);
  if (::send(fd, &request, request.header.nlmsg_len, 0) < 0) {
    throw_errno(errno, "look up the route to " + destination.to_string());
  }
  // The answer is one RTM_NEWROUTE, or an error message.
  alignas(nlmsghdr) char buffer[8192];
  for (;;) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, "look up the route to " + destination.to_string());
    }
    auto* header = reinterpret_cast<nlmsghdr*>(buffer);
    int remaining = static_cast<int>(n);
    bool done = false;
    for (; NLMSG_OK(header, remaining); header = NLMSG_NEXT(header, remaining)) {
      if (header->nlmsg_type == NLMSG_ERROR) {
        const auto* error = static_cast<const nlmsgerr*>(NLMSG_DATA(header));
        if (error->error == 0) continue;
        const int err = -error->error;
        if (err == ENETUNREACH || err == EHOSTUNREACH || err == EACCES) {
          unreachable = true;
        } else {
          throw system_error(err, "look up the route to " + destination.to_string());
        }
        done = true;
      } else if (header->nlmsg_type == RTM_NEWROUTE) {
        on_message(header);
        done = true;
      }
    }
    if (done) break;
  }
  if (unreachable) return std::nullopt;
  return found;
}

std::optional<bool> Netlink::forwarding(Family family) {
  struct {
    nlmsghdr header;
    netconfmsg message;
    char pad[3];
    char attrs[16];
  } request{};
  request.header.nlmsg_len = NLMSG_LENGTH(sizeof(netconfmsg));
  request.header.nlmsg_type = RTM_GETNETCONF;
  request.header.nlmsg_flags = NLM_F_REQUEST;
  request.message.ncm_family =
      static_cast<unsigned char>(family == Family::v4 ? AF_INET : AF_INET6);
  auto* attr = reinterpret_cast<rtattr*>(reinterpret_cast<char*>(&request.header) +
                                         NLMSG_ALIGN(request.header.nlmsg_len));
  attr->rta_type = NETCONFA_IFINDEX;
  attr->rta_len = static_cast<unsigned short>(RTA_LENGTH(sizeof(std::int32_t)));
  const std::int32_t all = NETCONFA_IFINDEX_ALL;
  std::memcpy(RTA_DATA(attr), &all, sizeof all);
  request.header.nlmsg_len = NLMSG_ALIGN(request.header.nlmsg_len) + RTA_ALIGN(attr->rta_len);

  const int fd = nl_socket_get_fd(socket_);
  if (::send(fd, &request, request.header.nlmsg_len, 0) < 0) {
    throw_errno(errno, "read the forwarding setting");
  }
  // The answer is one RTM_NEWNETCONF, or an error message (a kernel that cannot answer).
  alignas(nlmsghdr) char buffer[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, "read the forwarding setting");
    }
    auto* header = reinterpret_cast<nlmsghdr*>(buffer);
    int remaining = static_cast<int>(n);
    for (; NLMSG_OK(header, remaining); header = NLMSG_NEXT(header, remaining)) {
      if (header->nlmsg_type == NLMSG_ERROR) {
        const auto* error = static_cast<const nlmsgerr*>(NLMSG_DATA(header));
        if (error->error == 0) continue;
        return std::nullopt;
      }
      if (header->nlmsg_type != RTM_NEWNETCONF) continue;
      nlattr* attrs[NETCONFA_MAX + 1] = {};
      if (nlmsg_parse(header, sizeof(netconfmsg), attrs, NETCONFA_MAX, nullptr) < 0 ||
          !attrs[NETCONFA_FORWARDING]) {
        return std::nullopt;
      }
      return nla_get_s32(attrs[NETCONFA_FORWARDING]) != 0;
    }
  }
}

// --- neighbours ---

bool NeighborInfo::incomplete() const {
  return state & NUD_INCOMPLETE;
}
bool NeighborInfo::failed() const {
  return state & NUD_FAILED;
}

std::string NeighborInfo::state_name() const {
  static constexpr std::pair<unsigned, const char*> kNames[] = {
      {NUD_INCOMPLETE, "INCOMPLETE"}, {NUD_REACHABLE, "REACHABLE"}, {NUD_STALE, "STALE"},
      {NUD_DELAY, "DELAY"},           {NUD_PROBE, "PROBE"},         {NUD_FAILED, "FAILED"},
      {NUD_NOARP, "NOARP"},           {NUD_PERMANENT, "PERMANENT"},
  };
  std::string name;
  for (const auto& [bit, text] : kNames) {
    if (!(state & bit)) continue;
    if (!name.empty()) name += ",";
    name += text;
  }
  return name.empty() ? "NONE" : name;
}

std::vector<NeighborInfo> Netlink::neighbors(int index, std::optional<Family> family) {
  std::vector<NeighborInfo> result;
  auto on_message = [&](nlmsghdr* header) {
    if (header->nlmsg_type != RTM_NEWNEIGH) return;
    const auto* msg = static_cast<const ndmsg*>(nlmsg_data(header));
    if (msg->ndm_family != AF_INET && msg->ndm_family != AF_INET6) return;
    if (index && msg->ndm_ifindex != index) return;
    nlattr* attrs[NDA_MAX + 1] = {};
    if (nlmsg_parse(header, sizeof(ndmsg), attrs, NDA_MAX, nullptr) < 0) return;
    if (!attrs[NDA_DST]) return;
    const std::size_t size = static_cast<std::size_t>(nla_len(attrs[NDA_DST]));
    if (size != (msg->ndm_family == AF_INET ? 4u : 16u)) return;
    NeighborInfo info;
    info.index = msg->ndm_ifindex;
    info.address =
        IpAddress::from_bytes({static_cast<const std::uint8_t*>(nla_data(attrs[NDA_DST])), size});
    info.state = msg->ndm_state;
    if (attrs[NDA_LLADDR] && nla_len(attrs[NDA_LLADDR]) == 6) {
      const auto* mac = static_cast<const std::uint8_t*>(nla_data(attrs[NDA_LLADDR]));
      info.mac = MacAddress({mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]});
    }
    result.push_back(info);
  };
  ndmsg request{};
  request.ndm_family =
      static_cast<std::uint8_t>(family ? (*family == Family::v4 ? AF_INET : AF_INET6) : AF_UNSPEC);
  // Not a strict dump: the kernel refuses an ifindex in the header of one (EINVAL, reported in
  // the dump's last message); the link is filtered here instead.
  Request(socket_, error_).run("list neighbours", [&](nl_sock* s) {
    result.clear();
    return dump(s, RTM_GETNEIGH, &request, sizeof request, false, on_message);
  });
  return result;
}

namespace {

// Appends one RTM_NEWNEIGH or RTM_DELNEIGH request to `buffer`.
void append_neigh_request(std::vector<char>& buffer, int type, int flags, std::uint32_t seq,
                          const NeighborInfo& entry) {
  const bool v4 = entry.address.family() == Family::v4;
  const auto address = entry.address.bytes();
  const std::size_t start = buffer.size();
  std::size_t length = NLMSG_LENGTH(sizeof(ndmsg));
  const std::size_t dst_length = RTA_LENGTH(address.size());
  const std::size_t mac_length = RTA_LENGTH(6);
  length = NLMSG_ALIGN(length) + RTA_ALIGN(dst_length);
  if (type == RTM_NEWNEIGH) length += RTA_ALIGN(mac_length);
  buffer.resize(start + NLMSG_ALIGN(length), 0);
  auto* header = reinterpret_cast<nlmsghdr*>(buffer.data() + start);
  header->nlmsg_len = static_cast<std::uint32_t>(length);
  header->nlmsg_type = static_cast<std::uint16_t>(type);
  header->nlmsg_flags = static_cast<std::uint16_t>(NLM_F_REQUEST | NLM_F_ACK | flags);
  header->nlmsg_seq = seq;
  auto* msg = static_cast<ndmsg*>(NLMSG_DATA(header));
  msg->ndm_family = static_cast<std::uint8_t>(v4 ? AF_INET : AF_INET6);
  msg->ndm_ifindex = entry.index;
  msg->ndm_state = NUD_PERMANENT;
  char* next = reinterpret_cast<char*>(header) + NLMSG_ALIGN(NLMSG_LENGTH(sizeof(ndmsg)));
  auto* dst = reinterpret_cast<rtattr*>(next);
  dst->rta_type = NDA_DST;
  dst->rta_len = static_cast<unsigned short>(dst_length);
  std::memcpy(RTA_DATA(dst), address.data(), address.size());
  if (type == RTM_NEWNEIGH) {
    auto* mac = reinterpret_cast<rtattr*>(next + RTA_ALIGN(dst_length));
    mac->rta_type = NDA_LLADDR;
    mac->rta_len = static_cast<unsigned short>(mac_length);
    const std::array<std::uint8_t, 6> bytes =
        entry.mac ? entry.mac->bytes() : std::array<std::uint8_t, 6>{};
    std::memcpy(RTA_DATA(mac), bytes.data(), bytes.size());
  }
}

// Sends the requests in `buffer` (each asking for an ACK) and collects the answers: the errno
// of each refused request by sequence number.
std::map<std::uint32_t, int> send_batch(int fd, const std::vector<char>& buffer,
                                        std::uint32_t first_seq, std::size_t requests) {
  std::map<std::uint32_t, int> refused;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  iovec io{const_cast<char*>(buffer.data()), buffer.size()};
  msghdr message{};
  message.msg_name = &kernel;
  message.msg_namelen = sizeof kernel;
  message.msg_iov = &io;
  message.msg_iovlen = 1;
  while (::sendmsg(fd, &message, 0) < 0) {
    if (errno != EINTR) throw_errno(errno, "send neighbour requests");
  }
  std::size_t answered = 0;
  alignas(nlmsghdr) char reply[16384];
  while (answered < requests) {
    const ssize_t n = ::recv(fd, reply, sizeof reply, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, "read neighbour request answers");
    }
    int remaining = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(reply); NLMSG_OK(h, remaining);
         h = NLMSG_NEXT(h, remaining)) {
      if (h->nlmsg_type != NLMSG_ERROR) continue;
      const auto* error = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
      const std::uint32_t seq = error->msg.nlmsg_seq;
      if (seq < first_seq || seq >= first_seq + requests) continue;  // not an answer of ours
      ++answered;
      if (error->error != 0) refused[seq] = -error->error;
    }
  }
  return refused;
}

}  // namespace

void Netlink::set_permanent_neighbors(const std::vector<NeighborInfo>& entries) {
  // Batches small enough for the socket's receive buffer, which counts each ACK at about a
  // kilobyte (its socket buffer), not at its 36 bytes.
  constexpr std::size_t kBatch = 64;
  const int fd = nl_socket_get_fd(socket_);
  for (std::size_t first = 0; first < entries.size(); first += kBatch) {
    const std::size_t count = std::min(kBatch, entries.size() - first);
    std::vector<char> buffer;
    buffer.reserve(count * 48);
    for (std::size_t i = 0; i < count; ++i) {
      if (!entries[first + i].mac) {
        throw std::invalid_argument("neighbour " + entries[first + i].address.to_string() +
                                    " has no MAC address");
      }
      append_neigh_request(buffer, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE,
                           static_cast<std::uint32_t>(first + i + 1), entries[first + i]);
    }
    const auto refused = send_batch(fd, buffer, static_cast<std::uint32_t>(first + 1), count);
    if (!refused.empty()) {
      const auto& [seq, err] = *refused.begin();
      const NeighborInfo& entry = entries[seq - 1];
      throw system_error(err, "set neighbour " + entry.address.to_string() + " lladdr " +
                                  entry.mac->to_string() + " on " + link_ref(entry.index));
    }
  }
}

bool Netlink::delete_neighbor(int index, const IpAddress& address) {
  NeighborInfo entry;
  entry.index = index;
  entry.address = address;
  std::vector<char> buffer;
  append_neigh_request(buffer, RTM_DELNEIGH, 0, 1, entry);
  const auto refused = send_batch(nl_socket_get_fd(socket_), buffer, 1, 1);
  if (refused.empty()) return true;
  const int err = refused.begin()->second;
  if (err == ENOENT || err == ENODEV) return false;
  throw system_error(err, "delete neighbour " + address.to_string() + " on " + link_ref(index));
}

}  // namespace flatnet::netmodel
