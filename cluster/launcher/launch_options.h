// launch_options.h - pagewire-run's command line: parsing it into a
// LaunchOptions, and finding the program to run.
//
// Every bad input is an InvalidArgument/NotFound Status whose message names
// the problem and the fix; main() prints it and exits 2.
#ifndef PAGEWIRE_CLUSTER_LAUNCHER_LAUNCH_OPTIONS_H_
#define PAGEWIRE_CLUSTER_LAUNCHER_LAUNCH_OPTIONS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pagewire {
namespace launcher {

// Each rank costs the launcher two pipe descriptors and a process; beyond
// this a local launcher is the wrong tool (use a real process manager with
// the bootstrap environment, see README.md).
constexpr int kMaxRanks = 4096;

// The shutdown grace period when --grace-ms is not given: how long ranks get
// between SIGTERM and SIGKILL once the job is ending. It never decides
// whether a rank has failed.
constexpr int kDefaultGraceMs = 5000;

struct LaunchOptions {
  int nranks = 0;
  // Empty: no network namespaces. Otherwise rank i runs in <prefix><i>.
  std::string netns_prefix;
  // 0: pick a free port.
  int coordinator_port = 0;
  // Unset: a random secret per job.
  std::optional<std::string> secret;
  int grace_ms = kDefaultGraceMs;
  // --bind-to core: rank i and all its threads run on the i-th CPU
  // (modulo the count) of those the launcher may use, as `mpirun --bind-to
  // core` does; the runtime's service threads then share their rank's core.
  // false (--bind-to none, the default): the kernel places them.
  bool bind_to_core = false;
  // The program and its argv (argv[0] is the program as given).
  std::vector<std::string> argv;
  // --help was given: print Usage() and exit 0; nothing else is parsed.
  bool help = false;
};

// Parses the arguments after argv[0].
absl::StatusOr<LaunchOptions> ParseLaunchOptions(
    const std::vector<std::string>& args);

// The --help text.
std::string Usage();

// Checks that a namespace prefix is one netns-hosts.sh accepts (letters,
// digits, '_', '.', '-'; at most 32 characters).
absl::Status ValidateNetnsPrefix(const std::string& prefix);

// Finds `program` the way execvp would (a name without '/' is searched in
// `path_env`), and checks that it is an executable regular file. Returns the
// path to pass to execve.
absl::StatusOr<std::string> ResolveProgram(const std::string& program,
                                           const char* path_env);

}  // namespace launcher
}  // namespace pagewire

#endif  // PAGEWIRE_CLUSTER_LAUNCHER_LAUNCH_OPTIONS_H_
