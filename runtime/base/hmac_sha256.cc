// hmac_sha256.cc - HMAC-SHA256 over OpenSSL's libcrypto, constant-time
// comparison and getrandom nonces.
#include "runtime/base/hmac_sha256.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"

namespace pagewire {

Digest256 HmacSha256(absl::Span<const uint8_t> key,
                     absl::Span<const uint8_t> message) {
  Digest256 out{};
  unsigned int len = 0;
  // A null key pointer with length 0 is what OpenSSL wants for an empty key.
  static const uint8_t kEmpty = 0;
  HMAC(EVP_sha256(), key.empty() ? &kEmpty : key.data(),
       static_cast<int>(key.size()), message.empty() ? &kEmpty : message.data(),
       message.size(), out.data(), &len);
  return out;
}

bool DigestsEqual(const Digest256& a, const Digest256& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

absl::Status FillRandom(absl::Span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(absl::StrFormat(
          "getrandom: %s; Pagewire needs the kernel's random source (Linux "
          "3.17 or later)",
          std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace pagewire
