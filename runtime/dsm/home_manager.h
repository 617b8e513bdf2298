// home_manager.h - serves the pages homed on this rank to the other ranks,
// and keeps their directory.
//
// One-sided READs of home pages never come here: the transport serves them
// from the global range directly. The home manager answers what needs a
// decision: a fetch of a page whose backing is slow or nested (it makes the
// page resident through this rank's fault service, asynchronously, then
// answers kReady), the owner of a first-touch page (on the page's directory
// rank), and the directory of which ranks cache which page: a rank's first
// fetch of a page comes here, and from then on the home write-protects its
// own copy so the coherence protocol sees the home's writes too.
//
// Threads: OnMessage on the transport's receive thread (never blocks);
// Add/RemoveDataspace and CachersOf from any thread.
#ifndef PAGEWIRE_RUNTIME_DSM_HOME_MANAGER_H_
#define PAGEWIRE_RUNTIME_DSM_HOME_MANAGER_H_

#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "runtime/dsm/distributed_dataspace.h"
#include "runtime/fault/fault_service.h"
#include "runtime/dsm/home_protocol.h"
#include "runtime/dsm/remote_fetcher.h"
#include "runtime/transport/message_router.h"
#include "runtime/transport/transport.h"

namespace pagewire {

class HomeManager {
 public:
  // `service` holds this rank's home copies. Handles kFetch and kClaim,
  // registered with `router` until it goes.
  HomeManager(Transport& transport, MessageRouter& router,
              FaultService& service, int self, int nranks);
  ~HomeManager();
  HomeManager(const HomeManager&) = delete;
  HomeManager& operator=(const HomeManager&) = delete;

  void AddDataspace(DistributedDataspace* ds);
  void RemoveDataspace(uint32_t id);

  // For each of `pages` (homed here): the ranks that may cache it, one bit
  // per rank (bit r of word r / 64); empty if no rank registered for it.
  // A rank registers before its first READ of a page (OnFetch) and never
  // withdraws, so a rank not listed holds no copy of the page.
  std::vector<std::vector<uint64_t>> CachersOf(
      absl::Span<const home_protocol::PageRef> pages) const;
  void AddCacher(uint32_t id, uint64_t page, int rank);

  uint64_t fetches_served() const;

 private:
  void OnMessage(int peer, uint16_t type, absl::Span<const char> body);
  void OnFetch(int peer, absl::Span<const char> body);
  void OnClaim(int peer, absl::Span<const char> body);
  DistributedDataspace* Find(uint32_t id) const ABSL_SHARED_LOCKS_REQUIRED(mutex_);

  Transport& transport_;
  MessageRouter& router_;
  FaultService& service_;
  const int self_;
  const int nranks_;

  mutable absl::Mutex mutex_;
  absl::flat_hash_map<uint32_t, DistributedDataspace*> dataspaces_
      ABSL_GUARDED_BY(mutex_);
  // Per allocation, per page homed here: one bit per caching rank.
  absl::flat_hash_map<uint32_t,
                      absl::flat_hash_map<uint64_t, std::vector<uint64_t>>>
      directory_ ABSL_GUARDED_BY(mutex_);
  uint64_t fetches_served_ ABSL_GUARDED_BY(mutex_) = 0;
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_DSM_HOME_MANAGER_H_
