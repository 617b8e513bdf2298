// page_request.h - what a fault service asks of a dataspace manager, and what
// the manager answers.
//
// A fault on the global range becomes one PageRequest. It travels by value
// down the chain of region maps that back the address, each hop translating
// `offset` into the next dataspace (like Genode's fault.within_region()),
// until it reaches the manager of a leaf dataspace. That manager answers with
// exactly one PageCompletion, posted to `completion_queue`, now or much later,
// from any thread. Nobody waits for the answer with a timeout.
#ifndef PAGEWIRE_RUNTIME_FAULT_PAGE_REQUEST_H_
#define PAGEWIRE_RUNTIME_FAULT_PAGE_REQUEST_H_

#include <cstdint>

#include "absl/status/status.h"

namespace pagewire {

class CompletionQueue;
class FaultService;

enum class Access : uint8_t {
  kRead,
  kWrite,
};

struct PageRequest {
  uint64_t offset = 0;  // page-aligned byte offset within the addressed dataspace
  Access access = Access::kRead;
  // The page is mapped but write-protected and the faulting thread wants to
  // write: the manager grants write access (kWritable) or fails.
  bool upgrade = false;
  // No thread waits for the page yet (a prefetch or a read-ahead): a
  // manager that reads ahead of faults does not read ahead of this one.
  bool prefetch = false;
  uint32_t slot = 0;         // the fault service's pending-page slot (its wr_id)
  void* landing = nullptr;   // a page-sized buffer the manager may fill
  CompletionQueue* completion_queue = nullptr;
  // The fault service that asked: a manager that answers later writes its
  // plan onto the fault's record there (FaultService::SetPlan).
  FaultService* fault_service = nullptr;

  // The same request as seen by a dataspace attached at `region_at` with its
  // own offset `ds_offset` (the request must fall inside that region).
  PageRequest WithinRegion(uint64_t region_at, uint64_t ds_offset) const {
    PageRequest r = *this;
    r.offset = offset - region_at + ds_offset;
    return r;
  }
};

// How a page request ended: a named outcome, not an error string.
enum class Resolution : uint8_t {
  kData,      // `data` holds the page's contents: install them
  kZero,      // install a page of zeros
  kWritable,  // (upgrade) the mapped contents are current: allow writes
  kNoRegion,  // nothing backs the address: the faulting thread gets SIGBUS
  kFailed,    // the manager could not provide the page: SIGBUS, `error` says why
  kRetry,     // ask again: the manager held the request while the page changed
};

const char* ResolutionName(Resolution r);

struct PageCompletion {
  uint32_t slot = 0;
  Resolution resolution = Resolution::kFailed;
  // Install read-only: a later write faults again as an upgrade request
  // (the coherence protocol tracks writes this way).
  bool write_protect = false;
  // kData: the page contents, readable until the fault service consumed the
  // completion (a manager's own storage or the request's landing buffer).
  const void* data = nullptr;
  absl::Status error;  // kFailed / kNoRegion: why
  // Set only by FaultService::InstallDirect: the page is installed already
  // and its threads are awake; the loop does the bookkeeping.
  bool installed = false;
};

// Builds completions for `request`, so managers read as what they answer.
inline PageCompletion DataCompletion(const PageRequest& request,
                                     const void* data,
                                     bool write_protect = false) {
  PageCompletion c;
  c.slot = request.slot;
  c.resolution = Resolution::kData;
  c.write_protect = write_protect;
  c.data = data;
  return c;
}
inline PageCompletion OutcomeCompletion(const PageRequest& request,
                                        Resolution resolution,
                                        absl::Status error = absl::OkStatus()) {
  PageCompletion c;
  c.slot = request.slot;
  c.resolution = resolution;
  c.error = std::move(error);
  return c;
}

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_FAULT_PAGE_REQUEST_H_
