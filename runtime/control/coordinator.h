// coordinator.h - the job's membership and dataspace authority: admits
// ranks, keeps their leases, publishes membership views, runs barriers and
// allocates collective dataspaces out of the global range.
//
// The Coordinator implements the gRPC services Membership and Dataspaces
// (proto/control_plane.proto); CoordinatorServer (coordinator_server.h)
// puts it on a port. It is never on the path of a page fault: ranks talk to
// it to join, to learn who else is alive, to synchronise and to allocate.
//
// Death is decided by evidence, never by silence. A rank whose last
// heartbeat is older than the lease becomes SUSPECT in a new view: still a
// member, waited for by barriers, its pages still served; the suspicion is
// lifted by its next heartbeat. A rank becomes DEAD only on evidence: its
// control connection (its WatchView stream) closing while it is a member,
// which the kernel does when the process ends, even by SIGKILL; or the word
// of the process manager or an operator (DeclareDead). An opt-in deadline
// (CoordinatorConfig::dead_after) declares a rank silent that long DEAD for
// those who want one. No request is ever failed by a timeout. A pending
// Barrier waits until it completes, or until a rank becomes DEAD or LEFT
// (then it fails with UNAVAILABLE naming that rank), or until the
// coordinator shuts down.
//
// Threads: the gRPC server's callback threads call the services; the
// coordinator's own lease-monitor thread expires leases. Every public method
// is thread-safe. Handlers never block: Barrier and WatchView are callback
// reactors that finish when the coordinator has something to say. Call
// Shutdown() before shutting down the grpc::Server that serves it (the
// server waits for pending barriers and watch streams, and Shutdown() ends
// them), and destroy the coordinator only after that server is gone.
#ifndef PAGEWIRE_RUNTIME_CONTROL_COORDINATOR_H_
#define PAGEWIRE_RUNTIME_CONTROL_COORDINATOR_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/impl/codegen/service_type.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/control_plane.grpc.pb.h"
#include "proto/control_plane.pb.h"
#include "runtime/base/hmac_sha256.h"
#include "runtime/control/protocol.h"
#include "runtime/control/tls.h"

namespace pagewire::control {

struct CoordinatorConfig {
  std::string cluster_id;  // every rank must join with the same id
  std::string secret;      // shared job secret (PAGEWIRE_SECRET); never logged
  TlsFiles tls;            // serve TLS only (tls.h), if enabled
  uint32_t protocol_version = kProtocolVersion;
  int nranks = 0;          // ranks 0 .. nranks-1
  // The job's global address range, handed to every rank in JoinReply and
  // carved into dataspaces. Both page-aligned.
  uint64_t global_base = uint64_t{0x2000} << 32;
  uint64_t global_size = uint64_t{1} << 40;
  // How often ranks heartbeat, and how long a silent rank stays above
  // suspicion. The lease must cover several heartbeats so one late
  // heartbeat (a slow network, a busy node) does not make a rank SUSPECT.
  absl::Duration heartbeat_interval = absl::Milliseconds(100);
  absl::Duration lease = absl::Seconds(2);
  // Opt-in deadline: a rank silent this long is declared DEAD. Infinite by
  // default: silence alone never kills a rank. At least the lease.
  absl::Duration dead_after = absl::InfiniteDuration();

  // OK, or INVALID_ARGUMENT naming the bad field and the fix.
  absl::Status Validate() const;
};

class Coordinator {
 public:
  // Validates `config` and starts the lease monitor.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(
      CoordinatorConfig config);
  // Stops the lease monitor. Shutdown() must have been called, and the
  // grpc::Server serving this coordinator must already be destroyed.
  ~Coordinator();

  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // The two gRPC services, to register with a grpc::ServerBuilder.
  grpc::Service* membership_service();
  grpc::Service* dataspaces_service();

  // Ends every watch stream and fails every pending barrier with
  // UNAVAILABLE ("coordinator shutting down"); later Barrier and WatchView
  // calls fail at once. Idempotent.
  void Shutdown();

  // Blocks until every rank other than `self` that joined is LEFT or DEAD
  // (or the coordinator shuts down): the host of the coordinator calls it
  // at the end of a job, so no rank's Leave meets a closed coordinator. No
  // timeout: a rank that neither leaves nor heartbeats is DEAD after its
  // evidence that they died.
  void AwaitOthersGone(int self);

  // --- The operations behind the RPCs (also usable without gRPC). ---

  // A fresh nonce for one proof of the job's secret (credentials.h).
  proto::ChallengeReply Challenge();
  absl::StatusOr<proto::JoinReply> Join(const proto::JoinRequest& request);
  absl::StatusOr<proto::HeartbeatReply> Heartbeat(
      const proto::HeartbeatRequest& request);
  absl::Status Leave(const proto::LeaveRequest& request);
  // The process manager's or an operator's word that a rank is dead.
  // PERMISSION_DENIED unless the caller proves the job's cluster id and
  // secret; the error tells nothing about the job.
  absl::StatusOr<proto::DeclareDeadReply> DeclareDead(
      const proto::DeclareDeadRequest& request);
  // Every rank's state, silence and reason (pagewire-ctl status).
  absl::StatusOr<proto::JobStatusReply> JobStatus(
      const proto::JobStatusRequest& request) const;
  proto::MembershipView CurrentView() const;

  // The calls after Join are a rank's own: PERMISSION_DENIED, telling
  // nothing about the job, unless `token` is the session token Join gave
  // `rank` (rank -1: any member's). The gRPC services check every call.
  absl::Status Authenticate(int rank, absl::string_view token) const;
  // What the coordinator has seen, for operators and tests: heartbeats
  // accepted from `rank` since it joined, and the ranks waiting at barrier
  // `seq` (empty once it completed or failed).
  uint64_t HeartbeatsFrom(int rank) const;
  std::vector<int> WaitingAt(uint64_t seq) const;

  // Calls `done` exactly once: when every rank that is not DEAD or LEFT has
  // arrived at `seq` (OK, with the epoch; FAILED_PRECONDITION naming every
  // rank that arrived with a failure, and why, if any did), or with
  // UNAVAILABLE when a rank becomes DEAD or LEFT first or the coordinator
  // shuts down, or at once on bad input. `done` may run inline or on another caller's thread, never
  // under the coordinator's lock.
  using BarrierDone = std::function<void(absl::StatusOr<uint64_t> epoch)>;
  void Barrier(const proto::BarrierRequest& request, BarrierDone done);

  absl::StatusOr<proto::Dataspace> CreateDataspace(
      const proto::CreateDataspaceRequest& request);
  absl::Status FreeDataspace(const proto::FreeDataspaceRequest& request);
  absl::StatusOr<proto::Dataspace> LookupDataspace(
      const proto::LookupDataspaceRequest& request) const;

  // Receives views for a WatchView stream. Called with the coordinator's
  // lock held, in epoch order, so it must only queue the view; `last` says
  // no more views follow (the watcher's rank left or died, or shutdown).
  class ViewSink {
   public:
    virtual ~ViewSink() = default;
    virtual void Push(const proto::MembershipView& view, bool last) = 0;
    virtual void End() = 0;  // no view to add; finish the stream
  };
  // Sends the current view (if newer than since_epoch) and every later one
  // to `sink` until RemoveWatcher or the end. UNAVAILABLE after Shutdown(),
  // FAILED_PRECONDITION if `rank` is DEAD or LEFT.
  absl::Status AddWatcher(int rank, uint64_t since_epoch, ViewSink* sink);
  // The stream behind `sink` ended. `connection_closed`: the caller went
  // away (the stream was cancelled) rather than the coordinator ending it;
  // for a member with no other stream open that is evidence of its death.
  void RemoveWatcher(ViewSink* sink, bool connection_closed);

  const CoordinatorConfig& config() const { return config_; }

 private:
  using Clock = std::chrono::steady_clock;

  struct Slot {
    proto::Member::State state = proto::Member::JOINING;
    bool joined = false;
    proto::Endpoint endpoint;
    Clock::time_point last_heartbeat;
    uint64_t heartbeats = 0;
    std::string reason;  // why it is SUSPECT, DEAD or LEFT
    std::string token;   // its session token (credentials.h)
  };
  struct PendingBarrier {
    std::set<int> arrived;
    std::map<int, std::string> failures;  // rank -> what failed there
    std::map<int, std::string> calls;     // rank -> the collective it called
    std::vector<BarrierDone> waiters;
  };
  struct CollectiveCreate {
    int first_rank = -1;
    proto::CreateDataspaceRequest args;  // of the first caller
    uint32_t id = 0;
  };
  struct DataspaceRecord {
    proto::Dataspace dataspace;
    std::set<int> joined_by;  // ranks the collective create gave it to
    std::set<int> freed_by;
  };
  struct Watcher {
    int rank;
    ViewSink* sink;
  };
  using Completion = std::function<void()>;

  explicit Coordinator(CoordinatorConfig config);

  // Join's checks of who asks (protocol, cluster, secret, rank range), and
  // the rank it gets.
  absl::Status CheckJoin(const proto::JoinRequest& request) const;
  absl::StatusOr<int> AssignRankLocked(int requested) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // CreateDataspace's checks of its arguments, and a later rank's call of a
  // create that a first rank made (same arguments, same dataspace).
  absl::Status CheckCreate(const proto::CreateDataspaceRequest& request) const;
  absl::StatusOr<proto::Dataspace> JoinCreateLocked(
      const CollectiveCreate& c, const proto::CreateDataspaceRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Whether `proof` proves the job's secret for `call` with `detail` and
  // `cluster_id`, on a nonce Challenge gave and nobody used yet (used up
  // either way).
  bool CheckProof(absl::string_view call, absl::string_view cluster_id,
                  const proto::Proof& proof, absl::string_view detail) const;
  // The job's cluster id and a proof of its secret, for the calls of
  // operators and the process manager. PERMISSION_DENIED that names
  // neither.
  absl::Status CheckCredentials(const std::string& cluster_id,
                                const proto::Proof& proof,
                                absl::string_view detail,
                                const char* what) const;

  void LeaseMonitorLoop();
  // Silent ranks become SUSPECT (and, past an opt-in dead_after, DEAD).
  // Returns when the next lease or deadline runs out.
  Clock::time_point ExpireLeasesLocked(Clock::time_point now,
                                       std::vector<Completion>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks `rank` DEAD on `evidence`, publishes, fails pending barriers.
  void DeclareDeadLocked(int rank, const std::string& evidence,
                         std::vector<Completion>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Bumps the epoch, rebuilds the view and pushes it to the watchers.
  void PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `rank` just became DEAD or LEFT: fail pending barriers, finish its
  // watch streams, release dataspaces every remaining rank has freed.
  void MemberGoneLocked(const std::string& why, std::vector<Completion>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Completes every pending barrier that all live ranks have reached.
  void CompleteBarriersLocked(std::vector<Completion>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseFreedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool LiveLocked(int rank) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckAliveLocked(int rank, const char* what) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<uint64_t> AllocateRangeLocked(uint64_t length) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CoordinatorConfig config_;
  const Digest256 key_;  // ControlKey(config_.secret)

  // Nonces Challenge gave and no proof used yet, oldest first; at most
  // kMaxNonces (a caller that asks for more pushes out the oldest).
  static constexpr size_t kMaxNonces = 4096;
  mutable absl::Mutex nonce_mu_;
  mutable std::deque<std::string> nonce_order_ ABSL_GUARDED_BY(nonce_mu_);
  mutable absl::flat_hash_set<std::string> nonces_ ABSL_GUARDED_BY(nonce_mu_);

  mutable absl::Mutex mu_;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  proto::MembershipView view_ ABSL_GUARDED_BY(mu_);
  std::vector<Slot> slots_ ABSL_GUARDED_BY(mu_);  // indexed by rank
  std::map<uint64_t, PendingBarrier> barriers_ ABSL_GUARDED_BY(mu_);
  // Barriers that failed because a rank went away, and why: a rank that
  // arrives late at one fails the same way instead of waiting forever.
  std::map<uint64_t, std::string> failed_barriers_ ABSL_GUARDED_BY(mu_);
  std::vector<Watcher> watchers_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, CollectiveCreate> creates_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, DataspaceRecord> dataspaces_ ABSL_GUARDED_BY(mu_);
  uint32_t next_dataspace_id_ ABSL_GUARDED_BY(mu_) = 1;  // 0 = the pool
  absl::CondVar lease_cv_;  // heartbeat, join or shutdown: recompute

  // gRPC adapters (coordinator.cc); they hold a pointer back to *this.
  class MembershipServiceImpl;
  class DataspacesServiceImpl;
  std::unique_ptr<MembershipServiceImpl> membership_service_;
  std::unique_ptr<DataspacesServiceImpl> dataspaces_service_;

  std::thread lease_monitor_;  // last: starts after everything above exists
};

}  // namespace pagewire::control

#endif  // PAGEWIRE_RUNTIME_CONTROL_COORDINATOR_H_
