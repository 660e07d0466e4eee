// The real flatnet-netexec binary, started inside a pod namespace as the emulator starts it
// (fork, setns, exec, wait for --ready-fd) and driven from a second namespace joined by a veth.

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "flatnet/netexec/endpoint.hpp"
#include "flatnet/netexec/http.hpp"
#include "flatnet/netmodel/address.hpp"
#include "flatnet/netmodel/error.hpp"
#include "flatnet/netmodel/netlink.hpp"
#include "flatnet/testing/scratch_netns.hpp"
#include "flatnet/testing/traffic.hpp"

namespace flatnet::netexec {
namespace {

using namespace std::chrono_literals;
using netmodel::IpAddress;
using netmodel::IpPrefix;
using netmodel::Netlink;
using netmodel::NetNs;
using ::testing::HasSubstr;
using testing::Socket;
using ::testing::StartsWith;

constexpr const char* kBinary = FLATNET_BIN_DIR "/flatnet-netexec";

// A flatnet-netexec process. The destructor kills it (SIGKILL) and reaps it unless it has
// already been waited for, so no test leaves one behind, whatever it asserted.
class NetexecProcess {
 public:
  // Starts the binary inside `ns` with `args` (and --ready-fd) and waits for "ready".
  // Fails the test (and returns a process that is not running) when it exits or stays silent.
  static NetexecProcess start(const NetNs& ns, std::vector<std::string> args,
                              bool expect_ready = true) {
    NetexecProcess p;
    p.log_ = ::memfd_create("netexec-log", MFD_CLOEXEC);
    int ready[2];
    if (p.log_ < 0 || ::pipe2(ready, O_CLOEXEC) != 0) netmodel::throw_errno(errno, "pipe2");
    args.insert(args.begin(), kBinary);
    args.push_back("--ready-fd");
    args.push_back("3");
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);

    p.pid_ = ::fork();
    if (p.pid_ < 0) netmodel::throw_errno(errno, "fork");
    if (p.pid_ == 0) {
      // Only async-signal-safe calls until exec: the test process has threads.
      if (::setns(ns.fd(), CLONE_NEWNET) != 0) ::_exit(126);
      if (ready[1] == 3) {
        ::fcntl(3, F_SETFD, 0);
      } else if (::dup2(ready[1], 3) < 0) {
        ::_exit(126);
      }
      ::dup2(p.log_, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(ready[1]);
    std::string answer;
    pollfd fd{ready[0], POLLIN, 0};
    while (::poll(&fd, 1, 5000) == 1) {
      char buffer[16];
      const ssize_t n = ::read(ready[0], buffer, sizeof buffer);
      if (n <= 0) break;
      answer.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(ready[0]);
    if (expect_ready) {
      EXPECT_EQ(answer, "ready\n") << "flatnet-netexec did not report ready; its log:\n" << p.log();
    }
    return p;
  }

  NetexecProcess() = default;
  NetexecProcess(NetexecProcess&& other) noexcept
      : pid_(std::exchange(other.pid_, -1)), log_(std::exchange(other.log_, -1)) {}
  NetexecProcess& operator=(NetexecProcess&&) = delete;
  ~NetexecProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (log_ >= 0) ::close(log_);
  }

  pid_t pid() const { return pid_; }

  // What it wrote to stderr so far.
  std::string log() const {
    std::string text;
    char buffer[4096];
    off_t offset = 0;
    ssize_t n;
    while ((n = ::pread(log_, buffer, sizeof buffer, offset)) > 0) {
      text.append(buffer, static_cast<std::size_t>(n));
      offset += n;
    }
    return text;
  }

  // Waits up to `timeout` for it to exit; its exit code, or -1 (still running, or killed by a
  // signal; the test fails then).
  int wait(std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (pid_ > 0) {
      int status = 0;
      const pid_t done = ::waitpid(pid_, &status, WNOHANG);
      if (done == pid_) {
        pid_ = -1;
        if (WIFEXITED(status)) return WEXITSTATUS(status);
        ADD_FAILURE() << "flatnet-netexec died of signal " << WTERMSIG(status);
        return -1;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "flatnet-netexec did not exit within " << timeout.count() << " ms";
        return -1;
      }
      std::this_thread::sleep_for(5ms);
    }
    return -1;
  }

  int terminate(int signal = SIGTERM) {
    ::kill(pid_, signal);
    return wait();
  }

 private:
  pid_t pid_ = -1;
  int log_ = -1;
};

// A socket made inside `ns` (where it stays), with 5 s send and receive timeouts.
Socket make_socket(const NetNs& ns, int family, int type) {
  Socket s = netmodel::run_in(ns, [&] { return Socket(::socket(family, type | SOCK_CLOEXEC, 0)); });
  if (s.fd() < 0) netmodel::throw_errno(errno, "socket");
  const timeval timeout{5, 0};
  ::setsockopt(s.fd(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  ::setsockopt(s.fd(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  return s;
}

sockaddr_storage to_sockaddr(const std::string& ip, std::uint16_t port, socklen_t& length) {
  const IpAddress address = IpAddress::parse(ip);
  sockaddr_storage storage{};
  if (address.is_v4()) {
    auto* in = reinterpret_cast<sockaddr_in*>(&storage);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    std::memcpy(&in->sin_addr, address.bytes().data(), 4);
    length = sizeof(sockaddr_in);
  } else {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    std::memcpy(&in6->sin6_addr, address.bytes().data(), 16);
    length = sizeof(sockaddr_in6);
  }
  return storage;
}

// A socket of `type` in `ns`, connected to ip:port.
Socket connect_to(const NetNs& ns, int type, const std::string& ip, std::uint16_t port) {
  socklen_t length = 0;
  const sockaddr_storage to = to_sockaddr(ip, port, length);
  Socket s = make_socket(ns, to.ss_family, type);
  if (::connect(s.fd(), reinterpret_cast<const sockaddr*>(&to), length) != 0) {
    netmodel::throw_errno(errno, "connect to " + ip + ":" + std::to_string(port));
  }
  if (type == SOCK_STREAM) {
    const int one = 1;
    ::setsockopt(s.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return s;
}

// The socket's own address as netexec writes a client's: "10.0.0.2:41234".
std::string local_endpoint(const Socket& s) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  ::getsockname(s.fd(), reinterpret_cast<sockaddr*>(&address), &length);
  return format_endpoint(reinterpret_cast<sockaddr*>(&address), length);
}

void send_all(const Socket& s, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(s.fd(), data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) netmodel::throw_errno(errno, "send");
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

// Reads from a connection; keeps what follows a response for the next one.
class HttpReader {
 public:
  explicit HttpReader(const Socket& s) : socket_(s) {}

  // The next response; fails the test on timeout or a malformed answer.
  ParsedResponse next() {
    while (true) {
      ParsedResponse response = parse_response(buffer_, eof_);
      if (response.status == ParsedResponse::Status::complete) {
        buffer_.erase(0, response.consumed);
        return response;
      }
      if (response.status == ParsedResponse::Status::error) {
        ADD_FAILURE() << response.error;
        return response;
      }
      char chunk[4096];
      const ssize_t n = ::recv(socket_.fd(), chunk, sizeof chunk, 0);
      if (n < 0) {
        ADD_FAILURE() << "recv: " << std::strerror(errno);
        return response;
      }
      if (n == 0) eof_ = true;
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }

  // Whether the server closed the connection (EOF) with nothing more to read.
  bool closed() {
    if (!buffer_.empty()) return false;
    char c;
    return eof_ || ::recv(socket_.fd(), &c, 1, 0) == 0;
  }

 private:
  const Socket& socket_;
  std::string buffer_;
  bool eof_ = false;
};

std::string get_request(const std::string& target, const std::string& extra = "") {
  return "GET " + target + " HTTP/1.1\r\nHost: pod\r\n" + extra + "\r\n";
}

struct Reply {
  int code = 0;
  std::string body;
  std::string client;  // the client's own address, as netexec should report it
};

// One request on a connection of its own, closed by the server after the answer.
Reply http_get(const NetNs& ns, const std::string& ip, std::uint16_t port,
               const std::string& target) {
  Socket s = connect_to(ns, SOCK_STREAM, ip, port);
  send_all(s, get_request(target, "Connection: close\r\n"));
  HttpReader reader(s);
  const ParsedResponse response = reader.next();
  EXPECT_TRUE(reader.closed()) << "no close after \"Connection: close\"";
  return {response.code, response.body, local_endpoint(s)};
}

// One datagram to ip:port and its answer, on a connected socket: an answer from any other
// source address than ip would not be received at all.
Reply udp_exchange(const NetNs& ns, const std::string& ip, std::uint16_t port,
                   const std::string& message) {
  Socket s = connect_to(ns, SOCK_DGRAM, ip, port);
  send_all(s, message);
  std::string reply(65536, '\0');
  const ssize_t n = ::recv(s.fd(), reply.data(), reply.size(), 0);
  if (n < 0) {
    ADD_FAILURE() << "no udp reply from " << ip << ":" << port << ": " << std::strerror(errno);
    return {};
  }
  reply.resize(static_cast<std::size_t>(n));
  return {200, reply, local_endpoint(s)};
}

nlohmann::json json_of(const Reply& reply) {
  EXPECT_EQ(reply.code, 200) << reply.body;
  try {
    return nlohmann::json::parse(reply.body);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not JSON: " << reply.body;
    return {};
  }
}

// Two pods: "a" (10.0.0.1 and 10.0.0.3, fd00::1) and "b" (10.0.0.2, fd00::2) on one veth.
class NetexecNetns : public testing::NetnsTest {
 protected:
  void SetUp() override {
    NetnsTest::SetUp();
    if (IsSkipped()) return;
    a_ = &scratch_.add("pod-a");
    b_ = &scratch_.add("pod-b");
    Netlink::open(*a_).add_veth({.name = "eth0", .peer_name = "eth0", .peer_ns = b_});
    configure(*a_, {"10.0.0.1/24", "10.0.0.3/24", "fd00::1/64"});
    configure(*b_, {"10.0.0.2/24", "fd00::2/64"});
  }

  static void configure(const NetNs& ns, std::initializer_list<const char*> addresses) {
    Netlink nl = Netlink::open(ns);
    const int index = nl.link("eth0").index;
    for (const char* a : addresses)
      nl.add_address(index, IpPrefix::parse(a), {.nodad = true});
    nl.set_up(index);
  }

  NetNs* a_ = nullptr;
  NetNs* b_ = nullptr;
};
// In lower case, so that `ctest -R netexec` selects these tests.
using netexec_pods = NetexecNetns;

TEST_F(netexec_pods, HttpEndpointsAnswerOverIpv4AndIpv6) {
  NetexecProcess server = NetexecProcess::start(*a_, {"--hostname", "pod-a"});
  for (const std::string ip : {"10.0.0.1", "fd00::1"}) {
    SCOPED_TRACE(ip);
    const Reply hostname = http_get(*b_, ip, 8080, "/hostname");
    EXPECT_EQ(hostname.code, 200);
    EXPECT_EQ(hostname.body, "pod-a");

    // The client's real address: no NAT, and IPv4 not shown as ::ffff:10.0.0.2.
    const Reply clientip = http_get(*b_, ip, 8080, "/clientip");
    EXPECT_EQ(clientip.body, clientip.client);
    EXPECT_THAT(clientip.body, StartsWith(ip == "10.0.0.1" ? "10.0.0.2:" : "[fd00::2]:"));

    EXPECT_EQ(http_get(*b_, ip, 8080, "/echo?msg=hello%20world").body, "hello world");
    EXPECT_EQ(http_get(*b_, ip, 8080, "/healthz").body, "ok");
    EXPECT_EQ(http_get(*b_, ip, 8080, "/nope").code, 404);
  }
  EXPECT_THAT(server.log(), HasSubstr("http 8080, udp 8081 on [::]"));
}

TEST_F(netexec_pods, KeepAliveServesSeveralRequestsOnOneConnection) {
  NetexecProcess server = NetexecProcess::start(*a_, {"--hostname", "pod-a"});
  Socket s = connect_to(*b_, SOCK_STREAM, "10.0.0.1", 8080);
  HttpReader reader(s);

  send_all(s, get_request("/hostname"));
  EXPECT_EQ(reader.next().body, "pod-a");
  send_all(s, get_request("/clientip"));
  EXPECT_EQ(reader.next().body, local_endpoint(s));

  // Pipelined: both requests in one segment, both answered in order.
  send_all(s, get_request("/echo?msg=one") + get_request("/echo?msg=two"));
  EXPECT_EQ(reader.next().body, "one");
  EXPECT_EQ(reader.next().body, "two");

  // A request in pieces.
  send_all(s, "GET /echo?msg=pie");
  std::this_thread::sleep_for(20ms);
  send_all(s, "ces HTTP/1.1\r\nHo");
  std::this_thread::sleep_for(20ms);
  send_all(s, "st: pod\r\n\r\n");
  EXPECT_EQ(reader.next().body, "pieces");

  send_all(s, get_request("/hostname", "Connection: close\r\n"));
  EXPECT_EQ(reader.next().body, "pod-a");
  EXPECT_TRUE(reader.closed());
}

TEST_F(netexec_pods, AMalformedRequestGets400AndTheConnectionCloses) {
  NetexecProcess server = NetexecProcess::start(*a_, {});
  Socket s = connect_to(*b_, SOCK_STREAM, "10.0.0.1", 8080);
  send_all(s, "hello there\r\n\r\n");
  HttpReader reader(s);
  EXPECT_EQ(reader.next().code, 400);
  EXPECT_TRUE(reader.closed());
}

TEST_F(netexec_pods, UdpAnswersFromTheAddressTheClientTargeted) {
  NetexecProcess server = NetexecProcess::start(*a_, {"--hostname", "pod-a"});
  // 10.0.0.3 is the second address of eth0: without IP_PKTINFO the reply would leave from
  // 10.0.0.1, and the connected client socket would not receive it.
  for (const std::string ip : {"10.0.0.1", "10.0.0.3", "fd00::1"}) {
    SCOPED_TRACE(ip);
    EXPECT_EQ(udp_exchange(*b_, ip, 8081, "hostname").body, "pod-a");
    const Reply clientip = udp_exchange(*b_, ip, 8081, "clientip");
    EXPECT_EQ(clientip.body, clientip.client);
    EXPECT_EQ(udp_exchange(*b_, ip, 8081, "echo hi there").body, "hi there");
    EXPECT_THAT(udp_exchange(*b_, ip, 8081, "dance").body, HasSubstr("unknown request"));
  }
}

TEST_F(netexec_pods, DialReachesAnotherNetexecOverHttpAndUdp) {
  NetexecProcess server = NetexecProcess::start(*a_, {"--hostname", "pod-a"});
  NetexecProcess peer = NetexecProcess::start(*b_, {"--hostname", "pod-b"});

  const auto hostname =
      json_of(http_get(*b_, "10.0.0.1", 8080,
                       "/dial?host=10.0.0.2&port=8080&protocol=http&request=hostname&tries=2"));
  EXPECT_EQ(hostname["responses"], nlohmann::json({"pod-b", "pod-b"}));
  EXPECT_EQ(hostname["errors"], nlohmann::json::array());

  // The peer saw pod a's address: pod to pod without NAT.
  const auto clientip =
      json_of(http_get(*b_, "10.0.0.1", 8080, "/dial?host=10.0.0.2&port=8080&request=clientip"));
  ASSERT_EQ(clientip["responses"].size(), 1u) << clientip.dump();
  EXPECT_THAT(clientip["responses"][0].get<std::string>(), StartsWith("10.0.0.1:"));

  const auto echo = json_of(http_get(
      *b_, "10.0.0.1", 8080, "/dial?host=fd00::2&port=8080&request=echo%3Fmsg%3Dover%20v6"));
  EXPECT_EQ(echo["responses"], nlohmann::json({"over v6"})) << echo.dump();

  const auto udp =
      json_of(http_get(*b_, "10.0.0.1", 8080,
                       "/dial?host=10.0.0.2&port=8081&protocol=udp&request=hostname&tries=3"));
  EXPECT_EQ(udp["responses"], nlohmann::json({"pod-b", "pod-b", "pod-b"})) << udp.dump();

  const auto udp_client = json_of(http_get(
      *b_, "10.0.0.1", 8080, "/dial?host=fd00::2&port=8081&protocol=udp&request=clientip"));
  ASSERT_EQ(udp_client["responses"].size(), 1u) << udp_client.dump();
  EXPECT_THAT(udp_client["responses"][0].get<std::string>(), StartsWith("[fd00::1]:"));

  EXPECT_EQ(http_get(*b_, "10.0.0.1", 8080, "/dial?host=10.0.0.2&request=hostname").code, 400);
}

TEST_F(netexec_pods, DialToAClosedPortReportsTheError) {
  NetexecProcess server = NetexecProcess::start(*a_, {});
  const auto http =
      json_of(http_get(*b_, "10.0.0.1", 8080, "/dial?host=10.0.0.2&port=9&request=hostname"));
  EXPECT_EQ(http["responses"], nlohmann::json::array());
  ASSERT_EQ(http["errors"].size(), 1u) << http.dump();
  EXPECT_THAT(http["errors"][0].get<std::string>(), HasSubstr("connection refused"));

  const auto udp = json_of(
      http_get(*b_, "10.0.0.1", 8080, "/dial?host=10.0.0.2&port=9&protocol=udp&request=hostname"));
  ASSERT_EQ(udp["errors"].size(), 1u) << udp.dump();
  EXPECT_THAT(udp["errors"][0].get<std::string>(), HasSubstr("connection refused"));
}

TEST_F(netexec_pods, ADialWaitingForATimeoutHoldsUpNoOtherClient) {
  NetexecProcess server = NetexecProcess::start(*a_, {"--hostname", "pod-a"});
  // Bound, so no ICMP port unreachable comes back, and never answering.
  const Socket silent = testing::bind_udp(*b_, IpAddress::parse("10.0.0.2"), 7777);

  Socket dialing = connect_to(*b_, SOCK_STREAM, "10.0.0.1", 8080);
  const auto started = std::chrono::steady_clock::now();
  send_all(dialing, get_request("/dial?host=10.0.0.2&port=7777&protocol=udp&request=hostname"));

  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(http_get(*b_, "10.0.0.1", 8080, "/hostname").body, "pod-a");
  EXPECT_EQ(udp_exchange(*b_, "10.0.0.1", 8081, "hostname").body, "pod-a");
  EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);

  HttpReader reader(dialing);
  const ParsedResponse response = reader.next();
  const auto answer = nlohmann::json::parse(response.body);
  ASSERT_EQ(answer["errors"].size(), 1u) << response.body;
  EXPECT_THAT(answer["errors"][0].get<std::string>(), HasSubstr("no reply within 5000 ms"));
}

TEST_F(netexec_pods, SigtermStopsItWithExitCodeZero) {
  NetexecProcess server = NetexecProcess::start(*a_, {});
  // An idle keep-alive connection does not hold it up.
  Socket idle = connect_to(*b_, SOCK_STREAM, "10.0.0.1", 8080);
  send_all(idle, get_request("/healthz"));
  HttpReader reader(idle);
  EXPECT_EQ(reader.next().body, "ok");
  EXPECT_EQ(server.terminate(SIGTERM), 0) << server.log();
  EXPECT_THAT(server.log(), HasSubstr("SIGTERM"));
}

TEST_F(netexec_pods, ExitAnswersThenExitsWithTheCode) {
  NetexecProcess server = NetexecProcess::start(*a_, {});
  EXPECT_EQ(http_get(*b_, "10.0.0.1", 8080, "/exit?code=7").code, 200);
  EXPECT_EQ(server.wait(), 7);
}

TEST_F(netexec_pods, APortInUseIsNamedAndExitsOne) {
  NetexecProcess first = NetexecProcess::start(*a_, {"--port", "8090/tcp"});
  NetexecProcess second = NetexecProcess::start(*a_, {"--port", "8090/tcp"}, false);
  EXPECT_EQ(second.wait(), 1);
  EXPECT_THAT(second.log(), HasSubstr("bind tcp port 8090"));
  EXPECT_THAT(second.log(), HasSubstr("Address already in use"));
}

TEST_F(netexec_pods, ABadFlagExitsTwo) {
  NetexecProcess bad = NetexecProcess::start(*a_, {"--http-port", "eighty"}, false);
  EXPECT_EQ(bad.wait(), 2);
  EXPECT_THAT(bad.log(), HasSubstr("invalid value \"eighty\" for --http-port"));
}

}  // namespace
}  // namespace flatnet::netexec
