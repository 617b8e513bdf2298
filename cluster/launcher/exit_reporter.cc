// exit_reporter.cc - ExitReporter: DeclareDead calls to the coordinator.
#include "cluster/launcher/exit_reporter.h"

#include <memory>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "proto/control_plane.grpc.pb.h"

namespace pagewire {
namespace launcher {

ExitReporter::ExitReporter(std::string coordinator, std::string cluster_id,
                           std::string secret,
                           std::function<void(const std::string&)> say)
    : coordinator_(std::move(coordinator)),
      cluster_id_(std::move(cluster_id)),
      secret_(std::move(secret)),
      say_(std::move(say)),
      thread_([this] { Loop(); }) {}

ExitReporter::~ExitReporter() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void ExitReporter::RankExited(int rank, const std::string& what,
                              bool expect_coordinator) {
  absl::MutexLock l(&mu_);
  queue_.push_back(Report{rank, what, expect_coordinator});
}

void ExitReporter::Loop() {
  // The channel is made on this thread, after the launcher blocked its
  // signals: gRPC's threads inherit the mask, so SIGCHLD and SIGTERM still
  // reach only the launcher's signalfd.
  auto channel =
      grpc::CreateChannel(coordinator_, grpc::InsecureChannelCredentials());
  auto stub = proto::Membership::NewStub(channel);
  for (;;) {
    Report report;
    {
      absl::MutexLock l(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, nothing left to say
      report = std::move(queue_.front());
      queue_.pop_front();
    }
    proto::DeclareDeadRequest request;
    request.set_cluster_id(cluster_id_);
    request.set_secret(secret_);
    request.set_rank(report.rank);
    request.set_reason(absl::StrCat("pagewire-run saw its process end: ",
                                    report.what));
    proto::DeclareDeadReply reply;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcDeadline));
    // Rank 0 runs, so its coordinator is (or is about to be) listening: a
    // rank can end before the coordinator has started.
    ctx.set_wait_for_ready(report.expect_coordinator);
    grpc::Status st = stub->DeclareDead(&ctx, request, &reply);
    if (!st.ok() && report.expect_coordinator) {
      say_(absl::StrCat("could not tell the coordinator that rank ",
                        report.rank, " ended (", st.error_message(),
                        "); its closed connections tell it instead"));
    }
  }
}

}  // namespace launcher
}  // namespace pagewire
