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
  bool was_signalled;
  {
    absl::MutexLock lock(&mutex_);
    // Swap keeps both vectors' capacity: no allocation in the steady state.
    posted_.swap(out);
    was_signalled = signalled_;
    signalled_ = false;
  }
  if (was_signalled || bell_rang) {
    uint64_t count;
    ssize_t n = ::read(event_fd_, &count, sizeof(count));
    (void)n;
  }
}

}  // namespace pagewire
