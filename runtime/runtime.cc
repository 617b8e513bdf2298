// runtime.cc - start-up, allocation and shutdown of a node.
#include "runtime/runtime.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "runtime/page.h"
#include "runtime/ram_dataspace.h"

namespace pagewire {
namespace {

// Parses "0x200000000000", "1099511627776", "64G", "1T".
absl::StatusOr<uint64_t> ParseSize(const char* name, absl::string_view given) {
  absl::string_view text = given;
  uint64_t shift = 0;
  if (!text.empty()) {
    switch (text.back()) {
      case 'K': case 'k': shift = 10; break;
      case 'M': case 'm': shift = 20; break;
      case 'G': case 'g': shift = 30; break;
      case 'T': case 't': shift = 40; break;
      default: break;
    }
    if (shift) text.remove_suffix(1);
  }
  uint64_t value = 0;
  bool ok = absl::ConsumePrefix(&text, "0x") ? absl::SimpleHexAtoi(text, &value)
                                             : absl::SimpleAtoi(text, &value);
  if (!ok || (shift && value > (UINT64_MAX >> shift))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s=%s is not a number; give bytes in decimal or 0x-hex, optionally "
        "with a K, M, G or T suffix",
        name, given));
  }
  return value << shift;
}

}  // namespace

absl::StatusOr<RuntimeConfig> RuntimeConfig::FromEnvironment() {
  RuntimeConfig config;
  if (const char* v = std::getenv("PAGEWIRE_GLOBAL_BASE")) {
    absl::StatusOr<uint64_t> base = ParseSize("PAGEWIRE_GLOBAL_BASE", v);
    if (!base.ok()) return base.status();
    config.global_base = *base;
  }
  if (const char* v = std::getenv("PAGEWIRE_GLOBAL_SIZE")) {
    absl::StatusOr<uint64_t> size = ParseSize("PAGEWIRE_GLOBAL_SIZE", v);
    if (!size.ok()) return size.status();
    config.global_size = *size;
  }
  return config;
}

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Start(
    const RuntimeConfig& config) {
  std::unique_ptr<Runtime> rt(new Runtime());
  rt->root_ = std::make_shared<RegionMap>(config.global_size, "global range");
  FaultServiceConfig fs;
  fs.base = config.global_base;
  fs.size = config.global_size;
  fs.syscalls = config.syscalls;
  absl::StatusOr<std::unique_ptr<FaultService>> service =
      FaultService::Start(fs, *rt->root_);
  if (!service.ok()) return service.status();
  rt->fault_service_ = *std::move(service);
  rt->root_->AddListener(rt->fault_service_.get());
  return rt;
}

Runtime::~Runtime() {
  // Stop faulting first (waiting faults fail loudly), then let the managers
  // go, then release the service's buffers they might have written to.
  fault_service_->Stop();
  root_->RemoveListener(fault_service_.get());
  root_.reset();
  fault_service_.reset();
}

absl::StatusOr<void*> Runtime::Alloc(uint64_t bytes) {
  if (bytes == 0) {
    return absl::InvalidArgumentError(
        "pw_alloc: 0 bytes requested; ask for at least one byte");
  }
  if (bytes > global_size()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "pw_alloc: %d bytes exceed the global range of %d bytes; raise "
        "PAGEWIRE_GLOBAL_SIZE",
        bytes, global_size()));
  }
  absl::StatusOr<std::shared_ptr<RamDataspace>> ds = RamDataspace::Create(bytes);
  if (!ds.ok()) return ds.status();
  absl::StatusOr<uint64_t> at = root_->Attach(*ds, {});
  if (!at.ok()) return at.status();
  uintptr_t addr = global_base() + *at;
  absl::MutexLock lock(&mutex_);
  allocations_[addr] = *at;
  return reinterpret_cast<void*>(addr);
}

absl::Status Runtime::Free(void* ptr) {
  uintptr_t addr = reinterpret_cast<uintptr_t>(ptr);
  uint64_t at;
  {
    absl::MutexLock lock(&mutex_);
    auto it = allocations_.find(addr);
    if (it == allocations_.end()) {
      return absl::NotFoundError(absl::StrFormat(
          "pw_free: %p is not the start of a live pw_alloc allocation; pass "
          "exactly the pointer pw_alloc returned, once",
          ptr));
    }
    at = it->second;
    allocations_.erase(it);
  }
  return root_->Detach(at);
}

}  // namespace pagewire
