#include "flatnet/cni/plugin.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "flatnet/cni/error.hpp"
#include "flatnet/cni/version.hpp"

namespace flatnet::cni {
namespace {

using nlohmann::json;

// The cniVersion of the input if it names a supported one, for the error JSON; else the latest.
std::string version_for_errors(const std::string& input) {
  const json j = json::parse(input, nullptr, false);
  if (j.is_object() && j.contains("cniVersion") && j["cniVersion"].is_string()) {
    const auto v = j["cniVersion"].get<std::string>();
    if (is_supported_version(v)) return v;
  }
  return std::string(kLatestVersion);
}

void require_version(const NetConf& conf, Command command, std::string_view minimum) {
  if (compare_versions(conf.cni_version, minimum) < 0) {
    throw CniError(ErrorCode::incompatible_version,
                   std::string(to_string(command)) + " needs cniVersion " + std::string(minimum) +
                       " or later; the configuration says " + conf.cni_version,
                   conf.cni_version);
  }
}

// Messages quote what the runtime passed (CNI_CONTAINERID, CNI_IFNAME, stdin), which need not be
// UTF-8: a strict dump would throw from the error path and print nothing, so invalid bytes
// become U+FFFD.
std::string dump_error(const CniError& e, const std::string& version) {
  return e.to_json(version).dump(2, ' ', false, json::error_handler_t::replace);
}

}  // namespace

int run_plugin(Plugin& plugin, const PluginIo& io, const std::string& about) {
  const std::string& input = io.input;
  const std::string error_version = version_for_errors(input);
  try {
    if (!io.getenv("CNI_COMMAND")) *io.err += about + "\n";
    Environment env = parse_environment(io.getenv);
    if (env.command == Command::version) {
      json versions = json::array();
      for (auto v : kSupportedVersions)
        versions.push_back(std::string(v));
      *io.out += json{{"cniVersion", error_version}, {"supportedVersions", versions}}.dump() + "\n";
      return 0;
    }
    Request request{std::move(env), parse_netconf(input)};
    switch (request.env.command) {
      case Command::add: {
        const Result result = plugin.add(request);
        *io.out += to_json(result, request.conf.cni_version).dump(2) + "\n";
        return 0;
      }
      case Command::del:
        plugin.del(request);
        return 0;
      case Command::check:
        require_version(request.conf, Command::check, "0.4.0");
        plugin.check(request);
        return 0;
      case Command::status:
        require_version(request.conf, Command::status, "1.1.0");
        plugin.status(request);
        return 0;
      case Command::gc:
        require_version(request.conf, Command::gc, "1.1.0");
        plugin.gc(request);
        return 0;
      case Command::version:
        break;
    }
    return 0;
  } catch (const CniError& e) {
    *io.out += dump_error(e, error_version) + "\n";
  } catch (const std::exception& e) {
    *io.out += dump_error(CniError(ErrorCode::plugin_failure, e.what()), error_version) + "\n";
  }
  return 1;
}

namespace {

// Writes all of `text` to `fd` (retrying short writes); errors are ignored, there is no one to
// tell.
void write_all(int fd, const std::string& text) {
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

std::string read_all(int fd) {
  std::string text;
  char buffer[16384];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return text;
    text.append(buffer, static_cast<std::size_t>(n));
  }
}

}  // namespace

int plugin_main(int argc, char** argv, Plugin& plugin, const std::string& about,
                const std::string& help) {
  if (argc > 1) {
    const std::string arg = argv[1];
    if (arg == "--help" || arg == "-h") {
      write_all(1, about + "\n\n" + help);
      return 0;
    }
    if (arg == "--version") {
      std::string text = about + "\nCNI spec versions:";
      for (auto v : kSupportedVersions)
        text += " " + std::string(v);
      write_all(1, text + "\n");
      return 0;
    }
    write_all(2, std::string(argv[0]) + ": unexpected argument \"" + arg +
                     "\"; a CNI plugin reads CNI_* variables and its configuration on stdin "
                     "(see --help)\n");
    return 2;
  }
  // Whatever the runtime left us: SIGCHLD ignored would make the kernel reap our children before
  // we can read how they ended (a failed IPAM plugin would look like success).
  ::signal(SIGCHLD, SIG_DFL);
  std::string out, err;
  const int status = run_plugin(
      plugin, {[](const char* name) { return ::getenv(name); }, read_all(0), &out, &err}, about);
  write_all(2, err);
  write_all(1, out);
  return status;
}

}  // namespace flatnet::cni
