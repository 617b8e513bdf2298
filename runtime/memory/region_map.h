// region_map.h - an address space of attached dataspaces, itself usable as a
// (managed) dataspace, as in Genode.
//
// A RegionMap attaches dataspaces at page-aligned offsets. A page request on
// the map is translated to the region that covers it and forwarded to that
// region's dataspace, which may be another RegionMap, to any depth. A request
// that no region covers is answered Resolution::kNoRegion.
//
// Whoever caches pages of a map (the fault service, or a parent map on its
// behalf) registers a Listener and is told which range changed its backing on
// every attach and detach, so stale pages can be dropped.
//
// Threads: all methods are thread-safe. RequestPage() holds a reader lock only
// while it forwards; it never waits for an answer. Listeners are called
// without the map's lock held.
#ifndef PAGEWIRE_RUNTIME_MEMORY_REGION_MAP_H_
#define PAGEWIRE_RUNTIME_MEMORY_REGION_MAP_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "runtime/memory/dataspace.h"

namespace pagewire {

class RegionMap final : public Dataspace {
 public:
  // Told of every range whose backing changes (a fault service).
  using Listener = BackingObserver;

  struct AttachArgs {
    // Where in the map; nullopt: the lowest free range that fits.
    std::optional<uint64_t> at;
    // How much of the dataspace; 0: from ds_offset to its end.
    uint64_t size = 0;
    uint64_t ds_offset = 0;  // where in the dataspace the region starts
  };

  // A region as seen by a fault: the part of a dataspace that backs
  // [at, at + size) of the map.
  struct Region {
    uint64_t at;
    uint64_t size;
    uint64_t ds_offset;
    std::shared_ptr<Dataspace> dataspace;
    bool Contains(uint64_t offset) const {
      return offset >= at && offset - at < size;
    }
  };

  explicit RegionMap(uint64_t size, std::string name = "region map");
  ~RegionMap() override;

  RegionMap(const RegionMap&) = delete;
  RegionMap& operator=(const RegionMap&) = delete;

  // Attaches `ds` and returns the offset where it was attached. Errors name
  // the problem: unaligned or out-of-range arguments, a conflict with an
  // existing region, or a nesting cycle.
  absl::StatusOr<uint64_t> Attach(std::shared_ptr<Dataspace> ds,
                                  AttachArgs args);
  // Detaches the region that starts at `at`.
  absl::Status Detach(uint64_t at);

  // The region covering `offset`, if any.
  std::optional<Region> Lookup(uint64_t offset) const;

  void AddListener(Listener* listener);
  void RemoveListener(Listener* listener);

  // Dataspace
  uint64_t size() const override { return size_; }
  void RequestPage(const PageRequest& request) override;
  std::string Describe() const override { return name_; }
  RegionMap* AsRegionMap() override { return this; }

 private:
  // Attach's steps: how many bytes of `ds` the region covers (or why the
  // arguments are bad), and where it goes (the asked position if free,
  // else the lowest free range that fits).
  absl::StatusOr<uint64_t> AttachedSize(const Dataspace& ds,
                                        const AttachArgs& args) const;
  absl::StatusOr<uint64_t> PlaceLocked(const Dataspace& ds,
                                       const AttachArgs& args,
                                       uint64_t size) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Relays a nested map's changes into this map's coordinates.
  class NestedListener;

  // True if `this` is reachable from `ds` through nested maps.
  bool WouldCycle(Dataspace& ds);
  void Notify(uint64_t offset, uint64_t size);

  const uint64_t size_;
  const std::string name_;

  mutable absl::Mutex mutex_;
  // Keyed by end offset (exclusive): upper_bound(offset) finds the only
  // region that can cover `offset` in one search.
  std::map<uint64_t, Region> regions_ ABSL_GUARDED_BY(mutex_);
  std::map<uint64_t, std::unique_ptr<NestedListener>> nested_
      ABSL_GUARDED_BY(mutex_);  // by region start

  absl::Mutex listeners_mutex_ ABSL_ACQUIRED_AFTER(mutex_);
  std::vector<Listener*> listeners_ ABSL_GUARDED_BY(listeners_mutex_);
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_MEMORY_REGION_MAP_H_
