// controlled_dataspace.cc - the test manager.
#include "runtime/testing/controlled_dataspace.h"

#include <pthread.h>

#include "absl/strings/str_format.h"
#include "runtime/fault/completion_queue.h"
#include "runtime/testing/pattern.h"

namespace pagewire::testing {

ControlledDataspace::ControlledDataspace(uint64_t size, uint64_t seed)
    : size_(PageUp(size)), seed_(seed) {
  server_ = std::thread([this] { Serve(); });
}

ControlledDataspace::~ControlledDataspace() {
  {
    absl::MutexLock lock(&mutex_);
    closing_ = true;
  }
  server_.join();
}

void ControlledDataspace::AnswerInline() {
  absl::MutexLock lock(&mutex_);
  mode_ = Mode::kInline;
}

void ControlledDataspace::AnswerAfter(absl::Duration latency) {
  absl::MutexLock lock(&mutex_);
  mode_ = Mode::kDelayed;
  latency_ = latency;
}

void ControlledDataspace::Hold() {
  absl::MutexLock lock(&mutex_);
  mode_ = Mode::kHeld;
}

void ControlledDataspace::Release() {
  std::deque<Held> held;
  {
    absl::MutexLock lock(&mutex_);
    mode_ = Mode::kInline;
    held.swap(held_);
  }
  for (const Held& h : held) Answer(h.request);
}

void ControlledDataspace::FailWith(absl::Status why) {
  absl::MutexLock lock(&mutex_);
  failure_ = std::move(why);
}

uint64_t ControlledDataspace::RequestsFor(uint64_t offset) const {
  absl::MutexLock lock(&mutex_);
  auto it = per_page_.find(offset);
  return it == per_page_.end() ? 0 : it->second;
}

size_t ControlledDataspace::held() const {
  absl::MutexLock lock(&mutex_);
  return held_.size();
}

void ControlledDataspace::AwaitHeld(size_t n) const {
  absl::MutexLock lock(&mutex_);
  auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    return held_.size() >= n;
  };
  mutex_.Await(absl::Condition(&enough));
}

void ControlledDataspace::RequestPage(const PageRequest& request) {
  requests_.fetch_add(1);
  {
    absl::MutexLock lock(&mutex_);
    ++per_page_[request.offset];
    if (mode_ != Mode::kInline) {
      held_.push_back(Held{request, mode_ == Mode::kDelayed
                                        ? absl::Now() + latency_
                                        : absl::InfiniteFuture()});
      return;
    }
  }
  Answer(request);
}

void ControlledDataspace::Answer(const PageRequest& request) {
  absl::Status failure;
  {
    absl::MutexLock lock(&mutex_);
    failure = failure_;
  }
  if (!failure.ok()) {
    request.completion_queue->Post(
        OutcomeCompletion(request, Resolution::kFailed, failure));
    return;
  }
  if (request.upgrade) {
    request.completion_queue->Post(
        OutcomeCompletion(request, Resolution::kWritable));
    return;
  }
  FillPattern(request.landing, seed_, request.offset);
  request.completion_queue->Post(DataCompletion(request, request.landing));
}

std::string ControlledDataspace::Describe() const {
  return absl::StrFormat("controlled test dataspace (seed %d)", seed_);
}

void ControlledDataspace::Serve() {
  pthread_setname_np(pthread_self(), "pw-test-mgr");
  absl::MutexLock lock(&mutex_);
  for (;;) {
    if (closing_) break;
    // The earliest delayed answer that is due; held ones have no due time.
    absl::Time next = absl::InfiniteFuture();
    for (const Held& h : held_) next = std::min(next, h.due);
    if (next != absl::InfiniteFuture() && next <= absl::Now()) {
      auto it = std::find_if(held_.begin(), held_.end(),
                             [&](const Held& h) { return h.due == next; });
      PageRequest request = it->request;
      held_.erase(it);
      mutex_.Unlock();
      Answer(request);
      mutex_.Lock();
      continue;
    }
    // Sleeps until the next answer is due or the queue changes: this models
    // the manager's service time.
    size_t seen = held_.size();
    auto changed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
      return closing_ || held_.size() != seen;
    };
    mutex_.AwaitWithDeadline(absl::Condition(&changed), next);
  }
  // Closing: answer what is still held so no fault is dropped.
  std::deque<Held> held;
  held.swap(held_);
  mutex_.Unlock();
  for (const Held& h : held) Answer(h.request);
  mutex_.Lock();
}

}  // namespace pagewire::testing
