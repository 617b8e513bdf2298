// fault_table.h - one record per page that faults (or a prefetch) wait for,
// with everything about it, owned in one place.
//
// The loop starts a record when a page is first wanted and ends it when the
// page is installed or failed; later faults on the page join it. The
// record's slot travels with its request (PageRequest::slot, a READ's
// wr_id), so an answer finds its record in O(1). A transport's thread may
// install a fetched page itself while the loop sleeps
// (FaultService::InstallDirect): that hand-over is the record's `direct`
// state, the only part of a record other threads touch.
//
// Direct installs. The loop arms a request it sends for page data
// (kIdle -> kArmed); the installer installs an armed one (kArmed ->
// kInstalled) and the loop then finishes it (-> kIdle). The loop disarms a
// request whose page it drops (kArmed -> kIdle) and takes back one whose
// answer reaches it through the queue. Installing and disarming are
// serialized by the service's install lock, so each sees the other's
// outcome. The installer wakes the loop for the bookkeeping only if
// `prompt` (or the service's "slots wanted") is set: the loop sets those
// and then reads `direct`, the installer sets `direct` and then reads them
// (all sequentially consistent), so one of the two always sees the other.
//
// Plans. A manager that answers a fault later (a READ from another node,
// or a reply to a message it sent) writes what it set in motion onto the
// fault's slot: a FaultPlan. Whoever gets the reply or the READ's
// completion takes the plan back, which also tells a stray or late answer
// from a real one; a peer that dies takes every plan awaiting its reply.
// So no manager keeps a table of its own beside this one.
//
// Threads: the loop owns the records and every field but `direct`,
// `prompt` and `installed_ns`, which it shares with the installing thread
// as above. Plans are any thread's, under the table's plan lock.
#ifndef PAGEWIRE_RUNTIME_FAULT_FAULT_TABLE_H_
#define PAGEWIRE_RUNTIME_FAULT_FAULT_TABLE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "runtime/fault/page_request.h"
#include "runtime/fault/pager.h"

namespace pagewire {

// Told once when the page a prefetch asked for is installed, or why not.
using PageWatcher = std::function<void(const absl::Status&)>;

enum DirectState : uint32_t { kDirectIdle, kDirectArmed, kDirectInstalled };

// What the manager answering a fault has set in motion. The fault layer
// reads `step`, `peer` and, for a READ, `remote_addr` and `write_protect`;
// `reply`, `manager` and `page` are the manager's own, to recognise its
// reply and continue.
struct FaultPlan {
  enum class Step : uint8_t {
    kNone,
    kAwaitingReply,  // a message to `peer`, answered by type `reply`
    kReading,        // a one-sided READ of `remote_addr` from `peer`
  };
  Step step = Step::kNone;
  uint16_t reply = 0;
  int peer = -1;             // who must answer: its death fails the fault
  PageRequest request;       // the request as the manager got it
  Pager* manager = nullptr;  // the manager that made the plan
  uint64_t page = 0;         // the page, as the manager counts
  uint64_t remote_addr = 0;
  std::optional<uint32_t> rkey;  // the READ's key, if not its region's
  bool write_protect = true;     // install the page read write-protected
};

struct FaultRecord {
  // The loop's.
  uintptr_t page = 0;
  uint64_t started_ns = 0;
  Access access = Access::kRead;
  bool upgrade = false;  // the page is installed; a write wants it writable
  bool in_use = false;
  // The page was dropped, or its backing changed, while the request was
  // out: the answer is discarded and the request asked again.
  bool stale = false;
  bool faulted = false;  // a thread waits (not only prefetch watchers)
  // A fault joined the request: it may have come after a direct install
  // woke the others (a write meeting the write protection), so finishing
  // wakes the page once more.
  bool joined = false;
  std::vector<PageWatcher> watchers;  // prefetch callers, rare

  // Shared with a direct installer (see the file comment).
  std::atomic<uint32_t> direct{kDirectIdle};
  std::atomic<bool> prompt{false};  // a fault joined or a prefetch watches
  uint64_t installed_ns = 0;        // written before kDirectInstalled
};

class FaultTable {
 public:
  static constexpr uint32_t kNoSlot = UINT32_MAX;

  explicit FaultTable(uint32_t capacity);

  // A record for `page`, or kNoSlot if every slot is taken.
  uint32_t Start(uintptr_t page, Access access, bool upgrade,
                 uint64_t now_ns);
  // The record of `page`, or kNoSlot.
  uint32_t Find(uintptr_t page) const {
    auto it = index_.find(page);
    return it == index_.end() ? kNoSlot : it->second;
  }
  void End(uint32_t slot);

  FaultRecord& operator[](uint32_t slot) { return records_[slot]; }
  bool Valid(uint32_t slot) const {
    return slot < capacity_ && records_[slot].in_use;
  }
  uint32_t capacity() const { return capacity_; }
  bool full() const { return free_head_ == kNoSlot; }
  uint32_t outstanding() const { return outstanding_; }

  // Plans, any thread.
  void SetPlan(uint32_t slot, const FaultPlan& plan);
  // Takes `slot`'s plan if it is at `step` and (for kAwaitingReply) awaits
  // `reply` from `peer` for `page`; nullopt otherwise.
  std::optional<FaultPlan> TakePlan(uint32_t slot, FaultPlan::Step step,
                                    uint16_t reply, int peer, uint64_t page);
  // Plans that wait for `peer` (its reply or its READ).
  uint32_t PlansWaitingOn(int peer);
  // Takes every plan awaiting one of `replies` from `peer`.
  std::vector<FaultPlan> TakePlansAwaiting(int peer,
                                           absl::Span<const uint16_t> replies);

 private:
  const uint32_t capacity_;
  std::unique_ptr<FaultRecord[]> records_;
  std::vector<uint32_t> next_free_;
  uint32_t free_head_ = 0;
  uint32_t outstanding_ = 0;
  absl::flat_hash_map<uintptr_t, uint32_t> index_;
  absl::Mutex plan_mutex_;
  std::unique_ptr<FaultPlan[]> plans_ ABSL_GUARDED_BY(plan_mutex_);  // by slot
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_FAULT_FAULT_TABLE_H_
