// fault_test_support.h - a fault service over a private global range, for
// tests that build nodes in-process.
#ifndef PAGEWIRE_TESTS_FAULT_TEST_SUPPORT_H_
#define PAGEWIRE_TESTS_FAULT_TEST_SUPPORT_H_

#include <linux/userfaultfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "runtime/fault/fault_service.h"
#include "runtime/base/log.h"
#include "runtime/memory/region_map.h"
#include "tests/eventually.h"

namespace pagewire::testing {

// True if this process may open a userfaultfd that sees kernel-mode faults.
inline bool UserfaultfdUsable(std::string* why) {
  auto uffd = Userfaultfd::Open(UffdSyscalls::Kernel());
  if (!uffd.ok()) *why = std::string(uffd.status().message());
  return uffd.ok();
}

// Collects what the runtime logs, for assertions on messages.
class LogCapture {
 public:
  LogCapture() {
    previous_ = SetLogSink([this](LogLevel, absl::string_view line) {
      absl::MutexLock lock(&mutex_);
      lines_.emplace_back(line);
    });
  }
  ~LogCapture() { SetLogSink(previous_); }
  std::string All() {
    absl::MutexLock lock(&mutex_);
    std::string all;
    for (const auto& l : lines_) all += l + "\n";
    return all;
  }

 private:
  LogSink previous_;
  absl::Mutex mutex_;
  std::vector<std::string> lines_;
};

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer (x86-64 Linux) allows application memory only in
// 0x1000-0x0080'0000'0000, around the PIE binaries (0x5500'0000'0000-
// 0x5680'0000'0000), in its heap and near the top (modules and stacks); the
// rest is its shadow and metadata, or refused. A mapping elsewhere fails
// (MAP_FIXED) or ends the process (MAP_FIXED_NOREPLACE, which TSan does not
// check: the kernel maps the range at address 0 and TSan aborts). 256 GiB is
// in the low range with 256 GiB above it, far from the low mappings
// (a non-PIE binary, MAP_32BIT).
inline constexpr uintptr_t kTestGlobalBase = uintptr_t{0x40} << 32;
#else
inline constexpr uintptr_t kTestGlobalBase = uintptr_t{0x3000} << 32;
#endif

// A root region map of `size` bytes and a fault service over it at `base`.
class FaultServiceFixture : public ::testing::Test {
 protected:
  static constexpr uintptr_t kBase = kTestGlobalBase;
  static constexpr uint64_t kSize = uint64_t{2} << 30;
  static_assert(kBase % (uint64_t{1} << 30) == 0, "a 1 GiB-aligned range");

  void SetUp() override {
    std::string why;
    if (!UserfaultfdUsable(&why)) GTEST_SKIP() << why;
    root_ = std::make_shared<RegionMap>(kSize, "test root");
    FaultServiceConfig config;
    config.base = kBase;
    config.size = kSize;
    auto service = FaultService::Start(config, *root_);
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = *std::move(service);
    root_->AddListener(service_.get());
  }

  void TearDown() override {
    if (!service_) return;
    service_->Stop();
    root_->RemoveListener(service_.get());
    root_.reset();      // managers go before the service's buffers
    service_.reset();
  }

  char* At(uint64_t offset) {
    return reinterpret_cast<char*>(kBase + offset);
  }

  std::shared_ptr<RegionMap> root_;
  std::unique_ptr<FaultService> service_;
};

}  // namespace pagewire::testing

#endif  // PAGEWIRE_TESTS_FAULT_TEST_SUPPORT_H_
