// coordinator_test.cc - the coordinator and ControlClient over real gRPC on
// 127.0.0.1: joining, refused joins, leases, leaving, barriers, collective
// dataspaces, and robustness against garbage on the port.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "grpcpp/grpcpp.h"
#include "proto/control_plane.grpc.pb.h"
#include "runtime/control/control_client.h"
#include "runtime/control/coordinator_server.h"
#include "runtime/control/credentials.h"
#include "runtime/base/log.h"
#include "tests/control/control_test_support.h"

namespace pagewire::control::testing {
namespace {

std::unique_ptr<CoordinatorServer> StartServer(CoordinatorConfig config) {
  auto server = CoordinatorServer::Start(std::move(config), "127.0.0.1:0");
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  EXPECT_GT((*server)->port(), 0);
  return *std::move(server);
}

// A proof of `secret` for `call`, on a nonce `coordinator` gives now: what
// pagewire-ctl and pagewire-run send.
proto::Proof ProveTo(Coordinator& coordinator, absl::string_view call,
                     absl::string_view secret, absl::string_view detail,
                     absl::string_view cluster = kCluster) {
  proto::Proof proof;
  proof.set_nonce(coordinator.Challenge().nonce());
  proof.set_mac(
      CallMac(ControlKey(secret), call, proof.nonce(), cluster, detail));
  return proof;
}

std::unique_ptr<ControlClient> MustJoin(ControlClientConfig config) {
  auto client = ControlClient::Join(std::move(config));
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

// Captures log lines for the test's lifetime.
class LogCapture {
 public:
  LogCapture() {
    previous_ = SetLogSink([this](LogLevel, absl::string_view line) {
      absl::MutexLock l(&mu_);
      lines_.emplace_back(line);
    });
  }
  ~LogCapture() { SetLogSink(previous_); }
  bool Contains(absl::string_view a, absl::string_view b) {
    absl::MutexLock l(&mu_);
    for (const std::string& line : lines_) {
      if (absl::StrContains(line, a) && absl::StrContains(line, b)) return true;
    }
    return false;
  }

 private:
  LogSink previous_;
  absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};

TEST(CoordinatorTest, FourRanksJoinAndAllSeeTheSameFinalView) {
  auto server = StartServer(TestConfig(4));
  ASSERT_NE(server, nullptr);
  ViewRecorder rec[4];
  std::unique_ptr<ControlClient> clients[4];
  for (int i = 0; i < 4; ++i) {
    clients[i] = MustJoin(ClientConfig(*server, i, &rec[i]));
    ASSERT_NE(clients[i], nullptr);
    EXPECT_EQ(clients[i]->rank(), i);  // next free rank, in join order
    EXPECT_EQ(clients[i]->nranks(), 4);
    EXPECT_EQ(clients[i]->global_base(), kGlobalBase);
    EXPECT_EQ(clients[i]->global_size(), kGlobalSize);
    // The view returned by Join includes the joiner.
    EXPECT_TRUE(RankIs(clients[i]->first_view(), i, proto::Member::ALIVE))
        << clients[i]->first_view().Describe();
  }
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(rec[i].WaitFor([](const View& v) { return AllAlive(v, 4); }))
        << "rank " << i << " never saw 4 ALIVE ranks";
  }
  const uint64_t final_epoch = server->coordinator().CurrentView().epoch();
  EXPECT_EQ(final_epoch, 4u);  // one epoch per join
  for (int i = 0; i < 4; ++i) {
    const std::vector<View> views = rec[i].views();
    const View& last = views.back();
    EXPECT_EQ(last.epoch, final_epoch) << "rank " << i;
    for (int r = 0; r < 4; ++r) {
      const ViewMember* m = last.Find(r);
      ASSERT_NE(m, nullptr);
      EXPECT_EQ(m->state, proto::Member::ALIVE);
      EXPECT_EQ(m->endpoint.host(), "node-" + std::to_string(r));
      EXPECT_EQ(m->endpoint.control_port(), 7000u + r);
      EXPECT_EQ(m->endpoint.tcp().port(), 9000u + r);
    }
    // Strictly increasing epochs, and the same view for the same epoch on
    // every rank (compared with rank 0's sequence).
    for (size_t k = 1; k < views.size(); ++k) {
      EXPECT_GT(views[k].epoch, views[k - 1].epoch);
    }
    for (const View& v : views) {
      for (const View& w : rec[0].views()) {
        if (w.epoch == v.epoch) {
          EXPECT_EQ(w.Describe(), v.Describe());
        }
      }
    }
  }
}

TEST(CoordinatorTest, JoinRefusesMismatchedIdentityNamingWhich) {
  auto server = StartServer(TestConfig(2));
  ASSERT_NE(server, nullptr);

  ControlClientConfig bad_secret = ClientConfig(*server, 0);
  bad_secret.secret = "wrong-secret-value";
  auto r = ControlClient::Join(bad_secret);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "secret does not match"))
      << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "PAGEWIRE_SECRET"));
  EXPECT_FALSE(absl::StrContains(r.status().message(), kSecret));
  EXPECT_FALSE(absl::StrContains(r.status().message(), "wrong-secret-value"));

  ControlClientConfig bad_cluster = ClientConfig(*server, 0);
  bad_cluster.cluster_id = "other-job";
  r = ControlClient::Join(bad_cluster);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "cluster id 'other-job'"))
      << r.status();
  // The caller learns nothing about the job it is not part of.
  EXPECT_FALSE(absl::StrContains(r.status().message(), kCluster)) << r.status();
  EXPECT_FALSE(absl::StrContains(r.status().message(), "secret"));

  ControlClientConfig bad_version = ClientConfig(*server, 0);
  bad_version.protocol_version = kProtocolVersion + 1;
  r = ControlClient::Join(bad_version);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "protocol version"))
      << r.status();
  EXPECT_FALSE(absl::StrContains(r.status().message(), kSecret));

  // Rank problems.
  auto first = MustJoin(ClientConfig(*server, 0, nullptr, /*rank=*/1));
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->rank(), 1);
  r = ControlClient::Join(ClientConfig(*server, 1, nullptr, /*rank=*/1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "rank 1 is already taken"))
      << r.status();
  r = ControlClient::Join(ClientConfig(*server, 1, nullptr, /*rank=*/2));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "requested rank 2"))
      << r.status();

  // Nothing refused made it into the view.
  const proto::MembershipView view = server->coordinator().CurrentView();
  EXPECT_EQ(view.members_size(), 1);
  EXPECT_EQ(view.epoch(), 1u);
}

// Silence is not evidence of death: a rank whose lease runs out is
// SUSPECT, barriers keep waiting for it, and its next heartbeat lifts the
// suspicion.
TEST(CoordinatorTest, SilentRankIsSuspectedNotDeadAndSuspicionLifts) {
  LogCapture log;
  const absl::Duration lease = absl::Milliseconds(300);
  auto server = StartServer(TestConfig(3, lease, absl::Milliseconds(50)));
  ASSERT_NE(server, nullptr);
  ViewRecorder rec0, rec1;
  auto c0 = MustJoin(ClientConfig(*server, 0, &rec0));
  auto c1 = MustJoin(ClientConfig(*server, 1, &rec1));
  auto c2 = MustJoin(ClientConfig(*server, 2));
  ASSERT_TRUE(c0 && c1 && c2);

  // Live past several leases first: heartbeats keep everyone above
  // suspicion. Three leases' worth of heartbeats from every rank.
  const uint64_t three_leases = 3 * (lease / absl::Milliseconds(50));
  Eventually(
      [&] {
        for (int r = 0; r < 3; ++r) {
          if (server->coordinator().HeartbeatsFrom(r) < three_leases) return false;
        }
        return true;
      },
      "three leases' worth of heartbeats from every rank");
  EXPECT_TRUE(AllAlive(View::FromProto(server->coordinator().CurrentView()), 3))
      << "a heartbeating rank lost its lease";

  // Ranks 0 and 1 wait in barrier 1; rank 2 goes silent.
  absl::Status b0, b1;
  std::thread t0([&] { b0 = c0->Barrier(1); });
  std::thread t1([&] { b1 = c1->Barrier(1); });
  c2->PauseHeartbeatsForTesting(true);
  for (ViewRecorder* rec : {&rec0, &rec1}) {
    ASSERT_TRUE(rec->WaitFor([](const View& v) {
      return RankIs(v, 2, proto::Member::SUSPECT) &&
             RankIs(v, 0, proto::Member::ALIVE) &&
             RankIs(v, 1, proto::Member::ALIVE);
    })) << "the others never saw rank 2 SUSPECT";
  }
  EXPECT_TRUE(log.Contains("rank 2 is SUSPECT", "no heartbeat for"));
  // Silent for ten leases: still suspected, never dead, the barrier waits.
  absl::SleepFor(10 * lease);
  const View now = View::FromProto(server->coordinator().CurrentView());
  EXPECT_TRUE(RankIs(now, 2, proto::Member::SUSPECT)) << now.Describe();
  EXPECT_EQ(server->coordinator().WaitingAt(1), (std::vector<int>{0, 1}));
  EXPECT_TRUE(c2->Standing().ok()) << c2->Standing();

  // It speaks again: the suspicion is lifted, and its arrival completes
  // the barrier for everyone.
  c2->PauseHeartbeatsForTesting(false);
  for (ViewRecorder* rec : {&rec0, &rec1}) {
    ASSERT_TRUE(rec->WaitFor([](const View& v) { return AllAlive(v, 3); }))
        << "the suspicion was never lifted";
  }
  EXPECT_TRUE(log.Contains("rank 2 heard from again", "no longer suspected"));
  EXPECT_TRUE(c2->Barrier(1).ok());
  t0.join();
  t1.join();
  EXPECT_TRUE(b0.ok()) << b0;
  EXPECT_TRUE(b1.ok()) << b1;
}

// For those who want one, a deadline: silent past dead_after, a SUSPECT
// rank is declared DEAD, pending barriers fail naming it, and the rank
// itself learns it is out when it speaks again.
TEST(CoordinatorTest, OptInDeadlineDeclaresSilentRankDead) {
  LogCapture log;
  CoordinatorConfig config =
      TestConfig(3, absl::Milliseconds(300), absl::Milliseconds(50));
  config.dead_after = absl::Milliseconds(900);
  auto server = StartServer(config);
  ASSERT_NE(server, nullptr);
  ViewRecorder rec0;
  auto c0 = MustJoin(ClientConfig(*server, 0, &rec0));
  auto c1 = MustJoin(ClientConfig(*server, 1));
  auto c2 = MustJoin(ClientConfig(*server, 2));
  ASSERT_TRUE(c0 && c1 && c2);
  ASSERT_TRUE(rec0.WaitFor([](const View& v) { return AllAlive(v, 3); }));

  absl::Status b0, b1;
  std::thread t0([&] { b0 = c0->Barrier(1); });
  std::thread t1([&] { b1 = c1->Barrier(1); });
  Eventually([&] { return server->coordinator().WaitingAt(1).size() == 2; },
             "ranks 0 and 1 wait at barrier 1");
  const auto paused_at = std::chrono::steady_clock::now();
  c2->PauseHeartbeatsForTesting(true);
  ASSERT_TRUE(rec0.WaitFor(
      [](const View& v) { return RankIs(v, 2, proto::Member::SUSPECT); }));
  ASSERT_TRUE(rec0.WaitFor(
      [](const View& v) { return RankIs(v, 2, proto::Member::DEAD); }));
  // Not before the deadline could have run out (the last heartbeat was at
  // most one interval before the pause).
  EXPECT_GE(std::chrono::steady_clock::now() - paused_at,
            std::chrono::milliseconds(900 - 60));
  t0.join();
  t1.join();
  for (const absl::Status& b : {b0, b1}) {
    EXPECT_EQ(b.code(), absl::StatusCode::kUnavailable) << b;
    EXPECT_TRUE(absl::StrContains(b.message(), "rank 2 became DEAD")) << b;
    EXPECT_TRUE(absl::StrContains(b.message(), "past the deadline")) << b;
  }
  EXPECT_TRUE(log.Contains("rank 2 declared DEAD", "PAGEWIRE_DEAD_AFTER_MS"));

  // Rank 2 is out for good: its calls are refused, naming its state, and
  // its next heartbeat tells it so.
  absl::Status late = c2->Barrier(1);
  EXPECT_EQ(late.code(), absl::StatusCode::kFailedPrecondition) << late;
  EXPECT_TRUE(absl::StrContains(late.message(), "DEAD")) << late;
  c2->PauseHeartbeatsForTesting(false);
  Eventually([&] { return !c2->Standing().ok(); }, "rank 2 learns it is out");
  EXPECT_TRUE(absl::StrContains(c2->Standing().message(),
                                "no longer a member"))
      << c2->Standing();
  // The survivors carry on with later barriers.
  std::thread t2([&] { b0 = c0->Barrier(2); });
  b1 = c1->Barrier(2);
  t2.join();
  EXPECT_TRUE(b0.ok()) << b0;
  EXPECT_TRUE(b1.ok()) << b1;
}

// A process that ends without leaving closes its control connection (the
// kernel does, even on SIGKILL): that is evidence, and the rank is DEAD at
// once, long before any lease could run out.
TEST(CoordinatorTest, ClosedControlConnectionIsEvidenceOfDeath) {
  auto server = StartServer(
      TestConfig(3, /*lease=*/absl::Seconds(60), absl::Milliseconds(50)));
  ASSERT_NE(server, nullptr);
  ViewRecorder rec0;
  auto c0 = MustJoin(ClientConfig(*server, 0, &rec0));
  ControlClientConfig crash = ClientConfig(*server, 1);
  crash.leave_on_destroy = false;
  auto c1 = MustJoin(crash);
  auto c2 = MustJoin(ClientConfig(*server, 2));
  ASSERT_TRUE(c0 && c1 && c2);
  ASSERT_TRUE(rec0.WaitFor([](const View& v) { return AllAlive(v, 3); }));
  Eventually(
      [&] {
        proto::JobStatusRequest request;
        request.set_cluster_id(kCluster);
        *request.mutable_proof() =
            ProveTo(server->coordinator(), "JobStatus", kSecret, "");
        auto st = server->coordinator().JobStatus(request);
        return st.ok() && st->ranks(1).watching();
      },
      "rank 1's view stream is open");
  absl::Status b0;
  std::thread t0([&] { b0 = c0->Barrier(1); });
  // Pending before the death, so the death is what fails it.
  Eventually([&] { return server->coordinator().WaitingAt(1).size() == 1; },
             "rank 0 waits at barrier 1");
  c1.reset();  // no Leave: the connection closes
  ASSERT_TRUE(rec0.WaitFor(
      [](const View& v) { return RankIs(v, 1, proto::Member::DEAD); }));
  EXPECT_TRUE(RankIs(rec0.views().back(), 0, proto::Member::ALIVE));
  EXPECT_TRUE(RankIs(rec0.views().back(), 2, proto::Member::ALIVE));
  t0.join();
  EXPECT_EQ(b0.code(), absl::StatusCode::kUnavailable) << b0;
  EXPECT_TRUE(absl::StrContains(b0.message(), "control connection closed"))
      << b0;
}

TEST(CoordinatorTest, LeaveMarksRankLeftAndFailsPendingBarrier) {
  auto server = StartServer(TestConfig(2));
  ASSERT_NE(server, nullptr);
  ViewRecorder rec0;
  auto c0 = MustJoin(ClientConfig(*server, 0, &rec0));
  auto c1 = MustJoin(ClientConfig(*server, 1));
  ASSERT_TRUE(c0 && c1);
  absl::Status b0;
  std::thread t0([&] { b0 = c0->Barrier(7); });
  // Rank 0's barrier reaches the coordinator before rank 1 leaves.
  Eventually([&] { return server->coordinator().WaitingAt(7) == std::vector<int>{0}; },
             "rank 0 waiting at barrier 7");
  ASSERT_TRUE(c1->Leave("test done").ok());
  EXPECT_TRUE(c1->Leave("again").ok()) << "Leave must be idempotent";
  t0.join();
  EXPECT_EQ(b0.code(), absl::StatusCode::kUnavailable) << b0;
  EXPECT_TRUE(absl::StrContains(b0.message(), "rank 1 left")) << b0;
  ASSERT_TRUE(rec0.WaitFor(
      [](const View& v) { return RankIs(v, 1, proto::Member::LEFT); }));
  EXPECT_TRUE(RankIs(rec0.views().back(), 0, proto::Member::ALIVE));
  // Rank 0 alone now passes barriers.
  EXPECT_TRUE(c0->Barrier(8).ok());
}

TEST(CoordinatorTest, FourThreadsPassFiftyBarriersInLockstep) {
  auto server = StartServer(TestConfig(4));
  ASSERT_NE(server, nullptr);
  std::unique_ptr<ControlClient> clients[4];
  for (int i = 0; i < 4; ++i) {
    clients[i] = MustJoin(ClientConfig(*server, i));
    ASSERT_NE(clients[i], nullptr);
  }
  constexpr int kIterations = 50;
  std::atomic<int> arrived[kIterations + 1] = {};
  std::atomic<int> early{0}, failed{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      for (int seq = 1; seq <= kIterations; ++seq) {
        arrived[seq].fetch_add(1);
        absl::Status s = clients[i]->Barrier(seq);
        if (!s.ok()) {
          ADD_FAILURE() << "rank " << i << " barrier " << seq << ": " << s;
          failed.fetch_add(1);
          return;
        }
        // Nobody leaves a barrier before everyone arrived at it.
        if (arrived[seq].load() != 4) early.fetch_add(1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(early.load(), 0);
  for (int seq = 1; seq <= kIterations; ++seq) EXPECT_EQ(arrived[seq].load(), 4);
}

TEST(CoordinatorTest, CollectiveCreateFreeAndLookup) {
  auto server = StartServer(TestConfig(4));
  ASSERT_NE(server, nullptr);
  std::unique_ptr<ControlClient> c[4];
  for (int i = 0; i < 4; ++i) {
    c[i] = MustJoin(ClientConfig(*server, i));
    ASSERT_NE(c[i], nullptr);
  }
  // All four ranks create collective #1 concurrently.
  absl::StatusOr<proto::Dataspace> got[4];
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back(
          [&, i] { got[i] = c[i]->CreateDataspace(1, 1 << 20, proto::CYCLIC); });
    }
    for (std::thread& t : threads) t.join();
  }
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(got[i].ok()) << got[i].status();
    EXPECT_EQ(got[i]->id(), got[0]->id());
    EXPECT_EQ(got[i]->addr(), got[0]->addr());
    EXPECT_EQ(got[i]->length(), uint64_t{1} << 20);
    EXPECT_EQ(got[i]->placement(), proto::CYCLIC);
  }
  const proto::Dataspace ds1 = *got[0];
  EXPECT_NE(ds1.id(), 0u);  // 0 names the pool
  EXPECT_EQ(ds1.addr(), kGlobalBase);  // first fit in an empty range
  EXPECT_EQ(ds1.page_size(), 4096u);

  // A length that is not page-aligned is rounded up; first fit after #1.
  auto ds2 = c[1]->CreateDataspace(2, 10000, proto::ON_RANK, 3);
  ASSERT_TRUE(ds2.ok()) << ds2.status();
  EXPECT_EQ(ds2->length(), 12288u);
  EXPECT_EQ(ds2->addr(), kGlobalBase + (1 << 20));
  EXPECT_EQ(ds2->home_rank(), 3);
  EXPECT_NE(ds2->id(), ds1.id());

  // Mismatched arguments from one rank are refused, naming rank and field.
  ASSERT_TRUE(c[0]->CreateDataspace(3, 4096).ok());
  auto bad = c[2]->CreateDataspace(3, 8192);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "rank 2 passed length=8192"))
      << bad.status();
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "rank 0")) << bad.status();
  auto bad_home = c[3]->CreateDataspace(2, 10000, proto::ON_RANK, 1);
  ASSERT_FALSE(bad_home.ok());
  EXPECT_TRUE(absl::StrContains(bad_home.status().message(), "home_rank"))
      << bad_home.status();
  auto bad_rank = c[0]->CreateDataspace(9, 4096, proto::ON_RANK, 4);
  EXPECT_EQ(bad_rank.status().code(), absl::StatusCode::kInvalidArgument);
  auto zero = c[0]->CreateDataspace(10, 0);
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument);

  // Lookup by id and by any address inside.
  auto by_id = c[3]->LookupDataspace(ds2->id());
  ASSERT_TRUE(by_id.ok()) << by_id.status();
  EXPECT_EQ(by_id->addr(), ds2->addr());
  auto by_addr = c[3]->LookupDataspaceAt(ds1.addr() + 12345);
  ASSERT_TRUE(by_addr.ok()) << by_addr.status();
  EXPECT_EQ(by_addr->id(), ds1.id());
  auto nowhere = c[3]->LookupDataspaceAt(kGlobalBase + kGlobalSize - 1);
  EXPECT_EQ(nowhere.status().code(), absl::StatusCode::kNotFound);

  // Free is collective: the range stays until every live rank freed it.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(c[i]->FreeDataspace(ds1.id()).ok());
  EXPECT_TRUE(c[0]->LookupDataspace(ds1.id()).ok())
      << "released before rank 3 freed it";
  ASSERT_TRUE(c[3]->FreeDataspace(ds1.id()).ok());
  auto gone = c[0]->LookupDataspace(ds1.id());
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound) << gone.status();
  EXPECT_EQ(c[0]->FreeDataspace(ds1.id()).code(), absl::StatusCode::kNotFound);
  // The freed hole is reused (first fit).
  auto ds4 = c[0]->CreateDataspace(4, 512 << 10);
  ASSERT_TRUE(ds4.ok()) << ds4.status();
  EXPECT_EQ(ds4->addr(), kGlobalBase);
  // More than the global range: refused, saying how to fix it.
  auto huge = c[0]->CreateDataspace(5, kGlobalSize);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(huge.status().message(), "--global-size"))
      << huge.status();
}

// Every call after Join is a rank's own: without the session token Join
// gave the rank it names (none, a guess, another rank's), Leave, Heartbeat,
// WatchView, Barrier and the dataspace calls are refused, tell nothing, and
// change nothing.
TEST(CoordinatorTest, CallsWithoutTheRanksSessionTokenAreRefused) {
  auto server = StartServer(TestConfig(2));
  ASSERT_NE(server, nullptr);
  ViewRecorder rec0;
  auto c0 = MustJoin(ClientConfig(*server, 0, &rec0));
  auto c1 = MustJoin(ClientConfig(*server, 1));
  ASSERT_TRUE(c0 && c1);
  ASSERT_TRUE(rec0.WaitFor([](const View& v) { return AllAlive(v, 2); }));
  auto channel = grpc::CreateChannel(server->address(),
                                     grpc::InsecureChannelCredentials());
  auto membership = proto::Membership::NewStub(channel);
  auto dataspaces = proto::Dataspaces::NewStub(channel);
  for (const std::string& token :
       {std::string(), std::string(kSessionTokenBytes, 'x')}) {
    auto ctx = [&] {
      auto c = std::make_unique<grpc::ClientContext>();
      if (!token.empty()) c->AddMetadata(kSessionMetadata, token);
      c->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
      return c;
    };
    auto refused = [&](const grpc::Status& st, const char* what) {
      EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << what;
      EXPECT_EQ(st.error_message().find(kCluster), std::string::npos) << what;
    };
    proto::LeaveRequest leave;
    leave.set_rank(1);
    proto::LeaveReply left;
    refused(membership->Leave(ctx().get(), leave, &left), "Leave");
    proto::HeartbeatRequest hb;
    hb.set_rank(1);
    proto::HeartbeatReply hbr;
    refused(membership->Heartbeat(ctx().get(), hb, &hbr), "Heartbeat");
    proto::BarrierRequest barrier;
    barrier.set_rank(1);
    barrier.set_seq(1);
    proto::BarrierReply br;
    refused(membership->Barrier(ctx().get(), barrier, &br), "Barrier");
    proto::WatchViewRequest watch;
    watch.set_rank(-1);
    auto w = ctx();
    auto reader = membership->WatchView(w.get(), watch);
    proto::MembershipView view;
    EXPECT_FALSE(reader->Read(&view)) << "a view reached an unauthenticated watcher";
    refused(reader->Finish(), "WatchView");
    proto::CreateDataspaceRequest create;
    create.set_rank(1);
    create.set_length(4096);
    create.set_collective_seq(1);
    proto::CreateDataspaceReply created;
    refused(dataspaces->Create(ctx().get(), create, &created), "Create");
    proto::LookupDataspaceRequest lookup;
    lookup.set_id(1);
    proto::LookupDataspaceReply found;
    refused(dataspaces->Lookup(ctx().get(), lookup, &found), "Lookup");
  }
  // Rank 1 is still a member after all of it, and its own calls work.
  EXPECT_TRUE(AllAlive(View::FromProto(server->coordinator().CurrentView()), 2));
  absl::Status b0;
  std::thread t0([&] { b0 = c0->Barrier(1); });
  EXPECT_TRUE(c1->Barrier(1).ok());
  t0.join();
  EXPECT_TRUE(b0.ok()) << b0;
}

TEST(CoordinatorTest, GarbageOnThePortDoesNotDisturbOtherClients) {
  auto server = StartServer(TestConfig(2));
  ASSERT_NE(server, nullptr);
  auto c0 = MustJoin(ClientConfig(*server, 0));
  ASSERT_NE(c0, nullptr);

  auto send_garbage = [&](const std::string& bytes, bool close_now) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(server->port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
        << strerror(errno);
    EXPECT_EQ(write(fd, bytes.data(), bytes.size()),
              static_cast<ssize_t>(bytes.size()));
    if (close_now) {
      close(fd);
      return -1;
    }
    return fd;
  };
  std::string junk;
  for (int i = 0; i < 4096; ++i) junk.push_back(static_cast<char>(i * 131 + 7));
  send_garbage(junk, true);
  send_garbage("GET / HTTP/1.1\r\nHost: x\r\n\r\n", true);
  // A valid HTTP/2 preface followed by a nonsense frame.
  send_garbage(std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") +
                   std::string("\xff\xff\xff\x09\x00\x00\x00\x00\x01", 9) + junk,
               true);
  // One connection stays open, half a preface, never finishing.
  const int lingering = send_garbage("PRI * HTTP/2.0\r\n", false);

  // The coordinator still serves: a new rank joins and a barrier passes.
  auto c1 = MustJoin(ClientConfig(*server, 1));
  ASSERT_NE(c1, nullptr);
  absl::Status b0;
  std::thread t([&] { b0 = c0->Barrier(1); });
  EXPECT_TRUE(c1->Barrier(1).ok());
  t.join();
  EXPECT_TRUE(b0.ok()) << b0;
  EXPECT_TRUE(AllAlive(View::FromProto(server->coordinator().CurrentView()), 2));
  close(lingering);
}

// A TCP relay on 127.0.0.1 in front of the coordinator. Cut() breaks
// every relayed connection, both ways, as a network failure would; new
// connections are relayed again.
class Relay {
 public:
  explicit Relay(int target_port) : target_port_(target_port) {
    listen_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    EXPECT_EQ(bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(listen(listen_, 16), 0);
    EXPECT_EQ(getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len), 0);
    port_ = ntohs(a.sin_port);
    wake_ = eventfd(0, EFD_CLOEXEC);
    thread_ = std::thread([this] { Run(); });
  }
  ~Relay() {
    stop_ = true;
    Poke();
    thread_.join();
    for (auto& [a, b] : pairs_) {
      close(a);
      close(b);
    }
    close(listen_);
    close(wake_);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  // Breaks the connections relayed now; returns how many there were.
  int Cut() {
    cut_ = true;
    Poke();
    Eventually([this] { return !cut_; }, "the relay cutting its connections");
    return cut_count_;
  }

 private:
  void Poke() {
    uint64_t one = 1;
    EXPECT_EQ(write(wake_, &one, sizeof(one)), 8);
  }
  void Run() {
    while (!stop_) {
      std::vector<pollfd> fds = {{listen_, POLLIN, 0}, {wake_, POLLIN, 0}};
      for (auto& [a, b] : pairs_) {
        fds.push_back({a, POLLIN, 0});
        fds.push_back({b, POLLIN, 0});
      }
      if (poll(fds.data(), fds.size(), -1) < 0) continue;
      if (fds[1].revents & POLLIN) {
        uint64_t n;
        EXPECT_EQ(read(wake_, &n, sizeof(n)), 8);
        if (cut_) {
          cut_count_ = static_cast<int>(pairs_.size());
          for (auto& [a, b] : pairs_) {
            shutdown(a, SHUT_RDWR);
            shutdown(b, SHUT_RDWR);
            close(a);
            close(b);
          }
          pairs_.clear();
          cut_ = false;
          continue;
        }
      }
      if (fds[0].revents & POLLIN) {
        int in = accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
        int out = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in t{};
        t.sin_family = AF_INET;
        t.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        t.sin_port = htons(target_port_);
        if (in >= 0 &&
            connect(out, reinterpret_cast<sockaddr*>(&t), sizeof(t)) == 0) {
          pairs_.emplace_back(in, out);
        } else {
          if (in >= 0) close(in);
          close(out);
        }
      }
      // Only the pairs that were polled: one accepted just now has no
      // entries in `fds` yet.
      const size_t polled = (fds.size() - 2) / 2;
      for (size_t i = 0; i < polled; ++i) {
        const pollfd& pa = fds[2 + 2 * i];
        const pollfd& pb = fds[3 + 2 * i];
        bool closed = false;
        if (pa.revents) closed |= !Forward(pairs_[i].first, pairs_[i].second);
        if (!closed && pb.revents) {
          closed |= !Forward(pairs_[i].second, pairs_[i].first);
        }
        if (closed) {
          close(pairs_[i].first);
          close(pairs_[i].second);
          pairs_[i] = {-1, -1};
        }
      }
      pairs_.erase(std::remove(pairs_.begin(), pairs_.end(),
                               std::pair<int, int>(-1, -1)),
                   pairs_.end());
    }
  }
  static bool Forward(int from, int to) {
    char buf[65536];
    ssize_t n = read(from, buf, sizeof(buf));
    if (n <= 0) return false;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(to, buf + off, n - off);
      if (w <= 0) return false;
      off += w;
    }
    return true;
  }

  const int target_port_;
  int listen_ = -1, wake_ = -1, port_ = 0;
  std::atomic<bool> stop_{false}, cut_{false};
  int cut_count_ = 0;
  std::vector<std::pair<int, int>> pairs_;  // the relay thread's
  std::thread thread_;
};

// A member's control connection closes only when its process ends, so a
// cut one is taken as death too: the coordinator declares the rank DEAD,
// the others learn it, and the cut-off rank learns that it is out (its
// stream opened again, or its next heartbeat, is refused) and every later
// call of it fails naming why.
TEST(CoordinatorTest, CutControlConnectionMakesTheRankDeadAndItLearnsItIsOut) {
  LogCapture log;
  auto server = StartServer(TestConfig(3));
  ASSERT_NE(server, nullptr);
  Relay relay(server->port());
  ViewRecorder rec0, rec1;
  ControlClientConfig through_relay = ClientConfig(*server, 0, &rec0);
  through_relay.coordinator = relay.address();
  auto c0 = MustJoin(through_relay);
  auto c1 = MustJoin(ClientConfig(*server, 1, &rec1));
  auto c2 = MustJoin(ClientConfig(*server, 2));
  ASSERT_TRUE(c0 && c1 && c2);
  ASSERT_TRUE(rec0.WaitFor([](const View& v) { return AllAlive(v, 3); }));

  ASSERT_GE(relay.Cut(), 1);
  ASSERT_TRUE(rec1.WaitFor(
      [](const View& v) { return RankIs(v, 0, proto::Member::DEAD); }))
      << "rank 1 never learnt that rank 0 was cut off";
  EXPECT_TRUE(log.Contains("rank 0 declared DEAD", "control connection closed"));
  Eventually([&] { return !c0->Standing().ok(); }, "rank 0 learns it is out");
  EXPECT_TRUE(absl::StrContains(c0->Standing().message(), "no longer a member"))
      << c0->Standing();
  absl::Status late = c0->Barrier(1);
  EXPECT_FALSE(late.ok());
  EXPECT_TRUE(absl::StrContains(late.message(), "DEAD")) << late;
  // The others carry on.
  absl::Status b1;
  std::thread t1([&] { b1 = c1->Barrier(1); });
  EXPECT_TRUE(c2->Barrier(1).ok());
  t1.join();
  EXPECT_TRUE(b1.ok()) << b1;
}

// The operator's word: DeclareDead needs the job's cluster id and secret
// (a refusal tells nothing about the job), fails pending barriers naming
// the rank and the reason, and is idempotent. JobStatus shows the states
// and reasons.
TEST(CoordinatorTest, OperatorDeclaresRankDeadAndReadsStatus) {
  LogCapture log;
  auto server = StartServer(TestConfig(3));
  ASSERT_NE(server, nullptr);
  ViewRecorder rec0;
  auto c0 = MustJoin(ClientConfig(*server, 0, &rec0));
  auto c1 = MustJoin(ClientConfig(*server, 1));
  ASSERT_TRUE(c0 && c1);
  Coordinator& coordinator = server->coordinator();

  proto::DeclareDeadRequest bad;
  bad.set_cluster_id(kCluster);
  bad.set_rank(1);
  *bad.mutable_proof() = ProveTo(coordinator, "DeclareDead", "guess",
                                 DeclareDeadDetail(1, ""));
  absl::StatusOr<proto::DeclareDeadReply> r = coordinator.DeclareDead(bad);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(absl::StrContains(r.status().message(), kCluster));
  EXPECT_FALSE(absl::StrContains(r.status().message(), kSecret));
  bad.set_cluster_id("other-job");
  *bad.mutable_proof() = ProveTo(coordinator, "DeclareDead", kSecret,
                                 DeclareDeadDetail(1, ""), "other-job");
  r = coordinator.DeclareDead(bad);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(absl::StrContains(r.status().message(), kCluster));
  // A good proof for another rank (or reason) proves nothing for this one.
  bad.set_cluster_id(kCluster);
  *bad.mutable_proof() = ProveTo(coordinator, "DeclareDead", kSecret,
                                 DeclareDeadDetail(0, ""));
  EXPECT_EQ(coordinator.DeclareDead(bad).status().code(),
            absl::StatusCode::kPermissionDenied);
  // Nor does a proof of another call, or a proof whose nonce the
  // coordinator never gave.
  *bad.mutable_proof() = ProveTo(coordinator, "JobStatus", kSecret, "");
  EXPECT_EQ(coordinator.DeclareDead(bad).status().code(),
            absl::StatusCode::kPermissionDenied);
  bad.mutable_proof()->set_nonce(std::string(32, 'n'));
  bad.mutable_proof()->set_mac(CallMac(ControlKey(kSecret), "DeclareDead",
                                       std::string(32, 'n'), kCluster,
                                       DeclareDeadDetail(1, "")));
  EXPECT_EQ(coordinator.DeclareDead(bad).status().code(),
            absl::StatusCode::kPermissionDenied);
  proto::JobStatusRequest no_secret;
  no_secret.set_cluster_id(kCluster);
  EXPECT_EQ(coordinator.JobStatus(no_secret).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(AllAlive(View::FromProto(coordinator.CurrentView()), 2));

  // Rank 2 never joined: barriers wait for it until an operator says it
  // is dead.
  absl::Status b0, b1;
  std::thread t0([&] { b0 = c0->Barrier(1); });
  std::thread t1([&] { b1 = c1->Barrier(1); });
  Eventually([&] { return coordinator.WaitingAt(1).size() == 2; },
             "both ranks wait at barrier 1");
  proto::DeclareDeadRequest good;
  good.set_cluster_id(kCluster);
  good.set_rank(2);
  good.set_reason("node-2 powered off (ticket 42)");
  *good.mutable_proof() =
      ProveTo(coordinator, "DeclareDead", kSecret,
              DeclareDeadDetail(2, "node-2 powered off (ticket 42)"));
  r = coordinator.DeclareDead(good);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->declared());
  // The same proof again (a replay) is refused: its nonce is used up.
  EXPECT_EQ(coordinator.DeclareDead(good).status().code(),
            absl::StatusCode::kPermissionDenied);
  t0.join();
  t1.join();
  for (const absl::Status& b : {b0, b1}) {
    EXPECT_EQ(b.code(), absl::StatusCode::kUnavailable) << b;
    EXPECT_TRUE(absl::StrContains(b.message(), "rank 2 became DEAD")) << b;
    EXPECT_TRUE(absl::StrContains(b.message(), "ticket 42")) << b;
  }
  *good.mutable_proof() =
      ProveTo(coordinator, "DeclareDead", kSecret,
              DeclareDeadDetail(2, "node-2 powered off (ticket 42)"));
  r = coordinator.DeclareDead(good);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->declared());
  EXPECT_TRUE(log.Contains("rank 2 declared DEAD", "ticket 42"));

  proto::JobStatusRequest status;
  status.set_cluster_id(kCluster);
  *status.mutable_proof() = ProveTo(coordinator, "JobStatus", kSecret, "");
  absl::StatusOr<proto::JobStatusReply> st = coordinator.JobStatus(status);
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_EQ(st->ranks_size(), 3);
  EXPECT_EQ(st->ranks(0).state(), proto::Member::ALIVE);
  EXPECT_EQ(st->ranks(1).state(), proto::Member::ALIVE);
  EXPECT_EQ(st->ranks(2).state(), proto::Member::DEAD);
  EXPECT_TRUE(absl::StrContains(st->ranks(2).reason(), "ticket 42"));
  EXPECT_EQ(st->lease_ms(), 2000u);
  EXPECT_EQ(st->dead_after_ms(), 0u);
  // The survivors go on.
  std::thread t2([&] { b0 = c0->Barrier(2); });
  b1 = c1->Barrier(2);
  t2.join();
  EXPECT_TRUE(b0.ok()) << b0;
  EXPECT_TRUE(b1.ok()) << b1;
}

// A heartbeat that crosses the rank's own Leave is refused (the rank is
// LEFT); that is the end the rank asked for, not an error to log.
TEST(CoordinatorTest, LeavingRankLogsNoRefusedHeartbeat) {
  LogCapture log;
  for (int round = 0; round < 10; ++round) {
    // Heartbeats every millisecond, so one is often in flight at Leave.
    auto server = StartServer(
        TestConfig(2, absl::Milliseconds(200), absl::Milliseconds(1)));
    ASSERT_NE(server, nullptr);
    auto c0 = MustJoin(ClientConfig(*server, 0));
    auto c1 = MustJoin(ClientConfig(*server, 1));
    ASSERT_TRUE(c0 && c1);
    Eventually(
        [&] {
          return server->coordinator().HeartbeatsFrom(0) >= 5 &&
                 server->coordinator().HeartbeatsFrom(1) >= 5;
        },
        "heartbeats flowing from both ranks");
    ASSERT_TRUE(c0->Leave("test").ok());
    ASSERT_TRUE(c1->Leave("test").ok());
    // Gone, their heartbeat threads joined: any refused heartbeat is logged.
    c0.reset();
    c1.reset();
  }
  EXPECT_FALSE(log.Contains("heartbeat refused", "LEFT"))
      << "a rank that left logged its own refused heartbeat as an error";
}

TEST(CoordinatorTest, ShutdownEndsPendingBarriersAndWatchStreams) {
  auto server = StartServer(TestConfig(2));
  ASSERT_NE(server, nullptr);
  auto c0 = MustJoin(ClientConfig(*server, 0));
  ASSERT_NE(c0, nullptr);
  absl::Status b0;
  std::thread t([&] { b0 = c0->Barrier(1); });  // rank 1 never joins
  Eventually([&] { return server->coordinator().WaitingAt(1) == std::vector<int>{0}; },
             "rank 0 waiting at barrier 1");
  server->Shutdown();  // must return although a barrier and a stream wait
  t.join();
  EXPECT_EQ(b0.code(), absl::StatusCode::kUnavailable) << b0;
  EXPECT_TRUE(absl::StrContains(b0.message(), "shutting down")) << b0;
}

TEST(CoordinatorConfigTest, BadConfigIsRefusedNamingTheField) {
  CoordinatorConfig c = TestConfig(4);
  c.secret.clear();
  EXPECT_TRUE(absl::StrContains(Coordinator::Create(c).status().message(),
                                "PAGEWIRE_SECRET"));
  c = TestConfig(0);
  EXPECT_TRUE(absl::StrContains(Coordinator::Create(c).status().message(),
                                "nranks"));
  c = TestConfig(4);
  c.global_base += 1;
  EXPECT_TRUE(absl::StrContains(Coordinator::Create(c).status().message(),
                                "page-aligned"));
  c = TestConfig(4, absl::Milliseconds(100), absl::Milliseconds(100));
  EXPECT_TRUE(absl::StrContains(Coordinator::Create(c).status().message(),
                                "--lease-ms"));
  c = TestConfig(4, absl::Seconds(2));
  c.dead_after = absl::Seconds(1);
  EXPECT_TRUE(absl::StrContains(Coordinator::Create(c).status().message(),
                                "--dead-after-ms"));
  auto bad_addr = CoordinatorServer::Start(TestConfig(2), "127.0.0.1:99999");
  EXPECT_EQ(bad_addr.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad_addr.status().message(), "0..65535"));
}

// Found by //tests/fuzz:coordinator_fuzzer: a length within a page of
// 2^64 rounded up to 0 pages, and the coordinator handed out an empty
// dataspace at the start of the global range, over whatever lived there.
// A create longer than the global range is refused, naming the range.
TEST(CoordinatorTest, CreateLongerThanTheGlobalRangeIsRefused) {
  CoordinatorConfig config;
  config.cluster_id = "job";
  config.secret = "s";
  config.nranks = 1;
  config.global_size = 16 * 4096;
  auto c = Coordinator::Create(config);
  ASSERT_TRUE(c.ok()) << c.status();
  proto::JoinRequest join;
  join.set_cluster_id("job");
  join.set_protocol_version(kProtocolVersion);
  join.set_requested_rank(0);
  *join.mutable_proof() = ProveTo(**c, "Join", "s", JoinDetail(0), "job");
  ASSERT_TRUE((*c)->Join(join).ok());
  proto::CreateDataspaceRequest r;
  r.set_rank(0);
  r.set_length(4096);
  auto first = (*c)->CreateDataspace(r);
  ASSERT_TRUE(first.ok()) << first.status();
  for (uint64_t length : {~uint64_t{0} - 100, ~uint64_t{0}, uint64_t{16 * 4096 + 1}}) {
    r.set_collective_seq(r.collective_seq() + 1);
    r.set_length(length);
    auto d = (*c)->CreateDataspace(r);
    ASSERT_FALSE(d.ok()) << "length " << length << " gave [" << d->addr()
                         << ", +" << d->length() << ")";
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(d.status().message(), "global range"))
        << d.status();
  }
  // What is left of the range is still there.
  r.set_collective_seq(r.collective_seq() + 1);
  r.set_length(15 * 4096);
  auto rest = (*c)->CreateDataspace(r);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(rest->addr(), first->addr() + 4096);
  (*c)->Shutdown();
}

}  // namespace
}  // namespace pagewire::control::testing
