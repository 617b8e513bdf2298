// launcher.h - pagewire-run's engine: starts N ranks of a program, relays
// their output line by line, and ends the job cleanly when a rank fails or
// the launcher is interrupted.
//
// One thread, one event loop: poll(2) with no timeout over the ranks' output
// pipes, a signalfd (SIGCHLD, SIGINT, SIGTERM) and, once the job is ending, a
// timerfd for the shutdown grace period. Nothing is decided by a clock except
// when a rank that was asked to stop is finally killed.
//
// Job end, in order: a rank dies (non-zero exit or a signal) -> report it
// (and tell the coordinator, the process manager's word that it is dead) ->
// SIGTERM every other running rank -> after the grace period, SIGKILL the
// ones still running -> reap all -> exit with the first failure's status.
// Each rank leads its own process group and is signalled as a group, so its
// helper processes end with it. Ranks get PR_SET_PDEATHSIG=SIGKILL, so they
// do not outlive a launcher that is itself killed.
#ifndef PAGEWIRE_CLUSTER_LAUNCHER_LAUNCHER_H_
#define PAGEWIRE_CLUSTER_LAUNCHER_LAUNCHER_H_

#include <signal.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cluster/launcher/bootstrap_env.h"
#include "cluster/launcher/exit_reporter.h"
#include "cluster/launcher/launch_options.h"
#include "cluster/launcher/line_prefixer.h"
#include "cluster/launcher/unique_fd.h"

namespace pagewire {
namespace launcher {

// pagewire-run's own exit statuses (a rank's status is passed through).
constexpr int kExitUsage = 2;
constexpr int kExitLauncherFailure = 125;
constexpr int kExitCannotStart = 127;  // as a shell reports exec failure

// "exited with status 3", "killed by signal 9 (Killed)".
std::string DescribeWaitStatus(int wait_status);
// The status a shell would report: the exit code, or 128 + the signal.
int ShellStatus(int wait_status);

// Not thread-safe; construct and Run() on one thread, once per process
// (it owns the process's SIGCHLD/SIGINT/SIGTERM handling while it runs).
class Launcher {
 public:
  // `program_path` is the resolved executable (ResolveProgram);
  // options.argv is the argv the ranks see.
  Launcher(LaunchOptions options, std::string program_path);
  Launcher(const Launcher&) = delete;
  Launcher& operator=(const Launcher&) = delete;

  // Starts the ranks and returns once every rank has been reaped, with the
  // status pagewire-run should exit with.
  int Run();

 private:
  // Reads bounded to this much per wake-up and stream, so one chatty rank
  // cannot starve the others; a pipe holds 64 KiB by default.
  static constexpr size_t kReadChunk = 64 * 1024;

  struct Stream {
    Stream(int rank, int dest) : prefixer("[" + std::to_string(rank) + "] "),
                                 dest_fd(dest) {}
    UniqueFd fd;  // read end of the rank's pipe; invalid once at EOF
    LinePrefixer prefixer;
    int dest_fd;  // the launcher's stdout or stderr
  };

  struct Rank {
    explicit Rank(int index) : index(index), out(index, 1), err(index, 2) {}
    int index;
    pid_t pid = -1;
    bool running = false;
    bool start_failed = false;  // already reported as "could not start"
    int signalled_with = 0;     // last signal the launcher sent it
    Stream out;
    Stream err;
  };

  // Signals, file-descriptor limit, bootstrap environment, namespaces.
  absl::Status Setup();
  void StartRank(Rank& rank);
  void PollOnce();
  void ReadStream(Stream& stream);
  void DrainAndClose(Stream& stream);
  void HandleSignals();
  void ReapChildren();
  void OnRankExit(Rank& rank, int wait_status);
  // Ends the job: `sig` to every running rank, SIGKILL after the grace
  // period. `why` is printed first.
  void BeginShutdown(int sig, const std::string& why);
  void KillRemaining(const std::string& why);
  void SignalRank(Rank& rank, int sig);
  void RecordFailure(int status);
  int RunningCount() const;
  // Launcher failure after ranks may have started: SIGKILL and reap them.
  int Abort(const std::string& message);

  void Say(const std::string& line);  // "pagewire-run: <line>" on stderr
  void Write(int fd, const std::string& data);

  const LaunchOptions options_;
  const std::string program_path_;
  BootstrapEnv env_;
  control::TlsFiles tls_;  // PAGEWIRE_TLS_*: for the exit reporter
  std::vector<UniqueFd> netns_fds_;  // one per rank with --netns
  std::vector<int> bind_cpus_;       // --bind-to core: the usable CPUs
  std::vector<Rank> ranks_;
  UniqueFd signal_fd_;
  UniqueFd timer_fd_;
  UniqueFd dev_null_;
  sigset_t original_mask_;
  struct sigaction original_sigpipe_;
  rlimit original_fd_limit_;
  bool fd_limit_raised_ = false;
  bool shutting_down_ = false;
  bool timer_armed_ = false;
  bool have_failure_ = false;
  int exit_status_ = 0;
  std::array<bool, 3> broken_fd_{};  // writes to fd 1/2 failed (EPIPE)
  std::array<char, kReadChunk> buffer_;
  // Tells the coordinator of ranks that ended badly; made at the first
  // such end, once every rank is forked. Not with --netns: the coordinator
  // listens in rank 0's namespace, out of the launcher's reach.
  std::unique_ptr<ExitReporter> exit_reporter_;
};

}  // namespace launcher
}  // namespace pagewire

#endif  // PAGEWIRE_CLUSTER_LAUNCHER_LAUNCHER_H_
