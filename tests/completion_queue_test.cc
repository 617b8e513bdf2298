// completion_queue_test.cc - CompletionQueue: many producers, one consumer
// that sleeps in poll() on the eventfd and drains in bursts. Built with
// --config=tsan too (tag "tsan"), where it checks that posting, ringing and
// draining are free of races.
#include "runtime/fault/completion_queue.h"

#include <poll.h>

#include <future>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace pagewire {
namespace {

constexpr int kProducers = 4;
constexpr uint32_t kPerProducer = 2000;

// Drains `cq` until `total` completions arrived, sleeping in poll() on its
// eventfd between bursts as the fault loop does; counts each slot's arrivals.
// A completion left in the queue with no ring to come (a lost wake-up) would
// leave the loop asleep: the wait is bounded so that this fails instead.
void ConsumeAll(CompletionQueue& cq, uint32_t total,
                std::vector<int>& arrivals) {
  constexpr int kLostWakeupMs = 30'000;
  std::vector<PageCompletion> burst;
  uint32_t seen = 0;
  while (seen < total) {
    pollfd bell = {cq.event_fd(), POLLIN, 0};
    ASSERT_EQ(::poll(&bell, 1, kLostWakeupMs), 1)
        << seen << " of " << total << " drained, and the bell is silent";
    cq.Drain(burst, (bell.revents & POLLIN) != 0);
    for (const PageCompletion& c : burst) {
      ASSERT_LT(c.slot, arrivals.size());
      ++arrivals[c.slot];
      // The data a producer wrote before posting is visible to the consumer.
      ASSERT_EQ(*static_cast<const uint32_t*>(c.data), c.slot);
    }
    seen += burst.size();
  }
}

TEST(CompletionQueueTest, EveryPostFromManyThreadsIsDrainedOnce) {
  auto cq = CompletionQueue::Create(64);
  ASSERT_TRUE(cq.ok()) << cq.status();
  constexpr uint32_t kTotal = kProducers * kPerProducer;
  std::vector<uint32_t> payload(kTotal);
  std::vector<int> arrivals(kTotal, 0);

  // Producers start once the consumer is bound, as the fault service's
  // managers post only answers to requests its loop made.
  std::promise<void> bound;
  std::thread consumer([&] {
    (*cq)->BindConsumer(std::this_thread::get_id());
    bound.set_value();
    ConsumeAll(**cq, kTotal, arrivals);
  });
  bound.get_future().wait();
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (uint32_t i = 0; i < kPerProducer; ++i) {
        const uint32_t slot = p * kPerProducer + i;
        payload[slot] = slot;  // written before the post, read after drain
        PageCompletion c;
        c.slot = slot;
        c.resolution = Resolution::kData;
        c.data = &payload[slot];
        (*cq)->Post(std::move(c));
      }
    });
  }
  for (std::thread& t : producers) t.join();
  consumer.join();
  for (uint32_t slot = 0; slot < kTotal; ++slot) {
    ASSERT_EQ(arrivals[slot], 1) << "slot " << slot;
  }
}

// A post from the consumer's own thread does not ring the bell; one from
// any other thread does, once until the next drain.
TEST(CompletionQueueTest, OnlyOtherThreadsRingTheBell) {
  auto cq = CompletionQueue::Create(4);
  ASSERT_TRUE(cq.ok()) << cq.status();
  (*cq)->BindConsumer(std::this_thread::get_id());
  const uint32_t payload[2] = {0, 1};
  PageCompletion own;
  own.slot = 0;
  own.data = &payload[0];
  (*cq)->Post(std::move(own));
  pollfd bell = {(*cq)->event_fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&bell, 1, 0), 0) << "the consumer's own post rang";

  std::thread other([&] {
    PageCompletion c;
    c.slot = 1;
    c.data = &payload[1];
    (*cq)->Post(std::move(c));
  });
  other.join();
  EXPECT_EQ(::poll(&bell, 1, 0), 1) << "another thread's post did not ring";
  std::vector<PageCompletion> out;
  (*cq)->Drain(out, true);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].slot, 0u);
  EXPECT_EQ(out[1].slot, 1u);
  EXPECT_EQ(::poll(&bell, 1, 0), 0) << "the drain left the bell ringing";
}

}  // namespace
}  // namespace pagewire
