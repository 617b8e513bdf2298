// job_secret.h - the job's secret for the operators' tools: from a file
// (--secret-file) or PAGEWIRE_SECRET, never from the command line, where
// every user of the host could read it.
#ifndef PAGEWIRE_CLUSTER_COORDINATOR_JOB_SECRET_H_
#define PAGEWIRE_CLUSTER_COORDINATOR_JOB_SECRET_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace pagewire::cluster {

// The longest secret file read.
inline constexpr size_t kMaxSecretFileBytes = 4096;

// The secret in `secret_file` (trailing whitespace stripped) if it is not
// null, else PAGEWIRE_SECRET. INVALID_ARGUMENT naming the file or the
// variable, and the fix, if there is none; the secret is never in a message.
absl::StatusOr<std::string> ReadJobSecret(const std::string* secret_file);

}  // namespace pagewire::cluster

#endif  // PAGEWIRE_CLUSTER_COORDINATOR_JOB_SECRET_H_
