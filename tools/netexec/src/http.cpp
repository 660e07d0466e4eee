#include "flatnet/netexec/http.hpp"

#include <algorithm>
#include <charconv>

#include "flatnet/netmodel/error.hpp"

namespace flatnet::netexec {
namespace {

using netmodel::quote;

char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// RFC 9110 tchar: the characters of a method or a header name.
bool is_tchar(char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), is_tchar);
}

std::string_view trim_ows(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t'))
    text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t'))
    text.remove_suffix(1);
  return text;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The lines of a message head, each without its line end ("\r\n" or "\n").
struct Head {
  std::vector<std::string_view> lines;
  std::size_t length = 0;  // bytes up to and including the empty line that ends the head
};

// Splits off the head at the start of `input` (from `start`); nullopt while it has not ended.
std::optional<Head> split_head(std::string_view input, std::size_t start) {
  Head head;
  std::size_t pos = start;
  while (true) {
    const std::size_t nl = input.find('\n', pos);
    if (nl == std::string_view::npos) return std::nullopt;
    std::string_view line = input.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos = nl + 1;
    if (line.empty()) {
      head.length = pos;
      return head;
    }
    head.lines.push_back(line);
  }
}

ParseResult parse_error(int status, std::string message) {
  ParseResult result;
  result.status = ParseResult::Status::error;
  result.error_status = status;
  result.error_message = std::move(message);
  return result;
}

// Checks the request line; fills method, target, path, query and version. Returns an error
// result, or nullopt when the line is good.
std::optional<ParseResult> parse_request_line(std::string_view line, HttpRequest& request) {
  if (line.find('\r') != std::string_view::npos) {
    return parse_error(400, "malformed request line: stray carriage return");
  }
  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return parse_error(
        400, "malformed request line " + quote(line) + ": expected METHOD TARGET HTTP/1.x");
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method)) return parse_error(400, "invalid method " + quote(method));
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
      version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9') {
    return parse_error(400, "invalid HTTP version " + quote(version));
  }
  if (version[5] != '1') return parse_error(505, "unsupported HTTP version " + quote(version));
  if (target.empty() ||
      !std::all_of(target.begin(), target.end(), [](char c) { return c > 0x20 && c < 0x7f; })) {
    return parse_error(400, "invalid request target " + quote(target));
  }

  std::string_view origin = target;
  if (iequals_ascii(target.substr(0, 7), "http://") ||
      iequals_ascii(target.substr(0, 8), "https://")) {
    // absolute-form (RFC 9112 section 3.2.2): the path starts after the authority.
    const auto authority = target.find("//") + 2;
    const auto slash = target.find_first_of("/?", authority);
    origin = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  } else if (target != "*" && target.front() != '/') {
    return parse_error(400, "invalid request target " + quote(target) + ": expected /path");
  }
  const auto question = origin.find('?');
  const std::string_view raw_path = origin.substr(0, question);
  auto path = url_decode(raw_path);
  if (!path) return parse_error(400, "invalid escape in path " + quote(raw_path));

  request.method = std::string(method);
  request.target = origin.front() == '?' ? "/" + std::string(origin) : std::string(origin);
  request.path = path->empty() ? "/" : std::move(*path);
  request.query =
      question == std::string_view::npos ? "" : std::string(origin.substr(question + 1));
  request.minor_version = version[7] - '0';
  return std::nullopt;
}

std::optional<std::uint64_t> parse_decimal(std::string_view text) {
  std::uint64_t value = 0;
  if (text.empty() ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

std::optional<std::string_view> HttpRequest::header(std::string_view name) const {
  for (const auto& h : headers) {
    if (iequals_ascii(h.name, name)) return std::string_view(h.value);
  }
  return std::nullopt;
}

bool HttpRequest::keep_alive() const {
  if (chunked) return false;
  if (content_length > 0 && header("expect")) return false;
  bool close = false;
  bool keep = false;
  for (const auto& h : headers) {
    if (!iequals_ascii(h.name, "connection")) continue;
    std::string_view rest = h.value;
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      const std::string_view token = trim_ows(rest.substr(0, comma));
      if (iequals_ascii(token, "close")) close = true;
      if (iequals_ascii(token, "keep-alive")) keep = true;
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    }
  }
  if (close) return false;
  return minor_version >= 1 || keep;
}

ParseResult parse_request(std::string_view input) {
  // Empty lines before the request line are ignored (RFC 9112 section 2.2).
  std::size_t start = 0;
  while (true) {
    if (input.substr(start, 2) == "\r\n") {
      start += 2;
    } else if (input.substr(start, 1) == "\n") {
      start += 1;
    } else {
      break;
    }
  }

  const auto head = split_head(input, start);
  if (!head) {
    if (input.size() >= kMaxHeaderBytes) {  // the end would make it longer still
      return parse_error(
          431, "request header larger than " + std::to_string(kMaxHeaderBytes) + " bytes");
    }
    // A request line that is already complete and wrong need not wait for the rest.
    const auto nl = input.find('\n', start);
    if (nl != std::string_view::npos) {
      std::string_view line = input.substr(start, nl - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      HttpRequest scratch;
      if (auto error = parse_request_line(line, scratch)) return std::move(*error);
    }
    return {};
  }
  if (head->length > kMaxHeaderBytes) {
    return parse_error(431,
                       "request header larger than " + std::to_string(kMaxHeaderBytes) + " bytes");
  }

  ParseResult result;
  HttpRequest& request = result.request;
  if (auto error = parse_request_line(head->lines.front(), request)) return std::move(*error);

  std::optional<std::uint64_t> content_length;
  bool has_transfer_encoding = false;
  for (std::size_t i = 1; i < head->lines.size(); ++i) {
    const std::string_view line = head->lines[i];
    if (line.front() == ' ' || line.front() == '\t') {
      return parse_error(400, "obsolete line folding in header " + quote(line));
    }
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) return parse_error(400, "malformed header " + quote(line));
    const std::string_view name = line.substr(0, colon);
    if (!is_token(name)) return parse_error(400, "invalid header name " + quote(name));
    const std::string_view value = trim_ows(line.substr(colon + 1));
    if (std::any_of(value.begin(), value.end(), [](char c) {
          return (static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f;
        })) {
      return parse_error(400, "control character in header " + quote(name));
    }
    if (iequals_ascii(name, "content-length")) {
      const auto length = parse_decimal(value);
      if (!length || (content_length && *content_length != *length)) {
        return parse_error(400, "invalid Content-Length " + quote(value));
      }
      content_length = length;
    } else if (iequals_ascii(name, "transfer-encoding")) {
      has_transfer_encoding = true;
      const std::string_view last = trim_ows(value.substr(value.rfind(',') + 1));
      if (!iequals_ascii(last, "chunked")) {
        return parse_error(400, "unsupported Transfer-Encoding " + quote(value));
      }
      request.chunked = true;
    }
    request.headers.push_back({std::string(name), std::string(value)});
  }
  if (has_transfer_encoding && content_length) {
    return parse_error(400, "both Content-Length and Transfer-Encoding");
  }
  request.content_length = content_length.value_or(0);
  result.status = ParseResult::Status::complete;
  result.consumed = head->length;
  return result;
}

HttpResponse text_response(int status, std::string body) {
  HttpResponse response;
  response.status = status;
  response.body = std::move(body);
  return response;
}

HttpResponse error_response(int status, std::string_view message) {
  return text_response(status, std::string(message) + "\n");
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

std::string render_response(const HttpResponse& response, bool keep_alive, int minor_version,
                            bool head_only) {
  std::string out;
  out.reserve(128 + response.body.size());
  out += "HTTP/1.1 ";
  out += std::to_string(response.status);
  out += ' ';
  out += reason_phrase(response.status);
  out += "\r\nContent-Type: ";
  out += response.content_type;
  out += "\r\nContent-Length: ";
  out += std::to_string(response.body.size());
  out += "\r\n";
  for (const auto& h : response.extra_headers) {
    out += h.name;
    out += ": ";
    out += h.value;
    out += "\r\n";
  }
  if (!keep_alive) {
    out += "Connection: close\r\n";
  } else if (minor_version == 0) {
    out += "Connection: keep-alive\r\n";
  }
  out += "\r\n";
  if (!head_only) out += response.body;
  return out;
}

ParsedResponse parse_response(std::string_view input, bool eof) {
  ParsedResponse result;
  auto fail = [&](std::string message) {
    result.status = ParsedResponse::Status::error;
    result.error = std::move(message);
    return result;
  };
  auto need_more = [&](std::string_view what) {
    if (eof) return fail("connection closed before the end of the " + std::string(what));
    result.status = ParsedResponse::Status::incomplete;
    return result;
  };

  std::size_t start = 0;
  while (true) {
    const auto head = split_head(input, start);
    if (!head) return need_more("response header");
    const std::string_view status_line = head->lines.empty() ? "" : head->lines.front();
    // "HTTP/1.1 200 OK"
    if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." || status_line[8] != ' ' ||
        (status_line.size() > 12 && status_line[12] != ' ')) {
      return fail("malformed status line " + quote(status_line));
    }
    const auto code = parse_decimal(status_line.substr(9, 3));
    if (!code || *code < 100) return fail("malformed status line " + quote(status_line));
    result.code = static_cast<int>(*code);

    std::optional<std::uint64_t> content_length;
    bool chunked = false;
    for (std::size_t i = 1; i < head->lines.size(); ++i) {
      const std::string_view line = head->lines[i];
      const auto colon = line.find(':');
      if (colon == std::string_view::npos) return fail("malformed header " + quote(line));
      const std::string_view name = line.substr(0, colon);
      const std::string_view value = trim_ows(line.substr(colon + 1));
      if (iequals_ascii(name, "content-length")) {
        content_length = parse_decimal(value);
        if (!content_length) return fail("invalid Content-Length " + quote(value));
      } else if (iequals_ascii(name, "transfer-encoding")) {
        chunked = iequals_ascii(trim_ows(value.substr(value.rfind(',') + 1)), "chunked");
      }
    }
    std::size_t pos = head->length;
    if (result.code < 200 && result.code != 101) {  // interim (100 Continue): the real one follows
      start = pos;
      continue;
    }
    if (result.code == 204 || result.code == 304) {
      result.consumed = pos;
      result.status = ParsedResponse::Status::complete;
      return result;
    }

    if (chunked) {
      std::string body;
      while (true) {
        const auto nl = input.find('\n', pos);
        if (nl == std::string_view::npos) return need_more("chunked body");
        std::string_view size_line = input.substr(pos, nl - pos);
        size_line = trim_ows(size_line.substr(0, size_line.find_first_of(";\r")));
        std::uint64_t size = 0;
        const auto [end, ec] =
            std::from_chars(size_line.data(), size_line.data() + size_line.size(), size, 16);
        if (size_line.empty() || ec != std::errc{} || end != size_line.data() + size_line.size()) {
          return fail("malformed chunk size " + quote(size_line));
        }
        pos = nl + 1;
        if (size == 0) {
          // Trailers, up to an empty line.
          const auto trailers = split_head(input, pos);
          if (!trailers) return need_more("chunked body");
          result.body = std::move(body);
          result.consumed = trailers->length;
          result.status = ParsedResponse::Status::complete;
          return result;
        }
        if (input.size() - pos < size) return need_more("chunked body");
        body.append(input.substr(pos, size));
        pos += size;
        if (input.substr(pos, 2) == "\r\n") {
          pos += 2;
        } else if (input.substr(pos, 1) == "\n") {
          pos += 1;
        } else if (input.size() - pos < 2) {
          return need_more("chunked body");
        } else {
          return fail("chunk not followed by a line end");
        }
      }
    }
    if (content_length) {
      if (input.size() - pos < *content_length) return need_more("response body");
      result.body = std::string(input.substr(pos, *content_length));
      result.consumed = pos + *content_length;
      result.status = ParsedResponse::Status::complete;
      return result;
    }
    if (!eof) return result;  // the body ends when the server closes the connection
    result.body = std::string(input.substr(pos));
    result.consumed = input.size();
    result.status = ParsedResponse::Status::complete;
    return result;
  }
}

std::optional<std::string> url_decode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      const int hi = i + 1 < text.size() ? hex_value(text[i + 1]) : -1;
      const int lo = i + 2 < text.size() ? hex_value(text[i + 2]) : -1;
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

std::string encode_target(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  static constexpr std::string_view kUnsafe = " \"<>\\^`{|}";
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte >= 0x7f || kUnsafe.find(c) != std::string_view::npos) {
      out += '%';
      out += kHex[byte >> 4];
      out += kHex[byte & 0xf];
    } else {
      out += c;
    }
  }
  return out;
}

bool iequals_ascii(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return lower(x) == lower(y); });
}

std::optional<QueryParams> parse_query(std::string_view query) {
  QueryParams params;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    auto name = url_decode(pair.substr(0, eq), true);
    auto value = url_decode(eq == std::string_view::npos ? "" : pair.substr(eq + 1), true);
    if (!name || !value) return std::nullopt;
    params.emplace(std::move(*name), std::move(*value));  // emplace keeps the first value
  }
  return params;
}

}  // namespace flatnet::netexec
