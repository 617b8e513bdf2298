// distributed_dataspace_test.cc - DistributedDataspace in one rank against
// a peer the test plays: where each page is asked for, by placement.
#include <thread>

#include "gtest/gtest.h"
#include "runtime/dsm/home_protocol.h"
#include "tests/rank_fixture.h"

namespace pagewire {
namespace {

namespace hp = home_protocol;

class DistributedDataspaceTest : public testing::RankFixture {
 protected:
  static constexpr uint32_t kAlloc = 3;
  static constexpr uint64_t kPages = 8;
  uintptr_t Page(uint64_t page) const { return kBase + page * kPageSize; }
};

// Block placement over two ranks: the first half is homed here and answered
// from this rank's memory (no message, no READ); the second half is the
// peer's, READ from it.
TEST_F(DistributedDataspaceTest, BlockPlacementAnswersItsOwnHalfLocally) {
  auto ds = AddAllocation(kAlloc, 0, kPages, Placement::kBlock,
                          /*registered=*/true);
  EXPECT_TRUE(ds->HomedHere(0));
  EXPECT_TRUE(ds->HomedHere(3));
  EXPECT_FALSE(ds->HomedHere(4));
  *Word(Page(1)) = 11;  // its own page: written in place
  EXPECT_EQ(*Word(Page(1)), 11u);
  EXPECT_EQ(transport_->served(WorkOpcode::kRead), 0u);
  SetPeerWord(Page(6), 66);
  EXPECT_EQ(*Word(Page(6)), 66u);
  EXPECT_EQ(transport_->served(WorkOpcode::kRead), 1u);
  EXPECT_TRUE(transport_->messages().empty());
}

// Read-ahead: a read fault on a page of the peer also fetches the next one
// of the same home that this rank cached before, so a walk through the
// peer's memory waits for every other page only.
TEST_F(DistributedDataspaceTest, AReadFaultFetchesTheNextPageAhead) {
  AddAllocation(kAlloc, 0, kPages, Placement::kOnRank, /*registered=*/true,
                kPeer, /*readahead_pages=*/1);
  SetPeerWord(Page(3), 3);
  SetPeerWord(Page(4), 4);
  EXPECT_EQ(*Word(Page(3)), 3u);
  testing::Eventually([&] { return Resident(Page(4)); }, "page 4 read ahead");
  EXPECT_EQ(transport_->served(WorkOpcode::kRead), 2u);
  EXPECT_EQ(*Word(Page(4)), 4u);
  EXPECT_EQ(transport_->served(WorkOpcode::kRead), 2u) << "page 4 read twice";
}

// First touch: a page nobody owns is claimed at its directory rank (page %
// ranks). An even page's directory is this rank: it takes the page, which
// starts as zeros here. An odd page's is the peer: it asks (kClaim) and,
// told the peer owns it, fetches it from the peer through its home manager.
TEST_F(DistributedDataspaceTest, FirstTouchClaimsAtThePagesDirectory) {
  auto ds = AddAllocation(kAlloc, 0, kPages, Placement::kFirstTouch,
                          /*registered=*/false);
  EXPECT_EQ(ds->OwnerOf(2), -1);
  *Word(Page(2)) = 22;
  EXPECT_EQ(ds->OwnerOf(2), kSelf);
  EXPECT_TRUE(Sent(hp::kClaim).empty());

  SetPeerWord(Page(5), 55);
  absl::Status fetched;
  std::thread fault([&] { fetched = Prefetch(Page(5)); });
  testing::Eventually([&] { return Sent(hp::kClaim).size() == 1; },
                      "the claim at page 5's directory");
  const hp::Claim c = Body<hp::Claim>(Sent(hp::kClaim)[0]);
  EXPECT_EQ(c.alloc_id, kAlloc);
  EXPECT_EQ(c.page, 5u);
  DeliverFromPeer(hp::kClaimed, hp::Claimed{c.slot, kPeer, 5});
  testing::Eventually([&] { return Sent(hp::kFetch).size() == 1; },
                      "the fetch from page 5's owner");
  const hp::Fetch f = Body<hp::Fetch>(Sent(hp::kFetch)[0]);
  DeliverFromPeer(hp::kReady, hp::Ready{f.slot, 0, 5, 0, 0});
  fault.join();
  EXPECT_TRUE(fetched.ok()) << fetched;
  EXPECT_EQ(ds->OwnerOf(5), kPeer);
  EXPECT_EQ(*Word(Page(5)), 55u);
}

}  // namespace
}  // namespace pagewire
