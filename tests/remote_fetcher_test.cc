// remote_fetcher_test.cc - RemoteFetcher in one rank against a peer the test
// plays: what a fault on a page homed elsewhere puts on the wire, how the
// fault's plan is completed, and how a dead or confused peer fails it.
#include <atomic>
#include <thread>

#include "gtest/gtest.h"
#include "runtime/dsm/home_protocol.h"
#include "tests/rank_fixture.h"

namespace pagewire {
namespace {

namespace hp = home_protocol;
using testing::FakePeerTransport;
using testing::LogCapture;

class RemoteFetcherTest : public testing::RankFixture {
 protected:
  static constexpr uint32_t kAlloc = 7;
  static constexpr uint64_t kPages = 8;
  uintptr_t Page(uint64_t page) const { return kBase + page * kPageSize; }
};

// A fault on a page its home registered this rank for is one READ of the
// home's page, and the page arrives with the home's bytes, write-protected
// (a write then twins it: an upgrade, not a second fetch).
TEST_F(RemoteFetcherTest, AFaultOnARegisteredPageIsOneReadOfTheHomesPage) {
  AddAllocation(kAlloc, 0, kPages, Placement::kOnRank, /*registered=*/true);
  SetPeerWord(Page(3), 0xfeed);
  EXPECT_EQ(*Word(Page(3)), 0xfeedu);
  EXPECT_EQ(transport_->served(WorkOpcode::kRead), 1u);
  EXPECT_TRUE(Sent(hp::kFetch).empty());
  const uint64_t twins = coherence_->stats().twins;
  *Word(Page(3)) = 1;
  EXPECT_EQ(coherence_->stats().twins, twins + 1) << "installed writable";
  EXPECT_EQ(transport_->served(WorkOpcode::kRead), 1u);
  EXPECT_EQ(fetcher_->stats().remote_reads, 1u);
}

// The first fault on a page asks its home (kFetch, naming the allocation,
// the page and the fault's slot); the fault waits for kReady, then READs,
// and the page counts as registered: the next fault on it READs directly.
TEST_F(RemoteFetcherTest, AFirstFetchAsksTheHomeAndReadsOnItsReady) {
  auto ds = AddAllocation(kAlloc, 0, kPages, Placement::kOnRank,
                          /*registered=*/false);
  SetPeerWord(Page(2), 42);
  absl::Status fetched;
  std::thread fault([&] { fetched = Prefetch(Page(2)); });
  testing::Eventually([&] { return Sent(hp::kFetch).size() == 1; },
                      "the kFetch to the home");
  const hp::Fetch f = Body<hp::Fetch>(Sent(hp::kFetch)[0]);
  EXPECT_EQ(f.alloc_id, kAlloc);
  EXPECT_EQ(f.page, 2u);
  EXPECT_EQ(Sent(hp::kFetch)[0].peer, kPeer);
  EXPECT_EQ(transport_->served(WorkOpcode::kRead), 0u) << "READ before kReady";
  DeliverFromPeer(hp::kReady, hp::Ready{f.slot, 0, 2, 0, 0});
  fault.join();
  EXPECT_TRUE(fetched.ok()) << fetched;
  EXPECT_EQ(*Word(Page(2)), 42u);
  EXPECT_TRUE(ds->Registered(2));
  EXPECT_EQ(fetcher_->stats().home_requests, 1u);
}

// A home that cannot provide the page answers with an error: the fault
// fails naming the home, the page and the allocation.
TEST_F(RemoteFetcherTest, AnErrorFromTheHomeFailsTheFaultNamingIt) {
  AddAllocation(kAlloc, 0, kPages, Placement::kOnRank, /*registered=*/false);
  LogCapture log;
  absl::Status fetched;
  std::thread fault([&] { fetched = Prefetch(Page(5)); });
  testing::Eventually([&] { return Sent(hp::kFetch).size() == 1; },
                      "the kFetch to the home");
  const hp::Fetch f = Body<hp::Fetch>(Sent(hp::kFetch)[0]);
  DeliverFromPeer(hp::kReady, hp::Ready{f.slot, EIO, 5, 0, 0});
  fault.join();
  EXPECT_FALSE(fetched.ok());
  EXPECT_NE(log.All().find("rank 1 could not provide page 5 of allocation 7"),
            std::string::npos)
      << log.All();
  EXPECT_EQ(transport_->served(WorkOpcode::kRead), 0u);
}

// A reply for a slot that waits for nothing (late, duplicated, forged) is
// ignored with a warning, and changes nothing.
TEST_F(RemoteFetcherTest, AStrayReplyIsIgnored) {
  AddAllocation(kAlloc, 0, kPages, Placement::kOnRank, /*registered=*/false);
  LogCapture log;
  DeliverFromPeer(hp::kReady, hp::Ready{17, 0, 3, 0, 0});
  DeliverFromPeer(hp::kClaimed, hp::Claimed{18, 1, 3});
  EXPECT_NE(log.All().find("answered 'ready' for slot 17 / page 3, which waits "
                           "for no such answer; ignored"),
            std::string::npos)
      << log.All();
  EXPECT_NE(log.All().find("answered 'owner 1' for slot 18"), std::string::npos)
      << log.All();
  EXPECT_EQ(transport_->served(WorkOpcode::kRead), 0u);
  EXPECT_FALSE(Resident(Page(3)));
}

// Membership declares the home dead while a fault waits for its kReady: the
// fault fails naming the rank and why, and later faults on its pages fail
// at once, without a message.
TEST_F(RemoteFetcherTest, APeersDeathFailsTheFaultsThatWaitForIt) {
  AddAllocation(kAlloc, 0, kPages, Placement::kOnRank, /*registered=*/false);
  LogCapture log;
  absl::Status fetched;
  std::thread fault([&] { fetched = Prefetch(Page(1)); });
  testing::Eventually([&] { return Sent(hp::kFetch).size() == 1; },
                      "the kFetch to the home");
  fetcher_->PeerDied(kPeer, "its lease ran out (test)");
  fault.join();
  EXPECT_FALSE(fetched.ok());
  EXPECT_NE(log.All().find("rank 1, which had to answer for this page, is dead: "
                           "its lease ran out (test)"),
            std::string::npos)
      << log.All();
  EXPECT_FALSE(Prefetch(Page(4)).ok());
  EXPECT_EQ(Sent(hp::kFetch).size(), 1u) << "asked a dead rank";
}

// A READ that completes with an error fails its fault naming the READ.
TEST_F(RemoteFetcherTest, AFailedReadFailsItsFaultNamingTheRead) {
  AddAllocation(kAlloc, 0, kPages, Placement::kOnRank, /*registered=*/true);
  LogCapture log;
  transport_->PeerDied(kPeer);  // its READs complete with kPeerGone
  EXPECT_FALSE(Prefetch(Page(6)).ok());
  EXPECT_NE(log.All().find("the one-sided READ of 0x"), std::string::npos)
      << log.All();
  EXPECT_NE(log.All().find("from rank 1 failed: peer gone"), std::string::npos)
      << log.All();
}

// A range handed out again after its allocation was released: the new
// allocation's key replaces a stale one this rank still held for the same
// addresses (an allocation that failed here was never taken back), and
// regions elsewhere stay.
TEST_F(RemoteFetcherTest, ANewAllocationsKeyReplacesAStaleOneForTheSameRange) {
  const uint64_t x = Page(0), y = Page(6);
  fetcher_->AddPeerRegion(kPeer, 40, x, kPageSize, 0xaaa);
  fetcher_->AddPeerRegion(kPeer, 41, y, kPageSize, 0xccc);
  EXPECT_EQ(fetcher_->PeerKey(kPeer, x), 0xaaau);
  fetcher_->AddPeerRegion(kPeer, 42, x, 3 * kPageSize, 0xbbb);
  EXPECT_EQ(fetcher_->PeerKey(kPeer, x), 0xbbbu);
  EXPECT_EQ(fetcher_->PeerKey(kPeer, x + 2 * kPageSize), 0xbbbu);
  EXPECT_EQ(fetcher_->PeerKey(kPeer, y), 0xcccu);
}

}  // namespace
}  // namespace pagewire
