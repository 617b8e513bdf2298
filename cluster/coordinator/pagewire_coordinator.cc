// pagewire_coordinator.cc - the standalone coordinator of a Pagewire job.
//
//   pagewire-coordinator --listen 0.0.0.0:7070 --nranks 4 --cluster-id job1
//       --secret-file /run/secrets/pagewire    (or PAGEWIRE_SECRET in env)
//       [--global-base 0x200000000000] [--global-size 1T]
//       [--lease-ms 2000] [--heartbeat-ms 100] [--dead-after-ms MS]
//
// Prints "pagewire-coordinator: listening on host:port" (with the bound
// port, so --listen host:0 works) and serves until SIGTERM or SIGINT, then
// ends watch streams and pending barriers and exits 0. Bad flags print the
// flag, the problem and the fix, and exit 2.
#include <signal.h>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cluster/coordinator/coordinator_flags.h"
#include "runtime/control/coordinator_server.h"

namespace {

using pagewire::control::CoordinatorServer;

constexpr char kUsage[] =
    "usage: pagewire-coordinator --listen HOST:PORT --nranks N "
    "--cluster-id ID\n"
    "           [--secret-file FILE | env PAGEWIRE_SECRET]\n"
    "           [--global-base ADDR] [--global-size BYTES[K|M|G|T]]\n"
    "           [--lease-ms MS] [--heartbeat-ms MS] [--dead-after-ms MS]\n"
    "  A rank silent past --lease-ms is suspected, not dead; only its\n"
    "  connection closing, pagewire-ctl declare-dead, or (opt-in) silence\n"
    "  past --dead-after-ms makes it dead.\n";

}  // namespace

int main(int argc, char** argv) {
  absl::StatusOr<std::map<std::string, std::string>> flags =
      pagewire::cluster::ParseCoordinatorFlags(
          std::vector<std::string>(argv + 1, argv + argc));
  if (!flags.ok()) {
    if (absl::IsCancelled(flags.status())) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    std::fprintf(stderr, "pagewire-coordinator: %s\n%s",
                 std::string(flags.status().message()).c_str(), kUsage);
    return 2;
  }
  auto config = pagewire::cluster::CoordinatorConfigFromFlags(*flags);
  if (!config.ok()) {
    std::fprintf(stderr, "pagewire-coordinator: %s\n%s",
                 std::string(config.status().message()).c_str(), kUsage);
    return 2;
  }

  // Block the stop signals before any thread exists, so every gRPC thread
  // inherits the mask and only sigwait below receives them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  auto server = CoordinatorServer::Start(config->first, config->second);
  if (!server.ok()) {
    std::fprintf(stderr, "pagewire-coordinator: %s\n",
                 std::string(server.status().message()).c_str());
    return 1;
  }
  std::printf("pagewire-coordinator: listening on %s\n",
              (*server)->address().c_str());
  std::fflush(stdout);

  int sig = 0;
  while (sigwait(&stop, &sig) != 0) {
  }
  std::fprintf(stderr, "pagewire-coordinator: %s received, shutting down\n",
               sig == SIGTERM ? "SIGTERM" : "SIGINT");
  (*server)->Shutdown();
  server->reset();
  return 0;
}
