// bootstrap_env.h - the environment through which a rank learns its place in
// the job. Any process manager that sets these variables can start a
// Pagewire cluster; pagewire-run is one such manager (README.md lists them).
//
// Also the network-namespace side: reading netns-hosts.sh's address map and
// picking a free coordinator port inside rank 0's namespace.
//
// Single-threaded: called by the launcher before it starts any rank.
#ifndef PAGEWIRE_CLUSTER_LAUNCHER_BOOTSTRAP_ENV_H_
#define PAGEWIRE_CLUSTER_LAUNCHER_BOOTSTRAP_ENV_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cluster/launcher/unique_fd.h"

namespace pagewire {
namespace launcher {

// The variable names, exactly as ranks read them.
inline constexpr char kEnvRank[] = "PAGEWIRE_RANK";
inline constexpr char kEnvNranks[] = "PAGEWIRE_NRANKS";
inline constexpr char kEnvCoordinator[] = "PAGEWIRE_COORDINATOR";
inline constexpr char kEnvClusterId[] = "PAGEWIRE_CLUSTER_ID";
inline constexpr char kEnvSecret[] = "PAGEWIRE_SECRET";
inline constexpr char kEnvHost[] = "PAGEWIRE_HOST";

// Where `ip netns` keeps its namespaces, and where netns-hosts.sh writes
// <prefix>.hosts ("<rank> <address>" per line).
inline constexpr char kNetnsDir[] = "/run/netns";
inline constexpr char kNetnsHostsDir[] = "/run/pagewire-netns";

// Random bytes for the cluster id and the secret: 128 bits tell jobs apart,
// 256 bits are a secret nobody guesses.
constexpr size_t kClusterIdBytes = 16;
constexpr size_t kSecretBytes = 32;

// The job-wide values; every rank gets the same ones except RANK and HOST.
struct BootstrapEnv {
  int nranks = 0;
  std::string coordinator;  // "host:port", hosted by rank 0
  std::string cluster_id;
  std::string secret;
  std::vector<std::string> hosts;  // hosts[i]: rank i's PAGEWIRE_HOST

  // Rank `rank`'s whole environment: `base` (a NULL-terminated environ)
  // without any variable set here, then the bootstrap variables.
  std::vector<std::string> EnvironmentFor(int rank, char** base) const;
};

// `bytes` random bytes from getrandom(2), as lowercase hex.
absl::StatusOr<std::string> RandomHex(size_t bytes);

// Reads netns-hosts.sh's map for `prefix` and returns the addresses of ranks
// 0..nranks-1. Errors name the file, the line and the command that fixes it.
absl::StatusOr<std::vector<std::string>> ReadNetnsHosts(
    const std::string& hosts_file, const std::string& prefix, int nranks);

// Opens /run/netns/<name> (close-on-exec), for setns(2).
absl::StatusOr<UniqueFd> OpenNetns(const std::string& name,
                                   const std::string& prefix, int nranks);

// Binds a TCP socket to host:0, inside network namespace `netns_fd` if it is
// valid, and returns the port the kernel chose; the socket is closed again.
// Another process could take the port before rank 0 binds it; pass
// --coordinator-port where that matters.
absl::StatusOr<int> PickFreePort(const std::string& host,
                                 const UniqueFd& netns_fd);

}  // namespace launcher
}  // namespace pagewire

#endif  // PAGEWIRE_CLUSTER_LAUNCHER_BOOTSTRAP_ENV_H_
