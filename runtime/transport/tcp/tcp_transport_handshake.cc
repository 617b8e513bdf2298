// tcp_transport_handshake.cc - TcpTransport's side of the handshake
// (tcp_handshake.h): the target checks a requester's hello against
// membership, challenges it and checks its proof; the requester checks the
// target's answer and proves itself. Also the limit on connections still
// in their handshake. All on "pw-tcp".
#include <sys/epoll.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "runtime/base/log.h"
#include "runtime/transport/tcp/tcp_transport.h"

namespace pagewire {

using tcp_handshake::ClientHello;
using tcp_handshake::ClientProof;
using tcp_handshake::Role;
using tcp_handshake::ServerChallenge;

void TcpTransport::Refuse(Connection* c, absl::string_view kind,
                          const std::string& problem) {
  const std::string who = Describe(*c);
  // The connection's own line is at debug level; the summary below is what
  // an operator sees, once per kind and then as a count.
  CloseConnection(c, WcStatus::kPeerGone,
                  absl::StrFormat("refused: %s", problem), LogLevel::kDebug);
  const uint64_t n = refusals_.Count(kind);
  if (n == 1) {
    Warning("tcp: rank %d: %s: refused: %s; nothing was served", config_.rank,
            who, problem);
  } else if (n > 1) {
    Warning("tcp: rank %d: %d connections refused so far for: %s (latest: "
            "%s)",
            config_.rank, n, kind, who);
  }
}

bool TcpTransport::AcceptHello(Connection* c, const char* p) {
  ClientHello hello;
  std::memcpy(&hello, p, sizeof(hello));
  std::string problem =
      tcp_handshake::CheckClientHello(hello, config_.protocol_version);
  if (!problem.empty()) {
    Refuse(c, problem, problem);
    return false;
  }
  if (hello.rank == config_.rank) {
    Refuse(c, "a hello claiming this node's own rank",
           absl::StrFormat("claims to be rank %d, this node's own rank",
                           hello.rank));
    return false;
  }
  if (config_.nranks > 0 && hello.rank >= config_.nranks) {
    Refuse(c, "a hello claiming a rank outside the job",
           absl::StrFormat("claims rank %d, but the job has %d ranks",
                           hello.rank, config_.nranks));
    return false;
  }
  c->peer_rank = hello.rank;
  c->client_session = hello.session;
  std::memcpy(c->client_nonce.data(), hello.nonce, sizeof(hello.nonce));
  c->in_head += sizeof(hello);
  c->auth = Connection::Auth::kAwaitMembership;
  return CheckClaim(c);
}

bool TcpTransport::CheckClaim(Connection* c) {
  std::vector<std::string> ips;
  bool known = false, dead = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = peer_ips_.find(c->peer_rank);
    if (it != peer_ips_.end()) {
      known = true;
      ips = it->second;
    }
    auto ps = peers_.find(c->peer_rank);
    dead = ps != peers_.end() && ps->second.dead;
  }
  if (dead) {
    Refuse(c, "a hello from a rank declared dead",
           absl::StrFormat("claims rank %d, which membership declared dead",
                           c->peer_rank));
    return false;
  }
  if (!known) {
    // Membership has not said where that rank is yet (its view may reach
    // this node after the peer's): answer nothing until it does.
    Debug("tcp: rank %d: %s waits for membership to place rank %d",
          config_.rank, Describe(*c), c->peer_rank);
    return true;
  }
  if (std::find(ips.begin(), ips.end(), c->remote_ip) == ips.end()) {
    Refuse(c, "a rank claimed from the wrong address",
           absl::StrFormat("claims rank %d from %s, but membership places "
                           "rank %d at %s",
                           c->peer_rank, c->remote_ip, c->peer_rank,
                           absl::StrJoin(ips, ", ")));
    return false;
  }
  // How much of the claimed session this node has taken (a hint: what
  // arrives again is recognized by its number). Nothing about the session
  // changes before the proof.
  auto session_it = in_sessions_.find(c->peer_rank);
  ServerChallenge ch{};
  std::memcpy(ch.magic, tcp_handshake::kServerMagic, sizeof(ch.magic));
  ch.protocol_version = config_.protocol_version;
  ch.rank = config_.rank;
  ch.received = c->challenged_received =
      session_it != in_sessions_.end() &&
              session_it->second.id == c->client_session
          ? session_it->second.received
          : 0;
  if (absl::Status s = FillRandom(absl::MakeSpan(c->server_nonce)); !s.ok()) {
    Refuse(c, "no random source", std::string(s.message()));
    return false;
  }
  std::memcpy(ch.nonce, c->server_nonce.data(), sizeof(ch.nonce));
  const Digest256 proof = tcp_handshake::Proof(
      key_, Role::kServer, c->client_nonce, c->server_nonce, c->peer_rank,
      config_.rank, c->client_session, ch.received);
  std::memcpy(ch.proof, proof.data(), sizeof(ch.proof));
  c->auth = Connection::Auth::kAwaitProof;
  absl::MutexLock lock(&c->mu);
  c->out.Append(&ch, sizeof(ch));
  FlushLocked(c);
  return true;
}

bool TcpTransport::AcceptProof(Connection* c, const char* p) {
  ClientProof got;
  std::memcpy(&got, p, sizeof(got));
  Digest256 have;
  std::memcpy(have.data(), got.proof, have.size());
  const Digest256 want = tcp_handshake::Proof(
      key_, Role::kClient, c->client_nonce, c->server_nonce, c->peer_rank,
      config_.rank, c->client_session, c->challenged_received);
  if (!DigestsEqual(have, want)) {
    Refuse(c, "a wrong proof of the job's secret",
           absl::StrFormat("claims rank %d but failed to prove the job's "
                           "secret (another job, a replayed handshake, or "
                           "PAGEWIRE_SECRET differs)",
                           c->peer_rank));
    return false;
  }
  c->in_head += sizeof(got);
  c->auth = Connection::Auth::kDone;
  // A new session of that rank (a new process) starts from frame 0. One
  // connection per session: an older one (broken on the requester's side,
  // or replaced) is closed; what it held unread arrives again on this one.
  InSession& session = in_sessions_[c->peer_rank];
  if (session.id != c->client_session) session = InSession{c->client_session};
  std::vector<Connection*> older;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [ptr, conn] : conns_) {
      if (ptr != c && conn->role == Connection::Role::kIncoming &&
          !conn->gone && conn->in_session == &session) {
        older.push_back(ptr);
      }
    }
  }
  for (Connection* o : older) {
    CloseConnection(o, WcStatus::kPeerGone,
                    "replaced by a new connection of the same session",
                    LogLevel::kDebug);
  }
  c->in_session = &session;
  Debug("tcp: rank %d accepted peer %d from %s", config_.rank, c->peer_rank,
        c->remote);
  return true;
}

bool TcpTransport::AcceptChallenge(Connection* c, const char* p) {
  ServerChallenge ch;
  std::memcpy(&ch, p, sizeof(ch));
  uint64_t session;
  {
    absl::MutexLock lock(&c->mu);
    session = c->session;
  }
  const std::string problem = tcp_handshake::CheckServerChallenge(
      ch, config_.protocol_version, c->peer_rank, config_.rank,
      c->client_nonce, session, key_);
  if (!problem.empty()) {
    const std::string reason =
        absl::StrFormat("refused the other end: %s", problem);
    // A session that worked before waits for one that works again.
    if (c->reconnection && Resume(c, reason)) return false;
    CloseConnection(c, WcStatus::kPeerGone, reason, LogLevel::kError);
    return false;
  }
  c->in_head += sizeof(ch);
  std::memcpy(c->server_nonce.data(), ch.nonce, sizeof(ch.nonce));
  ClientProof proof;
  const Digest256 d = tcp_handshake::Proof(
      key_, Role::kClient, c->client_nonce, c->server_nonce, config_.rank,
      c->peer_rank, session, ch.received);
  std::memcpy(proof.proof, d.data(), sizeof(proof.proof));
  c->auth = Connection::Auth::kDone;
  size_t resent = 0;
  {
    absl::MutexLock lock(&c->mu);
    resent = RebuildOutputLocked(c, proof, ch.received);
    c->output_held = false;
    FlushLocked(c);
  }
  if (c->reconnection) {
    {
      absl::MutexLock lock(&mu_);
      peers_[c->peer_rank].attempts = 0;
    }
    Warning("tcp: rank %d: reconnected to peer %d (%s); the target had taken "
            "%d frames of the session, the %d not answered are sent again",
            config_.rank, c->peer_rank, c->remote, ch.received, resent);
  }
  return true;
}

void TcpTransport::MakeRoomForHandshakes() {
  // The victim: the oldest connection that has not even said who it is,
  // else the oldest that has not proved it, else the oldest waiting for
  // membership (a real peer's claim waits there for a moment at start-up).
  auto rank_of = [](Connection::Auth a) {
    return a == Connection::Auth::kAwaitHello   ? 0
           : a == Connection::Auth::kAwaitProof ? 1
                                                : 2;
  };
  for (;;) {
    Connection* victim = nullptr;
    int waiting = 0;
    {
      absl::MutexLock lock(&mu_);
      for (auto& [ptr, conn] : conns_) {
        if (conn->role != Connection::Role::kIncoming || conn->gone ||
            conn->auth == Connection::Auth::kDone) {
          continue;
        }
        ++waiting;
        if (victim == nullptr ||
            std::make_pair(rank_of(conn->auth), conn->accepted_seq) <
                std::make_pair(rank_of(victim->auth), victim->accepted_seq)) {
          victim = ptr;
        }
      }
    }
    if (waiting < config_.max_unauthenticated) return;
    Refuse(victim, "a connection closed to make room for new handshakes",
           absl::StrFormat("closed to make room: %d connections had not "
                           "finished their handshake (the limit)",
                           waiting));
  }
}

void TcpTransport::RecheckWaitingClaims() {
  std::vector<Connection*> waiting;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [ptr, conn] : conns_) {
      if (!conn->gone && conn->auth == Connection::Auth::kAwaitMembership) {
        waiting.push_back(ptr);
      }
    }
  }
  // The shared_ptrs stay in conns_ (or the graveyard) for this round.
  for (Connection* c : waiting) CheckClaim(c);
}

}  // namespace pagewire
