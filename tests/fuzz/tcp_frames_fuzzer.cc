// tcp_frames_fuzzer.cc - the TCP transport's wire parsers
// (runtime/transport/tcp/: the handshake, ParseRequests and ServeRequest on
// a target, ParseResponses, ReadScattered and the sinks on a requester),
// driven through real TcpTransports over real loopback sockets. The first
// byte of an input picks a mode:
//
//   0  raw bytes onto a fresh connection to a target transport (its hello
//      and handshake parsing), optionally after a well-formed hello.
//   1  a raw client that completes the handshake as rank 5 (with a real
//      proof), then writes request frames built from the input: READ,
//      WRITE and atomics with rkeys and addresses steered into (and just
//      past) the target's registered region, messages of any type and
//      length, raw bytes; split across several writes at input-chosen
//      points, so frames arrive in pieces.
//   2  a fake target (a raw listening socket) that answers a real
//      requester's hello with a correct ServerChallenge (it knows the
//      secret), checks what the requester then sends against the chain of
//      READ/WRITE/atomic work requests posted to it, and answers with
//      response frames built from the input (well-formed, error, fuzzed
//      headers, raw bytes), split across writes.
//
// Beyond "no crash, no sanitizer finding, no hang":
//   target (modes 0, 1): every connection ends with the target closing it
//     once the client has shut down its side; while the client's frames
//     are well formed, the responses are byte for byte what a model of the
//     region predicts (READ data, atomics' old values, error answers) and
//     the region equals the model's; messages reach the handler as sent;
//     the guard pages around the region are never written.
//   requester (mode 2): the bytes sent are exactly the posted chain (after
//     a correct proof); every signalled wr_id completes exactly once, an
//     unsignalled one at most once, all in posting order, no completion for
//     an unknown wr_id; an operation answered by a well-formed response
//     before anything malformed was sent completes with that response's
//     status, and a successful READ or atomic holds what was sent for it;
//     no byte outside a READ's or atomic's own buffer changes (guard
//     areas, WRITE sources).
//
// The transports and the fake listener are made once (LLVMFuzzerInitialize);
// each input costs a connection and ends with it closed on both sides.
// Waiting is bounded (kWaitMs) so that a transport that stops making
// progress is reported as a finding instead of hanging the fuzzer.
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
constexpr int kFakeRank = 7;       // the fake target of mode 2
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
  int fake_listen = -1;
  uint16_t fake_port = 0;
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

  w.fake_listen = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
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

void CheckTargetGuards() {
  const char* all = world->region - kGuardBytes;
  for (size_t i = 0; i < kGuardBytes; ++i) {
    if (static_cast<uint8_t>(all[i]) != kGuardByte ||
        static_cast<uint8_t>(world->region[kRegionBytes + i]) != kGuardByte) {
      Fail("a byte next to the target's registered region was written");
    }
  }
}

tcp_handshake::ClientHello Hello(int32_t rank) {
  tcp_handshake::ClientHello h{};
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
    bytes = AsBytes(Hello(ranks[(shape >> 1) & 3]));
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
// Mode 1: request frames from a client that proved the secret.

// What the target should answer, from a copy of the region.
struct TargetModel {
  std::vector<char> region;
  std::string expected;   // the responses to the frames sent in sync
  bool in_sync = true;    // every frame sent so far was modelled
  bool closed = false;    // a frame the target must refuse was sent
  uint64_t messages = 0;
  uint64_t message_sum = 0;
};

// Responses are expected only while the stream is in sync: after raw
// bytes, nothing that follows is predicted.
void Expect(TargetModel& m, const std::string& response) {
  if (m.in_sync) m.expected += response;
}

// The frame for an operation, and what the target answers to it.
std::string OpFrame(FuzzInput& in, TargetModel& m) {
  const uint64_t base = world->region_mr.addr;
  RequestHeader h{};
  h.kind = 1;
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
    m.closed = true;  // a protocol violation: the target closes
    return frame;
  }
  if (op == WorkOpcode::kWrite) {
    // Beyond a bound the payload is cut short: the frame never completes.
    const size_t sent = std::min<size_t>(h.length, kRegionBytes + 4096);
    frame += Pattern(sent, in.U8());
    if (sent < h.length) {
      m.in_sync = false;
      m.closed = true;
      return frame;
    }
  }
  ResponseHeader r{};
  r.kind = 3;
  const bool inside =
      h.rkey == world->region_mr.rkey && h.remote_addr >= base &&
      h.length <= kRegionBytes && h.remote_addr - base <= kRegionBytes - h.length;
  if (!inside || (atomic && (h.length != 8 || h.remote_addr % 8 != 0))) {
    r.status = 1;
    Expect(m, AsBytes(r));
    return frame;
  }
  char* at = m.region.data() + (h.remote_addr - base);
  if (op == WorkOpcode::kRead) {
    r.length = h.length;
    Expect(m, AsBytes(r) + std::string(at, h.length));
    return frame;
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
  }
  Expect(m, AsBytes(r));
  return frame;
}

std::string MessageFrame(FuzzInput& in, TargetModel& m) {
  RequestHeader h{};
  h.kind = 2;
  h.msg_type = in.U16();
  h.length = (in.U8() & 1) ? in.U32() : in.U16();
  std::string frame = AsBytes(h);
  if (h.length > Transport::kMaxMessageBytes) {
    m.closed = true;
    return frame;
  }
  const std::string body = Pattern(h.length, in.U8());
  frame += body;
  ++m.messages;
  m.message_sum += MessageDigest(h.msg_type, body);
  return frame;
}

// The client's half of the handshake as rank 5; checks the target's proof.
int HandshakeAsRawPeer() {
  const int fd = ConnectTo(world->target->LocalEndpoint().port);
  const tcp_handshake::ClientHello hello = Hello(kRawPeerRank);
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
  return fd;
}

// What the target answered and did against the model. A target that
// closes the connection for a malformed frame may drop the answers to the
// frames before it that it had not sent yet (the requester sees a broken
// connection either way): then, and after raw bytes, what arrived and what
// the model expects need only agree as far as both go.
void CheckAnswers(const TargetModel& m, const std::string& got,
                  uint64_t messages0, uint64_t sum0) {
  const size_t common = std::min(got.size(), m.expected.size());
  if (got.compare(0, common, m.expected, 0, common) != 0) {
    Fail("the target's responses differ from the model's (%d bytes, expected "
         "%d)",
         got.size(), m.expected.size());
  }
  if (!m.in_sync) return;
  if (m.closed ? got.size() > m.expected.size()
               : got.size() != m.expected.size()) {
    Fail("the target sent %d bytes, the model %d%s", got.size(),
         m.expected.size(), m.closed ? " or fewer" : "");
  }
  // Everything before a malformed frame was served, answered or not.
  if (std::memcmp(world->region, m.region.data(), kRegionBytes) != 0) {
    Fail("the target's region differs from the model's");
  }
  if (world->messages.load() - messages0 != m.messages ||
      world->message_sum.load() - sum0 != m.message_sum) {
    Fail("%d messages delivered, %d sent", world->messages.load() - messages0,
         m.messages);
  }
}

void Requests(FuzzInput& in) {
  TargetModel m;
  FillPattern(world->region, kRegionBytes, in.U8());
  m.region.assign(world->region, world->region + kRegionBytes);
  const uint64_t messages0 = world->messages.load();
  const uint64_t sum0 = world->message_sum.load();
  const int fd = HandshakeAsRawPeer();

  std::string pending, got;
  bool open = true;
  int pauses = 0;
  for (int frames = 0; open && !in.empty() && frames < 64; ++frames) {
    const uint8_t a = in.U8() % 8;
    if (a == 4) {
      pending += in.String(64);
      m.in_sync = false;
    } else if (a == 5 || a == 7) {
      // A write, of all or part of what is built: frames arrive in pieces.
      const size_t k = a == 7 ? pending.size() : in.U16() % (pending.size() + 1);
      open = SendAll(fd, pending.substr(0, k), &got);
      pending.erase(0, k);
      if ((in.U8() & 1) && pauses++ < 8) ::usleep(200);
    } else if (!m.closed) {
      pending += a == 3 ? MessageFrame(in, m) : OpFrame(in, m);
    }
  }
  if (open) SendAll(fd, pending, &got);
  ::shutdown(fd, SHUT_WR);
  ReadUntilClosed(fd, &got, "request frames");
  CloseWithoutTimeWait(fd);

  CheckAnswers(m, got, messages0, sum0);
  CheckTargetGuards();
}

// ---------------------------------------------------------------------------
// Mode 2: responses from a fake target to a real requester.

struct PostedOp {
  WorkRequest wr;
  bool answered_in_sync = false;  // a well-formed response, nothing bad before
  bool error_answer = false;
  std::string read_data;  // READ: what was sent
  uint64_t value = 0;     // atomics: what was sent
  int completions = 0;
};

char* Slot(int i) { return world->arena + i * kSlotBytes; }

std::vector<PostedOp> MakeChain(FuzzInput& in) {
  const int n = 1 + in.U8() % kMaxOps;
  std::vector<PostedOp> ops(n);
  for (int i = 0; i < n; ++i) {
    const uint8_t sel = in.U8();
    WorkRequest& wr = ops[i].wr;
    wr.wr_id = i;
    wr.opcode = static_cast<WorkOpcode>(sel % 4);
    wr.signaled = (sel & 0x80) == 0 || i == n - 1;  // the last one always
    switch ((sel >> 2) & 3) {
      case 0: wr.length = in.U8(); break;
      case 1: wr.length = in.U16() % 8193; break;
      case 2: wr.length = 120 * 1024 + in.U16(); break;
      default: wr.length = in.U32() % (kMaxReadBytes + 1); break;
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
  return ops;
}

// What the requester must send for `ops`: headers, WRITE payloads.
std::string RequestBytes(const std::vector<PostedOp>& ops) {
  std::string s;
  for (const PostedOp& op : ops) {
    RequestHeader h{};
    h.kind = 1;
    h.opcode = static_cast<uint8_t>(op.wr.opcode);
    h.length = op.wr.length;
    h.remote_addr = op.wr.remote_addr;
    h.rkey = op.wr.rkey;
    h.compare_add = op.wr.compare_add;
    h.swap = op.wr.swap;
    s += AsBytes(h);
    if (op.wr.opcode == WorkOpcode::kWrite) {
      s.append(static_cast<const char*>(op.wr.local), op.wr.length);
    }
  }
  return s;
}

void Post(std::vector<PostedOp>& ops, int from, int to) {
  if (from >= to) return;
  for (int i = from; i < to; ++i) {
    ops[i].wr.next = i + 1 < to ? &ops[i + 1].wr : nullptr;
  }
  absl::Status s = world->requester->PostSend(kFakeRank, &ops[from].wr);
  if (!s.ok()) Fail("PostSend: %s", s.ToString());
}

// The fake target's answer to the requester's hello; false if it was
// spoiled on purpose (the requester must then refuse it).
bool AnswerHello(FuzzInput& in, int fd, tcp_handshake::Nonce& cn,
                 tcp_handshake::Nonce& sn) {
  tcp_handshake::ClientHello hello;
  if (!ReadExactly(fd, &hello, sizeof(hello))) Fail("no hello from the requester");
  if (!tcp_handshake::CheckClientHello(hello, 2).empty() ||
      hello.rank != kRequesterRank) {
    Fail("a malformed hello from the requester");
  }
  std::memcpy(cn.data(), hello.nonce, cn.size());
  for (size_t i = 0; i < sn.size(); ++i) sn[i] = static_cast<uint8_t>(i + 77);
  tcp_handshake::ServerChallenge ch{};
  std::memcpy(ch.magic, tcp_handshake::kServerMagic, sizeof(ch.magic));
  ch.protocol_version = 2;
  ch.rank = kFakeRank;
  std::memcpy(ch.nonce, sn.data(), sizeof(ch.nonce));
  const Digest256 proof =
      tcp_handshake::Proof(tcp_handshake::DataPlaneKey(kSecret),
                           tcp_handshake::Role::kServer, cn, sn, kRequesterRank,
                           kFakeRank, hello.session, 0);
  std::memcpy(ch.proof, proof.data(), sizeof(ch.proof));
  const uint8_t how = in.U8();
  bool good = true;
  if ((how & 0x0f) == 0x0f) {
    reinterpret_cast<uint8_t*>(&ch)[in.U8() % sizeof(ch)] ^= in.U8() | 1;
    good = false;
  }
  std::string bytes = AsBytes(ch);
  if (how & 0x10) {  // in two pieces
    const size_t k = 1 + in.U8() % (sizeof(ch) - 1);
    SendAll(fd, bytes.substr(0, k), nullptr);
    ::usleep(100);
    bytes.erase(0, k);
  }
  SendAll(fd, bytes, nullptr);
  return good;
}

// Builds and sends the responses; marks what each op should complete with.
void SendResponses(FuzzInput& in, int fd, std::vector<PostedOp>& ops) {
  std::string pending;
  size_t next = 0;  // the op the next well-formed response answers
  bool in_sync = true, open = true;
  int pauses = 0;
  for (int steps = 0; open && !in.empty() && steps < 64; ++steps) {
    const uint8_t a = in.U8() % 8;
    ResponseHeader r{};
    r.kind = 3;
    if (a <= 4) {
      if (next == ops.size()) {
        in_sync = false;  // one response too many
      }
      PostedOp* op = next < ops.size() ? &ops[next++] : nullptr;
      const WorkOpcode code = op ? op->wr.opcode : WorkOpcode::kWrite;
      if (a == 4) {
        r.status = 1;
      } else if (code == WorkOpcode::kRead) {
        r.length = op->wr.length;
      } else if (code != WorkOpcode::kWrite) {
        r.value = in.U64();
      }
      pending += AsBytes(r);
      std::string data;
      if (r.length > 0) data = Pattern(r.length, in.U8());
      pending += data;
      if (op != nullptr && in_sync) {
        op->answered_in_sync = true;
        op->error_answer = a == 4;
        op->read_data = std::move(data);
        op->value = r.value;
      }
    } else if (a == 5) {
      const uint8_t kind = in.U8();
      r.kind = kind < 0x80 ? 3 : kind;
      r.status = in.U8() % 4;
      const uint8_t ls = in.U8();
      r.length = ls < 0x80 ? ls : ls < 0xc0 ? in.U16() : in.U32();
      r.value = in.U64();
      pending += AsBytes(r) + Pattern(std::min<uint32_t>(r.length, kMaxReadBytes), ls);
      in_sync = false;
    } else if (a == 6) {
      pending += in.String(64);
      in_sync = false;
    } else {
      const size_t k = in.U16() % (pending.size() + 1);
      open = SendAll(fd, pending.substr(0, k), nullptr);
      pending.erase(0, k);
      if ((in.U8() & 1) && pauses++ < 8) ::usleep(200);
    }
  }
  if (open) SendAll(fd, pending, nullptr);
}

// Collects completions until the sentinel's; checks each as it comes.
void CollectCompletions(std::vector<PostedOp>& ops) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kWaitMs);
  int64_t last = -1;
  WorkCompletion wcs[64];
  for (;;) {
    const int k = world->requester->PollCompletions(wcs, 64);
    for (int i = 0; i < k; ++i) {
      const WorkCompletion& wc = wcs[i];
      if (wc.peer != kFakeRank) Fail("a completion from peer %d", wc.peer);
      if (wc.wr_id == kSentinelId) {
        if (last == static_cast<int64_t>(kSentinelId)) Fail("the sentinel completed twice");
        last = kSentinelId;
        continue;
      }
      if (wc.wr_id >= ops.size()) Fail("a completion for unknown wr_id %d", wc.wr_id);
      if (last == static_cast<int64_t>(kSentinelId) ||
          static_cast<int64_t>(wc.wr_id) <= last) {
        Fail("wr_id %d completed after %d (posting order)", wc.wr_id, last);
      }
      last = static_cast<int64_t>(wc.wr_id);
      PostedOp& op = ops[wc.wr_id];
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
    if (last == static_cast<int64_t>(kSentinelId)) return;
    if (k == 64) continue;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) Fail("the sentinel did not complete within %d ms", kWaitMs);
    pollfd p{world->requester->completion_fd(), POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 50)));
  }
}

// Every op's slot: its buffer holds what it should, the rest is untouched.
void CheckSlots(const std::vector<PostedOp>& ops) {
  for (size_t i = 0; i < ops.size(); ++i) {
    const PostedOp& op = ops[i];
    const char* slot = Slot(static_cast<int>(i));
    const char* buf = static_cast<const char*>(op.wr.local);
    const bool dest = op.wr.opcode != WorkOpcode::kWrite;
    const char* fill = world->slot_fill[i].data();
    // A READ's or atomic's own buffer may change; nothing else may (a
    // WRITE's buffer is only read).
    const size_t hole = dest ? op.wr.length : 0;
    const size_t after = kSlotLead + hole;
    if (std::memcmp(slot, fill, kSlotLead) != 0 ||
        std::memcmp(slot + after, fill + after, kSlotBytes - after) != 0) {
      Fail("wr_id %d (%s of %d bytes): its slot was written outside its "
           "buffer",
           i, WorkOpcodeName(op.wr.opcode), op.wr.length);
    }
    if (op.wr.signaled && op.completions != 1) {
      Fail("signalled wr_id %d completed %d times", i, op.completions);
    }
    if (op.completions > 1) Fail("wr_id %d completed %d times", i, op.completions);
    if (!op.answered_in_sync || op.error_answer) continue;
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

void Responses(FuzzInput& in) {
  std::vector<PostedOp> ops = MakeChain(in);
  const int n = static_cast<int>(ops.size());
  const int before = in.U8() % (n + 1);  // posted before the handshake ends
  for (int i = 0; i < n; ++i) {
    std::memcpy(Slot(i), world->slot_fill[i].data(), kSlotBytes);
  }

  TransportEndpoint fake{"127.0.0.1", world->fake_port};
  if (absl::Status s = world->requester->Connect(kFakeRank, fake); !s.ok()) {
    Fail("Connect: %s", s.ToString());
  }
  if (!WaitFor(world->fake_listen, POLLIN)) Fail("no connection to the fake target");
  const int fd = ::accept4(world->fake_listen, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) Fail("accept: %s", std::strerror(errno));
  NoDelay(fd);
  Post(ops, 0, before);
  tcp_handshake::Nonce cn, sn;
  if (AnswerHello(in, fd, cn, sn)) {
    tcp_handshake::ClientProof got;
    if (!ReadExactly(fd, &got, sizeof(got))) Fail("no proof from the requester");
    const Digest256 want =
        tcp_handshake::Proof(tcp_handshake::DataPlaneKey(kSecret),
                             tcp_handshake::Role::kClient, cn, sn,
                             kRequesterRank, kFakeRank, 0, 0);
    if (std::memcmp(got.proof, want.data(), want.size()) != 0) {
      Fail("the requester's proof is wrong");
    }
    Post(ops, before, n);
    const std::string want_requests = RequestBytes(ops);
    std::string requests(want_requests.size(), '\0');
    if (!ReadExactly(fd, requests.data(), requests.size()) ||
        requests != want_requests) {
      Fail("the requester sent other bytes than the chain posted");
    }
    SendResponses(in, fd, ops);
    // Everything sent reaches the requester before our FIN, which it
    // answers by closing (if it has not closed already).
    ::shutdown(fd, SHUT_WR);
    ReadUntilClosed(fd, nullptr, "responses");
  } else {
    Post(ops, before, n);
    ReadUntilClosed(fd, nullptr, "a spoiled challenge");
  }
  ::close(fd);
  // The requester has closed its connection: the sentinel completes after
  // every op, though the ops' completions may not be delivered yet.
  WorkRequest sentinel;
  sentinel.wr_id = kSentinelId;
  sentinel.local = Slot(kMaxOps) + kSlotLead;
  sentinel.lkey = world->arena_mr.lkey;
  sentinel.length = 8;
  if (!world->requester->PostSend(kFakeRank, &sentinel).ok()) Fail("PostSend");
  CollectCompletions(ops);
  if (world->requester->Outstanding(kFakeRank) != 0) {
    Fail("operations outstanding after the connection closed");
  }
  CheckSlots(ops);
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
