// grpc_status.h - converts between absl::Status (the runtime's error type)
// and grpc::Status (what travels on the wire).
//
// The canonical codes are the same numbers in both libraries, so a code
// survives the round trip unchanged and a client sees exactly the code and
// message the coordinator produced. Any thread may call these.
#ifndef PAGEWIRE_RUNTIME_CONTROL_GRPC_STATUS_H_
#define PAGEWIRE_RUNTIME_CONTROL_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace pagewire::control {

grpc::Status ToGrpcStatus(const absl::Status& status);

// `what` names the call for the caller's log ("Join", "Barrier 7"); it is
// prefixed to the message only for errors raised by gRPC itself (transport
// failures, deadlines), whose messages do not say which call failed.
absl::Status FromGrpcStatus(const grpc::Status& status,
                            absl::string_view what = "");

}  // namespace pagewire::control

#endif  // PAGEWIRE_RUNTIME_CONTROL_GRPC_STATUS_H_
