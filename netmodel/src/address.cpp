#include "flatnet/netmodel/address.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <ostream>

#include "flatnet/netmodel/error.hpp"

namespace flatnet::netmodel {
namespace {

constexpr uint128 kAllOnes = ~uint128{0};

[[noreturn]] void fail(std::string_view what, std::string_view text, std::string_view why) {
  throw AddressError("invalid " + std::string(what) + " " + quote(text) + ": " + std::string(why));
}

// Mask of the low `bits` bits of a 128-bit value (bits may be 128).
uint128 low_mask(unsigned bits) {
  return bits >= 128 ? kAllOnes : (uint128{1} << bits) - 1;
}

IpAddress parse_v4(std::string_view text) {
  std::array<std::uint8_t, 4> bytes{};
  std::string_view rest = text;
  for (int i = 0; i < 4; ++i) {
    const auto dot = rest.find('.');
    const std::string_view octet = i < 3 ? rest.substr(0, dot) : rest;
    if (i < 3 && dot == std::string_view::npos) fail("IPv4 address", text, "expected four octets");
    if (octet.empty()) fail("IPv4 address", text, "empty octet");
    if (octet.size() > 3 ||
        !std::all_of(octet.begin(), octet.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      fail("IPv4 address", text, "octet " + quote(octet) + " is not a number from 0 to 255");
    }
    if (octet.size() > 1 && octet[0] == '0') {
      fail("IPv4 address", text, "octet " + quote(octet) + " has a leading zero");
    }
    unsigned value = 0;
    std::from_chars(octet.data(), octet.data() + octet.size(), value);
    if (value > 255) fail("IPv4 address", text, "octet " + quote(octet) + " is greater than 255");
    bytes[i] = static_cast<std::uint8_t>(value);
    if (i < 3) rest = rest.substr(dot + 1);
  }
  return IpAddress::v4(bytes);
}

IpAddress parse_v6(std::string_view text) {
  if (text.find('%') != std::string_view::npos) {
    fail("IPv6 address", text, "zone indexes (\"%...\") are not allowed here");
  }
  if (text.size() > INET6_ADDRSTRLEN) fail("IPv6 address", text, "too long");
  // inet_pton stops at a NUL; text from JSON or YAML may carry one ("\u0000").
  for (const char c : text) {
    const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
                    c == ':' || c == '.';
    if (!ok) fail("IPv6 address", text, "not in RFC 4291 text form");
  }
  std::array<std::uint8_t, 16> bytes{};
  const std::string copy(text);
  if (inet_pton(AF_INET6, copy.c_str(), bytes.data()) != 1) {
    fail("IPv6 address", text, "not in RFC 4291 text form");
  }
  return IpAddress::v6(bytes);
}

// Only the characters an address (or, with `prefix`, a CIDR) can hold, and not too many.
bool could_be_address(std::string_view text, bool prefix) {
  if (text.empty() || text.size() > INET6_ADDRSTRLEN + (prefix ? 4 : 0)) return false;
  return std::all_of(text.begin(), text.end(), [&](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' ||
           c == '.' || (prefix && c == '/');
  });
}

}  // namespace

std::string quote(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string to_decimal(uint128 value) {
  std::string digits;
  do {
    digits.insert(digits.begin(), static_cast<char>('0' + static_cast<int>(value % 10)));
    value /= 10;
  } while (value != 0);
  return digits;
}

IpAddress IpAddress::v4(std::uint32_t host_order) {
  return v4({static_cast<std::uint8_t>(host_order >> 24),
             static_cast<std::uint8_t>(host_order >> 16),
             static_cast<std::uint8_t>(host_order >> 8), static_cast<std::uint8_t>(host_order)});
}

IpAddress IpAddress::v4(std::array<std::uint8_t, 4> bytes) {
  IpAddress a;
  a.family_ = Family::v4;
  std::copy(bytes.begin(), bytes.end(), a.bytes_.begin());
  return a;
}

IpAddress IpAddress::v6(std::array<std::uint8_t, 16> bytes) {
  IpAddress a;
  a.family_ = Family::v6;
  a.bytes_ = bytes;
  return a;
}

IpAddress IpAddress::from_integer(Family family, uint128 value) {
  IpAddress a;
  a.family_ = family;
  const int n = family == Family::v4 ? 4 : 16;
  for (int i = n - 1; i >= 0; --i) {
    a.bytes_[i] = static_cast<std::uint8_t>(value & 0xff);
    value >>= 8;
  }
  return a;
}

IpAddress IpAddress::from_bytes(std::span<const std::uint8_t> bytes) {
  if (bytes.size() == 4) return v4({bytes[0], bytes[1], bytes[2], bytes[3]});
  if (bytes.size() == 16) {
    std::array<std::uint8_t, 16> b;
    std::copy(bytes.begin(), bytes.end(), b.begin());
    return v6(b);
  }
  throw AddressError("invalid IP address: " + std::to_string(bytes.size()) +
                     " bytes (expected 4 or 16)");
}

IpAddress IpAddress::parse(std::string_view text) {
  if (text.empty()) throw AddressError("invalid IP address \"\": empty");
  if (text.find(':') != std::string_view::npos) return parse_v6(text);
  if (text.find('.') != std::string_view::npos) return parse_v4(text);
  fail("IP address", text, "neither a dotted IPv4 address nor an IPv6 address");
}

std::optional<IpAddress> IpAddress::try_parse(std::string_view text) noexcept {
  // Most text that is not an address (file names such as "lock") is turned away here, without
  // the cost of throwing: callers such as IPAM scan directories with this.
  if (!could_be_address(text, false)) return std::nullopt;
  try {
    return parse(text);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

int IpAddress::af() const {
  return is_v4() ? AF_INET : AF_INET6;
}

std::span<const std::uint8_t> IpAddress::bytes() const {
  return {bytes_.data(), is_v4() ? std::size_t{4} : std::size_t{16}};
}

uint128 IpAddress::to_integer() const {
  uint128 value = 0;
  for (auto b : bytes())
    value = (value << 8) | b;
  return value;
}

std::uint32_t IpAddress::to_v4_integer() const {
  if (!is_v4()) throw AddressError("address " + to_string() + " is not IPv4");
  return static_cast<std::uint32_t>(to_integer());
}

bool IpAddress::is_unspecified() const {
  return to_integer() == 0;
}

bool IpAddress::is_loopback() const {
  return is_v4() ? bytes_[0] == 127 : to_integer() == 1;
}

bool IpAddress::is_link_local() const {
  return is_v4() ? (bytes_[0] == 169 && bytes_[1] == 254)
                 : (bytes_[0] == 0xfe && (bytes_[1] & 0xc0) == 0x80);
}

bool IpAddress::is_multicast() const {
  return is_v4() ? (bytes_[0] & 0xf0) == 0xe0 : bytes_[0] == 0xff;
}

std::optional<IpAddress> IpAddress::advanced(uint128 delta) const {
  const uint128 max = low_mask(bit_width());
  const uint128 value = to_integer();
  if (delta > max - value) return std::nullopt;
  return from_integer(family_, value + delta);
}

std::optional<IpAddress> IpAddress::previous() const {
  const uint128 value = to_integer();
  if (value == 0) return std::nullopt;
  return from_integer(family_, value - 1);
}

std::string IpAddress::to_string() const {
  if (is_v4()) {
    return std::to_string(bytes_[0]) + "." + std::to_string(bytes_[1]) + "." +
           std::to_string(bytes_[2]) + "." + std::to_string(bytes_[3]);
  }
  // RFC 5952: lower-case hex without leading zeros; the longest run of two or more zero groups
  // (the first of equal runs) becomes "::"; dotted notation only for IPv4-mapped addresses.
  // (glibc's inet_ntop also writes ::1:2 as ::0.1.0.2, which Go and Kubernetes never print.)
  std::array<unsigned, 8> groups;
  for (int i = 0; i < 8; ++i)
    groups[i] = (bytes_[2 * i] << 8) | bytes_[2 * i + 1];
  const bool mapped =
      std::all_of(groups.begin(), groups.begin() + 5, [](unsigned g) { return g == 0; }) &&
      groups[5] == 0xffff;
  const int count = mapped ? 6 : 8;
  int best_start = -1, best_length = 1;
  for (int i = 0; i < count;) {
    if (groups[i] != 0) {
      ++i;
      continue;
    }
    int j = i;
    while (j < count && groups[j] == 0)
      ++j;
    if (j - i > best_length) {
      best_start = i;
      best_length = j - i;
    }
    i = j;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string text;
  for (int i = 0; i < count; ++i) {
    if (i == best_start) {
      text += "::";
      i += best_length - 1;
      continue;
    }
    if (!text.empty() && text.back() != ':') text += ':';
    bool started = false;
    for (int shift = 12; shift >= 0; shift -= 4) {
      const unsigned digit = (groups[i] >> shift) & 0xf;
      if (digit || started || shift == 0) {
        text += kHex[digit];
        started = true;
      }
    }
  }
  if (mapped) {
    if (text.back() != ':') text += ':';
    text += std::to_string(bytes_[12]) + "." + std::to_string(bytes_[13]) + "." +
            std::to_string(bytes_[14]) + "." + std::to_string(bytes_[15]);
  }
  return text;
}

std::strong_ordering operator<=>(const IpAddress& a, const IpAddress& b) {
  if (a.family_ != b.family_) return a.family_ <=> b.family_;
  return a.bytes_ <=> b.bytes_;
}

IpPrefix::IpPrefix(IpAddress address, unsigned length) : address_(address), length_(length) {
  if (length > address.bit_width()) {
    throw AddressError("invalid prefix length " + std::to_string(length) + " for " +
                       address.to_string() + ": at most " + std::to_string(address.bit_width()));
  }
}

IpPrefix IpPrefix::parse(std::string_view text) {
  const auto slash = text.find('/');
  if (slash == std::string_view::npos) {
    fail("CIDR", text, "missing \"/\" and prefix length (for example 10.244.0.0/16)");
  }
  IpAddress address;
  try {
    address = IpAddress::parse(text.substr(0, slash));
  } catch (const AddressError& e) {
    fail("CIDR", text, e.what());
  }
  const std::string_view digits = text.substr(slash + 1);
  unsigned length = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), length);
  if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size() ||
      (digits.size() > 1 && digits[0] == '0')) {
    fail("CIDR", text, "prefix length " + quote(digits) + " is not a number");
  }
  if (length > address.bit_width()) {
    fail("CIDR", text,
         "prefix length " + std::to_string(length) + " exceeds " +
             std::to_string(address.bit_width()));
  }
  return IpPrefix(address, length);
}

IpPrefix IpPrefix::parse_network(std::string_view text) {
  IpPrefix prefix = parse(text);
  if (!prefix.is_network()) {
    fail("CIDR", text, "host bits are set (did you mean " + prefix.network().to_string() + "?)");
  }
  return prefix;
}

std::optional<IpPrefix> IpPrefix::try_parse(std::string_view text) noexcept {
  if (!could_be_address(text, true)) return std::nullopt;
  try {
    return parse(text);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

IpPrefix IpPrefix::host(const IpAddress& address) {
  return IpPrefix(address, address.bit_width());
}

IpPrefix IpPrefix::network() const {
  const uint128 host_mask = low_mask(host_bits());
  return IpPrefix(IpAddress::from_integer(family(), address_.to_integer() & ~host_mask), length_);
}

IpAddress IpPrefix::broadcast() const {
  return IpAddress::from_integer(family(), address_.to_integer() | low_mask(host_bits()));
}

IpAddress IpPrefix::netmask() const {
  return IpAddress::from_integer(family(), ~low_mask(host_bits()));
}

uint128 IpPrefix::size() const {
  const unsigned bits = host_bits();
  return bits >= 128 ? kAllOnes : uint128{1} << bits;
}

uint128 IpPrefix::host_count() const {
  if (host_bits() >= 128) return kAllOnes;  // 2^128 - 1, exactly
  const uint128 n = size();
  if (family() == Family::v4) return length_ >= 31 ? n : n - 2;
  return length_ >= 127 ? n : n - 1;
}

IpAddress IpPrefix::nth(uint128 n) const {
  if (host_bits() < 128 && n >= size()) {
    throw std::out_of_range("address index past the end of " + network().to_string());
  }
  return IpAddress::from_integer(family(), network_address().to_integer() + n);
}

IpAddress IpPrefix::nth_host(uint128 n) const {
  if (n == 0 || n > host_count()) {
    throw std::out_of_range("host index out of range for " + network().to_string());
  }
  const bool all_usable = family() == Family::v4 ? length_ >= 31 : length_ >= 127;
  return nth(all_usable ? n - 1 : n);
}

IpPrefix IpPrefix::subnet(unsigned new_length, uint128 index) const {
  if (new_length < length_ || new_length > address_.bit_width()) {
    throw std::out_of_range("cannot split " + network().to_string() + " into /" +
                            std::to_string(new_length) + " subnets");
  }
  const unsigned extra = new_length - length_;
  if (extra < 128 && index >= (uint128{1} << extra)) {
    throw std::out_of_range(network().to_string() + " has only " + to_decimal(uint128{1} << extra) +
                            " /" + std::to_string(new_length) + " subnets");
  }
  const unsigned shift = address_.bit_width() - new_length;
  const uint128 offset = shift >= 128 ? 0 : index << shift;
  return IpPrefix(IpAddress::from_integer(family(), network_address().to_integer() + offset),
                  new_length);
}

bool IpPrefix::contains(const IpAddress& address) const {
  if (address.family() != family()) return false;
  const uint128 host_mask = low_mask(host_bits());
  return (address.to_integer() & ~host_mask) == (address_.to_integer() & ~host_mask);
}

bool IpPrefix::contains(const IpPrefix& other) const {
  return other.family() == family() && other.length_ >= length_ && contains(other.address_);
}

bool IpPrefix::overlaps(const IpPrefix& other) const {
  return contains(other) || other.contains(*this);
}

std::string IpPrefix::to_string() const {
  return address_.to_string() + "/" + std::to_string(length_);
}

std::strong_ordering operator<=>(const IpPrefix& a, const IpPrefix& b) {
  if (auto c = a.address_ <=> b.address_; c != 0) return c;
  return a.length_ <=> b.length_;
}

MacAddress MacAddress::parse(std::string_view text) {
  if (text.size() != 17) {
    fail("MAC address", text, "expected six hex pairs like 0a:58:0a:f4:01:05");
  }
  const char separator = text[2];
  if (separator != ':' && separator != '-') {
    fail("MAC address", text, "groups must be separated by \":\" or \"-\"");
  }
  std::array<std::uint8_t, 6> bytes{};
  for (int i = 0; i < 6; ++i) {
    const std::string_view pair = text.substr(i * 3, 2);
    if (i < 5 && text[i * 3 + 2] != separator) {
      fail("MAC address", text, "mixed or missing separators");
    }
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(pair.data(), pair.data() + 2, value, 16);
    if (ec != std::errc{} || end != pair.data() + 2 || pair[0] == '+' || pair[0] == '-') {
      fail("MAC address", text, "group " + quote(pair) + " is not two hex digits");
    }
    bytes[i] = static_cast<std::uint8_t>(value);
  }
  return MacAddress(bytes);
}

std::optional<MacAddress> MacAddress::try_parse(std::string_view text) noexcept {
  try {
    return parse(text);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

bool MacAddress::is_zero() const {
  return std::all_of(bytes_.begin(), bytes_.end(), [](auto b) { return b == 0; });
}

bool MacAddress::is_broadcast() const {
  return std::all_of(bytes_.begin(), bytes_.end(), [](auto b) { return b == 0xff; });
}

std::string MacAddress::to_string() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string text;
  text.reserve(17);
  for (std::size_t i = 0; i < bytes_.size(); ++i) {
    if (i) text += ':';
    text += kHex[bytes_[i] >> 4];
    text += kHex[bytes_[i] & 0xf];
  }
  return text;
}

std::ostream& operator<<(std::ostream& out, const IpAddress& address) {
  return out << address.to_string();
}
std::ostream& operator<<(std::ostream& out, const IpPrefix& prefix) {
  return out << prefix.to_string();
}
std::ostream& operator<<(std::ostream& out, const MacAddress& mac) {
  return out << mac.to_string();
}
std::ostream& operator<<(std::ostream& out, Family family) {
  return out << (family == Family::v4 ? "IPv4" : "IPv6");
}

}  // namespace flatnet::netmodel

std::size_t std::hash<flatnet::netmodel::IpAddress>::operator()(
    const flatnet::netmodel::IpAddress& a) const noexcept {
  const auto v = a.to_integer();
  return std::hash<std::uint64_t>{}(static_cast<std::uint64_t>(v) ^
                                    static_cast<std::uint64_t>(v >> 64)) ^
         static_cast<std::size_t>(a.family());
}

std::size_t std::hash<flatnet::netmodel::IpPrefix>::operator()(
    const flatnet::netmodel::IpPrefix& p) const noexcept {
  return std::hash<flatnet::netmodel::IpAddress>{}(p.address()) * 131 + p.length();
}
