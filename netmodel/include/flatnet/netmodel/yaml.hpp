#pragma once

// YAML read into JSON values, as Kubernetes reads its configuration files (sigs.k8s.io/yaml):
// plain scalars take the YAML 1.1 types (null, booleans such as `yes` and `off`, integers in
// decimal, 0x hex, 0o or leading-zero octal and 0b binary, floats), quoted scalars stay strings,
// map keys become strings. Every value keeps where it was written, so that a configuration
// reader can say `proxy.yaml:7:3: iptables.masqueradeBit: ...` about a field it refuses.

#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>

#include "flatnet/netmodel/cluster_file.hpp"

namespace flatnet::netmodel {

// Text that is not YAML, or YAML that has no JSON form (duplicate keys, merge keys, several
// documents). what() reads `proxy.yaml:3:7: invalid YAML: ...`, the position left out when unknown.
class YamlError : public std::runtime_error {
 public:
  YamlError(std::string origin, SourcePosition position, std::string message);
  const std::string& origin() const { return origin_; }
  SourcePosition position() const { return position_; }
  const std::string& message() const { return message_; }

 private:
  std::string origin_;
  SourcePosition position_;
  std::string message_;
};

struct YamlDocument {
  // Where a value was written: for a map member also where its key was.
  struct Place {
    SourcePosition key{};
    SourcePosition value{};
  };

  // null for an empty document.
  nlohmann::json value{};
  // By field path: "" is the document, "iptables.syncPeriod" a member, "nodePortAddresses[1]" an
  // item. Keys holding '.' or '[' are written as they are.
  std::map<std::string, Place, std::less<>> places{};

  // Where the field's key was written, else its value; {} when the path is unknown.
  SourcePosition key_at(std::string_view path) const;
  // Where the value was written, else {}.
  SourcePosition value_at(std::string_view path) const;
};

// One YAML document (an empty text is a null document). `origin` names the text in errors (a file
// name). Throws YamlError.
YamlDocument parse_yaml(std::string_view text, const std::string& origin);

// parse_yaml(text, origin).value.
nlohmann::json yaml_to_json(std::string_view text, const std::string& origin = "<input>");

}  // namespace flatnet::netmodel
