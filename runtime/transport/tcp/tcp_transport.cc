// tcp_transport.cc - TcpTransport setup: listening socket, connections,
// memory registration, the "pw-tcp" event loop and teardown. The
// handshake is in tcp_transport_handshake.cc; the datapath (posting,
// serving, completions) in tcp_transport_datapath.cc.
#include "runtime/transport/tcp/tcp_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "runtime/base/log.h"
#include "runtime/base/service_thread.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the TCP wire format is little-endian host order");

namespace pagewire {

namespace {

// epoll_event.data.u64 tags for the two fds that are not connections (a
// Connection* is never 1 or 2).
constexpr uint64_t kWakeTag = 1;
constexpr uint64_t kListenTag = 2;

// Events taken per epoll_wait; more simply wait for the next round.
constexpr int kMaxEvents = 64;

// Connections a listener queues before accept: a node's peers.
constexpr int kListenBacklog = 256;

// Output bytes a connection preallocates; a chain of requests or a few
// responses fit without growing.
constexpr size_t kOutReserve = 64 * 1024;
// Pending operations a connection preallocates; grows only if exceeded.
constexpr size_t kPendingSlots = 1024;
// Completions preallocated in the queue; grows only if exceeded.
constexpr size_t kCompletionSlots = 4096;

std::string ErrnoStr(int e) { return std::strerror(e); }

// The address part of "host:port" (an IPv6 host has colons of its own),
// with an IPv4 peer reached over an IPv6 socket (::ffff:a.b.c.d) as a.b.c.d.
std::string HostPart(const std::string& remote) {
  const size_t colon = remote.rfind(':');
  std::string ip = colon == std::string::npos ? remote : remote.substr(0, colon);
  if (ip.rfind("::ffff:", 0) == 0 && ip.find('.') != std::string::npos) {
    ip = ip.substr(7);
  }
  return ip;
}

std::string SockaddrString(const sockaddr* sa) {
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (sa->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    port = ntohs(in->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    port = ntohs(in6->sin6_port);
  }
  return absl::StrFormat("%s:%d", host, port);
}

absl::Status SetNonblockingNoDelay(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return absl::InternalError(
        absl::StrFormat("fcntl(O_NONBLOCK): %s", ErrnoStr(errno)));
  }
  int one = 1;
  // Requests are small and latency-bound: never wait for Nagle.
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
    return absl::InternalError(
        absl::StrFormat("setsockopt(TCP_NODELAY): %s", ErrnoStr(errno)));
  }
  return absl::OkStatus();
}

struct AddrInfoDeleter {
  void operator()(addrinfo* ai) const { freeaddrinfo(ai); }
};

absl::StatusOr<std::unique_ptr<addrinfo, AddrInfoDeleter>> Resolve(
    const std::string& host, uint32_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* res = nullptr;
  std::string service = absl::StrFormat("%d", port);
  int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tcp: cannot resolve %s:%d: %s", host, port, gai_strerror(rc)));
  }
  return std::unique_ptr<addrinfo, AddrInfoDeleter>(res);
}

}  // namespace

TcpTransport::Connection::Connection(Role r, int fd_in, int rank,
                                     std::string remote_addr)
    : role(r),
      fd(fd_in),
      remote(std::move(remote_addr)),
      remote_ip(HostPart(remote)),
      out(kOutReserve),
      pending(r == Role::kOutgoing ? kPendingSlots : 1),
      peer_rank(rank) {
  // Big enough for many responses per read; a frame larger than this
  // continues in a sink (the READ buffer or `body`).
  in.resize(256 * 1024);
}

TcpTransport::TcpTransport(const TcpTransportConfig& config)
    : config_(config),
      key_(tcp_handshake::DataPlaneKey(config.secret)),
      key_rng_(std::random_device{}()),
      cq_(kCompletionSlots) {
  thread_wcs_.reserve(1024);
  drained_.reserve(kPendingSlots);
}

absl::StatusOr<std::unique_ptr<TcpTransport>> TcpTransport::Create(
    const TcpTransportConfig& config) {
  if (config.rank < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tcp: rank %d must not be negative", config.rank));
  }
  if (config.secret.empty()) {
    return absl::InvalidArgumentError(
        "tcp: no job secret: every data-plane connection proves it; set "
        "PAGEWIRE_SECRET to the same random string on every rank "
        "(pagewire-run does)");
  }
  if (config.max_unauthenticated < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tcp: max_unauthenticated %d must be at least 1",
        config.max_unauthenticated));
  }
  std::unique_ptr<TcpTransport> t(new TcpTransport(config));
  absl::Status s = t->Start();
  if (!s.ok()) return s;
  return t;
}

absl::Status TcpTransport::Start() {
  // Setup order: listening socket, epoll, wake eventfd, completion eventfd,
  // thread. The destructor stops the thread first; the fds close in reverse.
  auto ai = Resolve(config_.bind_host, config_.port, /*passive=*/true);
  if (!ai.ok()) return ai.status();
  const addrinfo* a = ai->get();
  listen_fd_ = UniqueFd(::socket(a->ai_family,
                                 a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                                 a->ai_protocol));
  if (listen_fd_.get() < 0) {
    return absl::InternalError(
        absl::StrFormat("tcp: socket: %s", ErrnoStr(errno)));
  }
  int one = 1;
  ::setsockopt(listen_fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(listen_fd_.get(), a->ai_addr, a->ai_addrlen) < 0) {
    return absl::UnavailableError(absl::StrFormat(
        "tcp: rank %d cannot bind %s:%d: %s", config_.rank, config_.bind_host,
        config_.port, ErrnoStr(errno)));
  }
  if (::listen(listen_fd_.get(), kListenBacklog) < 0) {
    return absl::InternalError(
        absl::StrFormat("tcp: listen: %s", ErrnoStr(errno)));
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  ::getsockname(listen_fd_.get(), reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = bound.ss_family == AF_INET6
              ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
              : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);

  epoll_fd_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  wake_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  cq_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (epoll_fd_.get() < 0 || wake_fd_.get() < 0 || cq_fd_.get() < 0) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("tcp: epoll/eventfd: %s", ErrnoStr(errno)));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeTag;
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &ev) < 0) {
    return absl::InternalError(
        absl::StrFormat("tcp: epoll_ctl(wake): %s", ErrnoStr(errno)));
  }
  ev.data.u64 = kListenTag;
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, listen_fd_.get(), &ev) < 0) {
    return absl::InternalError(
        absl::StrFormat("tcp: epoll_ctl(listen): %s", ErrnoStr(errno)));
  }
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

TcpTransport::~TcpTransport() {
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
  // The thread is gone: every connection is ours alone now.
  // Connections closed in the thread's last round may hold late posts.
  std::vector<std::shared_ptr<Connection>> conns = std::move(graveyard_);
  {
    absl::MutexLock lock(&mu_);
    for (auto& [ptr, conn] : conns_) conns.push_back(conn);
    conns_.clear();
    peers_.clear();
  }
  std::vector<WorkCompletion> flushed;
  for (auto& c : conns) {
    absl::MutexLock lock(&c->mu);
    if (!c->closed) {
      c->closed = true;
      if (c->fd >= 0) ::close(c->fd);
    }
    while (!c->pending.empty()) {
      const PendingOp& op = c->pending.Front();
      if (op.probe) {
        c->pending.PopFront();
        continue;
      }
      WorkCompletion wc;
      wc.wr_id = op.wr_id;
      wc.status = WcStatus::kFlushed;
      wc.opcode = op.opcode;
      wc.peer = c->peer_rank;
      flushed.push_back(wc);
      c->pending.PopFront();
    }
  }
  PushCompletions(flushed);
}

TransportEndpoint TcpTransport::LocalEndpoint() const {
  TransportEndpoint ep;
  if (!config_.advertise_host.empty()) {
    ep.host = config_.advertise_host;
  } else if (config_.bind_host == "0.0.0.0" || config_.bind_host.empty()) {
    ep.host = "127.0.0.1";
  } else {
    ep.host = config_.bind_host;
  }
  ep.port = port_;
  return ep;
}

absl::StatusOr<MemoryRegion> TcpTransport::RegisterMemory(void* addr,
                                                          uint64_t length) {
  if (addr == nullptr || length == 0) {
    return absl::InvalidArgumentError(
        "tcp: RegisterMemory needs a non-null address and a non-zero length");
  }
  absl::MutexLock lock(&regions_mu_);
  MemoryRegion r;
  r.addr = reinterpret_cast<uint64_t>(addr);
  r.length = length;
  // Random keys: a stale or forged key from a peer is very unlikely to name
  // a live region, and 0 never does.
  do {
    r.rkey = static_cast<uint32_t>(key_rng_());
  } while (r.rkey == 0 || by_rkey_.contains(r.rkey));
  do {
    r.lkey = static_cast<uint32_t>(key_rng_());
  } while (r.lkey == 0 || by_lkey_.contains(r.lkey));
  by_rkey_[r.rkey] = r;
  by_lkey_[r.lkey] = r;
  return r;
}

absl::Status TcpTransport::DeregisterMemory(const MemoryRegion& region) {
  absl::MutexLock lock(&regions_mu_);
  auto it = by_rkey_.find(region.rkey);
  if (it == by_rkey_.end() || it->second.lkey != region.lkey ||
      it->second.addr != region.addr || it->second.length != region.length) {
    return absl::NotFoundError(absl::StrFormat(
        "tcp: no registered region at 0x%x (+0x%x) with rkey 0x%x",
        region.addr, region.length, region.rkey));
  }
  by_rkey_.erase(it);
  by_lkey_.erase(region.lkey);
  return absl::OkStatus();
}

absl::Status TcpTransport::Connect(int peer, const TransportEndpoint& endpoint) {
  if (peer < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tcp: peer rank %d must not be negative", peer));
  }
  if (endpoint.port == 0 || endpoint.port > 65535) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tcp: peer %d endpoint %s:%d has no valid port", peer, endpoint.host,
        endpoint.port));
  }
  {
    absl::MutexLock lock(&mu_);
    auto it = peers_.find(peer);
    if (it != peers_.end()) {
      if (it->second.dead) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "tcp: peer %d was declared dead; it is not reconnected", peer));
      }
      if (it->second.out != nullptr) {
        absl::MutexLock conn_lock(&it->second.out->mu);
        if (!it->second.out->closed) return absl::OkStatus();  // idempotent
      }
    }
  }
  if (absl::Status s = ExpectPeer(peer, endpoint.host); !s.ok()) return s;
  {
    absl::MutexLock lock(&mu_);
    peers_[peer].endpoint = endpoint;  // where a broken session reconnects
  }
  std::string remote;
  absl::StatusOr<UniqueFd> fd = Dial(peer, endpoint, remote);
  if (!fd.ok()) return fd.status();
  return AdoptOutgoing(peer, *std::move(fd), remote);
}

absl::StatusOr<UniqueFd> TcpTransport::Dial(int peer,
                                            const TransportEndpoint& endpoint,
                                            std::string& remote) {
  auto ai = Resolve(endpoint.host, endpoint.port, /*passive=*/false);
  if (!ai.ok()) return ai.status();
  UniqueFd fd;
  int err = 0;
  // A blocking connect on the control-plane thread: it reports a refused or
  // unreachable peer here, and the data path never waits on it.
  for (const addrinfo* a = ai->get(); a != nullptr; a = a->ai_next) {
    fd = UniqueFd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC,
                           a->ai_protocol));
    if (fd.get() < 0) {
      err = errno;
      continue;
    }
    // From this node's own address, not one the routing picks: the target
    // checks the source against what membership says this rank is at.
    if (absl::Status s = BindSource(fd.get(), a->ai_family); !s.ok()) {
      return s;
    }
    int rc;
    do {
      rc = ::connect(fd.get(), a->ai_addr, a->ai_addrlen);
    } while (rc < 0 && errno == EINTR);
    if (rc == 0) {
      remote = SockaddrString(a->ai_addr);
      break;
    }
    err = errno;
    fd.Reset();
  }
  if (fd.get() < 0) {
    return absl::UnavailableError(absl::StrFormat(
        "tcp: cannot connect to peer %d at %s:%d: %s", peer, endpoint.host,
        endpoint.port, ErrnoStr(err)));
  }
  if (absl::Status s = SetNonblockingNoDelay(fd.get()); !s.ok()) return s;
  return fd;
}

absl::Status TcpTransport::BindSource(int fd, int family) {
  if (config_.bind_host.empty() || config_.bind_host == "0.0.0.0" ||
      config_.bind_host == "::") {
    return absl::OkStatus();  // a wildcard: the routing's choice is ours
  }
  auto ai = Resolve(config_.bind_host, 0, /*passive=*/false);
  if (!ai.ok()) return ai.status();
  for (const addrinfo* a = ai->get(); a != nullptr; a = a->ai_next) {
    if (a->ai_family != family) continue;
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0) return absl::OkStatus();
    return absl::UnavailableError(absl::StrFormat(
        "tcp: rank %d cannot connect from its address %s: bind: %s",
        config_.rank, config_.bind_host, ErrnoStr(errno)));
  }
  return absl::OkStatus();  // no address of that family: leave it to routing
}

absl::Status TcpTransport::AdoptOutgoing(int peer, UniqueFd fd,
                                         const std::string& remote) {
  tcp_handshake::ClientHello hello{};
  std::memcpy(hello.magic, tcp_handshake::kClientMagic, sizeof(hello.magic));
  hello.protocol_version = config_.protocol_version;
  hello.rank = config_.rank;
  const int raw = fd.get();
  auto conn = std::make_shared<Connection>(Connection::Role::kOutgoing, raw,
                                           peer, remote);
  if (absl::Status s = FillRandom(absl::MakeSpan(conn->client_nonce));
      !s.ok()) {
    return s;
  }
  std::memcpy(hello.nonce, conn->client_nonce.data(), sizeof(hello.nonce));
  uint64_t session = 0;
  if (absl::Status s = FillRandom(absl::MakeSpan(
          reinterpret_cast<uint8_t*>(&session), sizeof(session)));
      !s.ok()) {
    return s;
  }
  hello.session = session;
  conn->auth = Connection::Auth::kAwaitChallenge;
  {
    absl::MutexLock lock(&mu_);
    PeerState& ps = peers_[peer];
    if (ps.dead) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "tcp: peer %d was declared dead while connecting", peer));
    }
    if (ps.out != nullptr) {
      absl::MutexLock conn_lock(&ps.out->mu);
      if (!ps.out->closed) return absl::OkStatus();  // a concurrent Connect won
    }
    (void)fd.Release();  // the connection owns it from here
    ps.out = conn;
    conns_[conn.get()] = conn;
    absl::MutexLock conn_lock(&conn->mu);
    conn->session = session;
    conn->out.Append(&hello, sizeof(hello));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = conn.get();
    conn->epoll_events = EPOLLIN;
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, raw, &ev) < 0) {
      int e = errno;
      conn->closed = true;
      ::close(raw);
      conns_.erase(conn.get());
      ps.out = nullptr;
      return absl::InternalError(
          absl::StrFormat("tcp: epoll_ctl(peer %d): %s", peer, ErrnoStr(e)));
    }
    FlushLocked(conn.get());
    // Nothing but the hello goes out before the target proves the secret;
    // a fresh socket takes those 32 bytes at once.
    conn->output_held = true;
    if (!conn->out.empty()) {
      conn->closed = true;
      ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, raw, nullptr);
      ::close(raw);
      conns_.erase(conn.get());
      ps.out = nullptr;
      return absl::UnavailableError(absl::StrFormat(
          "tcp: cannot send the hello to peer %d at %s", peer, remote));
    }
  }
  Debug("tcp: rank %d connected to peer %d at %s", config_.rank, peer, remote);
  return absl::OkStatus();
}

absl::Status TcpTransport::ExpectPeer(int peer, const std::string& host) {
  auto ai = Resolve(host, 0, /*passive=*/false);
  if (!ai.ok()) return ai.status();
  std::vector<std::string> ips;
  for (const addrinfo* a = ai->get(); a != nullptr; a = a->ai_next) {
    std::string ip = HostPart(SockaddrString(a->ai_addr));
    if (std::find(ips.begin(), ips.end(), ip) == ips.end()) ips.push_back(ip);
  }
  {
    absl::MutexLock lock(&mu_);
    std::vector<std::string>& known = peer_ips_[peer];
    if (known == ips) return absl::OkStatus();
    known = std::move(ips);
    recheck_claims_ = true;
  }
  uint64_t one = 1;
  ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
  (void)n;
  return absl::OkStatus();
}

uint64_t TcpTransport::Outstanding(int peer) const {
  std::shared_ptr<Connection> c;
  {
    absl::MutexLock lock(&mu_);
    auto it = peers_.find(peer);
    if (it == peers_.end() || it->second.out == nullptr) return 0;
    c = it->second.out;
  }
  absl::MutexLock lock(&c->mu);
  return c->pending.size();
}

void TcpTransport::PeerDied(int peer) {
  {
    absl::MutexLock lock(&mu_);
    peers_[peer].dead = true;  // later posts complete with kPeerGone at once
    doomed_.push_back(peer);
  }
  // "pw-tcp" closes the connections and completes what was outstanding, so
  // that no buffer it is still filling is handed back early.
  uint64_t one = 1;
  ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
  (void)n;
}

void TcpTransport::SetMessageHandler(MessageHandler handler) {
  absl::MutexLock lock(&handler_mu_);
  handler_ = std::move(handler);
}

std::string TcpTransport::Describe(const Connection& c) const {
  if (c.role == Connection::Role::kOutgoing) {
    return absl::StrFormat("peer %d (%s)", c.peer_rank, c.remote);
  }
  if (c.peer_rank >= 0) {
    return absl::StrFormat("peer %d (connection from %s)", c.peer_rank,
                           c.remote);
  }
  return absl::StrFormat("connection from %s", c.remote);
}

bool TcpTransport::SetEventsLocked(Connection* c, uint32_t events) {
  if (c->closed || c->epoll_events == events) return true;
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = c;
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, c->fd, &ev) < 0) {
    return false;
  }
  c->epoll_events = events;
  return true;
}

void TcpTransport::CloseConnection(Connection* c, WcStatus status,
                                   const std::string& reason, LogLevel level) {
  if (c->gone) return;
  c->gone = true;
  drained_.clear();
  {
    absl::MutexLock lock(&c->mu);
    c->closed = true;
    c->completions_undelivered = true;
    if (c->fd >= 0) {
      ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, c->fd, nullptr);
      ::close(c->fd);
    }
    while (!c->pending.empty()) {
      if (!c->pending.Front().probe) drained_.push_back(c->pending.Front());
      c->pending.PopFront();
    }
  }
  for (const PendingOp& op : drained_) Complete(op, status, c->peer_rank);
  {
    absl::MutexLock lock(&mu_);
    auto it = conns_.find(c);
    if (it != conns_.end()) {
      graveyard_.push_back(std::move(it->second));  // freed after this round
      conns_.erase(it);
    }
  }
  std::string line = absl::StrFormat("tcp: rank %d: %s: %s", config_.rank,
                                     Describe(*c), reason);
  if (!drained_.empty()) {
    line += absl::StrFormat("; %d outstanding operations complete with %s",
                            drained_.size(), WcStatusName(status));
  }
  // At the end of a job peers close their connections: nothing to report
  // unless that took operations with it.
  if (closes_expected_.load(std::memory_order_relaxed) && drained_.empty()) {
    return;
  }
  LogLine(level, line);
}

void TcpTransport::AcceptAll() {
  for (;;) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    int fd = ::accept4(listen_fd_.get(), reinterpret_cast<sockaddr*>(&ss),
                       &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        Warning("tcp: rank %d: accept: %s", config_.rank, ErrnoStr(errno));
      }
      return;
    }
    std::string remote = SockaddrString(reinterpret_cast<sockaddr*>(&ss));
    MakeRoomForHandshakes();
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto conn = std::make_shared<Connection>(Connection::Role::kIncoming, fd,
                                             -1, remote);
    conn->accepted_seq = ++accepted_;
    absl::MutexLock lock(&mu_);
    absl::MutexLock conn_lock(&conn->mu);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = conn.get();
    conn->epoll_events = EPOLLIN;
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) < 0) {
      Warning("tcp: rank %d: epoll_ctl for connection from %s: %s",
              config_.rank, remote, ErrnoStr(errno));
      conn->closed = true;
      ::close(fd);
      continue;
    }
    conns_[conn.get()] = std::move(conn);
  }
}

void TcpTransport::HandleWake() {
  uint64_t count;
  ssize_t n = ::read(wake_fd_.get(), &count, sizeof(count));
  (void)n;
  std::vector<int> doomed;
  std::vector<Connection*> victims;
  bool recheck;
  {
    absl::MutexLock lock(&mu_);
    doomed.swap(doomed_);
    recheck = recheck_claims_;
    recheck_claims_ = false;
    for (auto& [ptr, conn] : conns_) {
      for (int peer : doomed) {
        if (conn->peer_rank == peer) victims.push_back(ptr);
      }
    }
  }
  // The shared_ptrs stay in conns_ until CloseConnection moves them to the
  // graveyard, so the raw pointers are valid here.
  for (Connection* c : victims) {
    CloseConnection(c, WcStatus::kPeerGone,
                    "declared dead (PeerDied); connection closed",
                    LogLevel::kError);
  }
  if (recheck) RecheckWaitingClaims();
}

void TcpTransport::Loop() {
  BecomeServiceThread("pw-tcp");
  epoll_event events[kMaxEvents];
  for (;;) {
    // Sockets and the wake eventfd are the reasons to run, and a
    // reconnection attempt falling due (no timeout otherwise).
    int n = ::epoll_wait(epoll_fd_.get(), events, kMaxEvents,
                         MillisUntilNextRetry());
    if (n < 0) {
      if (errno == EINTR) continue;
      Error("tcp: rank %d: epoll_wait: %s; transport thread stops",
            config_.rank, ErrnoStr(errno));
      return;
    }
    for (int i = 0; i < n; ++i) {
      const epoll_event& ev = events[i];
      if (ev.data.u64 == kWakeTag) {
        {
          absl::MutexLock lock(&mu_);
          if (stop_) return;
        }
        HandleWake();
        continue;
      }
      if (ev.data.u64 == kListenTag) {
        AcceptAll();
        continue;
      }
      auto* c = static_cast<Connection*>(ev.data.ptr);
      if (c->gone) continue;  // closed earlier in this round
      if (c->auth == Connection::Auth::kConnecting) {
        FinishConnect(c);
        continue;
      }
      if (c->read_paused && (ev.events & (EPOLLERR | EPOLLHUP))) {
        // Not reading (back-pressure), so the failure would never be seen
        // by a read: the requester is gone, close now.
        int err = 0;
        socklen_t len = sizeof(err);
        ::getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        CloseConnection(c, WcStatus::kPeerGone,
                        absl::StrFormat("connection broke: %s",
                                        err != 0 ? ErrnoStr(err) : "hang-up"),
                        LogLevel::kInfo);
        continue;
      }
      if (ev.events & (EPOLLIN | EPOLLHUP | EPOLLERR)) HandleReadable(c);
      if (!c->gone && (ev.events & EPOLLOUT)) HandleWritable(c);
    }
    RunDueRetries();
    FlushThreadCompletions();
    CompleteLatePosts();
    graveyard_.clear();
  }
}

void TcpTransport::CompleteLatePosts() {
  if (graveyard_.empty()) return;
  for (const std::shared_ptr<Connection>& c : graveyard_) {
    drained_.clear();
    {
      absl::MutexLock lock(&c->mu);
      c->completions_undelivered = false;  // later posts fail at once
      while (!c->pending.empty()) {
        if (!c->pending.Front().probe) drained_.push_back(c->pending.Front());
        c->pending.PopFront();
      }
    }
    for (const PendingOp& op : drained_) {
      Complete(op, WcStatus::kPeerGone, c->peer_rank);
    }
    // A dead peer's connection goes now (its buffers with it); later posts
    // to the peer fail at once.
    absl::MutexLock lock(&mu_);
    auto it = peers_.find(c->peer_rank);
    if (it != peers_.end() && it->second.dead && it->second.out == c) {
      it->second.out = nullptr;
    }
  }
  FlushThreadCompletions();
}

}  // namespace pagewire
