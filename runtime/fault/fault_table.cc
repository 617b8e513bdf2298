// fault_table.cc - the records' free list and page index.
#include "runtime/fault/fault_table.h"

namespace pagewire {

FaultTable::FaultTable(uint32_t capacity)
    : capacity_(capacity),
      records_(new FaultRecord[capacity]),
      next_free_(capacity) {
  for (uint32_t i = 0; i < capacity; ++i) {
    next_free_[i] = i + 1 < capacity ? i + 1 : kNoSlot;
  }
  // Sized now: the loop never allocates while faults are flowing.
  index_.reserve(capacity);
}

uint32_t FaultTable::Start(uintptr_t page, Access access, bool upgrade,
                           uint64_t now_ns) {
  if (free_head_ == kNoSlot) return kNoSlot;
  const uint32_t slot = free_head_;
  free_head_ = next_free_[slot];
  FaultRecord& r = records_[slot];
  r.page = page;
  r.access = access;
  r.upgrade = upgrade;
  r.in_use = true;
  r.stale = false;
  r.faulted = false;
  r.joined = false;
  r.started_ns = now_ns;
  index_.emplace(page, slot);
  ++outstanding_;
  return slot;
}

void FaultTable::End(uint32_t slot) {
  FaultRecord& r = records_[slot];
  index_.erase(r.page);
  r.in_use = false;
  next_free_[slot] = free_head_;
  free_head_ = slot;
  --outstanding_;
}

}  // namespace pagewire
