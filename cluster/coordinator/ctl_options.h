// ctl_options.h - pagewire-ctl's command line: a command (status, or
// declare-dead RANK), the coordinator, the cluster id and where the secret
// is, with PAGEWIRE_COORDINATOR and PAGEWIRE_CLUSTER_ID as defaults.
#ifndef PAGEWIRE_CLUSTER_COORDINATOR_CTL_OPTIONS_H_
#define PAGEWIRE_CLUSTER_COORDINATOR_CTL_OPTIONS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pagewire::cluster {

struct CtlOptions {
  std::string coordinator;  // host:port
  std::string cluster_id = "pagewire";
  // --secret-file; unset: PAGEWIRE_SECRET (ReadJobSecret).
  std::optional<std::string> secret_file;
  std::string command;
  int rank = -1;
  std::string reason;
};

// The arguments after argv[0]. CANCELLED for --help or -h (print the
// usage, exit 0); INVALID_ARGUMENT naming the problem for bad usage.
absl::StatusOr<CtlOptions> ParseCtlOptions(const std::vector<std::string>& args);

}  // namespace pagewire::cluster

#endif  // PAGEWIRE_CLUSTER_COORDINATOR_CTL_OPTIONS_H_
