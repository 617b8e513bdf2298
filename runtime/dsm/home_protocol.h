// home_protocol.h - the messages between a rank's fault path and the home
// managers of other ranks, carried on the transport's message channel.
//
// Every message is a fixed little-endian POD (plus a page list for kCached),
// checked for size on receipt; a malformed one is dropped with a warning
// naming the sender. Replies echo the requester's fault slot so the
// continuation is found in O(1). Nothing here waits with a timeout: a reply
// that never comes keeps exactly that fault waiting until membership
// declares the home dead, which fails it.
#ifndef PAGEWIRE_RUNTIME_DSM_HOME_PROTOCOL_H_
#define PAGEWIRE_RUNTIME_DSM_HOME_PROTOCOL_H_

#include <cstdint>
#include <cstring>

#include "absl/types/span.h"

namespace pagewire::home_protocol {

enum Type : uint16_t {
  kFetch = 2,    // requester -> home: register me as a cacher, make the page
                 // readable (and tracked), then kReady
  kReady = 3,    // home -> requester: the page is readable (or failed)
  kClaim = 4,    // requester -> directory rank: who homes this first-touch page?
  kClaimed = 5,  // directory rank -> requester: the owner
  // Coherence (runtime/coherence/coherence.h). Page lists follow a PageListHeader.
  kEpochWrites = 6,      // rank -> every rank: the pages I wrote this epoch
  // 7: unused (never reuse a number: an old peer would misread it).
  kLockAcquire = 8,      // rank -> lock's home
  kLockGrant = 9,        // lock's home -> rank: granted, drop these copies
  kLockRelease = 10,     // rank -> lock's home: released, I wrote these
  kAllocKeys = 11,       // rank -> every rank: my home pages of an
                         // allocation are registered under these keys
  // Sequential consistency (runtime/coherence/sequential_consistency.h).
  kScRequest = 12,   // requester -> home: read or write access to a page
  kScGrant = 13,     // home -> requester: granted; READ it from the store
  kScRecall = 14,    // home -> holder: drop (or write-protect) your copy,
                     // writing it back to the store first if you wrote it
  kScRecalled = 15,  // holder -> home: done
  kLockDestroy = 16,    // rank -> lock's home: may the lock go (nobody
                        // holds it or waits for it)?
  kLockDestroyed = 17,  // lock's home -> rank: the answer (kLockHeldBy)
  kCollectiveEntered = 18,  // rank -> every rank: I entered control-plane
                            // collective `seq` (CollectiveEntered)
};

// kCollectiveEntered: followed by `call_bytes` bytes naming the call
// ("pw_alloc(4096 bytes, block)"), at most kMaxCallBytes.
struct CollectiveEntered {
  uint64_t seq;
  uint32_t call_bytes;
  uint32_t reserved;
};
inline constexpr uint32_t kMaxCallBytes = 512;

struct ScRequest {
  uint32_t alloc_id;
  uint32_t slot;
  uint64_t page;
  uint32_t write;
  uint32_t reserved;
};

struct ScGrant {
  uint32_t slot;
  int32_t error;  // 0, or EIO: the page's contents died with their writer
  uint64_t page;
  uint64_t store_addr;  // the page in the home's store
  uint32_t rkey;
  uint16_t write;
  int16_t lost_by;  // EIO: the rank that died holding the page, else -1
};

struct ScRecall {
  uint32_t alloc_id;
  uint32_t keep_readable;  // a writer keeps a read-only copy (a read asked)
  uint64_t page;
  uint64_t store_addr;  // where a writer writes the page back
  uint32_t rkey;
  uint32_t write_back;
};

struct ScRecalled {
  uint32_t alloc_id;
  int32_t error;
  uint64_t page;
};

struct AllocKeysHeader {
  uint32_t alloc_id;
  uint32_t count;  // AllocKey entries that follow
};
struct AllocKey {
  uint64_t addr;
  uint64_t length;
  uint32_t rkey;
  uint32_t reserved;
};

// One page of one allocation in a page list.
struct PageRef {
  uint32_t alloc_id;
  uint32_t flags;  // kEpochWrites only (kRefPushed, kRefSubscribe); else 0
  uint64_t page;
};
// kEpochWrites: the sender homes the page, wrote it this epoch, and its
// contents as of the sender's barrier follow the list (a page each, in the
// order of the refs so marked), for a receiver that subscribed.
inline constexpr uint32_t kRefPushed = 1;
// kEpochWrites: not a write. The sender fetched this page of the receiver's
// again after a barrier dropped its copy: push it at the barriers at which
// the receiver writes it (runtime/coherence/coherence.h, "Pushing hot pages").
inline constexpr uint32_t kRefSubscribe = 2;

struct PageListHeader {
  uint64_t epoch_or_lock;  // barrier epoch, or the lock's global offset
  uint64_t ticket;         // lock requests: the requester's ticket;
                           // kEpochWrites: the sender's collective
                           // generation (Coherence::EnterCollective)
  uint32_t count;          // PageRefs that follow
  uint32_t flags;          // kLastPart, kAllPages
};
inline constexpr uint32_t kLastPart = 1;  // the last message of a list
inline constexpr uint32_t kAllPages = 2;  // "every cached copy" (list too long)
// kLockDestroyed: flags >> kLockHeldByShift is 1 + the rank that holds (or
// is next in line for) the lock, 0 if nobody does.
inline constexpr uint32_t kLockHeldByShift = 8;
// PageRefs per message.
inline constexpr size_t kMaxPageRefs = 4000;
// Pushed pages per kEpochWrites message (the rest of the transport's 64 KiB
// holds the header and a few hundred refs).
inline constexpr size_t kMaxPushedPages = 15;

struct Fetch {
  uint32_t alloc_id;
  uint32_t slot;
  uint64_t page;  // page index within the allocation
};

struct Ready {
  uint32_t slot;
  int32_t error;  // 0, or an errno-style code; the home logs the detail
  uint64_t page;
  // First touch on verbs: the key under which the home registered the page
  // (DistributedDataspace::RegisterOwnedPage); 0 otherwise.
  uint32_t rkey;
  uint32_t reserved;
};

struct Claim {
  uint32_t alloc_id;
  uint32_t slot;
  uint64_t page;
};

struct Claimed {
  uint32_t slot;
  int32_t owner;
  uint64_t page;
};

template <typename T>
absl::Span<const char> AsBytes(const T& m) {
  return absl::Span<const char>(reinterpret_cast<const char*>(&m), sizeof(m));
}

// Reads a fixed-size message; false if the body has the wrong size.
template <typename T>
bool Parse(absl::Span<const char> body, T* out) {
  if (body.size() != sizeof(T)) return false;
  std::memcpy(out, body.data(), sizeof(T));
  return true;
}

}  // namespace pagewire::home_protocol

#endif  // PAGEWIRE_RUNTIME_DSM_HOME_PROTOCOL_H_
