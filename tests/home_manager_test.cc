// home_manager_test.cc - HomeManager in one rank against a peer the test
// plays: what a home answers, and what it records, when a peer fetches or
// claims one of its pages.
#include "gtest/gtest.h"
#include "runtime/dsm/home_protocol.h"
#include "tests/rank_fixture.h"

namespace pagewire {
namespace {

namespace hp = home_protocol;
using testing::LogCapture;

class HomeManagerTest : public testing::RankFixture {
 protected:
  static constexpr uint32_t kAlloc = 9;
  static constexpr uint64_t kPages = 8;
  uintptr_t Page(uint64_t page) const { return kBase + page * kPageSize; }
};

// A peer's first fetch of a page homed here: the home answers kReady for
// the peer's slot once the page is readable, lists the peer as a cacher,
// and from then on tracks its own writes to the page (write-protected: the
// next write is recorded).
TEST_F(HomeManagerTest, AFetchRegistersTheCacherAndTracksTheHomesWrites) {
  auto ds = AddAllocation(kAlloc, 0, kPages, Placement::kOnRank,
                          /*registered=*/false, /*home_rank=*/kSelf);
  *Word(Page(4)) = 1;
  EXPECT_FALSE(ds->Tracked(4));
  DeliverFromPeer(hp::kFetch, hp::Fetch{kAlloc, 33, 4});
  testing::Eventually([&] { return Sent(hp::kReady).size() == 1; },
                      "the home's kReady");
  const hp::Ready r = Body<hp::Ready>(Sent(hp::kReady)[0]);
  EXPECT_EQ(r.slot, 33u);
  EXPECT_EQ(r.page, 4u);
  EXPECT_EQ(r.error, 0);
  EXPECT_EQ(Sent(hp::kReady)[0].peer, kPeer);
  EXPECT_TRUE(ds->Tracked(4));
  const auto cachers = home_->CachersOf({hp::PageRef{kAlloc, 0, 4}});
  ASSERT_EQ(cachers.size(), 1u);
  ASSERT_FALSE(cachers[0].empty());
  EXPECT_EQ(cachers[0][0], uint64_t{1} << kPeer);
  EXPECT_TRUE(home_->CachersOf({hp::PageRef{kAlloc, 0, 5}})[0].empty());
  // The home's next write to the page is seen (a tracked write, reported at
  // the next release).
  *Word(Page(4)) = 2;
  EXPECT_EQ(home_->fetches_served(), 1u);
}

// A fetch of an allocation or page that does not exist here is answered
// with an error (the requester's fault fails), and warned about.
TEST_F(HomeManagerTest, AFetchOfNothingHereIsAnsweredWithAnError) {
  AddAllocation(kAlloc, 0, kPages, Placement::kOnRank, /*registered=*/false,
                /*home_rank=*/kSelf);
  LogCapture log;
  DeliverFromPeer(hp::kFetch, hp::Fetch{kAlloc + 1, 3, 0});
  DeliverFromPeer(hp::kFetch, hp::Fetch{kAlloc, 4, kPages});
  ASSERT_EQ(Sent(hp::kReady).size(), 2u);
  EXPECT_EQ(Body<hp::Ready>(Sent(hp::kReady)[0]).error, EINVAL);
  EXPECT_EQ(Body<hp::Ready>(Sent(hp::kReady)[1]).error, EINVAL);
  EXPECT_NE(log.All().find("asked for page 0 of allocation 10, which does not "
                           "exist here"),
            std::string::npos)
      << log.All();
}

// First touch, on a page whose directory is this rank (even pages of two
// ranks): the first claimant becomes the owner, and every later claim is
// told that owner.
TEST_F(HomeManagerTest, TheDirectoryRecordsTheFirstClaimant) {
  auto ds = AddAllocation(kAlloc, 0, kPages, Placement::kFirstTouch,
                          /*registered=*/false);
  DeliverFromPeer(hp::kClaim, hp::Claim{kAlloc, 5, 6});
  ASSERT_EQ(Sent(hp::kClaimed).size(), 1u);
  hp::Claimed c = Body<hp::Claimed>(Sent(hp::kClaimed)[0]);
  EXPECT_EQ(c.slot, 5u);
  EXPECT_EQ(c.owner, kPeer);
  EXPECT_EQ(ds->OwnerOf(6), kPeer);
  // This rank touches it afterwards: it is the peer's, fetched from it.
  DeliverFromPeer(hp::kClaim, hp::Claim{kAlloc, 8, 6});
  c = Body<hp::Claimed>(Sent(hp::kClaimed)[1]);
  EXPECT_EQ(c.owner, kPeer);
  // A claim of a page whose directory is the peer is not recorded here.
  LogCapture log;
  DeliverFromPeer(hp::kClaim, hp::Claim{kAlloc, 9, 7});
  EXPECT_EQ(Sent(hp::kClaimed).size(), 2u);
  EXPECT_NE(log.All().find("whose ownership is not recorded here"),
            std::string::npos)
      << log.All();
}

}  // namespace
}  // namespace pagewire
