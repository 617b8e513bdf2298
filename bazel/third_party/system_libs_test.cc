// Link check for //bazel/third_party: uses a symbol of every system library
// wrapped there, so a missing -l flag fails this test's link.
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <string>

#include <gmock/gmock.h>
#include <google/protobuf/stubs/common.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

namespace {

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return absl::InvalidArgumentError(absl::StrCat(x, " is odd"));
  return x / 2;
}

TEST(SystemLibs, Abseil) {
  absl::Mutex mu;
  absl::flat_hash_map<std::string, int> m;
  {
    absl::MutexLock lock(&mu);
    m[absl::StrFormat("page-%d", 7)] = 7;
  }
  EXPECT_EQ(m.at("page-7"), 7);
  EXPECT_NE(absl::HashOf(std::string("a")), absl::HashOf(std::string("b")));
  EXPECT_EQ(*Half(8), 4);
  EXPECT_EQ(Half(3).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_GT(absl::ToUnixSeconds(absl::Now()), 0);
}

TEST(SystemLibs, GmockProtobufGrpc) {
  EXPECT_THAT(std::string("pagewire"), ::testing::StartsWith("page"));
  EXPECT_GT(GOOGLE_PROTOBUF_VERSION, 3000000);
  EXPECT_FALSE(grpc::Version().empty());
}

TEST(SystemLibs, Verbs) {
  // No RDMA device is needed: an empty list is fine, the call must link.
  int n = -1;
  ibv_device** devs = ibv_get_device_list(&n);
  if (devs != nullptr) {
    EXPECT_GE(n, 0);
    ibv_free_device_list(devs);
  }
  auto* create_channel = &rdma_create_event_channel;
  EXPECT_NE(create_channel, nullptr);
}

}  // namespace
