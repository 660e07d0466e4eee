#pragma once

// Errors from the kernel adapters. Each one is a std::system_error whose code is the errno and
// whose what() names the operation and the object: `open netns "/run/netns/x": No such file or
// directory`. Callers that handle "already exists" or "already gone" on purpose test code().

#include <cerrno>
#include <cstddef>
#include <string>
#include <string_view>
#include <system_error>

namespace flatnet::netmodel {

// The error for `operation` (which names its object) failing with `err` (an errno value).
inline std::system_error system_error(int err, const std::string& operation) {
  return std::system_error(err, std::generic_category(), operation);
}

[[noreturn]] inline void throw_errno(int err, const std::string& operation) {
  throw system_error(err, operation);
}

// The kernel lacks a feature that an operation needs (for example the dummy link type).
// code() is the kernel's answer (usually EOPNOTSUPP); what() says what is missing.
class KernelFeatureMissing : public std::system_error {
 public:
  KernelFeatureMissing(int err, const std::string& message)
      : std::system_error(err, std::generic_category(), message) {}
};

// `text` in double quotes for a message, control characters escaped as \xNN (a NUL would
// otherwise end the message, a newline break a log line).
std::string quote(std::string_view text);

// The Levenshtein distance between `a` and `b`: how messages find the field a user most likely
// misspelt ("did you mean hostnameOverride?").
std::size_t edit_distance(std::string_view a, std::string_view b);

inline bool is_errno(const std::system_error& e, int err) {
  return e.code() == std::error_code(err, std::generic_category());
}

}  // namespace flatnet::netmodel
