// verbs_transport.h - the Transport over libibverbs reliable-connected queue
// pairs (InfiniBand verbs on RoCE; soft-RoCE rdma_rxe in the test VM).
//
// Resources follow rdma-core's rc_pingpong: device context, protection
// domain, memory regions (one registration per RegisterMemory call, never
// per operation), completion channels and queues, then one RC queue pair per
// peer, moved INIT -> RTR -> RTS by named functions (verbs_resources.h).
// Teardown is the mirror image.
//
// Two completion queues:
//   - the send CQ holds the completions of this node's one-sided work (and
//     of its message SENDs, which the transport consumes itself). Only the
//     owner's consumer thread drains it, through PollCompletions; its
//     completion channel is behind completion_fd().
//   - the receive CQ holds incoming messages. The transport's own thread,
//     "pw-verbs", drains it, calls the message handler and re-posts the
//     receive buffer.
// The target of a one-sided operation is served by the NIC: no thread of
// the target runs for it.
//
// Connecting needs one QP per peer, so each side's QP number is per peer:
// the owner calls EndpointFor(peer) (creates that peer's QP in INIT and
// returns its qp_num, GID and PSN), publishes the result to that peer
// through the control plane, and calls Connect(peer, what the peer
// published for this node), which moves the QP to RTR and RTS.
// LocalEndpoint() gives only the node part (host, GID).
//
// Nothing on the data path has a wall-clock timeout. A peer that stops
// answering is found by the NIC's transport-level retry (ACK timeout and
// retry count in VerbsTransportConfig): its outstanding work completes with
// kPeerGone. Membership's verdict (PeerDied) moves that peer's QP to ERR at
// once, which flushes its work with kPeerGone too. Either way only that
// peer's QP is affected.
//
// Files: setup, device selection, connections and the receive thread in
// verbs_transport.cc; posting, completions and messages in
// verbs_transport_datapath.cc.
#ifndef PAGEWIRE_RUNTIME_TRANSPORT_VERBS_VERBS_TRANSPORT_H_
#define PAGEWIRE_RUNTIME_TRANSPORT_VERBS_VERBS_TRANSPORT_H_

#include <infiniband/verbs.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "runtime/base/ring.h"
#include "runtime/transport/transport.h"
#include "runtime/transport/verbs/verbs_resources.h"

namespace pagewire {

struct VerbsTransportConfig {
  int rank = 0;  // this node's rank, for diagnostics
  // Which device: a name ("rxe0") or an index into ibv_get_device_list
  // ("0"). Empty: PAGEWIRE_VERBS_DEVICE, else the first device with an
  // ACTIVE port.
  std::string device;
  // Which port (1-based). 0: PAGEWIRE_VERBS_PORT, else the device's first
  // ACTIVE port.
  int port = 0;
  // Which GID table entry. -1: PAGEWIRE_VERBS_GID_INDEX, else the port's
  // RoCEv2 IPv4-mapped GID (index 1 on a fresh rxe), else its first RoCEv2
  // GID.
  int gid_index = -1;
  // Read the PAGEWIRE_VERBS_* variables for the fields left unset above.
  bool use_environment = true;
  // What LocalEndpoint().host says (diagnostics; verbs routes by GID).
  std::string advertise_host;
  // Queue pairs this transport may create over its life (one per peer,
  // plus one per reconnection); sizes the completion queues, which must
  // hold every QP's worst case.
  int max_queue_pairs = 64;
  // The NIC's transport-level retry, which is how a peer that vanished is
  // noticed without membership: an unacknowledged packet is resent after
  // 4.096 us * 2^ack_timeout_exponent, at most retry_count times (0..7);
  // then the QP's work completes with kPeerGone. Not a fault-path timeout:
  // a live peer always acknowledges, however long the fault waits.
  // Defaults: 67 ms, 7 retries, about half a second.
  uint8_t ack_timeout_exponent = 14;
  uint8_t retry_count = 7;
};


// Threads: as for Transport. Create() and the destructor from the owner;
// RegisterMemory/DeregisterMemory/EndpointFor/Connect/PeerDied from owner
// (control-plane) threads; PostSend and SendMessage from any thread;
// PollCompletions and ArmCompletionFd from one consumer thread. The message
// handler runs on "pw-verbs" and must not block or call SetMessageHandler;
// it may call SendMessage. The destructor must not race with other calls.
class VerbsTransport final : public Transport {
 public:
  // Work requests one peer's QP holds at once (its send queue). More are
  // queued inside the transport, in order, and posted as completions free
  // slots: PostSend never fails for back-pressure.
  static constexpr uint32_t kSendQueueDepth = 256;
  // At most this many unsignalled work requests in a row: the transport
  // signals every kUnsigBatch-th itself (the completion is consumed here,
  // not reported), so a full send queue always has a signalled request in
  // flight whose completion frees the slots before it.
  static constexpr uint32_t kUnsigBatch = 64;
  static_assert(kSendQueueDepth >= 2 * kUnsigBatch,
                "a full send queue must hold a signalled request");
  static_assert((kSendQueueDepth & (kSendQueueDepth - 1)) == 0,
                "the shadow ring indexes with a mask");
  // Receive buffers posted per peer for messages (kMaxMessageBytes each).
  // A sender that outruns them is held back by the NIC (receiver not ready,
  // retried forever), never dropped.
  static constexpr uint32_t kRecvDepth = 32;
  // Registered send buffers per peer for messages; a SEND's buffer is free
  // again once its completion (every SEND is signalled) is polled.
  static constexpr uint32_t kMessageSlots = 16;
  static_assert(kMessageSlots <= kSendQueueDepth, "slots need SQ entries");
  // Completions taken from a CQ per ibv_poll_cq call.
  static constexpr int kCompletionBurst = 32;
  // Send-CQ events taken before one ibv_ack_cq_events call. Acking takes
  // the CQ's mutex and signals its condition variable, so it is batched
  // (ibv_get_cq_event(3)); at most this many minus one wait for the
  // destructor, which acks them before the CQ goes (ibv_destroy_cq waits
  // for every event to be acked).
  static constexpr unsigned kCqEventAckBatch = 64;
  static_assert(kCqEventAckBatch >= 1, "acks at least every event");

  // Opens the device, allocates the PD, the CQs and their channels, and
  // starts "pw-verbs". Unavailable when the machine has no usable RDMA
  // device; the message then starts with "no RDMA device" when there is
  // none at all, so the runtime can log "<message>; using TCP" (or fail if
  // verbs was demanded). InvalidArgument for a bad PAGEWIRE_VERBS_* value;
  // NotFound for a named device or GID that does not exist.
  static absl::StatusOr<std::unique_ptr<VerbsTransport>> Create(
      const VerbsTransportConfig& config);
  // Stops "pw-verbs" and releases every verbs object in reverse setup
  // order. Outstanding operations are abandoned (the NIC stops writing
  // their buffers when their QP is destroyed).
  ~VerbsTransport() override;
  VerbsTransport(const VerbsTransport&) = delete;
  VerbsTransport& operator=(const VerbsTransport&) = delete;

  // "verbs(rxe0:1)": device and port.
  std::string Name() const override;
  // ibv_reg_mr with local write and remote read, write and atomics.
  absl::StatusOr<MemoryRegion> RegisterMemory(void* addr,
                                              uint64_t length) override;
  absl::Status DeregisterMemory(const MemoryRegion& region) override;

  // The node part: host (config.advertise_host) and the GID. qp_num and psn
  // are 0: a QP is per peer, see EndpointFor.
  TransportEndpoint LocalEndpoint() const override;
  // The endpoint `peer` must use to connect to this node: creates this
  // node's QP for `peer` (in INIT, receive buffers posted) on first call and
  // returns its qp_num, GID and PSN. Returns the same QP until it fails;
  // after a failure (see PostSend) it creates a fresh one, so both sides
  // can reconnect by exchanging endpoints again. FailedPrecondition for a
  // peer declared dead; ResourceExhausted past config.max_queue_pairs.
  absl::StatusOr<TransportEndpoint> EndpointFor(int peer);
  // Moves `peer`'s QP to RTR and RTS towards `endpoint` (what the peer's
  // EndpointFor(this rank) returned). Idempotent for the same endpoint.
  // FailedPrecondition if EndpointFor(peer) was not called, the peer is
  // dead, or its QP failed (call EndpointFor again first).
  absl::Status Connect(int peer, const TransportEndpoint& endpoint) override;
  // Moves `peer`'s QP to ERR: the NIC flushes its outstanding operations,
  // which complete with kPeerGone, as do later posts. Other peers carry on.
  void PeerDied(int peer) override;
  uint64_t Outstanding(int peer) const override;

  // Checked before posting, per work request, like TcpTransport: a local
  // buffer outside the regions registered here with its lkey completes with
  // kLocalProtectionError, and an atomic on a remote address not 8-byte
  // aligned with kRemoteAccessError; neither is sent, so neither breaks the
  // QP. A malformed chain (unknown opcode, atomics not 8 bytes, length
  // above the port's max_msg_sz) is rejected whole with InvalidArgument.
  // The rest is posted as one chain; what does not fit the send queue is
  // queued and posted, in order, as completions free slots.
  //
  // Errors the NIC reports (an unknown rkey or an address outside the
  // remote region: kRemoteAccessError; no answer: kPeerGone) put an RC QP,
  // at both ends, into ERR: the failing request completes with its status,
  // the ones behind it with kPeerGone, and later posts to that peer
  // complete with kPeerGone at once. The other peers' QPs are untouched.
  // EndpointFor + Connect on both sides makes a new QP for the pair.
  //
  // FailedPrecondition if `peer` was never connected.
  absl::Status PostSend(int peer, WorkRequest* chain) override;
  int PollCompletions(WorkCompletion* out, int max) override;
  // An epoll fd over the send CQ's completion channel and an internal
  // eventfd (completions the transport made itself: checks that failed,
  // queued work of a failed peer); readable while either has something.
  int completion_fd() const override { return completion_epoll_.get(); }
  // Takes the channel's event if a notification request stands (at most
  // one read), requests the next notification (ibv_req_notify_cq) only when
  // none stands, and after a request polls once more, so a completion that
  // arrived just before it is not left without a wake-up (it goes to the
  // software bell). Called with no event pending while a request stands
  // (woken by the bell), it makes one read and nothing else.
  void ArmCompletionFd() override;
  // If no notification request stands: none is made while nothing is in
  // flight (a post from another thread then rings the software bell), else
  // one is, as in ArmCompletionFd. Marks the calling thread as the consumer,
  // whose own posts ring nothing (it calls this again before it sleeps).
  void PrepareToSleep() override;

  void SetMessageHandler(MessageHandler handler) override;
  // SEND with immediate (the type) from a registered send buffer.
  // Delivered in order per peer. The buffer is recycled when its completion
  // is polled, so the owner's consumer must drain PollCompletions (the
  // fault loop always does); beyond kMessageSlots messages in flight,
  // messages are queued in order. Unavailable if the peer is gone or its QP
  // failed; FailedPrecondition if never connected.
  absl::Status SendMessage(int peer, uint16_t type,
                           absl::Span<const char> body) override;

  const std::string& device_name() const { return device_name_; }
  int port_num() const { return path_.port_num; }
  int gid_index() const { return path_.sgid_index; }

 private:
  // What the send queue holds at one position (the ibv wr_id is the
  // position's sequence number, so a completion finds it in O(1)).
  struct SendSlot {
    uint64_t wr_id = 0;  // the caller's
    uint32_t length = 0;
    WorkOpcode opcode = WorkOpcode::kRead;
    bool user_signaled = false;
    bool message = false;  // a SEND: frees a message slot when retired
  };

  // Work waiting for a send-queue slot (or a message buffer).
  struct Queued {
    WorkRequest wr;  // `next` unused
    bool message = false;
    uint16_t type = 0;  // message type; the body is in message_bodies
  };

  // This node's QP to one peer, with its buffers and send-queue accounting.
  // Never freed before the transport: completions and the receive thread
  // find it by QP number without holding a reference.
  struct Connection {
    enum class State { kInit, kConnected, kBroken, kDead };
    Connection(int peer_rank, uint32_t send_psn);

    const int peer;
    const uint32_t psn;  // this side's send PSN
    // Setup order: buffers, their registration, the QP.
    std::unique_ptr<char[]> buffers;  // kRecvDepth receive + kMessageSlots
                                      // send buffers, kMaxMessageBytes each
    verbs_internal::MemoryRegistration buffers_mr;
    verbs_internal::QueuePair qp;

    absl::Mutex mu;
    State state ABSL_GUARDED_BY(mu) = State::kInit;
    verbs_internal::RemoteQp remote ABSL_GUARDED_BY(mu);
    std::string broken_reason ABSL_GUARDED_BY(mu);
    uint64_t posted ABSL_GUARDED_BY(mu) = 0;   // next sequence number
    uint64_t retired ABSL_GUARDED_BY(mu) = 0;  // oldest not yet completed
    uint32_t unsignaled_run ABSL_GUARDED_BY(mu) = 0;
    uint64_t messages_posted ABSL_GUARDED_BY(mu) = 0;
    uint64_t messages_retired ABSL_GUARDED_BY(mu) = 0;
    uint64_t flushed ABSL_GUARDED_BY(mu) = 0;  // since it broke
    SendSlot shadow[kSendQueueDepth] ABSL_GUARDED_BY(mu);
    Ring<Queued> backlog ABSL_GUARDED_BY(mu);
    std::deque<std::string> message_bodies ABSL_GUARDED_BY(mu);
    // Scratch for building one chain (under mu).
    ibv_send_wr chain[kSendQueueDepth];
    ibv_sge sges[kSendQueueDepth];

    char* recv_buffer(uint32_t i) const {
      return buffers.get() + static_cast<size_t>(i) * kMaxMessageBytes;
    }
    char* send_buffer(uint64_t i) const {
      return buffers.get() +
             static_cast<size_t>(kRecvDepth + i % kMessageSlots) *
                 kMaxMessageBytes;
    }
    uint32_t in_flight() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return static_cast<uint32_t>(posted - retired);
    }
  };

  explicit VerbsTransport(const VerbsTransportConfig& config);

  // --- verbs_transport.cc (setup, connections, the receive thread) ---
  absl::Status Open(const VerbsTransportConfig& config);
  // Open's steps: what the device allows (atomics, read depth, how many
  // queue pairs the completion queues can serve), and the completion
  // channels, queues and the completion fd.
  absl::Status ApplyDeviceLimits(const VerbsTransportConfig& config,
                                 ibv_device_attr& dev);
  absl::Status CreateCompletionQueues(const ibv_device_attr& dev);
  absl::StatusOr<std::unique_ptr<Connection>> NewConnection(int peer);
  Connection* FindConnection(int peer) ABSL_LOCKS_EXCLUDED(mu_);
  Connection* FindByQpNum(uint32_t qp_num) ABSL_LOCKS_EXCLUDED(mu_);
  void ReceiveLoop();
  void DrainReceives();
  // Posts receive buffer `slot` of `c`; ibv_post_recv's result.
  int PostReceive(Connection* c, uint32_t slot);
  void RepostReceive(Connection* c, uint32_t slot);

  // --- verbs_transport_datapath.cc ---
  bool LocalOk(const WorkRequest& wr) const
      ABSL_SHARED_LOCKS_REQUIRED(regions_mu_);
  // Fills c->chain[n] and its shadow slot (the caller checked for room).
  void AddToChain(Connection* c, uint32_t n, const WorkRequest& wr,
                  bool message, uint16_t type, absl::Span<const char> body)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu);
  // Posts c->chain[0..n) with one ibv_post_send.
  void PostChainLocked(Connection* c, uint32_t n)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu);
  // Posts queued work while slots (and message buffers) are free.
  void PumpLocked(Connection* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu);
  // Marks the QP failed; its queued work completes with kPeerGone once the
  // NIC has flushed what is in flight (so per-peer order holds).
  void BreakLocked(Connection* c, Connection::State state,
                   const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu);
  void FailBacklogLocked(Connection* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu);
  // Turns one send-CQ entry into at most one WorkCompletion in *out.
  int Retire(const ibv_wc& wc, WorkCompletion* out);
  int DrainSoftware(WorkCompletion* out, int max);
  void PushSoftware(absl::Span<const WorkCompletion> wcs);
  // Makes completion_fd readable until DrainSoftware finds nothing left.
  void RingBellLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(software_mu_);
  // The consumer's part of ArmCompletionFd / PrepareToSleep once no request
  // stands: makes one (and polls once more) only if work is in flight.
  void RequestNotificationIfBusy();
  // After `n` entries were posted: wakes a consumer asleep with no request
  // standing, unless the poster is the consumer.
  void WakeUnarmedConsumer();

  // Device and port, fixed after Create.
  std::string device_name_;
  verbs_internal::QpPath path_;
  ibv_gid gid_{};
  uint32_t max_msg_sz_ = 0;
  bool atomics_ = false;
  std::string advertise_host_;
  int rank_ = 0;
  uint8_t ack_timeout_exponent_ = 14;
  uint8_t retry_count_ = 7;
  int max_queue_pairs_ = 0;

  // Verbs objects in rc_pingpong's setup order; destroyed in reverse.
  verbs_internal::Context context_;
  verbs_internal::ProtectionDomain pd_;
  mutable absl::Mutex regions_mu_;
  struct Registered {
    MemoryRegion region;
    verbs_internal::MemoryRegistration mr;
  };
  absl::flat_hash_map<uint32_t, Registered> by_lkey_
      ABSL_GUARDED_BY(regions_mu_);
  verbs_internal::CompletionChannel send_channel_;
  verbs_internal::CompletionQueue send_cq_;
  verbs_internal::CompletionChannel recv_channel_;
  verbs_internal::CompletionQueue recv_cq_;
  UniqueFd software_fd_;  // eventfd: software_ waits
  UniqueFd completion_epoll_;
  UniqueFd wake_fd_;  // stops "pw-verbs"

  // Lock order: regions_mu_, then mu_, then a Connection's mu, then
  // software_mu_.
  mutable absl::Mutex mu_;
  // Live connections by peer; every connection ever made by QP number
  // (including replaced ones, whose completions may still arrive).
  absl::flat_hash_map<int, Connection*> by_peer_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint32_t, Connection*> by_qp_num_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int, bool> dead_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;

  absl::Mutex handler_mu_;
  MessageHandler handler_ ABSL_GUARDED_BY(handler_mu_);

  absl::Mutex software_mu_;
  Ring<WorkCompletion> software_ ABSL_GUARDED_BY(software_mu_);
  bool software_bell_ ABSL_GUARDED_BY(software_mu_) = false;

  // The send CQ's notification state, the consumer thread's alone
  // (ArmCompletionFd): whether a request (ibv_req_notify_cq) stands whose
  // event has not been taken, and events taken but not yet acked.
  bool send_armed_ = false;
  unsigned send_events_unacked_ = 0;
  // Send-queue entries posted and not yet retired, over all connections:
  // while none is, no completion can come, and the consumer may sleep with
  // no request standing (RequestNotificationIfBusy).
  std::atomic<int64_t> unretired_{0};
  // The consumer may be asleep with no request standing: a post by another
  // thread rings the software bell so that it wakes and makes one.
  std::atomic<bool> sleeping_unarmed_{false};
  // The thread that calls PrepareToSleep (the fault loop).
  std::atomic<std::thread::id> consumer_{};

  std::thread thread_;
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_TRANSPORT_VERBS_VERBS_TRANSPORT_H_
