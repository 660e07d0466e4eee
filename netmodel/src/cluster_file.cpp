#include "flatnet/netmodel/cluster_file.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <limits>
#include <set>
#include <utility>

#include "flatnet/netmodel/error.hpp"

namespace flatnet::netmodel {
namespace {

constexpr std::string_view kClusterApiVersion = "flatnet/v1alpha1";

SourcePosition position_of(const YAML::Mark& mark) {
  if (mark.line < 0 || mark.column < 0) return {};
  return {.line = mark.line + 1, .column = mark.column + 1};
}

std::string line_text(SourcePosition pos) {
  return "line " + std::to_string(pos.line);
}

// "1 node", "3 nodes"
std::string count_text(std::size_t n, const std::string& noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

// A value as written, for ClusterFileError::value(): a scalar's text, else "".
std::string raw(const YAML::Node& node) {
  return node.IsScalar() ? node.Scalar() : "";
}

// A value as written, for messages: plain scalars as they are, quoted ones in quotes.
std::string shown(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Scalar:
      if (node.Tag() == "?") {
        const std::string q = quote(node.Scalar());
        return q.substr(1, q.size() - 2);
      }
      return quote(node.Scalar());
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

bool is_plain(const YAML::Node& node) {
  return node.IsScalar() && node.Tag() == "?";
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// What YAML 1.1 (as Kubernetes' YAML decoder reads it) makes of a plain scalar that is not a
// string: "a number", "a boolean", or "" for a string.
std::string_view plain_scalar_type(std::string_view s) {
  static const std::set<std::string_view> kBooleans = {
      "y",    "Y",    "yes",   "Yes",   "YES",   "n",  "N",  "no", "No",  "NO",  "true",
      "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF"};
  if (kBooleans.count(s)) return "a boolean";
  std::string_view t = s;
  if (!t.empty() && (t[0] == '-' || t[0] == '+')) t.remove_prefix(1);
  if (t == ".inf" || t == ".Inf" || t == ".INF" || s == ".nan" || s == ".NaN" || s == ".NAN") {
    return "a number";
  }
  if (t.size() > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'o' || t[1] == 'b')) {
    return "a number";
  }
  // [0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)? with at least one digit before the exponent
  std::size_t i = 0;
  bool digit = false;
  while (i < t.size() && ((t[i] >= '0' && t[i] <= '9') || t[i] == '_'))
    digit |= t[i++] != '_';
  if (i < t.size() && t[i] == '.') {
    ++i;
    while (i < t.size() && ((t[i] >= '0' && t[i] <= '9') || t[i] == '_'))
      digit |= t[i++] != '_';
  }
  if (!digit) return "";
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '-' || t[i] == '+')) ++i;
    if (!all_digits(t.substr(i))) return "";
    i = t.size();
  }
  return i == t.size() ? "a number" : "";
}

// "spec.containers[0].ports[1].name" -> "spec.containers[].ports[].name"
std::string without_indexes(std::string_view path) {
  std::string out;
  for (std::size_t i = 0; i < path.size(); ++i) {
    out += path[i];
    if (path[i] == '[') {
      std::size_t j = i + 1;
      while (j < path.size() && path[j] >= '0' && path[j] <= '9')
        ++j;
      if (j > i + 1 && j < path.size() && path[j] == ']') i = j - 1;
    }
  }
  return out;
}

std::string join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The known key that `key` is most likely a misspelling of, or "": the same key in another case,
// or (for keys of 6 characters or more) one edit away from it.
std::string misspelling_of(std::string_view key, const std::vector<std::string>& known) {
  for (const auto& k : known) {
    if (lower(k) == lower(key)) return k;
  }
  if (key.size() >= 6) {
    for (const auto& k : known) {
      if (edit_distance(lower(k), lower(key)) <= 1) return k;
    }
  }
  return "";
}

std::string list_text(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items)
    out += (out.empty() ? "" : ", ") + item;
  return out;
}

std::string object_name(std::string_view kind, const ObjectMeta& meta) {
  return std::string(kind) + " " +
         quote(meta.namespace_ == "default" ? meta.name : meta.namespace_ + "/" + meta.name);
}

// A YAML value with the field path that leads to it and where it was written (for a null
// value, where its key was).
struct Value {
  YAML::Node node{};
  std::string path{};
  SourcePosition pos{};
};

// The object being read: its kind, its name for messages, and where its fields are recorded.
struct Context {
  std::string kind{};
  std::string object{};    // `Pod "web"`; the kind alone until the name is known
  ObjectSource* source{};  // may be null
  bool strict = false;     // unknown fields are errors (flatnet's own kinds)
};

class Parser;

// Reads the fields of one YAML map. Keys must be scalars and unique; null values count as absent
// (as in Kubernetes' JSON). finish() reports the fields that were never asked for.
class MapReader {
 public:
  MapReader(Parser& parser, Context& ctx, const Value& map);

  // The value of `key`, or nullopt when absent or null.
  std::optional<Value> get(std::string_view key);
  // The value of `key`; a ClusterFileError when absent or null.
  Value require(std::string_view key, std::string_view hint = "");
  // Every entry, for maps whose keys are data (labels): the key (path of the map) and the value.
  std::vector<std::pair<Value, Value>> entries();
  // Fields never asked for: errors in strict mode and for misspellings of asked-for keys, else
  // one warning each ("not part of the network model; ignored").
  void finish();

  const Value& self() const { return map_; }

 private:
  struct Entry {
    std::string key;
    YAML::Node key_node;
    YAML::Node value;
    bool used = false;
  };
  Entry* find(std::string_view key);

  Parser& parser_;
  Context& ctx_;
  Value map_;
  std::vector<Entry> entries_;
  std::vector<std::string> known_;
};

using SeenObjects = std::map<std::pair<std::string, std::string>, SourcePosition>;

class Parser {
 public:
  Parser(const std::string& origin, ClusterFile& out) : origin_(origin), out_(out) {}

  void document(const YAML::Node& doc);

  [[noreturn]] void fail(const Context& ctx, SourcePosition pos, const std::string& path,
                         const std::string& value, const std::string& message) const {
    throw ClusterFileError(origin_, pos, ctx.object, path, value, message);
  }
  [[noreturn]] void fail(const Context& ctx, const Value& v, const std::string& message) const {
    fail(ctx, v.pos, v.path, raw(v.node), message);
  }

  void warn(const Context& ctx, SourcePosition pos, const std::string& path,
            const std::string& message);

  static void record(const Context& ctx, const Value& v) {
    if (ctx.source) ctx.source->fields.insert_or_assign(v.path, v.pos);
  }

  std::string text(const Context& ctx, const Value& v) const;
  long long integer(const Context& ctx, const Value& v, long long min, long long max,
                    const std::string& range) const;
  bool boolean(const Context& ctx, const Value& v) const;
  std::vector<Value> items(const Context& ctx, const Value& v) const;

  enum class LabelRules { labels, annotations };
  Labels read_labels(Context& ctx, const Value& v, LabelRules rules);

 private:
  void read_cluster(MapReader& top, Context& ctx, SourcePosition pos);
  void read_pod(MapReader& top, Context& ctx, SourcePosition pos);
  void read_deployment(MapReader& top, Context& ctx, SourcePosition pos);
  ObjectMeta read_meta(MapReader& top, Context& ctx);
  PodSpec read_pod_spec(Context& ctx, const Value& v);
  LabelSelector read_selector(Context& ctx, const Value& v);
  void check_unique(SeenObjects& seen, const Context& ctx, const ObjectMeta& meta,
                    SourcePosition pos) const;

  const std::string& origin_;
  ClusterFile& out_;
  std::map<std::string, std::size_t> warning_index_;
  SourcePosition cluster_seen_{};
  SeenObjects pods_seen_;
  SeenObjects deployments_seen_;
};

// --- MapReader ---

MapReader::MapReader(Parser& parser, Context& ctx, const Value& map)
    : parser_(parser), ctx_(ctx), map_(map) {
  if (!map.node.IsMap()) parser.fail(ctx, map, "expected a map, found " + shown(map.node));
  for (auto it = map.node.begin(); it != map.node.end(); ++it) {
    // Copies: the iterator's -> yields a temporary pair.
    const YAML::Node key = it->first;
    const YAML::Node value = it->second;
    const SourcePosition key_pos = position_of(key.Mark());
    if (!key.IsScalar()) {
      parser.fail(ctx, key_pos, map.path, "", "a key must be a string, found " + shown(key));
    }
    // yaml-cpp does not implement YAML 1.1 merge keys; "<<" would be taken for a field.
    if (is_plain(key) && key.Scalar() == "<<") {
      parser.fail(ctx, key_pos, map.path, "<<", "YAML merge keys (<<) are not supported");
    }
    for (const auto& e : entries_) {
      if (e.key == key.Scalar()) {
        parser.fail(
            ctx, key_pos, join(map.path, key.Scalar()), key.Scalar(),
            "field given twice (first on " + line_text(position_of(e.key_node.Mark())) + ")");
      }
    }
    entries_.push_back({.key = key.Scalar(), .key_node = key, .value = value, .used = false});
  }
}

MapReader::Entry* MapReader::find(std::string_view key) {
  if (std::find(known_.begin(), known_.end(), key) == known_.end()) known_.emplace_back(key);
  for (auto& e : entries_) {
    if (e.key == key) {
      e.used = true;
      return &e;
    }
  }
  return nullptr;
}

std::optional<Value> MapReader::get(std::string_view key) {
  const Entry* e = find(key);
  if (!e || e->value.IsNull()) return std::nullopt;
  Value v{e->value, join(map_.path, key), position_of(e->value.Mark())};
  // A map or list is placed at its key: a block collection's own mark is its first entry's.
  if (v.pos.line == 0 || e->value.IsMap() || e->value.IsSequence()) {
    v.pos = position_of(e->key_node.Mark());
  }
  Parser::record(ctx_, v);
  return v;
}

Value MapReader::require(std::string_view key, std::string_view hint) {
  if (auto v = get(key)) return *v;
  const std::string path = join(map_.path, key);
  if (const Entry* e = find(key)) {
    parser_.fail(ctx_, position_of(e->key_node.Mark()), path, "",
                 "missing value" + std::string(hint));
  }
  for (const auto& e : entries_) {
    if (!e.used && !misspelling_of(e.key, {std::string(key)}).empty()) {
      parser_.fail(ctx_, position_of(e.key_node.Mark()), join(map_.path, e.key), e.key,
                   "unknown field " + quote(e.key) + "; did you mean " + quote(key) + "?");
    }
  }
  parser_.fail(ctx_, map_.pos, path, "", "missing" + std::string(hint));
}

std::vector<std::pair<Value, Value>> MapReader::entries() {
  std::vector<std::pair<Value, Value>> out;
  for (auto& e : entries_) {
    e.used = true;
    const SourcePosition key_pos = position_of(e.key_node.Mark());
    Value key{e.key_node, map_.path, key_pos};
    Value value{e.value, map_.path + "[" + e.key + "]", position_of(e.value.Mark())};
    if (e.value.IsNull() || value.pos.line == 0) value.pos = key_pos;
    Parser::record(ctx_, value);
    out.emplace_back(std::move(key), std::move(value));
  }
  return out;
}

void MapReader::finish() {
  for (const auto& e : entries_) {
    if (e.used) continue;
    const SourcePosition pos = position_of(e.key_node.Mark());
    const std::string path = join(map_.path, e.key);
    const std::string guess = misspelling_of(e.key, known_);
    if (!guess.empty()) {
      parser_.fail(ctx_, pos, path, e.key,
                   "unknown field " + quote(e.key) + "; did you mean " + quote(guess) + "?");
    }
    if (ctx_.strict) {
      parser_.fail(ctx_, pos, path, e.key,
                   "unknown field " + quote(e.key) + "; accepted: " + list_text(known_));
    }
    parser_.warn(ctx_, pos, path, "not part of the network model; ignored");
  }
}

// --- values ---

// One warning per (kind, field path without indexes); repeats count on the first.
void Parser::warn(const Context& ctx, SourcePosition pos, const std::string& path,
                  const std::string& message) {
  const std::string key = ctx.kind + '\0' + without_indexes(path);
  if (const auto it = warning_index_.find(key); it != warning_index_.end()) {
    ++out_.warnings[it->second].count;
    return;
  }
  warning_index_.emplace(key, out_.warnings.size());
  out_.warnings.push_back({.file = origin_,
                           .line = pos.line,
                           .column = pos.column,
                           .object = ctx.object,
                           .field = path,
                           .message = message,
                           .count = 1});
}

// A string. Kubernetes refuses a number or a boolean where it expects a string; so does this.
std::string Parser::text(const Context& ctx, const Value& v) const {
  if (!v.node.IsScalar()) fail(ctx, v, "expected a string, found " + shown(v.node));
  if (is_plain(v.node)) {
    const std::string_view type = plain_scalar_type(v.node.Scalar());
    if (!type.empty()) {
      fail(ctx, v,
           v.node.Scalar() + " is " + std::string(type) + ", not a string; quote it (" +
               quote(v.node.Scalar()) + ")");
    }
  }
  return v.node.Scalar();
}

// A decimal integer ("-12", not "012", "+12" or "1e3"); values past the range of long long
// saturate, so that range checks refuse them.
std::optional<long long> integer_of(std::string_view s) {
  const bool negative = !s.empty() && s[0] == '-';
  if (negative) s.remove_prefix(1);
  if (!all_digits(s) || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  unsigned long long magnitude = 0;
  const auto result = std::from_chars(s.data(), s.data() + s.size(), magnitude);
  constexpr auto kMax = static_cast<unsigned long long>(std::numeric_limits<long long>::max());
  if (result.ec == std::errc::result_out_of_range || magnitude > kMax) {
    return negative ? std::numeric_limits<long long>::min() : std::numeric_limits<long long>::max();
  }
  const auto value = static_cast<long long>(magnitude);
  return negative ? -value : value;
}

// An integer written without quotes, in [min, max]; `range` says what the field accepts, as in
// "a port number (1-65535)".
long long Parser::integer(const Context& ctx, const Value& v, long long min, long long max,
                          const std::string& range) const {
  if (v.node.IsScalar() && !is_plain(v.node) && integer_of(v.node.Scalar())) {
    fail(ctx, v, quote(v.node.Scalar()) + " is a string; write the number without quotes");
  }
  const auto n = is_plain(v.node) ? integer_of(v.node.Scalar()) : std::nullopt;
  if (!n) fail(ctx, v, shown(v.node) + " is not an integer; expected " + range);
  if (*n < min || *n > max) fail(ctx, v, shown(v.node) + " is not " + range);
  return *n;
}

bool Parser::boolean(const Context& ctx, const Value& v) const {
  if (is_plain(v.node)) {
    const std::string& s = v.node.Scalar();
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
  }
  fail(ctx, v, shown(v.node) + " is not a boolean (true or false)");
}

std::vector<Value> Parser::items(const Context& ctx, const Value& v) const {
  if (!v.node.IsSequence()) fail(ctx, v, "expected a list, found " + shown(v.node));
  std::vector<Value> out;
  std::size_t i = 0;
  for (const auto& item : v.node) {
    Value value{item, v.path + "[" + std::to_string(i++) + "]", position_of(item.Mark())};
    if (value.pos.line == 0 || item.IsNull()) value.pos = v.pos;
    record(ctx, value);
    out.push_back(std::move(value));
  }
  return out;
}

Labels Parser::read_labels(Context& ctx, const Value& v, LabelRules rules) {
  MapReader map(*this, ctx, v);
  Labels out;
  for (const auto& [key, value] : map.entries()) {
    const std::string name = key.node.Scalar();
    if (const std::string p = label_key_problem(name); !p.empty()) {
      fail(ctx, key.pos, key.path, name, p);
    }
    if (value.node.IsNull()) {
      if (rules == LabelRules::labels) {
        fail(ctx, value, "the value of " + quote(name) + " is null; write \"\" for an empty value");
      }
      out.emplace(name, "");
      continue;
    }
    const std::string text_value = text(ctx, value);
    if (rules == LabelRules::labels) {
      if (const std::string p = label_value_problem(text_value); !p.empty()) fail(ctx, value, p);
    }
    out.emplace(name, text_value);
  }
  return out;
}

// --- documents ---

void Parser::document(const YAML::Node& doc) {
  if (doc.IsNull()) return;
  const SourcePosition pos = position_of(doc.Mark());
  Context ctx;
  const Value top_value{doc, "", pos};
  if (!doc.IsMap()) {
    fail(ctx, top_value,
         "expected an object with apiVersion and kind, found " +
             (doc.IsSequence() ? std::string("a list") : "the scalar " + shown(doc)));
  }
  MapReader top(*this, ctx, top_value);
  const auto written_version = top.get("apiVersion");
  const Value kind_value =
      top.require("kind", " (Cluster, Pod, Deployment or List; other kinds are ignored)");
  ctx.kind = text(ctx, kind_value);
  ctx.object = ctx.kind;
  static const std::vector<std::pair<std::string, std::string>> kKinds = {
      {"Cluster", std::string(kClusterApiVersion)},
      {"Pod", "v1"},
      {"Deployment", "apps/v1"},
      {"List", "v1"}};
  const auto known = std::find_if(kKinds.begin(), kKinds.end(),
                                  [&](const auto& k) { return k.first == ctx.kind; });
  if (known == kKinds.end()) {
    std::vector<std::string> names;
    for (const auto& k : kKinds)
      names.push_back(k.first);
    if (const std::string guess = misspelling_of(ctx.kind, names); !guess.empty()) {
      fail(Context{}, kind_value,
           quote(ctx.kind) + " is not a kind; did you mean " + quote(guess) + "?");
    }
    const Context other{
        .kind = "kind " + ctx.kind, .object = "", .source = nullptr, .strict = false};
    warn(other, pos, "", "kind " + ctx.kind + " is not emulated yet; ignored");
    return;
  }
  const Value version_value =
      written_version
          ? *written_version
          : top.require("apiVersion", " (" + ctx.kind + " is apiVersion " + known->second + ")");
  const std::string version = text(ctx, version_value);
  if (version != known->second) {
    fail(ctx, version_value,
         quote(version) + " is not the apiVersion of " + ctx.kind + "; use " + known->second);
  }
  if (ctx.kind == "List") {
    (void)top.get("metadata");  // a list's metadata says nothing about its items
    for (const auto& item : items(ctx, top.require("items"))) {
      if (!item.node.IsNull()) document(item.node);
    }
    top.finish();
  } else if (ctx.kind == "Cluster") {
    read_cluster(top, ctx, pos);
  } else if (ctx.kind == "Pod") {
    read_pod(top, ctx, pos);
  } else {
    read_deployment(top, ctx, pos);
  }
}

ObjectMeta Parser::read_meta(MapReader& top, Context& ctx) {
  ObjectMeta meta;
  MapReader m(*this, ctx, top.require("metadata"));
  const auto generate = m.get("generateName");
  if (generate && !m.get("name")) {
    fail(ctx, generate->pos, "metadata.name", "",
         "missing (generateName is not supported: give every object a name)");
  }
  const Value name = m.require("name");
  meta.name = text(ctx, name);
  if (const std::string p = dns1123_subdomain_problem(meta.name); !p.empty()) fail(ctx, name, p);
  if (generate) warn(ctx, generate->pos, generate->path, "not part of the network model; ignored");
  if (const auto ns = m.get("namespace")) {
    meta.namespace_ = text(ctx, *ns);
    if (const std::string p = dns1123_label_problem(meta.namespace_); !p.empty()) fail(ctx, *ns, p);
  }
  ctx.object = object_name(ctx.kind, meta);
  if (const auto labels = m.get("labels")) {
    meta.labels = read_labels(ctx, *labels, LabelRules::labels);
  }
  if (const auto annotations = m.get("annotations")) {
    meta.annotations = read_labels(ctx, *annotations, LabelRules::annotations);
  }
  m.finish();
  return meta;
}

void Parser::check_unique(SeenObjects& seen, const Context& ctx, const ObjectMeta& meta,
                          SourcePosition pos) const {
  const auto [it, added] = seen.emplace(std::make_pair(meta.namespace_, meta.name), pos);
  if (!added) {
    fail(ctx, pos, "metadata.name", meta.name,
         quote(meta.name) + " is defined twice in namespace " + quote(meta.namespace_) + ": on " +
             line_text(it->second) + " and on " + line_text(pos));
  }
}

PodSpec Parser::read_pod_spec(Context& ctx, const Value& v) {
  MapReader m(*this, ctx, v);
  PodSpec spec;
  if (const auto node_name = m.get("nodeName")) {
    spec.node_name = text(ctx, *node_name);
    if (const std::string p = dns1123_subdomain_problem(spec.node_name); !p.empty()) {
      fail(ctx, *node_name, p);
    }
  }
  if (const auto selector = m.get("nodeSelector")) {
    spec.node_selector = read_labels(ctx, *selector, LabelRules::labels);
  }
  if (const auto host = m.get("hostNetwork"); host && boolean(ctx, *host)) {
    fail(ctx, *host,
         "pods on the host network are not emulated (every pod gets a network namespace of its "
         "own); remove hostNetwork");
  }
  const Value containers = m.require("containers", " (a pod needs at least one container)");
  const auto container_items = items(ctx, containers);
  if (container_items.empty()) fail(ctx, containers, "a pod needs at least one container");

  std::map<std::string, Value> container_names;
  std::map<std::string, Value> port_names;
  std::map<std::pair<std::uint16_t, Protocol>, Value> port_numbers;
  const auto first = [](const Value& v) { return v.path + " on " + line_text(v.pos); };
  for (const auto& item : container_items) {
    MapReader c(*this, ctx, item);
    Container container;
    const Value name = c.require("name");
    container.name = text(ctx, name);
    if (const std::string p = dns1123_label_problem(container.name); !p.empty()) fail(ctx, name, p);
    if (const auto [it, added] = container_names.emplace(container.name, name); !added) {
      fail(ctx, name,
           "two containers are named " + quote(container.name) + " (the first at " +
               first(it->second) + ")");
    }
    if (const auto ports = c.get("ports")) {
      for (const auto& port_item : items(ctx, *ports)) {
        MapReader p(*this, ctx, port_item);
        ContainerPort port;
        const Value number = p.require("containerPort");
        port.container_port =
            static_cast<std::uint16_t>(integer(ctx, number, 1, 65535, "a port number (1-65535)"));
        if (const auto protocol = p.get("protocol")) {
          const std::string text_value = text(ctx, *protocol);
          const auto parsed = parse_protocol(text_value);
          if (text_value == "SCTP") fail(ctx, *protocol, "SCTP is not supported; use TCP or UDP");
          if (!parsed) {
            fail(ctx, *protocol, quote(text_value) + " is not a protocol; accepted: TCP, UDP");
          }
          port.protocol = *parsed;
        }
        if (const auto port_name = p.get("name")) {
          port.name = text(ctx, *port_name);
          if (const std::string problem = port_name_problem(port.name); !problem.empty()) {
            fail(ctx, *port_name, problem);
          }
          if (const auto [it, added] = port_names.emplace(port.name, *port_name); !added) {
            fail(ctx, *port_name,
                 "two ports of the pod are named " + quote(port.name) + " (the first at " +
                     first(it->second) + ")");
          }
        }
        for (const char* host_field : {"hostPort", "hostIP"}) {
          if (const auto host = p.get(host_field)) {
            warn(ctx, host->pos, host->path,
                 std::string(host_field) + " is not emulated yet; ignored");
          }
        }
        const auto [it, added] =
            port_numbers.emplace(std::make_pair(port.container_port, port.protocol), number);
        if (!added) {
          fail(ctx, number,
               std::to_string(port.container_port) + "/" + to_string(port.protocol) +
                   " is declared twice in the pod (the first at " + first(it->second) + ")");
        }
        p.finish();
        container.ports.push_back(std::move(port));
      }
    }
    c.finish();
    spec.containers.push_back(std::move(container));
  }
  m.finish();
  return spec;
}

LabelSelector Parser::read_selector(Context& ctx, const Value& v) {
  MapReader m(*this, ctx, v);
  LabelSelector selector;
  if (const auto match_labels = m.get("matchLabels")) {
    selector.match_labels = read_labels(ctx, *match_labels, LabelRules::labels);
  }
  if (const auto expressions = m.get("matchExpressions")) {
    for (const auto& item : items(ctx, *expressions)) {
      MapReader e(*this, ctx, item);
      LabelSelectorRequirement req;
      const Value key = e.require("key");
      req.key = text(ctx, key);
      if (const std::string p = label_key_problem(req.key); !p.empty()) fail(ctx, key, p);
      const Value op = e.require("operator");
      const std::string op_text = text(ctx, op);
      const auto parsed = parse_selector_operator(op_text);
      if (!parsed) {
        fail(ctx, op,
             quote(op_text) + " is not an operator; accepted: In, NotIn, Exists, DoesNotExist");
      }
      req.op = *parsed;
      const auto values = e.get("values");
      if (values) {
        for (const auto& value : items(ctx, *values)) {
          const std::string text_value = text(ctx, value);
          if (const std::string p = label_value_problem(text_value); !p.empty()) {
            fail(ctx, value, p);
          }
          req.values.push_back(text_value);
        }
      }
      const bool needs_values =
          req.op == SelectorOperator::in || req.op == SelectorOperator::not_in;
      if (needs_values && req.values.empty()) {
        fail(ctx, values ? values->pos : op.pos, join(item.path, "values"), "",
             "operator " + op_text + " needs at least one value");
      }
      if (!needs_values && !req.values.empty()) {
        fail(ctx, values->pos, values->path, "", "operator " + op_text + " takes no values");
      }
      e.finish();
      selector.match_expressions.push_back(std::move(req));
    }
  }
  m.finish();
  return selector;
}

void Parser::read_pod(MapReader& top, Context& ctx, SourcePosition pos) {
  ObjectSource source{.position = pos, .fields = {}};
  ctx.source = &source;
  Pod pod;
  pod.meta = read_meta(top, ctx);
  check_unique(pods_seen_, ctx, pod.meta, pos);
  pod.spec = read_pod_spec(ctx, top.require("spec"));
  top.finish();
  ctx.source = nullptr;
  out_.pods.push_back(std::move(pod));
  out_.pod_sources.push_back(std::move(source));
}

void Parser::read_deployment(MapReader& top, Context& ctx, SourcePosition pos) {
  ObjectSource source{.position = pos, .fields = {}};
  ctx.source = &source;
  Deployment d;
  d.meta = read_meta(top, ctx);
  check_unique(deployments_seen_, ctx, d.meta, pos);
  MapReader spec(*this, ctx, top.require("spec"));
  if (const auto replicas = spec.get("replicas")) {
    if (const auto n =
            is_plain(replicas->node) ? integer_of(replicas->node.Scalar()) : std::nullopt;
        n && *n < 0) {
      fail(ctx, *replicas, shown(replicas->node) + " is negative; replicas must be 0 or more");
    }
    d.replicas = static_cast<std::int32_t>(integer(ctx, *replicas, 0,
                                                   std::numeric_limits<std::int32_t>::max(),
                                                   "a replica count (0-2147483647)"));
  }
  const Value selector_value = spec.require("selector", " (apps/v1 Deployments need a selector)");
  d.selector = read_selector(ctx, selector_value);
  if (d.selector.empty()) {
    fail(ctx, selector_value,
         "empty selector: it would select every pod; give matchLabels or matchExpressions");
  }
  MapReader tmpl(*this, ctx, spec.require("template"));
  if (const auto tmeta_value = tmpl.get("metadata")) {
    MapReader tmeta(*this, ctx, *tmeta_value);
    if (const auto labels = tmeta.get("labels")) {
      d.template_.meta.labels = read_labels(ctx, *labels, LabelRules::labels);
    }
    if (const auto annotations = tmeta.get("annotations")) {
      d.template_.meta.annotations = read_labels(ctx, *annotations, LabelRules::annotations);
    }
    tmeta.finish();
  }
  d.template_.spec = read_pod_spec(ctx, tmpl.require("spec"));
  tmpl.finish();
  if (!d.selector.matches(d.template_.meta.labels)) {
    const std::string labels = labels_to_string(d.template_.meta.labels);
    fail(ctx, selector_value.pos, selector_value.path, d.selector.to_string(),
         "selector " + d.selector.to_string() + " does not match the template's labels (" +
             (labels.empty() ? "none" : labels) + "); the API server refuses such a Deployment");
  }
  spec.finish();
  top.finish();
  ctx.source = nullptr;
  out_.deployments.push_back(std::move(d));
  out_.deployment_sources.push_back(std::move(source));
}

void Parser::read_cluster(MapReader& top, Context& ctx, SourcePosition pos) {
  ctx.strict = true;
  if (out_.cluster) {
    fail(ctx, pos, "", "",
         "a second Cluster document; a file holds at most one (the first is on " +
             line_text(cluster_seen_) + ")");
  }
  ObjectSource source{.position = pos, .fields = {}};
  ctx.source = &source;
  ClusterSpec c;

  std::optional<Value> name;
  if (const auto meta = top.get("metadata")) {
    MapReader m(*this, ctx, *meta);
    name = m.get("name");
    m.finish();
  }
  if (const auto top_name = top.get("name")) {
    if (name && text(ctx, *name) != text(ctx, *top_name)) {
      fail(ctx, *top_name,
           "the cluster is named twice, " + quote(text(ctx, *name)) + " in metadata.name and " +
               quote(text(ctx, *top_name)) + " here; keep one");
    }
    name = top_name;
  }
  if (!name)
    fail(ctx, pos, "metadata.name", "", "missing: name the cluster (metadata.name or name)");
  c.name = text(ctx, *name);
  if (const std::string p = dns1123_label_problem(c.name); !p.empty()) fail(ctx, *name, p);
  if (c.name.size() > ClusterSpec::kMaxNameLength) {
    fail(ctx, *name,
         quote(c.name) + " is longer than " + std::to_string(ClusterSpec::kMaxNameLength) +
             " characters (the name goes into network namespace and state names)");
  }
  ctx.object = "Cluster " + quote(c.name);

  const std::string node_range = "a node count (1-" + std::to_string(ClusterSpec::kMaxNodes) + ")";
  const auto nodes = top.get("nodes");
  if (!nodes) {
    c.nodes = default_cluster().nodes;
  } else if (nodes->node.IsScalar()) {
    const auto count =
        integer(ctx, *nodes, 1, static_cast<long long>(ClusterSpec::kMaxNodes), node_range);
    for (long long i = 0; i < count; ++i) {
      c.nodes.push_back({.name = default_node_name(static_cast<std::size_t>(i)), .labels = {}});
    }
  } else if (nodes->node.IsSequence()) {
    const auto list = items(ctx, *nodes);
    if (list.empty()) fail(ctx, *nodes, "a cluster needs at least one node");
    if (list.size() > ClusterSpec::kMaxNodes) {
      fail(ctx, nodes->pos, nodes->path, "",
           std::to_string(list.size()) + " nodes are more than the " +
               std::to_string(ClusterSpec::kMaxNodes) + " a cluster may have");
    }
    std::map<std::string, SourcePosition> seen;
    for (const auto& item : list) {
      NodeSpec node;
      Value name_value = item;
      if (item.node.IsMap()) {
        MapReader n(*this, ctx, item);
        name_value = n.require("name");
        if (const auto labels = n.get("labels")) {
          node.labels = read_labels(ctx, *labels, LabelRules::labels);
        }
        n.finish();
      } else if (!item.node.IsScalar()) {
        fail(ctx, item,
             "expected a node name or a map with name and labels, found " + shown(item.node));
      }
      node.name = text(ctx, name_value);
      if (const std::string p = dns1123_label_problem(node.name); !p.empty()) {
        fail(ctx, name_value, p);
      }
      if (const auto [it, added] = seen.emplace(node.name, name_value.pos); !added) {
        fail(ctx, name_value,
             "node " + quote(node.name) + " is listed twice: on " + line_text(it->second) +
                 " and on " + line_text(name_value.pos));
      }
      c.nodes.push_back(std::move(node));
    }
  } else {
    fail(ctx, *nodes, "expected a node count or a list of nodes, found " + shown(nodes->node));
  }

  const auto cidr = [&](std::string_view key, IpPrefix& target) {
    const auto v = top.get(key);
    if (!v) return v;
    const std::string t = text(ctx, *v);
    IpPrefix prefix;
    try {
      prefix = IpPrefix::parse_network(t);
    } catch (const AddressError& e) {
      fail(ctx, *v, e.what());
    }
    if (prefix.family() != Family::v4) {
      fail(ctx, *v, t + " is an IPv6 prefix; only IPv4 is supported for now");
    }
    target = prefix;
    return v;
  };
  const auto pod_cidr = cidr("podCIDR", c.pod_cidr);
  const auto node_cidr = cidr("nodeCIDR", c.node_cidr);
  const auto service_cidr = cidr("serviceCIDR", c.service_cidr);

  const auto mask = top.get("podCIDRMaskSize");
  if (mask) {
    c.pod_subnet_prefix_length =
        static_cast<unsigned>(integer(ctx, *mask, 0, 32, "a prefix length (0-32)"));
    if (c.pod_subnet_prefix_length > ClusterSpec::kMaxPodCidrMaskSize) {
      fail(ctx, *mask,
           shown(mask->node) + " is larger than " +
               std::to_string(ClusterSpec::kMaxPodCidrMaskSize) +
               ": a node's pod subnet needs room for its gateway and pods");
    }
    if (c.pod_subnet_prefix_length <= c.pod_cidr.length()) {
      fail(ctx, *mask,
           shown(mask->node) + " is not longer than podCIDR's prefix length (/" +
               std::to_string(c.pod_cidr.length()) + "): each node gets a subnet of podCIDR");
    }
  } else if (c.pod_subnet_prefix_length <= c.pod_cidr.length()) {
    fail(ctx, *pod_cidr,
         c.pod_cidr.to_string() + " leaves no room for /" +
             std::to_string(c.pod_subnet_prefix_length) +
             " node subnets; give a shorter prefix or a longer podCIDRMaskSize");
  }
  const auto default_note = [](const std::optional<Value>& field) {
    return field ? std::string() : std::string(" (the default)");
  };
  // The field to blame for a value that is too small: the one written, else `nodes`.
  const auto blame = [&](const std::optional<Value>& field) -> Value {
    if (field) return *field;
    if (nodes) return *nodes;
    return Value{YAML::Node(), "nodes", pos};
  };
  if (c.nodes.size() > c.pod_cidr_node_capacity()) {
    const Value at = blame(pod_cidr ? pod_cidr : mask);
    fail(ctx, at,
         "podCIDR " + c.pod_cidr.to_string() + default_note(pod_cidr) + " split into /" +
             std::to_string(c.pod_subnet_prefix_length) + " subnets has room for " +
             count_text(c.pod_cidr_node_capacity(), "node") +
             " (subnet 0 is left unused), but the cluster has " + std::to_string(c.nodes.size()));
  }
  if (c.nodes.size() > c.node_cidr_node_capacity()) {
    fail(ctx, blame(node_cidr),
         "nodeCIDR " + c.node_cidr.to_string() + default_note(node_cidr) + " has room for " +
             count_text(c.node_cidr_node_capacity(), "node") +
             " (the first address is the fabric's), but the cluster has " +
             std::to_string(c.nodes.size()));
  }

  struct Range {
    const char* key;
    const IpPrefix& prefix;
    const std::optional<Value>& value;
  };
  const Range ranges[] = {{"podCIDR", c.pod_cidr, pod_cidr},
                          {"nodeCIDR", c.node_cidr, node_cidr},
                          {"serviceCIDR", c.service_cidr, service_cidr}};
  for (std::size_t i = 0; i < 3; ++i) {
    for (std::size_t k = i + 1; k < 3; ++k) {
      const Range& a = ranges[i];
      const Range& b = ranges[k];
      if (!a.prefix.overlaps(b.prefix)) continue;
      // Blame the one written later (or the only one written).
      const bool blame_b = b.value && (!a.value || a.value->pos.line <= b.value->pos.line);
      const Range& here = blame_b ? b : a;
      const Range& there = blame_b ? a : b;
      fail(ctx, *here.value,
           here.prefix.to_string() + " overlaps " + there.key + " " + there.prefix.to_string() +
               default_note(there.value));
    }
  }

  if (const auto network = top.get("network")) {
    const std::string t = text(ctx, *network);
    const auto parsed = parse_network(t);
    if (!parsed) fail(ctx, *network, quote(t) + " is not a network mode; accepted: routed, flat");
    c.network = *parsed;
  }
  if (const auto cni = top.get("cni")) {
    const std::string t = text(ctx, *cni);
    const auto parsed = parse_cni_kind(t);
    if (!parsed) fail(ctx, *cni, quote(t) + " is not a CNI plugin; accepted: flatnet, bridge");
    c.cni = *parsed;
  }
  if (const auto mtu = top.get("mtu")) {
    c.mtu = static_cast<unsigned>(integer(ctx, *mtu, ClusterSpec::kMinMtu, ClusterSpec::kMaxMtu,
                                          "an MTU flatnet accepts (576-9216)"));
  }
  top.finish();
  ctx.source = nullptr;
  cluster_seen_ = pos;
  out_.cluster = std::move(c);
  out_.cluster_source = std::move(source);
}

std::string error_text(const std::string& file, SourcePosition pos, const std::string& object,
                       const std::string& field, const std::string& message) {
  std::string out = file;
  if (pos.line > 0) out += ":" + std::to_string(pos.line) + ":" + std::to_string(pos.column);
  out += ": ";
  if (!object.empty()) out += object + ": ";
  if (!field.empty()) out += field + ": ";
  return out + message;
}

std::string node_list(const ClusterSpec& cluster) {
  std::vector<std::string> names;
  for (const auto& node : cluster.nodes) {
    if (names.size() == 5) {
      names.push_back("...");
      break;
    }
    names.push_back(node.name);
  }
  return list_text(names);
}

}  // namespace

SourcePosition ObjectSource::at(std::string_view field_path) const {
  const auto it = fields.find(field_path);
  return it == fields.end() ? position : it->second;
}

std::string Warning::to_string() const {
  std::string out = error_text(file, {.line = line, .column = column},
                               object.empty() ? "warning" : "warning: " + object, field, message);
  if (count > 1) out += " (and " + std::to_string(count - 1) + " more like it)";
  return out;
}

ClusterFileError::ClusterFileError(std::string file, SourcePosition position, std::string object,
                                   std::string field, std::string value, std::string message)
    : std::runtime_error(error_text(file, position, object, field, message)),
      file_(std::move(file)),
      position_(position),
      object_(std::move(object)),
      field_(std::move(field)),
      value_(std::move(value)),
      message_(std::move(message)) {}

ClusterFile parse_cluster_file(std::string_view yaml_text, const std::string& origin) {
  ClusterFile out;
  out.origin = origin;
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAll(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    throw ClusterFileError(origin, position_of(e.mark), "", "", "", "invalid YAML: " + e.msg);
  }
  Parser parser(out.origin, out);
  try {
    for (const auto& doc : documents)
      parser.document(doc);
  } catch (const YAML::Exception& e) {
    throw ClusterFileError(origin, position_of(e.mark), "", "", "", "invalid YAML: " + e.msg);
  }
  return out;
}

ClusterFile load_cluster_file(const std::filesystem::path& path) {
  constexpr std::size_t kMaxSize = 64 << 20;
  const std::string name = path.string();
  const std::string operation = "read cluster file " + quote(name);
  const int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno(errno, operation);
  std::string text;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || text.size() + static_cast<std::size_t>(n) > kMaxSize) {
      const int err = n < 0 ? errno : EFBIG;
      ::close(fd);
      throw_errno(err, operation);
    }
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return parse_cluster_file(text, name);
}

void validate_against(const ClusterFile& file, const ClusterSpec& cluster) {
  const auto check = [&](const std::string& object, const PodSpec& spec, const ObjectSource& source,
                         const std::string& prefix) {
    const NodeSpec* named = nullptr;
    const std::string name_path = prefix + "nodeName";
    const std::string selector_path = prefix + "nodeSelector";
    if (!spec.node_name.empty()) {
      named = cluster.find_node(spec.node_name);
      if (!named) {
        throw ClusterFileError(file.origin, source.at(name_path), object, name_path, spec.node_name,
                               "node " + quote(spec.node_name) + " does not exist in cluster " +
                                   quote(cluster.name) + " (its nodes: " + node_list(cluster) +
                                   ")");
      }
    }
    if (spec.node_selector.empty()) return;
    const LabelSelector selector{.match_labels = spec.node_selector, .match_expressions = {}};
    const std::string wanted = labels_to_string(spec.node_selector);
    if (named && !selector.matches(effective_node_labels(*named))) {
      throw ClusterFileError(
          file.origin, source.at(selector_path), object, selector_path, wanted,
          "node " + quote(named->name) + " (" + name_path + ") does not have the labels " + wanted);
    }
    const bool any = std::any_of(cluster.nodes.begin(), cluster.nodes.end(), [&](const auto& n) {
      return selector.matches(effective_node_labels(n));
    });
    if (!any) {
      throw ClusterFileError(file.origin, source.at(selector_path), object, selector_path, wanted,
                             "no node of cluster " + quote(cluster.name) + " has the labels " +
                                 wanted + "; the pod could never be scheduled");
    }
  };
  const ObjectSource unknown{};
  for (std::size_t i = 0; i < file.pods.size(); ++i) {
    check(object_name("Pod", file.pods[i].meta), file.pods[i].spec,
          i < file.pod_sources.size() ? file.pod_sources[i] : unknown, "spec.");
  }
  for (std::size_t i = 0; i < file.deployments.size(); ++i) {
    check(object_name("Deployment", file.deployments[i].meta), file.deployments[i].template_.spec,
          i < file.deployment_sources.size() ? file.deployment_sources[i] : unknown,
          "spec.template.spec.");
  }
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

}  // namespace flatnet::netmodel
