#include "flatnet/netexec/router.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <utility>

#include "flatnet/netexec/http.hpp"
#include "flatnet/netmodel/address.hpp"
#include "flatnet/netmodel/error.hpp"

namespace flatnet::netexec {
namespace {

using netmodel::quote;

constexpr std::string_view kUdpCommands = "expected hostname, clientip or echo <msg>";

bool is_space(char c) {
  return c == ' ' || (c >= '\t' && c <= '\r');
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && is_space(text.front()))
    text.remove_prefix(1);
  while (!text.empty() && is_space(text.back()))
    text.remove_suffix(1);
  return text;
}

// A query value for a message: quoted, and cut short when long.
std::string quote_short(std::string_view text) {
  constexpr std::size_t kMax = 64;
  return text.size() <= kMax ? quote(text) : quote(text.substr(0, kMax)) + "...";
}

// An integer in [low, high], the whole of `text`.
std::optional<int> parse_int(std::string_view text, int low, int high) {
  int value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value < low ||
      value > high) {
    return std::nullopt;
  }
  return value;
}

// A DNS name as RFC 1123 allows it (underscores tolerated, as resolvers do).
bool is_dns_name(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  if (name.back() == '.') name.remove_suffix(1);
  while (true) {
    const auto dot = name.find('.');
    const std::string_view label = name.substr(0, dot);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    if (!std::all_of(label.begin(), label.end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_';
        })) {
      return false;
    }
    if (dot == std::string_view::npos) return true;
    name.remove_prefix(dot + 1);
  }
}

std::string_view param(const QueryParams& params, std::string_view name) {
  const auto it = params.find(name);
  return it == params.end() ? std::string_view() : std::string_view(it->second);
}

Route answer(HttpResponse response) {
  Route route;
  route.response = std::move(response);
  return route;
}

HttpResponse not_found() {
  return error_response(404, "404 page not found");
}

HttpResponse method_not_allowed(std::string_view method) {
  HttpResponse response = error_response(405, "method " + quote(method) + " not allowed");
  response.extra_headers.push_back({"Allow", "GET, HEAD"});
  return response;
}

}  // namespace

std::string format_now(std::chrono::system_clock::time_point now) {
  using namespace std::chrono;
  const auto since_epoch = now.time_since_epoch();
  const auto secs = floor<seconds>(since_epoch);
  const auto nanos = duration_cast<nanoseconds>(since_epoch - secs).count();
  const std::time_t t = static_cast<std::time_t>(secs.count());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[64];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%d %H:%M:%S", &tm);
  std::string out = "NOW: ";
  out += buffer;
  if (nanos != 0) {
    // Go's ".999999999": the fraction without trailing zeros.
    char fraction[16];
    std::snprintf(fraction, sizeof fraction, ".%09lld", static_cast<long long>(nanos));
    std::string_view f = fraction;
    while (f.back() == '0')
      f.remove_suffix(1);
    out += f;
  }
  out += " +0000 UTC";
  return out;
}

DialParse parse_dial(const QueryParams& params) {
  auto fail = [](std::string message) { return DialParse{std::nullopt, std::move(message)}; };
  DialRequest dial;

  std::string_view host = param(params, "host");
  if (host.empty()) return fail("missing query parameter host");
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    if (!netmodel::IpAddress::try_parse(host) || host.find(':') == std::string_view::npos) {
      return fail("invalid host " + quote_short(param(params, "host")) + ": not an IPv6 address");
    }
  } else if (!netmodel::IpAddress::try_parse(host) && !is_dns_name(host)) {
    return fail("invalid host " + quote_short(host) + ": not an IP address or DNS name");
  }
  dial.host = std::string(host);

  const std::string_view port = param(params, "port");
  if (port.empty()) return fail("missing query parameter port");
  const auto port_number = parse_int(port, 1, 65535);
  if (!port_number) {
    return fail("invalid port " + quote_short(port) + ": expected a number from 1 to 65535");
  }
  dial.port = static_cast<std::uint16_t>(*port_number);

  const std::string_view protocol = param(params, "protocol");
  if (protocol.empty() || iequals_ascii(protocol, "http")) {
    dial.protocol = DialProtocol::http;
  } else if (iequals_ascii(protocol, "udp")) {
    dial.protocol = DialProtocol::udp;
  } else {
    return fail("unsupported protocol " + quote_short(protocol) + ": expected http or udp");
  }

  dial.request = std::string(param(params, "request"));
  if (dial.request.empty()) return fail("missing query parameter request");

  const auto tries = params.find("tries");
  if (tries != params.end()) {
    const auto n = parse_int(tries->second, 0, kMaxDialTries);
    if (!n) {
      return fail("invalid tries " + quote_short(tries->second) + ": expected a number from 0 to " +
                  std::to_string(kMaxDialTries));
    }
    dial.tries = *n;
  }
  return {std::move(dial), {}};
}

HttpResponse dial_response(const DialResult& result) {
  const nlohmann::json body = {{"errors", result.errors}, {"responses", result.responses}};
  HttpResponse response =
      text_response(200, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  response.content_type = "application/json";
  return response;
}

Router::Router(std::string hostname, Clock clock)
    : hostname_(std::move(hostname)), clock_(std::move(clock)) {}

Route Router::route(const HttpRequest& request, std::string_view client) const {
  static constexpr std::string_view kPaths[] = {"/",       "/hostname", "/clientip", "/echo",
                                                "/header", "/healthz",  "/dial",     "/exit"};
  const std::string& path = request.path;
  if (std::find(std::begin(kPaths), std::end(kPaths), path) == std::end(kPaths)) {
    return answer(not_found());
  }
  if (request.method != "GET" && request.method != "HEAD") {
    return answer(method_not_allowed(request.method));
  }
  const auto params = parse_query(request.query);
  if (!params) {
    return answer(error_response(
        400, "invalid query string " + quote_short(request.query) + ": bad percent escape"));
  }

  if (path == "/") return answer(text_response(200, format_now(clock_())));
  if (path == "/hostname") return answer(text_response(200, hostname_));
  if (path == "/clientip") return answer(text_response(200, std::string(client)));
  if (path == "/echo") return answer(text_response(200, std::string(param(*params, "msg"))));
  if (path == "/healthz") return answer(text_response(200, "ok"));
  if (path == "/header") {
    const std::string_view key = param(*params, "key");
    if (key.empty()) return answer(error_response(400, "missing query parameter key"));
    return answer(text_response(200, std::string(request.header(key).value_or(""))));
  }
  if (path == "/dial") {
    auto dial = parse_dial(*params);
    if (!dial.request) return answer(error_response(400, dial.error));
    Route route;
    route.dial = std::move(dial.request);
    return route;
  }
  // /exit
  const std::string_view code = param(*params, "code");
  const auto exit_code = code.empty() ? std::optional<int>(0) : parse_int(code, 0, 255);
  if (!exit_code) {
    return answer(error_response(
        400, "invalid code " + quote_short(code) + ": expected a number from 0 to 255"));
  }
  Route route;
  route.exit_code = exit_code;
  return route;
}

std::string Router::udp_reply(std::string_view datagram, std::string_view client) const {
  const std::string_view text = trim(datagram);
  const std::string_view command = text.substr(0, text.find(' '));
  if (iequals_ascii(text, "hostname")) return hostname_;
  if (iequals_ascii(text, "clientip")) return std::string(client);
  if (iequals_ascii(command, "echo")) {
    return command.size() == text.size() ? std::string() : std::string(text.substr(5));
  }
  return "unknown request " + quote_short(text) + ": " + std::string(kUdpCommands);
}

}  // namespace flatnet::netexec
