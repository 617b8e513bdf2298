// runtime_config_fuzzer.cc - a rank's configuration from its environment
// (RuntimeConfig::FromEnvironment, runtime/runtime_config.h): the input
// sets or unsets each PAGEWIRE_* variable, its value steered towards the
// shapes the parsers expect (numbers, suffixes, hex) or left as bytes.
//
// Beyond "no crash": an accepted configuration keeps the documented
// ranges: 0 <= rank < nranks, read-ahead 0..kMaxReadAheadPages, a positive
// lease, heartbeats within the lease, and a deadline no shorter than it.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "runtime/runtime_config.h"
#include "tests/fuzz/fuzz_input.h"

namespace pagewire::fuzz {
namespace {

const char* const kVariables[] = {
    "PAGEWIRE_GLOBAL_BASE",   "PAGEWIRE_GLOBAL_SIZE",
    "PAGEWIRE_COORDINATOR",   "PAGEWIRE_RANK",
    "PAGEWIRE_NRANKS",        "PAGEWIRE_CLUSTER_ID",
    "PAGEWIRE_SECRET",        "PAGEWIRE_HOST",
    "PAGEWIRE_TRANSPORT",     "PAGEWIRE_COORDINATOR_EXTERNAL",
    "PAGEWIRE_SPIN_POLLS",    "PAGEWIRE_IDLE_POLLS",
    "PAGEWIRE_SERVICE_SLICE_US", "PAGEWIRE_READAHEAD",
    "PAGEWIRE_PUSH",          "PAGEWIRE_CHECK",
    "PAGEWIRE_LEASE_MS",      "PAGEWIRE_DEAD_AFTER_MS"};

const char* const kShapes[] = {"0", "1", "4", "-1", "0x", "0x200000000000",
                               "1T", "64G", "4096", "2147483647",
                               "18446744073709551615", "tcp", "verbs", "auto",
                               "127.0.0.1:7070", "", " 1", "1k"};

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "runtime_config_fuzzer: %s\n", what.c_str());
  std::abort();
}

std::string Value(FuzzInput& in) {
  const uint8_t shape = in.U8();
  std::string v;
  if (shape < std::size(kShapes)) v = kShapes[shape];
  v += in.String(24);
  // setenv takes a C string: the value ends at its first NUL.
  return v.substr(0, v.find('\0'));
}

}  // namespace
}  // namespace pagewire::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pagewire;
  using namespace pagewire::fuzz;
  FuzzInput in(data, size);
  for (const char* name : kVariables) {
    if (in.Bool()) {
      setenv(name, Value(in).c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
  absl::StatusOr<RuntimeConfig> c = RuntimeConfig::FromEnvironment();
  if (!c.ok()) return 0;
  if (c->rank < 0 || c->rank >= c->nranks) Fail("rank outside 0..nranks-1");
  if (c->readahead_pages < 0 ||
      c->readahead_pages > RuntimeConfig::kMaxReadAheadPages) {
    Fail("read-ahead outside its range");
  }
  if (c->lease <= absl::ZeroDuration()) Fail("a lease that is not positive");
  if (c->heartbeat_interval <= absl::ZeroDuration() ||
      c->heartbeat_interval > c->lease) {
    Fail("heartbeats that do not fit in the lease");
  }
  if (c->dead_after < c->lease) Fail("a deadline shorter than the lease");
  if (c->transport != "tcp" && c->transport != "verbs" && c->transport != "auto") {
    Fail("an unknown transport");
  }
  return 0;
}
