#include "flatnet/emulator/workload.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <thread>

#include "flatnet/netmodel/error.hpp"

namespace flatnet::emulator {

namespace {

// The last lines of a log, for an error message.
std::string log_tail(const std::filesystem::path& log, std::size_t max_lines = 5) {
  std::ifstream in(log);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
    if (lines.size() > max_lines) lines.erase(lines.begin());
  }
  std::string text;
  for (const auto& line : lines)
    text += (text.empty() ? "" : " | ") + line;
  return text;
}

void reap_if_child(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, WNOHANG);
}

}  // namespace

std::vector<std::string> workload_command(const std::string& netexec, const PodRecord& pod) {
  std::vector<std::string> argv = {netexec, "--hostname", pod.id.name};
  for (const auto& port : pod.ports) {
    argv.push_back("--port");
    argv.push_back(std::to_string(port.container_port) + "/" +
                   (port.protocol == netmodel::Protocol::udp ? "udp" : "tcp"));
  }
  argv.push_back("--ready-fd");
  argv.push_back("3");
  return argv;
}

ProcessRef start_workload(const netmodel::NetNs& ns, const PodRecord& pod,
                          const std::string& netexec, const std::filesystem::path& log,
                          std::chrono::milliseconds timeout) {
  const std::vector<std::string> args = workload_command(netexec, pod);
  std::vector<char*> argv;
  for (const auto& arg : args)
    argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);

  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) netmodel::throw_errno(errno, "create a pipe");
  const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    const int err = errno;
    ::close(ready[0]);
    ::close(ready[1]);
    netmodel::throw_errno(err, "open " + netmodel::quote(log.string()));
  }
  sigset_t none;
  sigemptyset(&none);
  // vfork: the child borrows our memory until it execs (see cni/src/exec.cpp).
  const pid_t pid = ::vfork();
  if (pid < 0) {
    const int err = errno;
    ::close(ready[0]);
    ::close(ready[1]);
    ::close(log_fd);
    netmodel::throw_errno(err, "start the workload of pod " + pod.key());
  }
  if (pid == 0) {
    // The child: only system calls until exec, as a container runtime's child does them.
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (::setns(ns.fd(), CLONE_NEWNET) != 0) {
      // Said on the readiness pipe, which the parent shows in its error.
      static constexpr char kSetnsFailed[] = "setns into the pod's namespace failed\n";
      [[maybe_unused]] ssize_t ignored = ::write(ready[1], kSetnsFailed, sizeof kSetnsFailed - 1);
      ::_exit(126);
    }
    const int null = ::open("/dev/null", O_RDONLY);
    if (null < 0 || ::dup2(null, 0) < 0 || ::dup2(log_fd, 1) < 0 || ::dup2(log_fd, 2) < 0 ||
        ::dup2(ready[1], 3) < 0) {
      ::_exit(126);
    }
    ::syscall(SYS_close_range, 4u, ~0u, 0u);
    ::setsid();
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(ready[1]);
  ::close(log_fd);

  ProcessRef process{pid, 0};
  // Wait for "ready\n", or EOF when it exits first.
  std::string answer;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool exited = false;
  while (answer.find('\n') == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd fd{ready[0], POLLIN, 0};
    const int n = ::poll(&fd, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    char buffer[64];
    const ssize_t got = ::read(ready[0], buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      exited = true;
      break;
    }
    answer.append(buffer, static_cast<std::size_t>(got));
  }
  ::close(ready[0]);
  if (auto start = process_start_time(pid)) process.start_time = *start;
  if (answer.rfind("ready", 0) == 0 && process.start_time) return process;

  const std::string why = !answer.empty() && answer.rfind("ready", 0) != 0
                              ? "could not start: " + answer.substr(0, answer.find('\n'))
                              : (exited ? "exited before it was ready" : "was not ready in time");
  if (!exited) {
    ::kill(pid, SIGKILL);
  }
  ::waitpid(pid, nullptr, 0);
  const std::string tail = log_tail(log);
  throw std::runtime_error("workload " + args[0] + " " + why +
                           (tail.empty() ? "" : " (its log: " + tail + ")"));
}

std::vector<ProcessRef> processes_in(const std::vector<std::string>& netns_names) {
  // nsfs files: a namespace is one (device, inode) pair wherever it is seen from.
  constexpr unsigned long kNsfsMagic = 0x6e736673;
  std::set<std::pair<dev_t, ino_t>> wanted;
  for (const auto& name : netns_names) {
    const auto path = netmodel::NetNs::path_of(name);
    struct statfs fs_info {};
    struct stat info {};
    if (::statfs(path.c_str(), &fs_info) != 0 ||
        static_cast<unsigned long>(fs_info.f_type) != kNsfsMagic) {
      continue;  // not mounted: a placeholder left by a crash, or gone
    }
    if (::stat(path.c_str(), &info) == 0) wanted.insert({info.st_dev, info.st_ino});
  }
  std::vector<ProcessRef> found;
  if (wanted.empty()) return found;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string pid_text = entry.path().filename().string();
    if (pid_text.empty() || !std::all_of(pid_text.begin(), pid_text.end(), ::isdigit)) continue;
    struct stat info {};
    if (::stat((entry.path() / "ns" / "net").c_str(), &info) != 0) continue;
    if (!wanted.count({info.st_dev, info.st_ino})) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid == ::getpid()) continue;
    if (auto start = process_start_time(pid)) found.push_back({pid, *start});
  }
  return found;
}

std::size_t terminate_all(const std::vector<ProcessRef>& processes,
                          std::chrono::milliseconds grace) {
  std::vector<ProcessRef> running;
  for (const auto& process : processes) {
    if (process.pid > 0 && process.alive()) running.push_back(process);
  }
  for (const auto& process : running)
    ::kill(process.pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  std::vector<ProcessRef> left = running;
  while (!left.empty()) {
    std::vector<ProcessRef> still;
    for (const auto& process : left) {
      reap_if_child(process.pid);
      if (process.alive()) still.push_back(process);
    }
    left = std::move(still);
    if (left.empty() || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (const auto& process : left) {
    ::kill(process.pid, SIGKILL);
    reap_if_child(process.pid);
  }
  // A killed child of ours is reaped once the kernel has finished it.
  for (const auto& process : left) {
    for (int i = 0; i < 100 && process.alive(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      reap_if_child(process.pid);
    }
  }
  return running.size();
}

void terminate_workload(const ProcessRef& process, std::chrono::milliseconds grace) {
  terminate_all({process}, grace);
}

}  // namespace flatnet::emulator
