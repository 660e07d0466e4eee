#include "flatnet/proxy/iptables/chains.hpp"

#include <openssl/sha.h>

#include <array>

namespace flatnet::proxy::iptables {
namespace {

constexpr std::string_view kBase32Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

std::string prefixed(std::string_view prefix, std::string_view hashed) {
  std::string name;
  name.reserve(prefix.size() + kChainHashLength);
  name.append(prefix);
  name.resize(prefix.size() + kChainHashLength);
  write_chain_hash(hashed, name.data() + prefix.size());
  return name;
}

}  // namespace

std::string base32(std::span<const std::uint8_t> data) {
  std::string out;
  out.reserve((data.size() + 4) / 5 * 8);
  std::uint64_t buffer = 0;
  unsigned bits = 0;
  for (const std::uint8_t byte : data) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out.push_back(kBase32Alphabet[(buffer >> bits) & 0x1f]);
    }
  }
  if (bits > 0) out.push_back(kBase32Alphabet[(buffer << (5 - bits)) & 0x1f]);
  while (out.size() % 8 != 0)
    out.push_back('=');
  return out;
}

void write_chain_hash(std::string_view text, char* out) {
  std::array<std::uint8_t, SHA256_DIGEST_LENGTH> digest{};
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest.data());
  // 16 base32 characters are exactly the first 10 bytes of the digest (80 bits).
  std::uint64_t buffer = 0;
  unsigned bits = 0;
  std::size_t written = 0;
  for (std::size_t i = 0; written < kChainHashLength; ++i) {
    buffer = (buffer << 8) | digest[i];
    bits += 8;
    while (bits >= 5 && written < kChainHashLength) {
      bits -= 5;
      out[written++] = kBase32Alphabet[(buffer >> bits) & 0x1f];
    }
  }
}

std::string chain_hash(std::string_view text) {
  std::string hash(kChainHashLength, '\0');
  write_chain_hash(text, hash.data());
  return hash;
}

std::string svc_chain(const ServicePortName& name) {
  return prefixed(kServiceChainPrefix, name.hash_key());
}

std::string svl_chain(const ServicePortName& name) {
  return prefixed(kLocalChainPrefix, name.hash_key());
}

std::string ext_chain(const ServicePortName& name) {
  return prefixed(kExternalChainPrefix, name.hash_key());
}

std::string fw_chain(const ServicePortName& name) {
  return prefixed(kFirewallChainPrefix, name.hash_key());
}

std::string sep_chain(const ServicePortName& name, const EndpointInfo& endpoint) {
  return prefixed(kEndpointChainPrefix, name.hash_key() + endpoint.to_string());
}

bool is_service_chain(std::string_view chain) {
  for (const auto prefix : {kServiceChainPrefix, kLocalChainPrefix, kExternalChainPrefix,
                            kFirewallChainPrefix, kEndpointChainPrefix}) {
    if (chain.starts_with(prefix)) return true;
  }
  return false;
}

}  // namespace flatnet::proxy::iptables
