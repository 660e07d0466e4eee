#include "flatnet/proxy/iptables/runner.hpp"

#include <unistd.h>

#include <algorithm>
#include <ext/pb_ds/assoc_container.hpp>
#include <ext/pb_ds/tree_policy.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <unordered_set>

#include "flatnet/netmodel/process.hpp"

namespace flatnet::proxy::iptables {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> search_dirs() {
  std::vector<std::string> dirs = {"/usr/sbin", "/sbin", "/usr/bin", "/bin"};
  if (const char* path = ::getenv("PATH"); path != nullptr) {
    std::string all = path;
    std::size_t start = 0;
    while (start <= all.size()) {
      const auto end = all.find(':', start);
      const auto dir =
          all.substr(start, end == std::string::npos ? std::string::npos : end - start);
      if (!dir.empty()) dirs.push_back(dir);
      if (end == std::string::npos) break;
      start = end + 1;
    }
  }
  return dirs;
}

std::optional<fs::path> find_binary(const std::string& name) {
  for (const auto& dir : search_dirs()) {
    const fs::path candidate = fs::path(dir) / name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

fs::path require_binary(const std::string& name) {
  if (auto found = find_binary(name)) return *found;
  throw std::runtime_error("cannot find " + name +
                           " in /usr/sbin, /sbin or PATH (install Debian's iptables package)");
}

class ExecIptables final : public Iptables {
 public:
  explicit ExecIptables(IptablesBackend backend)
      : backend_(backend == IptablesBackend::legacy ? "legacy" : "nft"),
        iptables_(require_binary("iptables-" + backend_)),
        restore_(require_binary("iptables-" + backend_ + "-restore")),
        save_(require_binary("iptables-" + backend_ + "-save")) {
    if (const char* path = ::getenv("PATH"); path != nullptr) environment_["PATH"] = path;
  }

  std::string backend() const override { return backend_; }

  CommandResult restore(const std::string& text) override {
    if (backend_ != "nft") return execute(restore_, {"--noflush", "--wait"}, text);
    std::vector<std::size_t> inserted;
    const auto input = with_full_table_cache(text, kNftFullCacheSteps, inserted);
    auto result = execute(restore_, {"--noflush", "--wait"}, input);
    if (!inserted.empty() && !result.ok() &&
        result.error.find("incompatible") != std::string::npos) {
      // iptables-nft refuses to list a table holding what it cannot show ("table `nat' is
      // incompatible"); the restore itself only touches our chains: run it as written.
      return execute(restore_, {"--noflush", "--wait"}, text);
    }
    result.output.clear();  // the listing "-S" printed
    result.error = renumber_lines(result.error, inserted);
    return result;
  }
  CommandResult save(const std::string& table) override {
    return execute(save_, {"-t", table}, "");
  }
  CommandResult run(const std::vector<std::string>& args) override {
    std::vector<std::string> all = {"--wait"};
    all.insert(all.end(), args.begin(), args.end());
    return execute(iptables_, all, "");
  }

 private:
  CommandResult execute(const fs::path& program, const std::vector<std::string>& args,
                        const std::string& input) {
    try {
      const auto out = netmodel::run_program(program, environment_, input, args);
      return {out.status, out.out, out.err};
    } catch (const std::exception& e) {
      return {127, "", e.what()};
    }
  }

  std::string backend_;
  fs::path iptables_, restore_, save_;
  std::map<std::string, std::string> environment_;
};

// Splits a restore line into words as iptables-restore does: blanks separate them, double quotes
// group (a backslash escapes the next character inside them).
void split_words(std::string_view line, std::vector<std::string_view>& words) {
  words.clear();
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t'))
      ++i;
    if (i == line.size()) break;
    const std::size_t start = i;
    bool quoted = false;
    for (; i < line.size(); ++i) {
      const char c = line[i];
      if (quoted && c == '\\' && i + 1 < line.size()) {
        ++i;
      } else if (c == '"') {
        quoted = !quoted;
      } else if (!quoted && (c == ' ' || c == '\t')) {
        break;
      }
    }
    words.push_back(line.substr(start, i - start));
  }
}

// Commands whose next word, when it is not an option, is a chain.
bool names_chain(std::string_view word) {
  constexpr std::string_view kCommands[] = {"-A",
                                            "-I",
                                            "-D",
                                            "-R",
                                            "-C",
                                            "-N",
                                            "-X",
                                            "-F",
                                            "-Z",
                                            "-E",
                                            "-P",
                                            "-L",
                                            "-S",
                                            "--append",
                                            "--insert",
                                            "--delete",
                                            "--replace",
                                            "--check",
                                            "--new-chain",
                                            "--delete-chain",
                                            "--flush",
                                            "--zero",
                                            "--rename-chain",
                                            "--policy",
                                            "--list",
                                            "--list-rules"};
  return std::find(std::begin(kCommands), std::end(kCommands), word) != std::end(kCommands);
}

// Verdicts and target extensions are words of capitals, digits and '_' (ACCEPT, DNAT, MARK);
// anything else after -j is a chain, as is a chain the block declares.
bool looks_like_chain(std::string_view target,
                      const std::unordered_set<std::string_view>& declared) {
  if (declared.contains(target)) return true;
  return std::any_of(target.begin(), target.end(), [](char c) {
    return !((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_');
  });
}

// The built-in chains of the tables iptables-nft knows; none for another name.
std::vector<std::string_view> builtin_chains(std::string_view table) {
  if (table == "filter") return {"INPUT", "FORWARD", "OUTPUT"};
  if (table == "nat") return {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"};
  if (table == "mangle") return {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"};
  if (table == "raw") return {"PREROUTING", "OUTPUT"};
  if (table == "security") return {"INPUT", "FORWARD", "OUTPUT"};
  return {};
}

template <typename F>
void for_each_line(std::string_view text, F&& f) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    f(text.substr(pos, end - pos));
    pos = end + 1;
  }
}

bool legacy_table_exists(const std::string& table) {
  // /proc/thread-self: the namespace of the calling thread, which is where the binaries run.
  std::ifstream names("/proc/thread-self/net/ip_tables_names");
  std::string name;
  while (std::getline(names, name)) {
    if (name == table) return true;
  }
  return false;
}

// How much of Kubernetes a backend's tables already hold: chains kubelet and kube-proxy leave
// as markers count most, then every rule.
long long presence(const std::string& backend) {
  const auto save = find_binary("iptables-" + backend + "-save");
  if (!save) return -1;
  long long score = 0;
  for (const char* table : {"mangle", "nat", "filter"}) {
    // Asking the legacy backend for a table makes the kernel create it in this namespace: ask
    // only for those that exist.
    if (backend == "legacy" && !legacy_table_exists(table)) continue;
    try {
      const auto out = netmodel::run_program(*save, {}, "", {"-t", table});
      if (out.status != 0) continue;
      for (std::size_t pos = 0; pos < out.out.size();) {
        const auto end = out.out.find('\n', pos);
        const std::string_view line(out.out.data() + pos,
                                    (end == std::string::npos ? out.out.size() : end) - pos);
        if (line.starts_with(":KUBE-IPTABLES-HINT") || line.starts_with(":KUBE-KUBELET-CANARY") ||
            line.starts_with(":KUBE-PROXY-CANARY")) {
          score += 1'000'000;
        } else if (line.starts_with("-A ")) {
          ++score;
        }
        if (end == std::string::npos) break;
        pos = end + 1;
      }
    } catch (const std::exception&) {
      // A backend that cannot be run holds nothing.
    }
  }
  return score;
}

}  // namespace

std::uint64_t nft_chain_list_steps(std::string_view block, std::uint64_t stop_above) {
  // Chains the block declares: their lines come first, as iptables-save writes them.
  std::unordered_set<std::string_view> declared;
  for_each_line(block, [&](std::string_view line) {
    if (line.starts_with(':')) declared.insert(line.substr(1, line.find(' ') - 1));
  });

  // The list, as an order-statistics tree: a lookup walks past the names in it that sort before
  // its own.
  __gnu_pbds::tree<std::string_view, __gnu_pbds::null_type, std::less<>, __gnu_pbds::rb_tree_tag,
                   __gnu_pbds::tree_order_statistics_node_update>
      list;
  std::uint64_t steps = 0;
  auto look_up = [&](std::string_view name) {
    steps += list.order_of_key(name) + 1;
    list.insert(name);
  };
  std::vector<std::string_view> words;
  for_each_line(block, [&](std::string_view line) {
    if (steps > stop_above) return;
    if (line.starts_with(':')) {
      look_up(line.substr(1, line.find(' ') - 1));
      return;
    }
    if (!line.starts_with('-')) return;
    // The command and its chain lead the line; the jump target follows the last " -j " or
    // " -g " (a target's own options never contain one).
    split_words(line.substr(0, line.find(" -", 3)), words);
    if (words.size() >= 2 && names_chain(words[0]) && !words[1].starts_with('-')) {
      look_up(words[1]);
      if (words[0] == "-E" || words[0] == "--rename-chain") {
        split_words(line, words);
        if (words.size() >= 3) look_up(words[2]);
      }
    }
    auto jump = line.rfind(" -j ");
    if (const auto go = line.rfind(" -g ");
        go != std::string_view::npos && (jump == std::string_view::npos || go > jump)) {
      jump = go;
    }
    if (jump == std::string_view::npos) return;
    auto target = line.substr(jump + 4);
    target = target.substr(0, target.find(' '));
    if (!target.empty() && looks_like_chain(target, declared)) look_up(target);
  });
  return steps;
}

std::string with_full_table_cache(std::string_view text, std::uint64_t threshold,
                                  std::vector<std::size_t>& inserted) {
  inserted.clear();
  // Where lines go, in `text`, and their text.
  std::vector<std::pair<std::size_t, std::string>> insertions;
  std::size_t line_number = 0;  // in the returned text
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const auto line = text.substr(pos, end - pos);
    ++line_number;
    pos = std::min(end + 1, text.size());
    if (!line.starts_with('*')) continue;
    const auto builtins = builtin_chains(line.substr(1));
    if (builtins.empty()) continue;
    // The block runs to its COMMIT line (or the end of the text).
    const auto commit = text.find("\nCOMMIT", end);
    const auto block =
        text.substr(pos, commit == std::string_view::npos ? std::string_view::npos
                                                          : std::max(commit + 1, pos) - pos);
    if (nft_chain_list_steps(block, threshold) <= threshold) continue;
    // The listing shows built-in chains that do not exist yet as if they did, and a later rule
    // for one then fails (ENOENT): declare them first. "-" keeps a policy, and a built-in chain
    // line flushes nothing, even without --noflush.
    std::string added;
    for (const auto chain : builtins) {
      added.append(":").append(chain).append(" - [0:0]\n");
      inserted.push_back(++line_number);
    }
    added.append("-S\n");
    inserted.push_back(++line_number);
    insertions.emplace_back(pos, std::move(added));
  }
  if (insertions.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size() + 64 * insertions.size());
  std::size_t from = 0;
  for (const auto& [offset, added] : insertions) {
    out.append(text.substr(from, offset - from));
    if (!out.empty() && out.back() != '\n') out.push_back('\n');
    out.append(added);
    from = offset;
  }
  out.append(text.substr(from));
  return out;
}

std::string renumber_lines(std::string_view error, const std::vector<std::size_t>& inserted) {
  if (inserted.empty()) return std::string(error);
  std::string out;
  std::size_t pos = 0;
  while (pos < error.size()) {
    const auto found = error.find("line", pos);
    if (found == std::string_view::npos) break;
    std::size_t digits = found + 4;
    if (digits < error.size() && error[digits] == ':') ++digits;
    while (digits < error.size() && error[digits] == ' ')
      ++digits;
    std::size_t end = digits;
    while (end < error.size() && error[end] >= '0' && error[end] <= '9')
      ++end;
    out.append(error.substr(pos, digits - pos));
    if (end > digits && end - digits < 10) {
      const std::size_t number = std::stoul(std::string(error.substr(digits, end - digits)));
      const auto added = static_cast<std::size_t>(
          std::upper_bound(inserted.begin(), inserted.end(), number) - inserted.begin());
      out.append(std::to_string(number - added));
    } else {
      out.append(error.substr(digits, end - digits));
    }
    pos = end;
  }
  out.append(error.substr(pos));
  return out;
}

IptablesBackend system_default_backend() {
  std::error_code ec;
  const auto target = fs::canonical(find_binary("iptables").value_or("/usr/sbin/iptables"), ec);
  if (!ec && target.filename().string().find("legacy") != std::string::npos) {
    return IptablesBackend::legacy;
  }
  return IptablesBackend::nft;
}

std::unique_ptr<Iptables> make_iptables(IptablesBackend backend) {
  if (backend == IptablesBackend::automatic) {
    const auto legacy = presence("legacy");
    const auto nft = presence("nft");
    if (legacy > 0 && legacy > nft) {
      backend = IptablesBackend::legacy;
    } else if (nft > 0) {
      backend = IptablesBackend::nft;
    } else {
      backend = system_default_backend();
    }
  }
  return std::make_unique<ExecIptables>(backend);
}

}  // namespace flatnet::proxy::iptables
