// ram_dataspace.cc - inline answers from anonymous storage.
#include "runtime/memory/ram_dataspace.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "runtime/fault/completion_queue.h"
#include "runtime/base/page.h"

namespace pagewire {

absl::StatusOr<std::shared_ptr<RamDataspace>> RamDataspace::Create(
    uint64_t size) {
  if (size == 0) {
    return absl::InvalidArgumentError("a RAM dataspace needs a non-zero size");
  }
  size = PageUp(size);
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "cannot reserve %d bytes for a RAM dataspace: %s", size,
        strerror(errno)));
  }
  return std::shared_ptr<RamDataspace>(
      new RamDataspace(static_cast<char*>(p), size));
}

RamDataspace::~RamDataspace() { ::munmap(data_, size_); }

void RamDataspace::RequestPage(const PageRequest& request) {
  if (request.upgrade) {
    // Local memory has no other copies to reconcile.
    request.completion_queue->Post(
        OutcomeCompletion(request, Resolution::kWritable));
    return;
  }
  request.completion_queue->Post(
      DataCompletion(request, data_ + request.offset));
}

std::string RamDataspace::Describe() const {
  return absl::StrFormat("ram dataspace of %d KiB", size_ / 1024);
}

}  // namespace pagewire
