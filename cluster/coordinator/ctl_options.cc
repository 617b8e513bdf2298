// ctl_options.cc - ParseCtlOptions.
#include "cluster/coordinator/ctl_options.h"

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace pagewire::cluster {
namespace {

absl::Status Usage(const std::string& what) {
  return absl::InvalidArgumentError(what);
}

}  // namespace

absl::StatusOr<CtlOptions> ParseCtlOptions(const std::vector<std::string>& args) {
  CtlOptions o;
  if (const char* v = std::getenv("PAGEWIRE_COORDINATOR")) o.coordinator = v;
  if (const char* v = std::getenv("PAGEWIRE_CLUSTER_ID")) o.cluster_id = v;
  std::vector<std::string> words;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string arg = args[i];
    if (arg == "--help" || arg == "-h") return absl::CancelledError("help");
    if (arg.rfind("--", 0) != 0) {
      words.push_back(arg);
      continue;
    }
    if (i + 1 >= args.size()) return Usage(absl::StrCat(arg, " needs a value"));
    const std::string value = args[++i];
    if (arg == "--coordinator") {
      o.coordinator = value;
    } else if (arg == "--cluster-id") {
      o.cluster_id = value;
    } else if (arg == "--secret-file") {
      o.secret_file = value;
    } else if (arg == "--reason") {
      o.reason = value;
    } else {
      return Usage(absl::StrCat("unknown flag ", arg, "; see --help"));
    }
  }
  if (words.empty()) return Usage("no command; give status or declare-dead");
  o.command = words[0];
  if (o.command == "status") {
    if (words.size() != 1) return Usage("status takes no arguments");
  } else if (o.command == "declare-dead") {
    if (words.size() != 2 || !absl::SimpleAtoi(words[1], &o.rank) ||
        o.rank < 0) {
      return Usage("declare-dead needs one rank number, e.g. declare-dead 3");
    }
    if (o.reason.empty()) o.reason = "declared dead by an operator";
    o.reason = absl::StrCat("pagewire-ctl: ", o.reason);
  } else {
    return Usage(absl::StrCat("unknown command '", o.command,
                              "'; give status or declare-dead"));
  }
  if (o.coordinator.empty()) {
    return Usage("no coordinator: pass --coordinator HOST:PORT or set "
                 "PAGEWIRE_COORDINATOR");
  }
  return o;
}

}  // namespace pagewire::cluster
