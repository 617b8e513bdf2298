// home_manager.cc - fetch, claim and directory messages.
#include "runtime/dsm/home_manager.h"

#include <cerrno>
#include <cstring>

#include "runtime/dsm/home_protocol.h"
#include "runtime/base/log.h"
#include "runtime/base/page.h"

namespace pagewire {

namespace hp = home_protocol;

HomeManager::HomeManager(Transport& transport, MessageRouter& router,
                         FaultService& service, int self, int nranks)
    : transport_(transport),
      router_(router),
      service_(service),
      self_(self),
      nranks_(nranks) {
  absl::Status s = router_.Register(
      {hp::kFetch, hp::kClaim},
      [this](int peer, uint16_t type, absl::Span<const char> body) {
        OnMessage(peer, type, body);
      });
  if (!s.ok()) Error("home manager: %s", s.message());
}

HomeManager::~HomeManager() { router_.Unregister({hp::kFetch, hp::kClaim}); }

void HomeManager::AddDataspace(DistributedDataspace* ds) {
  absl::MutexLock lock(&mutex_);
  dataspaces_[ds->id()] = ds;
}

void HomeManager::RemoveDataspace(uint32_t id) {
  absl::MutexLock lock(&mutex_);
  dataspaces_.erase(id);
  directory_.erase(id);
}

DistributedDataspace* HomeManager::Find(uint32_t id) const {
  auto it = dataspaces_.find(id);
  return it == dataspaces_.end() ? nullptr : it->second;
}

void HomeManager::OnMessage(int peer, uint16_t type,
                            absl::Span<const char> body) {
  if (type == hp::kFetch) {
    OnFetch(peer, body);
  } else {
    OnClaim(peer, body);
  }
}

void HomeManager::OnFetch(int peer, absl::Span<const char> body) {
  hp::Fetch m;
  if (!hp::Parse(body, &m)) {
    Warning("home manager: rank %d sent a malformed fetch; dropped", peer);
    return;
  }
  FaultService* service = &service_;
  uint64_t offset;
  DistributedDataspace* ds;
  {
    absl::MutexLock lock(&mutex_);
    ds = Find(m.alloc_id);
    if (ds == nullptr || m.page >= ds->placement().pages ||
        peer < 0 || peer >= nranks_) {
      Warning("home manager: rank %d asked for page %d of allocation %d, which "
              "does not exist here",
              peer, m.page, m.alloc_id);
      hp::Ready r{m.slot, EINVAL, m.page, 0, 0};
      (void)transport_.SendMessage(peer, hp::kReady, hp::AsBytes(r));
      return;
    }
    offset = ds->global_addr() - service_.base() + m.page * kPageSize;
    ++fetches_served_;
  }
  // Make the home copy resident as if this rank had touched it: its backing
  // answers asynchronously, and the answer goes out when it is installed.
  Transport* transport = &transport_;
  HomeManager* self = this;
  service->Prefetch(offset, [=](const absl::Status& prefetched) {
    absl::Status s = prefetched;
    uint32_t rkey = 0;
    if (s.ok() && ds->has_page_keys()) {
      // First touch on verbs: the page gets its key now, while it is
      // resident and (before the tracking below) still writable.
      absl::StatusOr<uint32_t> key = ds->RegisterOwnedPage(m.page);
      if (key.ok()) {
        rkey = *key;
      } else {
        s = key.status();
      }
    }
    if (s.ok()) {
      // Register the cacher and track the home's own writes from now on,
      // before the requester can READ: a write after this faults and is
      // recorded, a write before it is in what the requester reads.
      self->AddCacher(m.alloc_id, m.page, peer);
      if (!ds->Tracked(m.page)) {
        ds->MarkTracked(m.page);
        absl::Status wp = service->WriteProtect(offset, kPageSize, true);
        if (!wp.ok()) Error("home manager: %s", wp.message());
      }
    } else {
      Error("home manager: page %d of allocation %d, asked for by rank %d, "
            "cannot be provided: %s",
            m.page, m.alloc_id, peer, s.message());
    }
    hp::Ready r{m.slot, s.ok() ? 0 : EIO, m.page, rkey, 0};
    (void)transport->SendMessage(peer, hp::kReady, hp::AsBytes(r));
  });
}

void HomeManager::OnClaim(int peer, absl::Span<const char> body) {
  hp::Claim m;
  if (!hp::Parse(body, &m) || peer < 0 || peer >= nranks_) {
    Warning("home manager: rank %d sent a malformed claim; dropped", peer);
    return;
  }
  int owner;
  {
    absl::MutexLock lock(&mutex_);
    DistributedDataspace* ds = Find(m.alloc_id);
    if (ds == nullptr || m.page >= ds->placement().pages ||
        ds->placement().DirectoryOf(m.page) != self_) {
      Warning("home manager: rank %d claimed page %d of allocation %d, whose "
              "ownership is not recorded here; dropped",
              peer, m.page, m.alloc_id);
      return;
    }
    owner = ds->ClaimAtDirectory(m.page, peer);
  }
  hp::Claimed r{m.slot, owner, m.page};
  (void)transport_.SendMessage(peer, hp::kClaimed, hp::AsBytes(r));
}

void HomeManager::AddCacher(uint32_t id, uint64_t page, int rank) {
  absl::MutexLock lock(&mutex_);
  std::vector<uint64_t>& bits = directory_[id][page];
  bits.resize((nranks_ + 63) / 64);
  bits[rank / 64] |= uint64_t{1} << (rank % 64);
}

std::vector<std::vector<uint64_t>> HomeManager::CachersOf(
    absl::Span<const hp::PageRef> pages) const {
  std::vector<std::vector<uint64_t>> bits(pages.size());
  absl::MutexLock lock(&mutex_);
  for (size_t i = 0; i < pages.size(); ++i) {
    auto a = directory_.find(pages[i].alloc_id);
    if (a == directory_.end()) continue;
    auto p = a->second.find(pages[i].page);
    if (p != a->second.end()) bits[i] = p->second;
  }
  return bits;
}

uint64_t HomeManager::fetches_served() const {
  absl::MutexLock lock(&mutex_);
  return fetches_served_;
}

}  // namespace pagewire
