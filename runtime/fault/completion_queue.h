// completion_queue.h - where managers post answers to page requests.
//
// Many producers (manager threads, transports, or the fault loop itself when
// a manager answers inline), one consumer (the fault service's loop), which
// drains it in bursts. A post from another thread rings an eventfd the loop
// polls; a post from the loop's own thread does not, since the loop drains
// the queue after every batch of faults anyway.
//
// Threads: Post() from any thread; Drain() and BindConsumer() only from the
// consumer thread.
#ifndef PAGEWIRE_RUNTIME_FAULT_COMPLETION_QUEUE_H_
#define PAGEWIRE_RUNTIME_FAULT_COMPLETION_QUEUE_H_

#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "runtime/fault/page_request.h"

namespace pagewire {

class CompletionQueue {
 public:
  // The queue preallocates room for `expected_depth` completions so that the
  // steady state never allocates.
  static absl::StatusOr<std::unique_ptr<CompletionQueue>> Create(
      size_t expected_depth);
  ~CompletionQueue();

  CompletionQueue(const CompletionQueue&) = delete;
  CompletionQueue& operator=(const CompletionQueue&) = delete;

  void Post(PageCompletion completion);
  // Posts without waking the consumer: for a completion it needs only at its
  // next wake-up, whatever causes that (it drains the queue on every one).
  void PostQuietly(PageCompletion completion);

  // Moves everything posted so far into `out` (cleared first). Resets the
  // eventfd's count; pass `bell_rang` when poll() reported the eventfd
  // readable, so a ring that raced with the previous drain is consumed too.
  void Drain(std::vector<PageCompletion>& out, bool bell_rang);

  // The consumer thread, whose own posts need no wake-up.
  void BindConsumer(std::thread::id consumer) { consumer_ = consumer; }

  // Readable when completions wait.
  int event_fd() const { return event_fd_; }

 private:
  CompletionQueue(int event_fd, size_t expected_depth);

  const int event_fd_;
  std::thread::id consumer_;
  absl::Mutex mutex_;
  std::vector<PageCompletion> posted_ ABSL_GUARDED_BY(mutex_);
  bool signalled_ ABSL_GUARDED_BY(mutex_) = false;
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_FAULT_COMPLETION_QUEUE_H_
