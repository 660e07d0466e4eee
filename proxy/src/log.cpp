#include "flatnet/proxy/log.hpp"

#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <string>

namespace flatnet::proxy::log {
namespace {

std::atomic<int> current_verbosity{0};

void write_line(char severity, std::string_view component, std::string_view message) {
  timeval now{};
  gettimeofday(&now, nullptr);
  tm local{};
  localtime_r(&now.tv_sec, &local);
  char prefix[64];
  std::snprintf(prefix, sizeof prefix, "%c%02d%02d %02d:%02d:%02d.%06ld %7d ", severity,
                local.tm_mon + 1, local.tm_mday, local.tm_hour, local.tm_min, local.tm_sec,
                static_cast<long>(now.tv_usec), static_cast<int>(getpid()));
  std::string line = prefix;
  line += component;
  line += "] ";
  line += message;
  line += '\n';
  // One write: lines from several threads never interleave. A log that cannot be written is
  // dropped; there is nowhere to report it.
  [[maybe_unused]] const auto written = ::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace

void set_verbosity(int level) {
  current_verbosity.store(level);
}
int verbosity() {
  return current_verbosity.load();
}

void info(std::string_view component, std::string_view message) {
  write_line('I', component, message);
}
void info(int level, std::string_view component, std::string_view message) {
  if (level <= current_verbosity.load()) write_line('I', component, message);
}
void warning(std::string_view component, std::string_view message) {
  write_line('W', component, message);
}
void error(std::string_view component, std::string_view message) {
  write_line('E', component, message);
}

}  // namespace flatnet::proxy::log
