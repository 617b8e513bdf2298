// fuzz_rank.h - one rank of a four-rank job, in-process, for the message
// fuzzers: its fault service over a private global range, root region map,
// message router, remote fetcher, home manager, release consistency and
// sequential consistency, wired as a node wires them (runtime/runtime.cc),
// with one allocation of every placement and one sequentially consistent
// one. The other ranks are played by the fuzzer through FakePeerTransport:
// Deliver() hands a message to the rank's router as the transport's
// receive thread would, so the real handlers parse and act on it.
//
// Each input gets a fresh rank (FuzzRank lives for one input), so a finding
// reproduces from its input alone.
#ifndef PAGEWIRE_TESTS_FUZZ_FUZZ_RANK_H_
#define PAGEWIRE_TESTS_FUZZ_FUZZ_RANK_H_

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "runtime/base/log.h"
#include "runtime/base/page.h"
#include "runtime/coherence/coherence.h"
#include "runtime/coherence/sequential_consistency.h"
#include "runtime/dsm/distributed_dataspace.h"
#include "runtime/dsm/home_manager.h"
#include "runtime/dsm/home_protocol.h"
#include "runtime/dsm/remote_fetcher.h"
#include "runtime/fault/fault_service.h"
#include "runtime/fault/userfaultfd.h"
#include "runtime/memory/region_map.h"
#include "runtime/testing/fake_peer_transport.h"
#include "runtime/transport/message_router.h"
#include "tests/fuzz/fuzz_input.h"

namespace pagewire::fuzz {

class FuzzRank {
 public:
  static constexpr uintptr_t kBase = uintptr_t{0x3300} << 32;
  static constexpr uint64_t kSize = uint64_t{2} << 20;
  static constexpr int kSelf = 0;
  static constexpr int kRanks = 4;
  // The allocations, ids 1..kAllocations: block, cyclic, on this rank, on
  // rank 1, first touch, sequentially consistent (block), each kPages.
  static constexpr uint32_t kAllocations = 6;
  static constexpr uint64_t kPages = 16;
  static_assert(kAllocations * kPages * kPageSize <= kSize);

  // Once per process: the runtime's warnings about malformed messages are
  // the expected outcome of almost every input; they go nowhere. Exits 77
  // with "SKIP: why" where userfaultfd is not usable (run_fuzzer.sh).
  static void InitializeOnce() {
    SetLogSink([](LogLevel, absl::string_view) {});
    auto uffd = Userfaultfd::Open(UffdSyscalls::Kernel());
    if (!uffd.ok()) {
      std::fprintf(stderr, "SKIP: %s\n",
                   std::string(uffd.status().message()).c_str());
      std::exit(77);
    }
  }

  FuzzRank() {
    transport_ = std::make_unique<testing::FakePeerTransport>(kBase, kSize, kRanks);
    transport_->SetMessageHandler(router_.AsHandler());
    fetcher_ = std::make_unique<RemoteFetcher>(*transport_, router_, kSelf, kRanks);
    root_ = std::make_shared<RegionMap>(kSize, "fuzz root");
    FaultServiceConfig fs;
    fs.base = kBase;
    fs.size = kSize;
    fs.sources = {fetcher_.get()};
    service_ = Check(FaultService::Start(fs, *root_), "fault service");
    root_->AddListener(service_.get());
    home_ = std::make_unique<HomeManager>(*transport_, router_, *service_, kSelf,
                                          kRanks);
    fetcher_->SetLanding(Check(transport_->RegisterMemory(
                                   service_->landing_area(),
                                   service_->landing_bytes()),
                               "landing area"));
    coherence_ = std::make_unique<Coherence>(kSelf, kRanks, *transport_, router_,
                                             *fetcher_, *service_, *home_);
    Check(coherence_->Start(), "coherence");
    sequential_ = std::make_unique<SequentialConsistency>(
        kSelf, kRanks, *transport_, router_, *fetcher_, *service_);
    Check(sequential_->Start(), "sequential consistency");
    AddAllocation(1, Placement::kBlock, 0, false);
    AddAllocation(2, Placement::kCyclic, 0, false);
    AddAllocation(3, Placement::kOnRank, kSelf, false);
    AddAllocation(4, Placement::kOnRank, 1, false);
    AddAllocation(5, Placement::kFirstTouch, 0, false);
    AddAllocation(6, Placement::kBlock, 0, true);
  }

  // Torn down as the node does (Runtime::~Runtime): faults stop first; the
  // allocations leave the managers (the sequential-consistency thread
  // stops) before they are freed, while messages may still arrive.
  ~FuzzRank() {
    service_->Stop();
    root_->RemoveListener(service_.get());
    sequential_.reset();
    for (const auto& ds : allocations_) {
      home_->RemoveDataspace(ds->id());
      coherence_->RemoveDataspace(ds->id());
    }
    root_.reset();
    allocations_.clear();
    coherence_.reset();
    home_.reset();
    fetcher_.reset();
    transport_.reset();
    service_.reset();
  }

  // Peer `peer` (1..kRanks-1) sends a message.
  void Deliver(int peer, uint16_t type, const std::string& body) {
    transport_->Deliver(peer, type, absl::Span<const char>(body.data(), body.size()));
  }

  // This rank touches `page` of allocation `id` (read access), as a thread
  // would, without waiting: a page of another rank becomes a request that
  // waits for that rank's answer (a kReady, kClaimed or kScGrant the fuzzer
  // may send).
  void Touch(uint32_t id, uint64_t page) {
    if (id < 1 || id > kAllocations) return;
    const uint64_t offset = ((id - 1) * kPages + page % kPages) * kPageSize;
    service_->Prefetch(offset, [](const absl::Status&) {});
  }

  // Membership declares `peer` dead, as the node tells its parts.
  void PeerDied(int peer) {
    const std::string why = "the fuzzer declared it dead";
    transport_->PeerDied(peer);
    fetcher_->PeerDied(peer, why);
    coherence_->PeerDied(peer, why);
    sequential_->PeerDied(peer, why);
  }

 private:
  template <typename T>
  static T Check(absl::StatusOr<T> v, const char* what) {
    if (!v.ok()) Die(what, v.status());
    return *std::move(v);
  }
  static void Check(const absl::Status& s, const char* what) {
    if (!s.ok()) Die(what, s);
  }
  [[noreturn]] static void Die(const char* what, const absl::Status& s) {
    std::fprintf(stderr, "fuzz rank: %s: %s\n", what, s.ToString().c_str());
    std::abort();
  }

  // As the collective allocation attaches one (Runtime::AttachAllocation):
  // this rank's home pages populated (unless first touch), every peer's
  // key known, the peers registered as cachers of nothing yet.
  void AddAllocation(uint32_t id, Placement placement, int home_rank,
                     bool sequential) {
    const uint64_t offset = (id - 1) * kPages * kPageSize;
    DistributedDataspace::Params p;
    p.id = id;
    p.global_addr = kBase + offset;
    p.size = kPages * kPageSize;
    p.placement.placement = placement;
    p.placement.pages = kPages;
    p.placement.nranks = kRanks;
    p.placement.home_rank = home_rank;
    p.self = kSelf;
    if (sequential) p.sequential = sequential_.get();
    auto ds = std::make_shared<DistributedDataspace>(p, *fetcher_,
                                                     coherence_.get());
    ds->SetGlobalBase(kBase);
    if (sequential) Check(sequential_->AddDataspace(ds.get()), "sc allocation");
    home_->AddDataspace(ds.get());
    coherence_->AddDataspace(ds.get());
    Check(root_->Attach(ds, {.at = offset}).status(), "attach");
    if (placement != Placement::kFirstTouch && !sequential) {
      DistributedDataspace* d = ds.get();
      Check(service_->Populate(offset, p.size,
                               [d, offset](uint64_t off) {
                                 return d->HomedHere((off - offset) / kPageSize);
                               }),
            "populate");
    }
    for (int peer = 0; peer < kRanks; ++peer) {
      if (peer == kSelf) continue;
      fetcher_->AddPeerRegion(peer, id, kBase + offset, p.size,
                              testing::FakePeerTransport::kPeerKey);
    }
    allocations_.push_back(ds);
  }

  MessageRouter router_;
  std::unique_ptr<testing::FakePeerTransport> transport_;
  std::unique_ptr<RemoteFetcher> fetcher_;
  std::shared_ptr<RegionMap> root_;
  std::unique_ptr<FaultService> service_;
  std::unique_ptr<HomeManager> home_;
  std::unique_ptr<Coherence> coherence_;
  std::unique_ptr<SequentialConsistency> sequential_;
  std::vector<std::shared_ptr<DistributedDataspace>> allocations_;
};

// A peer other than this rank.
inline int PickPeer(FuzzInput& in) {
  return 1 + static_cast<int>(in.Below(FuzzRank::kRanks - 1));
}

}  // namespace pagewire::fuzz

#endif  // PAGEWIRE_TESTS_FUZZ_FUZZ_RANK_H_
