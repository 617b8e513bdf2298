// coherence_test.cc - release consistency on one rank whose peer the test
// plays (FakePeerTransport): the order in which cached copies are frozen,
// flushed and dropped while other threads of the rank write them, pinned
// down step by step rather than sampled. Every page of the allocation is
// homed on the peer (rank 1); the rank under test is rank 0.
#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "runtime/coherence/coherence.h"
#include "runtime/dsm/distributed_dataspace.h"
#include "runtime/fault/fault_service.h"
#include "runtime/dsm/home_manager.h"
#include "runtime/dsm/home_protocol.h"
#include "runtime/memory/region_map.h"
#include "runtime/dsm/remote_fetcher.h"
#include "runtime/testing/fake_peer_transport.h"
#include "tests/fault_test_support.h"
#include "tests/rank_fixture.h"

namespace pagewire {
namespace {

namespace hp = home_protocol;
using testing::Eventually;
using testing::FakePeerTransport;

constexpr uintptr_t kBase = testing::RankFixture::kBase;
constexpr int kHome = testing::RankFixture::kPeer;
constexpr uint32_t kAllocId = 1;
constexpr uint64_t kPages = 16;

// Holds the work requests that match a predicate at the transport, the
// n-th until the test allows n of them; counts those that arrived.
class Gate {
 public:
  using Match = std::function<bool(const WorkRequest&)>;
  explicit Gate(Match match) : match_(std::move(match)) {}
  void Pass(const WorkRequest& wr) {
    if (!match_(wr)) return;
    absl::MutexLock lock(&mutex_);
    const int n = ++arrived_;
    auto allowed = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
      return allowed_ >= n;
    };
    mutex_.Await(absl::Condition(&allowed));
  }
  int arrived() {
    absl::MutexLock lock(&mutex_);
    return arrived_;
  }
  void Allow(int n) {
    absl::MutexLock lock(&mutex_);
    allowed_ = n;
  }

 private:
  Match match_;
  absl::Mutex mutex_;
  int arrived_ ABSL_GUARDED_BY(mutex_) = 0;
  int allowed_ ABSL_GUARDED_BY(mutex_) = 0;
};

class CoherenceTest : public testing::RankFixture {
 protected:
  void SetUp() override {
    RankFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ds_ = AddAllocation(kAllocId, 0, kPages, Placement::kOnRank,
                        /*registered=*/true, kHome);
  }

  static volatile uint64_t* Word(uint64_t page, uint64_t word = 0) {
    return reinterpret_cast<volatile uint64_t*>(kBase + page * kPageSize) + word;
  }
  uint64_t HomeWord(uint64_t page, uint64_t word = 0) {
    return PeerWord(kBase + page * kPageSize + word * 8);
  }
  bool Resident(uint64_t page) { return service_->IsResident(page * kPageSize); }
  // Holds the one-sided WRITEs (diffs) to the home as `gate` says.
  void GateWrites(Gate& gate) {
    transport_->SetGate(
        [&gate](int, const WorkRequest& wr) { gate.Pass(wr); });
  }
  static Gate::Match Writes() {
    return [](const WorkRequest& wr) { return wr.opcode == WorkOpcode::kWrite; };
  }
  // A list message from the home, as its transport would deliver it.
  void DeliverList(uint16_t type, uint64_t key, uint64_t ticket,
                   std::vector<hp::PageRef> refs, uint32_t flags,
                   const std::vector<std::vector<char>>& pushed = {}) {
    hp::PageListHeader h{key, ticket, static_cast<uint32_t>(refs.size()),
                         flags | hp::kLastPart};
    std::vector<char> body(sizeof(h) + refs.size() * sizeof(hp::PageRef));
    std::memcpy(body.data(), &h, sizeof(h));
    if (!refs.empty()) {
      std::memcpy(body.data() + sizeof(h), refs.data(),
                  refs.size() * sizeof(hp::PageRef));
    }
    for (const auto& page : pushed) body.insert(body.end(), page.begin(), page.end());
    transport_->Deliver(kHome, type, absl::MakeConstSpan(body));
  }

  std::shared_ptr<DistributedDataspace> ds_;
};

// Two threads release one page's successive twins: A snapshots it (10) and
// is held before its WRITE reaches the transport; the writer twins the page
// again and writes 20; B snapshots that. B's WRITE must not overtake A's,
// or the home keeps 10 and the increments to 20 are lost.
TEST_F(CoherenceTest, DiffsOfOnePageReachItsHomeInSnapshotOrder) {
  *Word(0) = 10;  // fetched, twinned, written
  Gate gate(Writes());
  GateWrites(gate);
  std::thread a([&] { EXPECT_TRUE(coherence_->Release().ok()); });
  Eventually([&] { return gate.arrived() == 1; }, "A's WRITE at the transport");
  transport_->SetGate(nullptr);  // only A's WRITE is held
  *Word(0) = 20;  // write-protected by A's snapshot: twinned again
  std::thread b([&] { EXPECT_TRUE(coherence_->Release().ok()); });
  // B has snapshotted and waits for its turn, or (the defect) has written
  // 20 home already.
  Eventually([&] { return coherence_->stats().post_waits == 1 || HomeWord(0) == 20; },
             "B waiting to post, or B's WRITE at the home");
  EXPECT_EQ(HomeWord(0), 0u) << "B's diff reached the home before A's";
  gate.Allow(1);
  a.join();
  b.join();
  EXPECT_EQ(HomeWord(0), 20u);
  EXPECT_EQ(coherence_->stats().post_waits, 1u);
  EXPECT_EQ(*Word(0), 20u);
}

// pw_acquire by one thread while others have unreleased writes to a copy:
// the acquire's release sends the first diff (5); a second thread twins the
// page again meanwhile (6). The copy stays until that diff too is home, a
// write that comes while it is frozen for the drop waits (7), and no write
// is lost.
TEST_F(CoherenceTest, AcquireDropsACopyOnlyAfterItsDiffIsHome) {
  *Word(3) = 5;
  Gate gate(Writes());
  GateWrites(gate);
  std::thread acquirer([&] { EXPECT_TRUE(coherence_->AcquireAll().ok()); });
  Eventually([&] { return gate.arrived() == 1; }, "the release's WRITE");
  *Word(3, 1) = 6;  // after the release's snapshot: twinned again
  gate.Allow(1);
  Eventually([&] { return gate.arrived() == 2; }, "the acquire's flush WRITE");
  EXPECT_TRUE(Resident(3)) << "dropped before its diff went home";
  EXPECT_EQ(HomeWord(3), 5u);
  EXPECT_EQ(HomeWord(3, 1), 0u);
  // A write now meets the snapshot's write protection and waits for the
  // drop.
  const uint64_t faults = service_->stats().faults;
  std::atomic<bool> written{false};
  std::thread writer([&] {
    *Word(3, 2) = 7;
    written = true;
  });
  Eventually([&] { return service_->stats().faults > faults; },
             "the writer's fault at the loop");
  EXPECT_FALSE(written) << "a write went through a copy being dropped";
  gate.Allow(2);
  acquirer.join();
  writer.join();
  EXPECT_EQ(HomeWord(3, 1), 6u);
  EXPECT_EQ(*Word(3), 5u);  // fetched again: both diffs are home
  EXPECT_EQ(*Word(3, 1), 6u);
  EXPECT_EQ(*Word(3, 2), 7u);
  gate.Allow(100);
  ASSERT_TRUE(coherence_->Release().ok());
  EXPECT_EQ(HomeWord(3, 2), 7u) << "the write made during the acquire was lost";
  EXPECT_EQ(HomeWord(3), 5u);
}

// A barrier that must drop a copy (the home reports it written) while
// another thread of the rank has twinned and written it since the barrier's
// own release: that diff goes home first; a pushed copy of the page does
// not replace it; and the home's bytes and this rank's are both there after.
TEST_F(CoherenceTest, BarrierDropsACopyOnlyAfterAnotherThreadsDiffIsHome) {
  *reinterpret_cast<uint64_t*>(transport_->PeerMemory(kHome, kBase + 2 * kPageSize + 8)) = 1;
  EXPECT_EQ(*Word(2, 1), 1u);  // cached, not written
  std::atomic<uint64_t> epoch{0};
  absl::Notification written;
  std::thread writer;
  transport_->SetMessageHook([&](const FakePeerTransport::Message& m) {
    if (m.type != hp::kEpochWrites) return;
    hp::PageListHeader h;
    std::memcpy(&h, m.body.data(), sizeof(h));
    epoch = h.epoch_or_lock;
    // Past the barrier's release: another thread writes the copy now.
    writer = std::thread([&] {
      *Word(2) = 42;
      written.Notify();
    });
  });
  std::thread barrier([&] { EXPECT_TRUE(coherence_->Barrier().ok()); });
  written.WaitForNotification();
  // The home wrote word 2 and pushes its page.
  *reinterpret_cast<uint64_t*>(transport_->PeerMemory(kHome, kBase + 2 * kPageSize + 16)) = 77;
  std::vector<char> pushed(transport_->PeerMemory(kHome, kBase + 2 * kPageSize),
                           transport_->PeerMemory(kHome, kBase + 3 * kPageSize));
  DeliverList(hp::kEpochWrites, epoch, 0, {hp::PageRef{kAllocId, hp::kRefPushed, 2}},
              0, {pushed});
  barrier.join();
  writer.join();
  EXPECT_FALSE(Resident(2));
  EXPECT_EQ(HomeWord(2), 42u) << "the other thread's write never went home";
  EXPECT_EQ(*Word(2), 42u);
  EXPECT_EQ(*Word(2, 1), 1u);
  EXPECT_EQ(*Word(2, 2), 77u);
}

// A lock's grant names a page this rank caches while another thread of the
// rank writes it: the diff goes home before the copy is dropped.
TEST_F(CoherenceTest, LockGrantDropsACopyOnlyAfterAnotherThreadsDiffIsHome) {
  volatile uint64_t* lock_word = Word(kPages - 1);
  (void)*lock_word;
  const uintptr_t lock = reinterpret_cast<uintptr_t>(lock_word);
  std::atomic<uint64_t> ticket{0};
  absl::Notification asked;
  transport_->SetMessageHook([&](const FakePeerTransport::Message& m) {
    if (m.type != hp::kLockAcquire) return;
    hp::PageListHeader h;
    std::memcpy(&h, m.body.data(), sizeof(h));
    ticket = h.ticket;
    asked.Notify();
  });
  *Word(4) = 1;
  std::thread acquirer([&] {
    EXPECT_TRUE(coherence_->LockAcquire(lock).ok());
    EXPECT_TRUE(coherence_->LockRelease(lock).ok());  // from its acquirer
  });
  asked.WaitForNotification();
  *Word(4) = 2;  // after the acquire's own release: twinned again
  Gate gate(Writes());
  GateWrites(gate);
  DeliverList(hp::kLockGrant, lock - kBase, ticket, {hp::PageRef{kAllocId, 0, 4}}, 0);
  Eventually([&] { return gate.arrived() == 1; }, "the diff's WRITE at the transport");
  EXPECT_TRUE(Resident(4)) << "dropped before its diff went home";
  EXPECT_EQ(HomeWord(4), 1u);
  gate.Allow(1);
  acquirer.join();
  EXPECT_FALSE(Resident(4));
  EXPECT_EQ(HomeWord(4), 2u);
  EXPECT_EQ(*Word(4), 2u);
}

// The audit itself: a copy dropped while writable and twinned, by a caller
// that skips the freeze and flush, is reported; one dropped after them is
// not.
TEST_F(CoherenceTest, TheDropAuditReportsACopyDroppedWithItsWrites) {
  testing::LogCapture log;
  *Word(5) = 9;  // twinned and writable
  absl::Notification dropped;
  service_->InvalidatePagesAsync({5 * kPageSize}, [&] { dropped.Notify(); });
  dropped.WaitForNotification();
  EXPECT_EQ(coherence_->stats().lost_drops, 1u);
  EXPECT_NE(log.All().find("coherence invariant violated: the copy at global "
                           "offset 0x5000 is dropped, but it has a twin"),
            std::string::npos)
      << log.All();
  // Made writable behind the protocol's back (no twin): writes to it could
  // never be sent home.
  EXPECT_EQ(*Word(7), 0u);
  ASSERT_TRUE(service_->WriteProtect(7 * kPageSize, kPageSize, false).ok());
  absl::Notification dropped_too;
  service_->InvalidatePagesAsync({7 * kPageSize}, [&] { dropped_too.Notify(); });
  dropped_too.WaitForNotification();
  EXPECT_EQ(coherence_->stats().lost_drops, 2u);
  EXPECT_NE(log.All().find("0x7000 is dropped, but it is writable without a twin"),
            std::string::npos)
      << log.All();
  // Through the protocol: frozen, flushed, then dropped write-protected.
  *Word(6) = 9;
  ASSERT_TRUE(coherence_->AcquireAll().ok());
  EXPECT_FALSE(Resident(6));
  EXPECT_EQ(HomeWord(6), 9u);
  EXPECT_EQ(coherence_->stats().lost_drops, 2u) << log.All();
  expected_lost_drops_ = 2;
}

}  // namespace
}  // namespace pagewire
