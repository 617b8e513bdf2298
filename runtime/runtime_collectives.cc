// runtime_collectives.cc - the collective calls that change the global
// range (pw_alloc, pw_alloc_on, pw_alloc_sc, pw_attach_file, pw_free) and
// the control-plane barrier through which they agree: every rank's part
// and arguments are checked there, and every rank gets the same answer.
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/base/log.h"
#include "runtime/base/page.h"
#include "runtime/coherence/coherence.h"
#include "runtime/coherence/sequential_consistency.h"
#include "runtime/control/control_client.h"
#include "runtime/dsm/distributed_dataspace.h"
#include "runtime/dsm/home_manager.h"
#include "runtime/dsm/remote_fetcher.h"
#include "runtime/memory/file_dataspace.h"
#include "runtime/memory/ram_dataspace.h"
#include "runtime/runtime.h"
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

absl::StatusOr<void*> Runtime::Alloc(uint64_t bytes, Placement placement,
                                     int home_rank, bool sequential) {
  if (absl::Status s = CheckStanding("pw_alloc"); !s.ok()) return s;
  const std::string call = absl::StrFormat(
      "%s(%d bytes, %s%s)", sequential ? "pw_alloc_sc" : "pw_alloc", bytes,
      PlacementName(placement),
      placement == Placement::kOnRank ? absl::StrCat(", home rank ", home_rank)
                                      : "");
  absl::Status bad;
  if (bytes == 0) {
    bad = absl::InvalidArgumentError(
        "pw_alloc: 0 bytes requested; ask for at least one byte");
  } else if (bytes > global_size()) {
    bad = absl::ResourceExhaustedError(absl::StrFormat(
        "pw_alloc: %d bytes exceed the global range of %d bytes; raise "
        "PAGEWIRE_GLOBAL_SIZE",
        bytes, global_size()));
  } else if (home_rank < 0 || home_rank >= nranks_) {
    bad = absl::InvalidArgumentError(absl::StrFormat(
        "pw_alloc_on: home rank %d is not a rank of this job (0..%d)",
        home_rank, nranks_ - 1));
  }
  if (control_) {
    if (!bad.ok()) return FailCollective(call, bad);
    return AllocCollective(bytes, placement, home_rank, nullptr, false,
                           sequential, call);
  }
  if (!bad.ok()) return bad;

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
  const std::string call =
      absl::StrFormat("pw_attach_file(%s, home rank %d)", path, home_rank);
  // A rank that cannot do its part still takes its turn: every rank then
  // fails the same way.
  auto fail = [&](absl::Status why) -> absl::StatusOr<void*> {
    if (control_) return FailCollective(call, why);
    return why;
  };
  if (home_rank < 0 || home_rank >= nranks_) {
    return fail(absl::InvalidArgumentError(absl::StrFormat(
        "attach file %s: home rank %d is not a rank of this job (0..%d)", path,
        home_rank, nranks_ - 1)));
  }
  // Only the home opens the file; the others learn its size from the home
  // through the collective (every rank passes the same path, and the
  // coordinator refuses differing sizes).
  std::shared_ptr<FileDataspace> file;
  uint64_t size = 0;
  if (rank_ == home_rank || !control_) {
    absl::StatusOr<std::shared_ptr<FileDataspace>> opened =
        FileDataspace::Open(path);
    if (!opened.ok()) return fail(opened.status());
    file = *opened;
    size = file->size();
  } else {
    struct stat st;
    const char* problem = nullptr;
    if (::stat(path.c_str(), &st) != 0) {
      problem = strerror(errno);
    } else if (!S_ISREG(st.st_mode)) {
      problem = "not a regular file";
    } else if (st.st_size <= 0) {
      problem = "empty";
    }
    if (problem != nullptr) {
      return fail(absl::NotFoundError(absl::StrFormat(
          "attach file %s: this rank cannot see a regular, non-empty file "
          "there to learn its size (%s); every rank needs the same path (a "
          "shared file system)",
          path, problem)));
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
                         false, call);
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
    bool sequential, const std::string& call) {
  if (sequential && placement == Placement::kFirstTouch) {
    return FailCollective(call, absl::InvalidArgumentError(
        "pw_alloc_sc: sequentially consistent memory needs a fixed home per "
        "page; use PW_PLACE_BLOCK or PW_PLACE_CYCLIC, not "
        "PW_PLACE_FIRST_TOUCH"));
  }
  uint64_t seq;
  {
    absl::MutexLock lock(&mutex_);
    // Named after the barrier that ends it: every collective call ends in
    // exactly one, so the numbers stay in step on every rank even after
    // ranks disagreed about which collective they were in.
    seq = barrier_seq_ + 1;
  }
  absl::StatusOr<proto::Dataspace> created = control_->CreateDataspace(
      seq, bytes, ToProto(placement),
      placement == Placement::kOnRank ? home_rank : -1, sequential);
  absl::Status local = created.status();
  if (local.ok()) {
    local = AttachCollective(*created, PageUp(bytes), placement, home_rank,
                             std::move(home_backing), homes_backed, sequential);
  }
  // Every rank's part and arguments meet here: nobody reads a home before
  // it is populated, and all succeed or all fail with the same status.
  const absl::Status agreed = ControlBarrier(call, local);
  if (agreed.ok()) {
    // Every rank sent its keys before the barrier.
    if (verbs_ != nullptr && !sequential) {
      if (absl::Status s = fetcher_->AwaitAllocRegions(created->id(), nranks_ - 1);
          !s.ok()) {
        return s;
      }
    }
    return reinterpret_cast<void*>(created->addr());
  }
  if (local.ok()) {
    Allocation a;
    {
      absl::MutexLock lock(&mutex_);
      auto it = allocations_.find(created->addr());
      a = std::move(it->second);
      allocations_.erase(it);
    }
    DetachAllocation(a);
  }
  if (created.ok()) (void)control_->FreeDataspace(created->id());
  return agreed;
}

absl::Status Runtime::AttachCollective(const proto::Dataspace& created,
                                       uint64_t size, Placement placement,
                                       int home_rank,
                                       std::shared_ptr<Dataspace> home_backing,
                                       bool homes_backed, bool sequential) {
  const DistributedDataspace::Params p =
      AllocationParams(created, size, placement, home_rank,
                       std::move(home_backing), homes_backed, sequential);
  auto ds = std::make_shared<DistributedDataspace>(p, *fetcher_,
                                                   coherence_.get());
  ds->SetGlobalBase(global_base());
  Allocation a{created.addr() - global_base(), size, p.id, ds, {}};
  if (sequential) {
    // The home's store; no page of the global range is populated.
    if (absl::Status s = sequential_->AddDataspace(ds.get()); !s.ok()) return s;
  }
  home_->AddDataspace(ds.get());
  coherence_->AddDataspace(ds.get());
  absl::StatusOr<uint64_t> attached = root_->Attach(ds, {.at = a.at});
  if (!attached.ok()) {
    home_->RemoveDataspace(p.id);
    coherence_->RemoveDataspace(p.id);
    if (sequential) sequential_->RemoveDataspace(p.id);
    return attached.status();
  }
  absl::Status s;
  // Plain memory homed here exists from the start, so peers may READ it
  // without asking.
  if (!homes_backed && placement != Placement::kFirstTouch && !sequential) {
    DistributedDataspace* d = ds.get();
    const uint64_t at = a.at;
    s = fault_service_->Populate(at, size, [d, at](uint64_t off) {
      return d->HomedHere((off - at) / kPageSize);
    });
  }
  if (s.ok() && verbs_ != nullptr && !sequential) {
    absl::StatusOr<std::vector<MemoryRegion>> r = RegisterHomePages(*ds);
    if (r.ok()) a.regions = *std::move(r);
    s = r.status();
  }
  if (!s.ok()) {
    DetachAllocation(a);
    return s;
  }
  absl::MutexLock lock(&mutex_);
  allocations_[created.addr()] = std::move(a);
  return absl::OkStatus();
}

void Runtime::DetachAllocation(const Allocation& a) {
  if (absl::Status s = root_->Detach(a.at); !s.ok()) {
    Warning("detaching allocation %d: %s", a.id, s.message());
  }
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
  }
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
  // Every rank tells every other rank its keys; it waits for theirs only
  // once the collective agreed (AllocCollective): a rank whose part failed
  // sends none.
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
  return regions;
}

absl::Status Runtime::Free(void* ptr) {
  if (absl::Status s = CheckStanding("pw_free"); !s.ok()) return s;
  uintptr_t addr = reinterpret_cast<uintptr_t>(ptr);
  Allocation a;
  absl::Status local;
  {
    absl::MutexLock lock(&mutex_);
    auto it = allocations_.find(addr);
    if (it == allocations_.end()) {
      local = absl::NotFoundError(absl::StrFormat(
          "pw_free: %p is not the start of a live pw_alloc allocation; pass "
          "exactly the pointer pw_alloc returned, once",
          ptr));
    } else {
      a = it->second;
    }
  }
  if (control_) {
    const std::string call =
        local.ok() ? absl::StrFormat("pw_free(%p, allocation %d)", ptr, a.id)
                   : absl::StrFormat("pw_free(%p, not an allocation)", ptr);
    // Everyone's writes reach home and nobody still reads this rank's home
    // pages; and every rank frees the same allocation, or none does.
    if (local.ok()) local = coherence_->Release();
    if (absl::Status s = ControlBarrier(call, local); !s.ok()) return s;
  } else if (!local.ok()) {
    return local;
  }
  {
    absl::MutexLock lock(&mutex_);
    allocations_.erase(addr);
  }
  DetachAllocation(a);
  return control_ ? control_->FreeDataspace(a.id) : absl::OkStatus();
}

absl::Status Runtime::ControlBarrier(const std::string& call,
                                     const absl::Status& local_outcome) {
  uint64_t seq;
  {
    absl::MutexLock lock(&mutex_);
    seq = ++barrier_seq_;
  }
  // A rank waiting in pw_barrier meanwhile learns of it and fails instead
  // of waiting for this rank forever (Coherence::EnterCollective).
  if (coherence_ && started_) coherence_->EnterCollective(seq, call);
  return control_->Barrier(seq, local_outcome, call);
}

absl::Status Runtime::FailCollective(const std::string& call,
                                     const absl::Status& why) {
  absl::Status agreed = ControlBarrier(call, why);
  return agreed.ok() ? why : agreed;
}

}  // namespace pagewire
