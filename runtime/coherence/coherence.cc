// coherence.cc - release consistency's state: the allocations it covers,
// twins made at first writes, home writes, its messages, the drop audit.
// The protocol's steps are in coherence_diffs.cc (releases and drops),
// coherence_barrier.cc, coherence_push.cc, coherence_locks.cc and
// coherence_atomics.cc.
#include "runtime/coherence/coherence.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_format.h"
#include "runtime/base/log.h"
#include "runtime/base/page.h"
#include "runtime/dsm/distributed_dataspace.h"
#include "runtime/dsm/home_manager.h"
#include "runtime/fault/completion_queue.h"

namespace pagewire {

namespace hp = home_protocol;

namespace {

// Slots of 8 bytes for atomics' old values.
constexpr uint32_t kScratchSlots = 4096;
// Pages of staging for diffs: a release of more pages goes in rounds.
constexpr uint32_t kStagingPages = 1024;

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
      announced_(nranks),
      announced_call_(nranks),
      dead_(nranks),
      death_(nranks),
      scratch_(new uint64_t[kScratchSlots]()),
      staging_(new char[uint64_t{kStagingPages} * kPageSize]) {
  for (uint32_t i = 0; i < kScratchSlots; ++i) free_scratch_.push_back(i);
  for (uint32_t i = 0; i < kStagingPages; ++i) free_staging_.push_back(i);
  absl::Status s = router_.Register(
      {hp::kEpochWrites, hp::kLockAcquire, hp::kLockGrant, hp::kLockRelease,
       hp::kLockDestroy, hp::kLockDestroyed, hp::kCollectiveEntered},
      [this](int peer, uint16_t type, absl::Span<const char> body) {
        if (type == hp::kCollectiveEntered) {
          OnCollectiveEntered(peer, body);
        } else {
          OnMessage(peer, type, body);
        }
      });
  if (!s.ok()) Error("coherence: %s", s.message());
}

Coherence::~Coherence() {
  router_.Unregister(
      {hp::kEpochWrites, hp::kLockAcquire, hp::kLockGrant, hp::kLockRelease,
       hp::kLockDestroy, hp::kLockDestroyed, hp::kCollectiveEntered});
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

void Coherence::OnMessage(int peer, uint16_t type, absl::Span<const char> body) {
  hp::PageListHeader h;
  PageList pages;
  const char* contents = nullptr;
  if (!ParsePageList(peer, type, body, h, pages, contents)) return;
  const bool last = h.flags & hp::kLastPart;
  absl::MutexLock lock(&mutex_);
  switch (type) {
    case hp::kEpochWrites:
      OnEpochWrites(peer, h.epoch_or_lock, h.ticket, pages, contents, last);
      return;
    case hp::kLockAcquire:
      ManagerAcquire(h.epoch_or_lock, peer, h.ticket);
      return;
    case hp::kLockRelease:
      ManagerRelease(h.epoch_or_lock, peer, pages, h.flags & hp::kAllPages);
      return;
    case hp::kLockDestroy:
      ManagerDestroy(h.epoch_or_lock, peer, h.ticket);
      return;
    case hp::kLockDestroyed:
      DeliverDestroyed(h.ticket, h.epoch_or_lock,
                       static_cast<int>(h.flags >> hp::kLockHeldByShift) - 1);
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

bool Coherence::ParsePageList(int peer, uint16_t type,
                              absl::Span<const char> body,
                              hp::PageListHeader& h, PageList& pages,
                              const char*& contents) const {
  if (body.size() < sizeof(h) || peer < 0 || peer >= nranks_) {
    Warning("coherence: rank %d sent a malformed message of type %d; dropped",
            peer, type);
    return false;
  }
  std::memcpy(&h, body.data(), sizeof(h));
  const uint64_t refs_end = sizeof(h) + uint64_t{h.count} * sizeof(hp::PageRef);
  if (body.size() < refs_end || h.count > hp::kMaxPageRefs) {
    Warning("coherence: rank %d sent %d bytes for %d pages (type %d); dropped",
            peer, body.size(), h.count, type);
    return false;
  }
  pages.resize(h.count);
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
      return false;
    }
    pushed += (r.flags & hp::kRefPushed) != 0;
  }
  if (body.size() != refs_end + pushed * kPageSize) {
    Warning("coherence: rank %d sent %d bytes for %d pages, %d of them pushed "
            "(type %d); dropped",
            peer, body.size(), h.count, pushed, type);
    return false;
  }
  contents = body.data() + refs_end;
  return true;
}

void Coherence::OnEpochWrites(int peer, uint64_t epoch, uint64_t generation,
                              const PageList& pages, const char* contents,
                              bool last) {
  // A list from before a collective this rank has entered belongs to a
  // barrier that failed; its sender sends it again.
  if (generation < generation_) return;
  EpochState& st = epochs_[epoch];
  st.writes_from.resize(nranks_);
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
