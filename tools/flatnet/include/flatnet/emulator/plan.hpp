#pragma once

// The cluster plan as plain values: the names of every namespace and link, node addresses and
// pod subnets, which pods should exist (standalone pods and the pods of each Deployment) and
// where the scheduler puts them. Nothing here touches the kernel; the applier (cluster.hpp)
// makes the kernel match a plan, and unit tests check plans.

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "flatnet/netmodel/address.hpp"
#include "flatnet/netmodel/k8s.hpp"

namespace flatnet::emulator {

// --- names ---
// Namespaces: flatnet-<cluster>-fabric, flatnet-<cluster>-node.<node> and
// flatnet-<cluster>-pod.<namespace>.<pod>, so that `ip netns list` groups them by cluster and
// `ip netns exec` works on them. The dots make every name unambiguous: cluster, node and
// namespace names are DNS labels, which hold none, so no name of cluster "a" can be a name of
// cluster "a-pod", and no node's name can be a pod's.
std::string netns_prefix(const std::string& cluster);
std::string fabric_netns(const std::string& cluster);
std::string node_netns(const std::string& cluster, const std::string& node);
std::string pod_netns(const std::string& cluster, const std::string& pod_namespace,
                      const std::string& pod);
// Whether `netns` is one of the names above for `cluster`.
bool owns_netns(const std::string& cluster, const std::string& netns);
// "" for a valid cluster name (a DNS label of at most 32 characters), else why not.
std::string cluster_name_problem(const std::string& name);
// "web-7d9c4b8f6d-x2kqp" or "team-a/web-7d9c4b8f6d-x2kqp": how pods are named in messages and
// what `flatnet delete pod` accepts.
std::string pod_key(const std::string& pod_namespace, const std::string& pod);

// Links the emulator makes itself (the pod veths are the CNI plugin's).
inline constexpr const char* kFabricBridge = "fabric0";     // in the fabric namespace: the node LAN
inline constexpr const char* kPodSegmentBridge = "pods0";   // in the fabric namespace (flat mode)
inline constexpr const char* kNodeUplink = "eth0";          // a node's end of its fabric link
inline constexpr const char* kNodeSegmentLink = "flat-l2";  // a node's end of the pod segment
inline constexpr const char* kPodBridge = "flat0";          // a node's pod bridge
inline constexpr unsigned kRouteProtocol = 4;               // RTPROT_STATIC: routes flatnet adds

// --- nodes ---
struct NodePlan {
  std::string name;
  std::map<std::string, std::string> labels;  // as the kubelet sets them (effective_node_labels)
  std::size_t index = 0;       // 1-based, stable for the node's life (its addresses derive from it)
  netmodel::IpPrefix address;  // eth0: nodeCIDR.nth(index + 1), with nodeCIDR's length
  netmodel::IpPrefix pod_subnet;  // the node's share of podCIDR (routed: its own subnet)
  // The pods' gateway, on the node's pod bridge, with the length pods use (routed: the node's
  // subnet; flat: the whole podCIDR).
  netmodel::IpPrefix gateway;
  std::string netns;
  std::string fabric_port;   // the fabric namespace's end of the node's uplink: "n<index>"
  std::string segment_port;  // flat mode: the fabric namespace's end of the pod segment link
  std::size_t capacity = 0;  // pods the node's subnet holds
};

// Gives each node of the spec an index: the one it had (`previous`, by name), else the lowest
// free one. Throws std::invalid_argument when the spec's address ranges cannot hold them.
std::map<std::string, std::size_t> assign_node_indexes(
    const netmodel::ClusterSpec& spec, const std::map<std::string, std::size_t>& previous);
NodePlan plan_node(const netmodel::ClusterSpec& spec, const netmodel::NodeSpec& node,
                   std::size_t index);
std::vector<NodePlan> plan_nodes(const netmodel::ClusterSpec& spec,
                                 const std::map<std::string, std::size_t>& indexes);

// The CNI network configuration list a node's pods are attached with: flatnet-cni +
// flatnet-ipam, or the reference bridge + host-local with the same settings.
std::string cni_conflist(const netmodel::ClusterSpec& spec, const NodePlan& node,
                         const std::string& ipam_dir);

// --- pods ---
// A pod the cluster should have: a standalone pod, or one replica of a Deployment.
struct DesiredPod {
  netmodel::Pod pod;
  std::string owner;  // "namespace/deployment" for a Deployment's pods, else empty
  std::string template_hash;
};

// What a running pod is known by: enough to match it against the desired pods.
struct PodIdentity {
  std::string pod_namespace;
  std::string name;
  std::string owner;
  std::string template_hash;
  std::string node;
  std::uint64_t created = 0;  // ordering: newer pods are scaled down first
};

struct PodChanges {
  std::vector<DesiredPod> create;
  std::vector<PodIdentity> remove;
};

// The hash a standalone pod is compared by (labels, node, selector, ports).
std::string pod_spec_hash(const netmodel::Pod& pod);

// The Deployment controller and the pod-set diff in one: which pods to create and which to
// remove so that the cluster runs exactly `pods` and, for each deployment, `replicas` pods of
// its current template (pods of an older template are replaced). New replicas are named
// <deployment>-<template hash>-<5 random characters>, as Kubernetes names them.
PodChanges reconcile_pods(const std::vector<netmodel::Pod>& pods,
                          const std::vector<netmodel::Deployment>& deployments,
                          const std::vector<PodIdentity>& current, std::mt19937_64& random);

// --- scheduling ---
struct Placement {
  std::string node;    // empty when the pod cannot be placed
  std::string reason;  // why not, as the scheduler would say it
};

// Places each pod as the Kubernetes scheduler would for the network's sake: its nodeName when
// set (which must exist and have room), else the node matching nodeSelector with the fewest
// pods (lowest index on ties), never beyond a node's capacity. `pods_per_node` counts the pods
// already placed and is updated.
std::vector<Placement> schedule(const std::vector<DesiredPod>& pods,
                                const std::vector<NodePlan>& nodes,
                                std::map<std::string, std::size_t>& pods_per_node);

// The ports a pod's workload serves: every containerPort of every container, or netexec's
// defaults (8080/TCP and 8081/UDP) when the pod declares none.
std::vector<netmodel::ContainerPort> workload_ports(const netmodel::Pod& pod);

}  // namespace flatnet::emulator
