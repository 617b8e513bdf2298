// pagewire_ctl.cc - the operator's tool for a running Pagewire job.
//
//   pagewire-ctl [--coordinator HOST:PORT] [--cluster-id ID]
//                [--secret-file FILE] status
//   pagewire-ctl [...] declare-dead RANK [--reason TEXT]
//
// `status` prints every rank's state (ALIVE, SUSPECT, DEAD, LEFT), how long
// it has been silent, and why it is suspected or gone. `declare-dead` is an
// operator's word that a rank is dead (its host is gone for good, say):
// faults that need it fail at once on every rank, everything else carries
// on. Silence alone only makes a rank SUSPECT, so a rank on a host that
// vanished without a trace is ended this way (or by the process manager).
//
// The coordinator, cluster id and secret default to PAGEWIRE_COORDINATOR,
// PAGEWIRE_CLUSTER_ID (else "pagewire") and PAGEWIRE_SECRET. Exit status:
// 0 done, 1 the coordinator refused or could not be reached, 2 bad usage.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "cluster/coordinator/ctl_options.h"
#include "cluster/coordinator/job_secret.h"
#include "proto/control_plane.grpc.pb.h"
#include "runtime/control/credentials.h"
#include "runtime/control/grpc_status.h"
#include "runtime/control/tls.h"

namespace {

namespace proto = pagewire::proto;
using pagewire::cluster::CtlOptions;

constexpr char kUsage[] =
    "usage: pagewire-ctl [--coordinator HOST:PORT] [--cluster-id ID]\n"
    "                    [--secret-file FILE] status\n"
    "       pagewire-ctl [...] declare-dead RANK [--reason TEXT]\n";
// The operator waits this long for an answer; nothing in the job does.
constexpr absl::Duration kRpcDeadline = absl::Seconds(10);

std::unique_ptr<grpc::ClientContext> Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + kRpcDeadline));
  return ctx;
}

int Status(proto::Membership::Stub& stub, const CtlOptions& o,
           const std::string& secret) {
  proto::JobStatusRequest request;
  request.set_cluster_id(o.cluster_id);
  absl::StatusOr<proto::Proof> proof = pagewire::control::Prove(
      stub, Context, secret, "JobStatus", o.cluster_id, "");
  if (!proof.ok()) {
    std::fprintf(stderr, "pagewire-ctl: %s\n", proof.status().ToString().c_str());
    return 1;
  }
  *request.mutable_proof() = *proof;
  proto::JobStatusReply reply;
  auto ctx = Context();
  grpc::Status st = stub.JobStatus(ctx.get(), request, &reply);
  if (!st.ok()) {
    std::fprintf(stderr, "pagewire-ctl: %s\n",
                 pagewire::control::FromGrpcStatus(st, "JobStatus")
                     .ToString().c_str());
    return 1;
  }
  std::printf("epoch %llu, lease %u ms, dead after: %s\n",
              static_cast<unsigned long long>(reply.view().epoch()),
              reply.lease_ms(),
              reply.dead_after_ms() == 0
                  ? "never (silence only makes a rank SUSPECT)"
                  : absl::StrCat(reply.dead_after_ms(), " ms of silence").c_str());
  for (const proto::RankStatus& r : reply.ranks()) {
    std::string line = absl::StrFormat(
        "rank %d %-8s", r.rank(), proto::Member::State_Name(r.state()));
    if (r.state() == proto::Member::ALIVE ||
        r.state() == proto::Member::SUSPECT) {
      absl::StrAppendFormat(&line, " silent %d ms, %d heartbeats%s",
                            r.silent_ms(), r.heartbeats(),
                            r.watching() ? "" : ", no control connection");
    }
    if (!r.reason().empty()) absl::StrAppend(&line, " (", r.reason(), ")");
    std::printf("%s\n", line.c_str());
  }
  return 0;
}

int DeclareDead(proto::Membership::Stub& stub, const CtlOptions& o,
                const std::string& secret) {
  proto::DeclareDeadRequest request;
  request.set_cluster_id(o.cluster_id);
  request.set_rank(o.rank);
  request.set_reason(o.reason);
  absl::StatusOr<proto::Proof> proof = pagewire::control::Prove(
      stub, Context, secret, "DeclareDead", o.cluster_id,
      pagewire::control::DeclareDeadDetail(o.rank, o.reason));
  if (!proof.ok()) {
    std::fprintf(stderr, "pagewire-ctl: %s\n", proof.status().ToString().c_str());
    return 1;
  }
  *request.mutable_proof() = *proof;
  proto::DeclareDeadReply reply;
  auto ctx = Context();
  grpc::Status st = stub.DeclareDead(ctx.get(), request, &reply);
  if (!st.ok()) {
    std::fprintf(stderr, "pagewire-ctl: %s\n",
                 pagewire::control::FromGrpcStatus(st, "DeclareDead")
                     .ToString().c_str());
    return 1;
  }
  if (reply.declared()) {
    std::printf("rank %d declared DEAD at epoch %llu\n", o.rank,
                static_cast<unsigned long long>(reply.epoch()));
  } else {
    std::printf("rank %d was already DEAD or LEFT; nothing changed\n", o.rank);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::StatusOr<CtlOptions> o = pagewire::cluster::ParseCtlOptions(
      std::vector<std::string>(argv + 1, argv + argc));
  if (!o.ok()) {
    if (absl::IsCancelled(o.status())) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    std::fprintf(stderr, "pagewire-ctl: %s\n%s",
                 std::string(o.status().message()).c_str(), kUsage);
    return 2;
  }
  absl::StatusOr<std::string> secret =
      pagewire::cluster::ReadJobSecret(o->secret_file ? &*o->secret_file : nullptr);
  if (!secret.ok()) {
    std::fprintf(stderr, "pagewire-ctl: %s\n",
                 std::string(secret.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<pagewire::control::TlsFiles> tls =
      pagewire::control::TlsFiles::FromEnvironment();
  grpc::ChannelArguments args;
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      tls.ok() ? pagewire::control::ChannelCredentials(*tls, args)
               : tls.status();
  if (!credentials.ok()) {
    std::fprintf(stderr, "pagewire-ctl: %s\n",
                 std::string(credentials.status().message()).c_str());
    return 2;
  }
  auto channel = grpc::CreateCustomChannel(o->coordinator, *credentials, args);
  auto stub = proto::Membership::NewStub(channel);
  return o->command == "status" ? Status(*stub, *o, *secret)
                                : DeclareDead(*stub, *o, *secret);
}
