// runtime.h - one node (rank) of a Pagewire job: the global range, its root
// region map, the fault service over it, and, in a job of several ranks, the
// transport, the control-plane client (and on rank 0 the coordinator), the
// remote fetcher and the home manager.
//
// A job of one (no PAGEWIRE_COORDINATOR) needs no network: allocations are
// RAM dataspaces. A job of several ranks bootstraps from the PAGEWIRE_*
// variables (see cluster/launcher/README.md): it joins the coordinator,
// connects the transport to every peer, and allocates collectively.
//
// Threads: Alloc, Free and Barrier are collective: every rank calls them in
// the same order, each from one thread at a time. Stats from any thread. The
// runtime is created and destroyed by one owner; several may live in one
// process if their global ranges do not overlap.
#ifndef PAGEWIRE_RUNTIME_RUNTIME_H_
#define PAGEWIRE_RUNTIME_RUNTIME_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "runtime/fault/fault_service.h"
#include "runtime/dsm/distributed_dataspace.h"
#include "runtime/dsm/placement.h"
#include "runtime/memory/region_map.h"
#include "runtime/dsm/remote_fetcher.h"
#include "runtime/transport/message_router.h"
#include "runtime/runtime_config.h"
#include "runtime/transport/transport.h"

namespace pagewire {

namespace proto {
class Dataspace;
class Endpoint;
}  // namespace proto
namespace control {
class ControlClient;
class CoordinatorServer;
struct View;
}  // namespace control
class Coherence;
class SequentialConsistency;
class DistributedDataspace;
class HomeManager;
class Transport;
class VerbsTransport;


struct RuntimeStats {
  FaultStats faults;
  FetchStats fetches;
  uint64_t fetches_served = 0;  // by this rank's home manager
  uint64_t twins = 0;           // pages twinned at a first write
  uint64_t diff_bytes = 0;      // modified bytes written home at releases
  uint64_t invalidated = 0;     // cached copies dropped at acquires
  uint64_t pushed = 0;          // stale copies replaced by pushed pages
  uint64_t notices = 0;         // written pages named to others at barriers
  uint64_t suspected_ranks = 0;  // silent past their lease (still members)
  uint64_t dead_ranks = 0;       // declared DEAD or LEFT
};

class Runtime {
 public:
  static absl::StatusOr<std::unique_ptr<Runtime>> Start(
      const RuntimeConfig& config);
  // Ends this rank's part in the job: the final barriers (every rank stops
  // reading the others' pages), then leave. The barriers' failure, if any
  // (a rank died, or this one is no longer a member). Runs once; the
  // destructor calls it if the owner did not.
  absl::Status Finalize();
  ~Runtime();

  int rank() const { return rank_; }
  int nranks() const { return nranks_; }

  // Collective: every rank gets the same address. Memory reads as zero
  // until written.
  // `sequential`: the allocation is sequentially consistent (single
  // writer / multiple readers, runtime/coherence/sequential_consistency.h) instead of
  // release consistent.
  absl::StatusOr<void*> Alloc(uint64_t bytes, Placement placement,
                              int home_rank = 0, bool sequential = false);
  // Collective: attaches `file` homed on `home_rank`, read on demand
  // through that rank's file manager (a slow, nested backing).
  absl::StatusOr<void*> AttachFile(const std::string& path, int home_rank);
  absl::Status Free(void* ptr);
  // Collective: a release and an acquire for everyone. What any rank wrote
  // before it is seen by every rank after it.
  absl::Status Barrier();
  // This rank's writes go home (release) / every cached copy of another
  // rank's page is dropped (acquire).
  absl::Status Release();
  absl::Status Acquire();

  // Global locks: `lock` is a pw_lock_t (8 bytes) in global memory.
  absl::Status LockInit(uintptr_t lock);
  absl::Status LockAcquire(uintptr_t lock);
  absl::Status LockRelease(uintptr_t lock);
  absl::Status LockDestroy(uintptr_t lock);

  // 64-bit atomics on global memory, performed at the word's home.
  absl::StatusOr<uint64_t> AtomicFetchAdd(uintptr_t addr, uint64_t value);
  absl::StatusOr<uint64_t> AtomicCompareSwap(uintptr_t addr, uint64_t expected,
                                             uint64_t desired);
  absl::StatusOr<uint64_t> AtomicLoad(uintptr_t addr);
  absl::Status AtomicStore(uintptr_t addr, uint64_t value);

  uintptr_t global_base() const { return fault_service_->base(); }
  uint64_t global_size() const { return fault_service_->size(); }
  RegionMap& root() { return *root_; }
  FaultService& fault_service() { return *fault_service_; }
  RuntimeStats stats() const;

 private:
  struct Allocation {
    uint64_t at = 0;  // offset in the global range
    uint64_t size = 0;
    uint32_t id = 0;  // 0: local RAM (job of one)
    std::shared_ptr<DistributedDataspace> ds;
    std::vector<MemoryRegion> regions;  // home pages registered (verbs)
  };

  Runtime() = default;
  absl::Status StartCluster(const RuntimeConfig& config);
  // The control plane's barrier (allocation, start-up, shutdown), carrying
  // this rank's outcome of the collective call it ends: every rank gets the
  // same answer, a failure naming every rank whose part failed.
  absl::Status ControlBarrier(const std::string& call,
                              const absl::Status& local_outcome = absl::OkStatus());
  // A collective whose local part failed before it reached the coordinator
  // (a bad argument, a file this rank cannot open): it still takes its
  // turn, so every rank fails with the same status instead of hanging.
  absl::Status FailCollective(const std::string& call, const absl::Status& why);
  // OK while this rank is a member of the job; ABORTED naming `call` and
  // why once membership declared it DEAD.
  absl::Status CheckStanding(const char* call) const;
  void MembershipCounts(uint64_t* suspected, uint64_t* dead) const;
  // A job of one: the address must lie in a live allocation.
  absl::Status CheckLocal(uintptr_t addr, const char* what);
  // A collective allocation: the coordinator's dataspace, this rank's part
  // (AttachCollective), then the agreement of every rank on `call` and its
  // outcome; undone here if any rank's part failed.
  absl::StatusOr<void*> AllocCollective(uint64_t bytes, Placement placement,
                                        int home_rank,
                                        std::shared_ptr<Dataspace> home_backing,
                                        bool homes_backed, bool sequential,
                                        const std::string& call);
  // This rank's part of `created`: the dataspace, its managers, the range
  // attached, home pages populated and registered. Undoes itself on error.
  absl::Status AttachCollective(const proto::Dataspace& created, uint64_t size,
                                Placement placement, int home_rank,
                                std::shared_ptr<Dataspace> home_backing,
                                bool homes_backed, bool sequential);
  // Takes an allocation off the range, the transport and the managers.
  void DetachAllocation(const Allocation& a);
  void OnView(const control::View& view);
  // How this rank sees the collective allocation `created` of `size`
  // bytes (a page multiple).
  DistributedDataspace::Params AllocationParams(
      const proto::Dataspace& created, uint64_t size, Placement placement,
      int home_rank,
      std::shared_ptr<Dataspace> home_backing, bool homes_backed,
      bool sequential);
  // StartCluster's phases, in order.
  absl::Status StartDataPlane(const RuntimeConfig& config);
  absl::Status StartConsistency();
  absl::Status HostCoordinator(const RuntimeConfig& config);
  absl::Status JoinCluster(const RuntimeConfig& config);
  absl::Status ConnectPeers();
  // This rank's data-plane endpoint as the control plane publishes it.
  absl::Status PublishEndpoint(const RuntimeConfig& config,
                               proto::Endpoint& endpoint);
  // Where `peer` said (in `view`) this rank reaches it; on TCP also records
  // its global range's key.
  absl::StatusOr<TransportEndpoint> PeerEndpoint(const control::View& view,
                                                 int peer);
  // Verbs: registers the pages of `ds` homed here and sends their keys to
  // every peer (AllocCollective waits for theirs once the ranks agreed).
  absl::StatusOr<std::vector<MemoryRegion>> RegisterHomePages(
      DistributedDataspace& ds);

  int rank_ = 0;
  int nranks_ = 1;
  int readahead_pages_ = 0;  // RuntimeConfig::readahead_pages
  bool push_ = true;         // RuntimeConfig::push
  bool check_ = false;       // RuntimeConfig::check

  // Declared in construction order; destroyed in reverse (see ~Runtime).
  std::unique_ptr<control::CoordinatorServer> coordinator_;
  // The transport's message handler: outlives the transport (and every
  // component that registers with it).
  MessageRouter router_;
  std::unique_ptr<Transport> transport_;
  MemoryRegion global_region_;  // TCP: the whole global range, for peers
  VerbsTransport* verbs_ = nullptr;  // transport_, when it is verbs
  std::unique_ptr<RemoteFetcher> fetcher_;
  std::unique_ptr<HomeManager> home_;
  std::unique_ptr<FaultService> fault_service_;
  std::unique_ptr<Coherence> coherence_;
  std::unique_ptr<SequentialConsistency> sequential_;
  std::shared_ptr<RegionMap> root_;
  std::unique_ptr<control::ControlClient> control_;

  absl::Mutex mutex_;
  std::map<uintptr_t, Allocation> allocations_ ABSL_GUARDED_BY(mutex_);
  uint64_t barrier_seq_ ABSL_GUARDED_BY(mutex_) = 0;

  bool started_ = false;  // the job formed: collective teardown is safe
  bool finalized_ = false;

  mutable absl::Mutex view_mutex_;
  uint64_t view_epoch_ ABSL_GUARDED_BY(view_mutex_) = 0;
  // Ranks whose data-plane endpoint the latest view carries.
  int endpoints_known_ ABSL_GUARDED_BY(view_mutex_) = 0;
  std::unique_ptr<control::View> latest_view_ ABSL_GUARDED_BY(view_mutex_);
  std::vector<int> dead_ ABSL_GUARDED_BY(view_mutex_);
  std::vector<int> suspected_ ABSL_GUARDED_BY(view_mutex_);
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_RUNTIME_H_
