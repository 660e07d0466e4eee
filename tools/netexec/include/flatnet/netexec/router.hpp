#pragma once

// What netexec answers, independent of sockets: the HTTP endpoints of Kubernetes' `agnhost
// netexec` and its UDP commands. The server loop feeds requests in and writes the answers out;
// /dial is returned as a DialRequest that the loop runs off the loop (see dial.hpp).
//
// HTTP endpoints (GET or HEAD; other methods get 405):
//   /             "NOW: <time>"
//   /hostname     the hostname
//   /clientip     "IP:PORT" of the client as the server saw it
//   /echo?msg=M   M
//   /header?key=K the value of request header K
//   /healthz      "ok"
//   /dial?host=H&port=P&protocol=http|udp&request=R&tries=N
//                 {"errors":[...],"responses":[...]} after N exchanges with H:P
//   /exit?code=N  an empty 200, then the process exits with N
// Anything else is 404.
//
// UDP: one datagram is one command, surrounding whitespace ignored, the command word in any case:
//   "hostname" -> the hostname, "clientip" -> "IP:PORT", "echo <msg>" -> "<msg>",
//   anything else -> an "unknown request" message.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flatnet/netexec/http.hpp"

namespace flatnet::netexec {

enum class DialProtocol { http, udp };

// One /dial: `tries` exchanges with host:port, each sending `request` (for http as the request
// target "/<request>", for udp as the datagram).
struct DialRequest {
  std::string host;  // an IP address (IPv6 without brackets) or a DNS name
  std::uint16_t port = 0;
  DialProtocol protocol = DialProtocol::http;
  std::string request;
  int tries = 1;

  friend bool operator==(const DialRequest&, const DialRequest&) = default;
};

// The most exchanges one /dial may ask for.
inline constexpr int kMaxDialTries = 1000;

// What the exchanges of one /dial brought back, in order.
struct DialResult {
  std::vector<std::string> responses;
  std::vector<std::string> errors;
};

// The /dial answer: 200 with the JSON object agnhost writes (keys sorted, as Go marshals a map;
// bytes that are not UTF-8 replaced by U+FFFD, as Go does).
HttpResponse dial_response(const DialResult& result);

// What the router decided for one request.
struct Route {
  HttpResponse response;            // the answer, unless `dial` is set
  std::optional<DialRequest> dial;  // run it, then answer dial_response() of its result
  std::optional<int> exit_code;     // answer, then exit the process with this code
};

class Router {
 public:
  using Clock = std::function<std::chrono::system_clock::time_point()>;

  explicit Router(std::string hostname, Clock clock = std::chrono::system_clock::now);

  const std::string& hostname() const { return hostname_; }

  // The answer to `request` from the client at `client` ("IP:PORT", see format_endpoint).
  Route route(const HttpRequest& request, std::string_view client) const;

  // The reply to one UDP datagram from `client`.
  std::string udp_reply(std::string_view datagram, std::string_view client) const;

 private:
  std::string hostname_;
  Clock clock_;
};

// "NOW: 2024-05-06 07:08:09.123456789 +0000 UTC", the text of agnhost's "/" (Go's time format).
std::string format_now(std::chrono::system_clock::time_point now);

// Validates the /dial query parameters; on error the 400 response that says which is wrong.
struct DialParse {
  std::optional<DialRequest> request;
  std::string error;
};
DialParse parse_dial(const QueryParams& params);

}  // namespace flatnet::netexec
