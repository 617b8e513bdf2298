// tcp_transport.h - the Transport over plain TCP sockets, for clusters
// without RDMA.
//
// One epoll thread, named "pw-tcp", does all the network work of a node: it
// accepts connections, serves the one-sided operations peers post to this
// node straight from registered memory (READ, WRITE, FETCH_ADD,
// COMPARE_SWAP; never through a home manager), receives the responses to
// the operations this node posted, delivers messages, and flushes output
// that did not fit a socket buffer. Each pair of nodes uses two
// connections: the requester's outgoing connection carries its requests and
// messages, and the target answers on the same connection, in order, so a
// response finds its pending request at the head of a per-connection FIFO
// (O(1), no lookup).
//
// Every connection starts with a handshake (tcp_handshake.h) in which both
// ends prove they hold the job's secret, never sending it, and the target
// checks that the rank the requester claims is the one membership places
// at the connection's source address. Nothing is read past the handshake,
// nor served, before it succeeds; the requester sends nothing but its hello
// before the target has proved itself. Connections that have not finished
// their handshake are limited in number: when a new one would exceed the
// limit, the oldest of them is closed (connection set-up, never a fault).
//
// A broken connection is not a dead peer. Every frame a requester sends is
// numbered in its session with the target (a random id per peer, kept
// across connections). When an outgoing connection breaks after its
// handshake, its operations and unacknowledged messages wait; "pw-tcp"
// connects again (backing off from 10 ms to 1 s between attempts, which
// decides when to try, never whether to give up), and the new handshake
// tells how many frames the target has taken. Everything not answered is
// sent again and the target applies each frame exactly once: a repeated
// WRITE or message is not applied again, a repeated atomic is answered
// with the old value it returned the first time, a repeated READ reads
// again. Only membership ends a session: PeerDied() completes what waits
// with kPeerGone. A target closes a connection that names an unknown rkey
// or an address outside its region, after answering that operation with
// a remote access error (one log line per connection).
//
// Nothing on the data path has a wall-clock timeout: the thread sleeps in
// epoll_wait and is woken by sockets or an eventfd (or when the next
// reconnection attempt is due). Bad
// input (garbage on the port, wrong magic or version, unknown rkey,
// out-of-range address, oversized frame) is logged as a warning naming the
// peer and closes at most that one connection.
//
// Files: setup, connections and the loop in tcp_transport.cc; the
// handshake in tcp_transport_handshake.cc; posting, receiving and
// completions in tcp_transport_datapath.cc; serving in
// tcp_transport_serve.cc; sessions across connections in
// tcp_transport_resume.cc. The wire format is in
// tcp_internal below (tests build raw frames from it).
#ifndef PAGEWIRE_RUNTIME_TRANSPORT_TCP_TCP_TRANSPORT_H_
#define PAGEWIRE_RUNTIME_TRANSPORT_TCP_TCP_TRANSPORT_H_

#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <deque>
#include <map>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "runtime/base/hmac_sha256.h"
#include "runtime/base/log.h"
#include "runtime/base/log_summary.h"
#include "runtime/base/ring.h"
#include "runtime/base/unique_fd.h"
#include "runtime/transport/tcp/tcp_handshake.h"
#include "runtime/transport/transport.h"

namespace pagewire {

struct TcpTransportConfig {
  int rank = 0;  // this node's rank, sent in the hello
  std::string bind_host = "0.0.0.0";
  // What LocalEndpoint() reports. Empty: bind_host, or 127.0.0.1 when
  // bind_host is the wildcard 0.0.0.0.
  std::string advertise_host;
  uint16_t port = 0;  // 0: an ephemeral port (see LocalEndpoint())
  // Both ends of a connection must agree; a mismatch is rejected.
  uint32_t protocol_version = 2;
  // The job's secret (PAGEWIRE_SECRET). Required: every connection proves
  // it (tcp_handshake.h).
  std::string secret;
  // Ranks in the job: a hello claiming a rank outside [0, nranks) is
  // refused. 0: not known (any rank may be claimed).
  int nranks = 0;
  // Incoming connections that may be in their handshake at once. At the
  // start of a job every peer connects at once, and a claim may wait for
  // membership, so the runtime allows for all its peers (64 + nranks).
  int max_unauthenticated = 64;
};

// The wire format. All integers are little-endian (the byte order of every
// machine Pagewire runs on; checked by static_assert in the .cc files).
//
//   Outgoing connection, requester -> target:
//     the handshake    tcp_handshake.h: ClientHello, then (after the
//                      target's ServerChallenge) ClientProof
//     RequestHeader    kind kOp:      opcode, length, remote_addr, rkey,
//                                     compare_add, swap; WRITE: followed by
//                                     `length` payload bytes
//                      kind kMessage: msg_type, length; followed by
//                                     `length` body bytes
//   Same connection, target -> requester, one per kOp in FIFO order:
//     ResponseHeader   status; READ success: followed by `length` bytes;
//                      atomics: old value in `value`; READ and WRITE: the
//                      frames of the session the target has taken, in
//                      `value` (the requester's messages below it arrived)
namespace tcp_internal {

enum class FrameKind : uint8_t {
  kOp = 1,
  kMessage = 2,
  kResponse = 3,
};

struct RequestHeader {
  uint8_t kind;      // FrameKind::kOp or kMessage
  uint8_t opcode;    // WorkOpcode (kOp)
  uint16_t msg_type;  // kMessage
  uint32_t length;   // op bytes, or message body bytes
  uint64_t remote_addr;
  uint32_t rkey;
  uint32_t reserved;
  uint64_t compare_add;
  uint64_t swap;
  uint64_t seq;  // the frame's number in the requester's session, from 0
};
static_assert(sizeof(RequestHeader) == 48, "RequestHeader is 48 bytes");

enum class ResponseStatus : uint8_t {
  kOk = 0,
  kRemoteAccessError = 1,
  // A repeated atomic whose first answer the target no longer keeps.
  kResultLost = 2,
};

struct ResponseHeader {
  uint8_t kind;    // FrameKind::kResponse
  uint8_t status;  // ResponseStatus
  uint16_t reserved;
  uint32_t length;  // payload bytes that follow (READ success only)
  uint64_t value;   // atomics: the old value
};
static_assert(sizeof(ResponseHeader) == 16, "ResponseHeader is 16 bytes");

// The largest READ or WRITE one work request may move. It bounds what a
// receiver accepts in one frame, so a garbage length is rejected instead of
// allocated; 64 MiB is far above the largest unit Pagewire moves (a huge
// page, 2 MiB).
inline constexpr uint32_t kMaxOpBytes = 64u << 20;

// A byte FIFO: output waiting for the socket. Appends at the back, consumes
// at the front; keeps its capacity, so the steady state never allocates.
class ByteQueue {
 public:
  explicit ByteQueue(size_t reserve) { buf_.reserve(reserve); }
  bool empty() const { return head_ == buf_.size(); }
  size_t size() const { return buf_.size() - head_; }
  const char* data() const { return buf_.data() + head_; }
  void Append(const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    buf_.insert(buf_.end(), c, c + n);
  }
  void Consume(size_t n) {
    head_ += n;
    if (head_ == buf_.size()) {
      buf_.clear();
      head_ = 0;
    } else if (head_ >= kCompactBytes && head_ * 2 >= buf_.size()) {
      // Moving less than what was consumed keeps Consume amortized O(n).
      buf_.erase(buf_.begin(), buf_.begin() + head_);
      head_ = 0;
    }
  }

 private:
  static constexpr size_t kCompactBytes = 1 << 20;
  std::vector<char> buf_;
  size_t head_ = 0;
};


}  // namespace tcp_internal

// Threads: as for Transport. Create() and the destructor from the owner;
// RegisterMemory/DeregisterMemory/Connect/PeerDied from owner (control-plane)
// threads; PostSend and SendMessage from any thread; PollCompletions from one
// consumer thread. The message and completion handlers run on "pw-tcp" and
// must not block or call SetMessageHandler / SetCompletionHandler. The
// destructor must not race with other calls.
class TcpTransport final : public Transport {
 public:
  // Binds and listens on config.bind_host:config.port and starts "pw-tcp".
  static absl::StatusOr<std::unique_ptr<TcpTransport>> Create(
      const TcpTransportConfig& config);
  // Stops the thread; outstanding operations complete with kFlushed.
  ~TcpTransport() override;
  TcpTransport(const TcpTransport&) = delete;
  TcpTransport& operator=(const TcpTransport&) = delete;

  std::string Name() const override { return "tcp"; }
  absl::StatusOr<MemoryRegion> RegisterMemory(void* addr,
                                              uint64_t length) override;
  absl::Status DeregisterMemory(const MemoryRegion& region) override;
  TransportEndpoint LocalEndpoint() const override;
  // Connects with a blocking connect(2) on the caller's (control-plane)
  // thread, then hands the socket to "pw-tcp", which runs the handshake;
  // operations posted meanwhile wait for it. A peer declared dead stays
  // dead; a peer whose connection broke may be connected again. Also
  // ExpectPeer(peer, endpoint.host): the endpoint is membership's word on
  // where the peer is.
  absl::Status Connect(int peer, const TransportEndpoint& endpoint) override;
  // Membership places `peer` at `host`: connections claiming to be `peer`
  // are accepted from that host's addresses only. A connection whose
  // claimed rank is not known yet waits, unanswered, until it is.
  absl::Status ExpectPeer(int peer, const std::string& host);
  void ExpectPeerCloses() override {
    closes_expected_.store(true, std::memory_order_relaxed);
  }
  void PeerDied(int peer) override;
  // Each work request is checked on its own: one whose local buffer is not
  // in a region registered here with its lkey completes with
  // kLocalProtectionError and is not sent; the others go on. A malformed
  // chain (bad opcode, atomics not 8 bytes, length above kMaxOpBytes) is
  // rejected whole with InvalidArgument before anything is posted.
  absl::Status PostSend(int peer, WorkRequest* chain) override;
  int PollCompletions(WorkCompletion* out, int max) override;
  int completion_fd() const override { return cq_fd_.get(); }
  // Completions of responses, and of operations a broken connection takes
  // with it, go to the handler on "pw-tcp" at the end of each event round.
  bool SetCompletionHandler(CompletionHandler handler) override;
  void SetMessageHandler(MessageHandler handler) override;
  uint64_t Outstanding(int peer) const override;
  // Unavailable if the peer is gone; FailedPrecondition if never connected.
  absl::Status SendMessage(int peer, uint16_t type,
                           absl::Span<const char> body) override;

 private:
  // Connect's steps: a connected, non-blocking socket to `endpoint` (its
  // address in `remote`), then the outgoing connection it becomes.
  absl::StatusOr<UniqueFd> Dial(int peer, const TransportEndpoint& endpoint,
                                std::string& remote);
  absl::Status AdoptOutgoing(int peer, UniqueFd fd, const std::string& remote);
  // Binds an outgoing socket to this node's own address (unless it binds
  // the wildcard).
  absl::Status BindSource(int fd, int family);
  // An operation posted and not yet answered, at its connection's FIFO.
  // Everything needed to send it again after a reconnection.
  struct PendingOp {
    uint64_t wr_id = 0;
    char* local = nullptr;
    uint32_t length = 0;
    WorkOpcode opcode = WorkOpcode::kRead;
    bool signaled = false;
    bool probe = false;  // an empty READ asking for the session's ack
    uint32_t rkey = 0;
    uint64_t remote_addr = 0;
    uint64_t compare_add = 0;
    uint64_t swap = 0;
    uint64_t seq = 0;
  };
  // A message sent and not yet known to have arrived.
  struct SentMessage {
    uint64_t seq;
    uint16_t type;
    std::string body;
  };
  // The target's side of a requester's session.
  struct InSession {
    uint64_t id = 0;
    uint64_t received = 0;  // frames taken: the next one's seq
    // (seq, old value) of its latest atomics, for repeats.
    std::deque<std::pair<uint64_t, uint64_t>> atomics;
  };

  // One TCP connection. Outgoing: this node is the requester (posters and
  // "pw-tcp" share it under `mu`). Incoming: this node is the target (only
  // "pw-tcp" uses it, `mu` is uncontended). The receive state is touched
  // only by "pw-tcp".
  struct Connection {
    enum class Role { kOutgoing, kIncoming };
    Connection(Role r, int fd_in, int rank, std::string remote_addr);

    // Where the handshake stands ("pw-tcp" only). Incoming: kAwaitHello,
    // kAwaitMembership (the claimed rank's address is not known yet),
    // kAwaitProof, kDone. Outgoing: kConnecting (a reconnection whose
    // connect(2) is under way, or none yet: fd -1), kAwaitChallenge, kDone.
    enum class Auth {
      kAwaitHello,
      kAwaitMembership,
      kAwaitProof,
      kConnecting,
      kAwaitChallenge,
      kDone
    };

    const Role role;
    const int fd;  // closed under `mu` when `closed` turns true
    const std::string remote;  // "host:port" of the other end
    const std::string remote_ip;  // its host part

    absl::Mutex mu;
    bool closed ABSL_GUARDED_BY(mu) = false;
    uint32_t epoll_events ABSL_GUARDED_BY(mu) = 0;
    tcp_internal::ByteQueue out ABSL_GUARDED_BY(mu);
    Ring<PendingOp> pending ABSL_GUARDED_BY(mu);
    // Outgoing: nothing goes out but the handshake until the target has
    // proved the job's secret; what is posted meanwhile is only recorded
    // (pending, unacked) and sent once it has.
    bool output_held ABSL_GUARDED_BY(mu) = false;
    // Outgoing: the session (moved to the next connection when this one
    // breaks, which then supersedes this one).
    uint64_t session ABSL_GUARDED_BY(mu) = 0;
    uint64_t next_seq ABSL_GUARDED_BY(mu) = 0;
    std::deque<SentMessage> unacked ABSL_GUARDED_BY(mu);
    size_t unacked_bytes ABSL_GUARDED_BY(mu) = 0;
    bool probe_posted ABSL_GUARDED_BY(mu) = false;
    bool superseded ABSL_GUARDED_BY(mu) = false;
    // Closed, and the completions of the operations it carried are not
    // delivered yet: operations posted now join `pending` and complete
    // after them (CompleteLatePosts), never before.
    bool completions_undelivered ABSL_GUARDED_BY(mu) = false;

    // "pw-tcp" only.
    int peer_rank;  // outgoing: the target; incoming: from the hello, or -1
    Auth auth = Auth::kAwaitHello;
    uint64_t accepted_seq = 0;  // incoming: order of accept, for eviction
    uint64_t client_session = 0;  // incoming: from the hello
    uint64_t challenged_received = 0;  // incoming: `received` it was told
    InSession* in_session = nullptr;  // incoming, once authenticated
    bool close_after_flush = false;  // incoming: a bad rkey was answered
    bool reconnection = false;  // outgoing: not the session's first
    tcp_handshake::Nonce client_nonce{};
    tcp_handshake::Nonce server_nonce{};
    bool read_paused = false;  // incoming: too much output waits
    bool gone = false;         // thread-side copy of `closed`
    std::vector<char> in;      // receive staging
    size_t in_head = 0, in_tail = 0;
    // A frame whose payload is still arriving goes straight to `sink`.
    enum class SinkKind { kNone, kReadPayload, kRequestBody };
    SinkKind sink_kind = SinkKind::kNone;
    char* sink = nullptr;
    size_t sink_left = 0;
    tcp_internal::RequestHeader sink_request{};    // kRequestBody
    tcp_internal::ResponseHeader sink_response{};  // kReadPayload
    std::vector<char> body;  // WRITE payloads and messages that span reads
  };

  struct PeerState {
    std::shared_ptr<Connection> out;
    bool dead = false;
    TransportEndpoint endpoint;  // where Connect reached it
    int attempts = 0;  // reconnection attempts since it last worked
  };
  struct Retry {
    int peer;
    std::chrono::steady_clock::time_point due;
  };

  explicit TcpTransport(const TcpTransportConfig& config);
  absl::Status Start();

  // --- tcp_transport.cc (setup, connections, the loop) ---
  void Loop();
  void AcceptAll();
  void HandleWake();
  std::string Describe(const Connection& c) const;
  // Closes `c` on "pw-tcp": its pending operations complete with `status`.
  void CloseConnection(Connection* c, WcStatus status,
                       const std::string& reason, LogLevel level);
  bool SetEventsLocked(Connection* c, uint32_t events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu);
  // At the end of a round, once the completions of the connections closed
  // in it are delivered: what was posted to them meanwhile, kPeerGone.
  void CompleteLatePosts();

  // --- tcp_transport_resume.cc (sessions across connections) ---
  // `c`, an outgoing connection, broke: its session waits on a new one.
  // False if the session cannot go on (the peer is dead, or the job is
  // ending, or the first handshake never finished): `c` is closed and
  // what it carried completes with kPeerGone.
  bool Resume(Connection* c, const std::string& reason);
  // A successor of `from` for `peer` on `fd` (-1: not connected yet), with
  // `from`'s session; `from` is superseded and closed.
  std::shared_ptr<Connection> Succeed(Connection* from, int fd,
                                      const std::string& remote);
  void ScheduleRetry(int peer);
  void RunDueRetries();
  int MillisUntilNextRetry() const;
  void StartAttempt(int peer);
  void FinishConnect(Connection* c);
  // The output after a handshake: the proof, then every pending operation
  // and every message the target has not taken (below `received` it has),
  // in frame order.
  // Returns how many frames that is, the proof not counted.
  size_t RebuildOutputLocked(Connection* c,
                             const tcp_handshake::ClientProof& p,
                             uint64_t received)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu);
  static void AppendOp(tcp_internal::ByteQueue& out, const PendingOp& op);
  static void AppendMessage(tcp_internal::ByteQueue& out,
                            const SentMessage& m);
  // The target's answer to a frame it has taken before (seq below the
  // session's received), or false to take it as new.
  bool AnswerRepeat(Connection* c, const tcp_internal::RequestHeader& h);
  // A broken connection: an outgoing one resumes (Resume), else it is
  // closed and what it carried completes with kPeerGone.
  void Broken(Connection* c, const std::string& reason, LogLevel level);
  // `peer`'s current outgoing connection, locked, starting from `conn` and
  // following the connections that superseded it; null (nothing locked)
  // if it is closed for good. `join_closed`: also one just closed whose
  // completions are not delivered yet (completions_undelivered).
  std::shared_ptr<Connection> LockCurrent(int peer,
                                          std::shared_ptr<Connection> conn,
                                          bool join_closed = false)
      ABSL_NO_THREAD_SAFETY_ANALYSIS;
  // Keeps an atomic's answer for a repeat (the latest kKeptAtomics).
  static void KeepAtomicResult(InSession& s, uint64_t seq, uint64_t value);

  // --- tcp_transport_datapath.cc ---
  bool LocalOk(const WorkRequest& wr) const
      ABSL_SHARED_LOCKS_REQUIRED(regions_mu_);
  // The region holding [addr, addr+len) under rkey, or nullptr.
  const MemoryRegion* FindRemote(uint32_t rkey, uint64_t addr,
                                 uint64_t len) const
      ABSL_SHARED_LOCKS_REQUIRED(regions_mu_);
  // Writes what the socket takes now; queues the rest behind EPOLLOUT.
  void FlushLocked(Connection* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu);
  void HandleReadable(Connection* c);
  void HandleWritable(Connection* c);
  // Scatters the next responses' headers and READ payloads straight into
  // their buffers; false when no plan applies.
  bool ReadScattered(Connection* c, bool* drained);
  // ReadScattered's layout of one readv, and the completing of what `got`
  // bytes of it brought.
  struct Scatter;
  void PlanScatter(Connection* c, Scatter& sc);
  void DeliverScattered(Connection* c, Scatter& sc, size_t got);
  // Whether `op`'s buffer overlaps one of the first `n` READs in plan_.
  bool OverlapsPlanned(const PendingOp& op, size_t n) const;
  bool ParseInput(Connection* c);
  bool ParseRequests(Connection* c);
  // ParseRequests' checks: a peer's hello at `p` (false: the connection is
  // closed, rejected), and a request frame's header ("" if sound; its
  // payload's length in `payload`).
  bool AcceptHello(Connection* c, const char* p);
  // The claimed rank against membership's address for it: answers with
  // the challenge, leaves `c` waiting, or refuses (false: closed).
  bool CheckClaim(Connection* c);
  bool AcceptProof(Connection* c, const char* p);
  // The requester's side: the target's answer at `p`, then our proof.
  bool AcceptChallenge(Connection* c, const char* p);
  // Closes `c`, whose handshake failed, with one line per kind of
  // problem (then counts), so that a flood of forgeries stays readable.
  void Refuse(Connection* c, absl::string_view kind,
              const std::string& problem);
  // Closes the oldest incoming connections still in their handshake
  // until fewer than the limit remain.
  void MakeRoomForHandshakes();
  void RecheckWaitingClaims();
  static std::string CheckRequest(const tcp_internal::RequestHeader& h,
                                  size_t& payload);
  bool ParseResponses(Connection* c);
  bool FinishSink(Connection* c);
  // (tcp_transport_serve.cc) A frame the target takes, in its session;
  // an operation it serves from registered memory.
  void ServeRequest(Connection* c, const tcp_internal::RequestHeader& h,
                    const char* payload);
  void ServeOp(Connection* c, const tcp_internal::RequestHeader& h,
               const char* payload, InSession& session);
  // (tcp_transport_datapath.cc again)
  // Matches a response to the head of `c`'s FIFO; false if `c` was closed.
  bool CompleteHead(Connection* c, const tcp_internal::ResponseHeader& r);
  // Payload bytes `r` carries for `op`, or -1 if `r` cannot answer `op`.
  static int64_t ResponsePayload(const PendingOp& op,
                                 const tcp_internal::ResponseHeader& r);
  void Complete(const PendingOp& op, WcStatus status, int peer);
  void PushCompletions(absl::Span<const WorkCompletion> wcs);
  void FlushThreadCompletions();

  const TcpTransportConfig config_;
  const Digest256 key_;  // tcp_handshake::DataPlaneKey(secret)
  uint16_t port_ = 0;
  UniqueFd listen_fd_;
  UniqueFd epoll_fd_;
  UniqueFd wake_fd_;
  UniqueFd cq_fd_;

  mutable absl::Mutex regions_mu_;
  absl::flat_hash_map<uint32_t, MemoryRegion> by_rkey_
      ABSL_GUARDED_BY(regions_mu_);
  absl::flat_hash_map<uint32_t, MemoryRegion> by_lkey_
      ABSL_GUARDED_BY(regions_mu_);
  std::mt19937 key_rng_ ABSL_GUARDED_BY(regions_mu_);

  // Lock order: regions_mu_, then mu_, then a Connection's mu, then cq_mu_.
  mutable absl::Mutex mu_;
  absl::flat_hash_map<int, PeerState> peers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<Connection*, std::shared_ptr<Connection>> conns_
      ABSL_GUARDED_BY(mu_);
  std::vector<int> doomed_ ABSL_GUARDED_BY(mu_);  // PeerDied -> "pw-tcp"
  // Membership's addresses per rank (ExpectPeer), as numeric strings.
  absl::flat_hash_map<int, std::vector<std::string>> peer_ips_
      ABSL_GUARDED_BY(mu_);
  bool recheck_claims_ ABSL_GUARDED_BY(mu_) = false;  // ExpectPeer -> "pw-tcp"
  bool stop_ ABSL_GUARDED_BY(mu_) = false;

  absl::Mutex handler_mu_;
  MessageHandler handler_ ABSL_GUARDED_BY(handler_mu_);

  // Readers: "pw-tcp" while it calls the handler; writer: SetCompletionHandler.
  absl::Mutex completion_handler_mu_;
  CompletionHandler completion_handler_ ABSL_GUARDED_BY(completion_handler_mu_);

  absl::Mutex cq_mu_;
  Ring<WorkCompletion> cq_ ABSL_GUARDED_BY(cq_mu_);
  bool cq_bell_ ABSL_GUARDED_BY(cq_mu_) = false;  // cq_fd_ is readable

  // "pw-tcp" only.
  std::vector<WorkCompletion> thread_wcs_;
  std::vector<PendingOp> drained_;
  std::vector<std::shared_ptr<Connection>> graveyard_;
  std::vector<PendingOp> plan_;
  uint64_t accepted_ = 0;
  LogSummary refusals_;
  std::map<int, InSession> in_sessions_;  // by requester rank
  std::vector<Retry> retries_;
  LogSummary reconnect_failures_;

  std::atomic<bool> closes_expected_{false};
  std::thread thread_;
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_TRANSPORT_TCP_TCP_TRANSPORT_H_
