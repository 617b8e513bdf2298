// verbs_transport_test.cc - VerbsTransport between transports in one process
// over real RDMA devices: soft-RoCE in the QEMU guest (rxe1 and rxe2 on a
// veth pair when both exist, else both ends on the first device;
// PAGEWIRE_TEST_DEVICE=rxe0 puts both on rxe0, where rxe loops back). One-sided
// operations, selective signalling, back-pressure past the send queue, the
// errors an RC QP reports (bad rkey, a peer that vanished, PeerDied),
// messages, and setup.
//
// Without a device every case skips with the reason, unless
// PAGEWIRE_REQUIRE_VERBS=1 (the VM sets it): then that is a failure.
// Sized for soft-RoCE under TCG (hundreds of microseconds per operation).
// Tests wait on completion_fd() under a generous deadline, so a lost
// completion fails instead of hanging (the transport has no timeouts).
#include "runtime/verbs_transport.h"

#include <infiniband/verbs.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "runtime/log.h"

namespace pagewire {
namespace {

constexpr int kDeadlineMs = 300 * 1000;

bool RequireVerbs() {
  const char* v = std::getenv("PAGEWIRE_REQUIRE_VERBS");
  return v != nullptr && std::string(v) == "1";
}

std::vector<std::string> DeviceNames() {
  std::vector<std::string> names;
  int num = 0;
  ibv_device** list = ibv_get_device_list(&num);
  if (list == nullptr) return names;
  for (int i = 0; i < num; ++i) names.push_back(ibv_get_device_name(list[i]));
  ibv_free_device_list(list);
  return names;
}

// The two devices the ends use: rxe1/rxe2 (a real wire between them) when
// both exist, else the first device twice (rxe loops back internally).
// PAGEWIRE_TEST_DEVICE=rxe0 puts both ends on that one device.
std::pair<std::string, std::string> DevicePair() {
  const char* forced = std::getenv("PAGEWIRE_TEST_DEVICE");
  if (forced != nullptr && *forced != '\0') return {forced, forced};
  std::vector<std::string> names = DeviceNames();
  auto has = [&](const char* n) {
    return std::find(names.begin(), names.end(), n) != names.end();
  };
  if (has("rxe1") && has("rxe2")) return {"rxe1", "rxe2"};
  if (names.empty()) return {"", ""};
  return {names[0], names[0]};
}

// Creates a transport on `device`; null (and the reason) when there is no
// usable RDMA device.
std::unique_ptr<VerbsTransport> MakeTransport(std::string* why, int rank,
                                              const std::string& device,
                                              uint8_t timeout_exp = 14,
                                              uint8_t retries = 7) {
  VerbsTransportConfig config;
  config.rank = rank;
  config.device = device;
  config.ack_timeout_exponent = timeout_exp;
  config.retry_count = retries;
  config.max_queue_pairs = 8;
  auto t = VerbsTransport::Create(config);
  if (!t.ok()) {
    *why = std::string(t.status().ToString());
    return nullptr;
  }
  return std::move(*t);
}

#define MAKE_OR_SKIP(var, ...)                                         \
  std::unique_ptr<VerbsTransport> var;                                 \
  {                                                                    \
    std::string why;                                                   \
    var = MakeTransport(&why, __VA_ARGS__);                            \
    if (var == nullptr) {                                              \
      if (RequireVerbs()) FAIL() << "PAGEWIRE_REQUIRE_VERBS=1: " << why; \
      GTEST_SKIP() << "no usable RDMA device: " << why;                \
    }                                                                  \
  }

// Both sides exchange EndpointFor results (the control plane's job) and
// connect.
void ConnectPair(VerbsTransport& a, int rank_a, VerbsTransport& b,
                 int rank_b) {
  auto ea = a.EndpointFor(rank_b);
  auto eb = b.EndpointFor(rank_a);
  ASSERT_TRUE(ea.ok()) << ea.status();
  ASSERT_TRUE(eb.ok()) << eb.status();
  absl::Status s = a.Connect(rank_b, *eb);
  ASSERT_TRUE(s.ok()) << s;
  s = b.Connect(rank_a, *ea);
  ASSERT_TRUE(s.ok()) << s;
}

// Registered memory on one transport.
struct Buffer {
  std::unique_ptr<uint64_t[]> words;
  char* data = nullptr;
  size_t size = 0;
  MemoryRegion mr;
};

Buffer MakeBuffer(VerbsTransport& t, size_t size) {
  Buffer b;
  b.words.reset(new uint64_t[(size + 7) / 8]());
  b.data = reinterpret_cast<char*>(b.words.get());
  b.size = size;
  auto mr = t.RegisterMemory(b.data, size);
  EXPECT_TRUE(mr.ok()) << mr.status();
  if (mr.ok()) b.mr = *mr;
  return b;
}

void FillPattern(Buffer& b, uint32_t seed) {
  for (size_t i = 0; i < b.size; ++i) {
    b.data[i] = static_cast<char>((i * 131 + seed * 7 + (i >> 12)) & 0xff);
  }
}

// Collects exactly `n` completions, or fewer if the deadline passes. Arms
// the fd whenever a poll comes back short, as the fault loop does.
std::vector<WorkCompletion> WaitCompletions(Transport& t, size_t n) {
  std::vector<WorkCompletion> got;
  WorkCompletion wcs[256];
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kDeadlineMs);
  while (got.size() < n) {
    int k = t.PollCompletions(wcs, 256);
    got.insert(got.end(), wcs, wcs + k);
    if (k == 256) continue;
    t.ArmCompletionFd();
    if (got.size() >= n) break;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) break;
    pollfd p{t.completion_fd(), POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(left));
  }
  return got;
}

// Drains `t`'s completions on a thread until stopped: the consumer a node
// always has, which message SENDs need to get their buffers back.
class Drainer {
 public:
  explicit Drainer(Transport& t) : t_(t), thread_([this] { Run(); }) {}
  ~Drainer() {
    stop_ = true;
    thread_.join();
  }

 private:
  void Run() {
    WorkCompletion wcs[64];
    while (!stop_) {
      int k = t_.PollCompletions(wcs, 64);
      if (k == 64) continue;
      t_.ArmCompletionFd();
      pollfd p{t_.completion_fd(), POLLIN, 0};
      ::poll(&p, 1, 50);
    }
  }
  Transport& t_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

WorkRequest Read(uint64_t id, Buffer& local, size_t local_off, Buffer& remote,
                 size_t remote_off, uint32_t len) {
  WorkRequest wr;
  wr.wr_id = id;
  wr.opcode = WorkOpcode::kRead;
  wr.local = local.data + local_off;
  wr.lkey = local.mr.lkey;
  wr.length = len;
  wr.remote_addr = remote.mr.addr + remote_off;
  wr.rkey = remote.mr.rkey;
  return wr;
}

// Captures log lines for the life of the object.
class LogCapture {
 public:
  LogCapture() {
    previous_ = SetLogSink([this](LogLevel level, absl::string_view line) {
      absl::MutexLock lock(&mu_);
      lines_.emplace_back(level, std::string(line));
      fprintf(stderr, "[log %d] %.*s\n", static_cast<int>(level),
              static_cast<int>(line.size()), line.data());
    });
  }
  ~LogCapture() { SetLogSink(previous_); }

  bool WaitFor(LogLevel level, std::vector<std::string> parts) {
    absl::MutexLock lock(&mu_);
    auto found = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return Matching(level, parts) > 0;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&found),
                                absl::Milliseconds(kDeadlineMs));
  }
  int Count(LogLevel level, std::vector<std::string> parts) {
    absl::MutexLock lock(&mu_);
    return Matching(level, parts);
  }

 private:
  int Matching(LogLevel level, const std::vector<std::string>& parts)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    int n = 0;
    for (const auto& [l, line] : lines_) {
      if (l != level) continue;
      bool all = true;
      for (const auto& p : parts) all = all && absl::StrContains(line, p);
      n += all;
    }
    return n;
  }

  LogSink previous_;
  absl::Mutex mu_;
  std::vector<std::pair<LogLevel, std::string>> lines_ ABSL_GUARDED_BY(mu_);
};

// A requester (rank 0) connected to a target (rank 1).
class VerbsTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto [da, db] = DevicePair();
    {
      MAKE_OR_SKIP(r, 0, da);
      requester_ = std::move(r);
    }
    {
      MAKE_OR_SKIP(t, 1, db);
      target_ = std::move(t);
    }
    ConnectPair(*requester_, 0, *target_, 1);
  }
  std::unique_ptr<VerbsTransport> requester_;
  std::unique_ptr<VerbsTransport> target_;
};

// 1. READ, WRITE and atomics move exactly the right bytes and values.
TEST_F(VerbsTransportTest, ReadWriteAndAtomicsAreExact) {
  Buffer remote = MakeBuffer(*target_, 2 << 20);
  Buffer local = MakeBuffer(*requester_, 2 << 20);
  FillPattern(remote, 1);

  WorkRequest small = Read(1, local, 0, remote, 4096 + 7, 4096);
  WorkRequest big = Read(2, local, 8192, remote, 12345, 1 << 20);
  small.next = &big;
  ASSERT_TRUE(requester_->PostSend(1, &small).ok());
  auto wcs = WaitCompletions(*requester_, 2);
  ASSERT_EQ(wcs.size(), 2u);
  EXPECT_EQ(wcs[0].wr_id, 1u);
  EXPECT_EQ(wcs[1].wr_id, 2u);
  for (const auto& wc : wcs) {
    EXPECT_EQ(wc.status, WcStatus::kSuccess) << WcStatusName(wc.status);
    EXPECT_EQ(wc.peer, 1);
    EXPECT_EQ(wc.opcode, WorkOpcode::kRead);
  }
  EXPECT_EQ(wcs[0].byte_len, 4096u);
  EXPECT_EQ(wcs[1].byte_len, 1u << 20);
  EXPECT_EQ(std::memcmp(local.data, remote.data + 4096 + 7, 4096), 0);
  EXPECT_EQ(std::memcmp(local.data + 8192, remote.data + 12345, 1 << 20), 0);

  for (int i = 0; i < 4096; ++i) local.data[i] = static_cast<char>(i * 31 + 5);
  std::vector<char> before(remote.data, remote.data + remote.size);
  WorkRequest w;
  w.wr_id = 3;
  w.opcode = WorkOpcode::kWrite;
  w.local = local.data;
  w.lkey = local.mr.lkey;
  w.length = 4096;
  w.remote_addr = remote.mr.addr + 65536 + 3;
  w.rkey = remote.mr.rkey;
  ASSERT_TRUE(requester_->PostSend(1, &w).ok());
  wcs = WaitCompletions(*requester_, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].status, WcStatus::kSuccess);
  EXPECT_EQ(wcs[0].opcode, WorkOpcode::kWrite);
  EXPECT_EQ(std::memcmp(remote.data + 65536 + 3, local.data, 4096), 0);
  EXPECT_EQ(std::memcmp(remote.data, before.data(), 65536 + 3), 0);
  EXPECT_EQ(std::memcmp(remote.data + 65536 + 3 + 4096,
                        before.data() + 65536 + 3 + 4096,
                        remote.size - (65536 + 3 + 4096)),
            0);

  uint64_t* word = reinterpret_cast<uint64_t*>(remote.data + 1024);
  *word = 100;
  uint64_t* old = reinterpret_cast<uint64_t*>(local.data + 4096);
  auto atomic = [&](uint64_t id, WorkOpcode op, uint64_t a, uint64_t s) {
    WorkRequest wr;
    wr.wr_id = id;
    wr.opcode = op;
    wr.local = old;
    wr.lkey = local.mr.lkey;
    wr.length = 8;
    wr.remote_addr = remote.mr.addr + 1024;
    wr.rkey = remote.mr.rkey;
    wr.compare_add = a;
    wr.swap = s;
    *old = 0xdeadbeef;
    EXPECT_TRUE(requester_->PostSend(1, &wr).ok());
    auto got = WaitCompletions(*requester_, 1);
    EXPECT_EQ(got.size(), 1u);
    if (!got.empty()) {
      EXPECT_EQ(got[0].status, WcStatus::kSuccess);
      EXPECT_EQ(got[0].opcode, op);
    }
    return *old;
  };
  EXPECT_EQ(atomic(4, WorkOpcode::kFetchAdd, 5, 0), 100u);
  EXPECT_EQ(*word, 105u);
  EXPECT_EQ(atomic(5, WorkOpcode::kCompareSwap, 105, 777), 105u);
  EXPECT_EQ(*word, 777u);
  EXPECT_EQ(atomic(6, WorkOpcode::kCompareSwap, 105, 999), 777u);  // no swap
  EXPECT_EQ(*word, 777u);
}

// 1b. 4 threads, 2000 fetch-adds each in chains of 25, on one word, far
// past the send queue (so posting threads and the poller share the queued
// work): every old value 0..7999 comes back exactly once.
TEST_F(VerbsTransportTest, ConcurrentFetchAddIsAtomic) {
  Buffer remote = MakeBuffer(*target_, 4096);
  constexpr int kThreads = 4, kPerThread = 2000, kChain = 25;
  Buffer olds = MakeBuffer(*requester_, 8 * kThreads * kPerThread);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<WorkRequest> wrs(kChain);
      for (int i = 0; i < kPerThread; i += kChain) {
        for (int j = 0; j < kChain; ++j) {
          const size_t slot = static_cast<size_t>(t) * kPerThread + i + j;
          WorkRequest& wr = wrs[j];
          wr = WorkRequest();
          wr.wr_id = slot;
          wr.opcode = WorkOpcode::kFetchAdd;
          wr.local = olds.data + 8 * slot;
          wr.lkey = olds.mr.lkey;
          wr.length = 8;
          wr.remote_addr = remote.mr.addr;
          wr.rkey = remote.mr.rkey;
          wr.compare_add = 1;
          wr.next = j + 1 < kChain ? &wrs[j + 1] : nullptr;
        }
        EXPECT_TRUE(requester_->PostSend(1, &wrs[0]).ok());
      }
    });
  }
  auto done = WaitCompletions(*requester_, kThreads * kPerThread);
  for (auto& t : threads) t.join();
  ASSERT_EQ(done.size(), static_cast<size_t>(kThreads * kPerThread));
  std::vector<uint64_t> values;
  for (const auto& wc : done) {
    ASSERT_EQ(wc.status, WcStatus::kSuccess) << WcStatusName(wc.status);
    uint64_t v;
    std::memcpy(&v, olds.data + 8 * wc.wr_id, 8);
    values.push_back(v);
  }
  EXPECT_EQ(*reinterpret_cast<uint64_t*>(remote.data),
            static_cast<uint64_t>(kThreads * kPerThread));
  std::sort(values.begin(), values.end());
  for (size_t i = 0; i < values.size(); ++i) ASSERT_EQ(values[i], i);
}

// 2. A chain of 64 READs with only the last signalled: one completion, all
// 64 buffers right, and nothing else in the queue.
TEST_F(VerbsTransportTest, SelectivelySignalledChainGivesOneCompletion) {
  Buffer remote = MakeBuffer(*target_, 1 << 20);
  Buffer local = MakeBuffer(*requester_, 64 * 4096);
  FillPattern(remote, 2);
  std::vector<WorkRequest> wrs(64);
  for (int i = 0; i < 64; ++i) {
    wrs[i] = Read(i, local, i * 4096, remote, (i * 7919) % (1000 * 1024), 4096);
    wrs[i].signaled = i == 63;
    wrs[i].next = i < 63 ? &wrs[i + 1] : nullptr;
  }
  ASSERT_TRUE(requester_->PostSend(1, &wrs[0]).ok());
  auto wcs = WaitCompletions(*requester_, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].wr_id, 63u);
  EXPECT_EQ(wcs[0].status, WcStatus::kSuccess);
  for (int i = 0; i < 64; ++i) {
    EXPECT_EQ(std::memcmp(local.data + i * 4096,
                          remote.data + (i * 7919) % (1000 * 1024), 4096),
              0)
        << "buffer " << i;
  }
  WorkRequest probe = Read(1000, local, 0, remote, 0, 8);
  ASSERT_TRUE(requester_->PostSend(1, &probe).ok());
  wcs = WaitCompletions(*requester_, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].wr_id, 1000u);
  WorkCompletion extra;
  EXPECT_EQ(requester_->PollCompletions(&extra, 1), 0);
}

// 3. Far more READs than the send queue holds, posted at once in chains of
// 32 without polling: none is dropped, each completes once, in posting
// order, with the right bytes (back-pressure queues inside the transport).
TEST_F(VerbsTransportTest, ManyOutstandingReadsPastTheSendQueueAllComplete) {
  constexpr int kReads = 8 * VerbsTransport::kSendQueueDepth;
  constexpr uint32_t kLen = 1024;
  Buffer remote = MakeBuffer(*target_, 1 << 20);
  Buffer local = MakeBuffer(*requester_, kReads * kLen);
  FillPattern(remote, 3);
  auto remote_off = [](int i) {
    return (static_cast<size_t>(i) * 97 % 1000) * kLen + i % 13;
  };
  std::vector<WorkRequest> wrs(kReads);
  for (int i = 0; i < kReads; i += 32) {
    int end = std::min(kReads, i + 32);
    for (int j = i; j < end; ++j) {
      wrs[j] = Read(j, local, static_cast<size_t>(j) * kLen, remote,
                    remote_off(j), kLen);
      wrs[j].next = j + 1 < end ? &wrs[j + 1] : nullptr;
    }
    ASSERT_TRUE(requester_->PostSend(1, &wrs[i]).ok());
  }
  auto wcs = WaitCompletions(*requester_, kReads);
  ASSERT_EQ(wcs.size(), static_cast<size_t>(kReads));
  for (size_t k = 0; k < wcs.size(); ++k) {
    ASSERT_EQ(wcs[k].status, WcStatus::kSuccess) << k;
    ASSERT_EQ(wcs[k].wr_id, k) << "completions follow posting order";
  }
  for (int i = 0; i < kReads; ++i) {
    ASSERT_EQ(std::memcmp(local.data + static_cast<size_t>(i) * kLen,
                          remote.data + remote_off(i), kLen),
              0)
        << "read " << i;
  }
}

// 3b. Unsignalled READs far past the send queue, then one signalled: the
// transport signals every kUnsigBatch-th itself (so the queue drains) but
// reports only the one the caller asked for.
TEST_F(VerbsTransportTest, UnsignalledFloodReportsOnlyTheSignalledOne) {
  constexpr int kReads = 4 * VerbsTransport::kSendQueueDepth + 1;
  Buffer remote = MakeBuffer(*target_, 1 << 20);
  Buffer local = MakeBuffer(*requester_, 64 * 1024);
  FillPattern(remote, 7);
  std::vector<WorkRequest> wrs(kReads);
  for (int i = 0; i < kReads; ++i) {
    wrs[i] = Read(i, local, (i % 16) * 4096, remote, (i % 200) * 4096, 4096);
    wrs[i].signaled = i == kReads - 1;
    wrs[i].next = i + 1 < kReads ? &wrs[i + 1] : nullptr;
  }
  ASSERT_TRUE(requester_->PostSend(1, &wrs[0]).ok());
  auto wcs = WaitCompletions(*requester_, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].wr_id, static_cast<uint64_t>(kReads - 1));
  EXPECT_EQ(wcs[0].status, WcStatus::kSuccess);
  const int last = kReads - 1;
  EXPECT_EQ(std::memcmp(local.data + (last % 16) * 4096,
                        remote.data + (last % 200) * 4096, 4096),
            0);
  WorkCompletion extra;
  requester_->ArmCompletionFd();
  EXPECT_EQ(requester_->PollCompletions(&extra, 1), 0);
}

// 4. Checked before posting, like TCP: a bad lkey or an unregistered local
// buffer is a local protection error, a misaligned atomic a remote access
// error; nothing is sent, so the QP keeps working.
TEST_F(VerbsTransportTest, LocalChecksFailAloneAndTheQueuePairSurvives) {
  LogCapture logs;
  Buffer remote = MakeBuffer(*target_, 64 * 1024);
  Buffer local = MakeBuffer(*requester_, 64 * 1024);
  FillPattern(remote, 4);
  std::vector<char> unregistered(4096);
  WorkRequest bad_local = Read(5, local, 0, remote, 0, 4096);
  bad_local.local = unregistered.data();
  WorkRequest bad_lkey = Read(6, local, 0, remote, 0, 4096);
  bad_lkey.lkey = local.mr.lkey + 1;
  WorkRequest misaligned;
  misaligned.wr_id = 7;
  misaligned.opcode = WorkOpcode::kFetchAdd;
  misaligned.local = local.data + 8192;
  misaligned.lkey = local.mr.lkey;
  misaligned.length = 8;
  misaligned.remote_addr = remote.mr.addr + 4;
  misaligned.rkey = remote.mr.rkey;
  WorkRequest after = Read(8, local, 0, remote, 200, 4096);
  bad_local.next = &bad_lkey;
  bad_lkey.next = &misaligned;
  misaligned.next = &after;
  ASSERT_TRUE(requester_->PostSend(1, &bad_local).ok());
  auto wcs = WaitCompletions(*requester_, 4);
  ASSERT_EQ(wcs.size(), 4u);
  std::sort(wcs.begin(), wcs.end(),
            [](auto& x, auto& y) { return x.wr_id < y.wr_id; });
  EXPECT_EQ(wcs[0].status, WcStatus::kLocalProtectionError);
  EXPECT_EQ(wcs[1].status, WcStatus::kLocalProtectionError);
  EXPECT_EQ(wcs[2].status, WcStatus::kRemoteAccessError);
  EXPECT_EQ(wcs[3].status, WcStatus::kSuccess);
  EXPECT_EQ(std::memcmp(local.data, remote.data + 200, 4096), 0);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning, {"peer 1", "aligned"}));
  EXPECT_EQ(logs.Count(LogLevel::kError, {}), 0);
}

TEST_F(VerbsTransportTest, MisuseIsRejected) {
  Buffer local = MakeBuffer(*requester_, 4096);
  WorkRequest wr;
  wr.local = local.data;
  wr.lkey = local.mr.lkey;
  wr.length = 8;
  absl::Status s = requester_->PostSend(7, &wr);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "peer 7")) << s;
  EXPECT_EQ(requester_->SendMessage(7, 1, {}).code(),
            absl::StatusCode::kFailedPrecondition);
  wr.opcode = WorkOpcode::kFetchAdd;
  wr.length = 4;
  s = requester_->PostSend(1, &wr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  // A QP made but not connected yet.
  ASSERT_TRUE(requester_->EndpointFor(9).ok());
  wr.opcode = WorkOpcode::kRead;
  EXPECT_EQ(requester_->PostSend(9, &wr).code(),
            absl::StatusCode::kFailedPrecondition);
  // Connect without EndpointFor.
  TransportEndpoint ep = target_->LocalEndpoint();
  ep.qp_num = 1234;
  EXPECT_EQ(requester_->Connect(11, ep).code(),
            absl::StatusCode::kFailedPrecondition);
  // Not a verbs endpoint.
  EXPECT_EQ(requester_->Connect(9, TransportEndpoint()).code(),
            absl::StatusCode::kInvalidArgument);
  std::string oversize(Transport::kMaxMessageBytes + 1, 'x');
  EXPECT_EQ(requester_->SendMessage(1, 1, oversize).code(),
            absl::StatusCode::kInvalidArgument);
}

// Three nodes: the requester (0) connected to a victim (1) and a bystander
// (2).
class VerbsFailureTest : public ::testing::Test {
 protected:
  void Make(uint8_t timeout_exp, uint8_t retries) {
    auto [da, db] = DevicePair();
    {
      MAKE_OR_SKIP(r, 0, da, timeout_exp, retries);
      requester_ = std::move(r);
    }
    {
      MAKE_OR_SKIP(v, 1, db, timeout_exp, retries);
      victim_ = std::move(v);
    }
    {
      MAKE_OR_SKIP(b, 2, db, timeout_exp, retries);
      bystander_ = std::move(b);
    }
    ConnectPair(*requester_, 0, *victim_, 1);
    ConnectPair(*requester_, 0, *bystander_, 2);
    victim_mem_ = MakeBuffer(*victim_, 1 << 20);
    bystander_mem_ = MakeBuffer(*bystander_, 1 << 20);
    FillPattern(victim_mem_, 8);
    FillPattern(bystander_mem_, 6);
    local_ = MakeBuffer(*requester_, 64 * 1024);
    check_ = MakeBuffer(*requester_, 4096);
  }

  void ExpectBystanderWorks() {
    WorkRequest wr = Read(500, check_, 0, bystander_mem_, 777, 4096);
    ASSERT_TRUE(requester_->PostSend(2, &wr).ok());
    auto wcs = WaitCompletions(*requester_, 1);
    ASSERT_EQ(wcs.size(), 1u);
    EXPECT_EQ(wcs[0].status, WcStatus::kSuccess);
    EXPECT_EQ(wcs[0].peer, 2);
    EXPECT_EQ(std::memcmp(check_.data, bystander_mem_.data + 777, 4096), 0);
  }

  void ExpectVictimFailsAtOnce() {
    WorkRequest late = Read(501, local_, 0, victim_mem_, 0, 64);
    late.signaled = false;  // failures complete regardless
    ASSERT_TRUE(requester_->PostSend(1, &late).ok());
    auto wcs = WaitCompletions(*requester_, 1);
    ASSERT_EQ(wcs.size(), 1u);
    EXPECT_EQ(wcs[0].wr_id, 501u);
    EXPECT_EQ(wcs[0].status, WcStatus::kPeerGone);
    EXPECT_EQ(wcs[0].peer, 1);
  }

  // Posts `n` 16 KiB READs to the victim, all signalled.
  void PostManyReads(int n) {
    std::vector<WorkRequest> wrs(n);
    for (int i = 0; i < n; ++i) {
      wrs[i] = Read(i, local_, 0, victim_mem_, 0, 16 * 1024);
      wrs[i].next = i + 1 < n ? &wrs[i + 1] : nullptr;
    }
    ASSERT_TRUE(requester_->PostSend(1, &wrs[0]).ok());
  }

  std::unique_ptr<VerbsTransport> requester_, victim_, bystander_;
  Buffer victim_mem_, bystander_mem_, local_, check_;
};

// Every one of `n` completions is success then kPeerGone, in posting order,
// with at least one kPeerGone.
void ExpectSuccessThenPeerGone(const std::vector<WorkCompletion>& wcs, int n) {
  ASSERT_EQ(wcs.size(), static_cast<size_t>(n));
  int gone = 0;
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(wcs[i].wr_id, static_cast<uint64_t>(i));
    if (wcs[i].status == WcStatus::kPeerGone) {
      gone++;
    } else {
      ASSERT_EQ(wcs[i].status, WcStatus::kSuccess)
          << i << ": " << WcStatusName(wcs[i].status);
      ASSERT_EQ(gone, 0) << "a success after a kPeerGone";
    }
  }
  EXPECT_GT(gone, 0) << "the peer died with nothing outstanding";
}

// 5. A bad rkey: the READ completes with kRemoteAccessError, logged with
// the peer, the operation and ibv_wc_status_str. On RC that error puts the
// pair's QPs (both ends) in ERR, so the work behind it and later posts to
// that peer complete with kPeerGone; the bystander is untouched; and a
// fresh EndpointFor/Connect exchange on both sides brings the pair back.
TEST_F(VerbsFailureTest, BadRkeyIsRemoteAccessErrorThenReconnect) {
  Make(14, 7);
  if (HasFatalFailure() || IsSkipped()) return;
  LogCapture logs;
  WorkRequest bad = Read(1, local_, 0, victim_mem_, 0, 4096);
  bad.rkey = victim_mem_.mr.rkey ^ 0x5a5a5a5a;
  bad.signaled = false;  // an error completes regardless
  WorkRequest behind = Read(2, local_, 4096, victim_mem_, 0, 4096);
  bad.next = &behind;
  ASSERT_TRUE(requester_->PostSend(1, &bad).ok());
  auto wcs = WaitCompletions(*requester_, 2);
  ASSERT_EQ(wcs.size(), 2u);
  EXPECT_EQ(wcs[0].wr_id, 1u);
  EXPECT_EQ(wcs[0].status, WcStatus::kRemoteAccessError)
      << WcStatusName(wcs[0].status);
  EXPECT_EQ(wcs[1].wr_id, 2u);
  EXPECT_EQ(wcs[1].status, WcStatus::kPeerGone);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kError,
                           {"rank 0", "peer 1", "READ wr_id 1",
                            ibv_wc_status_str(IBV_WC_REM_ACCESS_ERR)}));
  ExpectVictimFailsAtOnce();
  EXPECT_EQ(requester_->SendMessage(1, 1, {}).code(),
            absl::StatusCode::kUnavailable);
  ExpectBystanderWorks();
  // The victim's end noticed too (its receives flushed).
  EXPECT_TRUE(logs.WaitFor(LogLevel::kError, {"rank 1", "peer 0", "error"}));

  // Reconnect: new QPs at both ends.
  ConnectPair(*requester_, 0, *victim_, 1);
  WorkRequest again = Read(3, local_, 0, victim_mem_, 100, 4096);
  ASSERT_TRUE(requester_->PostSend(1, &again).ok());
  wcs = WaitCompletions(*requester_, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].status, WcStatus::kSuccess);
  EXPECT_EQ(std::memcmp(local_.data, victim_mem_.data + 100, 4096), 0);
}

// 6. The target is destroyed with READs outstanding: its QP is gone, the
// NIC's transport retry (small here: 4.096 us * 2^12 = 17 ms, 3 retries)
// runs out and the outstanding READs complete with kPeerGone, in order,
// after the ones that succeeded. The bystander carries on.
TEST_F(VerbsFailureTest, DestroyedTargetFailsOutstandingWithPeerGone) {
  Make(12, 3);
  if (HasFatalFailure() || IsSkipped()) return;
  LogCapture logs;
  constexpr int kReads = 600;  // far more than soft-RoCE serves at once
  PostManyReads(kReads);
  victim_.reset();
  ExpectSuccessThenPeerGone(WaitCompletions(*requester_, kReads), kReads);
  EXPECT_TRUE(logs.WaitFor(
      LogLevel::kError,
      {"rank 0", "peer 1", ibv_wc_status_str(IBV_WC_RETRY_EXC_ERR)}));
  ExpectBystanderWorks();
  ExpectVictimFailsAtOnce();
}

// 6b. Membership declares the target dead while READs are outstanding.
TEST_F(VerbsFailureTest, PeerDiedFailsOutstandingWithPeerGone) {
  Make(14, 7);
  if (HasFatalFailure() || IsSkipped()) return;
  LogCapture logs;
  constexpr int kReads = 600;
  PostManyReads(kReads);
  requester_->PeerDied(1);
  ExpectSuccessThenPeerGone(WaitCompletions(*requester_, kReads), kReads);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kError, {"peer 1", "PeerDied"}));
  ExpectBystanderWorks();
  ExpectVictimFailsAtOnce();
  EXPECT_EQ(requester_->SendMessage(1, 1, {}).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(requester_->EndpointFor(1).status().code(),
            absl::StatusCode::kFailedPrecondition);
  TransportEndpoint ep = victim_->LocalEndpoint();
  ep.qp_num = 77;
  EXPECT_EQ(requester_->Connect(1, ep).code(),
            absl::StatusCode::kFailedPrecondition);
}

// 7. Messages arrive in order per sender, intact, with the sender's rank,
// on the receiver's "pw-verbs" thread; more than the receive buffers and
// send slots at once (receiver-not-ready back-pressure, queued sends).
TEST(VerbsTransportMessages, ArriveInOrderWithSenderRank) {
  auto [da, db] = DevicePair();
  MAKE_OR_SKIP(receiver, 5, db);
  MAKE_OR_SKIP(a, 3, da);
  MAKE_OR_SKIP(b, 4, da);
  struct Got {
    int peer;
    uint16_t type;
    std::string body;
    std::string thread;
  };
  absl::Mutex mu;
  std::vector<Got> got;
  receiver->SetMessageHandler(
      [&](int peer, uint16_t type, absl::Span<const char> body) {
        char name[16] = {};
        pthread_getname_np(pthread_self(), name, sizeof(name));
        absl::MutexLock lock(&mu);
        got.push_back(
            {peer, type, std::string(body.data(), body.size()), name});
      });
  ConnectPair(*a, 3, *receiver, 5);
  ConnectPair(*b, 4, *receiver, 5);
  Drainer drain_a(*a), drain_b(*b);

  constexpr int kMessages = 200;
  auto body_of = [](int sender, int i) {
    size_t size = (static_cast<size_t>(i) * 7919) %
                  (Transport::kMaxMessageBytes / 4 + 1);
    if (i == 1) size = Transport::kMaxMessageBytes;
    if (i == 2) size = 0;
    std::string s(size, '\0');
    for (size_t j = 0; j < size; ++j) s[j] = static_cast<char>(i + j * sender);
    return s;
  };
  std::thread sa([&] {
    for (int i = 0; i < kMessages; ++i) {
      std::string s = body_of(3, i);
      EXPECT_TRUE(a->SendMessage(5, static_cast<uint16_t>(i), s).ok());
    }
  });
  std::thread sb([&] {
    for (int i = 0; i < kMessages; ++i) {
      std::string s = body_of(4, i);
      EXPECT_TRUE(b->SendMessage(5, static_cast<uint16_t>(i + 1), s).ok());
    }
  });
  sa.join();
  sb.join();
  absl::MutexLock lock(&mu);
  auto all = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return got.size() >= 2 * kMessages;
  };
  ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all),
                                  absl::Milliseconds(kDeadlineMs)));
  ASSERT_EQ(got.size(), 2u * kMessages);
  int next[2] = {0, 0};
  for (const Got& g : got) {
    ASSERT_TRUE(g.peer == 3 || g.peer == 4) << g.peer;
    EXPECT_EQ(g.thread, "pw-verbs");
    int& i = next[g.peer - 3];
    EXPECT_EQ(g.type, static_cast<uint16_t>(g.peer == 3 ? i : i + 1));
    ASSERT_EQ(g.body, body_of(g.peer, i)) << "sender " << g.peer << " #" << i;
    ++i;
  }
  EXPECT_EQ(next[0], kMessages);
  EXPECT_EQ(next[1], kMessages);
}

// 8. Setup: the default port and GID (RoCEv2, IPv4-mapped), keys,
// idempotent endpoints and connections, and a named device that is missing.
TEST(VerbsTransportSetup, EndpointsKeysAndSelection) {
  auto [da, db] = DevicePair();
  MAKE_OR_SKIP(t, 0, "");
  EXPECT_TRUE(absl::StartsWith(t->Name(), "verbs(")) << t->Name();
  TransportEndpoint ep = t->LocalEndpoint();
  ASSERT_EQ(ep.gid.size(), 16u);
  EXPECT_EQ(static_cast<uint8_t>(ep.gid[10]), 0xff) << "IPv4-mapped GID";
  EXPECT_EQ(static_cast<uint8_t>(ep.gid[11]), 0xff) << "IPv4-mapped GID";
  EXPECT_EQ(ep.qp_num, 0u);
  if (t->device_name().rfind("rxe", 0) == 0) {
    EXPECT_EQ(t->gid_index(), 1) << "rxe's RoCEv2 IPv4-mapped GID";
  }
  std::vector<char> mem(4096);
  auto r1 = t->RegisterMemory(mem.data(), 2048);
  auto r2 = t->RegisterMemory(mem.data() + 2048, 2048);
  ASSERT_TRUE(r1.ok() && r2.ok());
  EXPECT_NE(r1->rkey, r2->rkey);
  EXPECT_TRUE(t->DeregisterMemory(*r1).ok());
  EXPECT_EQ(t->DeregisterMemory(*r1).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(t->RegisterMemory(nullptr, 10).status().code(),
            absl::StatusCode::kInvalidArgument);

  MAKE_OR_SKIP(u, 1, db);
  auto e1 = t->EndpointFor(1);
  auto e1_again = t->EndpointFor(1);
  ASSERT_TRUE(e1.ok() && e1_again.ok());
  EXPECT_NE(e1->qp_num, 0u);
  EXPECT_EQ(e1->qp_num, e1_again->qp_num);
  EXPECT_EQ(e1->psn, e1_again->psn);
  auto e0 = u->EndpointFor(0);
  ASSERT_TRUE(e0.ok());
  EXPECT_TRUE(t->Connect(1, *e0).ok());
  EXPECT_TRUE(t->Connect(1, *e0).ok()) << "idempotent";
  EXPECT_TRUE(u->Connect(0, *e1).ok());

  VerbsTransportConfig config;
  config.device = "no-such-device";
  auto missing = VerbsTransport::Create(config);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound)
      << missing.status();
  config = VerbsTransportConfig();
  config.gid_index = 200;
  auto no_gid = VerbsTransport::Create(config);
  EXPECT_EQ(no_gid.status().code(), absl::StatusCode::kNotFound)
      << no_gid.status();
}

}  // namespace
}  // namespace pagewire
