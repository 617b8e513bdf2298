// hmac_sha256.h - the keyed proofs that show a peer holds the job's secret
// without sending it: HMAC-SHA256 (OpenSSL's libcrypto), a comparison that
// takes the same time whatever the bytes, and fresh random nonces from the
// kernel (getrandom).
#ifndef PAGEWIRE_RUNTIME_BASE_HMAC_SHA256_H_
#define PAGEWIRE_RUNTIME_BASE_HMAC_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace pagewire {

using Digest256 = std::array<uint8_t, 32>;

// HMAC-SHA256 of `message` under `key`.
Digest256 HmacSha256(absl::Span<const uint8_t> key,
                     absl::Span<const uint8_t> message);
inline Digest256 HmacSha256(absl::string_view key, absl::string_view message) {
  return HmacSha256(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(key.data()),
                          key.size()),
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(message.data()),
                          message.size()));
}

// Whether two digests are equal, in time that does not depend on where they
// differ (so a forger learns nothing from how fast a proof is refused).
bool DigestsEqual(const Digest256& a, const Digest256& b);

// Fills `out` from the kernel's random source. Fails only if the kernel
// has none (getrandom unsupported), which the caller reports.
absl::Status FillRandom(absl::Span<uint8_t> out);

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_BASE_HMAC_SHA256_H_
