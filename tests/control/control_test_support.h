// control_test_support.h - helpers for the control-plane tests: a
// coordinator on 127.0.0.1:0, client configs, and a view recorder.
#ifndef PAGEWIRE_TESTS_CONTROL_CONTROL_TEST_SUPPORT_H_
#define PAGEWIRE_TESTS_CONTROL_CONTROL_TEST_SUPPORT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/eventually.h"
#include "runtime/control/control_client.h"
#include "runtime/control/coordinator_server.h"
#include "runtime/control/view.h"

namespace pagewire::control::testing {

using ::pagewire::testing::Eventually;

inline constexpr char kCluster[] = "test-cluster";
inline constexpr char kSecret[] = "correct-horse-battery-staple";
inline constexpr uint64_t kGlobalBase = uint64_t{0x3800} << 32;
inline constexpr uint64_t kGlobalSize = uint64_t{1} << 30;
// How long a test waits for something that should happen within
// milliseconds before it declares failure (a guard against hanging tests,
// not part of the code under test).
inline constexpr absl::Duration kTestPatience = absl::Seconds(30);

inline CoordinatorConfig TestConfig(int nranks,
                                    absl::Duration lease = absl::Seconds(2),
                                    absl::Duration heartbeat =
                                        absl::Milliseconds(50)) {
  CoordinatorConfig c;
  c.cluster_id = kCluster;
  c.secret = kSecret;
  c.nranks = nranks;
  c.global_base = kGlobalBase;
  c.global_size = kGlobalSize;
  c.lease = lease;
  c.heartbeat_interval = heartbeat;
  return c;
}

inline proto::Endpoint TestEndpoint(int n) {
  proto::Endpoint ep;
  ep.set_host("node-" + std::to_string(n));
  ep.set_control_port(7000 + n);
  ep.mutable_tcp()->set_port(9000 + n);
  return ep;
}

// Collects every view a client's watch thread delivers.
class ViewRecorder {
 public:
  std::function<void(const View&)> Callback() {
    return [this](const View& v) {
      absl::MutexLock l(&mu_);
      views_.push_back(v);
    };
  }

  // Waits until the newest view satisfies `pred`; false after kTestPatience.
  bool WaitFor(std::function<bool(const View&)> pred) {
    absl::MutexLock l(&mu_);
    auto cond = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !views_.empty() && pred(views_.back());
    };
    return mu_.AwaitWithTimeout(absl::Condition(&cond), kTestPatience);
  }

  std::vector<View> views() const {
    absl::MutexLock l(&mu_);
    return views_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<View> views_ ABSL_GUARDED_BY(mu_);
};

inline ControlClientConfig ClientConfig(const CoordinatorServer& server,
                                        int n, ViewRecorder* recorder = nullptr,
                                        int requested_rank = -1) {
  ControlClientConfig c;
  c.coordinator = server.address();
  c.cluster_id = kCluster;
  c.secret = kSecret;
  c.requested_rank = requested_rank;
  c.endpoint = TestEndpoint(n);
  if (recorder != nullptr) c.on_view = recorder->Callback();
  return c;
}

inline bool AllAlive(const View& v, int n) {
  return static_cast<int>(v.members.size()) == n && v.Count(proto::Member::ALIVE) == n;
}

inline bool RankIs(const View& v, int rank, MemberState state) {
  const ViewMember* m = v.Find(rank);
  return m != nullptr && m->state == state;
}

}  // namespace pagewire::control::testing

#endif  // PAGEWIRE_TESTS_CONTROL_CONTROL_TEST_SUPPORT_H_
