// transport.h - the data plane between nodes, modelled on verbs.
//
// A Transport moves bytes between registered memory of this node and its
// peers:
//   - memory regions are registered once (at attach time, never per fault)
//     and addressed remotely by (remote_addr, rkey);
//   - one-sided READ, WRITE and 64-bit atomics are posted as chains of
//     WorkRequests tagged with a wr_id, and finish as WorkCompletions in the
//     transport's completion queue, which the owner drains in bursts;
//   - a small two-sided message channel carries requests to home managers.
// The target of a one-sided operation serves it from registered memory on
// the transport's own thread (TCP) or in the NIC (verbs), never on a home
// manager's service loop. No operation has a timeout: a READ to a live peer
// completes; a READ to a peer that dies completes with kPeerGone once
// membership declares the peer dead (PeerDied()). A TCP connection that
// breaks is reconnected and what it carried is sent again, each operation
// applied exactly once; a verbs queue pair that breaks still completes
// what it carried with kPeerGone.
//
// Implementations: TcpTransport (runtime/transport/tcp/tcp_transport.h),
// over sockets, and VerbsTransport
// (runtime/transport/verbs/verbs_transport.h), libibverbs RC queue pairs.
// Both implement exactly this interface.
//
// Threads: RegisterMemory/DeregisterMemory/Connect/PeerDied from the owner
// (control-plane) threads; PostSend and SendMessage from any thread;
// PollCompletions only from the one consumer thread (the fault loop);
// the message handler is called on the transport's receive thread and must
// not block.
#ifndef PAGEWIRE_RUNTIME_TRANSPORT_TRANSPORT_H_
#define PAGEWIRE_RUNTIME_TRANSPORT_TRANSPORT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace pagewire {

// Memory registered with a transport. Peers address it by [addr, addr +
// length) and rkey; local work requests name it by lkey.
struct MemoryRegion {
  uint64_t addr = 0;
  uint64_t length = 0;
  uint32_t lkey = 0;
  uint32_t rkey = 0;
};

enum class WorkOpcode : uint8_t {
  kRead,         // remote -> local buffer
  kWrite,        // local buffer -> remote
  kFetchAdd,     // 8 bytes at remote_addr += compare_add; old value -> local
  kCompareSwap,  // if remote == compare_add then remote = swap; old -> local
};

const char* WorkOpcodeName(WorkOpcode op);

// One one-sided operation. Chains (via `next`) are posted in one call and
// executed in order per peer.
struct WorkRequest {
  uint64_t wr_id = 0;  // returned in the completion; a slot index, O(1) lookup
  WorkOpcode opcode = WorkOpcode::kRead;
  void* local = nullptr;  // inside a region registered with this transport
  uint32_t lkey = 0;
  uint32_t length = 0;    // bytes; 8 for atomics (aligned)
  uint64_t remote_addr = 0;
  uint32_t rkey = 0;
  uint64_t compare_add = 0;  // atomics operand
  uint64_t swap = 0;         // kCompareSwap new value
  // Produce a completion even on success. Unsignalled requests complete
  // silently unless they fail; a signalled one implies all earlier ones on
  // the same peer succeeded (verbs semantics).
  bool signaled = true;
  WorkRequest* next = nullptr;
};

enum class WcStatus : uint8_t {
  kSuccess,
  kRemoteAccessError,  // unknown rkey or address outside the region
  kLocalProtectionError,  // local buffer not in a registered region
  kPeerGone,           // connection broken or peer declared dead
  kFlushed,            // the transport is shutting down
  kTransportError,     // anything else; see the transport's log
};

const char* WcStatusName(WcStatus s);

struct WorkCompletion {
  uint64_t wr_id = 0;
  WcStatus status = WcStatus::kSuccess;
  WorkOpcode opcode = WorkOpcode::kRead;
  int peer = -1;
  uint32_t byte_len = 0;
};

// What a peer needs to reach this node's data plane, exchanged through the
// control plane (proto Endpoint). For TCP: host and port. For verbs: QP
// number, GID, PSN, and the registered keys.
struct TransportEndpoint {
  std::string host;
  uint32_t port = 0;
  // Verbs only.
  uint32_t qp_num = 0;
  std::string gid;  // 16 raw bytes
  uint32_t psn = 0;
};

class Transport {
 public:
  // Receives a message on the transport's thread. Must not block.
  using MessageHandler =
      std::function<void(int peer, uint16_t type, absl::Span<const char> body)>;

  virtual ~Transport() = default;

  // A short name for diagnostics: "tcp", "verbs(rxe0:1)".
  virtual std::string Name() const = 0;

  virtual absl::StatusOr<MemoryRegion> RegisterMemory(void* addr,
                                                      uint64_t length) = 0;
  virtual absl::Status DeregisterMemory(const MemoryRegion& region) = 0;

  // This node's endpoint, to publish through the control plane.
  virtual TransportEndpoint LocalEndpoint() const = 0;
  // Connects to `peer` (a rank) at `endpoint`. Idempotent per peer.
  virtual absl::Status Connect(int peer, const TransportEndpoint& endpoint) = 0;
  // Membership declared `peer` dead: its outstanding operations complete
  // with kPeerGone, later posts to it fail at once. Other peers carry on.
  virtual void PeerDied(int peer) = 0;
  // Operations posted to `peer` and not yet completed (for logs and
  // operators: how much waits on a suspected peer).
  virtual uint64_t Outstanding(int peer) const = 0;
  // The job is ending: peers closing their connections from now on is
  // expected and not worth reporting (lost operations still are).
  virtual void ExpectPeerCloses() {}

  // Posts a chain of one-sided operations to `peer`. Never blocks on the
  // network; back-pressure (a full send queue) makes it queue internally or
  // return ResourceExhausted for the caller to retry after polling.
  virtual absl::Status PostSend(int peer, WorkRequest* chain) = 0;

  // Drains up to `max` completions into `out` without blocking; returns how
  // many.
  virtual int PollCompletions(WorkCompletion* out, int max) = 0;
  // Readable while completions wait (eventfd or completion channel), so the
  // consumer can poll() it alongside its other sources.
  virtual int completion_fd() const = 0;
  // Re-arms completion_fd after PollCompletions returned fewer than max
  // (verbs needs ibv_req_notify_cq; TCP does nothing). Once it has run,
  // every later completion makes completion_fd readable, whoever posted
  // the work.
  virtual void ArmCompletionFd() {}
  // The consumer is about to sleep on completion_fd, possibly after posting
  // more work itself since ArmCompletionFd: the same promise for that work.
  // A consumer that calls this before every sleep lets a transport leave
  // its completion queue unarmed while nothing is in flight, so work the
  // consumer posts and then polls for costs no notification (verbs: no
  // ibv_req_notify_cq, no channel event). Nothing for TCP.
  virtual void PrepareToSleep() {}

  // Completions where they happen. A transport that makes progress on a
  // thread of its own (TCP: the thread that receives the responses) hands
  // each burst of the completions that thread produces to `handler`, on that
  // thread, instead of queueing them for PollCompletions. A consumer that can
  // act on a completion from any thread (install a fetched page) then needs
  // no wake-up of its own on the critical path. Completions produced
  // elsewhere (a post that fails at once, teardown) still go to the queue,
  // so the consumer keeps polling completion_fd. The handler must not block
  // and must not call SetCompletionHandler. An empty handler removes it;
  // the call returns once no call of the old one is running. Returns false,
  // changing nothing, if the transport has no such thread (verbs: the NIC
  // completes, the consumer polls its completion queue).
  using CompletionHandler =
      std::function<void(absl::Span<const WorkCompletion> completions)>;
  virtual bool SetCompletionHandler(CompletionHandler handler) {
    (void)handler;
    return false;
  }

  // The message channel to peers' home managers. Bodies are small (at most
  // kMaxMessageBytes). Delivered in order per peer.
  static constexpr size_t kMaxMessageBytes = 64 * 1024;
  virtual void SetMessageHandler(MessageHandler handler) = 0;
  virtual absl::Status SendMessage(int peer, uint16_t type,
                                   absl::Span<const char> body) = 0;
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_TRANSPORT_TRANSPORT_H_
