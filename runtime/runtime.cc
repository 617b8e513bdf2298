// runtime.cc - bootstrap, collective allocation, barriers and shutdown of a
// node.
#include "runtime/coherence/sequential_consistency.h"
#include "runtime/runtime.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime/coherence/coherence.h"
#include "runtime/control/control_client.h"
#include "runtime/control/coordinator_server.h"
#include "runtime/control/view.h"
#include "runtime/dsm/distributed_dataspace.h"
#include "runtime/memory/file_dataspace.h"
#include "runtime/dsm/home_manager.h"
#include "runtime/dsm/home_protocol.h"
#include "runtime/base/log.h"
#include "runtime/base/page.h"
#include "runtime/memory/ram_dataspace.h"
#include "runtime/transport/transport_factory.h"
#include "runtime/transport/verbs/verbs_transport.h"

namespace pagewire {

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Start(
    const RuntimeConfig& config) {
  // Debian's Abseil checks every mutex acquisition for lock-order cycles,
  // which costs the fault path several graph look-ups per fault.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  std::unique_ptr<Runtime> rt(new Runtime());
  rt->rank_ = config.rank;
  rt->nranks_ = config.nranks;
  rt->readahead_pages_ = config.readahead_pages;
  rt->push_ = config.push;
  rt->check_ = config.check;
  rt->root_ = std::make_shared<RegionMap>(config.global_size, "global range");
  if (config.coordinator.empty()) {
    FaultServiceConfig fs;
    fs.base = config.global_base;
    fs.size = config.global_size;
    fs.syscalls = config.syscalls;
    absl::StatusOr<std::unique_ptr<FaultService>> service =
        FaultService::Start(fs, *rt->root_);
    if (!service.ok()) return service.status();
    rt->fault_service_ = *std::move(service);
    rt->root_->AddListener(rt->fault_service_.get());
    return rt;
  }
  if (absl::Status s = rt->StartCluster(config); !s.ok()) return s;
  return rt;
}

absl::Status Runtime::StartCluster(const RuntimeConfig& config) {
  // The data plane first: its endpoint goes into the join.
  if (absl::Status s = StartDataPlane(config); !s.ok()) return s;
  if (absl::Status s = StartConsistency(); !s.ok()) return s;
  if (config.rank == 0 && config.host_coordinator) {
    if (absl::Status s = HostCoordinator(config); !s.ok()) return s;
  }
  if (absl::Status s = JoinCluster(config); !s.ok()) return s;
  if (absl::Status s = ConnectPeers(); !s.ok()) return s;
  if (absl::Status s = ControlBarrier("pw_init"); !s.ok()) return s;
  started_ = true;
  return absl::OkStatus();
}

absl::Status Runtime::StartDataPlane(const RuntimeConfig& config) {
  TransportChoice choice;
  choice.kind = config.transport;
  choice.rank = config.rank;
  choice.host = config.host;
  choice.secret = config.secret;
  choice.nranks = config.nranks;
  absl::StatusOr<ChosenTransport> chosen = MakeTransport(choice);
  if (!chosen.ok()) return chosen.status();
  transport_ = std::move(chosen->transport);
  verbs_ = chosen->verbs;
  if (verbs_ != nullptr) {
    Log("rank %d: data plane %s", rank_, transport_->Name());
  } else if (!chosen->why_not_verbs.empty() && rank_ == 0) {
    Log("%s; using TCP", chosen->why_not_verbs);
  }
  // Every component registers the messages it handles with the router as
  // it is made.
  transport_->SetMessageHandler(router_.AsHandler());
  fetcher_ = std::make_unique<RemoteFetcher>(*transport_, router_, rank_,
                                             nranks_);

  FaultServiceConfig fs;
  fs.base = config.global_base;
  fs.size = config.global_size;
  fs.syscalls = config.syscalls;
  fs.sources = {fetcher_.get()};
  fs.spin_polls = config.spin_polls;
  fs.idle_polls = config.idle_polls;
  absl::StatusOr<std::unique_ptr<FaultService>> service =
      FaultService::Start(fs, *root_);
  if (!service.ok()) return service.status();
  fault_service_ = *std::move(service);
  root_->AddListener(fault_service_.get());
  home_ = std::make_unique<HomeManager>(*transport_, router_, *fault_service_,
                                        rank_, nranks_);

  // Registered once: the landing buffers (READs land there) and, on TCP,
  // the whole global range (peers READ home pages from it; TCP pins
  // nothing). Verbs pins what it registers, so there each allocation
  // registers its home pages (AllocCollective).
  absl::StatusOr<MemoryRegion> landing = transport_->RegisterMemory(
      fault_service_->landing_area(), fault_service_->landing_bytes());
  if (!landing.ok()) return landing.status();
  fetcher_->SetLanding(*landing);
  if (verbs_ == nullptr) {
    absl::StatusOr<MemoryRegion> r = transport_->RegisterMemory(
        reinterpret_cast<void*>(fault_service_->base()), fault_service_->size());
    if (!r.ok()) return r.status();
    global_region_ = *r;
  }
  return absl::OkStatus();
}

absl::Status Runtime::StartConsistency() {
  coherence_ = std::make_unique<Coherence>(rank_, nranks_, *transport_,
                                           router_, *fetcher_, *fault_service_,
                                           *home_);
  if (absl::Status s = coherence_->Start(); !s.ok()) return s;
  coherence_->SetPush(push_);
  if (check_) {
    coherence_->SetAbortOnLoss(true);
    if (absl::Status s = fault_service_->SetDropAudit(coherence_.get()); !s.ok()) {
      return s;
    }
  }
  sequential_ = std::make_unique<SequentialConsistency>(
      rank_, nranks_, *transport_, router_, *fetcher_, *fault_service_);
  return sequential_->Start();
}


absl::Status Runtime::Finalize() {
  if (finalized_) return absl::OkStatus();
  finalized_ = true;
  if (!control_ || !started_) return absl::OkStatus();
  // A rank that is out has no barrier to pass: why it is out is the answer.
  if (absl::Status s = CheckStanding("pw_finalize"); !s.ok()) return s;
  // Nobody may still be reading from this rank's home pages.
  absl::Status s = ControlBarrier("pw_finalize");
  if (transport_) transport_->ExpectPeerCloses();
  // And every rank expects the others to close before any of them does,
  // so a closed connection at the end is not reported as a failure.
  if (s.ok()) s = ControlBarrier("pw_finalize");
  if (!s.ok()) {
    s = absl::Status(s.code(), absl::StrCat("pw_finalize: the final barrier "
                                            "failed: ", s.message()));
    Warning("%s", s.message());
  }
  return s;
}

Runtime::~Runtime() {
  (void)Finalize();
  // Stop faulting first (waiting faults fail loudly), then let the managers
  // go, then the data plane, and last the buffers managers may write to.
  // A start-up that failed part-way leaves some parts unmade.
  if (fault_service_) {
    fault_service_->Stop();
    root_->RemoveListener(fault_service_.get());
  }
  // Membership no longer tells the managers of deaths once the control
  // plane is gone.
  if (control_) {
    (void)control_->Leave("pw_finalize");
    control_.reset();
  }
  if (fault_service_) (void)fault_service_->SetDropAudit(nullptr);
  // The allocations leave the managers before they are freed: the transport
  // still delivers the peers' messages, which must find no allocation
  // rather than a freed one. The sequential-consistency thread serves its
  // messages from pointers of its own, so it goes first.
  sequential_.reset();
  {
    absl::MutexLock lock(&mutex_);
    for (const auto& [addr, a] : allocations_) {
      if (home_) home_->RemoveDataspace(a.id);
      if (coherence_) coherence_->RemoveDataspace(a.id);
    }
    allocations_.clear();
  }
  root_.reset();
  coherence_.reset();
  home_.reset();
  // The fetcher first: it takes its completion handler off the transport,
  // whose threads may be delivering completions to it until then.
  fetcher_.reset();
  transport_.reset();
  fault_service_.reset();
  if (coordinator_) {
    // The other ranks leave through this coordinator: it stays until they
    // have (or membership declared them dead).
    if (started_) coordinator_->coordinator().AwaitOthersGone(rank_);
    coordinator_->Shutdown();
  }
  coordinator_.reset();
}

absl::Status Runtime::Barrier() {
  if (absl::Status s = CheckStanding("pw_barrier"); !s.ok()) return s;
  if (!coherence_) return absl::OkStatus();  // a job of one
  absl::Status s = coherence_->Barrier();
  // Another rank called a control-plane collective instead: take this
  // rank's turn in it with the failure, so that every rank gets the same
  // error naming both calls, and the job goes on.
  if (Coherence::IsCollectiveMismatch(s)) return FailCollective("pw_barrier", s);
  return s;
}

absl::Status Runtime::Release() {
  if (absl::Status s = CheckStanding("pw_release"); !s.ok()) return s;
  return coherence_ ? coherence_->Release() : absl::OkStatus();
}

absl::Status Runtime::Acquire() {
  if (absl::Status s = CheckStanding("pw_acquire"); !s.ok()) return s;
  return coherence_ ? coherence_->AcquireAll() : absl::OkStatus();
}

absl::Status Runtime::CheckLocal(uintptr_t addr, const char* what) {
  absl::MutexLock lock(&mutex_);
  auto it = allocations_.upper_bound(addr);
  if (it != allocations_.begin()) {
    --it;
    if (addr - it->first < it->second.size) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s: %p is not in a live global allocation; it must live in memory "
      "from pw_alloc",
      what, reinterpret_cast<void*>(addr)));
}

// In a job of one a lock is a futex on the pw_lock_t word itself:
// 0 free, 1 held, 2 held with waiters.
absl::Status Runtime::LockInit(uintptr_t lock) {
  if (absl::Status s = CheckStanding("pw_lock_init"); !s.ok()) return s;
  if (coherence_) return coherence_->LockCheck(lock);
  if (absl::Status s = CheckLocal(lock, "pw_lock_init"); !s.ok()) return s;
  __atomic_store_n(reinterpret_cast<uint32_t*>(lock), 0, __ATOMIC_RELEASE);
  return absl::OkStatus();
}

absl::Status Runtime::LockAcquire(uintptr_t lock) {
  if (absl::Status s = CheckStanding("pw_lock_acquire"); !s.ok()) return s;
  if (coherence_) return coherence_->LockAcquire(lock);
  if (absl::Status s = CheckLocal(lock, "pw_lock_acquire"); !s.ok()) return s;
  auto* word = reinterpret_cast<uint32_t*>(lock);
  uint32_t c = 0;
  if (__atomic_compare_exchange_n(word, &c, 1, false, __ATOMIC_ACQUIRE,
                                  __ATOMIC_RELAXED)) {
    return absl::OkStatus();
  }
  if (c != 2) c = __atomic_exchange_n(word, 2, __ATOMIC_ACQUIRE);
  while (c != 0) {
    // Sleeps until the holder wakes it: no timeout.
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, 2, nullptr, nullptr, 0);
    c = __atomic_exchange_n(word, 2, __ATOMIC_ACQUIRE);
  }
  return absl::OkStatus();
}

absl::Status Runtime::LockRelease(uintptr_t lock) {
  if (absl::Status s = CheckStanding("pw_lock_release"); !s.ok()) return s;
  if (coherence_) return coherence_->LockRelease(lock);
  if (absl::Status s = CheckLocal(lock, "pw_lock_release"); !s.ok()) return s;
  auto* word = reinterpret_cast<uint32_t*>(lock);
  uint32_t was = __atomic_exchange_n(word, 0, __ATOMIC_RELEASE);
  if (was == 0) {
    return absl::FailedPreconditionError(
        "pw_lock_release: the lock is not held; release only a lock you "
        "acquired");
  }
  if (was == 2) syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
  return absl::OkStatus();
}

absl::Status Runtime::LockDestroy(uintptr_t lock) {
  if (absl::Status s = CheckStanding("pw_lock_destroy"); !s.ok()) return s;
  if (coherence_) return coherence_->LockDestroy(lock);
  if (absl::Status s = CheckLocal(lock, "pw_lock_destroy"); !s.ok()) return s;
  if (__atomic_load_n(reinterpret_cast<uint32_t*>(lock), __ATOMIC_ACQUIRE) != 0) {
    return absl::FailedPreconditionError(
        "pw_lock_destroy: the lock is held; release it first");
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Runtime::AtomicFetchAdd(uintptr_t addr,
                                                 uint64_t value) {
  if (absl::Status s = CheckStanding("pw_atomic_fetch_add"); !s.ok()) return s;
  if (coherence_) return coherence_->FetchAdd(addr, value);
  if (absl::Status s = CheckLocal(addr, "pw_atomic_fetch_add"); !s.ok()) return s;
  if (addr % 8) return absl::InvalidArgumentError("pw_atomic_fetch_add: the address must be 8-byte aligned");
  return __atomic_fetch_add(reinterpret_cast<uint64_t*>(addr), value,
                            __ATOMIC_SEQ_CST);
}

absl::StatusOr<uint64_t> Runtime::AtomicCompareSwap(uintptr_t addr,
                                                    uint64_t expected,
                                                    uint64_t desired) {
  if (absl::Status s = CheckStanding("pw_atomic_cas"); !s.ok()) return s;
  if (coherence_) return coherence_->CompareSwap(addr, expected, desired);
  if (absl::Status s = CheckLocal(addr, "pw_atomic_cas"); !s.ok()) return s;
  if (addr % 8) return absl::InvalidArgumentError("pw_atomic_cas: the address must be 8-byte aligned");
  __atomic_compare_exchange_n(reinterpret_cast<uint64_t*>(addr), &expected,
                              desired, false, __ATOMIC_SEQ_CST,
                              __ATOMIC_SEQ_CST);
  return expected;
}

absl::StatusOr<uint64_t> Runtime::AtomicLoad(uintptr_t addr) {
  if (absl::Status s = CheckStanding("pw_atomic_load"); !s.ok()) return s;
  return AtomicFetchAdd(addr, 0);
}

absl::Status Runtime::AtomicStore(uintptr_t addr, uint64_t value) {
  if (absl::Status s = CheckStanding("pw_atomic_store"); !s.ok()) return s;
  absl::StatusOr<uint64_t> current = AtomicLoad(addr);
  while (current.ok()) {
    absl::StatusOr<uint64_t> seen = AtomicCompareSwap(addr, *current, value);
    if (!seen.ok()) return seen.status();
    if (*seen == *current) return absl::OkStatus();
    current = seen;
  }
  return current.status();
}

RuntimeStats Runtime::stats() const {
  RuntimeStats s;
  s.faults = fault_service_->stats();
  s.pushed = s.faults.replaced;
  if (fetcher_) s.fetches = fetcher_->stats();
  if (home_) s.fetches_served = home_->fetches_served();
  if (coherence_) {
    CoherenceStats c = coherence_->stats();
    s.twins = c.twins;
    s.diff_bytes = c.diff_bytes;
    s.invalidated = c.invalidated;
    s.notices = c.notices_sent;
  }
  MembershipCounts(&s.suspected_ranks, &s.dead_ranks);
  return s;
}

}  // namespace pagewire
