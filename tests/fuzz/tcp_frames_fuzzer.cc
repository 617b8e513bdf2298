// tcp_frames_fuzzer.cc - the TCP transport's wire parsers
// (runtime/transport/tcp/: the handshake, ParseRequests and ServeRequest on
// a target, ParseResponses, ReadScattered and the sinks on a requester),
// driven through real TcpTransports over real loopback sockets. The first
// byte of an input picks a mode:
//
//   0  raw bytes onto a fresh connection to a target transport (its hello
//      and handshake parsing), optionally after a well-formed hello.
//   1  a raw client, rank 5, in a session of its own (a new id per input,
//      so nothing of the target's state for it outlives the input), that
//      completes the handshake (a real proof) on up to 4 connections one
//      after the other and writes request frames built from the input:
//      READ, WRITE and atomics with rkeys and addresses steered into (and
//      just past) the target's registered region, messages of any type and
//      length, raw bytes, frames it sent before (repeats, by their seq),
//      a frame from the future; split across several writes at
//      input-chosen points, so frames arrive in pieces.
//   2  a fake target (a raw listening socket) of a new rank per input that
//      answers a real requester's hello with a correct ServerChallenge (it
//      knows the secret; `received` from the input), checks the frames the
//      requester then sends against the items posted to it (READ/WRITE/
//      atomic work requests and messages, numbered in posting order), and
//      answers with response frames built from the input (well-formed,
//      error, fuzzed headers, raw bytes), split across writes; it may break
//      the connection after some answers and take the requester's
//      reconnection, up to 4 connections. The input ends with PeerDied.
//
// Beyond "no crash, no sanitizer finding, no hang":
//   target (modes 0, 1): every connection ends with the target closing it
//     (by itself after a remote access error, a protocol violation or a
//     frame from the future; else once the client has shut down its side);
//     while the client's frames are well formed, the responses are byte
//     for byte what a model of the region and the session predicts (READ
//     data, atomics' old values, acks, error answers; a repeated WRITE
//     answered and not applied, a repeated atomic answered with its first
//     old value or kResultLost, a repeated message not delivered again,
//     every answer sent before a close after a remote access error) and
//     the region equals the model's; the `received` of each challenge is
//     the number of frames the model says were taken; messages reach the
//     handler once, as sent; the guard pages around the region are never
//     written.
//   requester (mode 2): the bytes sent are exactly the posted items, as
//     48-byte headers numbered in the session (after a correct proof); on
//     a reconnection, exactly the ops not answered and the messages
//     neither acked nor below `received`, in seq order, with the same
//     session; every signalled wr_id completes exactly once, an
//     unsignalled one at most once, all in posting order, no completion
//     for an unknown wr_id; an operation answered by a well-formed
//     response before anything malformed was sent completes with that
//     response's status, and a successful READ or atomic holds what was
//     sent for it; no byte outside a READ's or atomic's own buffer changes
//     (guard areas, WRITE sources, messages).
//
// The transports and the fake listener are made once (LLVMFuzzerInitialize);
// each input costs a few connections and ends with them closed on both
// sides. Waiting is bounded (kWaitMs) so that a transport that stops
// making progress is reported as a finding instead of hanging the fuzzer.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "runtime/base/hmac_sha256.h"
#include "runtime/base/log.h"
#include "runtime/transport/tcp/tcp_handshake.h"
#include "runtime/transport/tcp/tcp_transport.h"
#include "runtime/transport/transport.h"
#include "tests/fuzz/fuzz_input.h"

namespace pagewire::fuzz {
namespace {

using tcp_internal::RequestHeader;
using tcp_internal::ResponseHeader;

constexpr char kSecret[] = "tcp-frames-fuzzer-secret";
constexpr int kTargetRank = 1;     // the target transport (modes 0, 1)
constexpr int kRawPeerRank = 5;    // the raw client of mode 1
constexpr int kRequesterRank = 0;  // the requester transport (mode 2)
// The fake target of mode 2: a new rank per input, from this one.
constexpr int kFirstFakeRank = 100;
// Far longer than any step takes; a step that does not finish in this
// time is a transport that stopped (libFuzzer's own -timeout is longer).
constexpr int kWaitMs = 5000;

// The target's registered region, between two guard areas.
constexpr size_t kRegionBytes = 64 * 1024;
constexpr size_t kGuardBytes = 4096;
constexpr uint8_t kGuardByte = 0xa5;

// The requester's arena: one slot per work request (kMaxOps, plus the
// sentinel), each buffer at kSlotLead into its slot, the rest guard.
constexpr int kMaxOps = 16;
constexpr size_t kSlotBytes = 320 * 1024;
constexpr size_t kSlotLead = 64;
constexpr uint32_t kMaxReadBytes = 256 * 1024;
static_assert(kSlotLead + kMaxReadBytes < kSlotBytes, "a guard after each buffer");
constexpr uint64_t kSentinelId = 1000;

template <typename... Args>
[[noreturn]] void Fail(const absl::FormatSpec<Args...>& fmt, const Args&... args) {
  std::fprintf(stderr, "tcp_frames_fuzzer: %s\n",
               absl::StrFormat(fmt, args...).c_str());
  std::abort();
}

// ---------------------------------------------------------------------------
// Sockets.

// Every write goes out at once: the pieces of a frame are meant to arrive
// apart, and no write waits for an ACK.
void NoDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int ConnectTo(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    Fail("cannot connect to 127.0.0.1:%d: %s", port, std::strerror(errno));
  }
  NoDelay(fd);
  return fd;
}

bool WaitFor(int fd, short events) {
  pollfd p{fd, events, 0};
  int r;
  do {
    r = ::poll(&p, 1, kWaitMs);
  } while (r < 0 && errno == EINTR);
  return r > 0;
}

// Reads what is there now (non-blocking) into `got`; false at EOF or error.
bool DrainNow(int fd, std::string* got) {
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      if (got != nullptr) got->append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
}

// Sends all of `data`, reading what comes back meanwhile into `got` (so two
// ends writing at once never deadlock). False if the other end closed or
// reset the connection; a peer that neither reads nor closes is a finding.
bool SendAll(int fd, const std::string& data, std::string* got) {
  size_t at = 0;
  while (at < data.size()) {
    pollfd p{fd, POLLIN | POLLOUT, 0};
    if (::poll(&p, 1, kWaitMs) <= 0) {
      Fail("the transport took no bytes for %d ms (%d of %d sent)", kWaitMs,
           at, data.size());
    }
    if (p.revents & POLLIN) {
      if (!DrainNow(fd, got)) return false;
    }
    if (p.revents & (POLLOUT | POLLERR | POLLHUP)) {
      ssize_t n = ::send(fd, data.data() + at, data.size() - at,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        at += static_cast<size_t>(n);
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        return false;
      }
    }
  }
  return true;
}

// Reads exactly `n` bytes; false on EOF or error first.
bool ReadExactly(int fd, void* out, size_t n) {
  char* p = static_cast<char*>(out);
  while (n > 0) {
    if (!WaitFor(fd, POLLIN)) Fail("no bytes from the transport for %d ms", kWaitMs);
    ssize_t k = ::recv(fd, p, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

// Reads until the transport closes the connection.
void ReadUntilClosed(int fd, std::string* got, const char* what) {
  for (;;) {
    if (!WaitFor(fd, POLLIN)) {
      Fail("%s: the transport did not close the connection within %d ms",
           what, kWaitMs);
    }
    if (!DrainNow(fd, got)) return;
  }
}

// Closes a connection both ends are done with by a reset, so that
// thousands of inputs a second leave no TIME_WAIT sockets to exhaust the
// ephemeral ports.
void CloseWithoutTimeWait(int fd) {
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  ::close(fd);
}

// A pattern for payloads: different for every seed and offset.
void FillPattern(char* p, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; ++i) {
    p[i] = static_cast<char>((seed * 131 + i * 7 + (i >> 8)) & 0xff);
  }
}
std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  FillPattern(s.data(), n, seed);
  return s;
}

template <typename T>
std::string AsBytes(const T& v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof(v));
}

// ---------------------------------------------------------------------------
// The world: made once.

struct World {
  std::unique_ptr<TcpTransport> target;
  std::vector<uint64_t> target_words;
  char* region = nullptr;  // kRegionBytes, guarded on both sides
  MemoryRegion region_mr;
  std::atomic<uint64_t> messages{0};
  std::atomic<uint64_t> message_sum{0};

  std::unique_ptr<TcpTransport> requester;
  std::vector<uint64_t> arena_words;
  char* arena = nullptr;  // (kMaxOps + 1) slots
  // What each slot holds before an input (different in every slot, so a
  // WRITE's payload says whose it is).
  std::vector<std::string> slot_fill;
  MemoryRegion arena_mr;
  int fake_listen = -1;  // non-blocking
  uint16_t fake_port = 0;
  uint64_t sessions = 0;  // mode 1's sessions so far
  int fake_ranks = 0;     // mode 2's fake targets so far
};

World* world = nullptr;

uint64_t MessageDigest(uint16_t type, absl::Span<const char> body) {
  uint64_t h = 1469598103934665603ull ^ type ^ (uint64_t{body.size()} << 16);
  for (char c : body) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  return h;
}

std::unique_ptr<TcpTransport> MakeTransport(int rank) {
  TcpTransportConfig config;
  config.rank = rank;
  config.bind_host = "127.0.0.1";
  config.secret = kSecret;
  auto t = TcpTransport::Create(config);
  if (!t.ok()) Fail("TcpTransport::Create: %s", t.status().ToString());
  return std::move(*t);
}

void MakeWorld() {
  world = new World;
  World& w = *world;
  w.target = MakeTransport(kTargetRank);
  w.target_words.resize((kRegionBytes + 2 * kGuardBytes) / 8);
  char* all = reinterpret_cast<char*>(w.target_words.data());
  std::memset(all, kGuardByte, kRegionBytes + 2 * kGuardBytes);
  w.region = all + kGuardBytes;
  auto mr = w.target->RegisterMemory(w.region, kRegionBytes);
  if (!mr.ok()) Fail("RegisterMemory: %s", mr.status().ToString());
  w.region_mr = *mr;
  if (!w.target->ExpectPeer(kRawPeerRank, "127.0.0.1").ok()) Fail("ExpectPeer");
  w.target->SetMessageHandler(
      [](int peer, uint16_t type, absl::Span<const char> body) {
        if (peer != kRawPeerRank) Fail("a message from rank %d", peer);
        world->messages.fetch_add(1);
        world->message_sum.fetch_add(MessageDigest(type, body));
      });

  w.requester = MakeTransport(kRequesterRank);
  w.arena_words.resize((kMaxOps + 1) * kSlotBytes / 8);
  w.arena = reinterpret_cast<char*>(w.arena_words.data());
  mr = w.requester->RegisterMemory(w.arena, (kMaxOps + 1) * kSlotBytes);
  if (!mr.ok()) Fail("RegisterMemory: %s", mr.status().ToString());
  w.arena_mr = *mr;
  for (int i = 0; i < kMaxOps; ++i) w.slot_fill.push_back(Pattern(kSlotBytes, 1000 + i));

  w.fake_listen = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  socklen_t len = sizeof(sa);
  if (::bind(w.fake_listen, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
      ::listen(w.fake_listen, 4) != 0 ||
      ::getsockname(w.fake_listen, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    Fail("fake target's socket: %s", std::strerror(errno));
  }
  w.fake_port = ntohs(sa.sin_port);
}

// Connections to the fake target that nobody took (a reconnection the
// input did not wait for): closed, so the next input's accept is its own.
void DrainFakeBacklog() {
  for (;;) {
    const int fd = ::accept4(world->fake_listen, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    CloseWithoutTimeWait(fd);
  }
}

void CheckTargetGuards() {
  const char* all = world->region - kGuardBytes;
  for (size_t i = 0; i < kGuardBytes; ++i) {
    if (static_cast<uint8_t>(all[i]) != kGuardByte ||
        static_cast<uint8_t>(world->region[kRegionBytes + i]) != kGuardByte) {
      Fail("a byte next to the target's registered region was written");
    }
  }
}

tcp_handshake::ClientHello Hello(int32_t rank, uint64_t session) {
  tcp_handshake::ClientHello h{};
  h.session = session;
  std::memcpy(h.magic, tcp_handshake::kClientMagic, sizeof(h.magic));
  h.protocol_version = 2;
  h.rank = rank;
  for (size_t i = 0; i < sizeof(h.nonce); ++i) h.nonce[i] = static_cast<uint8_t>(i * 29 + 3);
  return h;
}

// ---------------------------------------------------------------------------
// Mode 0: raw bytes onto a fresh connection.

void RawBytes(FuzzInput& in) {
  const int fd = ConnectTo(world->target->LocalEndpoint().port);
  const uint8_t shape = in.U8();
  std::string bytes;
  if (shape & 1) {
    // A well-formed hello first, claiming rank 5 (expected: the target
    // answers and waits for the proof), its own rank, an unknown rank
    // (waits for membership) or any.
    const int32_t ranks[] = {kRawPeerRank, kTargetRank, 6,
                             static_cast<int32_t>(in.U32())};
    bytes = AsBytes(Hello(ranks[(shape >> 1) & 3], 0x1234));
  }
  const size_t chunk = 1 + in.U8();
  bytes += in.Rest();
  for (size_t at = 0; at < bytes.size(); at += chunk) {
    if (!SendAll(fd, bytes.substr(at, chunk), nullptr)) break;
  }
  ::shutdown(fd, SHUT_WR);
  ReadUntilClosed(fd, nullptr, "raw bytes");
  CloseWithoutTimeWait(fd);
  CheckTargetGuards();
}

// ---------------------------------------------------------------------------
// Mode 1: request frames from a client that proved the secret, in one
// session across up to kMaxConnections connections.

constexpr int kMaxConnections = 4;
constexpr int kMaxFramesPerConnection = 64;

// A frame the target took, by its seq: what a repeat of it sends and what
// the target answers to that.
struct TakenFrame {
  std::string bytes;  // header and payload, as first sent
  bool atomic_kept = false;  // an atomic served: its old value is kept
  uint64_t atomic_old = 0;
};

// What the target should answer and hold, from a copy of the region and
// the session's frames.
struct TargetModel {
  std::vector<char> region;
  std::vector<TakenFrame> taken;  // taken[seq]; taken.size() == received
  bool session_known = true;      // `taken` is what the target took
  uint64_t messages = 0;
  uint64_t message_sum = 0;
  // Per connection:
  std::string expected;      // the responses to the frames sent in sync
  bool in_sync = true;       // every frame sent so far was modelled
  bool closed = false;       // no further frame is taken on it
  bool target_closes = false;  // the target closes it on its own
  bool answers_exact = false;  // and sends every answer before it does
};

uint64_t Received(const TargetModel& m) { return m.taken.size(); }

// Responses are expected only while the stream is in sync: after raw
// bytes, nothing that follows is predicted.
void Expect(TargetModel& m, const std::string& response) {
  if (m.in_sync) m.expected += response;
}

// The target closes the connection once this answer is out (an unknown
// rkey, an address outside the region, a misaligned atomic).
void ClosesAfterAnswer(TargetModel& m) {
  m.closed = true;
  if (!m.target_closes) m.answers_exact = true;
  m.target_closes = true;
}

// The target's answer to a well-formed op frame `h` (WRITE payload after
// the header in `frame`), applied to the model. `repeat`: taken before.
void ModelOp(TargetModel& m, const RequestHeader& h, const std::string& frame,
             bool repeat) {
  const uint64_t base = world->region_mr.addr;
  const auto op = static_cast<WorkOpcode>(h.opcode);
  const bool atomic = op == WorkOpcode::kFetchAdd || op == WorkOpcode::kCompareSwap;
  ResponseHeader r{};
  r.kind = 3;
  r.value = Received(m);  // READ and WRITE answers carry the ack
  if (repeat && op == WorkOpcode::kWrite) {  // not applied again
    Expect(m, AsBytes(r));
    return;
  }
  if (repeat && atomic) {  // its first old value, or kResultLost
    const TakenFrame& t = m.taken[h.seq];
    r.value = t.atomic_kept ? t.atomic_old : 0;
    r.status = t.atomic_kept ? 0 : 2;
    Expect(m, AsBytes(r));
    return;
  }
  if (op == WorkOpcode::kRead && h.length == 0) {  // an ack probe
    Expect(m, AsBytes(r));
    return;
  }
  const bool inside =
      h.rkey == world->region_mr.rkey && h.remote_addr >= base &&
      h.length <= kRegionBytes && h.remote_addr - base <= kRegionBytes - h.length;
  if (!inside || (atomic && (h.length != 8 || h.remote_addr % 8 != 0))) {
    // Any remote access error closes the connection once it is answered
    // (a misaligned atomic too).
    r.status = 1;
    Expect(m, AsBytes(r));
    ClosesAfterAnswer(m);
    return;
  }
  char* at = m.region.data() + (h.remote_addr - base);
  if (op == WorkOpcode::kRead) {
    r.length = h.length;
    Expect(m, AsBytes(r) + std::string(at, h.length));
    return;
  }
  if (op == WorkOpcode::kWrite) {
    std::memcpy(at, frame.data() + sizeof(h), h.length);
  } else {
    uint64_t old;
    std::memcpy(&old, at, 8);
    r.value = old;
    uint64_t now = op == WorkOpcode::kFetchAdd ? old + h.compare_add
                   : old == h.compare_add      ? h.swap
                                               : old;
    std::memcpy(at, &now, 8);
    m.taken[h.seq].atomic_kept = true;
    m.taken[h.seq].atomic_old = old;
  }
  Expect(m, AsBytes(r));
}

// A new frame the target takes (seq == received).
void Take(TargetModel& m, const RequestHeader& h, const std::string& frame) {
  m.taken.push_back(TakenFrame{frame});
  if (h.kind == 2) {
    ++m.messages;
    m.message_sum += MessageDigest(h.msg_type, absl::MakeConstSpan(
                                                   frame.data() + sizeof(h), h.length));
    return;
  }
  ModelOp(m, h, frame, /*repeat=*/false);
}

// A new op frame from the input, numbered `seq`, and its effect.
std::string OpFrame(FuzzInput& in, TargetModel& m) {
  const uint64_t base = world->region_mr.addr;
  RequestHeader h{};
  h.kind = 1;
  h.seq = Received(m);
  const uint8_t sel = in.U8();
  h.opcode = sel < 0x80 ? sel % 4 : sel;
  const uint8_t steer = in.U8();
  switch ((steer >> 4) & 3) {
    case 0: h.length = 8; break;
    case 1: h.length = in.U8(); break;
    case 2: h.length = in.U16() % (kRegionBytes + 64); break;
    default: h.length = in.U32(); break;
  }
  h.rkey = (steer & 1) ? in.U32() : world->region_mr.rkey;
  if (steer & 2) {
    h.remote_addr = in.U64();
  } else {
    h.remote_addr = base + in.U16() % (kRegionBytes + 64);
    if (steer & 4) h.remote_addr &= ~uint64_t{7};
  }
  const bool valid_op = h.opcode <= 3;
  const auto op = static_cast<WorkOpcode>(h.opcode);
  const bool atomic = op == WorkOpcode::kFetchAdd || op == WorkOpcode::kCompareSwap;
  if (valid_op && atomic) h.compare_add = in.U64();
  if (valid_op && op == WorkOpcode::kCompareSwap) h.swap = in.U64();
  std::string frame = AsBytes(h);
  if (!valid_op || h.length > tcp_internal::kMaxOpBytes) {
    // A protocol violation: the target closes at once, and may drop the
    // answers it had not sent yet.
    m.closed = m.target_closes = true;
    return frame;
  }
  if (op == WorkOpcode::kWrite) {
    // Beyond a bound the payload is cut short: the frame never completes
    // (and is not taken).
    const size_t sent = std::min<size_t>(h.length, kRegionBytes + 4096);
    frame += Pattern(sent, in.U8());
    if (sent < h.length) {
      m.closed = true;
      return frame;
    }
  }
  Take(m, h, frame);
  return frame;
}

std::string MessageFrame(FuzzInput& in, TargetModel& m) {
  RequestHeader h{};
  h.kind = 2;
  h.seq = Received(m);
  h.msg_type = in.U16();
  h.length = (in.U8() & 1) ? in.U32() : in.U16();
  std::string frame = AsBytes(h);
  if (h.length > Transport::kMaxMessageBytes) {
    m.closed = m.target_closes = true;
    return frame;
  }
  frame += Pattern(h.length, in.U8());
  Take(m, h, frame);
  return frame;
}

// A frame the target took before, sent again with its seq: a message is
// dropped, a WRITE answered without applying it, an atomic with its first
// old value, a READ read again.
std::string RepeatFrame(FuzzInput& in, TargetModel& m) {
  const uint16_t pick = in.U16();
  if (m.taken.empty()) return "";
  const std::string frame = m.taken[pick % m.taken.size()].bytes;
  RequestHeader h;
  std::memcpy(&h, frame.data(), sizeof(h));
  if (h.kind == 1) ModelOp(m, h, frame, /*repeat=*/true);
  return frame;
}

// A frame from the future (seq above received): a protocol violation.
std::string FutureFrame(uint8_t ahead, TargetModel& m) {
  RequestHeader h{};
  h.kind = 1;
  h.opcode = static_cast<uint8_t>(WorkOpcode::kRead);
  h.length = 8;
  h.rkey = world->region_mr.rkey;
  h.remote_addr = world->region_mr.addr;
  h.seq = Received(m) + 1 + ahead;
  m.closed = m.target_closes = true;
  return AsBytes(h);
}

// The client's half of the handshake as rank 5 in `session`; checks the
// target's proof and returns the `received` it tells.
int HandshakeAsRawPeer(uint64_t session, uint64_t* received) {
  const int fd = ConnectTo(world->target->LocalEndpoint().port);
  const tcp_handshake::ClientHello hello = Hello(kRawPeerRank, session);
  if (!SendAll(fd, AsBytes(hello), nullptr)) Fail("hello not taken");
  tcp_handshake::ServerChallenge ch;
  if (!ReadExactly(fd, &ch, sizeof(ch))) Fail("no challenge for a valid hello");
  tcp_handshake::Nonce cn, sn;
  std::memcpy(cn.data(), hello.nonce, cn.size());
  std::memcpy(sn.data(), ch.nonce, sn.size());
  const Digest256 key = tcp_handshake::DataPlaneKey(kSecret);
  const std::string problem = tcp_handshake::CheckServerChallenge(
      ch, 2, kTargetRank, kRawPeerRank, cn, hello.session, key);
  if (!problem.empty()) Fail("the target's challenge: %s", problem);
  const Digest256 proof = tcp_handshake::Proof(
      key, tcp_handshake::Role::kClient, cn, sn, kRawPeerRank, kTargetRank,
      hello.session, ch.received);
  tcp_handshake::ClientProof p;
  std::memcpy(p.proof, proof.data(), sizeof(p.proof));
  if (!SendAll(fd, AsBytes(p), nullptr)) Fail("proof not taken");
  *received = ch.received;
  return fd;
}

// What the target answered and did against the model. A target that
// closes the connection for a malformed frame may drop the answers to the
// frames before it that it had not sent yet (the requester sees a broken
// connection either way): then, and after raw bytes, what arrived and what
// the model expects need only agree as far as both go. After a remote
// access error every answer is out before the close.
void CheckAnswers(const TargetModel& m, const std::string& got,
                  uint64_t messages0, uint64_t sum0) {
  const size_t common = std::min(got.size(), m.expected.size());
  if (got.compare(0, common, m.expected, 0, common) != 0) {
    Fail("the target's responses differ from the model's (%d bytes, expected "
         "%d)",
         got.size(), m.expected.size());
  }
  if (!m.in_sync) return;
  const bool fewer = m.closed && !m.answers_exact;
  if (fewer ? got.size() > m.expected.size() : got.size() != m.expected.size()) {
    Fail("the target sent %d bytes, the model %d%s", got.size(),
         m.expected.size(), fewer ? " or fewer" : "");
  }
  // Everything before a malformed frame was served, answered or not.
  if (std::memcmp(world->region, m.region.data(), kRegionBytes) != 0) {
    Fail("the target's region differs from the model's");
  }
  if (world->messages.load() - messages0 != m.messages ||
      world->message_sum.load() - sum0 != m.message_sum) {
    Fail("%d messages delivered, %d taken", world->messages.load() - messages0,
         m.messages);
  }
}

// One connection of the session: frames from the input until it says to
// reconnect or ends. False when the session's state is no longer known.
bool RequestsOnOneConnection(FuzzInput& in, TargetModel& m, uint64_t session,
                             uint64_t messages0, uint64_t sum0) {
  uint64_t received;
  const int fd = HandshakeAsRawPeer(session, &received);
  if (m.session_known && received != Received(m)) {
    Fail("the target says it took %d frames of the session, the model %d",
         received, Received(m));
  }
  m.expected.clear();
  m.in_sync = true;
  m.closed = m.target_closes = m.answers_exact = false;
  std::string pending, got;
  bool open = true, reconnect = false;
  int pauses = 0;
  for (int frames = 0; open && !reconnect && !in.empty() &&
                       frames < kMaxFramesPerConnection;
       ++frames) {
    const uint8_t a = in.U8() % 8;
    if (a == 4) {
      pending += in.String(64);
      m.in_sync = m.session_known = false;
    } else if (a == 5 || a == 7) {
      // A write, of all or part of what is built: frames arrive in pieces.
      const size_t k = a == 7 ? pending.size() : in.U16() % (pending.size() + 1);
      open = SendAll(fd, pending.substr(0, k), &got);
      pending.erase(0, k);
      if ((in.U8() & 1) && pauses++ < 8) ::usleep(200);
    } else if (a == 6) {
      const uint8_t b = in.U8();
      if ((b & 1) == 0) {
        reconnect = true;
      } else if (!m.closed) {
        pending += FutureFrame(b >> 1, m);
      }
    } else if (!m.closed) {
      pending += a == 3   ? MessageFrame(in, m)
                 : a == 2 ? RepeatFrame(in, m)
                          : OpFrame(in, m);
    }
  }
  if (open) SendAll(fd, pending, &got);
  // A target that must close on its own is not helped by our FIN.
  if (!(m.in_sync && m.target_closes)) ::shutdown(fd, SHUT_WR);
  ReadUntilClosed(fd, &got, "request frames");
  CloseWithoutTimeWait(fd);
  CheckAnswers(m, got, messages0, sum0);
  CheckTargetGuards();
  return m.session_known;
}

void Requests(FuzzInput& in) {
  TargetModel m;
  FillPattern(world->region, kRegionBytes, in.U8());
  m.region.assign(world->region, world->region + kRegionBytes);
  const uint64_t messages0 = world->messages.load();
  const uint64_t sum0 = world->message_sum.load();
  // A session of its own per input: the target's state for rank 5 starts
  // over when it proves itself, so inputs do not depend on each other.
  const uint64_t session = 0x5e55'0000'0000'0000ull + ++world->sessions;
  for (int c = 0; c < kMaxConnections && (c == 0 || !in.empty()); ++c) {
    if (!RequestsOnOneConnection(in, m, session, messages0, sum0)) break;
  }
}

// ---------------------------------------------------------------------------
// Mode 2: responses from a fake target to a real requester.

// One item of the requester's session: an operation (wr_id = its index)
// or a message; its seq is its index.
struct PostedItem {
  bool message = false;
  WorkRequest wr;
  std::string body;  // a message's
  uint16_t type = 0;
  bool answered_in_sync = false;  // a well-formed response, nothing bad before
  bool error_answer = false;
  std::string read_data;  // READ: what was sent
  uint64_t value = 0;     // atomics: what was sent
  int completions = 0;
  // A message the requester no longer keeps: acked, or below the received
  // of a handshake that found it waiting (messages sent later are not).
  bool dropped = false;
};

char* Slot(int i) { return world->arena + i * kSlotBytes; }

std::vector<PostedItem> MakeItems(FuzzInput& in) {
  const int n = 1 + in.U8() % kMaxOps;
  std::vector<PostedItem> items(n);
  for (int i = 0; i < n; ++i) {
    const uint8_t sel = in.U8();
    PostedItem& item = items[i];
    WorkRequest& wr = item.wr;
    wr.wr_id = i;
    wr.opcode = static_cast<WorkOpcode>(sel % 4);
    wr.signaled = (sel & 0x80) == 0 || i == n - 1;  // the last one always
    item.message = (sel & 0x40) != 0 && i != n - 1;  // the last: an op
    switch ((sel >> 2) & 3) {
      case 0: wr.length = in.U8(); break;
      case 1: wr.length = in.U16() % 8193; break;
      case 2: wr.length = 120 * 1024 + in.U16(); break;
      default: wr.length = in.U32() % (kMaxReadBytes + 1); break;
    }
    if (item.message) {
      item.type = static_cast<uint16_t>(i * 3 + 1);
      item.body = Pattern(std::min<size_t>(wr.length, Transport::kMaxMessageBytes), 500 + i);
      continue;
    }
    if (wr.opcode == WorkOpcode::kFetchAdd || wr.opcode == WorkOpcode::kCompareSwap) {
      wr.length = 8;
      wr.compare_add = 0x1111 * (i + 1);
      wr.swap = 0x2222 * (i + 1);
    }
    wr.local = Slot(i) + kSlotLead;
    wr.lkey = world->arena_mr.lkey;
    wr.remote_addr = 0x10000 * (i + 1);
    wr.rkey = 0x77;
  }
  return items;
}

// The frame the requester sends for items[i]: a 48-byte header numbered
// i, then a WRITE's payload or a message's body.
std::string ItemFrame(const std::vector<PostedItem>& items, size_t i) {
  const PostedItem& item = items[i];
  RequestHeader h{};
  h.seq = i;
  if (item.message) {
    h.kind = 2;
    h.msg_type = item.type;
    h.length = static_cast<uint32_t>(item.body.size());
    return AsBytes(h) + item.body;
  }
  const WorkRequest& wr = item.wr;
  h.kind = 1;
  h.opcode = static_cast<uint8_t>(wr.opcode);
  h.length = wr.length;
  h.remote_addr = wr.remote_addr;
  h.rkey = wr.rkey;
  h.compare_add = wr.compare_add;
  h.swap = wr.swap;
  std::string s = AsBytes(h);
  if (wr.opcode == WorkOpcode::kWrite) {
    s.append(static_cast<const char*>(wr.local), wr.length);
  }
  return s;
}

// Posts items [from, to): runs of operations as one chain each, messages
// one by one. A message to a session whose first handshake failed may be
// refused.
void Post(std::vector<PostedItem>& items, int rank, int from, int to,
          bool may_be_closed) {
  for (int i = from; i < to;) {
    if (items[i].message) {
      absl::Status s = world->requester->SendMessage(rank, items[i].type,
                                                      items[i].body);
      if (!s.ok() && !(may_be_closed && absl::IsUnavailable(s))) {
        Fail("SendMessage: %s", s.ToString());
      }
      ++i;
      continue;
    }
    int j = i;
    while (j + 1 < to && !items[j + 1].message) {
      items[j].wr.next = &items[j + 1].wr;
      ++j;
    }
    items[j].wr.next = nullptr;
    absl::Status s = world->requester->PostSend(rank, &items[i].wr);
    if (!s.ok()) Fail("PostSend: %s", s.ToString());
    i = j + 1;
  }
}

// One connection from the requester, as the fake target sees it.
struct FakeConnection {
  int fd = -1;
  uint64_t session = 0;
  bool proved = false;  // the handshake succeeded
};

// Accepts the requester's connection and answers its hello with a correct
// ServerChallenge telling `received` (spoiled on purpose if the input says
// so: the requester must then refuse it); then reads and checks the proof.
FakeConnection AcceptRequester(FuzzInput& in, int rank, uint64_t* received,
                               const uint64_t* session) {
  FakeConnection fc;
  if (!WaitFor(world->fake_listen, POLLIN)) Fail("no connection to the fake target");
  fc.fd = ::accept4(world->fake_listen, nullptr, nullptr, SOCK_CLOEXEC);
  if (fc.fd < 0) Fail("accept: %s", std::strerror(errno));
  NoDelay(fc.fd);
  tcp_handshake::ClientHello hello;
  if (!ReadExactly(fc.fd, &hello, sizeof(hello))) Fail("no hello from the requester");
  if (!tcp_handshake::CheckClientHello(hello, 2).empty() ||
      hello.rank != kRequesterRank) {
    Fail("a malformed hello from the requester");
  }
  if (session != nullptr && hello.session != *session) {
    Fail("the requester reconnected with another session");
  }
  fc.session = hello.session;
  tcp_handshake::Nonce cn, sn;
  std::memcpy(cn.data(), hello.nonce, cn.size());
  for (size_t i = 0; i < sn.size(); ++i) sn[i] = static_cast<uint8_t>(i + 77);
  const uint8_t how = in.U8();
  if (how & 0x20) *received = in.U8();
  tcp_handshake::ServerChallenge ch{};
  std::memcpy(ch.magic, tcp_handshake::kServerMagic, sizeof(ch.magic));
  ch.protocol_version = 2;
  ch.rank = rank;
  std::memcpy(ch.nonce, sn.data(), sizeof(ch.nonce));
  ch.received = *received;
  const Digest256 key = tcp_handshake::DataPlaneKey(kSecret);
  const Digest256 proof =
      tcp_handshake::Proof(key, tcp_handshake::Role::kServer, cn, sn,
                           kRequesterRank, rank, hello.session, *received);
  std::memcpy(ch.proof, proof.data(), sizeof(ch.proof));
  fc.proved = true;
  if ((how & 0x0f) == 0x0f) {
    reinterpret_cast<uint8_t*>(&ch)[in.U8() % sizeof(ch)] ^= in.U8() | 1;
    fc.proved = false;
  }
  std::string bytes = AsBytes(ch);
  if (how & 0x10) {  // in two pieces
    const size_t k = 1 + in.U8() % (sizeof(ch) - 1);
    SendAll(fc.fd, bytes.substr(0, k), nullptr);
    ::usleep(100);
    bytes.erase(0, k);
  }
  SendAll(fc.fd, bytes, nullptr);
  if (!fc.proved) return fc;
  tcp_handshake::ClientProof got;
  if (!ReadExactly(fc.fd, &got, sizeof(got))) Fail("no proof from the requester");
  const Digest256 want =
      tcp_handshake::Proof(key, tcp_handshake::Role::kClient, cn, sn,
                           kRequesterRank, rank, hello.session, *received);
  if (std::memcmp(got.proof, want.data(), want.size()) != 0) {
    Fail("the requester's proof is wrong");
  }
  return fc;
}

// Reads exactly `want` from the requester.
void ExpectRequests(int fd, const std::string& want, const char* what) {
  std::string got(want.size(), '\0');
  if (!ReadExactly(fd, got.data(), got.size()) || got != want) {
    Fail("the requester sent other bytes than %s (%d expected)", what,
         want.size());
  }
}

// The fake target's view of the session across connections.
struct FakeSession {
  size_t next = 0;  // the op the next well-formed response answers (index)
  uint64_t acked = 0;  // the highest ack the requester took
  bool in_sync = true;
};

// The next op without an answer, from items[from].
size_t NextOp(const std::vector<PostedItem>& items, size_t from) {
  while (from < items.size() && items[from].message) ++from;
  return from;
}

// Builds and sends the responses; marks what each op should complete with.
// True if the input asks to break the connection (and resume) here.
bool SendResponses(FuzzInput& in, int fd, std::vector<PostedItem>& items,
                   FakeSession& fs) {
  std::string pending;
  bool open = true, brk = false;
  int pauses = 0;
  const uint64_t n = items.size();
  for (int steps = 0; open && !brk && !in.empty() && steps < 64; ++steps) {
    const uint8_t a = in.U8() % 8;
    ResponseHeader r{};
    r.kind = 3;
    if (a <= 2 || a == 4) {
      fs.next = NextOp(items, fs.next);
      if (fs.next == n) fs.in_sync = false;  // one response too many
      PostedItem* op = fs.next < n ? &items[fs.next++] : nullptr;
      const WorkOpcode code = op ? op->wr.opcode : WorkOpcode::kWrite;
      const bool acks = code == WorkOpcode::kRead || code == WorkOpcode::kWrite;
      if (a == 4) {
        r.status = 1;
      } else if (code == WorkOpcode::kRead) {
        r.length = op->wr.length;
      }
      if (acks) {
        const uint8_t b = in.U8();
        r.value = b == 0xff ? n : b % (n + 1);  // frames taken
      } else if (a != 4) {
        r.value = in.U64();
      }
      pending += AsBytes(r);
      std::string data;
      if (r.length > 0) data = Pattern(r.length, in.U8());
      pending += data;
      if (op != nullptr && fs.in_sync) {
        op->answered_in_sync = true;
        op->error_answer = a == 4;
        op->read_data = std::move(data);
        op->value = r.value;
        if (acks) fs.acked = std::max(fs.acked, r.value);
      }
    } else if (a == 3) {
      brk = (in.U8() & 1) != 0;
      if (!brk) break;  // the end of the input's answers
    } else if (a == 5) {
      const uint8_t kind = in.U8();
      r.kind = kind < 0x80 ? 3 : kind;
      r.status = in.U8() % 4;
      const uint8_t ls = in.U8();
      r.length = ls < 0x80 ? ls : ls < 0xc0 ? in.U16() : in.U32();
      r.value = in.U64();
      pending += AsBytes(r) + Pattern(std::min<uint32_t>(r.length, kMaxReadBytes), ls);
      fs.in_sync = false;
    } else if (a == 6) {
      pending += in.String(64);
      fs.in_sync = false;
    } else {
      const size_t k = in.U16() % (pending.size() + 1);
      open = SendAll(fd, pending.substr(0, k), nullptr);
      pending.erase(0, k);
      if ((in.U8() & 1) && pauses++ < 8) ::usleep(200);
    }
  }
  if (open) SendAll(fd, pending, nullptr);
  return brk && open;
}

// What a requester resends on a connection whose target says it took
// `received` frames: every op not answered, every message neither acked
// nor taken, in seq order.
std::string ResentFrames(const std::vector<PostedItem>& items,
                         const FakeSession& fs, uint64_t received) {
  std::string s;
  for (size_t i = 0; i < items.size(); ++i) {
    const bool unanswered = !items[i].message && i >= fs.next;
    const bool unacked = items[i].message && !items[i].dropped &&
                         i >= std::max(received, fs.acked);
    if (unanswered || unacked) s += ItemFrame(items, i);
  }
  return s;
}

// After a handshake that found them waiting, the requester drops the
// messages below `seq` for good.
void DropMessagesBelow(std::vector<PostedItem>& items, uint64_t seq) {
  for (size_t i = 0; i < items.size() && i < seq; ++i) {
    if (items[i].message) items[i].dropped = true;
  }
}

// Collects completions until wr_id `until`'s (or a later one's); checks
// each as it comes.
// `last`: the latest wr_id completed (-1: none yet), kept across calls.
void CollectCompletions(std::vector<PostedItem>& items, int rank,
                        uint64_t until, int64_t& last) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kWaitMs);
  WorkCompletion wcs[64];
  for (;;) {
    const int k = world->requester->PollCompletions(wcs, 64);
    for (int i = 0; i < k; ++i) {
      const WorkCompletion& wc = wcs[i];
      if (wc.peer != rank) Fail("a completion from peer %d", wc.peer);
      if (wc.wr_id == kSentinelId) {
        if (last == static_cast<int64_t>(kSentinelId)) Fail("the sentinel completed twice");
        last = kSentinelId;
        continue;
      }
      if (wc.wr_id >= items.size() || items[wc.wr_id].message) {
        Fail("a completion for unknown wr_id %d", wc.wr_id);
      }
      if (last == static_cast<int64_t>(kSentinelId) ||
          static_cast<int64_t>(wc.wr_id) <= last) {
        Fail("wr_id %d completed after %d (posting order)", wc.wr_id, last);
      }
      last = static_cast<int64_t>(wc.wr_id);
      PostedItem& op = items[wc.wr_id];
      ++op.completions;
      if (wc.opcode != op.wr.opcode) Fail("wr_id %d: wrong opcode", wc.wr_id);
      if (op.answered_in_sync) {
        const WcStatus want =
            op.error_answer ? WcStatus::kRemoteAccessError : WcStatus::kSuccess;
        if (wc.status != want) {
          Fail("wr_id %d (%s) was answered well but completed %s", wc.wr_id,
               WorkOpcodeName(op.wr.opcode), WcStatusName(wc.status));
        }
      }
      if (wc.status == WcStatus::kSuccess && wc.byte_len != op.wr.length) {
        Fail("wr_id %d: byte_len %d of %d", wc.wr_id, wc.byte_len, op.wr.length);
      }
    }
    // (The sentinel's wr_id is above every op's.)
    if (last >= static_cast<int64_t>(until)) return;
    if (k == 64) continue;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) Fail("wr_id %d did not complete within %d ms", until, kWaitMs);
    pollfd p{world->requester->completion_fd(), POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 50)));
  }
}

// Every op's slot: its buffer holds what it should, the rest is untouched.
void CheckSlots(const std::vector<PostedItem>& items) {
  for (size_t i = 0; i < items.size(); ++i) {
    const PostedItem& op = items[i];
    const char* slot = Slot(static_cast<int>(i));
    const char* fill = world->slot_fill[i].data();
    const bool dest = !op.message && op.wr.opcode != WorkOpcode::kWrite;
    // A READ's or atomic's own buffer may change; nothing else may (a
    // WRITE's buffer is only read; a message has none).
    const size_t hole = dest ? op.wr.length : 0;
    const size_t after = kSlotLead + hole;
    if (std::memcmp(slot, fill, kSlotLead) != 0 ||
        std::memcmp(slot + after, fill + after, kSlotBytes - after) != 0) {
      Fail("item %d (%s of %d bytes): its slot was written outside its "
           "buffer",
           i, op.message ? "message" : WorkOpcodeName(op.wr.opcode),
           op.wr.length);
    }
    if (op.message) continue;
    if (op.wr.signaled && op.completions != 1) {
      Fail("signalled wr_id %d completed %d times", i, op.completions);
    }
    if (op.completions > 1) Fail("wr_id %d completed %d times", i, op.completions);
    if (!op.answered_in_sync || op.error_answer) continue;
    const char* buf = static_cast<const char*>(op.wr.local);
    if (op.wr.opcode == WorkOpcode::kRead &&
        std::memcmp(buf, op.read_data.data(), op.wr.length) != 0) {
      Fail("wr_id %d: a successful READ of %d bytes holds other bytes", i,
           op.wr.length);
    }
    if (op.wr.opcode != WorkOpcode::kRead && op.wr.opcode != WorkOpcode::kWrite &&
        std::memcmp(buf, &op.value, 8) != 0) {
      Fail("wr_id %d: a successful atomic holds another old value", i);
    }
  }
}

// Connections the fake target may see in one input (the first and the
// resumed ones).
constexpr int kMaxFakeConnections = 4;

// The first connection: items [0, before) posted during the handshake,
// the rest once it is done. False if the handshake was spoiled.
bool FirstConnection(FuzzInput& in, int rank, std::vector<PostedItem>& items,
                     int before, FakeSession& fs, FakeConnection& fc) {
  TransportEndpoint fake{"127.0.0.1", world->fake_port};
  if (absl::Status s = world->requester->Connect(rank, fake); !s.ok()) {
    Fail("Connect: %s", s.ToString());
  }
  Post(items, rank, 0, before, false);
  uint64_t received = 0;
  fc = AcceptRequester(in, rank, &received, nullptr);
  if (!fc.proved) {
    Post(items, rank, before, static_cast<int>(items.size()), true);
    ReadUntilClosed(fc.fd, nullptr, "a spoiled challenge");
    return false;
  }
  // Held during the handshake: what the target has not taken; after it:
  // everything.
  std::vector<PostedItem> held(items.begin(), items.begin() + before);
  std::string want = ResentFrames(held, fs, received);
  DropMessagesBelow(held, received);
  for (int i = 0; i < before; ++i) items[i].dropped = held[i].dropped;
  Post(items, rank, before, static_cast<int>(items.size()), false);
  for (size_t i = before; i < items.size(); ++i) want += ItemFrame(items, i);
  ExpectRequests(fc.fd, want, "the items posted");
  return true;
}

void Responses(FuzzInput& in) {
  DrainFakeBacklog();
  std::vector<PostedItem> items = MakeItems(in);
  const int n = static_cast<int>(items.size());
  const int before = in.U8() % (n + 1);  // posted before the handshake ends
  for (int i = 0; i < n; ++i) {
    std::memcpy(Slot(i), world->slot_fill[i].data(), kSlotBytes);
  }
  // A peer of its own per input: its session ends with PeerDied below, so
  // nothing of it outlives the input.
  const int rank = kFirstFakeRank + world->fake_ranks++;
  FakeSession fs;
  FakeConnection fc;
  if (FirstConnection(in, rank, items, before, fs, fc)) {
    for (int c = 1;; ++c) {
      const bool brk = SendResponses(in, fc.fd, items, fs);
      if (!brk || !fs.in_sync || c == kMaxFakeConnections) break;
      // Break it (a FIN after every answer): the requester takes them
      // all, then connects again and resends what is unanswered.
      ::close(fc.fd);
      uint64_t received = n;  // a target that took every frame
      fc = AcceptRequester(in, rank, &received, &fc.session);
      if (!fc.proved) {
        ReadUntilClosed(fc.fd, nullptr, "a spoiled challenge");
        break;
      }
      ExpectRequests(fc.fd, ResentFrames(items, fs, received),
                     "the frames not answered");
      DropMessagesBelow(items, std::max(received, fs.acked));
    }
  }
  // The answers sent are taken before the session ends: the requester's
  // FIFO shrinks to the ops not answered in sync (those answered before
  // anything malformed, which it reads after them; unsignalled ones show
  // no completion, hence the FIFO).
  size_t unanswered = 0;
  for (const PostedItem& item : items) {
    unanswered += !item.message && !item.answered_in_sync;
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kWaitMs);
  while (world->requester->Outstanding(rank) > unanswered) {
    if (std::chrono::steady_clock::now() > deadline) {
      Fail("the requester took no answer for %d ms (%d ops wait, %d expected)",
           kWaitMs, world->requester->Outstanding(rank), unanswered);
    }
    ::usleep(50);
  }
  int64_t last = -1;
  // Only membership ends a session.
  world->requester->PeerDied(rank);
  ReadUntilClosed(fc.fd, nullptr, "a dead peer's connection");
  ::close(fc.fd);
  // Once the last op completed, the sentinel (refused at once: the peer
  // is dead) completes after everything, which shows no late duplicates.
  CollectCompletions(items, rank, n - 1, last);
  WorkRequest sentinel;
  sentinel.wr_id = kSentinelId;
  sentinel.local = Slot(kMaxOps) + kSlotLead;
  sentinel.lkey = world->arena_mr.lkey;
  sentinel.length = 8;
  if (!world->requester->PostSend(rank, &sentinel).ok()) Fail("PostSend");
  CollectCompletions(items, rank, kSentinelId, last);
  if (world->requester->Outstanding(rank) != 0) {
    Fail("operations outstanding after the peer died");
  }
  CheckSlots(items);
  DrainFakeBacklog();
}

}  // namespace
}  // namespace pagewire::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Refusals and protocol violations are the expected outcome of most
  // inputs; TCP_FRAMES_FUZZER_LOG=1 shows them.
  if (std::getenv("TCP_FRAMES_FUZZER_LOG") == nullptr) {
    pagewire::SetLogSink([](pagewire::LogLevel, absl::string_view) {});
  }
  pagewire::fuzz::MakeWorld();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pagewire::fuzz;
  FuzzInput in(data, size);
  switch (in.U8() % 3) {
    case 0: RawBytes(in); break;
    case 1: Requests(in); break;
    default: Responses(in); break;
  }
  return 0;
}
