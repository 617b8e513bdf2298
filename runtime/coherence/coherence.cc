// coherence.cc - twins and diffs, the epoch barrier, the lock manager and
// atomics.
#include "runtime/coherence/coherence.h"

#include "runtime/fault/completion_queue.h"
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>

#include "absl/strings/str_format.h"
#include "runtime/dsm/distributed_dataspace.h"
#include "runtime/dsm/home_manager.h"
#include "runtime/base/log.h"
#include "runtime/base/page.h"

namespace pagewire {

namespace hp = home_protocol;

namespace {

// Slots of 8 bytes for atomics' old values.
constexpr uint32_t kScratchSlots = 4096;
// Pages of staging for diffs: a release of more pages goes in rounds.
constexpr uint32_t kStagingPages = 1024;

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

Coherence::Coherence(int self, int nranks, Transport& transport,
                     MessageRouter& router, RemoteFetcher& fetcher,
                     FaultService& service, HomeManager& home)
    : self_(self),
      nranks_(nranks),
      transport_(transport),
      router_(router),
      fetcher_(fetcher),
      service_(service),
      home_(home),
      remote_written_barrier_(nranks),
      subscribe_(nranks),
      dead_(nranks),
      death_(nranks),
      scratch_(new uint64_t[kScratchSlots]()),
      staging_(new char[uint64_t{kStagingPages} * kPageSize]) {
  for (uint32_t i = 0; i < kScratchSlots; ++i) free_scratch_.push_back(i);
  for (uint32_t i = 0; i < kStagingPages; ++i) free_staging_.push_back(i);
  absl::Status s = router_.Register(
      {hp::kEpochWrites, hp::kLockAcquire, hp::kLockGrant, hp::kLockRelease},
      [this](int peer, uint16_t type, absl::Span<const char> body) {
        OnMessage(peer, type, body);
      });
  if (!s.ok()) Error("coherence: %s", s.message());
}

Coherence::~Coherence() {
  router_.Unregister(
      {hp::kEpochWrites, hp::kLockAcquire, hp::kLockGrant, hp::kLockRelease});
  if (scratch_region_.length != 0) {
    (void)transport_.DeregisterMemory(scratch_region_);
  }
  if (staging_region_.length != 0) {
    (void)transport_.DeregisterMemory(staging_region_);
  }
}

absl::Status Coherence::Start() {
  absl::StatusOr<MemoryRegion> r = transport_.RegisterMemory(
      scratch_.get(), uint64_t{kScratchSlots} * sizeof(uint64_t));
  if (!r.ok()) return r.status();
  scratch_region_ = *r;
  r = transport_.RegisterMemory(staging_.get(),
                                uint64_t{kStagingPages} * kPageSize);
  if (!r.ok()) return r.status();
  staging_region_ = *r;
  return absl::OkStatus();
}

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

void Coherence::AddDataspace(DistributedDataspace* ds) {
  absl::MutexLock lock(&mutex_);
  dataspaces_[ds->id()] = ds;
}

void Coherence::RemoveDataspace(uint32_t id) {
  absl::MutexLock lock(&mutex_);
  dataspaces_.erase(id);
  for (auto it = twins_.begin(); it != twins_.end();) {
    it = it->second.ds->id() == id ? twins_.erase(it) : std::next(it);
  }
  auto drop = [id](auto& set) {
    for (auto it = set.begin(); it != set.end();) {
      if (it->first == id) {
        set.erase(it++);
      } else {
        ++it;
      }
    }
  };
  drop(home_written_release_);
  drop(home_written_barrier_);
  auto drop_keys = [id](auto& map) {
    for (auto it = map.begin(); it != map.end();) {
      if (it->first.first == id) {
        map.erase(it++);
      } else {
        ++it;
      }
    }
  };
  drop_keys(hot_);
  drop_keys(hot_probes_);
  drop_keys(home_written_epoch_);
  drop_keys(subscribers_);
  for (auto* lists : {&remote_written_barrier_, &subscribe_}) {
    for (PageList& l : *lists) {
      l.erase(std::remove_if(l.begin(), l.end(),
                             [id](const hp::PageRef& r) { return r.alloc_id == id; }),
              l.end());
    }
  }
  drop(written_since_barrier_);
}

DistributedDataspace* Coherence::Find(uint32_t id) const {
  auto it = dataspaces_.find(id);
  return it == dataspaces_.end() ? nullptr : it->second;
}

DistributedDataspace* Coherence::FindByAddr(uintptr_t addr) const {
  for (const auto& [id, ds] : dataspaces_) {
    if (addr >= ds->global_addr() && addr - ds->global_addr() < ds->size()) {
      return ds;
    }
  }
  return nullptr;
}

bool Coherence::TwinOrDefer(const PageRequest& request,
                            DistributedDataspace* ds, uint64_t page, int home,
                            const void* current) {
  const uint64_t offset = ds->global_addr() - service_.base() + page * kPageSize;
  // The page is installed and write-protected: its contents are stable.
  auto copy = std::make_unique<char[]>(kPageSize);
  std::memcpy(copy.get(), current, kPageSize);
  absl::MutexLock lock(&mutex_);
  if (frozen_all_.holds > 0) {
    frozen_all_.waiting.push_back(request);
    return true;
  }
  if (auto it = frozen_.find(offset); it != frozen_.end()) {
    it->second.waiting.push_back(request);
    return true;
  }
  // A page twinned again before its release keeps the older twin: it is the
  // state the home has.
  if (twins_.count(offset)) return false;
  twins_.emplace(offset, Twin{ds, page, home, std::move(copy)});
  ++stats_.twins;
  return false;
}

void Coherence::NoteHomeWrite(DistributedDataspace* ds, uint64_t page) {
  absl::MutexLock lock(&mutex_);
  const std::pair<uint32_t, uint64_t> key{ds->id(), page};
  home_written_release_.insert(key);
  home_written_barrier_.insert(key);
  // Written a short while ago too: from now on it stays writable (hot).
  // epoch_ counts barriers begun; this write belongs to epoch_ + 1.
  if (auto last = home_written_epoch_.find(key);
      last != home_written_epoch_.end() && epoch_ + 1 - last->second <= kHotWindow &&
      !hot_.contains(key)) {
    HotProbe& probe = hot_probes_[key];
    probe.interval = probe.probed != 0 && epoch_ + 1 - probe.probed <= kHotWindow
                         ? std::min(2 * probe.interval, kMaxHotProbeEpochs)
                         : kHotProbeEpochs;
    hot_.emplace(key, probe.interval);
    ++stats_.hot_pages;
  }
}

void Coherence::NoteRefetch(DistributedDataspace* ds, uint64_t page, int home) {
  if (!push_ || ds->sequential() || home < 0 || home >= nranks_) return;
  absl::MutexLock lock(&mutex_);
  subscribe_[home].push_back(hp::PageRef{ds->id(), hp::kRefSubscribe, page});
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
  std::vector<std::pair<uint32_t, uint32_t>> runs;
  std::vector<WorkRequest> chain;
  uint64_t bytes = 0, writes = 0;
  absl::Status first_error;
  auto next = twins.begin();
  while (next != twins.end()) {
    // A round: as many pages as staging slots are free, and its ticket
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
             slots.size() < static_cast<size_t>(std::distance(next, twins.end()))) {
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
    // page afresh (with what is flushed). Then it waits for its turn to
    // post (post_turn_).
    std::vector<bool> resident;
    SyncBatch batch;
    absl::Status s = service_.SnapshotAndProtect(offsets, buffers, resident);
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
      const Twin& twin = round[i]->second;
      if (!resident[i]) {
        Error("release: page 0x%x was dropped before its writes went home; "
              "they are lost (a coherence bug)",
              service_.base() + offsets[i]);
        continue;
      }
      DiffRuns(buffers[i], twin.copy.get(), runs);
      if (runs.empty()) continue;
      chain.assign(runs.size(), WorkRequest{});
      for (size_t k = 0; k < runs.size(); ++k) {
        WorkRequest& wr = chain[k];
        wr.opcode = WorkOpcode::kWrite;
        wr.local = buffers[i] + runs[k].first;
        wr.lkey = staging_region_.lkey;
        wr.length = runs[k].second - runs[k].first;
        wr.remote_addr = service_.base() + offsets[i] + runs[k].first;
        wr.rkey = twin.ds->RemoteKey(twin.home, twin.page);
        wr.next = k + 1 < runs.size() ? &chain[k + 1] : nullptr;
        bytes += wr.length;
      }
      writes += runs.size();
      absl::Status posted = fetcher_.PostSync(twin.home, chain.data(), batch);
      if (!posted.ok() && first_error.ok()) first_error = posted;
      written.push_back(hp::PageRef{twin.ds->id(), 0, twin.page});
      absl::MutexLock lock(&mutex_);
      remote_written_barrier_[twin.home].push_back(
          hp::PageRef{twin.ds->id(), 0, twin.page});
    }
    {
      absl::MutexLock lock(&mutex_);
      ++post_turn_;
    }
    absl::Status waited = batch.Wait();
    {
      absl::MutexLock lock(&mutex_);
      for (uint32_t slot : slots) free_staging_.push_back(slot);
    }
    if (!s.ok() && first_error.ok()) first_error = s;
    if (!waited.ok() && first_error.ok()) {
      first_error = absl::UnavailableError(absl::StrFormat(
          "release: writing modified bytes home failed: %s", waited.message()));
    }
  }
  absl::MutexLock lock(&mutex_);
  stats_.diff_bytes += bytes;
  stats_.diff_writes += writes;
  return first_error;
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

absl::Status Coherence::SendPageList(int peer, uint16_t type, uint64_t key,
                                     uint64_t ticket, const PageList& pages,
                                     uint32_t flags,
                                     const std::vector<const char*>* contents) {
  std::vector<char> buf;
  size_t i = 0;
  do {
    // A part: refs up to kMaxPageRefs, and pushed pages (after the refs)
    // up to kMaxPushedPages, in one message of at most kMaxMessageBytes.
    size_t n = 0, pushed = 0;
    while (i + n < pages.size() && n < hp::kMaxPageRefs) {
      const bool page = contents != nullptr && (*contents)[i + n] != nullptr;
      if (page && pushed == hp::kMaxPushedPages) break;
      if (sizeof(hp::PageListHeader) + (n + 1) * sizeof(hp::PageRef) +
              (pushed + page) * kPageSize >
          Transport::kMaxMessageBytes) {
        break;
      }
      pushed += page;
      ++n;
    }
    hp::PageListHeader h{key, ticket, static_cast<uint32_t>(n),
                         flags | (i + n == pages.size() ? hp::kLastPart : 0u)};
    buf.resize(sizeof(h) + n * sizeof(hp::PageRef) + pushed * kPageSize);
    std::memcpy(buf.data(), &h, sizeof(h));
    if (n) std::memcpy(buf.data() + sizeof(h), &pages[i], n * sizeof(hp::PageRef));
    char* out = buf.data() + sizeof(h) + n * sizeof(hp::PageRef);
    for (size_t k = i; pushed != 0 && k < i + n; ++k) {
      if ((*contents)[k] == nullptr) continue;
      std::memcpy(out, (*contents)[k], kPageSize);
      out += kPageSize;
    }
    absl::Status s = transport_.SendMessage(
        peer, type, absl::Span<const char>(buf.data(), buf.size()));
    if (!s.ok()) return s;
    i += n;
  } while (i < pages.size());
  return absl::OkStatus();
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

absl::Status Coherence::AwaitPeers(const std::function<bool()>& done_with,
                                   const char* what) {
  // Done, or a rank we wait for is dead. No timeout: membership decides.
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    if (done_with()) return true;
    for (int r = 0; r < nranks_; ++r) {
      if (dead_[r]) return true;
    }
    return false;
  };
  mutex_.Await(absl::Condition(&ready));
  if (done_with()) return absl::OkStatus();
  for (int r = 0; r < nranks_; ++r) {
    if (dead_[r]) {
      return absl::UnavailableError(absl::StrFormat(
          "%s cannot complete: rank %d is dead (%s)", what, r, death_[r]));
    }
  }
  return absl::OkStatus();
}

absl::Status Coherence::Barrier() {
  if (absl::Status s = Release(); !s.ok()) return s;
  auto by_page = [](const hp::PageRef& a, const hp::PageRef& b) {
    return std::tie(a.alloc_id, a.page) < std::tie(b.alloc_id, b.page);
  };
  uint64_t epoch;
  PageList mine;  // every page this rank wrote this epoch, of any home
  std::vector<PageList> subscribe;  // by home: this rank's subscriptions
  {
    absl::MutexLock lock(&mutex_);
    epoch = ++epoch_;
    ++stats_.barriers;
    for (PageList& l : remote_written_barrier_) {
      mine.insert(mine.end(), l.begin(), l.end());
    }
    remote_written_barrier_.assign(nranks_, PageList());
    written_since_barrier_.clear();
    // Flushes still under way are this epoch's writes too (they reach
    // `mine` only when they end, after it is taken).
    flushed_since_barrier_.clear();
    absl::erase_if(lock_dropped_, [epoch](const auto& d) { return d.second + 1 < epoch; });
    for (const auto& [offset, n] : flushing_) flushed_since_barrier_.insert(offset);
    subscribe.swap(subscribe_);
    subscribe_.assign(nranks_, PageList());
    // Its own pages: those it wrote (tracked) and the hot ones, which count
    // as written in every epoch because nothing sees their writes.
    // (A peer's diff applied here after this point is a write of the next
    // epoch as far as this rank is concerned; the peer reports it itself.)
    for (const auto& ref : home_written_barrier_) {
      mine.push_back(hp::PageRef{ref.first, 0, ref.second});
    }
    home_written_barrier_.clear();
    for (const auto& [ref, left] : hot_) {
      mine.push_back(hp::PageRef{ref.first, 0, ref.second});
    }
    for (const hp::PageRef& r : mine) {
      DistributedDataspace* ds = Find(r.alloc_id);
      if (ds != nullptr && ds->HomedHere(r.page)) {
        home_written_epoch_[{r.alloc_id, r.page}] = epoch;
      }
    }
    EpochState& st = epochs_[epoch];
    st.writes_from.resize(nranks_);
  }
  std::sort(mine.begin(), mine.end(), by_page);
  mine.erase(std::unique(mine.begin(), mine.end(),
                         [](const hp::PageRef& a, const hp::PageRef& b) {
                           return a.alloc_id == b.alloc_id && a.page == b.page;
                         }),
             mine.end());

  // Who hears of which page. A page this rank homes goes only to the ranks
  // its directory lists as cachers (HomeManager::CachersOf): a rank READs
  // a page directly only after the home registered it, and never
  // unregisters, so a rank not listed holds no copy. One that registers
  // after this look is answered after this rank's writes of the epoch, so
  // the copy it then reads has them. Pages of other homes (this rank's
  // diffs) go to every rank: only their homes know who caches them. So a
  // list's length follows the sharing, not the number of ranks.
  std::vector<char> own(mine.size(), 0);
  {
    absl::MutexLock lock(&mutex_);
    for (size_t i = 0; i < mine.size(); ++i) {
      DistributedDataspace* ds = Find(mine[i].alloc_id);
      own[i] = ds != nullptr && !ds->sequential() && ds->HomedHere(mine[i].page);
    }
  }
  PageList own_pages;
  for (size_t i = 0; i < mine.size(); ++i) {
    if (own[i]) own_pages.push_back(mine[i]);
  }
  const std::vector<std::vector<uint64_t>> own_cachers =
      home_.CachersOf(own_pages);
  std::vector<const std::vector<uint64_t>*> cachers(mine.size(), nullptr);
  for (size_t i = 0, k = 0; i < mine.size(); ++i) {
    if (own[i]) cachers[i] = &own_cachers[k++];
  }
  auto tells = [&](size_t i, int peer) {
    if (cachers[i] == nullptr) return true;  // another home's page
    const std::vector<uint64_t>& bits = *cachers[i];
    const size_t word = static_cast<size_t>(peer) / 64;
    return word < bits.size() && (bits[word] >> (peer % 64) & 1) != 0;
  };

  // As a home: which subscribers get which of its written pages, and the
  // pages as they are now (after this rank's release; other ranks' writes
  // this epoch, if any, make the subscribers refuse them).
  std::vector<std::vector<size_t>> push_to(nranks_);  // indices into mine
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
        push_to[sub.rank].push_back(i);
        if (--sub.left == 0) sub.expired = epoch;
        at[i] = reinterpret_cast<const char*>(ds->global_addr()) +
                mine[i].page * kPageSize;
      }
    }
  }
  // One snapshot per pushed page, shared by its subscribers. Home pages
  // are resident (written this epoch), so the copy does not fault.
  std::vector<std::unique_ptr<char[]>> snapshots(mine.size());
  uint64_t pushes = 0;
  for (size_t i = 0; i < mine.size(); ++i) {
    if (at[i] == nullptr) continue;
    snapshots[i].reset(new char[kPageSize]);
    std::memcpy(snapshots[i].get(), at[i], kPageSize);
  }

  // A rank the barrier cannot reach ends it, naming the rank.
  auto unreachable = [&](int peer, absl::Status sent) {
    if (sent.ok()) return sent;
    absl::MutexLock lock(&mutex_);
    epochs_.erase(epoch);
    return absl::UnavailableError(absl::StrFormat(
        "barrier cannot complete: rank %d is unreachable: %s", peer,
        dead_[peer] ? death_[peer] : std::string(sent.message())));
  };
  // The one round: tell every rank what it needs of what this rank wrote
  // (possibly nothing), with the pages it subscribed to and its
  // subscriptions with it.
  uint64_t notices = 0;
  PageList told;
  for (int peer = 0; peer < nranks_; ++peer) {
    if (peer == self_) continue;
    absl::Status sent;
    if (push_to[peer].empty() && subscribe[peer].empty()) {
      told.clear();
      for (size_t i = 0; i < mine.size(); ++i) {
        if (tells(i, peer)) told.push_back(mine[i]);
      }
      notices += told.size();
      sent = SendPageList(peer, hp::kEpochWrites, epoch, 0, told, 0);
    } else {
      // Pushed pages first (they fill the first parts), then the rest of
      // the list, then the subscriptions.
      PageList list;
      std::vector<const char*> contents;
      std::vector<bool> pushed(mine.size());
      for (size_t i : push_to[peer]) {
        pushed[i] = true;
        list.push_back(hp::PageRef{mine[i].alloc_id, hp::kRefPushed, mine[i].page});
        contents.push_back(snapshots[i].get());
      }
      pushes += push_to[peer].size();
      for (size_t i = 0; i < mine.size(); ++i) {
        if (!pushed[i] && tells(i, peer)) list.push_back(mine[i]);
      }
      notices += list.size();
      list.insert(list.end(), subscribe[peer].begin(), subscribe[peer].end());
      contents.resize(list.size(), nullptr);
      sent = SendPageList(peer, hp::kEpochWrites, epoch, 0, list, 0, &contents);
    }
    if (absl::Status s = unreachable(peer, sent); !s.ok()) return s;
  }

  std::vector<std::tuple<int, uint32_t, uint64_t>> written;
  std::vector<Pushed> pushed;
  std::vector<uint64_t> protect;
  {
    absl::MutexLock lock(&mutex_);
    stats_.pushes_sent += pushes;
    stats_.notices_sent += notices;
    EpochState& st = epochs_[epoch];
    absl::Status s = AwaitPeers(
        [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
          for (int r = 0; r < nranks_; ++r) {
            if (r != self_ && !st.writes_from[r]) return false;
          }
          return true;
        },
        "barrier");
    written.swap(st.written);
    pushed.swap(st.pushed);
    epochs_.erase(epoch);
    if (!s.ok()) return s;
    // As a home: the pages of its own written this epoch, by anyone, are
    // protected again (tracked) so the next epoch's writes are seen; hot
    // ones only when their probe is due.
    auto protect_page = [&](uint32_t id, uint64_t page) {
      DistributedDataspace* ds = Find(id);
      if (ds == nullptr || !ds->HomedHere(page)) return;
      if (auto hot = hot_.find({id, page}); hot != hot_.end()) {
        if (--hot->second > 0) return;
        hot_.erase(hot);
        hot_probes_[{id, page}].probed = epoch;
      }
      protect.push_back(ds->global_addr() - service_.base() + page * kPageSize);
    };
    for (const hp::PageRef& r : mine) protect_page(r.alloc_id, r.page);
    for (const auto& [writer, id, page] : written) {
      if (!std::binary_search(mine.begin(), mine.end(), hp::PageRef{id, 0, page},
                              by_page)) {
        protect_page(id, page);
      }
    }
  }
  std::sort(protect.begin(), protect.end());
  protect.erase(std::unique(protect.begin(), protect.end()), protect.end());
  for (uint64_t offset : protect) {
    if (absl::Status s = service_.WriteProtect(offset, kPageSize, true); !s.ok()) {
      return s;
    }
  }
  // As a cacher: every copy of a page another rank wrote is stale (a page
  // only this rank wrote is what its home has now, and is kept). A pushed
  // page replaces it if its home was its only writer. Other threads of
  // this rank may be writing some of these copies (under locks, unrelated
  // to the barrier): their writes go home first.
  std::sort(written.begin(), written.end(), [](const auto& a, const auto& b) {
    return std::tie(std::get<1>(a), std::get<2>(a), std::get<0>(a)) <
           std::tie(std::get<1>(b), std::get<2>(b), std::get<0>(b));
  });
  std::sort(pushed.begin(), pushed.end(), [](const Pushed& a, const Pushed& b) {
    return std::tie(a.alloc_id, a.page) < std::tie(b.alloc_id, b.page);
  });
  PageList stale;
  std::vector<const char*> contents;
  stale.reserve(written.size());
  auto next_push = pushed.begin();
  for (size_t i = 0; i < written.size();) {
    const auto [writer, id, page] = written[i];
    size_t end = i + 1;
    bool sole = true;
    for (; end < written.size() && std::get<1>(written[end]) == id &&
           std::get<2>(written[end]) == page;
         ++end) {
      sole &= std::get<0>(written[end]) == writer;
    }
    i = end;
    const hp::PageRef ref{id, 0, page};
    while (next_push != pushed.end() &&
           std::tie(next_push->alloc_id, next_push->page) < std::tie(id, page)) {
      ++next_push;
    }
    const char* from_home = nullptr;
    if (next_push != pushed.end() && next_push->alloc_id == id &&
        next_push->page == page && next_push->from == writer && sole &&
        !std::binary_search(mine.begin(), mine.end(), ref, by_page)) {
      from_home = next_push->contents.get();
    }
    stale.push_back(ref);
    contents.push_back(from_home);
  }
  if (stale.empty()) return absl::OkStatus();
  {
    // Copies dropped for good: a fetch of one of them later subscribes.
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
  return FlushAndDropCopies(stale, /*at_barrier=*/true, contents, epoch);
}

absl::Status Coherence::LockCheck(uintptr_t lock_addr) const {
  absl::MutexLock lock(&mutex_);
  if (lock_addr % alignof(uint64_t) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "lock %p is not 8-byte aligned; place pw_lock_t in global memory "
        "from pw_alloc",
        reinterpret_cast<void*>(lock_addr)));
  }
  if (FindByAddr(lock_addr) == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "lock %p is not in a live global allocation; a pw_lock_t must live "
        "in memory from pw_alloc, so every rank names the same lock",
        reinterpret_cast<void*>(lock_addr)));
  }
  return absl::OkStatus();
}

absl::Status Coherence::LockAcquire(uintptr_t lock_addr) {
  if (absl::Status s = LockCheck(lock_addr); !s.ok()) return s;
  // Copies about to be dropped must not hold unreleased writes.
  if (absl::Status s = Release(); !s.ok()) return s;
  const uint64_t key = lock_addr - service_.base();
  int home;
  uint64_t ticket;
  {
    absl::MutexLock lock(&mutex_);
    auto it = held_.find(key);
    if (it != held_.end() && it->second == std::this_thread::get_id()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "pw_lock_acquire: this thread already holds lock %p; locks are not "
          "recursive",
          reinterpret_cast<void*>(lock_addr)));
    }
    // Another thread of this rank holds it: wait for its release here.
    auto free_here = [this, key]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
      return held_.count(key) == 0;
    };
    mutex_.Await(absl::Condition(&free_here));
    held_[key] = std::this_thread::get_id();
    DistributedDataspace* ds = FindByAddr(lock_addr);
    home = ds->OwnerOf((lock_addr - ds->global_addr()) / kPageSize);
    if (home < 0) home = ds->placement().DirectoryOf(
        (lock_addr - ds->global_addr()) / kPageSize);
    ticket = ++next_ticket_;
    waiters_[ticket];
    ++stats_.lock_acquires;
    if (home == self_) ManagerAcquire(key, self_, ticket);
  }
  if (home != self_) {
    hp::PageListHeader h{key, ticket, 0, hp::kLastPart};
    absl::Status s = transport_.SendMessage(
        home, hp::kLockAcquire,
        absl::Span<const char>(reinterpret_cast<const char*>(&h), sizeof(h)));
    if (!s.ok()) {
      absl::MutexLock lock(&mutex_);
      waiters_.erase(ticket);
      held_.erase(key);
      return s;
    }
  }
  Waiter w;
  {
    absl::MutexLock lock(&mutex_);
    Waiter& waiter = waiters_[ticket];
    auto granted = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
      return waiter.granted || (home != self_ && dead_[home]);
    };
    mutex_.Await(absl::Condition(&granted));
    w = std::move(waiter);
    waiters_.erase(ticket);
    if (!w.granted) {
      held_.erase(key);
      return absl::UnavailableError(absl::StrFormat(
          "pw_lock_acquire: the lock's home, rank %d, is dead (%s)", home,
          death_[home]));
    }
    if (!w.error.ok()) {
      held_.erase(key);
      return w.error;
    }
  }
  if (w.invalidate_all) return FlushAndDropAll();
  return FlushAndDropCopies(w.invalidate, /*at_barrier=*/false);
}

absl::Status Coherence::LockRelease(uintptr_t lock_addr) {
  if (absl::Status s = LockCheck(lock_addr); !s.ok()) return s;
  const uint64_t key = lock_addr - service_.base();
  {
    absl::MutexLock lock(&mutex_);
    auto it = held_.find(key);
    if (it == held_.end() || it->second != std::this_thread::get_id()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "pw_lock_release: this thread does not hold lock %p; release only "
          "a lock you acquired, from the thread that acquired it",
          reinterpret_cast<void*>(lock_addr)));
    }
  }
  if (absl::Status s = Release(); !s.ok()) return s;
  PageList written;
  int home;
  {
    absl::MutexLock lock(&mutex_);
    held_.erase(key);
    for (const auto& [id, page] : written_since_barrier_) {
      written.push_back(hp::PageRef{id, 0, page});
    }
    DistributedDataspace* ds = FindByAddr(lock_addr);
    home = ds->OwnerOf((lock_addr - ds->global_addr()) / kPageSize);
    if (home < 0) home = ds->placement().DirectoryOf(
        (lock_addr - ds->global_addr()) / kPageSize);
    if (home == self_) {
      ManagerRelease(key, self_, written, false);
      return absl::OkStatus();
    }
  }
  const bool too_many = written.size() > hp::kMaxPageRefs;
  return SendPageList(home, hp::kLockRelease, key, 0,
                      too_many ? PageList() : written,
                      too_many ? hp::kAllPages : 0u);
}

void Coherence::ManagerAcquire(uint64_t lock, int rank, uint64_t ticket) {
  auto [it, created] = locks_.try_emplace(lock);
  LockState& st = it->second;
  if (created) {
    // Every rank starts having seen nothing: the log keeps what the rank
    // that has not acquired the lock yet will need to drop.
    for (int r = 0; r < nranks_; ++r) st.last_seen[r] = 0;
  }
  if (!st.broken.empty()) {
    if (rank == self_) {
      DeliverGrant(ticket, {}, false, absl::UnavailableError(st.broken));
    } else {
      // A grant with no pages and the broken flag is not in the protocol;
      // the requester learns of the holder's death from membership.
      Warning("lock 0x%x: rank %d asks for a lock whose holder died: %s", lock,
              rank, st.broken);
    }
    return;
  }
  if (st.holder < 0) {
    Grant(lock, st, rank, ticket);
  } else {
    st.queue.emplace_back(rank, ticket);
  }
}

void Coherence::Grant(uint64_t lock, LockState& st, int rank,
                      uint64_t ticket) {
  st.holder = rank;
  const uint64_t seen = st.last_seen[rank];
  st.last_seen[rank] = st.seq;
  PageList pages;
  // Entries this rank has not seen were dropped: it cannot be told which
  // pages, so it drops them all.
  bool all = st.truncated > seen;
  // Each page once, however many releases named it since.
  absl::flat_hash_set<std::pair<uint32_t, uint64_t>> listed;
  for (const LogEntry& e : st.log) {
    if (all) break;
    if (e.seq <= seen || e.writer == rank) continue;
    if (e.ref.alloc_id == 0) {
      all = true;
      break;
    }
    if (listed.insert({e.ref.alloc_id, e.ref.page}).second) pages.push_back(e.ref);
  }
  if (pages.size() > hp::kMaxPageRefs) all = true;
  if (all) pages.clear();
  // The log only needs what some rank has not seen yet.
  uint64_t oldest = st.seq;
  for (const auto& [r, s] : st.last_seen) {
    if (r == self_ || !dead_[r]) oldest = std::min(oldest, s);
  }
  st.log.erase(std::remove_if(st.log.begin(), st.log.end(),
                              [oldest](const LogEntry& e) { return e.seq <= oldest; }),
               st.log.end());
  // A rank that holds the lock rarely (or never: every rank starts at 0)
  // would keep the log growing with every release of the others. Past
  // kMaxLockLog entries all but the newest kLockLogKept go, and such a rank
  // drops every copy at its next grant (as when a grant would list more
  // than kMaxPageRefs pages).
  if (st.log.size() > kMaxLockLog) {
    const size_t drop = st.log.size() - kLockLogKept;
    st.truncated = st.log[drop - 1].seq;
    st.log.erase(st.log.begin(), st.log.begin() + drop);
    Debug("lock 0x%x: its log of writes reached %d entries; the oldest %d "
          "were dropped, so a rank that has not held the lock since then "
          "drops every cached copy at its next acquire",
          lock, drop + kLockLogKept, drop);
  }
  if (rank == self_) {
    DeliverGrant(ticket, std::move(pages), all, absl::OkStatus());
    return;
  }
  absl::Status s = SendPageList(rank, hp::kLockGrant, lock, ticket, pages,
                                all ? hp::kAllPages : 0u);
  if (!s.ok()) {
    Warning("lock 0x%x: granting it to rank %d failed: %s", lock, rank,
            s.message());
  }
}

void Coherence::ManagerRelease(uint64_t lock, int rank, const PageList& pages,
                               bool all) {
  LockState& st = locks_[lock];
  if (st.holder != rank) {
    Warning("lock 0x%x: rank %d releases it but rank %d holds it; ignored",
            lock, rank, st.holder);
    return;
  }
  if (all) {
    st.log.push_back(LogEntry{++st.seq, rank, hp::PageRef{0, 0, 0}});
  } else {
    for (const hp::PageRef& r : pages) {
      st.log.push_back(LogEntry{++st.seq, rank, r});
    }
  }
  st.holder = -1;
  while (!st.queue.empty()) {
    auto [next, ticket] = st.queue.front();
    st.queue.pop_front();
    if (next != self_ && dead_[next]) continue;
    Grant(lock, st, next, ticket);
    break;
  }
}

void Coherence::DeliverGrant(uint64_t ticket, PageList pages, bool all,
                             absl::Status error) {
  auto it = waiters_.find(ticket);
  if (it == waiters_.end()) {
    Warning("a lock grant for ticket %d matches no waiting acquire; ignored",
            ticket);
    return;
  }
  Waiter& w = it->second;
  w.invalidate.insert(w.invalidate.end(), pages.begin(), pages.end());
  w.invalidate_all |= all;
  w.error = std::move(error);
  w.granted = true;
}

void Coherence::OnMessage(int peer, uint16_t type, absl::Span<const char> body) {
  hp::PageListHeader h;
  if (body.size() < sizeof(h) || peer < 0 || peer >= nranks_) {
    Warning("coherence: rank %d sent a malformed message of type %d; dropped",
            peer, type);
    return;
  }
  std::memcpy(&h, body.data(), sizeof(h));
  const uint64_t refs_end = sizeof(h) + uint64_t{h.count} * sizeof(hp::PageRef);
  if (body.size() < refs_end || h.count > hp::kMaxPageRefs) {
    Warning("coherence: rank %d sent %d bytes for %d pages (type %d); dropped",
            peer, body.size(), h.count, type);
    return;
  }
  PageList pages(h.count);
  if (h.count) {
    std::memcpy(pages.data(), body.data() + sizeof(h),
                h.count * sizeof(hp::PageRef));
  }
  // Only a kEpochWrites list carries pushed pages, after its refs.
  uint64_t pushed = 0;
  for (const hp::PageRef& r : pages) {
    // A ref is a write, a pushed write or a subscription, and only a
    // kEpochWrites list has anything but plain writes.
    const uint32_t allowed =
        type == hp::kEpochWrites ? hp::kRefPushed | hp::kRefSubscribe : 0;
    if ((r.flags & ~allowed) != 0 ||
        r.flags == (hp::kRefPushed | hp::kRefSubscribe)) {
      Warning("coherence: rank %d sent a page ref with flags 0x%x (type %d); "
              "message dropped",
              peer, r.flags, type);
      return;
    }
    pushed += (r.flags & hp::kRefPushed) != 0;
  }
  if (body.size() != refs_end + pushed * kPageSize) {
    Warning("coherence: rank %d sent %d bytes for %d pages, %d of them pushed "
            "(type %d); dropped",
            peer, body.size(), h.count, pushed, type);
    return;
  }
  const bool last = h.flags & hp::kLastPart;
  absl::MutexLock lock(&mutex_);
  switch (type) {
    case hp::kEpochWrites: {
      EpochState& st = epochs_[h.epoch_or_lock];
      st.writes_from.resize(nranks_);
      const char* contents = body.data() + refs_end;
      for (const hp::PageRef& r : pages) {
        if (r.flags & hp::kRefSubscribe) {
          Subscribe(peer, r);
          continue;
        }
        st.written.emplace_back(peer, r.alloc_id, r.page);
        if (!(r.flags & hp::kRefPushed)) continue;
        // Taken only from the page's home (others' pushes are ignored).
        DistributedDataspace* ds = Find(r.alloc_id);
        if (ds != nullptr && !ds->sequential() && r.page < ds->placement().pages &&
            ds->OwnerOf(r.page) == peer) {
          Pushed p{peer, r.alloc_id, r.page, std::make_unique<char[]>(kPageSize)};
          std::memcpy(p.contents.get(), contents, kPageSize);
          st.pushed.push_back(std::move(p));
        }
        contents += kPageSize;
      }
      if (last) st.writes_from[peer] = true;
      return;
    }
    case hp::kLockAcquire:
      ManagerAcquire(h.epoch_or_lock, peer, h.ticket);
      return;
    case hp::kLockRelease:
      ManagerRelease(h.epoch_or_lock, peer, pages, h.flags & hp::kAllPages);
      return;
    case hp::kLockGrant: {
      auto it = waiters_.find(h.ticket);
      if (it == waiters_.end()) {
        Warning("rank %d granted ticket %d, which nobody waits for; ignored",
                peer, h.ticket);
        return;
      }
      Waiter& w = it->second;
      w.invalidate.insert(w.invalidate.end(), pages.begin(), pages.end());
      w.invalidate_all |= (h.flags & hp::kAllPages) != 0;
      if (last) w.granted = true;
      return;
    }
    default:
      Warning("coherence: rank %d sent unknown message type %d; dropped", peer,
              type);
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

void Coherence::PeerDied(int peer, const std::string& why) {
  absl::MutexLock lock(&mutex_);
  if (peer < 0 || peer >= nranks_ || dead_[peer]) return;
  dead_[peer] = true;
  death_[peer] = why;
  for (auto it = subscribers_.begin(); it != subscribers_.end();) {
    auto& subs = it->second;
    subs.erase(std::remove_if(subs.begin(), subs.end(),
                              [peer](const Subscriber& s) { return s.rank == peer; }),
               subs.end());
    if (subs.empty()) {
      subscribers_.erase(it++);
    } else {
      ++it;
    }
  }
  for (auto& [key, st] : locks_) {
    st.queue.erase(std::remove_if(st.queue.begin(), st.queue.end(),
                                  [peer](const auto& q) { return q.first == peer; }),
                   st.queue.end());
    if (st.holder == peer) {
      st.broken = absl::StrFormat(
          "the lock's holder, rank %d, died while holding it (%s); what it "
          "protected may be half-written",
          peer, why);
      Error("lock 0x%x: %s", key, st.broken);
      for (auto& [rank, ticket] : st.queue) {
        if (rank == self_) {
          DeliverGrant(ticket, {}, false, absl::UnavailableError(st.broken));
        }
      }
      st.queue.clear();
    }
  }
}

absl::StatusOr<uint64_t> Coherence::Atomic(uintptr_t addr, WorkOpcode op,
                                           uint64_t operand, uint64_t swap) {
  if (addr % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "atomic on %p: the address must be 8-byte aligned",
        reinterpret_cast<void*>(addr)));
  }
  int home;
  DistributedDataspace* ds;
  uint64_t page;
  {
    absl::MutexLock lock(&mutex_);
    ds = FindByAddr(addr);
    if (ds == nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "atomic on %p: not in a live global allocation; atomics work on "
          "memory from pw_alloc",
          reinterpret_cast<void*>(addr)));
    }
    if (ds->sequential()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "atomic on %p: the address is in sequentially consistent memory "
          "(pw_alloc_sc), where the CPU's own atomics (__atomic_*, "
          "std::atomic) are already global; use those, or keep pw_atomic_* "
          "words in pw_alloc memory",
          reinterpret_cast<void*>(addr)));
    }
    page = (addr - ds->global_addr()) / kPageSize;
    home = ds->OwnerOf(page);
  }
  if (home < 0) {
    // A first-touch page nobody has touched: touching it settles its home.
    (void)*reinterpret_cast<volatile uint64_t*>(addr);
    home = ds->OwnerOf(page);
  }
  if (ds->has_page_keys()) {
    // First touch on verbs: the operation needs the page's own key. A
    // peer's page: touching it fetches it through its home manager, whose
    // answer carries the key (a rank may know the owner without ever having
    // fetched the page: the directory). This rank's page, reached through
    // its own NIC: touched, it is resident, and registered here unless a
    // peer's fetch did that already (before write-protecting it).
    (void)*reinterpret_cast<volatile uint64_t*>(addr);
    if (home == self_ && atomics_through_transport_) {
      absl::StatusOr<uint32_t> key = ds->RegisterOwnedPage(page);
      if (!key.ok()) return key.status();
    }
  }
  if (home == self_ && !atomics_through_transport_) {
    auto* word = reinterpret_cast<uint64_t*>(addr);
    if (op == WorkOpcode::kFetchAdd) {
      return __atomic_fetch_add(word, operand, __ATOMIC_SEQ_CST);
    }
    uint64_t expected = operand;
    __atomic_compare_exchange_n(word, &expected, swap, false, __ATOMIC_SEQ_CST,
                                __ATOMIC_SEQ_CST);
    return expected;
  }
  uint32_t slot;
  {
    absl::MutexLock lock(&mutex_);
    auto available = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
      return !free_scratch_.empty();
    };
    mutex_.Await(absl::Condition(&available));
    slot = free_scratch_.back();
    free_scratch_.pop_back();
  }
  WorkRequest wr;
  wr.opcode = op;
  wr.local = &scratch_[slot];
  wr.lkey = scratch_region_.lkey;
  wr.length = 8;
  wr.remote_addr = addr;
  wr.rkey = ds->RemoteKey(home, page);
  wr.compare_add = operand;
  wr.swap = swap;
  SyncBatch batch;
  absl::Status s = fetcher_.PostSync(home, &wr, batch);
  if (s.ok()) s = batch.Wait();
  uint64_t old = scratch_[slot];
  {
    absl::MutexLock lock(&mutex_);
    free_scratch_.push_back(slot);
  }
  if (!s.ok()) return s;
  return old;
}

absl::StatusOr<uint64_t> Coherence::FetchAdd(uintptr_t addr, uint64_t value) {
  return Atomic(addr, WorkOpcode::kFetchAdd, value, 0);
}

absl::StatusOr<uint64_t> Coherence::CompareSwap(uintptr_t addr,
                                                uint64_t expected,
                                                uint64_t desired) {
  return Atomic(addr, WorkOpcode::kCompareSwap, expected, desired);
}

void Coherence::BeforeDrop(uint64_t offset, bool write_protected) {
  const char* problem = nullptr;
  {
    absl::MutexLock lock(&mutex_);
    DistributedDataspace* ds = FindByAddr(service_.base() + offset);
    if (ds == nullptr) return;  // not distributed memory
    const uint64_t page = (service_.base() + offset - ds->global_addr()) / kPageSize;
    if (!ds->sequential() && ds->HomedHere(page)) {
      problem = "it is this rank's home copy";
    } else if (twins_.count(offset)) {
      problem = "it has a twin: its writes were never sent home";
    } else if (flushing_.count(offset)) {
      problem = "its writes are still on their way home";
    } else if (!write_protected) {
      problem = "it is writable without a twin: writes made since it was "
                "last write-protected cannot be sent home";
    }
    if (problem == nullptr) return;
    ++stats_.lost_drops;
  }
  Error("coherence invariant violated: the copy at global offset 0x%x is "
        "dropped, but %s (a coherence bug: writes are lost)",
        offset, problem);
  if (abort_on_loss_) std::abort();
}

CoherenceStats Coherence::stats() const {
  absl::MutexLock lock(&mutex_);
  return stats_;
}

}  // namespace pagewire
