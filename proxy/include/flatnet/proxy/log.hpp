#pragma once

// The daemon's log: klog's line format, which operators of kube-proxy read every day:
// "I1127 17:32:05.123456   4242 proxier] synced 120 services in 14ms". Severity I, W or E; info
// lines carry a verbosity level and print only when it is at most the -v setting. Written to
// stderr, one write per line so that threads do not interleave.

#include <string_view>

namespace flatnet::proxy::log {

void set_verbosity(int level);
int verbosity();

void info(std::string_view component, std::string_view message);
// Printed only with -v level or more.
void info(int level, std::string_view component, std::string_view message);
void warning(std::string_view component, std::string_view message);
void error(std::string_view component, std::string_view message);

}  // namespace flatnet::proxy::log
