#include "flatnet/netexec/endpoint.hpp"

#include <net/if.h>
#include <netinet/in.h>

#include <cstdint>
#include <span>

#include "flatnet/netmodel/address.hpp"

namespace flatnet::netexec {

std::string format_endpoint(const sockaddr* address, socklen_t length) {
  using netmodel::IpAddress;
  if (address->sa_family == AF_INET && length >= sizeof(sockaddr_in)) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(address);
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(&in->sin_addr);
    return IpAddress::from_bytes(std::span(bytes, 4)).to_string() + ":" +
           std::to_string(ntohs(in->sin_port));
  }
  if (address->sa_family == AF_INET6 && length >= sizeof(sockaddr_in6)) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(address);
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(&in6->sin6_addr);
    const std::string port = std::to_string(ntohs(in6->sin6_port));
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      return IpAddress::from_bytes(std::span(bytes + 12, 4)).to_string() + ":" + port;
    }
    std::string text = "[" + IpAddress::from_bytes(std::span(bytes, 16)).to_string();
    if (in6->sin6_scope_id != 0 && IN6_IS_ADDR_LINKLOCAL(&in6->sin6_addr)) {
      char name[IF_NAMESIZE];
      text += '%';
      text += if_indextoname(in6->sin6_scope_id, name) ? std::string(name)
                                                       : std::to_string(in6->sin6_scope_id);
    }
    return text + "]:" + port;
  }
  return {};
}

}  // namespace flatnet::netexec
