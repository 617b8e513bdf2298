// coordinator_membership.cc - who is a member: heartbeats and leases
// (silence makes a rank SUSPECT), the evidence that makes it DEAD (its
// control connection closing, the process manager's or an operator's
// word), leaving, and the views every member watches.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/base/log.h"
#include "runtime/control/coordinator.h"
#include "runtime/control/credentials.h"

namespace pagewire::control {
namespace {

int64_t Millis(std::chrono::steady_clock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

const char* StateName(proto::Member::State s) {
  return proto::Member::State_Name(s).c_str();
}

}  // namespace

absl::StatusOr<proto::HeartbeatReply> Coordinator::Heartbeat(
    const proto::HeartbeatRequest& request) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = CheckAliveLocked(request.rank(), "Heartbeat"); !s.ok()) {
    return s;
  }
  Slot& slot = slots_[request.rank()];
  const Clock::time_point now = Clock::now();
  if (slot.state == proto::Member::SUSPECT) {
    Warning("coordinator: rank %d heard from again after %d ms of silence; "
            "no longer suspected (epoch %d)",
            request.rank(), Millis(now - slot.last_heartbeat), epoch_ + 1);
    slot.state = proto::Member::ALIVE;
    slot.reason.clear();
    PublishLocked();
  }
  // The monitor need not wake: this lease only moved later.
  slot.last_heartbeat = now;
  ++slot.heartbeats;
  proto::HeartbeatReply reply;
  reply.set_epoch(epoch_);
  return reply;
}

uint64_t Coordinator::HeartbeatsFrom(int rank) const {
  absl::MutexLock l(&mu_);
  if (rank < 0 || rank >= config_.nranks) return 0;
  return slots_[rank].heartbeats;
}

absl::Status Coordinator::Leave(const proto::LeaveRequest& request) {
  std::vector<Completion> done;
  {
    absl::MutexLock l(&mu_);
    const int rank = request.rank();
    if (rank >= 0 && rank < config_.nranks && slots_[rank].joined &&
        slots_[rank].state == proto::Member::LEFT) {
      return absl::OkStatus();  // a retried Leave
    }
    if (absl::Status s = CheckAliveLocked(rank, "Leave"); !s.ok()) return s;
    slots_[rank].state = proto::Member::LEFT;
    slots_[rank].reason = absl::StrCat(
        "left: ", request.reason().empty() ? "no reason given" : request.reason());
    PublishLocked();
    Debug("coordinator: rank %d left (%s), epoch %d", rank,
        request.reason().empty() ? "no reason given" : request.reason(),
        epoch_);
    MemberGoneLocked(
        absl::StrCat("rank ", rank, " left the job (", request.reason(), ")"),
        &done);
  }
  for (Completion& c : done) c();
  return absl::OkStatus();
}

proto::MembershipView Coordinator::CurrentView() const {
  absl::MutexLock l(&mu_);
  return view_;
}

absl::Status Coordinator::AddWatcher(int rank, uint64_t since_epoch,
                                     ViewSink* sink) {
  absl::MutexLock l(&mu_);
  if (shutdown_) {
    return absl::UnavailableError("the coordinator is shutting down");
  }
  if (rank < -1 || rank >= config_.nranks) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "WatchView from rank %d: out of range 0..%d (use -1 to watch "
        "without being a member)",
        rank, config_.nranks - 1));
  }
  if (rank >= 0 && slots_[rank].joined && !LiveLocked(rank)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "WatchView from rank %d, which is %s (%s); it is no longer a member",
        rank, StateName(slots_[rank].state), slots_[rank].reason));
  }
  if (view_.epoch() > since_epoch) sink->Push(view_, /*last=*/false);
  watchers_.push_back(Watcher{rank, sink});
  return absl::OkStatus();
}

void Coordinator::RemoveWatcher(ViewSink* sink, bool connection_closed) {
  std::vector<Completion> done;
  {
    absl::MutexLock l(&mu_);
    auto it = std::find_if(watchers_.begin(), watchers_.end(),
                           [sink](const Watcher& w) { return w.sink == sink; });
    // Not registered: the coordinator itself ended the stream (the rank
    // left or died, or shutdown), so its closing says nothing.
    if (it == watchers_.end()) return;
    const int rank = it->rank;
    watchers_.erase(it);
    if (!connection_closed || shutdown_ || rank < 0 || !slots_[rank].joined ||
        !LiveLocked(rank)) {
      return;
    }
    // Another stream of the same rank is still open: it is connected.
    for (const Watcher& w : watchers_) {
      if (w.rank == rank) return;
    }
    DeclareDeadLocked(rank,
                      "its control connection closed while it was a member "
                      "(the process ended without pw_finalize)",
                      &done);
  }
  for (Completion& c : done) c();
}

void Coordinator::PublishLocked() {
  ++epoch_;
  view_.Clear();
  view_.set_epoch(epoch_);
  for (int r = 0; r < config_.nranks; ++r) {
    const Slot& s = slots_[r];
    if (!s.joined) continue;
    proto::Member* m = view_.add_members();
    m->set_rank(r);
    m->set_state(s.state);
    m->set_reason(s.reason);
    *m->mutable_endpoint() = s.endpoint;
  }
  // Every watcher gets every view, in epoch order, because this runs under
  // mu_. A watcher whose own rank is gone gets this last view and ends.
  std::vector<Watcher> keep;
  keep.reserve(watchers_.size());
  for (const Watcher& w : watchers_) {
    const bool gone = w.rank >= 0 && slots_[w.rank].joined && !LiveLocked(w.rank);
    w.sink->Push(view_, gone);
    if (!gone) keep.push_back(w);
  }
  watchers_ = std::move(keep);
}

void Coordinator::MemberGoneLocked(const std::string& why,
                                   std::vector<Completion>* out) {
  // A pending barrier can no longer mean "everyone got here": fail every
  // waiter, naming the rank, and remember why for latecomers.
  for (auto& [seq, barrier] : barriers_) {
    const std::string msg = absl::StrFormat(
        "barrier %d cannot complete: %s at epoch %d", seq, why, epoch_);
    failed_barriers_[seq] = msg;
    for (BarrierDone& d : barrier.waiters) {
      out->push_back([d = std::move(d), msg] { d(absl::UnavailableError(msg)); });
    }
  }
  barriers_.clear();
  // The gone rank will never free its dataspaces; release those every
  // remaining rank has freed.
  ReleaseFreedLocked();
}

bool Coordinator::LiveLocked(int rank) const {
  const Slot& s = slots_[rank];
  return !(s.joined && (s.state == proto::Member::DEAD ||
                        s.state == proto::Member::LEFT));
}

absl::Status Coordinator::Authenticate(int rank,
                                       absl::string_view token) const {
  absl::MutexLock l(&mu_);
  bool ok = false;
  for (int r = 0; r < config_.nranks; ++r) {
    if (rank != -1 && r != rank) continue;
    const Slot& s = slots_[r];
    // Compared in full, without an early exit.
    unsigned char diff = s.token.size() == token.size() && !s.token.empty() ? 0 : 1;
    for (size_t i = 0; i < s.token.size() && i < token.size(); ++i) {
      diff |= static_cast<unsigned char>(s.token[i] ^ token[i]);
    }
    ok |= s.joined && diff == 0;
  }
  if (ok) return absl::OkStatus();
  return absl::PermissionDeniedError(
      "refused: this call needs the session token Join gave the rank it "
      "names");
}

absl::Status Coordinator::CheckAliveLocked(int rank, const char* what) const {
  if (rank < 0 || rank >= config_.nranks) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s from rank %d: out of range, this job has ranks 0..%d", what, rank,
        config_.nranks - 1));
  }
  const Slot& s = slots_[rank];
  if (!s.joined) {
    return absl::NotFoundError(absl::StrFormat(
        "%s from rank %d, which has not joined; call Join first", what, rank));
  }
  // A SUSPECT rank that speaks is still a member.
  if (!LiveLocked(rank)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s from rank %d, which is %s since an earlier view (%s); a rank "
        "that was declared DEAD or LEFT cannot act in the job any more, "
        "restart the job",
        what, rank, StateName(s.state), s.reason));
  }
  return absl::OkStatus();
}

void Coordinator::DeclareDeadLocked(int rank, const std::string& evidence,
                                    std::vector<Completion>* out) {
  Slot& slot = slots_[rank];
  slot.state = proto::Member::DEAD;
  slot.reason = evidence;
  // Logged before any member can see the view that says so.
  Warning("coordinator: rank %d declared DEAD at epoch %d: %s", rank,
          epoch_ + 1, evidence);
  PublishLocked();
  MemberGoneLocked(absl::StrFormat("rank %d became DEAD (%s)", rank, evidence),
                   out);
}

absl::StatusOr<proto::DeclareDeadReply> Coordinator::DeclareDead(
    const proto::DeclareDeadRequest& request) {
  if (absl::Status s = CheckCredentials(
          request.cluster_id(), request.proof(),
          DeclareDeadDetail(request.rank(), request.reason()), "DeclareDead");
      !s.ok()) {
    return s;
  }
  std::vector<Completion> done;
  proto::DeclareDeadReply reply;
  {
    absl::MutexLock l(&mu_);
    const int rank = request.rank();
    if (rank < 0 || rank >= config_.nranks) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "DeclareDead: rank %d is out of range, this job has ranks 0..%d",
          rank, config_.nranks - 1));
    }
    // A rank that never joined is declared too: barriers stop waiting
    // for it.
    if (!slots_[rank].joined || LiveLocked(rank)) {
      slots_[rank].joined = true;
      DeclareDeadLocked(
          rank,
          request.reason().empty() ? "declared dead by an operator"
                                   : request.reason(),
          &done);
      reply.set_declared(true);
    }
    reply.set_epoch(epoch_);
  }
  for (Completion& c : done) c();
  return reply;
}

absl::StatusOr<proto::JobStatusReply> Coordinator::JobStatus(
    const proto::JobStatusRequest& request) const {
  if (absl::Status s = CheckCredentials(request.cluster_id(), request.proof(),
                                        "", "JobStatus");
      !s.ok()) {
    return s;
  }
  absl::MutexLock l(&mu_);
  const Clock::time_point now = Clock::now();
  proto::JobStatusReply reply;
  *reply.mutable_view() = view_;
  reply.set_lease_ms(absl::ToInt64Milliseconds(config_.lease));
  if (config_.dead_after != absl::InfiniteDuration()) {
    reply.set_dead_after_ms(absl::ToInt64Milliseconds(config_.dead_after));
  }
  for (int r = 0; r < config_.nranks; ++r) {
    const Slot& s = slots_[r];
    proto::RankStatus* rs = reply.add_ranks();
    rs->set_rank(r);
    rs->set_state(s.state);
    rs->set_heartbeats(s.heartbeats);
    rs->set_reason(s.reason);
    if (s.joined && LiveLocked(r)) {
      rs->set_silent_ms(Millis(now - s.last_heartbeat));
    }
    rs->set_watching(std::any_of(watchers_.begin(), watchers_.end(),
                                 [r](const Watcher& w) { return w.rank == r; }));
  }
  return reply;
}

void Coordinator::LeaseMonitorLoop() {
  absl::MutexLock l(&mu_);
  while (!shutdown_) {
    std::vector<Completion> done;
    const Clock::time_point now = Clock::now();
    const Clock::time_point next = ExpireLeasesLocked(now, &done);
    if (!done.empty()) {
      mu_.Unlock();
      for (Completion& c : done) c();
      mu_.Lock();
      continue;
    }
    if (next == Clock::time_point::max()) {
      lease_cv_.Wait(&mu_);
    } else {
      lease_cv_.WaitWithTimeout(&mu_, absl::FromChrono(next - now));
    }
  }
}

Coordinator::Clock::time_point Coordinator::ExpireLeasesLocked(
    Clock::time_point now, std::vector<Completion>* out) {
  const auto lease = absl::ToChronoNanoseconds(config_.lease);
  const bool deadline = config_.dead_after != absl::InfiniteDuration();
  const auto dead_after =
      deadline ? absl::ToChronoNanoseconds(config_.dead_after) : lease;
  Clock::time_point next = Clock::time_point::max();
  std::vector<int> suspected;
  for (int r = 0; r < config_.nranks; ++r) {
    Slot& s = slots_[r];
    if (!s.joined) continue;
    const int64_t silent_ms = Millis(now - s.last_heartbeat);
    if (s.state == proto::Member::ALIVE) {
      if (s.last_heartbeat + lease > now) {
        next = std::min(next, s.last_heartbeat + lease);
        continue;
      }
      // Silence is suspicion, not death: the rank stays a member and
      // faults on its pages wait for it.
      s.state = proto::Member::SUSPECT;
      s.reason = absl::StrFormat("no heartbeat for %d ms, lease %d ms",
                                 silent_ms,
                                 absl::ToInt64Milliseconds(config_.lease));
      suspected.push_back(r);
    }
    if (s.state != proto::Member::SUSPECT || !deadline) continue;
    if (s.last_heartbeat + dead_after > now) {
      next = std::min(next, s.last_heartbeat + dead_after);
      continue;
    }
    DeclareDeadLocked(
        r,
        absl::StrFormat("no heartbeat for %d ms, past the deadline of %d ms "
                        "(PAGEWIRE_DEAD_AFTER_MS)",
                        silent_ms, absl::ToInt64Milliseconds(config_.dead_after)),
        out);
  }
  if (!suspected.empty()) {
    for (int r : suspected) {
      Warning("coordinator: rank %d is SUSPECT at epoch %d: %s; it stays a "
              "member and faults on its pages wait (if its host is gone, "
              "end it: pagewire-ctl declare-dead %d)",
              r, epoch_ + 1, slots_[r].reason, r);
    }
    PublishLocked();
    // Recompute: a deadline may now be due.
    next = now;
  }
  return next;
}

}  // namespace pagewire::control
