// latency_histogram.h - fault-resolution latencies, recorded by one thread
// without locks or allocation, read by any thread.
//
// Buckets are log-linear: 4 per power of two of nanoseconds, so a quantile is
// known to within 19% (the upper edge of its bucket is reported).
#ifndef PAGEWIRE_RUNTIME_BASE_LATENCY_HISTOGRAM_H_
#define PAGEWIRE_RUNTIME_BASE_LATENCY_HISTOGRAM_H_

#include <array>
#include <atomic>
#include <cstdint>

namespace pagewire {

class LatencyHistogram {
 public:
  static constexpr int kSubBits = 2;
  static constexpr int kBuckets = 64 << kSubBits;

  // Single writer: the owning thread. Relaxed stores, no read-modify-write.
  void Record(uint64_t ns) {
    Bump(buckets_[Bucket(ns)]);
    count_.store(count_.load(std::memory_order_relaxed) + 1,
                 std::memory_order_relaxed);
    sum_ns_.store(sum_ns_.load(std::memory_order_relaxed) + ns,
                  std::memory_order_relaxed);
  }

  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double MeanNs() const {
    uint64_t n = count();
    return n ? static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / n
             : 0.0;
  }
  // Upper edge of the bucket holding quantile q in [0, 1]; 0 if empty.
  uint64_t QuantileNs(double q) const {
    uint64_t n = count();
    if (n == 0) return 0;
    uint64_t rank = static_cast<uint64_t>(q * static_cast<double>(n - 1)) + 1;
    uint64_t seen = 0;
    for (int b = 0; b < kBuckets; ++b) {
      seen += buckets_[b].load(std::memory_order_relaxed);
      if (seen >= rank) return UpperEdge(b);
    }
    return UpperEdge(kBuckets - 1);
  }

  static int Bucket(uint64_t ns) {
    if (ns < (1u << kSubBits)) return static_cast<int>(ns);
    int msb = 63 - __builtin_clzll(ns);
    int sub = static_cast<int>((ns >> (msb - kSubBits)) & ((1 << kSubBits) - 1));
    return ((msb - kSubBits + 1) << kSubBits) + sub;
  }
  static uint64_t UpperEdge(int bucket) {
    if (bucket < (1 << kSubBits)) return static_cast<uint64_t>(bucket);
    int msb = (bucket >> kSubBits) + kSubBits - 1;
    uint64_t sub = static_cast<uint64_t>(bucket & ((1 << kSubBits) - 1));
    if (msb >= 63) return UINT64_MAX;
    return (uint64_t{1} << msb) + ((sub + 1) << (msb - kSubBits)) - 1;
  }

 private:
  static void Bump(std::atomic<uint64_t>& a) {
    a.store(a.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_ns_{0};
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_BASE_LATENCY_HISTOGRAM_H_
