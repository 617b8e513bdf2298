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
#include "runtime/dsm/placement.h"
#include "runtime/memory/region_map.h"
#include "runtime/dsm/remote_fetcher.h"
#include "runtime/transport/message_router.h"
#include "runtime/transport/transport.h"

namespace pagewire {

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

struct RuntimeConfig {
  // Every process of a job maps global memory here, so pointers stored in
  // global memory are valid on every node. 32 TiB up: clear of the heap,
  // below the usual mmap and stack areas.
  uintptr_t global_base = uintptr_t{0x2000} << 32;
  uint64_t global_size = uint64_t{1} << 40;  // 1 TiB of address space
  UffdSyscalls syscalls = UffdSyscalls::Kernel();

  // The job (PAGEWIRE_RANK, PAGEWIRE_NRANKS, PAGEWIRE_COORDINATOR, ...).
  // An empty coordinator means a job of one.
  int rank = 0;
  int nranks = 1;
  std::string coordinator;  // host:port
  // Rank 0 hosts the coordinator unless it runs standalone
  // (PAGEWIRE_COORDINATOR_EXTERNAL=1, pagewire-coordinator).
  bool host_coordinator = true;
  std::string cluster_id = "pagewire";
  std::string secret;
  std::string host = "127.0.0.1";  // this rank's data-plane address
  // PAGEWIRE_TRANSPORT: "auto" (verbs if an RDMA device is there, else TCP),
  // "verbs" (fail without a device) or "tcp".
  std::string transport = "auto";
  absl::Duration heartbeat_interval = absl::Milliseconds(100);
  absl::Duration lease = absl::Seconds(3);  // PAGEWIRE_LEASE_MS
  // PAGEWIRE_SPIN_POLLS: on verbs, how often the fault loop polls the
  // completion queue for an outstanding READ before it sleeps (0: never).
  uint32_t spin_polls = FaultServiceConfig::kDefaultSpinPolls;
  // PAGEWIRE_IDLE_POLLS: how often the fault loop, out of work, polls for
  // the next fault before it sleeps (0: never; costs a CPU while it polls).
  uint32_t idle_polls = 0;
  // PAGEWIRE_READAHEAD: a read fault on another rank's page also requests
  // this many following pages of the same home (0: none).
  int readahead_pages = 1;
  static constexpr int kMaxReadAheadPages = 64;
  // PAGEWIRE_PUSH: subscribe to pages that homes write every epoch, so they
  // arrive with the barrier instead of by a fault after it (0: off).
  bool push = true;
  // PAGEWIRE_CHECK: audit every drop of a cached copy for lost writes and
  // end the process at the first (Coherence::BeforeDrop); on by default in
  // builds with --config=debug (PAGEWIRE_DEBUG_CHECKS), off otherwise.
#ifdef PAGEWIRE_DEBUG_CHECKS
  bool check = true;
#else
  bool check = false;
#endif

  // Reads the PAGEWIRE_* variables over the defaults; names the variable
  // and the fix for each bad value.
  static absl::StatusOr<RuntimeConfig> FromEnvironment();
};

struct RuntimeStats {
  FaultStats faults;
  FetchStats fetches;
  uint64_t fetches_served = 0;  // by this rank's home manager
  uint64_t twins = 0;           // pages twinned at a first write
  uint64_t diff_bytes = 0;      // modified bytes written home at releases
  uint64_t invalidated = 0;     // cached copies dropped at acquires
  uint64_t pushed = 0;          // stale copies replaced by pushed pages
  uint64_t notices = 0;         // written pages named to others at barriers
};

class Runtime {
 public:
  static absl::StatusOr<std::unique_ptr<Runtime>> Start(
      const RuntimeConfig& config);
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
  // The control plane's barrier (allocation, start-up, shutdown).
  absl::Status ControlBarrier();
  // A job of one: the address must lie in a live allocation.
  absl::Status CheckLocal(uintptr_t addr, const char* what);
  absl::StatusOr<void*> AllocCollective(uint64_t bytes, Placement placement,
                                        int home_rank,
                                        std::shared_ptr<Dataspace> home_backing,
                                        bool homes_backed, bool sequential);
  void OnView(const control::View& view);
  // Verbs: registers the pages of `ds` homed here and exchanges the keys
  // with every peer.
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
  uint64_t collective_seq_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t barrier_seq_ ABSL_GUARDED_BY(mutex_) = 0;

  bool started_ = false;  // the job formed: collective teardown is safe

  absl::Mutex view_mutex_;
  uint64_t view_epoch_ ABSL_GUARDED_BY(view_mutex_) = 0;
  // Ranks whose data-plane endpoint the latest view carries.
  int endpoints_known_ ABSL_GUARDED_BY(view_mutex_) = 0;
  std::unique_ptr<control::View> latest_view_ ABSL_GUARDED_BY(view_mutex_);
  std::vector<int> dead_ ABSL_GUARDED_BY(view_mutex_);
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_RUNTIME_H_
