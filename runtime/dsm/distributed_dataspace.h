// distributed_dataspace.h - a collective allocation as one rank sees it: a
// dataspace whose pages are homed across the ranks.
//
// Every rank attaches the allocation at the same offset of its global range.
// A request for a page homed here is answered by the local backing (a nested
// dataspace such as a file, answered asynchronously) or, for plain memory
// populated at allocation time, never arises. A request for a page homed on
// another rank becomes a one-sided READ from that rank's global range (its
// home copy), through the RemoteFetcher; if the home's backing is slow it
// asks the home manager first. First-touch pages ask the page's directory
// rank who owns them; the first claimant becomes the home.
//
// Copies of pages homed elsewhere are installed write-protected; the first
// write twins the page (the WriteTracker: Coherence) and makes it writable, and the next
// release sends the modified bytes home. The first fetch of a page by a
// rank goes through the home manager, which registers the rank as a cacher
// and starts tracking the home's own writes to the page; later fetches READ
// directly.
//
// First-touch and file-backed pages on verbs: nobody knows at allocation
// which pages a rank will own, a file's page is in memory only once read,
// and an RDMA key needs registered (pinned, hence resident) memory, so the
// owner registers each page it owns when a peer first asks for it (kFetch;
// the reply carries the key) or when it runs an atomic on it through its
// own NIC: once per page, never per fault. Peers keep the
// keys per page (PageKey). TCP needs none of this: its key covers the whole
// global range.
//
// Threads: RequestPage from the fault loop; ContinueClaim from the transport
// thread; the owner and key tables are shared and atomic; RegisterOwnedPage
// from the fault loop (a prefetch's continuation) or an application thread
// (atomics), on resident pages only.
#ifndef PAGEWIRE_RUNTIME_DSM_DISTRIBUTED_DATASPACE_H_
#define PAGEWIRE_RUNTIME_DSM_DISTRIBUTED_DATASPACE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "runtime/memory/dataspace.h"
#include "runtime/base/page.h"
#include "runtime/dsm/consistency.h"
#include "runtime/fault/fault_service.h"
#include "runtime/dsm/placement.h"
#include "runtime/dsm/remote_fetcher.h"

namespace pagewire {

class DistributedDataspace final : public Dataspace {
 public:
  struct Params {
    uint32_t id = 0;
    uintptr_t global_addr = 0;  // where every rank attaches it
    uint64_t size = 0;
    PlacementMap placement;
    int self = 0;
    // Backing of the pages homed here; null: plain memory, populated at
    // allocation (then the home copy is always readable by peers).
    std::shared_ptr<Dataspace> home_backing;
    // Whether the homes' copies are always readable (plain memory): peers
    // READ directly once registered; otherwise they always ask the home
    // manager first.
    bool homes_always_readable = true;
    // Sequential-consistency mode (pw_alloc_sc): every page is asked of
    // this protocol instead (runtime/coherence/sequential_consistency.h).
    PageProtocol* sequential = nullptr;
    // First-touch placement or a file-backed home on a transport whose keys
    // cover only what was registered (verbs): the owner registers its pages
    // one at a time with this transport and hands out per-page keys. Null
    // otherwise.
    Transport* page_registrar = nullptr;
    // Read-ahead: a read fault on a page of another rank, fetched directly,
    // also asks `readahead` for the next `readahead_pages` pages of the same
    // home (PAGEWIRE_READAHEAD), so a thread walking through remote memory
    // finds them on their way. Null: none.
    FaultService* readahead = nullptr;
    int readahead_pages = 0;
  };

  DistributedDataspace(Params params, RemoteFetcher& fetcher,
                       WriteTracker* tracker);

  uint32_t id() const { return params_.id; }
  // Where `page` lies in the global range, as an offset from its base.
  uint64_t GlobalOffset(uint64_t page) const {
    return params_.global_addr - global_base_ + page * kPageSize;
  }
  void SetGlobalBase(uintptr_t base) { global_base_ = base; }
  uintptr_t global_addr() const { return params_.global_addr; }
  const PlacementMap& placement() const { return params_.placement; }
  bool sequential() const { return params_.sequential != nullptr; }
  bool HomedHere(uint64_t page) const;
  // The owner of a page: its placement home, or for first-touch pages the
  // recorded owner (-1 if nobody has claimed it yet, as far as this rank
  // knows).
  int OwnerOf(uint64_t page) const;
  // On the page's directory rank: records `claimant` as owner unless there
  // is one; returns the owner.
  int ClaimAtDirectory(uint64_t page, int claimant);
  // The fault that asked for ownership learns the owner.
  void ContinueClaim(const PageRequest& request, uint64_t page, int owner);
  // Asks the local backing for a page homed here.
  void RequestHomePage(const PageRequest& request);

  // The home has registered this rank as a cacher of `page`.
  void MarkRegistered(uint64_t page) { SetBit(registered_.get(), page); }
  bool Registered(uint64_t page) const { return GetBit(registered_.get(), page); }
  // Home side: whether this rank tracks its own writes to `page` (some other
  // rank has fetched it), and starting to.
  bool Tracked(uint64_t page) const { return GetBit(tracked_.get(), page); }
  void MarkTracked(uint64_t page) { SetBit(tracked_.get(), page); }
  // A barrier dropped this rank's copy of `page` because its home wrote
  // it: the next fetch of the page tells the tracker (NoteRefetch).
  void MarkDroppedStale(uint64_t page) {
    if (page < params_.placement.pages) SetBit(dropped_stale_.get(), page);
  }

  // Per-page keys (first touch on verbs; see the file comment).
  bool has_page_keys() const { return page_keys_ != nullptr; }
  // The key under which `page`'s owner registered it; 0 if not known here.
  uint32_t PageKey(uint64_t page) const {
    return page_keys_ ? page_keys_[page].load(std::memory_order_acquire) : 0;
  }
  // A peer's kReady told this rank the page's key.
  void SetPageKey(uint64_t page, uint32_t rkey) {
    if (page_keys_ && page < params_.placement.pages) {
      page_keys_[page].store(rkey, std::memory_order_release);
    }
  }
  // The rkey for a one-sided operation on `page` at its owner `owner`: the
  // page's own key if it has one, else the owner's region's.
  uint32_t RemoteKey(int owner, uint64_t page) const;
  // Owner side: registers `page` (owned here and resident) with the
  // transport, once; returns its key. The caller makes sure the page is
  // resident and, on the fault loop, not write-protected (registration
  // pins it for writing: a write-protected page would fault into the very
  // loop that is registering it). FailedPrecondition if not owned here.
  absl::StatusOr<uint32_t> RegisterOwnedPage(uint64_t page);
  // Hands over the regions RegisterOwnedPage made, for deregistration when
  // the allocation is freed.
  std::vector<MemoryRegion> TakeOwnedPageRegions();

  uint64_t size() const override { return params_.size; }
  void RequestPage(const PageRequest& request) override;
  std::string Describe() const override;

 private:
  void RequestFromOwner(const PageRequest& request, uint64_t page, int owner);

  static bool GetBit(const std::atomic<uint64_t>* bits, uint64_t i) {
    return bits[i / 64].load(std::memory_order_acquire) >> (i % 64) & 1;
  }
  static void SetBit(std::atomic<uint64_t>* bits, uint64_t i) {
    bits[i / 64].fetch_or(uint64_t{1} << (i % 64), std::memory_order_acq_rel);
  }
  // Clears the bit; whether it was set. A load first: the bit is rarely set.
  static bool TakeBit(std::atomic<uint64_t>* bits, uint64_t i) {
    const uint64_t bit = uint64_t{1} << (i % 64);
    if (!(bits[i / 64].load(std::memory_order_relaxed) & bit)) return false;
    return bits[i / 64].fetch_and(~bit, std::memory_order_acq_rel) & bit;
  }

  const Params params_;
  RemoteFetcher& fetcher_;
  WriteTracker* const tracker_;
  uintptr_t global_base_ = 0;
  // This rank is registered at the page's home (fetch directly).
  std::unique_ptr<std::atomic<uint64_t>[]> registered_;
  // Home side: the page is write-protected here to see this rank's writes.
  std::unique_ptr<std::atomic<uint64_t>[]> tracked_;
  // This rank's copy was dropped at a barrier (MarkDroppedStale).
  std::unique_ptr<std::atomic<uint64_t>[]> dropped_stale_;
  // First-touch owners as known here (-1: unknown); authoritative on the
  // page's directory rank.
  std::unique_ptr<std::atomic<int32_t>[]> owners_;
  // First touch on verbs: each page's key (0: unknown here).
  std::unique_ptr<std::atomic<uint32_t>[]> page_keys_;
  absl::Mutex register_mutex_;
  std::vector<MemoryRegion> owned_regions_ ABSL_GUARDED_BY(register_mutex_);
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_DSM_DISTRIBUTED_DATASPACE_H_
