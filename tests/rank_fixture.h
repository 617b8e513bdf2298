// rank_fixture.h - one rank of a job, in-process: its fault service over a
// private global range, root region map, message router, remote fetcher,
// home manager and release-consistency protocol, wired as a node wires
// them, against a peer the test plays (FakePeerTransport: the peer's global
// range is a buffer; the test reads the messages the rank sends and
// delivers the peer's). Tests add allocations as the collective allocation
// would.
#ifndef PAGEWIRE_TESTS_RANK_FIXTURE_H_
#define PAGEWIRE_TESTS_RANK_FIXTURE_H_

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "runtime/coherence/coherence.h"
#include "runtime/dsm/distributed_dataspace.h"
#include "runtime/dsm/home_manager.h"
#include "runtime/dsm/home_protocol.h"
#include "runtime/dsm/remote_fetcher.h"
#include "runtime/fault/fault_service.h"
#include "runtime/memory/region_map.h"
#include "runtime/testing/fake_peer_transport.h"
#include "runtime/transport/message_router.h"
#include "tests/fault_test_support.h"

namespace pagewire::testing {

class RankFixture : public ::testing::Test {
 public:
  static constexpr uintptr_t kBase = uintptr_t{0x3100} << 32;
  static constexpr uint64_t kSize = uint64_t{64} << 20;
  static constexpr int kSelf = 0;
  static constexpr int kPeer = 1;
  static constexpr int kRanks = 2;

 protected:

  void SetUp() override {
    std::string why;
    if (!UserfaultfdUsable(&why)) GTEST_SKIP() << why;
    transport_ = std::make_unique<FakePeerTransport>(kBase, kSize, kRanks);
    transport_->SetMessageHandler(router_.AsHandler());
    fetcher_ = std::make_unique<RemoteFetcher>(*transport_, router_, kSelf,
                                               kRanks);
    root_ = std::make_shared<RegionMap>(kSize, "test root");
    FaultServiceConfig fs;
    fs.base = kBase;
    fs.size = kSize;
    fs.sources = {fetcher_.get()};
    auto service = FaultService::Start(fs, *root_);
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = *std::move(service);
    root_->AddListener(service_.get());
    home_ = std::make_unique<HomeManager>(*transport_, router_, *service_,
                                          kSelf, kRanks);
    auto landing = transport_->RegisterMemory(service_->landing_area(),
                                              service_->landing_bytes());
    ASSERT_TRUE(landing.ok());
    fetcher_->SetLanding(*landing);
    coherence_ = std::make_unique<Coherence>(kSelf, kRanks, *transport_,
                                             router_, *fetcher_, *service_,
                                             *home_);
    ASSERT_TRUE(coherence_->Start().ok());
    // Every drop in these tests is audited; TearDown expects none lost.
    ASSERT_TRUE(service_->SetDropAudit(coherence_.get()).ok());
  }

  void TearDown() override {
    if (!transport_) return;  // skipped
    transport_->SetGate(nullptr);
    transport_->SetMessageHook(nullptr);
    if (coherence_) {
      EXPECT_EQ(coherence_->stats().lost_drops, expected_lost_drops_)
          << "the drop audit found copies dropped with their writes";
    }
    if (service_) {
      service_->Stop();
      root_->RemoveListener(service_.get());
    }
    root_.reset();
    allocations_.clear();
    if (service_) (void)service_->SetDropAudit(nullptr);
    coherence_.reset();
    home_.reset();
    fetcher_.reset();  // takes its completion handler off the transport
    transport_.reset();
    service_.reset();
  }

  // An allocation `id` of `pages` at `offset` of the global range, placed
  // as `placement` says across the two ranks, attached as the collective
  // allocation attaches it: this rank's home pages populated (unless first
  // touch), the peer's keys known. `registered`: the peer has registered
  // this rank as a cacher of its pages already (faults READ directly).
  std::shared_ptr<DistributedDataspace> AddAllocation(
      uint32_t id, uint64_t offset, uint64_t pages, Placement placement,
      bool registered, int home_rank = kPeer, int readahead_pages = 0) {
    DistributedDataspace::Params p;
    p.id = id;
    p.global_addr = kBase + offset;
    p.size = pages * kPageSize;
    p.placement.placement = placement;
    p.placement.pages = pages;
    p.placement.nranks = kRanks;
    p.placement.home_rank = home_rank;
    p.self = kSelf;
    if (readahead_pages > 0) {
      p.readahead = service_.get();
      p.readahead_pages = readahead_pages;
    }
    auto ds = std::make_shared<DistributedDataspace>(p, *fetcher_,
                                                     coherence_.get());
    ds->SetGlobalBase(kBase);
    home_->AddDataspace(ds.get());
    coherence_->AddDataspace(ds.get());
    EXPECT_TRUE(root_->Attach(ds, {.at = offset}).ok());
    if (placement != Placement::kFirstTouch) {
      DistributedDataspace* d = ds.get();
      EXPECT_TRUE(service_
                      ->Populate(offset, p.size,
                                 [d, offset](uint64_t off) {
                                   return d->HomedHere((off - offset) / kPageSize);
                                 })
                      .ok());
    }
    fetcher_->AddPeerRegion(kPeer, id, kBase + offset, p.size,
                            FakePeerTransport::kPeerKey);
    if (registered) {
      for (uint64_t page = 0; page < pages; ++page) ds->MarkRegistered(page);
    }
    allocations_.push_back(ds);
    return ds;
  }

  static volatile uint64_t* Word(uintptr_t addr) {
    return reinterpret_cast<volatile uint64_t*>(addr);
  }
  uint64_t PeerWord(uintptr_t addr) { return transport_->PeerWord(kPeer, addr); }
  void SetPeerWord(uintptr_t addr, uint64_t v) {
    std::memcpy(transport_->PeerMemory(kPeer, addr), &v, sizeof(v));
  }
  bool Resident(uintptr_t addr) { return service_->IsResident(addr - kBase); }

  // Makes the page at `addr` resident as a fault would, without a thread
  // blocking on it (a failure is a status here, not a SIGBUS): the
  // prefetch's outcome.
  absl::Status Prefetch(uintptr_t addr) {
    absl::Notification done;
    absl::Status status;
    service_->Prefetch(addr - kBase, [&](const absl::Status& s) {
      status = s;
      done.Notify();
    });
    done.WaitForNotification();
    return status;
  }

  // The messages of `type` the rank sent so far.
  std::vector<FakePeerTransport::Message> Sent(uint16_t type) {
    std::vector<FakePeerTransport::Message> out;
    for (auto& m : transport_->messages()) {
      if (m.type == type) out.push_back(m);
    }
    return out;
  }
  template <typename T>
  static T Body(const FakePeerTransport::Message& m) {
    T t;
    EXPECT_EQ(m.body.size(), sizeof(T));
    std::memcpy(&t, m.body.data(), sizeof(T));
    return t;
  }
  template <typename T>
  void DeliverFromPeer(uint16_t type, const T& body) {
    transport_->Deliver(kPeer, type, home_protocol::AsBytes(body));
  }

  MessageRouter router_;
  std::unique_ptr<FakePeerTransport> transport_;
  std::unique_ptr<RemoteFetcher> fetcher_;
  std::shared_ptr<RegionMap> root_;
  std::unique_ptr<FaultService> service_;
  std::unique_ptr<HomeManager> home_;
  std::unique_ptr<Coherence> coherence_;
  std::vector<std::shared_ptr<DistributedDataspace>> allocations_;
  uint64_t expected_lost_drops_ = 0;
};

}  // namespace pagewire::testing

#endif  // PAGEWIRE_TESTS_RANK_FIXTURE_H_
