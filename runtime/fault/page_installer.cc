// page_installer.cc - the ioctls and mappings behind every page change.
#include "runtime/fault/page_installer.h"

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "runtime/base/log.h"

namespace pagewire {

PageInstaller::PageInstaller(const Userfaultfd& uffd, uintptr_t base,
                             uint64_t size, int unbacked_fd,
                             uint64_t* resident)
    : uffd_(uffd),
      base_(base),
      size_(size),
      unbacked_fd_(unbacked_fd),
      resident_(resident) {}

PageInstaller::Copied PageInstaller::Copy(uintptr_t page, const void* src,
                                          bool write_protect) {
  uffdio_copy copy{};
  copy.dst = page;
  copy.src = reinterpret_cast<uintptr_t>(src);
  copy.len = kPageSize;
  copy.mode = write_protect ? UFFDIO_COPY_MODE_WP : 0;
  int rc;
  do {
    // EAGAIN: the address space is changing (mremap, fork): retry.
    rc = ::ioctl(uffd_.fd(), UFFDIO_COPY, &copy);
  } while (rc != 0 && errno == EAGAIN);
  return Outcome(page, rc);
}

PageInstaller::Copied PageInstaller::Zero(uintptr_t page) {
  uffdio_zeropage zero{};
  zero.range.start = page;
  zero.range.len = kPageSize;
  int rc;
  do {
    rc = ::ioctl(uffd_.fd(), UFFDIO_ZEROPAGE, &zero);
  } while (rc != 0 && errno == EAGAIN);
  return Outcome(page, rc);
}

PageInstaller::Copied PageInstaller::Outcome(uintptr_t page, int rc) {
  if (rc == 0) {
    SetResident(Index(page), true);
    return Copied::kInstalled;
  }
  if (errno != EEXIST) return Copied::kFailed;
  // Installed behind our back: its threads only need waking.
  Wake(page);
  SetResident(Index(page), true);
  return Copied::kPresent;
}

absl::Status PageInstaller::Populate(
    uint64_t offset, uint64_t size,
    const std::function<bool(uint64_t offset)>* which) {
  if (!PageAligned(offset) || !PageAligned(size) || offset > size_ ||
      size > size_ - offset) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "populate [0x%x, 0x%x): not page-aligned or outside the global range",
        offset, offset + size));
  }
  // Zeros to copy from: the source of an untouched private mapping reads as
  // the shared zero page, so this costs no memory.
  constexpr uint64_t kChunk = uint64_t{2} << 20;
  static const char* const zeros = static_cast<const char*>(
      ::mmap(nullptr, kChunk, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  auto wanted = [&](uint64_t off) {
    return !Resident(Index(base_ + off)) && (which == nullptr || (*which)(off));
  };
  uint64_t off = offset;
  while (off < offset + size) {
    if (!wanted(off)) {
      off += kPageSize;
      continue;
    }
    // The longest run of wanted pages, at most one chunk.
    uint64_t run = kPageSize;
    while (off + run < offset + size && run < kChunk && wanted(off + run)) {
      run += kPageSize;
    }
    uffdio_copy copy{};
    copy.dst = base_ + off;
    copy.src = reinterpret_cast<uintptr_t>(zeros);
    copy.len = run;
    const int rc = ::ioctl(uffd_.fd(), UFFDIO_COPY, &copy);
    const uint64_t done = copy.copy > 0 ? static_cast<uint64_t>(copy.copy) : 0;
    for (uint64_t p = 0; p < done; p += kPageSize) {
      SetResident(Index(base_ + off + p), true);
    }
    if (rc != 0 && errno == EEXIST) {
      // A page in the run was installed meanwhile: skip it.
      SetResident(Index(base_ + off + done), true);
      off += done + kPageSize;
      continue;
    }
    if (rc != 0 && errno != EAGAIN) {
      return absl::InternalError(absl::StrFormat(
          "populating [0x%x, 0x%x) failed: %s", base_ + off, base_ + off + run,
          strerror(errno)));
    }
    off += done;
  }
  return absl::OkStatus();
}

absl::Status PageInstaller::Protect(uint64_t offset, uint64_t size,
                                    bool protect) {
  if (!PageAligned(offset) || !PageAligned(size) || offset > size_ ||
      size > size_ - offset) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "write-protect [0x%x, 0x%x): not page-aligned or outside the global "
        "range",
        offset, offset + size));
  }
  // Runs of installed pages: UFFDIO_WRITEPROTECT wants populated ranges.
  uint64_t off = offset;
  while (off < offset + size) {
    if (!Resident(Index(base_ + off))) {
      off += kPageSize;
      continue;
    }
    uint64_t run = kPageSize;
    while (off + run < offset + size && Resident(Index(base_ + off + run))) {
      run += kPageSize;
    }
    uffdio_writeprotect wp{};
    wp.range.start = base_ + off;
    wp.range.len = run;
    wp.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
    if (::ioctl(uffd_.fd(), UFFDIO_WRITEPROTECT, &wp) != 0) {
      return absl::InternalError(absl::StrFormat(
          "write-protecting [0x%x, 0x%x) failed: %s", base_ + off,
          base_ + off + run, strerror(errno)));
    }
    off += run;
  }
  return absl::OkStatus();
}

bool PageInstaller::AllowWrites(uintptr_t page) {
  uffdio_writeprotect wp{};
  wp.range.start = page;
  wp.range.len = kPageSize;
  wp.mode = 0;  // clear protection and wake the writers
  return ::ioctl(uffd_.fd(), UFFDIO_WRITEPROTECT, &wp) == 0;
}

void PageInstaller::Wake(uintptr_t page) {
  uffdio_range range{page, kPageSize};
  if (::ioctl(uffd_.fd(), UFFDIO_WAKE, &range) != 0) {
    Error("fault at 0x%x: wake failed: %s", page, strerror(errno));
  }
}

void PageInstaller::Unmap(absl::Span<const uintptr_t> pages) {
  std::vector<iovec> runs;
  for (uintptr_t page : pages) {
    if (!runs.empty() && static_cast<char*>(runs.back().iov_base) +
                                 runs.back().iov_len ==
                             reinterpret_cast<char*>(page)) {
      runs.back().iov_len += kPageSize;
    } else {
      runs.push_back(iovec{reinterpret_cast<void*>(page), kPageSize});
    }
  }
  // One madvise per run. Not process_madvise, which takes a whole vector
  // in one call (one TLB shootdown): the histogram test then lost a fault
  // now and then on Linux 6.18 (3 hangs in ~140 runs, none in 140 with
  // madvise), threads left asleep in handle_userfault with no event read.
  for (const iovec& run : runs) ::madvise(run.iov_base, run.iov_len, MADV_DONTNEED);
}

bool PageInstaller::MapSigbus(uintptr_t page) {
  // A shared mapping of an empty file: any access raises SIGBUS (BUS_ADRERR)
  // at this address, in user and kernel mode alike. It stays until the
  // backing of the page changes.
  void* at = ::mmap(reinterpret_cast<void*>(page), kPageSize,
                    PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                    unbacked_fd_, 0);
  const bool mapped = at != MAP_FAILED;
  if (mapped) {
    sigbus_pages_.insert(page);
    SetResident(Index(page), false);
  }
  Wake(page);
  return mapped;
}

void PageInstaller::RestoreBacking(uintptr_t start, uintptr_t end) {
  for (auto it = sigbus_pages_.begin(); it != sigbus_pages_.end();) {
    const uintptr_t page = *it;
    if (page < start || page >= end) {
      ++it;
      continue;
    }
    void* at = ::mmap(reinterpret_cast<void*>(page), kPageSize,
                      PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
                      -1, 0);
    absl::Status s = at == MAP_FAILED ? absl::InternalError(strerror(errno))
                                      : uffd_.Register(page, kPageSize);
    if (!s.ok()) {
      Error("restoring the page at 0x%x for its new backing failed: %s", page,
            s.message());
      ++it;
      continue;
    }
    sigbus_pages_.erase(it++);
  }
}

}  // namespace pagewire
