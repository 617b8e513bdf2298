// coordinator_dataspaces.cc - the coordinator's registry of collective
// dataspaces: creates that every rank makes with the same arguments, the
// global range they are placed in, frees, and look-ups by address.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/base/log.h"
#include "runtime/base/page.h"
#include "runtime/control/coordinator.h"

namespace pagewire::control {

absl::Status Coordinator::CheckCreate(
    const proto::CreateDataspaceRequest& request) const {
  const int rank = request.rank();
  const uint64_t seq = request.collective_seq();
  if (request.length() == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "collective create %d from rank %d: length is 0; a dataspace needs "
        "at least one byte",
        seq, rank));
  }
  // Also keeps PageUp(length) from wrapping around to 0.
  if (request.length() > config_.global_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "collective create %d from rank %d: length %d is more than the whole "
        "global range (%d bytes); allocate less or start the coordinator "
        "with a larger --global-size",
        seq, rank, request.length(), config_.global_size));
  }
  if (!proto::Placement_IsValid(request.placement())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "collective create %d from rank %d: placement %d is not one of "
        "BLOCK, CYCLIC, ON_RANK, FIRST_TOUCH",
        seq, rank, static_cast<int>(request.placement())));
  }
  if (request.placement() == proto::ON_RANK &&
      (request.home_rank() < 0 || request.home_rank() >= config_.nranks)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "collective create %d from rank %d: ON_RANK placement needs a "
        "home_rank in 0..%d, got %d",
        seq, rank, config_.nranks - 1, request.home_rank()));
  }
  return absl::OkStatus();
}

absl::StatusOr<proto::Dataspace> Coordinator::JoinCreateLocked(
    const CollectiveCreate& c, const proto::CreateDataspaceRequest& request) {
  const int rank = request.rank();
  const uint64_t seq = request.collective_seq();
  auto mismatch = [&](const char* field, const std::string& mine,
                      const std::string& first) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "collective create %d: rank %d passed %s=%s but rank %d (the first "
        "caller) passed %s=%s; every rank must call a collective create "
        "with the same arguments",
        seq, rank, field, mine, c.first_rank, field, first));
  };
  if (request.length() != c.args.length()) {
    return mismatch("length", absl::StrCat(request.length()),
                    absl::StrCat(c.args.length()));
  }
  if (request.placement() != c.args.placement()) {
    return mismatch("placement", proto::Placement_Name(request.placement()),
                    proto::Placement_Name(c.args.placement()));
  }
  if (request.sequential() != c.args.sequential()) {
    return mismatch("sequential (pw_alloc_sc vs pw_alloc)",
                    request.sequential() ? "true" : "false",
                    c.args.sequential() ? "true" : "false");
  }
  if (request.placement() == proto::ON_RANK &&
      request.home_rank() != c.args.home_rank()) {
    return mismatch("home_rank", absl::StrCat(request.home_rank()),
                    absl::StrCat(c.args.home_rank()));
  }
  auto ds = dataspaces_.find(c.id);
  if (ds == dataspaces_.end()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "collective create %d from rank %d: its dataspace %d was already "
        "freed by every live rank; call collective creates in the same "
        "order on every rank",
        seq, rank, c.id));
  }
  ds->second.joined_by.insert(rank);
  return ds->second.dataspace;
}

absl::StatusOr<proto::Dataspace> Coordinator::CreateDataspace(
    const proto::CreateDataspaceRequest& request) {
  if (absl::Status s = CheckCreate(request); !s.ok()) return s;
  const int rank = request.rank();
  const uint64_t seq = request.collective_seq();
  absl::MutexLock l(&mu_);
  if (absl::Status s = CheckAliveLocked(rank, "CreateDataspace"); !s.ok()) {
    return s;
  }
  if (auto it = creates_.find(seq); it != creates_.end()) {
    return JoinCreateLocked(it->second, request);
  }
  const uint64_t length = PageUp(request.length());
  absl::StatusOr<uint64_t> addr = AllocateRangeLocked(length);
  if (!addr.ok()) return addr.status();
  const uint32_t id = next_dataspace_id_++;
  DataspaceRecord& rec = dataspaces_[id];
  rec.dataspace.set_id(id);
  rec.dataspace.set_addr(*addr);
  rec.dataspace.set_length(length);
  rec.dataspace.set_placement(request.placement());
  rec.dataspace.set_home_rank(
      request.placement() == proto::ON_RANK ? request.home_rank() : -1);
  rec.dataspace.set_page_size(static_cast<uint32_t>(kPageSize));
  rec.dataspace.set_sequential(request.sequential());
  rec.joined_by.insert(rank);
  creates_[seq] = CollectiveCreate{rank, request, id};
  Debug("coordinator: dataspace %d = [0x%x, 0x%x) %s, collective create %d "
      "(first caller rank %d)",
      id, *addr, *addr + length, proto::Placement_Name(request.placement()),
      seq, rank);
  return rec.dataspace;
}

absl::StatusOr<uint64_t> Coordinator::AllocateRangeLocked(
    uint64_t length) const {
  std::vector<std::pair<uint64_t, uint64_t>> used;  // (addr, length)
  used.reserve(dataspaces_.size());
  uint64_t in_use = 0;
  for (const auto& [id, rec] : dataspaces_) {
    used.emplace_back(rec.dataspace.addr(), rec.dataspace.length());
    in_use += rec.dataspace.length();
  }
  std::sort(used.begin(), used.end());
  const uint64_t end = config_.global_base + config_.global_size;
  uint64_t cursor = config_.global_base;
  for (const auto& [addr, len] : used) {
    if (addr - cursor >= length) return cursor;  // first fit
    cursor = addr + len;
  }
  if (end - cursor >= length) return cursor;
  return absl::ResourceExhaustedError(absl::StrFormat(
      "the global range (%d bytes, %d in use by %d dataspaces) has no free "
      "gap of %d bytes; free dataspaces or start the coordinator with a "
      "larger --global-size",
      config_.global_size, in_use, dataspaces_.size(), length));
}

absl::Status Coordinator::FreeDataspace(
    const proto::FreeDataspaceRequest& request) {
  absl::MutexLock l(&mu_);
  if (absl::Status s = CheckAliveLocked(request.rank(), "FreeDataspace");
      !s.ok()) {
    return s;
  }
  auto it = dataspaces_.find(request.id());
  if (it == dataspaces_.end()) {
    return absl::NotFoundError(absl::StrFormat(
        "FreeDataspace from rank %d: no dataspace with id %d (never created, "
        "or already freed by every live rank)",
        request.rank(), request.id()));
  }
  it->second.freed_by.insert(request.rank());
  ReleaseFreedLocked();
  return absl::OkStatus();
}

void Coordinator::ReleaseFreedLocked() {
  for (auto it = dataspaces_.begin(); it != dataspaces_.end();) {
    // Every live rank that has the dataspace freed it (a rank whose part of
    // the collective create failed never had it).
    bool all = !it->second.freed_by.empty();
    for (int r : it->second.joined_by) {
      if (slots_[r].joined && LiveLocked(r) && it->second.freed_by.count(r) == 0) {
        all = false;
        break;
      }
    }
    if (!all) {
      ++it;
      continue;
    }
    Debug("coordinator: dataspace %d released (freed by every live rank)",
        it->first);
    it = dataspaces_.erase(it);
  }
}

absl::StatusOr<proto::Dataspace> Coordinator::LookupDataspace(
    const proto::LookupDataspaceRequest& request) const {
  absl::MutexLock l(&mu_);
  switch (request.key_case()) {
    case proto::LookupDataspaceRequest::kId: {
      auto it = dataspaces_.find(request.id());
      if (it == dataspaces_.end()) {
        return absl::NotFoundError(absl::StrFormat(
            "no dataspace with id %d (never created, or already freed by "
            "every live rank)",
            request.id()));
      }
      return it->second.dataspace;
    }
    case proto::LookupDataspaceRequest::kAddr: {
      const uint64_t a = request.addr();
      for (const auto& [id, rec] : dataspaces_) {
        const proto::Dataspace& d = rec.dataspace;
        if (a >= d.addr() && a - d.addr() < d.length()) return d;
      }
      const bool inside = a >= config_.global_base &&
                          a - config_.global_base < config_.global_size;
      return absl::NotFoundError(absl::StrFormat(
          "address 0x%x is not inside any dataspace%s", a,
          inside ? "" : absl::StrFormat(" (nor inside the global range "
                                        "[0x%x, 0x%x))",
                                        config_.global_base,
                                        config_.global_base +
                                            config_.global_size)));
    }
    default:
      return absl::InvalidArgumentError(
          "LookupDataspace needs a key: set either id or addr");
  }
}

}  // namespace pagewire::control
