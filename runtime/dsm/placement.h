// placement.h - which rank homes which page of a collective allocation.
//
// Block: contiguous shares, rank r homes pages [r*share, (r+1)*share).
// Cyclic: page-interleaved, page p is homed at p % nranks.
// On rank: every page at one rank. First touch: decided at run time by the
// page's directory rank (p % nranks), which records the first claimant.
#ifndef PAGEWIRE_RUNTIME_DSM_PLACEMENT_H_
#define PAGEWIRE_RUNTIME_DSM_PLACEMENT_H_

#include <cstdint>

namespace pagewire {

enum class Placement : uint8_t { kBlock, kCyclic, kOnRank, kFirstTouch };

const char* PlacementName(Placement p);

struct PlacementMap {
  Placement placement = Placement::kBlock;
  uint64_t pages = 0;
  int nranks = 1;
  int home_rank = 0;  // kOnRank

  // -1 for first-touch pages (ask the directory rank).
  int HomeOf(uint64_t page) const {
    switch (placement) {
      case Placement::kBlock: {
        uint64_t share = (pages + nranks - 1) / nranks;
        return static_cast<int>(page / share);
      }
      case Placement::kCyclic:
        return static_cast<int>(page % nranks);
      case Placement::kOnRank:
        return home_rank;
      case Placement::kFirstTouch:
        return -1;
    }
    return -1;
  }
  // Where first-touch ownership of `page` is decided and recorded.
  int DirectoryOf(uint64_t page) const {
    return static_cast<int>(page % nranks);
  }
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_DSM_PLACEMENT_H_
