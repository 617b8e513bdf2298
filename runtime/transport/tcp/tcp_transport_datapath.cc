// tcp_transport_datapath.cc - TcpTransport's datapath: posting chains,
// serving one-sided operations from registered memory, receiving responses
// (READ payloads straight into the requester's buffer), completions and
// messages. Connection setup and the event loop are in tcp_transport.cc.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_format.h"
#include "runtime/base/log.h"
#include "runtime/transport/tcp/tcp_transport.h"
#include "runtime/transport/work_chain.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the TCP wire format is little-endian host order");

namespace pagewire {

using tcp_internal::FrameKind;
using tcp_internal::kMaxOpBytes;
using tcp_internal::RequestHeader;
using tcp_internal::ResponseHeader;
using tcp_internal::ResponseStatus;

namespace {

// Reads per readable event before other connections get their turn.
constexpr int kReadRoundsPerEvent = 16;

// Responses whose headers and READ payloads one readv scatters into place.
constexpr size_t kMaxPlanOps = 64;
constexpr size_t kMaxPlanIov = 2 * kMaxPlanOps + 1;  // header + payload each,
                                                     // plus the staging tail
static_assert(kMaxPlanIov <= 1024, "readv takes at most IOV_MAX (1024)");

// A target stops reading a connection's requests while this much output
// waits for it (the requester is not reading), and resumes below the low
// mark. This bounds a target's memory per connection, not the requester's
// number of outstanding operations.
constexpr size_t kOutputHighWater = 8u << 20;
constexpr size_t kOutputLowWater = 1u << 20;
static_assert(kOutputLowWater < kOutputHighWater, "hysteresis");

// Messages a requester keeps for resending before it asks the target for
// an ack (an empty READ) rather than waiting for an operation's answer.
constexpr size_t kMaxUnackedMessages = 1024;
constexpr size_t kMaxUnackedBytes = 8u << 20;


}  // namespace

// ---------------------------------------------------------------------------
// Posting (any thread).

bool TcpTransport::LocalOk(const WorkRequest& wr) const {
  auto it = by_lkey_.find(wr.lkey);
  if (it == by_lkey_.end()) return false;
  return InsideRegion(reinterpret_cast<uint64_t>(wr.local), wr.length,
                it->second.addr, it->second.length);
}

absl::Status TcpTransport::PostSend(int peer, WorkRequest* chain) {
  if (absl::Status s = ValidateChain(
          peer, chain, ChainLimits{"tcp", kMaxOpBytes, "the TCP transport"});
      !s.ok()) {
    return s;
  }
  std::shared_ptr<Connection> conn;
  bool gone = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = peers_.find(peer);
    if (it == peers_.end() || (!it->second.dead && it->second.out == nullptr)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "tcp: PostSend to peer %d, which was never connected (Connect "
          "first)",
          peer));
    }
    // Declared dead, but "pw-tcp" has not closed the connection yet: these
    // join what it carries and complete after it, in posting order.
    gone = it->second.dead && it->second.out == nullptr;
    conn = it->second.out;
  }

  absl::InlinedVector<WorkCompletion, 4> failed;
  auto fail = [&](const WorkRequest& wr, WcStatus status) {
    WorkCompletion wc;
    wc.wr_id = wr.wr_id;
    wc.status = status;
    wc.opcode = wr.opcode;
    wc.peer = peer;
    failed.push_back(wc);
  };
  if (!gone) {
    absl::ReaderMutexLock regions_lock(&regions_mu_);
    // A connection closed by "pw-tcp" whose completions for what it
    // carried are not delivered yet takes these behind them, so that
    // completions stay in posting order (it sends nothing).
    conn = LockCurrent(peer, std::move(conn), /*join_closed=*/true);
    if (conn == nullptr) {
      gone = true;
    } else {
      const bool was_empty = conn->out.empty();
      for (const WorkRequest* wr = chain; wr != nullptr; wr = wr->next) {
        if (!LocalOk(*wr)) {
          fail(*wr, WcStatus::kLocalProtectionError);
          continue;
        }
        PendingOp op;
        op.wr_id = wr->wr_id;
        op.local = static_cast<char*>(wr->local);
        op.length = wr->length;
        op.opcode = wr->opcode;
        op.signaled = wr->signaled;
        op.rkey = wr->rkey;
        op.remote_addr = wr->remote_addr;
        op.compare_add = wr->compare_add;
        op.swap = wr->swap;
        op.seq = conn->next_seq++;
        // While the connection is in its handshake (or being replaced),
        // operations are only recorded; the handshake sends them.
        if (!conn->output_held) AppendOp(conn->out, op);
        conn->pending.Push(op);
      }
      // One send for the whole chain. If output was already queued, EPOLLOUT
      // is armed and "pw-tcp" sends it in order.
      if (was_empty) FlushLocked(conn.get());
      conn->mu.Unlock();
    }
  }
  if (gone) {
    for (const WorkRequest* wr = chain; wr != nullptr; wr = wr->next) {
      fail(*wr, WcStatus::kPeerGone);
    }
  }
  PushCompletions(failed);
  return absl::OkStatus();
}

std::shared_ptr<TcpTransport::Connection> TcpTransport::LockCurrent(
    int peer, std::shared_ptr<Connection> conn, bool join_closed) {
  for (;;) {
    conn->mu.Lock();
    if (!conn->superseded) {
      if (!conn->closed || (join_closed && conn->completions_undelivered)) {
        return conn;  // returned locked
      }
      conn->mu.Unlock();
      return nullptr;
    }
    // Its session moved on to a new connection.
    conn->mu.Unlock();
    absl::MutexLock lock(&mu_);
    auto it = peers_.find(peer);
    if (it == peers_.end() || it->second.dead || it->second.out == nullptr) {
      return nullptr;
    }
    conn = it->second.out;
  }
}

absl::Status TcpTransport::SendMessage(int peer, uint16_t type,
                                       absl::Span<const char> body) {
  if (body.size() > kMaxMessageBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tcp: message of %d bytes to peer %d exceeds the %d-byte limit",
        body.size(), peer, kMaxMessageBytes));
  }
  std::shared_ptr<Connection> conn;
  {
    absl::MutexLock lock(&mu_);
    auto it = peers_.find(peer);
    if (it == peers_.end() || (!it->second.dead && it->second.out == nullptr)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "tcp: SendMessage to peer %d, which was never connected", peer));
    }
    if (it->second.dead) {
      return absl::UnavailableError(
          absl::StrFormat("tcp: SendMessage to peer %d, which is dead", peer));
    }
    conn = it->second.out;
  }
  conn = LockCurrent(peer, std::move(conn));
  if (conn == nullptr) {
    return absl::UnavailableError(absl::StrFormat(
        "tcp: SendMessage to peer %d, whose connection is closed", peer));
  }
  const bool was_empty = conn->out.empty();
  // Kept until the target's answers show it arrived: a connection that
  // breaks sends it again.
  SentMessage m{conn->next_seq++, type, std::string(body.data(), body.size())};
  if (!conn->output_held) AppendMessage(conn->out, m);
  conn->unacked_bytes += m.body.size();
  conn->unacked.push_back(std::move(m));
  if (!conn->probe_posted && (conn->unacked.size() > kMaxUnackedMessages ||
                              conn->unacked_bytes > kMaxUnackedBytes)) {
    // No operation answered for a while: ask for the ack.
    PendingOp probe;
    probe.probe = true;
    probe.seq = conn->next_seq++;
    if (!conn->output_held) AppendOp(conn->out, probe);
    conn->pending.Push(probe);
    conn->probe_posted = true;
  }
  if (was_empty) FlushLocked(conn.get());
  conn->mu.Unlock();
  return absl::OkStatus();
}

void TcpTransport::FlushLocked(Connection* c) {
  if (c->closed || c->output_held) return;
  while (!c->out.empty()) {
    ssize_t n = ::send(c->fd, c->out.data(), c->out.size(),
                       MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c->out.Consume(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // EAGAIN: wait for EPOLLOUT. A broken socket: epoll reports it to
    // "pw-tcp", which closes the connection and completes what it carried.
    break;
  }
  // A connection that stopped reading for back-pressure starts again in
  // HandleWritable, on EPOLLOUT: ask for it while reading is paused even if
  // this flush emptied the output (the requester read it all at once),
  // else nothing would ever resume the connection and its requests would
  // wait forever.
  const uint32_t in = c->epoll_events & EPOLLIN;
  const bool want_out = !c->out.empty() || c->read_paused;
  if (!SetEventsLocked(c, in | (want_out ? uint32_t{EPOLLOUT} : 0u))) {
    Warning("tcp: rank %d: epoll_ctl for %s: %s", config_.rank, c->remote,
            std::strerror(errno));
  }
}

// ---------------------------------------------------------------------------
// Completions.

void TcpTransport::Complete(const PendingOp& op, WcStatus status, int peer) {
  if (status == WcStatus::kSuccess && !op.signaled) return;
  WorkCompletion wc;
  wc.wr_id = op.wr_id;
  wc.status = status;
  wc.opcode = op.opcode;
  wc.peer = peer;
  wc.byte_len = status == WcStatus::kSuccess ? op.length : 0;
  thread_wcs_.push_back(wc);
}

void TcpTransport::FlushThreadCompletions() {
  if (thread_wcs_.empty()) return;
  {
    absl::ReaderMutexLock lock(&completion_handler_mu_);
    if (completion_handler_) {
      // Right here, on the thread that received the responses: no hop to
      // the consumer's thread.
      completion_handler_(thread_wcs_);
      thread_wcs_.clear();
      return;
    }
  }
  PushCompletions(thread_wcs_);
  thread_wcs_.clear();
}

bool TcpTransport::SetCompletionHandler(CompletionHandler handler) {
  absl::MutexLock lock(&completion_handler_mu_);
  completion_handler_ = std::move(handler);
  return true;
}

void TcpTransport::PushCompletions(absl::Span<const WorkCompletion> wcs) {
  if (wcs.empty()) return;
  bool ring;
  {
    absl::MutexLock lock(&cq_mu_);
    for (const WorkCompletion& wc : wcs) cq_.Push(wc);
    ring = !cq_bell_;
    cq_bell_ = true;
  }
  // Rung after the lock is dropped, so the woken consumer does not block on
  // it at once. A ring that lands after the consumer emptied the queue
  // leaves the fd readable; the next PollCompletions that finds the queue
  // empty reads it, so it never stays readable for nothing.
  if (ring) {
    uint64_t one = 1;
    ssize_t n = ::write(cq_fd_.get(), &one, sizeof(one));
    (void)n;
  }
}

int TcpTransport::PollCompletions(WorkCompletion* out, int max) {
  if (max <= 0) return 0;
  absl::MutexLock lock(&cq_mu_);
  int n = 0;
  while (n < max && !cq_.empty()) {
    out[n++] = cq_.Front();
    cq_.PopFront();
  }
  if (cq_.empty()) {
    cq_bell_ = false;
    uint64_t count;
    ssize_t r = ::read(cq_fd_.get(), &count, sizeof(count));  // non-blocking
    (void)r;
  }
  return n;
}

// ---------------------------------------------------------------------------
// Receiving ("pw-tcp" only).

void TcpTransport::HandleWritable(Connection* c) {
  bool resume = false;
  {
    absl::MutexLock lock(&c->mu);
    FlushLocked(c);
    if (c->close_after_flush && c->out.empty()) resume = true;
    if (c->read_paused && c->out.size() <= kOutputLowWater) {
      c->read_paused = false;
      SetEventsLocked(c, c->epoll_events | EPOLLIN);
      resume = true;
    }
  }
  // Requests staged before the pause are served now; the socket's own
  // backlog shows up as EPOLLIN.
  if (resume) ParseInput(c);
}

void TcpTransport::HandleReadable(Connection* c) {
  for (int round = 0; round < kReadRoundsPerEvent; ++round) {
    if (c->gone || c->read_paused) return;
    if (c->role == Connection::Role::kOutgoing &&
        c->auth == Connection::Auth::kDone &&
        c->sink_kind == Connection::SinkKind::kNone &&
        c->in_head == c->in_tail) {
      bool drained = false;
      if (ReadScattered(c, &drained)) {
        if (c->gone || drained) return;
        continue;
      }
    }
    if (c->in_head == c->in_tail) {
      c->in_head = c->in_tail = 0;
    } else if (c->in.size() - c->in_tail < sizeof(RequestHeader)) {
      // Less than a header is staged (the rest went to a sink or was
      // parsed), so moving it is cheap.
      std::memmove(c->in.data(), c->in.data() + c->in_head,
                   c->in_tail - c->in_head);
      c->in_tail -= c->in_head;
      c->in_head = 0;
    }
    iovec iov[2];
    int niov = 0;
    if (c->sink_left > 0) iov[niov++] = {c->sink, c->sink_left};
    iov[niov++] = {c->in.data() + c->in_tail, c->in.size() - c->in_tail};
    size_t want = 0;
    for (int i = 0; i < niov; ++i) want += iov[i].iov_len;
    ssize_t n = ::readv(c->fd, iov, niov);
    // A requester closing (or resetting) its connection is how it leaves:
    // its own membership says why. A target closing ours takes our
    // operations with it: an error.
    const LogLevel broken_level = c->role == Connection::Role::kOutgoing
                                      ? LogLevel::kError
                                      : LogLevel::kInfo;
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      Broken(c, absl::StrFormat("connection broke: %s", std::strerror(errno)),
             broken_level);
      return;
    }
    if (n == 0) {
      Broken(c, "connection closed by the other end", broken_level);
      return;
    }
    size_t got = static_cast<size_t>(n);
    if (c->sink_left > 0) {
      size_t take = std::min(got, c->sink_left);
      c->sink += take;
      c->sink_left -= take;
      got -= take;
      if (c->sink_left == 0 && !FinishSink(c)) return;
    }
    c->in_tail += got;
    if (!ParseInput(c)) return;
    if (static_cast<size_t>(n) < want) return;  // the socket is drained
  }
}

bool TcpTransport::OverlapsPlanned(const PendingOp& op, size_t n) const {
  const char* lo = op.local;
  const char* hi = op.local + op.length;
  for (size_t i = 0; i < n; ++i) {
    const PendingOp& p = plan_[i];
    if (p.opcode != WorkOpcode::kRead || p.length == 0) continue;
    if (lo < p.local + p.length && p.local < hi) return true;
  }
  return false;
}

// One readv's layout: header of response 0, READ payload 0 (in the
// caller's buffer), header 1, payload 1, ... then the staging buffer for
// whatever follows.
struct TcpTransport::Scatter {
  ResponseHeader hdrs[kMaxPlanOps];
  size_t payload_len[kMaxPlanOps];
  iovec iov[kMaxPlanIov];
  int niov = 0;
  size_t nops = 0;
  size_t planned = 0;      // bytes laid out before staging
  size_t staging_len = 0;  // bytes of staging after them
};

bool TcpTransport::ReadScattered(Connection* c, bool* drained) {
  plan_.clear();
  {
    absl::MutexLock lock(&c->mu);
    size_t k = std::min(c->pending.size(), kMaxPlanOps);
    for (size_t i = 0; i < k; ++i) plan_.push_back(c->pending.At(i));
  }
  if (plan_.empty()) return false;
  Scatter sc;
  PlanScatter(c, sc);
  ssize_t n = ::readv(c->fd, sc.iov, sc.niov);
  if (n < 0) {
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) {
      *drained = errno != EINTR;
      return true;
    }
    Broken(c, absl::StrFormat("connection broke: %s", std::strerror(errno)),
           LogLevel::kError);
    return true;
  }
  if (n == 0) {
    Broken(c, "connection closed by the other end", LogLevel::kError);
    return true;
  }
  *drained = static_cast<size_t>(n) < sc.planned + sc.staging_len;
  DeliverScattered(c, sc, static_cast<size_t>(n));
  return true;
}

void TcpTransport::PlanScatter(Connection* c, Scatter& sc) {
  // At most half the staging size is planned, so if a response turns out to
  // carry no payload after all (an error), everything read after it fits in
  // staging to be parsed again.
  const size_t budget = c->in.size() / 2;
  bool truncated = false;  // the last planned READ continues past the plan
  for (const PendingOp& op : plan_) {
    if (sc.planned + sizeof(ResponseHeader) > budget) break;
    if (op.opcode == WorkOpcode::kRead && op.length > 0 &&
        OverlapsPlanned(op, sc.nops)) {
      // Bytes laid into an earlier buffer must survive until we know they
      // were its payload (see the error case in DeliverScattered); READs
      // into one buffer are scattered one per readv.
      break;
    }
    sc.iov[sc.niov++] = {&sc.hdrs[sc.nops], sizeof(ResponseHeader)};
    sc.planned += sizeof(ResponseHeader);
    sc.payload_len[sc.nops] = 0;
    if (op.opcode == WorkOpcode::kRead && op.length > 0) {
      size_t l = std::min<size_t>(op.length, budget - sc.planned);
      if (l > 0) sc.iov[sc.niov++] = {op.local, l};
      sc.planned += l;
      sc.payload_len[sc.nops] = l;
      ++sc.nops;
      if (l < op.length) {
        truncated = true;  // the rest of it arrives through the sink
        break;
      }
    } else {
      ++sc.nops;
    }
  }
  c->in_head = c->in_tail = 0;
  // After a truncated READ the next bytes are its payload, not a new frame:
  // they must go to the sink, so nothing is read into staging this time.
  sc.staging_len = truncated ? 0 : c->in.size() - sc.planned;
  if (sc.staging_len > 0) sc.iov[sc.niov++] = {c->in.data(), sc.staging_len};
}

void TcpTransport::DeliverScattered(Connection* c, Scatter& sc, size_t got) {
  const size_t staged = got > sc.planned ? got - sc.planned : 0;
  int vi = 0;  // iov index of the current response's header
  for (size_t i = 0; i < sc.nops; ++i) {
    if (got - staged < sizeof(ResponseHeader)) {
      // A partial header (staging got nothing yet): stage it, parse later.
      std::memcpy(c->in.data(), &sc.hdrs[i], got);
      c->in_tail = got;
      got = 0;
      break;
    }
    const ResponseHeader& h = sc.hdrs[i];
    got -= sizeof(ResponseHeader);
    const PendingOp& op = plan_[i];
    const int64_t payload = ResponsePayload(op, h);
    if (payload < 0) {
      CloseConnection(
          c, WcStatus::kPeerGone,
          absl::StrFormat("malformed response (kind %d, status %d, length %d) "
                          "to %s wr_id %d",
                          h.kind, h.status, h.length, WorkOpcodeName(op.opcode),
                          op.wr_id),
          LogLevel::kWarning);
      return;
    }
    const size_t placed = std::min(got - staged, sc.payload_len[i]);
    if (payload > 0) {
      got -= placed;
      if (placed < op.length) {
        // Nothing reached staging (iov order); the sink takes the rest.
        c->sink_kind = Connection::SinkKind::kReadPayload;
        c->sink = op.local + placed;
        c->sink_left = op.length - placed;
        c->sink_response = h;
        return;
      }
      if (!CompleteHead(c, h)) return;
      vi += sc.payload_len[i] > 0 ? 2 : 1;
      continue;
    }
    if (sc.payload_len[i] > 0 && placed > 0) {
      // An error answer to a READ: the bytes laid into its buffer and the
      // slots after it belong to the following frames. Gather them, in
      // stream order, in front of what reached staging, and parse there.
      const size_t misplaced = got - staged;
      std::memmove(c->in.data() + misplaced, c->in.data(), staged);
      size_t at = 0;
      const int planned_iovs = sc.staging_len > 0 ? sc.niov - 1 : sc.niov;
      for (int j = vi + 1; j < planned_iovs && at < misplaced; ++j) {
        size_t take = std::min(sc.iov[j].iov_len, misplaced - at);
        std::memcpy(c->in.data() + at, sc.iov[j].iov_base, take);
        at += take;
      }
      c->in_head = 0;
      c->in_tail = got;
      if (!CompleteHead(c, h)) return;
      ParseInput(c);
      return;
    }
    if (!CompleteHead(c, h)) return;
    vi += sc.payload_len[i] > 0 ? 2 : 1;
  }
  if (got > 0) {
    // Everything planned arrived; the rest is in staging.
    c->in_head = 0;
    c->in_tail = got;
    ParseInput(c);
  }
}

bool TcpTransport::ParseInput(Connection* c) {
  if (c->gone) return false;
  return c->role == Connection::Role::kOutgoing ? ParseResponses(c)
                                                : ParseRequests(c);
}

int64_t TcpTransport::ResponsePayload(const PendingOp& op,
                                      const ResponseHeader& r) {
  if (r.kind != static_cast<uint8_t>(FrameKind::kResponse)) return -1;
  if (r.status == static_cast<uint8_t>(ResponseStatus::kRemoteAccessError) ||
      (r.status == static_cast<uint8_t>(ResponseStatus::kResultLost) &&
       IsAtomic(op.opcode))) {
    return r.length == 0 ? 0 : -1;
  }
  if (r.status != static_cast<uint8_t>(ResponseStatus::kOk)) return -1;
  if (op.opcode == WorkOpcode::kRead) {
    return r.length == op.length ? static_cast<int64_t>(r.length) : -1;
  }
  return r.length == 0 ? 0 : -1;
}

bool TcpTransport::CompleteHead(Connection* c, const ResponseHeader& r) {
  PendingOp op;
  {
    absl::MutexLock lock(&c->mu);
    op = c->pending.Front();  // callers checked it is there
    c->pending.PopFront();
    if (!IsAtomic(op.opcode)) {
      // The target has taken every frame below r.value: those messages
      // need no resending.
      while (!c->unacked.empty() && c->unacked.front().seq < r.value) {
        c->unacked_bytes -= c->unacked.front().body.size();
        c->unacked.pop_front();
      }
    }
    if (op.probe) c->probe_posted = false;
  }
  if (op.probe) return true;
  WcStatus status = WcStatus::kSuccess;
  if (r.status == static_cast<uint8_t>(ResponseStatus::kRemoteAccessError)) {
    status = WcStatus::kRemoteAccessError;
  } else if (r.status == static_cast<uint8_t>(ResponseStatus::kResultLost)) {
    Error("tcp: rank %d: %s: %s wr_id %d was applied before the connection "
          "broke, and the target no longer keeps its result; it completes "
          "with an error",
          config_.rank, Describe(*c), WorkOpcodeName(op.opcode), op.wr_id);
    status = WcStatus::kTransportError;
  } else if (IsAtomic(op.opcode)) {
    std::memcpy(op.local, &r.value, sizeof(r.value));
  }
  Complete(op, status, c->peer_rank);
  return true;
}

bool TcpTransport::ParseResponses(Connection* c) {
  for (;;) {
    const size_t avail = c->in_tail - c->in_head;
    if (c->auth != Connection::Auth::kDone) {
      if (avail < sizeof(tcp_handshake::ServerChallenge)) return true;
      if (!AcceptChallenge(c, c->in.data() + c->in_head)) return false;
      continue;
    }
    if (avail < sizeof(ResponseHeader)) return true;
    ResponseHeader h;
    std::memcpy(&h, c->in.data() + c->in_head, sizeof(h));
    PendingOp op;
    bool have_op = false;
    {
      absl::MutexLock lock(&c->mu);
      if (!c->pending.empty()) {
        op = c->pending.Front();
        have_op = true;
      }
    }
    const int64_t payload = have_op ? ResponsePayload(op, h) : -1;
    if (payload < 0) {
      CloseConnection(
          c, WcStatus::kPeerGone,
          have_op ? absl::StrFormat("malformed response (kind %d, status %d, "
                                    "length %d) to %s wr_id %d",
                                    h.kind, h.status, h.length,
                                    WorkOpcodeName(op.opcode), op.wr_id)
                  : std::string("response with no request outstanding"),
          LogLevel::kWarning);
      return false;
    }
    c->in_head += sizeof(h);
    if (payload > 0) {
      size_t have = std::min<size_t>(c->in_tail - c->in_head, payload);
      std::memcpy(op.local, c->in.data() + c->in_head, have);
      c->in_head += have;
      if (have < static_cast<size_t>(payload)) {
        c->sink_kind = Connection::SinkKind::kReadPayload;
        c->sink = op.local + have;
        c->sink_left = payload - have;
        c->sink_response = h;
        return true;
      }
    }
    if (!CompleteHead(c, h)) return false;
  }
}

bool TcpTransport::FinishSink(Connection* c) {
  const Connection::SinkKind kind = c->sink_kind;
  c->sink_kind = Connection::SinkKind::kNone;
  c->sink = nullptr;
  if (kind == Connection::SinkKind::kReadPayload) {
    return CompleteHead(c, c->sink_response);
  }
  ServeRequest(c, c->sink_request, c->body.data());
  return !c->gone;
}

bool TcpTransport::ParseRequests(Connection* c) {
  for (;;) {
    const size_t avail = c->in_tail - c->in_head;
    const char* p = c->in.data() + c->in_head;
    if (c->auth != Connection::Auth::kDone) {
      // The handshake: nothing past it is read before it succeeds.
      if (c->auth == Connection::Auth::kAwaitHello) {
        if (avail < sizeof(tcp_handshake::ClientHello)) break;
        if (!AcceptHello(c, p)) return false;
        continue;
      }
      if (c->auth == Connection::Auth::kAwaitMembership) {
        if (avail == 0) break;
        Refuse(c, "data before the handshake finished",
               "sent data before the handshake finished");
        return false;
      }
      if (avail < sizeof(tcp_handshake::ClientProof)) break;
      if (!AcceptProof(c, p)) return false;
      continue;
    }
    // After a remote access error nothing more is served: the connection
    // closes once the answers are out.
    if (c->close_after_flush) break;
    {
      absl::MutexLock lock(&c->mu);
      if (c->out.size() > kOutputHighWater) {
        // Back-pressure: serve no more until the requester reads.
        c->read_paused = true;
        SetEventsLocked(c, c->epoll_events & ~uint32_t{EPOLLIN});
        break;
      }
    }
    if (avail < sizeof(RequestHeader)) break;
    RequestHeader h;
    std::memcpy(&h, p, sizeof(h));
    size_t payload = 0;
    const std::string problem = CheckRequest(h, payload);
    if (!problem.empty()) {
      CloseConnection(c, WcStatus::kPeerGone,
                      absl::StrFormat("protocol violation: %s", problem),
                      LogLevel::kWarning);
      return false;
    }
    if (avail - sizeof(h) >= payload) {
      c->in_head += sizeof(h);
      ServeRequest(c, h, c->in.data() + c->in_head);
      c->in_head += payload;
      if (c->gone) return false;
      continue;
    }
    // The payload spans reads: collect it in `body` (grows to the largest
    // frame seen, then stays).
    if (c->body.size() < payload) c->body.resize(payload);
    const size_t have = avail - sizeof(h);
    std::memcpy(c->body.data(), p + sizeof(h), have);
    c->sink_kind = Connection::SinkKind::kRequestBody;
    c->sink = c->body.data() + have;
    c->sink_left = payload - have;
    c->sink_request = h;
    c->in_head = c->in_tail;
    break;
  }
  // One send for all the responses of this batch.
  bool done;
  {
    absl::MutexLock lock(&c->mu);
    if (!(c->epoll_events & EPOLLOUT)) FlushLocked(c);
    done = c->close_after_flush && c->out.empty();
  }
  if (done) {
    CloseConnection(c, WcStatus::kPeerGone,
                    "closed after answering a remote access error",
                    LogLevel::kDebug);
    return false;
  }
  return true;
}

}  // namespace pagewire
