// transport_factory.cc - verbs if it can, TCP otherwise.
#include "runtime/transport/transport_factory.h"

#include "absl/strings/str_cat.h"
#include "runtime/transport/tcp/tcp_transport.h"

namespace pagewire {

absl::StatusOr<ChosenTransport> MakeTransport(const TransportChoice& choice) {
  ChosenTransport chosen;
  if (choice.kind != "tcp") {
    VerbsTransportConfig vc;
    vc.rank = choice.rank;
    absl::StatusOr<std::unique_ptr<VerbsTransport>> verbs =
        VerbsTransport::Create(vc);
    if (verbs.ok()) {
      chosen.verbs = verbs->get();
      chosen.transport = *std::move(verbs);
      return chosen;
    }
    if (choice.kind == "verbs") {
      return absl::Status(
          verbs.status().code(),
          absl::StrCat("PAGEWIRE_TRANSPORT=verbs but ", verbs.status().message(),
                       "; unset PAGEWIRE_TRANSPORT to fall back to TCP"));
    }
    chosen.why_not_verbs = std::string(verbs.status().message());
  }
  TcpTransportConfig tc;
  tc.rank = choice.rank;
  tc.bind_host = choice.host;
  tc.advertise_host = choice.host;
  tc.secret = choice.secret;
  tc.nranks = choice.nranks;
  // Every peer may be in its handshake at once when the job starts.
  tc.max_unauthenticated = 64 + choice.nranks;
  absl::StatusOr<std::unique_ptr<TcpTransport>> tcp = TcpTransport::Create(tc);
  if (!tcp.ok()) return tcp.status();
  chosen.transport = *std::move(tcp);
  return chosen;
}

}  // namespace pagewire
