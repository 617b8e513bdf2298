// remote_fetcher.cc - READs for faults, the homes' replies, and the
// one-sided operations threads wait for (SyncBatch).
#include "runtime/dsm/remote_fetcher.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "runtime/fault/completion_queue.h"
#include "runtime/dsm/distributed_dataspace.h"
#include "runtime/dsm/home_protocol.h"
#include "runtime/base/log.h"

namespace pagewire {

namespace hp = home_protocol;

RemoteFetcher::RemoteFetcher(Transport& transport, MessageRouter& router,
                             int self, int nranks)
    : transport_(transport),
      router_(router),
      self_(self),
      nranks_(nranks),
      regions_(nranks),
      dead_(nranks),
      death_(nranks) {
  held_.resize(nranks);
  absl::Status s = router_.Register(
      {hp::kReady, hp::kClaimed, hp::kAllocKeys},
      [this](int peer, uint16_t type, absl::Span<const char> body) {
        OnMessage(peer, type, body);
      });
  if (!s.ok()) Error("remote fetcher: %s", s.message());
  // A transport that completes on a thread of its own hands the
  // completions over there, where a fetched page is installed at once
  // while the fault loop sleeps; otherwise the loop polls for them.
  polled_ = !transport_.SetCompletionHandler(
      [this](absl::Span<const WorkCompletion> wcs) { OnCompletions(wcs); });
}

RemoteFetcher::~RemoteFetcher() {
  // Returns once the transport's thread is out of OnCompletions.
  transport_.SetCompletionHandler(nullptr);
  router_.Unregister({hp::kReady, hp::kClaimed, hp::kAllocKeys});
}

void RemoteFetcher::OnMessage(int peer, uint16_t type,
                              absl::Span<const char> body) {
  switch (type) {
    case hp::kAllocKeys:
      OnAllocKeys(peer, body);
      return;
    case hp::kReady: {
      hp::Ready m;
      if (!hp::Parse(body, &m)) break;
      OnReady(peer, m.slot, m.error, m.page, m.rkey);
      return;
    }
    case hp::kClaimed: {
      hp::Claimed m;
      if (!hp::Parse(body, &m)) break;
      OnClaimed(peer, m.slot, m.owner, m.page);
      return;
    }
  }
  Warning("remote fetcher: rank %d sent a malformed message of type %d (%d "
          "bytes); dropped",
          peer, type, body.size());
}

void SyncBatch::Expect(int chains) {
  absl::MutexLock lock(&mutex_);
  outstanding_ += chains;
}

void SyncBatch::Complete(const WorkCompletion& wc) {
  absl::MutexLock lock(&mutex_);
  if (wc.status != WcStatus::kSuccess && status_.ok()) {
    status_ = absl::UnavailableError(absl::StrFormat(
        "a one-sided %s to rank %d failed: %s", WorkOpcodeName(wc.opcode),
        wc.peer, WcStatusName(wc.status)));
  }
  // An unsignalled request reports only a failure; its chain's signalled
  // tail still completes (flushed) or the peer's death completes it.
  if (wc.status == WcStatus::kSuccess || outstanding_ > 0) --outstanding_;
}

absl::Status SyncBatch::Wait() {
  absl::MutexLock lock(&mutex_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    return outstanding_ <= 0;
  };
  mutex_.Await(absl::Condition(&done));
  return status_;
}

uint32_t RemoteFetcher::PeerKey(int peer, uint64_t addr) const {
  absl::MutexLock lock(&mutex_);
  return KeyFor(peer, addr);
}

absl::Status RemoteFetcher::PostSync(int peer, WorkRequest* chain,
                                     SyncBatch& batch) {
  {
    absl::MutexLock lock(&mutex_);
    if (!PeerAlive(peer)) {
      return absl::UnavailableError(absl::StrFormat(
          "rank %d is dead: %s", peer,
          peer >= 0 && peer < nranks_ ? death_[peer] : "no such rank"));
    }
  }
  WorkRequest* last = chain;
  for (WorkRequest* wr = chain; wr != nullptr; wr = wr->next) {
    wr->wr_id = batch.wr_id();
    wr->signaled = false;
    last = wr;
  }
  last->signaled = true;
  batch.Expect(1);
  absl::Status s = transport_.PostSend(peer, chain);
  if (!s.ok()) {
    WorkCompletion wc;
    wc.status = WcStatus::kTransportError;
    wc.peer = peer;
    batch.Complete(wc);
  }
  return s;
}

void RemoteFetcher::SetLanding(MemoryRegion landing) {
  absl::MutexLock lock(&mutex_);
  landing_ = landing;
}

void RemoteFetcher::AddPeerRegion(int peer, uint32_t alloc_id, uint64_t addr,
                                  uint64_t length, uint32_t rkey) {
  absl::MutexLock lock(&mutex_);
  if (peer < 0 || peer >= nranks_) return;
  // The coordinator hands out a range again only once it was released, so
  // a region of another allocation that overlaps this one is stale: the
  // keys of an allocation that failed on this rank (a collective that did
  // not agree) were never taken back here. (Allocation 0, the whole range
  // on TCP, stands apart.)
  std::vector<RemoteRegion>& list = regions_[peer];
  list.erase(std::remove_if(list.begin(), list.end(),
                            [&](const RemoteRegion& r) {
                              return alloc_id != 0 && r.alloc_id != 0 &&
                                     r.alloc_id != alloc_id && length > 0 &&
                                     r.addr < addr + length &&
                                     addr < r.addr + r.length;
                            }),
             list.end());
  list.push_back(RemoteRegion{alloc_id, addr, length, rkey});
}

void RemoteFetcher::OnAllocKeys(int peer, absl::Span<const char> body) {
  hp::AllocKeysHeader h;
  if (body.size() < sizeof(h)) {
    Warning("rank %d sent a truncated key list; dropped", peer);
    return;
  }
  std::memcpy(&h, body.data(), sizeof(h));
  if (body.size() != sizeof(h) + uint64_t{h.count} * sizeof(hp::AllocKey)) {
    Warning("rank %d sent %d bytes for %d keys; dropped", peer, body.size(),
            h.count);
    return;
  }
  // An empty list still says "published": the peer homes nothing of it.
  if (h.count == 0) AddPeerRegion(peer, h.alloc_id, 0, 0, 0);
  for (uint32_t i = 0; i < h.count; ++i) {
    hp::AllocKey k;
    std::memcpy(&k, body.data() + sizeof(h) + i * sizeof(k), sizeof(k));
    AddPeerRegion(peer, h.alloc_id, k.addr, k.length, k.rkey);
  }
}

void RemoteFetcher::RemoveAllocRegions(uint32_t alloc_id) {
  absl::MutexLock lock(&mutex_);
  for (auto& list : regions_) {
    list.erase(std::remove_if(list.begin(), list.end(),
                              [alloc_id](const RemoteRegion& r) {
                                return r.alloc_id == alloc_id;
                              }),
               list.end());
  }
}

absl::Status RemoteFetcher::AwaitAllocRegions(uint32_t alloc_id, int peers) {
  absl::MutexLock lock(&mutex_);
  auto published = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    int n = 0;
    for (int p = 0; p < nranks_; ++p) {
      if (p == self_) continue;
      if (dead_[p]) return true;
      for (const RemoteRegion& r : regions_[p]) {
        if (r.alloc_id == alloc_id) {
          ++n;
          break;
        }
      }
    }
    return n >= peers;
  };
  mutex_.Await(absl::Condition(&published));
  for (int p = 0; p < nranks_; ++p) {
    if (p != self_ && dead_[p]) {
      return absl::UnavailableError(absl::StrFormat(
          "rank %d died before publishing its memory keys: %s", p, death_[p]));
    }
  }
  return absl::OkStatus();
}

uint32_t RemoteFetcher::KeyFor(int peer, uint64_t addr) const {
  if (peer < 0 || peer >= nranks_) return 0;
  for (const RemoteRegion& r : regions_[peer]) {
    if (addr >= r.addr && addr - r.addr < r.length) return r.rkey;
  }
  return 0;
}

void RemoteFetcher::Fail(const PageRequest& request, absl::Status why) {
  failed_.fetch_add(1, std::memory_order_relaxed);
  request.completion_queue->Post(
      OutcomeCompletion(request, Resolution::kFailed, std::move(why)));
}

void RemoteFetcher::PeerDied(int peer, const std::string& why) {
  std::vector<FaultPlan> orphans;
  {
    absl::MutexLock lock(&mutex_);
    if (peer < 0 || peer >= nranks_ || dead_[peer]) return;
    dead_[peer] = true;
    death_[peer] = why;
    // Outstanding READs are completed by the transport (kPeerGone); faults
    // waiting for a reply from `peer` are failed here. Under mutex_: a
    // fetch that checks the peer's life and plans (Plan) does both under it
    // too, so no plan escapes.
    if (Owner() != nullptr) {
      static constexpr uint16_t kReplies[] = {hp::kReady, hp::kClaimed};
      orphans = Owner()->TakePlansAwaiting(peer, kReplies);
    }
  }
  for (const FaultPlan& p : orphans) {
    Fail(p.request, absl::UnavailableError(absl::StrFormat(
                        "rank %d, which had to answer for this page, is dead: "
                        "%s",
                        peer, why)));
  }
}

bool RemoteFetcher::FailIfDead(const PageRequest& request, int peer,
                               const char* role) {
  if (PeerAlive(peer)) return false;
  Fail(request, absl::UnavailableError(absl::StrFormat(
                    "%s, rank %d, is dead: %s", role, peer,
                    peer >= 0 && peer < nranks_ ? death_[peer] : "no such rank")));
  return true;
}

void RemoteFetcher::PostRead(const FaultPlan& plan) {
  WorkRequest wr;
  wr.wr_id = plan.request.slot;
  wr.opcode = WorkOpcode::kRead;
  wr.local = plan.request.landing;
  wr.lkey = landing_.lkey;
  wr.length = static_cast<uint32_t>(kPageSize);
  wr.remote_addr = plan.remote_addr;
  // A first-touch page on verbs has its own key; the rest are covered by
  // the region its home registered at allocation (or TCP's global one).
  auto* ds = static_cast<DistributedDataspace*>(plan.manager);
  const uint32_t page_key = ds != nullptr ? ds->PageKey(plan.page) : 0;
  wr.rkey = plan.rkey ? *plan.rkey
            : page_key != 0 ? page_key
                            : KeyFor(plan.peer, plan.remote_addr);
  wr.signaled = true;
  remote_reads_.fetch_add(1, std::memory_order_relaxed);
  reads_in_flight_.fetch_add(1, std::memory_order_relaxed);
  if (std::this_thread::get_id() == loop_ && plan.peer >= 0 &&
      plan.peer < nranks_) {
    held_[plan.peer].push_back(wr);
    return;
  }
  PostReads(plan.peer, &wr);
}

void RemoteFetcher::PostReads(int peer, WorkRequest* chain) {
  absl::Status s = transport_.PostSend(peer, chain);
  if (s.ok()) return;
  for (WorkRequest* wr = chain; wr != nullptr; wr = wr->next) {
    reads_in_flight_.fetch_sub(1, std::memory_order_relaxed);
    Owner()->Complete(static_cast<uint32_t>(wr->wr_id),
                     absl::UnavailableError(absl::StrFormat(
                         "posting it failed: %s", s.message())));
  }
}

void RemoteFetcher::PostHeld() {
  absl::MutexLock lock(&mutex_);
  for (int peer = 0; peer < nranks_; ++peer) {
    std::vector<WorkRequest>& wrs = held_[peer];
    if (wrs.empty()) continue;
    for (size_t i = 0; i + 1 < wrs.size(); ++i) wrs[i].next = &wrs[i + 1];
    wrs.back().next = nullptr;
    PostReads(peer, wrs.data());
    wrs.clear();
  }
}

bool RemoteFetcher::Plan(const PageRequest& request, int peer,
                         const char* role, FaultPlan& plan) {
  // The fault service a fetcher serves is the one whose faults it sees.
  FaultService* expected = nullptr;
  if (request.fault_service == nullptr ||
      (!owner_.compare_exchange_strong(expected, request.fault_service,
                                       std::memory_order_acq_rel) &&
       expected != request.fault_service)) {
    Fail(request, absl::FailedPreconditionError(
                      "a remote fetcher serves the faults of one fault "
                      "service; this request comes from none or another"));
    return false;
  }
  if (FailIfDead(request, peer, role)) return false;
  plan.peer = peer;
  plan.request = request;
  Owner()->SetPlan(request.slot, plan);
  return true;
}

void RemoteFetcher::Read(const PageRequest& request, int home,
                         uint64_t remote_addr, bool write_protect,
                         DistributedDataspace* ds, uint64_t page,
                         std::optional<uint32_t> rkey) {
  absl::MutexLock lock(&mutex_);
  FaultPlan plan;
  plan.step = FaultPlan::Step::kReading;
  plan.manager = ds;
  plan.page = page;
  plan.remote_addr = remote_addr;
  plan.rkey = rkey;
  plan.write_protect = write_protect;
  if (!Plan(request, home, "the page's home", plan)) return;
  PostRead(plan);
}

void RemoteFetcher::FetchVia(const PageRequest& request, int home,
                             uint64_t remote_addr, DistributedDataspace* ds,
                             uint64_t page) {
  absl::MutexLock lock(&mutex_);
  FaultPlan plan;
  plan.step = FaultPlan::Step::kAwaitingReply;
  plan.reply = hp::kReady;
  plan.manager = ds;
  plan.page = page;
  plan.remote_addr = remote_addr;
  if (!Plan(request, home, "the page's home", plan)) return;
  home_requests_.fetch_add(1, std::memory_order_relaxed);
  hp::Fetch m{ds->id(), request.slot, page};
  absl::Status s = transport_.SendMessage(home, hp::kFetch, hp::AsBytes(m));
  if (!s.ok() && Owner()->TakePlan(request.slot, FaultPlan::Step::kAwaitingReply,
                                  hp::kReady, home, page)) {
    Fail(request, absl::UnavailableError(absl::StrFormat(
                      "asking rank %d for page %d failed: %s", home, page,
                      s.message())));
  }
}

void RemoteFetcher::Claim(const PageRequest& request, int directory,
                          DistributedDataspace* ds, uint32_t alloc_id,
                          uint64_t page) {
  absl::MutexLock lock(&mutex_);
  FaultPlan plan;
  plan.step = FaultPlan::Step::kAwaitingReply;
  plan.reply = hp::kClaimed;
  plan.manager = ds;
  plan.page = page;
  if (!Plan(request, directory,
            "the rank that records who owns this first-touch page", plan)) {
    return;
  }
  home_requests_.fetch_add(1, std::memory_order_relaxed);
  hp::Claim m{alloc_id, request.slot, page};
  absl::Status s = transport_.SendMessage(directory, hp::kClaim, hp::AsBytes(m));
  if (!s.ok() && Owner()->TakePlan(request.slot, FaultPlan::Step::kAwaitingReply,
                                  hp::kClaimed, directory, page)) {
    Fail(request, absl::UnavailableError(absl::StrFormat(
                      "asking rank %d who owns page %d failed: %s", directory,
                      page, s.message())));
  }
}

void RemoteFetcher::OnReady(int peer, uint32_t slot, int32_t error,
                            uint64_t page, uint32_t rkey) {
  FaultService* owner = Owner();
  std::optional<FaultPlan> plan =
      owner == nullptr ? std::nullopt
                       : owner->TakePlan(slot, FaultPlan::Step::kAwaitingReply,
                                         hp::kReady, peer, page);
  if (!plan) {
    Warning("rank %d answered 'ready' for slot %u / page %d, which waits for "
            "no such answer; ignored",
            peer, slot, page);
    return;
  }
  auto* ds = static_cast<DistributedDataspace*>(plan->manager);
  if (error != 0) {
    Fail(plan->request, absl::DataLossError(absl::StrFormat(
                            "rank %d could not provide page %d of %s: %s (its "
                            "log says more)",
                            peer, page, ds->Describe(), strerror(error))));
    return;
  }
  if (rkey != 0) ds->SetPageKey(page, rkey);
  ds->MarkRegistered(page);
  Read(plan->request, peer, plan->remote_addr, plan->write_protect, ds, page);
}

void RemoteFetcher::OnClaimed(int peer, uint32_t slot, int32_t owner,
                              uint64_t page) {
  FaultService* service = Owner();
  std::optional<FaultPlan> plan;
  if (service != nullptr && owner >= 0 && owner < nranks_) {
    plan = service->TakePlan(slot, FaultPlan::Step::kAwaitingReply,
                             hp::kClaimed, peer, page);
  }
  if (!plan) {
    Warning("rank %d answered 'owner %d' for slot %u / page %d, which waits "
            "for no such answer; ignored",
            peer, owner, slot, page);
    return;
  }
  static_cast<DistributedDataspace*>(plan->manager)
      ->ContinueClaim(plan->request, page, owner);
}

void RemoteFetcher::Dispatch(const WorkCompletion& wc) {
  if (SyncBatch::IsSync(wc.wr_id)) {
    SyncBatch::FromWrId(wc.wr_id)->Complete(wc);
    return;
  }
  absl::Status status;
  if (wc.status != WcStatus::kSuccess) {
    std::string death;
    {
      absl::MutexLock lock(&mutex_);
      if (!PeerAlive(wc.peer) && wc.peer >= 0 && wc.peer < nranks_) {
        death = death_[wc.peer];
      }
    }
    status = absl::UnavailableError(absl::StrFormat(
        "%s%s%s", WcStatusName(wc.status), death.empty() ? "" : ": ", death));
  }
  // The page is in the slot's landing buffer; the fault's plan says how it
  // is installed.
  if (Owner() == nullptr || wc.wr_id >= FaultService::kMaxPendingPages ||
      !Owner()->Complete(static_cast<uint32_t>(wc.wr_id), status)) {
    Warning("a %s completion for wr_id %d matches no outstanding READ; "
            "ignored",
            WcStatusName(wc.status), wc.wr_id);
    return;
  }
  reads_in_flight_.fetch_sub(1, std::memory_order_relaxed);
}

int RemoteFetcher::Take(CompletionQueue& cq) {
  // On the fault loop, which installs what `cq` receives in this same
  // wake-up: no need to install directly.
  WorkCompletion wcs[kCompletionBurst];
  const int n = transport_.PollCompletions(wcs, kCompletionBurst);
  (void)cq;  // the loop's own queue, which Complete posts to
  for (int i = 0; i < n; ++i) Dispatch(wcs[i]);
  return n;
}

CompletionSource::Polled RemoteFetcher::Poll(CompletionQueue& cq,
                                             PollMode mode) {
  {
    absl::MutexLock lock(&mutex_);
    loop_ = std::this_thread::get_id();  // its READs are held from now on
  }
  PostHeld();
  int taken = 0;
  switch (mode) {
    case PollMode::kPost:
      break;
    case PollMode::kDrain:
    case PollMode::kSpin: {
      // Bursts until one comes back short. A spin does not re-arm: a
      // notification request that stands raises its event anyway, and the
      // loop's next drain takes it.
      int n;
      do {
        n = Take(cq);
        taken += n;
      } while (n == kCompletionBurst);
      if (mode == PollMode::kDrain) transport_.ArmCompletionFd();
      break;
    }
    case PollMode::kSleep:
      transport_.PrepareToSleep();
      break;
  }
  Polled p;
  p.found = taken > 0;
  p.awaiting = polled_ && reads_in_flight_.load(std::memory_order_relaxed) > 0;
  return p;
}

void RemoteFetcher::OnCompletions(absl::Span<const WorkCompletion> wcs) {
  for (const WorkCompletion& wc : wcs) Dispatch(wc);
}

FetchStats RemoteFetcher::stats() const {
  FetchStats s;
  s.remote_reads = remote_reads_.load(std::memory_order_relaxed);
  s.home_requests = home_requests_.load(std::memory_order_relaxed);
  s.failed = failed_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace pagewire
