#pragma once

// Private to netmodel: the pieces the Kubernetes JSON decoders (k8s.cpp, service.cpp) share. A
// JsonReader reads one object and names the kind, the object and the field path in every error
// it throws (K8sDecodeError): `decode Pod "web": spec.containers[0].name: expected a string,
// found a number`.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>

#include "flatnet/netmodel/error.hpp"
#include "flatnet/netmodel/k8s.hpp"

namespace flatnet::netmodel::json_detail {

using nlohmann::json;

inline const char* json_type(const json& j) {
  if (j.is_object()) return "an object";
  if (j.is_array()) return "a list";
  if (j.is_string()) return "a string";
  if (j.is_boolean()) return "a boolean";
  if (j.is_number()) return "a number";
  return "null";
}

inline std::string join_path(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

inline std::string index_path(const std::string& path, std::size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

class JsonReader {
 public:
  explicit JsonReader(std::string kind) : kind_(std::move(kind)) {}

  // The object's name as errors show it ("web", or "default/web" for namespaced kinds).
  void set_name(const std::string& name) { name_ = name; }

  [[noreturn]] void fail(const std::string& path, const std::string& message) const {
    std::string what = "decode " + kind_;
    if (!name_.empty()) what += " " + quote(name_);
    if (!path.empty()) what += ": " + path;
    throw K8sDecodeError(what + ": " + message);
  }

  const json& object(const json& j, const std::string& path) const {
    if (!j.is_object()) fail(path, "expected an object, found " + std::string(json_type(j)));
    return j;
  }

  // The member `key` of object `j`, or nullptr when absent or null.
  const json* member(const json& j, std::string_view key) const {
    const auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }

  std::string string(const json& j, const std::string& path) const {
    if (!j.is_string()) fail(path, "expected a string, found " + std::string(json_type(j)));
    return j.get<std::string>();
  }

  std::string string_member(const json& j, std::string_view key, const std::string& path,
                            std::string fallback = "") const {
    const json* m = member(j, key);
    return m ? string(*m, join_path(path, key)) : fallback;
  }

  bool boolean(const json& j, const std::string& path) const {
    if (!j.is_boolean()) fail(path, "expected a boolean, found " + std::string(json_type(j)));
    return j.get<bool>();
  }

  // An integer in min..max; the range is written "(min-max)" in errors.
  long long integer(const json& j, const std::string& path, long long min, long long max) const {
    return checked_integer(j, path, min, max,
                           "(" + std::to_string(min) + "-" + std::to_string(max) + ")");
  }

  // An integer in min..max; the range is written "min..max" in errors (the form of the
  // Service and EndpointSlice decoders: "70000 is out of range 1..65535").
  long long integer_in(const json& j, const std::string& path, long long min, long long max) const {
    return checked_integer(j, path, min, max, std::to_string(min) + ".." + std::to_string(max));
  }

  Labels labels(const json* j, const std::string& path) const {
    Labels out;
    if (!j) return out;
    object(*j, path);
    for (const auto& [key, value] : j->items()) {
      out.emplace(key, string(value, path + "[" + key + "]"));
    }
    return out;
  }

  const json& array(const json& j, const std::string& path) const {
    if (!j.is_array()) fail(path, "expected a list, found " + std::string(json_type(j)));
    return j;
  }

  // The document is an object of this reader's kind and `api_version`; a missing kind or
  // apiVersion is taken to be the expected one.
  void check_kind(const json& j, std::string_view api_version) const {
    object(j, "");
    const std::string kind = string_member(j, "kind", "", kind_);
    if (kind != kind_) fail("kind", quote(kind) + " is not " + kind_);
    const std::string version = string_member(j, "apiVersion", "", std::string(api_version));
    if (version != api_version) {
      fail("apiVersion", quote(version) + " is not " + std::string(api_version));
    }
  }

 private:
  long long checked_integer(const json& j, const std::string& path, long long min, long long max,
                            const std::string& range) const {
    if (!j.is_number_integer()) fail(path, j.dump() + " is not an integer");
    if (j.is_number_unsigned() &&
        j.get<std::uint64_t>() >
            static_cast<std::uint64_t>(std::numeric_limits<long long>::max())) {
      fail(path, j.dump() + " is out of range " + range);
    }
    const long long v = j.get<long long>();
    if (v < min || v > max) fail(path, j.dump() + " is out of range " + range);
    return v;
  }

  std::string kind_;
  std::string name_;
};

// ObjectMeta: name, namespace, labels, annotations. A template's meta leaves out an empty name
// and the default namespace.
inline json meta_to_json(const ObjectMeta& meta, bool is_template) {
  json j = json::object();
  if (!is_template || !meta.name.empty()) j["name"] = meta.name;
  if (!is_template || meta.namespace_ != "default") j["namespace"] = meta.namespace_;
  if (!meta.labels.empty()) j["labels"] = meta.labels;
  if (!meta.annotations.empty()) j["annotations"] = meta.annotations;
  return j;
}

// Reads `j` (nullptr: absent) at `path`. For an object's own metadata (a path without a '.')
// the reader's name becomes the object's name, "<namespace>/<name>" when `namespaced_name`.
inline ObjectMeta meta_from_json(JsonReader& r, const json* j, const std::string& path,
                                 bool namespaced_name = false) {
  ObjectMeta meta;
  if (!j) return meta;
  r.object(*j, path);
  const bool own = path.find('.') == std::string::npos;
  meta.name = r.string_member(*j, "name", path);
  if (own) r.set_name(meta.name);
  meta.namespace_ = r.string_member(*j, "namespace", path, "default");
  if (own && namespaced_name && !meta.name.empty()) r.set_name(meta.namespace_ + "/" + meta.name);
  meta.labels = r.labels(r.member(*j, "labels"), join_path(path, "labels"));
  meta.annotations = r.labels(r.member(*j, "annotations"), join_path(path, "annotations"));
  return meta;
}

}  // namespace flatnet::netmodel::json_detail
