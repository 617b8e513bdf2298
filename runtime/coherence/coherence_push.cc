// coherence_push.cc - pages pushed with the barrier: a rank that fetches a
// page again after a barrier dropped it subscribes; its home pushes the
// page's contents with its barrier list while it writes it, for a lease
// that doubles while the rank keeps reading.
#include <algorithm>
#include <cstring>

#include "runtime/base/page.h"
#include "runtime/coherence/coherence.h"
#include "runtime/dsm/distributed_dataspace.h"

namespace pagewire {

namespace hp = home_protocol;

void Coherence::NoteRefetch(DistributedDataspace* ds, uint64_t page, int home) {
  if (!push_ || ds->sequential() || home < 0 || home >= nranks_) return;
  absl::MutexLock lock(&mutex_);
  subscribe_[home].push_back(hp::PageRef{ds->id(), hp::kRefSubscribe, page});
}

void Coherence::PlanPushes(EpochRound& round) {
  // As a home: which subscribers get which of its written pages, and the
  // pages as they are now (after this rank's release; other ranks' writes
  // this epoch, if any, make the subscribers refuse them).
  const PageList& mine = round.mine;
  round.push_to.assign(nranks_, {});
  std::vector<const char*> at(mine.size(), nullptr);  // the page, if pushed
  {
    absl::MutexLock lock(&mutex_);
    for (size_t i = 0; i < mine.size() && !subscribers_.empty(); ++i) {
      auto it = subscribers_.find({mine[i].alloc_id, mine[i].page});
      if (it == subscribers_.end()) continue;
      DistributedDataspace* ds = Find(mine[i].alloc_id);
      if (ds == nullptr) continue;
      for (Subscriber& sub : it->second) {
        if (sub.left == 0) continue;
        round.push_to[sub.rank].push_back(i);
        if (--sub.left == 0) sub.expired = round.epoch;
        at[i] = reinterpret_cast<const char*>(ds->global_addr()) +
                mine[i].page * kPageSize;
      }
    }
  }
  // One snapshot per pushed page, shared by its subscribers. Home pages
  // are resident (written this epoch), so the copy does not fault.
  round.snapshots.resize(mine.size());
  for (size_t i = 0; i < mine.size(); ++i) {
    if (at[i] == nullptr) continue;
    round.snapshots[i].reset(new char[kPageSize]);
    std::memcpy(round.snapshots[i].get(), at[i], kPageSize);
  }
}

void Coherence::MarkDroppedForGood(const PageList& stale,
                                   const std::vector<const char*>& contents) {
  // Copies dropped, not replaced: a fetch of one of them later subscribes.
  absl::MutexLock lock(&mutex_);
  for (size_t i = 0; i < stale.size(); ++i) {
    if (contents[i] != nullptr) continue;
    DistributedDataspace* ds = Find(stale[i].alloc_id);
    if (ds == nullptr || ds->sequential() || ds->HomedHere(stale[i].page) ||
        stale[i].page >= ds->placement().pages) {
      continue;
    }
    if (service_.IsResident(ds->global_addr() - service_.base() +
                            stale[i].page * kPageSize)) {
      ds->MarkDroppedStale(stale[i].page);
    }
  }
}

void Coherence::Subscribe(int peer, const hp::PageRef& r) {
  DistributedDataspace* ds = Find(r.alloc_id);
  if (ds == nullptr || ds->sequential() || r.page >= ds->placement().pages ||
      !ds->HomedHere(r.page) || dead_[peer]) {
    return;  // freed meanwhile, or not a page this rank homes: no push
  }
  auto& subs = subscribers_[{r.alloc_id, r.page}];
  for (Subscriber& sub : subs) {
    if (sub.rank != peer) continue;
    // Renewed at once: it still reads the page, a longer lease. Otherwise
    // (a push it refused, or a page read again after a long while) a
    // fresh one.
    sub.lease = sub.left == 0 && epoch_ - std::min(epoch_, sub.expired) <= kRenewWindow
                    ? std::min(2 * sub.lease, kMaxPushLease)
                    : kPushLease;
    sub.left = sub.lease;
    return;
  }
  subs.push_back(Subscriber{peer, kPushLease, kPushLease, 0});
}

}  // namespace pagewire
