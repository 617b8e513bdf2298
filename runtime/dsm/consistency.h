// consistency.h - what a distributed dataspace asks of the consistency
// protocol above it. The dsm layer routes page requests to homes; which
// copies may be written, and when writes become visible, is the coherence
// layer's decision (runtime/coherence/): it implements these interfaces
// and a distributed dataspace calls them, never the classes themselves.
#ifndef PAGEWIRE_RUNTIME_DSM_CONSISTENCY_H_
#define PAGEWIRE_RUNTIME_DSM_CONSISTENCY_H_

#include <cstdint>

#include "runtime/fault/page_request.h"

namespace pagewire {

class DistributedDataspace;

// Release consistency's write tracking (runtime/coherence/coherence.h).
// Called on the fault loop.
class WriteTracker {
 public:
  virtual ~WriteTracker() = default;
  // A write to the installed, write-protected copy of `home`'s `page`,
  // whose contents are `current`: false once the page may be made writable
  // (the tracker keeps what the home has, to send the difference at the
  // next release); true if the tracker keeps the request to answer later
  // itself (the copy is being flushed and dropped).
  virtual bool TwinOrDefer(const PageRequest& request, DistributedDataspace* ds,
                           uint64_t page, int home, const void* current) = 0;
  // This rank writes a page it homes that other ranks cache (tracked).
  virtual void NoteHomeWrite(DistributedDataspace* ds, uint64_t page) = 0;
  // This rank fetches `page` of `home` again after a barrier dropped its
  // copy.
  virtual void NoteRefetch(DistributedDataspace* ds, uint64_t page,
                           int home) = 0;
};

// A protocol that answers every page request of a dataspace itself
// (sequential consistency, runtime/coherence/sequential_consistency.h).
// Called on the fault loop.
class PageProtocol {
 public:
  virtual ~PageProtocol() = default;
  virtual void RequestPage(const PageRequest& request, DistributedDataspace* ds,
                           uint64_t page) = 0;
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_DSM_CONSISTENCY_H_
