#include "flatnet/netmodel/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace flatnet::netmodel {
namespace {

struct Pipe {
  int read = -1, write = -1;
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      throw std::system_error(errno, std::generic_category(), "pipe");
    }
    read = fds[0];
    write = fds[1];
  }
  ~Pipe() {
    close_read();
    close_write();
  }
  void close_read() {
    if (read >= 0) ::close(read);
    read = -1;
  }
  void close_write() {
    if (write >= 0) ::close(write);
    write = -1;
  }
};

// What the child needs, prepared before it starts: it may not allocate.
struct ChildSpec {
  const char* program;
  char* const* argv;
  char* const* envp;
  int netns_fd;
  int stdin_fd, stdout_fd, stderr_fd;
  int status_fd;
};

// The child: only system calls until exec (it runs on the parent's memory). A failure is
// reported as an errno on status_fd (which exec closes on success).
[[noreturn]] __attribute__((noinline)) void run_child(const ChildSpec* spec) {
  int failed = 0;
  // The plugin starts with no signal blocked, whatever the calling thread had blocked.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (spec->netns_fd >= 0 && ::setns(spec->netns_fd, CLONE_NEWNET) != 0) failed = errno;
  if (!failed && (::dup2(spec->stdin_fd, 0) < 0 || ::dup2(spec->stdout_fd, 1) < 0 ||
                  ::dup2(spec->stderr_fd, 2) < 0)) {
    failed = errno;
  }
  if (!failed) {
    ::execve(spec->program, spec->argv, spec->envp);
    failed = errno;
  }
  [[maybe_unused]] ssize_t ignored = ::write(spec->status_fd, &failed, sizeof failed);
  ::_exit(127);
}

// vfork: the child borrows our memory until it execs, so starting it costs the same however
// big and busy (threads faulting pages in) the caller is; fork would copy the page tables.
__attribute__((noinline)) pid_t spawn(const ChildSpec& spec) {
  const ChildSpec* shared = &spec;
  const pid_t pid = ::vfork();
  if (pid == 0) run_child(shared);
  return pid;
}

}  // namespace

ProcessOutput run_program(const std::filesystem::path& program,
                          const std::map<std::string, std::string>& variables,
                          const std::string& input, const std::vector<std::string>& args,
                          const NetNs* netns) {
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : variables)
    env_strings.push_back(k + "=" + v);
  if (!variables.count("PATH")) {
    const char* path = ::getenv("PATH");
    env_strings.push_back(std::string("PATH=") + (path ? path : "/usr/sbin:/usr/bin:/sbin:/bin"));
  }
  std::vector<char*> envp;
  for (auto& s : env_strings)
    envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string program_text = program.string();
  std::vector<std::string> arg_strings = args;
  std::vector<char*> argv{program_text.data()};
  for (auto& a : arg_strings)
    argv.push_back(a.data());
  argv.push_back(nullptr);

  Pipe in, out, err, status_pipe;
  const ChildSpec spec{program_text.c_str(),
                       argv.data(),
                       envp.data(),
                       netns ? netns->fd() : -1,
                       in.read,
                       out.write,
                       err.write,
                       status_pipe.write};
  const pid_t pid = spawn(spec);
  if (pid < 0) {
    throw std::system_error(errno, std::generic_category(),
                            "cannot run " + program_text + ": vfork");
  }
  status_pipe.close_write();
  // Our end of the child's stdin must not block: a write that waits for the child to read while
  // the child waits for us to read its output would never end.
  ::fcntl(in.write, F_SETFL, ::fcntl(in.write, F_GETFL) | O_NONBLOCK);
  int child_errno = 0;
  const ssize_t got = ::read(status_pipe.read, &child_errno, sizeof child_errno);
  if (got == sizeof child_errno) {
    int ignored;
    ::waitpid(pid, &ignored, 0);
    throw std::system_error(
        child_errno, std::generic_category(),
        "cannot run " + program_text + (netns ? " in netns " + netns->path().string() : ""));
  }
  in.close_read();
  out.close_write();
  err.close_write();

  // A child that exits without reading all of its stdin makes our write fail with EPIPE; the
  // SIGPIPE that comes with it must not kill the caller. Block it on this thread while we write
  // and take back one that arrived, leaving the process's signal handling as it was.
  sigset_t pipe_only, old_mask;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  sigset_t pending_before;
  sigpending(&pending_before);
  const bool pipe_was_pending = sigismember(&pending_before, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, &old_mask);

  // Feed stdin and drain stdout and stderr together, so that neither side can block the other.
  ProcessOutput result;
  std::size_t written = 0;
  if (input.empty()) in.close_write();
  char buffer[8192];
  while (out.read >= 0 || err.read >= 0) {
    pollfd fds[3];
    int n = 0;
    int in_slot = -1, out_slot = -1, err_slot = -1;
    if (in.write >= 0) {
      in_slot = n;
      fds[n++] = {in.write, POLLOUT, 0};
    }
    if (out.read >= 0) {
      out_slot = n;
      fds[n++] = {out.read, POLLIN, 0};
    }
    if (err.read >= 0) {
      err_slot = n;
      fds[n++] = {err.read, POLLIN, 0};
    }
    if (::poll(fds, n, -1) < 0) {
      if (errno == EINTR) continue;
      break;  // the pipes are closed below, so the child cannot stay blocked on them
    }
    if (in_slot >= 0 && fds[in_slot].revents) {
      const ssize_t w = ::write(in.write, input.data() + written, input.size() - written);
      if (w > 0) written += static_cast<std::size_t>(w);
      const bool retry = w < 0 && (errno == EAGAIN || errno == EINTR);
      if ((w < 0 && !retry) || written == input.size()) in.close_write();
    }
    auto drain = [&](int slot, Pipe& pipe, std::string& into) {
      if (slot < 0 || !fds[slot].revents) return;
      const ssize_t r = ::read(pipe.read, buffer, sizeof buffer);
      if (r > 0) {
        into.append(buffer, static_cast<std::size_t>(r));
      } else if (r == 0 || errno != EINTR) {
        pipe.close_read();
      }
    };
    drain(out_slot, out, result.out);
    drain(err_slot, err, result.err);
  }
  in.close_write();
  out.close_read();
  err.close_read();
  sigset_t pending;
  sigpending(&pending);
  if (!pipe_was_pending && sigismember(&pending, SIGPIPE)) {
    const timespec zero{0, 0};
    sigtimedwait(&pipe_only, nullptr, &zero);
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);

  int status = 0;
  pid_t waited;
  while ((waited = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
  }
  if (waited < 0) {
    // ECHILD: the child was reaped behind our back (SIGCHLD ignored by whoever started us), so
    // its exit status is lost; success must not be assumed.
    throw std::system_error(errno, std::generic_category(),
                            "cannot learn how " + program_text + " ended");
  }
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

}  // namespace flatnet::netmodel
