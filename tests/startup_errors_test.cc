// startup_errors_test.cc - every way the fault service can fail to start
// gives a clear message naming the cause and the fix, and never hangs or
// crashes. Failures of the kernel are injected through UffdSyscalls.
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <string>

#include "gtest/gtest.h"
#include "runtime/fault/fault_service.h"
#include "runtime/memory/region_map.h"
#include "runtime/runtime.h"
#include "tests/fault_test_support.h"

namespace pagewire::testing {
namespace {

constexpr uintptr_t kBase = uintptr_t{0x3400} << 32;
constexpr uint64_t kSize = uint64_t{64} << 20;

absl::Status StartWith(UffdSyscalls sys, uintptr_t base = kBase) {
  RegionMap root(kSize);
  FaultServiceConfig config;
  config.base = base;
  config.size = kSize;
  config.syscalls = std::move(sys);
  auto service = FaultService::Start(config, root);
  return service.status();
}

UffdSyscalls OpenFailsWith(int err) {
  UffdSyscalls sys = UffdSyscalls::Kernel();
  sys.open_userfaultfd = [err](int) {
    errno = err;
    return -1;
  };
  return sys;
}

TEST(StartupErrorsTest, MissingUserfaultfdNamesKernelConfig) {
  absl::Status s = StartWith(OpenFailsWith(ENOSYS));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("CONFIG_USERFAULTFD"), std::string::npos) << s;
  EXPECT_NE(s.message().find("Fix:"), std::string::npos) << s;
}

TEST(StartupErrorsTest, PermissionDeniedNamesSysctlAndCapability) {
  absl::Status s = StartWith(OpenFailsWith(EPERM));
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("vm.unprivileged_userfaultfd=1"),
            std::string::npos) << s;
  EXPECT_NE(s.message().find("CAP_SYS_PTRACE"), std::string::npos) << s;
}

TEST(StartupErrorsTest, OtherOpenFailureIsReportedWithErrno) {
  absl::Status s = StartWith(OpenFailsWith(EMFILE));
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(strerror(EMFILE)), std::string::npos) << s;
}

// The handshake runs for real but the kernel "offers" no write-protect.
TEST(StartupErrorsTest, MissingWriteProtectIsRefused) {
  std::string why;
  if (!UserfaultfdUsable(&why)) GTEST_SKIP() << why;
  UffdSyscalls sys = UffdSyscalls::Kernel();
  auto real_ioctl = sys.ioctl;
  sys.ioctl = [real_ioctl](int fd, unsigned long request, void* arg) {
    if (request != UFFDIO_API) return real_ioctl(fd, request, arg);
    auto* api = static_cast<uffdio_api*>(arg);
    api->features &= ~static_cast<uint64_t>(UFFD_FEATURE_PAGEFAULT_FLAG_WP);
    int rc = real_ioctl(fd, request, arg);
    api->features &= ~static_cast<uint64_t>(UFFD_FEATURE_PAGEFAULT_FLAG_WP);
    return rc;
  };
  absl::Status s = StartWith(sys);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("write-protect"), std::string::npos) << s;
}

TEST(StartupErrorsTest, HandshakeRejectedByOldKernel) {
  std::string why;
  if (!UserfaultfdUsable(&why)) GTEST_SKIP() << why;
  UffdSyscalls sys = UffdSyscalls::Kernel();
  auto real_ioctl = sys.ioctl;
  sys.ioctl = [real_ioctl](int fd, unsigned long request, void* arg) {
    if (request != UFFDIO_API) return real_ioctl(fd, request, arg);
    errno = EINVAL;  // what a kernel says to features it does not know
    return -1;
  };
  absl::Status s = StartWith(sys);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("Linux >= 5.7"), std::string::npos) << s;
}

TEST(StartupErrorsTest, OccupiedGlobalRangeNamesTheVariables) {
  std::string why;
  if (!UserfaultfdUsable(&why)) GTEST_SKIP() << why;
  void* squatter = mmap(reinterpret_cast<void*>(kBase + (8 << 20)), 4096,
                        PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                        -1, 0);
  ASSERT_NE(squatter, MAP_FAILED);
  absl::Status s = StartWith(UffdSyscalls::Kernel());
  munmap(squatter, 4096);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("PAGEWIRE_GLOBAL_BASE"), std::string::npos) << s;
}

TEST(StartupErrorsTest, UnalignedBaseIsRejectedBeforeAnythingIsMapped) {
  absl::Status s = StartWith(UffdSyscalls::Kernel(), kBase + 12);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("multiple of the page size"), std::string::npos);
}

TEST(StartupErrorsTest, BadEnvironmentNamesTheVariable) {
  setenv("PAGEWIRE_GLOBAL_SIZE", "lots", 1);
  auto config = RuntimeConfig::FromEnvironment();
  unsetenv("PAGEWIRE_GLOBAL_SIZE");
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("PAGEWIRE_GLOBAL_SIZE=lots"),
            std::string::npos);
  setenv("PAGEWIRE_GLOBAL_SIZE", "64G", 1);
  config = RuntimeConfig::FromEnvironment();
  unsetenv("PAGEWIRE_GLOBAL_SIZE");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->global_size, uint64_t{64} << 30);
}

TEST(StartupErrorsTest, BadPushSettingNamesTheVariableAndTheFix) {
  setenv("PAGEWIRE_PUSH", "yes", 1);
  auto config = RuntimeConfig::FromEnvironment();
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("PAGEWIRE_PUSH=yes"), std::string::npos)
      << config.status();
  EXPECT_NE(config.status().message().find("unset it"), std::string::npos)
      << config.status();
  setenv("PAGEWIRE_PUSH", "0", 1);
  config = RuntimeConfig::FromEnvironment();
  unsetenv("PAGEWIRE_PUSH");
  ASSERT_TRUE(config.ok());
  EXPECT_FALSE(config->push);
  config = RuntimeConfig::FromEnvironment();
  ASSERT_TRUE(config.ok());
  EXPECT_TRUE(config->push);
}

TEST(StartupErrorsTest, BadIdlePollsNamesTheVariableAndTheFix) {
  setenv("PAGEWIRE_IDLE_POLLS", "-5", 1);
  auto config = RuntimeConfig::FromEnvironment();
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("PAGEWIRE_IDLE_POLLS=-5"),
            std::string::npos)
      << config.status();
  EXPECT_NE(config.status().message().find("unset it"), std::string::npos)
      << config.status();
  setenv("PAGEWIRE_IDLE_POLLS", "256", 1);
  config = RuntimeConfig::FromEnvironment();
  unsetenv("PAGEWIRE_IDLE_POLLS");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->idle_polls, 256u);
  config = RuntimeConfig::FromEnvironment();
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->idle_polls, 0u);
}

TEST(StartupErrorsTest, ServiceStartsAgainAfterAFailure) {
  std::string why;
  if (!UserfaultfdUsable(&why)) GTEST_SKIP() << why;
  EXPECT_FALSE(StartWith(OpenFailsWith(EPERM)).ok());
  EXPECT_TRUE(StartWith(UffdSyscalls::Kernel()).ok());
}

}  // namespace
}  // namespace pagewire::testing
