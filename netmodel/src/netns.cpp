#include "flatnet/netmodel/netns.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <stdexcept>
#include <thread>

#include "flatnet/netmodel/error.hpp"
#include "flatnet/netmodel/netlink.hpp"

namespace flatnet::netmodel {
namespace {

constexpr const char* kThreadNetns = "/proc/thread-self/ns/net";

std::string quote_path(const std::filesystem::path& path) {
  return quote(path.string());
}

struct stat stat_or_throw(const std::filesystem::path& path, const std::string& operation) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw_errno(errno, operation);
  return st;
}

// Closes a descriptor on scope exit.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

// /run/netns must be a shared mount point so that the bind mounts made under it propagate to
// mount namespaces created later (iproute2 ip/ipnetns.c, netns_add, does the same). Taken under
// an flock on the directory so that concurrent creators do not stack bind mounts.
void prepare_run_dir() {
  const std::string dir(NetNs::kRunDir);
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    throw_errno(errno, "create directory " + quote_path(dir));
  }
  const int lock = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lock < 0) throw_errno(errno, "open directory " + quote_path(dir));
  FdCloser closer{lock};
  if (::flock(lock, LOCK_EX) != 0) throw_errno(errno, "lock directory " + quote_path(dir));
  if (::mount("", dir.c_str(), "none", MS_SHARED | MS_REC, nullptr) == 0) return;
  if (errno != EINVAL) throw_errno(errno, "make " + quote_path(dir) + " a shared mount");
  // Not a mount point yet: bind it onto itself first.
  if (::mount(dir.c_str(), dir.c_str(), "none", MS_BIND | MS_REC, nullptr) != 0) {
    throw_errno(errno, "bind-mount " + quote_path(dir) + " onto itself");
  }
  if (::mount("", dir.c_str(), "none", MS_SHARED | MS_REC, nullptr) != 0) {
    throw_errno(errno, "make " + quote_path(dir) + " a shared mount");
  }
}

bool is_netns_fd(int fd) {
  const int type = ::ioctl(fd, NS_GET_NSTYPE);
  if (type >= 0) return type == CLONE_NEWNET;
  // Kernels before 4.11 answer ENOTTY for nsfs files: accept any nsfs file there. Any other
  // file (a regular file, a stale placeholder) also answers ENOTTY, hence the fstatfs check.
  if (errno != ENOTTY) return false;
  struct statfs fs {};
  return ::fstatfs(fd, &fs) == 0 && fs.f_type == NSFS_MAGIC;
}

}  // namespace

NetNs::NetNs(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}

NetNs::NetNs(NetNs&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

NetNs& NetNs::operator=(NetNs&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

NetNs::~NetNs() {
  if (fd_ >= 0) ::close(fd_);
}

NetNs NetNs::open(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno(errno, "open netns " + quote_path(path));
  if (!is_netns_fd(fd)) {
    ::close(fd);
    throw_errno(EINVAL, "open netns " + quote_path(path) +
                            " (not a network namespace; a stale name left by a crash?)");
  }
  return NetNs(fd, path);
}

NetNs NetNs::open_named(std::string_view name) {
  validate_name(name);
  return open(path_of(name));
}

NetNs NetNs::current() {
  // Name it by pid and tid: /proc/thread-self means another thread when read elsewhere.
  NetNs ns = open(kThreadNetns);
  ns.path_ =
      "/proc/" + std::to_string(::getpid()) + "/task/" + std::to_string(::gettid()) + "/ns/net";
  return ns;
}

std::filesystem::path NetNs::path_of(std::string_view name) {
  return std::filesystem::path(kRunDir) / std::string(name);
}

void NetNs::validate_name(std::string_view name) {
  const bool ok_chars = std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
  });
  if (name.empty() || name.size() > 255 || !ok_chars || name == "." || name == "..") {
    throw std::invalid_argument("invalid netns name \"" + std::string(name) +
                                "\": use 1-255 characters of A-Z a-z 0-9 _ . -");
  }
}

NetNs NetNs::create(std::string_view name, bool loopback_up, Enter how,
                    const std::function<void()>& setup) {
  validate_name(name);
  prepare_run_dir();
  const std::filesystem::path path = path_of(name);
  const std::string operation = "create netns " + quote_path(path);
  const int placeholder = ::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
  if (placeholder < 0) throw_errno(errno, operation);
  ::close(placeholder);
  // From here on, any failure removes the name again (and never hides the original error).
  struct Undo {
    std::string_view name;
    bool armed = true;
    ~Undo() {
      if (!armed) return;
      try {
        remove(name);
      } catch (...) {
      }
    }
  } undo{name};

  // unshare() moves only the calling thread. The namespace is pinned by the bind mount and its
  // loopback brought up from inside (a netlink socket opened there), all on one thread that then
  // ends (dedicated_thread) or goes back where it was (calling_thread).
  int err = 0;
  std::string step;
  std::string loopback_error;
  auto inside = [&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      err = errno;
      step = "unshare";
      return;
    }
    if (::mount(kThreadNetns, path.c_str(), "none", MS_BIND, nullptr) != 0) {
      err = errno;
      step = "bind mount";
      return;
    }
    try {
      if (loopback_up) {
        Netlink netlink = Netlink::open();
        netlink.set_up(netlink.link("lo").index);
      }
      if (setup) setup();
    } catch (const std::exception& e) {
      loopback_error = e.what();
    }
  };
  if (how == Enter::dedicated_thread) {
    std::thread(inside).join();
  } else {
    const int original = ::open(kThreadNetns, O_RDONLY | O_CLOEXEC);
    if (original < 0) throw_errno(errno, operation + " (open the current netns)");
    // Back where it was however `inside` ends: the thread must not go on in the new namespace,
    // and without a way back the process stops.
    struct Restore {
      int fd;
      ~Restore() {
        if (::setns(fd, CLONE_NEWNET) != 0) std::terminate();
        ::close(fd);
      }
    } restore{original};
    inside();
  }
  if (err != 0) throw_errno(err, operation + " (" + step + ")");
  if (!loopback_error.empty()) throw std::runtime_error(operation + ": " + loopback_error);
  NetNs ns = open(path);
  undo.armed = false;
  return ns;
}

bool NetNs::remove(std::string_view name) {
  validate_name(name);
  const std::filesystem::path path = path_of(name);
  // EINVAL: not mounted (a placeholder left by a crash); ENOENT: already gone.
  if (::umount2(path.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
    throw_errno(errno, "unmount netns " + quote_path(path));
  }
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return false;
    throw_errno(errno, "remove netns " + quote_path(path));
  }
  return true;
}

std::vector<std::string> NetNs::list_named() {
  std::vector<std::string> names;
  DIR* dir = ::opendir(std::string(kRunDir).c_str());
  if (dir == nullptr) {
    if (errno == ENOENT) return names;
    throw_errno(errno, "list " + quote_path(std::string(kRunDir)));
  }
  while (const dirent* entry = ::readdir(dir)) {
    const std::string_view n = entry->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

NetNs NetNs::dup() const {
  const int fd = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) throw_errno(errno, "duplicate netns handle " + quote_path(path_));
  return NetNs(fd, path_);
}

std::string NetNs::name() const {
  return path_.parent_path() == std::filesystem::path(kRunDir) ? path_.filename().string() : "";
}

bool NetNs::same_as(const NetNs& other) const {
  struct stat a {
  }, b{};
  if (::fstat(fd_, &a) != 0) throw_errno(errno, "stat netns " + quote_path(path_));
  if (::fstat(other.fd_, &b) != 0) throw_errno(errno, "stat netns " + quote_path(other.path_));
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

bool NetNs::is_current() const {
  struct stat mine {};
  if (::fstat(fd_, &mine) != 0) throw_errno(errno, "stat netns " + quote_path(path_));
  const struct stat own = stat_or_throw(kThreadNetns, "stat own netns");
  return mine.st_dev == own.st_dev && mine.st_ino == own.st_ino;
}

bool is_current_netns(const std::filesystem::path& path) {
  const struct stat other = stat_or_throw(path, "stat netns " + quote_path(path));
  const struct stat own = stat_or_throw(kThreadNetns, "stat own netns");
  return other.st_dev == own.st_dev && other.st_ino == own.st_ino;
}

namespace detail {

namespace {

// Enters `ns` on the calling thread, runs `body`, and switches back whatever happens.
void enter_and_run(const NetNs& ns, const std::function<void()>& body) {
  const NetNs original = NetNs::current();
  if (::setns(ns.fd(), CLONE_NEWNET) != 0) {
    throw_errno(errno, "enter netns " + quote_path(ns.path()));
  }
  struct Restore {
    const NetNs& original;
    ~Restore() {
      if (::setns(original.fd(), CLONE_NEWNET) != 0) std::terminate();
    }
  } restore{original};
  body();
}

}  // namespace

void run_entered(const NetNs& ns, Enter how, const std::function<void()>& body) {
  if (how == Enter::calling_thread) {
    enter_and_run(ns, body);
    return;
  }
  std::exception_ptr failure;
  std::thread([&] {
    try {
      enter_and_run(ns, body);
    } catch (...) {
      failure = std::current_exception();
    }
  }).join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace detail
}  // namespace flatnet::netmodel
