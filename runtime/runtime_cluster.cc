// runtime_cluster.cc - how a node joins the job: hosting or joining the
// coordinator, publishing its data-plane endpoint, connecting its peers,
// and following membership views (a suspected peer is waited for, a dead
// one fails the faults that need it).
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/base/log.h"
#include "runtime/coherence/coherence.h"
#include "runtime/coherence/sequential_consistency.h"
#include "runtime/control/control_client.h"
#include "runtime/control/coordinator_server.h"
#include "runtime/control/view.h"
#include "runtime/dsm/remote_fetcher.h"
#include "runtime/runtime.h"
#include "runtime/transport/verbs/verbs_transport.h"

namespace pagewire {

absl::Status Runtime::HostCoordinator(const RuntimeConfig& config) {
  control::CoordinatorConfig cc;
  cc.cluster_id = config.cluster_id;
  cc.secret = config.secret;
  cc.tls = config.tls;
  cc.nranks = config.nranks;
  cc.global_base = config.global_base;
  cc.global_size = config.global_size;
  cc.heartbeat_interval = config.heartbeat_interval;
  cc.lease = config.lease;
  cc.dead_after = config.dead_after;
  absl::StatusOr<std::unique_ptr<control::CoordinatorServer>> server =
      control::CoordinatorServer::Start(cc, config.coordinator);
  if (!server.ok()) {
    return absl::Status(
        server.status().code(),
        absl::StrCat("rank 0 hosts the coordinator at ", config.coordinator,
                     ": ", server.status().message()));
  }
  coordinator_ = *std::move(server);
  return absl::OkStatus();
}

absl::Status Runtime::PublishEndpoint(const RuntimeConfig& config,
                                      proto::Endpoint& endpoint) {
  const TransportEndpoint local = transport_->LocalEndpoint();
  endpoint.set_host(local.host.empty() ? config.host : local.host);
  if (verbs_ == nullptr) {
    endpoint.mutable_tcp()->set_host(local.host);
    endpoint.mutable_tcp()->set_port(local.port);
    proto::MemoryKey* key = endpoint.mutable_tcp()->add_keys();
    key->set_addr(global_region_.addr);
    key->set_length(global_region_.length);
    key->set_rkey(global_region_.rkey);
    return absl::OkStatus();
  }
  // RC: one queue pair per peer, each published for that peer.
  proto::VerbsEndpoint* v = endpoint.mutable_verbs();
  v->set_gid(local.gid);
  for (int peer = 0; peer < nranks_; ++peer) {
    if (peer == rank_) continue;
    absl::StatusOr<TransportEndpoint> qp = verbs_->EndpointFor(peer);
    if (!qp.ok()) return qp.status();
    proto::PeerQp* q = v->add_qps();
    q->set_peer(peer);
    q->set_qp_num(qp->qp_num);
    q->set_psn(qp->psn);
  }
  return absl::OkStatus();
}

absl::Status Runtime::JoinCluster(const RuntimeConfig& config) {
  control::ControlClientConfig client;
  client.coordinator = config.coordinator;
  client.cluster_id = config.cluster_id;
  client.secret = config.secret;
  client.tls = config.tls;
  client.requested_rank = config.rank;
  if (absl::Status s = PublishEndpoint(config, client.endpoint); !s.ok()) {
    return s;
  }
  client.on_view = [this](const control::View& view) { OnView(view); };
  absl::StatusOr<std::unique_ptr<control::ControlClient>> joined =
      control::ControlClient::Join(client);
  if (!joined.ok()) return joined.status();
  control_ = *std::move(joined);
  if (control_->nranks() != nranks_ ||
      control_->global_base() != config.global_base ||
      control_->global_size() != config.global_size) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "rank %d was started for %d ranks with the global range [0x%x, +0x%x) "
        "but the coordinator runs %d ranks at [0x%x, +0x%x); start every rank "
        "with the same PAGEWIRE_NRANKS, PAGEWIRE_GLOBAL_BASE and "
        "PAGEWIRE_GLOBAL_SIZE",
        rank_, nranks_, config.global_base, config.global_size,
        control_->nranks(), control_->global_base(), control_->global_size()));
  }
  return absl::OkStatus();
}

absl::StatusOr<TransportEndpoint> Runtime::PeerEndpoint(
    const control::View& view, int peer) {
  const control::ViewMember* m = view.Find(peer);
  TransportEndpoint ep;
  if (verbs_ != nullptr) {
    const proto::PeerQp* mine = nullptr;
    if (m != nullptr && m->endpoint.has_verbs()) {
      for (const proto::PeerQp& q : m->endpoint.verbs().qps()) {
        if (q.peer() == rank_) mine = &q;
      }
    }
    if (mine == nullptr) {
      return absl::UnavailableError(absl::StrFormat(
          "rank %d published no verbs queue pair for rank %d; every rank "
          "of a job must use the same transport (PAGEWIRE_TRANSPORT)",
          peer, rank_));
    }
    ep.host = m->endpoint.host();
    ep.gid = m->endpoint.verbs().gid();
    ep.qp_num = mine->qp_num();
    ep.psn = mine->psn();
    return ep;
  }
  if (m == nullptr || !m->endpoint.has_tcp() ||
      m->endpoint.tcp().keys_size() == 0) {
    return absl::UnavailableError(absl::StrFormat(
        "rank %d published no TCP data-plane endpoint (view %s); every "
        "rank of a job must use the same transport (PAGEWIRE_TRANSPORT)",
        peer, view.Describe()));
  }
  ep.host = m->endpoint.tcp().host().empty() ? m->endpoint.host()
                                             : m->endpoint.tcp().host();
  ep.port = m->endpoint.tcp().port();
  const proto::MemoryKey& k = m->endpoint.tcp().keys(0);
  fetcher_->AddPeerRegion(peer, 0, k.addr(), k.length(), k.rkey());
  return ep;
}

absl::Status Runtime::ConnectPeers() {
  // Everyone has joined once this barrier passes; wait until the view
  // stream has delivered a view with every endpoint (no timeout: a rank that
  // dies meanwhile makes the next barrier fail instead).
  if (absl::Status s = ControlBarrier("pw_init"); !s.ok()) return s;
  control::View view;
  {
    absl::MutexLock lock(&view_mutex_);
    // A rank already DEAD or LEFT passed the barrier uncounted; the job
    // cannot form without it.
    auto gone = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(view_mutex_) {
      for (int d : dead_) {
        if (d) return true;
      }
      return false;
    };
    auto complete = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(view_mutex_) {
      return endpoints_known_ == nranks_ || gone();
    };
    view_mutex_.Await(absl::Condition(&complete));
    view = *latest_view_;
  }
  for (const control::ViewMember& m : view.members) {
    if (m.state == proto::Member::DEAD || m.state == proto::Member::LEFT) {
      return absl::UnavailableError(absl::StrFormat(
          "rank %d is %s (%s) before the job formed; restart the job",
          m.rank, control::MemberStateName(m.state), m.reason));
    }
  }
  for (int peer = 0; peer < nranks_; ++peer) {
    if (peer == rank_) continue;
    absl::StatusOr<TransportEndpoint> ep = PeerEndpoint(view, peer);
    if (!ep.ok()) return ep.status();
    if (absl::Status s = transport_->Connect(peer, *ep); !s.ok()) return s;
  }
  if (verbs_ != nullptr) {
    // A queue pair to itself: a home's own atomics go through its NIC too,
    // since CPU atomics and the NIC's are not atomic with each other
    // (IBV_ATOMIC_HCA, as on rxe).
    absl::StatusOr<TransportEndpoint> self = verbs_->EndpointFor(rank_);
    if (!self.ok()) return self.status();
    if (absl::Status s = verbs_->Connect(rank_, *self); !s.ok()) return s;
    coherence_->SetAtomicsThroughTransport(true);
  }
  return absl::OkStatus();
}

void Runtime::OnView(const control::View& view) {
  std::vector<std::pair<int, std::string>> newly_dead;
  std::vector<int> newly_suspected, cleared;
  {
    absl::MutexLock lock(&view_mutex_);
    if (view.epoch <= view_epoch_) return;
    view_epoch_ = view.epoch;
    latest_view_ = std::make_unique<control::View>(view);
    endpoints_known_ = 0;
    for (const control::ViewMember& m : view.members) {
      if ((m.endpoint.has_tcp() && m.endpoint.tcp().keys_size() > 0) ||
          (m.endpoint.has_verbs() && m.endpoint.verbs().qps_size() > 0) ||
          (nranks_ == 1 && m.rank == rank_)) {
        ++endpoints_known_;
      }
    }
    if (dead_.empty()) dead_.assign(nranks_, 0);
    if (suspected_.empty()) suspected_.assign(nranks_, 0);
    for (const control::ViewMember& m : view.members) {
      if (m.rank < 0 || m.rank >= nranks_ || m.rank == rank_ || dead_[m.rank]) {
        continue;
      }
      const bool suspect = m.state == proto::Member::SUSPECT;
      if (suspect && !suspected_[m.rank]) newly_suspected.push_back(m.rank);
      if (!suspect && suspected_[m.rank]) cleared.push_back(m.rank);
      suspected_[m.rank] = suspect;
      if (m.state == proto::Member::DEAD || m.state == proto::Member::LEFT) {
        dead_[m.rank] = 1;
        newly_dead.emplace_back(
            m.rank, absl::StrFormat("membership declared it %s at epoch %d%s%s",
                                    control::MemberStateName(m.state),
                                    view.epoch, m.reason.empty() ? "" : ": ",
                                    m.reason));
      }
    }
  }
  // Suspicion changes nothing: faults on a suspected rank's pages wait for
  // it, however long it is silent.
  for (int peer : newly_suspected) {
    Warning("rank %d is suspected at epoch %d (%s); the "
            "%d faults and %d operations of this rank waiting on it keep "
            "waiting, nothing is dropped",
            peer, view.epoch, view.Find(peer)->reason,
            fault_service_ ? fault_service_->FaultsWaitingOn(peer) : 0,
            transport_ ? transport_->Outstanding(peer) : 0);
  }
  for (int peer : cleared) {
    Warning("rank %d is no longer suspected (epoch %d)", peer, view.epoch);
  }
  for (const auto& [peer, why] : newly_dead) {
    const bool dead = why.find("DEAD") != std::string::npos;
    if (dead) {
      Error("rank %d is dead (%s); faults on pages it homes fail from now on, "
            "everything else carries on",
            peer, why);
    }
    // A rank that left closes its connections itself; only a dead one needs
    // the transport to give up on it.
    if (transport_ && dead) transport_->PeerDied(peer);
    if (fetcher_) fetcher_->PeerDied(peer, why);
    if (coherence_) coherence_->PeerDied(peer, why);
    if (sequential_) sequential_->PeerDied(peer, why);
  }
}

void Runtime::MembershipCounts(uint64_t* suspected, uint64_t* dead) const {
  absl::MutexLock lock(&view_mutex_);
  *suspected = 0;
  *dead = 0;
  for (int s : suspected_) *suspected += s != 0;
  for (int d : dead_) *dead += d != 0;
}

absl::Status Runtime::CheckStanding(const char* call) const {
  if (!control_) return absl::OkStatus();
  absl::Status standing = control_->Standing();
  if (standing.ok()) return standing;
  return absl::AbortedError(absl::StrCat(
      call, ": ", standing.message(),
      "; this rank can no longer act in the job: end it (pw_finalize) and "
      "restart the job"));
}

}  // namespace pagewire
