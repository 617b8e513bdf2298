// coordinator_server.h - a Coordinator on a gRPC port: embedded in rank 0
// by the runtime, or run by the standalone pagewire-coordinator binary.
//
// Threads: Start() and the destructor from the owner; port()/address() and
// coordinator() from any thread. Shutdown() may be called from any thread
// except a gRPC callback of this server; it is idempotent and the
// destructor calls it.
#ifndef PAGEWIRE_RUNTIME_CONTROL_COORDINATOR_SERVER_H_
#define PAGEWIRE_RUNTIME_CONTROL_COORDINATOR_SERVER_H_

#include <memory>
#include <string>

#include <grpcpp/server.h>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "runtime/control/coordinator.h"

namespace pagewire::control {

// Splits "host:port" (or "[v6addr]:port"); port 0 asks for an ephemeral
// port. INVALID_ARGUMENT naming the problem for anything else.
absl::StatusOr<std::pair<std::string, int>> ParseHostPort(
    const std::string& address);

class CoordinatorServer {
 public:
  // Listens on `listen_address` ("host:port"; port 0 = pick a free port).
  // UNAVAILABLE if the address cannot be bound (in use, not local).
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(
      CoordinatorConfig config, const std::string& listen_address);
  ~CoordinatorServer();

  CoordinatorServer(const CoordinatorServer&) = delete;
  CoordinatorServer& operator=(const CoordinatorServer&) = delete;

  // The bound port (the real one when 0 was asked for).
  int port() const { return port_; }
  // "host:port" with the bound port, for ranks to dial.
  std::string address() const;

  Coordinator& coordinator() { return *coordinator_; }

  // Ends watch streams and pending barriers, then stops the server.
  void Shutdown();

 private:
  CoordinatorServer() = default;

  std::string host_;
  int port_ = 0;
  // Declared before server_: the server must be destroyed first, because
  // its callbacks point into the coordinator.
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<grpc::Server> server_;
  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

}  // namespace pagewire::control

#endif  // PAGEWIRE_RUNTIME_CONTROL_COORDINATOR_SERVER_H_
