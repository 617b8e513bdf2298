// coordinator_flags.h - pagewire-coordinator's command line: the flags
// (--flag=value or --flag value, every flag known, none repeated) and the
// CoordinatorConfig and listen address they give. Every bad input is an
// error naming the flag, the problem and the fix.
#ifndef PAGEWIRE_CLUSTER_COORDINATOR_COORDINATOR_FLAGS_H_
#define PAGEWIRE_CLUSTER_COORDINATOR_COORDINATOR_FLAGS_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/control/coordinator.h"

namespace pagewire::cluster {

// The arguments after argv[0], as a map from flag name (without "--") to
// value. CANCELLED for --help or -h (print the usage, exit 0);
// INVALID_ARGUMENT for anything that is not a known flag with a value, or
// a flag given twice.
absl::StatusOr<std::map<std::string, std::string>> ParseCoordinatorFlags(
    const std::vector<std::string>& args);

// The coordinator's configuration and listen address from the flags; the
// secret from --secret-file or PAGEWIRE_SECRET (ReadJobSecret). Checks
// every value and the configuration as a whole (CoordinatorConfig::Validate).
absl::StatusOr<std::pair<control::CoordinatorConfig, std::string>>
CoordinatorConfigFromFlags(const std::map<std::string, std::string>& flags);

}  // namespace pagewire::cluster

#endif  // PAGEWIRE_CLUSTER_COORDINATOR_COORDINATOR_FLAGS_H_
