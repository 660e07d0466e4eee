#pragma once

// A small HTTP/1.1 server for the proxy's health, metrics and service health check ports: GET and
// HEAD, one request per connection (Connection: close), answered from one thread that polls
// every listener and connection. Slow or bad clients cannot hold it: each connection has a
// deadline and a size limit on its request, and connections past a limit are refused.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "flatnet/netmodel/address.hpp"

namespace flatnet::proxy {

struct HttpRequest {
  std::string method{};  // "GET" or "HEAD"
  std::string path{};    // "/healthz", without the query
  std::string query{};   // after '?', "" when none
  // Header names in lower case.
  std::map<std::string, std::string> headers{};
  netmodel::IpAddress peer{};
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body{};
};

// Runs on the server's thread: it must not block, nor call HttpServer::close.
using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpLimits {
  // Request line and headers; a longer request gets 431 and is closed.
  std::size_t max_request_bytes = 8192;
  // From accept to the last byte of the response.
  std::chrono::milliseconds timeout{5000};
  // Open connections over all listeners; more are closed at once.
  std::size_t max_connections = 256;
};

class HttpServer {
 public:
  using ListenerId = std::uint64_t;

  // Starts the server's thread; it serves no port until listen().
  explicit HttpServer(HttpLimits limits = {});
  // Stops the thread and closes every listener and connection.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  struct Listener {
    ListenerId id = 0;
    std::uint16_t port = 0;  // the bound port (the kernel's choice for port 0)
  };
  // Binds address:port and answers requests there with `handler`. Throws std::system_error
  // naming the address: `listen on 0.0.0.0:10256: Address already in use`.
  Listener listen(const netmodel::IpAddress& address, std::uint16_t port, HttpHandler handler);
  // Closes the listening socket before returning, so the port can be bound again at once.
  // Connections it accepted still get their answer. Unknown ids are ignored.
  void close(ListenerId id);

 private:
  struct Connection;
  struct ListenerSocket {
    int fd = -1;
    std::shared_ptr<const HttpHandler> handler{};
  };

  void run();
  void apply_removals();
  void accept_from(const ListenerSocket& listener);
  void on_readable(Connection& connection);
  void on_writable(Connection& connection);
  void respond(Connection& connection, const HttpResponse& response, bool head);

  HttpLimits limits_;
  int wake_fd_ = -1;
  std::mutex mutex_;
  std::condition_variable removed_;
  std::map<ListenerId, ListenerSocket> listeners_{};        // guarded by mutex_
  std::set<ListenerId> to_remove_{};                        // guarded by mutex_
  ListenerId next_id_ = 1;                                  // guarded by mutex_
  bool stopping_ = false;                                   // guarded by mutex_
  std::vector<std::unique_ptr<Connection>> connections_{};  // server thread only
  std::thread thread_;
};

// The reason phrase of a status code: 200 "OK", 503 "Service Unavailable".
std::string http_reason(int status);

// A blocking HTTP/1.1 GET, for tests and probes. Throws std::system_error when the connection
// fails and std::runtime_error when the answer is not HTTP.
struct HttpReply {
  int status = 0;
  std::map<std::string, std::string> headers{};  // names in lower case
  std::string body{};
};
HttpReply http_get(const netmodel::IpAddress& address, std::uint16_t port, const std::string& path,
                   std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace flatnet::proxy
