// ring.h - the FIFO the transports keep their pending operations and
// completions in.
#ifndef PAGEWIRE_RUNTIME_BASE_RING_H_
#define PAGEWIRE_RUNTIME_BASE_RING_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace pagewire {

// A FIFO ring of trivially copyable T; doubles only when full, so the
// steady state never allocates. Not thread-safe: its owner locks.
template <typename T>
class Ring {
 public:
  explicit Ring(size_t capacity) : slots_(RoundUp(capacity)) {}
  bool empty() const { return head_ == tail_; }
  size_t size() const { return tail_ - head_; }
  void Push(const T& t) {
    if (size() == slots_.size()) Grow();
    slots_[tail_++ & (slots_.size() - 1)] = t;
  }
  const T& Front() const { return slots_[head_ & (slots_.size() - 1)]; }
  // The i-th element from the front (i < size()).
  const T& At(size_t i) const {
    return slots_[(head_ + i) & (slots_.size() - 1)];
  }
  void PopFront() { ++head_; }

 private:
  static size_t RoundUp(size_t n) {
    size_t c = 1;
    while (c < n) c <<= 1;
    return c;
  }
  void Grow() {
    std::vector<T> bigger(slots_.size() * 2);
    for (size_t i = 0; i < size(); ++i) bigger[i] = At(i);
    tail_ = size();
    head_ = 0;
    slots_.swap(bigger);
  }
  std::vector<T> slots_;
  uint64_t head_ = 0;  // never wraps in practice: 2^64 operations
  uint64_t tail_ = 0;
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_BASE_RING_H_
