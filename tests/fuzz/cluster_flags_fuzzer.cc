// cluster_flags_fuzzer.cc - the command lines of pagewire-coordinator
// (ParseCoordinatorFlags, CoordinatorConfigFromFlags) and pagewire-ctl
// (ParseCtlOptions, with the secret then read as main() reads it), and
// ParseHostPort, on arguments made from the input: its bytes split at NUL
// into argv words, the first byte choosing the tool. Words are steered
// towards the known flags so the value parsers are reached.
//
// Beyond "no crash": a configuration that is accepted passes
// CoordinatorConfig::Validate, and a parsed host:port has a port in
// 0..65535.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cluster/coordinator/coordinator_flags.h"
#include "cluster/coordinator/ctl_options.h"
#include "cluster/coordinator/job_secret.h"
#include "runtime/control/coordinator_server.h"
#include "tests/fuzz/fuzz_input.h"

namespace pagewire::fuzz {
namespace {

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "cluster_flags_fuzzer: %s\n", what.c_str());
  std::abort();
}

const char* const kWords[] = {
    "--listen", "--nranks", "--cluster-id", "--secret-file", "--global-base",
    "--global-size", "--lease-ms", "--heartbeat-ms", "--dead-after-ms",
    "--coordinator", "--reason", "status", "declare-dead", "--help",
    "127.0.0.1:0", "[::1]:7070", "4", "0x200000000000", "1T", "64G",
    "/dev/null", "-1", "2147483648", "--listen=", "--nranks="};

bool ReadableWithoutBlocking(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return true;  // an error, at once
  return S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) || path == "/dev/null" ||
         path == "/dev/zero" || path == "/dev/full" || path == "/dev/urandom";
}

}  // namespace
}  // namespace pagewire::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // What the tools fall back on, as a job's environment would set them.
  setenv("PAGEWIRE_SECRET", "fuzz-secret", 1);
  setenv("PAGEWIRE_COORDINATOR", "127.0.0.1:7070", 1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pagewire;
  using namespace pagewire::fuzz;
  FuzzInput in(data, size);
  const uint8_t tool = in.U8() % 3;
  const std::vector<std::string> args = SplitWords(in.Rest(), kWords);
  if (tool == 0) {
    auto flags = cluster::ParseCoordinatorFlags(args);
    if (!flags.ok()) return 0;
    auto config = cluster::CoordinatorConfigFromFlags(*flags);
    if (config.ok() && !config->first.Validate().ok()) {
      Fail("pagewire-coordinator accepted a configuration that does not validate");
    }
  } else if (tool == 1) {
    auto o = cluster::ParseCtlOptions(args);
    if (!o.ok()) return 0;
    if (o->command != "status" && o->command != "declare-dead") {
      Fail("pagewire-ctl accepted command '" + o->command + "'");
    }
    // As pagewire-ctl's main() does next; only from files and devices that
    // cannot block the fuzzer (a FIFO or a terminal would).
    if (!o->secret_file || ReadableWithoutBlocking(*o->secret_file)) {
      (void)cluster::ReadJobSecret(o->secret_file ? &*o->secret_file : nullptr);
    }
  } else {
    for (const std::string& a : args) {
      auto hp = control::ParseHostPort(a);
      if (hp.ok() && (hp->second < 0 || hp->second > 65535)) {
        Fail("ParseHostPort('" + a + "') gave port " + std::to_string(hp->second));
      }
    }
  }
  return 0;
}
