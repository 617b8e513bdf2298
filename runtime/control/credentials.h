// credentials.h - how a caller proves on the control plane that it holds
// the job's secret without sending it (proto Proof), and the session token
// both ends derive from a Join's proof.
//
//   K      = HMAC-SHA256(secret, "pagewire control plane")
//   mac    = HMAC-SHA256(K, call | 0 | nonce | 0 | cluster id | 0 | detail)
//   token  = HMAC-SHA256(K, "session" | 0 | nonce | 0 | rank)
//
// `nonce` comes from the coordinator's Challenge and is good for one call,
// so a recorded proof cannot be replayed; `detail` binds the call's
// arguments (Join: the requested rank; DeclareDead: the rank and reason).
#ifndef PAGEWIRE_RUNTIME_CONTROL_CREDENTIALS_H_
#define PAGEWIRE_RUNTIME_CONTROL_CREDENTIALS_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/control_plane.grpc.pb.h"
#include "runtime/base/hmac_sha256.h"

namespace pagewire::control {

inline constexpr size_t kNonceBytes = 32;

Digest256 ControlKey(absl::string_view secret);

std::string CallMac(const Digest256& key, absl::string_view call,
                    absl::string_view nonce, absl::string_view cluster_id,
                    absl::string_view detail);

std::string DeriveSessionToken(const Digest256& key, absl::string_view nonce,
                         int rank);

// The `detail` of each call.
std::string JoinDetail(int requested_rank);
std::string DeclareDeadDetail(int rank, absl::string_view reason);

// The caller's side: a nonce from `stub`'s Challenge, and the proof of
// `call` with it. `context` gives a fresh ClientContext (deadline set as
// the caller wants).
absl::StatusOr<proto::Proof> Prove(
    proto::Membership::StubInterface& stub,
    const std::function<std::unique_ptr<grpc::ClientContext>()>& context,
    absl::string_view secret, absl::string_view call,
    absl::string_view cluster_id, absl::string_view detail);

}  // namespace pagewire::control

#endif  // PAGEWIRE_RUNTIME_CONTROL_CREDENTIALS_H_
