// fault_commands.cc - what other threads ask the fault loop to do: drop,
// protect, snapshot, recall, populate and prefetch pages, and change a
// range's backing. Each runs on the loop (or on the asking thread while the
// loop sleeps), so it never races the loop's own installs.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "runtime/base/log.h"
#include "runtime/fault/fault_service.h"

namespace pagewire {

namespace {
constexpr uint32_t kNoSlot = FaultTable::kNoSlot;
}  // namespace

void FaultService::BackingChanged(uint64_t offset, uint64_t size) {
  Submit(ChangeBackingCmd{offset, size, nullptr}, /*wait=*/true);
}

void FaultService::Invalidate(uint64_t offset, uint64_t size,
                              PagePredicate keep) {
  Submit(ChangeBackingCmd{offset, size, &keep}, /*wait=*/true);
}

absl::Status FaultService::WriteProtect(uint64_t offset, uint64_t size,
                                        bool protect) {
  absl::Status result;
  if (!Submit(WriteProtectCmd{offset, size, protect, &result}, true)) {
    return absl::UnavailableError("the fault service stopped");
  }
  return result;
}

absl::Status FaultService::SnapshotAndProtect(
    const std::vector<uint64_t>& offsets, const std::vector<char*>& buffers,
    std::vector<bool>& resident) {
  absl::Status result;
  resident.assign(offsets.size(), false);
  if (!Submit(SnapshotCmd{&offsets, &buffers, &resident, &result}, true)) {
    return absl::UnavailableError("the fault service stopped");
  }
  return result;
}

bool FaultService::RecallPage(uint64_t offset, char* buffer, bool drop) {
  bool was_resident = false;
  Submit(RecallCmd{offset, buffer, drop, &was_resident}, true);
  return was_resident;
}

void FaultService::InvalidatePagesAsync(std::vector<uint64_t> offsets,
                                        Done done, PagePredicate keep,
                                        std::vector<const char*> contents,
                                        PagePredicate may_replace) {
  Done on_stop = done;
  if (!Submit(DropPagesCmd{std::move(offsets), std::move(done), std::move(keep),
                           std::move(contents), std::move(may_replace)},
              /*wait=*/false)) {
    on_stop();
  }
}

void FaultService::Prefetch(uint64_t offset, PrefetchDone done) {
  PrefetchDone on_stop = done;
  if (!Submit(PrefetchCmd{offset, std::move(done)}, /*wait=*/false)) {
    on_stop(absl::UnavailableError("the fault service stopped"));
  }
}

absl::Status FaultService::Populate(uint64_t offset, uint64_t size,
                                    PagePredicate which) {
  absl::Status result;
  if (!Submit(PopulateCmd{offset, size, which ? &which : nullptr, &result},
              true)) {
    return absl::UnavailableError("the fault service stopped");
  }
  return result;
}

bool FaultService::TryRunInline(const Command& c) {
  // Page-table work on installed pages only, no requests.
  const bool inline_ok = std::holds_alternative<WriteProtectCmd>(c.op) ||
                         std::holds_alternative<SnapshotCmd>(c.op) ||
                         std::holds_alternative<RecallCmd>(c.op) ||
                         std::holds_alternative<DropPagesCmd>(c.op);
  if (!inline_ok) return false;
  if (!loop_mutex_.TryLock()) return false;  // the loop is awake
  bool run;
  {
    // Only with nothing queued before it, so one thread's commands keep
    // their order.
    absl::MutexLock lock(&commands_mutex_);
    run = !stop_requested_ && commands_.empty();
  }
  if (run) RunCommand(c);
  loop_mutex_.Unlock();
  return run;
}

bool FaultService::Submit(CommandOp op, bool wait) {
  Command c{std::move(op)};
  if (std::this_thread::get_id() == loop_id_) {
    RunCommand(c);
    return true;
  }
  if (TryRunInline(c)) return true;
  absl::Notification done;
  if (wait) c.done = &done;
  {
    absl::MutexLock lock(&commands_mutex_);
    if (stop_requested_) return false;
    commands_.push_back(std::move(c));
  }
  uint64_t one = 1;
  ssize_t n = ::write(control_fd_, &one, sizeof(one));
  (void)n;
  // Not a fault path: the loop never blocks, so it runs the command soon.
  if (wait) done.WaitForNotification();
  return true;
}

bool FaultService::RunCommands() {
  std::vector<Command> commands;
  bool stop;
  {
    absl::MutexLock lock(&commands_mutex_);
    commands.swap(commands_);
    stop = stop_requested_;
  }
  for (Command& c : commands) {
    RunCommand(c);
    if (c.done != nullptr) c.done->Notify();
  }
  return stop;
}

void FaultService::RunCommand(const Command& c) {
  std::visit([this](const auto& op) { Run(op); }, c.op);
}

void FaultService::Run(const PopulateCmd& c) {
  *c.result = installer_.Populate(c.offset, c.size, c.which);
}

void FaultService::Run(const PrefetchCmd& c) { StartPrefetch(c.offset, c.done); }

void FaultService::Run(const WriteProtectCmd& c) {
  *c.result = installer_.Protect(c.offset, c.size, c.protect);
}

void FaultService::Run(const SnapshotCmd& c) {
  for (size_t i = 0; i < c.pages->size(); ++i) {
    const uint64_t off = PageDown((*c.pages)[i]);
    if (off >= size_ || !Resident(off / kPageSize)) continue;
    if (absl::Status s = installer_.Protect(off, kPageSize, true); !s.ok()) {
      *c.result = s;
      return;
    }
    // The loop thread reads only installed pages: never a fault here.
    std::memcpy((*c.buffers)[i], reinterpret_cast<const void*>(base_ + off),
                kPageSize);
    (*c.resident)[i] = true;
  }
}

void FaultService::Run(const RecallCmd& c) {
  const uint64_t off = PageDown(c.offset);
  if (off >= size_) return;
  const uintptr_t page = base_ + off;
  // Nothing is installed directly meanwhile, and what was is resident.
  absl::MutexLock lock(&install_mutex_);
  *c.was_resident = Resident(off / kPageSize);
  if (*c.was_resident) {
    if (absl::Status s = installer_.Protect(off, kPageSize, true); !s.ok()) {
      Error("recalling the page at 0x%x: %s", page, s.message());
    }
    if (c.buffer != nullptr) {
      std::memcpy(c.buffer, reinterpret_cast<const void*>(page), kPageSize);
    }
  }
  if (c.drop) {
    DropPages(absl::MakeConstSpan(&page, 1));  // also marks a request stale
  } else if (const uint32_t slot = table_.Find(page);
             slot != kNoSlot && DisarmLocked(slot)) {
    table_[slot].stale = true;  // asked again when it completes
  }
}

void FaultService::Run(const DropPagesCmd& c) {
  {
    absl::MutexLock lock(&install_mutex_);
    std::vector<uintptr_t> drop;
    std::vector<std::pair<uintptr_t, const char*>> replace;
    for (size_t i = 0; i < c.pages.size(); ++i) {
      const uint64_t off = c.pages[i];
      if (off >= size_ || (c.keep && c.keep(PageDown(off)))) continue;
      const uintptr_t page = base_ + PageDown(off);
      if (i < c.contents.size() && c.contents[i] != nullptr &&
          (!c.may_replace || c.may_replace(PageDown(off)))) {
        // A copy that already holds these bytes stays as it is (a page
        // its home reports every epoch but wrote in every other one):
        // write-protected and not twinned, nothing can change it now.
        const uint32_t slot = table_.Find(page);
        if (Resident(PageIndex(page)) &&
            (slot == kNoSlot ||  // or installed directly
             table_[slot].direct.load(std::memory_order_acquire) ==
                 kDirectInstalled) &&
            std::memcmp(reinterpret_cast<const void*>(page), c.contents[i],
                        kPageSize) == 0) {
          Bump(replaced_);
          continue;
        }
        replace.emplace_back(page, c.contents[i]);
      }
      drop.push_back(page);
    }
    DropPages(drop);
    for (const auto& [page, contents] : replace) ReplaceDropped(page, contents);
  }
  if (c.done) c.done();
}

void FaultService::ReplaceDropped(uintptr_t page, const char* contents) {
  // A copy: installed write-protected, so its first write is tracked.
  PageInstaller::Copied copied = installer_.Copy(page, contents, true);
  if (copied == PageInstaller::Copied::kPresent) {
    // Mapped though not marked resident (never expected): drop it for real
    // and try once more.
    installer_.Unmap(absl::MakeConstSpan(&page, 1));
    copied = installer_.Copy(page, contents, true);
  }
  if (copied != PageInstaller::Copied::kInstalled) {
    // Left absent: the next access faults and fetches it, as if the page
    // had only been dropped.
    installer_.SetResident(PageIndex(page), false);
    Warning("installing a pushed copy at 0x%x: %s; it is fetched on demand",
            page, copied == PageInstaller::Copied::kPresent
                      ? "a page is mapped there"
                      : strerror(errno));
    return;
  }
  Bump(replaced_);
}

absl::Status FaultService::SetDropAudit(DropAudit* audit) {
  if (audit != nullptr && pagemap_fd_ < 0) {
    pagemap_fd_ = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pagemap_fd_ < 0) {
      return absl::UnavailableError(absl::StrFormat(
          "the drop audit reads /proc/self/pagemap, which cannot be opened: "
          "%s; run without PAGEWIRE_CHECK",
          strerror(errno)));
    }
  }
  drop_audit_.store(audit, std::memory_order_release);
  return absl::OkStatus();
}

void FaultService::AuditDrop(uintptr_t page) {
  DropAudit* audit = drop_audit_.load(std::memory_order_acquire);
  if (audit == nullptr) return;
  // pagemap: bit 63 present, bit 57 userfaultfd write-protected.
  uint64_t entry = 0;
  const off_t at = static_cast<off_t>(page / kPageSize * sizeof(entry));
  if (::pread(pagemap_fd_, &entry, sizeof(entry), at) != sizeof(entry)) {
    entry = 0;
  }
  const bool present = entry >> 63 & 1;
  audit->BeforeDrop(page - base_, !present || (entry >> 57 & 1) != 0);
}

void FaultService::DropPages(absl::Span<const uintptr_t> pages) {
  std::vector<uintptr_t> unmap;
  for (uintptr_t page : pages) {
    const uint64_t i = PageIndex(page);
    if (Resident(i)) {
      AuditDrop(page);
      installer_.SetResident(i, false);
      unmap.push_back(page);
      Bump(evicted_);
    }
    if (const uint32_t slot = table_.Find(page);
        slot != kNoSlot && DisarmLocked(slot)) {
      // Installed directly already: dropped above, nothing to ask again.
      // Otherwise its answer, when it comes, is discarded and asked again.
      table_[slot].stale = true;
    }
  }
  installer_.Unmap(unmap);
}

void FaultService::Run(const ChangeBackingCmd& c) {
  if (c.offset >= size_) return;
  const uint64_t size = std::min(c.size, size_ - c.offset);
  const uintptr_t start = base_ + PageDown(c.offset);
  const uintptr_t end = base_ + PageUp(c.offset + size);
  const PagePredicate* keep = c.keep;

  // Pages that were answered SIGBUS get ordinary registered memory back.
  installer_.RestoreBacking(start, end);

  // Drop cached copies so the next access asks the new backing. No page is
  // installed directly meanwhile (install_mutex_): each is either dropped
  // here or disarmed below.
  absl::MutexLock lock(&install_mutex_);
  std::vector<uintptr_t> unmap;
  for (uintptr_t page = start; page < end; page += kPageSize) {
    const uint64_t i = PageIndex(page);
    if (!Resident(i) || (keep != nullptr && (*keep)(page - base_))) continue;
    if (keep != nullptr) AuditDrop(page);  // an invalidation, not a new backing
    installer_.SetResident(i, false);
    unmap.push_back(page);
  }
  installer_.Unmap(unmap);
  if (!unmap.empty()) Bump(evicted_, unmap.size());

  // Requests still out to the old backing are asked again when they return.
  for (uint32_t slot = 0; slot < kMaxPendingPages; ++slot) {
    FaultRecord& r = table_[slot];
    if (r.in_use && r.page >= start && r.page < end &&
        (keep == nullptr || !(*keep)(r.page - base_)) && DisarmLocked(slot)) {
      r.stale = true;
    }
  }
}

}  // namespace pagewire
