// runtime_config.cc - reading a node's configuration from the environment;
// every bad value is an error naming the variable and the fix.
#include "runtime/runtime_config.h"

#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace pagewire {
namespace {

// Parses "0x200000000000", "1099511627776", "64G", "1T".
absl::StatusOr<uint64_t> ParseSize(const char* name, absl::string_view given) {
  absl::string_view text = given;
  uint64_t shift = 0;
  if (!text.empty()) {
    switch (text.back()) {
      case 'K': case 'k': shift = 10; break;
      case 'M': case 'm': shift = 20; break;
      case 'G': case 'g': shift = 30; break;
      case 'T': case 't': shift = 40; break;
      default: break;
    }
    if (shift) text.remove_suffix(1);
  }
  uint64_t value = 0;
  bool ok = absl::ConsumePrefix(&text, "0x") ? absl::SimpleHexAtoi(text, &value)
                                             : absl::SimpleAtoi(text, &value);
  if (!ok || (shift && value > (UINT64_MAX >> shift))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s=%s is not a number; give bytes in decimal or 0x-hex, optionally "
        "with a K, M, G or T suffix",
        name, given));
  }
  return value << shift;
}

absl::StatusOr<int> ParseInt(const char* name, const char* text, int min) {
  int value;
  if (!absl::SimpleAtoi(text, &value) || value < min) {
    const bool bootstrap = std::string(name) == "PAGEWIRE_RANK" ||
                           std::string(name) == "PAGEWIRE_NRANKS";
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s=%s is not a whole number >= %d; %s", name, text, min,
        bootstrap ? "the launcher (pagewire-run) sets it, or set it yourself "
                    "as cluster/launcher/README.md describes"
                  : "fix or unset it (cluster/launcher/README.md lists the "
                    "variables and their ranges)"));
  }
  return value;
}

// How long a silent rank stays above suspicion, and the opt-in deadline
// after which it is declared dead.
absl::Status ReadMembershipTiming(RuntimeConfig& config) {
  if (const char* v = std::getenv("PAGEWIRE_LEASE_MS")) {
    absl::StatusOr<int> ms = ParseInt("PAGEWIRE_LEASE_MS", v, 1);
    if (!ms.ok()) return ms.status();
    config.lease = absl::Milliseconds(*ms);
    config.heartbeat_interval =
        std::min(config.heartbeat_interval, config.lease / 4);
  }
  if (const char* v = std::getenv("PAGEWIRE_DEAD_AFTER_MS")) {
    absl::StatusOr<int> ms = ParseInt("PAGEWIRE_DEAD_AFTER_MS", v, 1);
    if (!ms.ok()) return ms.status();
    config.dead_after = absl::Milliseconds(*ms);
    if (config.dead_after < config.lease) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "PAGEWIRE_DEAD_AFTER_MS=%s is shorter than the lease (%d ms); a "
          "silent rank is suspected after the lease and declared dead only "
          "after this deadline: raise it or lower PAGEWIRE_LEASE_MS",
          v, absl::ToInt64Milliseconds(config.lease)));
    }
  }
  return absl::OkStatus();
}

// The variables that tune a node (transport, polling, read-ahead, push,
// leases), over the defaults in `config`; names the variable and the fix
// for each bad value.
absl::Status ReadTuning(RuntimeConfig& config) {
  if (const char* v = std::getenv("PAGEWIRE_TRANSPORT")) {
    config.transport = v;
    if (config.transport != "tcp" && config.transport != "verbs" &&
        config.transport != "auto") {
      return absl::InvalidArgumentError(absl::StrFormat(
          "PAGEWIRE_TRANSPORT=%s is not a transport; use tcp, verbs or auto "
          "(verbs if an RDMA device is there, else TCP)",
          v));
    }
  }
  if (const char* v = std::getenv("PAGEWIRE_COORDINATOR_EXTERNAL")) {
    config.host_coordinator = std::string(v) != "1";
  }
  if (const char* v = std::getenv("PAGEWIRE_SPIN_POLLS")) {
    absl::StatusOr<int> polls = ParseInt("PAGEWIRE_SPIN_POLLS", v, 0);
    if (!polls.ok()) return polls.status();
    config.spin_polls = static_cast<uint32_t>(*polls);
  }
  if (const char* v = std::getenv("PAGEWIRE_IDLE_POLLS")) {
    absl::StatusOr<int> polls = ParseInt("PAGEWIRE_IDLE_POLLS", v, 0);
    if (!polls.ok()) return polls.status();
    config.idle_polls = static_cast<uint32_t>(*polls);
  }
  if (const char* v = std::getenv("PAGEWIRE_SERVICE_SLICE_US")) {
    // Read where the threads start (BecomeServiceThread); checked here so a
    // typo is an error, not a silent default.
    absl::StatusOr<int> us = ParseInt("PAGEWIRE_SERVICE_SLICE_US", v, 0);
    if (!us.ok()) return us.status();
  }
  if (const char* v = std::getenv("PAGEWIRE_READAHEAD")) {
    absl::StatusOr<int> pages = ParseInt("PAGEWIRE_READAHEAD", v, 0);
    if (!pages.ok()) return pages.status();
    if (*pages > RuntimeConfig::kMaxReadAheadPages) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "PAGEWIRE_READAHEAD=%d reads too far ahead; use 0 to %d pages",
          *pages, RuntimeConfig::kMaxReadAheadPages));
    }
    config.readahead_pages = *pages;
  }
  if (const char* v = std::getenv("PAGEWIRE_PUSH")) {
    const std::string on(v);
    if (on != "0" && on != "1") {
      return absl::InvalidArgumentError(absl::StrFormat(
          "PAGEWIRE_PUSH=%s is not 0 or 1; use 1 (pages written every epoch "
          "arrive with the barrier, the default) or 0 (always fetched on "
          "demand), or unset it",
          v));
    }
    config.push = on == "1";
  }
  if (const char* v = std::getenv("PAGEWIRE_CHECK")) {
    const std::string on(v);
    if (on != "0" && on != "1") {
      return absl::InvalidArgumentError(absl::StrFormat(
          "PAGEWIRE_CHECK=%s is not 0 or 1; use 1 (audit every dropped copy "
          "for lost writes, for tests and debugging) or 0, or unset it",
          v));
    }
    config.check = on == "1";
  }
  return ReadMembershipTiming(config);
}

}  // namespace

absl::StatusOr<RuntimeConfig> RuntimeConfig::FromEnvironment() {
  RuntimeConfig config;
  if (const char* v = std::getenv("PAGEWIRE_GLOBAL_BASE")) {
    absl::StatusOr<uint64_t> base = ParseSize("PAGEWIRE_GLOBAL_BASE", v);
    if (!base.ok()) return base.status();
    config.global_base = *base;
  }
  if (const char* v = std::getenv("PAGEWIRE_GLOBAL_SIZE")) {
    absl::StatusOr<uint64_t> size = ParseSize("PAGEWIRE_GLOBAL_SIZE", v);
    if (!size.ok()) return size.status();
    config.global_size = *size;
  }
  const char* coordinator = std::getenv("PAGEWIRE_COORDINATOR");
  const char* rank = std::getenv("PAGEWIRE_RANK");
  const char* nranks = std::getenv("PAGEWIRE_NRANKS");
  if (coordinator == nullptr) {
    if (nranks != nullptr && std::string(nranks) != "1") {
      return absl::InvalidArgumentError(absl::StrFormat(
          "PAGEWIRE_NRANKS=%s but PAGEWIRE_COORDINATOR is not set; start the "
          "job with pagewire-run, or set PAGEWIRE_COORDINATOR=host:port",
          nranks));
    }
    // A job of one: the tuning variables are checked all the same.
    if (absl::Status s = ReadTuning(config); !s.ok()) return s;
    return config;
  }
  config.coordinator = coordinator;
  if (rank == nullptr || nranks == nullptr) {
    return absl::InvalidArgumentError(
        "PAGEWIRE_COORDINATOR is set but PAGEWIRE_RANK or PAGEWIRE_NRANKS is "
        "not; set all three (the launcher does)");
  }
  absl::StatusOr<int> r = ParseInt("PAGEWIRE_RANK", rank, 0);
  if (!r.ok()) return r.status();
  absl::StatusOr<int> n = ParseInt("PAGEWIRE_NRANKS", nranks, 1);
  if (!n.ok()) return n.status();
  if (*r >= *n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "PAGEWIRE_RANK=%d is not below PAGEWIRE_NRANKS=%d; ranks count from 0",
        *r, *n));
  }
  config.rank = *r;
  config.nranks = *n;
  if (const char* v = std::getenv("PAGEWIRE_CLUSTER_ID")) config.cluster_id = v;
  if (const char* v = std::getenv("PAGEWIRE_SECRET")) config.secret = v;
  absl::StatusOr<control::TlsFiles> tls = control::TlsFiles::FromEnvironment();
  if (!tls.ok()) return tls.status();
  config.tls = *std::move(tls);
  if (const char* v = std::getenv("PAGEWIRE_HOST")) config.host = v;
  if (absl::Status s = ReadTuning(config); !s.ok()) return s;
  return config;
}

}  // namespace pagewire
