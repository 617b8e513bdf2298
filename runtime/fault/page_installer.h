// page_installer.h - every change the fault service makes to the pages of
// its range, in one place: copying a page in (write-protected or not),
// zero pages, write protection on and off, waking the threads blocked on a
// page, the SIGBUS page of a fault that cannot be resolved, and unmapping.
// It also keeps the range's residence bits (which pages are installed).
//
// The fault loop, a transport's thread installing a fetched page directly,
// and the commands run for the loop (drops, pushed pages, snapshots) all
// change pages through here; which page may be changed when is the fault
// service's business (its pending table and install lock), not this
// class's.
//
// Threads: any for Copy, Protect, AllowWrites, Wake and the residence bits
// (each call is a few ioctls; the bits are atomic); MapSigbus and
// RestoreBacking from the loop only (the set of SIGBUS pages is the
// loop's).
#ifndef PAGEWIRE_RUNTIME_FAULT_PAGE_INSTALLER_H_
#define PAGEWIRE_RUNTIME_FAULT_PAGE_INSTALLER_H_

#include <cstdint>
#include <functional>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "runtime/base/page.h"
#include "runtime/fault/userfaultfd.h"

namespace pagewire {

class PageInstaller {
 public:
  // Pages [base, base + size) registered with `uffd`, which must outlive
  // the installer; `unbacked_fd` an empty memfd (its pages raise SIGBUS);
  // `resident` one bit per page, zeroed, owned by the caller.
  PageInstaller(const Userfaultfd& uffd, uintptr_t base, uint64_t size,
                int unbacked_fd, uint64_t* resident);

  enum class Copied : uint8_t {
    kInstalled,  // the page is in, its threads woken
    kPresent,    // a page was there already (installed behind our back);
                 // its threads were woken, the copy was not made
    kFailed,     // the copy failed; errno says why, nothing changed
  };
  // Copies kPageSize bytes from `src` to the missing `page` (UFFDIO_COPY,
  // retried while the address space changes), write-protected if asked,
  // which wakes the threads blocked on it; marks it resident.
  Copied Copy(uintptr_t page, const void* src, bool write_protect);
  // Maps the shared zero page at the missing `page` (UFFDIO_ZEROPAGE: no
  // memory until written), like Copy otherwise.
  Copied Zero(uintptr_t page);
  // Installs zero-filled, writable pages over [offset, offset + size)
  // where none is installed yet and `which` (if given) holds.
  absl::Status Populate(uint64_t offset, uint64_t size,
                        const std::function<bool(uint64_t offset)>* which);
  // Write-protects (or unprotects) the installed pages of the range.
  absl::Status Protect(uint64_t offset, uint64_t size, bool protect);
  // Lifts the write protection of the installed `page` and wakes its
  // writers; false (errno) if that failed.
  bool AllowWrites(uintptr_t page);
  // Wakes the threads blocked on `page` (a late event, a page installed
  // meanwhile, a fault the manager answered without a change).
  void Wake(uintptr_t page);
  // Unmaps `pages` (installed ones; page-aligned, any order), adjacent ones
  // as one run: one madvise per run, one TLB shootdown each.
  void Unmap(absl::Span<const uintptr_t> pages);

  // Maps the SIGBUS page over `page` (any access faults with BUS_ADRERR),
  // wakes its threads to meet it; false if the mapping failed (errno).
  bool MapSigbus(uintptr_t page);
  // Gives the SIGBUS pages in [start, end) ordinary registered memory back
  // (their backing changed). Loop only.
  void RestoreBacking(uintptr_t start, uintptr_t end);

  bool Resident(uint64_t index) const {
    return __atomic_load_n(&resident_[index >> 6], __ATOMIC_ACQUIRE) >>
               (index & 63) & 1;
  }
  // The loop and direct installs change bits of different pages in one
  // word: atomic read-modify-writes.
  void SetResident(uint64_t index, bool on) {
    const uint64_t bit = uint64_t{1} << (index & 63);
    if (on) {
      __atomic_fetch_or(&resident_[index >> 6], bit, __ATOMIC_RELEASE);
    } else {
      __atomic_fetch_and(&resident_[index >> 6], ~bit, __ATOMIC_RELEASE);
    }
  }
  uint64_t Index(uintptr_t page) const { return (page - base_) / kPageSize; }

 private:
  // What an install ioctl's return code `rc` (errno set) means for `page`.
  Copied Outcome(uintptr_t page, int rc);

  const Userfaultfd& uffd_;
  const uintptr_t base_;
  const uint64_t size_;
  const int unbacked_fd_;
  uint64_t* const resident_;
  absl::flat_hash_set<uintptr_t> sigbus_pages_;  // loop only
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_FAULT_PAGE_INSTALLER_H_
