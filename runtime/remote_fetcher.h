// remote_fetcher.h - the bridge from fault slots to the transport: a page
// homed elsewhere is fetched by a one-sided READ into the fault's landing
// buffer, and the READ's completion becomes the fault's completion.
//
// The fetcher is a CompletionSource of the fault service: the fault loop
// polls the transport's completion fd and drains it here in bursts. A READ's
// wr_id is the fault slot, so a completion finds its fault in O(1). Fetches
// that need a home manager first (a nested backing, or first-touch
// ownership) send a message and continue when the reply arrives; the pending
// table, indexed by slot, remembers them. Nothing waits with a timeout: a
// fault waits until its READ or reply completes, or until membership
// declares the peer dead (PeerDied), which fails it loudly.
//
// It also batches directory notices ("this rank now caches these pages") per
// home and sends them after each burst, off the faults' critical path.
//
// Threads: Read/Send* from the fault loop (inside RequestPage) or from the
// transport thread (on a reply); Drain/AfterBurst on the fault loop;
// OnReady/OnClaimed on the transport thread; PeerDied and SetPeer from
// control-plane threads.
#ifndef PAGEWIRE_RUNTIME_REMOTE_FETCHER_H_
#define PAGEWIRE_RUNTIME_REMOTE_FETCHER_H_

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "runtime/fault_service.h"
#include "runtime/page_request.h"
#include "runtime/transport.h"

namespace pagewire {

class DistributedDataspace;

struct FetchStats {
  uint64_t remote_reads = 0;     // READs posted
  uint64_t home_requests = 0;    // fetches that asked a home manager first
  uint64_t failed = 0;           // fetches that ended in an error
};

class RemoteFetcher final : public CompletionSource {
 public:
  // `self` is this node's rank.
  RemoteFetcher(Transport& transport, int self, int nranks);

  // The fault service's landing area, registered with the transport. Set
  // once, before the first fetch.
  void SetLanding(MemoryRegion landing);

  // The rkey under which `peer` registered its global range.
  void SetPeerKey(int peer, uint32_t rkey);
  // Membership declared `peer` dead: fail every fault waiting on it, and
  // every later fetch from it.
  void PeerDied(int peer, const std::string& why);

  // READs the page at global address `remote_addr` from `home` into the
  // request's landing buffer. `alloc_id`/`page` go into the directory notice.
  void Read(const PageRequest& request, int home, uint64_t remote_addr,
            uint32_t alloc_id, uint64_t page);
  // Asks `home` to make the page readable first (kFetch); READs on kReady.
  void FetchVia(const PageRequest& request, int home, uint64_t remote_addr,
                uint32_t alloc_id, uint64_t page);
  // Asks `directory` who owns a first-touch page (kClaim); `ds` continues
  // the fault on kClaimed.
  void Claim(const PageRequest& request, int directory,
             DistributedDataspace* ds, uint32_t alloc_id, uint64_t page);

  // Replies from home managers (transport thread).
  void OnReady(int peer, uint32_t slot, int32_t error, uint64_t page);
  void OnClaimed(int peer, uint32_t slot, int32_t owner, uint64_t page);

  FetchStats stats() const;

  // CompletionSource
  int fd() const override { return transport_.completion_fd(); }
  void Drain(CompletionQueue& cq) override;
  void AfterBurst() override;

  static constexpr int kCompletionBurst = 64;

 private:
  enum class State : uint8_t { kIdle, kReading, kAwaitingHome, kAwaitingOwner };
  struct Pending {
    State state = State::kIdle;
    int peer = -1;
    PageRequest request;
    uint64_t remote_addr = 0;
    uint32_t alloc_id = 0;
    uint64_t page = 0;
    DistributedDataspace* ds = nullptr;
  };

  void PostRead(uint32_t slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void Fail(const PageRequest& request, absl::Status why);
  bool PeerAlive(int peer) const ABSL_SHARED_LOCKS_REQUIRED(mutex_) {
    return peer >= 0 && peer < nranks_ && !dead_[peer];
  }

  Transport& transport_;
  const int self_;
  const int nranks_;

  mutable absl::Mutex mutex_;
  MemoryRegion landing_ ABSL_GUARDED_BY(mutex_);

  std::vector<Pending> pending_ ABSL_GUARDED_BY(mutex_);  // by fault slot
  std::vector<uint32_t> rkeys_ ABSL_GUARDED_BY(mutex_);
  std::vector<bool> dead_ ABSL_GUARDED_BY(mutex_);
  std::vector<std::string> death_ ABSL_GUARDED_BY(mutex_);
  // Directory notices not yet sent, per home: alloc id and page pairs.
  std::vector<std::vector<std::pair<uint32_t, uint64_t>>> notices_
      ABSL_GUARDED_BY(mutex_);
  bool notices_waiting_ ABSL_GUARDED_BY(mutex_) = false;

  std::atomic<uint64_t> remote_reads_{0}, home_requests_{0}, failed_{0};
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_REMOTE_FETCHER_H_
