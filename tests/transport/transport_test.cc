// transport_test.cc - one suite for every Transport: each case runs against
// TCP (TcpTransport on 127.0.0.1) and verbs (VerbsTransport over soft-RoCE),
// value-parametrised over a Fabric that makes and connects transports of its
// kind. Cases are named ".../Tcp" and ".../Verbs":
//   - on the host, Bazel runs //tests/transport:transport_test with
//     --gtest_filter=-*/Verbs (the host has no RDMA device);
//   - in the soft-RoCE VM, //tests/softroce:verbs_suite_vm_test runs the same
//     binary with --gtest_filter=*/Verbs.
// A Verbs case that finds no usable device FAILS (it never skips), and a run
// whose filter selects no test fails too (see main), so neither step can
// pass without running its cases.
//
// Where the two transports legitimately differ, the Fabric says so and the
// case checks the matching behaviour: a remote access error leaves a TCP
// connection usable but puts an RC queue pair pair into ERR (both ends must
// reconnect); a vanished peer is found by a broken socket on TCP and by the
// NIC's retry exhaustion on verbs. Cases only one transport has (TCP's wire
// format against garbage, verbs' GID selection) are instantiated for that
// kind alone.
//
// Tests wait for completions with poll() on completion_fd() under a generous
// deadline, so a lost completion fails the test instead of hanging it (the
// transports themselves have no timeouts). Verbs sizes are for soft-RoCE
// under TCG (~150 us per operation, ~15 MB/s).
#include <arpa/inet.h>
#include <dirent.h>
#include <infiniband/verbs.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "runtime/base/log.h"
#include "runtime/transport/tcp/tcp_handshake.h"
#include "runtime/transport/tcp/tcp_transport.h"
#include "runtime/transport/transport.h"
#include "runtime/transport/verbs/verbs_transport.h"

namespace pagewire {
namespace {

constexpr int kDeadlineMs = 300 * 1000;

// ---------------------------------------------------------------------------
// Fabrics: how to make and connect transports of one kind.

enum class Kind { kTcp, kVerbs };

// What a case may ask of a transport it makes.
struct MakeOptions {
  // Notice a vanished peer quickly (verbs: a short ACK timeout and few
  // retries; TCP notices a closed socket at once anyway).
  bool quick_peer_loss = false;
  uint32_t tcp_protocol_version = 2;
  // TCP: the job's secret the transport proves on every connection.
  std::string tcp_secret = "transport-test-secret";
  int tcp_max_unauthenticated = 64;
};

// A log line a case expects: its level and substrings.
struct ExpectedLog {
  LogLevel level;
  std::vector<std::string> parts;
};

class Fabric {
 public:
  virtual ~Fabric() = default;
  virtual Kind kind() const = 0;
  // A transport for `rank`. `side` 0 or 1 picks where it lives (verbs: the
  // two ends of the veth pair), so pairs across sides cross a real wire.
  // Null, with a test failure saying why, if it cannot be made.
  virtual std::unique_ptr<Transport> Make(int rank, int side,
                                          const MakeOptions& options) = 0;
  // Connects `a` (rank ra) and `b` (rank rb) in both directions; also how a
  // broken pair reconnects.
  virtual absl::Status Connect(Transport& a, int ra, Transport& b, int rb) = 0;

  // A remote access error (bad rkey, address outside the region) breaks the
  // pair: what is behind it completes with kPeerGone until it reconnects.
  virtual bool remote_error_breaks_pair() const = 0;
  // The log line naming peer, operation and status when rank 0's READ
  // wr_id 1 to rank 1 hits an unknown rkey.
  virtual ExpectedLog BadRkeyLog() const = 0;
  // The log line when rank 0 finds rank 1 gone without PeerDied.
  virtual ExpectedLog PeerLostLog() const = 0;
  // The thread that delivers messages.
  virtual const char* message_thread() const = 0;

  // Sizes: enough to matter, small enough for soft-RoCE under TCG.
  virtual int reads_past_the_queue() const = 0;  // back-pressure case
  virtual int fetch_adds_per_thread() const = 0;
  virtual int messages_per_sender() const = 0;
  // READs outstanding when a peer goes away: far more than the peer serves
  // at once, so some are in flight when it does.
  virtual int doomed_reads() const = 0;
  virtual uint32_t doomed_read_bytes() const = 0;
};

class TcpFabric final : public Fabric {
 public:
  Kind kind() const override { return Kind::kTcp; }
  std::unique_ptr<Transport> Make(int rank, int side,
                                  const MakeOptions& options) override {
    (void)side;
    TcpTransportConfig config;
    config.rank = rank;
    config.bind_host = "127.0.0.1";
    config.protocol_version = options.tcp_protocol_version;
    config.secret = options.tcp_secret;
    config.max_unauthenticated = options.tcp_max_unauthenticated;
    auto t = TcpTransport::Create(config);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(*t) : nullptr;
  }
  absl::Status Connect(Transport& a, int ra, Transport& b, int rb) override {
    if (absl::Status s = a.Connect(rb, b.LocalEndpoint()); !s.ok()) return s;
    return b.Connect(ra, a.LocalEndpoint());
  }
  bool remote_error_breaks_pair() const override { return false; }
  ExpectedLog BadRkeyLog() const override {
    // The target checks the key and says which peer sent what.
    return {LogLevel::kWarning, {"rank 1", "peer 0", "READ", "unknown rkey"}};
  }
  ExpectedLog PeerLostLog() const override {
    return {LogLevel::kError, {"rank 0", "peer 1"}};
  }
  const char* message_thread() const override { return "pw-tcp"; }
  int reads_past_the_queue() const override { return 10000; }
  int fetch_adds_per_thread() const override { return 10000; }
  int messages_per_sender() const override { return 1000; }
  int doomed_reads() const override { return 2000; }  // 125 MiB
  uint32_t doomed_read_bytes() const override { return 64 * 1024; }
};

class VerbsFabric final : public Fabric {
 public:
  Kind kind() const override { return Kind::kVerbs; }
  std::unique_ptr<Transport> Make(int rank, int side,
                                  const MakeOptions& options) override {
    VerbsTransportConfig config;
    config.rank = rank;
    config.device = Device(side);
    // 4.096 us * 2^12 = 17 ms, 3 retries: a vanished peer is noticed in
    // well under a second; the default (67 ms, 7 retries) otherwise.
    config.ack_timeout_exponent = options.quick_peer_loss ? 12 : 14;
    config.retry_count = options.quick_peer_loss ? 3 : 7;
    config.max_queue_pairs = 8;
    auto t = VerbsTransport::Create(config);
    EXPECT_TRUE(t.ok()) << "the Verbs cases need an RDMA device (they run in "
                           "the soft-RoCE VM; on the host run them out with "
                           "--gtest_filter=-*/Verbs): "
                        << t.status();
    return t.ok() ? std::move(*t) : nullptr;
  }
  absl::Status Connect(Transport& a, int ra, Transport& b, int rb) override {
    auto& va = static_cast<VerbsTransport&>(a);
    auto& vb = static_cast<VerbsTransport&>(b);
    // What the control plane does: each side's endpoint for the other.
    auto ea = va.EndpointFor(rb);
    if (!ea.ok()) return ea.status();
    auto eb = vb.EndpointFor(ra);
    if (!eb.ok()) return eb.status();
    if (absl::Status s = va.Connect(rb, *eb); !s.ok()) return s;
    return vb.Connect(ra, *ea);
  }
  bool remote_error_breaks_pair() const override { return true; }
  ExpectedLog BadRkeyLog() const override {
    return {LogLevel::kError,
            {"rank 0", "peer 1", "READ wr_id 1",
             ibv_wc_status_str(IBV_WC_REM_ACCESS_ERR)}};
  }
  ExpectedLog PeerLostLog() const override {
    return {LogLevel::kError,
            {"rank 0", "peer 1", ibv_wc_status_str(IBV_WC_RETRY_EXC_ERR)}};
  }
  const char* message_thread() const override { return "pw-verbs"; }
  int reads_past_the_queue() const override {
    return 8 * VerbsTransport::kSendQueueDepth;
  }
  int fetch_adds_per_thread() const override { return 1000; }
  int messages_per_sender() const override { return 200; }
  int doomed_reads() const override { return 600; }  // 9.4 MiB
  uint32_t doomed_read_bytes() const override { return 16 * 1024; }

 private:
  // rxe1 and rxe2 (a veth pair: real packets on a wire) when both exist,
  // else the first device for both sides (rxe loops back internally).
  // PAGEWIRE_TEST_DEVICE=rxe0 puts both sides on that device.
  static std::string Device(int side) {
    const char* forced = std::getenv("PAGEWIRE_TEST_DEVICE");
    if (forced != nullptr && *forced != '\0') return forced;
    std::vector<std::string> names;
    int num = 0;
    if (ibv_device** list = ibv_get_device_list(&num)) {
      for (int i = 0; i < num; ++i) names.push_back(ibv_get_device_name(list[i]));
      ibv_free_device_list(list);
    }
    auto has = [&](const char* n) {
      return std::find(names.begin(), names.end(), n) != names.end();
    };
    if (has("rxe1") && has("rxe2")) return side == 0 ? "rxe1" : "rxe2";
    return names.empty() ? "" : names[0];
  }
};

std::unique_ptr<Fabric> MakeFabric(Kind kind) {
  if (kind == Kind::kVerbs) return std::make_unique<VerbsFabric>();
  return std::make_unique<TcpFabric>();
}

void PrintTo(Kind kind, std::ostream* os) {
  *os << (kind == Kind::kVerbs ? "verbs" : "tcp");
}

std::string KindName(const ::testing::TestParamInfo<Kind>& info) {
  return info.param == Kind::kVerbs ? "Verbs" : "Tcp";
}

// ---------------------------------------------------------------------------
// Helpers.

// Registered memory on one transport.
struct Buffer {
  std::unique_ptr<uint64_t[]> words;
  char* data = nullptr;
  size_t size = 0;
  MemoryRegion mr;
};

Buffer MakeBuffer(Transport& t, size_t size) {
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
// always has (verbs message SENDs get their buffers back through it).
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
      ::poll(&p, 1, 50);  // only so that `stop_` is seen
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

  // Waits until a line at `level` contains every one of `parts`.
  bool WaitFor(LogLevel level, std::vector<std::string> parts) {
    absl::MutexLock lock(&mu_);
    auto found = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return Matching(level, parts) > 0;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&found),
                                absl::Milliseconds(kDeadlineMs));
  }
  bool WaitFor(const ExpectedLog& e) { return WaitFor(e.level, e.parts); }
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
  EXPECT_GT(gone, 0) << "the peer went away with nothing outstanding";
}

// ---------------------------------------------------------------------------
// The suite: a requester (rank 0, side 0) connected to a target (rank 1,
// side 1).

class TransportTest : public ::testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    fabric_ = MakeFabric(GetParam());
    requester_ = fabric_->Make(0, 0, {});
    target_ = fabric_->Make(1, 1, {});
    ASSERT_NE(requester_, nullptr);
    ASSERT_NE(target_, nullptr);
    ASSERT_TRUE(Connect(*requester_, 0, *target_, 1).ok());
  }
  absl::Status Connect(Transport& a, int ra, Transport& b, int rb) {
    absl::Status s = fabric_->Connect(a, ra, b, rb);
    EXPECT_TRUE(s.ok()) << s;
    return s;
  }

  std::unique_ptr<Fabric> fabric_;
  std::unique_ptr<Transport> requester_;
  std::unique_ptr<Transport> target_;
};

INSTANTIATE_TEST_SUITE_P(Transports, TransportTest,
                         ::testing::Values(Kind::kTcp, Kind::kVerbs), KindName);

// With a completion handler set (TCP), the completions of responses reach
// it on the transport's own thread, in order, and none reaches the queue; a
// post that fails at once still completes through the queue; without the
// handler, completions go back to the queue. Verbs has no such thread (the
// fault loop polls its CQ) and refuses a handler.
TEST_P(TransportTest, CompletionHandlerRunsOnTheTransportThread) {
  if (GetParam() == Kind::kVerbs) {
    EXPECT_FALSE(requester_->SetCompletionHandler(
        [](absl::Span<const WorkCompletion>) {}));
    return;
  }
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

// READ, WRITE and atomics move exactly the right bytes and values.
TEST_P(TransportTest, ReadWriteAndAtomicsAreExact) {
  Buffer remote = MakeBuffer(*target_, 2 << 20);
  Buffer local = MakeBuffer(*requester_, 2 << 20);
  FillPattern(remote, 1);

  // READ 4 KiB (at an odd offset) and 1 MiB, chained.
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

// Two requesters, 4 threads each, fetch-add one word in chains of 25 (far
// past a verbs send queue, so posting threads and the poller share the
// queued work): every old value 0..N-1 comes back exactly once and the word
// ends at N.
TEST_P(TransportTest, ConcurrentFetchAddFromTwoRequestersIsAtomic) {
  auto second = fabric_->Make(2, 0, {});
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(Connect(*second, 2, *target_, 1).ok());
  Buffer remote = MakeBuffer(*target_, 4096);
  const int per_thread = fabric_->fetch_adds_per_thread();
  constexpr int kThreadsPerRequester = 4, kChain = 25;
  Transport* requesters[2] = {requester_.get(), second.get()};
  const size_t per_requester =
      static_cast<size_t>(kThreadsPerRequester) * per_thread;
  Buffer olds[2] = {MakeBuffer(*requesters[0], 8 * per_requester),
                    MakeBuffer(*requesters[1], 8 * per_requester)};

  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    for (int t = 0; t < kThreadsPerRequester; ++t) {
      threads.emplace_back([&, r, t] {
        std::vector<WorkRequest> wrs(kChain);
        for (int i = 0; i < per_thread; i += kChain) {
          const int n = std::min(kChain, per_thread - i);
          for (int j = 0; j < n; ++j) {
            const size_t slot = static_cast<size_t>(t) * per_thread + i + j;
            WorkRequest& wr = wrs[j];
            wr = WorkRequest();
            wr.wr_id = slot;
            wr.opcode = WorkOpcode::kFetchAdd;
            wr.local = olds[r].data + 8 * slot;
            wr.lkey = olds[r].mr.lkey;
            wr.length = 8;
            wr.remote_addr = remote.mr.addr;
            wr.rkey = remote.mr.rkey;
            wr.compare_add = 1;
            wr.next = j + 1 < n ? &wrs[j + 1] : nullptr;
          }
          EXPECT_TRUE(requesters[r]->PostSend(1, &wrs[0]).ok());
        }
      });
    }
  }
  // One consumer per requester (PollCompletions is single-consumer).
  std::vector<WorkCompletion> done[2];
  std::thread consumers[2];
  for (int r = 0; r < 2; ++r) {
    consumers[r] = std::thread(
        [&, r] { done[r] = WaitCompletions(*requesters[r], per_requester); });
  }
  for (auto& t : threads) t.join();
  for (auto& c : consumers) c.join();

  std::vector<uint64_t> values;
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(done[r].size(), per_requester);
    for (const auto& wc : done[r]) {
      ASSERT_EQ(wc.status, WcStatus::kSuccess) << WcStatusName(wc.status);
      uint64_t v;
      std::memcpy(&v, olds[r].data + 8 * wc.wr_id, 8);
      values.push_back(v);
    }
  }
  EXPECT_EQ(*reinterpret_cast<uint64_t*>(remote.data), 2 * per_requester);
  std::sort(values.begin(), values.end());
  ASSERT_EQ(values.size(), 2 * per_requester);
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(values[i], i) << "old values must be 0..N-1, each once";
  }
}

// A chain of 64 READs with only the last signalled: one completion, all 64
// buffers right, and nothing else in the queue.
TEST_P(TransportTest, SelectivelySignalledChainGivesOneCompletion) {
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

// Back-pressure: far more READs than a verbs send queue holds, posted at
// once in chains of 32 without polling. None is dropped: each completes
// once, in posting order, with the right bytes (the transport waits for
// room; it never fails a post for lack of it).
TEST_P(TransportTest, ReadsFarPastTheSendQueueAllCompleteInOrder) {
  const int reads = fabric_->reads_past_the_queue();
  ASSERT_GE(reads, 8 * static_cast<int>(VerbsTransport::kSendQueueDepth));
  constexpr uint32_t kLen = 1024;
  Buffer remote = MakeBuffer(*target_, 1 << 20);
  Buffer local = MakeBuffer(*requester_, static_cast<size_t>(reads) * kLen);
  FillPattern(remote, 3);
  auto remote_off = [](int i) {
    return (static_cast<size_t>(i) * 97 % 1000) * kLen + i % 13;
  };
  std::vector<WorkRequest> wrs(reads);
  for (int i = 0; i < reads; i += 32) {
    int end = std::min(reads, i + 32);
    for (int j = i; j < end; ++j) {
      wrs[j] = Read(j, local, static_cast<size_t>(j) * kLen, remote,
                    remote_off(j), kLen);
      wrs[j].next = j + 1 < end ? &wrs[j + 1] : nullptr;
    }
    ASSERT_TRUE(requester_->PostSend(1, &wrs[i]).ok());
  }
  auto wcs = WaitCompletions(*requester_, reads);
  ASSERT_EQ(wcs.size(), static_cast<size_t>(reads));
  for (size_t k = 0; k < wcs.size(); ++k) {
    ASSERT_EQ(wcs[k].status, WcStatus::kSuccess) << k;
    ASSERT_EQ(wcs[k].wr_id, k) << "completions follow posting order";
  }
  for (int i = 0; i < reads; ++i) {
    ASSERT_EQ(std::memcmp(local.data + static_cast<size_t>(i) * kLen,
                          remote.data + remote_off(i), kLen),
              0)
        << "read " << i;
  }
}

// Unsignalled READs far past the send queue, then one signalled: only the
// one the caller asked for is reported (verbs signals every kUnsigBatch-th
// itself so its queue drains, and keeps those completions to itself).
TEST_P(TransportTest, UnsignalledFloodReportsOnlyTheSignalledOne) {
  const int reads = 4 * VerbsTransport::kSendQueueDepth + 1;
  Buffer remote = MakeBuffer(*target_, 1 << 20);
  Buffer local = MakeBuffer(*requester_, 64 * 1024);
  FillPattern(remote, 7);
  std::vector<WorkRequest> wrs(reads);
  for (int i = 0; i < reads; ++i) {
    wrs[i] = Read(i, local, (i % 16) * 4096, remote, (i % 200) * 4096, 4096);
    wrs[i].signaled = i == reads - 1;
    wrs[i].next = i + 1 < reads ? &wrs[i + 1] : nullptr;
  }
  ASSERT_TRUE(requester_->PostSend(1, &wrs[0]).ok());
  auto wcs = WaitCompletions(*requester_, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].wr_id, static_cast<uint64_t>(reads - 1));
  EXPECT_EQ(wcs[0].status, WcStatus::kSuccess);
  const int last = reads - 1;
  EXPECT_EQ(std::memcmp(local.data + (last % 16) * 4096,
                        remote.data + (last % 200) * 4096, 4096),
            0);
  WorkCompletion extra;
  requester_->ArmCompletionFd();
  EXPECT_EQ(requester_->PollCompletions(&extra, 1), 0);
}

// Waits, as the fault loop does, until completion_fd() is readable and a
// poll yields one completion; a readable fd with nothing to take (an event
// for a completion already taken) is re-armed and waited on again. False if
// the fd stays silent until the deadline: a lost wake-up.
bool WaitWokenForOne(Transport& t, WorkCompletion* out) {
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kDeadlineMs);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) return false;
    pollfd p{t.completion_fd(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    if (t.PollCompletions(out, 1) == 1) return true;
    t.ArmCompletionFd();
  }
}

// The consumer's contract: once a poll came back short and ArmCompletionFd
// ran, the next completion makes completion_fd() readable, wherever it
// lands. Rounds vary where: the READ is posted after one poll-and-arm,
// before it (its completion can land before the poll, between the poll and
// the arm, or after), after two in a row, or after the consumer was woken
// by a completion the transport made itself (a local protection error,
// which rings the software bell, not the NIC; verbs then still has its
// notification request standing and must not lose it). A lost wake-up
// leaves the fd silent and fails the round.
TEST_P(TransportTest, EveryCompletionWakesTheConsumer) {
  constexpr int kRounds = 200;
  Buffer remote = MakeBuffer(*target_, 64 * 4096);
  Buffer local = MakeBuffer(*requester_, 64 * 4096);
  FillPattern(remote, 9);
  std::vector<char> unregistered(4096);
  WorkCompletion wc;
  auto poll_and_arm = [&] {
    EXPECT_EQ(requester_->PollCompletions(&wc, 1), 0) << "no stray completion";
    requester_->ArmCompletionFd();
  };
  poll_and_arm();
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    const int variant = round % 4;
    if (variant == 2) {
      poll_and_arm();
    } else if (variant == 3) {
      WorkRequest bad = Read(100000 + round, local, 0, remote, 0, 4096);
      bad.local = unregistered.data();
      ASSERT_TRUE(requester_->PostSend(1, &bad).ok());
      ASSERT_TRUE(WaitWokenForOne(*requester_, &wc))
          << "the software completion woke nobody";
      EXPECT_EQ(wc.wr_id, static_cast<uint64_t>(100000 + round));
      EXPECT_EQ(wc.status, WcStatus::kLocalProtectionError);
      poll_and_arm();
    }
    const size_t off = static_cast<size_t>(round % 64) * 4096;
    WorkRequest wr = Read(round, local, off, remote, off, 4096);
    ASSERT_TRUE(requester_->PostSend(1, &wr).ok());
    // Variant 1 polls and arms while the READ is in flight: its completion
    // may be taken at once; if not, it lands after the poll, before or
    // after the arm, and must still wake the consumer.
    if (variant != 1 || requester_->PollCompletions(&wc, 1) == 0) {
      if (variant == 1) requester_->ArmCompletionFd();
      ASSERT_TRUE(WaitWokenForOne(*requester_, &wc))
          << "READ " << round << "'s completion woke nobody";
    }
    EXPECT_EQ(wc.wr_id, static_cast<uint64_t>(round));
    EXPECT_EQ(wc.status, WcStatus::kSuccess);
    EXPECT_EQ(std::memcmp(local.data + off, remote.data + off, 4096), 0);
    poll_and_arm();
  }
}

// Waits as the fault loop does when it sleeps: PrepareToSleep, poll(), and
// on a wake-up with nothing to take, ArmCompletionFd (its Drain) and again.
bool SleepUntilOne(Transport& t, WorkCompletion* out) {
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kDeadlineMs);
  for (;;) {
    if (t.PollCompletions(out, 1) == 1) return true;
    t.ArmCompletionFd();
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) return false;
    t.PrepareToSleep();
    pollfd p{t.completion_fd(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) == 0) return false;  // lost
  }
}

// The fault loop's contract (PrepareToSleep): it sleeps with no
// notification request while nothing is in flight (verbs), and it posts
// and polls its own READs without one. Every completion must still wake
// it: of work another thread posts while it sleeps unarmed (at once, or
// after a moment), of work it posted itself before PrepareToSleep, and of
// work it found by polling alone, after which it sleeps unarmed again.
TEST_P(TransportTest, ConsumerThatPreparesToSleepIsWokenForEveryCompletion) {
  constexpr int kRounds = 120;
  Buffer remote = MakeBuffer(*target_, 64 * 4096);
  Buffer local = MakeBuffer(*requester_, 64 * 4096);
  FillPattern(remote, 11);
  WorkCompletion wc;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    const size_t off = static_cast<size_t>(round % 64) * 4096;
    WorkRequest wr = Read(round, local, off, remote, off, 4096);
    const int variant = round % 3;
    if (variant == 0) {
      // Another thread posts while the consumer sleeps (or is about to).
      requester_->PrepareToSleep();
      std::thread poster([&, round] {
        if (round % 2) std::this_thread::sleep_for(std::chrono::microseconds(300));
        EXPECT_TRUE(requester_->PostSend(1, &wr).ok());
      });
      const bool woken = SleepUntilOne(*requester_, &wc);
      poster.join();
      ASSERT_TRUE(woken) << "a READ posted by another thread woke nobody";
    } else if (variant == 1) {
      // The consumer posts after it last got ready to sleep.
      requester_->PrepareToSleep();
      ASSERT_TRUE(requester_->PostSend(1, &wr).ok());
      ASSERT_TRUE(SleepUntilOne(*requester_, &wc))
          << "the consumer's own READ woke nobody";
    } else {
      // The consumer posts and finds the completion by polling alone.
      ASSERT_TRUE(requester_->PostSend(1, &wr).ok());
      auto deadline = std::chrono::steady_clock::now() +
                      std::chrono::milliseconds(kDeadlineMs);
      while (requester_->PollCompletions(&wc, 1) == 0) {
        ASSERT_LT(std::chrono::steady_clock::now(), deadline);
      }
    }
    EXPECT_EQ(wc.wr_id, static_cast<uint64_t>(round));
    EXPECT_EQ(wc.status, WcStatus::kSuccess);
    EXPECT_EQ(std::memcmp(local.data + off, remote.data + off, 4096), 0);
  }
  // Nothing left over, and the fd is quiet once drained.
  requester_->ArmCompletionFd();
  requester_->PrepareToSleep();
  EXPECT_EQ(requester_->PollCompletions(&wc, 1), 0);
}

// A bad lkey or an unregistered local buffer is a local protection error,
// a misaligned atomic a remote access error; each fails alone, and the
// connection carries the READ behind them.
TEST_P(TransportTest, LocalAndAlignmentErrorsFailAloneConnectionSurvives) {
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
  misaligned.compare_add = 1;
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
  // Whichever end checks the alignment says so, naming the other.
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning, {"peer", "aligned"}));
  EXPECT_EQ(logs.Count(LogLevel::kError, {}), 0);
}

// Posting to a peer never connected, a malformed chain and an oversized
// message are refused with a status, and nothing is sent.
TEST_P(TransportTest, MisuseIsRejected) {
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
  wr.opcode = WorkOpcode::kFetchAdd;
  wr.length = 4;  // atomics are 8 bytes
  s = requester_->PostSend(1, &wr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  std::string oversize(Transport::kMaxMessageBytes + 1, 'x');
  EXPECT_EQ(requester_->SendMessage(1, 1, oversize).code(),
            absl::StatusCode::kInvalidArgument);
}

// Registered regions get distinct keys; deregistering twice is NotFound.
TEST_P(TransportTest, RegistrationKeys) {
  std::vector<char> mem(4096);
  auto r1 = requester_->RegisterMemory(mem.data(), 2048);
  auto r2 = requester_->RegisterMemory(mem.data() + 2048, 2048);
  ASSERT_TRUE(r1.ok()) << r1.status();
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_NE(r1->rkey, r2->rkey);
  EXPECT_EQ(r1->addr, reinterpret_cast<uint64_t>(mem.data()));
  EXPECT_EQ(r1->length, 2048u);
  EXPECT_TRUE(requester_->DeregisterMemory(*r1).ok());
  EXPECT_EQ(requester_->DeregisterMemory(*r1).code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(requester_->DeregisterMemory(*r2).ok());
}

// Messages arrive in order per sender, intact, with the sender's rank, on
// the receiver's transport thread; more at once than verbs has receive
// buffers and send slots (receiver-not-ready back-pressure, queued sends).
TEST_P(TransportTest, MessagesArriveInOrderWithSenderRank) {
  auto receiver = fabric_->Make(5, 1, {});
  auto a = fabric_->Make(3, 0, {});
  auto b = fabric_->Make(4, 0, {});
  ASSERT_TRUE(receiver && a && b);
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
  ASSERT_TRUE(Connect(*a, 3, *receiver, 5).ok());
  ASSERT_TRUE(Connect(*b, 4, *receiver, 5).ok());
  Drainer drain_a(*a), drain_b(*b);

  const int messages = fabric_->messages_per_sender();
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
    for (int i = 0; i < messages; ++i) {
      std::string s = body_of(3, i);
      EXPECT_TRUE(a->SendMessage(5, static_cast<uint16_t>(i), s).ok());
    }
  });
  std::thread sb([&] {
    for (int i = 0; i < messages; ++i) {
      std::string s = body_of(4, i);
      EXPECT_TRUE(b->SendMessage(5, static_cast<uint16_t>(i + 1), s).ok());
    }
  });
  sa.join();
  sb.join();
  absl::MutexLock lock(&mu);
  auto all = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return got.size() >= 2u * messages;
  };
  ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all),
                                  absl::Milliseconds(kDeadlineMs)));
  ASSERT_EQ(got.size(), 2u * messages);
  int next[2] = {0, 0};
  for (const Got& g : got) {
    ASSERT_TRUE(g.peer == 3 || g.peer == 4) << g.peer;
    EXPECT_EQ(g.thread, fabric_->message_thread());
    int& i = next[g.peer - 3];
    EXPECT_EQ(g.type, static_cast<uint16_t>(g.peer == 3 ? i : i + 1));
    ASSERT_EQ(g.body, body_of(g.peer, i)) << "sender " << g.peer << " #" << i;
    ++i;
  }
  EXPECT_EQ(next[0], messages);
  EXPECT_EQ(next[1], messages);
}

// ---------------------------------------------------------------------------
// Failures: the requester (rank 0) connected to a victim (1) and a bystander
// (2).

class TransportFailureTest : public ::testing::TestWithParam<Kind> {
 protected:
  void Make(const MakeOptions& options) {
    fabric_ = MakeFabric(GetParam());
    requester_ = fabric_->Make(0, 0, options);
    victim_ = fabric_->Make(1, 1, options);
    bystander_ = fabric_->Make(2, 1, options);
    ASSERT_TRUE(requester_ && victim_ && bystander_);
    ASSERT_TRUE(fabric_->Connect(*requester_, 0, *victim_, 1).ok());
    ASSERT_TRUE(fabric_->Connect(*requester_, 0, *bystander_, 2).ok());
    victim_mem_ = MakeBuffer(*victim_, 1 << 20);
    bystander_mem_ = MakeBuffer(*bystander_, 1 << 20);
    FillPattern(victim_mem_, 8);
    FillPattern(bystander_mem_, 6);
    local_ = MakeBuffer(*requester_, 64 * 1024);
    check_ = MakeBuffer(*requester_, 4096);
  }

  // The bystander still serves READs, with the right bytes.
  void ExpectBystanderWorks() {
    WorkRequest wr = Read(500, check_, 0, bystander_mem_, 777, 4096);
    ASSERT_TRUE(requester_->PostSend(2, &wr).ok());
    auto wcs = WaitCompletions(*requester_, 1);
    ASSERT_EQ(wcs.size(), 1u);
    EXPECT_EQ(wcs[0].status, WcStatus::kSuccess);
    EXPECT_EQ(wcs[0].peer, 2);
    EXPECT_EQ(std::memcmp(check_.data, bystander_mem_.data + 777, 4096), 0);
  }

  // A READ to the victim completes at once with kPeerGone.
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

  // A READ to the victim succeeds with the right bytes.
  void ExpectVictimWorks(uint64_t id) {
    WorkRequest wr = Read(id, local_, 0, victim_mem_, 100, 4096);
    ASSERT_TRUE(requester_->PostSend(1, &wr).ok());
    auto wcs = WaitCompletions(*requester_, 1);
    ASSERT_EQ(wcs.size(), 1u);
    EXPECT_EQ(wcs[0].wr_id, id);
    EXPECT_EQ(wcs[0].status, WcStatus::kSuccess) << WcStatusName(wcs[0].status);
    EXPECT_EQ(std::memcmp(local_.data, victim_mem_.data + 100, 4096), 0);
  }

  // Posts the fabric's doomed_reads() READs to the victim, all signalled.
  int PostManyReads() {
    const int n = fabric_->doomed_reads();
    const uint32_t len = fabric_->doomed_read_bytes();
    std::vector<WorkRequest> wrs(n);
    for (int i = 0; i < n; ++i) {
      wrs[i] = Read(i, local_, 0, victim_mem_, 0, len);
      wrs[i].next = i + 1 < n ? &wrs[i + 1] : nullptr;
    }
    EXPECT_TRUE(requester_->PostSend(1, &wrs[0]).ok());
    return n;
  }

  // The buffers outlive the transports (members go in reverse order): the
  // victim may still be serving READs from its buffer, which the requester
  // gave up on, when the test ends.
  Buffer victim_mem_, bystander_mem_, local_, check_;
  std::unique_ptr<Fabric> fabric_;
  std::unique_ptr<Transport> requester_, victim_, bystander_;
};

INSTANTIATE_TEST_SUITE_P(Transports, TransportFailureTest,
                         ::testing::Values(Kind::kTcp, Kind::kVerbs), KindName);

// A bad rkey, then an address outside the region: each READ completes with
// kRemoteAccessError naming the peer and the operation, logged with the
// peer, the operation and the status. The READ chained behind it succeeds
// on TCP; on verbs the RC pair is in ERR, so it completes with kPeerGone,
// as does a later post, until both ends reconnect. The bystander is
// untouched throughout.
TEST_P(TransportFailureTest, RemoteAccessErrorIsACleanErrorCompletion) {
  Make({});
  if (HasFatalFailure()) return;
  LogCapture logs;
  const bool breaks = fabric_->remote_error_breaks_pair();
  for (int kind = 0; kind < 2; ++kind) {
    SCOPED_TRACE(kind == 0 ? "bad rkey" : "address outside the region");
    WorkRequest bad = Read(1, local_, 0, victim_mem_, 0, 4096);
    if (kind == 0) {
      bad.rkey = victim_mem_.mr.rkey ^ 0x5a5a5a5a;
    } else {
      bad.remote_addr = victim_mem_.mr.addr + victim_mem_.size - 100;
    }
    bad.signaled = false;  // an error completes regardless
    WorkRequest behind = Read(2, local_, 4096, victim_mem_, 0, 4096);
    bad.next = &behind;
    ASSERT_TRUE(requester_->PostSend(1, &bad).ok());
    auto wcs = WaitCompletions(*requester_, 2);
    ASSERT_EQ(wcs.size(), 2u);
    EXPECT_EQ(wcs[0].wr_id, 1u);
    EXPECT_EQ(wcs[0].status, WcStatus::kRemoteAccessError)
        << WcStatusName(wcs[0].status);
    EXPECT_EQ(wcs[0].peer, 1);
    EXPECT_EQ(wcs[0].opcode, WorkOpcode::kRead);
    EXPECT_EQ(wcs[1].wr_id, 2u);
    EXPECT_EQ(wcs[1].status,
              breaks ? WcStatus::kPeerGone : WcStatus::kSuccess)
        << WcStatusName(wcs[1].status);
    if (kind == 0) {
      EXPECT_TRUE(logs.WaitFor(fabric_->BadRkeyLog()));
    }
    if (breaks) {
      ExpectVictimFailsAtOnce();
      EXPECT_EQ(requester_->SendMessage(1, 1, {}).code(),
                absl::StatusCode::kUnavailable);
      // The victim's end noticed too (its receives flushed).
      EXPECT_TRUE(logs.WaitFor(LogLevel::kError, {"rank 1", "peer 0"}));
    }
    ExpectBystanderWorks();
    // Reconnecting (verbs: new queue pairs at both ends; TCP: the
    // connection is still there) brings the pair back.
    ASSERT_TRUE(fabric_->Connect(*requester_, 0, *victim_, 1).ok());
    ExpectVictimWorks(3);
  }
}

// The victim is destroyed with READs outstanding: they complete, in posting
// order, with success and then kPeerGone; the loss is logged naming the
// peer; the bystander carries on; later READs to the victim fail at once.
// On TCP a closed connection is not a death: what was outstanding waits
// (its session tries to reconnect) until membership's word, PeerDied().
// Verbs fails them when the NIC's retries run out.
TEST_P(TransportFailureTest, PeerGoneMidReadIsReportedOthersCarryOn) {
  MakeOptions quick;
  quick.quick_peer_loss = true;
  Make(quick);
  if (HasFatalFailure()) return;
  LogCapture logs;
  const int n = PostManyReads();
  if (GetParam() == Kind::kTcp) {
    // The first READ's answer shows the handshake done: a session that
    // never formed would fail what it carried instead of waiting.
    std::vector<WorkCompletion> wcs = WaitCompletions(*requester_, 1);
    ASSERT_GE(wcs.size(), 1u);
    victim_.reset();
    EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning,
                             {"rank 0", "peer 1", "wait for a new connection"}));
    // Whatever completes meanwhile (for 100 ms) is a READ served before the
    // victim went.
    WorkCompletion buf[256];
    for (int i = 0; i < 50; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      for (int k; (k = requester_->PollCompletions(buf, 256)) > 0;) {
        wcs.insert(wcs.end(), buf, buf + k);
      }
    }
    for (const WorkCompletion& wc : wcs) {
      EXPECT_EQ(wc.status, WcStatus::kSuccess)
          << "wr_id " << wc.wr_id << " failed before membership said so";
    }
    requester_->PeerDied(1);
    auto rest = WaitCompletions(*requester_, n - wcs.size());
    wcs.insert(wcs.end(), rest.begin(), rest.end());
    ExpectSuccessThenPeerGone(wcs, n);
  } else {
    victim_.reset();
    ExpectSuccessThenPeerGone(WaitCompletions(*requester_, n), n);
  }
  EXPECT_TRUE(logs.WaitFor(fabric_->PeerLostLog()));
  ExpectBystanderWorks();
  ExpectVictimFailsAtOnce();
}

// Membership declares the victim dead while READs are outstanding: the
// same, and the victim can no longer be messaged or reconnected.
TEST_P(TransportFailureTest, PeerDiedFailsOutstandingOthersCarryOn) {
  Make({});
  if (HasFatalFailure()) return;
  LogCapture logs;
  const int n = PostManyReads();
  requester_->PeerDied(1);
  ExpectSuccessThenPeerGone(WaitCompletions(*requester_, n), n);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kError, {"peer 1", "PeerDied"}));
  ExpectBystanderWorks();
  ExpectVictimFailsAtOnce();
  EXPECT_EQ(requester_->SendMessage(1, 1, {}).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(fabric_->Connect(*requester_, 0, *victim_, 1).code(),
            absl::StatusCode::kFailedPrecondition);
}

// ---------------------------------------------------------------------------
// TCP only: the wire format against garbage, protocol versions, the port.

class TcpWireTest : public TransportTest {};
INSTANTIATE_TEST_SUITE_P(Transports, TcpWireTest, ::testing::Values(Kind::kTcp),
                         KindName);

// Opens a raw TCP connection to `t`.
int RawConnect(const Transport& t) {
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

tcp_handshake::ClientHello ValidHello(int rank, uint32_t version = 2,
                                      uint64_t session = 0) {
  tcp_handshake::ClientHello h{};
  std::memcpy(h.magic, tcp_handshake::kClientMagic, sizeof(h.magic));
  h.protocol_version = version;
  h.rank = rank;
  h.session = session != 0 ? session : 1000 + rank;
  for (size_t i = 0; i < sizeof(h.nonce); ++i) {
    h.nonce[i] = static_cast<uint8_t>(rank * 31 + i);
  }
  return h;
}

// Reads exactly `n` bytes (false on EOF, error or the deadline).
bool ReadFull(int fd, void* out, size_t n) {
  char* p = static_cast<char*>(out);
  size_t got = 0;
  while (got < n) {
    pollfd pf{fd, POLLIN, 0};
    if (::poll(&pf, 1, kDeadlineMs) <= 0) return false;
    ssize_t k = ::read(fd, p + got, n - got);
    if (k <= 0) return false;
    got += static_cast<size_t>(k);
  }
  return true;
}

// The requester's half of the handshake, by hand, on a raw connection to a
// target of rank `target_rank`: sends `hello`, checks the challenge with
// `secret`'s key (false in `target_proved` if it fails) and answers with
// the proof made from `secret`. Returns the challenge's server nonce.
struct RawHandshake {
  int fd = -1;
  bool got_challenge = false;
  bool target_proved = false;
  uint64_t received = 0;  // the challenge's
  tcp_handshake::Nonce server_nonce{};
  tcp_handshake::ClientProof proof{};
};

RawHandshake DoHandshake(const Transport& t, int target_rank,
                         const tcp_handshake::ClientHello& hello,
                         const std::string& secret, bool send_proof = true) {
  RawHandshake h;
  h.fd = RawConnect(t);
  if (h.fd < 0) return h;
  if (::write(h.fd, &hello, sizeof(hello)) != sizeof(hello)) return h;
  tcp_handshake::ServerChallenge ch;
  if (!ReadFull(h.fd, &ch, sizeof(ch))) return h;
  h.got_challenge = true;
  tcp_handshake::Nonce client_nonce;
  std::memcpy(client_nonce.data(), hello.nonce, client_nonce.size());
  const Digest256 key = tcp_handshake::DataPlaneKey(secret);
  h.target_proved = tcp_handshake::CheckServerChallenge(
                        ch, hello.protocol_version, target_rank, hello.rank,
                        client_nonce, hello.session, key)
                        .empty();
  h.received = ch.received;
  std::memcpy(h.server_nonce.data(), ch.nonce, h.server_nonce.size());
  const Digest256 proof = tcp_handshake::Proof(
      key, tcp_handshake::Role::kClient, client_nonce, h.server_nonce,
      hello.rank, target_rank, hello.session, ch.received);
  std::memcpy(h.proof.proof, proof.data(), sizeof(h.proof.proof));
  if (send_proof) {
    EXPECT_EQ(::write(h.fd, &h.proof, sizeof(h.proof)), 32);
  }
  return h;
}

// Garbage on the port, a bad version, an unknown frame kind and an
// oversized frame each close only their own connection, with a warning,
// while a legitimate peer's READs keep succeeding.
TEST_P(TcpWireTest, GarbageConnectionsAreRejectedOthersCarryOn) {
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
  ASSERT_EQ(::write(g, &hello, sizeof(hello)), 40);
  EXPECT_TRUE(ClosedByPeer(g));
  ::close(g);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning, {"protocol version 42"}));

  // A raw peer that completes the handshake as rank 9, then an unknown
  // frame kind.
  auto& tcp_target = static_cast<TcpTransport&>(*target_);
  ASSERT_TRUE(tcp_target.ExpectPeer(9, "127.0.0.1").ok());
  hello = ValidHello(9);
  RawHandshake raw = DoHandshake(*target_, 1, hello, "transport-test-secret");
  ASSERT_TRUE(raw.target_proved);
  g = raw.fd;
  tcp_internal::RequestHeader h{};
  h.kind = 77;
  ASSERT_EQ(::write(g, &h, sizeof(h)), 48);
  EXPECT_TRUE(ClosedByPeer(g));
  ::close(g);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning,
                           {"peer 9", "unknown frame kind 77"}));

  // A valid hello, then an oversized message and an oversized READ.
  for (int kind : {2, 1}) {
    raw = DoHandshake(*target_, 1, hello, "transport-test-secret");
    ASSERT_TRUE(raw.target_proved);
    g = raw.fd;
    h = tcp_internal::RequestHeader{};
    h.kind = static_cast<uint8_t>(kind);
    h.opcode = static_cast<uint8_t>(WorkOpcode::kRead);
    h.length = 0xfffffff0u;
    ASSERT_EQ(::write(g, &h, sizeof(h)), 48);
    EXPECT_TRUE(ClosedByPeer(g));
    ::close(g);
  }
  // The socket closes just before the line is logged: wait for both.
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning,
                           {"peer 9", "oversized frame: message of"}));
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning,
                           {"peer 9", "oversized frame: READ of"}));

  // A raw peer that speaks the protocol is served too.
  raw = DoHandshake(*target_, 1, hello, "transport-test-secret");
  ASSERT_TRUE(raw.target_proved);
  g = raw.fd;
  h = tcp_internal::RequestHeader{};
  h.kind = 1;
  h.opcode = static_cast<uint8_t>(WorkOpcode::kRead);
  h.length = 16;
  h.remote_addr = remote.mr.addr + 32;
  h.rkey = remote.mr.rkey;
  ASSERT_EQ(::write(g, &h, sizeof(h)), 48);
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
// DeregisterMemory waits for the READs being served from the region: once
// it returns, the memory may be freed at once (under ASan a serve that
// still read it would be a use after free). READs served before it carry
// the right bytes; later ones are remote access errors.
TEST_P(TcpWireTest, DeregisterWaitsForReadsBeingServed) {
  Buffer remote = MakeBuffer(*target_, 1 << 20);
  FillPattern(remote, 3);
  std::vector<char> want(remote.data, remote.data + remote.size);
  Buffer local = MakeBuffer(*requester_, 64 * 1024);
  constexpr int kReads = 400;
  constexpr uint32_t kLen = 64 * 1024;
  std::vector<WorkRequest> wrs(kReads);
  for (int i = 0; i < kReads; ++i) {
    // Every READ lands in the same local buffer: only statuses are checked
    // for all, the bytes for the last success.
    wrs[i] = Read(i, local, 0, remote, (i % 16) * kLen, kLen);
    wrs[i].next = i + 1 < kReads ? &wrs[i + 1] : nullptr;
  }
  ASSERT_TRUE(requester_->PostSend(1, &wrs[0]).ok());
  ASSERT_TRUE(target_->DeregisterMemory(remote.mr).ok());
  remote.words.reset();  // freed as soon as deregistration returns
  auto wcs = WaitCompletions(*requester_, kReads);
  ASSERT_EQ(wcs.size(), static_cast<size_t>(kReads));
  int ok = 0, refused = 0;
  for (const WorkCompletion& wc : wcs) {
    if (wc.status == WcStatus::kSuccess) ++ok;
    if (wc.status == WcStatus::kRemoteAccessError) ++refused;
  }
  EXPECT_EQ(ok + refused, kReads) << "only successes and access errors";
  // The completions of one peer come in posting order: successes first.
  for (int i = 0; i < kReads; ++i) {
    EXPECT_EQ(wcs[i].wr_id, static_cast<uint64_t>(i));
    EXPECT_EQ(wcs[i].status,
              i < ok ? WcStatus::kSuccess : WcStatus::kRemoteAccessError);
  }
  if (ok > 0) {
    const size_t off = ((ok - 1) % 16) * kLen;
    EXPECT_EQ(std::memcmp(local.data, want.data() + off, kLen), 0);
  }
}

TEST_P(TcpWireTest, VersionMismatchIsRejected) {
  LogCapture logs;
  MakeOptions v1, v2;
  v1.tcp_protocol_version = 2;
  v2.tcp_protocol_version = 3;
  auto target = fabric_->Make(1, 1, v1);
  auto requester = fabric_->Make(0, 0, v2);
  ASSERT_TRUE(target && requester);
  Buffer remote = MakeBuffer(*target, 4096);
  Buffer local = MakeBuffer(*requester, 4096);
  ASSERT_TRUE(requester->Connect(1, target->LocalEndpoint()).ok());
  WorkRequest wr = Read(1, local, 0, remote, 0, 64);
  ASSERT_TRUE(requester->PostSend(1, &wr).ok());
  auto wcs = WaitCompletions(*requester, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].status, WcStatus::kPeerGone);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning,
                           {"rank 1", "connection from 127.0.0.1",
                            "protocol version 3"}));
  EXPECT_TRUE(logs.WaitFor(LogLevel::kError, {"rank 0", "peer 1"}));
}

// Bytes that arrive on `fd` until the other end closes it (at most `max`).
std::string ReadUntilClosed(int fd, size_t max = 1 << 20) {
  std::string got;
  char buf[4096];
  while (got.size() < max) {
    pollfd pf{fd, POLLIN, 0};
    if (::poll(&pf, 1, kDeadlineMs) <= 0) break;
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

// A READ of 16 bytes and a lock-grant message (home_protocol kLockGrant =
// 9), as a forger would send them after its handshake.
std::string ForgedRequests(const Buffer& remote) {
  tcp_internal::RequestHeader read{};
  read.kind = static_cast<uint8_t>(tcp_internal::FrameKind::kOp);
  read.opcode = static_cast<uint8_t>(WorkOpcode::kRead);
  read.length = 16;
  read.remote_addr = remote.mr.addr;
  read.rkey = remote.mr.rkey;
  read.seq = 0;
  tcp_internal::RequestHeader grant{};
  grant.kind = static_cast<uint8_t>(tcp_internal::FrameKind::kMessage);
  grant.msg_type = 9;
  grant.length = 8;
  grant.seq = 1;
  std::string out(reinterpret_cast<const char*>(&read), sizeof(read));
  out.append(reinterpret_cast<const char*>(&grant), sizeof(grant));
  out.append(8, '\x01');
  return out;
}

// Forgeries are refused before anything is served: a hello without the
// proof, a proof made with another secret, a replayed handshake, a rank
// claimed from an address membership does not place it at, and data sent
// before the handshake ends. Each tries a READ and a lock grant; not a
// byte of memory comes back and no message is delivered, while a raw peer
// that proves the secret gets both served (so the test could see them).
TEST_P(TcpWireTest, HandshakeRefusesForgeriesBeforeServingAnything) {
  LogCapture logs;
  Buffer remote = MakeBuffer(*target_, 4096);
  FillPattern(remote, 11);
  std::atomic<int> delivered{0};
  target_->SetMessageHandler([&](int, uint16_t, absl::Span<const char>) {
    delivered++;
  });
  auto& tcp = static_cast<TcpTransport&>(*target_);
  ASSERT_TRUE(tcp.ExpectPeer(5, "127.0.0.1").ok());
  ASSERT_TRUE(tcp.ExpectPeer(6, "10.9.9.9").ok());
  const std::string forged = ForgedRequests(remote);
  const std::string secret = "transport-test-secret";

  // No proof at all: the requests follow the hello, where the proof goes.
  RawHandshake h = DoHandshake(*target_, 1, ValidHello(5), secret,
                               /*send_proof=*/false);
  ASSERT_TRUE(h.got_challenge && h.target_proved);
  ASSERT_EQ(::write(h.fd, forged.data(), forged.size()),
            static_cast<ssize_t>(forged.size()));
  EXPECT_EQ(ReadUntilClosed(h.fd).size(), 0u) << "nothing after the challenge";
  ::close(h.fd);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning,
                           {"rank 1", "failed to prove the job's secret"}));

  // Another job's secret: the target fails our check, and we fail its.
  h = DoHandshake(*target_, 1, ValidHello(5), "another-job");
  ASSERT_TRUE(h.got_challenge);
  EXPECT_FALSE(h.target_proved);
  ASSERT_EQ(::write(h.fd, forged.data(), forged.size()),
            static_cast<ssize_t>(forged.size()));
  EXPECT_EQ(ReadUntilClosed(h.fd).size(), 0u);
  ::close(h.fd);

  // A replay: a good handshake's proof, sent on a new connection with the
  // same hello. The target's nonce is new, so the old proof is wrong.
  RawHandshake good = DoHandshake(*target_, 1, ValidHello(5), secret);
  ASSERT_TRUE(good.target_proved);
  h = DoHandshake(*target_, 1, ValidHello(5), secret, /*send_proof=*/false);
  ASSERT_TRUE(h.got_challenge);
  EXPECT_NE(h.server_nonce, good.server_nonce) << "a fresh nonce each time";
  std::string replay(reinterpret_cast<const char*>(&good.proof),
                     sizeof(good.proof));
  replay += forged;
  ASSERT_EQ(::write(h.fd, replay.data(), replay.size()),
            static_cast<ssize_t>(replay.size()));
  EXPECT_EQ(ReadUntilClosed(h.fd).size(), 0u);
  ::close(h.fd);

  // Rank 6 claimed from 127.0.0.1, where membership does not place it: no
  // challenge at all.
  int g = RawConnect(*target_);
  auto hello6 = ValidHello(6);
  std::string claim(reinterpret_cast<const char*>(&hello6), sizeof(hello6));
  claim += forged;
  ASSERT_EQ(::write(g, claim.data(), claim.size()),
            static_cast<ssize_t>(claim.size()));
  EXPECT_EQ(ReadUntilClosed(g).size(), 0u);
  ::close(g);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning,
                           {"claims rank 6 from 127.0.0.1",
                            "membership places rank 6 at 10.9.9.9"}));

  // Rank 7, which membership has not placed yet: unanswered; requests sent
  // meanwhile close it.
  g = RawConnect(*target_);
  auto hello7 = ValidHello(7);
  claim.assign(reinterpret_cast<const char*>(&hello7), sizeof(hello7));
  claim += forged;
  ASSERT_EQ(::write(g, claim.data(), claim.size()),
            static_cast<ssize_t>(claim.size()));
  EXPECT_EQ(ReadUntilClosed(g).size(), 0u);
  ::close(g);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kWarning,
                           {"sent data before the handshake finished"}));

  // The good connection is served: the READ's bytes and the message.
  ASSERT_EQ(::write(good.fd, forged.data(), forged.size()),
            static_cast<ssize_t>(forged.size()));
  char resp[sizeof(tcp_internal::ResponseHeader) + 16];
  ASSERT_TRUE(ReadFull(good.fd, resp, sizeof(resp)));
  EXPECT_EQ(std::memcmp(resp + sizeof(tcp_internal::ResponseHeader),
                        remote.data, 16),
            0);
  for (int i = 0; i < 1000 && delivered.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(delivered.load(), 1) << "only the proven peer's message";
  ::close(good.fd);
}

// A claim that arrives before membership places the rank waits, unanswered,
// and is answered once it does (the view can reach the target after the
// peer).
TEST_P(TcpWireTest, ClaimWaitsForMembership) {
  Buffer remote = MakeBuffer(*target_, 4096);
  FillPattern(remote, 12);
  auto& tcp = static_cast<TcpTransport&>(*target_);
  int g = RawConnect(*target_);
  auto hello = ValidHello(8);
  ASSERT_EQ(::write(g, &hello, sizeof(hello)), 40);
  pollfd pf{g, POLLIN, 0};
  EXPECT_EQ(::poll(&pf, 1, 200), 0) << "answered before membership spoke";
  ASSERT_TRUE(tcp.ExpectPeer(8, "localhost").ok());
  tcp_handshake::ServerChallenge ch;
  ASSERT_TRUE(ReadFull(g, &ch, sizeof(ch)));
  tcp_handshake::Nonce cn, sn;
  std::memcpy(cn.data(), hello.nonce, cn.size());
  std::memcpy(sn.data(), ch.nonce, sn.size());
  const Digest256 key = tcp_handshake::DataPlaneKey("transport-test-secret");
  EXPECT_EQ(tcp_handshake::CheckServerChallenge(ch, 2, 1, 8, cn,
                                                hello.session, key),
            "");
  const Digest256 proof = tcp_handshake::Proof(
      key, tcp_handshake::Role::kClient, cn, sn, 8, 1, hello.session,
      ch.received);
  ASSERT_EQ(::write(g, proof.data(), proof.size()), 32);
  const std::string req = ForgedRequests(remote).substr(0, 48);
  ASSERT_EQ(::write(g, req.data(), req.size()), 48);
  char resp[sizeof(tcp_internal::ResponseHeader) + 16];
  ASSERT_TRUE(ReadFull(g, resp, sizeof(resp)));
  EXPECT_EQ(std::memcmp(resp + 16, remote.data, 16), 0);
  ::close(g);
}

// The requester's side: a target that cannot prove the secret gets nothing
// but the hello, and what was posted to it completes with kPeerGone.
TEST_P(TcpWireTest, RequesterSendsNothingToAnUnprovenTarget) {
  LogCapture logs;
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  ASSERT_EQ(::listen(lfd, 1), 0);
  socklen_t len = sizeof(sa);
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &len);
  TransportEndpoint fake;
  fake.host = "127.0.0.1";
  fake.port = ntohs(sa.sin_port);
  ASSERT_TRUE(requester_->Connect(7, fake).ok());
  Buffer local = MakeBuffer(*requester_, 4096);
  WorkRequest wr{};
  wr.wr_id = 1;
  wr.opcode = WorkOpcode::kWrite;
  wr.local = local.data;
  wr.lkey = local.mr.lkey;
  wr.length = 64;
  wr.remote_addr = 0x1000;
  wr.rkey = 1;
  ASSERT_TRUE(requester_->PostSend(7, &wr).ok());
  int g = ::accept(lfd, nullptr, nullptr);
  ASSERT_GE(g, 0);
  tcp_handshake::ClientHello hello;
  ASSERT_TRUE(ReadFull(g, &hello, sizeof(hello)));
  EXPECT_EQ(hello.rank, 0);
  // An answer with the right shape and a made-up proof.
  tcp_handshake::ServerChallenge ch{};
  std::memcpy(ch.magic, tcp_handshake::kServerMagic, sizeof(ch.magic));
  ch.protocol_version = 2;
  ch.rank = 7;
  ASSERT_EQ(::write(g, &ch, sizeof(ch)), 72);
  EXPECT_EQ(ReadUntilClosed(g).size(), 0u) << "the WRITE's bytes were sent";
  auto wcs = WaitCompletions(*requester_, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].status, WcStatus::kPeerGone);
  EXPECT_TRUE(logs.WaitFor(LogLevel::kError,
                           {"rank 0", "peer 7", "failed to prove"}));
  ::close(g);
  ::close(lfd);
}

// A raw target on loopback for the requester to connect to as rank
// `rank`: Accept() takes the connection and, with `secret`, completes the
// handshake as a real target would.
class FakeTarget {
 public:
  explicit FakeTarget(int rank) : rank_(rank) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    socklen_t len = sizeof(sa);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
    EXPECT_EQ(::listen(listen_fd_, 1), 0);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&sa), &len);
    endpoint_.host = "127.0.0.1";
    endpoint_.port = ntohs(sa.sin_port);
  }
  ~FakeTarget() { ::close(listen_fd_); }
  const TransportEndpoint& endpoint() const { return endpoint_; }

  // The accepted connection after the handshake, or -1.
  int Accept(const std::string& secret) {
    int fd = ::accept(listen_fd_, nullptr, nullptr);
    tcp_handshake::ClientHello hello;
    if (fd < 0 || !ReadFull(fd, &hello, sizeof(hello))) return -1;
    tcp_handshake::Nonce cn, sn{};
    std::memcpy(cn.data(), hello.nonce, cn.size());
    const Digest256 key = tcp_handshake::DataPlaneKey(secret);
    tcp_handshake::ServerChallenge ch{};
    std::memcpy(ch.magic, tcp_handshake::kServerMagic, sizeof(ch.magic));
    ch.protocol_version = hello.protocol_version;
    ch.rank = rank_;
    const Digest256 proof =
        tcp_handshake::Proof(key, tcp_handshake::Role::kServer, cn, sn,
                             hello.rank, rank_, hello.session, 0);
    std::memcpy(ch.proof, proof.data(), sizeof(ch.proof));
    tcp_handshake::ClientProof client_proof;
    if (::write(fd, &ch, sizeof(ch)) != sizeof(ch) ||
        !ReadFull(fd, &client_proof, sizeof(client_proof))) {
      ::close(fd);
      return -1;
    }
    return fd;
  }

 private:
  const int rank_;
  int listen_fd_ = -1;
  TransportEndpoint endpoint_;
};

// Completions stay in posting order when a post races with "pw-tcp"
// closing the connection (here on a malformed answer; a broken one would
// reconnect instead): an operation posted after the connection was closed,
// but before the kPeerGone completions of what it carried were delivered,
// completes after those, not before. Found by tcp_frames_fuzzer (its
// sentinel READ completed ahead of the chain).
TEST_P(TcpWireTest, PostRacingACloseCompletesInPostingOrder) {
  FakeTarget fake(7);
  ASSERT_TRUE(requester_->Connect(7, fake.endpoint()).ok());
  const int g = fake.Accept("transport-test-secret");
  ASSERT_GE(g, 0);
  Buffer local = MakeBuffer(*requester_, 4096);
  WorkRequest first{};
  first.wr_id = 1;
  first.local = local.data;
  first.lkey = local.mr.lkey;
  first.length = 64;
  first.remote_addr = 0x1000;
  first.rkey = 1;
  ASSERT_TRUE(requester_->PostSend(7, &first).ok());
  tcp_internal::RequestHeader sent;
  ASSERT_TRUE(ReadFull(g, &sent, sizeof(sent)));  // outstanding now
  // "pw-tcp" logs the close after closing the connection and before the
  // end of its round, where it delivers the first READ's completion: the
  // second is posted right then.
  WorkRequest second = first;
  second.wr_id = 2;
  second.local = local.data + 1024;
  std::atomic<bool> posted{false};
  LogSink previous = SetLogSink([&](LogLevel, absl::string_view line) {
    if (absl::StrContains(line, "peer 7") &&
        absl::StrContains(line, "malformed response") && !posted) {
      EXPECT_TRUE(requester_->PostSend(7, &second).ok());
      posted = true;
    }
  });
  tcp_internal::ResponseHeader bad{};
  bad.kind = 99;
  ASSERT_EQ(::write(g, &bad, sizeof(bad)), 16);
  auto wcs = WaitCompletions(*requester_, 2);
  SetLogSink(previous);
  EXPECT_TRUE(posted.load());
  ASSERT_EQ(wcs.size(), 2u);
  EXPECT_EQ(wcs[0].wr_id, 1u) << "the later post completed first";
  EXPECT_EQ(wcs[1].wr_id, 2u);
  EXPECT_EQ(wcs[0].status, WcStatus::kPeerGone);
  EXPECT_EQ(wcs[1].status, WcStatus::kPeerGone);
  EXPECT_EQ(requester_->Outstanding(7), 0u);
  ::close(g);
}

// A post right after PeerDied, before "pw-tcp" has closed the connection:
// it completes after what the connection carried, never before.
TEST_P(TcpWireTest, PostAfterPeerDiedCompletesInPostingOrder) {
  Buffer remote = MakeBuffer(*target_, 1 << 20);
  Buffer local = MakeBuffer(*requester_, 64 * 1024);
  constexpr int kReads = 500;
  std::vector<WorkRequest> wrs(kReads);
  for (int i = 0; i < kReads; ++i) {
    wrs[i] = Read(i, local, 0, remote, (i * 4096) % (960 * 1024), 64 * 1024);
    wrs[i].next = i + 1 < kReads ? &wrs[i + 1] : nullptr;
  }
  ASSERT_TRUE(requester_->PostSend(1, &wrs[0]).ok());
  requester_->PeerDied(1);
  WorkRequest late = Read(kReads, local, 0, remote, 0, 4096);
  ASSERT_TRUE(requester_->PostSend(1, &late).ok());
  auto wcs = WaitCompletions(*requester_, kReads + 1);
  ASSERT_EQ(wcs.size(), static_cast<size_t>(kReads + 1));
  for (int i = 0; i <= kReads; ++i) {
    ASSERT_EQ(wcs[i].wr_id, static_cast<uint64_t>(i)) << "out of posting order";
  }
  EXPECT_EQ(wcs[kReads].status, WcStatus::kPeerGone);
  // The target may still be serving the READs nobody waits for: its
  // memory goes only after deregistration (which waits for them).
  EXPECT_TRUE(target_->DeregisterMemory(remote.mr).ok());
}

// Connections that never finish their handshake are limited: past the
// limit the oldest is closed, and a real peer still connects and is served.
TEST_P(TcpWireTest, HandshakesInProgressAreLimited) {
  MakeOptions small;
  small.tcp_max_unauthenticated = 4;
  auto target = fabric_->Make(3, 1, small);
  ASSERT_NE(target, nullptr);
  std::vector<int> idle;
  for (int i = 0; i < 6; ++i) {
    idle.push_back(RawConnect(*target));
    ASSERT_GE(idle.back(), 0);
  }
  // The 5th and 6th evicted the 1st and 2nd.
  EXPECT_TRUE(ClosedByPeer(idle[0]));
  EXPECT_TRUE(ClosedByPeer(idle[1]));
  Buffer remote = MakeBuffer(*target, 4096);
  FillPattern(remote, 13);
  Buffer local = MakeBuffer(*requester_, 4096);
  ASSERT_TRUE(Connect(*requester_, 0, *target, 3).ok());
  WorkRequest wr = Read(1, local, 0, remote, 0, 4096);
  ASSERT_TRUE(requester_->PostSend(3, &wr).ok());
  auto wcs = WaitCompletions(*requester_, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].status, WcStatus::kSuccess);
  EXPECT_EQ(std::memcmp(local.data, remote.data, 4096), 0);
  for (int fd : idle) ::close(fd);
}

// The sockets of this process connected to local port `port` (its
// listener's accepted ones) or from it (connected to it), found through
// /proc/self/fd.
std::vector<int> SocketsOfPort(uint16_t port, bool accepted) {
  std::vector<int> fds;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return fds;
  while (dirent* e = ::readdir(d)) {
    const int fd = std::atoi(e->d_name);
    if (fd <= 2) continue;
    sockaddr_in local{}, peer{};
    socklen_t ll = sizeof(local), pl = sizeof(peer);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) != 0 ||
        ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0 ||
        local.sin_family != AF_INET) {
      continue;
    }
    const uint16_t want = htons(port);
    if ((accepted ? local.sin_port : peer.sin_port) == want) fds.push_back(fd);
  }
  ::closedir(d);
  return fds;
}

// Connections broken under live transports (the test shuts their sockets
// down, on the requester's side and on the target's, over and over) lose
// nothing and repeat nothing: every fetch-add is applied exactly once (its
// old values are 0..N-1, each once), every READ brings the right bytes,
// every WRITE lands, and every message arrives exactly once, in order. No
// operation fails: only membership ends a session.
TEST_P(TcpWireTest, BrokenConnectionsResumeExactlyOnce) {
  LogCapture logs;
  // At least kMinBatches, and on until the breaker is done (kBatches at
  // most).
  constexpr int kMinBatches = 500, kBatches = 20000, kAdds = 16, kReads = 16,
                kWrites = 4, kMessages = 8, kBreaks = 30;
  Buffer remote = MakeBuffer(*target_, 1 << 20);
  FillPattern(remote, 21);
  Buffer counter = MakeBuffer(*target_, 4096);
  Buffer written = MakeBuffer(*target_, kBatches * kWrites * 64);
  Buffer local = MakeBuffer(*requester_, kReads * 4096);
  Buffer olds = MakeBuffer(*requester_, kBatches * kAdds * 8);
  Buffer sources = MakeBuffer(*requester_, kBatches * kWrites * 64);
  FillPattern(sources, 22);
  absl::Mutex mu;
  std::vector<uint32_t> got_messages;
  target_->SetMessageHandler([&](int, uint16_t, absl::Span<const char> body) {
    uint32_t v = 0;
    std::memcpy(&v, body.data(), std::min(body.size(), sizeof(v)));
    absl::MutexLock lock(&mu);
    got_messages.push_back(v);
  });
  const uint16_t port = static_cast<uint16_t>(target_->LocalEndpoint().port);
  std::atomic<bool> stop{false}, breaker_done{false};
  std::atomic<int> breaks{0};
  std::thread breaker([&] {
    for (int i = 0; !stop.load() && breaks.load() < kBreaks; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
      for (int fd : SocketsOfPort(port, /*accepted=*/i % 2 == 0)) {
        if (::shutdown(fd, SHUT_RDWR) == 0) ++breaks;
      }
    }
    breaker_done = true;
  });
  uint32_t next_message = 0;
  int batches = 0;
  for (int b = 0; b < kBatches && (b < kMinBatches || !breaker_done.load());
       ++b, ++batches) {
    std::vector<WorkRequest> wrs;
    for (int i = 0; i < kAdds; ++i) {
      WorkRequest wr;
      wr.wr_id = wrs.size();
      wr.opcode = WorkOpcode::kFetchAdd;
      wr.local = olds.data + (b * kAdds + i) * 8;
      wr.lkey = olds.mr.lkey;
      wr.length = 8;
      wr.remote_addr = counter.mr.addr;
      wr.rkey = counter.mr.rkey;
      wr.compare_add = 1;
      wrs.push_back(wr);
    }
    for (int i = 0; i < kReads; ++i) {
      wrs.push_back(Read(wrs.size(), local, i * 4096, remote,
                         ((b * kReads + i) * 4099) % (1000 * 1024), 4096));
    }
    for (int i = 0; i < kWrites; ++i) {
      WorkRequest wr;
      wr.wr_id = wrs.size();
      wr.opcode = WorkOpcode::kWrite;
      wr.local = sources.data + (b * kWrites + i) * 64;
      wr.lkey = sources.mr.lkey;
      wr.length = 64;
      wr.remote_addr = written.mr.addr + (b * kWrites + i) * 64;
      wr.rkey = written.mr.rkey;
      wrs.push_back(wr);
    }
    for (size_t i = 0; i < wrs.size(); ++i) {
      wrs[i].next = i + 1 < wrs.size() ? &wrs[i + 1] : nullptr;
    }
    ASSERT_TRUE(requester_->PostSend(1, &wrs[0]).ok());
    for (int i = 0; i < kMessages; ++i, ++next_message) {
      ASSERT_TRUE(requester_
                      ->SendMessage(1, 5, absl::Span<const char>(
                                             reinterpret_cast<const char*>(
                                                 &next_message),
                                             sizeof(next_message)))
                      .ok());
    }
    auto wcs = WaitCompletions(*requester_, wrs.size());
    ASSERT_EQ(wcs.size(), wrs.size()) << "batch " << b;
    for (size_t i = 0; i < wcs.size(); ++i) {
      ASSERT_EQ(wcs[i].wr_id, i) << "batch " << b;
      ASSERT_EQ(wcs[i].status, WcStatus::kSuccess)
          << "batch " << b << " wr_id " << i << ": "
          << WcStatusName(wcs[i].status);
    }
    for (int i = 0; i < kReads; ++i) {
      ASSERT_EQ(std::memcmp(local.data + i * 4096,
                            remote.data +
                                ((b * kReads + i) * 4099) % (1000 * 1024),
                            4096),
                0)
          << "batch " << b << " READ " << i;
    }
  }
  stop = true;
  breaker.join();
  EXPECT_GE(breaks.load(), kBreaks) << "the connections were hardly broken";
  uint64_t total;
  std::memcpy(&total, counter.data, sizeof(total));
  EXPECT_EQ(total, uint64_t{batches} * kAdds) << "fetch-adds applied twice "
                                                 "or lost";
  std::vector<uint64_t> seen(batches * kAdds);
  std::memcpy(seen.data(), olds.data, seen.size() * 8);
  std::sort(seen.begin(), seen.end());
  for (size_t i = 0; i < seen.size(); ++i) {
    ASSERT_EQ(seen[i], i) << "an old value repeated or missing";
  }
  EXPECT_EQ(std::memcmp(written.data, sources.data, batches * kWrites * 64), 0);
  // Every message, once, in order (the last ones may still be arriving).
  auto all = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return got_messages.size() >= next_message;
  };
  absl::MutexLock lock(&mu);
  ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all),
                                  absl::Milliseconds(kDeadlineMs)));
  ASSERT_EQ(got_messages.size(), next_message);
  for (uint32_t i = 0; i < next_message; ++i) {
    ASSERT_EQ(got_messages[i], i) << "message " << i;
  }
  EXPECT_GT(logs.Count(LogLevel::kWarning, {"reconnected to peer 1"}), 0);
}

// The endpoint (a wildcard bind advertises loopback), the name, nonzero
// keys, and a port already taken.
TEST_P(TcpWireTest, EndpointKeysAndPort) {
  TcpTransportConfig config;
  config.rank = 0;
  auto no_secret = TcpTransport::Create(config);
  EXPECT_EQ(no_secret.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(no_secret.status().message(),
                                "PAGEWIRE_SECRET"))
      << no_secret.status();
  config.secret = "s";
  auto t = TcpTransport::Create(config);
  ASSERT_TRUE(t.ok()) << t.status();
  TransportEndpoint ep = (*t)->LocalEndpoint();
  EXPECT_EQ(ep.host, "127.0.0.1");
  EXPECT_NE(ep.port, 0u);
  EXPECT_EQ((*t)->Name(), "tcp");
  std::vector<char> mem(4096);
  auto r1 = (*t)->RegisterMemory(mem.data(), 2048);
  ASSERT_TRUE(r1.ok());
  EXPECT_NE(r1->rkey, 0u);
  EXPECT_NE(r1->lkey, 0u);
  config.port = static_cast<uint16_t>(ep.port);  // taken
  auto clash = TcpTransport::Create(config);
  EXPECT_FALSE(clash.ok());
}

// ---------------------------------------------------------------------------
// Verbs only: device, port and GID selection, and the per-peer QP exchange.

class VerbsSetupTest : public TransportTest {};
INSTANTIATE_TEST_SUITE_P(Transports, VerbsSetupTest,
                         ::testing::Values(Kind::kVerbs), KindName);

VerbsTransport& Verbs(Transport& t) { return static_cast<VerbsTransport&>(t); }

// The default port and GID (RoCEv2, IPv4-mapped), idempotent endpoints and
// connections, and a named device or GID that does not exist.
TEST_P(VerbsSetupTest, EndpointsAndSelection) {
  VerbsTransportConfig config;
  auto made = VerbsTransport::Create(config);
  ASSERT_TRUE(made.ok()) << made.status();
  VerbsTransport& t = **made;
  EXPECT_TRUE(absl::StartsWith(t.Name(), "verbs(")) << t.Name();
  TransportEndpoint ep = t.LocalEndpoint();
  ASSERT_EQ(ep.gid.size(), 16u);
  EXPECT_EQ(static_cast<uint8_t>(ep.gid[10]), 0xff) << "IPv4-mapped GID";
  EXPECT_EQ(static_cast<uint8_t>(ep.gid[11]), 0xff) << "IPv4-mapped GID";
  EXPECT_EQ(ep.qp_num, 0u);
  if (t.device_name().rfind("rxe", 0) == 0) {
    EXPECT_EQ(t.gid_index(), 1) << "rxe's RoCEv2 IPv4-mapped GID";
  }

  VerbsTransport& u = Verbs(*target_);
  auto e1 = t.EndpointFor(1);
  auto e1_again = t.EndpointFor(1);
  ASSERT_TRUE(e1.ok() && e1_again.ok());
  EXPECT_NE(e1->qp_num, 0u);
  EXPECT_EQ(e1->qp_num, e1_again->qp_num);
  EXPECT_EQ(e1->psn, e1_again->psn);
  auto e0 = u.EndpointFor(0);
  ASSERT_TRUE(e0.ok());
  EXPECT_TRUE(t.Connect(1, *e0).ok());
  EXPECT_TRUE(t.Connect(1, *e0).ok()) << "idempotent";

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

// Misusing the QP exchange: a QP made but not connected, Connect without
// EndpointFor, and an endpoint that is not a verbs one.
TEST_P(VerbsSetupTest, QueuePairExchangeMisuseIsRejected) {
  VerbsTransport& r = Verbs(*requester_);
  Buffer local = MakeBuffer(r, 4096);
  WorkRequest wr;
  wr.local = local.data;
  wr.lkey = local.mr.lkey;
  wr.length = 8;
  ASSERT_TRUE(r.EndpointFor(9).ok());
  EXPECT_EQ(r.PostSend(9, &wr).code(), absl::StatusCode::kFailedPrecondition);
  TransportEndpoint ep = target_->LocalEndpoint();
  ep.qp_num = 1234;
  EXPECT_EQ(r.Connect(11, ep).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.Connect(9, TransportEndpoint()).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pagewire

// A run whose --gtest_filter selects nothing fails: the host step and the
// VM step each filter to one kind, and neither may pass vacuously.
int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  int rc = RUN_ALL_TESTS();
  if (::testing::UnitTest::GetInstance()->test_to_run_count() == 0) {
    fprintf(stderr,
            "transport_test: the filter selected no test; use "
            "--gtest_filter=-*/Verbs (host) or --gtest_filter=*/Verbs "
            "(soft-RoCE VM)\n");
    return 1;
  }
  return rc;
}
