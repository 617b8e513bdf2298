// runtime.h - one node of a Pagewire job: the global range, its root region
// map, the fault service over it, and the allocations attached to it.
//
// Threads: Alloc() and Free() are thread-safe; the runtime is created and
// destroyed by one owner. Several runtimes may live in one process if their
// global ranges do not overlap (tests build nodes twice this way).
#ifndef PAGEWIRE_RUNTIME_RUNTIME_H_
#define PAGEWIRE_RUNTIME_RUNTIME_H_

#include <cstdint>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "runtime/fault_service.h"
#include "runtime/region_map.h"

namespace pagewire {

struct RuntimeConfig {
  // Every process of a job maps global memory here, so pointers stored in
  // global memory are valid on every node. 32 TiB up: clear of the heap,
  // below the usual mmap and stack areas.
  uintptr_t global_base = uintptr_t{0x2000} << 32;
  uint64_t global_size = uint64_t{1} << 40;  // 1 TiB of address space
  UffdSyscalls syscalls = UffdSyscalls::Kernel();

  // Reads PAGEWIRE_GLOBAL_BASE and PAGEWIRE_GLOBAL_SIZE over the defaults.
  static absl::StatusOr<RuntimeConfig> FromEnvironment();
};

class Runtime {
 public:
  static absl::StatusOr<std::unique_ptr<Runtime>> Start(
      const RuntimeConfig& config);
  ~Runtime();

  int rank() const { return 0; }
  int nranks() const { return 1; }

  // Allocates `bytes` of global memory (reads as zero until written) and
  // returns its address in the global range.
  absl::StatusOr<void*> Alloc(uint64_t bytes);
  absl::Status Free(void* ptr);

  uintptr_t global_base() const { return fault_service_->base(); }
  uint64_t global_size() const { return fault_service_->size(); }
  RegionMap& root() { return *root_; }
  FaultService& fault_service() { return *fault_service_; }

 private:
  Runtime() = default;

  // Destroyed last: managers may still post into its completion queue and
  // landing buffers until they are gone (see ~Runtime).
  std::unique_ptr<FaultService> fault_service_;
  std::shared_ptr<RegionMap> root_;

  absl::Mutex mutex_;
  absl::flat_hash_map<uintptr_t, uint64_t> allocations_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_RUNTIME_H_
