// coherence_atomics.cc - 64-bit atomics at the word's home.
#include "absl/strings/str_format.h"
#include "runtime/base/page.h"
#include "runtime/coherence/coherence.h"
#include "runtime/dsm/distributed_dataspace.h"

namespace pagewire {

absl::StatusOr<Coherence::AtomicTarget> Coherence::FindAtomicTarget(
    uintptr_t addr) {
  if (addr % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "atomic on %p: the address must be 8-byte aligned",
        reinterpret_cast<void*>(addr)));
  }
  AtomicTarget t;
  {
    absl::MutexLock lock(&mutex_);
    t.ds = FindByAddr(addr);
    if (t.ds == nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "atomic on %p: not in a live global allocation; atomics work on "
          "memory from pw_alloc",
          reinterpret_cast<void*>(addr)));
    }
    if (t.ds->sequential()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "atomic on %p: the address is in sequentially consistent memory "
          "(pw_alloc_sc), where the CPU's own atomics (__atomic_*, "
          "std::atomic) are already global; use those, or keep pw_atomic_* "
          "words in pw_alloc memory",
          reinterpret_cast<void*>(addr)));
    }
    t.page = (addr - t.ds->global_addr()) / kPageSize;
    t.home = t.ds->OwnerOf(t.page);
  }
  if (t.home < 0) {
    // A first-touch page nobody has touched: touching it settles its home.
    (void)*reinterpret_cast<volatile uint64_t*>(addr);
    t.home = t.ds->OwnerOf(t.page);
  }
  if (t.ds->has_page_keys()) {
    // First touch on verbs: the operation needs the page's own key. A
    // peer's page: touching it fetches it through its home manager, whose
    // answer carries the key (a rank may know the owner without ever having
    // fetched the page: the directory). This rank's page, reached through
    // its own NIC: touched, it is resident, and registered here unless a
    // peer's fetch did that already (before write-protecting it).
    (void)*reinterpret_cast<volatile uint64_t*>(addr);
    if (t.home == self_ && atomics_through_transport_) {
      absl::StatusOr<uint32_t> key = t.ds->RegisterOwnedPage(t.page);
      if (!key.ok()) return key.status();
    }
  }
  return t;
}

absl::StatusOr<uint64_t> Coherence::Atomic(uintptr_t addr, WorkOpcode op,
                                           uint64_t operand, uint64_t swap) {
  absl::StatusOr<AtomicTarget> t = FindAtomicTarget(addr);
  if (!t.ok()) return t.status();
  if (t->home == self_ && !atomics_through_transport_) {
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
  wr.rkey = t->ds->RemoteKey(t->home, t->page);
  wr.compare_add = operand;
  wr.swap = swap;
  SyncBatch batch;
  absl::Status s = fetcher_.PostSync(t->home, &wr, batch);
  if (s.ok()) s = batch.Wait();
  const uint64_t old = scratch_[slot];
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

}  // namespace pagewire
