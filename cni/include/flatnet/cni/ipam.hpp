#pragma once

// flatnet-ipam: host-local compatible IP address management.
//
// The configuration and the on-disk state are host-local's, so both plugins can serve one
// dataDir side by side: dataDir/<network>/<ip> holds "<container id>\r\n<ifname>" for each
// reserved address, last_reserved_ip.<range set index> the last address handed out, and every
// change happens under an flock on dataDir/<network>/lock. Differences, on purpose:
// - a reservation appears atomically (written to a temporary file, then hard-linked to its
//   name), so a kill -9 at any instant leaves a complete file or none; host-local can leave an
//   empty file that nothing ever frees;
// - ADD for a container ID and interface that already hold addresses returns those addresses
//   (a runtime retrying an ADD gets the same answer) instead of failing.

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "flatnet/cni/environment.hpp"
#include "flatnet/cni/netconf.hpp"
#include "flatnet/cni/plugin.hpp"
#include "flatnet/cni/types.hpp"
#include "flatnet/netmodel/address.hpp"

namespace flatnet::cni {

inline constexpr const char* kDefaultIpamDataDir = "/var/lib/cni/networks";

struct IpRange {
  netmodel::IpPrefix subnet;
  netmodel::IpAddress range_start;  // default: the first address after the network address
  netmodel::IpAddress range_end;    // default: the last address (before broadcast for IPv4)
  netmodel::IpAddress gateway;      // default: the first address after the network address

  bool contains(const netmodel::IpAddress& address) const;
  // Addresses the range can hand out (its gateway excluded when inside it).
  netmodel::uint128 usable() const;
  std::string to_string() const;  // "10.244.1.0/24 (10.244.1.2-10.244.1.254)"
};

using RangeSet = std::vector<IpRange>;
std::string to_string(const RangeSet& set);

struct IpamConfig {
  std::string network;               // the configuration's name: the state directory
  std::vector<RangeSet> range_sets;  // one address per range set
  std::vector<RouteEntry> routes;
  std::filesystem::path data_dir = kDefaultIpamDataDir;
  Dns dns;  // from resolvConf, when given
  // Requested addresses (args.cni.ips, runtimeConfig.ips, CNI_ARGS IP=), one per range set at
  // most: requested[i] belongs to range_sets[i].
  std::vector<std::optional<netmodel::IpAddress>> requested;

  std::filesystem::path state_dir() const { return data_dir / network; }
};

// Reads the ipam section of `conf` (host-local's ranges or legacy single-range form, routes,
// dataDir, resolvConf) and the requested addresses. Throws CniError(invalid_network_config)
// naming the field path and value for anything wrong.
// What the configuration is read for: resolvConf and the requested addresses matter to ADD only,
// and must not make DEL, CHECK, GC or STATUS fail (a resolv.conf removed since, say).
enum class IpamUse { add, other };
IpamConfig parse_ipam_config(const NetConf& conf, const Environment& env,
                             IpamUse use = IpamUse::add);

struct Reservation {
  netmodel::IpAddress address;
  std::string container_id;
  std::string ifname;  // empty in files written by host-local before v0.8
};

// The reservation files of one network. Every method that reads or changes state expects the
// caller to hold the lock (see lock()).
class IpamStore {
 public:
  explicit IpamStore(std::filesystem::path state_dir);
  ~IpamStore();
  IpamStore(const IpamStore&) = delete;
  IpamStore& operator=(const IpamStore&) = delete;

  // Takes the flock on <state dir>/lock (blocking); returns an object that releases it.
  class Lock {
   public:
    explicit Lock(int fd) : fd_(fd) {}
    Lock(Lock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    ~Lock();

   private:
    int fd_;
  };
  Lock lock();

  // Reserves `address` for (id, ifname); false when it is taken. Records it as the last
  // reserved address of `range_set`.
  bool reserve(const netmodel::IpAddress& address, const std::string& container_id,
               const std::string& ifname, std::size_t range_set);
  std::optional<netmodel::IpAddress> last_reserved(std::size_t range_set) const;
  std::vector<Reservation> reservations() const;
  std::vector<netmodel::IpAddress> find(const std::string& container_id,
                                        const std::string& ifname) const;
  bool release(const netmodel::IpAddress& address);
  // Releases every address held by (id, ifname), also files of old host-local versions that hold
  // only the container ID. Returns how many were released.
  std::size_t release(const std::string& container_id, const std::string& ifname);
  // Removes temporary files left by a writer that died (any, since the caller holds the lock).
  void remove_stale_temporaries();

  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
};

// The four IPAM operations, each under the store's lock.
// `newly_reserved`, when given, receives the addresses this call reserved (not those a repeated
// ADD found already held): the ones a caller that fails later may give back.
Result ipam_add(const IpamConfig& config, const Environment& env,
                std::vector<netmodel::IpAddress>* newly_reserved = nullptr);
// Releases exactly `addresses` (undoing an ipam_add).
void ipam_release(const IpamConfig& config, const std::vector<netmodel::IpAddress>& addresses);
void ipam_del(const IpamConfig& config, const Environment& env);
// Throws CniError naming what is missing when (id, ifname) does not hold an address in every
// range set, or holds other addresses than prev_result lists.
void ipam_check(const IpamConfig& config, const Environment& env,
                const std::optional<Result>& prev_result);
// Releases every reservation whose (container ID, ifname) is not among the valid attachments
// (cni.dev/valid-attachments, else cni.dev/attachments); with neither key, releases nothing.
void ipam_gc(const IpamConfig& config, const nlohmann::json& raw_conf);
// Throws CniError(plugin_not_available) when a range set has no free address left.
void ipam_status(const IpamConfig& config);

// The flatnet-ipam plugin: the operations above behind the CNI skeleton.
class IpamPlugin : public Plugin {
 public:
  Result add(const Request& request) override;
  void del(const Request& request) override;
  void check(const Request& request) override;
  void status(const Request& request) override;
  void gc(const Request& request) override;
};

}  // namespace flatnet::cni
