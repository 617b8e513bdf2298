// exit_reporter.cc - ExitReporter: DeclareDead calls to the coordinator.
#include "cluster/launcher/exit_reporter.h"

#include <memory>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "proto/control_plane.grpc.pb.h"
#include "runtime/control/credentials.h"

namespace pagewire {
namespace launcher {

ExitReporter::ExitReporter(std::string coordinator, std::string cluster_id,
                           std::string secret, control::TlsFiles tls)
    : coordinator_(std::move(coordinator)),
      cluster_id_(std::move(cluster_id)),
      secret_(std::move(secret)),
      tls_(std::move(tls)),
      thread_([this] { Loop(); }) {}

ExitReporter::~ExitReporter() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
    queue_.clear();
    if (in_flight_ != nullptr) in_flight_->TryCancel();
  }
  thread_.join();
}

void ExitReporter::RankExited(int rank, const std::string& what,
                              bool coordinator_runs) {
  absl::MutexLock l(&mu_);
  queue_.push_back(Report{rank, what, coordinator_runs});
}

void ExitReporter::Loop() {
  // The channel is made on this thread, after the launcher blocked its
  // signals: gRPC's threads inherit the mask, so SIGCHLD and SIGTERM still
  // reach only the launcher's signalfd.
  grpc::ChannelArguments args;
  auto credentials = control::ChannelCredentials(tls_, args);
  // The launcher read the same files before any rank started; should they
  // have gone since, reports go nowhere (the ranks' closed connections are
  // evidence all the same).
  auto channel = grpc::CreateCustomChannel(
      coordinator_,
      credentials.ok() ? *credentials : grpc::InsecureChannelCredentials(),
      args);
  auto stub = proto::Membership::NewStub(channel);
  const Digest256 key = control::ControlKey(secret_);
  for (;;) {
    Report report;
    // Two calls: a Challenge for a nonce, then the DeclareDead it proves.
    // Each is the one the destructor cancels while it runs.
    grpc::ClientContext challenge_ctx, ctx;
    {
      absl::MutexLock l(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, nothing left to say
      report = std::move(queue_.front());
      queue_.pop_front();
      in_flight_ = &challenge_ctx;
    }
    // Rank 0 runs, so its coordinator is (or is about to be) listening: a
    // rank can end before the coordinator has started.
    const auto deadline = absl::ToChronoTime(absl::Now() + kRpcDeadline);
    challenge_ctx.set_deadline(deadline);
    challenge_ctx.set_wait_for_ready(report.coordinator_runs);
    proto::ChallengeReply challenge;
    const bool challenged =
        stub->Challenge(&challenge_ctx, proto::ChallengeRequest(), &challenge)
            .ok();
    bool go;
    {
      absl::MutexLock l(&mu_);
      go = challenged && !stopping_;
      in_flight_ = go ? &ctx : nullptr;
    }
    if (!go) continue;
    proto::DeclareDeadRequest request;
    request.set_cluster_id(cluster_id_);
    request.set_rank(report.rank);
    request.set_reason(absl::StrCat("pagewire-run saw its process end: ",
                                    report.what));
    request.mutable_proof()->set_nonce(challenge.nonce());
    request.mutable_proof()->set_mac(control::CallMac(
        key, "DeclareDead", challenge.nonce(), cluster_id_,
        control::DeclareDeadDetail(report.rank, request.reason())));
    proto::DeclareDeadReply reply;
    ctx.set_deadline(deadline);
    ctx.set_wait_for_ready(report.coordinator_runs);
    (void)stub->DeclareDead(&ctx, request, &reply);
    absl::MutexLock l(&mu_);
    in_flight_ = nullptr;
  }
}

}  // namespace launcher
}  // namespace pagewire
