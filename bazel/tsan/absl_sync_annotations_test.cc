// absl_sync_annotations_test.cc - each absl synchronization primitive the
// code uses hands a plain int from one thread to another. Built with
// --config=tsan (tag "tsan"), TSan reports a race unless the annotations
// (absl_sync_annotations.cc) show it the primitive's ordering; built
// normally it only checks the values.
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace {

// A value guarded by `mu`, and a flag conditions wait for.
struct Shared {
  absl::Mutex mu;
  int value = 0;  // written by one thread, read by the other
  bool ready ABSL_GUARDED_BY(mu) = false;
};

void Publish(Shared& s, int v) {
  s.value = v;
  absl::MutexLock lock(&s.mu);
  s.ready = true;
}

TEST(AbslSyncAnnotationsTest, LockAndUnlockOrderAccesses) {
  Shared s;
  std::thread writer([&] { Publish(s, 1); });
  for (;;) {
    absl::MutexLock lock(&s.mu);
    if (s.ready) break;
  }
  EXPECT_EQ(s.value, 1);
  writer.join();
}

TEST(AbslSyncAnnotationsTest, ReaderLockSeesWritesBeforeUnlock) {
  Shared s;
  std::thread writer([&] { Publish(s, 2); });
  for (;;) {
    absl::ReaderMutexLock lock(&s.mu);
    if (s.ready) break;
  }
  EXPECT_EQ(s.value, 2);
  writer.join();
}

TEST(AbslSyncAnnotationsTest, TryLockThatSucceedsAcquires) {
  Shared s;
  std::thread writer([&] { Publish(s, 3); });
  for (;;) {
    if (!s.mu.TryLock()) continue;
    const bool ready = s.ready;
    s.mu.Unlock();
    if (ready) break;
  }
  EXPECT_EQ(s.value, 3);
  writer.join();
}

// The condition is evaluated by the writer's Unlock as often as by this
// thread: its reads are under the mutex either way.
TEST(AbslSyncAnnotationsTest, AwaitAndLockWhenAcquire) {
  Shared s;
  std::thread writer([&] { Publish(s, 4); });
  {
    absl::MutexLock lock(&s.mu);
    s.mu.Await(absl::Condition(&s.ready));
  }
  EXPECT_EQ(s.value, 4);
  writer.join();

  Shared t;
  std::thread writer2([&] { Publish(t, 5); });
  {
    absl::MutexLock lock(&t.mu, absl::Condition(&t.ready));
  }
  EXPECT_EQ(t.value, 5);
  writer2.join();
}

TEST(AbslSyncAnnotationsTest, AwaitWithTimeoutThatSucceedsAcquires) {
  Shared s;
  std::thread writer([&] { Publish(s, 6); });
  {
    absl::MutexLock lock(&s.mu);
    while (!s.mu.AwaitWithTimeout(absl::Condition(&s.ready),
                                  absl::Milliseconds(10))) {
    }
  }
  EXPECT_EQ(s.value, 6);
  writer.join();
}

TEST(AbslSyncAnnotationsTest, ReleasableMutexLockReleases) {
  Shared s;
  std::thread writer([&] {
    s.value = 7;
    absl::ReleasableMutexLock lock(&s.mu);
    s.ready = true;
    lock.Release();
  });
  {
    absl::MutexLock lock(&s.mu);
    s.mu.Await(absl::Condition(&s.ready));
  }
  EXPECT_EQ(s.value, 7);
  writer.join();
}

TEST(AbslSyncAnnotationsTest, CondVarWaitAcquires) {
  Shared s;
  absl::CondVar cv;
  std::thread writer([&] {
    Publish(s, 8);
    cv.Signal();
  });
  {
    absl::MutexLock lock(&s.mu);
    while (!s.ready) cv.Wait(&s.mu);
  }
  EXPECT_EQ(s.value, 8);
  writer.join();
}

// WaitForNotification returns at once when the notification came first
// (this thread saw it through the inline HasBeenNotified()): the ordering
// must not depend on its blocking.
TEST(AbslSyncAnnotationsTest, NotificationOrdersNotifyBeforeWait) {
  int value = 0;
  absl::Notification done;
  std::thread writer([&] {
    value = 9;
    done.Notify();
  });
  while (!done.HasBeenNotified()) std::this_thread::yield();
  done.WaitForNotification();
  EXPECT_EQ(value, 9);
  writer.join();

  int value2 = 0;
  absl::Notification done2;
  std::thread writer2([&] {
    value2 = 10;
    done2.Notify();
  });
  ASSERT_TRUE(done2.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(value2, 10);
  writer2.join();
}

}  // namespace
