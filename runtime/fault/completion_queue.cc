// completion_queue.cc - MPSC queue of page completions with an eventfd bell.
#include "runtime/fault/completion_queue.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"

namespace pagewire {

const char* ResolutionName(Resolution r) {
  switch (r) {
    case Resolution::kData: return "data";
    case Resolution::kZero: return "zero";
    case Resolution::kWritable: return "writable";
    case Resolution::kNoRegion: return "no region";
    case Resolution::kFailed: return "failed";
    case Resolution::kRetry: return "retry";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<CompletionQueue>> CompletionQueue::Create(
    size_t expected_depth) {
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("eventfd for the completion queue: %s", strerror(errno)));
  }
  return std::unique_ptr<CompletionQueue>(new CompletionQueue(fd, expected_depth));
}

CompletionQueue::CompletionQueue(int event_fd, size_t expected_depth)
    : event_fd_(event_fd) {
  posted_.reserve(expected_depth);
}

CompletionQueue::~CompletionQueue() { ::close(event_fd_); }

void CompletionQueue::Post(PageCompletion completion) {
  bool ring = false;
  {
    absl::MutexLock lock(&mutex_);
    posted_.push_back(std::move(completion));
    if (!signalled_ && std::this_thread::get_id() != consumer_) {
      signalled_ = true;
      ring = true;
    }
  }
  if (ring) {
    uint64_t one = 1;
    // The counter cannot overflow: it is reset on every drain.
    ssize_t n = ::write(event_fd_, &one, sizeof(one));
    (void)n;
  }
}

void CompletionQueue::PostQuietly(PageCompletion completion) {
  absl::MutexLock lock(&mutex_);
  posted_.push_back(std::move(completion));
}

void CompletionQueue::Drain(std::vector<PageCompletion>& out,
                            bool bell_rang) {
  out.clear();
  absl::MutexLock lock(&mutex_);
  // Swap keeps both vectors' capacity: no allocation in the steady state.
  posted_.swap(out);
  // The bell is reset under the lock: a post that comes after the swap
  // sets signalled_ and rings only once this drain let go of the lock, so
  // this read can consume rings of posts drained here (or of late writers
  // whose completions it drained), never the ring of a completion it left
  // in the queue. (Read after unlocking, it could take the ring of such a
  // post, whose completion would then wait with signalled_ set and no
  // ring to come.) The read does not block: the eventfd is non-blocking.
  if (signalled_ || bell_rang) {
    uint64_t count;
    ssize_t n = ::read(event_fd_, &count, sizeof(count));
    (void)n;
  }
  signalled_ = false;
}

}  // namespace pagewire
