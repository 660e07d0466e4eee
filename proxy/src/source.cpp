#include "flatnet/proxy/source.hpp"

#include <fcntl.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "flatnet/netmodel/error.hpp"
#include "flatnet/proxy/log.hpp"

namespace flatnet::proxy {
namespace {

constexpr std::string_view kComponent = "source";

bool blank(std::string_view text) {
  return text.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

}  // namespace

FileSource::FileSource(std::filesystem::path path) : path_(std::move(path)) {
  if (path_.filename().empty()) {
    throw std::invalid_argument("source " + netmodel::quote(path_.string()) + " names no file");
  }
  name_ = path_.filename().string();
  std::filesystem::path directory = path_.parent_path();
  if (directory.empty()) directory = ".";
  inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd_ < 0) netmodel::throw_errno(errno, "inotify_init1");
  const std::uint32_t mask = IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM;
  if (::inotify_add_watch(inotify_fd_, directory.c_str(), mask | IN_ONLYDIR) < 0) {
    const int err = errno;
    ::close(inotify_fd_);
    netmodel::throw_errno(err, "watch directory " + netmodel::quote(directory.string()) +
                                   " of source " + netmodel::quote(path_.string()));
  }
}

FileSource::~FileSource() {
  if (inotify_fd_ >= 0) ::close(inotify_fd_);
}

std::optional<FileSource::Update> FileSource::read() {
  const auto seen = std::chrono::system_clock::now();
  const auto problem_once = [&](const std::string& problem, bool is_error) {
    if (problem == last_problem_) return;
    last_problem_ = problem;
    if (is_error) {
      log::error(kComponent, problem);
    } else {
      log::info(kComponent, problem);
    }
  };
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) {
      problem_once(last_text_ ? path_.string() +
                                    " was removed: keeping the last objects until it "
                                    "is back"
                              : "waiting for " + path_.string() + " to appear",
                   last_text_.has_value());
    } else {
      problem_once("read " + netmodel::quote(path_.string()) + ": " + std::strerror(err), true);
    }
    return std::nullopt;
  }
  std::string text;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      problem_once("read " + netmodel::quote(path_.string()) + ": " + std::strerror(err), true);
      return std::nullopt;
    }
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  if (last_text_ && text == *last_text_) {
    last_problem_.clear();  // back to the good version: the same bad one again is news again
    return std::nullopt;
  }
  if (blank(text)) {
    // A writer that truncates and then writes shows an empty file first: its IN_CLOSE_WRITE
    // brings the content.
    log::info(2, kComponent, path_.string() + " is empty: waiting for content");
    return std::nullopt;
  }
  Update update;
  update.seen = seen;
  try {
    update.objects = netmodel::parse_service_objects(text);
  } catch (const std::exception& e) {
    problem_once(path_.string() + ": rejected this version, keeping " +
                     (last_text_ ? "the last good objects" : "no objects") + ": " + e.what(),
                 true);
    return std::nullopt;
  }
  last_problem_.clear();
  last_text_ = std::move(text);
  log::info(2, kComponent,
            "read " + path_.string() + ": " + std::to_string(update.objects.services.size()) +
                " services, " + std::to_string(update.objects.endpoint_slices.size()) +
                " endpoint slices");
  for (const auto& skipped : update.objects.skipped)
    log::info(4, kComponent, "skipped " + skipped);
  return update;
}

bool FileSource::drain_events() {
  alignas(inotify_event) char buffer[8192];
  bool relevant = false;
  for (;;) {
    const ssize_t n = ::read(inotify_fd_, buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        log::error(kComponent, "read inotify events: " + std::string(std::strerror(errno)));
      }
      return relevant;
    }
    if (n == 0) return relevant;
    for (ssize_t offset = 0; offset < n;) {
      const auto* event = reinterpret_cast<const inotify_event*>(buffer + offset);
      offset += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
      // Lost events: read the file to be sure.
      if (event->mask & IN_Q_OVERFLOW) relevant = true;
      if (event->len > 0 && name_ == event->name) relevant = true;
    }
  }
}

std::optional<FileSource::Update> FileSource::next() {
  if (!drain_events()) return std::nullopt;
  return read();
}

}  // namespace flatnet::proxy
