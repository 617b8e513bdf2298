// launcher.cc - fork/exec of the ranks and the event loop that relays their
// output and ends the job.
#include "cluster/launcher/launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

extern char** environ;

namespace pagewire {
namespace launcher {
namespace {

// Descriptors the launcher holds per rank: two output pipes, a namespace
// handle, and transiently two more pipes while it starts a rank. The rest is
// headroom for the signalfd, timerfd, /dev/null and the standard streams.
constexpr rlim_t kFdsPerRank = 5;
constexpr rlim_t kFdHeadroom = 64;

// What a child reports through its close-on-exec pipe when it cannot exec.
struct StartError {
  int step;  // index into kStartSteps
  int err;   // errno
};
constexpr const char* kStartSteps[] = {"setns into its network namespace",
                                       "set up its standard streams",
                                       "execve",
                                       "bind to its CPU (--bind-to core)"};
constexpr int kStepSetns = 0;
constexpr int kStepDup = 1;
constexpr int kStepExec = 2;
constexpr int kStepBind = 3;

std::string SignalName(int sig) {
  const char* name = ::strsignal(sig);
  return name != nullptr ? name : "unknown signal";
}

std::string SignalAbbrev(int sig) {
  switch (sig) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGKILL:
      return "SIGKILL";
    default:
      return absl::StrCat("signal ", sig);
  }
}

void ChildFail(int fd, int step) {
  StartError e{step, errno};
  // Nothing more a child could do if this write failed; the parent then
  // sees an exit status of 127 without the detail.
  ssize_t ignored = ::write(fd, &e, sizeof e);
  (void)ignored;
  ::_exit(kExitCannotStart);
}

}  // namespace

std::string DescribeWaitStatus(int wait_status) {
  if (WIFEXITED(wait_status)) {
    return absl::StrFormat("exited with status %d", WEXITSTATUS(wait_status));
  }
  if (WIFSIGNALED(wait_status)) {
    int sig = WTERMSIG(wait_status);
    return absl::StrFormat("killed by signal %d (%s)%s", sig, SignalName(sig),
                           WCOREDUMP(wait_status) ? " (core dumped)" : "");
  }
  return absl::StrFormat("ended with wait status 0x%x", wait_status);
}

int ShellStatus(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return kExitLauncherFailure;
}

Launcher::Launcher(LaunchOptions options, std::string program_path)
    : options_(std::move(options)), program_path_(std::move(program_path)) {
  ranks_.reserve(options_.nranks);
  for (int i = 0; i < options_.nranks; ++i) ranks_.emplace_back(i);
}

absl::Status Launcher::Setup() {
  const int n = options_.nranks;

  // Enough descriptors for every rank's pipes.
  rlimit lim;
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    rlim_t need = kFdsPerRank * static_cast<rlim_t>(n) + kFdHeadroom;
    if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < need) {
      rlimit raised = lim;
      raised.rlim_cur = (lim.rlim_max == RLIM_INFINITY || lim.rlim_max >= need)
                            ? need
                            : lim.rlim_max;
      if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
        original_fd_limit_ = lim;
        fd_limit_raised_ = true;
      }
      if (raised.rlim_cur < need) {
        return absl::ResourceExhaustedError(absl::StrFormat(
            "-n %d needs %d open files but the hard limit is %d; raise it "
            "(ulimit -Hn) or use fewer ranks",
            n, static_cast<long long>(need),
            static_cast<long long>(lim.rlim_max)));
      }
    }
  }

  // --bind-to core: the CPUs this launcher may use, in order.
  if (options_.bind_to_core) {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (::sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
      return absl::InternalError(absl::StrFormat(
          "--bind-to core: sched_getaffinity: %s; run without --bind-to",
          std::strerror(errno)));
    }
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &allowed)) bind_cpus_.push_back(cpu);
    }
    if (bind_cpus_.size() < static_cast<size_t>(n)) {
      Say(absl::StrFormat(
          "--bind-to core: %d ranks on %d usable CPUs; ranks share cores "
          "round robin",
          n, bind_cpus_.size()));
    }
  }

  // Bootstrap environment.
  env_.nranks = n;
  auto cluster_id = RandomHex(kClusterIdBytes);
  if (!cluster_id.ok()) return cluster_id.status();
  env_.cluster_id = *cluster_id;
  if (options_.secret) {
    env_.secret = *options_.secret;
  } else {
    auto secret = RandomHex(kSecretBytes);
    if (!secret.ok()) return secret.status();
    env_.secret = *secret;
  }
  // The ranks read the same variables; a bad set fails here, before any
  // rank starts.
  auto tls = control::TlsFiles::FromEnvironment();
  if (!tls.ok()) return tls.status();
  tls_ = *std::move(tls);
  if (options_.netns_prefix.empty()) {
    env_.hosts.assign(n, "127.0.0.1");
  } else {
    const std::string& prefix = options_.netns_prefix;
    auto hosts = ReadNetnsHosts(
        absl::StrCat(kNetnsHostsDir, "/", prefix, ".hosts"), prefix, n);
    if (!hosts.ok()) return hosts.status();
    env_.hosts = *std::move(hosts);
    for (int i = 0; i < n; ++i) {
      auto fd = OpenNetns(absl::StrCat(prefix, i), prefix, n);
      if (!fd.ok()) return fd.status();
      netns_fds_.push_back(*std::move(fd));
    }
  }
  int port = options_.coordinator_port;
  if (port == 0) {
    static const UniqueFd kNoNetns;
    auto picked = PickFreePort(env_.hosts[0], netns_fds_.empty()
                                                  ? kNoNetns
                                                  : netns_fds_[0]);
    if (!picked.ok()) return picked.status();
    port = *picked;
  }
  env_.coordinator = absl::StrCat(env_.hosts[0], ":", port);

  dev_null_.Reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!dev_null_.valid()) {
    return absl::InternalError(
        absl::StrFormat("open /dev/null: %s", std::strerror(errno)));
  }

  // Signals arrive through the signalfd only; a write to a closed stdout is
  // an EPIPE error, not a signal that kills the launcher.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  if (::sigprocmask(SIG_BLOCK, &mask, &original_mask_) != 0) {
    return absl::InternalError(
        absl::StrFormat("sigprocmask: %s", std::strerror(errno)));
  }
  signal_fd_.Reset(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd_.valid()) {
    return absl::InternalError(
        absl::StrFormat("signalfd: %s", std::strerror(errno)));
  }
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ignore, &original_sigpipe_);

  timer_fd_.Reset(
      ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer_fd_.valid()) {
    return absl::InternalError(
        absl::StrFormat("timerfd_create: %s", std::strerror(errno)));
  }
  return absl::OkStatus();
}

int Launcher::Run() {
  if (absl::Status s = Setup(); !s.ok()) {
    Say(std::string(s.message()));
    return absl::IsInternal(s) ? kExitLauncherFailure : kExitUsage;
  }
  for (Rank& rank : ranks_) {
    if (shutting_down_) break;  // an earlier rank could not start
    StartRank(rank);
  }
  netns_fds_.clear();
  while (RunningCount() > 0) PollOnce();
  return exit_status_;
}

void Launcher::StartRank(Rank& rank) {
  // Everything the child needs is built before fork(): between fork and
  // exec it only makes system calls.
  std::vector<std::string> env = env_.EnvironmentFor(rank.index, environ);
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = options_.argv;
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int netns_fd =
      netns_fds_.empty() ? -1 : netns_fds_[rank.index].get();
  cpu_set_t bind_set;
  CPU_ZERO(&bind_set);
  if (!bind_cpus_.empty()) {
    CPU_SET(bind_cpus_[rank.index % bind_cpus_.size()], &bind_set);
  }

  int out[2], err[2], status_pipe[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    RecordFailure(kExitLauncherFailure);
    BeginShutdown(SIGTERM, absl::StrFormat("cannot start rank %d: pipe: %s",
                                           rank.index, std::strerror(errno)));
    return;
  }
  UniqueFd out_r(out[0]), out_w(out[1]);
  if (::pipe2(err, O_CLOEXEC) != 0) {
    RecordFailure(kExitLauncherFailure);
    BeginShutdown(SIGTERM, absl::StrFormat("cannot start rank %d: pipe: %s",
                                           rank.index, std::strerror(errno)));
    return;
  }
  UniqueFd err_r(err[0]), err_w(err[1]);
  if (::pipe2(status_pipe, O_CLOEXEC) != 0) {
    RecordFailure(kExitLauncherFailure);
    BeginShutdown(SIGTERM, absl::StrFormat("cannot start rank %d: pipe: %s",
                                           rank.index, std::strerror(errno)));
    return;
  }
  UniqueFd status_r(status_pipe[0]), status_w(status_pipe[1]);

  const pid_t launcher_pid = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    RecordFailure(kExitLauncherFailure);
    BeginShutdown(SIGTERM, absl::StrFormat("cannot start rank %d: fork: %s",
                                           rank.index, std::strerror(errno)));
    return;
  }
  if (pid == 0) {
    // Child. Its own process group, so the launcher can signal the rank
    // with its helpers, and terminal signals reach ranks only through the
    // launcher, once.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != launcher_pid) ::_exit(kExitCannotStart);
    ::sigaction(SIGPIPE, &original_sigpipe_, nullptr);
    ::sigprocmask(SIG_SETMASK, &original_mask_, nullptr);
    // The raised descriptor limit was for the launcher, not the program.
    if (fd_limit_raised_) ::setrlimit(RLIMIT_NOFILE, &original_fd_limit_);
    if (netns_fd >= 0 && ::setns(netns_fd, CLONE_NEWNET) != 0) {
      ChildFail(status_w.get(), kStepSetns);
    }
    if (!bind_cpus_.empty() &&
        ::sched_setaffinity(0, sizeof(bind_set), &bind_set) != 0) {
      ChildFail(status_w.get(), kStepBind);
    }
    if (::dup2(dev_null_.get(), 0) < 0 || ::dup2(out_w.get(), 1) < 0 ||
        ::dup2(err_w.get(), 2) < 0) {
      ChildFail(status_w.get(), kStepDup);
    }
    ::execve(program_path_.c_str(), argv.data(), envp.data());
    ChildFail(status_w.get(), kStepExec);
  }

  // Parent. Also set the group here, so a signal sent before the child ran
  // setpgid still reaches it.
  ::setpgid(pid, pid);
  rank.pid = pid;
  rank.running = true;
  out_w.Reset();
  err_w.Reset();
  status_w.Reset();
  ::fcntl(out_r.get(), F_SETFL, O_NONBLOCK);
  ::fcntl(err_r.get(), F_SETFL, O_NONBLOCK);
  rank.out.fd = std::move(out_r);
  rank.err.fd = std::move(err_r);

  // EOF: the exec succeeded (the pipe was close-on-exec). A record: it
  // failed, and the child exits 127.
  StartError e{};
  ssize_t got;
  do {
    got = ::read(status_r.get(), &e, sizeof e);
  } while (got < 0 && errno == EINTR);
  if (got == static_cast<ssize_t>(sizeof e)) {
    rank.start_failed = true;
    RecordFailure(kExitCannotStart);
    BeginShutdown(
        SIGTERM,
        absl::StrFormat("rank %d (pid %d) could not start: %s %s: %s",
                        rank.index, pid, kStartSteps[e.step],
                        e.step == kStepSetns
                            ? absl::StrCat(kNetnsDir, "/",
                                           options_.netns_prefix, rank.index)
                        : e.step == kStepBind
                            ? absl::StrCat(
                                  "CPU ",
                                  bind_cpus_[rank.index % bind_cpus_.size()])
                            : program_path_,
                        std::strerror(e.err)));
  }
}

int Launcher::RunningCount() const {
  int running = 0;
  for (const Rank& rank : ranks_) running += rank.running ? 1 : 0;
  return running;
}

void Launcher::PollOnce() {
  std::vector<pollfd> fds;
  std::vector<Stream*> streams;
  fds.push_back({signal_fd_.get(), POLLIN, 0});
  fds.push_back({timer_armed_ ? timer_fd_.get() : -1, POLLIN, 0});
  for (Rank& rank : ranks_) {
    for (Stream* s : {&rank.out, &rank.err}) {
      if (!s->fd.valid()) continue;
      fds.push_back({s->fd.get(), POLLIN, 0});
      streams.push_back(s);
    }
  }
  // No timeout: every event that matters (output, a child's death, a
  // signal, the end of the grace period) wakes this poll.
  if (::poll(fds.data(), fds.size(), -1) < 0) {
    if (errno == EINTR) return;
    exit_status_ = Abort(absl::StrFormat("poll: %s", std::strerror(errno)));
    return;
  }
  // Output first: what a rank wrote before dying is printed before the
  // report of its death.
  for (size_t i = 0; i < streams.size(); ++i) {
    if (fds[i + 2].revents != 0) ReadStream(*streams[i]);
  }
  if (fds[1].revents != 0) {
    uint64_t expirations;
    ssize_t ignored = ::read(timer_fd_.get(), &expirations, sizeof expirations);
    (void)ignored;
    timer_armed_ = false;
    KillRemaining(absl::StrFormat("%d ms after SIGTERM", options_.grace_ms));
  }
  if (fds[0].revents != 0) HandleSignals();
}

void Launcher::ReadStream(Stream& stream) {
  if (!stream.fd.valid()) return;  // closed by Write() below, for a peer
  ssize_t n = ::read(stream.fd.get(), buffer_.data(), buffer_.size());
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  std::string lines;
  if (n > 0) {
    stream.prefixer.Append(absl::string_view(buffer_.data(), n), &lines);
  } else {  // EOF, or a read error that ends the stream all the same
    stream.prefixer.Finish(&lines);
    stream.fd.Reset();
  }
  Write(stream.dest_fd, lines);
}

void Launcher::DrainAndClose(Stream& stream) {
  if (!stream.fd.valid()) return;
  // Read what the rank wrote before it died, and no more: a helper process
  // it left behind may still hold the pipe open and write to it forever.
  int pending = 0;
  if (::ioctl(stream.fd.get(), FIONREAD, &pending) != 0) pending = 0;
  std::string lines;
  while (pending > 0) {
    ssize_t n = ::read(stream.fd.get(), buffer_.data(),
                       std::min<size_t>(buffer_.size(), pending));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    stream.prefixer.Append(absl::string_view(buffer_.data(), n), &lines);
    pending -= static_cast<int>(n);
  }
  stream.prefixer.Finish(&lines);
  stream.fd.Reset();
  Write(stream.dest_fd, lines);
}

void Launcher::HandleSignals() {
  signalfd_siginfo info[16];
  for (;;) {
    ssize_t n = ::read(signal_fd_.get(), info, sizeof info);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // EAGAIN: all read
    for (size_t i = 0; i < n / sizeof info[0]; ++i) {
      int sig = static_cast<int>(info[i].ssi_signo);
      if (sig == SIGCHLD) {
        // SIGCHLDs coalesce: reap everything that has ended.
        ReapChildren();
      } else if (!shutting_down_) {
        BeginShutdown(sig, absl::StrFormat("received %s", SignalAbbrev(sig)));
      } else {
        KillRemaining(absl::StrFormat("on a second %s", SignalAbbrev(sig)));
      }
    }
  }
}

void Launcher::ReapChildren() {
  for (;;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid < 0 && errno == EINTR) continue;
    if (pid <= 0) return;  // none left that has ended
    for (Rank& rank : ranks_) {
      if (rank.running && rank.pid == pid) {
        OnRankExit(rank, status);
        break;
      }
    }
  }
}

void Launcher::OnRankExit(Rank& rank, int wait_status) {
  DrainAndClose(rank.out);
  DrainAndClose(rank.err);
  rank.running = false;
  if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0) return;
  if (rank.start_failed) return;  // reported when the start failed
  if (options_.netns_prefix.empty()) {
    if (exit_reporter_ == nullptr) {
      exit_reporter_ = std::make_unique<ExitReporter>(
          env_.coordinator, env_.cluster_id, env_.secret, tls_);
    }
    // Rank 0 hosts the coordinator: once it is gone, so is the listener.
    exit_reporter_->RankExited(
        rank.index, DescribeWaitStatus(wait_status),
        /*coordinator_runs=*/rank.index != 0 && ranks_[0].running);
  }
  bool first = !have_failure_;
  RecordFailure(ShellStatus(wait_status));
  std::string what = absl::StrFormat("rank %d (pid %d) %s", rank.index,
                                     rank.pid, DescribeWaitStatus(wait_status));
  if (first) {
    BeginShutdown(SIGTERM, what);
  } else if (rank.signalled_with == 0) {
    // A failure of its own while the job was ending; ranks that ended
    // because the launcher signalled them are not news.
    Say(what);
  }
}

void Launcher::RecordFailure(int status) {
  if (have_failure_) return;
  have_failure_ = true;
  exit_status_ = status;
}

void Launcher::BeginShutdown(int sig, const std::string& why) {
  Say(why);
  if (shutting_down_) return;
  shutting_down_ = true;
  int running = RunningCount();
  if (running == 0) return;
  if (options_.grace_ms == 0) {
    Say(absl::StrFormat("ending the job: sending SIGKILL to %d remaining "
                        "rank(s) (--grace-ms 0)",
                        running));
    for (Rank& rank : ranks_) {
      if (rank.running) SignalRank(rank, SIGKILL);
    }
    return;
  }
  Say(absl::StrFormat(
      "ending the job: sending %s to %d remaining rank(s); SIGKILL to any "
      "still running after %d ms",
      SignalAbbrev(sig), running, options_.grace_ms));
  for (Rank& rank : ranks_) {
    if (rank.running) SignalRank(rank, sig);
  }
  itimerspec grace{};
  grace.it_value.tv_sec = options_.grace_ms / 1000;
  grace.it_value.tv_nsec = (options_.grace_ms % 1000) * 1000000L;
  if (::timerfd_settime(timer_fd_.get(), 0, &grace, nullptr) == 0) {
    timer_armed_ = true;
  } else {
    KillRemaining(absl::StrFormat("(timerfd_settime failed: %s)",
                                  std::strerror(errno)));
  }
}

void Launcher::KillRemaining(const std::string& why) {
  for (Rank& rank : ranks_) {
    if (!rank.running) continue;
    Say(absl::StrFormat("rank %d (pid %d) still running %s; sending SIGKILL",
                        rank.index, rank.pid, why));
    SignalRank(rank, SIGKILL);
  }
}

void Launcher::SignalRank(Rank& rank, int sig) {
  rank.signalled_with = sig;
  // The rank leads its own process group (set in StartRank); it is not
  // reaped yet, so its pid cannot have been reused.
  ::kill(-rank.pid, sig);
  // A rank that moved itself to another group is still signalled.
  if (::getpgid(rank.pid) != rank.pid) ::kill(rank.pid, sig);
}

int Launcher::Abort(const std::string& message) {
  Say(absl::StrCat(message, "; killing all ranks"));
  for (Rank& rank : ranks_) {
    if (!rank.running) continue;
    SignalRank(rank, SIGKILL);
    int status;
    while (::waitpid(rank.pid, &status, 0) < 0 && errno == EINTR) {
    }
    rank.running = false;
  }
  return kExitLauncherFailure;
}

void Launcher::Say(const std::string& line) {
  Write(2, absl::StrCat("pagewire-run: ", line, "\n"));
}

void Launcher::Write(int fd, const std::string& data) {
  if (broken_fd_[fd]) return;
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n >= 0) {
      done += static_cast<size_t>(n);
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN) {
      // Inherited a non-blocking stream: wait until it drains.
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, -1);
    } else {
      // The reader went away (EPIPE) or the stream failed. Pass that on the
      // way a shell pipeline would: close the ranks' pipes that fed it, so
      // a rank writing there gets EPIPE/SIGPIPE instead of writing forever
      // into a launcher that throws the output away.
      broken_fd_[fd] = true;
      for (Rank& rank : ranks_) {
        for (Stream* s : {&rank.out, &rank.err}) {
          if (s->dest_fd == fd) s->fd.Reset();
        }
      }
      return;
    }
  }
}

}  // namespace launcher
}  // namespace pagewire
