#pragma once

// A program started inside a namespace for a test, as the emulator starts workloads (fork, setns,
// exec). Its stdout and stderr go to an in-memory log the test can print when it fails. The
// destructor kills (SIGKILL) and reaps it unless it was already waited for, so no test leaves a
// process behind, whatever it asserted.

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "flatnet/netmodel/netns.hpp"

namespace flatnet::testing {

class ChildProcess {
 public:
  // Starts argv[0] (an absolute path) with `argv` inside `ns`. With `ready_fd`, descriptor 3 is a
  // pipe and start() waits up to `timeout` for the program to write "ready\n" to it (the protocol
  // of flatnet-netexec's --ready-fd 3, which the caller puts in argv); ready() says whether it
  // did. Throws std::system_error when fork or pipe fails.
  static ChildProcess start(const netmodel::NetNs& ns, std::vector<std::string> argv,
                            bool ready_fd = false,
                            std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

  ChildProcess() = default;
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  bool ready() const { return ready_; }
  // Still running (not exited, not yet reaped).
  bool running();
  // What it wrote to stdout and stderr so far.
  std::string log() const;
  // Sends `signal` and waits up to `timeout` for it to exit: its exit status, 128 + the signal
  // that ended it, or nullopt when it is still running (it is then killed and reaped).
  std::optional<int> stop(int signal,
                          std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
  // Waits up to `timeout` for it to exit by itself; the same result as stop().
  std::optional<int> wait(std::chrono::milliseconds timeout);

 private:
  void kill_and_reap() noexcept;

  pid_t pid_ = -1;
  int log_ = -1;
  bool ready_ = false;
  std::optional<int> status_{};
};

}  // namespace flatnet::testing
