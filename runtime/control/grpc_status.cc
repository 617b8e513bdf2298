// grpc_status.cc - absl::Status <-> grpc::Status.
#include "runtime/control/grpc_status.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace pagewire::control {

static_assert(static_cast<int>(absl::StatusCode::kUnavailable) ==
                  static_cast<int>(grpc::StatusCode::UNAVAILABLE),
              "absl and gRPC must share the canonical status codes");
static_assert(static_cast<int>(absl::StatusCode::kUnauthenticated) ==
                  static_cast<int>(grpc::StatusCode::UNAUTHENTICATED),
              "absl and gRPC must share the canonical status codes");

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view what) {
  if (status.ok()) return absl::OkStatus();
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  // Transport-level failures come from gRPC, not from the coordinator, and
  // their messages ("failed to connect to all addresses") do not say which
  // call or what to do; add both.
  if (!what.empty() && (code == absl::StatusCode::kUnavailable ||
                        code == absl::StatusCode::kDeadlineExceeded) &&
      status.error_message().find("rank") == std::string::npos) {
    return absl::Status(
        code, absl::StrCat(what, ": ", status.error_message(),
                           " (is the coordinator running and reachable?)"));
  }
  return absl::Status(code, status.error_message());
}

}  // namespace pagewire::control
