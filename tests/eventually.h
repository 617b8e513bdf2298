// eventually.h - waiting, in tests, for state the test can observe.
#ifndef PAGEWIRE_TESTS_EVENTUALLY_H_
#define PAGEWIRE_TESTS_EVENTUALLY_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace pagewire::testing {

// Waits (test side only; the code under test never does) until `pred`
// holds, looking every 200 us. Fails the test naming `what` if it does not
// within `bound`: a wait on observed state, bounded so that a broken
// expectation ends in a message, not a hang.
template <typename Pred>
bool Eventually(Pred pred, const char* what,
                absl::Duration bound = absl::Seconds(60)) {
  const absl::Time give_up = absl::Now() + bound;
  while (!pred()) {
    if (absl::Now() > give_up) {
      ADD_FAILURE() << "gave up after " << bound << " waiting for " << what;
      return false;
    }
    absl::SleepFor(absl::Microseconds(200));
  }
  return true;
}

}  // namespace pagewire::testing

#endif  // PAGEWIRE_TESTS_EVENTUALLY_H_
