// log_summary_test.cc - LogSummary logs a repeated message at its first
// occurrence and each doubling, keeps distinct messages apart (up to a
// bound), and Flush reports what was counted since.
#include "runtime/base/log_summary.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace pagewire {
namespace {

TEST(LogSummaryTest, LogsTheFirstAndEachDoublingThenFlushesTheRest) {
  LogSummary summary;
  std::vector<uint64_t> logged;
  for (int i = 0; i < 100; ++i) {
    if (uint64_t n = summary.Count("home rank 1 is dead")) logged.push_back(n);
  }
  EXPECT_EQ(logged, (std::vector<uint64_t>{1, 2, 4, 8, 16, 32, 64}));
  std::map<std::string, uint64_t> flushed;
  summary.Flush([&](const std::string& key, uint64_t total) {
    flushed[key] = total;
  });
  EXPECT_EQ(flushed, (std::map<std::string, uint64_t>{{"home rank 1 is dead", 100}}));
  // Nothing new: nothing to flush.
  flushed.clear();
  summary.Flush([&](const std::string& key, uint64_t total) {
    flushed[key] = total;
  });
  EXPECT_TRUE(flushed.empty());
}

TEST(LogSummaryTest, DistinctMessagesAreCountedApartUpToABound) {
  LogSummary summary;
  EXPECT_EQ(summary.Count("a"), 1u);
  EXPECT_EQ(summary.Count("b"), 1u);
  EXPECT_EQ(summary.Count("a"), 2u);
  for (size_t i = 2; i < LogSummary::kMaxKeys; ++i) {
    EXPECT_EQ(summary.Count(absl::StrCat("key ", i)), 1u);
  }
  // Past the bound, new messages share one count.
  EXPECT_EQ(summary.Count("one too many"), 1u);
  EXPECT_EQ(summary.Count("and another"), 2u);
  std::map<std::string, uint64_t> flushed;
  summary.Flush([&](const std::string& key, uint64_t total) {
    flushed[key] = total;
  });
  EXPECT_TRUE(flushed.empty()) << "every count was logged when it happened";
  EXPECT_EQ(summary.Count("yet another"), 0u);  // third "other": not logged
  summary.Flush([&](const std::string& key, uint64_t total) {
    flushed[key] = total;
  });
  EXPECT_EQ(flushed[std::string(LogSummary::kOtherKey)], 3u);
}

}  // namespace
}  // namespace pagewire
