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

template <class F>
void for_each_entry(const std::filesystem::path& dir, F&& f) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) io_error("list " + dir.string(), errno);
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    f(name);
  }
  ::closedir(d);
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
  // A complete file appears under its final name in one step (link), or not at all.
  const std::filesystem::path temporary =
      write_temporary(dir_, trim(container_id) + kLineBreak + ifname);
  const std::filesystem::path final_path = dir_ / address.to_string();
  const int linked = ::link(temporary.c_str(), final_path.c_str());
  const int err = errno;
  ::unlink(temporary.c_str());
  if (linked != 0) {
    if (err == EEXIST) return false;
    io_error("reserve " + final_path.string(), err);
  }
  const std::filesystem::path last = dir_ / (kLastReservedPrefix + std::to_string(range_set));
  const std::filesystem::path last_temporary = write_temporary(dir_, address.to_string());
  if (::rename(last_temporary.c_str(), last.c_str()) != 0) {
    const int rename_err = errno;
    ::unlink(last_temporary.c_str());
    io_error("write " + last.string(), rename_err);
  }
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
  for_each_entry(dir_, [&](const std::string& name) {
    const auto address = IpAddress::try_parse(name);
    if (!address) return;
    bool exists = false;
    const std::string content = trim(read_file(dir_ / name, &exists));
    if (!exists) return;
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
  for_each_entry(dir_, [&](const std::string& name) {
    if (name.rfind(kTemporaryPrefix, 0) == 0) ::unlink((dir_ / name).c_str());
  });
}

}  // namespace flatnet::cni
