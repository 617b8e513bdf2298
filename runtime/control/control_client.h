// control_client.h - one rank's connection to the coordinator: joins the
// job, keeps its lease alive, follows membership views, and runs barriers
// and collective dataspace calls.
//
// Never on the path of a page fault. Heartbeats are ordinary RPCs; their
// deadline is only a transport-level safety so the heartbeat thread cannot
// hang on a dead connection. A lost or late heartbeat simply lets the lease
// run down; if the lease expires the coordinator marks this rank SUSPECT
// (still a member) until the next heartbeat gets through. The rank is
// declared DEAD only on evidence: its connection to the coordinator closing
// (the process ended), or the process manager's or an operator's word.
// Nothing waits on a heartbeat.
//
// Barrier() has no deadline: it returns when every live rank arrived, or
// with UNAVAILABLE naming the rank that became DEAD or LEFT meanwhile.
//
// Threads: Join() and the destructor from the owner. Barrier, the dataspace
// calls, Leave and current_view() from any thread (several may run at
// once). Two internal threads: the heartbeat thread and the watch thread;
// `on_view` runs on the watch thread, once per view in strictly increasing
// epoch order, and must not destroy the client.
#ifndef PAGEWIRE_RUNTIME_CONTROL_CONTROL_CLIENT_H_
#define PAGEWIRE_RUNTIME_CONTROL_CONTROL_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/control_plane.grpc.pb.h"
#include "proto/control_plane.pb.h"
#include "runtime/control/protocol.h"
#include "runtime/control/tls.h"
#include "runtime/control/view.h"

namespace pagewire::control {

struct ControlClientConfig {
  std::string coordinator;  // "host:port" of the coordinator
  std::string cluster_id;
  std::string secret;
  TlsFiles tls;  // the coordinator serves TLS (tls.h), if enabled
  uint32_t protocol_version = kProtocolVersion;
  int requested_rank = -1;  // -1 = any free rank
  proto::Endpoint endpoint;  // how peers reach this node (published in views)
  // Called on the watch thread for every new view (the current one first).
  std::function<void(const View&)> on_view;
  // Transport-level safety for the short unary calls (Join, Heartbeat,
  // Leave, dataspace calls) so a vanished coordinator cannot hang the
  // caller; never used for Barrier or WatchView, which wait for an event.
  absl::Duration rpc_deadline = absl::Seconds(10);
  // Leave the job in the destructor. Tests turn it off to simulate a crash
  // (the connection closes without a Leave and the rank is declared DEAD).
  bool leave_on_destroy = true;
};

class ControlClient {
 public:
  // Joins the job and starts the heartbeat and watch threads.
  // FAILED_PRECONDITION (cluster id, secret or version mismatch),
  // ALREADY_EXISTS / INVALID_ARGUMENT (rank), UNAVAILABLE (no coordinator).
  static absl::StatusOr<std::unique_ptr<ControlClient>> Join(
      ControlClientConfig config);
  // Leaves the job (if leave_on_destroy and not left yet), stops threads.
  ~ControlClient();

  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  int rank() const { return rank_; }
  int nranks() const { return nranks_; }
  uint64_t global_base() const { return global_base_; }
  uint64_t global_size() const { return global_size_; }
  absl::Duration heartbeat_interval() const { return heartbeat_interval_; }
  absl::Duration lease() const { return lease_; }
  // The view returned by Join (includes this rank).
  const View& first_view() const { return first_view_; }
  // The newest view the watch thread delivered (first_view() before that).
  View current_view() const;

  // Blocks, without a deadline, until every live rank reached barrier
  // `seq`; UNAVAILABLE naming the rank if one became DEAD or LEFT first.
  // `local_outcome`: how this rank's part of a collective call went, and
  // `call` the collective with its arguments; if any rank's part failed or
  // the ranks' calls differ, every rank gets the same FAILED_PRECONDITION
  // naming each rank and why (collectives agree or fail together).
  absl::Status Barrier(uint64_t seq,
                       const absl::Status& local_outcome = absl::OkStatus(),
                       const std::string& call = "");

  // Collective: every rank calls it with the same `collective_seq` and the
  // same arguments; all get the same dataspace.
  absl::StatusOr<proto::Dataspace> CreateDataspace(
      uint64_t collective_seq, uint64_t length,
      proto::Placement placement = proto::BLOCK, int home_rank = -1,
      bool sequential = false);
  // Collective: released once every live rank freed it.
  absl::Status FreeDataspace(uint32_t id);
  absl::StatusOr<proto::Dataspace> LookupDataspace(uint32_t id);
  absl::StatusOr<proto::Dataspace> LookupDataspaceAt(uint64_t addr);

  // Leaves the job now (the view marks this rank LEFT). Idempotent; OK at
  // once for a rank that is already out (Standing() says why).
  absl::Status Leave(const std::string& reason);

  // OK while this rank is a member; FAILED_PRECONDITION naming why once the
  // coordinator refused its heartbeats or a view declared it DEAD (it was
  // declared dead on evidence, by an operator or past a deadline). Every
  // later call of the rank must fail with it.
  absl::Status Standing() const;

  // Test hook: stop (true) or resume (false) sending heartbeats, so a test
  // can let the lease expire while the process lives on.
  void PauseHeartbeatsForTesting(bool paused);

 private:
  explicit ControlClient(ControlClientConfig config);

  void HeartbeatLoop();
  void ExpelLocked(const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Watches views until the rank leaves or the client stops; a stream that
  // breaks is opened again from the last epoch seen.
  void WatchLoop();
  static constexpr absl::Duration kWatchRetryFirst = absl::Milliseconds(50);
  static constexpr absl::Duration kWatchRetryMax = absl::Seconds(2);
  std::unique_ptr<grpc::ClientContext> UnaryContext() const;
  // Adds this rank's session token (from Join) to a call.
  void Authenticate(grpc::ClientContext& ctx) const;

  const ControlClientConfig config_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<proto::Membership::Stub> membership_;
  std::unique_ptr<proto::Dataspaces::Stub> dataspaces_;

  int rank_ = -1;
  std::string session_token_;  // JoinReply.session_token, sent with every call
  int nranks_ = 0;
  uint64_t global_base_ = 0;
  uint64_t global_size_ = 0;
  absl::Duration heartbeat_interval_;
  absl::Duration lease_;
  View first_view_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool left_ ABSL_GUARDED_BY(mu_) = false;
  bool leaving_ ABSL_GUARDED_BY(mu_) = false;  // a Leave call is under way
  bool heartbeats_paused_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t seen_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status standing_ ABSL_GUARDED_BY(mu_);
  View current_view_ ABSL_GUARDED_BY(mu_);
  // The watch stream's context, so the destructor can cancel it.
  grpc::ClientContext* watch_context_ ABSL_GUARDED_BY(mu_) = nullptr;

  std::thread heartbeat_thread_;
  std::thread watch_thread_;
};

}  // namespace pagewire::control

#endif  // PAGEWIRE_RUNTIME_CONTROL_CONTROL_CLIENT_H_
