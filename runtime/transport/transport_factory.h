// transport_factory.h - the data plane a node uses: verbs when an RDMA
// device is there (or demanded), TCP otherwise (PAGEWIRE_TRANSPORT).
#ifndef PAGEWIRE_RUNTIME_TRANSPORT_TRANSPORT_FACTORY_H_
#define PAGEWIRE_RUNTIME_TRANSPORT_TRANSPORT_FACTORY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/transport/transport.h"
#include "runtime/transport/verbs/verbs_transport.h"

namespace pagewire {

struct TransportChoice {
  // "auto" (verbs if a device is there, else TCP), "verbs" (fail without a
  // device) or "tcp".
  std::string kind = "auto";
  int rank = 0;
  std::string host = "127.0.0.1";  // TCP: the address bound and advertised
  std::string secret;  // TCP: the job's secret, proved on every connection
  int nranks = 0;      // TCP: the job's size (0: not known)
};

struct ChosenTransport {
  std::unique_ptr<Transport> transport;
  // The same transport when it is verbs (its queue pairs are per peer and
  // published through the control plane); null for TCP.
  VerbsTransport* verbs = nullptr;
  // With "auto" and no usable device: why not verbs, for the log.
  std::string why_not_verbs;
};

// Makes the transport `choice` asks for. "verbs" without a device is an
// error naming the variable and the fix.
absl::StatusOr<ChosenTransport> MakeTransport(const TransportChoice& choice);

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_TRANSPORT_TRANSPORT_FACTORY_H_
