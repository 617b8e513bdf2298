// fake_peer_transport.h - a Transport whose peers live inside it, for
// in-process tests of one rank against peers the test plays.
//
// Every peer's global range is a plain buffer of the same size as the
// rank's, at the same addresses: a one-sided operation to a peer is served
// from (or into) that buffer at once, on the posting thread, after an
// optional gate the test controls (so it can hold one operation while
// others run). Completions go to a queue behind an eventfd, as the fault
// loop expects of a transport without a thread of its own (verbs).
// Messages the rank sends are recorded; the test answers by Deliver(),
// which calls the rank's message handler as the transport's receive thread
// would.
//
// Threads: any. The gate and the message hook run on the posting thread
// and may block it (a real transport never would: that is the point).
#ifndef PAGEWIRE_RUNTIME_TESTING_FAKE_PEER_TRANSPORT_H_
#define PAGEWIRE_RUNTIME_TESTING_FAKE_PEER_TRANSPORT_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "runtime/transport/transport.h"

namespace pagewire::testing {

class FakePeerTransport final : public Transport {
 public:
  // The rank's global range [base, base + size) and its peers 0..nranks-1
  // (the rank's own entry is unused).
  FakePeerTransport(uintptr_t base, uint64_t size, int nranks);
  ~FakePeerTransport() override;

  // The key every peer's global range is reached with.
  static constexpr uint32_t kPeerKey = 0x5eed;

  // Peer `peer`'s byte at global address `addr`.
  char* PeerMemory(int peer, uintptr_t addr);
  uint64_t PeerWord(int peer, uintptr_t addr);

  // Called with every work request before it is served, on the posting
  // thread; may block it.
  using Gate = std::function<void(int peer, const WorkRequest& wr)>;
  void SetGate(Gate gate);

  struct Message {
    int peer;
    uint16_t type;
    std::string body;
  };
  // Called with every message the rank sends, on the sending thread, after
  // it is recorded.
  using MessageHook = std::function<void(const Message& m)>;
  void SetMessageHook(MessageHook hook);
  std::vector<Message> messages() const;
  // Hands `body` to the rank's message handler as if `peer` sent it.
  void Deliver(int peer, uint16_t type, absl::Span<const char> body);

  // Work requests served, by opcode.
  uint64_t served(WorkOpcode op) const;

  // Transport.
  std::string Name() const override { return "fake"; }
  absl::StatusOr<MemoryRegion> RegisterMemory(void* addr,
                                              uint64_t length) override;
  absl::Status DeregisterMemory(const MemoryRegion& region) override;
  TransportEndpoint LocalEndpoint() const override { return {}; }
  absl::Status Connect(int peer, const TransportEndpoint& endpoint) override;
  void PeerDied(int peer) override;
  // Every post is served before PostSend returns.
  uint64_t Outstanding(int) const override { return 0; }
  absl::Status PostSend(int peer, WorkRequest* chain) override;
  int PollCompletions(WorkCompletion* out, int max) override;
  int completion_fd() const override { return event_fd_; }
  void SetMessageHandler(MessageHandler handler) override;
  absl::Status SendMessage(int peer, uint16_t type,
                           absl::Span<const char> body) override;

 private:
  WcStatus Serve(int peer, const WorkRequest& wr);
  void Complete(const WorkCompletion& wc);

  const uintptr_t base_;
  const uint64_t size_;
  const int nranks_;
  const int event_fd_;
  std::vector<std::unique_ptr<char[]>> memory_;  // by peer, size_ bytes

  mutable absl::Mutex mutex_;
  Gate gate_ ABSL_GUARDED_BY(mutex_);
  MessageHook hook_ ABSL_GUARDED_BY(mutex_);
  MessageHandler handler_ ABSL_GUARDED_BY(mutex_);
  std::vector<bool> dead_ ABSL_GUARDED_BY(mutex_);
  std::vector<MemoryRegion> regions_ ABSL_GUARDED_BY(mutex_);
  uint32_t next_key_ ABSL_GUARDED_BY(mutex_) = 1;
  std::deque<WorkCompletion> completions_ ABSL_GUARDED_BY(mutex_);
  std::vector<Message> messages_ ABSL_GUARDED_BY(mutex_);
  uint64_t served_[4] ABSL_GUARDED_BY(mutex_) = {};
  // Serves one operation at a time, as one peer's NIC would: an atomic is
  // atomic, a WRITE lands whole.
  absl::Mutex serve_mutex_;
};

}  // namespace pagewire::testing

#endif  // PAGEWIRE_RUNTIME_TESTING_FAKE_PEER_TRANSPORT_H_
