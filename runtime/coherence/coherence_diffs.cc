// coherence_diffs.cc - releases (twins diffed home in snapshot order) and
// the freeze, flush and drop of copies other threads may be writing.
#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "runtime/base/log.h"
#include "runtime/base/page.h"
#include "runtime/coherence/coherence.h"
#include "runtime/dsm/distributed_dataspace.h"
#include "runtime/fault/completion_queue.h"

namespace pagewire {

namespace hp = home_protocol;

namespace {

// Runs of differing bytes between `now` and `twin`: [begin, end) offsets.
void DiffRuns(const char* now, const char* twin,
              std::vector<std::pair<uint32_t, uint32_t>>& runs) {
  runs.clear();
  const uint64_t* a = reinterpret_cast<const uint64_t*>(now);
  const uint64_t* b = reinterpret_cast<const uint64_t*>(twin);
  uint32_t begin = 0;
  bool open = false;
  for (uint32_t w = 0; w < kPageSize / 8; ++w) {
    if (a[w] == b[w]) {
      if (open) {
        runs.emplace_back(begin, w * 8);
        open = false;
      }
      continue;
    }
    // Byte-exact edges: bytes this rank did not change must not be written,
    // another rank may have changed them (false sharing).
    for (uint32_t i = w * 8; i < w * 8 + 8; ++i) {
      if (now[i] != twin[i]) {
        if (!open) {
          begin = i;
          open = true;
        }
      } else if (open) {
        runs.emplace_back(begin, i);
        open = false;
      }
    }
  }
  if (open) runs.emplace_back(begin, static_cast<uint32_t>(kPageSize));
}

}  // namespace

bool Coherence::HasTwin(uint64_t offset) const {
  absl::MutexLock lock(&mutex_);
  // A page whose twin a release is flushing counts too: its snapshot must
  // find it installed.
  return twins_.count(offset) != 0 || flushing_.count(offset) != 0;
}

void Coherence::Unfreeze(const std::vector<uint64_t>& frozen,
                         const std::vector<uint64_t>& flushed) {
  std::vector<PageRequest> deferred;
  {
    absl::MutexLock lock(&mutex_);
    for (uint64_t offset : flushed) {
      auto it = flushing_.find(offset);
      if (it != flushing_.end() && --it->second == 0) flushing_.erase(it);
    }
    for (uint64_t offset : frozen) {
      auto it = frozen_.find(offset);
      if (it == frozen_.end() || --it->second.holds > 0) continue;
      deferred.insert(deferred.end(), it->second.waiting.begin(),
                      it->second.waiting.end());
      frozen_.erase(it);
    }
  }
  // The loop asks again: an installed page is upgraded (twinned) the usual
  // way, a dropped one is fetched afresh.
  for (const PageRequest& r : deferred) {
    r.completion_queue->Post(OutcomeCompletion(r, Resolution::kRetry));
  }
}

absl::Status Coherence::Release() {
  std::map<uint64_t, Twin> twins;
  std::vector<std::pair<uint32_t, uint64_t>> home_written;
  std::vector<uint64_t> flushed;
  std::vector<uint64_t> earlier;
  uint64_t flush_id;
  {
    absl::MutexLock lock(&mutex_);
    earlier.assign(inflight_flushes_.begin(), inflight_flushes_.end());
    flush_id = ++next_flush_id_;
    inflight_flushes_.insert(flush_id);
    twins.swap(twins_);
    for (const auto& [offset, twin] : twins) {
      ++flushing_[offset];
      flushed_since_barrier_.insert(offset);
      flushed.push_back(offset);
      // Recorded now, not when the flush ends: a lock released meanwhile by
      // another thread of this rank must report these pages too.
      written_since_barrier_.insert({twin.ds->id(), twin.page});
    }
    for (const auto& ref : home_written_release_) {
      // Hot pages stay writable (reported below, as always).
      if (!hot_.contains(ref)) home_written.push_back(ref);
    }
    home_written_release_.clear();
    for (const auto& ref : home_written) written_since_barrier_.insert(ref);
    for (const auto& [ref, left] : hot_) written_since_barrier_.insert(ref);
  }
  // Tracked home pages written since the last release: protect them again,
  // so the next write is seen too, and report them.
  PageList written;
  for (const auto& [id, page] : home_written) {
    DistributedDataspace* ds;
    {
      absl::MutexLock lock(&mutex_);
      ds = Find(id);
    }
    if (ds == nullptr) continue;
    const uint64_t offset =
        ds->global_addr() - service_.base() + page * kPageSize;
    if (absl::Status s = service_.WriteProtect(offset, kPageSize, true); !s.ok()) {
      Unfreeze({}, flushed);
      EndFlush(flush_id, earlier);
      return s;
    }
    written.push_back(hp::PageRef{id, 0, page});
  }

  absl::Status s = twins.empty() ? absl::OkStatus() : FlushTwins(twins, written);
  Unfreeze({}, flushed);
  EndFlush(flush_id, earlier);
  return s;
}

void Coherence::EndFlush(uint64_t id, const std::vector<uint64_t>& earlier) {
  absl::MutexLock lock(&mutex_);
  inflight_flushes_.erase(id);
  auto done = [this, &earlier]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    for (uint64_t e : earlier) {
      if (inflight_flushes_.count(e)) return false;
    }
    return true;
  };
  mutex_.Await(absl::Condition(&done));
}

absl::Status Coherence::FlushTwins(std::map<uint64_t, Twin>& twins,
                                   PageList& written) {
  FlushTally tally;
  auto next = twins.begin();
  while (next != twins.end()) next = FlushRound(next, twins.end(), written, tally);
  absl::MutexLock lock(&mutex_);
  stats_.diff_bytes += tally.bytes;
  stats_.diff_writes += tally.writes;
  return tally.first_error;
}

Coherence::TwinIter Coherence::FlushRound(TwinIter next, TwinIter end,
                                          PageList& written, FlushTally& tally) {
  // As many pages as staging slots are free, and the round's ticket
  // (post_turn_).
  std::vector<uint32_t> slots;
  uint64_t ticket;
  {
    absl::MutexLock lock(&mutex_);
    auto available = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
      return !free_staging_.empty();
    };
    mutex_.Await(absl::Condition(&available));
    while (!free_staging_.empty() &&
           slots.size() < static_cast<size_t>(std::distance(next, end))) {
      slots.push_back(free_staging_.back());
      free_staging_.pop_back();
    }
    ticket = ++post_tickets_;
  }
  std::vector<const std::pair<const uint64_t, Twin>*> round;
  std::vector<uint64_t> offsets;
  std::vector<char*> buffers;
  for (uint32_t slot : slots) {
    round.push_back(&*next);
    offsets.push_back(next->first);
    buffers.push_back(staging_.get() + uint64_t{slot} * kPageSize);
    ++next;
  }
  // Snapshot on the fault loop, which alone knows exactly which pages are
  // installed, and stop further writes: a writer now faults and twins the
  // page afresh (with what is flushed). Then wait for the round's turn to
  // post.
  std::vector<bool> resident;
  SyncBatch batch;
  const absl::Status s = service_.SnapshotAndProtect(offsets, buffers, resident);
  {
    absl::MutexLock lock(&mutex_);
    auto my_turn = [this, ticket]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
      return post_turn_ == ticket;
    };
    if (!my_turn()) {
      ++stats_.post_waits;
      mutex_.Await(absl::Condition(&my_turn));
    }
  }
  for (size_t i = 0; s.ok() && i < round.size(); ++i) {
    if (!resident[i]) {
      Error("release: page 0x%x was dropped before its writes went home; "
            "they are lost (a coherence bug)",
            service_.base() + offsets[i]);
      continue;
    }
    PostDiff(round[i]->second, offsets[i], buffers[i], batch, written, tally);
  }
  {
    absl::MutexLock lock(&mutex_);
    ++post_turn_;
  }
  const absl::Status waited = batch.Wait();
  {
    absl::MutexLock lock(&mutex_);
    for (uint32_t slot : slots) free_staging_.push_back(slot);
  }
  if (!s.ok() && tally.first_error.ok()) tally.first_error = s;
  if (!waited.ok() && tally.first_error.ok()) {
    tally.first_error = absl::UnavailableError(absl::StrFormat(
        "release: writing modified bytes home failed: %s", waited.message()));
  }
  return next;
}

void Coherence::PostDiff(const Twin& twin, uint64_t offset, char* snapshot,
                         SyncBatch& batch, PageList& written,
                         FlushTally& tally) {
  std::vector<std::pair<uint32_t, uint32_t>> runs;
  DiffRuns(snapshot, twin.copy.get(), runs);
  if (runs.empty()) return;
  std::vector<WorkRequest> chain(runs.size());
  for (size_t k = 0; k < runs.size(); ++k) {
    WorkRequest& wr = chain[k];
    wr.opcode = WorkOpcode::kWrite;
    wr.local = snapshot + runs[k].first;
    wr.lkey = staging_region_.lkey;
    wr.length = runs[k].second - runs[k].first;
    wr.remote_addr = service_.base() + offset + runs[k].first;
    wr.rkey = twin.ds->RemoteKey(twin.home, twin.page);
    wr.next = k + 1 < runs.size() ? &chain[k + 1] : nullptr;
    tally.bytes += wr.length;
  }
  tally.writes += runs.size();
  absl::Status posted = fetcher_.PostSync(twin.home, chain.data(), batch);
  if (!posted.ok() && tally.first_error.ok()) tally.first_error = posted;
  written.push_back(hp::PageRef{twin.ds->id(), 0, twin.page});
  absl::MutexLock lock(&mutex_);
  remote_written_barrier_[twin.home].push_back(
      hp::PageRef{twin.ds->id(), 0, twin.page});
}

std::vector<std::pair<uint64_t, size_t>> Coherence::CachedCopies(
    const PageList& pages) const {
  std::vector<std::pair<uint64_t, size_t>> copies;
  for (size_t i = 0; i < pages.size(); ++i) {
    const hp::PageRef& r = pages[i];
    DistributedDataspace* ds = Find(r.alloc_id);
    // The home's copy is the master: never dropped.
    if (ds == nullptr || r.page >= ds->placement().pages ||
        ds->HomedHere(r.page)) {
      continue;
    }
    copies.emplace_back(
        ds->global_addr() - service_.base() + r.page * kPageSize, i);
  }
  return copies;
}

absl::Status Coherence::FreezeAndFlush(
    absl::FunctionRef<void(std::map<uint64_t, Twin>& twins)> freeze,
    PageList& written) {
  std::map<uint64_t, Twin> twins;
  std::vector<uint64_t> flushed;
  uint64_t flush_id;
  {
    absl::MutexLock lock(&mutex_);
    // `freeze` waits first (mutex_.Await); from its return to the end of
    // this block the lock is held throughout, so the freeze, the taking of
    // the twins and the flush's registration are one step: a release that
    // starts later waits for this flush (EndFlush).
    freeze(twins);
    flush_id = ++next_flush_id_;
    inflight_flushes_.insert(flush_id);
    for (const auto& [offset, twin] : twins) {
      written_since_barrier_.insert({twin.ds->id(), twin.page});
      ++flushing_[offset];
      flushed_since_barrier_.insert(offset);
      flushed.push_back(offset);
    }
  }
  absl::Status s = twins.empty() ? absl::OkStatus() : FlushTwins(twins, written);
  Unfreeze({}, flushed);  // flushed: the pages may go now
  {
    absl::MutexLock lock(&mutex_);
    inflight_flushes_.erase(flush_id);
  }
  return s;
}

absl::Status Coherence::FlushAndDropCopies(
    const PageList& pages, bool at_barrier,
    const std::vector<const char*>& contents, uint64_t epoch) {
  std::vector<uint64_t> offsets;
  std::vector<const char*> replace;  // parallel to offsets, if any
  PageList written;
  absl::Status s = FreezeAndFlush(
      [&](std::map<uint64_t, Twin>& twins) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
        std::vector<size_t> index;  // of each offset in `pages`
        for (const auto& [offset, i] : CachedCopies(pages)) {
          offsets.push_back(offset);
          index.push_back(i);
          // Not at a barrier (a lock's grant): a copy fetched after this
          // drop may be newer than a page pushed at the coming barrier.
          if (!at_barrier) lock_dropped_[offset] = epoch_;
        }
        // Another thread's release still flushes some of these pages: let
        // it finish, so nothing it snapshots is dropped under it.
        auto settled = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
          for (uint64_t offset : offsets) {
            if (flushing_.count(offset)) return false;
          }
          return true;
        };
        mutex_.Await(absl::Condition(&settled));
        // Which copies a pushed page may replace: decided here, in the
        // critical section that freezes them (the Await above may have let
        // other threads twin or flush meanwhile). Not one this rank wrote
        // since the barrier began (twinned, flushed or being flushed then):
        // the home's page may not have that write yet, and the writer must
        // see it.
        if (!contents.empty()) {
          replace.assign(offsets.size(), nullptr);
          for (size_t k = 0; k < offsets.size(); ++k) {
            const hp::PageRef& r = pages[index[k]];
            if (contents[index[k]] != nullptr && !twins_.count(offsets[k]) &&
                !flushed_since_barrier_.contains(offsets[k]) &&
                !written_since_barrier_.contains({r.alloc_id, r.page}) &&
                MayReplace(offsets[k], epoch)) {
              replace[k] = contents[index[k]];
            }
          }
        }
        for (uint64_t offset : offsets) {
          ++frozen_[offset].holds;  // upgrades wait until the copy is gone
          auto it = twins_.find(offset);
          if (it != twins_.end()) twins.insert(twins_.extract(it));
        }
        stats_.invalidated += offsets.size();
      },
      written);
  // Drop (or replace) the copies. Frozen pages cannot be twinned again
  // (TwinOrDefer), so keeping pages with a twin or a flush under way is
  // only a safety net. Whether a pushed page may still replace its copy is
  // asked again as the drop runs: another thread's lock grant may have
  // dropped it since, and its reader fetched a newer one.
  absl::Notification dropped;
  service_.InvalidatePagesAsync(
      offsets, [&dropped] { dropped.Notify(); },
      [this](uint64_t offset) { return HasTwin(offset); }, std::move(replace),
      [this, epoch](uint64_t offset) {
        absl::MutexLock lock(&mutex_);
        return MayReplace(offset, epoch);
      });
  dropped.WaitForNotification();
  Unfreeze(offsets, {});
  absl::MutexLock lock(&mutex_);
  for (const hp::PageRef& r : written) {
    written_since_barrier_.insert({r.alloc_id, r.page});
  }
  return s;
}

absl::Status Coherence::FlushAndDropAll() {
  std::vector<DistributedDataspace*> all;
  PageList written;
  absl::Status s = FreezeAndFlush(
      [&](std::map<uint64_t, Twin>& twins) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
        // Flushes under way finish first, so nothing they snapshot is
        // dropped under them.
        auto settled = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
          return flushing_.empty();
        };
        mutex_.Await(absl::Condition(&settled));
        ++frozen_all_.holds;  // upgrades of every copy wait until it is gone
        all_dropped_ = epoch_ + 1;  // no push may replace a copy for now
        twins.swap(twins_);
        for (const auto& [id, ds] : dataspaces_) all.push_back(ds);
      },
      written);
  for (DistributedDataspace* ds : all) {
    if (ds->sequential()) continue;  // coherent by itself
    const uint64_t at = ds->global_addr() - service_.base();
    service_.Invalidate(at, ds->size(), [this, ds, at](uint64_t off) {
      return ds->HomedHere((off - at) / kPageSize) || HasTwin(off);
    });
  }
  std::vector<PageRequest> deferred;
  {
    absl::MutexLock lock(&mutex_);
    for (const hp::PageRef& r : written) {
      written_since_barrier_.insert({r.alloc_id, r.page});
    }
    if (--frozen_all_.holds == 0) deferred.swap(frozen_all_.waiting);
  }
  // The loop asks again: a dropped copy is fetched afresh.
  for (const PageRequest& r : deferred) {
    r.completion_queue->Post(OutcomeCompletion(r, Resolution::kRetry));
  }
  return s;
}

absl::Status Coherence::AcquireAll() {
  if (absl::Status s = Release(); !s.ok()) return s;
  return FlushAndDropAll();
}

}  // namespace pagewire
