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
namespace {

proto::Placement ToProto(Placement p) {
  switch (p) {
    case Placement::kBlock: return proto::BLOCK;
    case Placement::kCyclic: return proto::CYCLIC;
    case Placement::kOnRank: return proto::ON_RANK;
    case Placement::kFirstTouch: return proto::FIRST_TOUCH;
  }
  return proto::BLOCK;
}

}  // namespace


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
  if (absl::Status s = ControlBarrier(); !s.ok()) return s;
  started_ = true;
  return absl::OkStatus();
}

absl::Status Runtime::StartDataPlane(const RuntimeConfig& config) {
  TransportChoice choice;
  choice.kind = config.transport;
  choice.rank = config.rank;
  choice.host = config.host;
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
  absl::Status s = ControlBarrier();
  if (transport_) transport_->ExpectPeerCloses();
  // And every rank expects the others to close before any of them does,
  // so a closed connection at the end is not reported as a failure.
  if (s.ok()) s = ControlBarrier();
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
  {
    absl::MutexLock lock(&mutex_);
    allocations_.clear();
  }
  root_.reset();
  if (control_) {
    (void)control_->Leave("pw_finalize");
    control_.reset();
  }
  if (fault_service_) (void)fault_service_->SetDropAudit(nullptr);
  sequential_.reset();
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

absl::StatusOr<void*> Runtime::Alloc(uint64_t bytes, Placement placement,
                                     int home_rank, bool sequential) {
  if (absl::Status s = CheckStanding("pw_alloc"); !s.ok()) return s;
  if (bytes == 0) {
    return absl::InvalidArgumentError(
        "pw_alloc: 0 bytes requested; ask for at least one byte");
  }
  if (bytes > global_size()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "pw_alloc: %d bytes exceed the global range of %d bytes; raise "
        "PAGEWIRE_GLOBAL_SIZE",
        bytes, global_size()));
  }
  if (home_rank < 0 || home_rank >= nranks_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "pw_alloc_on: home rank %d is not a rank of this job (0..%d)",
        home_rank, nranks_ - 1));
  }
  if (control_) {
    return AllocCollective(bytes, placement, home_rank, nullptr, false,
                           sequential);
  }

  absl::StatusOr<std::shared_ptr<RamDataspace>> ds = RamDataspace::Create(bytes);
  if (!ds.ok()) return ds.status();
  absl::StatusOr<uint64_t> at = root_->Attach(*ds, {});
  if (!at.ok()) return at.status();
  uintptr_t addr = global_base() + *at;
  absl::MutexLock lock(&mutex_);
  allocations_[addr] = Allocation{*at, PageUp(bytes), 0, nullptr};
  return reinterpret_cast<void*>(addr);
}

absl::StatusOr<void*> Runtime::AttachFile(const std::string& path,
                                          int home_rank) {
  if (absl::Status s = CheckStanding("pw_attach_file"); !s.ok()) return s;
  if (home_rank < 0 || home_rank >= nranks_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "attach file %s: home rank %d is not a rank of this job (0..%d)", path,
        home_rank, nranks_ - 1));
  }
  // Only the home opens the file; the others learn its size from the home
  // through the collective (every rank passes the same path, and the
  // coordinator refuses differing sizes).
  std::shared_ptr<FileDataspace> file;
  uint64_t size = 0;
  if (rank_ == home_rank || !control_) {
    absl::StatusOr<std::shared_ptr<FileDataspace>> opened =
        FileDataspace::Open(path);
    if (!opened.ok()) return opened.status();
    file = *opened;
    size = file->size();
  } else {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || st.st_size <= 0) {
      return absl::NotFoundError(absl::StrFormat(
          "attach file %s: this rank cannot see the file to learn its size "
          "(%s); every rank needs the same path (a shared file system)",
          path, strerror(errno)));
    }
    size = PageUp(static_cast<uint64_t>(st.st_size));
  }
  if (!control_) {
    absl::StatusOr<uint64_t> at = root_->Attach(file, {});
    if (!at.ok()) return at.status();
    uintptr_t addr = global_base() + *at;
    absl::MutexLock lock(&mutex_);
    allocations_[addr] = Allocation{*at, size, 0, nullptr};
    return reinterpret_cast<void*>(addr);
  }
  return AllocCollective(size, Placement::kOnRank, home_rank, file, true,
                         false);
}

DistributedDataspace::Params Runtime::AllocationParams(
    const proto::Dataspace& created, uint64_t size, Placement placement,
    int home_rank,
    std::shared_ptr<Dataspace> home_backing, bool homes_backed,
    bool sequential) {
  DistributedDataspace::Params p;
  p.id = created.id();
  p.global_addr = created.addr();
  p.size = size;
  p.placement.placement = placement;
  p.placement.pages = p.size / kPageSize;
  p.placement.nranks = nranks_;
  p.placement.home_rank = home_rank;
  p.self = rank_;
  p.home_backing = std::move(home_backing);
  // A file-backed home is read on demand: peers ask its manager first.
  p.homes_always_readable = !homes_backed;
  if (sequential) p.sequential = sequential_.get();
  if (!sequential && readahead_pages_ > 0) {
    p.readahead = fault_service_.get();
    p.readahead_pages = readahead_pages_;
  }
  // On verbs, first touch and file-backed homes register their pages one
  // at a time, as peers first ask for them: nobody owns a first-touch page
  // yet, and a file's page is not in memory until read (registering pins,
  // and pinning a page userfaultfd has not filled fails with EFAULT).
  if (verbs_ != nullptr &&
      (placement == Placement::kFirstTouch || homes_backed)) {
    p.page_registrar = transport_.get();
  }
  return p;
}

absl::StatusOr<void*> Runtime::AllocCollective(
    uint64_t bytes, Placement placement, int home_rank,
    std::shared_ptr<Dataspace> home_backing, bool homes_backed,
    bool sequential) {
  if (sequential && placement == Placement::kFirstTouch) {
    return absl::InvalidArgumentError(
        "pw_alloc_sc: sequentially consistent memory needs a fixed home per "
        "page; use PW_PLACE_BLOCK or PW_PLACE_CYCLIC, not "
        "PW_PLACE_FIRST_TOUCH");
  }
  uint64_t seq;
  {
    absl::MutexLock lock(&mutex_);
    seq = ++collective_seq_;
  }
  absl::StatusOr<proto::Dataspace> created = control_->CreateDataspace(
      seq, bytes, ToProto(placement),
      placement == Placement::kOnRank ? home_rank : -1, sequential);
  if (!created.ok()) return created.status();
  const uint64_t size = PageUp(bytes);
  const DistributedDataspace::Params p =
      AllocationParams(*created, size, placement, home_rank,
                       std::move(home_backing), homes_backed, sequential);
  auto ds = std::make_shared<DistributedDataspace>(p, *fetcher_,
                                                   coherence_.get());
  ds->SetGlobalBase(global_base());
  if (sequential) {
    // The home's store; no page of the global range is populated.
    if (absl::Status s = sequential_->AddDataspace(ds.get()); !s.ok()) return s;
  }
  home_->AddDataspace(ds.get());
  coherence_->AddDataspace(ds.get());
  const uint64_t at = created->addr() - global_base();
  absl::StatusOr<uint64_t> attached = root_->Attach(ds, {.at = at});
  if (!attached.ok()) {
    home_->RemoveDataspace(p.id);
    coherence_->RemoveDataspace(p.id);
    if (sequential) sequential_->RemoveDataspace(p.id);
    return attached.status();
  }
  // Plain memory homed here exists from the start, so peers may READ it
  // without asking.
  if (!homes_backed && placement != Placement::kFirstTouch && !sequential) {
    DistributedDataspace* d = ds.get();
    absl::Status s = fault_service_->Populate(
        at, size, [d, at](uint64_t off) { return d->HomedHere((off - at) / kPageSize); });
    if (!s.ok()) return s;
  }
  std::vector<MemoryRegion> regions;
  if (verbs_ != nullptr && !sequential) {
    absl::StatusOr<std::vector<MemoryRegion>> r = RegisterHomePages(*ds);
    if (!r.ok()) return r.status();
    regions = *std::move(r);
  }
  {
    absl::MutexLock lock(&mutex_);
    allocations_[created->addr()] = Allocation{at, size, p.id, ds, regions};
  }
  // Nobody reads a home before it is populated.
  if (absl::Status s = ControlBarrier(); !s.ok()) return s;
  return reinterpret_cast<void*>(created->addr());
}

absl::StatusOr<std::vector<MemoryRegion>> Runtime::RegisterHomePages(
    DistributedDataspace& ds) {
  // Runs of pages homed here, each registered once (pinned). Pages with
  // keys of their own are registered as peers ask for them instead.
  std::vector<MemoryRegion> regions;
  const uint64_t pages = ds.has_page_keys() ? 0 : ds.placement().pages;
  for (uint64_t page = 0; page < pages;) {
    if (!ds.HomedHere(page)) {
      ++page;
      continue;
    }
    uint64_t end = page + 1;
    while (end < pages && ds.HomedHere(end)) ++end;
    absl::StatusOr<MemoryRegion> r = transport_->RegisterMemory(
        reinterpret_cast<void*>(ds.global_addr() + page * kPageSize),
        (end - page) * kPageSize);
    if (!r.ok()) {
      for (const MemoryRegion& done : regions) {
        (void)transport_->DeregisterMemory(done);
      }
      return r.status();
    }
    regions.push_back(*r);
    fetcher_->AddPeerRegion(rank_, ds.id(), r->addr, r->length, r->rkey);
    page = end;
  }
  // Every rank tells every other rank its keys, then waits for theirs.
  std::vector<char> msg(sizeof(home_protocol::AllocKeysHeader) +
                        regions.size() * sizeof(home_protocol::AllocKey));
  home_protocol::AllocKeysHeader h{ds.id(),
                                   static_cast<uint32_t>(regions.size())};
  std::memcpy(msg.data(), &h, sizeof(h));
  for (size_t i = 0; i < regions.size(); ++i) {
    home_protocol::AllocKey k{regions[i].addr, regions[i].length,
                              regions[i].rkey, 0};
    std::memcpy(msg.data() + sizeof(h) + i * sizeof(k), &k, sizeof(k));
  }
  for (int peer = 0; peer < nranks_; ++peer) {
    if (peer == rank_) continue;
    absl::Status s = transport_->SendMessage(
        peer, home_protocol::kAllocKeys,
        absl::Span<const char>(msg.data(), msg.size()));
    if (!s.ok()) return s;
  }
  if (absl::Status s = fetcher_->AwaitAllocRegions(ds.id(), nranks_ - 1);
      !s.ok()) {
    return s;
  }
  return regions;
}

absl::Status Runtime::Free(void* ptr) {
  if (absl::Status s = CheckStanding("pw_free"); !s.ok()) return s;
  uintptr_t addr = reinterpret_cast<uintptr_t>(ptr);
  Allocation a;
  {
    absl::MutexLock lock(&mutex_);
    auto it = allocations_.find(addr);
    if (it == allocations_.end()) {
      return absl::NotFoundError(absl::StrFormat(
          "pw_free: %p is not the start of a live pw_alloc allocation; pass "
          "exactly the pointer pw_alloc returned, once",
          ptr));
    }
    a = it->second;
    allocations_.erase(it);
  }
  if (control_) {
    // Everyone's writes reach home and nobody still reads this rank's home
    // pages.
    if (absl::Status s = coherence_->Release(); !s.ok()) return s;
    if (absl::Status s = ControlBarrier(); !s.ok()) return s;
  }
  absl::Status s = root_->Detach(a.at);
  if (!s.ok()) return s;
  for (const MemoryRegion& r : a.regions) (void)transport_->DeregisterMemory(r);
  if (a.ds != nullptr) {
    for (const MemoryRegion& r : a.ds->TakeOwnedPageRegions()) {
      (void)transport_->DeregisterMemory(r);
    }
  }
  if (control_) {
    fetcher_->RemoveAllocRegions(a.id);
    home_->RemoveDataspace(a.id);
    coherence_->RemoveDataspace(a.id);
    if (a.ds && a.ds->sequential()) sequential_->RemoveDataspace(a.id);
    return control_->FreeDataspace(a.id);
  }
  return absl::OkStatus();
}

absl::Status Runtime::ControlBarrier() {
  uint64_t seq;
  {
    absl::MutexLock lock(&mutex_);
    seq = ++barrier_seq_;
  }
  return control_->Barrier(seq);
}

absl::Status Runtime::Barrier() {
  if (absl::Status s = CheckStanding("pw_barrier"); !s.ok()) return s;
  if (!coherence_) return absl::OkStatus();  // a job of one
  return coherence_->Barrier();
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
