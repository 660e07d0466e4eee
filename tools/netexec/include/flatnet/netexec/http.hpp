#pragma once

// The HTTP/1.x subset that netexec speaks, as plain functions over bytes (no sockets): parsing a
// request head from a connection's input buffer, rendering a response, parsing the response a
// /dial exchange reads back, and the URL helpers (percent-decoding, query strings).
//
// Parsing follows RFC 9112 where it matters to a test workload: CRLF or bare LF line ends,
// empty lines before the request line ignored (section 2.2), no whitespace between a header name
// and its colon, no obsolete line folding, one Content-Length value.

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace flatnet::netexec {

// The largest request head (request line and headers) accepted; larger ones get 431.
inline constexpr std::size_t kMaxHeaderBytes = 8 * 1024;

struct HttpHeader {
  std::string name;   // as sent
  std::string value;  // without surrounding whitespace
};

struct HttpRequest {
  std::string method;     // "GET"
  std::string target;     // as sent: "/echo?msg=a%20b" (an absolute-form target is reduced to this)
  std::string path;       // the target's path, percent-decoded: "/echo"
  std::string query;      // the raw text after '?': "msg=a%20b"
  int minor_version = 1;  // HTTP/1.<minor_version>
  std::vector<HttpHeader> headers;
  std::uint64_t content_length = 0;  // body bytes that follow the head
  bool chunked = false;              // a chunked body follows (its end is not tracked)

  // The first value of header `name` (case-insensitive), if present.
  std::optional<std::string_view> header(std::string_view name) const;
  // Whether the connection stays open after the response: HTTP/1.1 unless "Connection: close",
  // HTTP/1.0 only with "Connection: keep-alive"; never after a chunked body, nor when the client
  // holds its body back until told to continue ("Expect: 100-continue": netexec never asks for
  // a body, so the stream could not be resynchronised).
  bool keep_alive() const;
};

struct ParseResult {
  enum class Status {
    incomplete,  // the head has not ended yet: read more
    complete,    // `request` holds a request whose head was `consumed` bytes long
    error,       // answer `error_status` with `error_message` and close
  };
  Status status = Status::incomplete;
  std::size_t consumed = 0;
  HttpRequest request;
  int error_status = 0;  // 400, 431 or 505
  std::string error_message;
};

// Parses the request head at the start of `input`. Incomplete input longer than kMaxHeaderBytes
// is an error (431), so a connection's buffer stays bounded. The body, if any, is left to the
// caller (content_length bytes after `consumed`).
ParseResult parse_request(std::string_view input);

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "text/plain; charset=utf-8";
  std::vector<HttpHeader> extra_headers;  // e.g. Allow for 405
};

// A response with a plain-text body (error bodies end with a newline, as Go's http.Error writes).
HttpResponse text_response(int status, std::string body);
HttpResponse error_response(int status, std::string_view message);

// "OK", "Not Found", ...; "Unknown" for codes netexec never sends.
std::string_view reason_phrase(int status);

// The bytes of `response` as HTTP/1.1, with Content-Length always and a Connection header when
// it says something the client cannot assume: "close" when `keep_alive` is false, "keep-alive"
// for an HTTP/1.0 client (`minor_version` 0) that keeps the connection. A HEAD response
// (`head_only`) has the headers of the full one and no body.
std::string render_response(const HttpResponse& response, bool keep_alive, int minor_version = 1,
                            bool head_only = false);

// A response read by an HTTP client (the /dial side).
struct ParsedResponse {
  enum class Status { incomplete, complete, error };
  Status status = Status::incomplete;
  int code = 0;
  std::string body;
  std::size_t consumed = 0;  // bytes of `input` the response took (complete only)
  std::string error;         // what was wrong, for Status::error
};

// Parses the whole response in `input`. `eof` says the server closed the connection, which ends
// a body without Content-Length (and makes a short one an error). Chunked bodies are decoded.
ParsedResponse parse_response(std::string_view input, bool eof);

// Percent-decodes `text`; with `plus_is_space` (query strings) '+' becomes a space. nullopt for
// a '%' not followed by two hex digits.
std::optional<std::string> url_decode(std::string_view text, bool plus_is_space = false);

// Percent-encodes the bytes that may not appear in a request target (space, controls, '"', '<',
// '>', '\\', '^', '`', '{', '|', '}', non-ASCII). '%' is kept: `text` is taken as already encoded
// where it has escapes, as a URL typed into a browser is.
std::string encode_target(std::string_view text);

// The parameters of a query string ("a=1&b=x%20y&c"): the first value of each name wins, a name
// without '=' has the empty value, empty pairs are skipped. nullopt when an escape is invalid.
using QueryParams = std::map<std::string, std::string, std::less<>>;
std::optional<QueryParams> parse_query(std::string_view query);

// Equality ignoring ASCII case, as header names and tokens compare.
bool iequals_ascii(std::string_view a, std::string_view b);

}  // namespace flatnet::netexec
