#pragma once

// IPv4 and IPv6 addresses, prefixes (CIDRs) and MAC addresses as plain values.
//
// Parsing is strict and every error names the input and what is wrong with it:
// "invalid IPv4 address \"10.0.0.01\": octet \"01\" has a leading zero". IPv4 octets with
// leading zeros are refused because other tools read them as octal.

#include <array>
#include <compare>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

namespace flatnet::netmodel {

// 128-bit arithmetic on addresses (a GCC/Clang builtin type).
__extension__ typedef unsigned __int128 uint128;

// Decimal text of a 128-bit value (sizes of IPv6 prefixes).
std::string to_decimal(uint128 value);

enum class Family : std::uint8_t { v4 = 4, v6 = 6 };

// Thrown for text that is not a valid address, prefix or MAC address.
class AddressError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

class IpAddress {
 public:
  // 0.0.0.0
  IpAddress() = default;

  static IpAddress v4(std::uint32_t host_order);
  static IpAddress v4(std::array<std::uint8_t, 4> bytes);
  static IpAddress v6(std::array<std::uint8_t, 16> bytes);
  // The address of `family` whose big-endian value is `value` (truncated to the family's width).
  static IpAddress from_integer(Family family, uint128 value);
  // From raw network-order bytes: 4 bytes make IPv4, 16 make IPv6; other sizes throw.
  static IpAddress from_bytes(std::span<const std::uint8_t> bytes);

  // Dotted quad or any RFC 4291 text form; throws AddressError naming the input.
  static IpAddress parse(std::string_view text);
  static std::optional<IpAddress> try_parse(std::string_view text) noexcept;

  Family family() const { return family_; }
  bool is_v4() const { return family_ == Family::v4; }
  bool is_v6() const { return family_ == Family::v6; }
  // AF_INET or AF_INET6.
  int af() const;
  // 32 or 128.
  unsigned bit_width() const { return is_v4() ? 32 : 128; }
  // Network-order bytes: 4 for IPv4, 16 for IPv6.
  std::span<const std::uint8_t> bytes() const;
  uint128 to_integer() const;
  std::uint32_t to_v4_integer() const;  // host order; IPv4 only

  bool is_unspecified() const;
  bool is_loopback() const;
  bool is_link_local() const;
  bool is_multicast() const;

  // The address `delta` further on; nullopt when that leaves the family's address space.
  std::optional<IpAddress> advanced(uint128 delta) const;
  std::optional<IpAddress> next() const { return advanced(1); }
  std::optional<IpAddress> previous() const;

  // RFC 5952 text for IPv6, dotted quad for IPv4.
  std::string to_string() const;

  friend bool operator==(const IpAddress&, const IpAddress&) = default;
  // IPv4 sorts before IPv6; within a family, numerically.
  friend std::strong_ordering operator<=>(const IpAddress& a, const IpAddress& b);

 private:
  Family family_ = Family::v4;
  std::array<std::uint8_t, 16> bytes_{};  // IPv4 uses the first 4
};

// An address with a prefix length: a network ("10.244.0.0/16") or an interface address that
// keeps its host bits ("10.244.1.5/24"), as CNI results and `ip addr` write them.
class IpPrefix {
 public:
  IpPrefix() = default;
  // Throws AddressError when `length` exceeds the family's width.
  IpPrefix(IpAddress address, unsigned length);

  // "ADDRESS/LENGTH"; host bits are kept.
  static IpPrefix parse(std::string_view text);
  // Like parse, but refuses host bits: "10.244.0.1/16" is an error that suggests 10.244.0.0/16.
  static IpPrefix parse_network(std::string_view text);
  static std::optional<IpPrefix> try_parse(std::string_view text) noexcept;
  // A single address as a host prefix (/32 or /128).
  static IpPrefix host(const IpAddress& address);

  const IpAddress& address() const { return address_; }
  unsigned length() const { return length_; }
  Family family() const { return address_.family(); }
  unsigned host_bits() const { return address_.bit_width() - length_; }

  // The same prefix with the host bits cleared.
  IpPrefix network() const;
  IpAddress network_address() const { return network().address(); }
  // The last address of the prefix (the IPv4 broadcast address).
  IpAddress broadcast() const;
  IpAddress netmask() const;
  bool is_network() const { return address_ == network_address(); }

  // Number of addresses. An IPv6 /0 holds 2^128, one more than uint128 can count: size()
  // saturates there at 2^128 - 1 (and host_count() is 2^128 - 1 too).
  uint128 size() const;
  // Addresses a host may use: all but the network and broadcast addresses for IPv4 up to /30,
  // every address of an IPv4 /31 or /32 (RFC 3021), all but the subnet-router anycast address
  // (the first one) for IPv6 shorter than /127.
  uint128 host_count() const;
  // The n-th address of the prefix, counting the network address as 0. Throws std::out_of_range.
  IpAddress nth(uint128 n) const;
  // The n-th usable host address, 1-based (nth_host(1) of 10.0.0.0/24 is 10.0.0.1).
  // Throws std::out_of_range past host_count().
  IpAddress nth_host(uint128 n) const;
  // The index-th subnet of length `new_length` inside this prefix (10.244.0.0/16 split into /24s,
  // index 3, is 10.244.3.0/24). Throws std::out_of_range when it does not fit.
  IpPrefix subnet(unsigned new_length, uint128 index) const;

  bool contains(const IpAddress& address) const;
  bool contains(const IpPrefix& other) const;
  bool overlaps(const IpPrefix& other) const;

  std::string to_string() const;

  friend bool operator==(const IpPrefix&, const IpPrefix&) = default;
  friend std::strong_ordering operator<=>(const IpPrefix& a, const IpPrefix& b);

 private:
  IpAddress address_;
  unsigned length_ = 0;
};

class MacAddress {
 public:
  MacAddress() = default;
  explicit MacAddress(std::array<std::uint8_t, 6> bytes) : bytes_(bytes) {}

  // Six two-digit hex groups separated by ':' or '-', any case.
  static MacAddress parse(std::string_view text);
  static std::optional<MacAddress> try_parse(std::string_view text) noexcept;
  // A random unicast, locally administered address (what the kernel gives a new veth).
  static MacAddress random_local(std::uniform_random_bit_generator auto& random) {
    std::array<std::uint8_t, 6> bytes;
    std::uniform_int_distribution<unsigned> byte(0, 255);
    for (auto& b : bytes)
      b = static_cast<std::uint8_t>(byte(random));
    bytes[0] = static_cast<std::uint8_t>((bytes[0] & 0xfe) | 0x02);
    return MacAddress(bytes);
  }

  const std::array<std::uint8_t, 6>& bytes() const { return bytes_; }
  bool is_zero() const;
  bool is_multicast() const { return bytes_[0] & 0x01; }
  bool is_broadcast() const;
  bool is_locally_administered() const { return bytes_[0] & 0x02; }
  // Lower-case, colon separated: "0a:58:0a:f4:01:05".
  std::string to_string() const;

  friend auto operator<=>(const MacAddress&, const MacAddress&) = default;

 private:
  std::array<std::uint8_t, 6> bytes_{};
};

std::ostream& operator<<(std::ostream& out, const IpAddress& address);
std::ostream& operator<<(std::ostream& out, const IpPrefix& prefix);
std::ostream& operator<<(std::ostream& out, const MacAddress& mac);
std::ostream& operator<<(std::ostream& out, Family family);

}  // namespace flatnet::netmodel

template <>
struct std::hash<flatnet::netmodel::IpAddress> {
  std::size_t operator()(const flatnet::netmodel::IpAddress& a) const noexcept;
};
template <>
struct std::hash<flatnet::netmodel::IpPrefix> {
  std::size_t operator()(const flatnet::netmodel::IpPrefix& p) const noexcept;
};
