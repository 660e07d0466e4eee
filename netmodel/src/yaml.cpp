#include "flatnet/netmodel/yaml.hpp"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "flatnet/netmodel/error.hpp"

namespace flatnet::netmodel {
namespace {

using nlohmann::json;

constexpr std::string_view kStrTag = "tag:yaml.org,2002:str";
constexpr std::string_view kIntTag = "tag:yaml.org,2002:int";
constexpr std::string_view kFloatTag = "tag:yaml.org,2002:float";
constexpr std::string_view kBoolTag = "tag:yaml.org,2002:bool";
constexpr std::string_view kNullTag = "tag:yaml.org,2002:null";

SourcePosition position_of(const YAML::Mark& mark) {
  if (mark.line < 0 || mark.column < 0) return {};
  return {.line = mark.line + 1, .column = mark.column + 1};
}

std::string error_text(const std::string& origin, SourcePosition position,
                       const std::string& message) {
  std::string text = origin;
  if (position.line > 0) {
    text += ":" + std::to_string(position.line) + ":" + std::to_string(position.column);
  }
  return text + ": " + message;
}

std::optional<bool> yaml11_bool(std::string_view s) {
  static const std::set<std::string_view> kTrue = {"y",    "Y",    "yes", "Yes", "YES", "true",
                                                   "True", "TRUE", "on",  "On",  "ON"};
  static const std::set<std::string_view> kFalse = {"n",     "N",     "no",  "No",  "NO", "false",
                                                    "False", "FALSE", "off", "Off", "OFF"};
  if (kTrue.contains(s)) return true;
  if (kFalse.contains(s)) return false;
  return std::nullopt;
}

// An integer in YAML 1.1 form: optional sign, then decimal, 0x hex, 0o or leading-0 octal, or 0b
// binary; '_' separators are ignored. nullopt when `s` is not one; a json unsigned or signed value
// otherwise. Values beyond 64 bits are not integers (they become floats, as in Go's decoder).
std::optional<json> yaml11_int(std::string_view s) {
  std::string digits;
  for (char c : s) {
    if (c != '_') digits += c;
  }
  bool negative = false;
  std::string_view t = digits;
  if (!t.empty() && (t[0] == '-' || t[0] == '+')) {
    negative = t[0] == '-';
    t.remove_prefix(1);
  }
  if (t.empty()) return std::nullopt;
  unsigned base = 10;
  if (t.size() > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) {
    base = 16;
    t.remove_prefix(2);
  } else if (t.size() > 2 && t[0] == '0' && (t[1] == 'o' || t[1] == 'O')) {
    base = 8;
    t.remove_prefix(2);
  } else if (t.size() > 2 && t[0] == '0' && (t[1] == 'b' || t[1] == 'B')) {
    base = 2;
    t.remove_prefix(2);
  } else if (t.size() > 1 && t[0] == '0') {
    base = 8;
    t.remove_prefix(1);
  }
  std::uint64_t value = 0;
  for (char c : t) {
    unsigned d;
    if (c >= '0' && c <= '9') {
      d = static_cast<unsigned>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      d = static_cast<unsigned>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      d = static_cast<unsigned>(c - 'A' + 10);
    } else {
      return std::nullopt;
    }
    if (d >= base) return std::nullopt;
    if (value > (std::numeric_limits<std::uint64_t>::max() - d) / base) return std::nullopt;
    value = value * base + d;
  }
  if (!negative) return json(value);
  constexpr auto kMinMagnitude =
      static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) + 1;
  if (value > kMinMagnitude) return std::nullopt;
  if (value == kMinMagnitude) return json(std::numeric_limits<std::int64_t>::min());
  return json(-static_cast<std::int64_t>(value));
}

// A float in YAML 1.1 form ("1.5", "-2e3", ".5", ".inf", ".NaN"), or nullopt.
std::optional<double> yaml11_float(std::string_view s) {
  std::string_view t = s;
  bool negative = false;
  if (!t.empty() && (t[0] == '-' || t[0] == '+')) {
    negative = t[0] == '-';
    t.remove_prefix(1);
  }
  if (t == ".inf" || t == ".Inf" || t == ".INF") {
    return negative ? -std::numeric_limits<double>::infinity()
                    : std::numeric_limits<double>::infinity();
  }
  if (s == ".nan" || s == ".NaN" || s == ".NAN") return std::numeric_limits<double>::quiet_NaN();
  // [0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)? with at least one digit in the mantissa
  std::string clean;
  std::size_t i = 0;
  bool digit = false;
  auto digits = [&] {
    while (i < t.size() && ((t[i] >= '0' && t[i] <= '9') || t[i] == '_')) {
      if (t[i] != '_') {
        clean += t[i];
        digit = true;
      }
      ++i;
    }
  };
  digits();
  if (i < t.size() && t[i] == '.') {
    clean += '.';
    ++i;
    digits();
  }
  if (!digit) return std::nullopt;
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    clean += 'e';
    ++i;
    if (i < t.size() && (t[i] == '-' || t[i] == '+')) clean += t[i++];
    const std::size_t exponent = i;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9')
      clean += t[i++];
    if (i == exponent) return std::nullopt;
  }
  if (i != t.size()) return std::nullopt;
  const double value = std::strtod(clean.c_str(), nullptr);
  return negative ? -value : value;
}

std::string join(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

class Converter {
 public:
  Converter(const std::string& origin, YamlDocument& document)
      : origin_(origin), document_(document) {}

  json convert(const YAML::Node& node, const std::string& path) {
    document_.places[path].value = position_of(node.Mark());
    switch (node.Type()) {
      case YAML::NodeType::Undefined:
      case YAML::NodeType::Null:
        return nullptr;
      case YAML::NodeType::Scalar:
        return scalar(node, path);
      case YAML::NodeType::Sequence: {
        json list = json::array();
        std::size_t index = 0;
        for (const auto& item : node) {
          list.push_back(convert(item, path + "[" + std::to_string(index++) + "]"));
        }
        return list;
      }
      case YAML::NodeType::Map:
        return map(node, path);
    }
    return nullptr;
  }

 private:
  [[noreturn]] void fail(const YAML::Node& node, const std::string& message) {
    throw YamlError(origin_, position_of(node.Mark()), message);
  }

  json scalar(const YAML::Node& node, const std::string& path) {
    const std::string& text = node.Scalar();
    const std::string& tag = node.Tag();
    const std::string where = path.empty() ? "" : path + ": ";
    if (tag == "!" || tag == kStrTag) return text;
    if (tag == "?") {
      if (auto b = yaml11_bool(text)) return *b;
      if (auto i = yaml11_int(text)) return *i;
      if (auto f = yaml11_float(text)) return *f;
      return text;
    }
    if (tag == kIntTag) {
      if (auto i = yaml11_int(text)) return *i;
      fail(node, where + quote(text) + " is not an integer (!!int)");
    }
    if (tag == kFloatTag) {
      if (auto i = yaml11_int(text)) return static_cast<double>(i->get<std::int64_t>());
      if (auto f = yaml11_float(text)) return *f;
      fail(node, where + quote(text) + " is not a number (!!float)");
    }
    if (tag == kBoolTag) {
      if (auto b = yaml11_bool(text)) return *b;
      fail(node, where + quote(text) + " is not a boolean (!!bool)");
    }
    if (tag == kNullTag) return nullptr;
    fail(node, where + "the tag " + quote(tag) + " is not supported");
  }

  json map(const YAML::Node& node, const std::string& path) {
    json object = json::object();
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node key = it->first;
      if (!key.IsScalar()) {
        fail(key, (path.empty() ? "" : path + ": ") + "a map key must be a scalar");
      }
      const std::string name = key.Scalar();
      if (name == "<<" && key.Tag() == "?") {
        fail(key, (path.empty() ? "" : path + ": ") + "YAML merge keys (<<) are not supported");
      }
      if (object.contains(name)) {
        const auto first = document_.key_at(join(path, name));
        fail(key, "duplicate key " + join(path, name) + " (first written at line " +
                      std::to_string(first.line) + ")");
      }
      const std::string child = join(path, name);
      document_.places[child].key = position_of(key.Mark());
      object[name] = convert(it->second, child);
      // An empty value's mark in yaml-cpp is the next token: point at its key instead.
      auto& place = document_.places[child];
      if (place.value.line == 0 || (it->second.IsNull() && it->second.Tag() != "!")) {
        place.value = place.key;
      }
    }
    return object;
  }

  const std::string& origin_;
  YamlDocument& document_;
};

}  // namespace

YamlError::YamlError(std::string origin, SourcePosition position, std::string message)
    : std::runtime_error(error_text(origin, position, message)),
      origin_(std::move(origin)),
      position_(position),
      message_(std::move(message)) {}

SourcePosition YamlDocument::key_at(std::string_view path) const {
  const auto it = places.find(path);
  if (it == places.end()) return {};
  return it->second.key.line > 0 ? it->second.key : it->second.value;
}

SourcePosition YamlDocument::value_at(std::string_view path) const {
  const auto it = places.find(path);
  return it == places.end() ? SourcePosition{} : it->second.value;
}

YamlDocument parse_yaml(std::string_view text, const std::string& origin) {
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAll(std::string(text));
  } catch (const YAML::Exception& e) {
    throw YamlError(origin, position_of(e.mark), "invalid YAML: " + e.msg);
  }
  if (documents.size() > 1) {
    throw YamlError(origin, position_of(documents[1].Mark()),
                    "expected one YAML document, found " + std::to_string(documents.size()));
  }
  YamlDocument document;
  if (documents.empty()) {
    document.places[""] = {};
    return document;
  }
  try {
    Converter converter(origin, document);
    document.value = converter.convert(documents.front(), "");
  } catch (const YAML::Exception& e) {
    throw YamlError(origin, position_of(e.mark), "invalid YAML: " + e.msg);
  }
  return document;
}

nlohmann::json yaml_to_json(std::string_view text, const std::string& origin) {
  return parse_yaml(text, origin).value;
}

}  // namespace flatnet::netmodel
