// coordinator_flags.cc - pagewire-coordinator's command line.
#include "cluster/coordinator/coordinator_flags.h"

#include <cerrno>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cluster/coordinator/job_secret.h"
#include "runtime/control/coordinator_server.h"

namespace pagewire::cluster {
namespace {

using control::CoordinatorConfig;

// Decimal or 0x hex, with an optional K/M/G/T (binary) suffix.
absl::StatusOr<uint64_t> ParseBytes(const std::string& flag,
                                    const std::string& text) {
  std::string digits = text;
  uint64_t scale = 1;
  if (!digits.empty() && !absl::ascii_isdigit(digits.back()) &&
      digits.rfind("0x", 0) != 0) {
    switch (absl::ascii_toupper(digits.back())) {
      case 'K': scale = uint64_t{1} << 10; break;
      case 'M': scale = uint64_t{1} << 20; break;
      case 'G': scale = uint64_t{1} << 30; break;
      case 'T': scale = uint64_t{1} << 40; break;
      default: scale = 0;
    }
    digits.pop_back();
  }
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(digits.c_str(), &end, 0);
  if (scale == 0 || digits.empty() || errno != 0 || *end != '\0' ||
      digits[0] == '-' || (scale > 1 && v > UINT64_MAX / scale)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, " '", text,
        "' is not a byte count or address; write e.g. 4096, 0x200000000000 "
        "or 64G"));
  }
  return static_cast<uint64_t>(v) * scale;
}

absl::StatusOr<int> ParsePositiveInt(const std::string& flag,
                                     const std::string& text) {
  int v = 0;
  if (!absl::SimpleAtoi(text, &v) || v <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, " '", text, "' is not a positive integer; write e.g. --",
        flag, " 4"));
  }
  return v;
}

}  // namespace

absl::StatusOr<std::map<std::string, std::string>> ParseCoordinatorFlags(
    const std::vector<std::string>& args) {
  static const char* const kKnown[] = {
      "listen",      "nranks",   "cluster-id",   "secret-file",
      "global-base", "global-size", "lease-ms", "heartbeat-ms",
      "dead-after-ms"};
  std::map<std::string, std::string> flags;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    if (arg == "--help" || arg == "-h") {
      return absl::CancelledError("help");
    }
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unexpected argument '", arg, "'; every option is a --flag"));
    }
    std::string name = arg.substr(2);
    std::string value;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " needs a value (--", name, " VALUE)"));
    }
    bool known = false;
    for (const char* k : kKnown) known |= name == k;
    if (!known) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, "; see --help"));
    }
    if (!flags.emplace(name, value).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " given twice; give it once"));
    }
  }
  return flags;
}

absl::StatusOr<std::pair<CoordinatorConfig, std::string>> CoordinatorConfigFromFlags(
    const std::map<std::string, std::string>& flags) {
  CoordinatorConfig config;
  // Values that were given are checked before missing flags are named, so
  // "--nranks x" is reported as a bad --nranks.
  if (auto it = flags.find("listen"); it != flags.end()) {
    if (auto hp = control::ParseHostPort(it->second); !hp.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--listen: ", hp.status().message()));
    }
  }
  if (auto it = flags.find("nranks"); it != flags.end()) {
    absl::StatusOr<int> nranks = ParsePositiveInt("nranks", it->second);
    if (!nranks.ok()) return nranks.status();
    config.nranks = *nranks;
  }
  for (const char* required : {"listen", "nranks", "cluster-id"}) {
    if (flags.count(required) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", required, " is required; see --help"));
    }
  }
  const std::string listen = flags.at("listen");
  config.cluster_id = flags.at("cluster-id");
  auto file = flags.find("secret-file");
  absl::StatusOr<std::string> secret = ReadJobSecret(
      file == flags.end() ? nullptr : &file->second);
  if (!secret.ok()) return secret.status();
  config.secret = *secret;
  absl::StatusOr<control::TlsFiles> tls = control::TlsFiles::FromEnvironment();
  if (!tls.ok()) return tls.status();
  config.tls = *std::move(tls);
  if (auto it = flags.find("global-base"); it != flags.end()) {
    absl::StatusOr<uint64_t> v = ParseBytes("global-base", it->second);
    if (!v.ok()) return v.status();
    config.global_base = *v;
  }
  if (auto it = flags.find("global-size"); it != flags.end()) {
    absl::StatusOr<uint64_t> v = ParseBytes("global-size", it->second);
    if (!v.ok()) return v.status();
    config.global_size = *v;
  }
  if (auto it = flags.find("lease-ms"); it != flags.end()) {
    absl::StatusOr<int> v = ParsePositiveInt("lease-ms", it->second);
    if (!v.ok()) return v.status();
    config.lease = absl::Milliseconds(*v);
  }
  if (auto it = flags.find("dead-after-ms"); it != flags.end()) {
    absl::StatusOr<int> v = ParsePositiveInt("dead-after-ms", it->second);
    if (!v.ok()) return v.status();
    config.dead_after = absl::Milliseconds(*v);
  }
  if (auto it = flags.find("heartbeat-ms"); it != flags.end()) {
    absl::StatusOr<int> v = ParsePositiveInt("heartbeat-ms", it->second);
    if (!v.ok()) return v.status();
    config.heartbeat_interval = absl::Milliseconds(*v);
  }
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  return std::make_pair(config, listen);
}

}  // namespace pagewire::cluster
