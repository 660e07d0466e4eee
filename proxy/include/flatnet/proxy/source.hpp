#pragma once

// The Services and EndpointSlices a proxy follows (--source file:PATH): a JSON file that writers
// replace atomically (write a temporary file, rename it into place), as the emulator's endpoints
// controller does. The file's directory is watched with inotify, so a new version is read as soon
// as it is renamed into place (IN_MOVED_TO) or written in place (IN_CLOSE_WRITE); IN_CREATE and
// IN_DELETE track the name coming and going.
//
// A version that does not parse is rejected with one logged error and the last good objects stay
// in force. A file that does not exist yet is waited for (logged once); a file that disappears
// leaves the last objects in force too: the proxy never tears down rules because its input
// vanished.

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>

#include "flatnet/netmodel/service.hpp"

namespace flatnet::proxy {

class FileSource {
 public:
  struct Update {
    netmodel::ServiceObjects objects{};
    // When this version was read: the trigger time of changes whose EndpointSlices carry none.
    std::chrono::system_clock::time_point seen{};
  };

  // Starts watching. Throws std::system_error naming the directory when it cannot be watched
  // (it does not exist, or inotify is out of watches).
  explicit FileSource(std::filesystem::path path);
  ~FileSource();
  FileSource(const FileSource&) = delete;
  FileSource& operator=(const FileSource&) = delete;

  // Readable when inotify has events: poll it, then call next().
  int fd() const { return inotify_fd_; }
  const std::filesystem::path& path() const { return path_; }
  // A valid version has been read.
  bool has_objects() const { return last_text_.has_value(); }

  // Reads the file now (the first time, and after relevant events). Returns the objects when the
  // file holds a valid version that differs from the last one returned; nullopt when it is
  // missing, empty, malformed (logged) or unchanged.
  std::optional<Update> read();
  // Consumes pending inotify events without blocking; true when one concerned the file.
  bool drain_events();
  // drain_events(), and read() when an event concerned the file.
  std::optional<Update> next();

 private:
  std::filesystem::path path_;
  std::string name_;
  int inotify_fd_ = -1;
  std::optional<std::string> last_text_{};  // the last valid version returned
  std::string last_problem_{};              // logged once until the file changes again
};

}  // namespace flatnet::proxy
