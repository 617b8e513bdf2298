// protocol.h - the control-plane protocol version a node speaks.
//
// Bumped whenever proto/control_plane.proto or the home managers' messages
// (runtime/dsm/home_protocol.h) change in a way an older node cannot follow.
// The coordinator refuses a Join whose protocol_version differs from its
// own, so every rank of a job runs compatible binaries.
//   2: a barrier is one round; kEpochWrites goes to every rank.
//   3: kEpochWrites carries subscriptions and pushed pages (PageRef flags).
//   4: SUSPECT members, DeclareDead/JobStatus, barriers carry the call and
//      its outcome, session tokens, kLockDestroy.
//   5: the secret is never sent: Challenge, and a Proof in Join,
//      DeclareDead and JobStatus; session tokens derived, not sent.
//      kCollectiveEntered; kEpochWrites carries the collective generation.
#ifndef PAGEWIRE_RUNTIME_CONTROL_PROTOCOL_H_
#define PAGEWIRE_RUNTIME_CONTROL_PROTOCOL_H_

#include <cstdint>

namespace pagewire::control {

inline constexpr uint32_t kProtocolVersion = 5;

// The gRPC metadata key of a rank's session token (credentials.h).
inline constexpr char kSessionMetadata[] = "pw-session-bin";
inline constexpr size_t kSessionTokenBytes = 32;

}  // namespace pagewire::control

#endif  // PAGEWIRE_RUNTIME_CONTROL_PROTOCOL_H_
