// sequential_consistency.h - the sequential-consistency mode of an
// allocation (pw_alloc_sc): single writer / multiple readers, invalidation
// through the page's home directory, IVY-style.
//
// Every rank, the home included, holds a page of such an allocation only as
// a cached copy in its global range; the master copy lives in the home's
// store, a registered buffer outside the global range. The home directory
// keeps, per page, the one writer or the set of readers.
//
//   read fault   -> kScRequest to the home. If a writer holds the page, the
//                   home recalls it (the writer write-protects its copy and
//                   WRITEs it back to the store) and then grants; the
//                   requester READs the page from the store, installed
//                   write-protected.
//   write fault  -> kScRequest(write). The home recalls every other copy:
//                   readers drop theirs, a writer writes back and drops.
//                   Then it grants; the requester READs the page (or, for an
//                   upgrade of its valid read copy, just gets write access).
//
// A page's transactions run one at a time at its home, in arrival order;
// other pages are not held up. Every step is an asynchronous message: no
// timeouts. A holder that is slow to answer a recall delays only the page
// it holds; a holder declared dead by membership counts as having dropped
// its copy, and if it held the page for writing, the page's latest
// contents died with it: the faults that need the page fail loudly
// (SIGBUS naming the rank), every later one too.
//
// Threads: RequestPage on the fault loop; OnMessage on the transport thread
// (it only queues); everything else on this rank's "pw-sc" thread, which
// may wait for its own fault loop and for one-sided WRITEs (never for
// another rank's service thread, so ranks cannot deadlock through it).
#ifndef PAGEWIRE_RUNTIME_COHERENCE_SEQUENTIAL_CONSISTENCY_H_
#define PAGEWIRE_RUNTIME_COHERENCE_SEQUENTIAL_CONSISTENCY_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "runtime/dsm/consistency.h"
#include "runtime/dsm/remote_fetcher.h"
#include "runtime/fault/fault_service.h"
#include "runtime/fault/page_request.h"
#include "runtime/transport/message_router.h"
#include "runtime/transport/transport.h"

namespace pagewire {

class DistributedDataspace;

struct ScStats {
  uint64_t requests = 0;   // faults sent to a home directory
  uint64_t recalls = 0;    // copies this rank dropped or wrote back
  uint64_t writebacks = 0; // pages this rank wrote back to a home store
};

class SequentialConsistency final : public PageProtocol {
 public:
  // Handles the kSc* messages, registered with `router` until it goes.
  SequentialConsistency(int self, int nranks, Transport& transport,
                        MessageRouter& router, RemoteFetcher& fetcher,
                        FaultService& service);
  ~SequentialConsistency() override;

  // Registers the write-back staging page and starts the service thread.
  absl::Status Start();

  // A sequentially consistent allocation: creates and registers the store
  // of the pages homed here (zeros).
  absl::Status AddDataspace(DistributedDataspace* ds);
  void RemoveDataspace(uint32_t id);

  // Fault loop: a fault on a page of such an allocation.
  void RequestPage(const PageRequest& request, DistributedDataspace* ds,
                   uint64_t page) override;

  void PeerDied(int peer, const std::string& why);

  ScStats stats() const;

 private:
  // Transport thread: kScRequest / kScGrant / kScRecall / kScRecalled.
  void OnMessage(int peer, uint16_t type, absl::Span<const char> body);
  struct Event {
    int peer;
    uint16_t type;
    std::vector<char> body;
  };
  struct Store {
    DistributedDataspace* ds = nullptr;
    char* mem = nullptr;  // mmap'ed, `length` bytes (none if nothing is homed here)
    uint64_t length = 0;
    MemoryRegion region;
  };
  // Home directory, per page.
  struct Want {
    int rank;
    uint32_t slot;
    bool write;
  };
  struct Directory {
    int writer = -1;
    std::vector<bool> readers;
    bool busy = false;
    int recalls_out = 0;
    std::vector<int> recalled;  // ranks a recall was sent to
    Want current{};
    std::deque<Want> queue;
    std::string lost;  // the writer died: the page's contents are gone
    int lost_by = -1;  // that writer
  };
  // A fault waiting for its grant, by fault slot.
  // Queues an event for the service thread (also "sends" to this rank).
  void Post(int peer, uint16_t type, absl::Span<const char> body);
  // Sends to `peer`, or queues locally when it is this rank.
  void Send(int peer, uint16_t type, absl::Span<const char> body);
  void Serve();
  void Handle(const Event& e);

  // Home side.
  void OnRequest(int peer, absl::Span<const char> body);
  void Begin(uint32_t alloc_id, uint64_t page, Directory& d);
  void OnRecalled(int peer, absl::Span<const char> body);
  void Finish(uint32_t alloc_id, uint64_t page, Directory& d);
  // Holder side.
  void OnRecall(int peer, absl::Span<const char> body);
  // Requester side.
  void OnGrant(int peer, absl::Span<const char> body);

  DistributedDataspace* Find(uint32_t id) const
      ABSL_SHARED_LOCKS_REQUIRED(mutex_);
  uint64_t LocalIndex(const DistributedDataspace* ds, uint64_t page) const;
  uint64_t HomedPages(const DistributedDataspace* ds) const;

  const int self_;
  const int nranks_;
  Transport& transport_;
  MessageRouter& router_;
  RemoteFetcher& fetcher_;
  FaultService& service_;

  mutable absl::Mutex mutex_;
  std::map<uint32_t, DistributedDataspace*> dataspaces_ ABSL_GUARDED_BY(mutex_);
  std::map<uint32_t, Store> stores_ ABSL_GUARDED_BY(mutex_);
  std::vector<bool> dead_ ABSL_GUARDED_BY(mutex_);
  std::vector<std::string> death_ ABSL_GUARDED_BY(mutex_);
  std::deque<Event> events_ ABSL_GUARDED_BY(mutex_);
  bool stop_ ABSL_GUARDED_BY(mutex_) = false;
  ScStats stats_ ABSL_GUARDED_BY(mutex_);

  // Service thread only.
  std::map<std::pair<uint32_t, uint64_t>, Directory> directory_;

  // Write-back staging (one page; the service thread writes back one page
  // at a time).
  std::unique_ptr<char[]> staging_;
  MemoryRegion staging_region_;
  std::thread thread_;
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_COHERENCE_SEQUENTIAL_CONSISTENCY_H_
