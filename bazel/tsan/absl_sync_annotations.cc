// absl_sync_annotations.cc - makes Debian's uninstrumented absl::Mutex,
// absl::CondVar and absl::Notification visible to ThreadSanitizer.
//
// Debian ships Abseil only as shared libraries built without TSan, so TSan
// sees no lock or unlock in absl::Mutex and reports every access guarded by
// one as a race. This file, linked into every executable of the TSan build
// (--config=tsan selects it from //bazel/third_party:absl), defines the
// out-of-line members of those classes itself. The executable's definitions
// come first in the dynamic linker's lookup order, so they interpose every
// call: from the program, from the instrumented shared libraries Bazel
// links tests with, and from Abseil itself. Each one tells TSan what the
// call does (the __tsan_mutex_* annotations, as Abseil's own TSan build
// does) and forwards to the real member, looked up by its mangled name in
// libabsl_synchronization.so.
//
// What the annotations model:
// - Lock/ReaderLock/TryLock/LockWhen...: an acquisition of the mutex at
//   `this` (exclusive or shared); Unlock/ReaderUnlock/Release: a release.
// - Await..., CondVar::Wait...: the caller releases the mutex and holds it
//   again on return. A condition passed to Await or LockWhen is evaluated
//   inside some thread's Unlock or Lock, with the mutex held, by code TSan
//   cannot see into: while the real member runs, the thread is inside an
//   annotated lock or unlock, so TSan ignores the condition's reads (they are
//   made with the mutex held, so they race with nothing).
// - Notification: Notify releases at the notification's address, a
//   WaitForNotification... that saw the notification acquires it. (The
//   inline HasBeenNotified() does not acquire: code that reads data after
//   polling it must wait with WaitForNotification instead.)
// - ~Mutex: the mutex's address may be reused for a new one.
//
// A call that Abseil makes from inside an annotated call (Notify locks the
// notification's own mutex, AwaitWithTimeout calls AwaitWithDeadline ...)
// is forwarded without annotating it again: `depth` counts the annotated
// calls in progress on this thread.
//
// The shared/exclusive mode in which the caller holds the mutex is needed to
// annotate Await and CondVar::Wait; each thread keeps the mutexes it holds
// shared (a short list: readers of Pagewire do not nest deeply).
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/base/config.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

#if !defined(__SANITIZE_THREAD__)
#error "absl_sync_annotations.cc is only for the TSan build (--config=tsan)"
#endif
#if ABSL_LTS_RELEASE_VERSION != 20220623
#error "the forwarded symbols below are Abseil 20220623's"
#endif

// Every forwarded symbol is named "_ZN4absl" + ABSL_NS + ...: the mangled
// inline namespace of Debian's Abseil.
#define ABSL_NS "7debian3"

namespace {

constexpr bool SameString(const char* a, const char* b) {
  return *a == *b && (*a == '\0' || SameString(a + 1, b + 1));
}
static_assert(SameString(ABSL_NS,
                         "7" ABSL_INTERNAL_TOKEN_STR(
                             ABSL_OPTION_INLINE_NAMESPACE_NAME)),
              "ABSL_NS must be the length and name of the inline namespace");

// The real member `mangled` of libabsl_synchronization.so, as a function
// taking the object first (the Itanium C++ ABI passes `this` that way).
void* Real(const char* mangled) {
  static void* const lib = ::dlopen("libabsl_synchronization.so.20220623",
                                    RTLD_NOW | RTLD_NOLOAD);
  void* f = lib == nullptr ? nullptr : ::dlsym(lib, mangled);
  if (f == nullptr) {
    std::fprintf(stderr,
                 "absl_sync_annotations: %s not found in "
                 "libabsl_synchronization.so.20220623 (%s)\n",
                 mangled, ::dlerror());
    std::abort();
  }
  return f;
}

template <typename Fn>
Fn RealAs(const char* mangled) {
  return reinterpret_cast<Fn>(Real(mangled));
}

// Annotated calls in progress on this thread; only the outermost annotates.
thread_local int depth = 0;

class Outermost {
 public:
  Outermost() : outer_(depth++ == 0) {}
  ~Outermost() { --depth; }
  bool operator()() const { return outer_; }

 private:
  const bool outer_;
};

// The mutexes this thread holds shared.
constexpr size_t kMaxSharedHeld = 32;
thread_local std::array<const void*, kMaxSharedHeld> shared_held;
thread_local size_t shared_count = 0;

void NoteShared(const void* mu) {
  if (shared_count == kMaxSharedHeld) {
    std::fprintf(stderr, "absl_sync_annotations: more than %zu shared locks\n",
                 kMaxSharedHeld);
    std::abort();
  }
  shared_held[shared_count++] = mu;
}

void ForgetShared(const void* mu) {
  for (size_t i = shared_count; i-- > 0;) {
    if (shared_held[i] == mu) {
      shared_held[i] = shared_held[--shared_count];
      return;
    }
  }
}

unsigned HeldMode(const void* mu) {
  for (size_t i = 0; i < shared_count; ++i) {
    if (shared_held[i] == mu) return __tsan_mutex_read_lock;
  }
  return 0;
}

// An acquisition of `mu` around `lock`, which returns whether it got it.
template <typename F>
bool AnnotatedAcquire(void* mu, unsigned flags, F lock) {
  Outermost outer;
  if (!outer()) return lock();
  __tsan_mutex_pre_lock(mu, flags);
  const bool got = lock();
  __tsan_mutex_post_lock(mu, got ? flags : flags | __tsan_mutex_try_lock_failed,
                         0);
  if (got && (flags & __tsan_mutex_read_lock)) NoteShared(mu);
  return got;
}

template <typename F>
void AnnotatedRelease(void* mu, unsigned flags, F unlock) {
  Outermost outer;
  if (!outer()) return unlock();
  if (flags & __tsan_mutex_read_lock) ForgetShared(mu);
  __tsan_mutex_pre_unlock(mu, flags);
  unlock();
  __tsan_mutex_post_unlock(mu, flags);
}

// `wait` releases `mu` (held in whatever mode this thread holds it) and
// holds it again before it returns.
template <typename F>
auto AnnotatedWait(void* mu, F wait) {
  Outermost outer;
  if (!outer()) return wait();
  const unsigned mode = HeldMode(mu);
  __tsan_mutex_pre_unlock(mu, mode);
  auto result = wait();
  __tsan_mutex_post_unlock(mu, mode);
  __tsan_mutex_pre_lock(mu, mode);
  __tsan_mutex_post_lock(mu, mode, 0);
  return result;
}

using Cond = absl::Condition;
constexpr unsigned kShared = __tsan_mutex_read_lock;
constexpr unsigned kTry = __tsan_mutex_try_lock;

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

// Mutex: acquisitions.

void Mutex::Lock() {
  static auto real = RealAs<void (*)(Mutex*)>("_ZN4absl" ABSL_NS "5Mutex4LockEv");
  AnnotatedAcquire(this, 0, [&] { real(this); return true; });
}

void Mutex::ReaderLock() {
  static auto real =
      RealAs<void (*)(Mutex*)>("_ZN4absl" ABSL_NS "5Mutex10ReaderLockEv");
  AnnotatedAcquire(this, kShared, [&] { real(this); return true; });
}

bool Mutex::TryLock() {
  static auto real =
      RealAs<bool (*)(Mutex*)>("_ZN4absl" ABSL_NS "5Mutex7TryLockEv");
  return AnnotatedAcquire(this, kTry, [&] { return real(this); });
}

bool Mutex::ReaderTryLock() {
  static auto real =
      RealAs<bool (*)(Mutex*)>("_ZN4absl" ABSL_NS "5Mutex13ReaderTryLockEv");
  return AnnotatedAcquire(this, kShared | kTry, [&] { return real(this); });
}

void Mutex::LockWhen(const Condition& cond) {
  static auto real = RealAs<void (*)(Mutex*, const Cond&)>(
      "_ZN4absl" ABSL_NS "5Mutex8LockWhenERKNS0_9ConditionE");
  AnnotatedAcquire(this, 0, [&] { real(this, cond); return true; });
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  static auto real = RealAs<void (*)(Mutex*, const Cond&)>(
      "_ZN4absl" ABSL_NS "5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  AnnotatedAcquire(this, kShared, [&] { real(this, cond); return true; });
}

// The ...WithTimeout and ...WithDeadline forms hold the mutex on return
// whatever they return (whether the condition became true).
bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static auto real = RealAs<bool (*)(Mutex*, const Cond&, Duration)>(
      "_ZN4absl" ABSL_NS "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  bool met = false;
  AnnotatedAcquire(this, 0, [&] { met = real(this, cond, timeout); return true; });
  return met;
}

bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static auto real = RealAs<bool (*)(Mutex*, const Cond&, Duration)>(
      "_ZN4absl" ABSL_NS
      "5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  bool met = false;
  AnnotatedAcquire(this, kShared, [&] { met = real(this, cond, timeout); return true; });
  return met;
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  static auto real = RealAs<bool (*)(Mutex*, const Cond&, Time)>(
      "_ZN4absl" ABSL_NS "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  bool met = false;
  AnnotatedAcquire(this, 0, [&] { met = real(this, cond, deadline); return true; });
  return met;
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, Time deadline) {
  static auto real = RealAs<bool (*)(Mutex*, const Cond&, Time)>(
      "_ZN4absl" ABSL_NS
      "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  bool met = false;
  AnnotatedAcquire(this, kShared, [&] { met = real(this, cond, deadline); return true; });
  return met;
}

// Mutex: releases.

void Mutex::Unlock() {
  static auto real =
      RealAs<void (*)(Mutex*)>("_ZN4absl" ABSL_NS "5Mutex6UnlockEv");
  AnnotatedRelease(this, 0, [&] { real(this); });
}

void Mutex::ReaderUnlock() {
  static auto real =
      RealAs<void (*)(Mutex*)>("_ZN4absl" ABSL_NS "5Mutex12ReaderUnlockEv");
  AnnotatedRelease(this, kShared, [&] { real(this); });
}

// ReleasableMutexLock's only member is its Mutex*, which Release() clears.
static_assert(sizeof(ReleasableMutexLock) == sizeof(Mutex*),
              "ReleasableMutexLock is no longer just its Mutex*");

void ReleasableMutexLock::Release() {
  static auto real = RealAs<void (*)(ReleasableMutexLock*)>(
      "_ZN4absl" ABSL_NS "19ReleasableMutexLock7ReleaseEv");
  Mutex* mu;
  std::memcpy(&mu, this, sizeof(mu));
  AnnotatedRelease(mu, 0, [&] { real(this); });
}

// Mutex: waits that release and reacquire.

void Mutex::Await(const Condition& cond) {
  static auto real = RealAs<void (*)(Mutex*, const Cond&)>(
      "_ZN4absl" ABSL_NS "5Mutex5AwaitERKNS0_9ConditionE");
  AnnotatedWait(this, [&] { real(this, cond); return true; });
}

bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  static auto real = RealAs<bool (*)(Mutex*, const Cond&, Duration)>(
      "_ZN4absl" ABSL_NS "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  return AnnotatedWait(this, [&] { return real(this, cond, timeout); });
}

bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  static auto real = RealAs<bool (*)(Mutex*, const Cond&, Time)>(
      "_ZN4absl" ABSL_NS "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  return AnnotatedWait(this, [&] { return real(this, cond, deadline); });
}

Mutex::~Mutex() {
  static auto real =
      RealAs<void (*)(Mutex*)>("_ZN4absl" ABSL_NS "5MutexD2Ev");
  __tsan_mutex_destroy(this, __tsan_mutex_not_static);
  real(this);
}

// CondVar: Wait releases the mutex and holds it again on return; Signal and
// SignalAll order nothing by themselves (the mutex does).

void CondVar::Wait(Mutex* mu) {
  static auto real = RealAs<void (*)(CondVar*, Mutex*)>(
      "_ZN4absl" ABSL_NS "7CondVar4WaitEPNS0_5MutexE");
  AnnotatedWait(mu, [&] { real(this, mu); return true; });
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  static auto real = RealAs<bool (*)(CondVar*, Mutex*, Duration)>(
      "_ZN4absl" ABSL_NS "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  return AnnotatedWait(mu, [&] { return real(this, mu, timeout); });
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  static auto real = RealAs<bool (*)(CondVar*, Mutex*, Time)>(
      "_ZN4absl" ABSL_NS "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  return AnnotatedWait(mu, [&] { return real(this, mu, deadline); });
}

// Notification.

void Notification::Notify() {
  static auto real =
      RealAs<void (*)(Notification*)>("_ZN4absl" ABSL_NS "12Notification6NotifyEv");
  Outermost outer;
  if (outer()) __tsan_release(this);
  real(this);
}

void Notification::WaitForNotification() const {
  static auto real = RealAs<void (*)(const Notification*)>(
      "_ZNK4absl" ABSL_NS "12Notification19WaitForNotificationEv");
  Outermost outer;
  real(this);
  if (outer()) __tsan_acquire(const_cast<Notification*>(this));
}

bool Notification::WaitForNotificationWithTimeout(Duration timeout) const {
  static auto real = RealAs<bool (*)(const Notification*, Duration)>(
      "_ZNK4absl" ABSL_NS
      "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  Outermost outer;
  const bool notified = real(this, timeout);
  if (outer() && notified) __tsan_acquire(const_cast<Notification*>(this));
  return notified;
}

bool Notification::WaitForNotificationWithDeadline(Time deadline) const {
  static auto real = RealAs<bool (*)(const Notification*, Time)>(
      "_ZNK4absl" ABSL_NS
      "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
  Outermost outer;
  const bool notified = real(this, deadline);
  if (outer() && notified) __tsan_acquire(const_cast<Notification*>(this));
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
