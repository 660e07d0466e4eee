#include "flatnet/cni/ipam.hpp"

#include <algorithm>
#include <set>

#include "flatnet/cni/error.hpp"

namespace flatnet::cni {
namespace {

using netmodel::IpAddress;
using netmodel::IpPrefix;
using nlohmann::json;

// The range of `set` that holds `address`, or nullptr.
const IpRange* range_for(const RangeSet& set, const IpAddress& address) {
  for (const auto& r : set) {
    if (r.contains(address)) return &r;
  }
  return nullptr;
}

IpConfig to_ip_config(const IpRange& range, const IpAddress& address) {
  return IpConfig{IpPrefix(address, range.subnet.length()), range.gateway, std::nullopt};
}

// Walks the set round-robin, starting after the last reserved address (host-local's order):
// to the end of its range, on through the following ranges, and around to where it began,
// skipping each range's gateway. Returns the address reserved, or nullopt when all are taken.
std::optional<IpAddress> allocate_next(IpamStore& store, const RangeSet& set, std::size_t index,
                                       const Environment& env) {
  std::size_t range = 0;
  IpAddress cursor = set[0].range_start;
  bool advance_first = false;
  if (const auto last = store.last_reserved(index)) {
    for (std::size_t i = 0; i < set.size(); ++i) {
      if (set[i].contains(*last)) {
        range = i;
        cursor = *last;
        advance_first = true;
        break;
      }
    }
  }
  auto step = [&] {
    if (cursor == set[range].range_end) {
      range = (range + 1) % set.size();
      cursor = set[range].range_start;
    } else {
      cursor = *cursor.next();
    }
  };
  netmodel::uint128 total = 0;
  for (const auto& r : set)
    total += r.range_end.to_integer() - r.range_start.to_integer() + 1;
  if (advance_first) step();
  for (netmodel::uint128 tried = 0; tried < total; ++tried, step()) {
    if (cursor == set[range].gateway) continue;
    if (store.reserve(cursor, env.container_id, env.ifname, index)) return cursor;
  }
  return std::nullopt;
}

}  // namespace

Result ipam_add(const IpamConfig& config, const Environment& env,
                std::vector<netmodel::IpAddress>* newly_reserved) {
  IpamStore store(config.state_dir());
  const auto lock = store.lock();
  store.remove_stale_temporaries();
  const std::vector<IpAddress> held = store.find(env.container_id, env.ifname);
  std::vector<IpAddress> reserved_now;
  Result result;
  try {
    for (std::size_t i = 0; i < config.range_sets.size(); ++i) {
      const RangeSet& set = config.range_sets[i];
      // A repeated ADD gets the addresses the attachment already holds.
      const auto existing = std::find_if(held.begin(), held.end(), [&](const IpAddress& a) {
        return range_for(set, a) != nullptr;
      });
      if (existing != held.end() && (!config.requested[i] || *config.requested[i] == *existing)) {
        result.ips.push_back(to_ip_config(*range_for(set, *existing), *existing));
        continue;
      }
      if (const auto& wanted = config.requested[i]) {
        const IpRange* r = range_for(set, *wanted);
        if (!r) {
          throw CniError(
              ErrorCode::invalid_network_config,
              "requested IP " + wanted->to_string() + " is outside range set " + to_string(set));
        }
        if (*wanted == r->gateway) {
          throw CniError(ErrorCode::invalid_network_config, "requested IP " + wanted->to_string() +
                                                                " is the gateway of " +
                                                                r->subnet.to_string());
        }
        if (!store.reserve(*wanted, env.container_id, env.ifname, i)) {
          throw CniError(ErrorCode::address_taken, "requested IP " + wanted->to_string() +
                                                       " is already reserved in " +
                                                       store.dir().string());
        }
        reserved_now.push_back(*wanted);
        result.ips.push_back(to_ip_config(*r, *wanted));
        continue;
      }
      const auto address = allocate_next(store, set, i, env);
      if (!address) {
        throw CniError(ErrorCode::address_pool_exhausted,
                       "no free address left in range set " + to_string(set) + " of network \"" +
                           config.network + "\" (" + store.dir().string() +
                           "); release addresses with DEL or GC, or widen the range");
      }
      reserved_now.push_back(*address);
      result.ips.push_back(to_ip_config(*range_for(set, *address), *address));
    }
  } catch (...) {
    for (const auto& a : reserved_now)
      store.release(a);  // all or nothing
    throw;
  }
  result.routes = config.routes;
  result.dns = config.dns;
  if (newly_reserved) *newly_reserved = reserved_now;
  return result;
}

void ipam_release(const IpamConfig& config, const std::vector<netmodel::IpAddress>& addresses) {
  IpamStore store(config.state_dir());
  const auto lock = store.lock();
  for (const auto& a : addresses)
    store.release(a);
}

void ipam_del(const IpamConfig& config, const Environment& env) {
  IpamStore store(config.state_dir());
  const auto lock = store.lock();
  store.remove_stale_temporaries();
  store.release(env.container_id, env.ifname);
}

void ipam_check(const IpamConfig& config, const Environment& env,
                const std::optional<Result>& prev_result) {
  IpamStore store(config.state_dir());
  const auto lock = store.lock();
  const std::vector<IpAddress> held = store.find(env.container_id, env.ifname);
  for (const auto& set : config.range_sets) {
    const bool found = std::any_of(held.begin(), held.end(),
                                   [&](const IpAddress& a) { return range_for(set, a); });
    if (!found) {
      throw CniError(ErrorCode::plugin_failure, "no address reserved for container " +
                                                    env.container_id + " interface " + env.ifname +
                                                    " in range set " + to_string(set) + " (" +
                                                    store.dir().string() + ")");
    }
  }
  if (!prev_result) return;
  for (const auto& ip : prev_result->ips) {
    bool ours = false;
    for (const auto& set : config.range_sets)
      ours = ours || range_for(set, ip.address.address());
    if (ours && std::find(held.begin(), held.end(), ip.address.address()) == held.end()) {
      throw CniError(ErrorCode::plugin_failure,
                     "address " + ip.address.address().to_string() +
                         " of prevResult is not reserved for container " + env.container_id +
                         " interface " + env.ifname);
    }
  }
}

void ipam_gc(const IpamConfig& config, const json& raw_conf) {
  const auto attachments = valid_attachments(raw_conf);
  if (!attachments) return;  // nothing says what is valid: release nothing
  std::set<std::pair<std::string, std::string>> valid(attachments->begin(), attachments->end());
  std::set<std::string> valid_ids;
  for (const auto& [id, ifname] : *attachments)
    valid_ids.insert(id);
  IpamStore store(config.state_dir());
  const auto lock = store.lock();
  store.remove_stale_temporaries();
  for (const auto& r : store.reservations()) {
    const bool keep = r.ifname.empty() ? valid_ids.count(r.container_id) > 0
                                       : valid.count({r.container_id, r.ifname}) > 0;
    if (!keep) store.release(r.address);
  }
}

void ipam_status(const IpamConfig& config) {
  IpamStore store(config.state_dir());
  const auto lock = store.lock();
  const auto reservations = store.reservations();
  for (const auto& set : config.range_sets) {
    netmodel::uint128 usable = 0, taken = 0;
    for (const auto& r : set) {
      usable += r.usable();
      for (const auto& res : reservations) {
        if (r.contains(res.address) && res.address != r.gateway) ++taken;
      }
    }
    if (taken >= usable) {
      throw CniError(ErrorCode::plugin_not_available,
                     "range set " + to_string(set) + " of network \"" + config.network +
                         "\" has no free address (" + store.dir().string() + ")");
    }
  }
}

}  // namespace flatnet::cni

namespace flatnet::cni {

Result IpamPlugin::add(const Request& request) {
  request.env.args.require_known({"IP"});
  return ipam_add(parse_ipam_config(request.conf, request.env), request.env);
}

void IpamPlugin::del(const Request& request) {
  ipam_del(parse_ipam_config(request.conf, request.env, IpamUse::other), request.env);
}

void IpamPlugin::check(const Request& request) {
  ipam_check(parse_ipam_config(request.conf, request.env, IpamUse::other), request.env,
             request.conf.prev_result);
}

void IpamPlugin::status(const Request& request) {
  ipam_status(parse_ipam_config(request.conf, request.env, IpamUse::other));
}

void IpamPlugin::gc(const Request& request) {
  ipam_gc(parse_ipam_config(request.conf, request.env, IpamUse::other), request.conf.raw);
}

}  // namespace flatnet::cni
