// job_secret.cc - ReadJobSecret.
#include "cluster/coordinator/job_secret.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

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
    std::stringstream ss;
    ss << in.rdbuf();
    std::string secret(absl::StripTrailingAsciiWhitespace(ss.str()));
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
