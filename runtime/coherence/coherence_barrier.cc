// coherence_barrier.cc - the epoch barrier: one all-to-all round of
// written-page lists (with the pages pushed in it: coherence_push.cc).
#include <algorithm>
#include <cstring>

#include "absl/strings/cord.h"
#include "absl/strings/str_format.h"
#include "runtime/base/log.h"
#include "runtime/base/page.h"
#include "runtime/coherence/coherence.h"
#include "runtime/dsm/distributed_dataspace.h"
#include "runtime/dsm/home_manager.h"

namespace pagewire {

namespace hp = home_protocol;

namespace {

constexpr char kMismatchPayload[] = "pagewire/collective-mismatch";

bool ByPage(const hp::PageRef& a, const hp::PageRef& b) {
  return std::tie(a.alloc_id, a.page) < std::tie(b.alloc_id, b.page);
}

}  // namespace

absl::Status Coherence::Barrier() {
  if (absl::Status s = Release(); !s.ok()) return s;
  EpochRound round = BeginEpoch();
  FindCachers(round);
  PlanPushes(round);
  if (absl::Status s = SendEpochLists(round); !s.ok()) return s;
  if (absl::Status s = AwaitEpochLists(round); !s.ok()) {
    if (IsCollectiveMismatch(s)) UndoEpoch(round);
    return s;
  }
  if (absl::Status s = ProtectHomePages(round); !s.ok()) return s;
  return DropStaleCopies(round);
}

Coherence::EpochRound Coherence::BeginEpoch() {
  EpochRound round;
  round.subscribe.resize(nranks_);
  {
    absl::MutexLock lock(&mutex_);
    const uint64_t epoch = round.epoch = ++epoch_;
    round.generation = generation_;
    ++stats_.barriers;
    round.mine.swap(resend_);
    for (PageList& l : remote_written_barrier_) {
      round.mine.insert(round.mine.end(), l.begin(), l.end());
    }
    remote_written_barrier_.assign(nranks_, PageList());
    written_since_barrier_.clear();
    // Flushes still under way are this epoch's writes too (they reach
    // `mine` only when they end, after it is taken).
    flushed_since_barrier_.clear();
    absl::erase_if(lock_dropped_,
                   [epoch](const auto& d) { return d.second + 1 < epoch; });
    for (const auto& [offset, n] : flushing_) flushed_since_barrier_.insert(offset);
    round.subscribe.swap(subscribe_);
    subscribe_.assign(nranks_, PageList());
    // Its own pages: those it wrote (tracked) and the hot ones, which count
    // as written in every epoch because nothing sees their writes.
    // (A peer's diff applied here after this point is a write of the next
    // epoch as far as this rank is concerned; the peer reports it itself.)
    for (const auto& ref : home_written_barrier_) {
      round.mine.push_back(hp::PageRef{ref.first, 0, ref.second});
    }
    home_written_barrier_.clear();
    for (const auto& [ref, left] : hot_) {
      round.mine.push_back(hp::PageRef{ref.first, 0, ref.second});
    }
    for (const hp::PageRef& r : round.mine) {
      DistributedDataspace* ds = Find(r.alloc_id);
      if (ds != nullptr && ds->HomedHere(r.page)) {
        home_written_epoch_[{r.alloc_id, r.page}] = epoch;
      }
    }
    epochs_[epoch].writes_from.resize(nranks_);
  }
  PageList& mine = round.mine;
  std::sort(mine.begin(), mine.end(), ByPage);
  mine.erase(std::unique(mine.begin(), mine.end(),
                         [](const hp::PageRef& a, const hp::PageRef& b) {
                           return a.alloc_id == b.alloc_id && a.page == b.page;
                         }),
             mine.end());
  return round;
}

void Coherence::FindCachers(EpochRound& round) {
  // Who hears of which page. A page this rank homes goes only to the ranks
  // its directory lists as cachers (HomeManager::CachersOf): a rank READs
  // a page directly only after the home registered it, and never
  // unregisters, so a rank not listed holds no copy. One that registers
  // after this look is answered after this rank's writes of the epoch, so
  // the copy it then reads has them. Pages of other homes (this rank's
  // diffs) go to every rank: only their homes know who caches them. So a
  // list's length follows the sharing, not the number of ranks.
  const PageList& mine = round.mine;
  std::vector<char> own(mine.size(), 0);
  {
    absl::MutexLock lock(&mutex_);
    for (size_t i = 0; i < mine.size(); ++i) {
      DistributedDataspace* ds = Find(mine[i].alloc_id);
      own[i] = ds != nullptr && !ds->sequential() && ds->HomedHere(mine[i].page);
    }
  }
  PageList own_pages;
  for (size_t i = 0; i < mine.size(); ++i) {
    if (own[i]) own_pages.push_back(mine[i]);
  }
  round.own_cachers = home_.CachersOf(own_pages);
  round.cachers.assign(mine.size(), nullptr);
  for (size_t i = 0, k = 0; i < mine.size(); ++i) {
    if (own[i]) round.cachers[i] = &round.own_cachers[k++];
  }
}

bool Coherence::EpochRound::Tells(size_t i, int peer) const {
  if (cachers[i] == nullptr) return true;  // another home's page
  const std::vector<uint64_t>& bits = *cachers[i];
  const size_t word = static_cast<size_t>(peer) / 64;
  return word < bits.size() && (bits[word] >> (peer % 64) & 1) != 0;
}

absl::Status Coherence::SendEpochLists(EpochRound& round) {
  // The one round: tell every rank what it needs of what this rank wrote
  // (possibly nothing), with the pages it subscribed to and its
  // subscriptions with it. Pushed pages first (they fill the first parts),
  // then the rest of the list, then the subscriptions.
  const PageList& mine = round.mine;
  uint64_t notices = 0, pushes = 0;
  PageList list;
  std::vector<const char*> contents;
  for (int peer = 0; peer < nranks_; ++peer) {
    if (peer == self_) continue;
    list.clear();
    contents.clear();
    std::vector<bool> pushed(mine.size());
    for (size_t i : round.push_to[peer]) {
      pushed[i] = true;
      list.push_back(hp::PageRef{mine[i].alloc_id, hp::kRefPushed, mine[i].page});
      contents.push_back(round.snapshots[i].get());
    }
    pushes += round.push_to[peer].size();
    for (size_t i = 0; i < mine.size(); ++i) {
      if (!pushed[i] && round.Tells(i, peer)) list.push_back(mine[i]);
    }
    notices += list.size();
    const PageList& subscribe = round.subscribe[peer];
    list.insert(list.end(), subscribe.begin(), subscribe.end());
    contents.resize(list.size(), nullptr);
    const bool any_pushed = !round.push_to[peer].empty();
    const absl::Status sent =
        SendPageList(peer, hp::kEpochWrites, round.epoch, round.generation,
                     list, 0, any_pushed ? &contents : nullptr);
    if (!sent.ok()) {
      // A rank the barrier cannot reach ends it, naming the rank.
      absl::MutexLock lock(&mutex_);
      epochs_.erase(round.epoch);
      return absl::UnavailableError(absl::StrFormat(
          "barrier cannot complete: rank %d is unreachable: %s", peer,
          dead_[peer] ? death_[peer] : std::string(sent.message())));
    }
  }
  absl::MutexLock lock(&mutex_);
  stats_.pushes_sent += pushes;
  stats_.notices_sent += notices;
  return absl::OkStatus();
}

absl::Status Coherence::AwaitEpochLists(EpochRound& round) {
  absl::MutexLock lock(&mutex_);
  EpochState& st = epochs_[round.epoch];
  auto all_arrived = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    for (int r = 0; r < nranks_; ++r) {
      if (r != self_ && !st.writes_from[r]) return false;
    }
    return true;
  };
  absl::Status s = AwaitPeers(
      [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
        return all_arrived() || MismatchedRankLocked(st) >= 0;
      },
      "barrier");
  if (s.ok() && !all_arrived()) {
    const int r = MismatchedRankLocked(st);
    s = absl::FailedPreconditionError(absl::StrFormat(
        "rank %d called %s while rank %d called pw_barrier; every rank must "
        "make the same collective calls in the same order",
        r, announced_call_[r], self_));
    s.SetPayload(kMismatchPayload, absl::Cord(announced_call_[r]));
  }
  round.written.swap(st.written);
  round.pushed.swap(st.pushed);
  epochs_.erase(round.epoch);
  return s;
}

absl::Status Coherence::ProtectHomePages(const EpochRound& round) {
  // As a home: the pages of its own written this epoch, by anyone, are
  // protected again (tracked) so the next epoch's writes are seen; hot ones
  // only when their probe is due.
  std::vector<uint64_t> protect;
  {
    absl::MutexLock lock(&mutex_);
    auto protect_page = [&](uint32_t id, uint64_t page)
                            ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
      DistributedDataspace* ds = Find(id);
      if (ds == nullptr || !ds->HomedHere(page)) return;
      if (auto hot = hot_.find({id, page}); hot != hot_.end()) {
        if (--hot->second > 0) return;
        hot_.erase(hot);
        hot_probes_[{id, page}].probed = round.epoch;
      }
      protect.push_back(ds->global_addr() - service_.base() + page * kPageSize);
    };
    for (const hp::PageRef& r : round.mine) protect_page(r.alloc_id, r.page);
    for (const auto& [writer, id, page] : round.written) {
      if (!std::binary_search(round.mine.begin(), round.mine.end(),
                              hp::PageRef{id, 0, page}, ByPage)) {
        protect_page(id, page);
      }
    }
  }
  std::sort(protect.begin(), protect.end());
  protect.erase(std::unique(protect.begin(), protect.end()), protect.end());
  for (uint64_t offset : protect) {
    if (absl::Status s = service_.WriteProtect(offset, kPageSize, true); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status Coherence::DropStaleCopies(EpochRound& round) {
  // As a cacher: every copy of a page another rank wrote is stale (a page
  // only this rank wrote is what its home has now, and is kept). A pushed
  // page replaces it if its home was its only writer and this rank did not
  // write it. Other threads of this rank may be writing some of these
  // copies (under locks, unrelated to the barrier): their writes go home
  // first (FlushAndDropCopies).
  auto& written = round.written;
  auto& pushed = round.pushed;
  std::sort(written.begin(), written.end(), [](const auto& a, const auto& b) {
    return std::tie(std::get<1>(a), std::get<2>(a), std::get<0>(a)) <
           std::tie(std::get<1>(b), std::get<2>(b), std::get<0>(b));
  });
  std::sort(pushed.begin(), pushed.end(), [](const Pushed& a, const Pushed& b) {
    return std::tie(a.alloc_id, a.page) < std::tie(b.alloc_id, b.page);
  });
  PageList stale;
  std::vector<const char*> contents;
  stale.reserve(written.size());
  auto next_push = pushed.begin();
  for (size_t i = 0; i < written.size();) {
    const auto [writer, id, page] = written[i];
    size_t end = i + 1;
    bool sole = true;
    for (; end < written.size() && std::get<1>(written[end]) == id &&
           std::get<2>(written[end]) == page;
         ++end) {
      sole &= std::get<0>(written[end]) == writer;
    }
    i = end;
    const hp::PageRef ref{id, 0, page};
    while (next_push != pushed.end() &&
           std::tie(next_push->alloc_id, next_push->page) < std::tie(id, page)) {
      ++next_push;
    }
    const char* from_home = nullptr;
    if (next_push != pushed.end() && next_push->alloc_id == id &&
        next_push->page == page && next_push->from == writer && sole &&
        !std::binary_search(round.mine.begin(), round.mine.end(), ref, ByPage)) {
      from_home = next_push->contents.get();
    }
    stale.push_back(ref);
    contents.push_back(from_home);
  }
  if (stale.empty()) return absl::OkStatus();
  MarkDroppedForGood(stale, contents);
  return FlushAndDropCopies(stale, /*at_barrier=*/true, contents, round.epoch);
}

// ---------------------------------------------------------------------------
// Barriers against control-plane collectives.

bool Coherence::IsCollectiveMismatch(const absl::Status& s) {
  return s.GetPayload(kMismatchPayload).has_value();
}

int Coherence::MismatchedRankLocked(const EpochState& st) const {
  for (int r = 0; r < nranks_; ++r) {
    if (r != self_ && !dead_[r] && announced_[r] > generation_ &&
        !st.writes_from[r]) {
      return r;
    }
  }
  return -1;
}

void Coherence::UndoEpoch(EpochRound& round) {
  absl::MutexLock lock(&mutex_);
  // The next barrier is this epoch again, on every rank, and tells this
  // one's writes and subscriptions with its own.
  if (epoch_ == round.epoch) --epoch_;
  resend_.insert(resend_.end(), round.mine.begin(), round.mine.end());
  for (int peer = 0; peer < nranks_; ++peer) {
    subscribe_[peer].insert(subscribe_[peer].end(),
                            round.subscribe[peer].begin(),
                            round.subscribe[peer].end());
  }
}

void Coherence::EnterCollective(uint64_t seq, const std::string& call) {
  std::vector<int> peers;
  {
    absl::MutexLock lock(&mutex_);
    generation_ = std::max(generation_, seq);
    // Lists of barriers this rank is not in: those barriers fail now.
    epochs_.erase(epochs_.upper_bound(epoch_), epochs_.end());
    for (int r = 0; r < nranks_; ++r) {
      if (r != self_ && !dead_[r]) peers.push_back(r);
    }
  }
  const std::string name = call.substr(0, hp::kMaxCallBytes);
  std::vector<char> body(sizeof(hp::CollectiveEntered) + name.size());
  hp::CollectiveEntered h{seq, static_cast<uint32_t>(name.size()), 0};
  std::memcpy(body.data(), &h, sizeof(h));
  std::memcpy(body.data() + sizeof(h), name.data(), name.size());
  for (int peer : peers) {
    // A peer that cannot be told is dead or going: membership fails what
    // waits on it.
    (void)transport_.SendMessage(peer, hp::kCollectiveEntered,
                                 absl::MakeConstSpan(body));
  }
}

void Coherence::OnCollectiveEntered(int peer, absl::Span<const char> body) {
  hp::CollectiveEntered h;
  if (peer < 0 || peer >= nranks_ || body.size() < sizeof(h)) {
    Warning("coherence: rank %d sent a malformed collective notice; dropped",
            peer);
    return;
  }
  std::memcpy(&h, body.data(), sizeof(h));
  if (h.call_bytes > hp::kMaxCallBytes ||
      body.size() != sizeof(h) + h.call_bytes) {
    Warning("coherence: rank %d sent a collective notice of %d bytes naming "
            "%d; dropped",
            peer, body.size(), h.call_bytes);
    return;
  }
  absl::MutexLock lock(&mutex_);
  if (h.seq <= announced_[peer]) return;
  announced_[peer] = h.seq;
  announced_call_[peer].assign(body.data() + sizeof(h), h.call_bytes);
}

}  // namespace pagewire
