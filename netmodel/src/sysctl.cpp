#include "flatnet/netmodel/sysctl.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <stdexcept>

#include "flatnet/netmodel/error.hpp"

namespace flatnet::netmodel {
namespace {

std::string describe(std::string_view key, const NetNs& ns) {
  return "sysctl " + std::string(key) + " in netns \"" + ns.path().string() + "\"";
}

}  // namespace

std::string sysctl_path(std::string_view key) {
  const bool ok_chars = std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.' || c == '/';
  });
  if (key.empty() || !ok_chars) {
    throw std::invalid_argument("invalid sysctl key \"" + std::string(key) + "\"");
  }
  // With slashes the key is a path already; with dots only, every dot separates two parts.
  std::string relative(key);
  if (relative.find('/') == std::string::npos)
    std::replace(relative.begin(), relative.end(), '.', '/');
  std::string_view rest = relative;
  while (!rest.empty()) {
    const auto slash = rest.find('/');
    const std::string_view part = rest.substr(0, slash);
    if (part.empty() || part == "." || part == "..") {
      throw std::invalid_argument("invalid sysctl key \"" + std::string(key) +
                                  "\": empty, \".\" or \"..\" component");
    }
    rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
  }
  return "/proc/sys/" + relative;
}

// Runs fn inside ns, or right here when ns is the calling thread's own namespace.
template <class F>
auto inside(const NetNs& ns, Enter how, F&& fn) {
  return ns.is_current() ? fn() : run_in(ns, std::forward<F>(fn), how);
}

std::string read_sysctl(const NetNs& ns, std::string_view key, Enter how) {
  const std::string path = sysctl_path(key);
  return inside(ns, how, [&] {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw_errno(errno, "read " + describe(key, ns));
    std::string value(4096, '\0');
    const ssize_t n = ::read(fd, value.data(), value.size());
    const int err = errno;
    ::close(fd);
    if (n < 0) throw_errno(err, "read " + describe(key, ns));
    value.resize(static_cast<std::size_t>(n));
    while (!value.empty() && value.back() == '\n')
      value.pop_back();
    return value;
  });
}

void write_sysctl(const NetNs& ns, std::string_view key, std::string_view value, Enter how) {
  const std::string path = sysctl_path(key);
  if (path.rfind("/proc/sys/net/", 0) != 0) {
    throw std::invalid_argument("refusing to write sysctl \"" + std::string(key) +
                                "\": only net.* keys belong to a network namespace");
  }
  inside(ns, how, [&] {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) throw_errno(errno, "write " + describe(key, ns));
    const ssize_t n = ::write(fd, value.data(), value.size());
    const int err = errno;
    ::close(fd);
    if (n < 0) throw_errno(err, "write " + describe(key, ns) + " = \"" + std::string(value) + "\"");
  });
}

}  // namespace flatnet::netmodel
