// exit_reporter.h - the process manager's word: pagewire-run tells the
// job's coordinator that a rank's process ended, so membership declares it
// DEAD on that evidence even if its connections said nothing (it ended
// before it joined, say). The coordinator ignores the word for a rank that
// already left or was declared dead.
//
// Reports go out on the reporter's own thread, in order, so the launcher's
// event loop never waits on the network. A report that cannot be delivered
// changes nothing (the rank's closed connections are evidence too); each
// call is bounded by kRpcDeadline so a coordinator that is gone cannot
// hold the reporter, and the destructor abandons what is left: by then
// every rank, the coordinator's host included, has ended.
#ifndef PAGEWIRE_CLUSTER_LAUNCHER_EXIT_REPORTER_H_
#define PAGEWIRE_CLUSTER_LAUNCHER_EXIT_REPORTER_H_

#include <deque>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "runtime/control/tls.h"

namespace pagewire {
namespace launcher {

class ExitReporter {
 public:
  static constexpr absl::Duration kRpcDeadline = absl::Seconds(10);

  ExitReporter(std::string coordinator, std::string cluster_id,
               std::string secret, control::TlsFiles tls);
  // Abandons what is queued or under way, then joins the thread.
  ~ExitReporter();
  ExitReporter(const ExitReporter&) = delete;
  ExitReporter& operator=(const ExitReporter&) = delete;

  // `rank`'s process ended; `what` says how ("killed by signal 9").
  // `coordinator_runs`: the coordinator's host rank still runs, so the
  // report waits for the coordinator to listen (it may not have started).
  void RankExited(int rank, const std::string& what, bool coordinator_runs);

 private:
  struct Report {
    int rank;
    std::string what;
    bool coordinator_runs;
  };
  void Loop();

  const std::string coordinator_;
  const std::string cluster_id_;
  const std::string secret_;
  const control::TlsFiles tls_;
  absl::Mutex mu_;
  std::deque<Report> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* in_flight_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::thread thread_;  // last: starts once everything above exists
};

}  // namespace launcher
}  // namespace pagewire

#endif  // PAGEWIRE_CLUSTER_LAUNCHER_EXIT_REPORTER_H_
