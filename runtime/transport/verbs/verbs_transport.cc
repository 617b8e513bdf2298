// verbs_transport.cc - VerbsTransport's setup: the verbs objects in
// rc_pingpong's order (the device, port and GID come from verbs_device.h), memory registration,
// per-peer queue pairs and their connection, and the "pw-verbs" receive
// thread. The datapath is in verbs_transport_datapath.cc.
#include "runtime/transport/verbs/verbs_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "runtime/base/log.h"
#include "runtime/base/service_thread.h"
#include "runtime/transport/verbs/verbs_device.h"

namespace pagewire {

using verbs_internal::ChoosePort;
using verbs_internal::ChosenPort;
using verbs_internal::CompletionChannel;
using verbs_internal::CompletionQueue;
using verbs_internal::Context;
using verbs_internal::DeviceList;
using verbs_internal::ErrnoStr;
using verbs_internal::GidString;
using verbs_internal::MemoryRegistration;
using verbs_internal::ProtectionDomain;
using verbs_internal::QueuePair;
using verbs_internal::RemoteQp;

namespace {

constexpr int kAccess = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ |
                        IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC;

// Tags in the completion epoll set.
constexpr uint64_t kChannelTag = 1;
constexpr uint64_t kSoftwareTag = 2;

// READs and atomics a QP keeps in flight per direction: the device's limit,
// capped where more buys nothing for page-sized READs.
constexpr int kMaxReadAtomic = 16;

// Reads an integer environment variable; unset leaves *out alone.
absl::Status EnvInt(const char* name, int min, int* out) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return absl::OkStatus();
  int n;
  if (!absl::SimpleAtoi(v, &n) || n < min) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "verbs: %s=%s is not an integer >= %d", name, v, min));
  }
  *out = n;
  return absl::OkStatus();
}

// The configuration with the PAGEWIRE_VERBS_* variables filled in for the
// fields the caller left unset.
absl::StatusOr<VerbsTransportConfig> Resolve(const VerbsTransportConfig& in) {
  VerbsTransportConfig c = in;
  if (c.port < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("verbs: port %d must be >= 1 (0: automatic)", c.port));
  }
  if (c.max_queue_pairs < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "verbs: max_queue_pairs %d must be >= 1", c.max_queue_pairs));
  }
  if (c.retry_count > 7 || c.ack_timeout_exponent > 31) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "verbs: retry_count %d must be <= 7 and ack_timeout_exponent %d <= 31",
        c.retry_count, c.ack_timeout_exponent));
  }
  if (!c.use_environment) return c;
  if (c.device.empty()) {
    const char* v = std::getenv("PAGEWIRE_VERBS_DEVICE");
    if (v != nullptr) c.device = v;
  }
  if (c.port == 0) {
    if (absl::Status s = EnvInt("PAGEWIRE_VERBS_PORT", 1, &c.port); !s.ok()) {
      return s;
    }
  }
  if (c.gid_index < 0) {
    if (absl::Status s = EnvInt("PAGEWIRE_VERBS_GID_INDEX", 0, &c.gid_index);
        !s.ok()) {
      return s;
    }
  }
  return c;
}

}  // namespace

VerbsTransport::Connection::Connection(int peer_rank, uint32_t send_psn)
    : peer(peer_rank), psn(send_psn), backlog(kSendQueueDepth) {}

VerbsTransport::VerbsTransport(const VerbsTransportConfig& config)
    : advertise_host_(config.advertise_host),
      rank_(config.rank),
      ack_timeout_exponent_(config.ack_timeout_exponent),
      retry_count_(config.retry_count),
      software_(1024) {}

absl::StatusOr<std::unique_ptr<VerbsTransport>> VerbsTransport::Create(
    const VerbsTransportConfig& config) {
  absl::StatusOr<VerbsTransportConfig> resolved = Resolve(config);
  if (!resolved.ok()) return resolved.status();
  std::unique_ptr<VerbsTransport> t(new VerbsTransport(*resolved));
  if (absl::Status s = t->Open(*resolved); !s.ok()) return s;
  return t;
}

absl::Status VerbsTransport::Open(const VerbsTransportConfig& config) {
  // 1. The device context, and the port and GID to use.
  absl::StatusOr<ChosenPort> chosen =
      ChoosePort(config.device, config.port, config.gid_index);
  if (!chosen.ok()) return chosen.status();
  device_name_ = chosen->device_name;
  path_.port_num = chosen->port;
  path_.sgid_index = chosen->gid_index;
  path_.mtu = chosen->mtu;
  gid_ = chosen->gid;
  max_msg_sz_ = chosen->max_msg_sz;
  context_ = std::move(chosen->context);
  ibv_device_attr dev{};
  if (absl::Status s = ApplyDeviceLimits(config, dev); !s.ok()) return s;

  // 2. The protection domain. (3. Memory regions come with RegisterMemory.)
  pd_ = ProtectionDomain(ibv_alloc_pd(context_.get()));
  if (!pd_) {
    return absl::InternalError(absl::StrFormat(
        "verbs: ibv_alloc_pd(%s): %s", device_name_, ErrnoStr(errno)));
  }
  if (absl::Status s = CreateCompletionQueues(dev); !s.ok()) return s;

  // 5. Queue pairs come per peer (EndpointFor). The receive thread last.
  thread_ = std::thread([this] { ReceiveLoop(); });
  Log("verbs: rank %d uses %s port %d, GID index %d (%s), MTU %d", rank_,
      device_name_, path_.port_num, path_.sgid_index, GidString(gid_),
      128 << path_.mtu);
  return absl::OkStatus();
}

absl::Status VerbsTransport::ApplyDeviceLimits(
    const VerbsTransportConfig& config, ibv_device_attr& dev) {
  if (int rc = ibv_query_device(context_.get(), &dev); rc != 0) {
    return absl::InternalError(absl::StrFormat(
        "verbs: ibv_query_device(%s): %s", device_name_, ErrnoStr(rc)));
  }
  atomics_ = dev.atomic_cap != IBV_ATOMIC_NONE;
  path_.max_rd_atomic = static_cast<uint8_t>(std::max(
      1, std::min({kMaxReadAtomic, dev.max_qp_rd_atom,
                   dev.max_qp_init_rd_atom})));
  path_.timeout_exponent = ack_timeout_exponent_;
  path_.retry_count = retry_count_;
  if (static_cast<uint32_t>(dev.max_qp_wr) < kSendQueueDepth) {
    return absl::UnavailableError(absl::StrFormat(
        "verbs: %s allows %d work requests per queue, Pagewire needs %d",
        device_name_, dev.max_qp_wr, kSendQueueDepth));
  }
  // Every QP's send queue may complete into the one send CQ at once (a
  // flush completes every request, signalled or not), so the CQ holds them
  // all; the device's CQ size bounds how many QPs that allows.
  const int64_t want = static_cast<int64_t>(config.max_queue_pairs) *
                       kSendQueueDepth;
  const int cq_entries = static_cast<int>(std::min<int64_t>(want, dev.max_cqe));
  max_queue_pairs_ = cq_entries / static_cast<int>(kSendQueueDepth);
  if (max_queue_pairs_ < 1) {
    return absl::UnavailableError(absl::StrFormat(
        "verbs: %s's completion queues hold %d entries, fewer than one send "
        "queue (%d)",
        device_name_, dev.max_cqe, kSendQueueDepth));
  }
  return absl::OkStatus();
}

absl::Status VerbsTransport::CreateCompletionQueues(
    const ibv_device_attr& dev) {
  // 4. Completion channels and queues: send (drained by the consumer) and
  // receive (drained by "pw-verbs"). The send CQ holds every queue pair's
  // send queue.
  const int cq_entries = max_queue_pairs_ * static_cast<int>(kSendQueueDepth);
  send_channel_ = CompletionChannel(ibv_create_comp_channel(context_.get()));
  recv_channel_ = CompletionChannel(ibv_create_comp_channel(context_.get()));
  if (!send_channel_ || !recv_channel_) {
    return absl::InternalError(absl::StrFormat(
        "verbs: ibv_create_comp_channel(%s): %s", device_name_,
        ErrnoStr(errno)));
  }
  for (ibv_comp_channel* ch : {send_channel_.get(), recv_channel_.get()}) {
    // Non-blocking, so taking events never blocks the consumer.
    int flags = ::fcntl(ch->fd, F_GETFL);
    if (flags < 0 || ::fcntl(ch->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
      return absl::InternalError(absl::StrFormat(
          "verbs: fcntl(completion channel): %s", ErrnoStr(errno)));
    }
  }
  send_cq_ = CompletionQueue(ibv_create_cq(context_.get(), cq_entries, nullptr,
                                           send_channel_.get(), 0));
  const int recv_entries = static_cast<int>(std::min<int64_t>(
      static_cast<int64_t>(max_queue_pairs_) * kRecvDepth, dev.max_cqe));
  recv_cq_ = CompletionQueue(ibv_create_cq(context_.get(), recv_entries,
                                           nullptr, recv_channel_.get(), 0));
  if (!send_cq_ || !recv_cq_) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "verbs: ibv_create_cq(%s, %d entries): %s", device_name_, cq_entries,
        ErrnoStr(errno)));
  }
  if (ibv_req_notify_cq(send_cq_.get(), 0) != 0 ||
      ibv_req_notify_cq(recv_cq_.get(), 0) != 0) {
    return absl::InternalError(absl::StrFormat(
        "verbs: ibv_req_notify_cq(%s): %s", device_name_, ErrnoStr(errno)));
  }
  send_armed_ = true;

  // completion_fd(): the send channel plus the software completions' bell.
  software_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  completion_epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  wake_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (software_fd_.get() < 0 || completion_epoll_.get() < 0 ||
      wake_fd_.get() < 0) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("verbs: eventfd/epoll: %s", ErrnoStr(errno)));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kChannelTag;
  if (::epoll_ctl(completion_epoll_.get(), EPOLL_CTL_ADD, send_channel_->fd,
                  &ev) < 0) {
    return absl::InternalError(
        absl::StrFormat("verbs: epoll_ctl(channel): %s", ErrnoStr(errno)));
  }
  ev.data.u64 = kSoftwareTag;
  if (::epoll_ctl(completion_epoll_.get(), EPOLL_CTL_ADD, software_fd_.get(),
                  &ev) < 0) {
    return absl::InternalError(
        absl::StrFormat("verbs: epoll_ctl(eventfd): %s", ErrnoStr(errno)));
  }
  return absl::OkStatus();
}

VerbsTransport::~VerbsTransport() {
  if (thread_.joinable()) {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    uint64_t one = 1;
    ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
    (void)n;
    thread_.join();
  }
  // ibv_destroy_cq waits until every event the send CQ raised is acked.
  if (send_events_unacked_ > 0) {
    ibv_ack_cq_events(send_cq_.get(), send_events_unacked_);
    send_events_unacked_ = 0;
  }
  // Members go in reverse declaration order: the QPs (with their buffers),
  // the CQs, the channels, the user's regions, the PD, the context.
  absl::MutexLock lock(&mu_);
  by_peer_.clear();
  by_qp_num_.clear();
  connections_.clear();
}

std::string VerbsTransport::Name() const {
  return absl::StrFormat("verbs(%s:%d)", device_name_, path_.port_num);
}

TransportEndpoint VerbsTransport::LocalEndpoint() const {
  TransportEndpoint ep;
  ep.host = advertise_host_;
  ep.gid.assign(reinterpret_cast<const char*>(gid_.raw), sizeof(gid_.raw));
  return ep;
}

absl::StatusOr<MemoryRegion> VerbsTransport::RegisterMemory(void* addr,
                                                            uint64_t length) {
  if (addr == nullptr || length == 0) {
    return absl::InvalidArgumentError(
        "verbs: RegisterMemory needs a non-null address and a non-zero length");
  }
  MemoryRegistration mr(ibv_reg_mr(pd_.get(), addr, length, kAccess));
  if (!mr) {
    const int e = errno;
    return absl::Status(
        e == ENOMEM ? absl::StatusCode::kResourceExhausted
                    : absl::StatusCode::kInternal,
        absl::StrFormat("verbs: ibv_reg_mr(%p, %d bytes) on %s: %s%s", addr,
                        length, device_name_, ErrnoStr(e),
                        e == ENOMEM ? " (RLIMIT_MEMLOCK?)" : ""));
  }
  MemoryRegion r;
  r.addr = reinterpret_cast<uint64_t>(addr);
  r.length = length;
  r.lkey = mr->lkey;
  r.rkey = mr->rkey;
  absl::MutexLock lock(&regions_mu_);
  by_lkey_[r.lkey] = Registered{r, std::move(mr)};
  return r;
}

absl::Status VerbsTransport::DeregisterMemory(const MemoryRegion& region) {
  MemoryRegistration mr;
  {
    absl::MutexLock lock(&regions_mu_);
    auto it = by_lkey_.find(region.lkey);
    if (it == by_lkey_.end() || it->second.region.rkey != region.rkey ||
        it->second.region.addr != region.addr ||
        it->second.region.length != region.length) {
      return absl::NotFoundError(absl::StrFormat(
          "verbs: no registered region at 0x%x (+0x%x) with rkey 0x%x",
          region.addr, region.length, region.rkey));
    }
    mr = std::move(it->second.mr);
    by_lkey_.erase(it);
  }
  int rc = ibv_dereg_mr(mr.release());
  if (rc != 0) {
    return absl::InternalError(absl::StrFormat(
        "verbs: ibv_dereg_mr(rkey 0x%x): %s", region.rkey, ErrnoStr(rc)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<VerbsTransport::Connection>>
VerbsTransport::NewConnection(int peer) {
  std::random_device rd;
  auto c = std::make_unique<Connection>(peer, rd() & 0xffffff);
  const size_t bytes =
      static_cast<size_t>(kRecvDepth + kMessageSlots) * kMaxMessageBytes;
  c->buffers.reset(new char[bytes]);
  c->buffers_mr = MemoryRegistration(
      ibv_reg_mr(pd_.get(), c->buffers.get(), bytes, IBV_ACCESS_LOCAL_WRITE));
  if (!c->buffers_mr) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "verbs: registering %d bytes of message buffers for peer %d: %s",
        bytes, peer, ErrnoStr(errno)));
  }
  ibv_qp_init_attr init{};
  init.send_cq = send_cq_.get();
  init.recv_cq = recv_cq_.get();
  init.qp_type = IBV_QPT_RC;
  init.sq_sig_all = 0;  // selective signalling
  init.cap.max_send_wr = kSendQueueDepth;
  init.cap.max_recv_wr = kRecvDepth;
  init.cap.max_send_sge = 1;
  init.cap.max_recv_sge = 1;
  ibv_qp* qp = ibv_create_qp(pd_.get(), &init);
  if (qp == nullptr) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "verbs: ibv_create_qp for peer %d on %s: %s", peer, device_name_,
        ErrnoStr(errno)));
  }
  c->qp = QueuePair(qp);
  if (absl::Status s = c->qp.ToInit(path_); !s.ok()) {
    return absl::InternalError(
        absl::StrFormat("verbs: QP for peer %d: %s", peer, s.message()));
  }
  // Receives may be posted in INIT: they are in place before the peer can
  // send.
  for (uint32_t i = 0; i < kRecvDepth; ++i) {
    if (int rc = PostReceive(c.get(), i); rc != 0) {
      return absl::InternalError(absl::StrFormat(
          "verbs: ibv_post_recv for peer %d: %s", peer, ErrnoStr(rc)));
    }
  }
  return c;
}

absl::StatusOr<TransportEndpoint> VerbsTransport::EndpointFor(int peer) {
  if (peer < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("verbs: peer rank %d must not be negative", peer));
  }
  absl::MutexLock lock(&mu_);
  if (dead_.contains(peer)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "verbs: peer %d was declared dead; it is not reconnected", peer));
  }
  auto it = by_peer_.find(peer);
  if (it != by_peer_.end()) {
    Connection* c = it->second;
    absl::MutexLock conn_lock(&c->mu);
    if (c->state == Connection::State::kInit ||
        c->state == Connection::State::kConnected) {
      TransportEndpoint ep = LocalEndpoint();
      ep.qp_num = c->qp.qp_num();
      ep.psn = c->psn;
      return ep;
    }
  }
  if (static_cast<int>(connections_.size()) >= max_queue_pairs_) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "verbs: peer %d needs a queue pair, but this transport made all %d "
        "its completion queues were sized for (max_queue_pairs)",
        peer, max_queue_pairs_));
  }
  // A failed QP stays (its flushes may still be in the CQ); a new one
  // takes its place for the peer.
  absl::StatusOr<std::unique_ptr<Connection>> made = NewConnection(peer);
  if (!made.ok()) return made.status();
  Connection* c = made->get();
  connections_.push_back(*std::move(made));
  by_peer_[peer] = c;
  by_qp_num_[c->qp.qp_num()] = c;
  TransportEndpoint ep = LocalEndpoint();
  ep.qp_num = c->qp.qp_num();
  ep.psn = c->psn;
  return ep;
}

VerbsTransport::Connection* VerbsTransport::FindConnection(int peer) {
  absl::ReaderMutexLock lock(&mu_);
  auto it = by_peer_.find(peer);
  return it == by_peer_.end() ? nullptr : it->second;
}

uint64_t VerbsTransport::Outstanding(int peer) const {
  Connection* c;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = by_peer_.find(peer);
    if (it == by_peer_.end()) return 0;
    c = it->second;  // connections live as long as the transport
  }
  absl::MutexLock lock(&c->mu);
  return c->in_flight() + c->backlog.size();
}

VerbsTransport::Connection* VerbsTransport::FindByQpNum(uint32_t qp_num) {
  absl::ReaderMutexLock lock(&mu_);
  auto it = by_qp_num_.find(qp_num);
  return it == by_qp_num_.end() ? nullptr : it->second;
}

absl::Status VerbsTransport::Connect(int peer,
                                     const TransportEndpoint& endpoint) {
  if (endpoint.gid.size() != sizeof(ibv_gid) || endpoint.qp_num == 0 ||
      endpoint.qp_num > 0xffffff || endpoint.psn > 0xffffff) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "verbs: peer %d's endpoint (qp %d, psn %d, %d-byte GID) is not a "
        "verbs endpoint from EndpointFor",
        peer, endpoint.qp_num, endpoint.psn, endpoint.gid.size()));
  }
  Connection* c;
  {
    absl::MutexLock lock(&mu_);
    if (dead_.contains(peer)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "verbs: peer %d was declared dead; it is not reconnected", peer));
    }
    auto it = by_peer_.find(peer);
    if (it == by_peer_.end()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "verbs: Connect to peer %d before EndpointFor(%d): the peer needs "
          "this node's QP number for it",
          peer, peer));
    }
    c = it->second;
  }
  RemoteQp remote;
  remote.qp_num = endpoint.qp_num;
  remote.psn = endpoint.psn;
  std::memcpy(remote.gid.raw, endpoint.gid.data(), sizeof(remote.gid.raw));

  absl::MutexLock lock(&c->mu);
  switch (c->state) {
    case Connection::State::kConnected:
      if (c->remote.qp_num == remote.qp_num &&
          std::memcmp(c->remote.gid.raw, remote.gid.raw, 16) == 0) {
        return absl::OkStatus();  // idempotent
      }
      return absl::FailedPreconditionError(absl::StrFormat(
          "verbs: peer %d is connected to qp %d; a new endpoint (qp %d) needs "
          "a new QP here too (after a failure, EndpointFor gives one)",
          peer, c->remote.qp_num, remote.qp_num));
    case Connection::State::kBroken:
    case Connection::State::kDead:
      return absl::FailedPreconditionError(absl::StrFormat(
          "verbs: peer %d's QP failed (%s); call EndpointFor(%d) for a new "
          "one and exchange endpoints again",
          peer, c->broken_reason, peer));
    case Connection::State::kInit:
      break;
  }
  if (absl::Status s = c->qp.ToReadyToReceive(path_, remote); !s.ok()) {
    return absl::InternalError(absl::StrFormat(
        "verbs: connecting to peer %d (qp %d, GID %s): %s", peer,
        remote.qp_num, GidString(remote.gid), s.message()));
  }
  if (absl::Status s = c->qp.ToReadyToSend(path_, c->psn); !s.ok()) {
    return absl::InternalError(absl::StrFormat(
        "verbs: connecting to peer %d (qp %d, GID %s): %s", peer,
        remote.qp_num, GidString(remote.gid), s.message()));
  }
  c->remote = remote;
  c->state = Connection::State::kConnected;
  Log("verbs: rank %d connected to peer %d (qp %d -> qp %d at %s)", rank_,
      peer, c->qp.qp_num(), remote.qp_num, GidString(remote.gid));
  return absl::OkStatus();
}

void VerbsTransport::PeerDied(int peer) {
  Connection* c;
  {
    absl::MutexLock lock(&mu_);
    dead_[peer] = true;  // later posts complete with kPeerGone at once
    auto it = by_peer_.find(peer);
    if (it == by_peer_.end()) return;
    c = it->second;
  }
  absl::MutexLock lock(&c->mu);
  if (c->state == Connection::State::kDead) return;
  const uint32_t outstanding = c->in_flight();
  const size_t queued = c->backlog.size();
  // ERR makes the NIC flush what is in flight (kPeerGone, in order); the
  // queued work follows once those are polled.
  if (c->state != Connection::State::kBroken) {
    if (absl::Status s = c->qp.ToError(); !s.ok()) {
      Error("verbs: rank %d: peer %d: %s", rank_, peer, s.message());
    }
  }
  BreakLocked(c, Connection::State::kDead, "declared dead (PeerDied)");
  Error("verbs: rank %d: peer %d declared dead (PeerDied); queue pair %d "
        "moved to ERR; %d outstanding and %d queued operations complete with "
        "%s",
        rank_, peer, c->qp.qp_num(), outstanding, queued,
        WcStatusName(WcStatus::kPeerGone));
}

void VerbsTransport::SetMessageHandler(MessageHandler handler) {
  absl::MutexLock lock(&handler_mu_);
  handler_ = std::move(handler);
}

// ---------------------------------------------------------------------------
// "pw-verbs": incoming messages.

void VerbsTransport::ReceiveLoop() {
  BecomeServiceThread("pw-verbs");
  for (;;) {
    pollfd fds[2] = {{wake_fd_.get(), POLLIN, 0},
                     {recv_channel_->fd, POLLIN, 0}};
    // No timeout: the channel and the stop eventfd are the only reasons.
    int n = ::poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      Error("verbs: rank %d: poll: %s; the receive thread stops", rank_,
            ErrnoStr(errno));
      return;
    }
    if (fds[0].revents & POLLIN) {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
    }
    if (fds[1].revents & POLLIN) DrainReceives();
  }
}

int VerbsTransport::PostReceive(Connection* c, uint32_t slot) {
  ibv_sge sge{};
  sge.addr = reinterpret_cast<uint64_t>(c->recv_buffer(slot));
  sge.length = kMaxMessageBytes;
  sge.lkey = c->buffers_mr->lkey;
  ibv_recv_wr wr{};
  wr.wr_id = slot;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  ibv_recv_wr* bad = nullptr;
  return ibv_post_recv(c->qp.get(), &wr, &bad);
}

void VerbsTransport::RepostReceive(Connection* c, uint32_t slot) {
  if (int rc = PostReceive(c, slot); rc != 0) {
    Warning("verbs: rank %d: re-posting a receive buffer for peer %d: %s",
            rank_, c->peer, ErrnoStr(rc));
  }
}

void VerbsTransport::DrainReceives() {
  ibv_cq* cq = nullptr;
  void* cq_context = nullptr;
  // Take and ack every event, re-arm, then poll until empty: a message that
  // lands after the re-arm raises a new event.
  while (ibv_get_cq_event(recv_channel_.get(), &cq, &cq_context) == 0) {
    ibv_ack_cq_events(cq, 1);
  }
  if (ibv_req_notify_cq(recv_cq_.get(), 0) != 0) {
    Error("verbs: rank %d: ibv_req_notify_cq(receive): %s", rank_,
          ErrnoStr(errno));
  }
  ibv_wc wcs[kCompletionBurst];
  for (;;) {
    int n = ibv_poll_cq(recv_cq_.get(), kCompletionBurst, wcs);
    if (n < 0) {
      Error("verbs: rank %d: ibv_poll_cq(receive) failed", rank_);
      return;
    }
    for (int i = 0; i < n; ++i) {
      const ibv_wc& wc = wcs[i];
      Connection* c = FindByQpNum(wc.qp_num);
      if (c == nullptr) {
        Warning("verbs: rank %d: a receive completion for unknown qp %d",
                rank_, wc.qp_num);
        continue;
      }
      if (wc.status != IBV_WC_SUCCESS) {
        // The QP is in ERR: this side failed an operation, the peer did one
        // that broke the pair (a remote access error breaks both ends), or
        // PeerDied. Its receives flush; they are not re-posted.
        absl::MutexLock lock(&c->mu);
        if (c->state == Connection::State::kInit ||
            c->state == Connection::State::kConnected) {
          std::string why = absl::StrFormat(
              "its receive queue was flushed: %s",
              ibv_wc_status_str(wc.status));
          BreakLocked(c, Connection::State::kBroken, why);
          Error("verbs: rank %d: peer %d: queue pair %d is in error (%s); "
                "its operations complete with %s until it is reconnected",
                rank_, c->peer, c->qp.qp_num(), why,
                WcStatusName(WcStatus::kPeerGone));
        }
        continue;
      }
      const uint32_t slot = static_cast<uint32_t>(wc.wr_id);
      const uint16_t type =
          (wc.wc_flags & IBV_WC_WITH_IMM)
              ? static_cast<uint16_t>(ntohl(wc.imm_data))
              : 0;
      {
        absl::ReaderMutexLock lock(&handler_mu_);
        if (handler_) {
          handler_(c->peer, type,
                   absl::MakeConstSpan(c->recv_buffer(slot), wc.byte_len));
        } else {
          Warning("verbs: rank %d: message type %d from peer %d dropped: no "
                  "handler set",
                  rank_, type, c->peer);
        }
      }
      RepostReceive(c, slot);
    }
    if (n < kCompletionBurst) return;
  }
}

}  // namespace pagewire
