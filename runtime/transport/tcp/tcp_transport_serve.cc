// tcp_transport_serve.cc - TcpTransport's target side: checking a
// requester's frames, and serving them in its session (exactly once; see
// tcp_transport_resume.cc for repeats) from registered memory.
#include <cstring>

#include "absl/strings/str_format.h"
#include "runtime/base/log.h"
#include "runtime/transport/tcp/tcp_transport.h"
#include "runtime/transport/work_chain.h"

namespace pagewire {

using tcp_internal::FrameKind;
using tcp_internal::kMaxOpBytes;
using tcp_internal::RequestHeader;
using tcp_internal::ResponseHeader;
using tcp_internal::ResponseStatus;

std::string TcpTransport::CheckRequest(const RequestHeader& h,
                                       size_t& payload) {
  payload = 0;
  if (h.kind == static_cast<uint8_t>(FrameKind::kOp)) {
    if (!ValidOpcode(h.opcode)) {
      return absl::StrFormat("unknown opcode %d", h.opcode);
    }
    if (h.length > kMaxOpBytes) {
      return absl::StrFormat("oversized frame: %s of %d bytes (limit %d)",
                             WorkOpcodeName(WorkOpcode(h.opcode)), h.length,
                             kMaxOpBytes);
    }
    if (WorkOpcode(h.opcode) == WorkOpcode::kWrite) payload = h.length;
    return "";
  }
  if (h.kind == static_cast<uint8_t>(FrameKind::kMessage)) {
    if (h.length > kMaxMessageBytes) {
      return absl::StrFormat("oversized frame: message of %d bytes (limit %d)",
                             h.length, kMaxMessageBytes);
    }
    payload = h.length;
    return "";
  }
  return absl::StrFormat("unknown frame kind %d", h.kind);
}

const MemoryRegion* TcpTransport::FindRemote(uint32_t rkey, uint64_t addr,
                                             uint64_t len) const {
  auto it = by_rkey_.find(rkey);
  if (it == by_rkey_.end()) return nullptr;
  if (!InsideRegion(addr, len, it->second.addr, it->second.length)) return nullptr;
  return &it->second;
}

void TcpTransport::ServeRequest(Connection* c, const RequestHeader& h,
                                const char* payload) {
  InSession& session = *c->in_session;
  if (h.seq > session.received) {
    CloseConnection(c, WcStatus::kPeerGone,
                    absl::StrFormat("protocol violation: frame %d of its "
                                    "session, expected %d",
                                    h.seq, session.received),
                    LogLevel::kWarning);
    return;
  }
  if (AnswerRepeat(c, h)) return;
  const bool repeat = h.seq < session.received;  // a READ read again
  if (!repeat) ++session.received;
  if (h.kind == static_cast<uint8_t>(FrameKind::kMessage)) {
    absl::ReaderMutexLock lock(&handler_mu_);
    if (handler_) {
      handler_(c->peer_rank, h.msg_type, absl::MakeConstSpan(payload, h.length));
    } else {
      Warning("tcp: rank %d: message type %d from %s dropped: no handler set",
              config_.rank, h.msg_type, Describe(*c));
    }
    return;
  }
  ServeOp(c, h, payload, session);
}

void TcpTransport::ServeOp(Connection* c, const RequestHeader& h,
                           const char* payload, InSession& session) {
  const WorkOpcode op = static_cast<WorkOpcode>(h.opcode);
  ResponseHeader r{};
  r.kind = static_cast<uint8_t>(FrameKind::kResponse);
  r.status = static_cast<uint8_t>(ResponseStatus::kOk);
  // READ and WRITE answers carry the ack of the session's frames.
  r.value = session.received;
  if (op == WorkOpcode::kRead && h.length == 0) {
    // An empty READ: the requester asks for the ack.
    absl::MutexLock lock(&c->mu);
    c->out.Append(&r, sizeof(r));
    return;
  }
  std::string problem;
  {
    absl::ReaderMutexLock regions_lock(&regions_mu_);
    const MemoryRegion* mr = FindRemote(h.rkey, h.remote_addr, h.length);
    if (mr == nullptr) {
      problem = by_rkey_.contains(h.rkey) ? "address range outside the region"
                                          : "unknown rkey";
    } else if (IsAtomic(op) && (h.length != 8 || h.remote_addr % 8 != 0)) {
      problem = "atomic not on an aligned 8-byte word";
    } else {
      char* target = reinterpret_cast<char*>(h.remote_addr);
      switch (op) {
        case WorkOpcode::kRead: {
          r.length = h.length;
          // Copied while the region is known to be registered.
          absl::MutexLock lock(&c->mu);
          c->out.Append(&r, sizeof(r));
          c->out.Append(target, h.length);
          return;
        }
        case WorkOpcode::kWrite:
          std::memcpy(target, payload, h.length);
          break;
        case WorkOpcode::kFetchAdd:
          r.value = __atomic_fetch_add(reinterpret_cast<uint64_t*>(target),
                                       h.compare_add, __ATOMIC_SEQ_CST);
          KeepAtomicResult(session, h.seq, r.value);
          break;
        case WorkOpcode::kCompareSwap: {
          uint64_t expected = h.compare_add;
          // On failure `expected` becomes the current value: the old value
          // either way.
          __atomic_compare_exchange_n(reinterpret_cast<uint64_t*>(target),
                                      &expected, h.swap, false,
                                      __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
          r.value = expected;
          KeepAtomicResult(session, h.seq, r.value);
          break;
        }
      }
    }
  }
  if (!problem.empty()) {
    // The connection is closed once this answer is out: a peer guessing
    // keys pays a new connection and handshake per guess, and this is one
    // line per connection. Its session sends the rest again.
    Warning("tcp: rank %d: %s: %s with %s (rkey 0x%x, addr 0x%x, length %d); "
            "answered remote access error and closed the connection",
            config_.rank, Describe(*c), WorkOpcodeName(op), problem, h.rkey,
            h.remote_addr, h.length);
    r.status = static_cast<uint8_t>(ResponseStatus::kRemoteAccessError);
    c->close_after_flush = true;
  }
  absl::MutexLock lock(&c->mu);
  c->out.Append(&r, sizeof(r));
}

}  // namespace pagewire
