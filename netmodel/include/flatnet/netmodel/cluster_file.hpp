#pragma once

// The cluster file: one YAML file of several documents ("---") holding at most one flatnet Cluster
// (apiVersion flatnet/v1alpha1) and ordinary Kubernetes Pods and Deployments (also inside a
// `kind: List`), written as users write them for kubectl.
//
//   apiVersion: flatnet/v1alpha1
//   kind: Cluster
//   metadata: {name: demo}        # or a top-level `name: demo`
//   nodes: 3                      # node-1..node-3, or a list of names or {name, labels}
//   podCIDR: 10.244.0.0/16        # optional, as are the fields below
//   podCIDRMaskSize: 24           # each node's pod subnet (--node-cidr-mask-size)
//   nodeCIDR: 172.18.0.0/24
//   serviceCIDR: 10.96.0.0/16
//   network: routed               # routed | flat
//   cni: flatnet                  # flatnet | bridge
//   mtu: 1500                     # 576..9216
//
// Fields of Kubernetes objects that the network model does not use (image, command, resources,
// status, ...) are dropped with one warning per kind and field path. Documents of other kinds
// (Service, ConfigMap, ...) are dropped with one warning per kind. Unknown fields of the Cluster
// kind, and misspellings of the Kubernetes fields that are used ("nodeselector"), are errors.
// Invalid values are refused with a ClusterFileError naming the line, the field and the value.

#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "flatnet/netmodel/k8s.hpp"

namespace flatnet::netmodel {

// A place in the file, 1-based; 0 when unknown.
struct SourcePosition {
  int line = 0;
  int column = 0;
  friend bool operator==(const SourcePosition&, const SourcePosition&) = default;
};

// Where one object was written: its document (or List item) and each field that was read, by
// field path ("spec.containers[0].ports[1].containerPort"), for messages about it found later.
struct ObjectSource {
  SourcePosition position{};
  std::map<std::string, SourcePosition, std::less<>> fields{};
  // The field's position, else the object's.
  SourcePosition at(std::string_view field_path) const;
};

struct Warning {
  std::string file{};
  int line = 0;
  int column = 0;
  std::string object{};  // `Pod "web"`, `Deployment "prod/api"`, `kind Service`
  std::string field{};   // of the first occurrence, e.g. "spec.containers[0].image"
  std::string message{};
  int count = 1;  // occurrences of the same (kind, field path with indexes removed)
  // "f.yaml:12:9: warning: Pod \"web\": spec.containers[0].image: not part of the network model;
  // ignored (and 99 more like it)"
  std::string to_string() const;
};

// An invalid cluster file. what() reads
// `two-node.yaml:14:9: Deployment "web": spec.template.spec.containers[0].ports[1].containerPort:
// 70000 is not a port number (1-65535)`; parts that do not apply are left out.
class ClusterFileError : public std::runtime_error {
 public:
  ClusterFileError(std::string file, SourcePosition position, std::string object, std::string field,
                   std::string value, std::string message);

  const std::string& file() const { return file_; }
  int line() const { return position_.line; }
  int column() const { return position_.column; }
  const std::string& object() const { return object_; }  // `Pod "web"`, or "" for the file
  const std::string& field() const { return field_; }    // field path, or ""
  const std::string& value() const { return value_; }    // the offending value as written
  const std::string& message() const { return message_; }

 private:
  std::string file_;
  SourcePosition position_;
  std::string object_;
  std::string field_;
  std::string value_;
  std::string message_;
};

struct ClusterFile {
  std::string origin{};                  // the file name used in messages
  std::optional<ClusterSpec> cluster{};  // nullopt without a Cluster document (see default_cluster)
  ObjectSource cluster_source{};
  std::vector<Pod> pods{};
  std::vector<ObjectSource> pod_sources{};  // pod_sources[i] is where pods[i] was written
  std::vector<Deployment> deployments{};
  std::vector<ObjectSource> deployment_sources{};  // parallel to deployments
  std::vector<Warning> warnings{};                 // in file order
};

// Parses and validates every document of `yaml_text`; `origin` names it in messages ("<stdin>",
// a path). Throws ClusterFileError for the first invalid value (or a YAML syntax error).
ClusterFile parse_cluster_file(std::string_view yaml_text, const std::string& origin);

// Reads and parses the file at `path`. An unreadable file throws std::system_error:
// `read cluster file "x.yaml": No such file or directory`.
ClusterFile load_cluster_file(const std::filesystem::path& path);

// The checks that need the cluster the objects will run in (which a file for `flatnet apply -f`
// may not contain): every spec.nodeName (of a Pod or a Deployment's template) names a node of
// `cluster`, and some node matches every nodeSelector (and a named node matches its pod's
// selector). Throws ClusterFileError pointing into `file`.
void validate_against(const ClusterFile& file, const ClusterSpec& cluster);

}  // namespace flatnet::netmodel
