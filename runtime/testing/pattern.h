// pattern.h - deterministic page contents, so tests and benchmarks can verify
// every byte a fault delivered without keeping a copy.
#ifndef PAGEWIRE_RUNTIME_TESTING_PATTERN_H_
#define PAGEWIRE_RUNTIME_TESTING_PATTERN_H_

#include <cstdint>
#include <cstring>

#include "runtime/base/page.h"

namespace pagewire::testing {

// The word at byte `offset` of a dataspace filled with pattern `seed`.
inline uint64_t PatternWord(uint64_t seed, uint64_t offset) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ offset;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 29);
}

inline void FillPattern(void* page, uint64_t seed, uint64_t offset) {
  auto* w = static_cast<uint64_t*>(page);
  for (uint64_t i = 0; i < kPageSize / 8; ++i) {
    w[i] = PatternWord(seed, offset + 8 * i);
  }
}

// Index of the first word that differs, or -1 if the page matches.
inline int64_t FirstPatternMismatch(const void* page, uint64_t seed,
                                    uint64_t offset) {
  const auto* w = static_cast<const uint64_t*>(page);
  for (uint64_t i = 0; i < kPageSize / 8; ++i) {
    if (w[i] != PatternWord(seed, offset + 8 * i)) {
      return static_cast<int64_t>(i);
    }
  }
  return -1;
}

}  // namespace pagewire::testing

#endif  // PAGEWIRE_RUNTIME_TESTING_PATTERN_H_
