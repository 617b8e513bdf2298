// pager.h - what the fault service hands its page requests to, and how it
// hears that the backing of part of its range changed.
//
// The fault service knows nothing of what backs its range: it asks one
// Pager (in a node, the root region map, runtime/memory/region_map.h) for
// every faulting page, and whoever maps managers into the range tells it,
// as a BackingObserver, when a part of the range gets another backing.
// Both are interfaces of this layer that the memory layer implements and
// calls.
#ifndef PAGEWIRE_RUNTIME_FAULT_PAGER_H_
#define PAGEWIRE_RUNTIME_FAULT_PAGER_H_

#include <cstdint>
#include <string>

#include "runtime/fault/page_request.h"

namespace pagewire {

// Answers page requests asynchronously: RequestPage() returns without
// waiting for the page (it may answer inline if it has the page at hand) and
// posts exactly one completion per request, whatever happens, from any
// thread. Called on the fault loop.
class Pager {
 public:
  virtual ~Pager() = default;

  // Size in bytes, a multiple of kPageSize.
  virtual uint64_t size() const = 0;

  // Asks for the page at request.offset (page-aligned, < size()).
  virtual void RequestPage(const PageRequest& request) = 0;

  // A short human-readable name for diagnostics ("ram 64 KiB", "file /x").
  virtual std::string Describe() const = 0;
};

// Told that [offset, offset + size) of the range has a new backing: cached
// pages of it are stale. Called from any thread but the fault loop's.
class BackingObserver {
 public:
  virtual ~BackingObserver() = default;
  virtual void BackingChanged(uint64_t offset, uint64_t size) = 0;
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_FAULT_PAGER_H_
