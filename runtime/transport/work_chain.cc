// work_chain.cc - checking a chain before it is posted.
#include "runtime/transport/work_chain.h"

#include "absl/strings/str_format.h"

namespace pagewire {

absl::Status ValidateChain(int peer, const WorkRequest* chain,
                           const ChainLimits& limits) {
  for (const WorkRequest* wr = chain; wr != nullptr; wr = wr->next) {
    if (!ValidOpcode(static_cast<uint8_t>(wr->opcode))) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: PostSend to peer %d: wr_id %d has unknown opcode %d",
          limits.fabric, peer, wr->wr_id, static_cast<int>(wr->opcode)));
    }
    if (IsAtomic(wr->opcode) && wr->length != 8) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: PostSend to peer %d: wr_id %d: %s needs length 8, not %d",
          limits.fabric, peer, wr->wr_id, WorkOpcodeName(wr->opcode),
          wr->length));
    }
    if (IsAtomic(wr->opcode) && !limits.atomics) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: PostSend to peer %d: wr_id %d: %s has no atomics", limits.fabric,
          peer, wr->wr_id, limits.length_limit));
    }
    if (wr->length > limits.max_length) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: PostSend to peer %d: wr_id %d moves %d bytes, more than the %d "
          "%s allows in one work request",
          limits.fabric, peer, wr->wr_id, wr->length, limits.max_length,
          limits.length_limit));
    }
  }
  return absl::OkStatus();
}

}  // namespace pagewire
