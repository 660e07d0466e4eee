#pragma once

// The chains of flatnet-proxy's iptables mode, named exactly as kube-proxy names them, so that
// an operator's `iptables-save | grep KUBE-SVC-XPGD46QRK7WJZT7O` habits carry over and a node
// moved from kube-proxy to flatnet-proxy (or back) keeps the same chains.
//
// Per-service chains are "KUBE-SVC-" and so on followed by the first 16 characters of the RFC 4648
// base32 encoding of SHA-256("ns/svc:port" + lower-case protocol) (kube-proxy's portProtoHash);
// endpoint chains hash that text followed by the endpoint's "ip:port"
// (servicePortEndpointChainName). See kubernetes pkg/proxy/iptables/proxier.go.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "flatnet/proxy/model.hpp"

namespace flatnet::proxy::iptables {

// Top-level chains (kube-proxy's constants). KUBE-SERVICES and KUBE-NODEPORTS exist in both nat
// and filter.
inline constexpr std::string_view kServicesChain = "KUBE-SERVICES";
inline constexpr std::string_view kExternalServicesChain = "KUBE-EXTERNAL-SERVICES";  // filter
inline constexpr std::string_view kNodePortsChain = "KUBE-NODEPORTS";
inline constexpr std::string_view kPostroutingChain = "KUBE-POSTROUTING";       // nat
inline constexpr std::string_view kMarkMasqChain = "KUBE-MARK-MASQ";            // nat
inline constexpr std::string_view kForwardChain = "KUBE-FORWARD";               // filter
inline constexpr std::string_view kProxyFirewallChain = "KUBE-PROXY-FIREWALL";  // filter

// Prefixes of the per-service chains (all in nat).
inline constexpr std::string_view kServiceChainPrefix = "KUBE-SVC-";   // Cluster policy
inline constexpr std::string_view kLocalChainPrefix = "KUBE-SVL-";     // Local policy
inline constexpr std::string_view kExternalChainPrefix = "KUBE-EXT-";  // external destinations
inline constexpr std::string_view kFirewallChainPrefix = "KUBE-FW-";   // loadBalancerSourceRanges
inline constexpr std::string_view kEndpointChainPrefix = "KUBE-SEP-";  // one endpoint

// RFC 4648 base32, standard alphabet, with '=' padding (Go's base32.StdEncoding).
std::string base32(std::span<const std::uint8_t> data);

// The first 16 characters of base32(sha256(text)): the suffix of every per-service chain name.
std::string chain_hash(std::string_view text);
inline constexpr std::size_t kChainHashLength = 16;
// The same 16 characters written to out[0..15], without allocating.
void write_chain_hash(std::string_view text, char* out);

std::string svc_chain(const ServicePortName& name);
std::string svl_chain(const ServicePortName& name);
std::string ext_chain(const ServicePortName& name);
std::string fw_chain(const ServicePortName& name);
// The chain of one endpoint of `name`; endpoint.to_string() ("10.244.1.5:8080") is hashed.
std::string sep_chain(const ServicePortName& name, const EndpointInfo& endpoint);

// True for the per-service chains above (any of the five prefixes): the chains the proxy may
// delete when they are no longer wanted. Top-level and foreign chains are never ours to delete.
bool is_service_chain(std::string_view chain);

}  // namespace flatnet::proxy::iptables
