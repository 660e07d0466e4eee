#pragma once

// Network namespaces: an owned handle, persistent named namespaces made the way `ip netns add`
// makes them (so `ip netns exec NAME ...`, tcpdump and tshark work in them), and running code
// inside a namespace.
//
// Lifetime, as the kernel defines it: a namespace lives while anything refers to it — a bind
// mount under /run/netns, an open NetNs handle, a process or a socket inside it. remove() drops
// only the name: a handle opened before keeps working (run_in() enters it, Netlink sockets made
// in it still see its links), while open_named() of that name now fails with ENOENT. When the
// last reference goes, the kernel destroys the namespace and its links; the peer of a veth whose
// other end lived there disappears from its own namespace too (asynchronously, within moments).

#include <sys/types.h>

#include <exception>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace flatnet::netmodel {

// Which thread enters the namespace.
enum class Enter {
  // A new thread, discarded afterwards: the caller's thread never changes namespace. The
  // default, and the only safe choice in a multi-threaded program.
  dedicated_thread,
  // The calling thread, switched back right after (the process terminates if that fails, since
  // the thread would go on in the wrong namespace). For single-threaded programs such as CNI
  // plugins, where starting a thread costs more than the work itself: tens of microseconds, and
  // milliseconds on a busy virtual machine, against about 15 for two setns calls.
  calling_thread,
};

class NetNs {
 public:
  // Where named namespaces live, as for iproute2.
  static constexpr std::string_view kRunDir = "/run/netns";

  // Opens the namespace at `path` (/run/netns/NAME, /proc/PID/ns/net, ...). Throws
  // std::system_error naming the path, also when the file is not a network namespace.
  static NetNs open(const std::filesystem::path& path);
  // Opens /run/netns/NAME.
  static NetNs open_named(std::string_view name);
  // The calling thread's own namespace.
  static NetNs current();

  // Creates the persistent namespace NAME as `ip netns add` does: an empty file under
  // /run/netns bind-mounted over a fresh namespace, /run/netns being a shared mount point.
  // Its loopback is brought up when `loopback_up` is set (ip netns add leaves it down).
  // Throws std::system_error with EEXIST when the name is taken; a failure leaves no file behind.
  // `how` says which thread unshares into the new namespace (see Enter above). `setup`, when
  // given, runs inside the new namespace on that thread before the name is handed out (sysctls,
  // say, without entering the namespace again); what it throws fails the creation.
  static NetNs create(std::string_view name, bool loopback_up = true,
                      Enter how = Enter::dedicated_thread, const std::function<void()>& setup = {});
  // Removes the name NAME (unmount and unlink, as `ip netns delete`). Returns false when there
  // was nothing to remove. See the lifetime note above for what happens to the namespace.
  static bool remove(std::string_view name);
  // The names under /run/netns, sorted; empty when the directory does not exist.
  static std::vector<std::string> list_named();
  static std::filesystem::path path_of(std::string_view name);
  // Throws std::invalid_argument unless NAME is 1-255 characters of [A-Za-z0-9_.-] and not "."
  // or "..".
  static void validate_name(std::string_view name);

  NetNs(NetNs&& other) noexcept;
  NetNs& operator=(NetNs&& other) noexcept;
  NetNs(const NetNs&) = delete;
  NetNs& operator=(const NetNs&) = delete;
  ~NetNs();

  // A second handle to the same namespace (its own descriptor).
  NetNs dup() const;

  int fd() const { return fd_; }
  const std::filesystem::path& path() const { return path_; }
  // The name when the handle was opened from /run/netns/NAME, else empty.
  std::string name() const;

  // Namespaces are the same when their nsfs inodes are.
  bool same_as(const NetNs& other) const;
  // Whether this is the calling thread's own namespace.
  bool is_current() const;

 private:
  NetNs(int fd, std::filesystem::path path);

  int fd_ = -1;
  std::filesystem::path path_;
};

// Whether `path` refers to the calling thread's own network namespace. Throws when it cannot
// be inspected (for example it does not exist).
bool is_current_netns(const std::filesystem::path& path);

namespace detail {
// Runs `body` inside `ns` on the thread `how` says, restoring that thread's namespace
// afterwards; rethrows whatever `body` threw. Never runs on a shared worker.
void run_entered(const NetNs& ns, Enter how, const std::function<void()>& body);
}  // namespace detail

// Runs `fn` inside `ns` and returns its result or rethrows its exception. By default the calling
// thread never changes namespace: `fn` runs on a dedicated thread that is discarded afterwards.
// Sockets and netlink handles made inside `fn` stay bound to `ns` wherever they are used later.
template <class F>
std::invoke_result_t<F> run_in(const NetNs& ns, F&& fn, Enter how = Enter::dedicated_thread) {
  using Result = std::invoke_result_t<F>;
  if constexpr (std::is_void_v<Result>) {
    detail::run_entered(ns, how, [&] { std::invoke(fn); });
  } else {
    std::optional<Result> result;
    detail::run_entered(ns, how, [&] { result.emplace(std::invoke(fn)); });
    return std::move(*result);
  }
}

}  // namespace flatnet::netmodel
