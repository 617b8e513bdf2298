// fault_service_test.cc - the fault service end to end: real userfaultfd,
// real threads, managers that answer inline, late, or never until told.
#include "runtime/fault/fault_service.h"

#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "runtime/memory/file_dataspace.h"
#include "runtime/memory/ram_dataspace.h"
#include "runtime/testing/controlled_dataspace.h"
#include "runtime/testing/pattern.h"
#include "tests/fault_test_support.h"

namespace pagewire::testing {
namespace {

constexpr uint64_t kMiB = 1 << 20;

using FaultServiceTest = FaultServiceFixture;

// Where a leaf dataspace shows up in the global range.
struct Leaf {
  uint64_t global_at;
  uint64_t size;
  uint64_t seed;
  uint64_t ds_offset;
};

TEST_F(FaultServiceTest, StressSixteenThreadsOverNestedMapsVerifyEveryPage) {
  // root ─┬─ l1 (512 MiB) at 0 ─┬─ seed 5 at 0 (64 MiB)
  //       │                     ├─ l2 (256 MiB) at 128 MiB ── seeds 1..4
  //       │                     └─ RAM (pattern 6) at 384 MiB (64 MiB)
  //       └─ seed 7 at 512 MiB (48 MiB window from offset 16 MiB)
  auto l1 = std::make_shared<RegionMap>(512 * kMiB, "l1");
  auto l2 = std::make_shared<RegionMap>(256 * kMiB, "l2");
  std::vector<Leaf> leaves;
  std::vector<std::shared_ptr<ControlledDataspace>> managers;
  for (uint64_t i = 0; i < 4; ++i) {
    auto ds = std::make_shared<ControlledDataspace>(64 * kMiB, 1 + i);
    if (i == 1) ds->AnswerAfter(absl::Microseconds(20));  // a slow one too
    ASSERT_TRUE(l2->Attach(ds, {.at = i * 64 * kMiB}).ok());
    leaves.push_back({128 * kMiB + i * 64 * kMiB, 64 * kMiB, 1 + i, 0});
    managers.push_back(ds);
  }
  auto ds5 = std::make_shared<ControlledDataspace>(64 * kMiB, 5);
  ASSERT_TRUE(l1->Attach(ds5, {.at = 0}).ok());
  leaves.push_back({0, 64 * kMiB, 5, 0});
  managers.push_back(ds5);
  auto ram = RamDataspace::Create(64 * kMiB);
  ASSERT_TRUE(ram.ok());
  for (uint64_t off = 0; off < 64 * kMiB; off += kPageSize) {
    FillPattern((*ram)->data() + off, 6, off);
  }
  ASSERT_TRUE(l1->Attach(*ram, {.at = 384 * kMiB}).ok());
  leaves.push_back({384 * kMiB, 64 * kMiB, 6, 0});
  ASSERT_TRUE(l1->Attach(l2, {.at = 128 * kMiB}).ok());
  ASSERT_TRUE(root_->Attach(l1, {.at = 0}).ok());
  auto ds7 = std::make_shared<ControlledDataspace>(64 * kMiB, 7);
  ASSERT_TRUE(root_
                  ->Attach(ds7, {.at = 512 * kMiB,
                                 .size = 48 * kMiB,
                                 .ds_offset = 16 * kMiB})
                  .ok());
  leaves.push_back({512 * kMiB, 48 * kMiB, 7, 16 * kMiB});
  managers.push_back(ds7);

  std::vector<std::pair<uint64_t, const Leaf*>> pages;  // global offset, leaf
  for (const Leaf& leaf : leaves) {
    for (uint64_t off = 0; off < leaf.size; off += kPageSize) {
      pages.emplace_back(leaf.global_at + off, &leaf);
    }
  }
  ASSERT_GE(pages.size(), 100000u);

  constexpr int kThreads = 16;
  std::atomic<uint64_t> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < pages.size(); i += kThreads) {
        auto [global, leaf] = pages[i];
        uint64_t ds_off = global - leaf->global_at + leaf->ds_offset;
        if (FirstPatternMismatch(At(global), leaf->seed, ds_off) >= 0) ++bad;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0u);
  FaultStats s = service_->stats();
  EXPECT_EQ(s.installed, pages.size());
  EXPECT_EQ(s.failed, 0u);
  EXPECT_EQ(s.requests, pages.size()) << "each page asked for exactly once";
  EXPECT_GT(s.max_outstanding, 1u) << "faults must overlap";
}

TEST_F(FaultServiceTest, ConcurrentFaultsOnOnePageMakeOneRequest) {
  auto ds = std::make_shared<ControlledDataspace>(kMiB, 11);
  ASSERT_TRUE(root_->Attach(ds, {.at = 0}).ok());
  ds->Hold();
  constexpr int kThreads = 12;
  const uint64_t offset = 5 * kPageSize;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Each thread reads a different word of the same page.
      uint64_t word = *reinterpret_cast<volatile uint64_t*>(At(offset + 8 * t));
      if (word == PatternWord(11, offset + 8 * t)) ++ok;
    });
  }
  // Every thread's fault has reached the service before the page arrives.
  Eventually([&] { return service_->stats().faults >= kThreads; },
             "every thread's fault at the loop");
  EXPECT_EQ(ds->held(), 1u);
  ds->Release();
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads);
  EXPECT_EQ(ds->requests(), 1u);
  EXPECT_EQ(ds->RequestsFor(offset), 1u);
  EXPECT_EQ(service_->stats().coalesced, kThreads - 1u);
}

TEST_F(FaultServiceTest, StalledManagerDelaysOnlyItsOwnFaults) {
  auto stalled = std::make_shared<ControlledDataspace>(kMiB, 21);
  auto healthy = std::make_shared<ControlledDataspace>(64 * kMiB, 22);
  ASSERT_TRUE(root_->Attach(stalled, {.at = 0}).ok());
  ASSERT_TRUE(root_->Attach(healthy, {.at = 64 * kMiB}).ok());

  auto fault_healthy = [&](uint64_t first_page, int n) {
    std::vector<double> us;
    for (int i = 0; i < n; ++i) {
      uint64_t off = (first_page + i) * kPageSize;
      auto t0 = std::chrono::steady_clock::now();
      uint64_t w = *reinterpret_cast<volatile uint64_t*>(At(64 * kMiB + off));
      auto t1 = std::chrono::steady_clock::now();
      EXPECT_EQ(w, PatternWord(22, off));
      us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    std::sort(us.begin(), us.end());
    return us[us.size() / 2];
  };
  const double before_us = fault_healthy(0, 2000);

  stalled->Hold();
  constexpr int kStalledThreads = 8;
  std::atomic<int> done{0};
  std::vector<std::thread> waiters;
  for (int t = 0; t < kStalledThreads; ++t) {
    waiters.emplace_back([&, t] {
      uint64_t off = t * kPageSize;
      uint64_t w = *reinterpret_cast<volatile uint64_t*>(At(off));
      EXPECT_EQ(w, PatternWord(21, off));
      ++done;
    });
  }
  stalled->AwaitHeld(kStalledThreads);

  const double during_us = fault_healthy(4000, 2000);
  EXPECT_EQ(done.load(), 0) << "stalled faults must wait, not be dropped";
  EXPECT_EQ(stalled->held(), static_cast<size_t>(kStalledThreads));
  // Same order of latency; a service that queued behind the stalled manager
  // would never get here at all.
  EXPECT_LT(during_us, 5 * before_us + 200) << "before " << before_us
                                            << " us, during " << during_us;

  stalled->Release();
  for (auto& t : waiters) t.join();
  EXPECT_EQ(done.load(), kStalledThreads);
  EXPECT_EQ(service_->stats().failed, 0u);
}

TEST_F(FaultServiceTest, KernelModeFaultsReadIntoAndWriteOutOfGlobalMemory) {
  constexpr uint64_t kBytes = 64 * kPageSize;
  auto ds = std::make_shared<ControlledDataspace>(kMiB, 31);
  ASSERT_TRUE(root_->Attach(ds, {.at = 0}).ok());

  // write(2) out of unfetched global memory: the kernel faults the pages in.
  char path[] = "/tmp/pagewire-kfault-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  unlink(path);
  ASSERT_EQ(write(fd, At(0), kBytes), static_cast<ssize_t>(kBytes));
  std::vector<char> page(kPageSize);
  for (uint64_t off = 0; off < kBytes; off += kPageSize) {
    ASSERT_EQ(pread(fd, page.data(), kPageSize, off),
              static_cast<ssize_t>(kPageSize));
    EXPECT_EQ(FirstPatternMismatch(page.data(), 31, off), -1) << off;
  }

  // read(2) into unfetched global memory, then check what landed.
  std::vector<char> content(kBytes);
  for (uint64_t i = 0; i < kBytes; ++i) content[i] = static_cast<char>(i * 7);
  ASSERT_EQ(pwrite(fd, content.data(), kBytes, 0),
            static_cast<ssize_t>(kBytes));
  ASSERT_EQ(pread(fd, At(128 * kPageSize), kBytes, 0),
            static_cast<ssize_t>(kBytes));
  EXPECT_EQ(memcmp(At(128 * kPageSize), content.data(), kBytes), 0);
  close(fd);
  EXPECT_EQ(service_->stats().failed, 0u);
}

sigjmp_buf sigbus_jump;
std::atomic<void*> sigbus_addr{nullptr};
std::atomic<int> sigbus_code{0};

void OnSigbus(int, siginfo_t* info, void*) {
  sigbus_addr = info->si_addr;
  sigbus_code = info->si_code;
  siglongjmp(sigbus_jump, 1);
}

// Reads `p` and reports whether that raised SIGBUS (at `p`).
bool ReadRaisesSigbus(volatile char* p) {
  struct sigaction sa{}, old{};
  sa.sa_sigaction = OnSigbus;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGBUS, &sa, &old);
  sigbus_addr = nullptr;
  bool raised = false;
  if (sigsetjmp(sigbus_jump, 1) == 0) {
    (void)*p;
  } else {
    raised = true;
  }
  sigaction(SIGBUS, &old, nullptr);
  return raised;
}

TEST_F(FaultServiceTest, UnbackedAddressRaisesSigbusAndSaysWhy) {
  LogCapture log;
  volatile char* p = At(300 * kMiB + 123);
  ASSERT_TRUE(ReadRaisesSigbus(p));
  EXPECT_EQ(sigbus_addr.load(), const_cast<char*>(p));
  EXPECT_EQ(sigbus_code.load(), BUS_ADRERR);
  std::string said = log.All();
  EXPECT_NE(said.find(absl::StrFormat("0x%x", kBase + 300 * kMiB)),
            std::string::npos)
      << said;
  EXPECT_NE(said.find("not backed by any attached dataspace"),
            std::string::npos)
      << said;
  // Deterministic: the same access fails the same way, and a system call
  // touching it gets EFAULT instead of a zero-filled page.
  EXPECT_TRUE(ReadRaisesSigbus(p));
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  errno = 0;
  EXPECT_EQ(write(fds[1], const_cast<char*>(p), 16), -1);
  EXPECT_EQ(errno, EFAULT);
  close(fds[0]);
  close(fds[1]);
  EXPECT_GE(service_->stats().failed, 1u);

  // Once something is attached there, the page works again.
  auto ds = std::make_shared<ControlledDataspace>(kMiB, 41);
  ASSERT_TRUE(root_->Attach(ds, {.at = 300 * kMiB}).ok());
  EXPECT_FALSE(ReadRaisesSigbus(p));
  EXPECT_EQ(*reinterpret_cast<volatile uint64_t*>(At(300 * kMiB)),
            PatternWord(41, 0));
}

TEST_F(FaultServiceTest, FailingManagerRaisesSigbusNamingTheReason) {
  LogCapture log;
  auto ds = std::make_shared<ControlledDataspace>(kMiB, 51);
  ds->FailWith(absl::UnavailableError("home node 3 left the job"));
  ASSERT_TRUE(root_->Attach(ds, {.at = 0}).ok());
  EXPECT_TRUE(ReadRaisesSigbus(At(kPageSize)));
  EXPECT_NE(log.All().find("home node 3 left the job"), std::string::npos)
      << log.All();
}

TEST_F(FaultServiceTest, RegionMapsNestedFourDeepTranslateEveryHop) {
  // Each level attaches the next at a different offset, with a window that
  // starts inside it, so a translation error at any hop shows.
  auto m1 = std::make_shared<RegionMap>(64 * kMiB, "m1");
  auto m2 = std::make_shared<RegionMap>(32 * kMiB, "m2");
  auto m3 = std::make_shared<RegionMap>(16 * kMiB, "m3");
  auto m4 = std::make_shared<RegionMap>(8 * kMiB, "m4");
  auto leaf = std::make_shared<ControlledDataspace>(4 * kMiB, 61);
  ASSERT_TRUE(m4->Attach(leaf, {.at = 2 * kMiB, .size = 2 * kMiB,
                                .ds_offset = kMiB}).ok());
  ASSERT_TRUE(m3->Attach(m4, {.at = 4 * kMiB, .size = 4 * kMiB,
                              .ds_offset = 2 * kMiB}).ok());
  ASSERT_TRUE(m2->Attach(m3, {.at = 8 * kMiB, .size = 8 * kMiB,
                              .ds_offset = 4 * kMiB}).ok());
  ASSERT_TRUE(m1->Attach(m2, {.at = 16 * kMiB, .size = 16 * kMiB,
                              .ds_offset = 8 * kMiB}).ok());
  ASSERT_TRUE(root_->Attach(m1, {.at = 512 * kMiB}).ok());
  // global 512+16 MiB -> m1 16 -> m2 8 -> m3 4 -> m4 2 -> leaf 1 MiB
  const uint64_t g = 512 * kMiB + 16 * kMiB;
  for (uint64_t off = 0; off < 2 * kMiB; off += kPageSize) {
    ASSERT_EQ(FirstPatternMismatch(At(g + off), 61, kMiB + off), -1) << off;
  }
  // Just past the leaf's window in m4 nothing is attached.
  EXPECT_TRUE(ReadRaisesSigbus(At(g + 2 * kMiB)));
  EXPECT_EQ(leaf->requests(), 2 * kMiB / kPageSize);
}

TEST_F(FaultServiceTest, DetachDropsPagesAndReattachServesNewBacking) {
  auto a = std::make_shared<ControlledDataspace>(kMiB, 71);
  auto b = std::make_shared<ControlledDataspace>(kMiB, 72);
  ASSERT_TRUE(root_->Attach(a, {.at = 0}).ok());
  EXPECT_EQ(*reinterpret_cast<volatile uint64_t*>(At(0)), PatternWord(71, 0));
  ASSERT_TRUE(root_->Detach(0).ok());
  EXPECT_TRUE(ReadRaisesSigbus(At(0)));
  ASSERT_TRUE(root_->Attach(b, {.at = 0}).ok());
  EXPECT_EQ(*reinterpret_cast<volatile uint64_t*>(At(0)), PatternWord(72, 0));
  EXPECT_GE(service_->stats().evicted, 1u);
}

TEST_F(FaultServiceTest, RequestOutWhenBackingChangesIsAskedAgain) {
  auto old_ds = std::make_shared<ControlledDataspace>(kMiB, 81);
  auto new_ds = std::make_shared<ControlledDataspace>(kMiB, 82);
  ASSERT_TRUE(root_->Attach(old_ds, {.at = 0}).ok());
  old_ds->Hold();
  uint64_t seen = 0;
  std::thread reader(
      [&] { seen = *reinterpret_cast<volatile uint64_t*>(At(0)); });
  old_ds->AwaitHeld(1);
  ASSERT_TRUE(root_->Detach(0).ok());
  ASSERT_TRUE(root_->Attach(new_ds, {.at = 0}).ok());
  old_ds->Release();  // the stale answer must not be installed
  reader.join();
  EXPECT_EQ(seen, PatternWord(82, 0));
}

TEST_F(FaultServiceTest, FileDataspaceIsReadAsynchronously) {
  char path[] = "/tmp/pagewire-file-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  const uint64_t bytes = kMiB + 100;  // a partial last page
  std::vector<char> content(bytes);
  for (uint64_t i = 0; i < bytes; ++i) content[i] = static_cast<char>(i * 13 + 1);
  ASSERT_EQ(write(fd, content.data(), bytes), static_cast<ssize_t>(bytes));
  close(fd);
  auto file = FileDataspace::Open(path, 2);
  unlink(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->size(), PageUp(bytes));
  ASSERT_TRUE(root_->Attach(*file, {.at = 0}).ok());

  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t off = t * kPageSize; off < PageUp(bytes); off += 4 * kPageSize) {
        for (uint64_t i = 0; i < kPageSize; ++i) {
          char want = off + i < bytes ? content[off + i] : 0;
          if (At(0)[off + i] != want) {
            ++bad;
            break;
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(FileDataspace::Open("/nonexistent/pagewire", 1).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(FaultServiceTest, WriteFaultsInstallWritablePages) {
  auto ram = RamDataspace::Create(4 * kMiB);
  ASSERT_TRUE(ram.ok());
  ASSERT_TRUE(root_->Attach(*ram, {.at = 0}).ok());
  for (uint64_t off = 0; off < 4 * kMiB; off += kPageSize) {
    *reinterpret_cast<volatile uint64_t*>(At(off)) = off + 1;
  }
  for (uint64_t off = 0; off < 4 * kMiB; off += kPageSize) {
    ASSERT_EQ(*reinterpret_cast<volatile uint64_t*>(At(off)), off + 1);
  }
}

}  // namespace
}  // namespace pagewire::testing

namespace pagewire::testing {
namespace {

TEST_F(FaultServiceTest, PopulateInstallsZerosWithoutAskingManagers) {
  auto ds = std::make_shared<ControlledDataspace>(4 << 20, 91);
  ASSERT_TRUE(root_->Attach(ds, {.at = 0}).ok());
  ds->Hold();  // any request would hang the reads below
  ASSERT_TRUE(service_->Populate(kPageSize, 8 * kPageSize).ok());
  for (uint64_t off = kPageSize; off < 9 * kPageSize; off += kPageSize) {
    EXPECT_EQ(*reinterpret_cast<volatile uint64_t*>(At(off)), 0u);
    *reinterpret_cast<volatile uint64_t*>(At(off)) = off;  // writable
  }
  EXPECT_EQ(ds->requests(), 0u);
  // Populating again keeps what was written.
  ASSERT_TRUE(service_->Populate(0, 16 * kPageSize).ok());
  EXPECT_EQ(*reinterpret_cast<volatile uint64_t*>(At(2 * kPageSize)),
            2 * kPageSize);
  EXPECT_FALSE(service_->Populate(1, kPageSize).ok());
  ds->Release();
}

TEST_F(FaultServiceTest, InvalidateDropsOnlyPagesNotKept) {
  auto ds = std::make_shared<ControlledDataspace>(4 << 20, 92);
  ASSERT_TRUE(root_->Attach(ds, {.at = 0}).ok());
  for (uint64_t i = 0; i < 8; ++i) {
    (void)*reinterpret_cast<volatile uint64_t*>(At(i * kPageSize));
  }
  ASSERT_EQ(ds->requests(), 8u);
  // Keep even pages; odd ones go and are fetched again on the next touch.
  service_->Invalidate(0, 8 * kPageSize,
                       [](uint64_t off) { return (off / kPageSize) % 2 == 0; });
  for (uint64_t i = 0; i < 8; ++i) {
    EXPECT_EQ(*reinterpret_cast<volatile uint64_t*>(At(i * kPageSize)),
              PatternWord(92, i * kPageSize));
  }
  EXPECT_EQ(ds->requests(), 12u);
  EXPECT_EQ(ds->RequestsFor(kPageSize), 2u);
  EXPECT_EQ(ds->RequestsFor(2 * kPageSize), 1u);
}

}  // namespace
}  // namespace pagewire::testing

namespace pagewire::testing {
namespace {

TEST_F(FaultServiceTest, PrefetchCompletesWhenTheManagerAnswers) {
  auto ds = std::make_shared<ControlledDataspace>(1 << 20, 93);
  ASSERT_TRUE(root_->Attach(ds, {.at = 0}).ok());
  ds->Hold();
  absl::Notification fetched;
  absl::Status result = absl::UnknownError("not called");
  service_->Prefetch(3 * kPageSize, [&](const absl::Status& s) {
    result = s;
    fetched.Notify();
  });
  ds->AwaitHeld(1);
  // A thread faulting on the same page joins the same request.
  uint64_t seen = 0;
  std::thread reader(
      [&] { seen = *reinterpret_cast<volatile uint64_t*>(At(3 * kPageSize)); });
  Eventually([&] { return service_->stats().coalesced >= 1; },
             "the second fault joining the first");
  EXPECT_FALSE(fetched.HasBeenNotified());
  ds->Release();
  fetched.WaitForNotification();
  reader.join();
  EXPECT_TRUE(result.ok()) << result;
  EXPECT_EQ(seen, PatternWord(93, 3 * kPageSize));
  EXPECT_EQ(ds->requests(), 1u);
  // Already resident: answered at once.
  absl::Notification again;
  service_->Prefetch(3 * kPageSize, [&](const absl::Status& s) {
    EXPECT_TRUE(s.ok());
    again.Notify();
  });
  again.WaitForNotification();
  EXPECT_EQ(ds->requests(), 1u);
}

}  // namespace
}  // namespace pagewire::testing

// ---------------------------------------------------------------------------
// Direct installation: answers that arrive the way a transport's do, on a
// thread other than the loop, through FaultService::InstallDirect.

namespace pagewire::testing {
namespace {

// A manager whose requests wait for the test, which plays the transport's
// thread: it writes the page into the request's landing buffer and hands
// the completion to InstallDirect. Upgrades are granted inline. In
// auto-answer mode its own thread answers every request with a version
// number (read at the time of the request) in every word of the page.
class LandingDataspace final : public Dataspace {
 public:
  explicit LandingDataspace(uint64_t size) : size_(size) {}
  ~LandingDataspace() override { StopAnswering(); }

  uint64_t size() const override { return size_; }
  std::string Describe() const override { return "landing test manager"; }
  void RequestPage(const PageRequest& request) override {
    if (request.upgrade) {
      upgrades_.fetch_add(1);
      request.completion_queue->Post(
          OutcomeCompletion(request, Resolution::kWritable));
      return;
    }
    absl::MutexLock lock(&mu_);
    ++per_page_[request.offset];
    held_.push_back({request, version_.load()});
  }

  // The next request, once one is there (test side: waits without bound).
  PageRequest Take() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](std::deque<Held>* h) { return !h->empty(); }, &held_));
    PageRequest r = held_.front().request;
    held_.pop_front();
    return r;
  }
  // The same, or nothing if none comes within `bound` (test side only).
  std::optional<PageRequest> TakeWithin(absl::Duration bound) {
    absl::MutexLock lock(&mu_);
    if (!mu_.AwaitWithTimeout(
            absl::Condition(+[](std::deque<Held>* h) { return !h->empty(); },
                            &held_),
            bound)) {
      return std::nullopt;
    }
    PageRequest r = held_.front().request;
    held_.pop_front();
    return r;
  }
  uint64_t RequestsFor(uint64_t offset) {
    absl::MutexLock lock(&mu_);
    return per_page_[offset];
  }
  uint64_t upgrades() const { return upgrades_.load(); }

  // Auto-answer: `service` installs every request's version page, after a
  // short, varying delay so that answers overtake invalidations.
  void AnswerVersions(FaultService* service) {
    answering_ = std::thread([this, service] {
      uint64_t n = 0;
      for (;;) {
        Held h;
        {
          absl::MutexLock lock(&mu_);
          mu_.Await(absl::Condition(
              +[](LandingDataspace* d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(d->mu_) {
                return !d->held_.empty() || d->stop_;
              },
              this));
          if (held_.empty()) return;
          h = held_.front();
          held_.pop_front();
        }
        // 0 to ~30 us: long enough that answers are still out when the
        // test invalidates.
        for (uint64_t spin = 0; spin < (++n * 7919) % 30000; ++spin) {
          asm volatile("" ::: "memory");
        }
        auto* w = static_cast<uint64_t*>(h.request.landing);
        for (uint64_t i = 0; i < kPageSize / 8; ++i) w[i] = h.version;
        service->InstallDirect(DataCompletion(h.request, nullptr));
      }
    });
  }
  void StopAnswering() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    if (answering_.joinable()) answering_.join();
  }
  void SetVersion(uint64_t v) { version_.store(v); }

 private:
  struct Held {
    PageRequest request;
    uint64_t version = 0;
  };
  const uint64_t size_;
  std::atomic<uint64_t> version_{0};
  std::atomic<uint64_t> upgrades_{0};
  absl::Mutex mu_;
  std::deque<Held> held_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, uint64_t> per_page_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread answering_;
};

// The fault loop's thread ("pw-fault") as /proc sees it: its state letter
// and how often it went to sleep (voluntary context switches).
struct LoopThread {
  char state = '?';
  uint64_t sleeps = 0;
};
LoopThread LoopThreadNow() {
  LoopThread t;
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return t;
  while (dirent* e = readdir(d)) {
    const std::string dir = std::string("/proc/self/task/") + e->d_name;
    char name[32] = {};
    FILE* f = fopen((dir + "/comm").c_str(), "r");
    if (f == nullptr) continue;
    if (fgets(name, sizeof(name), f) == nullptr) name[0] = 0;
    fclose(f);
    if (std::string(name) != "pw-fault\n") continue;
    char line[512];
    if ((f = fopen((dir + "/stat").c_str(), "r")) != nullptr) {
      if (fgets(line, sizeof(line), f) != nullptr) {
        const char* paren = strrchr(line, ')');
        if (paren != nullptr && paren[1] == ' ') t.state = paren[2];
      }
      fclose(f);
    }
    if ((f = fopen((dir + "/status").c_str(), "r")) != nullptr) {
      while (fgets(line, sizeof(line), f) != nullptr) {
        unsigned long long n;
        if (sscanf(line, "voluntary_ctxt_switches: %llu", &n) == 1) t.sleeps = n;
      }
      fclose(f);
    }
  }
  closedir(d);
  return t;
}
// Waits until the loop sleeps in poll() (nothing else here puts it to
// sleep), so that InstallDirect takes its direct path.
void AwaitLoopAsleep() {
  Eventually([] { return LoopThreadNow().state == 'S'; },
             "the fault loop asleep in poll()");
}

// The point of InstallDirect: the faulting thread resumes and the sleeping
// loop is not woken (it hears of the install at its next wake-up).
TEST_F(FaultServiceTest, InstallDirectResumesTheFaultWithoutWakingTheLoop) {
  auto ds = std::make_shared<LandingDataspace>(kMiB);
  ASSERT_TRUE(root_->Attach(ds, {.at = 0}).ok());
  absl::Notification resumed;
  uint64_t seen = 0;
  std::thread reader([&] {
    seen = *reinterpret_cast<volatile uint64_t*>(At(5 * kPageSize));
    resumed.Notify();
  });
  PageRequest r = ds->Take();
  EXPECT_EQ(r.offset, 5 * kPageSize);
  AwaitLoopAsleep();
  const LoopThread before = LoopThreadNow();
  FillPattern(r.landing, 7, r.offset);
  service_->InstallDirect(DataCompletion(r, nullptr));
  reader.join();
  const LoopThread after = LoopThreadNow();
  EXPECT_EQ(after.sleeps, before.sleeps) << "the loop was woken";
  EXPECT_EQ(seen, PatternWord(7, 5 * kPageSize));
  EXPECT_EQ(FirstPatternMismatch(At(5 * kPageSize), 7, 5 * kPageSize), -1);
  EXPECT_EQ(service_->stats().installed, 1u);
  // Finished properly: dropped and read again, the page is asked for anew.
  absl::Notification dropped;
  service_->InvalidatePagesAsync({5 * kPageSize}, [&] { dropped.Notify(); });
  dropped.WaitForNotification();
  std::thread again(
      [&] { seen = *reinterpret_cast<volatile uint64_t*>(At(5 * kPageSize)); });
  PageRequest r2 = ds->Take();
  FillPattern(r2.landing, 8, r2.offset);
  service_->InstallDirect(DataCompletion(r2, nullptr));
  again.join();
  EXPECT_EQ(seen, PatternWord(8, 5 * kPageSize));
  EXPECT_EQ(ds->RequestsFor(5 * kPageSize), 2u);
  EXPECT_EQ(service_->stats().installed, 2u);
  EXPECT_EQ(service_->stats().requests, 2u);
}

// A page dropped while its fetch was out (an invalidation from a barrier)
// must not be installed from the answer that was already on its way: the
// loop discards it and asks again.
TEST_F(FaultServiceTest, AnswerToAPageDroppedMeanwhileIsNotInstalled) {
  auto ds = std::make_shared<LandingDataspace>(kMiB);
  ASSERT_TRUE(root_->Attach(ds, {.at = 0}).ok());
  uint64_t seen = 0;
  std::thread reader(
      [&] { seen = *reinterpret_cast<volatile uint64_t*>(At(3 * kPageSize)); });
  PageRequest old_request = ds->Take();
  absl::Notification dropped;
  service_->InvalidatePagesAsync({3 * kPageSize}, [&] { dropped.Notify(); });
  dropped.WaitForNotification();

  FillPattern(old_request.landing, 1, old_request.offset);  // the old copy
  AwaitLoopAsleep();  // the direct path, not a hand-over to the loop
  service_->InstallDirect(DataCompletion(old_request, nullptr, true));
  std::optional<PageRequest> again = ds->TakeWithin(absl::Seconds(30));
  if (!again) {
    reader.join();  // it read the old copy (or the test fails by hanging)
    FAIL() << "the page was not asked for again; the reader saw "
           << (seen == PatternWord(1, 3 * kPageSize) ? "the old copy" : "?");
  }
  EXPECT_EQ(again->offset, 3 * kPageSize);
  FillPattern(again->landing, 2, again->offset);
  service_->InstallDirect(DataCompletion(*again, nullptr, true));
  reader.join();
  EXPECT_EQ(seen, PatternWord(2, 3 * kPageSize));
  EXPECT_EQ(ds->RequestsFor(3 * kPageSize), 2u);
}

// The same when the backing changes under the request.
TEST_F(FaultServiceTest, AnswerFromAnOldBackingIsNotInstalledDirectly) {
  auto old_ds = std::make_shared<LandingDataspace>(kMiB);
  auto new_ds = std::make_shared<ControlledDataspace>(kMiB, 84);
  ASSERT_TRUE(root_->Attach(old_ds, {.at = 0}).ok());
  uint64_t seen = 0;
  std::thread reader(
      [&] { seen = *reinterpret_cast<volatile uint64_t*>(At(0)); });
  PageRequest r = old_ds->Take();
  ASSERT_TRUE(root_->Detach(0).ok());
  ASSERT_TRUE(root_->Attach(new_ds, {.at = 0}).ok());
  FillPattern(r.landing, 83, 0);
  AwaitLoopAsleep();
  service_->InstallDirect(DataCompletion(r, nullptr));
  reader.join();
  EXPECT_EQ(seen, PatternWord(84, 0));
}

// A page installed write-protected: the write that faulted for it faults
// once more and is granted as an upgrade; the page keeps the fetched bytes.
// Nothing else wakes the loop meanwhile, so the upgrade must not wait for
// the bookkeeping of the install. The second fault usually reaches the loop
// after the installer has marked the page installed; the other order is a
// narrow window, met now and then over many pages.
TEST_F(FaultServiceTest, DirectInstallKeepsWriteProtection) {
  constexpr uint64_t kPages = 64;
  auto ds = std::make_shared<LandingDataspace>(kMiB);
  ASSERT_TRUE(root_->Attach(ds, {.at = 0}).ok());
  for (uint64_t i = 0; i < kPages; ++i) {
    const uint64_t off = i * kPageSize;
    absl::Notification wrote;
    std::thread writer([&] {
      *reinterpret_cast<volatile uint64_t*>(At(off + 8)) = 42 + i;
      wrote.Notify();
    });
    PageRequest r = ds->Take();
    EXPECT_EQ(r.access, Access::kWrite);
    FillPattern(r.landing, 9, r.offset);
    AwaitLoopAsleep();
    service_->InstallDirect(DataCompletion(r, nullptr, /*write_protect=*/true));
    if (!wrote.WaitForNotificationWithTimeout(absl::Seconds(30))) {
      writer.detach();  // blocked in the kernel; the service's stop ends it
      FAIL() << "the write to directly installed page " << i
             << " never resumed";
    }
    writer.join();
    const auto* w = reinterpret_cast<const uint64_t*>(At(off));
    EXPECT_EQ(w[0], PatternWord(9, off));
    EXPECT_EQ(w[1], 42 + i);
    EXPECT_EQ(w[2], PatternWord(9, off + 16));
  }
  EXPECT_EQ(ds->upgrades(), kPages);
}

// A failure handed to InstallDirect ends like any failure: SIGBUS, logged.
TEST_F(FaultServiceTest, FailureThroughInstallDirectRaisesSigbus) {
  LogCapture log;
  auto ds = std::make_shared<LandingDataspace>(kMiB);
  ASSERT_TRUE(root_->Attach(ds, {.at = 0}).ok());
  std::thread answerer([&] {
    PageRequest r = ds->Take();
    service_->InstallDirect(OutcomeCompletion(
        r, Resolution::kFailed, absl::UnavailableError("home rank 1 died")));
  });
  EXPECT_TRUE(ReadRaisesSigbus(At(9 * kPageSize)));
  answerer.join();
  EXPECT_NE(log.All().find("home rank 1 died"), std::string::npos) << log.All();
  EXPECT_EQ(service_->stats().failed, 1u);
}

// Threads fault pages all the time while answers come in directly after
// varying delays and the test invalidates every page again and again: after
// an invalidation of version v returns, every read sees version v or later,
// never a copy fetched before (an answer that overtook the invalidation).
TEST_F(FaultServiceTest, DirectInstallsNeverShowACopyOlderThanAnInvalidation) {
  constexpr uint64_t kPages = 32;
  auto ds = std::make_shared<LandingDataspace>(kMiB);
  ASSERT_TRUE(root_->Attach(ds, {.at = 0}).ok());
  ds->AnswerVersions(service_.get());
  std::atomic<bool> stop{false};
  std::vector<std::thread> churn;
  // Drops pages all the time, so that the readers keep fetches out.
  churn.emplace_back([&] {
    for (uint64_t i = 0; !stop.load(); ++i) {
      absl::Notification dropped;
      service_->InvalidatePagesAsync({(i * 3 % kPages) * kPageSize},
                                     [&] { dropped.Notify(); });
      dropped.WaitForNotification();
    }
  });
  for (int t = 0; t < 3; ++t) {
    churn.emplace_back([&, t] {
      uint64_t i = t;
      while (!stop.load()) {
        (void)*reinterpret_cast<volatile uint64_t*>(
            At((i++ * 5 % kPages) * kPageSize));
      }
    });
  }
  std::vector<uint64_t> offsets;
  for (uint64_t i = 0; i < kPages; ++i) offsets.push_back(i * kPageSize);
  uint64_t stale = 0;
  for (uint64_t v = 1; v <= 300; ++v) {
    ds->SetVersion(v);
    absl::Notification dropped;
    service_->InvalidatePagesAsync(offsets, [&] { dropped.Notify(); });
    dropped.WaitForNotification();
    for (uint64_t i = 0; i < kPages; ++i) {
      const uint64_t seen =
          *reinterpret_cast<volatile uint64_t*>(At(i * kPageSize));
      if (seen < v) ++stale;
    }
  }
  stop = true;
  for (auto& t : churn) t.join();
  ds->StopAnswering();
  EXPECT_EQ(stale, 0u);
  EXPECT_EQ(service_->stats().failed, 0u);
  EXPECT_GT(service_->stats().evicted, 300u) << "pages were dropped";
}

// A barrier's drop: pages in several runs go in one step; those given
// contents (pushed by their home) are replaced by them and read without a
// request, the others are asked for again, a kept one, an unlisted one and
// one that holds the pushed bytes already stay as they were.
TEST_F(FaultServiceTest, InvalidatePagesDropsRunsAndReplacesThoseWithContents) {
  auto ds = std::make_shared<LandingDataspace>(kMiB);
  ASSERT_TRUE(root_->Attach(ds, {.at = 0}).ok());
  ds->AnswerVersions(service_.get());
  ds->SetVersion(1);
  auto word = [&](uint64_t page) {
    return *reinterpret_cast<volatile uint64_t*>(At(page * kPageSize));
  };
  for (uint64_t page = 0; page < 10; ++page) ASSERT_EQ(word(page), 1u);
  ds->SetVersion(2);
  std::vector<uint64_t> pushed(kPageSize / 8, 9);
  const char* contents = reinterpret_cast<const char*>(pushed.data());
  std::vector<uint64_t> same(kPageSize / 8, 1);  // what page 9 holds
  // Runs {1, 2}, {5}, {7, 8}; 2 and 7 pushed, 8 kept, 9 pushed unchanged.
  absl::Notification dropped;
  service_->InvalidatePagesAsync(
      {1 * kPageSize, 2 * kPageSize, 5 * kPageSize, 7 * kPageSize, 8 * kPageSize,
       9 * kPageSize},
      [&] { dropped.Notify(); },
      [](uint64_t offset) { return offset == 8 * kPageSize; },
      {nullptr, contents, nullptr, contents, nullptr,
       reinterpret_cast<const char*>(same.data())});
  dropped.WaitForNotification();
  EXPECT_EQ(service_->stats().replaced, 3u);
  EXPECT_EQ(service_->stats().evicted, 4u) << "page 9 held the pushed bytes";
  EXPECT_EQ(word(2), 9u);
  EXPECT_EQ(word(7), 9u);
  EXPECT_EQ(ds->RequestsFor(2 * kPageSize), 1u) << "a pushed page was fetched";
  EXPECT_EQ(ds->RequestsFor(7 * kPageSize), 1u) << "a pushed page was fetched";
  EXPECT_EQ(word(1), 2u);
  EXPECT_EQ(word(5), 2u);
  EXPECT_EQ(ds->RequestsFor(1 * kPageSize), 2u);
  EXPECT_EQ(word(8), 1u) << "a kept page was dropped";
  EXPECT_EQ(word(0), 1u);
  EXPECT_EQ(word(9), 1u);
  EXPECT_EQ(ds->RequestsFor(9 * kPageSize), 1u);
  ds->StopAnswering();
}

}  // namespace
}  // namespace pagewire::testing

namespace pagewire::testing {
namespace {

// PAGEWIRE_IDLE_POLLS: a loop that polls before it sleeps serves faults,
// commands and Stop exactly as a sleeping one does, and finds the next
// fault while it polls.
TEST_F(FaultServiceTest, LoopThatPollsWhileIdleServesFaultsAndCommands) {
  service_->Stop();
  root_->RemoveListener(service_.get());
  service_.reset();
  FaultServiceConfig config;
  config.base = kBase;
  config.size = kSize;
  config.idle_polls = 1 << 20;  // far more than the gap between two faults
  auto service = FaultService::Start(config, *root_);
  ASSERT_TRUE(service.ok()) << service.status();
  service_ = *std::move(service);
  root_->AddListener(service_.get());

  auto ds = std::make_shared<ControlledDataspace>(4 << 20, 93);
  ASSERT_TRUE(root_->Attach(ds, {.at = 0}).ok());
  constexpr uint64_t kPages = 64;
  for (uint64_t i = 0; i < kPages; ++i) {
    ASSERT_EQ(*reinterpret_cast<volatile uint64_t*>(At(i * kPageSize)),
              PatternWord(93, i * kPageSize));
  }
  const FaultStats polled = service_->stats();
  EXPECT_EQ(polled.installed, kPages);
  // Each fault after the first comes while the loop polls.
  EXPECT_GT(polled.idle_hits, 0u);
  // A command from this thread reaches the polling loop (it cannot run
  // inline: the loop is awake), and the dropped pages come back.
  service_->Invalidate(0, kPages * kPageSize, [](uint64_t) { return false; });
  for (uint64_t i = 0; i < kPages; ++i) {
    ASSERT_EQ(*reinterpret_cast<volatile uint64_t*>(At(i * kPageSize)),
              PatternWord(93, i * kPageSize));
  }
  EXPECT_EQ(ds->requests(), 2 * kPages);
}

}  // namespace
}  // namespace pagewire::testing
