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
// Until the coherence protocol lands, pages homed elsewhere are read-only
// here: a write to one fails loudly (SIGBUS with the reason logged) instead
// of being lost.
//
// Threads: RequestPage from the fault loop; ContinueClaim from the transport
// thread; the owner table is shared and atomic.
#ifndef PAGEWIRE_RUNTIME_DISTRIBUTED_DATASPACE_H_
#define PAGEWIRE_RUNTIME_DISTRIBUTED_DATASPACE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/dataspace.h"
#include "runtime/placement.h"
#include "runtime/remote_fetcher.h"

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
    // READ directly; otherwise they ask the home manager first.
    bool homes_always_readable = true;
  };

  DistributedDataspace(Params params, RemoteFetcher& fetcher);

  uint32_t id() const { return params_.id; }
  uintptr_t global_addr() const { return params_.global_addr; }
  const PlacementMap& placement() const { return params_.placement; }
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

  uint64_t size() const override { return params_.size; }
  void RequestPage(const PageRequest& request) override;
  std::string Describe() const override;

 private:
  void RequestFromOwner(const PageRequest& request, uint64_t page, int owner);

  const Params params_;
  RemoteFetcher& fetcher_;
  // First-touch owners as known here (-1: unknown); authoritative on the
  // page's directory rank.
  std::unique_ptr<std::atomic<int32_t>[]> owners_;
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_DISTRIBUTED_DATASPACE_H_
