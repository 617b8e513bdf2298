// log_summary.h - a message that may repeat thousands of times (every fault
// on a dead home's pages fails the same way) is logged in full the first
// time, then as a count at its 2nd, 4th, 8th, ... occurrence, and once
// more by Flush() for what was counted since. So a log stays readable and
// still says how often.
#ifndef PAGEWIRE_RUNTIME_BASE_LOG_SUMMARY_H_
#define PAGEWIRE_RUNTIME_BASE_LOG_SUMMARY_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace pagewire {

class LogSummary {
 public:
  // Distinct messages kept apart; later ones are counted together.
  static constexpr size_t kMaxKeys = 64;
  static constexpr absl::string_view kOtherKey = "(other messages)";

  // Counts one occurrence of `key`. Returns how many there have been, if
  // this one is to be logged (1: log it in full; a power of two: log the
  // count), else 0. Thread-safe.
  uint64_t Count(absl::string_view key);

  // For every key with occurrences not logged yet: report(key, total).
  void Flush(const std::function<void(const std::string& key,
                                      uint64_t total)>& report);

 private:
  struct Entry {
    uint64_t total = 0;
    uint64_t logged = 0;  // total when last logged
  };
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

inline uint64_t LogSummary::Count(absl::string_view key) {
  absl::MutexLock l(&mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    if (entries_.size() >= kMaxKeys) key = kOtherKey;
    it = entries_.try_emplace(std::string(key)).first;
  }
  Entry& e = it->second;
  const uint64_t n = ++e.total;
  if ((n & (n - 1)) != 0) return 0;  // not a power of two
  e.logged = n;
  return n;
}

inline void LogSummary::Flush(
    const std::function<void(const std::string&, uint64_t)>& report) {
  absl::MutexLock l(&mu_);
  for (auto& [key, e] : entries_) {
    if (e.total == e.logged) continue;
    report(key, e.total);
    e.logged = e.total;
  }
}

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_BASE_LOG_SUMMARY_H_
