// coherence_locks.cc - global locks: the acquirer and releaser sides, and
// the lock's home (FIFO queue, log of pages written under the lock).
#include <algorithm>
#include <thread>

#include "absl/strings/str_format.h"
#include "runtime/base/log.h"
#include "runtime/base/page.h"
#include "runtime/coherence/coherence.h"
#include "runtime/dsm/distributed_dataspace.h"

namespace pagewire {

namespace hp = home_protocol;

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
    home = LockHomeLocked(lock_addr);
    ticket = ++next_ticket_;
    waiters_[ticket];
    ++stats_.lock_acquires;
    if (home == self_) ManagerAcquire(key, self_, ticket);
  }
  absl::StatusOr<Waiter> answer =
      AskLockHome(home, hp::kLockAcquire, key, ticket, "pw_lock_acquire");
  if (!answer.ok() || !answer->error.ok()) {
    absl::MutexLock lock(&mutex_);
    held_.erase(key);
    return answer.ok() ? answer->error : answer.status();
  }
  Waiter& w = *answer;
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
    home = LockHomeLocked(lock_addr);
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

absl::Status Coherence::LockDestroy(uintptr_t lock_addr) {
  if (absl::Status s = LockCheck(lock_addr); !s.ok()) return s;
  const uint64_t key = lock_addr - service_.base();
  int home;
  uint64_t ticket;
  {
    absl::MutexLock lock(&mutex_);
    if (held_.count(key) != 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "pw_lock_destroy: lock %p is held by a thread of this rank; "
          "release it before destroying it",
          reinterpret_cast<void*>(lock_addr)));
    }
    home = LockHomeLocked(lock_addr);
    ticket = ++next_ticket_;
    waiters_[ticket];
    if (home == self_) ManagerDestroy(key, self_, ticket);
  }
  absl::StatusOr<Waiter> answer =
      AskLockHome(home, hp::kLockDestroy, key, ticket, "pw_lock_destroy");
  return answer.ok() ? answer->error : answer.status();
}

int Coherence::LockHomeLocked(uintptr_t lock_addr) const {
  DistributedDataspace* ds = FindByAddr(lock_addr);
  const uint64_t page = (lock_addr - ds->global_addr()) / kPageSize;
  const int home = ds->OwnerOf(page);
  return home >= 0 ? home : ds->placement().DirectoryOf(page);
}

absl::StatusOr<Coherence::Waiter> Coherence::AskLockHome(
    int home, uint16_t type, uint64_t key, uint64_t ticket, const char* call) {
  if (home != self_) {
    hp::PageListHeader h{key, ticket, 0, hp::kLastPart};
    absl::Status s = transport_.SendMessage(
        home, type,
        absl::Span<const char>(reinterpret_cast<const char*>(&h), sizeof(h)));
    if (!s.ok()) {
      absl::MutexLock lock(&mutex_);
      waiters_.erase(ticket);
      return s;
    }
  }
  absl::MutexLock lock(&mutex_);
  Waiter& waiter = waiters_[ticket];
  auto answered = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    return waiter.granted || (home != self_ && dead_[home]);
  };
  mutex_.Await(absl::Condition(&answered));
  Waiter w = std::move(waiter);
  waiters_.erase(ticket);
  if (!w.granted) {
    return absl::UnavailableError(absl::StrFormat(
        "%s: the lock's home, rank %d, is dead (%s)", call, home,
        death_[home]));
  }
  return w;
}

void Coherence::ManagerDestroy(uint64_t lock, int rank, uint64_t ticket) {
  int held_by = -1;
  if (auto it = locks_.find(lock); it != locks_.end()) {
    held_by = it->second.holder;
    if (held_by < 0 && !it->second.queue.empty()) {
      held_by = it->second.queue.front().first;
    }
  }
  if (rank == self_) {
    DeliverDestroyed(ticket, lock, held_by);
    return;
  }
  hp::PageListHeader h{
      lock, ticket, 0,
      hp::kLastPart | static_cast<uint32_t>(held_by + 1) << hp::kLockHeldByShift};
  absl::Status s = transport_.SendMessage(
      rank, hp::kLockDestroyed,
      absl::Span<const char>(reinterpret_cast<const char*>(&h), sizeof(h)));
  if (!s.ok()) {
    Warning("lock 0x%x: answering rank %d's pw_lock_destroy failed: %s", lock,
            rank, s.message());
  }
}

void Coherence::DeliverDestroyed(uint64_t ticket, uint64_t lock, int held_by) {
  absl::Status error;
  if (held_by >= 0) {
    error = absl::FailedPreconditionError(absl::StrFormat(
        "pw_lock_destroy: lock %p is held by rank %d (or it waits for it); "
        "destroy a lock only once nobody holds or waits for it",
        reinterpret_cast<void*>(service_.base() + lock), held_by));
  }
  auto it = waiters_.find(ticket);
  if (it == waiters_.end()) {
    Warning("an answer for pw_lock_destroy ticket %d matches no waiting "
            "call; ignored",
            ticket);
    return;
  }
  DeliverGrant(ticket, {}, false, std::move(error));
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

}  // namespace pagewire
