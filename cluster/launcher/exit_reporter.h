// exit_reporter.h - the process manager's word: pagewire-run tells the
// job's coordinator that a rank's process ended, so membership declares it
// DEAD on that evidence even if its connections said nothing (it ended
// before it joined, say). The coordinator ignores the word for a rank that
// already left or was declared dead.
//
// Reports go out on the reporter's own thread, in order, so the launcher's
// event loop never waits on the network. Each call is bounded by
// kRpcDeadline: that bounds how long the launcher may wait at exit for a
// coordinator that is gone, it decides nothing about any rank.
#ifndef PAGEWIRE_CLUSTER_LAUNCHER_EXIT_REPORTER_H_
#define PAGEWIRE_CLUSTER_LAUNCHER_EXIT_REPORTER_H_

#include <deque>
#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace pagewire {
namespace launcher {

class ExitReporter {
 public:
  static constexpr absl::Duration kRpcDeadline = absl::Seconds(10);

  // `say` prints a line of the launcher's (a report that failed while the
  // coordinator should still have been there).
  ExitReporter(std::string coordinator, std::string cluster_id,
               std::string secret, std::function<void(const std::string&)> say);
  // Sends what is queued, then joins the thread.
  ~ExitReporter();
  ExitReporter(const ExitReporter&) = delete;
  ExitReporter& operator=(const ExitReporter&) = delete;

  // `rank`'s process ended; `what` says how ("killed by signal 9").
  // `expect_coordinator`: a failed report is worth a line (the
  // coordinator's host rank still runs).
  void RankExited(int rank, const std::string& what, bool expect_coordinator);

 private:
  struct Report {
    int rank;
    std::string what;
    bool expect_coordinator;
  };
  void Loop();

  const std::string coordinator_;
  const std::string cluster_id_;
  const std::string secret_;
  const std::function<void(const std::string&)> say_;
  absl::Mutex mu_;
  std::deque<Report> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts once everything above exists
};

}  // namespace launcher
}  // namespace pagewire

#endif  // PAGEWIRE_CLUSTER_LAUNCHER_EXIT_REPORTER_H_
