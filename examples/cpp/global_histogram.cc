// global_histogram.cc - the C++ API: typed global arrays, RAII session,
// absl::Status errors.
//
//   pagewire-run -n 4 global_histogram
//
// Rank r fills its block of a global array of samples; after a barrier every
// rank builds the histogram of the whole array (faulting in the other
// blocks) and checks it against the histogram computed from the formula.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "pagewire/pagewire.hpp"

namespace {

uint32_t Sample(uint64_t i) {
  uint64_t x = i * 0x9E3779B97F4A7C15ull;
  x ^= x >> 31;
  return static_cast<uint32_t>(x % 64);
}

}  // namespace

int main(int argc, char** argv) {
  absl::StatusOr<pagewire::Session> pw = pagewire::Session::Init(&argc, &argv);
  if (!pw.ok()) {
    std::fprintf(stderr, "global_histogram: %s\n",
                 pw.status().ToString().c_str());
    return 1;
  }
  const size_t n = size_t{1} << 20;
  absl::StatusOr<pagewire::GlobalArray<uint32_t>> samples =
      pw->Alloc<uint32_t>(n, PW_PLACE_BLOCK);
  if (!samples.ok()) {
    std::fprintf(stderr, "global_histogram: %s\n",
                 samples.status().ToString().c_str());
    return 1;
  }
  const size_t per_rank = n / pw->nranks();
  for (size_t i = pw->rank() * per_rank; i < (pw->rank() + 1) * per_rank; ++i) {
    (*samples)[i] = Sample(i);
  }
  if (absl::Status s = pw->Barrier(); !s.ok()) {
    std::fprintf(stderr, "global_histogram: %s\n", s.ToString().c_str());
    return 1;
  }
  std::vector<uint64_t> histogram(64), expected(64);
  for (uint32_t v : *samples) ++histogram[v];
  for (size_t i = 0; i < n; ++i) ++expected[Sample(i)];
  const bool ok = histogram == expected;
  std::printf("global_histogram: rank %d of %d: %zu samples, %s\n", pw->rank(),
              pw->nranks(), n,
              ok ? "histogram matches" : "histogram WRONG");
  (void)pw->Barrier();
  return ok ? 0 : 3;
}
