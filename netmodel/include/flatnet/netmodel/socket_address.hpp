#pragma once

// An IP address and port as the socket calls take them (sockaddr_in or sockaddr_in6).

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstring>

#include "flatnet/netmodel/address.hpp"

namespace flatnet::netmodel {

struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;

  static SocketAddress of(const IpAddress& address, std::uint16_t port) {
    SocketAddress s;
    if (address.is_v4()) {
      auto* in = reinterpret_cast<sockaddr_in*>(&s.storage);
      in->sin_family = AF_INET;
      in->sin_port = htons(port);
      std::memcpy(&in->sin_addr, address.bytes().data(), 4);
      s.length = sizeof(sockaddr_in);
    } else {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&s.storage);
      in6->sin6_family = AF_INET6;
      in6->sin6_port = htons(port);
      std::memcpy(&in6->sin6_addr, address.bytes().data(), 16);
      s.length = sizeof(sockaddr_in6);
    }
    return s;
  }
  // The address of an AF_INET or AF_INET6 sockaddr (as recvfrom or getpeername filled it).
  static IpAddress address_of(const sockaddr_storage& s) {
    if (s.ss_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(&s);
      return IpAddress::from_bytes({reinterpret_cast<const std::uint8_t*>(&in->sin_addr), 4});
    }
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&s);
    return IpAddress::from_bytes({reinterpret_cast<const std::uint8_t*>(&in6->sin6_addr), 16});
  }

  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

}  // namespace flatnet::netmodel
