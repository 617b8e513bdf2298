// coordinator.cc - membership, leases, barriers and collective dataspaces,
// and the gRPC callback services over them.
#include "runtime/control/coordinator.h"

#include <sys/random.h>

#include <algorithm>
#include <deque>
#include <limits>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/control/credentials.h"
#include "runtime/control/grpc_status.h"
#include "runtime/base/log.h"
#include "runtime/base/page.h"

namespace pagewire::control {
namespace {

// Upper bound on ranks: each rank costs a slot and a heartbeat stream, and
// a bigger number is almost certainly a typo.
constexpr int kMaxRanks = 1 << 16;

// Compares without an early exit, so the time a refused Join takes does
// not reveal how much of the secret was right.
bool SecretsEqual(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? a[i] : 0;
    const unsigned char y = i < b.size() ? b[i] : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

std::string DescribeEndpoint(const proto::Endpoint& ep) {
  return absl::StrCat(ep.host().empty() ? "?" : ep.host(), ":",
                      ep.control_port());
}

const char* StateName(proto::Member::State s) {
  return proto::Member::State_Name(s).c_str();
}

}  // namespace

// ---------------------------------------------------------------------------
// Configuration

absl::Status CoordinatorConfig::Validate() const {
  if (cluster_id.empty()) {
    return absl::InvalidArgumentError(
        "cluster id is empty; give the job a name (--cluster-id) and start "
        "every rank with the same one");
  }
  if (secret.empty()) {
    return absl::InvalidArgumentError(
        "secret is empty; set PAGEWIRE_SECRET (or --secret-file) to the same "
        "non-empty value for the coordinator and every rank");
  }
  if (nranks < 1 || nranks > kMaxRanks) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "nranks is %d; it must be between 1 and %d (--nranks)", nranks,
        kMaxRanks));
  }
  if (!PageAligned(global_base) || !PageAligned(global_size)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "global range base 0x%x size 0x%x is not page-aligned; both must be "
        "multiples of %d (--global-base, --global-size)",
        global_base, global_size, kPageSize));
  }
  if (global_size == 0 || global_base + global_size < global_base) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "global range base 0x%x size 0x%x is empty or wraps around the "
        "address space; pass a non-zero --global-size that fits above "
        "--global-base",
        global_base, global_size));
  }
  if (heartbeat_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "heartbeat interval must be positive (e.g. 100 ms)");
  }
  if (lease < 2 * heartbeat_interval) {
    return absl::InvalidArgumentError(absl::StrCat(
        "lease (", absl::FormatDuration(lease),
        ") must be at least twice the heartbeat interval (",
        absl::FormatDuration(heartbeat_interval),
        "), or one late heartbeat would declare a healthy rank dead; raise "
        "--lease-ms or lower --heartbeat-ms"));
  }
  if (dead_after < lease) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dead-after deadline (", absl::FormatDuration(dead_after),
        ") is shorter than the lease (", absl::FormatDuration(lease),
        "); a rank must be suspected before a deadline can end it: raise "
        "--dead-after-ms (PAGEWIRE_DEAD_AFTER_MS) or leave it unset"));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// gRPC adapters. Handlers never block: unary ones finish inline, Barrier
// finishes when the coordinator calls back, WatchView is a write reactor
// fed by the coordinator.

namespace {

// The session token a call carries (empty if none).
absl::string_view SessionToken(grpc::CallbackServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  auto it = md.find(kSessionMetadata);
  if (it == md.end()) return {};
  return absl::string_view(it->second.data(), it->second.size());
}

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx,
                                    const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// One WatchView stream: a queue of views written one at a time (gRPC
// allows one outstanding write per stream). Push/End are called by the
// coordinator under its lock; the On* reactions by gRPC threads.
class WatchReactor final
    : public grpc::ServerWriteReactor<proto::MembershipView>,
      public Coordinator::ViewSink {
 public:
  explicit WatchReactor(Coordinator* coordinator) : coordinator_(coordinator) {}

  void Start(const proto::WatchViewRequest& request, absl::Status auth) {
    absl::Status s = auth.ok() ? coordinator_->AddWatcher(
                                     request.rank(), request.since_epoch(), this)
                               : auth;
    if (!s.ok()) {
      absl::MutexLock l(&mu_);
      finished_ = true;
      Finish(ToGrpcStatus(s));
    }
  }

  void Push(const proto::MembershipView& view, bool last) override {
    absl::MutexLock l(&mu_);
    if (finish_requested_) return;
    queue_.push_back(view);
    if (last) finish_requested_ = true;
    PumpLocked();
  }

  void End() override {
    absl::MutexLock l(&mu_);
    finish_requested_ = true;
    PumpLocked();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock l(&mu_);
    writing_ = false;
    queue_.pop_front();
    if (!ok) {  // the client went away; nobody reads the rest
      queue_.clear();
      finish_requested_ = true;
    }
    PumpLocked();
  }

  void OnCancel() override {
    absl::MutexLock l(&mu_);
    cancelled_ = true;  // the watcher's connection closed or it gave up
    if (!writing_) queue_.clear();
    finish_requested_ = true;
    PumpLocked();
  }

  void OnDone() override {
    bool cancelled;
    {
      absl::MutexLock l(&mu_);
      cancelled = cancelled_;
    }
    coordinator_->RemoveWatcher(this, cancelled);
    delete this;
  }

 private:
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Coordinator* const coordinator_;
  absl::Mutex mu_;
  std::deque<proto::MembershipView> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

void WatchReactor::PumpLocked() {
  if (finished_ || writing_) return;
  if (!queue_.empty()) {
    writing_ = true;
    // deque::push_back keeps references to existing elements valid, so
    // the view stays put until OnWriteDone pops it.
    StartWrite(&queue_.front());
    return;
  }
  if (finish_requested_) {
    finished_ = true;
    Finish(grpc::Status::OK);
  }
}

}  // namespace

class Coordinator::MembershipServiceImpl final
    : public proto::Membership::CallbackService {
 public:
  explicit MembershipServiceImpl(Coordinator* c) : c_(c) {}

  grpc::ServerUnaryReactor* Challenge(grpc::CallbackServerContext* ctx,
                                      const proto::ChallengeRequest*,
                                      proto::ChallengeReply* reply) override;

  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* ctx,
                                 const proto::JoinRequest* request,
                                 proto::JoinReply* reply) override;

  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx,
                                      const proto::HeartbeatRequest* request,
                                      proto::HeartbeatReply* reply) override {
    if (absl::Status a = c_->Authenticate(request->rank(), SessionToken(ctx));
        !a.ok()) {
      return FinishNow(ctx, a);
    }
    absl::StatusOr<proto::HeartbeatReply> r = c_->Heartbeat(*request);
    if (r.ok()) *reply = *std::move(r);
    return FinishNow(ctx, r.status());
  }

  grpc::ServerUnaryReactor* Leave(grpc::CallbackServerContext* ctx,
                                  const proto::LeaveRequest* request,
                                  proto::LeaveReply*) override {
    if (absl::Status a = c_->Authenticate(request->rank(), SessionToken(ctx));
        !a.ok()) {
      return FinishNow(ctx, a);
    }
    return FinishNow(ctx, c_->Leave(*request));
  }

  grpc::ServerWriteReactor<proto::MembershipView>* WatchView(
      grpc::CallbackServerContext* ctx,
      const proto::WatchViewRequest* request) override {
    auto* reactor = new WatchReactor(c_);
    reactor->Start(*request, c_->Authenticate(request->rank(), SessionToken(ctx)));
    return reactor;
  }

  grpc::ServerUnaryReactor* Barrier(grpc::CallbackServerContext* ctx,
                                    const proto::BarrierRequest* request,
                                    proto::BarrierReply* reply) override {
    if (absl::Status a = c_->Authenticate(request->rank(), SessionToken(ctx));
        !a.ok()) {
      return FinishNow(ctx, a);
    }
    // The default reactor may be finished later from any thread; `reply`
    // stays valid until then.
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    c_->Barrier(*request, [reactor, reply](absl::StatusOr<uint64_t> epoch) {
      if (epoch.ok()) reply->set_epoch(*epoch);
      reactor->Finish(ToGrpcStatus(epoch.status()));
    });
    return reactor;
  }

  grpc::ServerUnaryReactor* DeclareDead(grpc::CallbackServerContext* ctx,
                                        const proto::DeclareDeadRequest* request,
                                        proto::DeclareDeadReply* reply) override {
    absl::StatusOr<proto::DeclareDeadReply> r = c_->DeclareDead(*request);
    if (r.ok()) *reply = *std::move(r);
    return FinishNow(ctx, r.status());
  }

  grpc::ServerUnaryReactor* JobStatus(grpc::CallbackServerContext* ctx,
                                   const proto::JobStatusRequest* request,
                                   proto::JobStatusReply* reply) override {
    absl::StatusOr<proto::JobStatusReply> r = c_->JobStatus(*request);
    if (r.ok()) *reply = *std::move(r);
    return FinishNow(ctx, r.status());
  }

 private:
  Coordinator* const c_;
};

// Proves its credentials in the request (CheckJoin).
grpc::ServerUnaryReactor* Coordinator::MembershipServiceImpl::Join(
    grpc::CallbackServerContext* ctx, const proto::JoinRequest* request,
    proto::JoinReply* reply) {
  absl::StatusOr<proto::JoinReply> r = c_->Join(*request);
  if (r.ok()) *reply = *std::move(r);
  return FinishNow(ctx, r.status());
}

// Needs no credentials: a nonce tells nothing about the job.
grpc::ServerUnaryReactor* Coordinator::MembershipServiceImpl::Challenge(
    grpc::CallbackServerContext* ctx, const proto::ChallengeRequest*,
    proto::ChallengeReply* reply) {
  *reply = c_->Challenge();
  return FinishNow(ctx, absl::OkStatus());
}

class Coordinator::DataspacesServiceImpl final
    : public proto::Dataspaces::CallbackService {
 public:
  explicit DataspacesServiceImpl(Coordinator* c) : c_(c) {}

  grpc::ServerUnaryReactor* Create(grpc::CallbackServerContext* ctx,
                                   const proto::CreateDataspaceRequest* request,
                                   proto::CreateDataspaceReply* reply) override {
    if (absl::Status a = c_->Authenticate(request->rank(), SessionToken(ctx));
        !a.ok()) {
      return FinishNow(ctx, a);
    }
    absl::StatusOr<proto::Dataspace> r = c_->CreateDataspace(*request);
    if (r.ok()) *reply->mutable_dataspace() = *std::move(r);
    return FinishNow(ctx, r.status());
  }

  grpc::ServerUnaryReactor* Free(grpc::CallbackServerContext* ctx,
                                 const proto::FreeDataspaceRequest* request,
                                 proto::FreeDataspaceReply*) override {
    if (absl::Status a = c_->Authenticate(request->rank(), SessionToken(ctx));
        !a.ok()) {
      return FinishNow(ctx, a);
    }
    return FinishNow(ctx, c_->FreeDataspace(*request));
  }

  grpc::ServerUnaryReactor* Lookup(grpc::CallbackServerContext* ctx,
                                   const proto::LookupDataspaceRequest* request,
                                   proto::LookupDataspaceReply* reply) override {
    if (absl::Status a = c_->Authenticate(-1, SessionToken(ctx)); !a.ok()) {
      return FinishNow(ctx, a);
    }
    absl::StatusOr<proto::Dataspace> r = c_->LookupDataspace(*request);
    if (r.ok()) *reply->mutable_dataspace() = *std::move(r);
    return FinishNow(ctx, r.status());
  }

 private:
  Coordinator* const c_;
};

// ---------------------------------------------------------------------------
// Life cycle

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(
    CoordinatorConfig config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(config)));
}

Coordinator::Coordinator(CoordinatorConfig config)
    : config_(std::move(config)),
      key_(ControlKey(config_.secret)),
      slots_(config_.nranks),
      membership_service_(std::make_unique<MembershipServiceImpl>(this)),
      dataspaces_service_(std::make_unique<DataspacesServiceImpl>(this)) {
  view_.set_epoch(0);
  lease_monitor_ = std::thread([this] { LeaseMonitorLoop(); });
}

Coordinator::~Coordinator() {
  Shutdown();
  lease_monitor_.join();
}

grpc::Service* Coordinator::membership_service() { return membership_service_.get(); }
grpc::Service* Coordinator::dataspaces_service() { return dataspaces_service_.get(); }

void Coordinator::Shutdown() {
  std::vector<Completion> done;
  {
    absl::MutexLock l(&mu_);
    if (shutdown_) return;
    shutdown_ = true;
    for (const Watcher& w : watchers_) w.sink->End();
    watchers_.clear();
    for (auto& [seq, barrier] : barriers_) {
      for (BarrierDone& d : barrier.waiters) {
        done.push_back([d = std::move(d), seq = seq] {
          d(absl::UnavailableError(absl::StrCat(
              "barrier ", seq, " abandoned: the coordinator is shutting down")));
        });
      }
    }
    barriers_.clear();
    lease_cv_.SignalAll();
  }
  for (Completion& c : done) c();
}

void Coordinator::AwaitOthersGone(int self) {
  auto gone = [this, self]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (shutdown_) return true;
    for (int r = 0; r < config_.nranks; ++r) {
      const Slot& s = slots_[r];
      if (r != self && s.joined && s.state != proto::Member::LEFT &&
          s.state != proto::Member::DEAD) {
        return false;
      }
    }
    return true;
  };
  absl::MutexLock l(&mu_);
  mu_.Await(absl::Condition(&gone));
}

// ---------------------------------------------------------------------------
// Membership

absl::Status Coordinator::CheckJoin(const proto::JoinRequest& request) const {
  // Identity checks first, each naming exactly what differs and the fix.
  // The secret itself never appears in a message or a log line.
  if (request.protocol_version() != config_.protocol_version) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "protocol version %d does not match the coordinator's %d; run the "
        "same Pagewire release on every rank and on the coordinator",
        request.protocol_version(), config_.protocol_version));
  }
  if (request.cluster_id() != config_.cluster_id) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "cluster id '%s' does not match the coordinator's; start every "
        "rank with the same cluster id (PAGEWIRE_CLUSTER_ID) as the "
        "coordinator's --cluster-id",
        request.cluster_id()));
  }
  if (!CheckProof("Join", request.cluster_id(), request.proof(),
                  JoinDetail(request.requested_rank()))) {
    return absl::FailedPreconditionError(
        "secret does not match the coordinator's (the Join's proof of it is "
        "wrong, or its challenge was used or dropped already); start every "
        "rank with the same PAGEWIRE_SECRET as the coordinator");
  }
  const int requested = request.requested_rank();
  if (requested < -1 || requested >= config_.nranks) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "requested rank %d is out of range: this job has %d ranks (0..%d); "
        "ask for -1 (any free rank) or start the coordinator with a larger "
        "--nranks",
        requested, config_.nranks, config_.nranks - 1));
  }
  return absl::OkStatus();
}

proto::ChallengeReply Coordinator::Challenge() {
  std::string nonce(kNonceBytes, '\0');
  absl::Status random = FillRandom(absl::MakeSpan(
      reinterpret_cast<uint8_t*>(nonce.data()), nonce.size()));
  if (!random.ok()) {
    // Without a random source no proof can be fresh: an empty nonce is
    // never accepted, so every proof on it fails.
    Error("coordinator: %s", random.ToString());
    return proto::ChallengeReply();
  }
  {
    absl::MutexLock l(&nonce_mu_);
    if (nonce_order_.size() >= kMaxNonces) {
      nonces_.erase(nonce_order_.front());
      nonce_order_.pop_front();
    }
    nonce_order_.push_back(nonce);
    nonces_.insert(nonce);
  }
  proto::ChallengeReply reply;
  reply.set_nonce(nonce);
  return reply;
}

bool Coordinator::CheckProof(absl::string_view call,
                             absl::string_view cluster_id,
                             const proto::Proof& proof,
                             absl::string_view detail) const {
  bool fresh;
  {
    absl::MutexLock l(&nonce_mu_);
    fresh = nonces_.erase(proof.nonce()) == 1;
    if (fresh) {
      nonce_order_.erase(std::find(nonce_order_.begin(), nonce_order_.end(),
                                   proof.nonce()));
    }
  }
  const std::string want =
      CallMac(key_, call, proof.nonce(), cluster_id, detail);
  // Compared in full whether or not the nonce was fresh.
  const bool mac_ok = SecretsEqual(proof.mac(), want);
  return fresh && mac_ok;
}

absl::Status Coordinator::CheckCredentials(const std::string& cluster_id,
                                           const proto::Proof& proof,
                                           absl::string_view detail,
                                           const char* what) const {
  // Both checked in full whatever the first says, and one answer for
  // either mismatch: a caller learns nothing about the job.
  const bool id_ok = SecretsEqual(cluster_id, config_.cluster_id);
  const bool secret_ok = CheckProof(what, cluster_id, proof, detail);
  if (!(id_ok && secret_ok)) {
    return absl::PermissionDeniedError(absl::StrCat(
        what, " refused: the cluster id or secret is wrong; use the job's "
        "PAGEWIRE_CLUSTER_ID and PAGEWIRE_SECRET"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> Coordinator::AssignRankLocked(int requested) const {
  int rank = requested;
  if (rank == -1) {
    for (int r = 0; r < config_.nranks; ++r) {
      if (!slots_[r].joined) {
        rank = r;
        break;
      }
    }
    if (rank == -1) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "all %d ranks of this job have already joined; start the "
          "coordinator with a larger --nranks to add nodes",
          config_.nranks));
    }
  } else if (slots_[rank].joined) {
    const Slot& s = slots_[rank];
    if (s.state == proto::Member::ALIVE) {
      return absl::AlreadyExistsError(absl::StrFormat(
          "rank %d is already taken by %s; give each node a distinct rank "
          "or ask for -1 (any free rank)",
          rank, DescribeEndpoint(s.endpoint)));
    }
    return absl::AlreadyExistsError(absl::StrFormat(
        "rank %d already was a member and is now %s; ranks are not reused "
        "within a job, restart the whole job",
        rank, StateName(s.state)));
  }

  return rank;
}

absl::StatusOr<proto::JoinReply> Coordinator::Join(
    const proto::JoinRequest& request) {
  if (absl::Status s = CheckJoin(request); !s.ok()) return s;
  absl::MutexLock l(&mu_);
  if (shutdown_) {
    return absl::UnavailableError("the coordinator is shutting down");
  }
  absl::StatusOr<int> assigned = AssignRankLocked(request.requested_rank());
  if (!assigned.ok()) return assigned.status();
  const int rank = *assigned;
  Slot& slot = slots_[rank];
  slot.joined = true;
  slot.state = proto::Member::ALIVE;
  slot.endpoint = request.endpoint();
  slot.last_heartbeat = Clock::now();
  slot.token = DeriveSessionToken(key_, request.proof().nonce(), rank);
  PublishLocked();
  lease_cv_.Signal();  // the monitor may have had no lease to watch
  Debug("coordinator: rank %d joined from %s (epoch %d)", rank,
      DescribeEndpoint(slot.endpoint), epoch_);

  proto::JoinReply reply;
  reply.set_rank(rank);
  reply.set_nranks(config_.nranks);
  reply.set_global_base(config_.global_base);
  reply.set_global_size(config_.global_size);
  reply.set_epoch(epoch_);
  reply.set_heartbeat_interval_ms(
      static_cast<uint32_t>(absl::ToInt64Milliseconds(config_.heartbeat_interval)));
  reply.set_lease_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(config_.lease)));
  *reply.mutable_view() = view_;
  return reply;
}

// ---------------------------------------------------------------------------
// Barriers

std::vector<int> Coordinator::WaitingAt(uint64_t seq) const {
  absl::MutexLock l(&mu_);
  auto it = barriers_.find(seq);
  if (it == barriers_.end()) return {};
  return std::vector<int>(it->second.arrived.begin(), it->second.arrived.end());
}

void Coordinator::Barrier(const proto::BarrierRequest& request,
                          BarrierDone done) {
  std::vector<Completion> completions;
  absl::Status refused;
  {
    absl::MutexLock l(&mu_);
    const uint64_t seq = request.seq();
    if (shutdown_) {
      refused = absl::UnavailableError(absl::StrCat(
          "barrier ", seq, " refused: the coordinator is shutting down"));
    } else if (absl::Status s = CheckAliveLocked(request.rank(), "Barrier");
               !s.ok()) {
      refused = s;
    } else if (auto it = failed_barriers_.find(seq);
               it != failed_barriers_.end()) {
      refused = absl::UnavailableError(it->second);
    } else {
      PendingBarrier& b = barriers_[seq];
      b.arrived.insert(request.rank());
      if (!request.failure().empty()) {
        b.failures[request.rank()] = request.failure();
      }
      if (!request.call().empty()) b.calls[request.rank()] = request.call();
      b.waiters.push_back(std::move(done));
      CompleteBarriersLocked(&completions);
    }
  }
  if (!refused.ok()) {
    done(refused);
    return;
  }
  for (Completion& c : completions) c();
}

void Coordinator::CompleteBarriersLocked(std::vector<Completion>* out) {
  for (auto it = barriers_.begin(); it != barriers_.end();) {
    bool complete = true;
    for (int r = 0; r < config_.nranks && complete; ++r) {
      // Ranks that have not joined yet are waited for; DEAD and LEFT
      // ranks are not (a barrier pending when they went failed then).
      if (LiveLocked(r) && it->second.arrived.count(r) == 0) complete = false;
    }
    if (!complete) {
      ++it;
      continue;
    }
    const uint64_t epoch = epoch_;
    absl::StatusOr<uint64_t> result = epoch;
    const std::map<int, std::string>& calls = it->second.calls;
    const bool differ = std::any_of(calls.begin(), calls.end(), [&](const auto& c) {
      return c.second != calls.begin()->second;
    });
    if (differ) {
      std::string msg = "the ranks called different collectives at the same "
                        "point; call collectives in the same order with the "
                        "same arguments on every rank";
      for (const auto& [r, call] : calls) absl::StrAppend(&msg, "; rank ", r, ": ", call);
      result = absl::FailedPreconditionError(msg);
    } else if (!it->second.failures.empty()) {
      // The same answer for every rank: who failed, and why.
      std::string msg = absl::StrCat("the collective call failed on ",
                                     it->second.failures.size(), " of ",
                                     it->second.arrived.size(), " ranks");
      for (const auto& [r, why] : it->second.failures) {
        absl::StrAppend(&msg, "; rank ", r, ": ", why);
      }
      result = absl::FailedPreconditionError(msg);
    }
    for (BarrierDone& d : it->second.waiters) {
      out->push_back([d = std::move(d), result] { d(result); });
    }
    it = barriers_.erase(it);
  }
}

// ---------------------------------------------------------------------------
// Dataspaces

}  // namespace pagewire::control
