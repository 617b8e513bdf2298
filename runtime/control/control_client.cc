// control_client.cc - ControlClient: join, heartbeat and watch threads,
// barriers and dataspace calls.
#include "runtime/control/control_client.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/control/credentials.h"
#include "runtime/control/grpc_status.h"
#include "runtime/base/log.h"

namespace pagewire::control {

ControlClient::ControlClient(ControlClientConfig config)
    : config_(std::move(config)) {}

absl::StatusOr<std::unique_ptr<ControlClient>> ControlClient::Join(
    ControlClientConfig config) {
  if (config.coordinator.empty()) {
    return absl::InvalidArgumentError(
        "no coordinator address; set it to the coordinator's host:port "
        "(PAGEWIRE_COORDINATOR)");
  }
  std::unique_ptr<ControlClient> client(new ControlClient(std::move(config)));
  const ControlClientConfig& c = client->config_;
  // No HTTP/2 keepalive: this connection closing is how the coordinator
  // learns that the process ended, so it must close only when the process
  // does, never because a ping went unanswered while the coordinator was
  // stopped. A coordinator that vanishes shows as failing heartbeats.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, std::numeric_limits<int>::max());
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      ChannelCredentials(c.tls, args);
  if (!credentials.ok()) return credentials.status();
  client->channel_ =
      grpc::CreateCustomChannel(c.coordinator, *credentials, args);
  client->membership_ = proto::Membership::NewStub(client->channel_);
  client->dataspaces_ = proto::Dataspaces::NewStub(client->channel_);

  // Wait for the coordinator to come up (within the deadline) instead of
  // failing on the first refused connection: ranks often start with it.
  auto waiting_context = [&client] {
    std::unique_ptr<grpc::ClientContext> ctx = client->UnaryContext();
    ctx->set_wait_for_ready(true);
    return ctx;
  };
  absl::StatusOr<proto::Proof> proof =
      Prove(*client->membership_, waiting_context, c.secret, "Join",
            c.cluster_id, JoinDetail(c.requested_rank));
  if (!proof.ok()) {
    return absl::Status(proof.status().code(),
                        absl::StrCat("Join via coordinator ", c.coordinator,
                                     ": ", proof.status().message()));
  }
  proto::JoinRequest request;
  request.set_cluster_id(c.cluster_id);
  *request.mutable_proof() = *proof;
  request.set_protocol_version(c.protocol_version);
  request.set_requested_rank(c.requested_rank);
  *request.mutable_endpoint() = c.endpoint;
  proto::JoinReply reply;
  {
    std::unique_ptr<grpc::ClientContext> ctx = client->UnaryContext();
    // Wait for the coordinator to come up (within the deadline) instead of
    // failing on the first refused connection: ranks often start with it.
    ctx->set_wait_for_ready(true);
    grpc::Status st = client->membership_->Join(ctx.get(), request, &reply);
    if (!st.ok()) {
      return FromGrpcStatus(
          st, absl::StrCat("Join via coordinator ", c.coordinator));
    }
  }
  client->rank_ = reply.rank();
  client->session_token_ =
      DeriveSessionToken(ControlKey(c.secret), proof->nonce(), reply.rank());
  client->nranks_ = reply.nranks();
  client->global_base_ = reply.global_base();
  client->global_size_ = reply.global_size();
  client->heartbeat_interval_ = absl::Milliseconds(reply.heartbeat_interval_ms());
  client->lease_ = absl::Milliseconds(reply.lease_ms());
  client->first_view_ = View::FromProto(reply.view());
  {
    absl::MutexLock l(&client->mu_);
    client->current_view_ = client->first_view_;
  }
  ControlClient* raw = client.get();
  client->heartbeat_thread_ = std::thread([raw] { raw->HeartbeatLoop(); });
  client->watch_thread_ = std::thread([raw] { raw->WatchLoop(); });
  return client;
}

ControlClient::~ControlClient() {
  // A client whose Join failed never became a member and has no threads.
  if (!heartbeat_thread_.joinable()) return;
  if (config_.leave_on_destroy) {
    absl::Status s = Leave("shutting down");
    if (!s.ok()) Warning("control client rank %d: Leave: %s", rank_, s.ToString());
  }
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
    if (watch_context_ != nullptr) watch_context_->TryCancel();
  }
  heartbeat_thread_.join();
  watch_thread_.join();
}

std::unique_ptr<grpc::ClientContext> ControlClient::UnaryContext() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + config_.rpc_deadline));
  Authenticate(*ctx);
  return ctx;
}

void ControlClient::Authenticate(grpc::ClientContext& ctx) const {
  if (!session_token_.empty()) {
    ctx.AddMetadata(kSessionMetadata, session_token_);
  }
}

View ControlClient::current_view() const {
  absl::MutexLock l(&mu_);
  return current_view_;
}

void ControlClient::PauseHeartbeatsForTesting(bool paused) {
  absl::MutexLock l(&mu_);
  heartbeats_paused_ = paused;
}

void ControlClient::HeartbeatLoop() {
  absl::MutexLock l(&mu_);
  // Failures are summarised: the first is logged, then one line per
  // kFailuresPerLog, and one when heartbeats get through again.
  constexpr uint64_t kFailuresPerLog = 100;
  uint64_t failures = 0;
  absl::Time first_failure;
  while (!stopping_ && !left_) {
    // Pacing only: the wait decides when to send, never a failure.
    const bool stop = mu_.AwaitWithTimeout(
        absl::Condition(
            +[](bool* s) { return *s; }, &stopping_),
        heartbeat_interval_);
    if (stop || left_) break;
    // Leaving: a heartbeat now would only race the Leave and be refused.
    if (heartbeats_paused_ || leaving_) continue;
    proto::HeartbeatRequest request;
    request.set_rank(rank_);
    request.set_epoch(seen_epoch_);
    mu_.Unlock();
    proto::HeartbeatReply reply;
    std::unique_ptr<grpc::ClientContext> ctx = UnaryContext();
    grpc::Status st = membership_->Heartbeat(ctx.get(), request, &reply);
    mu_.Lock();
    if (st.ok()) {
      if (failures > 0) {
        Warning("control client rank %d: heartbeats get through again after "
                "%d failed over %s",
                rank_, failures,
                absl::FormatDuration(absl::Trunc(absl::Now() - first_failure,
                                                 absl::Milliseconds(1))));
      }
      failures = 0;
      continue;
    }
    if (leaving_ || left_) break;  // refused because this rank just left
    if (st.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
        st.error_code() == grpc::StatusCode::NOT_FOUND) {
      // The coordinator no longer counts this rank as a member; more
      // heartbeats cannot change that, and every later call must say so.
      Error("control client rank %d: heartbeat refused, stopping "
            "heartbeats: %s",
            rank_, st.error_message());
      ExpelLocked(st.error_message());
      break;
    }
    // A lost heartbeat: the next one may get through. Silence only makes
    // this rank suspected; it stays a member.
    if (failures++ == 0) first_failure = absl::Now();
    if (failures == 1 || failures % kFailuresPerLog == 0) {
      Warning("control client rank %d: heartbeat failed (%d: %s); %d failed "
              "so far, this rank stays a member (suspected at most) and "
              "keeps trying",
              rank_, static_cast<int>(st.error_code()), st.error_message(),
              failures);
    }
  }
}

void ControlClient::ExpelLocked(const std::string& why) {
  if (!standing_.ok()) return;
  standing_ = absl::FailedPreconditionError(absl::StrCat(
      "rank ", rank_, " is no longer a member of the job: ", why));
}

absl::Status ControlClient::Standing() const {
  absl::MutexLock l(&mu_);
  return standing_;
}

void ControlClient::WatchLoop() {
  absl::Duration pause = kWatchRetryFirst;
  uint64_t breaks = 0;  // logged at the first and at each doubling
  for (;;) {
    grpc::ClientContext ctx;  // no deadline: the stream lasts the membership
    Authenticate(ctx);
    // A broken connection is waited out (the channel reconnects), not
    // failed: the stream is how this rank learns of deaths.
    ctx.set_wait_for_ready(true);
    proto::WatchViewRequest request;
    request.set_rank(rank_);
    {
      absl::MutexLock l(&mu_);
      if (stopping_ || left_) return;
      watch_context_ = &ctx;
      // Views are whole snapshots: after a break, the current one (if
      // newer) replaces every view missed meanwhile.
      request.set_since_epoch(seen_epoch_);
    }
    std::unique_ptr<grpc::ClientReader<proto::MembershipView>> reader =
        membership_->WatchView(&ctx, request);
    proto::MembershipView pv;
    while (reader->Read(&pv)) {
      View view = View::FromProto(pv);
      {
        absl::MutexLock l(&mu_);
        if (view.epoch <= seen_epoch_) continue;
        seen_epoch_ = view.epoch;
        current_view_ = view;
        for (const ViewMember& m : view.members) {
          if (m.rank == rank_ && m.state == proto::Member::DEAD) {
            ExpelLocked(absl::StrCat("membership declared it DEAD at epoch ",
                                     view.epoch, ": ", m.reason));
          }
        }
      }
      pause = kWatchRetryFirst;  // the stream worked
      if (config_.on_view) config_.on_view(view);
    }
    grpc::Status st = reader->Finish();
    absl::MutexLock l(&mu_);
    watch_context_ = nullptr;
    if (stopping_ || left_) return;
    switch (st.error_code()) {
      case grpc::StatusCode::OK:  // the coordinator ended it: shut down
        return;
      case grpc::StatusCode::FAILED_PRECONDITION:  // no longer a member
        ExpelLocked(st.error_message());
        [[fallthrough]];
      case grpc::StatusCode::NOT_FOUND:
      case grpc::StatusCode::INVALID_ARGUMENT:
      case grpc::StatusCode::PERMISSION_DENIED:
      case grpc::StatusCode::UNAUTHENTICATED:
        Warning("control client rank %d: view stream ended: %s", rank_,
                FromGrpcStatus(st, "WatchView").ToString());
        return;
      default:
        break;
    }
    // The connection broke: watch again, paced so a coordinator that
    // refuses at once is not called in a tight loop. The pause only spaces
    // reconnects; no view, and so no death, is ever skipped.
    if (++breaks == 1 || (breaks & (breaks - 1)) == 0) {
      Warning("control client rank %d: view stream broke (%s; %d times "
              "so far); watching again from epoch %d in %s",
              rank_, FromGrpcStatus(st, "WatchView").ToString(), breaks,
              seen_epoch_, absl::FormatDuration(pause));
    }
    if (mu_.AwaitWithTimeout(
            absl::Condition(+[](bool* s) { return *s; }, &stopping_), pause)) {
      return;
    }
    pause = std::min(2 * pause, kWatchRetryMax);
  }
}

absl::Status ControlClient::Barrier(uint64_t seq,
                                    const absl::Status& local_outcome,
                                    const std::string& call) {
  proto::BarrierRequest request;
  request.set_rank(rank_);
  request.set_seq(seq);
  request.set_call(call);
  if (!local_outcome.ok()) {
    request.set_failure(std::string(local_outcome.message()));
  }
  proto::BarrierReply reply;
  grpc::ClientContext ctx;  // no deadline: see the header
  Authenticate(ctx);
  grpc::Status st = membership_->Barrier(&ctx, request, &reply);
  return FromGrpcStatus(st, absl::StrCat("Barrier ", seq));
}

absl::StatusOr<proto::Dataspace> ControlClient::CreateDataspace(
    uint64_t collective_seq, uint64_t length, proto::Placement placement,
    int home_rank, bool sequential) {
  proto::CreateDataspaceRequest request;
  request.set_rank(rank_);
  request.set_length(length);
  request.set_placement(placement);
  request.set_home_rank(home_rank);
  request.set_collective_seq(collective_seq);
  request.set_sequential(sequential);
  proto::CreateDataspaceReply reply;
  std::unique_ptr<grpc::ClientContext> ctx = UnaryContext();
  grpc::Status st = dataspaces_->Create(ctx.get(), request, &reply);
  if (!st.ok()) return FromGrpcStatus(st, "CreateDataspace");
  return reply.dataspace();
}

absl::Status ControlClient::FreeDataspace(uint32_t id) {
  proto::FreeDataspaceRequest request;
  request.set_rank(rank_);
  request.set_id(id);
  proto::FreeDataspaceReply reply;
  std::unique_ptr<grpc::ClientContext> ctx = UnaryContext();
  return FromGrpcStatus(dataspaces_->Free(ctx.get(), request, &reply),
                        "FreeDataspace");
}

absl::StatusOr<proto::Dataspace> ControlClient::LookupDataspace(uint32_t id) {
  proto::LookupDataspaceRequest request;
  request.set_id(id);
  proto::LookupDataspaceReply reply;
  std::unique_ptr<grpc::ClientContext> ctx = UnaryContext();
  grpc::Status st = dataspaces_->Lookup(ctx.get(), request, &reply);
  if (!st.ok()) return FromGrpcStatus(st, "LookupDataspace");
  return reply.dataspace();
}

absl::StatusOr<proto::Dataspace> ControlClient::LookupDataspaceAt(
    uint64_t addr) {
  proto::LookupDataspaceRequest request;
  request.set_addr(addr);
  proto::LookupDataspaceReply reply;
  std::unique_ptr<grpc::ClientContext> ctx = UnaryContext();
  grpc::Status st = dataspaces_->Lookup(ctx.get(), request, &reply);
  if (!st.ok()) return FromGrpcStatus(st, "LookupDataspace");
  return reply.dataspace();
}

absl::Status ControlClient::Leave(const std::string& reason) {
  {
    absl::MutexLock l(&mu_);
    if (left_) return absl::OkStatus();
    // Declared dead: already out of the job, there is nothing to leave.
    if (!standing_.ok()) {
      left_ = true;
      return absl::OkStatus();
    }
    leaving_ = true;
  }
  proto::LeaveRequest request;
  request.set_rank(rank_);
  request.set_reason(reason);
  proto::LeaveReply reply;
  std::unique_ptr<grpc::ClientContext> ctx = UnaryContext();
  grpc::Status st = membership_->Leave(ctx.get(), request, &reply);
  absl::MutexLock l(&mu_);
  leaving_ = false;
  if (!st.ok()) return FromGrpcStatus(st, "Leave");
  left_ = true;  // also ends the heartbeat loop at its next wake-up
  return absl::OkStatus();
}

}  // namespace pagewire::control
