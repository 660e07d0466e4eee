// flatnet-proxy as an operator gets it: installed by `cmake --install` (into a staging DESTDIR,
// never onto this machine) and run as a program: its help, its errors for bad flags and bad
// configuration files, and a run from a KubeProxyConfiguration file in a node namespace.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "flatnet/netmodel/netns.hpp"
#include "flatnet/testing/child_process.hpp"
#include "flatnet/testing/scratch_netns.hpp"

namespace flatnet {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::ChildProcess;
using ::testing::HasSubstr;

class StagedProxy : public ::testing::Environment {
 public:
  void SetUp() override {
    stage_ = fs::path(::testing::TempDir()) / ("flatnet-e2e-proxy-" + std::to_string(::getpid()));
    fs::remove_all(stage_);
    fs::create_directories(stage_);
    auto install = ChildProcess::start(netmodel::NetNs::current(),
                                       {CMAKE_COMMAND, "-E", "env", "DESTDIR=" + stage_.string(),
                                        CMAKE_COMMAND, "--install", FLATNET_BUILD_DIR});
    const auto status = install.wait(120s);
    if (status != 0) problem_ = "cmake --install failed: " + install.log();
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(stage_, ec);
  }
  static std::string proxy() { return (stage_ / "usr/local/bin/flatnet-proxy").string(); }
  static const fs::path& dir() { return stage_; }
  static const std::string& problem() { return problem_; }

 private:
  static fs::path stage_;
  static std::string problem_;
};

fs::path StagedProxy::stage_;
std::string StagedProxy::problem_;
::testing::Environment* const kStaged = ::testing::AddGlobalTestEnvironment(new StagedProxy);

struct Run {
  int status = -1;
  std::string output;  // stdout and stderr
};

Run run_proxy(std::vector<std::string> args) {
  args.insert(args.begin(), StagedProxy::proxy());
  auto child = ChildProcess::start(netmodel::NetNs::current(), args);
  const auto status = child.wait(20s);
  return {status.value_or(-1), child.log()};
}

fs::path write_file(const std::string& name, const std::string& text) {
  const auto path = StagedProxy::dir() / name;
  std::ofstream(path) << text;
  return path;
}

TEST(ProxyCli, HelpNamesEveryFlagOperatorsExpect) {
  ASSERT_EQ(StagedProxy::problem(), "");
  const auto help = run_proxy({"--help"});
  EXPECT_EQ(help.status, 0);
  for (const char* flag :
       {"--proxy-mode", "--source", "--hostname-override", "--cluster-cidr", "--masquerade-all",
        "--nodeport-addresses", "--iptables-sync-period", "--iptables-min-sync-period",
        "--healthz-bind-address", "--metrics-bind-address", "--config", "--cleanup", "-v"}) {
    EXPECT_THAT(help.output, HasSubstr(flag));
  }
  const auto version = run_proxy({"--version"});
  EXPECT_EQ(version.status, 0);
  EXPECT_THAT(version.output, HasSubstr("flatnet-proxy " FLATNET_VERSION));
}

struct BadInput {
  const char* name;
  std::vector<std::string> args;
  const char* message;  // a part of the one-line error
};

class ProxyCliErrors : public ::testing::TestWithParam<BadInput> {};

TEST_P(ProxyCliErrors, SayWhatIsWrongAndExitOne) {
  ASSERT_EQ(StagedProxy::problem(), "");
  const auto& input = GetParam();
  const auto result = run_proxy(input.args);
  EXPECT_EQ(result.status, 1) << result.output;
  EXPECT_THAT(result.output, HasSubstr(input.message));
  EXPECT_THAT(result.output, ::testing::StartsWith("flatnet-proxy: "));
}

INSTANTIATE_TEST_SUITE_P(
    Flags, ProxyCliErrors,
    ::testing::Values(
        BadInput{"no_source", {}, "--source is required"},
        BadInput{"ipvs", {"--source", "file:/x", "--proxy-mode", "ipvs"}, "\"ipvs\""},
        BadInput{"source_scheme", {"--source", "http://x"}, "--source"},
        BadInput{"cidr", {"--source", "file:/x", "--cluster-cidr", "10.0.0.0/33"}, "10.0.0.0/33"},
        BadInput{"duration",
                 {"--source", "file:/x", "--iptables-sync-period", "5x"},
                 "--iptables-sync-period"},
        BadInput{"mark_bit",
                 {"--source", "file:/x", "--iptables-masquerade-bit", "40"},
                 "--iptables-masquerade-bit"},
        BadInput{"bind",
                 {"--source", "file:/x", "--healthz-bind-address", "nowhere:1"},
                 "--healthz-bind-address"},
        BadInput{"unknown_flag", {"--source", "file:/x", "--ipvs-scheduler", "rr"}, "ipvs"},
        BadInput{"backend", {"--source", "file:/x", "--iptables-backend", "ebpf"}, "ebpf"},
        BadInput{"missing_config", {"--config", "/nonexistent/proxy.yaml"}, "proxy.yaml"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ProxyCli, AConfigFileErrorNamesTheLineColumnAndField) {
  ASSERT_EQ(StagedProxy::problem(), "");
  const auto file = write_file("bad.yaml",
                               "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n"
                               "kind: KubeProxyConfiguration\n"
                               "iptables:\n"
                               "  masqueradeBit: 40\n");
  const auto result = run_proxy({"--config", file.string(), "--source", "file:/x"});
  EXPECT_EQ(result.status, 1);
  EXPECT_THAT(result.output, HasSubstr("bad.yaml:4:"));
  EXPECT_THAT(result.output, HasSubstr("masqueradeBit"));
  EXPECT_THAT(result.output, HasSubstr("40"));
}

class ProxyRun : public testing::NetnsTest {};

TEST_F(ProxyRun, RunsFromAConfigFileStopsOnSigtermAndCleansUp) {
  ASSERT_EQ(StagedProxy::problem(), "");
  auto& node = scratch_.add("node");
  const auto services = write_file("services.json", R"({"apiVersion": "v1", "kind": "List",
    "items": [{"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "web", "namespace": "default"},
               "spec": {"clusterIP": "10.96.0.10",
                        "ports": [{"protocol": "TCP", "port": 80, "targetPort": 8080}]}}]})");
  const auto config = write_file("proxy.yaml",
                                 "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n"
                                 "kind: KubeProxyConfiguration\n"
                                 "hostnameOverride: node-1\n"
                                 "clusterCIDR: 10.244.0.0/16\n"
                                 "healthzBindAddress: 127.0.0.1:10256\n"
                                 "iptables:\n"
                                 "  minSyncPeriod: 0s\n"
                                 "  syncPeriod: 10s\n");
  auto proxy = ChildProcess::start(node, {StagedProxy::proxy(), "--config", config.string(),
                                          "--source", "file:" + services.string(), "-v", "2"});
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (proxy.log().find("full sync") == std::string::npos && proxy.running() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_THAT(proxy.log(), HasSubstr("full sync")) << proxy.log();
  EXPECT_THAT(proxy.log(), HasSubstr("on node node-1"));

  auto save = ChildProcess::start(node, {"/usr/sbin/iptables-save"});
  ASSERT_EQ(save.wait(10s), 0);
  EXPECT_THAT(save.log(), HasSubstr("default/web has no endpoints"));  // the REJECT rule

  EXPECT_EQ(proxy.stop(SIGTERM), 0) << proxy.log();
  EXPECT_THAT(proxy.log(), HasSubstr("the rules stay in place"));
  auto cleanup = ChildProcess::start(node, {StagedProxy::proxy(), "--cleanup"});
  EXPECT_EQ(cleanup.wait(20s), 0) << cleanup.log();
  auto after = ChildProcess::start(node, {"/usr/sbin/iptables-save"});
  ASSERT_EQ(after.wait(10s), 0);
  EXPECT_THAT(after.log(), ::testing::Not(HasSubstr("KUBE-")));
  // Twice is safe.
  auto again = ChildProcess::start(node, {StagedProxy::proxy(), "--cleanup"});
  EXPECT_EQ(again.wait(20s), 0) << again.log();
}

}  // namespace
}  // namespace flatnet
