// region_map.cc - attach/detach bookkeeping and fault translation.
#include "runtime/memory/region_map.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "runtime/fault/completion_queue.h"
#include "runtime/base/page.h"

namespace pagewire {

class RegionMap::NestedListener final : public RegionMap::Listener {
 public:
  NestedListener(RegionMap& parent, uint64_t at, uint64_t size,
                 uint64_t ds_offset)
      : parent_(parent), at_(at), size_(size), ds_offset_(ds_offset) {}

  void BackingChanged(uint64_t offset, uint64_t size) override {
    // Clip the nested map's change to the window this region shows of it.
    uint64_t lo = std::max(offset, ds_offset_);
    uint64_t hi = std::min(offset + size, ds_offset_ + size_);
    if (lo >= hi) return;
    parent_.Notify(at_ + (lo - ds_offset_), hi - lo);
  }

 private:
  RegionMap& parent_;
  const uint64_t at_, size_, ds_offset_;
};

RegionMap::RegionMap(uint64_t size, std::string name)
    : size_(PageUp(size)), name_(std::move(name)) {}

RegionMap::~RegionMap() {
  // Unhook from nested maps so they never call into a destroyed parent.
  std::map<uint64_t, Region> regions;
  std::map<uint64_t, std::unique_ptr<NestedListener>> nested;
  {
    absl::MutexLock lock(&mutex_);
    regions.swap(regions_);
    nested.swap(nested_);
  }
  for (auto& [end, region] : regions) {
    auto it = nested.find(region.at);
    if (it != nested.end()) {
      region.dataspace->AsRegionMap()->RemoveListener(it->second.get());
    }
  }
}

bool RegionMap::WouldCycle(Dataspace& ds) {
  RegionMap* map = ds.AsRegionMap();
  if (map == nullptr) return false;
  if (map == this) return true;
  std::vector<std::shared_ptr<Dataspace>> children;
  {
    absl::ReaderMutexLock lock(&map->mutex_);
    for (const auto& [end, region] : map->regions_) {
      children.push_back(region.dataspace);
    }
  }
  for (const auto& child : children) {
    if (WouldCycle(*child)) return true;
  }
  return false;
}

absl::StatusOr<uint64_t> RegionMap::AttachedSize(const Dataspace& ds,
                                                 const AttachArgs& args) const {
  const uint64_t ds_size = ds.size();
  if (!PageAligned(args.ds_offset) || !PageAligned(args.size) ||
      (args.at && !PageAligned(*args.at))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "attach %s to %s: offset 0x%x, size 0x%x and position 0x%x must be "
        "multiples of the page size (%d bytes)",
        ds.Describe(), name_, args.ds_offset, args.size, args.at.value_or(0),
        kPageSize));
  }
  if (args.ds_offset >= ds_size) {
    return absl::OutOfRangeError(absl::StrFormat(
        "attach %s to %s: offset 0x%x is beyond the dataspace's size 0x%x",
        ds.Describe(), name_, args.ds_offset, ds_size));
  }
  const uint64_t size = args.size ? args.size : ds_size - args.ds_offset;
  if (size > ds_size - args.ds_offset) {
    return absl::OutOfRangeError(absl::StrFormat(
        "attach %s to %s: 0x%x bytes from offset 0x%x exceed the dataspace's "
        "size 0x%x",
        ds.Describe(), name_, size, args.ds_offset, ds_size));
  }
  return size;
}

absl::StatusOr<uint64_t> RegionMap::PlaceLocked(const Dataspace& ds,
                                                const AttachArgs& args,
                                                uint64_t size) const {
  uint64_t at;
  if (args.at) {
    at = *args.at;
    if (at > size_ || size > size_ - at) {
      return absl::OutOfRangeError(absl::StrFormat(
          "attach %s to %s: [0x%x, 0x%x) lies outside the map's 0x%x bytes",
          ds.Describe(), name_, at, at + size, size_));
    }
    auto it = regions_.upper_bound(at);  // first region ending after `at`
    if (it != regions_.end() && it->second.at < at + size) {
      return absl::AlreadyExistsError(absl::StrFormat(
          "attach %s to %s: [0x%x, 0x%x) overlaps the region [0x%x, 0x%x) "
          "of %s; detach it first or attach elsewhere",
          ds.Describe(), name_, at, at + size, it->second.at,
          it->second.at + it->second.size,
          it->second.dataspace->Describe()));
    }
  } else {
    // First fit, lowest address.
    uint64_t candidate = 0;
    bool found = false;
    for (const auto& [end, region] : regions_) {
      if (region.at >= candidate && region.at - candidate >= size) {
        found = true;
        break;
      }
      candidate = end;
    }
    if (!found && (candidate > size_ || size_ - candidate < size)) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "attach %s to %s: no free range of 0x%x bytes is left; free "
          "something or configure a larger map",
          ds.Describe(), name_, size));
    }
    at = candidate;
  }
  return at;
}

absl::StatusOr<uint64_t> RegionMap::Attach(std::shared_ptr<Dataspace> ds,
                                           AttachArgs args) {
  if (ds == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("attach to %s: the dataspace is null", name_));
  }
  absl::StatusOr<uint64_t> sized = AttachedSize(*ds, args);
  if (!sized.ok()) return sized.status();
  const uint64_t size = *sized;
  if (WouldCycle(*ds)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "attach %s to %s: the region map would contain itself; attach a "
        "different map",
        ds->Describe(), name_));
  }
  uint64_t at;
  {
    absl::MutexLock lock(&mutex_);
    absl::StatusOr<uint64_t> placed = PlaceLocked(*ds, args, size);
    if (!placed.ok()) return placed.status();
    at = *placed;
    regions_.emplace(at + size, Region{at, size, args.ds_offset, ds});
    if (RegionMap* nested = ds->AsRegionMap()) {
      auto listener =
          std::make_unique<NestedListener>(*this, at, size, args.ds_offset);
      nested->AddListener(listener.get());
      nested_.emplace(at, std::move(listener));
    }
  }
  Notify(at, size);
  return at;
}

absl::Status RegionMap::Detach(uint64_t at) {
  Region region;
  std::unique_ptr<NestedListener> listener;
  {
    absl::MutexLock lock(&mutex_);
    auto it = regions_.upper_bound(at);
    if (it == regions_.end() || it->second.at != at) {
      return absl::NotFoundError(absl::StrFormat(
          "detach from %s: no region starts at 0x%x", name_, at));
    }
    region = std::move(it->second);
    regions_.erase(it);
    auto n = nested_.find(at);
    if (n != nested_.end()) {
      listener = std::move(n->second);
      nested_.erase(n);
    }
  }
  if (listener) region.dataspace->AsRegionMap()->RemoveListener(listener.get());
  Notify(region.at, region.size);
  return absl::OkStatus();
}

std::optional<RegionMap::Region> RegionMap::Lookup(uint64_t offset) const {
  absl::ReaderMutexLock lock(&mutex_);
  auto it = regions_.upper_bound(offset);
  if (it == regions_.end() || !it->second.Contains(offset)) return std::nullopt;
  return it->second;
}

void RegionMap::RequestPage(const PageRequest& request) {
  {
    absl::ReaderMutexLock lock(&mutex_);
    auto it = regions_.upper_bound(request.offset);
    if (it != regions_.end() && it->second.Contains(request.offset)) {
      const Region& r = it->second;
      // Forwarding never waits for the answer; holding the reader lock only
      // keeps the region alive while the request is handed over.
      r.dataspace->RequestPage(request.WithinRegion(r.at, r.ds_offset));
      return;
    }
  }
  request.completion_queue->Post(OutcomeCompletion(
      request, Resolution::kNoRegion,
      absl::NotFoundError(absl::StrFormat(
          "offset 0x%x of %s is not backed by any attached dataspace",
          request.offset, name_))));
}

void RegionMap::AddListener(Listener* listener) {
  absl::MutexLock lock(&listeners_mutex_);
  listeners_.push_back(listener);
}

void RegionMap::RemoveListener(Listener* listener) {
  absl::MutexLock lock(&listeners_mutex_);
  listeners_.erase(std::remove(listeners_.begin(), listeners_.end(), listener),
                   listeners_.end());
}

void RegionMap::Notify(uint64_t offset, uint64_t size) {
  // Held while calling out, so a listener is never called after its removal.
  absl::MutexLock lock(&listeners_mutex_);
  for (Listener* l : listeners_) l->BackingChanged(offset, size);
}

}  // namespace pagewire
