// coordinator_fuzzer.cc - the coordinator's request handlers
// (runtime/control/coordinator.h), called directly as its gRPC services
// call them, with requests built from the input: each op picks a call
// (Join, Heartbeat, Leave, Barrier, CreateDataspace, FreeDataspace,
// LookupDataspace, DeclareDead, JobStatus, Authenticate, a watcher coming
// and going) and parses its request message from input bytes
// (ParseFromArray), then steers the fields that decide whether the call
// gets past its checks (rank in range, the job's cluster id and secret) on
// most ops. No sockets: the Coordinator object only.
//
// Beyond "no crash", it checks what the coordinator promises:
//   - every Barrier's `done` is called exactly once (by Shutdown at the
//     latest);
//   - a created dataspace is page-aligned, at least as long as asked,
//     inside the global range, and overlaps no other live dataspace;
//   - the same collective create gives every rank the same dataspace.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "google/protobuf/stubs/logging.h"
#include "proto/control_plane.pb.h"
#include "runtime/base/log.h"
#include "runtime/base/page.h"
#include "runtime/control/coordinator.h"
#include "runtime/control/credentials.h"
#include "tests/fuzz/fuzz_input.h"

namespace pagewire::fuzz {
namespace {

using control::Coordinator;
using control::CoordinatorConfig;

constexpr char kCluster[] = "fuzz-job";
constexpr char kSecret[] = "fuzz-secret";

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "coordinator_fuzzer: %s\n", what.c_str());
  std::abort();
}

// Records what a watch stream would send.
class Sink final : public Coordinator::ViewSink {
 public:
  void Push(const proto::MembershipView&, bool last) override {
    if (ended_) Fail("a view pushed to a watch stream after its last");
    ended_ = last;
  }
  void End() override { ended_ = true; }

 private:
  bool ended_ = false;
};

template <typename M>
M Parse(FuzzInput& in) {
  M m;
  const std::string bytes = in.String(48);
  if (!m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) m.Clear();
  return m;
}

class Session {
 public:
  explicit Session(std::unique_ptr<Coordinator> c) : c_(std::move(c)) {}

  ~Session() {
    c_->Shutdown();
    for (size_t i = 0; i < barrier_calls_.size(); ++i) {
      if (*barrier_calls_[i] != 1) {
        Fail("barrier call " + std::to_string(i) + " completed " +
             std::to_string(*barrier_calls_[i]) + " times, not once");
      }
    }
  }

  int nranks() const { return c_->config().nranks; }

  // A valid proof of the job's secret for `call`, on a fresh nonce.
  proto::Proof Prove(absl::string_view call, absl::string_view detail) {
    proto::Proof p;
    p.set_nonce(c_->Challenge().nonce());
    p.set_mac(control::CallMac(control::ControlKey(kSecret), call, p.nonce(),
                               kCluster, detail));
    return p;
  }

  // A rank: in range on most ops, else anything.
  int Rank(FuzzInput& in, int given) {
    const uint8_t s = in.U8();
    if (s >= 0xe0) return given;
    return s % (nranks() + 1) - (s & 0x10 ? 1 : 0);
  }

  void Step(FuzzInput& in) {
    const bool steer = in.U8() < 0xe0;
    switch (in.U8() % 11) {
      case 0: {
        auto r = Parse<proto::JoinRequest>(in);
        if (steer) {
          r.set_cluster_id(kCluster);
          r.set_protocol_version(control::kProtocolVersion);
          r.set_requested_rank(Rank(in, r.requested_rank()));
          *r.mutable_proof() =
              Prove("Join", control::JoinDetail(r.requested_rank()));
        }
        (void)c_->Join(r);
        break;
      }
      case 1: {
        auto r = Parse<proto::HeartbeatRequest>(in);
        if (steer) r.set_rank(Rank(in, r.rank()));
        (void)c_->Heartbeat(r);
        break;
      }
      case 2: {
        auto r = Parse<proto::LeaveRequest>(in);
        if (steer) r.set_rank(Rank(in, r.rank()));
        (void)c_->Leave(r);
        break;
      }
      case 3: {
        auto r = Parse<proto::BarrierRequest>(in);
        if (steer) {
          r.set_rank(Rank(in, r.rank()));
          r.set_seq(r.seq() % 4);
        }
        auto calls = std::make_shared<int>(0);
        barrier_calls_.push_back(calls);
        c_->Barrier(r, [calls](absl::StatusOr<uint64_t>) { ++*calls; });
        break;
      }
      case 4:
        Create(in, steer);
        break;
      case 5: {
        auto r = Parse<proto::FreeDataspaceRequest>(in);
        if (steer) {
          r.set_rank(Rank(in, r.rank()));
          r.set_id(r.id() % 6);
        }
        (void)c_->FreeDataspace(r);
        break;
      }
      case 6: {
        auto r = Parse<proto::LookupDataspaceRequest>(in);
        auto d = c_->LookupDataspace(r);
        if (d.ok() && r.key_case() == proto::LookupDataspaceRequest::kAddr &&
            (r.addr() < d->addr() || r.addr() - d->addr() >= d->length())) {
          Fail("LookupDataspace by address returned a dataspace without it");
        }
        break;
      }
      case 7: {
        auto r = Parse<proto::DeclareDeadRequest>(in);
        if (steer) {
          r.set_cluster_id(kCluster);
          r.set_rank(Rank(in, r.rank()));
          *r.mutable_proof() = Prove(
              "DeclareDead", control::DeclareDeadDetail(r.rank(), r.reason()));
        }
        (void)c_->DeclareDead(r);
        break;
      }
      case 8: {
        auto r = Parse<proto::JobStatusRequest>(in);
        if (steer) {
          r.set_cluster_id(kCluster);
          *r.mutable_proof() = Prove("JobStatus", "");
        }
        auto s = c_->JobStatus(r);
        if (s.ok() && s->ranks_size() != nranks()) Fail("JobStatus lost ranks");
        break;
      }
      case 9:
        (void)c_->Authenticate(Rank(in, -1), in.String(40));
        break;
      case 10: {
        if (in.Bool() && !sinks_.empty()) {
          const size_t i = in.U8() % sinks_.size();
          c_->RemoveWatcher(sinks_[i].get(), in.Bool());
          sinks_.erase(sinks_.begin() + i);
        } else {
          auto sink = std::make_unique<Sink>();
          if (c_->AddWatcher(Rank(in, -1), in.U8() % 4, sink.get()).ok()) {
            sinks_.push_back(std::move(sink));
          }
        }
        break;
      }
    }
  }

 private:
  void Create(FuzzInput& in, bool steer) {
    auto r = Parse<proto::CreateDataspaceRequest>(in);
    if (steer) {
      r.set_rank(Rank(in, r.rank()));
      r.set_collective_seq(r.collective_seq() % 4);
    }
    auto d = c_->CreateDataspace(r);
    if (!d.ok()) return;
    const CoordinatorConfig& cfg = c_->config();
    if (!PageAligned(d->addr()) || !PageAligned(d->length()) ||
        d->length() < r.length() || d->addr() < cfg.global_base ||
        d->addr() - cfg.global_base > cfg.global_size ||
        d->length() > cfg.global_size - (d->addr() - cfg.global_base)) {
      Fail("CreateDataspace(length " + std::to_string(r.length()) +
           ") returned [" + std::to_string(d->addr()) + ", +" +
           std::to_string(d->length()) + "), not a page-aligned range of that "
           "length inside the global range");
    }
    // Ids are never reused: one that Lookup no longer finds was released.
    for (const auto& [id, other] : live_) {
      if (id == d->id()) continue;
      proto::LookupDataspaceRequest still;
      still.set_id(id);
      if (!c_->LookupDataspace(still).ok()) continue;  // released since
      if (d->addr() < other.addr() + other.length() &&
          other.addr() < d->addr() + d->length()) {
        Fail("CreateDataspace returned dataspace " + std::to_string(d->id()) +
             " overlapping live dataspace " + std::to_string(id));
      }
    }
    auto first = live_.find(d->id());
    if (first != live_.end() && (first->second.addr() != d->addr() ||
                                 first->second.length() != d->length())) {
      Fail("one collective create gave two ranks different dataspaces");
    }
    live_[d->id()] = *d;
  }

  std::unique_ptr<Coordinator> c_;
  std::vector<std::shared_ptr<int>> barrier_calls_;
  std::vector<std::unique_ptr<Sink>> sinks_;
  std::map<uint32_t, proto::Dataspace> live_;
};

}  // namespace
}  // namespace pagewire::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  pagewire::SetLogSink([](pagewire::LogLevel, absl::string_view) {});
  // Requests parsed from fuzz bytes have invalid UTF-8 in string fields;
  // protobuf logs each one.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pagewire;
  using namespace pagewire::fuzz;
  FuzzInput in(data, size);
  CoordinatorConfig config;
  config.cluster_id = kCluster;
  config.secret = kSecret;
  config.nranks = 1 + in.U8() % 8;
  // A small global range, so it fills up; the lease long enough that the
  // lease monitor never acts within one input.
  config.global_size = (1 + in.U8() % 64) * kPageSize;
  config.lease = absl::Hours(1);
  auto c = Coordinator::Create(config);
  if (!c.ok()) return 0;
  Session session(*std::move(c));
  for (int ops = 0; !in.empty() && ops < 128; ++ops) session.Step(in);
  return 0;
}
