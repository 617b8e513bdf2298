// credentials.cc - the control plane's proofs of the job's secret.
#include "runtime/control/credentials.h"

#include <functional>
#include <memory>

#include "absl/strings/str_cat.h"
#include "runtime/control/grpc_status.h"

namespace pagewire::control {
namespace {

std::string AsString(const Digest256& d) {
  return std::string(reinterpret_cast<const char*>(d.data()), d.size());
}

Digest256 Mac(const Digest256& key, absl::string_view message) {
  return HmacSha256(
      absl::MakeConstSpan(key.data(), key.size()),
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(message.data()),
                          message.size()));
}

}  // namespace

Digest256 ControlKey(absl::string_view secret) {
  return HmacSha256(secret, "pagewire control plane");
}

std::string CallMac(const Digest256& key, absl::string_view call,
                    absl::string_view nonce, absl::string_view cluster_id,
                    absl::string_view detail) {
  const char zero = '\0';
  const absl::string_view sep(&zero, 1);
  return AsString(
      Mac(key, absl::StrCat(call, sep, nonce, sep, cluster_id, sep, detail)));
}

std::string DeriveSessionToken(const Digest256& key, absl::string_view nonce,
                         int rank) {
  const char zero = '\0';
  const absl::string_view sep(&zero, 1);
  return AsString(Mac(key, absl::StrCat("session", sep, nonce, sep, rank)));
}

std::string JoinDetail(int requested_rank) {
  return absl::StrCat(requested_rank);
}

std::string DeclareDeadDetail(int rank, absl::string_view reason) {
  const char zero = '\0';
  return absl::StrCat(rank, absl::string_view(&zero, 1), reason);
}

absl::StatusOr<proto::Proof> Prove(
    proto::Membership::StubInterface& stub,
    const std::function<std::unique_ptr<grpc::ClientContext>()>& context,
    absl::string_view secret, absl::string_view call,
    absl::string_view cluster_id, absl::string_view detail) {
  proto::ChallengeReply challenge;
  std::unique_ptr<grpc::ClientContext> ctx = context();
  grpc::Status st =
      stub.Challenge(ctx.get(), proto::ChallengeRequest(), &challenge);
  if (!st.ok()) return FromGrpcStatus(st);
  proto::Proof proof;
  proof.set_nonce(challenge.nonce());
  proof.set_mac(CallMac(ControlKey(secret), call, challenge.nonce(),
                        cluster_id, detail));
  return proof;
}

}  // namespace pagewire::control
