// Running other programs as a runtime runs plugins: what comes back, and the signal edge cases
// that must not turn a failure into a crash or into success.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include "flatnet/cni/error.hpp"
#include "flatnet/cni/exec.hpp"

namespace flatnet::cni {
namespace {

using ::testing::HasSubstr;

TEST(Exec, PassesStdinAndTheGivenEnvironmentAndCollectsBothOutputs) {
  const ExecOutput out = exec_program("/bin/sh", {{"GREETING", "hello"}}, "from stdin",
                                      {"-c", "cat; echo \" $GREETING\"; echo oops >&2; exit 3"});
  EXPECT_EQ(out.status, 3);
  EXPECT_EQ(out.out, "from stdin hello\n");
  EXPECT_EQ(out.err, "oops\n");
}

TEST(Exec, AChildThatIgnoresALargeStdinDoesNotKillTheCaller) {
  // The child exits at once; writing 4 MiB to its stdin meets EPIPE (and SIGPIPE).
  const std::string big(4 << 20, 'x');
  const ExecOutput out = exec_program("/bin/true", {}, big);
  EXPECT_EQ(out.status, 0);
  sigset_t pending;
  sigpending(&pending);
  EXPECT_FALSE(sigismember(&pending, SIGPIPE)) << "no SIGPIPE left pending for the caller";
}

TEST(Exec, ALargeOutputDoesNotDeadlock) {
  const ExecOutput out = exec_program("/bin/sh", {}, std::string(1 << 20, 'y'),
                                      {"-c", "cat; head -c 1000000 /dev/zero >&2"});
  EXPECT_EQ(out.status, 0);
  EXPECT_EQ(out.out.size(), 1u << 20);
  EXPECT_EQ(out.err.size(), 1000000u);
}

TEST(Exec, AnUnknownExitIsAnErrorNotSuccess) {
  // With SIGCHLD ignored the kernel reaps children itself: their status is lost.
  struct sigaction ignore {
  }, old{};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGCHLD, &ignore, &old);
  try {
    exec_program("/bin/false", {}, "");
    ADD_FAILURE() << "a lost exit status was taken for success";
  } catch (const CniError& e) {
    EXPECT_THAT(e.what(), HasSubstr("cannot learn how /bin/false ended"));
  }
  sigaction(SIGCHLD, &old, nullptr);
}

TEST(Exec, AMissingProgramIsAClearError) {
  try {
    exec_program("/nonexistent/plugin", {}, "");
    FAIL();
  } catch (const CniError& e) {
    EXPECT_EQ(e.code(), ErrorCode::plugin_failure);
    EXPECT_THAT(e.what(), HasSubstr("cannot run /nonexistent/plugin"));
  }
  try {
    find_plugin("no-such-plugin", {"/nonexistent", "/tmp"});
    FAIL();
  } catch (const CniError& e) {
    EXPECT_THAT(e.what(), HasSubstr("\"no-such-plugin\" in CNI_PATH \"/nonexistent:/tmp\""));
  }
}

TEST(Exec, DelegatedPluginsSeeTheRuntimesEnvironmentWithFreshCniVariables) {
  ::setenv("FLATNET_TEST_INHERITED", "yes", 1);
  ::setenv("CNI_COMMAND", "STALE", 1);
  const auto vars = environment_with({{"CNI_COMMAND", "ADD"}, {"CNI_PATH", "/opt/cni/bin"}});
  ::unsetenv("FLATNET_TEST_INHERITED");
  ::unsetenv("CNI_COMMAND");
  EXPECT_EQ(vars.at("FLATNET_TEST_INHERITED"), "yes");
  EXPECT_EQ(vars.at("CNI_COMMAND"), "ADD");
  EXPECT_EQ(vars.count("CNI_NETNS"), 0u);
}

}  // namespace
}  // namespace flatnet::cni
