// fault_service.cc - the fault loop: read faults in batches, ask managers,
// install answers in bursts.
#include "runtime/fault/fault_service.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "runtime/base/log.h"
#include "runtime/base/service_thread.h"

namespace pagewire {
namespace {

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

constexpr uint32_t kNoSlot = FaultTable::kNoSlot;

// Maps anonymous memory of `bytes` that is only backed once touched.
void* MapLazily(uint64_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

}  // namespace

absl::StatusOr<std::unique_ptr<FaultService>> FaultService::Start(
    const FaultServiceConfig& config, Pager& root) {
  if (!PageAligned(config.base) || config.base == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "global range base 0x%x must be a non-zero multiple of the page size "
        "(%d); set PAGEWIRE_GLOBAL_BASE to an aligned address",
        config.base, kPageSize));
  }
  if (config.size == 0 || !PageAligned(config.size)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "global range size 0x%x must be a non-zero multiple of the page size "
        "(%d); set PAGEWIRE_GLOBAL_SIZE accordingly",
        config.size, kPageSize));
  }
  if (root.size() < config.size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the root pager (%s, 0x%x bytes) is smaller than the global range "
        "(0x%x bytes)",
        root.Describe(), root.size(), config.size));
  }

  absl::StatusOr<Userfaultfd> uffd = Userfaultfd::Open(config.syscalls);
  if (!uffd.ok()) return uffd.status();

  void* want = reinterpret_cast<void*>(config.base);
  void* got = ::mmap(want, config.size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE |
                         MAP_FIXED_NOREPLACE,
                     -1, 0);
  if (got == MAP_FAILED || got != want) {
    int err = errno;
    if (got != MAP_FAILED) ::munmap(got, config.size);
    return absl::ResourceExhaustedError(absl::StrFormat(
        "cannot reserve the global range [0x%x, 0x%x): %s. Every process of a "
        "job maps global memory at the same address; fix: pick a free range "
        "with PAGEWIRE_GLOBAL_BASE / PAGEWIRE_GLOBAL_SIZE (see "
        "/proc/self/maps)",
        config.base, config.base + config.size,
        got == MAP_FAILED ? strerror(err) : "the kernel placed it elsewhere"));
  }
  if (absl::Status s = uffd->Register(config.base, config.size); !s.ok()) {
    ::munmap(want, config.size);
    return s;
  }

  auto cleanup = [&](void* a, uint64_t an, void* b, uint64_t bn) {
    ::munmap(want, config.size);
    if (a) ::munmap(a, an);
    if (b) ::munmap(b, bn);
  };
  const uint64_t landing_bytes = uint64_t{kMaxPendingPages} * kPageSize;
  const uint64_t resident_bytes =
      PageUp(((config.size / kPageSize) + 63) / 64 * sizeof(uint64_t));
  void* landing = MapLazily(landing_bytes);
  void* resident = MapLazily(resident_bytes);
  int control_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int unbacked_fd = ::memfd_create("pagewire-unbacked", MFD_CLOEXEC);
  auto cq = CompletionQueue::Create(kMaxPendingPages);
  if (!landing || !resident || control_fd < 0 || unbacked_fd < 0 || !cq.ok()) {
    int err = errno;
    cleanup(landing, landing_bytes, resident, resident_bytes);
    if (control_fd >= 0) ::close(control_fd);
    if (unbacked_fd >= 0) ::close(unbacked_fd);
    return absl::ResourceExhaustedError(absl::StrFormat(
        "fault service start-up: cannot allocate its buffers or descriptors: "
        "%s. Fix: raise RLIMIT_NOFILE or free memory",
        cq.ok() ? strerror(err) : cq.status().ToString()));
  }

  std::unique_ptr<FaultService> service(new FaultService(
      config, root, *std::move(uffd), *std::move(cq), control_fd, unbacked_fd,
      landing, static_cast<uint64_t*>(resident)));
  FaultService* s = service.get();
  s->loop_ = std::thread([s] { s->Loop(); });
  s->loop_id_ = s->loop_.get_id();
  return service;
}

FaultService::FaultService(const FaultServiceConfig& config, Pager& root,
                           Userfaultfd uffd,
                           std::unique_ptr<CompletionQueue> cq, int control_fd,
                           int unbacked_fd, void* landing, uint64_t* resident)
    : base_(config.base),
      size_(config.size),
      root_(root),
      uffd_(std::move(uffd)),
      cq_(std::move(cq)),
      control_fd_(control_fd),
      unbacked_fd_(unbacked_fd),
      landing_(landing),
      resident_(resident),
      installer_(uffd_, config.base, config.size, unbacked_fd, resident),
      table_(kMaxPendingPages),
      sources_(config.sources),
      spin_polls_(config.spin_polls),
      idle_polls_(config.idle_polls) {
  // Everything the loop touches is sized now, so it never allocates while
  // faults are flowing (the deferred queue only grows past a full table).
  deferred_.reserve(kMaxPendingPages);
  drained_.reserve(kMaxPendingPages);
}

FaultService::~FaultService() {
  Stop();
  const uint64_t resident_bytes =
      PageUp(((size_ / kPageSize) + 63) / 64 * sizeof(uint64_t));
  ::munmap(landing_, uint64_t{kMaxPendingPages} * kPageSize);
  ::munmap(resident_, resident_bytes);
  ::close(control_fd_);
  ::close(unbacked_fd_);
  if (pagemap_fd_ >= 0) ::close(pagemap_fd_);
}

void FaultService::Stop() {
  if (stopped_) return;
  stopped_ = true;
  {
    absl::MutexLock lock(&commands_mutex_);
    stop_requested_ = true;
  }
  uint64_t one = 1;
  ssize_t n = ::write(control_fd_, &one, sizeof(one));
  (void)n;
  loop_.join();
  failure_log_.Flush([](const std::string& why, uint64_t total) {
    Error("%d faults failed in all for this reason: %s", total, why);
  });
  const FaultStats st = stats();
  Debug("fault service: %d faults, %d requests, %d installed, %d upgrades, "
        "%d failed; polled before sleeping %d times: %d found a completion, "
        "%d polls in all; polled while idle %d times: %d found work",
        st.faults, st.requests, st.installed, st.upgrades, st.failed,
        st.spin_hits + st.spin_misses, st.spin_hits, st.spin_polls,
        st.idle_hits + st.idle_misses, st.idle_hits);

  // Make the range inaccessible before unregistering: unregistering wakes
  // every thread still blocked on it, and they must meet SIGSEGV, not a
  // silently zero-filled page.
  ::mprotect(reinterpret_cast<void*>(base_), size_, PROT_NONE);
  if (absl::Status s = uffd_.Unregister(base_, size_); !s.ok()) {
    // Unbacked pages split the registration; the remapped pages were never
    // registered, which UFFDIO_UNREGISTER accepts. Anything else is worth
    // saying, and the munmap below still releases the range.
    Warning("%s", s.ToString());
  }
  ::munmap(reinterpret_cast<void*>(base_), size_);
}

FaultStats FaultService::stats() const {
  FaultStats s;
  auto get = [](const std::atomic<uint64_t>& a) {
    return a.load(std::memory_order_relaxed);
  };
  s.faults = get(faults_);
  s.requests = get(requests_);
  s.coalesced = get(coalesced_);
  s.installed = get(installed_);
  s.upgrades = get(upgrades_);
  s.failed = get(failed_);
  s.evicted = get(evicted_);
  s.max_outstanding = get(max_outstanding_);
  s.readaheads = get(readaheads_);
  s.replaced = get(replaced_);
  s.spin_hits = get(spin_hits_);
  s.spin_misses = get(spin_misses_);
  s.spin_polls = get(spin_total_polls_);
  s.idle_hits = get(idle_hits_);
  s.idle_misses = get(idle_misses_);
  s.mean_latency_ns = latency_.MeanNs();
  s.p50_latency_ns = latency_.QuantileNs(0.50);
  s.p99_latency_ns = latency_.QuantileNs(0.99);
  return s;
}

void FaultService::Loop() {
  BecomeServiceThread("pw-fault");
  cq_->BindConsumer(std::this_thread::get_id());
  loop_mutex_.Lock();
  LoopLocked();
  loop_mutex_.Unlock();
}

void FaultService::LoopLocked() {
  using Mode = CompletionSource::PollMode;
  // Fixed sources first, then the completion sources (transports).
  constexpr int kFixed = 3;
  std::vector<pollfd> fds = {{uffd_.fd(), POLLIN, 0},
                             {cq_->event_fd(), POLLIN, 0},
                             {control_fd_, POLLIN, 0}};
  for (CompletionSource* source : sources_) {
    fds.push_back({source->fd(), POLLIN, 0});
  }
  for (;;) {
    int n;
    if (SpinForCompletions() && awaiting_) {
      // Pages arrived while polling and are installed, and more are on
      // their way: look at every other source without sleeping.
      n = ::poll(fds.data(), fds.size(), 0);
    } else if ((n = PollWhileIdle(fds)) != 0) {
      // Work arrived while the loop polled: handled below, no sleep.
    } else {
      // Infinite wait: the loop sleeps until a fault, an answer or a
      // command arrives. Nothing here is ever timed.
      PollSources(Mode::kSleep);
      waiting_.store(true, std::memory_order_relaxed);
      // Asleep, the loop lends its state: a thread with a command may run
      // it here and now (TryRunInline) instead of waking the loop for it.
      loop_mutex_.Unlock();
      n = ::poll(fds.data(), fds.size(), -1);
      loop_mutex_.Lock();
      waiting_.store(false, std::memory_order_relaxed);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      Error("fault loop: poll failed: %s; the fault service stops",
            strerror(errno));
      AbandonPending();
      return;
    }
    if (fds[2].revents & POLLIN) {
      uint64_t count;
      ssize_t r = ::read(control_fd_, &count, sizeof(count));
      (void)r;
      if (RunCommands()) {
        AbandonPending();
        return;
      }
    }
    if (fds[0].revents & POLLIN) ReadFaults();
    for (size_t i = kFixed; i < fds.size(); ++i) {
      if (fds[i].revents & POLLIN) sources_[i - kFixed]->Poll(*cq_, Mode::kDrain);
    }
    DrainCompletions(fds[1].revents & POLLIN);
    RunReadAheads();
    PollSources(Mode::kPost);
    if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
      Error("fault loop: the userfaultfd reported an error; the fault "
            "service stops");
      AbandonPending();
      return;
    }
  }
}

bool FaultService::PollSources(CompletionSource::PollMode mode) {
  bool found = false, awaiting = false;
  for (CompletionSource* source : sources_) {
    const CompletionSource::Polled p = source->Poll(*cq_, mode);
    found |= p.found;
    awaiting |= p.awaiting;
  }
  awaiting_ = awaiting;
  return found;
}

bool FaultService::SpinForCompletions() {
  if (spin_polls_ == 0 || !awaiting_) return false;
  // Look at the userfaultfd now and then, so a new fault is not held up by
  // a long spin: one system call per kFaultCheckEvery polls.
  constexpr uint32_t kFaultCheckEvery = 64;
  pollfd faults = {uffd_.fd(), POLLIN, 0};
  uint32_t polls = 0;
  bool found = false;
  while (polls < spin_polls_ && !found) {
    ++polls;
    found = PollSources(CompletionSource::PollMode::kSpin);
    if (found) break;
    if (polls % kFaultCheckEvery == 0) {
      if (::poll(&faults, 1, 0) > 0 || !awaiting_) break;
    }
  }
  Bump(spin_total_polls_, polls);
  if (!found) {
    Bump(spin_misses_);
    return false;
  }
  Bump(spin_hits_);
  DrainCompletions(false);
  return true;
}

int FaultService::PollWhileIdle(std::vector<pollfd>& fds) {
  // With READs outstanding the spin above has polled their queue already,
  // and an unarmed queue's completions would not show here.
  if (idle_polls_ == 0 || awaiting_) return 0;
  // Prepared as for a sleep, so every source signals its fd for new work
  // (verbs: a post by another thread rings the bell, or the queue is
  // armed); the polls then see what a sleep would have been woken by.
  PollSources(CompletionSource::PollMode::kSleep);
  for (uint32_t k = 0; k < idle_polls_; ++k) {
    const int n = ::poll(fds.data(), fds.size(), 0);
    if (n > 0 || (n < 0 && errno != EINTR)) {
      Bump(idle_hits_);
      return n;
    }
  }
  Bump(idle_misses_);
  return 0;
}

void FaultService::ReadFaults() {
  uffd_msg msgs[kEventBatch];
  for (;;) {
    ssize_t n = ::read(uffd_.fd(), msgs, sizeof(msgs));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) {
        Error("fault loop: reading the userfaultfd failed: %s",
              strerror(errno));
      }
      return;
    }
    size_t count = static_cast<size_t>(n) / sizeof(uffd_msg);
    for (size_t i = 0; i < count; ++i) HandleFault(msgs[i]);
    RunReadAheads();
    // What the batch asked for goes out in one go (a chain per home).
    PollSources(CompletionSource::PollMode::kPost);
    // Install what managers answered inline before reading more, so pages
    // reach their threads in bursts of at most one batch.
    DrainCompletions(false);
    if (count < static_cast<size_t>(kEventBatch)) return;
  }
}

void FaultService::HandleFault(const uffd_msg& msg) {
  if (msg.event != UFFD_EVENT_PAGEFAULT) {
    Error("fault loop: unexpected userfaultfd event %d ignored",
          static_cast<int>(msg.event));
    return;
  }
  Bump(faults_);
  const uintptr_t page = PageDown(msg.arg.pagefault.address);
  const uint64_t flags = msg.arg.pagefault.flags;
  // A page installed directly whose bookkeeping has not reached the loop
  // yet: finish it first, so this fault meets the page as installed (a
  // write to it is an upgrade).
  CatchUpDirect(page);
  // A write-protect fault on a page dropped since (an invalidation ran
  // before this event was read) is a plain write fault on a missing page:
  // managers may read a page they upgrade, and it must be there.
  const bool upgrade =
      (flags & UFFD_PAGEFAULT_FLAG_WP) && Resident(PageIndex(page));
  if (!upgrade && Resident(PageIndex(page))) {
    // A late event for a page already installed: its thread only needs a
    // wake-up.
    installer_.Wake(page);
    return;
  }
  if (const uint32_t joined = table_.Find(page); joined != kNoSlot) {
    // Coalesce: the outstanding request's installation wakes every thread
    // blocked on this page. A writer that finds the page write-protected
    // after that faults again as an upgrade.
    table_[joined].faulted = true;
    table_[joined].joined = true;
    Bump(coalesced_);
    WantPrompt(joined);
    return;
  }
  const uint32_t slot = StartRecord(
      page,
      (flags & UFFD_PAGEFAULT_FLAG_WRITE) ? Access::kWrite : Access::kRead,
      upgrade);
  if (slot == kNoSlot) {
    deferred_.push_back(msg);
    return;
  }
  table_[slot].faulted = true;
  Request(slot);
}

uint32_t FaultService::StartRecord(uintptr_t page, Access access,
                                   bool upgrade) {
  const uint32_t slot = table_.Start(page, access, upgrade, NowNs());
  if (slot != kNoSlot &&
      table_.outstanding() > max_outstanding_.load(std::memory_order_relaxed)) {
    max_outstanding_.store(table_.outstanding(), std::memory_order_relaxed);
  }
  return slot;
}

void FaultService::ReadAhead(uint64_t offset) {
  // A manager answering on another thread (a first-touch claim's reply)
  // gets no read-ahead: the list is the loop's.
  if (std::this_thread::get_id() != loop_id_ || offset >= size_) return;
  readahead_.push_back(PageDown(offset));
}

void FaultService::RunReadAheads() {
  // Requests made here may name more pages (a manager that reads ahead of
  // a retried fault); those wait for the next call.
  std::vector<uint64_t> offsets;
  offsets.swap(readahead_);
  for (uint64_t offset : offsets) {
    const uintptr_t page = base_ + offset;
    CatchUpDirect(page);
    if (Resident(PageIndex(page)) || table_.Find(page) != kNoSlot) continue;
    const uint32_t slot = StartRecord(page, Access::kRead, false);
    if (slot == kNoSlot) break;  // a full table: faults come first
    Bump(readaheads_);
    Request(slot);
  }
}

void FaultService::StartPrefetch(uint64_t offset, PrefetchDone done) {
  if (offset >= size_) {
    done(absl::OutOfRangeError(absl::StrFormat(
        "prefetch of offset 0x%x: outside the global range", offset)));
    return;
  }
  const uintptr_t page = base_ + PageDown(offset);
  CatchUpDirect(page);
  if (Resident(PageIndex(page))) {
    done(absl::OkStatus());
    return;
  }
  if (const uint32_t joined = table_.Find(page); joined != kNoSlot) {
    table_[joined].watchers.push_back(std::move(done));
    WantPrompt(joined);
    return;
  }
  const uint32_t slot = StartRecord(page, Access::kRead, false);
  if (slot == kNoSlot) {
    deferred_prefetches_.emplace_back(offset, std::move(done));
    return;
  }
  table_[slot].watchers.push_back(std::move(done));
  Request(slot);
}

void FaultService::NotifyWatchers(FaultRecord& r, const absl::Status& status) {
  if (r.watchers.empty()) return;
  std::vector<PrefetchDone> watchers;
  watchers.swap(r.watchers);
  for (PrefetchDone& w : watchers) w(status);
}

void FaultService::Request(uint32_t slot) {
  FaultRecord& r = table_[slot];
  // Asked again after the page was dropped: no longer an upgrade of an
  // installed page but a write to a missing one (managers may read a page
  // they upgrade, and it must be there).
  if (r.upgrade && !Resident(PageIndex(r.page))) r.upgrade = false;
  PageRequest request;
  request.offset = r.page - base_;
  request.access = r.access;
  request.upgrade = r.upgrade;
  request.prefetch = !r.faulted;
  request.slot = slot;
  request.landing = Landing(slot);
  request.completion_queue = cq_.get();
  request.fault_service = this;
  if (!r.upgrade) {
    // Page data may be installed where it arrives (an upgrade's answer is
    // never data). Release: the installer reads `page` after the state.
    r.prompt.store(!r.watchers.empty(), std::memory_order_relaxed);
    r.direct.store(kDirectArmed, std::memory_order_release);
  }
  Bump(requests_);
  root_.RequestPage(request);
}

void FaultService::InstallDirect(PageCompletion c) {
  // Only a sleeping loop would cost a wake-up on the critical path. An awake
  // one installs the answer in the pass it is in, with whatever else it
  // drains, and leaves the caller's thread to its own work.
  if (c.resolution == Resolution::kData && c.slot < kMaxPendingPages &&
      waiting_.load(std::memory_order_relaxed)) {
    FaultRecord& r = table_[c.slot];
    absl::MutexLock lock(&install_mutex_);
    if (!direct_stopped_ &&
        r.direct.load(std::memory_order_acquire) == kDirectArmed) {
      // Counted before the copy wakes the page's threads, so that a thread
      // that resumed finds itself counted.
      installed_.fetch_add(1, std::memory_order_relaxed);
      const PageInstaller::Copied copied = installer_.Copy(
          r.page, c.data != nullptr ? c.data : Landing(c.slot), c.write_protect);
      if (copied != PageInstaller::Copied::kFailed) {
        r.installed_ns = NowNs();
        r.direct.store(kDirectInstalled, std::memory_order_seq_cst);
        c.installed = true;
      } else {
        // The loop tries again and reports the failure.
        installed_.fetch_sub(1, std::memory_order_relaxed);
      }
    }
  }
  if (c.installed && !table_[c.slot].prompt.load(std::memory_order_seq_cst) &&
      !slots_wanted_.load(std::memory_order_seq_cst)) {
    // Nothing waits for the bookkeeping: it rides on the loop's next
    // wake-up, which leaves the CPU to the thread that just resumed.
    cq_->PostQuietly(std::move(c));
    return;
  }
  cq_->Post(std::move(c));
}

void FaultService::WantPrompt(uint32_t slot) {
  FaultRecord& r = table_[slot];
  r.prompt.store(true, std::memory_order_seq_cst);
  if (r.direct.load(std::memory_order_seq_cst) == kDirectInstalled) {
    FinishDirect(slot);
  }
}

void FaultService::WantSlots() {
  slots_wanted_.store(true, std::memory_order_seq_cst);
  for (uint32_t slot = 0; slot < kMaxPendingPages; ++slot) {
    if (table_[slot].in_use &&
        table_[slot].direct.load(std::memory_order_seq_cst) ==
            kDirectInstalled) {
      FinishDirect(slot);
    }
  }
}

bool FaultService::DisarmLocked(uint32_t slot) {
  uint32_t armed = kDirectArmed;
  if (table_[slot].direct.compare_exchange_strong(armed, kDirectIdle,
                                                  std::memory_order_acq_rel)) {
    return true;
  }
  return armed != kDirectInstalled;
}

void FaultService::CatchUpDirect(uintptr_t page) {
  const uint32_t slot = table_.Find(page);
  if (slot != kNoSlot &&
      table_[slot].direct.load(std::memory_order_acquire) == kDirectInstalled) {
    FinishDirect(slot);
  }
}

void FaultService::FinishDirect(uint32_t slot) {
  FaultRecord& r = table_[slot];
  r.direct.store(kDirectIdle, std::memory_order_relaxed);
  // The page may have been dropped since it was installed (the drop saw it
  // installed and removed it): nothing to ask again, its threads read it
  // before the drop.
  r.stale = false;
  if (r.faulted) latency_.Record(r.installed_ns - r.started_ns);
  if (r.joined) installer_.Wake(r.page);
  NotifyWatchers(r, absl::OkStatus());
  table_.End(slot);
}

void FaultService::DrainCompletions(bool bell_rang) {
  // Completing can ask again (stale answers, deferred faults), and managers
  // that answer inline post from this thread without ringing: drain until
  // nothing is left, or such answers would wait for an unrelated wake-up.
  do {
    cq_->Drain(drained_, bell_rang);
    bell_rang = false;
    for (const PageCompletion& c : drained_) Answer(c);
    const bool waiting = !deferred_.empty() || !deferred_prefetches_.empty();
    if (waiting) WantSlots();
    if (waiting && !table_.full()) RunDeferred();
    if (deferred_.empty() && deferred_prefetches_.empty()) {
      slots_wanted_.store(false, std::memory_order_relaxed);
    }
  } while (!drained_.empty());
}

void FaultService::Answer(const PageCompletion& c) {
  if (table_.Valid(c.slot) &&
      table_[c.slot].direct.load(std::memory_order_acquire) ==
          kDirectInstalled) {
    FinishDirect(c.slot);
    if (c.installed) return;
    // Not the direct answer: a second answer to one request (below).
  }
  if (c.installed) return;  // finished already, when a fault met the page
  if (!table_.Valid(c.slot)) {
    Error("fault loop: a manager answered slot %u, which has no request out; "
          "answer ignored (a manager must answer each request exactly once)",
          c.slot);
    return;
  }
  FaultRecord& r = table_[c.slot];
  // The answer came through the queue: the request is the loop's alone.
  r.direct.store(kDirectIdle, std::memory_order_relaxed);
  if (r.stale || c.resolution == Resolution::kRetry) {
    // The backing changed while this request was out: ask the new one.
    r.stale = false;
    Request(c.slot);
    return;
  }
  const uint64_t failed_before = failed_.load(std::memory_order_relaxed);
  Install(r, c);
  if (r.faulted) latency_.Record(NowNs() - r.started_ns);
  NotifyWatchers(r, failed_.load(std::memory_order_relaxed) == failed_before
                        ? absl::OkStatus()
                        : (c.error.ok() ? absl::InternalError(
                                              "the page could not be installed")
                                        : c.error));
  table_.End(c.slot);
}

bool FaultService::Complete(uint32_t slot, const absl::Status& status) {
  std::optional<FaultPlan> plan =
      table_.TakePlan(slot, FaultPlan::Step::kReading, 0, -1, 0);
  if (!plan) return false;
  if (!status.ok()) {
    cq_->Post(OutcomeCompletion(
        plan->request, Resolution::kFailed,
        absl::UnavailableError(absl::StrFormat(
            "the one-sided READ of 0x%x from rank %d failed: %s",
            plan->remote_addr, plan->peer, status.message()))));
    return true;
  }
  InstallDirect(DataCompletion(plan->request, nullptr, plan->write_protect));
  return true;
}

void FaultService::Install(FaultRecord& r, const PageCompletion& c) {
  switch (c.resolution) {
    case Resolution::kData:
    case Resolution::kZero: {
      if (r.upgrade) {
        // The page is mapped; new contents cannot replace it in place.
        FailPage(r.page,
                 absl::InternalError(
                     "the manager answered a write upgrade with page data; "
                     "it must answer kWritable or fail"),
                 "failed");
        return;
      }
      // Counted before the copy wakes the page's threads (InstallDirect
      // counts too, from another thread).
      installed_.fetch_add(1, std::memory_order_relaxed);
      const PageInstaller::Copied copied =
          c.resolution == Resolution::kZero
              ? installer_.Zero(r.page)
              : installer_.Copy(r.page, c.data != nullptr ? c.data : Landing(c.slot),
                                c.write_protect);
      if (copied == PageInstaller::Copied::kFailed) {
        installed_.fetch_sub(1, std::memory_order_relaxed);
        FailPage(r.page,
                 absl::InternalError(absl::StrFormat(
                     "installing the page failed: %s", strerror(errno))),
                 "failed");
      }
      return;
    }
    case Resolution::kWritable:
      if (!Resident(PageIndex(r.page))) {
        // Dropped while the upgrade waited: the writer faults afresh.
        installer_.Wake(r.page);
        return;
      }
      if (!installer_.AllowWrites(r.page)) {
        FailPage(r.page,
                 absl::InternalError(absl::StrFormat(
                     "lifting write protection failed: %s", strerror(errno))),
                 "failed");
        return;
      }
      Bump(upgrades_);
      return;
    case Resolution::kNoRegion:
    case Resolution::kFailed:
      FailPage(r.page, c.error, ResolutionName(c.resolution));
      return;
    case Resolution::kRetry:
      return;  // handled in Answer()
  }
}

void FaultService::FailPage(uintptr_t page, const absl::Status& why,
                            const char* outcome) {
  // Every fault on a dead home's pages fails the same way: the first is
  // logged in full, then the count at each doubling (and at Stop).
  const uint64_t n = failure_log_.Count(why.message());
  if (n == 1) {
    Error("fault at 0x%x (global offset 0x%x) cannot be resolved (%s): %s; "
          "the faulting thread gets SIGBUS",
          page, page - base_, outcome, why.message());
  } else if (n > 1) {
    Error("%d faults failed so far for this reason, the latest at global "
          "offset 0x%x: %s",
          n, page - base_, why.message());
  }
  Bump(failed_);
  if (!installer_.MapSigbus(page)) {
    Error("fault at 0x%x: mapping the SIGBUS page failed: %s", page,
          strerror(errno));
  }
}

void FaultService::RunDeferred() {
  // Faults that found the table full, oldest first, as long as slots last.
  size_t taken = 0;
  while (taken < deferred_.size() && !table_.full()) {
    HandleFault(deferred_[taken++]);
    --faults_;  // counted when first read
  }
  deferred_.erase(deferred_.begin(), deferred_.begin() + taken);
  taken = 0;
  while (taken < deferred_prefetches_.size() && !table_.full()) {
    auto& [offset, done] = deferred_prefetches_[taken++];
    StartPrefetch(offset, std::move(done));
  }
  deferred_prefetches_.erase(deferred_prefetches_.begin(),
                             deferred_prefetches_.begin() + taken);
}

void FaultService::AbandonPending() {
  {
    // From now on nothing is installed directly.
    absl::MutexLock lock(&install_mutex_);
    direct_stopped_ = true;
  }
  for (uint32_t slot = 0; slot < kMaxPendingPages; ++slot) {
    FaultRecord& r = table_[slot];
    if (!r.in_use) continue;
    if (r.direct.load(std::memory_order_acquire) == kDirectInstalled) {
      FinishDirect(slot);  // resolved: its threads are awake
      continue;
    }
    r.direct.store(kDirectIdle, std::memory_order_relaxed);
    absl::Status why = absl::UnavailableError(
        "the fault service stopped while the page's manager had not answered");
    FailPage(r.page, why, "abandoned");
    NotifyWatchers(r, why);
    table_.End(slot);
  }
  for (const uffd_msg& msg : deferred_) {
    FailPage(PageDown(msg.arg.pagefault.address),
             absl::UnavailableError("the fault service stopped"), "abandoned");
  }
  deferred_.clear();
  for (auto& [offset, done] : deferred_prefetches_) {
    done(absl::UnavailableError("the fault service stopped"));
  }
  deferred_prefetches_.clear();
}

}  // namespace pagewire
