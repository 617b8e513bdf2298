// page.h - the unit of transfer: one base page of the global range.
#ifndef PAGEWIRE_RUNTIME_BASE_PAGE_H_
#define PAGEWIRE_RUNTIME_BASE_PAGE_H_

#include <cstddef>
#include <cstdint>

namespace pagewire {

// UFFDIO_COPY, the resident bitmap and every dataspace work in base pages.
inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint64_t kPageMask = kPageSize - 1;
static_assert((kPageSize & kPageMask) == 0, "page size must be a power of two");

constexpr bool PageAligned(uint64_t v) { return (v & kPageMask) == 0; }
constexpr uint64_t PageDown(uint64_t v) { return v & ~kPageMask; }
constexpr uint64_t PageUp(uint64_t v) { return (v + kPageMask) & ~kPageMask; }

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_BASE_PAGE_H_
