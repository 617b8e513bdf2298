// fault_table.cc - the records' free list and page index.
#include "runtime/fault/fault_table.h"

namespace pagewire {

FaultTable::FaultTable(uint32_t capacity)
    : capacity_(capacity),
      records_(new FaultRecord[capacity]),
      next_free_(capacity),
      plans_(new FaultPlan[capacity]) {
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

void FaultTable::SetPlan(uint32_t slot, const FaultPlan& plan) {
  absl::MutexLock lock(&plan_mutex_);
  if (slot < capacity_) plans_[slot] = plan;
}

std::optional<FaultPlan> FaultTable::TakePlan(uint32_t slot,
                                              FaultPlan::Step step,
                                              uint16_t reply, int peer,
                                              uint64_t page) {
  absl::MutexLock lock(&plan_mutex_);
  if (slot >= capacity_) return std::nullopt;
  FaultPlan& p = plans_[slot];
  if (p.step != step) return std::nullopt;
  if (step == FaultPlan::Step::kAwaitingReply &&
      (p.reply != reply || p.peer != peer || p.page != page)) {
    return std::nullopt;
  }
  FaultPlan taken = p;
  p.step = FaultPlan::Step::kNone;
  return taken;
}

uint32_t FaultTable::PlansWaitingOn(int peer) {
  uint32_t n = 0;
  absl::MutexLock lock(&plan_mutex_);
  for (uint32_t slot = 0; slot < capacity_; ++slot) {
    n += plans_[slot].step != FaultPlan::Step::kNone && plans_[slot].peer == peer;
  }
  return n;
}

std::vector<FaultPlan> FaultTable::TakePlansAwaiting(
    int peer, absl::Span<const uint16_t> replies) {
  std::vector<FaultPlan> taken;
  absl::MutexLock lock(&plan_mutex_);
  for (uint32_t slot = 0; slot < capacity_; ++slot) {
    FaultPlan& p = plans_[slot];
    if (p.step != FaultPlan::Step::kAwaitingReply || p.peer != peer) continue;
    for (uint16_t reply : replies) {
      if (p.reply != reply) continue;
      taken.push_back(p);
      p.step = FaultPlan::Step::kNone;
      break;
    }
  }
  return taken;
}

}  // namespace pagewire
