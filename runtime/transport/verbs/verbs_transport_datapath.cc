// verbs_transport_datapath.cc - VerbsTransport's datapath: chains of
// one-sided work requests posted with one ibv_post_send, selective
// signalling, the shadow ring that turns a send-CQ entry back into the
// caller's wr_id in O(1), back-pressure (queued work posted as completions
// free slots), completion bursts, and message SENDs. Setup, connections and
// the receive thread are in verbs_transport.cc.
#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_format.h"
#include "runtime/base/log.h"
#include "runtime/transport/verbs/verbs_transport.h"
#include "runtime/transport/work_chain.h"

namespace pagewire {

namespace {

constexpr uint64_t kShadowMask = VerbsTransport::kSendQueueDepth - 1;


// The interface's status for a failed send-CQ entry.
WcStatus MapStatus(ibv_wc_status s) {
  switch (s) {
    case IBV_WC_SUCCESS: return WcStatus::kSuccess;
    case IBV_WC_REM_ACCESS_ERR: return WcStatus::kRemoteAccessError;
    case IBV_WC_LOC_PROT_ERR: return WcStatus::kLocalProtectionError;
    // The NIC's retries ran out: the peer stopped answering.
    case IBV_WC_RETRY_EXC_ERR:
    case IBV_WC_RNR_RETRY_EXC_ERR:
    // Flushed because the QP is in ERR after an error or PeerDied.
    case IBV_WC_WR_FLUSH_ERR:
      return WcStatus::kPeerGone;
    default:
      return WcStatus::kTransportError;
  }
}

WorkCompletion MakeCompletion(uint64_t wr_id, WcStatus status, WorkOpcode op,
                              int peer, uint32_t byte_len) {
  WorkCompletion wc;
  wc.wr_id = wr_id;
  wc.status = status;
  wc.opcode = op;
  wc.peer = peer;
  wc.byte_len = byte_len;
  return wc;
}

}  // namespace

// ---------------------------------------------------------------------------
// Posting (any thread).

bool VerbsTransport::LocalOk(const WorkRequest& wr) const {
  auto it = by_lkey_.find(wr.lkey);
  if (it == by_lkey_.end()) return false;
  return InsideRegion(reinterpret_cast<uint64_t>(wr.local), wr.length,
                it->second.region.addr, it->second.region.length);
}

void VerbsTransport::AddToChain(Connection* c, uint32_t n,
                                const WorkRequest& wr, bool message,
                                uint16_t type, absl::Span<const char> body) {
  const uint64_t seq = c->posted + n;
  SendSlot& slot = c->shadow[seq & kShadowMask];
  slot.wr_id = wr.wr_id;
  slot.length = message ? static_cast<uint32_t>(body.size()) : wr.length;
  slot.opcode = wr.opcode;
  slot.user_signaled = !message && wr.signaled;
  slot.message = message;

  ibv_send_wr& w = c->chain[n];
  ibv_sge& sge = c->sges[n];
  w = ibv_send_wr{};
  sge = ibv_sge{};
  w.wr_id = seq;  // the shadow slot; the caller's wr_id is in it
  w.sg_list = &sge;
  w.num_sge = 1;
  if (n > 0) c->chain[n - 1].next = &w;
  // Every SEND is signalled so its buffer comes back; one-sided work when the
  // caller asks, or every kUnsigBatch-th so the send queue drains.
  const bool signal =
      message || wr.signaled || c->unsignaled_run + 1 >= kUnsigBatch;
  c->unsignaled_run = signal ? 0 : c->unsignaled_run + 1;
  w.send_flags = signal ? IBV_SEND_SIGNALED : 0;

  if (message) {
    char* buf = c->send_buffer(c->messages_posted++);
    if (!body.empty()) std::memcpy(buf, body.data(), body.size());
    sge.addr = reinterpret_cast<uint64_t>(buf);
    sge.length = static_cast<uint32_t>(body.size());
    sge.lkey = c->buffers_mr->lkey;
    if (body.empty()) w.num_sge = 0;
    w.opcode = IBV_WR_SEND_WITH_IMM;
    w.imm_data = htonl(type);
    return;
  }
  sge.addr = reinterpret_cast<uint64_t>(wr.local);
  sge.length = wr.length;
  sge.lkey = wr.lkey;
  if (wr.length == 0) w.num_sge = 0;
  switch (wr.opcode) {
    case WorkOpcode::kRead:
    case WorkOpcode::kWrite:
      w.opcode = wr.opcode == WorkOpcode::kRead ? IBV_WR_RDMA_READ
                                                : IBV_WR_RDMA_WRITE;
      w.wr.rdma.remote_addr = wr.remote_addr;
      w.wr.rdma.rkey = wr.rkey;
      break;
    case WorkOpcode::kFetchAdd:
    case WorkOpcode::kCompareSwap:
      w.opcode = wr.opcode == WorkOpcode::kFetchAdd
                     ? IBV_WR_ATOMIC_FETCH_AND_ADD
                     : IBV_WR_ATOMIC_CMP_AND_SWP;
      w.wr.atomic.remote_addr = wr.remote_addr;
      w.wr.atomic.rkey = wr.rkey;
      w.wr.atomic.compare_add = wr.compare_add;
      w.wr.atomic.swap = wr.swap;
      break;
  }
}

void VerbsTransport::PostChainLocked(Connection* c, uint32_t n) {
  if (n == 0) return;
  // Counted before the NIC can complete them, so the consumer never sees
  // nothing in flight while a completion is on its way.
  unretired_.fetch_add(n);
  ibv_send_wr* bad = nullptr;
  const int rc = ibv_post_send(c->qp.get(), &c->chain[0], &bad);
  if (rc == 0) {
    c->posted += n;
    WakeUnarmedConsumer();
    return;
  }
  // The QP refused part of the chain (it went to ERR under us, or the
  // provider failed): the refused tail completes here, and the pair is
  // treated as failed.
  const uint32_t accepted =
      bad == nullptr ? 0 : static_cast<uint32_t>(bad - &c->chain[0]);
  c->posted += accepted;
  unretired_.fetch_sub(n - accepted);
  if (accepted > 0) WakeUnarmedConsumer();
  absl::InlinedVector<WorkCompletion, 8> failed;
  for (uint32_t i = accepted; i < n; ++i) {
    const SendSlot& slot = c->shadow[(c->posted + i - accepted) & kShadowMask];
    if (slot.message) {
      --c->messages_posted;
      continue;
    }
    failed.push_back(MakeCompletion(slot.wr_id, WcStatus::kTransportError,
                                    slot.opcode, c->peer, 0));
  }
  const std::string why = absl::StrFormat(
      "ibv_post_send refused %d of %d work requests: %s", n - accepted, n,
      verbs_internal::ErrnoStr(rc));
  Error("verbs: rank %d: peer %d: %s; queue pair %d moved to ERR", rank_,
        c->peer, why, c->qp.qp_num());
  (void)c->qp.ToError();
  BreakLocked(c, Connection::State::kBroken, why);
  PushSoftware(failed);
}

void VerbsTransport::PumpLocked(Connection* c) {
  if (c->state != Connection::State::kConnected) return;
  uint32_t n = 0;
  while (!c->backlog.empty() && c->in_flight() + n < kSendQueueDepth) {
    const Queued& q = c->backlog.Front();
    if (q.message) {
      if (c->messages_posted - c->messages_retired >= kMessageSlots) break;
      const std::string& body = c->message_bodies.front();
      AddToChain(c, n++, q.wr, true, q.type,
                 absl::MakeConstSpan(body.data(), body.size()));
      c->message_bodies.pop_front();
    } else {
      AddToChain(c, n++, q.wr, false, 0, {});
    }
    c->backlog.PopFront();
  }
  PostChainLocked(c, n);
}

void VerbsTransport::BreakLocked(Connection* c, Connection::State state,
                                 const std::string& reason) {
  if (c->state != Connection::State::kDead) {
    c->state = state;
    c->broken_reason = reason;
  }
  if (c->in_flight() == 0) FailBacklogLocked(c);
}

void VerbsTransport::FailBacklogLocked(Connection* c) {
  if (c->backlog.empty()) return;
  absl::InlinedVector<WorkCompletion, 16> failed;
  size_t messages = 0;
  while (!c->backlog.empty()) {
    const Queued& q = c->backlog.Front();
    if (q.message) {
      ++messages;
    } else {
      failed.push_back(MakeCompletion(q.wr.wr_id, WcStatus::kPeerGone,
                                      q.wr.opcode, c->peer, 0));
    }
    c->backlog.PopFront();
  }
  c->message_bodies.clear();
  if (messages > 0) {
    Warning("verbs: rank %d: %d queued messages to peer %d dropped: %s",
            rank_, messages, c->peer, c->broken_reason);
  }
  PushSoftware(failed);
}

absl::Status VerbsTransport::PostSend(int peer, WorkRequest* chain) {
  if (absl::Status s = ValidateChain(
          peer, chain,
          ChainLimits{"verbs", max_msg_sz_, device_name_.c_str(), atomics_});
      !s.ok()) {
    return s;
  }
  Connection* c = FindConnection(peer);
  bool dead;
  {
    absl::ReaderMutexLock lock(&mu_);
    dead = dead_.contains(peer);
  }
  absl::InlinedVector<WorkCompletion, 4> failed;
  auto fail = [&](const WorkRequest& wr, WcStatus status) {
    failed.push_back(MakeCompletion(wr.wr_id, status, wr.opcode, peer, 0));
  };
  if (c == nullptr) {
    if (!dead) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "verbs: PostSend to peer %d, which was never connected "
          "(EndpointFor and Connect first)",
          peer));
    }
    for (const WorkRequest* wr = chain; wr != nullptr; wr = wr->next) {
      fail(*wr, WcStatus::kPeerGone);
    }
    PushSoftware(failed);
    return absl::OkStatus();
  }
  {
    absl::ReaderMutexLock regions_lock(&regions_mu_);
    absl::MutexLock lock(&c->mu);
    if (c->state == Connection::State::kInit) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "verbs: PostSend to peer %d, whose queue pair is not connected yet "
          "(Connect first)",
          peer));
    }
    const bool gone = c->state != Connection::State::kConnected;
    uint32_t n = 0;
    for (const WorkRequest* wr = chain; wr != nullptr; wr = wr->next) {
      if (!LocalOk(*wr)) {
        fail(*wr, WcStatus::kLocalProtectionError);
        continue;
      }
      if (IsAtomic(wr->opcode) && wr->remote_addr % 8 != 0) {
        // The NIC would reject it and break the pair; TcpTransport answers
        // a remote access error and carries on, and so does this.
        Warning("verbs: rank %d: peer %d: %s wr_id %d on 0x%x: atomic not on "
                "an aligned 8-byte word; completes with %s, not sent",
                rank_, peer, WorkOpcodeName(wr->opcode), wr->wr_id,
                wr->remote_addr, WcStatusName(WcStatus::kRemoteAccessError));
        fail(*wr, WcStatus::kRemoteAccessError);
        continue;
      }
      if (gone && c->in_flight() == 0 && c->backlog.empty()) {
        fail(*wr, WcStatus::kPeerGone);
        continue;
      }
      if (!gone && c->backlog.empty() &&
          c->in_flight() + n < kSendQueueDepth) {
        AddToChain(c, n++, *wr, false, 0, {});
        continue;
      }
      // Back-pressure, or a failed pair still flushing: queue in order.
      Queued q;
      q.wr = *wr;
      q.wr.next = nullptr;
      c->backlog.Push(q);
    }
    PostChainLocked(c, n);
    // Still under the pair's lock: another poster's later failures cannot
    // reach the completion queue ahead of these.
    PushSoftware(failed);
  }
  return absl::OkStatus();
}

absl::Status VerbsTransport::SendMessage(int peer, uint16_t type,
                                         absl::Span<const char> body) {
  if (body.size() > kMaxMessageBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "verbs: message of %d bytes to peer %d exceeds the %d-byte limit",
        body.size(), peer, kMaxMessageBytes));
  }
  Connection* c = FindConnection(peer);
  bool dead;
  {
    absl::ReaderMutexLock lock(&mu_);
    dead = dead_.contains(peer);
  }
  if (dead) {
    return absl::UnavailableError(
        absl::StrFormat("verbs: SendMessage to peer %d, which is dead", peer));
  }
  if (c == nullptr) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "verbs: SendMessage to peer %d, which was never connected", peer));
  }
  absl::MutexLock lock(&c->mu);
  switch (c->state) {
    case Connection::State::kInit:
      return absl::FailedPreconditionError(absl::StrFormat(
          "verbs: SendMessage to peer %d, whose queue pair is not connected "
          "yet",
          peer));
    case Connection::State::kBroken:
    case Connection::State::kDead:
      return absl::UnavailableError(absl::StrFormat(
          "verbs: SendMessage to peer %d, whose queue pair failed: %s", peer,
          c->broken_reason));
    case Connection::State::kConnected:
      break;
  }
  if (c->backlog.empty() && c->in_flight() < kSendQueueDepth &&
      c->messages_posted - c->messages_retired < kMessageSlots) {
    AddToChain(c, 0, WorkRequest(), true, type, body);
    PostChainLocked(c, 1);
    return absl::OkStatus();
  }
  Queued q;
  q.message = true;
  q.type = type;
  c->backlog.Push(q);
  c->message_bodies.emplace_back(body.data(), body.size());
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Completions (the consumer thread).

int VerbsTransport::Retire(const ibv_wc& wc, WorkCompletion* out) {
  Connection* c = FindByQpNum(wc.qp_num);
  if (c == nullptr) {
    Warning("verbs: rank %d: a send completion for unknown qp %d (%s)", rank_,
            wc.qp_num, ibv_wc_status_str(wc.status));
    return 0;
  }
  absl::MutexLock lock(&c->mu);
  const uint64_t seq = wc.wr_id;
  if (seq < c->retired || seq >= c->posted) {
    Warning("verbs: rank %d: peer %d: a send completion for position %d, "
            "outside the %d..%d in flight; ignored",
            rank_, c->peer, seq, c->retired, c->posted);
    return 0;
  }
  // RC completes in order: every request before this one is done, and the
  // unsignalled ones among them succeeded (a failure always completes).
  for (uint64_t s = c->retired; s <= seq; ++s) {
    if (c->shadow[s & kShadowMask].message) ++c->messages_retired;
  }
  const SendSlot slot = c->shadow[seq & kShadowMask];
  unretired_.fetch_sub(static_cast<int64_t>(seq + 1 - c->retired));
  c->retired = seq + 1;

  int produced = 0;
  if (wc.status == IBV_WC_SUCCESS) {
    if (slot.user_signaled) {
      *out = MakeCompletion(slot.wr_id, WcStatus::kSuccess, slot.opcode,
                            c->peer, slot.length);
      produced = 1;
    }
  } else {
    const WcStatus status = MapStatus(wc.status);
    const char* op = slot.message ? "SEND (message)" : WorkOpcodeName(slot.opcode);
    if (wc.status == IBV_WC_WR_FLUSH_ERR) {
      ++c->flushed;
      if (slot.message) {
        Warning("verbs: rank %d: a message to peer %d was flushed: %s", rank_,
                c->peer, c->broken_reason);
      }
    } else {
      std::string why = absl::StrFormat("%s wr_id %d failed: %s", op,
                                        slot.wr_id,
                                        ibv_wc_status_str(wc.status));
      const char* hint = "";
      if (wc.status == IBV_WC_RETRY_EXC_ERR) {
        hint = " (no acknowledgement within the NIC's transport retry: the "
               "peer is presumed gone)";
      } else if (wc.status == IBV_WC_REM_ACCESS_ERR) {
        hint = " (unknown rkey or address outside the remote region)";
      }
      Error("verbs: rank %d: peer %d: %s%s; completes with %s; queue pair %d "
            "is in error, %d operations behind it complete with %s",
            rank_, c->peer, why, hint, WcStatusName(status), c->qp.qp_num(),
            c->in_flight() + c->backlog.size(),
            WcStatusName(WcStatus::kPeerGone));
      if (c->state == Connection::State::kConnected ||
          c->state == Connection::State::kInit) {
        BreakLocked(c, Connection::State::kBroken, why);
      }
    }
    if (!slot.message) {
      *out = MakeCompletion(slot.wr_id, status, slot.opcode, c->peer, 0);
      produced = 1;
    }
  }
  if (c->state == Connection::State::kConnected) {
    if (!c->backlog.empty()) PumpLocked(c);
  } else if (c->in_flight() == 0) {
    FailBacklogLocked(c);  // after the flushes, in posting order
  }
  return produced;
}

void VerbsTransport::PushSoftware(absl::Span<const WorkCompletion> wcs) {
  if (wcs.empty()) return;
  absl::MutexLock lock(&software_mu_);
  for (const WorkCompletion& wc : wcs) software_.Push(wc);
  RingBellLocked();
}

void VerbsTransport::RingBellLocked() {
  if (software_bell_) return;
  // Rung under the lock so a drain can never reset it before it is set.
  software_bell_ = true;
  uint64_t one = 1;
  ssize_t n = ::write(software_fd_.get(), &one, sizeof(one));
  (void)n;
}

int VerbsTransport::DrainSoftware(WorkCompletion* out, int max) {
  absl::MutexLock lock(&software_mu_);
  int n = 0;
  while (n < max && !software_.empty()) {
    out[n++] = software_.Front();
    software_.PopFront();
  }
  if (software_.empty() && software_bell_) {
    software_bell_ = false;
    uint64_t count;
    ssize_t r = ::read(software_fd_.get(), &count, sizeof(count));
    (void)r;
  }
  return n;
}

int VerbsTransport::PollCompletions(WorkCompletion* out, int max) {
  if (max <= 0) return 0;
  // Software completions first: each is older than what is still in the CQ
  // for its peer.
  int n = DrainSoftware(out, max);
  ibv_wc wcs[kCompletionBurst];
  while (n < max) {
    // Each CQ entry makes at most one completion, so `out` cannot overflow.
    const int want = std::min(kCompletionBurst, max - n);
    const int k = ibv_poll_cq(send_cq_.get(), want, wcs);
    if (k < 0) {
      Error("verbs: rank %d: ibv_poll_cq(send) failed", rank_);
      break;
    }
    for (int i = 0; i < k; ++i) n += Retire(wcs[i], out + n);
    if (k < want) break;
  }
  // Retiring a failed peer's last flush fails its queued work: deliver it
  // now if there is room.
  if (n < max) n += DrainSoftware(out + n, max - n);
  return n;
}

void VerbsTransport::ArmCompletionFd() {
  // rdma-core's pattern (ibv_get_cq_event(3)): take the event, request the
  // next one, poll again. A request is one-shot and raises at most one
  // event, so the channel is read only while a request stands, once, and a
  // request is made only when none stands: the consumer pays one read and
  // one ibv_req_notify_cq per wake-up by the NIC, and one read when woken
  // by the software bell, instead of reading the channel until EAGAIN and
  // re-arming every time.
  if (send_armed_) {
    ibv_cq* cq = nullptr;
    void* context = nullptr;
    if (ibv_get_cq_event(send_channel_.get(), &cq, &context) != 0) {
      if (errno == EAGAIN) {
        // No event yet: either no completion arrived since the request (the
        // caller has drained the CQ, and the next one will raise the event),
        // or the event is on its way and will wake the consumer once more.
        // The request still stands; re-arming would cost a system call for
        // nothing.
        return;
      }
      // Not expected from a non-blocking channel. Re-request (harmless if a
      // request stands) and poll, so nothing is left without a wake-up.
      Error("verbs: rank %d: ibv_get_cq_event(send): %s", rank_,
            verbs_internal::ErrnoStr(errno));
    } else {
      send_armed_ = false;
      if (++send_events_unacked_ == kCqEventAckBatch) {
        ibv_ack_cq_events(send_cq_.get(), send_events_unacked_);
        send_events_unacked_ = 0;
      }
    }
  }
  RequestNotificationIfBusy();
}

void VerbsTransport::PrepareToSleep() {
  consumer_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  // A standing request raises its event for whatever completes next.
  if (!send_armed_) RequestNotificationIfBusy();
}

void VerbsTransport::RequestNotificationIfBusy() {
  // Against WakeUnarmedConsumer: the flag is set before the count is read,
  // and a poster counts its work before it reads the flag (all sequentially
  // consistent), so either this sees the work or the poster sees the flag.
  sleeping_unarmed_.store(true);
  if (unretired_.load() <= 0) return;
  sleeping_unarmed_.store(false, std::memory_order_relaxed);
  if (ibv_req_notify_cq(send_cq_.get(), 0) != 0) {
    Error("verbs: rank %d: ibv_req_notify_cq(send): %s", rank_,
          verbs_internal::ErrnoStr(errno));
    // Without a standing request the channel stays silent: the next call
    // tries again (send_armed_ stays false).
  } else {
    send_armed_ = true;
  }
  // A completion that arrived after the consumer's last poll and before the
  // request raised no event: take it now and ring the software bell. One
  // that arrives after the request raises the event.
  // Each one goes to the software queue as it is retired: retiring a failed
  // pair's last flush queues its backlog's failures there too, and those
  // must follow it, not overtake it.
  ibv_wc wcs[kCompletionBurst];
  WorkCompletion made;
  for (;;) {
    const int k = ibv_poll_cq(send_cq_.get(), kCompletionBurst, wcs);
    if (k <= 0) return;
    for (int i = 0; i < k; ++i) {
      if (Retire(wcs[i], &made) > 0) PushSoftware(absl::MakeConstSpan(&made, 1));
    }
    if (k < kCompletionBurst) return;
  }
}

void VerbsTransport::WakeUnarmedConsumer() {
  if (!sleeping_unarmed_.load()) return;
  if (std::this_thread::get_id() == consumer_.load(std::memory_order_relaxed)) {
    return;  // awake, and it calls PrepareToSleep before it sleeps
  }
  if (!sleeping_unarmed_.exchange(false)) return;
  // The bell: the consumer wakes, drains, and makes a request before it
  // sleeps again.
  absl::MutexLock lock(&software_mu_);
  RingBellLocked();
}

}  // namespace pagewire
