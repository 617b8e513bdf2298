// tcp_transport_resume.cc - TcpTransport's sessions across connections: an
// outgoing connection that breaks is replaced by a new one to the same
// peer, on which everything not answered is sent again (the requester's
// side); and the target's answers to frames it has taken before. All on
// "pw-tcp", except what posters do under a connection's lock.
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "runtime/base/log.h"
#include "runtime/transport/tcp/tcp_transport.h"

namespace pagewire {

using tcp_internal::FrameKind;
using tcp_internal::RequestHeader;
using tcp_internal::ResponseHeader;
using tcp_internal::ResponseStatus;

namespace {

// Between reconnection attempts: 10 ms, doubling to at most 1 s. This
// decides when to try again, never whether to give up: membership does.
constexpr int kFirstRetryMs = 10;
constexpr int kMaxRetryMs = 1000;
// Atomics' answers a target keeps per session, for repeats.
constexpr size_t kKeptAtomics = 1 << 16;

}  // namespace

std::shared_ptr<TcpTransport::Connection> TcpTransport::Succeed(
    Connection* from, int fd, const std::string& remote) {
  auto next = std::make_shared<Connection>(Connection::Role::kOutgoing, fd,
                                           from->peer_rank, remote);
  next->auth = Connection::Auth::kConnecting;
  next->reconnection = true;
  absl::MutexLock lock(&mu_);
  peers_[from->peer_rank].out = next;
  conns_[next.get()] = next;
  {
    absl::MutexLock from_lock(&from->mu);
    absl::MutexLock next_lock(&next->mu);
    next->output_held = true;
    next->session = from->session;
    next->next_seq = from->next_seq;
    next->unacked.swap(from->unacked);
    next->unacked_bytes = from->unacked_bytes;
    next->probe_posted = from->probe_posted;
    while (!from->pending.empty()) {
      next->pending.Push(from->pending.Front());
      from->pending.PopFront();
    }
    from->superseded = true;
    from->closed = true;
    if (from->fd >= 0) {
      ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, from->fd, nullptr);
      ::close(from->fd);
    }
  }
  from->gone = true;
  auto it = conns_.find(from);
  if (it != conns_.end()) {
    graveyard_.push_back(std::move(it->second));
    conns_.erase(it);
  }
  return next;
}

void TcpTransport::Broken(Connection* c, const std::string& reason,
                          LogLevel level) {
  if (c->role == Connection::Role::kOutgoing && Resume(c, reason)) return;
  CloseConnection(c, WcStatus::kPeerGone, reason, level);
}

bool TcpTransport::Resume(Connection* c, const std::string& reason) {
  {
    absl::MutexLock lock(&mu_);
    auto it = peers_.find(c->peer_rank);
    if (stop_ || it == peers_.end() || it->second.dead ||
        it->second.out.get() != c) {
      return false;
    }
  }
  // The first handshake never finished: the target refused this node (it
  // logged why); a job that ends closes its connections on purpose.
  if ((!c->reconnection && c->auth != Connection::Auth::kDone) ||
      closes_expected_.load(std::memory_order_relaxed)) {
    return false;
  }
  size_t ops, messages;
  {
    absl::MutexLock lock(&c->mu);
    ops = c->pending.size();
    messages = c->unacked.size();
  }
  const int peer = c->peer_rank;
  const std::string who = Describe(*c);
  const bool quiet = c->reconnection && c->auth != Connection::Auth::kDone;
  Succeed(c, -1, c->remote);
  if (!quiet) {
    Warning("tcp: rank %d: %s: %s; its %d operations and %d messages wait for "
            "a new connection (membership decides whether the peer is dead)",
            config_.rank, who, reason, ops, messages);
  } else if (reconnect_failures_.Count(reason) != 0) {
    Warning("tcp: rank %d: reconnecting to peer %d: %s", config_.rank, peer,
            reason);
  }
  ScheduleRetry(peer);
  return true;
}

void TcpTransport::ScheduleRetry(int peer) {
  int attempts;
  {
    absl::MutexLock lock(&mu_);
    attempts = peers_[peer].attempts++;
  }
  const int ms = attempts == 0
                     ? 0
                     : std::min(kMaxRetryMs, kFirstRetryMs << std::min(attempts - 1, 7));
  retries_.push_back(
      Retry{peer, std::chrono::steady_clock::now() + std::chrono::milliseconds(ms)});
}

int TcpTransport::MillisUntilNextRetry() const {
  if (retries_.empty()) return -1;
  auto first = std::min_element(
      retries_.begin(), retries_.end(),
      [](const Retry& a, const Retry& b) { return a.due < b.due; });
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      first->due - std::chrono::steady_clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count() + 1));
}

void TcpTransport::RunDueRetries() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<int> due;
  for (auto it = retries_.begin(); it != retries_.end();) {
    if (it->due <= now) {
      due.push_back(it->peer);
      it = retries_.erase(it);
    } else {
      ++it;
    }
  }
  for (int peer : due) StartAttempt(peer);
}

void TcpTransport::StartAttempt(int peer) {
  std::shared_ptr<Connection> limbo;
  TransportEndpoint ep;
  {
    absl::MutexLock lock(&mu_);
    auto it = peers_.find(peer);
    if (it == peers_.end() || it->second.dead || stop_) return;
    limbo = it->second.out;
    ep = it->second.endpoint;
  }
  if (limbo == nullptr || limbo->fd >= 0) return;  // already connecting
  std::string problem;
  int fd = -1;
  std::string remote = limbo->remote;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* ai = nullptr;
  const std::string service = absl::StrFormat("%d", ep.port);
  if (int rc = ::getaddrinfo(ep.host.c_str(), service.c_str(), &hints, &ai);
      rc != 0) {
    problem = gai_strerror(rc);
  } else {
    fd = ::socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      problem = std::strerror(errno);
    } else if (absl::Status s = BindSource(fd, ai->ai_family); !s.ok()) {
      problem = std::string(s.message());
    } else if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 &&
               errno != EINPROGRESS) {
      problem = std::strerror(errno);
    }
    ::freeaddrinfo(ai);
  }
  if (!problem.empty()) {
    if (fd >= 0) ::close(fd);
    if (reconnect_failures_.Count(problem) != 0) {
      Warning("tcp: rank %d: reconnecting to peer %d at %s:%d: %s", config_.rank,
              peer, ep.host, ep.port, problem);
    }
    ScheduleRetry(peer);
    return;
  }
  std::shared_ptr<Connection> next = Succeed(limbo.get(), fd, remote);
  absl::MutexLock lock(&next->mu);
  epoll_event ev{};
  ev.events = EPOLLOUT;
  ev.data.ptr = next.get();
  next->epoll_events = EPOLLOUT;
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) < 0) {
    Warning("tcp: rank %d: epoll_ctl reconnecting to peer %d: %s", config_.rank,
            peer, std::strerror(errno));
  }
}

void TcpTransport::FinishConnect(Connection* c) {
  int err = 0;
  socklen_t len = sizeof(err);
  ::getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    // A session that can no longer go on (its peer died, the job ends)
    // closes the attempt, which epoll would otherwise report forever.
    Broken(c, absl::StrFormat("connect: %s", std::strerror(err)),
           LogLevel::kWarning);
    return;
  }
  int one = 1;
  ::setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  tcp_handshake::ClientHello hello{};
  std::memcpy(hello.magic, tcp_handshake::kClientMagic, sizeof(hello.magic));
  hello.protocol_version = config_.protocol_version;
  hello.rank = config_.rank;
  if (!FillRandom(absl::MakeSpan(c->client_nonce)).ok()) {
    Broken(c, "no random source for the handshake", LogLevel::kError);
    return;
  }
  std::memcpy(hello.nonce, c->client_nonce.data(), sizeof(hello.nonce));
  absl::MutexLock lock(&c->mu);
  hello.session = c->session;
  c->auth = Connection::Auth::kAwaitChallenge;
  // A fresh socket takes the 40 bytes at once.
  const ssize_t n = ::send(c->fd, &hello, sizeof(hello), MSG_NOSIGNAL);
  SetEventsLocked(c, EPOLLIN);
  if (n != static_cast<ssize_t>(sizeof(hello))) {
    // Reported by epoll as a broken connection, which retries.
    ::shutdown(c->fd, SHUT_RDWR);
  }
}

void TcpTransport::AppendOp(tcp_internal::ByteQueue& out, const PendingOp& op) {
  RequestHeader h{};
  h.kind = static_cast<uint8_t>(FrameKind::kOp);
  h.opcode = static_cast<uint8_t>(op.opcode);
  h.length = op.length;
  h.remote_addr = op.remote_addr;
  h.rkey = op.rkey;
  h.compare_add = op.compare_add;
  h.swap = op.swap;
  h.seq = op.seq;
  out.Append(&h, sizeof(h));
  if (op.opcode == WorkOpcode::kWrite) out.Append(op.local, op.length);
}

void TcpTransport::AppendMessage(tcp_internal::ByteQueue& out,
                                 const SentMessage& m) {
  RequestHeader h{};
  h.kind = static_cast<uint8_t>(FrameKind::kMessage);
  h.msg_type = m.type;
  h.length = static_cast<uint32_t>(m.body.size());
  h.seq = m.seq;
  out.Append(&h, sizeof(h));
  out.Append(m.body.data(), m.body.size());
}

size_t TcpTransport::RebuildOutputLocked(Connection* c,
                                         const tcp_handshake::ClientProof& p,
                                         uint64_t received) {
  while (!c->unacked.empty() && c->unacked.front().seq < received) {
    c->unacked_bytes -= c->unacked.front().body.size();
    c->unacked.pop_front();
  }
  tcp_internal::ByteQueue out(sizeof(p) + c->unacked_bytes +
                              c->pending.size() * sizeof(RequestHeader));
  out.Append(&p, sizeof(p));
  // Operations and messages merged in frame order, as first sent.
  size_t i = 0, frames = 0;
  auto m = c->unacked.begin();
  while (i < c->pending.size() || m != c->unacked.end()) {
    if (m == c->unacked.end() ||
        (i < c->pending.size() && c->pending.At(i).seq < m->seq)) {
      AppendOp(out, c->pending.At(i++));
    } else {
      AppendMessage(out, *m++);
    }
    ++frames;
  }
  std::swap(c->out, out);
  return frames;
}

bool TcpTransport::AnswerRepeat(Connection* c, const RequestHeader& h) {
  InSession& s = *c->in_session;
  if (h.seq >= s.received) return false;
  // Taken before, its answer lost with the connection that carried it.
  if (h.kind == static_cast<uint8_t>(FrameKind::kMessage)) return true;
  const WorkOpcode op = static_cast<WorkOpcode>(h.opcode);
  if (op == WorkOpcode::kRead) return false;  // reading again is harmless
  ResponseHeader r{};
  r.kind = static_cast<uint8_t>(FrameKind::kResponse);
  r.status = static_cast<uint8_t>(ResponseStatus::kOk);
  if (op == WorkOpcode::kWrite) {
    r.value = s.received;
  } else {
    auto it = std::lower_bound(
        s.atomics.begin(), s.atomics.end(), std::make_pair(h.seq, uint64_t{0}));
    if (it != s.atomics.end() && it->first == h.seq) {
      r.value = it->second;
    } else {
      r.status = static_cast<uint8_t>(ResponseStatus::kResultLost);
    }
  }
  absl::MutexLock lock(&c->mu);
  c->out.Append(&r, sizeof(r));
  return true;
}

void TcpTransport::KeepAtomicResult(InSession& s, uint64_t seq,
                                    uint64_t value) {
  s.atomics.emplace_back(seq, value);
  if (s.atomics.size() > kKeptAtomics) s.atomics.pop_front();
}

}  // namespace pagewire
