// tls.h - optional TLS for the control plane (gRPC), from three PEM files:
//   PAGEWIRE_TLS_CERT  this process's certificate (chain)
//   PAGEWIRE_TLS_KEY   its private key
//   PAGEWIRE_TLS_CA    the CA that signed every certificate of the job
// All three or none. With them, the coordinator serves TLS only and asks
// every caller for a certificate the CA signed (mutual TLS), and every
// caller checks the coordinator's certificate against the CA and the host
// it dials (its subjectAltName must name that host or address; or set
// PAGEWIRE_TLS_SERVER_NAME to the name the certificate carries). Without
// them the control plane runs over plain TCP and still never sends the
// job's secret (credentials.h).
#ifndef PAGEWIRE_RUNTIME_CONTROL_TLS_H_
#define PAGEWIRE_RUNTIME_CONTROL_TLS_H_

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"

namespace pagewire::control {

struct TlsFiles {
  std::string cert;         // paths
  std::string key;
  std::string ca;
  std::string server_name;  // optional: the name the coordinator's
                            // certificate carries, if not its host
  bool enabled() const { return !cert.empty(); }

  // From the PAGEWIRE_TLS_* variables: none set is plain TCP; some but not
  // all is an error naming what is missing.
  static absl::StatusOr<TlsFiles> FromEnvironment();
};

// Credentials for a channel to the coordinator (insecure when `tls` is not
// enabled), with `args` completed for the server-name override. An error
// names the file that could not be read.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const TlsFiles& tls, grpc::ChannelArguments& args);

// Credentials the coordinator listens with.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsFiles& tls);

}  // namespace pagewire::control

#endif  // PAGEWIRE_RUNTIME_CONTROL_TLS_H_
