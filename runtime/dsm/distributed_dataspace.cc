// distributed_dataspace.cc - routing a page request to the page's home.
#include "runtime/dsm/distributed_dataspace.h"

#include "absl/strings/str_format.h"
#include <cstring>

#include "runtime/fault/completion_queue.h"
#include "runtime/base/page.h"

namespace pagewire {
namespace {

// A page of zeros to copy from: a home's first-touch page starts empty.
const void* ZeroPage() {
  alignas(4096) static const char zeros[kPageSize] = {};
  return zeros;
}

}  // namespace

const char* PlacementName(Placement p) {
  switch (p) {
    case Placement::kBlock: return "block";
    case Placement::kCyclic: return "cyclic";
    case Placement::kOnRank: return "on-rank";
    case Placement::kFirstTouch: return "first-touch";
  }
  return "unknown";
}

DistributedDataspace::DistributedDataspace(Params params,
                                           RemoteFetcher& fetcher,
                                           WriteTracker* tracker)
    : params_(std::move(params)), fetcher_(fetcher), tracker_(tracker) {
  const uint64_t words = (params_.placement.pages + 63) / 64;
  registered_.reset(new std::atomic<uint64_t>[words]);
  tracked_.reset(new std::atomic<uint64_t>[words]);
  dropped_stale_.reset(new std::atomic<uint64_t>[words]);
  for (uint64_t i = 0; i < words; ++i) {
    registered_[i] = 0;
    tracked_[i] = 0;
    dropped_stale_[i] = 0;
  }
  if (params_.placement.placement == Placement::kFirstTouch) {
    owners_.reset(new std::atomic<int32_t>[params_.placement.pages]);
    for (uint64_t i = 0; i < params_.placement.pages; ++i) owners_[i] = -1;
  }
  if (params_.page_registrar != nullptr) {
    page_keys_.reset(new std::atomic<uint32_t>[params_.placement.pages]);
    for (uint64_t i = 0; i < params_.placement.pages; ++i) page_keys_[i] = 0;
  }
}

uint32_t DistributedDataspace::RemoteKey(int owner, uint64_t page) const {
  if (uint32_t key = PageKey(page); key != 0) return key;
  return fetcher_.PeerKey(owner, params_.global_addr + page * kPageSize);
}

absl::StatusOr<uint32_t> DistributedDataspace::RegisterOwnedPage(
    uint64_t page) {
  if (!page_keys_) return 0;
  if (page >= params_.placement.pages || !HomedHere(page)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "page %d of %s is not owned by rank %d, so it cannot register it",
        page, Describe(), params_.self));
  }
  absl::MutexLock lock(&register_mutex_);
  if (uint32_t key = PageKey(page); key != 0) return key;
  absl::StatusOr<MemoryRegion> r = params_.page_registrar->RegisterMemory(
      reinterpret_cast<void*>(params_.global_addr + page * kPageSize),
      kPageSize);
  if (!r.ok()) {
    return absl::Status(r.status().code(),
                        absl::StrFormat("registering page %d of %s: %s", page,
                                        Describe(), r.status().message()));
  }
  owned_regions_.push_back(*r);
  page_keys_[page].store(r->rkey, std::memory_order_release);
  return r->rkey;
}

std::vector<MemoryRegion> DistributedDataspace::TakeOwnedPageRegions() {
  absl::MutexLock lock(&register_mutex_);
  std::vector<MemoryRegion> regions;
  regions.swap(owned_regions_);
  return regions;
}

std::string DistributedDataspace::Describe() const {
  return absl::StrFormat("allocation %d (%d KiB, %s)", params_.id,
                         params_.size / 1024,
                         PlacementName(params_.placement.placement));
}

int DistributedDataspace::OwnerOf(uint64_t page) const {
  if (owners_) return owners_[page].load(std::memory_order_acquire);
  return params_.placement.HomeOf(page);
}

bool DistributedDataspace::HomedHere(uint64_t page) const {
  return OwnerOf(page) == params_.self;
}

int DistributedDataspace::ClaimAtDirectory(uint64_t page, int claimant) {
  if (!owners_ || page >= params_.placement.pages) return -1;
  int32_t expected = -1;
  if (owners_[page].compare_exchange_strong(expected, claimant,
                                            std::memory_order_acq_rel)) {
    return claimant;
  }
  return expected;
}

void DistributedDataspace::RequestPage(const PageRequest& request) {
  const uint64_t page = request.offset / kPageSize;
  if (params_.sequential != nullptr) {
    params_.sequential->RequestPage(request, this, page);
    return;
  }
  int owner = OwnerOf(page);
  if (owner < 0) {
    const int directory = params_.placement.DirectoryOf(page);
    if (directory != params_.self) {
      fetcher_.Claim(request, directory, this, params_.id, page);
      return;
    }
    owner = ClaimAtDirectory(page, params_.self);
  }
  RequestFromOwner(request, page, owner);
}

void DistributedDataspace::ContinueClaim(const PageRequest& request,
                                         uint64_t page, int owner) {
  int32_t unknown = -1;
  owners_[page].compare_exchange_strong(unknown, owner,
                                        std::memory_order_acq_rel);
  RequestFromOwner(request, page, owners_[page].load());
}

void DistributedDataspace::RequestFromOwner(const PageRequest& request,
                                            uint64_t page, int owner) {
  if (owner == params_.self) {
    RequestHomePage(request);
    return;
  }
  if (request.upgrade) {
    // A write to a cached copy: keep the page as the home has it (the twin),
    // then let the write proceed. The release sends the difference home.
    const char* current = reinterpret_cast<const char*>(params_.global_addr) +
                          page * kPageSize;
    if (tracker_->TwinOrDefer(request, this, page, owner, current)) return;
    request.completion_queue->Post(
        OutcomeCompletion(request, Resolution::kWritable));
    return;
  }
  const uint64_t remote_addr = params_.global_addr + page * kPageSize;
  if (params_.homes_always_readable && GetBit(registered_.get(), page)) {
    if (tracker_ != nullptr && TakeBit(dropped_stale_.get(), page)) {
      // Read again after a barrier dropped it: the home may push it.
      tracker_->NoteRefetch(this, page, owner);
    }
    // Installed write-protected even for a write: the writer faults once
    // more and the upgrade twins the page then, when it is surely installed
    // (this answer may yet be discarded if the page is dropped meanwhile).
    fetcher_.Read(request, owner, remote_addr, /*write_protect=*/true, this,
                  page);
    if (params_.readahead != nullptr && !request.prefetch &&
        request.access == Access::kRead) {
      // Only pages this rank already caches from that home (registered):
      // a first fetch goes through the home manager.
      for (uint64_t next = page + 1;
           next <= page + static_cast<uint64_t>(params_.readahead_pages) &&
           next < params_.placement.pages && OwnerOf(next) == owner &&
           GetBit(registered_.get(), next);
           ++next) {
        params_.readahead->ReadAhead(GlobalOffset(next));
      }
    }
  } else {
    fetcher_.FetchVia(request, owner, remote_addr, this, page);
  }
}

void DistributedDataspace::RequestHomePage(const PageRequest& request) {
  if (params_.home_backing) {
    params_.home_backing->RequestPage(request);  // nested, asynchronous
    return;
  }
  if (request.upgrade) {
    // A tracked page: other ranks cache it, so this write is recorded.
    const uint64_t page = request.offset / kPageSize;
    if (tracker_ != nullptr && Tracked(page)) {
      tracker_->NoteHomeWrite(this, page);
    }
    request.completion_queue->Post(
        OutcomeCompletion(request, Resolution::kWritable));
    return;
  }
  // Plain memory homed here and not populated yet (first touch): it starts
  // as zeros, writable.
  request.completion_queue->Post(DataCompletion(request, ZeroPage()));
}

}  // namespace pagewire
