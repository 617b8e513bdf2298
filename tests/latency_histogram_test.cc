// latency_histogram_test.cc - every value falls in the bucket whose edges
// bracket it, and quantiles are ordered.
#include "runtime/base/latency_histogram.h"

#include "gtest/gtest.h"

namespace pagewire {
namespace {

TEST(LatencyHistogramTest, BucketEdgesBracketTheirValues) {
  for (uint64_t ns = 1; ns < (uint64_t{1} << 40); ns = ns * 3 / 2 + 1) {
    int b = LatencyHistogram::Bucket(ns);
    EXPECT_LE(ns, LatencyHistogram::UpperEdge(b)) << ns;
    if (b > 0) EXPECT_GT(ns, LatencyHistogram::UpperEdge(b - 1)) << ns;
  }
}

TEST(LatencyHistogramTest, QuantilesAreOrderedAndClose) {
  LatencyHistogram h;
  for (uint64_t i = 1; i <= 1000; ++i) h.Record(i * 100);
  uint64_t p50 = h.QuantileNs(0.5), p99 = h.QuantileNs(0.99);
  EXPECT_LE(p50, p99);
  EXPECT_GE(p50, 50000u);
  EXPECT_LE(p50, 50000u * 5 / 4);
  EXPECT_GE(p99, 99000u);
  EXPECT_NEAR(h.MeanNs(), 50050.0, 1.0);
}

}  // namespace
}  // namespace pagewire
