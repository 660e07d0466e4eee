// flatnet-netexec without sockets: the HTTP parser and renderer, URL helpers, the router's
// answers, /dial validation, UDP commands, address formatting and the command line.

#include <arpa/inet.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "flatnet/netexec/endpoint.hpp"
#include "flatnet/netexec/http.hpp"
#include "flatnet/netexec/options.hpp"
#include "flatnet/netexec/router.hpp"

namespace flatnet::netexec {
namespace {

// Suite names start with "netexec" in lower case, so that `ctest -R netexec` selects them.

using ::testing::HasSubstr;
using Status = ParseResult::Status;

// --- request parsing ---

struct RequestCase {
  std::string name{};
  std::string input{};
  Status status{};
  int error_status = 0;  // for Status::error
  std::string method = "GET";
  std::string path{};
  std::string query{};
  int minor_version = 1;
  bool keep_alive = true;
};

class ParseRequest : public ::testing::TestWithParam<RequestCase> {};

TEST_P(ParseRequest, Case) {
  const RequestCase& c = GetParam();
  const ParseResult result = parse_request(c.input);
  ASSERT_EQ(result.status, c.status) << result.error_message;
  if (c.status == Status::error) {
    EXPECT_EQ(result.error_status, c.error_status) << result.error_message;
    EXPECT_FALSE(result.error_message.empty());
    return;
  }
  if (c.status != Status::complete) return;
  EXPECT_EQ(result.consumed, c.input.size());
  EXPECT_EQ(result.request.method, c.method);
  EXPECT_EQ(result.request.path, c.path);
  EXPECT_EQ(result.request.query, c.query);
  EXPECT_EQ(result.request.minor_version, c.minor_version);
  EXPECT_EQ(result.request.keep_alive(), c.keep_alive);
}

INSTANTIATE_TEST_SUITE_P(
    netexec, ParseRequest,
    ::testing::Values(
        RequestCase{"Simple", "GET /hostname HTTP/1.1\r\nHost: x\r\n\r\n", Status::complete, 0,
                    "GET", "/hostname"},
        RequestCase{"NoHeaders", "GET / HTTP/1.1\r\n\r\n", Status::complete, 0, "GET", "/"},
        RequestCase{"Query", "GET /echo?msg=a%20b HTTP/1.1\r\n\r\n", Status::complete, 0, "GET",
                    "/echo", "msg=a%20b"},
        RequestCase{"EncodedPath", "GET /host%6Eame HTTP/1.1\r\n\r\n", Status::complete, 0, "GET",
                    "/hostname"},
        RequestCase{"BareLineFeeds", "GET /clientip HTTP/1.1\nHost: x\n\n", Status::complete, 0,
                    "GET", "/clientip"},
        RequestCase{"LeadingEmptyLine", "\r\nGET / HTTP/1.1\r\n\r\n", Status::complete, 0, "GET",
                    "/"},
        RequestCase{"AbsoluteForm", "GET http://10.0.0.1:8080/echo?msg=x HTTP/1.1\r\n\r\n",
                    Status::complete, 0, "GET", "/echo", "msg=x"},
        RequestCase{"Head", "HEAD /healthz HTTP/1.1\r\n\r\n", Status::complete, 0, "HEAD",
                    "/healthz"},
        RequestCase{"ConnectionClose", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
                    Status::complete, 0, "GET", "/", "", 1, false},
        RequestCase{"ConnectionTokens", "GET / HTTP/1.1\r\nconnection: Upgrade, CLOSE\r\n\r\n",
                    Status::complete, 0, "GET", "/", "", 1, false},
        RequestCase{"Http10", "GET / HTTP/1.0\r\n\r\n", Status::complete, 0, "GET", "/", "", 0,
                    false},
        RequestCase{"Http10KeepAlive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                    Status::complete, 0, "GET", "/", "", 0, true},
        RequestCase{"ExpectContinue",
                    "POST /echo HTTP/1.1\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\n",
                    Status::complete, 0, "POST", "/echo", "", 1, false},
        RequestCase{"HeaderValueSpaces", "GET / HTTP/1.1\r\nX-A:   v  \r\n\r\n", Status::complete,
                    0, "GET", "/"},
        RequestCase{"Partial", "GET /hostname HTTP/1.1\r\nHost: x\r\n", Status::incomplete},
        RequestCase{"PartialRequestLine", "GET /host", Status::incomplete},
        RequestCase{"Empty", "", Status::incomplete},
        RequestCase{"Garbage", "hello\r\n\r\n", Status::error, 400},
        RequestCase{"GarbageBeforeHeadEnds", "hello there\n", Status::error, 400},
        RequestCase{"NoVersion", "GET /\r\n\r\n", Status::error, 400},
        RequestCase{"TwoSpaces", "GET  / HTTP/1.1\r\n\r\n", Status::error, 400},
        RequestCase{"BadVersion", "GET / HTTP/x.y\r\n\r\n", Status::error, 400},
        RequestCase{"Http2", "GET / HTTP/2.0\r\n\r\n", Status::error, 505},
        RequestCase{"RelativeTarget", "GET hostname HTTP/1.1\r\n\r\n", Status::error, 400},
        RequestCase{"BadMethod", "G(T / HTTP/1.1\r\n\r\n", Status::error, 400},
        RequestCase{"BadPathEscape", "GET /a%zz HTTP/1.1\r\n\r\n", Status::error, 400},
        RequestCase{"HeaderWithoutColon", "GET / HTTP/1.1\r\nHost x\r\n\r\n", Status::error, 400},
        RequestCase{"SpaceBeforeColon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", Status::error, 400},
        RequestCase{"LineFolding", "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", Status::error, 400},
        RequestCase{"BadContentLength", "GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
                    Status::error, 400},
        RequestCase{"ConflictingContentLength",
                    "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                    Status::error, 400},
        RequestCase{"LengthAndChunked",
                    "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                    Status::error, 400},
        RequestCase{"UnknownTransferEncoding", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                    Status::error, 400}),
    [](const auto& info) { return info.param.name; });

TEST(netexec_http, ARequestSentByteByByteCompletesOnlyAtItsEnd) {
  const std::string request = "GET /echo?msg=hi HTTP/1.1\r\nHost: pod\r\nAccept: */*\r\n\r\n";
  for (std::size_t n = 0; n < request.size(); ++n) {
    ASSERT_EQ(parse_request(request.substr(0, n)).status, Status::incomplete) << n << " bytes";
  }
  const ParseResult result = parse_request(request);
  ASSERT_EQ(result.status, Status::complete);
  EXPECT_EQ(result.consumed, request.size());
  EXPECT_EQ(result.request.header("host"), "pod");
  EXPECT_EQ(result.request.header("ACCEPT"), "*/*");
  EXPECT_EQ(result.request.header("missing"), std::nullopt);
}

TEST(netexec_http, PipelinedRequestsAreParsedOneAfterAnother) {
  std::string input =
      "GET /hostname HTTP/1.1\r\n\r\n"
      "POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
      "GET /clientip HTTP/1.1\r\n\r\nGET /par";
  ParseResult first = parse_request(input);
  ASSERT_EQ(first.status, Status::complete);
  EXPECT_EQ(first.request.path, "/hostname");
  input.erase(0, first.consumed);

  ParseResult second = parse_request(input);
  ASSERT_EQ(second.status, Status::complete);
  EXPECT_EQ(second.request.method, "POST");
  EXPECT_EQ(second.request.content_length, 5u);
  input.erase(0, second.consumed + second.request.content_length);  // the body is skipped

  ParseResult third = parse_request(input);
  ASSERT_EQ(third.status, Status::complete);
  EXPECT_EQ(third.request.path, "/clientip");
  input.erase(0, third.consumed);
  EXPECT_EQ(parse_request(input).status, Status::incomplete);
}

TEST(netexec_http, ChunkedRequestBodiesEndTheConnection) {
  const ParseResult result =
      parse_request("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
  ASSERT_EQ(result.status, Status::complete);
  EXPECT_TRUE(result.request.chunked);
  EXPECT_FALSE(result.request.keep_alive());
}

TEST(netexec_http, HeadsUpToTheLimitAreAcceptedAndLargerOnesRefused) {
  const std::string start = "GET / HTTP/1.1\r\nX-Fill: ";
  const std::string end = "\r\n\r\n";
  const std::string fits = start + std::string(kMaxHeaderBytes - start.size() - end.size(), 'a');
  EXPECT_EQ(parse_request(fits + end).status, Status::complete);

  const ParseResult too_long = parse_request(fits + "a" + end);
  ASSERT_EQ(too_long.status, Status::error);
  EXPECT_EQ(too_long.error_status, 431);

  // Without an end in sight, the limit applies to what has arrived.
  EXPECT_EQ(parse_request(fits).status, Status::incomplete);
  const ParseResult endless = parse_request(fits + "aaaa");
  ASSERT_EQ(endless.status, Status::error);
  EXPECT_EQ(endless.error_status, 431);
  EXPECT_THAT(endless.error_message, HasSubstr("8192"));
}

// --- responses ---

TEST(netexec_http, ResponsesAlwaysCarryContentLengthAndSayWhenTheyClose) {
  const HttpResponse ok = text_response(200, "pod-a");
  EXPECT_EQ(render_response(ok, true),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 5\r\n\r\npod-a");
  EXPECT_EQ(render_response(ok, false),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 5\r\nConnection: close\r\n\r\npod-a");
  EXPECT_THAT(render_response(ok, true, 0), HasSubstr("\r\nConnection: keep-alive\r\n"));
  // HEAD: the headers of GET, no body.
  EXPECT_EQ(render_response(ok, true, 1, true),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 5\r\n\r\n");
  HttpResponse refused = error_response(405, "no");
  refused.extra_headers.push_back({"Allow", "GET, HEAD"});
  EXPECT_THAT(render_response(refused, true),
              ::testing::StartsWith("HTTP/1.1 405 Method Not Allowed\r\n"));
  EXPECT_THAT(render_response(refused, true), HasSubstr("\r\nAllow: GET, HEAD\r\n"));
  EXPECT_THAT(render_response(refused, true), ::testing::EndsWith("\r\n\r\nno\n"));
}

struct ResponseCase {
  std::string name{};
  std::string input{};
  bool eof{};
  ParsedResponse::Status status{};
  int code = 0;
  std::string body{};
};

class ParseResponse : public ::testing::TestWithParam<ResponseCase> {};

TEST_P(ParseResponse, Case) {
  const ResponseCase& c = GetParam();
  const ParsedResponse result = parse_response(c.input, c.eof);
  ASSERT_EQ(result.status, c.status) << result.error;
  if (c.status != ParsedResponse::Status::complete) return;
  EXPECT_EQ(result.code, c.code);
  EXPECT_EQ(result.body, c.body);
}

using RS = ParsedResponse::Status;
INSTANTIATE_TEST_SUITE_P(
    netexec, ParseResponse,
    ::testing::Values(
        ResponseCase{"ContentLength", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\npod-b", false,
                     RS::complete, 200, "pod-b"},
        ResponseCase{"ShortBody", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\npod", false,
                     RS::incomplete},
        ResponseCase{"ShortBodyThenClose", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\npod", true,
                     RS::error},
        ResponseCase{"UntilClose", "HTTP/1.0 200 OK\r\n\r\nbody", true, RS::complete, 200, "body"},
        ResponseCase{"UntilCloseStillOpen", "HTTP/1.0 200 OK\r\n\r\nbody", false, RS::incomplete},
        ResponseCase{"Chunked",
                     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "3\r\npod\r\n2;x=y\r\n-b\r\n0\r\n\r\n",
                     false, RS::complete, 200, "pod-b"},
        ResponseCase{"ChunkedUnfinished",
                     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\npod\r\n", false,
                     RS::incomplete},
        ResponseCase{"NotFoundStillHasABody",
                     "HTTP/1.1 404 Not Found\r\nContent-Length: 19\r\n\r\n404 page not found\n",
                     false, RS::complete, 404, "404 page not found\n"},
        ResponseCase{"InterimResponse",
                     "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                     false, RS::complete, 200, "ok"},
        ResponseCase{"NoContent", "HTTP/1.1 204 No Content\r\n\r\n", false, RS::complete, 204, ""},
        ResponseCase{"NotHttp", "SSH-2.0-OpenSSH_9.2\r\n\r\n", false, RS::error},
        ResponseCase{"ClosedBeforeHeaders", "HTTP/1.1 200 OK\r\n", true, RS::error}),
    [](const auto& info) { return info.param.name; });

TEST(netexec_http, AResponseSaysWhereItEndsSoTheNextCanBeRead) {
  const std::string first = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\npod-a";
  const std::string second = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  const ParsedResponse parsed = parse_response(first + second, false);
  ASSERT_EQ(parsed.status, ParsedResponse::Status::complete);
  EXPECT_EQ(parsed.consumed, first.size());
  EXPECT_EQ(parse_response(second, false).consumed, second.size());
}

// --- URL helpers ---

TEST(netexec_url, DecodesPercentEscapesAndPlusInQueries) {
  EXPECT_EQ(url_decode("a%20b%2Fc%3d"), "a b/c=");
  EXPECT_EQ(url_decode("a+b"), "a+b");
  EXPECT_EQ(url_decode("a+b", true), "a b");
  EXPECT_EQ(url_decode("%e2%9c%93"), "\xe2\x9c\x93");
  EXPECT_EQ(url_decode(""), "");
  EXPECT_EQ(url_decode("%"), std::nullopt);
  EXPECT_EQ(url_decode("%2"), std::nullopt);
  EXPECT_EQ(url_decode("%zz"), std::nullopt);
  EXPECT_EQ(url_decode("ab%"), std::nullopt);
}

TEST(netexec_url, EncodesWhatMayNotAppearInARequestTarget) {
  EXPECT_EQ(encode_target("echo?msg=hello world"), "echo?msg=hello%20world");
  EXPECT_EQ(encode_target("echo?msg=a%20b&x=\"<>\""), "echo?msg=a%20b&x=%22%3C%3E%22");
  EXPECT_EQ(encode_target("hostname"), "hostname");
  EXPECT_EQ(encode_target("\xe2\x9c\x93\n"), "%E2%9C%93%0A");
}

TEST(netexec_url, ParsesQueryStrings) {
  const auto params = parse_query("msg=hello+world&a=1&a=2&flag&&empty=&x%3Dy=%26");
  ASSERT_TRUE(params);
  EXPECT_EQ(params->at("msg"), "hello world");
  EXPECT_EQ(params->at("a"), "1");  // the first value wins
  EXPECT_EQ(params->at("flag"), "");
  EXPECT_EQ(params->at("empty"), "");
  EXPECT_EQ(params->at("x=y"), "&");
  EXPECT_EQ(params->size(), 5u);
  EXPECT_TRUE(parse_query("")->empty());
  EXPECT_EQ(parse_query("msg=%zz"), std::nullopt);
}

// --- the router ---

std::chrono::system_clock::time_point fixed_time() {
  // 2024-05-06 07:08:09.5 UTC
  return std::chrono::system_clock::time_point(std::chrono::seconds(1714979289)) +
         std::chrono::milliseconds(500);
}

HttpRequest get(const std::string& target, const std::string& method = "GET") {
  const ParseResult parsed =
      parse_request(method + " " + target + " HTTP/1.1\r\nX-Trace: abc\r\n\r\n");
  EXPECT_EQ(parsed.status, Status::complete) << target;
  return parsed.request;
}

struct RouteCase {
  std::string name{};
  std::string target{};
  int status{};
  std::string body{};  // expected body, or a part of it when `partial`
  bool partial = false;
  std::string method = "GET";
};

class RouterAnswers : public ::testing::TestWithParam<RouteCase> {};

TEST_P(RouterAnswers, Case) {
  const RouteCase& c = GetParam();
  const Router router("pod-a", fixed_time);
  const Route route = router.route(get(c.target, c.method), "10.244.1.5:43210");
  EXPECT_FALSE(route.dial);
  EXPECT_EQ(route.response.status, c.status) << route.response.body;
  if (c.partial) {
    EXPECT_THAT(route.response.body, HasSubstr(c.body));
  } else {
    EXPECT_EQ(route.response.body, c.body);
  }
}

INSTANTIATE_TEST_SUITE_P(
    netexec, RouterAnswers,
    ::testing::Values(
        RouteCase{"Hostname", "/hostname", 200, "pod-a"},
        RouteCase{"HostnameHead", "/hostname", 200, "pod-a", false, "HEAD"},
        RouteCase{"ClientIp", "/clientip", 200, "10.244.1.5:43210"},
        RouteCase{"Echo", "/echo?msg=hello%20world", 200, "hello world"},
        RouteCase{"EchoPlus", "/echo?msg=a+b%2Bc", 200, "a b+c"},
        RouteCase{"EchoWithoutMessage", "/echo", 200, ""},
        RouteCase{"Healthz", "/healthz", 200, "ok"},
        RouteCase{"Root", "/", 200, "NOW: 2024-05-06 07:08:09.5 +0000 UTC"},
        RouteCase{"Header", "/header?key=x-trace", 200, "abc"},
        RouteCase{"MissingHeader", "/header?key=x-none", 200, ""},
        RouteCase{"HeaderWithoutKey", "/header", 400, "missing query parameter key", true},
        RouteCase{"Unknown", "/nope", 404, "404 page not found\n"},
        RouteCase{"TrailingSlash", "/hostname/", 404, "404 page not found\n"},
        RouteCase{"Post", "/hostname", 405, "method \"POST\" not allowed", true, "POST"},
        RouteCase{"PostUnknown", "/nope", 404, "404 page not found\n", false, "POST"},
        RouteCase{"BadQuery", "/echo?msg=%zz", 400, "invalid query string", true},
        RouteCase{"DialWithoutHost", "/dial?port=80&request=hostname", 400,
                  "missing query parameter host", true},
        RouteCase{"ExitWithBadCode", "/exit?code=300", 400, "invalid code \"300\"", true}),
    [](const auto& info) { return info.param.name; });

TEST(netexec_router, MethodNotAllowedNamesTheAllowedOnes) {
  const Router router("pod-a");
  const Route route = router.route(get("/echo", "DELETE"), "10.0.0.1:1");
  ASSERT_EQ(route.response.extra_headers.size(), 1u);
  EXPECT_EQ(route.response.extra_headers[0].name, "Allow");
  EXPECT_EQ(route.response.extra_headers[0].value, "GET, HEAD");
}

TEST(netexec_router, DialIsHandedBackToTheLoop) {
  const Router router("pod-a");
  const Route route = router.route(
      get("/dial?host=10.244.2.7&port=8080&protocol=http&request=echo%3Fmsg%3Dx&tries=3"),
      "10.0.0.1:1");
  ASSERT_TRUE(route.dial);
  EXPECT_EQ(*route.dial, (DialRequest{"10.244.2.7", 8080, DialProtocol::http, "echo?msg=x", 3}));
}

TEST(netexec_router, ExitAnswersThenNamesTheCode) {
  const Router router("pod-a");
  const Route with_code = router.route(get("/exit?code=3"), "10.0.0.1:1");
  EXPECT_EQ(with_code.response.status, 200);
  EXPECT_EQ(with_code.exit_code, 3);
  EXPECT_EQ(router.route(get("/exit"), "10.0.0.1:1").exit_code, 0);
  EXPECT_EQ(router.route(get("/hostname"), "10.0.0.1:1").exit_code, std::nullopt);
}

TEST(netexec_router, FormatsTheTimeAsGoDoes) {
  using namespace std::chrono;
  const system_clock::time_point t{seconds(1714979289)};
  EXPECT_EQ(format_now(t), "NOW: 2024-05-06 07:08:09 +0000 UTC");
  EXPECT_EQ(format_now(t + nanoseconds(123456789)), "NOW: 2024-05-06 07:08:09.123456789 +0000 UTC");
  EXPECT_EQ(format_now(t + microseconds(10)), "NOW: 2024-05-06 07:08:09.00001 +0000 UTC");
}

// --- /dial parameters ---

struct DialCase {
  std::string name{};
  std::string query{};
  std::optional<DialRequest> expected{};
  std::string error{};  // part of the message when refused
};

class DialParameters : public ::testing::TestWithParam<DialCase> {};

TEST_P(DialParameters, Case) {
  const DialCase& c = GetParam();
  const auto params = parse_query(c.query);
  ASSERT_TRUE(params);
  const DialParse parsed = parse_dial(*params);
  EXPECT_EQ(parsed.request, c.expected) << parsed.error;
  if (!c.expected) {
    EXPECT_THAT(parsed.error, HasSubstr(c.error));
  }
}

INSTANTIATE_TEST_SUITE_P(
    netexec, DialParameters,
    ::testing::Values(
        DialCase{"Http", "host=10.0.0.2&port=8080&request=hostname",
                 DialRequest{"10.0.0.2", 8080, DialProtocol::http, "hostname", 1}},
        DialCase{"UdpUpperCase", "host=10.0.0.2&port=8081&protocol=UDP&request=clientip&tries=0",
                 DialRequest{"10.0.0.2", 8081, DialProtocol::udp, "clientip", 0}},
        DialCase{"Ipv6", "host=fd00::2&port=80&request=hostname",
                 DialRequest{"fd00::2", 80, DialProtocol::http, "hostname", 1}},
        DialCase{"Ipv6Brackets", "host=%5Bfd00::2%5D&port=80&request=hostname",
                 DialRequest{"fd00::2", 80, DialProtocol::http, "hostname", 1}},
        DialCase{"DnsName", "host=svc.ns.svc.cluster.local&port=80&request=hostname",
                 DialRequest{"svc.ns.svc.cluster.local", 80, DialProtocol::http, "hostname", 1}},
        DialCase{"MissingHost", "port=80&request=hostname", std::nullopt,
                 "missing query parameter host"},
        DialCase{"BadHost", "host=a%20b&port=80&request=hostname", std::nullopt,
                 "invalid host \"a b\""},
        DialCase{"BracketsAroundIpv4", "host=[10.0.0.1]&port=80&request=x", std::nullopt,
                 "not an IPv6 address"},
        DialCase{"MissingPort", "host=10.0.0.2&request=hostname", std::nullopt,
                 "missing query parameter port"},
        DialCase{"PortZero", "host=10.0.0.2&port=0&request=hostname", std::nullopt,
                 "invalid port \"0\""},
        DialCase{"PortTooLarge", "host=10.0.0.2&port=65536&request=hostname", std::nullopt,
                 "invalid port \"65536\""},
        DialCase{"PortNotANumber", "host=10.0.0.2&port=http&request=hostname", std::nullopt,
                 "invalid port \"http\""},
        DialCase{"Sctp", "host=10.0.0.2&port=80&protocol=sctp&request=hostname", std::nullopt,
                 "unsupported protocol \"sctp\""},
        DialCase{"MissingRequest", "host=10.0.0.2&port=80", std::nullopt,
                 "missing query parameter request"},
        DialCase{"NegativeTries", "host=10.0.0.2&port=80&request=x&tries=-1", std::nullopt,
                 "invalid tries \"-1\""},
        DialCase{"TooManyTries", "host=10.0.0.2&port=80&request=x&tries=1001", std::nullopt,
                 "invalid tries \"1001\""}),
    [](const auto& info) { return info.param.name; });

TEST(netexec_dial, TheAnswerIsAgnhostsJson) {
  const HttpResponse response = dial_response({{"pod-b", "pod-c"}, {"connection refused"}});
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.content_type, "application/json");
  EXPECT_EQ(response.body, R"({"errors":["connection refused"],"responses":["pod-b","pod-c"]})");
  EXPECT_EQ(dial_response({}).body, R"({"errors":[],"responses":[]})");
  // Bytes that are not UTF-8 become U+FFFD instead of failing.
  const auto parsed = nlohmann::json::parse(dial_response({{"a\xff"}, {}}).body);
  EXPECT_EQ(parsed["responses"][0], "a\xef\xbf\xbd");
}

// --- UDP ---

struct UdpCase {
  std::string name{};
  std::string datagram{};
  std::string reply{};
  bool partial = false;
};

class UdpCommands : public ::testing::TestWithParam<UdpCase> {};

TEST_P(UdpCommands, Case) {
  const UdpCase& c = GetParam();
  const Router router("pod-a");
  const std::string reply = router.udp_reply(c.datagram, "10.244.1.5:5353");
  if (c.partial) {
    EXPECT_THAT(reply, HasSubstr(c.reply));
  } else {
    EXPECT_EQ(reply, c.reply);
  }
}

INSTANTIATE_TEST_SUITE_P(
    netexec, UdpCommands,
    ::testing::Values(UdpCase{"Hostname", "hostname", "pod-a"},
                      UdpCase{"HostnameWithNewline", "hostname\n", "pod-a"},
                      UdpCase{"HostnameUpperCase", "HOSTNAME", "pod-a"},
                      UdpCase{"ClientIp", "clientip", "10.244.1.5:5353"},
                      UdpCase{"Echo", "echo Hello World", "Hello World"},
                      UdpCase{"EchoUpperCase", "ECHO hi\r\n", "hi"},
                      UdpCase{"EchoNothing", "echo", ""},
                      UdpCase{"Unknown", "dance", "unknown request \"dance\"", true},
                      UdpCase{"Empty", "", "unknown request \"\"", true},
                      UdpCase{"Echoes", "echoes", "unknown request", true},
                      UdpCase{"Binary", std::string("\x01\x02", 2), "\\x01\\x02", true}),
    [](const auto& info) { return info.param.name; });

// --- client addresses ---

TEST(netexec_endpoint, FormatsIpv4Ipv6AndMappedAddresses) {
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  v4.sin_port = htons(43210);
  inet_pton(AF_INET, "10.244.1.5", &v4.sin_addr);
  EXPECT_EQ(format_endpoint(reinterpret_cast<sockaddr*>(&v4), sizeof v4), "10.244.1.5:43210");

  sockaddr_in6 v6{};
  v6.sin6_family = AF_INET6;
  v6.sin6_port = htons(8080);
  inet_pton(AF_INET6, "::ffff:10.244.1.5", &v6.sin6_addr);
  EXPECT_EQ(format_endpoint(reinterpret_cast<sockaddr*>(&v6), sizeof v6), "10.244.1.5:8080");

  inet_pton(AF_INET6, "fd00:0:0:0:0:0:0:5", &v6.sin6_addr);
  EXPECT_EQ(format_endpoint(reinterpret_cast<sockaddr*>(&v6), sizeof v6), "[fd00::5]:8080");

  inet_pton(AF_INET6, "fe80::1", &v6.sin6_addr);
  v6.sin6_scope_id = 999999;  // no such interface: the index itself
  EXPECT_EQ(format_endpoint(reinterpret_cast<sockaddr*>(&v6), sizeof v6), "[fe80::1%999999]:8080");

  sockaddr unknown{};
  unknown.sa_family = AF_UNIX;
  EXPECT_EQ(format_endpoint(&unknown, sizeof unknown), "");
}

// --- the command line ---

Command parse(std::vector<const char*> args) {
  return parse_command_line(args);
}

TEST(netexec_flags, DefaultsServeHttpOn8080AndUdpOn8081) {
  const Command command = parse({});
  EXPECT_EQ(command.action, Command::Action::serve);
  EXPECT_EQ(command.options.http_ports, std::vector<std::uint16_t>{8080});
  EXPECT_EQ(command.options.udp_ports, std::vector<std::uint16_t>{8081});
  EXPECT_EQ(command.options.hostname, "");
  EXPECT_EQ(command.options.ready_fd, -1);
  EXPECT_FALSE(command.options.verbose);
}

TEST(netexec_flags, AnyPortFlagReplacesBothDefaults) {
  EXPECT_EQ(parse({"--http-port", "80"}).options.udp_ports, std::vector<std::uint16_t>{});
  EXPECT_EQ(parse({"--udp-port=53"}).options.http_ports, std::vector<std::uint16_t>{});
  const Options options =
      parse({"--port", "9090/tcp", "--port=53/UDP", "--port", "8080", "--http-port", "9090",
             "-udp-port=5353", "--hostname", "web-0", "-v"})
          .options;
  EXPECT_EQ(options.http_ports, (std::vector<std::uint16_t>{8080, 9090}));
  EXPECT_EQ(options.udp_ports, (std::vector<std::uint16_t>{53, 5353}));
  EXPECT_EQ(options.hostname, "web-0");
  EXPECT_TRUE(options.verbose);
}

TEST(netexec_flags, ReadyFdMustBeOpen) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  const std::string fd = std::to_string(fds[1]);
  EXPECT_EQ(parse({"--ready-fd", fd.c_str()}).options.ready_fd, fds[1]);
  ::close(fds[0]);
  ::close(fds[1]);
  try {
    parse({"--ready-fd", fd.c_str()});
    ADD_FAILURE() << "a closed descriptor was accepted";
  } catch (const UsageError& e) {
    EXPECT_THAT(e.what(), HasSubstr("not an open file descriptor"));
  }
}

TEST(netexec_flags, HelpAndVersion) {
  EXPECT_EQ(parse({"--help"}).action, Command::Action::help);
  EXPECT_EQ(parse({"-h"}).action, Command::Action::help);
  EXPECT_EQ(parse({"--version"}).action, Command::Action::version);
  EXPECT_THAT(usage(), HasSubstr("--ready-fd"));
}

struct BadFlagCase {
  std::string name{};
  std::vector<const char*> args{};
  std::string message{};  // part of the error
};

class BadFlags : public ::testing::TestWithParam<BadFlagCase> {};

TEST_P(BadFlags, AreRefusedNamingTheFlagAndValue) {
  const BadFlagCase& c = GetParam();
  try {
    parse(c.args);
    ADD_FAILURE() << "accepted";
  } catch (const UsageError& e) {
    EXPECT_THAT(e.what(), HasSubstr(c.message));
  }
}

INSTANTIATE_TEST_SUITE_P(
    netexec, BadFlags,
    ::testing::Values(
        BadFlagCase{
            "PortNotANumber", {"--http-port", "abc"}, "invalid value \"abc\" for --http-port"},
        BadFlagCase{"PortZero", {"--udp-port=0"}, "invalid value \"0\" for --udp-port"},
        BadFlagCase{"PortTooLarge", {"--http-port", "70000"}, "\"70000\" for --http-port"},
        BadFlagCase{"PortEmpty", {"--http-port="}, "invalid value \"\" for --http-port"},
        BadFlagCase{"PortSuffix", {"--http-port", "80x"}, "\"80x\""},
        BadFlagCase{"ContainerPortSctp",
                    {"--port", "80/sctp"},
                    "invalid value \"80/sctp\" for --port: protocol \"sctp\""},
        BadFlagCase{"ContainerPortBadNumber", {"--port", "x/tcp"}, "\"x/tcp\" for --port"},
        BadFlagCase{"MissingValue", {"--hostname"}, "flag --hostname needs a value"},
        BadFlagCase{"EmptyHostname", {"--hostname="}, "invalid value \"\" for --hostname"},
        BadFlagCase{
            "ReadyFdNotANumber", {"--ready-fd", "three"}, "invalid value \"three\" for --ready-fd"},
        BadFlagCase{"ReadyFdStderr", {"--ready-fd", "2"}, "stderr"},
        BadFlagCase{"Unknown", {"--sctp-port", "1"}, "unknown flag \"--sctp-port\""},
        BadFlagCase{"Positional", {"serve"}, "unexpected argument \"serve\""},
        BadFlagCase{"ValueForSwitch", {"--verbose=yes"}, "flag --verbose takes no value"}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace flatnet::netexec
