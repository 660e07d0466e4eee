// The CNI plugins as a user gets them: installed by `cmake --install` (into a staging DESTDIR,
// never onto this machine), asked for --help and --version, and driven through the example
// conflist of examples/cni/ by a libcni-like runtime, with the reference portmap plugin chained.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "flatnet/cni/exec.hpp"
#include "flatnet/cni/runtime.hpp"
#include "flatnet/netmodel/netlink.hpp"
#include "flatnet/testing/scratch_netns.hpp"
#include "flatnet/testing/traffic.hpp"

namespace flatnet::cni {
namespace {

namespace fs = std::filesystem;
using netmodel::IpAddress;
using netmodel::IpPrefix;
using ::testing::HasSubstr;

class InstalledPlugins : public testing::NetnsTest {
 protected:
  static void SetUpTestSuite() {
    stage_ = fs::path(::testing::TempDir()) / ("flatnet-e2e-stage-" + std::to_string(::getpid()));
    fs::remove_all(stage_);
    const std::string command = "DESTDIR=" + stage_.string() + " " CMAKE_COMMAND " --install " +
                                FLATNET_BUILD_DIR + " > " + stage_.string() + ".log 2>&1";
    install_status_ = std::system(command.c_str());
  }
  static void TearDownTestSuite() {
    fs::remove_all(stage_);
    fs::remove(stage_.string() + ".log");
  }
  void SetUp() override {
    NetnsTest::SetUp();
    ASSERT_EQ(install_status_, 0) << "cmake --install failed; see " << stage_ << ".log";
  }
  static fs::path bin(const std::string& name) { return stage_ / "usr/local/bin" / name; }
  static fs::path cni_dir() { return stage_ / "opt/cni/bin"; }

  static fs::path stage_;
  static int install_status_;
};

fs::path InstalledPlugins::stage_;
int InstalledPlugins::install_status_ = -1;

TEST_F(InstalledPlugins, LandInBinAndInTheCniDirectory) {
  for (const char* name : {"flatnet-cni", "flatnet-ipam"}) {
    EXPECT_EQ(::access(bin(name).c_str(), X_OK), 0) << bin(name);
    EXPECT_EQ(::access((cni_dir() / name).c_str(), X_OK), 0) << cni_dir() / name;
  }
}

TEST_F(InstalledPlugins, AnswerHelpVersionAndBadArguments) {
  for (const char* name : {"flatnet-cni", "flatnet-ipam"}) {
    const ExecOutput help = exec_program(bin(name), {}, "", {"--help"});
    EXPECT_EQ(help.status, 0);
    EXPECT_THAT(help.out, HasSubstr("CNI_COMMAND"));
    const ExecOutput version = exec_program(bin(name), {}, "", {"--version"});
    EXPECT_EQ(version.status, 0);
    EXPECT_THAT(version.out, HasSubstr("0.3.0 0.3.1 0.4.0 1.0.0 1.1.0"));
    const ExecOutput bad = exec_program(bin(name), {}, "", {"--frobnicate"});
    EXPECT_EQ(bad.status, 2);
    EXPECT_THAT(bad.err, HasSubstr("--frobnicate"));
    // Run with no CNI_COMMAND, as a person might: the about line and a spec error.
    const ExecOutput bare = exec_program(bin(name), {}, "");
    EXPECT_EQ(bare.status, 1);
    EXPECT_THAT(bare.err, HasSubstr(name));
    EXPECT_THAT(bare.out, HasSubstr("CNI_COMMAND"));
  }
}

TEST_F(InstalledPlugins, TheExampleConflistAttachesAPodEndToEnd) {
  NetworkConfigList list =
      load_network_config(FLATNET_SOURCE_DIR "/examples/cni/10-flatnet.conflist");
  // Keep the reservations out of /var/lib: the example's dataDir is the runtime default.
  const fs::path data_dir = stage_ / "ipam";
  list.plugins[0]["ipam"]["dataDir"] = data_dir.string();

  netmodel::NetNs& node = scratch_.add("e2enode");
  netmodel::NetNs& pod = scratch_.add("e2epod");
  const Runtime runtime({cni_dir().string(), REFERENCE_PLUGIN_DIR}, &node);
  Attachment attachment{.container_id = "e2e-pod-1",
                        .netns = pod.path(),
                        .ifname = "eth0",
                        .args = {{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "web"}}};
  attachment.capability_args["portMappings"] =
      nlohmann::json::array({{{"hostPort", 18080}, {"containerPort", 8080}, {"protocol", "tcp"}}});

  const nlohmann::json result = runtime.add(list, attachment);
  ASSERT_EQ(result["ips"].size(), 1u) << result.dump();
  const IpAddress pod_ip =
      IpPrefix::parse(result["ips"][0]["address"].get<std::string>()).address();
  EXPECT_TRUE(IpPrefix::parse("10.244.1.0/24").contains(pod_ip));
  // CHECK flatnet-cni alone: Debian's portmap 1.1.1 fails CHECK on every IPv4-only pod when
  // ip6tables exists ("could not check ipv6 dnat: chain ... not found"), a bug of its own.
  NetworkConfigList first_only = list;
  first_only.plugins.resize(1);
  try {
    runtime.check(first_only, attachment, result);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "CHECK: " << e.what();
  }

  // The node reaches the pod directly, without NAT.
  auto listener = testing::listen_tcp(pod, pod_ip, 8080);
  const auto direct = testing::tcp_exchange(node, listener, pod_ip, 8080, "hello");
  EXPECT_TRUE(direct.ok) << direct.error;
  EXPECT_EQ(direct.seen_client, IpAddress::parse("10.244.1.1"));

  runtime.del(list, attachment, result);
  EXPECT_FALSE(netmodel::Netlink::open(pod).find_link("eth0"));
  EXPECT_NO_THROW(runtime.del(list, attachment, result)) << "a second DEL succeeds";
}

}  // namespace
}  // namespace flatnet::cni
