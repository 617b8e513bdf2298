// job_secret.cc - ReadJobSecret.
#include "cluster/coordinator/job_secret.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace pagewire::cluster {

absl::StatusOr<std::string> ReadJobSecret(const std::string* secret_file) {
  if (secret_file != nullptr) {
    std::ifstream in(*secret_file);
    if (!in) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--secret-file ", *secret_file, ": cannot read it (",
          std::strerror(errno), "); pass a readable file holding the secret"));
    }
    // A secret is a short line; a bigger file (or a device such as
    // /dev/zero) is the wrong file, read no further than that tells.
    std::string text(kMaxSecretFileBytes + 1, '\0');
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxSecretFileBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--secret-file ", *secret_file, " is longer than ",
          kMaxSecretFileBytes, " bytes; pass the file that holds only the "
          "job's secret"));
    }
    std::string secret(absl::StripTrailingAsciiWhitespace(text));
    if (secret.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--secret-file ", *secret_file,
          " is empty; write the job's secret into it"));
    }
    return secret;
  }
  const char* env = std::getenv("PAGEWIRE_SECRET");
  if (env == nullptr || *env == '\0') {
    return absl::InvalidArgumentError(
        "no secret: pass --secret-file FILE or set PAGEWIRE_SECRET (the same "
        "value every rank uses)");
  }
  return std::string(env);
}

}  // namespace pagewire::cluster
