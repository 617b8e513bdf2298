// launcher_args_fuzzer.cc - pagewire-run's command line
// (ParseLaunchOptions, then ValidateNetnsPrefix and the environment each
// rank gets) and the network-namespace address map it reads
// (ReadNetnsHosts), on input split at NUL into argv words; the first byte
// chooses which. Words are steered towards the known options.
//
// Beyond "no crash": accepted options are within their documented ranges
// (1..kMaxRanks ranks, a port in 1..65535, a program to run), and an
// accepted address map has one address per rank.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cluster/launcher/bootstrap_env.h"
#include "cluster/launcher/launch_options.h"
#include "tests/fuzz/fuzz_input.h"

namespace pagewire::fuzz {
namespace {

using launcher::kMaxRanks;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "launcher_args_fuzzer: %s\n", what.c_str());
  std::abort();
}

const char* const kWords[] = {
    "-n", "--netns", "--coordinator-port", "--secret", "--grace-ms",
    "--bind-to", "--", "-h", "core", "none", "4", "./prog", "-n4",
    "--netns=", "--coordinator-port=", "--grace-ms=", "4096", "65535"};

void LaunchOptions(const std::vector<std::string>& args) {
  auto o = launcher::ParseLaunchOptions(args);
  if (!o.ok() || o->help) return;
  if (o->nranks < 1 || o->nranks > kMaxRanks || o->argv.empty() ||
      o->coordinator_port < 0 || o->coordinator_port > 65535 ||
      o->grace_ms < 0 || (o->secret && o->secret->empty())) {
    Fail("ParseLaunchOptions accepted out-of-range options");
  }
  if (!o->netns_prefix.empty() &&
      !launcher::ValidateNetnsPrefix(o->netns_prefix).ok()) {
    Fail("ParseLaunchOptions accepted a bad --netns prefix");
  }
  // Each rank's environment, as the launcher builds it.
  launcher::BootstrapEnv env;
  env.nranks = o->nranks;
  env.hosts.assign(o->nranks, "127.0.0.1");
  char* base[] = {const_cast<char*>("PAGEWIRE_RANK=9"),
                  const_cast<char*>("PATH=/bin"), nullptr};
  (void)env.EnvironmentFor(o->nranks - 1, base);
}

// The map's text in a memfd, read through /proc/self/fd as a file.
void NetnsHosts(int nranks, const std::string& text) {
  const int fd = memfd_create("netns-hosts", MFD_CLOEXEC);
  if (fd < 0) return;
  if (write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size())) {
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    auto hosts = launcher::ReadNetnsHosts(path, "fz", nranks);
    if (hosts.ok()) {
      if (static_cast<int>(hosts->size()) != nranks) {
        Fail("ReadNetnsHosts gave a map of the wrong size");
      }
      for (const std::string& h : *hosts) {
        if (h.empty()) Fail("ReadNetnsHosts accepted a map with a hole");
      }
    }
  }
  close(fd);
}

}  // namespace
}  // namespace pagewire::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pagewire::fuzz;
  FuzzInput in(data, size);
  const uint8_t which = in.U8();
  if (which & 1) {
    NetnsHosts(1 + in.U8() % 8, in.Rest());
  } else {
    LaunchOptions(SplitWords(in.Rest(), kWords));
  }
  return 0;
}
