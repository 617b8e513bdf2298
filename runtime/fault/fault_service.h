// fault_service.h - the node's fault service: one userfaultfd over the global
// range, one loop that turns faults into asynchronous page requests and
// installs the answers.
//
// The loop reads fault events in batches and never blocks on a manager. Each
// fault becomes a PageRequest to the root Pager (in a node, a RegionMap),
// which forwards it to whichever manager backs the page. Answers return
// through the CompletionQueue; the loop drains it in bursts, installs each
// page (UFFDIO_COPY, a zero page, or lifting write protection) and so wakes
// the waiting threads. Concurrent faults on one page share one request; many
// requests are outstanding at once. There is no wall-clock timeout anywhere
// between a fault and its resolution: a manager that never answers keeps
// exactly the faults that need it waiting.
//
// A page fetched by a transport may instead be installed right where its
// fetch completed (InstallDirect, on the transport's thread) while the loop
// sleeps, so the faulting thread resumes without waiting for the loop to
// wake up; under load the loop is awake and installs in bursts as before.
// The loop does the bookkeeping of a direct install when it next wakes up
// for any reason; it is woken at once only if something waits for that (a
// fault that joined the request, a prefetch, faults waiting for a free
// slot). A direct install and the loop's dropping of pages (invalidation, a
// change of backing, stop) exclude each other, so a page dropped while its
// fetch was out is never installed from the old answer: the answer goes to
// the loop, which discards it and asks again.
//
// A fault that nothing backs, or whose manager fails, ends deterministically
// in SIGBUS for the faulting thread (EFAULT for a system call): the page is
// replaced by a page past the end of an empty file, the reason is logged, and
// the thread is woken to meet it. It never silently maps zeros.
//
// Before it sleeps, the loop polls sources whose completions no thread of
// ours produces (verbs) for a bounded number of polls, and it requests the
// pages managers expect next (ReadAhead) once a batch of faults is out.
// While it sleeps, a thread with a command that only changes installed
// pages (write protection, a snapshot, a drop) runs it itself under the
// loop's lock instead of waking the loop (TryRunInline).
//
// Threads: Start() and Stop() from the owner; BackingChanged() from any thread
// other than inside a manager's RequestPage(); InstallDirect() and stats()
// from any thread. The loop runs on its own thread, named "pw-fault", with
// the short scheduler slice of a service thread (runtime/base/service_thread.h).
#ifndef PAGEWIRE_RUNTIME_FAULT_FAULT_SERVICE_H_
#define PAGEWIRE_RUNTIME_FAULT_FAULT_SERVICE_H_

#include <linux/userfaultfd.h>
#include <poll.h>

#include <atomic>
#include <functional>
#include <cstdint>
#include <memory>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/types/span.h"
#include "runtime/fault/completion_queue.h"
#include "runtime/base/latency_histogram.h"
#include "runtime/base/log_summary.h"
#include "runtime/base/page.h"
#include "runtime/fault/fault_table.h"
#include "runtime/fault/page_installer.h"
#include "runtime/fault/pager.h"
#include "runtime/fault/userfaultfd.h"

namespace pagewire {

class FaultService;

// A source of page completions the fault loop watches next to the
// userfaultfd (in a node, the remote fetcher over the transport's
// completion queue): a file descriptor that becomes readable when
// completions wait, and a poll. The loop knows nothing else of it: not
// whether its completions come from a NIC or a thread, nor how it batches
// what it posts.
class CompletionSource {
 public:
  virtual ~CompletionSource() = default;
  virtual int fd() const = 0;

  // What the loop is doing as it polls. In every mode the source first
  // posts the work the loop's own requests set in motion since the last
  // poll (it may hold that work to post it in one go, chained per peer).
  enum class PollMode : uint8_t {
    kPost,   // the loop made a burst of requests: post them, take nothing
    kDrain,  // fd() was readable: take everything completed, re-arm fd()
    kSpin,   // the loop spins for completions it awaits: take what there is
    kSleep,  // the loop sleeps next: fd() must signal whatever completes
             // from now on, including what was just posted
  };
  struct Polled {
    bool found = false;  // completions were taken (and posted to `cq`)
    // Work is in flight whose completions no thread of ours will deliver
    // (a NIC writes them into memory): the loop polls (kSpin) a bounded
    // number of times before it sleeps, as rdma-core's and eRPC's
    // consumers do, instead of paying a sleep and a wake-up per completion.
    bool awaiting = false;
  };
  // Called on the loop only; completions go to `cq`.
  virtual Polled Poll(CompletionQueue& cq, PollMode mode) = 0;
};

// Asked about each page the service drops at a caller's request
// (Invalidate, InvalidatePagesAsync, RecallPage, a replacement): an owner
// that knows which pages carry writes not yet written elsewhere checks that
// none is dropped with them (coherence does, in checked runs:
// PAGEWIRE_CHECK). Not asked for a change of backing, which disposes of the
// old contents, nor at Stop(). `write_protected`: the page is installed
// under userfaultfd write protection, so no write has reached it since it
// was protected. Called on the loop thread (or a thread running one of its
// commands) while the page is still installed.
class DropAudit {
 public:
  virtual ~DropAudit() = default;
  virtual void BeforeDrop(uint64_t offset, bool write_protected) = 0;
};

struct FaultServiceConfig {
  uintptr_t base = 0;  // where the global range is reserved (page-aligned)
  uint64_t size = 0;   // bytes (page multiple)
  UffdSyscalls syscalls = UffdSyscalls::Kernel();
  // Polled by the loop for completions; must outlive Stop().
  std::vector<CompletionSource*> sources;
  // How many times the loop polls a source that awaits polled completions
  // before it sleeps (PAGEWIRE_SPIN_POLLS). A count, not a time: running
  // out only means the loop sleeps until the completion's event wakes it;
  // nothing is ever dropped or failed. 0: always sleep.
  uint32_t spin_polls = kDefaultSpinPolls;
  static constexpr uint32_t kDefaultSpinPolls = 4096;
  // How many times the loop, out of work, polls all its sources (the
  // userfaultfd, commands, completions) before it sleeps
  // (PAGEWIRE_IDLE_POLLS). A fault that comes within the polls skips the
  // loop's wake-up, at the price of the CPU the polls use. Also a count,
  // not a time. 0 (the default): sleep at once, for ranks that share cores.
  uint32_t idle_polls = 0;
};

// Counters since start; any thread may read them. A page installed directly
// (InstallDirect) is counted at once; its latency is recorded when the loop
// next wakes up.
struct FaultStats {
  uint64_t faults = 0;       // fault events read from the kernel
  uint64_t requests = 0;     // page requests sent to managers
  uint64_t coalesced = 0;    // faults that joined an outstanding request
  uint64_t installed = 0;    // pages installed (copy or zero page)
  uint64_t upgrades = 0;     // write-protected pages made writable
  uint64_t failed = 0;       // faults ended in SIGBUS
  uint64_t evicted = 0;      // pages dropped because their backing changed
  uint64_t readaheads = 0;   // pages requested ahead of a fault (ReadAhead)
  uint64_t replaced = 0;     // pages given contents took (pushed); a copy
                             // that held them already is kept as it was
  uint64_t max_outstanding = 0;
  // Polling before sleeping (FaultServiceConfig::spin_polls): spins that
  // found a completion, spins that ran out and slept, and polls made.
  uint64_t spin_hits = 0;
  uint64_t spin_misses = 0;
  uint64_t spin_polls = 0;
  // Polling while idle (FaultServiceConfig::idle_polls): idle spells that
  // found work, spells that ran out and slept.
  uint64_t idle_hits = 0;
  uint64_t idle_misses = 0;
  double mean_latency_ns = 0;
  uint64_t p50_latency_ns = 0;
  uint64_t p99_latency_ns = 0;
};

class FaultService final : public BackingObserver {
 public:
  // Reserves the global range at config.base (never moves it), opens the
  // userfaultfd, registers the range and starts the loop. `root` must
  // outlive the service.
  static absl::StatusOr<std::unique_ptr<FaultService>> Start(
      const FaultServiceConfig& config, Pager& root);

  ~FaultService() override;
  FaultService(const FaultService&) = delete;
  FaultService& operator=(const FaultService&) = delete;

  // Ends the loop. Faults still waiting for a manager fail loudly (SIGBUS,
  // logged); the range is made inaccessible and unregistered, so no thread
  // stays blocked in the kernel. Idempotent.
  void Stop();

  uintptr_t base() const { return base_; }
  uint64_t size() const { return size_; }
  CompletionQueue& completion_queue() { return *cq_; }
  FaultStats stats() const;

  // BackingObserver: drops the cached pages of the range, readies the
  // range for its new backing, and re-asks for pages whose requests were out
  // to the old one. Returns once the loop has done so.
  void BackingChanged(uint64_t offset, uint64_t size) override;

  // Drops the cached pages of [offset, offset + size) for which `keep`
  // (called on the loop thread with each page's offset) returns false, and
  // re-asks for such pages whose requests are out. Returns once done.
  using PagePredicate = std::function<bool(uint64_t offset)>;
  void Invalidate(uint64_t offset, uint64_t size, PagePredicate keep);

  // Makes the page at `offset` resident as if a thread had faulted on it
  // (read access), then calls `done` on the loop thread. Does not wait: a
  // home manager uses it to serve a remote fetch from a nested backing.
  using PrefetchDone = PageWatcher;
  void Prefetch(uint64_t offset, PrefetchDone done);
  // A manager answering a fault on the loop thread (RequestPage) expects a
  // fault on the page at `offset` soon: the loop requests it once the
  // current request is out, unless it is installed or asked for already
  // or no slot is free (a hint, never waited for). Loop thread only.
  void ReadAhead(uint64_t offset);

  // Write-protects (or unprotects) the installed pages of the range: a
  // later write to a protected page faults as an upgrade request. Pages not
  // installed are skipped. Any thread; returns once done.
  absl::Status WriteProtect(uint64_t offset, uint64_t size, bool protect);

  // Drops the installed pages at `offsets` (page-aligned, any order) and
  // re-asks for such pages whose requests are out, then calls `done` on the
  // loop thread. Does not wait: message handlers use it.
  // Pages for which `keep` (if given, called on the loop thread) returns
  // true are left alone. `contents`, if not empty, goes with `offsets`: a
  // page with contents is not left absent but replaced by them, installed
  // write-protected in the same step (a copy pushed by its home), so the
  // threads that read it never fault (an installed copy that holds those
  // bytes already is kept as it is); unless `may_replace` (if given, asked
  // as the page is dropped) says no. The contents must live until `done`.
  using Done = std::function<void()>;
  void InvalidatePagesAsync(std::vector<uint64_t> offsets, Done done,
                            PagePredicate keep = nullptr,
                            std::vector<const char*> contents = {},
                            PagePredicate may_replace = nullptr);

  // For each page offset: if installed, write-protects it and copies its
  // contents to the matching buffer (a page each), atomically with respect
  // to faults; `resident` says which were. Any thread but the loop's.
  absl::Status SnapshotAndProtect(const std::vector<uint64_t>& offsets,
                                  const std::vector<char*>& buffers,
                                  std::vector<bool>& resident);

  // Takes a page away from this rank's writers in one step of the loop:
  // write-protects it, copies it to `buffer` (if not null and installed),
  // then drops it (`drop`) or leaves it installed read-only. A request for
  // the page that is out (an upgrade being granted, a READ in flight) is
  // asked again when it completes, so no write access granted before the
  // recall survives it. Returns whether the page was installed. Any thread
  // but the loop's.
  bool RecallPage(uint64_t offset, char* buffer, bool drop);

  // Answers a request with `c` from the thread that saw the answer arrive
  // (a transport's), installing the page there and then if the loop is
  // asleep (waking it would put a thread hop on the fault's critical path):
  // a kData completion whose request is still wanted as it was asked (its
  // page was not dropped, nor its backing changed, while the fetch was out)
  // is copied in (write-protected if `c` says so), which wakes the threads
  // blocked on the page; the loop hears of it afterwards, for bookkeeping.
  // Anything else (the loop is awake and installs it in its current pass,
  // another outcome, a request the loop must ask again, a failed copy, a
  // stopped service) is posted to the completion queue as usual, and the
  // loop installs, discards or reports it. Any thread; never blocks for
  // longer than the loop takes to drop a range of pages.
  void InstallDirect(PageCompletion c);

  // Plans (fault_table.h): what a manager set in motion for the fault in
  // `slot`, which it answers later. Any thread.
  void SetPlan(uint32_t slot, const FaultPlan& plan) { table_.SetPlan(slot, plan); }
  std::optional<FaultPlan> TakePlan(uint32_t slot, FaultPlan::Step step,
                                    uint16_t reply, int peer, uint64_t page) {
    return table_.TakePlan(slot, step, reply, peer, page);
  }
  std::vector<FaultPlan> TakePlansAwaiting(int peer,
                                           absl::Span<const uint16_t> replies) {
    return table_.TakePlansAwaiting(peer, replies);
  }
  // Faults whose plan waits for `peer` (for logs: who waits on a
  // suspected peer).
  uint32_t FaultsWaitingOn(int peer) { return table_.PlansWaitingOn(peer); }
  // The READ planned for `slot` completed with `status`: its page, in the
  // slot's landing buffer, is installed as the plan says (from the calling
  // thread if the loop sleeps: InstallDirect), or the fault fails naming
  // the READ and `status`. False if no READ was planned for `slot` (a stray
  // completion, which is ignored). Any thread.
  bool Complete(uint32_t slot, const absl::Status& status);

  // Installs the audit of drops (null: none, the default). From the owner,
  // before faults flow; the audit must outlive the service or be removed
  // first. Each audited drop reads the page's entry in /proc/self/pagemap.
  absl::Status SetDropAudit(DropAudit* audit);

  // Whether the page at `offset` is installed (any thread; a hint, exact on
  // the loop thread).
  bool IsResident(uint64_t offset) const {
    return offset < size_ && Resident(offset / kPageSize);
  }

  // Installs zero-filled, writable pages over [offset, offset + size) where
  // none is installed yet and `which` (if given) holds, without asking any
  // manager (a home's own pages). Returns once done.
  absl::Status Populate(uint64_t offset, uint64_t size,
                        PagePredicate which = nullptr);

  // The landing buffers, one page per slot: a transport registers them once
  // so one-sided READs land there directly. A completion of kData whose
  // `data` is null means "in the slot's landing buffer".
  void* landing_area() const { return landing_; }
  uint64_t landing_bytes() const { return uint64_t{kMaxPendingPages} * kPageSize; }
  void* Landing(uint32_t slot) const {
    return static_cast<char*>(landing_) + uint64_t{slot} * kPageSize;
  }

  // How many distinct pages may wait for managers at once before further
  // faults queue inside the service. Each blocked thread holds at most one.
  static constexpr uint32_t kMaxPendingPages = 4096;
  // Fault events read per read(2).
  static constexpr int kEventBatch = 64;
  static_assert(kEventBatch <= static_cast<int>(kMaxPendingPages),
                "one batch of distinct faults must fit the pending table");

 private:
  // What a thread asks the loop to do (Submit), one alternative per kind.
  struct ChangeBackingCmd {
    uint64_t offset, size;
    const PagePredicate* keep;  // null: a new backing; else an invalidation
  };
  struct PopulateCmd {
    uint64_t offset, size;
    const PagePredicate* which;
    absl::Status* result;
  };
  struct PrefetchCmd {
    uint64_t offset;
    PrefetchDone done;
  };
  struct WriteProtectCmd {
    uint64_t offset, size;
    bool protect;
    absl::Status* result;
  };
  struct DropPagesCmd {  // InvalidatePagesAsync
    std::vector<uint64_t> pages;
    Done done;
    PagePredicate keep;
    std::vector<const char*> contents;
    PagePredicate may_replace;
  };
  struct SnapshotCmd {
    const std::vector<uint64_t>* pages;
    const std::vector<char*>* buffers;
    std::vector<bool>* resident;
    absl::Status* result;
  };
  struct RecallCmd {
    uint64_t offset;
    char* buffer;
    bool drop;
    bool* was_resident;
  };
  using CommandOp = std::variant<ChangeBackingCmd, PopulateCmd, PrefetchCmd,
                                 WriteProtectCmd, DropPagesCmd, SnapshotCmd,
                                 RecallCmd>;
  struct Command {
    CommandOp op;
    absl::Notification* done = nullptr;  // null: the submitter does not wait
  };

  FaultService(const FaultServiceConfig& config, Pager& root,
               Userfaultfd uffd, std::unique_ptr<CompletionQueue> cq,
               int control_fd, int unbacked_fd, void* landing,
               uint64_t* resident);

  // The loop (fault_service.cc).
  void Loop();
  void LoopLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(loop_mutex_);
  // Before the loop sleeps: while a source awaits polled completions, polls
  // it up to spin_polls_ times and installs what it finds; true if it found
  // anything (the loop then does not sleep).
  bool SpinForCompletions();
  // Before the loop sleeps with no READ awaiting a polled completion:
  // prepares the sources as for a sleep, then polls every fd in `fds` up to
  // idle_polls_ times without blocking; poll()'s result for the first poll
  // that found something (revents set), else 0.
  int PollWhileIdle(std::vector<pollfd>& fds);
  // Polls every source in `mode`; whether any took completions. Keeps
  // whether any awaits polled completions (awaiting_).
  bool PollSources(CompletionSource::PollMode mode);
  void ReadFaults();
  void HandleFault(const uffd_msg& msg);
  // A record for `page` (table_.Start, counted); kNoSlot if the table is
  // full.
  uint32_t StartRecord(uintptr_t page, Access access, bool upgrade);
  // Requests the pages ReadAhead named.
  void RunReadAheads();
  void StartPrefetch(uint64_t offset, PrefetchDone done);
  void NotifyWatchers(FaultRecord& r, const absl::Status& status);
  // Sends `slot`'s request to the root pager (again, if it was stale).
  void Request(uint32_t slot);
  void DrainCompletions(bool bell_rang);
  // A manager's answer, drained from the queue: installs, fails, or asks
  // again.
  void Answer(const PageCompletion& c);
  void Install(FaultRecord& r, const PageCompletion& c);
  void FailPage(uintptr_t page, const absl::Status& why, const char* outcome);
  void RunDeferred();
  void AbandonPending();

  // Direct installs (fault_service.cc; see fault_table.h).
  // Bookkeeping for a request InstallDirect answered.
  void FinishDirect(uint32_t slot);
  // If the request out for `page` was installed directly, finishes it now.
  void CatchUpDirect(uintptr_t page);
  // Something now waits for `slot`'s bookkeeping. May finish the slot.
  void WantPrompt(uint32_t slot);
  // Faults or prefetches wait for a slot: finishes every request that was
  // installed directly, and has the installers wake the loop from now on.
  void WantSlots();
  // Takes `slot`'s request back from InstallDirect (install_mutex_ held);
  // false if it was installed already.
  bool DisarmLocked(uint32_t slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(install_mutex_);

  // Commands (fault_commands.cc).
  // Runs `c` on the calling thread if the loop sleeps and nothing is queued
  // before it, for commands that only change installed pages (write
  // protection, snapshots, drops); false: submit it as usual.
  bool TryRunInline(const Command& c);
  // Runs `op` on the loop: here if this is the loop, inline if the loop
  // sleeps and `op` allows, else queued; waits for it if `wait`. False if
  // the service stopped before it could run.
  bool Submit(CommandOp op, bool wait);
  bool RunCommands();  // true: stop
  void RunCommand(const Command& c);
  void Run(const ChangeBackingCmd& c);
  void Run(const PopulateCmd& c);
  void Run(const PrefetchCmd& c);
  void Run(const WriteProtectCmd& c);
  void Run(const DropPagesCmd& c);
  void Run(const SnapshotCmd& c);
  void Run(const RecallCmd& c);
  void DropPages(absl::Span<const uintptr_t> pages)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(install_mutex_);
  // Installs `contents` write-protected at the dropped `page`; on failure
  // leaves it absent (fetched on demand), with a warning.
  void ReplaceDropped(uintptr_t page, const char* contents)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(install_mutex_);
  // Tells the audit (if any) that `page`, installed, is about to go.
  void AuditDrop(uintptr_t page);

  uint64_t PageIndex(uintptr_t page) const { return (page - base_) / kPageSize; }
  bool Resident(uint64_t i) const { return installer_.Resident(i); }
  static void Bump(std::atomic<uint64_t>& a, uint64_t by = 1) {
    a.store(a.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
  }

  const uintptr_t base_;
  const uint64_t size_;
  Pager& root_;
  Userfaultfd uffd_;
  std::unique_ptr<CompletionQueue> cq_;
  const int control_fd_;   // eventfd: commands or stop
  const int unbacked_fd_;  // empty memfd: its pages raise SIGBUS
  void* const landing_;    // kMaxPendingPages landing buffers
  // One bit per page of the range (the installer's residence bits).
  uint64_t* const resident_;
  PageInstaller installer_;
  std::thread loop_;
  std::thread::id loop_id_;
  bool stopped_ = false;  // owner only

  // The loop's: one record per wanted page (fault_table.h), faults and
  // prefetches waiting for a free record, pages named by ReadAhead.
  FaultTable table_;
  std::vector<uffd_msg> deferred_;
  std::vector<std::pair<uint64_t, PrefetchDone>> deferred_prefetches_;
  std::vector<PageCompletion> drained_;
  std::vector<uint64_t> readahead_;
  std::vector<CompletionSource*> sources_;
  bool awaiting_ = false;  // a source awaits polled completions
  const uint32_t spin_polls_;
  const uint32_t idle_polls_;

  std::atomic<DropAudit*> drop_audit_{nullptr};
  int pagemap_fd_ = -1;  // opened with the audit, before it is published

  // Held by InstallDirect across its check and copy, and by the loop while
  // it drops pages or stops: see fault_table.h.
  absl::Mutex install_mutex_;
  bool direct_stopped_ ABSL_GUARDED_BY(install_mutex_) = false;
  // Faults or prefetches wait for a free slot (see fault_table.h).
  std::atomic<bool> slots_wanted_{false};
  // The loop sleeps in poll() (a hint for InstallDirect, never needed for
  // correctness).
  std::atomic<bool> waiting_{false};

  // Held by the loop except while it sleeps in poll(): the loop-only state
  // is the holder's, so a thread that takes it while the loop sleeps may run
  // a command itself (TryRunInline) instead of waking the loop and waiting
  // for it, two context switches saved on a barrier's critical path.
  absl::Mutex loop_mutex_;
  absl::Mutex commands_mutex_;
  std::vector<Command> commands_ ABSL_GUARDED_BY(commands_mutex_);
  bool stop_requested_ ABSL_GUARDED_BY(commands_mutex_) = false;

  std::atomic<uint64_t> faults_{0}, requests_{0}, coalesced_{0},
      installed_{0}, upgrades_{0}, failed_{0}, evicted_{0},
      max_outstanding_{0}, readaheads_{0}, replaced_{0}, spin_hits_{0},
      spin_misses_{0},
      spin_total_polls_{0}, idle_hits_{0}, idle_misses_{0};
  LatencyHistogram latency_;
  LogSummary failure_log_;  // failed faults, by reason
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_FAULT_FAULT_SERVICE_H_
