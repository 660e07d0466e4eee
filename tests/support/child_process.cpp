#include "flatnet/testing/child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>
#include <utility>

#include "flatnet/netmodel/error.hpp"

namespace flatnet::testing {

ChildProcess ChildProcess::start(const netmodel::NetNs& ns, std::vector<std::string> argv,
                                 bool ready_fd, std::chrono::milliseconds timeout) {
  ChildProcess p;
  p.log_ = ::memfd_create("child-log", MFD_CLOEXEC);
  if (p.log_ < 0) netmodel::throw_errno(errno, "memfd_create");
  int ready[2] = {-1, -1};
  if (ready_fd && ::pipe2(ready, O_CLOEXEC) != 0) netmodel::throw_errno(errno, "pipe2");
  std::vector<char*> args;
  for (auto& a : argv)
    args.push_back(a.data());
  args.push_back(nullptr);

  p.pid_ = ::fork();
  if (p.pid_ < 0) netmodel::throw_errno(errno, "fork");
  if (p.pid_ == 0) {
    // Only async-signal-safe calls until exec: the test process has threads.
    if (::setns(ns.fd(), CLONE_NEWNET) != 0) ::_exit(126);
    if (ready_fd) {
      if (ready[1] == 3) {
        ::fcntl(3, F_SETFD, 0);
      } else if (::dup2(ready[1], 3) < 0) {
        ::_exit(126);
      }
    }
    ::dup2(p.log_, 1);
    ::dup2(p.log_, 2);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  if (!ready_fd) return p;
  ::close(ready[1]);
  std::string answer;
  pollfd fd{ready[0], POLLIN, 0};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || ::poll(&fd, 1, static_cast<int>(left.count())) != 1) break;
    char buffer[16];
    const ssize_t n = ::read(ready[0], buffer, sizeof buffer);
    if (n <= 0) break;
    answer.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(ready[0]);
  p.ready_ = answer == "ready\n";
  return p;
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      log_(std::exchange(other.log_, -1)),
      ready_(other.ready_),
      status_(other.status_) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    kill_and_reap();
    if (log_ >= 0) ::close(log_);
    pid_ = std::exchange(other.pid_, -1);
    log_ = std::exchange(other.log_, -1);
    ready_ = other.ready_;
    status_ = other.status_;
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  kill_and_reap();
  if (log_ >= 0) ::close(log_);
}

void ChildProcess::kill_and_reap() noexcept {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  pid_ = -1;
}

bool ChildProcess::running() {
  if (pid_ <= 0 || status_) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  return true;
}

std::string ChildProcess::log() const {
  std::string text;
  char buffer[4096];
  off_t offset = 0;
  ssize_t n;
  while (log_ >= 0 && (n = ::pread(log_, buffer, sizeof buffer, offset)) > 0) {
    text.append(buffer, static_cast<std::size_t>(n));
    offset += n;
  }
  return text;
}

std::optional<int> ChildProcess::wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return status_;
}

std::optional<int> ChildProcess::stop(int signal, std::chrono::milliseconds timeout) {
  if (running()) ::kill(pid_, signal);
  auto status = wait(timeout);
  if (!status) kill_and_reap();
  return status;
}

}  // namespace flatnet::testing
