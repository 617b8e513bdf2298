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

constexpr uint32_t kNoSlot = UINT32_MAX;

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
  for (CompletionSource* source : s->sources_) source->AttachService(s);
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
      slots_(kMaxPendingPages),
      sources_(config.sources),
      spin_polls_(config.spin_polls),
      idle_polls_(config.idle_polls),
      direct_(new DirectSlot[kMaxPendingPages]) {
  for (uint32_t i = 0; i < kMaxPendingPages; ++i) {
    slots_[i].next_free = i + 1 < kMaxPendingPages ? i + 1 : kNoSlot;
  }
  // Everything the loop touches is sized now, so it never allocates while
  // faults are flowing (the deferred queue only grows past a full table).
  pending_index_.reserve(kMaxPendingPages);
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
  // No source installs from its own thread any more; what it completes from
  // now on reaches the loop, which is still running, through the queue.
  for (CompletionSource* source : sources_) source->AttachService(nullptr);
  {
    absl::MutexLock lock(&commands_mutex_);
    stop_requested_ = true;
  }
  uint64_t one = 1;
  ssize_t n = ::write(control_fd_, &one, sizeof(one));
  (void)n;
  loop_.join();
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
    if (SpinForCompletions() && AwaitsPolledCompletions()) {
      // Pages arrived while polling and are installed, and more are on
      // their way: look at every other source without sleeping.
      n = ::poll(fds.data(), fds.size(), 0);
    } else if ((n = PollWhileIdle(fds)) != 0) {
      // Work arrived while the loop polled: handled below, no sleep.
    } else {
      // Infinite wait: the loop sleeps until a fault, an answer or a
      // command arrives. Nothing here is ever timed.
      for (CompletionSource* source : sources_) source->BeforeSleep();
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
      if (fds[i].revents & POLLIN) sources_[i - kFixed]->Drain(*cq_);
    }
    DrainCompletions(fds[1].revents & POLLIN);
    RunReadAheads();
    for (CompletionSource* source : sources_) source->AfterBurst();
    if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
      Error("fault loop: the userfaultfd reported an error; the fault "
            "service stops");
      AbandonPending();
      return;
    }
  }
}

bool FaultService::AwaitsPolledCompletions() const {
  for (CompletionSource* source : sources_) {
    if (source->AwaitsPolledCompletions()) return true;
  }
  return false;
}

bool FaultService::SpinForCompletions() {
  if (spin_polls_ == 0 || !AwaitsPolledCompletions()) return false;
  // Look at the userfaultfd now and then, so a new fault is not held up by
  // a long spin: one system call per kFaultCheckEvery polls.
  constexpr uint32_t kFaultCheckEvery = 64;
  pollfd faults = {uffd_.fd(), POLLIN, 0};
  uint32_t polls = 0;
  bool found = false;
  while (polls < spin_polls_ && !found) {
    ++polls;
    for (CompletionSource* source : sources_) {
      if (source->Poll(*cq_)) found = true;
    }
    if (found) break;
    if (polls % kFaultCheckEvery == 0) {
      if (::poll(&faults, 1, 0) > 0 || !AwaitsPolledCompletions()) break;
    }
  }
  Bump(spin_total_polls_, polls);
  if (!found) {
    Bump(spin_misses_);
    return false;
  }
  Bump(spin_hits_);
  DrainCompletions(false);
  for (CompletionSource* source : sources_) source->AfterBurst();
  return true;
}

int FaultService::PollWhileIdle(std::vector<pollfd>& fds) {
  // With READs outstanding the spin above has polled their queue already,
  // and an unarmed queue's completions would not show here.
  if (idle_polls_ == 0 || AwaitsPolledCompletions()) return 0;
  // Prepared as for a sleep, so every source signals its fd for new work
  // (verbs: a post by another thread rings the bell, or the queue is
  // armed); the polls then see what a sleep would have been woken by.
  for (CompletionSource* source : sources_) source->BeforeSleep();
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
    for (CompletionSource* source : sources_) source->BeginRequests();
    for (size_t i = 0; i < count; ++i) HandleFault(msgs[i]);
    RunReadAheads();
    for (CompletionSource* source : sources_) source->EndRequests();
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
    Wake(page);
    return;
  }
  if (auto it = pending_index_.find(page); it != pending_index_.end()) {
    // Coalesce: the outstanding request's installation wakes every thread
    // blocked on this page. A writer that finds the page write-protected
    // after that faults again as an upgrade.
    slots_[it->second].faulted = true;
    slots_[it->second].joined = true;
    Bump(coalesced_);
    WantPrompt(it->second);
    return;
  }
  const uint32_t slot = StartRequest(
      page,
      (flags & UFFD_PAGEFAULT_FLAG_WRITE) ? Access::kWrite : Access::kRead,
      upgrade);
  if (slot == kNoSlot) {
    deferred_.push_back(msg);
    return;
  }
  slots_[slot].faulted = true;
  Request(slot);
}

uint32_t FaultService::StartRequest(uintptr_t page, Access access,
                                    bool upgrade) {
  if (free_head_ == kNoSlot) return kNoSlot;
  const uint32_t slot = free_head_;
  PendingPage& p = slots_[slot];
  free_head_ = p.next_free;
  p.page = page;
  p.access = access;
  p.upgrade = upgrade;
  p.in_use = true;
  p.stale = false;
  p.faulted = false;
  p.joined = false;
  p.started_ns = NowNs();
  pending_index_.emplace(page, slot);
  if (++outstanding_ > max_outstanding_.load(std::memory_order_relaxed)) {
    max_outstanding_.store(outstanding_, std::memory_order_relaxed);
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
    if (Resident(PageIndex(page)) || pending_index_.contains(page)) continue;
    const uint32_t slot = StartRequest(page, Access::kRead, false);
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
  if (auto it = pending_index_.find(page); it != pending_index_.end()) {
    slots_[it->second].watchers.push_back(std::move(done));
    WantPrompt(it->second);
    return;
  }
  const uint32_t slot = StartRequest(page, Access::kRead, false);
  if (slot == kNoSlot) {
    deferred_prefetches_.emplace_back(offset, std::move(done));
    return;
  }
  slots_[slot].watchers.push_back(std::move(done));
  Request(slot);
}

void FaultService::NotifyWatchers(PendingPage& p, const absl::Status& status) {
  if (p.watchers.empty()) return;
  std::vector<PrefetchDone> watchers;
  watchers.swap(p.watchers);
  for (PrefetchDone& w : watchers) w(status);
}

void FaultService::Request(uint32_t slot) {
  PendingPage& p = slots_[slot];
  // Asked again after the page was dropped: no longer an upgrade of an
  // installed page but a write to a missing one (managers may read a page
  // they upgrade, and it must be there).
  if (p.upgrade && !Resident(PageIndex(p.page))) p.upgrade = false;
  PageRequest request;
  request.offset = p.page - base_;
  request.access = p.access;
  request.upgrade = p.upgrade;
  request.prefetch = !p.faulted;
  request.slot = slot;
  request.landing = Landing(slot);
  request.completion_queue = cq_.get();
  if (!p.upgrade) {
    // Page data may be installed where it arrives (an upgrade's answer is
    // never data). Release: the installer reads `page` after the state.
    direct_[slot].page = p.page;
    direct_[slot].prompt.store(!p.watchers.empty(), std::memory_order_relaxed);
    direct_[slot].state.store(kDirectArmed, std::memory_order_release);
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
    DirectSlot& d = direct_[c.slot];
    absl::MutexLock lock(&install_mutex_);
    if (!direct_stopped_ &&
        d.state.load(std::memory_order_acquire) == kDirectArmed) {
      uffdio_copy copy{};
      copy.dst = d.page;
      copy.src = reinterpret_cast<uintptr_t>(c.data != nullptr ? c.data
                                                               : Landing(c.slot));
      copy.len = kPageSize;
      copy.mode = c.write_protect ? UFFDIO_COPY_MODE_WP : 0;
      // Counted before the copy wakes the page's threads, so that a thread
      // that resumed finds itself counted.
      installed_.fetch_add(1, std::memory_order_relaxed);
      int rc;
      do {
        // EAGAIN: the address space is changing (mremap, fork): retry.
        rc = ::ioctl(uffd_.fd(), UFFDIO_COPY, &copy);
      } while (rc != 0 && errno == EAGAIN);
      if (rc == 0 || errno == EEXIST) {
        if (rc != 0) Wake(d.page);  // installed behind our back: just wake
        SetResident(PageIndex(d.page), true);
        d.installed_ns = NowNs();
        d.state.store(kDirectInstalled, std::memory_order_seq_cst);
        c.installed = true;
      } else {
        // The loop tries again and reports the failure.
        installed_.fetch_sub(1, std::memory_order_relaxed);
      }
    }
  }
  if (c.installed && !direct_[c.slot].prompt.load(std::memory_order_seq_cst) &&
      !slots_wanted_.load(std::memory_order_seq_cst)) {
    // Nothing waits for the bookkeeping: it rides on the loop's next
    // wake-up, which leaves the CPU to the thread that just resumed.
    cq_->PostQuietly(std::move(c));
    return;
  }
  cq_->Post(std::move(c));
}

void FaultService::WantPrompt(uint32_t slot) {
  direct_[slot].prompt.store(true, std::memory_order_seq_cst);
  if (direct_[slot].state.load(std::memory_order_seq_cst) == kDirectInstalled) {
    FinishDirect(slot);
  }
}

void FaultService::WantSlots() {
  slots_wanted_.store(true, std::memory_order_seq_cst);
  for (uint32_t slot = 0; slot < kMaxPendingPages; ++slot) {
    if (slots_[slot].in_use &&
        direct_[slot].state.load(std::memory_order_seq_cst) ==
            kDirectInstalled) {
      FinishDirect(slot);
    }
  }
}

bool FaultService::DisarmLocked(uint32_t slot) {
  uint32_t armed = kDirectArmed;
  if (direct_[slot].state.compare_exchange_strong(armed, kDirectIdle,
                                                  std::memory_order_acq_rel)) {
    return true;
  }
  return armed != kDirectInstalled;
}

void FaultService::CatchUpDirect(uintptr_t page) {
  auto it = pending_index_.find(page);
  if (it != pending_index_.end() &&
      direct_[it->second].state.load(std::memory_order_acquire) ==
          kDirectInstalled) {
    FinishDirect(it->second);
  }
}

void FaultService::FinishDirect(uint32_t slot) {
  PendingPage& p = slots_[slot];
  DirectSlot& d = direct_[slot];
  d.state.store(kDirectIdle, std::memory_order_relaxed);
  // The page may have been dropped since it was installed (the drop saw it
  // installed and removed it): nothing to ask again, its threads read it
  // before the drop.
  p.stale = false;
  if (p.faulted) latency_.Record(d.installed_ns - p.started_ns);
  if (p.joined) Wake(p.page);
  NotifyWatchers(p, absl::OkStatus());
  pending_index_.erase(p.page);
  ReleaseSlot(slot);
}

void FaultService::DrainCompletions(bool bell_rang) {
  // Completing can ask again (stale answers, deferred faults), and managers
  // that answer inline post from this thread without ringing: drain until
  // nothing is left, or such answers would wait for an unrelated wake-up.
  do {
    cq_->Drain(drained_, bell_rang);
    bell_rang = false;
    for (const PageCompletion& c : drained_) Complete(c);
    const bool waiting = !deferred_.empty() || !deferred_prefetches_.empty();
    if (waiting) WantSlots();
    if (waiting && free_head_ != kNoSlot) RunDeferred();
    if (deferred_.empty() && deferred_prefetches_.empty()) {
      slots_wanted_.store(false, std::memory_order_relaxed);
    }
  } while (!drained_.empty());
}

void FaultService::Complete(const PageCompletion& c) {
  if (c.slot < kMaxPendingPages && slots_[c.slot].in_use &&
      direct_[c.slot].state.load(std::memory_order_acquire) ==
          kDirectInstalled) {
    FinishDirect(c.slot);
    if (c.installed) return;
    // Not the direct answer: a second answer to one request (below).
  }
  if (c.installed) return;  // finished already, when a fault met the page
  if (c.slot >= kMaxPendingPages || !slots_[c.slot].in_use) {
    Error("fault loop: a manager answered slot %u, which has no request out; "
          "answer ignored (a manager must answer each request exactly once)",
          c.slot);
    return;
  }
  PendingPage& p = slots_[c.slot];
  // The answer came through the queue: the request is the loop's alone.
  direct_[c.slot].state.store(kDirectIdle, std::memory_order_relaxed);
  if (p.stale || c.resolution == Resolution::kRetry) {
    // The backing changed while this request was out: ask the new one.
    p.stale = false;
    Request(c.slot);
    return;
  }
  const uint64_t failed_before = failed_.load(std::memory_order_relaxed);
  Install(p, c);
  if (p.faulted) latency_.Record(NowNs() - p.started_ns);
  NotifyWatchers(p, failed_.load(std::memory_order_relaxed) == failed_before
                        ? absl::OkStatus()
                        : (c.error.ok() ? absl::InternalError(
                                              "the page could not be installed")
                                        : c.error));
  pending_index_.erase(p.page);
  ReleaseSlot(c.slot);
}

void FaultService::Install(PendingPage& p, const PageCompletion& c) {
  const uint64_t index = PageIndex(p.page);
  switch (c.resolution) {
    case Resolution::kData:
    case Resolution::kZero: {
      if (p.upgrade) {
        // The page is mapped; new contents cannot replace it in place.
        FailPage(p.page,
                 absl::InternalError(
                     "the manager answered a write upgrade with page data; "
                     "it must answer kWritable or fail"),
                 "failed");
        return;
      }
      // Counted before the copy wakes the page's threads (InstallDirect
      // counts too, from another thread).
      installed_.fetch_add(1, std::memory_order_relaxed);
      int rc;
      for (;;) {
        if (c.resolution == Resolution::kData) {
          uffdio_copy copy{};
          copy.dst = p.page;
          copy.src = reinterpret_cast<uintptr_t>(
              c.data != nullptr ? c.data : Landing(c.slot));
          copy.len = kPageSize;
          copy.mode = c.write_protect ? UFFDIO_COPY_MODE_WP : 0;
          rc = ::ioctl(uffd_.fd(), UFFDIO_COPY, &copy);
        } else {
          uffdio_zeropage zero{};
          zero.range.start = p.page;
          zero.range.len = kPageSize;
          rc = ::ioctl(uffd_.fd(), UFFDIO_ZEROPAGE, &zero);
        }
        // EAGAIN: the address space is changing under a concurrent mremap or
        // fork; the copy must simply be retried.
        if (rc == 0 || errno != EAGAIN) break;
      }
      if (rc != 0 && errno == EEXIST) {
        Wake(p.page);  // already there (installed behind our back): just wake
      } else if (rc != 0) {
        installed_.fetch_sub(1, std::memory_order_relaxed);
        FailPage(p.page,
                 absl::InternalError(absl::StrFormat(
                     "installing the page failed: %s", strerror(errno))),
                 "failed");
        return;
      }
      SetResident(index, true);
      return;
    }
    case Resolution::kWritable: {
      if (!Resident(index)) {
        // Dropped while the upgrade waited: the writer faults afresh.
        Wake(p.page);
        return;
      }
      uffdio_writeprotect wp{};
      wp.range.start = p.page;
      wp.range.len = kPageSize;
      wp.mode = 0;  // clear protection and wake the writers
      if (::ioctl(uffd_.fd(), UFFDIO_WRITEPROTECT, &wp) != 0) {
        FailPage(p.page,
                 absl::InternalError(absl::StrFormat(
                     "lifting write protection failed: %s", strerror(errno))),
                 "failed");
        return;
      }
      Bump(upgrades_);
      return;
    }
    case Resolution::kNoRegion:
    case Resolution::kFailed:
      FailPage(p.page, c.error, ResolutionName(c.resolution));
      return;
    case Resolution::kRetry:
      return;  // handled in Complete()
  }
}

void FaultService::FailPage(uintptr_t page, const absl::Status& why,
                            const char* outcome) {
  Error("fault at 0x%x (global offset 0x%x) cannot be resolved (%s): %s; the "
        "faulting thread gets SIGBUS",
        page, page - base_, outcome, why.message());
  Bump(failed_);
  // A shared mapping of an empty file: any access raises SIGBUS (BUS_ADRERR)
  // at this address, in user and kernel mode alike. It stays until the
  // backing of the page changes.
  void* at = ::mmap(reinterpret_cast<void*>(page), kPageSize,
                    PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                    unbacked_fd_, 0);
  if (at == MAP_FAILED) {
    Error("fault at 0x%x: mapping the SIGBUS page failed: %s", page,
          strerror(errno));
  } else {
    unbacked_pages_.insert(page);
    SetResident(PageIndex(page), false);
  }
  Wake(page);
}

void FaultService::Wake(uintptr_t page) {
  uffdio_range range{page, kPageSize};
  if (::ioctl(uffd_.fd(), UFFDIO_WAKE, &range) != 0) {
    Error("fault at 0x%x: wake failed: %s", page, strerror(errno));
  }
}

void FaultService::ReleaseSlot(uint32_t slot) {
  PendingPage& p = slots_[slot];
  p.in_use = false;
  p.next_free = free_head_;
  free_head_ = slot;
  --outstanding_;
}

void FaultService::RunDeferred() {
  // Faults that found the table full, oldest first, as long as slots last.
  size_t taken = 0;
  while (taken < deferred_.size() && free_head_ != kNoSlot) {
    HandleFault(deferred_[taken++]);
    --faults_;  // counted when first read
  }
  deferred_.erase(deferred_.begin(), deferred_.begin() + taken);
  taken = 0;
  while (taken < deferred_prefetches_.size() && free_head_ != kNoSlot) {
    auto& [offset, done] = deferred_prefetches_[taken++];
    StartPrefetch(offset, std::move(done));
  }
  deferred_prefetches_.erase(deferred_prefetches_.begin(),
                             deferred_prefetches_.begin() + taken);
}

void FaultService::BackingChanged(uint64_t offset, uint64_t size) {
  Submit(Command{Command::kChangeBacking, offset, size, nullptr, nullptr,
                 nullptr});
}

void FaultService::Invalidate(uint64_t offset, uint64_t size,
                              PagePredicate keep) {
  Submit(Command{Command::kInvalidate, offset, size, &keep, nullptr, nullptr});
}

absl::Status FaultService::WriteProtect(uint64_t offset, uint64_t size,
                                        bool protect) {
  absl::Status result;
  Command c{Command::kWriteProtect, offset, size, nullptr, &result, nullptr};
  c.protect = protect;
  Submit(std::move(c));
  return result;
}

absl::Status FaultService::SnapshotAndProtect(
    const std::vector<uint64_t>& offsets, const std::vector<char*>& buffers,
    std::vector<bool>& resident) {
  absl::Status result;
  resident.assign(offsets.size(), false);
  Command c{Command::kSnapshot, 0, 0, nullptr, &result, nullptr};
  c.pages = offsets;
  c.buffers = &buffers;
  c.resident = &resident;
  Submit(std::move(c));
  return result;
}

bool FaultService::RecallPage(uint64_t offset, char* buffer, bool drop) {
  std::vector<char*> buffers{buffer};
  std::vector<bool> resident;
  Command c{Command::kRecall, offset, 0, nullptr, nullptr, nullptr};
  c.protect = drop;  // kRecall: drop the page after the copy
  c.buffers = &buffers;
  c.resident = &resident;
  Submit(std::move(c));
  return !resident.empty() && resident[0];
}

void FaultService::InvalidatePagesAsync(std::vector<uint64_t> offsets,
                                        Done done, PagePredicate keep,
                                        std::vector<const char*> contents,
                                        PagePredicate may_replace) {
  Command c{Command::kInvalidatePages, 0, 0, nullptr, nullptr, nullptr};
  c.pages = std::move(offsets);
  c.pages_done = std::move(done);
  c.pages_keep = std::move(keep);
  c.pages_contents = std::move(contents);
  c.pages_may_replace = std::move(may_replace);
  if (std::this_thread::get_id() == loop_id_) {
    RunCommand(c);
    return;
  }
  if (TryRunInline(c)) return;
  {
    absl::MutexLock lock(&commands_mutex_);
    if (stop_requested_) {
      c.pages_done();
      return;
    }
    commands_.push_back(std::move(c));
  }
  uint64_t one = 1;
  ssize_t n = ::write(control_fd_, &one, sizeof(one));
  (void)n;
}

void FaultService::Prefetch(uint64_t offset, PrefetchDone done) {
  Command c{Command::kPrefetch, offset, kPageSize, nullptr, nullptr, nullptr,
            std::move(done)};
  if (std::this_thread::get_id() == loop_id_) {
    RunCommand(c);
    return;
  }
  {
    absl::MutexLock lock(&commands_mutex_);
    if (stop_requested_) {
      c.prefetch_done(absl::UnavailableError("the fault service stopped"));
      return;
    }
    commands_.push_back(std::move(c));
  }
  uint64_t one = 1;
  ssize_t n = ::write(control_fd_, &one, sizeof(one));
  (void)n;
}

absl::Status FaultService::Populate(uint64_t offset, uint64_t size,
                                    PagePredicate which) {
  absl::Status result;
  Submit(Command{Command::kPopulate, offset, size, which ? &which : nullptr,
                 &result, nullptr});
  return result;
}

bool FaultService::TryRunInline(const Command& c) {
  switch (c.kind) {
    case Command::kWriteProtect:
    case Command::kSnapshot:
    case Command::kRecall:
    case Command::kInvalidatePages:
      break;  // page-table work on installed pages, no requests
    default:
      return false;
  }
  if (!loop_mutex_.TryLock()) return false;  // the loop is awake
  bool run;
  {
    // Only with nothing queued before it, so one thread's commands keep
    // their order.
    absl::MutexLock lock(&commands_mutex_);
    run = !stop_requested_ && commands_.empty();
  }
  if (run) RunCommand(c);
  loop_mutex_.Unlock();
  return run;
}

void FaultService::Submit(Command c) {
  if (std::this_thread::get_id() == loop_id_) {
    RunCommand(c);
    return;
  }
  if (TryRunInline(c)) return;
  absl::Notification done;
  c.done = &done;
  {
    absl::MutexLock lock(&commands_mutex_);
    if (stop_requested_) {
      if (c.result) *c.result = absl::UnavailableError("the fault service stopped");
      return;
    }
    commands_.push_back(c);
  }
  uint64_t one = 1;
  ssize_t n = ::write(control_fd_, &one, sizeof(one));
  (void)n;
  // Not a fault path: the loop never blocks, so it runs the command soon.
  done.WaitForNotification();
}

bool FaultService::RunCommands() {
  std::vector<Command> commands;
  bool stop;
  {
    absl::MutexLock lock(&commands_mutex_);
    commands.swap(commands_);
    stop = stop_requested_;
  }
  for (Command& c : commands) {
    RunCommand(c);
    if (c.done != nullptr) c.done->Notify();
  }
  return stop;
}

void FaultService::RunCommand(const Command& c) {
  switch (c.kind) {
    case Command::kChangeBacking:
      ChangeBacking(c.offset, c.size, nullptr);
      return;
    case Command::kInvalidate:
      ChangeBacking(c.offset, c.size, c.keep);
      return;
    case Command::kPopulate:
      *c.result = PopulateRange(c.offset, c.size, c.keep);
      return;
    case Command::kPrefetch:
      StartPrefetch(c.offset, c.prefetch_done);
      return;
    case Command::kWriteProtect:
      *c.result = ProtectRange(c.offset, c.size, c.protect);
      return;
    case Command::kSnapshot:
      for (size_t i = 0; i < c.pages.size(); ++i) {
        const uint64_t off = PageDown(c.pages[i]);
        if (off >= size_ || !Resident(off / kPageSize)) continue;
        absl::Status s = ProtectRange(off, kPageSize, true);
        if (!s.ok()) {
          *c.result = s;
          return;
        }
        // The loop thread reads only installed pages: never a fault here.
        std::memcpy((*c.buffers)[i], reinterpret_cast<const void*>(base_ + off),
                    kPageSize);
        (*c.resident)[i] = true;
      }
      return;
    case Command::kRecall: {
      const uint64_t off = PageDown(c.offset);
      if (off >= size_) return;
      const uintptr_t page = base_ + off;
      // Nothing is installed directly meanwhile, and what was is resident.
      absl::MutexLock lock(&install_mutex_);
      const bool resident = Resident(off / kPageSize);
      c.resident->push_back(resident);
      if (resident) {
        absl::Status s = ProtectRange(off, kPageSize, true);
        if (!s.ok()) {
          Error("recalling the page at 0x%x: %s", page, s.message());
        }
        if ((*c.buffers)[0] != nullptr) {
          std::memcpy((*c.buffers)[0], reinterpret_cast<const void*>(page),
                      kPageSize);
        }
      }
      if (c.protect) {
        DropPage(page);  // also marks a request that is out stale
      } else if (auto it = pending_index_.find(page);
                 it != pending_index_.end() && DisarmLocked(it->second)) {
        slots_[it->second].stale = true;  // asked again when it completes
      }
      return;
    }
    case Command::kInvalidatePages: {
      {
        absl::MutexLock lock(&install_mutex_);
        std::vector<uintptr_t> drop;
        std::vector<std::pair<uintptr_t, const char*>> replace;
        for (size_t i = 0; i < c.pages.size(); ++i) {
          const uint64_t off = c.pages[i];
          if (off >= size_ || (c.pages_keep && c.pages_keep(PageDown(off)))) {
            continue;
          }
          const uintptr_t page = base_ + PageDown(off);
          if (i < c.pages_contents.size() && c.pages_contents[i] != nullptr &&
              (!c.pages_may_replace || c.pages_may_replace(PageDown(off)))) {
            // A copy that already holds these bytes stays as it is (a page
            // its home reports every epoch but wrote in every other one):
            // write-protected and not twinned, nothing can change it now.
            auto pending = pending_index_.find(page);
            if (Resident(PageIndex(page)) &&
                (pending == pending_index_.end() ||  // or installed directly
                 direct_[pending->second].state.load(std::memory_order_acquire) ==
                     kDirectInstalled) &&
                std::memcmp(reinterpret_cast<const void*>(page),
                            c.pages_contents[i], kPageSize) == 0) {
              Bump(replaced_);
              continue;
            }
            replace.emplace_back(page, c.pages_contents[i]);
          }
          drop.push_back(page);
        }
        DropPages(drop);
        for (const auto& [page, contents] : replace) ReplaceDropped(page, contents);
      }
      if (c.pages_done) c.pages_done();
      return;
    }
  }
}

absl::Status FaultService::PopulateRange(uint64_t offset, uint64_t size,
                                         const PagePredicate* which) {
  if (!PageAligned(offset) || !PageAligned(size) || offset > size_ ||
      size > size_ - offset) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "populate [0x%x, 0x%x): not page-aligned or outside the global range",
        offset, offset + size));
  }
  // Zeros to copy from: the source of an untouched private mapping reads as
  // the shared zero page, so this costs no memory.
  constexpr uint64_t kChunk = uint64_t{2} << 20;
  static const char* const zeros = static_cast<const char*>(
      ::mmap(nullptr, kChunk, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  auto wanted = [&](uint64_t off) {
    return !Resident(PageIndex(base_ + off)) &&
           (which == nullptr || (*which)(off));
  };
  uint64_t off = offset;
  while (off < offset + size) {
    if (!wanted(off)) {
      off += kPageSize;
      continue;
    }
    // The longest run of wanted pages, at most one chunk.
    uint64_t run = kPageSize;
    while (off + run < offset + size && run < kChunk && wanted(off + run)) {
      run += kPageSize;
    }
    uffdio_copy copy{};
    copy.dst = base_ + off;
    copy.src = reinterpret_cast<uintptr_t>(zeros);
    copy.len = run;
    int rc = ::ioctl(uffd_.fd(), UFFDIO_COPY, &copy);
    uint64_t done = copy.copy > 0 ? static_cast<uint64_t>(copy.copy) : 0;
    for (uint64_t p = 0; p < done; p += kPageSize) {
      SetResident(PageIndex(base_ + off + p), true);
    }
    if (rc != 0 && errno == EEXIST) {
      // A page in the run was installed meanwhile: skip it.
      SetResident(PageIndex(base_ + off + done), true);
      off += done + kPageSize;
      continue;
    }
    if (rc != 0 && errno != EAGAIN) {
      return absl::InternalError(absl::StrFormat(
          "populating [0x%x, 0x%x) failed: %s", base_ + off, base_ + off + run,
          strerror(errno)));
    }
    off += done;
  }
  return absl::OkStatus();
}

absl::Status FaultService::ProtectRange(uint64_t offset, uint64_t size,
                                        bool protect) {
  if (!PageAligned(offset) || !PageAligned(size) || offset > size_ ||
      size > size_ - offset) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "write-protect [0x%x, 0x%x): not page-aligned or outside the global "
        "range",
        offset, offset + size));
  }
  // Runs of installed pages: UFFDIO_WRITEPROTECT wants populated ranges.
  uint64_t off = offset;
  while (off < offset + size) {
    if (!Resident(PageIndex(base_ + off))) {
      off += kPageSize;
      continue;
    }
    uint64_t run = kPageSize;
    while (off + run < offset + size && Resident(PageIndex(base_ + off + run))) {
      run += kPageSize;
    }
    uffdio_writeprotect wp{};
    wp.range.start = base_ + off;
    wp.range.len = run;
    wp.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
    if (::ioctl(uffd_.fd(), UFFDIO_WRITEPROTECT, &wp) != 0) {
      return absl::InternalError(absl::StrFormat(
          "write-protecting [0x%x, 0x%x) failed: %s", base_ + off,
          base_ + off + run, strerror(errno)));
    }
    off += run;
  }
  return absl::OkStatus();
}

void FaultService::ReplaceDropped(uintptr_t page, const char* contents) {
  uffdio_copy copy{};
  copy.dst = page;
  copy.src = reinterpret_cast<uintptr_t>(contents);
  copy.len = kPageSize;
  copy.mode = UFFDIO_COPY_MODE_WP;  // a copy: its first write is tracked
  int rc;
  for (int attempt = 0;; ++attempt) {
    // EAGAIN: the address space is changing (mremap, fork): retry.
    do {
      rc = ::ioctl(uffd_.fd(), UFFDIO_COPY, &copy);
    } while (rc != 0 && errno == EAGAIN);
    // EEXIST: mapped though not marked resident (never expected): drop it
    // for real and try once more.
    if (rc == 0 || errno != EEXIST || attempt > 0) break;
    ::madvise(reinterpret_cast<void*>(page), kPageSize, MADV_DONTNEED);
  }
  if (rc != 0) {
    // Left absent: the next access faults and fetches it, as if the page
    // had only been dropped.
    Warning("installing a pushed copy at 0x%x: %s; it is fetched on demand",
            page, strerror(errno));
    return;
  }
  SetResident(PageIndex(page), true);
  Bump(replaced_);
}

absl::Status FaultService::SetDropAudit(DropAudit* audit) {
  if (audit != nullptr && pagemap_fd_ < 0) {
    pagemap_fd_ = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pagemap_fd_ < 0) {
      return absl::UnavailableError(absl::StrFormat(
          "the drop audit reads /proc/self/pagemap, which cannot be opened: "
          "%s; run without PAGEWIRE_CHECK",
          strerror(errno)));
    }
  }
  drop_audit_.store(audit, std::memory_order_release);
  return absl::OkStatus();
}

void FaultService::AuditDrop(uintptr_t page) {
  DropAudit* audit = drop_audit_.load(std::memory_order_acquire);
  if (audit == nullptr) return;
  // pagemap: bit 63 present, bit 57 userfaultfd write-protected.
  uint64_t entry = 0;
  const off_t at = static_cast<off_t>(page / kPageSize * sizeof(entry));
  if (::pread(pagemap_fd_, &entry, sizeof(entry), at) != sizeof(entry)) {
    entry = 0;
  }
  const bool present = entry >> 63 & 1;
  audit->BeforeDrop(page - base_, !present || (entry >> 57 & 1) != 0);
}

void FaultService::DropPages(absl::Span<const uintptr_t> pages) {
  std::vector<iovec> runs;
  for (uintptr_t page : pages) {
    const uint64_t i = PageIndex(page);
    if (Resident(i)) {
      AuditDrop(page);
      SetResident(i, false);
      if (!runs.empty() && static_cast<char*>(runs.back().iov_base) +
                                   runs.back().iov_len ==
                               reinterpret_cast<char*>(page)) {
        runs.back().iov_len += kPageSize;
      } else {
        runs.push_back(iovec{reinterpret_cast<void*>(page), kPageSize});
      }
      Bump(evicted_);
    }
    if (auto it = pending_index_.find(page); it != pending_index_.end()) {
      // Installed directly already: dropped above, nothing to ask again.
      // Otherwise its answer, when it comes, is discarded and asked again.
      if (DisarmLocked(it->second)) slots_[it->second].stale = true;
    }
  }
  // One madvise per run. Not process_madvise, which takes a whole vector
  // in one call (one TLB shootdown): the histogram test then lost a fault
  // now and then on Linux 6.18 (3 hangs in ~140 runs, none in 140 with
  // madvise), threads left asleep in handle_userfault with no event read.
  for (const iovec& run : runs) ::madvise(run.iov_base, run.iov_len, MADV_DONTNEED);
}

void FaultService::DropPage(uintptr_t page) {
  DropPages(absl::MakeConstSpan(&page, 1));
}

void FaultService::ChangeBacking(uint64_t offset, uint64_t size,
                                 const PagePredicate* keep) {
  if (offset >= size_) return;
  size = std::min(size, size_ - offset);
  const uintptr_t start = base_ + PageDown(offset);
  const uintptr_t end = base_ + PageUp(offset + size);

  // Pages that were answered SIGBUS get ordinary registered memory back.
  for (auto it = unbacked_pages_.begin(); it != unbacked_pages_.end();) {
    uintptr_t page = *it;
    if (page < start || page >= end) {
      ++it;
      continue;
    }
    void* at = ::mmap(reinterpret_cast<void*>(page), kPageSize,
                      PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
                      -1, 0);
    absl::Status s = at == MAP_FAILED
                         ? absl::InternalError(strerror(errno))
                         : uffd_.Register(page, kPageSize);
    if (!s.ok()) {
      Error("restoring the page at 0x%x for its new backing failed: %s", page,
            s.message());
      ++it;
      continue;
    }
    unbacked_pages_.erase(it++);
  }

  // Drop cached copies so the next access asks the new backing, in runs so
  // that one madvise covers many pages. No page is installed directly
  // meanwhile (install_mutex_): each is either dropped here or disarmed below.
  absl::MutexLock lock(&install_mutex_);
  uint64_t dropped = 0;
  uintptr_t run_start = 0, run_end = 0;
  auto flush = [&] {
    if (run_end > run_start) {
      ::madvise(reinterpret_cast<void*>(run_start), run_end - run_start,
                MADV_DONTNEED);
    }
    run_start = run_end = 0;
  };
  for (uintptr_t page = start; page < end; page += kPageSize) {
    uint64_t i = PageIndex(page);
    if (!Resident(i) || (keep != nullptr && (*keep)(page - base_))) continue;
    if (keep != nullptr) AuditDrop(page);  // an invalidation, not a new backing
    SetResident(i, false);
    ++dropped;
    if (run_end != page) {
      flush();
      run_start = page;
    }
    run_end = page + kPageSize;
  }
  flush();
  if (dropped) Bump(evicted_, dropped);

  // Requests still out to the old backing are asked again when they return.
  for (uint32_t slot = 0; slot < kMaxPendingPages; ++slot) {
    PendingPage& p = slots_[slot];
    if (p.in_use && p.page >= start && p.page < end &&
        (keep == nullptr || !(*keep)(p.page - base_)) && DisarmLocked(slot)) {
      p.stale = true;
    }
  }
}

void FaultService::AbandonPending() {
  {
    // From now on nothing is installed directly.
    absl::MutexLock lock(&install_mutex_);
    direct_stopped_ = true;
  }
  for (uint32_t slot = 0; slot < kMaxPendingPages; ++slot) {
    PendingPage& p = slots_[slot];
    if (!p.in_use) continue;
    if (direct_[slot].state.load(std::memory_order_acquire) ==
        kDirectInstalled) {
      FinishDirect(slot);  // resolved: its threads are awake
      continue;
    }
    direct_[slot].state.store(kDirectIdle, std::memory_order_relaxed);
    absl::Status why = absl::UnavailableError(
        "the fault service stopped while the page's manager had not answered");
    FailPage(p.page, why, "abandoned");
    NotifyWatchers(p, why);
    pending_index_.erase(p.page);
    ReleaseSlot(slot);
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
