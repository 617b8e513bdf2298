// region_map_test.cc - attach/detach rules and translation, without faults.
#include "runtime/memory/region_map.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/fault/completion_queue.h"
#include "runtime/memory/ram_dataspace.h"

namespace pagewire {
namespace {

constexpr uint64_t kMiB = 1 << 20;

std::shared_ptr<Dataspace> Ram(uint64_t size) { return *RamDataspace::Create(size); }

TEST(RegionMapTest, FirstFitFillsGapsLowestFirst) {
  RegionMap map(16 * kMiB);
  EXPECT_EQ(*map.Attach(Ram(kMiB), {}), 0u);
  EXPECT_EQ(*map.Attach(Ram(kMiB), {.at = 4 * kMiB}), 4 * kMiB);
  EXPECT_EQ(*map.Attach(Ram(2 * kMiB), {}), kMiB);
  EXPECT_EQ(*map.Attach(Ram(2 * kMiB), {}), 5 * kMiB);
  EXPECT_EQ(*map.Attach(Ram(kMiB), {}), 3 * kMiB);
}

TEST(RegionMapTest, BadAttachesNameTheProblem) {
  RegionMap map(8 * kMiB, "m");
  auto ds = Ram(kMiB);
  auto s = map.Attach(ds, {.at = 100});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("page size"), std::string::npos);
  s = map.Attach(ds, {.at = 0, .size = 2 * kMiB});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kOutOfRange);
  s = map.Attach(ds, {.at = 8 * kMiB});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kOutOfRange);
  s = map.Attach(nullptr, {});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(map.Attach(ds, {.at = kMiB}).ok());
  s = map.Attach(Ram(kMiB), {.at = kMiB + 4096 * 3 - 4096 * 3 + 4096});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(s.status().message().find("overlaps"), std::string::npos);
  s = map.Attach(Ram(16 * kMiB), {});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(map.Detach(12345).code(), absl::StatusCode::kNotFound);
}

TEST(RegionMapTest, CyclesAreRefused) {
  auto a = std::make_shared<RegionMap>(8 * kMiB, "a");
  auto b = std::make_shared<RegionMap>(4 * kMiB, "b");
  ASSERT_TRUE(a->Attach(b, {}).ok());
  EXPECT_EQ(b->Attach(a, {.size = 4 * kMiB}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a->Attach(a, {.size = 4096}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RegionMapTest, NestedChangesReachListenersInOuterCoordinates) {
  struct Recorder : RegionMap::Listener {
    std::vector<std::pair<uint64_t, uint64_t>> seen;
    void BackingChanged(uint64_t o, uint64_t s) override { seen.push_back({o, s}); }
  } rec;
  auto outer = std::make_shared<RegionMap>(64 * kMiB, "outer");
  auto inner = std::make_shared<RegionMap>(16 * kMiB, "inner");
  ASSERT_TRUE(outer->Attach(inner, {.at = 32 * kMiB, .size = 8 * kMiB,
                                    .ds_offset = 4 * kMiB}).ok());
  outer->AddListener(&rec);
  ASSERT_TRUE(inner->Attach(Ram(2 * kMiB), {.at = 5 * kMiB}).ok());
  ASSERT_TRUE(inner->Attach(Ram(2 * kMiB), {.at = 0}).ok());  // outside window
  ASSERT_EQ(rec.seen.size(), 1u);
  EXPECT_EQ(rec.seen[0].first, 33 * kMiB);
  EXPECT_EQ(rec.seen[0].second, 2 * kMiB);
  ASSERT_TRUE(outer->Detach(32 * kMiB).ok());
  ASSERT_TRUE(inner->Attach(Ram(kMiB), {.at = 8 * kMiB}).ok());
  EXPECT_EQ(rec.seen.size(), 2u) << "detached maps no longer report";
  outer->RemoveListener(&rec);
}

TEST(RegionMapTest, UnbackedOffsetIsAnsweredNoRegion) {
  RegionMap map(8 * kMiB, "m");
  auto cq = CompletionQueue::Create(4);
  ASSERT_TRUE(cq.ok());
  PageRequest r;
  r.offset = 4096;
  r.slot = 7;
  r.completion_queue = cq->get();
  map.RequestPage(r);
  std::vector<PageCompletion> out;
  (*cq)->Drain(out, false);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].slot, 7u);
  EXPECT_EQ(out[0].resolution, Resolution::kNoRegion);
}

}  // namespace
}  // namespace pagewire
