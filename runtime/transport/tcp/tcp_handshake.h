// tcp_handshake.h - how two ends of a TCP data-plane connection prove to
// each other that they belong to the same job, without sending its secret.
//
//   requester (client)                       target (server)
//   ClientHello {magic, version, rank, Nc,
//                session}                 ->
//                                            the claimed rank must be the
//                                            one membership places at the
//                                            connection's source address
//                                         <- ServerChallenge {magic, version,
//                                              rank, Ns, received, proof_s}
//   proof_s checked; then
//   ClientProof {proof_c}                 ->  proof_c checked; only now is
//   requests ...                              anything read or served
//
//   proof_x = HMAC-SHA256(K, role_x | Nc | Ns | client rank | server rank
//                            | session | received)
//   K       = HMAC-SHA256(job secret, "pagewire tcp data plane")
//
// Nc and Ns are 16 fresh random bytes per connection, so a recorded
// handshake replayed on a new connection fails (the target's Ns differs),
// and the role label keeps one side's proof from serving as the other's.
// Both ranks are inside the proof, so a proof made for one pair of ranks
// proves nothing for another. `session` names the requester's session
// (tcp_transport.h: it outlives a broken connection) and `received` is how
// many of its frames the target has taken, which the requester does not
// send again.
#ifndef PAGEWIRE_RUNTIME_TRANSPORT_TCP_TCP_HANDSHAKE_H_
#define PAGEWIRE_RUNTIME_TRANSPORT_TCP_TCP_HANDSHAKE_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "runtime/base/hmac_sha256.h"

namespace pagewire::tcp_handshake {

inline constexpr char kClientMagic[8] = {'P', 'W', 'T', 'C', 'P', '-', 'D', 'P'};
inline constexpr char kServerMagic[8] = {'P', 'W', 'T', 'C', 'P', '-', 'S', 'V'};
inline constexpr size_t kNonceBytes = 16;
using Nonce = std::array<uint8_t, kNonceBytes>;

struct ClientHello {
  char magic[8];  // kClientMagic
  uint32_t protocol_version;
  int32_t rank;  // the requester's rank, as it claims
  uint8_t nonce[kNonceBytes];
  uint64_t session;
};
static_assert(sizeof(ClientHello) == 40, "ClientHello is 40 bytes");

struct ServerChallenge {
  char magic[8];  // kServerMagic
  uint32_t protocol_version;
  int32_t rank;  // the target's rank
  uint8_t nonce[kNonceBytes];
  uint64_t received;
  uint8_t proof[32];  // Proof(kServer, ...)
};
static_assert(sizeof(ServerChallenge) == 72, "ServerChallenge is 72 bytes");

struct ClientProof {
  uint8_t proof[32];  // Proof(kClient, ...)
};
static_assert(sizeof(ClientProof) == 32, "ClientProof is 32 bytes");

enum class Role : uint8_t { kServer = 1, kClient = 2 };

// K, derived from the job's secret (so the secret itself is never a MAC
// key that something else also uses).
Digest256 DataPlaneKey(absl::string_view secret);

// proof_x above.
Digest256 Proof(const Digest256& key, Role role, const Nonce& client_nonce,
                const Nonce& server_nonce, int32_t client_rank,
                int32_t server_rank, uint64_t session, uint64_t received);

// "" if `hello` is well formed for `protocol_version`, else what is wrong.
std::string CheckClientHello(const ClientHello& hello,
                             uint32_t protocol_version);
// "" if `challenge` is well formed, from `expected_rank`, and proves the
// key for this client's nonce; else what is wrong.
std::string CheckServerChallenge(const ServerChallenge& challenge,
                                 uint32_t protocol_version,
                                 int32_t expected_rank, int32_t client_rank,
                                 const Nonce& client_nonce, uint64_t session,
                                 const Digest256& key);

}  // namespace pagewire::tcp_handshake

#endif  // PAGEWIRE_RUNTIME_TRANSPORT_TCP_TCP_HANDSHAKE_H_
