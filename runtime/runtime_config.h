// runtime_config.h - what a node is started with: the job (rank, ranks,
// coordinator), the global range and the tuning variables, read from the
// PAGEWIRE_* environment (cluster/launcher/README.md lists them).
#ifndef PAGEWIRE_RUNTIME_RUNTIME_CONFIG_H_
#define PAGEWIRE_RUNTIME_RUNTIME_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/control/tls.h"
#include "runtime/fault/fault_service.h"
#include "runtime/fault/userfaultfd.h"

namespace pagewire {

struct RuntimeConfig {
  // Every process of a job maps global memory here, so pointers stored in
  // global memory are valid on every node. 32 TiB up: clear of the heap,
  // below the usual mmap and stack areas.
  uintptr_t global_base = uintptr_t{0x2000} << 32;
  uint64_t global_size = uint64_t{1} << 40;  // 1 TiB of address space
  UffdSyscalls syscalls = UffdSyscalls::Kernel();

  // The job (PAGEWIRE_RANK, PAGEWIRE_NRANKS, PAGEWIRE_COORDINATOR, ...).
  // An empty coordinator means a job of one.
  int rank = 0;
  int nranks = 1;
  std::string coordinator;  // host:port
  // Rank 0 hosts the coordinator unless it runs standalone
  // (PAGEWIRE_COORDINATOR_EXTERNAL=1, pagewire-coordinator).
  bool host_coordinator = true;
  std::string cluster_id = "pagewire";
  std::string secret;
  // PAGEWIRE_TLS_CERT/_KEY/_CA: the control plane over TLS (control/tls.h).
  control::TlsFiles tls;
  std::string host = "127.0.0.1";  // this rank's data-plane address
  // PAGEWIRE_TRANSPORT: "auto" (verbs if an RDMA device is there, else TCP),
  // "verbs" (fail without a device) or "tcp".
  std::string transport = "auto";
  absl::Duration heartbeat_interval = absl::Milliseconds(100);
  // A rank silent this long is suspected (its faults wait, nothing fails).
  absl::Duration lease = absl::Seconds(3);  // PAGEWIRE_LEASE_MS
  // Opt-in: a rank silent this long is declared dead (infinite: never).
  absl::Duration dead_after = absl::InfiniteDuration();  // PAGEWIRE_DEAD_AFTER_MS
  // PAGEWIRE_SPIN_POLLS: on verbs, how often the fault loop polls the
  // completion queue for an outstanding READ before it sleeps (0: never).
  uint32_t spin_polls = FaultServiceConfig::kDefaultSpinPolls;
  // PAGEWIRE_IDLE_POLLS: how often the fault loop, out of work, polls for
  // the next fault before it sleeps (0: never; costs a CPU while it polls).
  uint32_t idle_polls = 0;
  // PAGEWIRE_READAHEAD: a read fault on another rank's page also requests
  // this many following pages of the same home (0: none).
  int readahead_pages = 1;
  static constexpr int kMaxReadAheadPages = 64;
  // PAGEWIRE_PUSH: subscribe to pages that homes write every epoch, so they
  // arrive with the barrier instead of by a fault after it (0: off).
  bool push = true;
  // PAGEWIRE_CHECK: audit every drop of a cached copy for lost writes and
  // end the process at the first (Coherence::BeforeDrop); on by default in
  // builds with --config=debug (PAGEWIRE_DEBUG_CHECKS), off otherwise.
#ifdef PAGEWIRE_DEBUG_CHECKS
  bool check = true;
#else
  bool check = false;
#endif

  // Reads the PAGEWIRE_* variables over the defaults; names the variable
  // and the fix for each bad value.
  static absl::StatusOr<RuntimeConfig> FromEnvironment();
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_RUNTIME_CONFIG_H_
