// tcp_transport_test.cc - TcpTransport between transports in one process
// over real sockets on 127.0.0.1: one-sided operations, selective signalling,
// deep pipelines, validation of bad input, dead peers and messages.
//
// Tests wait for completions with poll() on completion_fd() under a generous
// deadline, so a lost completion fails the test instead of hanging it (the
// transport itself has no timeouts).
#include "runtime/tcp_transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
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

constexpr int kDeadlineMs = 120 * 1000;

// Registered memory on one transport.
struct Buffer {
  std::unique_ptr<uint64_t[]> words;
  char* data = nullptr;
  size_t size = 0;
  MemoryRegion mr;
};

Buffer MakeBuffer(TcpTransport& t, size_t size) {
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

std::unique_ptr<TcpTransport> MakeTransport(int rank, uint32_t version = 1) {
  TcpTransportConfig config;
  config.rank = rank;
  config.bind_host = "127.0.0.1";
  config.protocol_version = version;
  auto t = TcpTransport::Create(config);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

void ConnectTo(TcpTransport& from, int rank, const TcpTransport& to) {
  absl::Status s = from.Connect(rank, to.LocalEndpoint());
  ASSERT_TRUE(s.ok()) << s;
}

// Collects exactly `n` completions, or fewer if the deadline passes.
std::vector<WorkCompletion> WaitCompletions(Transport& t, size_t n) {
  std::vector<WorkCompletion> got;
  WorkCompletion wcs[256];
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kDeadlineMs);
  while (got.size() < n) {
    int k = t.PollCompletions(wcs, 256);
    got.insert(got.end(), wcs, wcs + k);
    if (k > 0) continue;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) break;
    pollfd p{t.completion_fd(), POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(left));
  }
  return got;
}

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

  // Waits until a line at `level` contains every one of `parts`.
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
class TcpTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    requester_ = MakeTransport(0);
    target_ = MakeTransport(1);
    ASSERT_NE(requester_, nullptr);
    ASSERT_NE(target_, nullptr);
    ConnectTo(*requester_, 1, *target_);
  }
  std::unique_ptr<TcpTransport> requester_;
  std::unique_ptr<TcpTransport> target_;
};

// 1. READ, WRITE and atomics move exactly the right bytes and values.
TEST_F(TcpTransportTest, ReadWriteAndAtomicsAreExact) {
  Buffer remote = MakeBuffer(*target_, 2 << 20);
  Buffer local = MakeBuffer(*requester_, 2 << 20);
  FillPattern(remote, 1);

  // READ 4 KiB (at an odd offset) and 1 MiB.
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

  // WRITE 4 KiB lands exactly, neighbours untouched.
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

  // FETCH_ADD and COMPARE_SWAP on an aligned word.
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

// 1a. With a completion handler set, the completions of responses reach it
// on the transport's own thread, in order, and none reaches the queue; a
// post that fails at once still completes through the queue; without the
// handler, completions go back to the queue.
TEST_F(TcpTransportTest, CompletionHandlerRunsOnTheTransportThread) {
  Buffer remote = MakeBuffer(*target_, 1 << 20);
  Buffer local = MakeBuffer(*requester_, 1 << 20);
  FillPattern(remote, 3);

  absl::Mutex mu;
  std::vector<WorkCompletion> handled;
  std::vector<std::string> threads;
  ASSERT_TRUE(requester_->SetCompletionHandler(
      [&](absl::Span<const WorkCompletion> wcs) {
        char name[16] = {};
        pthread_getname_np(pthread_self(), name, sizeof(name));
        absl::MutexLock lock(&mu);
        for (const WorkCompletion& wc : wcs) {
          handled.push_back(wc);
          threads.emplace_back(name);
        }
      }));

  constexpr int kReads = 64;
  std::vector<WorkRequest> reads;
  for (int i = 0; i < kReads; ++i) {
    reads.push_back(Read(i, local, i * 4096, remote, i * 4096 + 5, 4096));
  }
  for (int i = 0; i + 1 < kReads; ++i) reads[i].next = &reads[i + 1];
  ASSERT_TRUE(requester_->PostSend(1, &reads[0]).ok());
  {
    absl::MutexLock lock(&mu);
    auto all = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return handled.size() >= static_cast<size_t>(kReads);
    };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all),
                                    absl::Milliseconds(kDeadlineMs)));
    for (int i = 0; i < kReads; ++i) {
      EXPECT_EQ(handled[i].wr_id, static_cast<uint64_t>(i));
      EXPECT_EQ(handled[i].status, WcStatus::kSuccess);
      EXPECT_EQ(threads[i], "pw-tcp");
    }
  }
  // The payload was in place when the handler heard of it.
  EXPECT_EQ(std::memcmp(local.data, remote.data + 5, kReads * 4096), 0);
  WorkCompletion wc;
  EXPECT_EQ(requester_->PollCompletions(&wc, 1), 0) << "nothing queued";

  // A local buffer outside every registered region fails at the post: that
  // completion goes to the queue (the handler may not run on the poster).
  char unregistered[64];
  WorkRequest bad = Read(100, local, 0, remote, 0, 64);
  bad.local = unregistered;
  ASSERT_TRUE(requester_->PostSend(1, &bad).ok());
  auto queued = WaitCompletions(*requester_, 1);
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0].wr_id, 100u);
  EXPECT_EQ(queued[0].status, WcStatus::kLocalProtectionError);

  // Removed: completions are queued again.
  ASSERT_TRUE(requester_->SetCompletionHandler(nullptr));
  WorkRequest again = Read(200, local, 0, remote, 0, 4096);
  ASSERT_TRUE(requester_->PostSend(1, &again).ok());
  queued = WaitCompletions(*requester_, 1);
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0].wr_id, 200u);
  EXPECT_EQ(queued[0].status, WcStatus::kSuccess);
  absl::MutexLock lock(&mu);
  EXPECT_EQ(handled.size(), static_cast<size_t>(kReads));
}

// 1b. 8 threads on two requesters, 10000 fetch-adds each: every old value
// 0..79999 is returned exactly once and the word ends at 80000.
TEST(TcpTransportConcurrency, FetchAddFromTwoRequestersIsAtomic) {
  auto target = MakeTransport(2);
  auto a = MakeTransport(0);
  auto b = MakeTransport(1);
  ASSERT_TRUE(target && a && b);
  Buffer remote = MakeBuffer(*target, 4096);
  ConnectTo(*a, 2, *target);
  ConnectTo(*b, 2, *target);

  constexpr int kThreads = 8;
  constexpr int kPerThread = 10000;
  constexpr int kChain = 32;
  TcpTransport* requesters[2] = {a.get(), b.get()};
  Buffer olds[2] = {MakeBuffer(*a, 8 * kThreads * kPerThread),
                    MakeBuffer(*b, 8 * kThreads * kPerThread)};

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const int r = t % 2;
      Buffer& local = olds[r];
      std::vector<WorkRequest> wrs(kChain);
      for (int i = 0; i < kPerThread; i += kChain) {
        for (int j = 0; j < kChain; ++j) {
          const size_t slot = static_cast<size_t>(t) * kPerThread + i + j;
          WorkRequest& wr = wrs[j];
          wr = WorkRequest();
          wr.wr_id = slot;
          wr.opcode = WorkOpcode::kFetchAdd;
          wr.local = local.data + 8 * slot;
          wr.lkey = local.mr.lkey;
          wr.length = 8;
          wr.remote_addr = remote.mr.addr;
          wr.rkey = remote.mr.rkey;
          wr.compare_add = 1;
          wr.next = (j + 1 < kChain && i + j + 1 < kPerThread) ? &wrs[j + 1]
                                                               : nullptr;
          if (wr.next == nullptr) break;
        }
        EXPECT_TRUE(requesters[r]->PostSend(2, &wrs[0]).ok());
      }
    });
  }
  // One consumer per requester (PollCompletions is single-consumer).
  std::vector<WorkCompletion> done[2];
  std::thread consumers[2];
  for (int r = 0; r < 2; ++r) {
    consumers[r] = std::thread([&, r] {
      done[r] = WaitCompletions(*requesters[r], kThreads / 2 * kPerThread);
    });
  }
  for (auto& t : threads) t.join();
  for (auto& c : consumers) c.join();

  std::vector<uint64_t> values;
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(done[r].size(), static_cast<size_t>(kThreads / 2 * kPerThread));
    for (const auto& wc : done[r]) {
      ASSERT_EQ(wc.status, WcStatus::kSuccess) << WcStatusName(wc.status);
      uint64_t v;
      std::memcpy(&v, olds[r].data + 8 * wc.wr_id, 8);
      values.push_back(v);
    }
  }
  EXPECT_EQ(*reinterpret_cast<uint64_t*>(remote.data),
            static_cast<uint64_t>(kThreads * kPerThread));
  std::sort(values.begin(), values.end());
  ASSERT_EQ(values.size(), static_cast<size_t>(kThreads * kPerThread));
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(values[i], i) << "old values must be 0..N-1, each once";
  }
}

// 2. A chain of 64 READs with only the last signalled: one completion, all
// 64 buffers right, and nothing else in the queue.
TEST_F(TcpTransportTest, SelectivelySignalledChainGivesOneCompletion) {
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
  // A later signalled READ is the very next completion: no stray ones.
  WorkRequest probe = Read(1000, local, 0, remote, 0, 8);
  ASSERT_TRUE(requester_->PostSend(1, &probe).ok());
  wcs = WaitCompletions(*requester_, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].wr_id, 1000u);
  WorkCompletion extra;
  EXPECT_EQ(requester_->PollCompletions(&extra, 1), 0);
}

// 3. 10000 READs outstanding at once (chains of 32, no waiting): every one
// completes, once, with the right bytes.
TEST_F(TcpTransportTest, TenThousandOutstandingReadsAllComplete) {
  constexpr int kReads = 10000;
  constexpr uint32_t kLen = 1024;
  Buffer remote = MakeBuffer(*target_, 1 << 20);
  Buffer local = MakeBuffer(*requester_, kReads * kLen);
  FillPattern(remote, 3);
  auto remote_off = [](int i) { return (static_cast<size_t>(i) * 97 % 1000) * kLen + i % 13; };
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
  std::vector<int> seen(kReads, 0);
  for (size_t k = 0; k < wcs.size(); ++k) {
    ASSERT_EQ(wcs[k].status, WcStatus::kSuccess);
    ASSERT_LT(wcs[k].wr_id, static_cast<uint64_t>(kReads));
    EXPECT_EQ(wcs[k].wr_id, k) << "completions follow posting order";
    seen[wcs[k].wr_id]++;
  }
  for (int i = 0; i < kReads; ++i) {
    ASSERT_EQ(seen[i], 1) << "wr_id " << i;
    ASSERT_EQ(std::memcmp(local.data + static_cast<size_t>(i) * kLen,
                          remote.data + remote_off(i), kLen),
              0)
        << "read " << i;
  }
}

// 4. Bad rkey, out-of-range address and a misaligned atomic: a remote access
// error at the requester, a warning at the target naming the peer, and the
// same connection keeps working. A bad lkey is a local protection error.
TEST_F(TcpTransportTest, RemoteAccessErrorsAreReportedAndConnectionSurvives) {
  LogCapture logs;
  Buffer remote = MakeBuffer(*target_, 64 * 1024);
  Buffer local = MakeBuffer(*requester_, 64 * 1024);
  FillPattern(remote, 4);

  WorkRequest bad_key = Read(1, local, 0, remote, 0, 4096);
  bad_key.rkey = remote.mr.rkey ^ 0x5a5a5a5a;
  WorkRequest out_of_range = Read(2, local, 0, remote, 64 * 1024 - 100, 4096);
  WorkRequest good = Read(3, local, 8192, remote, 100, 4096);
  bad_key.next = &out_of_range;
  out_of_range.next = &good;
  bad_key.signaled = out_of_range.signaled = false;  // errors still complete
  ASSERT_TRUE(requester_->PostSend(1, &bad_key).ok());
  auto wcs = WaitCompletions(*requester_, 3);
  ASSERT_EQ(wcs.size(), 3u);
  EXPECT_EQ(wcs[0].wr_id, 1u);
  EXPECT_EQ(wcs[0].status, WcStatus::kRemoteAccessError);
  EXPECT_EQ(wcs[1].wr_id, 2u);
  EXPECT_EQ(wcs[1].status, WcStatus::kRemoteAccessError);
  EXPECT_EQ(wcs[2].wr_id, 3u);
  EXPECT_EQ(wcs[2].status, WcStatus::kSuccess);
  EXPECT_EQ(std::memcmp(local.data + 8192, remote.data + 100, 4096), 0);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning, {"peer 0", "unknown rkey"}));
  EXPECT_TRUE(
      logs.WaitFor(LogLevel::kWarning, {"peer 0", "outside the region"}));

  // Misaligned atomic, then a WRITE on the same connection.
  WorkRequest fa;
  fa.wr_id = 4;
  fa.opcode = WorkOpcode::kFetchAdd;
  fa.local = local.data;
  fa.lkey = local.mr.lkey;
  fa.length = 8;
  fa.remote_addr = remote.mr.addr + 4;
  fa.rkey = remote.mr.rkey;
  fa.compare_add = 1;
  ASSERT_TRUE(requester_->PostSend(1, &fa).ok());
  wcs = WaitCompletions(*requester_, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].status, WcStatus::kRemoteAccessError);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning, {"peer 0", "aligned"}));

  // A local buffer outside any region registered here, or a wrong lkey.
  std::vector<char> unregistered(4096);
  WorkRequest bad_local = Read(5, local, 0, remote, 0, 4096);
  bad_local.local = unregistered.data();
  WorkRequest bad_lkey = Read(6, local, 0, remote, 0, 4096);
  bad_lkey.lkey = local.mr.lkey + 1;
  WorkRequest after = Read(7, local, 0, remote, 200, 4096);
  bad_local.next = &bad_lkey;
  bad_lkey.next = &after;
  ASSERT_TRUE(requester_->PostSend(1, &bad_local).ok());
  wcs = WaitCompletions(*requester_, 3);
  ASSERT_EQ(wcs.size(), 3u);
  std::sort(wcs.begin(), wcs.end(),
            [](auto& x, auto& y) { return x.wr_id < y.wr_id; });
  EXPECT_EQ(wcs[0].status, WcStatus::kLocalProtectionError);
  EXPECT_EQ(wcs[1].status, WcStatus::kLocalProtectionError);
  EXPECT_EQ(wcs[2].status, WcStatus::kSuccess);
  EXPECT_EQ(std::memcmp(local.data, remote.data + 200, 4096), 0);

  // Still the one connection the target accepted at the start.
  EXPECT_EQ(logs.Count(LogLevel::kInfo, {"closed"}), 0);
  EXPECT_EQ(logs.Count(LogLevel::kError, {}), 0);
}

TEST_F(TcpTransportTest, PostingToAPeerNeverConnectedFails) {
  Buffer local = MakeBuffer(*requester_, 4096);
  WorkRequest wr;
  wr.local = local.data;
  wr.lkey = local.mr.lkey;
  wr.length = 8;
  absl::Status s = requester_->PostSend(7, &wr);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "peer 7")) << s;
  s = requester_->SendMessage(7, 1, {});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  // A malformed chain is rejected whole.
  wr.opcode = WorkOpcode::kFetchAdd;
  wr.length = 4;
  s = requester_->PostSend(1, &wr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

// Opens a raw TCP connection to `t`.
int RawConnect(const TcpTransport& t) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(t.LocalEndpoint().port));
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// True once the transport has closed `fd`'s connection (EOF or reset).
bool ClosedByPeer(int fd) {
  char buf[256];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, kDeadlineMs) <= 0) return false;
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) return true;  // responses to valid frames are skipped
  }
}

tcp_internal::Hello ValidHello(int rank, uint32_t version = 1) {
  tcp_internal::Hello h;
  std::memcpy(h.magic, tcp_internal::kHelloMagic, sizeof(h.magic));
  h.protocol_version = version;
  h.rank = rank;
  return h;
}

// 5. Garbage on the port, a bad version, an unknown frame kind and an
// oversized frame each close only their own connection, with a warning,
// while a legitimate peer's READs keep succeeding.
TEST_F(TcpTransportTest, GarbageConnectionsAreRejectedOthersCarryOn) {
  LogCapture logs;
  Buffer remote = MakeBuffer(*target_, 1 << 20);
  Buffer local = MakeBuffer(*requester_, 64 * 4096);
  FillPattern(remote, 5);

  std::atomic<bool> stop{false};
  std::atomic<int> good_batches{0};
  std::atomic<int> failures{0};
  std::thread reader([&] {
    std::vector<WorkRequest> wrs(64);
    for (int batch = 0; !stop.load() || batch < 20; ++batch) {
      for (int i = 0; i < 64; ++i) {
        wrs[i] = Read(batch * 64 + i, local, i * 4096, remote,
                      ((batch * 64 + i) * 4099) % (1000 * 1024), 4096);
        wrs[i].next = i < 63 ? &wrs[i + 1] : nullptr;
      }
      if (!requester_->PostSend(1, &wrs[0]).ok()) {
        failures++;
        return;
      }
      auto wcs = WaitCompletions(*requester_, 64);
      bool ok = wcs.size() == 64;
      for (auto& wc : wcs) ok = ok && wc.status == WcStatus::kSuccess;
      for (int i = 0; ok && i < 64; ++i) {
        ok = std::memcmp(local.data + i * 4096,
                         remote.data + ((batch * 64 + i) * 4099) % (1000 * 1024),
                         4096) == 0;
      }
      if (!ok) {
        failures++;
        return;
      }
      good_batches++;
    }
  });

  // Plain garbage.
  int g = RawConnect(*target_);
  ASSERT_GE(g, 0);
  std::string junk(1000, '\0');
  for (size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<char>(i * 37);
  ASSERT_EQ(::write(g, junk.data(), junk.size()),
            static_cast<ssize_t>(junk.size()));
  EXPECT_TRUE(ClosedByPeer(g));
  ::close(g);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning, {"connection from 127.0.0.1",
                                                 "bad magic"}));

  // The right magic with the wrong version.
  g = RawConnect(*target_);
  auto hello = ValidHello(9, 42);
  ASSERT_EQ(::write(g, &hello, sizeof(hello)), 16);
  EXPECT_TRUE(ClosedByPeer(g));
  ::close(g);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning, {"protocol version 42"}));

  // A valid hello, then an unknown frame kind.
  g = RawConnect(*target_);
  hello = ValidHello(9);
  tcp_internal::RequestHeader h{};
  h.kind = 77;
  ASSERT_EQ(::write(g, &hello, sizeof(hello)), 16);
  ASSERT_EQ(::write(g, &h, sizeof(h)), 40);
  EXPECT_TRUE(ClosedByPeer(g));
  ::close(g);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning,
                           {"peer 9", "unknown frame kind 77"}));

  // A valid hello, then an oversized message and an oversized READ.
  for (int kind : {2, 1}) {
    g = RawConnect(*target_);
    h = tcp_internal::RequestHeader{};
    h.kind = static_cast<uint8_t>(kind);
    h.opcode = static_cast<uint8_t>(WorkOpcode::kRead);
    h.length = 0xfffffff0u;
    ASSERT_EQ(::write(g, &hello, sizeof(hello)), 16);
    ASSERT_EQ(::write(g, &h, sizeof(h)), 40);
    EXPECT_TRUE(ClosedByPeer(g));
    ::close(g);
  }
  // The socket closes just before the line is logged: wait for both.
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning,
                           {"peer 9", "oversized frame: message of"}));
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning,
                           {"peer 9", "oversized frame: READ of"}));

  // A raw peer that speaks the protocol is served too.
  g = RawConnect(*target_);
  h = tcp_internal::RequestHeader{};
  h.kind = 1;
  h.opcode = static_cast<uint8_t>(WorkOpcode::kRead);
  h.length = 16;
  h.remote_addr = remote.mr.addr + 32;
  h.rkey = remote.mr.rkey;
  ASSERT_EQ(::write(g, &hello, sizeof(hello)), 16);
  ASSERT_EQ(::write(g, &h, sizeof(h)), 40);
  char resp[32];
  size_t got = 0;
  while (got < sizeof(resp)) {
    ssize_t n = ::read(g, resp + got, sizeof(resp) - got);
    ASSERT_GT(n, 0);
    got += n;
  }
  tcp_internal::ResponseHeader r;
  std::memcpy(&r, resp, sizeof(r));
  EXPECT_EQ(r.kind, 3);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.length, 16u);
  EXPECT_EQ(std::memcmp(resp + 16, remote.data + 32, 16), 0);
  ::close(g);

  stop = true;
  reader.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GE(good_batches.load(), 20);
}

// A requester speaking another protocol version is refused; its operations
// end with kPeerGone instead of hanging.
TEST(TcpTransportHello, VersionMismatchIsRejected) {
  LogCapture logs;
  auto target = MakeTransport(1, /*version=*/1);
  auto requester = MakeTransport(0, /*version=*/2);
  ASSERT_TRUE(target && requester);
  Buffer remote = MakeBuffer(*target, 4096);
  Buffer local = MakeBuffer(*requester, 4096);
  ConnectTo(*requester, 1, *target);
  WorkRequest wr = Read(1, local, 0, remote, 0, 64);
  ASSERT_TRUE(requester->PostSend(1, &wr).ok());
  auto wcs = WaitCompletions(*requester, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].status, WcStatus::kPeerGone);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning,
                           {"rank 1", "connection from 127.0.0.1",
                            "protocol version 2"}));
  EXPECT_TRUE(logs.WaitFor(LogLevel::kError, {"rank 0", "peer 1"}));
}

// Posts `n` 64 KiB READs from `local` (64 KiB) to `peer`, all signalled.
void PostManyReads(TcpTransport& t, int peer, Buffer& local, Buffer& remote,
                   int n) {
  std::vector<WorkRequest> wrs(n);
  for (int i = 0; i < n; ++i) {
    wrs[i] = Read(i, local, 0, remote, 0, 64 * 1024);
    wrs[i].next = i + 1 < n ? &wrs[i + 1] : nullptr;
  }
  ASSERT_TRUE(t.PostSend(peer, &wrs[0]).ok());
}

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
      ASSERT_EQ(wcs[i].status, WcStatus::kSuccess) << WcStatusName(wcs[i].status);
      ASSERT_EQ(gone, 0) << "a success after a kPeerGone";
    }
  }
  EXPECT_GT(gone, 0) << "the peer died with nothing outstanding";
}

class DeadPeerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    requester_ = MakeTransport(0);
    doomed_ = MakeTransport(1);
    third_ = MakeTransport(2);
    ASSERT_TRUE(requester_ && doomed_ && third_);
    doomed_mem_ = MakeBuffer(*doomed_, 1 << 20);
    third_mem_ = MakeBuffer(*third_, 1 << 20);
    FillPattern(third_mem_, 6);
    local_ = MakeBuffer(*requester_, 64 * 1024);
    check_ = MakeBuffer(*requester_, 4096);
    ConnectTo(*requester_, 1, *doomed_);
    ConnectTo(*requester_, 2, *third_);
  }

  // The third peer still serves READs, and the dead one fails at once.
  void ExpectOthersCarryOn() {
    WorkRequest wr = Read(500, check_, 0, third_mem_, 777, 4096);
    ASSERT_TRUE(requester_->PostSend(2, &wr).ok());
    auto wcs = WaitCompletions(*requester_, 1);
    ASSERT_EQ(wcs.size(), 1u);
    EXPECT_EQ(wcs[0].status, WcStatus::kSuccess);
    EXPECT_EQ(std::memcmp(check_.data, third_mem_.data + 777, 4096), 0);

    WorkRequest late = Read(501, local_, 0, doomed_mem_, 0, 64);
    late.signaled = false;  // failures complete regardless
    ASSERT_TRUE(requester_->PostSend(1, &late).ok());
    wcs = WaitCompletions(*requester_, 1);
    ASSERT_EQ(wcs.size(), 1u);
    EXPECT_EQ(wcs[0].wr_id, 501u);
    EXPECT_EQ(wcs[0].status, WcStatus::kPeerGone);
    EXPECT_EQ(wcs[0].peer, 1);
  }

  std::unique_ptr<TcpTransport> requester_, doomed_, third_;
  Buffer doomed_mem_, third_mem_, local_, check_;
};

// 6. The target is destroyed with READs outstanding.
TEST_F(DeadPeerTest, DestroyedTargetFailsOutstandingWithPeerGone) {
  LogCapture logs;
  constexpr int kReads = 2000;  // 125 MiB: far more than is served at once
  PostManyReads(*requester_, 1, local_, doomed_mem_, kReads);
  doomed_.reset();
  ExpectSuccessThenPeerGone(WaitCompletions(*requester_, kReads), kReads);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kError, {"rank 0", "peer 1"}));
  ExpectOthersCarryOn();
}

// 6b. Membership declares the target dead while READs are outstanding.
TEST_F(DeadPeerTest, PeerDiedFailsOutstandingWithPeerGone) {
  LogCapture logs;
  constexpr int kReads = 2000;
  PostManyReads(*requester_, 1, local_, doomed_mem_, kReads);
  requester_->PeerDied(1);
  ExpectSuccessThenPeerGone(WaitCompletions(*requester_, kReads), kReads);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kError, {"peer 1", "PeerDied"}));
  ExpectOthersCarryOn();
  EXPECT_EQ(requester_->SendMessage(1, 1, {}).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(requester_->Connect(1, doomed_->LocalEndpoint()).code(),
            absl::StatusCode::kFailedPrecondition);
  // The doomed node itself is fine: it saw its requester leave.
  EXPECT_TRUE(logs.WaitFor(LogLevel::kInfo, {"rank 1", "peer 0", "connection"}));
}

// 7. Messages arrive in order per sender, intact, with the sender's rank.
TEST(TcpTransportMessages, ArriveInOrderWithSenderRank) {
  auto receiver = MakeTransport(5);
  auto a = MakeTransport(3);
  auto b = MakeTransport(4);
  ASSERT_TRUE(receiver && a && b);
  struct Got {
    int peer;
    uint16_t type;
    std::string body;
  };
  absl::Mutex mu;
  std::vector<Got> got;
  receiver->SetMessageHandler(
      [&](int peer, uint16_t type, absl::Span<const char> body) {
        absl::MutexLock lock(&mu);
        got.push_back({peer, type, std::string(body.data(), body.size())});
      });
  ConnectTo(*a, 5, *receiver);
  ConnectTo(*b, 5, *receiver);

  constexpr int kMessages = 1000;
  auto body_of = [](int sender, int i) {
    size_t size = (static_cast<size_t>(i) * 7919) % (Transport::kMaxMessageBytes + 1);
    if (i == 1) size = Transport::kMaxMessageBytes;
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
  {
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
      int& i = next[g.peer - 3];
      EXPECT_EQ(g.type, static_cast<uint16_t>(g.peer == 3 ? i : i + 1));
      ASSERT_EQ(g.body, body_of(g.peer, i)) << "sender " << g.peer << " #" << i;
      ++i;
    }
    EXPECT_EQ(next[0], kMessages);
    EXPECT_EQ(next[1], kMessages);
  }
  std::string oversize(Transport::kMaxMessageBytes + 1, 'x');
  EXPECT_EQ(a->SendMessage(5, 1, oversize).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TcpTransportSetup, EndpointAndKeys) {
  TcpTransportConfig config;
  config.rank = 0;
  auto t = TcpTransport::Create(config);
  ASSERT_TRUE(t.ok()) << t.status();
  TransportEndpoint ep = (*t)->LocalEndpoint();
  EXPECT_EQ(ep.host, "127.0.0.1");  // wildcard bind advertises loopback
  EXPECT_NE(ep.port, 0u);
  EXPECT_EQ((*t)->Name(), "tcp");
  std::vector<char> mem(4096);
  auto r1 = (*t)->RegisterMemory(mem.data(), 2048);
  auto r2 = (*t)->RegisterMemory(mem.data() + 2048, 2048);
  ASSERT_TRUE(r1.ok() && r2.ok());
  EXPECT_NE(r1->rkey, 0u);
  EXPECT_NE(r1->lkey, 0u);
  EXPECT_NE(r1->rkey, r2->rkey);
  EXPECT_TRUE((*t)->DeregisterMemory(*r1).ok());
  EXPECT_EQ((*t)->DeregisterMemory(*r1).code(), absl::StatusCode::kNotFound);
  config.port = static_cast<uint16_t>(ep.port);  // taken
  auto clash = TcpTransport::Create(config);
  EXPECT_FALSE(clash.ok());
}

}  // namespace
}  // namespace pagewire
