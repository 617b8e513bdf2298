// controlled_dataspace.h - a test manager whose answer latency is set by the
// test: inline, after a given delay, or never until told.
//
// Pages hold PatternWord(seed, offset). The manager counts the requests it
// received, per page and in total, so tests can prove coalescing.
//
// Threads: all methods are thread-safe. Delayed answers are posted by the
// manager's own thread ("pw-test-mgr"), which models a busy manager's service
// time; it is the manager's behaviour under test, not a timeout of the fault
// path.
#ifndef PAGEWIRE_RUNTIME_TESTING_CONTROLLED_DATASPACE_H_
#define PAGEWIRE_RUNTIME_TESTING_CONTROLLED_DATASPACE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "runtime/memory/dataspace.h"

namespace pagewire::testing {

class ControlledDataspace final : public Dataspace {
 public:
  enum class Mode { kInline, kDelayed, kHeld };

  ControlledDataspace(uint64_t size, uint64_t seed);
  // Held requests are answered (with data) before destruction.
  ~ControlledDataspace() override;

  // From now on, answer inline.
  void AnswerInline();
  // From now on, answer each request `latency` after it arrived.
  void AnswerAfter(absl::Duration latency);
  // From now on, hold every request until Release().
  void Hold();
  // Answers every held request now, and inline from then on.
  void Release();
  // From now on, answer every request kFailed with `why`.
  void FailWith(absl::Status why);

  uint64_t requests() const { return requests_.load(); }
  uint64_t RequestsFor(uint64_t offset) const;
  size_t held() const;
  // Blocks until `n` requests are held (the test's synchronisation point).
  void AwaitHeld(size_t n) const;

  uint64_t seed() const { return seed_; }
  uint64_t size() const override { return size_; }
  void RequestPage(const PageRequest& request) override;
  std::string Describe() const override;

 private:
  struct Held {
    PageRequest request;
    absl::Time due;
  };
  void Answer(const PageRequest& request);
  void Serve();

  const uint64_t size_;
  const uint64_t seed_;
  std::atomic<uint64_t> requests_{0};

  mutable absl::Mutex mutex_;
  Mode mode_ ABSL_GUARDED_BY(mutex_) = Mode::kInline;
  absl::Duration latency_ ABSL_GUARDED_BY(mutex_);
  absl::Status failure_ ABSL_GUARDED_BY(mutex_);
  std::deque<Held> held_ ABSL_GUARDED_BY(mutex_);
  absl::flat_hash_map<uint64_t, uint64_t> per_page_ ABSL_GUARDED_BY(mutex_);
  bool closing_ ABSL_GUARDED_BY(mutex_) = false;
  std::thread server_;
};

}  // namespace pagewire::testing

#endif  // PAGEWIRE_RUNTIME_TESTING_CONTROLLED_DATASPACE_H_
