// coordinator_server.cc - CoordinatorServer: grpc::Server set-up and
// teardown around a Coordinator.
#include "runtime/control/coordinator_server.h"

#include <cstdlib>
#include <limits>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "runtime/base/log.h"

namespace pagewire::control {

absl::StatusOr<std::pair<std::string, int>> ParseHostPort(
    const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "address '", address,
        "' is not host:port; write e.g. 127.0.0.1:7070, or 0.0.0.0:0 for any "
        "interface and a free port"));
  }
  std::string host = address.substr(0, colon);
  if (host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = -1;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "address '", address, "': port '", address.substr(colon + 1),
        "' is not a number in 0..65535 (0 picks a free port)"));
  }
  return std::make_pair(host, port);
}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    CoordinatorConfig config, const std::string& listen_address) {
  absl::StatusOr<std::pair<std::string, int>> hp = ParseHostPort(listen_address);
  if (!hp.ok()) return hp.status();
  absl::StatusOr<std::unique_ptr<Coordinator>> coordinator =
      Coordinator::Create(std::move(config));
  if (!coordinator.ok()) return coordinator.status();

  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      ServerCredentials((*coordinator)->config().tls);
  if (!credentials.ok()) {
    (*coordinator)->Shutdown();
    return credentials.status();
  }

  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  server->host_ = hp->first;
  server->coordinator_ = *std::move(coordinator);

  grpc::ServerBuilder builder;
  // gRPC binds with SO_REUSEPORT by default, so a second coordinator on the
  // same port would start and split the job's connections between the two.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // A rank's connection closing is evidence that its process ended, so the
  // server never closes one on a timer: no keepalive pings (by default a
  // server pings after two idle hours and drops a connection whose process
  // is stopped, say in a debugger, and cannot answer).
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             std::numeric_limits<int>::max());
  int bound_port = 0;
  builder.AddListeningPort(listen_address, *credentials, &bound_port);
  builder.RegisterService(server->coordinator_->membership_service());
  builder.RegisterService(server->coordinator_->dataspaces_service());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || bound_port == 0) {
    // The coordinator is destroyed with `server`; nothing was served.
    server->coordinator_->Shutdown();
    server->server_.reset();
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", listen_address,
        ": the port is in use or the host is not an address of this machine; "
        "pick another port (0 picks a free one) or another host"));
  }
  server->port_ = bound_port;
  Log("coordinator: listening on %s%s for %d ranks (cluster '%s')",
      server->address(),
      server->coordinator_->config().tls.enabled() ? " (TLS, client "
                                                     "certificates required)"
                                                   : "",
      server->coordinator_->config().nranks,
      server->coordinator_->config().cluster_id);
  return server;
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

std::string CoordinatorServer::address() const {
  if (host_.find(':') != std::string::npos) {
    return absl::StrCat("[", host_, "]:", port_);
  }
  return absl::StrCat(host_, ":", port_);
}

void CoordinatorServer::Shutdown() {
  absl::MutexLock l(&shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  // Order matters: the coordinator first ends the calls that wait on it
  // (watch streams, barriers), so the server's Shutdown, which waits for
  // every call in flight, returns.
  coordinator_->Shutdown();
  if (server_ != nullptr) {
    server_->Shutdown();
    server_->Wait();
    server_.reset();
  }
}

}  // namespace pagewire::control
