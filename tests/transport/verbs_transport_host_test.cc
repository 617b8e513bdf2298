// verbs_transport_host_test.cc - VerbsTransport on a machine without RDMA:
// Create() must return a clear Unavailable (never crash), so the runtime
// can log "no RDMA device; using TCP". Also the configuration checks that
// come before any device is opened. Skips when the machine has a device
// (then transport_test's Verbs cases cover it).
#include <infiniband/verbs.h>

#include <cerrno>
#include <cstdlib>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "runtime/transport/verbs/verbs_transport.h"

namespace pagewire {
namespace {

// Whether libibverbs lists at least one device, and errno if it failed.
bool HaveDevice(int* err) {
  int num = 0;
  errno = 0;
  ibv_device** list = ibv_get_device_list(&num);
  *err = errno;
  if (list == nullptr) return false;
  ibv_free_device_list(list);
  return num > 0;
}

// Sets an environment variable for the life of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    if (old != nullptr) old_ = old, had_ = true;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) {
      ::setenv(name_, old_.c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(VerbsTransportHost, NoDeviceIsUnavailableWithAClearMessage) {
  int err = 0;
  if (HaveDevice(&err)) {
    GTEST_SKIP() << "this machine has an RDMA device; transport_test's Verbs cases "
                    "exercise it";
  }
  VerbsTransportConfig config;
  auto t = VerbsTransport::Create(config);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kUnavailable) << t.status();
  EXPECT_TRUE(absl::StartsWith(t.status().message(), "no RDMA device"))
      << t.status();
  if (err == ENOSYS) {
    // The host of this project: the kernel has no RDMA stack at all.
    EXPECT_EQ(t.status().message(),
              "no RDMA device (ibv_get_device_list: Function not "
              "implemented): the kernel has no RDMA stack");
  }
  // What the runtime logs before falling back.
  std::string line = std::string(t.status().message()) + "; using TCP";
  EXPECT_TRUE(absl::StartsWith(line, "no RDMA device")) << line;

  // Naming a device changes nothing: there is still none.
  config.device = "rxe0";
  config.port = 1;
  config.gid_index = 1;
  t = VerbsTransport::Create(config);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kUnavailable) << t.status();
  EXPECT_TRUE(absl::StartsWith(t.status().message(), "no RDMA device"))
      << t.status();
}

TEST(VerbsTransportHost, BadEnvironmentIsInvalidArgument) {
  {
    ScopedEnv env("PAGEWIRE_VERBS_PORT", "one");
    auto t = VerbsTransport::Create(VerbsTransportConfig());
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument)
        << t.status();
    EXPECT_TRUE(absl::StrContains(t.status().message(),
                                  "PAGEWIRE_VERBS_PORT=one"))
        << t.status();
  }
  {
    ScopedEnv env("PAGEWIRE_VERBS_GID_INDEX", "-2");
    auto t = VerbsTransport::Create(VerbsTransportConfig());
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument)
        << t.status();
    EXPECT_TRUE(absl::StrContains(t.status().message(),
                                  "PAGEWIRE_VERBS_GID_INDEX"))
        << t.status();
  }
  {
    // Explicit configuration wins over the environment.
    ScopedEnv env("PAGEWIRE_VERBS_PORT", "one");
    VerbsTransportConfig config;
    config.port = 1;
    auto t = VerbsTransport::Create(config);
    if (t.ok()) GTEST_SKIP() << "this machine has an RDMA device";
    EXPECT_NE(t.status().code(), absl::StatusCode::kInvalidArgument)
        << t.status();
  }
}

TEST(VerbsTransportHost, BadConfigIsInvalidArgument) {
  VerbsTransportConfig config;
  config.retry_count = 8;
  auto t = VerbsTransport::Create(config);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument)
      << t.status();
  config = VerbsTransportConfig();
  config.max_queue_pairs = 0;
  t = VerbsTransport::Create(config);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument)
      << t.status();
}

}  // namespace
}  // namespace pagewire
