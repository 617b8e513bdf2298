// coherence.h - release consistency for global memory: write tracking with
// twins, diffs at release, invalidation at acquire, locks and atomics.
//
// Write tracking. A copy of another rank's page is installed
// write-protected; the first write to it faults as an upgrade, and the
// rank keeps a twin (the page as it was) before allowing the write. Pages a
// home holds for itself are written in place; once any other rank has
// fetched one, the home write-protects it too ("tracked"), so it knows when
// it writes it.
//
// Release (pw_release, barriers, unlock): every twinned page is
// write-protected again and compared with its twin byte for byte; each run
// of modified bytes goes home by a one-sided WRITE, so ranks that wrote
// different bytes of one page (false sharing) merge exactly at home.
// Threads of one rank release on their own, and a page's writer may twin
// it again while an earlier snapshot of it is on its way home: the rounds
// of diffs post in the order of their snapshots (tickets), so the home
// applies a page's diffs in the order they were made.
//
// Dropping copies (an acquire, a barrier, a lock's grant). Other threads
// of the rank may hold unreleased writes to any copy, so a copy goes in
// three steps: freeze (a write that meets it from now on waits, its
// upgrade deferred), flush (its twin, and any flush under way, written
// home and completed), drop (write-protected, with no twin: nothing on it
// is unsent). A write that waited then faults the page in afresh, with
// its earlier writes home. A pushed page replaces a copy in the drop's
// place only if this rank did not write it since the barrier began. With
// PAGEWIRE_CHECK every drop is audited against exactly this (BeforeDrop).
//
// Barrier: after its release (its diffs are home), every rank tells every
// other rank which pages it wrote this epoch (kEpochWrites, possibly
// empty): of its own pages, those the receiver caches according to its
// home directory (a rank READs a page only after its home registered it
// as a cacher, and never unregisters); of other homes' pages, all, since
// only their homes know the cachers. So a list's length follows the
// sharing, not the number of ranks. That one all-to-all round is the
// synchronisation: once a rank has every list, it drops its copies of the
// pages others wrote — a copy survives if nobody wrote the page, or if its
// holder was the only writer — and, as a home, protects its written pages
// again. Read-only and private pages stay cached across barriers. One
// round, not two: the lists go straight to the cachers, not through the
// homes.
//
// Pushing hot pages. A rank that fetches a page again after a barrier
// dropped its copy (a stencil's halo, written by its home every epoch)
// subscribes to it in its next kEpochWrites to the home (kRefSubscribe).
// The home then sends the page's contents along with its own list at each
// barrier at which it reports the page written (kRefPushed), for
// kPushLease barriers; the subscriber installs them in place of its stale
// copy, so its threads read the page after the barrier without a fault.
// It takes them only if the home was the page's sole writer this epoch
// (no other rank's list names the page, and this rank did not write,
// twin or flush it since the barrier began): then the contents are what
// a fetch after the barrier would read. And not over a copy that another
// of its threads may have fetched newer, after a lock's grant dropped it
// since this rank entered the barrier before (lock_dropped_). Otherwise,
// or once the lease ends, the copy is dropped as before, and a rank that
// reads the page again subscribes again. A lease doubles (up to 256
// pushes) while it is renewed at once. PAGEWIRE_PUSH=0 turns subscribing
// off.
//
// Locks live at the home of the page holding the pw_lock_t. The lock's home
// manager queues requests (FIFO, no spinning) and keeps a log of the pages
// written under the lock: a release appends the releaser's writes, a grant
// tells the acquirer which pages others wrote since it last held the lock
// (each page once). The log keeps what some rank has not seen, but at most
// kMaxLockLog entries: a rank that holds a lock rarely, or never, would
// otherwise make it grow with every release; one that missed entries cut
// from it drops every cached copy at its next grant.
// Atomics are one-sided operations at the word's home.
//
// Nothing here waits with a timeout: a wait ends when the messages arrive
// or when membership declares a rank it needs dead, which fails the call
// naming that rank.
//
// Checked runs (PAGEWIRE_CHECK=1, the default in builds with
// --config=debug) install the Coherence as the fault service's DropAudit:
// every copy of another rank's page that is dropped or replaced must be
// write-protected, with no twin and no flush under way; anything else
// would lose writes, and is reported (and ends the process) at once.
//
// Threads: TwinOrDefer/NoteHomeWrite/BeforeDrop from the fault loop;
// its messages on the transport thread; everything else from application
// threads (collectives from one thread per rank at a time).
#ifndef PAGEWIRE_RUNTIME_COHERENCE_COHERENCE_H_
#define PAGEWIRE_RUNTIME_COHERENCE_COHERENCE_H_

#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "runtime/fault/fault_service.h"
#include "runtime/dsm/consistency.h"
#include "runtime/dsm/home_protocol.h"
#include "runtime/dsm/remote_fetcher.h"
#include "runtime/transport/message_router.h"
#include "runtime/transport/transport.h"

namespace pagewire {

class DistributedDataspace;
class HomeManager;

struct CoherenceStats {
  uint64_t twins = 0;           // pages twinned at a first write
  uint64_t diff_bytes = 0;      // bytes written home at releases
  uint64_t diff_writes = 0;     // one-sided WRITEs they took
  uint64_t invalidated = 0;     // cached copies dropped at acquires
  uint64_t hot_pages = 0;       // home pages left writable (hot_), in all
  uint64_t barriers = 0;
  uint64_t lock_acquires = 0;
  uint64_t pushes_sent = 0;       // pages pushed to subscribers at barriers
  uint64_t notices_sent = 0;      // written pages named to other ranks at
                                  // barriers, one per page and receiver
  uint64_t post_waits = 0;        // flush rounds that waited for an earlier
                                  // round to post first (post_turn_)
  uint64_t lost_drops = 0;        // drops the audit found losing writes
};

class Coherence final : public WriteTracker, public DropAudit {
 public:
  // Handles kEpochWrites and the lock messages, registered with `router`
  // until it goes.
  Coherence(int self, int nranks, Transport& transport, MessageRouter& router,
            RemoteFetcher& fetcher, FaultService& service, HomeManager& home);
  ~Coherence() override;

  // Registers scratch memory for atomics' results. Once, at start-up.
  absl::Status Start();

  void AddDataspace(DistributedDataspace* ds);
  void RemoveDataspace(uint32_t id);

  // Fault loop: a write to a cached copy of another rank's page; `current`
  // is its contents. Twins the page and returns false; or, if the page is
  // being flushed and dropped (frozen), keeps the upgrade request to answer
  // afterwards and returns true. One step under the lock: a twin made just
  // after a freeze would keep a stale copy alive past its invalidation.
  bool TwinOrDefer(const PageRequest& request, DistributedDataspace* ds,
                   uint64_t page, int home, const void* current) override;
  // Fault loop: this rank writes a tracked page it homes.
  void NoteHomeWrite(DistributedDataspace* ds, uint64_t page) override;
  // Fault loop: this rank fetches `page` of `home` again after a barrier
  // dropped its copy; it subscribes at the next barrier (unless push is
  // off).
  void NoteRefetch(DistributedDataspace* ds, uint64_t page, int home) override;
  // Whether this rank subscribes to pushes (PAGEWIRE_PUSH; on by default).
  // Set at start-up.
  void SetPush(bool on) { push_ = on; }

  absl::Status Release();
  // Drops every cached copy of another rank's page (pw_acquire: without a
  // lock or barrier there is no record of what changed).
  absl::Status AcquireAll();
  // The data-plane barrier. FAILED_PRECONDITION, marked so that
  // IsCollectiveMismatch is true, if a rank entered a control-plane
  // collective (EnterCollective) instead: the barrier is then undone (the
  // next one is the same epoch and sends this one's writes again), and the
  // caller takes its turn in that collective with the failure, so that
  // every rank gets the same error and the job goes on.
  absl::Status Barrier();
  static bool IsCollectiveMismatch(const absl::Status& s);
  // This rank enters control-plane collective `seq` (`call`): tells every
  // rank, so that one waiting in Barrier() meanwhile fails instead of
  // waiting forever, and forgets the barrier lists that reached it for
  // barriers that must now fail (their senders send them again).
  void EnterCollective(uint64_t seq, const std::string& call);
  absl::Status LockAcquire(uintptr_t lock_addr);
  absl::Status LockRelease(uintptr_t lock_addr);
  absl::Status LockCheck(uintptr_t lock_addr) const;
  // pw_lock_destroy: FAILED_PRECONDITION if a thread of any rank holds the
  // lock or waits for it (the lock's home knows).
  absl::Status LockDestroy(uintptr_t lock_addr);

  // Atomics on words homed here also go through the transport (a queue
  // pair to this node), when the NIC's atomics are not atomic with the
  // CPU's.
  void SetAtomicsThroughTransport(bool on) { atomics_through_transport_ = on; }

  absl::StatusOr<uint64_t> FetchAdd(uintptr_t addr, uint64_t value);
  absl::StatusOr<uint64_t> CompareSwap(uintptr_t addr, uint64_t expected,
                                       uint64_t desired);

  void PeerDied(int peer, const std::string& why);

  CoherenceStats stats() const;

  // DropAudit (installed with FaultService::SetDropAudit in checked runs):
  // a dropped copy of another rank's page must be write-protected, with no
  // twin and no flush under way. A violation is logged as an error, counted
  // (lost_drops) and, if `abort_on_loss`, ends the process.
  void BeforeDrop(uint64_t offset, bool write_protected) override;
  void SetAbortOnLoss(bool on) { abort_on_loss_ = on; }

 private:
  using PageList = std::vector<home_protocol::PageRef>;
  struct Twin {
    DistributedDataspace* ds;
    uint64_t page;
    int home;
    std::unique_ptr<char[]> copy;
  };
  struct Pushed {
    int from;
    uint32_t alloc_id;
    uint64_t page;
    std::unique_ptr<char[]> contents;  // kPageSize
  };
  // One barrier's state from phase to phase (coherence_barrier.cc).
  struct EpochRound {
    uint64_t epoch = 0;
    uint64_t generation = 0;  // generation_ when it began
    PageList mine;                   // pages this rank wrote (sorted, unique)
    std::vector<PageList> subscribe;  // by home: this rank's subscriptions
    // Per page of `mine` this rank homes: the ranks that cache it (null for
    // other homes' pages, which every rank hears of).
    std::vector<std::vector<uint64_t>> own_cachers;
    std::vector<const std::vector<uint64_t>*> cachers;
    std::vector<std::vector<size_t>> push_to;  // by rank: indices into mine
    std::vector<std::unique_ptr<char[]>> snapshots;  // pushed pages
    // Filled by AwaitEpochLists: (writer, alloc, page) of the pages the
    // other ranks wrote, and the pages they pushed to this rank.
    std::vector<std::tuple<int, uint32_t, uint64_t>> written;
    std::vector<Pushed> pushed;
    // Whether `peer` hears of mine[i].
    bool Tells(size_t i, int peer) const;
  };
  struct EpochState {
    std::vector<bool> writes_from;  // by rank: its kEpochWrites ended
    // (writer, alloc, page) of the pages other ranks wrote this epoch.
    std::vector<std::tuple<int, uint32_t, uint64_t>> written;
    std::vector<Pushed> pushed;  // pages pushed to this rank
  };
  struct Waiter {
    bool granted = false;
    absl::Status error;
    std::vector<home_protocol::PageRef> invalidate;
    bool invalidate_all = false;
  };
  struct LogEntry {
    uint64_t seq;
    int writer;
    home_protocol::PageRef ref;  // alloc_id == 0: "every page"
  };
  // Log entries a lock keeps at most, and after cutting it (see Grant).
  static constexpr size_t kMaxLockLog = 2 * home_protocol::kMaxPageRefs;
  static constexpr size_t kLockLogKept = home_protocol::kMaxPageRefs / 2;
  struct LockState {
    int holder = -1;
    std::deque<std::pair<int, uint64_t>> queue;  // (rank, ticket)
    std::vector<LogEntry> log;
    uint64_t seq = 0;
    // Entries up to this seq were dropped to bound the log (kMaxLockLog):
    // a rank that has not seen them drops every copy at its next grant.
    uint64_t truncated = 0;
    absl::flat_hash_map<int, uint64_t> last_seen;
    std::string broken;  // the holder died: every later acquire fails
  };
  // Transport thread: kEpochWrites and the lock messages.
  void OnMessage(int peer, uint16_t type, absl::Span<const char> body);
  // Checks a page-list message (header, refs and their flags, pushed pages
  // after them) and takes it apart; false (warned) if malformed.
  bool ParsePageList(int peer, uint16_t type, absl::Span<const char> body,
                     home_protocol::PageListHeader& h, PageList& pages,
                     const char*& contents) const;
  void OnCollectiveEntered(int peer, absl::Span<const char> body);
  // A rank that announced a collective this rank has not entered, or -1.
  // (A rank whose list of `st`'s barrier arrived was in it: it entered the
  // collective after the barrier, which is no mismatch.)
  int MismatchedRankLocked(const EpochState& st) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Undoes BeginEpoch for a barrier that failed on a mismatch.
  void UndoEpoch(EpochRound& round);
  // One part of `peer`'s list for barrier `epoch`; `contents`: its pushed
  // pages, in the order of their refs.
  void OnEpochWrites(int peer, uint64_t epoch, uint64_t generation,
                     const PageList& pages,
                     const char* contents, bool last)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  DistributedDataspace* Find(uint32_t id) const
      ABSL_SHARED_LOCKS_REQUIRED(mutex_);
  DistributedDataspace* FindByAddr(uintptr_t addr) const
      ABSL_SHARED_LOCKS_REQUIRED(mutex_);
  // Sends a page list in parts of at most kMaxPageRefs refs and, if
  // `contents` (parallel to `pages`) is given, kMaxPushedPages pages: the
  // non-null entries, which follow the refs of their part.
  absl::Status SendPageList(int peer, uint16_t type, uint64_t key,
                            uint64_t ticket, const PageList& pages,
                            uint32_t flags,
                            const std::vector<const char*>* contents = nullptr);
  // Offsets of the pages in `pages` that are copies of other ranks' pages,
  // and the index in `pages` of each.
  std::vector<std::pair<uint64_t, size_t>> CachedCopies(
      const PageList& pages) const ABSL_SHARED_LOCKS_REQUIRED(mutex_);
  // The first half of FlushAndDropCopies and FlushAndDropAll. Under
  // mutex_, `freeze` waits for the flushes it must not overtake, freezes
  // the copies to be dropped (so they cannot be twinned again) and moves
  // their twins out of twins_ into its argument; then those twins are
  // written home (their pages appended to `written`) and their pages may
  // be dropped. Returns the flush's status; the caller drops and unfreezes.
  absl::Status FreezeAndFlush(
      absl::FunctionRef<void(std::map<uint64_t, Twin>& twins)> freeze,
      PageList& written);
  // Drops the cached copies `pages` (other ranks' pages only), which other
  // threads of this rank may be writing: the pages are frozen, their twins
  // flushed home, then they are dropped; writers that hit them meanwhile
  // wait and then fetch afresh. At a barrier, a page with `contents`
  // (parallel to `pages`, pushed by its home) is replaced by them instead,
  // unless this rank wrote it since the barrier began (its own write must
  // stay visible to it) or dropped it since the last barrier by other
  // means (dropped_since_barrier_): then it is only dropped. From an
  // application thread.
  // `epoch`: the barrier's (at_barrier only).
  absl::Status FlushAndDropCopies(const PageList& pages, bool at_barrier,
                                  const std::vector<const char*>& contents = {},
                                  uint64_t epoch = 0);
  // The same for every cached copy of another rank's page (a whole-rank
  // freeze), when there is no record of what changed.
  absl::Status FlushAndDropAll();
  // Snapshots the twinned pages on the fault loop (write-protecting them),
  // writes each run of modified bytes home from registered staging and
  // waits. The pages must be marked flushing_ by the caller.
  absl::Status FlushTwins(std::map<uint64_t, Twin>& twins, PageList& written);
  // What FlushTwins' rounds add up.
  struct FlushTally {
    uint64_t bytes = 0;
    uint64_t writes = 0;
    absl::Status first_error;
  };
  using TwinIter = std::map<uint64_t, Twin>::iterator;
  // One round of FlushTwins from `next`: staging slots and a ticket, the
  // snapshot, its turn to post, the diffs posted and completed. Returns
  // where the next round starts.
  TwinIter FlushRound(TwinIter next, TwinIter end, PageList& written,
                      FlushTally& tally);
  // Posts the runs of `snapshot` (staging) that differ from `twin` home.
  void PostDiff(const Twin& twin, uint64_t offset, char* snapshot,
                SyncBatch& batch, PageList& written, FlushTally& tally);
  // Ends freezes and flushes; deferred upgrades are asked again.
  void Unfreeze(const std::vector<uint64_t>& frozen,
                const std::vector<uint64_t>& flushed);
  // Whether the page has unreleased writes (a twin, or a flush under way).
  bool HasTwin(uint64_t offset) const;
  // Ends flush `id` and waits for the flushes in `earlier` to end.
  void EndFlush(uint64_t id, const std::vector<uint64_t>& earlier);
  // The barrier's phases, in order (coherence_barrier.cc).
  EpochRound BeginEpoch();
  void FindCachers(EpochRound& round);
  void PlanPushes(EpochRound& round);
  absl::Status SendEpochLists(EpochRound& round);
  absl::Status AwaitEpochLists(EpochRound& round);
  absl::Status ProtectHomePages(const EpochRound& round);
  absl::Status DropStaleCopies(EpochRound& round);
  // Copies of `stale` that are dropped, not replaced (no `contents`): a
  // fetch of one later subscribes to its pushes.
  void MarkDroppedForGood(const PageList& stale,
                          const std::vector<const char*>& contents);
  absl::Status AwaitPeers(const std::function<bool()>& done_with,
                          const char* what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  absl::StatusOr<uint64_t> Atomic(uintptr_t addr, WorkOpcode op,
                                  uint64_t operand, uint64_t swap);
  // The allocation, page and home of an atomic's word (a first-touch page
  // is touched to settle its home; on verbs a page of its own is
  // registered), or why the address takes no pw_atomic_*.
  struct AtomicTarget {
    DistributedDataspace* ds = nullptr;
    uint64_t page = 0;
    int home = -1;
  };
  absl::StatusOr<AtomicTarget> FindAtomicTarget(uintptr_t addr);

  // Home side: `peer` subscribes to the page `r` (kRefSubscribe).
  void Subscribe(int peer, const home_protocol::PageRef& r)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  // Lock manager (this rank is the lock's home).
  void ManagerAcquire(uint64_t lock, int rank, uint64_t ticket)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void ManagerRelease(uint64_t lock, int rank, const PageList& pages,
                      bool all) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void Grant(uint64_t lock, LockState& state, int rank, uint64_t ticket)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // The rank that manages the lock at `lock_addr` (its page's home or, for
  // a first-touch page not yet owned, its directory rank).
  int LockHomeLocked(uintptr_t lock_addr) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Sends `type` for this rank's waiter `ticket` to the lock's `home` (its
  // own manager already has it if home is this rank) and waits for the
  // answer; UNAVAILABLE naming `call` if the home is dead.
  absl::StatusOr<Waiter> AskLockHome(int home, uint16_t type, uint64_t key,
                                     uint64_t ticket, const char* call)
      ABSL_LOCKS_EXCLUDED(mutex_);
  // Answers `rank`'s kLockDestroy: who holds or waits for `lock`.
  void ManagerDestroy(uint64_t lock, int rank, uint64_t ticket)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // The answer to this rank's pw_lock_destroy `ticket`.
  void DeliverDestroyed(uint64_t ticket, uint64_t lock, int held_by)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Delivers a grant to this rank's own waiter (local lock home).
  void DeliverGrant(uint64_t ticket, PageList pages, bool all,
                    absl::Status error) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  const int self_;
  const int nranks_;
  Transport& transport_;
  MessageRouter& router_;
  RemoteFetcher& fetcher_;
  FaultService& service_;
  HomeManager& home_;

  mutable absl::Mutex mutex_;
  std::map<uint32_t, DistributedDataspace*> dataspaces_ ABSL_GUARDED_BY(mutex_);
  std::map<uint64_t, Twin> twins_ ABSL_GUARDED_BY(mutex_);  // by global offset
  // Pages being flushed and dropped (by how many acquires), with the
  // upgrades that wait for it.
  struct Frozen {
    int holds = 0;
    std::vector<PageRequest> waiting;
  };
  std::map<uint64_t, Frozen> frozen_ ABSL_GUARDED_BY(mutex_);
  // Every copy frozen (FlushAndDropAll), by how many callers.
  Frozen frozen_all_ ABSL_GUARDED_BY(mutex_);
  // Pages whose twins are being flushed (by how many flushes): a drop
  // waits for them, so a snapshot always finds its page installed.
  absl::flat_hash_map<uint64_t, int> flushing_ ABSL_GUARDED_BY(mutex_);
  // Flushes under way, by id. A release waits for those that started before
  // it: another thread may have taken its twins and not yet written them
  // home, and the lock it releases must not be granted before they are.
  std::set<uint64_t> inflight_flushes_ ABSL_GUARDED_BY(mutex_);
  uint64_t next_flush_id_ ABSL_GUARDED_BY(mutex_) = 0;
  // Tracked home pages written since the last release / barrier.
  absl::flat_hash_set<std::pair<uint32_t, uint64_t>> home_written_release_
      ABSL_GUARDED_BY(mutex_);
  absl::flat_hash_set<std::pair<uint32_t, uint64_t>> home_written_barrier_
      ABSL_GUARDED_BY(mutex_);
  // Home pages written again within kHotWindow barrier epochs ("hot", such
  // as a stencil's boundary rows, written every epoch or every other one):
  // left writable, so their writes cost no fault, and reported as written
  // at every release and barrier instead. Every kHotProbeEpochs barriers a
  // hot page is write-protected again (a probe): written again soon, it is
  // hot again at its first write; else it is tracked as before. Value:
  // barriers left until the probe.
  absl::flat_hash_map<std::pair<uint32_t, uint64_t>, int> hot_
      ABSL_GUARDED_BY(mutex_);
  static constexpr int kHotProbeEpochs = 16;
  static constexpr uint64_t kHotWindow = 2;
  // Each page's probe interval and the epoch of its last probe. A page hot
  // again right after its probe (within kHotWindow) doubles its interval,
  // up to kMaxHotProbeEpochs: one that is written in every epoch for good
  // (a stencil's boundary) costs a write fault ever more rarely.
  struct HotProbe {
    int interval = kHotProbeEpochs;
    uint64_t probed = 0;  // 0: never
  };
  absl::flat_hash_map<std::pair<uint32_t, uint64_t>, HotProbe> hot_probes_
      ABSL_GUARDED_BY(mutex_);
  static constexpr int kMaxHotProbeEpochs = 256;
  // The last barrier epoch in which each home page was written (hot ones
  // count as written in every epoch).
  absl::flat_hash_map<std::pair<uint32_t, uint64_t>, uint64_t>
      home_written_epoch_ ABSL_GUARDED_BY(mutex_);
  // Other ranks' pages this rank wrote since the last barrier, by home.
  std::vector<PageList> remote_written_barrier_ ABSL_GUARDED_BY(mutex_);
  // Pages this rank wrote since the last barrier (remote and tracked home
  // pages), reported at every lock release: threads of one rank share its
  // releases, so a narrower set could miss a write made under another lock.
  absl::flat_hash_set<std::pair<uint32_t, uint64_t>> written_since_barrier_
      ABSL_GUARDED_BY(mutex_);

  // Home side: the ranks subscribed to each page homed here. A lease is
  // kPushLease pushes; a subscriber that subscribes again right after its
  // lease ran out (within kRenewWindow barriers: it still reads the page)
  // gets twice the lease, up to kMaxPushLease, so a page read for good
  // costs a fetch ever more rarely. Expired leases stay, to be renewed.
  struct Subscriber {
    int rank;
    int left;          // pushes left; 0: expired
    int lease;         // pushes of the current (or last) lease
    uint64_t expired;  // epoch of the last push of an expired lease
  };
  absl::flat_hash_map<std::pair<uint32_t, uint64_t>, std::vector<Subscriber>>
      subscribers_ ABSL_GUARDED_BY(mutex_);
  static constexpr int kPushLease = 16;
  static constexpr int kMaxPushLease = 256;
  static constexpr uint64_t kRenewWindow = 4;
  // Cacher side: subscriptions to send at the next barrier, by home.
  std::vector<PageList> subscribe_ ABSL_GUARDED_BY(mutex_);
  bool push_ = true;  // set at start-up
  // Copies dropped by other means than a barrier (a lock's grant; all of
  // them, by pw_acquire), with the epoch_ at the time. A thread may have
  // fetched such a page afresh, newer than what its home pushes at a
  // barrier: the home snapshots the page as it enters the barrier, and may
  // write it under a lock after that. The home enters barrier e only after
  // this rank entered barrier e - 1, so barrier e must not replace a copy
  // dropped since then (epoch_ >= e - 1). Older entries are forgotten.
  absl::flat_hash_map<uint64_t, uint64_t> lock_dropped_ ABSL_GUARDED_BY(mutex_);
  uint64_t all_dropped_ ABSL_GUARDED_BY(mutex_) = 0;  // epoch_ + 1; 0: never
  // Copies whose twins were flushed (or were being flushed) since the
  // current barrier began: this rank's own writes, which a pushed page may
  // lack.
  absl::flat_hash_set<uint64_t> flushed_since_barrier_ ABSL_GUARDED_BY(mutex_);
  // Whether a page pushed at barrier `epoch` may replace the copy at
  // `offset` (see lock_dropped_).
  bool MayReplace(uint64_t offset, uint64_t epoch) const
      ABSL_SHARED_LOCKS_REQUIRED(mutex_) {
    if (all_dropped_ != 0 && all_dropped_ >= epoch) return false;  // dropped at >= epoch - 1
    auto it = lock_dropped_.find(offset);
    return it == lock_dropped_.end() || it->second + 1 < epoch;
  }

  uint64_t epoch_ ABSL_GUARDED_BY(mutex_) = 0;
  // The control-plane collective this rank entered last (EnterCollective),
  // and by rank the last one each peer announced, with its call.
  uint64_t generation_ ABSL_GUARDED_BY(mutex_) = 0;
  std::vector<uint64_t> announced_ ABSL_GUARDED_BY(mutex_);
  std::vector<std::string> announced_call_ ABSL_GUARDED_BY(mutex_);
  // The writes of a barrier undone (UndoEpoch), told at the next one.
  PageList resend_ ABSL_GUARDED_BY(mutex_);
  std::map<uint64_t, EpochState> epochs_ ABSL_GUARDED_BY(mutex_);
  std::vector<bool> dead_ ABSL_GUARDED_BY(mutex_);
  std::vector<std::string> death_ ABSL_GUARDED_BY(mutex_);

  uint64_t next_ticket_ ABSL_GUARDED_BY(mutex_) = 0;
  std::map<uint64_t, Waiter> waiters_ ABSL_GUARDED_BY(mutex_);
  // Locks held by this rank, and by which of its threads: another thread
  // of the rank waits here before asking the lock's home.
  absl::flat_hash_map<uint64_t, std::thread::id> held_ ABSL_GUARDED_BY(mutex_);
  std::map<uint64_t, LockState> locks_ ABSL_GUARDED_BY(mutex_);  // managed here

  // Scratch for atomics' results, and staging for diffs (page snapshots
  // WRITEs are posted from), registered once.
  std::unique_ptr<uint64_t[]> scratch_;
  MemoryRegion scratch_region_;
  std::vector<uint32_t> free_scratch_ ABSL_GUARDED_BY(mutex_);
  std::unique_ptr<char[]> staging_;
  MemoryRegion staging_region_;
  // FlushTwins' rounds post their diffs in the order of their tickets,
  // taken just before their snapshots: for any one page that is the order
  // of its snapshots (a page is twinned again only after a snapshot
  // write-protected it, so the round that flushes the newer twin takes its
  // ticket after the round that flushed the older one took its own).
  // Otherwise two threads that flush successive twins of one page could
  // post the other way round, and the home would end with the older bytes.
  // A transport keeps the order of the WRITEs to one peer (one RC queue
  // pair, one TCP stream), so order of posting is order at the home. Every
  // ticket is retired (post_turn_ moves past it) by the round that took it.
  uint64_t post_tickets_ ABSL_GUARDED_BY(mutex_) = 0;  // the last handed out
  uint64_t post_turn_ ABSL_GUARDED_BY(mutex_) = 1;     // whose turn it is
  std::vector<uint32_t> free_staging_ ABSL_GUARDED_BY(mutex_);

  CoherenceStats stats_ ABSL_GUARDED_BY(mutex_);
  bool atomics_through_transport_ = false;  // set at start-up
  bool abort_on_loss_ = false;              // set at start-up
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_COHERENCE_COHERENCE_H_
