// flatnet-proxy: parse the flags, set up logging, make the proxier, run the daemon.

#include <iostream>

#include "flatnet/proxy/config.hpp"
#include "flatnet/proxy/daemon.hpp"
#include "flatnet/proxy/iptables/proxier.hpp"
#include "flatnet/proxy/log.hpp"

int main(int argc, char** argv) {
  using namespace flatnet::proxy;
  block_stop_signals();
  CommandLine command_line;
  try {
    command_line = parse_command_line(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const ConfigError& e) {
    std::cerr << "flatnet-proxy: " << e.what() << "\n";
    return 1;
  }
  if (command_line.action == CommandLine::Action::help) {
    std::cout << usage();
    return 0;
  }
  if (command_line.action == CommandLine::Action::version) {
    std::cout << version_text() << "\n";
    return 0;
  }
  const ProxyConfig& config = command_line.config;
  log::set_verbosity(config.verbosity);
  for (const auto& warning : command_line.warnings)
    log::warning("config", warning);
  if (config.mode == ProxyMode::userspace) {
    std::cerr << "flatnet-proxy: --proxy-mode: userspace is not built yet; use iptables\n";
    return 1;
  }
  std::unique_ptr<Proxier> proxier;
  try {
    proxier = iptables::make_proxier(config);
  } catch (const std::exception& e) {
    log::error("daemon", e.what());
    return 1;
  }
  if (config.cleanup) return run_cleanup(*proxier);
  Daemon daemon(config, std::move(proxier));
  return daemon.run();
}
