// tcp_handshake.cc - the proofs of the TCP data plane's handshake and the
// checks of its frames.
#include "runtime/transport/tcp/tcp_handshake.h"

#include <cstring>

#include "absl/strings/str_format.h"

namespace pagewire::tcp_handshake {

Digest256 DataPlaneKey(absl::string_view secret) {
  return HmacSha256(secret, "pagewire tcp data plane");
}

Digest256 Proof(const Digest256& key, Role role, const Nonce& client_nonce,
                const Nonce& server_nonce, int32_t client_rank,
                int32_t server_rank, uint64_t session, uint64_t received) {
  uint8_t msg[1 + 2 * kNonceBytes + 2 * sizeof(int32_t) +
              2 * sizeof(uint64_t)];
  size_t at = 0;
  msg[at++] = static_cast<uint8_t>(role);
  std::memcpy(msg + at, client_nonce.data(), kNonceBytes);
  at += kNonceBytes;
  std::memcpy(msg + at, server_nonce.data(), kNonceBytes);
  at += kNonceBytes;
  std::memcpy(msg + at, &client_rank, sizeof(client_rank));
  at += sizeof(client_rank);
  std::memcpy(msg + at, &server_rank, sizeof(server_rank));
  at += sizeof(server_rank);
  std::memcpy(msg + at, &session, sizeof(session));
  at += sizeof(session);
  std::memcpy(msg + at, &received, sizeof(received));
  at += sizeof(received);
  return HmacSha256(absl::MakeConstSpan(key.data(), key.size()),
                    absl::MakeConstSpan(msg, at));
}

std::string CheckClientHello(const ClientHello& hello,
                             uint32_t protocol_version) {
  if (std::memcmp(hello.magic, kClientMagic, sizeof(hello.magic)) != 0) {
    return "bad magic in hello (not a Pagewire TCP transport?)";
  }
  if (hello.protocol_version != protocol_version) {
    return absl::StrFormat("protocol version %d in hello, this node speaks %d",
                           hello.protocol_version, protocol_version);
  }
  if (hello.rank < 0) {
    return absl::StrFormat("negative rank %d in hello", hello.rank);
  }
  return "";
}

std::string CheckServerChallenge(const ServerChallenge& challenge,
                                 uint32_t protocol_version,
                                 int32_t expected_rank, int32_t client_rank,
                                 const Nonce& client_nonce, uint64_t session,
                                 const Digest256& key) {
  if (std::memcmp(challenge.magic, kServerMagic, sizeof(challenge.magic)) !=
      0) {
    return "bad magic in the handshake's answer (not a Pagewire TCP "
           "transport?)";
  }
  if (challenge.protocol_version != protocol_version) {
    return absl::StrFormat(
        "protocol version %d in the handshake's answer, this node speaks %d",
        challenge.protocol_version, protocol_version);
  }
  if (challenge.rank != expected_rank) {
    return absl::StrFormat("the other end is rank %d, not rank %d",
                           challenge.rank, expected_rank);
  }
  Nonce server_nonce;
  std::memcpy(server_nonce.data(), challenge.nonce, kNonceBytes);
  Digest256 got;
  std::memcpy(got.data(), challenge.proof, got.size());
  const Digest256 want =
      Proof(key, Role::kServer, client_nonce, server_nonce, client_rank,
            expected_rank, session, challenge.received);
  if (!DigestsEqual(got, want)) {
    return "the other end failed to prove the job's secret (a different "
           "job, or PAGEWIRE_SECRET differs)";
  }
  return "";
}

}  // namespace pagewire::tcp_handshake
