#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "flatnet/cni/error.hpp"
#include "flatnet/cni/ipam.hpp"

namespace flatnet::cni {
namespace {

using netmodel::IpAddress;

constexpr const char* kLastReservedPrefix = "last_reserved_ip.";
constexpr const char* kTemporaryPrefix = ".flatnet-tmp-";
// host-local separates the container ID and the interface name with CRLF.
constexpr const char* kLineBreak = "\r\n";

[[noreturn]] void io_error(const std::string& what, int err) {
  throw CniError(ErrorCode::io_failure, what + ": " + std::strerror(err));
}

std::string trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r\n\v\f");
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(" \t\r\n\v\f");
  return std::string(s.substr(first, last - first + 1));
}

std::string read_file(const std::filesystem::path& path, bool* exists = nullptr) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (exists && errno == ENOENT) {
      *exists = false;
      return {};
    }
    io_error("read " + path.string(), errno);
  }
  if (exists) *exists = true;
  std::string data;
  char buffer[512];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof buffer)) > 0)
    data.append(buffer, static_cast<std::size_t>(n));
  const int err = errno;
  ::close(fd);
  if (n < 0) io_error("read " + path.string(), err);
  return data;
}

// Writes `data` to a new temporary file in `dir` and returns its path.
std::filesystem::path write_temporary(const std::filesystem::path& dir, const std::string& data) {
  static thread_local std::mt19937_64 random{std::random_device{}()};
  for (int attempt = 0; attempt < 16; ++attempt) {
    const std::filesystem::path path =
        dir / (std::string(kTemporaryPrefix) + std::to_string(::getpid()) + "-" +
               std::to_string(random() % 1000000000));
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      if (errno == EEXIST) continue;
      io_error("create " + path.string(), errno);
    }
    const ssize_t n = ::write(fd, data.data(), data.size());
    const int err = errno;
    ::close(fd);
    if (n != static_cast<ssize_t>(data.size())) {
      ::unlink(path.c_str());
      io_error("write " + path.string(), n < 0 ? err : EIO);
    }
    return path;
  }
  io_error("create a temporary file in " + dir.string(), EEXIST);
}

// Calls f(dir_fd, name) for each entry of `dir`; dir_fd lets f open entries without walking
// the path again.
template <class F>
void for_each_entry(const std::filesystem::path& dir, F&& f) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) io_error("list " + dir.string(), errno);
  const int dir_fd = ::dirfd(d);
  while (const dirent* e = ::readdir(d)) {
    const std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    f(dir_fd, name);
  }
  ::closedir(d);
}

// A reservation file's content (they are a few dozen bytes); nullopt when it vanished.
std::optional<std::string> read_small(int dir_fd, std::string_view name,
                                      const std::filesystem::path& dir) {
  const std::string n(name);
  const int fd = ::openat(dir_fd, n.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    io_error("read " + (dir / n).string(), errno);
  }
  std::string data;
  char buffer[1024];
  ssize_t r;
  // A short read of a regular file is its end; only a full buffer needs another read.
  while ((r = ::read(fd, buffer, sizeof buffer)) > 0) {
    data.append(buffer, static_cast<std::size_t>(r));
    if (r < static_cast<ssize_t>(sizeof buffer)) break;
  }
  const int err = errno;
  ::close(fd);
  if (r < 0) io_error("read " + (dir / n).string(), err);
  return data;
}

}  // namespace

IpamStore::IpamStore(std::filesystem::path state_dir) : dir_(std::move(state_dir)) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) io_error("create " + dir_.string(), ec.value());
}

IpamStore::~IpamStore() = default;

IpamStore::Lock::~Lock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

IpamStore::Lock IpamStore::lock() {
  const std::filesystem::path path = dir_ / "lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) io_error("open " + path.string(), errno);
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      const int err = errno;
      ::close(fd);
      io_error("lock " + path.string(), err);
    }
  }
  return Lock(fd);
}

bool IpamStore::reserve(const IpAddress& address, const std::string& container_id,
                        const std::string& ifname, std::size_t range_set) {
  // A complete file appears under its final name in one step (a hard link), or not at all.
  const std::string content = trim(container_id) + kLineBreak + ifname;
  const std::filesystem::path final_path = dir_ / address.to_string();
  int linked = -1, err = 0;
  // An unnamed file (O_TMPFILE) leaves nothing behind if we are killed before the link.
  const int fd = ::open(dir_.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
  if (fd >= 0) {
    const ssize_t n = ::write(fd, content.data(), content.size());
    if (n != static_cast<ssize_t>(content.size())) {
      err = n < 0 ? errno : EIO;
      ::close(fd);
      io_error("write reservation for " + final_path.string(), err);
    }
    const std::string self = "/proc/self/fd/" + std::to_string(fd);
    linked = ::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, final_path.c_str(), AT_SYMLINK_FOLLOW);
    err = errno;
    ::close(fd);
  } else if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL) {
    // File systems without O_TMPFILE: a named temporary file, removed right after the link
    // (or by remove_stale_temporaries() if we die in between).
    const std::filesystem::path temporary = write_temporary(dir_, content);
    linked = ::link(temporary.c_str(), final_path.c_str());
    err = errno;
    ::unlink(temporary.c_str());
  } else {
    io_error("create reservation for " + final_path.string(), errno);
  }
  if (linked != 0) {
    if (err == EEXIST) return false;
    io_error("reserve " + final_path.string(), err);
  }
  // The last reserved address is only where the next search starts, written in place as
  // host-local writes it: a torn write reads as no address, and the search starts over.
  const std::filesystem::path last = dir_ / (kLastReservedPrefix + std::to_string(range_set));
  // Overwrite and cut to length rather than O_TRUNC: truncating to zero and growing again makes
  // the file system free and allocate a block on every reservation.
  const int last_fd = ::open(last.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (last_fd < 0) io_error("write " + last.string(), errno);
  const std::string text = address.to_string();
  const ssize_t n = ::pwrite(last_fd, text.data(), text.size(), 0);
  const int write_err = errno;
  const int cut = n == static_cast<ssize_t>(text.size()) ? ::ftruncate(last_fd, n) : 0;
  const int cut_err = errno;
  ::close(last_fd);
  if (n != static_cast<ssize_t>(text.size())) io_error("write " + last.string(), write_err);
  if (cut != 0) io_error("write " + last.string(), cut_err);
  return true;
}

std::optional<IpAddress> IpamStore::last_reserved(std::size_t range_set) const {
  bool exists = false;
  const std::string text =
      read_file(dir_ / (kLastReservedPrefix + std::to_string(range_set)), &exists);
  if (!exists) return std::nullopt;
  return IpAddress::try_parse(trim(text));
}

std::vector<Reservation> IpamStore::reservations() const {
  std::vector<Reservation> out;
  for_each_entry(dir_, [&](int dir_fd, std::string_view name) {
    const auto address = IpAddress::try_parse(name);
    if (!address) return;
    const auto raw = read_small(dir_fd, name, dir_);
    if (!raw) return;
    const std::string content = trim(*raw);
    Reservation r{*address, content, ""};
    if (const auto br = content.find(kLineBreak); br != std::string::npos) {
      r.container_id = content.substr(0, br);
      r.ifname = content.substr(br + 2);
    }
    out.push_back(r);
  });
  return out;
}

std::vector<IpAddress> IpamStore::find(const std::string& container_id,
                                       const std::string& ifname) const {
  std::vector<IpAddress> out;
  for (const auto& r : reservations()) {
    if (r.container_id == trim(container_id) && (r.ifname == ifname || r.ifname.empty())) {
      out.push_back(r.address);
    }
  }
  return out;
}

bool IpamStore::release(const IpAddress& address) {
  const std::filesystem::path path = dir_ / address.to_string();
  if (::unlink(path.c_str()) == 0) return true;
  if (errno == ENOENT) return false;
  io_error("release " + path.string(), errno);
}

std::size_t IpamStore::release(const std::string& container_id, const std::string& ifname) {
  std::size_t released = 0;
  const auto all = reservations();
  // Files that name the interface first; files of old versions (container ID only) when none do.
  for (const bool legacy : {false, true}) {
    for (const auto& r : all) {
      if (r.container_id != trim(container_id) || r.ifname.empty() != legacy) continue;
      if (!legacy && r.ifname != ifname) continue;
      if (release(r.address)) ++released;
    }
    if (released) break;
  }
  return released;
}

void IpamStore::remove_stale_temporaries() {
  for_each_entry(dir_, [&](int dir_fd, std::string_view name) {
    if (name.rfind(kTemporaryPrefix, 0) == 0) ::unlinkat(dir_fd, std::string(name).c_str(), 0);
  });
}

}  // namespace flatnet::cni
