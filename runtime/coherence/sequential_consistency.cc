// sequential_consistency.cc - the home directory, recalls and grants of
// the single-writer / multiple-reader protocol.
#include "runtime/coherence/sequential_consistency.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "runtime/fault/completion_queue.h"
#include "runtime/dsm/distributed_dataspace.h"
#include "runtime/dsm/home_protocol.h"
#include "runtime/base/log.h"
#include "runtime/base/service_thread.h"
#include "runtime/base/page.h"

namespace pagewire {

namespace hp = home_protocol;

namespace {

// Local events for the service thread, beside the protocol's messages.
constexpr uint16_t kPeerDeath = 0xff00;  // body: none; `peer` died
constexpr uint16_t kForget = 0xff01;     // body: uint32_t alloc id
constexpr uint16_t kStop = 0xff02;

}  // namespace

SequentialConsistency::SequentialConsistency(int self, int nranks,
                                             Transport& transport,
                                             MessageRouter& router,
                                             RemoteFetcher& fetcher,
                                             FaultService& service)
    : self_(self),
      nranks_(nranks),
      transport_(transport),
      router_(router),
      fetcher_(fetcher),
      service_(service),
      dead_(nranks),
      death_(nranks),
      staging_(new char[kPageSize]) {
  absl::Status s = router_.Register(
      {hp::kScRequest, hp::kScGrant, hp::kScRecall, hp::kScRecalled},
      [this](int peer, uint16_t type, absl::Span<const char> body) {
        OnMessage(peer, type, body);
      });
  if (!s.ok()) Error("sequential consistency: %s", s.message());
}

SequentialConsistency::~SequentialConsistency() {
  router_.Unregister(
      {hp::kScRequest, hp::kScGrant, hp::kScRecall, hp::kScRecalled});
  if (thread_.joinable()) {
    Post(self_, kStop, {});
    thread_.join();
  }
  absl::MutexLock lock(&mutex_);
  for (auto& [id, store] : stores_) {
    if (store.length == 0) continue;
    (void)transport_.DeregisterMemory(store.region);
    ::munmap(store.mem, store.length);
  }
  if (staging_region_.length != 0) {
    (void)transport_.DeregisterMemory(staging_region_);
  }
}

absl::Status SequentialConsistency::Start() {
  absl::StatusOr<MemoryRegion> r =
      transport_.RegisterMemory(staging_.get(), kPageSize);
  if (!r.ok()) return r.status();
  staging_region_ = *r;
  thread_ = std::thread([this] { Serve(); });
  return absl::OkStatus();
}

uint64_t SequentialConsistency::LocalIndex(const DistributedDataspace* ds,
                                           uint64_t page) const {
  const PlacementMap& m = ds->placement();
  switch (m.placement) {
    case Placement::kBlock:
      return page - static_cast<uint64_t>(self_) *
                        ((m.pages + m.nranks - 1) / m.nranks);
    case Placement::kCyclic:
      return page / m.nranks;
    default:
      return page;
  }
}

uint64_t SequentialConsistency::HomedPages(const DistributedDataspace* ds) const {
  uint64_t n = 0;
  for (uint64_t p = 0; p < ds->placement().pages; ++p) n += ds->HomedHere(p);
  return n;
}

absl::Status SequentialConsistency::AddDataspace(DistributedDataspace* ds) {
  if (ds->placement().placement == Placement::kFirstTouch) {
    return absl::InvalidArgumentError(
        "pw_alloc_sc: sequentially consistent memory needs a fixed home per "
        "page; use PW_PLACE_BLOCK or PW_PLACE_CYCLIC, not first-touch");
  }
  Store store;
  store.ds = ds;
  store.length = HomedPages(ds) * kPageSize;
  if (store.length != 0) {
    void* mem = ::mmap(nullptr, store.length, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (mem == MAP_FAILED) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "pw_alloc_sc: cannot map the %d-byte home store of %s: %s",
          store.length, ds->Describe(), strerror(errno)));
    }
    store.mem = static_cast<char*>(mem);
    absl::StatusOr<MemoryRegion> r =
        transport_.RegisterMemory(mem, store.length);
    if (!r.ok()) {
      ::munmap(mem, store.length);
      return r.status();
    }
    store.region = *r;
  }
  absl::MutexLock lock(&mutex_);
  dataspaces_[ds->id()] = ds;
  stores_[ds->id()] = std::move(store);
  return absl::OkStatus();
}

void SequentialConsistency::RemoveDataspace(uint32_t id) {
  {
    absl::MutexLock lock(&mutex_);
    dataspaces_.erase(id);
  }
  // The directory and the store belong to the service thread.
  Post(self_, kForget,
       absl::Span<const char>(reinterpret_cast<const char*>(&id), sizeof(id)));
}

DistributedDataspace* SequentialConsistency::Find(uint32_t id) const {
  auto it = dataspaces_.find(id);
  return it == dataspaces_.end() ? nullptr : it->second;
}

void SequentialConsistency::Post(int peer, uint16_t type,
                                 absl::Span<const char> body) {
  absl::MutexLock lock(&mutex_);
  events_.push_back(Event{peer, type, std::vector<char>(body.begin(), body.end())});
}

void SequentialConsistency::Send(int peer, uint16_t type,
                                 absl::Span<const char> body) {
  if (peer == self_) {
    Post(peer, type, body);
    return;
  }
  absl::Status s = transport_.SendMessage(peer, type, body);
  if (!s.ok()) {
    // The peer is going away; membership will say so, and its death
    // settles what waits for it.
    Warning("sequential consistency: a message to rank %d failed: %s", peer,
            s.message());
  }
}

void SequentialConsistency::OnMessage(int peer, uint16_t type,
                                      absl::Span<const char> body) {
  if (peer < 0 || peer >= nranks_) return;
  Post(peer, type, body);
}

void SequentialConsistency::PeerDied(int peer, const std::string& why) {
  std::vector<PageRequest> orphans;
  {
    absl::MutexLock lock(&mutex_);
    if (peer < 0 || peer >= nranks_ || dead_[peer]) return;
    dead_[peer] = true;
    death_[peer] = why;
    // Faults waiting for a grant from `peer` (their plans, in the fault
    // service's table), taken under mutex_: RequestPage checks a home's
    // life and plans under it too, so no plan escapes.
    static constexpr uint16_t kReplies[] = {hp::kScGrant};
    for (const FaultPlan& p : service_.TakePlansAwaiting(peer, kReplies)) {
      orphans.push_back(p.request);
    }
    events_.push_back(Event{peer, kPeerDeath, {}});
  }
  for (const PageRequest& r : orphans) {
    r.completion_queue->Post(OutcomeCompletion(
        r, Resolution::kFailed,
        absl::UnavailableError(absl::StrFormat(
            "rank %d, the home of this sequentially consistent page, is dead: "
            "%s",
            peer, why))));
  }
}

ScStats SequentialConsistency::stats() const {
  absl::MutexLock lock(&mutex_);
  return stats_;
}

void SequentialConsistency::RequestPage(const PageRequest& request,
                                        DistributedDataspace* ds,
                                        uint64_t page) {
  const int home = ds->placement().HomeOf(page);
  const bool write = request.access == Access::kWrite || request.upgrade;
  std::string dead;
  {
    absl::MutexLock lock(&mutex_);
    if (home < 0 || home >= nranks_) {
      dead = "no such rank";
    } else if (dead_[home]) {
      dead = death_[home];
    } else {
      FaultPlan plan;
      plan.step = FaultPlan::Step::kAwaitingReply;
      plan.reply = hp::kScGrant;
      plan.peer = home;
      plan.request = request;
      plan.manager = ds;
      plan.page = page;
      service_.SetPlan(request.slot, plan);
      ++stats_.requests;
    }
  }
  if (!dead.empty()) {
    request.completion_queue->Post(OutcomeCompletion(
        request, Resolution::kFailed,
        absl::UnavailableError(absl::StrFormat(
            "rank %d, the home of page %d of %s, is dead: %s", home, page,
            ds->Describe(), dead))));
    return;
  }
  hp::ScRequest m{ds->id(), request.slot, page, write ? 1u : 0u, 0};
  Send(home, hp::kScRequest, hp::AsBytes(m));
}

void SequentialConsistency::Serve() {
  BecomeServiceThread("pw-sc");
  for (;;) {
    Event e;
    {
      absl::MutexLock lock(&mutex_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
        return !events_.empty();
      };
      // No timeout: the thread sleeps until a message or a local event.
      mutex_.Await(absl::Condition(&ready));
      e = std::move(events_.front());
      events_.pop_front();
    }
    if (e.type == kStop) return;
    Handle(e);
  }
}

void SequentialConsistency::Handle(const Event& e) {
  const absl::Span<const char> body(e.body.data(), e.body.size());
  switch (e.type) {
    case hp::kScRequest:
      OnRequest(e.peer, body);
      return;
    case hp::kScGrant:
      OnGrant(e.peer, body);
      return;
    case hp::kScRecall:
      OnRecall(e.peer, body);
      return;
    case hp::kScRecalled:
      OnRecalled(e.peer, body);
      return;
    case kForget: {
      uint32_t id;
      std::memcpy(&id, e.body.data(), sizeof(id));
      for (auto it = directory_.begin(); it != directory_.end();) {
        it = it->first.first == id ? directory_.erase(it) : std::next(it);
      }
      absl::MutexLock lock(&mutex_);
      auto s = stores_.find(id);
      if (s != stores_.end()) {
        if (s->second.length != 0) {
          (void)transport_.DeregisterMemory(s->second.region);
          ::munmap(s->second.mem, s->second.length);
        }
        stores_.erase(s);
      }
      return;
    }
    case kPeerDeath: {
      const int dead = e.peer;
      for (auto& [key, d] : directory_) {
        if (d.writer == dead) {
          d.writer = -1;
          d.lost_by = static_cast<int>(dead);
          d.lost = absl::StrFormat(
              "rank %d held the only up-to-date copy of this sequentially "
              "consistent page and died",
              dead);
          Error("page %d of allocation %d: %s", key.second, key.first, d.lost);
        }
        if (!d.readers.empty()) d.readers[dead] = false;
        for (auto it = d.queue.begin(); it != d.queue.end();) {
          it = it->rank == dead ? d.queue.erase(it) : std::next(it);
        }
        if (!d.busy) continue;
        for (auto it = d.recalled.begin(); it != d.recalled.end();) {
          if (*it == dead) {
            it = d.recalled.erase(it);
            --d.recalls_out;
          } else {
            ++it;
          }
        }
        if (d.recalls_out == 0) {
          Finish(key.first, key.second, d);
          Begin(key.first, key.second, d);
        }
      }
      return;
    }
    default:
      Warning("sequential consistency: rank %d sent unknown message type %d; "
              "dropped",
              e.peer, e.type);
  }
}

void SequentialConsistency::OnRequest(int peer, absl::Span<const char> body) {
  hp::ScRequest m;
  if (!hp::Parse(body, &m)) {
    Warning("sequential consistency: rank %d sent a malformed request; "
            "dropped",
            peer);
    return;
  }
  bool known;
  {
    absl::MutexLock lock(&mutex_);
    DistributedDataspace* ds = Find(m.alloc_id);
    known = ds != nullptr && m.page < ds->placement().pages &&
            ds->placement().HomeOf(m.page) == self_ &&
            stores_.count(m.alloc_id) != 0;
  }
  if (!known) {
    Warning("sequential consistency: rank %d asked for page %d of allocation "
            "%d, which is not homed here",
            peer, m.page, m.alloc_id);
    hp::ScGrant g{m.slot, EINVAL, m.page, 0, 0,
                  static_cast<uint16_t>(m.write), -1};
    Send(peer, hp::kScGrant, hp::AsBytes(g));
    return;
  }
  Directory& d = directory_[{m.alloc_id, m.page}];
  d.readers.resize(nranks_);
  d.queue.push_back(Want{peer, m.slot, m.write != 0});
  if (!d.busy) Begin(m.alloc_id, m.page, d);
}

void SequentialConsistency::Begin(uint32_t alloc_id, uint64_t page,
                                  Directory& d) {
  // Transactions of this page run one at a time; each either finishes at
  // once (nothing to recall) or when the last recall is answered.
  while (!d.busy && !d.queue.empty()) {
    d.current = d.queue.front();
    d.queue.pop_front();
    d.busy = true;
    d.recalled.clear();
    d.recalls_out = 0;
    if (d.lost.empty()) {
      uint64_t store_addr = 0;
      uint32_t rkey = 0;
      std::vector<bool> dead;
      {
        absl::MutexLock lock(&mutex_);
        const Store& st = stores_.at(alloc_id);
        store_addr = reinterpret_cast<uintptr_t>(st.mem) +
                     LocalIndex(st.ds, page) * kPageSize;
        rkey = st.region.rkey;
        dead = dead_;
      }
      const Want& w = d.current;
      auto recall = [&](int holder, bool write_back, bool keep_readable) {
        if (dead[holder]) return;  // its copy is gone
        hp::ScRecall r{alloc_id, keep_readable ? 1u : 0u, page, store_addr,
                       rkey, write_back ? 1u : 0u};
        d.recalled.push_back(holder);
        ++d.recalls_out;
        Send(holder, hp::kScRecall, hp::AsBytes(r));
      };
      if (w.write) {
        for (int r = 0; r < nranks_; ++r) {
          if (r != w.rank && d.readers[r]) recall(r, false, false);
        }
        if (d.writer >= 0 && d.writer != w.rank) recall(d.writer, true, false);
      } else if (d.writer >= 0 && d.writer != w.rank) {
        recall(d.writer, true, true);
      }
    }
    if (d.recalls_out == 0) Finish(alloc_id, page, d);
  }
}

void SequentialConsistency::OnRecalled(int peer, absl::Span<const char> body) {
  hp::ScRecalled m;
  if (!hp::Parse(body, &m)) {
    Warning("sequential consistency: rank %d sent a malformed recall answer; "
            "dropped",
            peer);
    return;
  }
  auto it = directory_.find({m.alloc_id, m.page});
  if (it == directory_.end() || !it->second.busy) {
    Warning("sequential consistency: rank %d answered a recall of page %d of "
            "allocation %d that is not out; ignored",
            peer, m.page, m.alloc_id);
    return;
  }
  Directory& d = it->second;
  auto r = std::find(d.recalled.begin(), d.recalled.end(), peer);
  if (r == d.recalled.end()) {
    Warning("sequential consistency: rank %d answered a recall of page %d it "
            "was not sent; ignored",
            peer, m.page);
    return;
  }
  d.recalled.erase(r);
  if (m.error != 0 && d.writer == peer) {
    d.writer = -1;
    d.lost_by = peer;
    d.lost = absl::StrFormat(
        "rank %d could not write the page back (%s)", peer, strerror(m.error));
    Error("page %d of allocation %d: %s", m.page, m.alloc_id, d.lost);
  }
  if (--d.recalls_out == 0) {
    Finish(m.alloc_id, m.page, d);
    Begin(m.alloc_id, m.page, d);  // the next transaction, if any
  }
}

void SequentialConsistency::Finish(uint32_t alloc_id, uint64_t page,
                                   Directory& d) {
  const Want w = d.current;
  d.busy = false;
  bool requester_dead;
  uint64_t store_addr = 0;
  uint32_t rkey = 0;
  {
    absl::MutexLock lock(&mutex_);
    requester_dead = dead_[w.rank];
    auto st = stores_.find(alloc_id);
    if (st != stores_.end()) {
      store_addr = reinterpret_cast<uintptr_t>(st->second.mem) +
                   LocalIndex(st->second.ds, page) * kPageSize;
      rkey = st->second.region.rkey;
    }
  }
  if (!d.lost.empty()) {
    hp::ScGrant g{w.slot, EIO, page, 0, 0, w.write,
                  static_cast<int16_t>(d.lost_by)};
    if (!requester_dead) Send(w.rank, hp::kScGrant, hp::AsBytes(g));
    return;
  }
  if (requester_dead) return;
  if (w.write) {
    d.readers.assign(nranks_, false);
    d.writer = w.rank;
  } else {
    if (d.writer >= 0 && d.writer != w.rank) {
      d.readers[d.writer] = true;  // it kept a read-only copy
      d.writer = -1;
    }
    // A writer that reads its page again (its copy was never installed)
    // stays the writer.
    if (d.writer != w.rank) d.readers[w.rank] = true;
  }
  hp::ScGrant g{w.slot, 0, page, store_addr, rkey, w.write, -1};
  Send(w.rank, hp::kScGrant, hp::AsBytes(g));
}

void SequentialConsistency::OnRecall(int peer, absl::Span<const char> body) {
  hp::ScRecall m;
  if (!hp::Parse(body, &m)) {
    Warning("sequential consistency: rank %d sent a malformed recall; dropped",
            peer);
    return;
  }
  DistributedDataspace* ds;
  {
    absl::MutexLock lock(&mutex_);
    ds = Find(m.alloc_id);
    ++stats_.recalls;
  }
  int32_t error = 0;
  if (ds != nullptr && m.page < ds->placement().pages) {
    const uint64_t offset =
        ds->global_addr() - service_.base() + m.page * kPageSize;
    char* buffer = m.write_back ? staging_.get() : nullptr;
    const bool was_installed =
        service_.RecallPage(offset, buffer, m.keep_readable == 0);
    if (m.write_back && was_installed) {
      if (peer == self_) {
        std::memcpy(reinterpret_cast<void*>(m.store_addr), buffer, kPageSize);
      } else {
        WorkRequest wr;
        wr.opcode = WorkOpcode::kWrite;
        wr.local = buffer;
        wr.lkey = staging_region_.lkey;
        wr.length = static_cast<uint32_t>(kPageSize);
        wr.remote_addr = m.store_addr;
        wr.rkey = m.rkey;
        SyncBatch batch;
        absl::Status s = fetcher_.PostSync(peer, &wr, batch);
        if (s.ok()) s = batch.Wait();
        if (!s.ok()) {
          Error("writing page %d of %s back to its home, rank %d, failed: %s",
                m.page, ds->Describe(), peer, s.message());
          error = EIO;
        }
      }
      absl::MutexLock lock(&mutex_);
      ++stats_.writebacks;
    }
  }
  hp::ScRecalled r{m.alloc_id, error, m.page};
  Send(peer, hp::kScRecalled, hp::AsBytes(r));
}

void SequentialConsistency::OnGrant(int peer, absl::Span<const char> body) {
  hp::ScGrant m;
  if (!hp::Parse(body, &m)) {
    Warning("sequential consistency: rank %d sent a malformed grant; dropped",
            peer);
    return;
  }
  std::optional<FaultPlan> plan = service_.TakePlan(
      m.slot, FaultPlan::Step::kAwaitingReply, hp::kScGrant, peer, m.page);
  if (!plan) {
    Warning("sequential consistency: rank %d granted page %d to slot %u, "
            "which waits for no such grant; ignored",
            peer, m.page, m.slot);
    return;
  }
  auto* ds = static_cast<DistributedDataspace*>(plan->manager);
  const PageRequest& request = plan->request;
  if (m.error != 0) {
    request.completion_queue->Post(OutcomeCompletion(
        request, Resolution::kFailed,
        absl::DataLossError(absl::StrFormat(
            "page %d of %s cannot be provided by its home, rank %d: %s (its "
            "log says more)",
            m.page, ds->Describe(), peer,
            m.error == EIO
                ? absl::StrFormat("its latest contents died with rank %d, "
                                  "which held it for writing",
                                  m.lost_by)
                : std::string(strerror(m.error))))));
    return;
  }
  if (request.upgrade) {
    // The read copy here is current (a recall would have dropped it, and
    // then this answer is asked again): allow the write.
    request.completion_queue->Post(
        OutcomeCompletion(request, Resolution::kWritable));
    return;
  }
  if (peer == self_) {
    request.completion_queue->Post(DataCompletion(
        request, reinterpret_cast<const void*>(m.store_addr),
        /*write_protect=*/!m.write));
    return;
  }
  // Granted for writing: installed writable (this rank owns the page).
  fetcher_.Read(request, peer, m.store_addr, /*write_protect=*/m.write == 0,
                ds, m.page, m.rkey);
}

}  // namespace pagewire
