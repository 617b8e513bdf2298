// remote_fetcher.h - the bridge from fault slots to the transport: a page
// homed elsewhere is fetched by a one-sided READ into the fault's landing
// buffer, and the READ's completion completes the fault.
//
// The fetcher keeps no state per fault: it writes what it sets in motion
// onto the fault's record in the fault service's table (a FaultPlan: "READ
// from P at A with key K, install write-protected", or "awaiting P's
// kReady"), posts the READ with the fault's slot as wr_id, and hands each
// completion to FaultService::Complete(slot, status), which installs the
// page as planned. Fetches that need a home manager first (a nested
// backing, or first-touch ownership) send a message and continue when the
// reply, tagged with the slot, takes the plan back.
//
// The fetcher is a CompletionSource of the fault service: the fault loop
// polls the transport's completion fd and drains it here in bursts. On a
// transport that completes on a thread of its own (TCP), the fetcher takes
// the completions on that thread instead, where Complete installs the page
// at once if the fault loop sleeps: the faulting thread resumes without a
// hop through the loop. Nothing waits with a timeout: a fault waits until
// its READ or reply completes, or until membership declares the peer dead
// (PeerDied), which fails it loudly.
//
// Completions of SyncBatch operations (wr_id with the top bit set) are
// routed to their batch.
//
// Threads: Read/FetchVia/Claim from the fault loop (inside RequestPage) or
// from the transport thread (on a reply); Poll on the fault loop;
// completions and replies on the transport thread; PostSync from any;
// PeerDied and the peer regions from control-plane threads.
#ifndef PAGEWIRE_RUNTIME_DSM_REMOTE_FETCHER_H_
#define PAGEWIRE_RUNTIME_DSM_REMOTE_FETCHER_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "runtime/fault/fault_service.h"
#include "runtime/fault/page_request.h"
#include "runtime/transport/message_router.h"
#include "runtime/transport/transport.h"

namespace pagewire {

class DistributedDataspace;

// A set of one-sided operations a thread posts and then waits for (diff
// write-back at a release, atomics). The fault loop routes their completions
// here by wr_id (the batch's address with the top bit set); the waiting
// thread sleeps until every posted chain has completed. No timeout: a home
// that dies completes its chains with kPeerGone.
class SyncBatch {
 public:
  SyncBatch() = default;
  SyncBatch(const SyncBatch&) = delete;
  SyncBatch& operator=(const SyncBatch&) = delete;

  uint64_t wr_id() const {
    return (uint64_t{1} << 63) | reinterpret_cast<uintptr_t>(this);
  }
  static SyncBatch* FromWrId(uint64_t wr_id) {
    return reinterpret_cast<SyncBatch*>(wr_id & ~(uint64_t{1} << 63));
  }
  static bool IsSync(uint64_t wr_id) { return wr_id >> 63; }

  void Expect(int chains);
  void Complete(const WorkCompletion& wc);
  // Waits for every expected chain; the first failure, if any.
  absl::Status Wait();

 private:
  absl::Mutex mutex_;
  int outstanding_ ABSL_GUARDED_BY(mutex_) = 0;
  absl::Status status_ ABSL_GUARDED_BY(mutex_);
};

struct FetchStats {
  uint64_t remote_reads = 0;     // READs posted
  uint64_t home_requests = 0;    // fetches that asked a home manager first
  uint64_t failed = 0;           // fetches that ended in an error
};

class RemoteFetcher final : public CompletionSource {
 public:
  // `self` is this node's rank. Handles the homes' replies (kReady,
  // kClaimed) and their key lists (kAllocKeys), registered with `router`
  // until it goes.
  RemoteFetcher(Transport& transport, MessageRouter& router, int self,
                int nranks);
  ~RemoteFetcher() override;

  // The fault service's landing area, registered with the transport. Set
  // once, before the first fetch.
  void SetLanding(MemoryRegion landing);

  // A region `peer` registered for one-sided access: [addr, addr + length)
  // under `rkey`. `alloc_id` 0: the whole global range (TCP).
  void AddPeerRegion(int peer, uint32_t alloc_id, uint64_t addr,
                     uint64_t length, uint32_t rkey);
  void RemoveAllocRegions(uint32_t alloc_id);
  // How many peers have published their regions of `alloc_id`; waits (no
  // timeout) until `peers` have or one of them died.
  absl::Status AwaitAllocRegions(uint32_t alloc_id, int peers);
  // Membership declared `peer` dead: fail every fault waiting on it, and
  // every later fetch from it.
  void PeerDied(int peer, const std::string& why);

  // READs the page at `remote_addr` of `home` into the request's landing
  // buffer, to be installed write-protected if `write_protect` (a copy
  // whose writes are tracked). `rkey`: the key of that memory (a
  // sequentially consistent page's home store); by default the page's own
  // key (first touch on verbs) or that of the region `home` published that
  // holds `remote_addr`.
  void Read(const PageRequest& request, int home, uint64_t remote_addr,
            bool write_protect, DistributedDataspace* ds, uint64_t page,
            std::optional<uint32_t> rkey = std::nullopt);
  // Asks `home` to register this rank as a cacher and make the page readable
  // first (kFetch); READs on kReady.
  void FetchVia(const PageRequest& request, int home, uint64_t remote_addr,
                DistributedDataspace* ds, uint64_t page);

  // Posts `chain` to `peer` as part of `batch` (its last WR signalled, all
  // with the batch's wr_id).
  absl::Status PostSync(int peer, WorkRequest* chain, SyncBatch& batch);
  // The rkey of `peer`'s region holding `addr` (0 if none).
  uint32_t PeerKey(int peer, uint64_t addr) const;
  // Asks `directory` who owns a first-touch page (kClaim); `ds` continues
  // the fault on kClaimed.
  void Claim(const PageRequest& request, int directory,
             DistributedDataspace* ds, uint32_t alloc_id, uint64_t page);

  FetchStats stats() const;

  // CompletionSource. READs that the fault loop posts are held and posted
  // at its next poll, one chain per home: one send (TCP) or one doorbell
  // (verbs) for a burst of faults and their read-ahead. On a transport
  // without a thread of its own (verbs), the loop polls for the READs in
  // flight before it sleeps (Polled::awaiting).
  int fd() const override { return transport_.completion_fd(); }
  Polled Poll(CompletionQueue& cq, PollMode mode) override;

  static constexpr int kCompletionBurst = 64;

 private:
  // Messages from homes (transport thread): kAllocKeys, kReady, kClaimed.
  void OnMessage(int peer, uint16_t type, absl::Span<const char> body);
  void OnAllocKeys(int peer, absl::Span<const char> body);
  // `rkey`: the page's own key (first touch on verbs), else 0.
  void OnReady(int peer, uint32_t slot, int32_t error, uint64_t page,
               uint32_t rkey);
  void OnClaimed(int peer, uint32_t slot, int32_t owner, uint64_t page);
  // Completes `plan` (for `request`, answered by `peer`) and writes it
  // onto the fault's slot, unless `peer` is dead or the request comes from
  // another fault service than the fetcher's: then fails the fault (naming
  // the peer's `role`) and returns false.
  bool Plan(const PageRequest& request, int peer, const char* role,
            FaultPlan& plan) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void PostRead(const FaultPlan& plan) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // One completion from the transport: a SyncBatch's, or a READ's, which
  // completes its fault (FaultService::Complete).
  void Dispatch(const WorkCompletion& wc);
  // The transport's completion handler (its own thread).
  void OnCompletions(absl::Span<const WorkCompletion> wcs);
  void Fail(const PageRequest& request, absl::Status why);
  // Fails the request if `peer` is dead (naming its `role`); true if so.
  bool FailIfDead(const PageRequest& request, int peer, const char* role)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  bool PeerAlive(int peer) const ABSL_SHARED_LOCKS_REQUIRED(mutex_) {
    return peer >= 0 && peer < nranks_ && !dead_[peer];
  }

  // Takes up to one burst of completions into `cq`; how many.
  int Take(CompletionQueue& cq);
  // Posts the READs the loop posted since its last poll.
  void PostHeld();
  // Posts `chain` (wr_ids are slots of pending READs) to `peer`; on failure
  // fails those READs' faults.
  void PostReads(int peer, WorkRequest* chain)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  Transport& transport_;
  MessageRouter& router_;
  const int self_;
  // The transport hands no completions to a thread of its own: the fault
  // loop polls for them. Set at construction.
  bool polled_ = false;
  // READs posted for faults whose completion has not been dispatched.
  std::atomic<int> reads_in_flight_{0};
  const int nranks_;

  mutable absl::Mutex mutex_;
  MemoryRegion landing_ ABSL_GUARDED_BY(mutex_);
  // The fault loop's thread (the one that polls), and the READs it posted
  // since its last poll, by peer.
  std::thread::id loop_ ABSL_GUARDED_BY(mutex_);
  std::vector<std::vector<WorkRequest>> held_ ABSL_GUARDED_BY(mutex_);

  struct RemoteRegion {
    uint32_t alloc_id;
    uint64_t addr;
    uint64_t length;
    uint32_t rkey;
  };
  std::vector<std::vector<RemoteRegion>> regions_ ABSL_GUARDED_BY(mutex_);
  uint32_t KeyFor(int peer, uint64_t addr) const ABSL_SHARED_LOCKS_REQUIRED(mutex_);
  std::vector<bool> dead_ ABSL_GUARDED_BY(mutex_);
  std::vector<std::string> death_ ABSL_GUARDED_BY(mutex_);

  // Set while the transport hands completions to OnCompletions (the
  // transport's handler lock orders it against those calls).
  // The fault service this fetcher serves (the one its requests come
  // from), whose table holds the faults' plans. The service outlives the
  // transport's threads, which may still deliver replies and completions
  // while a node tears down.
  std::atomic<FaultService*> owner_{nullptr};
  FaultService* Owner() const { return owner_.load(std::memory_order_acquire); }

  std::atomic<uint64_t> remote_reads_{0}, home_requests_{0}, failed_{0};
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_DSM_REMOTE_FETCHER_H_
