// c_api.cc - the C API over Runtime: argument checks, status mapping, and the
// process's one runtime.
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "pagewire/pagewire.h"
#include "runtime/base/log.h"
#include "runtime/runtime.h"

namespace {

using pagewire::Runtime;

// The C API is process-wide by nature; the C++ runtime underneath is not.
absl::Mutex runtime_mutex;
Runtime* runtime ABSL_GUARDED_BY(runtime_mutex) = nullptr;

thread_local std::string last_error;

pw_status_t ToC(const absl::Status& s) {
  if (s.ok()) {
    return PW_OK;
  }
  last_error = std::string(s.message());
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return PW_ERR_INVALID_ARGUMENT;
    case absl::StatusCode::kUnimplemented:
      return PW_ERR_UNSUPPORTED;
    case absl::StatusCode::kFailedPrecondition:
      return PW_ERR_STATE;
    case absl::StatusCode::kAborted:
      return PW_ERR_NOT_MEMBER;
    case absl::StatusCode::kPermissionDenied:
      return PW_ERR_PERMISSION;
    case absl::StatusCode::kResourceExhausted:
      return PW_ERR_NO_MEMORY;
    case absl::StatusCode::kNotFound:
      return PW_ERR_NOT_FOUND;
    case absl::StatusCode::kUnavailable:
      return PW_ERR_UNAVAILABLE;
    default:
      return PW_ERR_INTERNAL;
  }
}

Runtime* Current() {
  absl::MutexLock lock(&runtime_mutex);
  return runtime;
}

pw_status_t NotInitialized(const char* call) {
  last_error = std::string(call) + ": pw_init() has not been called (or "
               "pw_finalize() already ran); call pw_init() first";
  return PW_ERR_NOT_INITIALIZED;
}

}  // namespace

extern "C" {

pw_status_t pw_init(int* argc, char*** argv) {
  (void)argc;
  (void)argv;
  absl::MutexLock lock(&runtime_mutex);
  if (runtime != nullptr) {
    last_error = "pw_init: the runtime is already initialised in this "
                 "process; call pw_init() once (pw_finalize() ends it)";
    return PW_ERR_ALREADY_INITIALIZED;
  }
  absl::StatusOr<pagewire::RuntimeConfig> config =
      pagewire::RuntimeConfig::FromEnvironment();
  if (!config.ok()) return ToC(config.status());
  absl::StatusOr<std::unique_ptr<Runtime>> rt = Runtime::Start(*config);
  if (!rt.ok()) {
    pagewire::Error("pw_init: %s", rt.status().message());
    return ToC(rt.status());
  }
  runtime = rt->release();
  return PW_OK;
}

pw_status_t pw_finalize(void) {
  Runtime* rt;
  {
    absl::MutexLock lock(&runtime_mutex);
    rt = runtime;
    runtime = nullptr;
  }
  if (rt == nullptr) return NotInitialized("pw_finalize");
  const absl::Status s = rt->Finalize();
  delete rt;
  return ToC(s);
}

int pw_rank(void) {
  Runtime* rt = Current();
  return rt ? rt->rank() : -1;
}

int pw_nranks(void) {
  Runtime* rt = Current();
  return rt ? rt->nranks() : -1;
}

namespace {

// pw_alloc and pw_alloc_sc: the placement checked, then the collective.
void* AllocPlaced(const char* call, size_t bytes, pw_placement_t placement,
                  bool sequential) {
  Runtime* rt = Current();
  if (rt == nullptr) {
    NotInitialized(call);
    return nullptr;
  }
  pagewire::Placement p;
  switch (placement) {
    case PW_PLACE_BLOCK: p = pagewire::Placement::kBlock; break;
    case PW_PLACE_CYCLIC: p = pagewire::Placement::kCyclic; break;
    case PW_PLACE_FIRST_TOUCH:
      if (!sequential) {
        p = pagewire::Placement::kFirstTouch;
        break;
      }
      last_error = std::string(call) +
                   ": PW_PLACE_FIRST_TOUCH cannot be sequentially consistent "
                   "(a page needs a fixed home); use PW_PLACE_BLOCK or "
                   "PW_PLACE_CYCLIC";
      return nullptr;
    default:
      last_error = std::string(call) + ": unknown placement " +
                   std::to_string(placement) +
                   (sequential ? "; use PW_PLACE_BLOCK or PW_PLACE_CYCLIC"
                               : "; use PW_PLACE_BLOCK, PW_PLACE_CYCLIC or "
                                 "PW_PLACE_FIRST_TOUCH");
      return nullptr;
  }
  absl::StatusOr<void*> ptr = rt->Alloc(bytes, p, 0, sequential);
  if (!ptr.ok()) {
    ToC(ptr.status());
    return nullptr;
  }
  return *ptr;
}

}  // namespace

void* pw_alloc(size_t bytes, pw_placement_t placement) {
  return AllocPlaced("pw_alloc", bytes, placement, /*sequential=*/false);
}

void* pw_alloc_sc(size_t bytes, pw_placement_t placement) {
  return AllocPlaced("pw_alloc_sc", bytes, placement, /*sequential=*/true);
}

void* pw_alloc_on(size_t bytes, int home_rank) {
  Runtime* rt = Current();
  if (rt == nullptr) {
    NotInitialized("pw_alloc_on");
    return nullptr;
  }
  absl::StatusOr<void*> ptr =
      rt->Alloc(bytes, pagewire::Placement::kOnRank, home_rank);
  if (!ptr.ok()) {
    ToC(ptr.status());
    return nullptr;
  }
  return *ptr;
}

void* pw_attach_file(const char* path, int home_rank) {
  Runtime* rt = Current();
  if (rt == nullptr) {
    NotInitialized("pw_attach_file");
    return nullptr;
  }
  if (path == nullptr || path[0] == '\0') {
    last_error = "pw_attach_file: the path is empty; pass the file's path";
    return nullptr;
  }
  absl::StatusOr<void*> ptr = rt->AttachFile(path, home_rank);
  if (!ptr.ok()) {
    ToC(ptr.status());
    return nullptr;
  }
  return *ptr;
}

pw_status_t pw_free(void* ptr) {
  Runtime* rt = Current();
  if (rt == nullptr) return NotInitialized("pw_free");
  if (ptr == nullptr) {
    last_error = "pw_free: the pointer is NULL; pass what pw_alloc returned";
    return PW_ERR_INVALID_ARGUMENT;
  }
  return ToC(rt->Free(ptr));
}

pw_status_t pw_barrier(void) {
  Runtime* rt = Current();
  if (rt == nullptr) return NotInitialized("pw_barrier");
  return ToC(rt->Barrier());
}

pw_status_t pw_release(void) {
  Runtime* rt = Current();
  if (rt == nullptr) return NotInitialized("pw_release");
  return ToC(rt->Release());
}

pw_status_t pw_acquire(void) {
  Runtime* rt = Current();
  if (rt == nullptr) return NotInitialized("pw_acquire");
  return ToC(rt->Acquire());
}

#define PW_LOCK_CALL(name, method)                                        \
  pw_status_t name(pw_lock_t* lock) {                                     \
    Runtime* rt = Current();                                              \
    if (rt == nullptr) return NotInitialized(#name);                      \
    if (lock == nullptr) {                                                \
      last_error = #name ": the lock is NULL; pass a pw_lock_t in global " \
                   "memory";                                              \
      return PW_ERR_INVALID_ARGUMENT;                                     \
    }                                                                     \
    return ToC(rt->method(reinterpret_cast<uintptr_t>(lock)));            \
  }
PW_LOCK_CALL(pw_lock_init, LockInit)
PW_LOCK_CALL(pw_lock_acquire, LockAcquire)
PW_LOCK_CALL(pw_lock_release, LockRelease)
PW_LOCK_CALL(pw_lock_destroy, LockDestroy)
#undef PW_LOCK_CALL

static pw_status_t AtomicResult(const absl::StatusOr<uint64_t>& r,
                                uint64_t* out) {
  if (!r.ok()) return ToC(r.status());
  if (out != nullptr) *out = *r;
  return PW_OK;
}

pw_status_t pw_atomic_fetch_add(uint64_t* addr, uint64_t value, uint64_t* old) {
  Runtime* rt = Current();
  if (rt == nullptr) return NotInitialized("pw_atomic_fetch_add");
  return AtomicResult(
      rt->AtomicFetchAdd(reinterpret_cast<uintptr_t>(addr), value), old);
}

pw_status_t pw_atomic_cas(uint64_t* addr, uint64_t expected, uint64_t desired,
                          uint64_t* old) {
  Runtime* rt = Current();
  if (rt == nullptr) return NotInitialized("pw_atomic_cas");
  return AtomicResult(rt->AtomicCompareSwap(reinterpret_cast<uintptr_t>(addr),
                                            expected, desired),
                      old);
}

pw_status_t pw_atomic_load(uint64_t* addr, uint64_t* value) {
  Runtime* rt = Current();
  if (rt == nullptr) return NotInitialized("pw_atomic_load");
  if (value == nullptr) {
    last_error = "pw_atomic_load: value is NULL; pass where to store it";
    return PW_ERR_INVALID_ARGUMENT;
  }
  return AtomicResult(rt->AtomicLoad(reinterpret_cast<uintptr_t>(addr)), value);
}

pw_status_t pw_atomic_store(uint64_t* addr, uint64_t value) {
  Runtime* rt = Current();
  if (rt == nullptr) return NotInitialized("pw_atomic_store");
  return ToC(rt->AtomicStore(reinterpret_cast<uintptr_t>(addr), value));
}

pw_status_t pw_get_stats(pw_stats_t* stats) {
  Runtime* rt = Current();
  if (rt == nullptr) return NotInitialized("pw_get_stats");
  if (stats == nullptr) {
    last_error = "pw_get_stats: stats is NULL; pass a pw_stats_t to fill";
    return PW_ERR_INVALID_ARGUMENT;
  }
  pagewire::RuntimeStats s = rt->stats();
  stats->faults = s.faults.faults;
  stats->remote_fetches = s.fetches.remote_reads;
  stats->coalesced = s.faults.coalesced;
  stats->failed = s.faults.failed;
  stats->served = s.fetches_served;
  stats->twins = s.twins;
  stats->diff_bytes = s.diff_bytes;
  stats->invalidated = s.invalidated;
  stats->mean_latency_us = s.faults.mean_latency_ns / 1e3;
  stats->p50_latency_us = s.faults.p50_latency_ns / 1e3;
  stats->p99_latency_us = s.faults.p99_latency_ns / 1e3;
  stats->readaheads = s.faults.readaheads;
  stats->pushed = s.pushed;
  stats->notices = s.notices;
  stats->suspected_ranks = s.suspected_ranks;
  stats->dead_ranks = s.dead_ranks;
  return PW_OK;
}

void* pw_global_base(void) {
  Runtime* rt = Current();
  return rt ? reinterpret_cast<void*>(rt->global_base()) : nullptr;
}

size_t pw_global_size(void) {
  Runtime* rt = Current();
  return rt ? rt->global_size() : 0;
}

const char* pw_status_str(pw_status_t status) {
  switch (status) {
    case PW_OK: return "success";
    case PW_ERR_INVALID_ARGUMENT: return "invalid argument";
    case PW_ERR_NOT_INITIALIZED: return "runtime not initialised";
    case PW_ERR_ALREADY_INITIALIZED: return "runtime already initialised";
    case PW_ERR_UNSUPPORTED: return "unsupported by this kernel or build";
    case PW_ERR_PERMISSION: return "permission denied";
    case PW_ERR_NO_MEMORY: return "out of memory or address space";
    case PW_ERR_NOT_FOUND: return "not found";
    case PW_ERR_UNAVAILABLE: return "peer or manager unavailable";
    case PW_ERR_INTERNAL: return "internal error";
    case PW_ERR_STATE: return "not allowed in the current state";
    case PW_ERR_NOT_MEMBER: return "this rank is no longer a member of the job";
  }
  return "unknown status code";
}

const char* pw_last_error(void) { return last_error.c_str(); }

}  // extern "C"
