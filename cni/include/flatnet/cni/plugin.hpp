#pragma once

// The skeleton every flatnet plugin main() calls: it reads the environment and stdin, checks
// the version rules of the spec (CHECK needs 0.4.0 or later, STATUS and GC 1.1.0), dispatches
// to the plugin, and prints the result or the error JSON the spec describes.

#include <string>

#include "flatnet/cni/environment.hpp"
#include "flatnet/cni/netconf.hpp"
#include "flatnet/cni/types.hpp"

namespace flatnet::cni {

struct Request {
  Environment env;
  NetConf conf;
};

class Plugin {
 public:
  virtual ~Plugin() = default;
  virtual Result add(const Request& request) = 0;
  virtual void del(const Request& request) = 0;
  virtual void check(const Request& request) = 0;
  virtual void status(const Request& request) = 0;
  virtual void gc(const Request& request) = 0;
};

// The process's side of one command. Plain strings, not streams: constructing a C++ stream
// builds the classic locale, which costs a plugin that lives for one command a third of its
// startup.
struct PluginIo {
  Getenv getenv;
  std::string input;  // all of stdin
  std::string* out;
  std::string* err;
};

// Runs one command and returns the process exit status (0 on success, 1 after printing an
// error). `about` is printed to stderr when CNI_COMMAND is missing, as the reference plugins do.
int run_plugin(Plugin& plugin, const PluginIo& io, const std::string& about);

// What a plugin's main() calls: `--help` and `--version` answer a person at a terminal; without
// arguments the plugin runs as a runtime executes it (run_plugin on the process's environment,
// stdin, stdout and stderr).
int plugin_main(int argc, char** argv, Plugin& plugin, const std::string& about,
                const std::string& help);

}  // namespace flatnet::cni
