// launch_options.cc - strict parsing of pagewire-run's flags.
#include "cluster/launcher/launch_options.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace pagewire {
namespace launcher {
namespace {

constexpr int kMaxPrefixLength = 32;

absl::Status Invalid(const std::string& message) {
  return absl::InvalidArgumentError(message);
}

absl::StatusOr<int> ParseInt(const std::string& flag, const std::string& value,
                             int min, int max) {
  int v = 0;
  if (!absl::SimpleAtoi(value, &v)) {
    return Invalid(absl::StrFormat("%s needs an integer, got '%s'", flag,
                                   value));
  }
  if (v < min || v > max) {
    return Invalid(absl::StrFormat("%s must be between %d and %d, got %d",
                                   flag, min, max, v));
  }
  return v;
}

}  // namespace

std::string Usage() {
  return absl::StrFormat(
      "usage: pagewire-run -n N [options] [--] program [args...]\n"
      "\n"
      "Starts N ranks of program on this machine, each with the Pagewire\n"
      "bootstrap environment (PAGEWIRE_RANK, PAGEWIRE_NRANKS,\n"
      "PAGEWIRE_COORDINATOR, PAGEWIRE_CLUSTER_ID, PAGEWIRE_SECRET,\n"
      "PAGEWIRE_HOST). Output lines are prefixed with \"[rank] \".\n"
      "\n"
      "options:\n"
      "  -n N                    number of ranks (1..%d), required\n"
      "  --netns PREFIX          run rank i in network namespace PREFIX<i>\n"
      "                          (made by cluster/netns/netns-hosts.sh up)\n"
      "  --coordinator-port P    port of rank 0's coordinator (default: a\n"
      "                          free port)\n"
      "  --secret S              job secret (default: random per job)\n"
      "  --grace-ms MS           shutdown grace between SIGTERM and SIGKILL\n"
      "                          when the job ends early (default %d)\n"
      "  --bind-to core|none     core: bind rank i (all its threads) to the\n"
      "                          i-th CPU this launcher may use, round robin;\n"
      "                          none: no binding (default)\n"
      "  -h, --help              this text\n"
      "\n"
      "Exit status: 0 if every rank exits 0; otherwise the first failing\n"
      "rank's status (its exit code, or 128+signal); 2 for bad usage; 125 if\n"
      "pagewire-run itself fails; 127 if a rank cannot be started.\n",
      kMaxRanks, kDefaultGraceMs);
}

absl::Status ValidateNetnsPrefix(const std::string& prefix) {
  if (prefix.empty() || prefix.size() > kMaxPrefixLength) {
    return Invalid(absl::StrFormat(
        "--netns prefix '%s' must be 1 to %d characters", prefix,
        kMaxPrefixLength));
  }
  for (char c : prefix) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    if (!ok) {
      return Invalid(absl::StrFormat(
          "--netns prefix '%s' may only contain letters, digits, '_', '.' "
          "and '-'",
          prefix));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LaunchOptions> ParseLaunchOptions(
    const std::vector<std::string>& args) {
  LaunchOptions options;
  bool have_n = false;
  size_t i = 0;
  // Returns the value of an option given as "--flag value" or "--flag=value".
  auto value_of = [&](const std::string& arg, const std::string& flag,
                      std::string* value) -> absl::Status {
    if (arg.size() > flag.size()) {  // "--flag=value" or "-nVALUE"
      size_t skip = flag.size() + (arg[flag.size()] == '=' ? 1 : 0);
      *value = arg.substr(skip);
      return absl::OkStatus();
    }
    if (i + 1 >= args.size()) {
      return Invalid(absl::StrFormat("%s needs a value", flag));
    }
    *value = args[++i];
    return absl::OkStatus();
  };
  auto is = [](const std::string& arg, const std::string& flag) {
    return arg == flag || absl::StartsWith(arg, flag + "=");
  };

  for (; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg.empty() || arg[0] != '-' || arg == "-") break;  // the program
    std::string value;
    if (arg == "-h" || arg == "--help") {
      options.help = true;
      return options;
    } else if (absl::StartsWith(arg, "-n") && !absl::StartsWith(arg, "--")) {
      if (auto s = value_of(arg, "-n", &value); !s.ok()) return s;
      auto n = ParseInt("-n", value, 1, kMaxRanks);
      if (!n.ok()) return n.status();
      options.nranks = *n;
      have_n = true;
    } else if (is(arg, "--netns")) {
      if (auto s = value_of(arg, "--netns", &value); !s.ok()) return s;
      if (auto s = ValidateNetnsPrefix(value); !s.ok()) return s;
      options.netns_prefix = value;
    } else if (is(arg, "--coordinator-port")) {
      if (auto s = value_of(arg, "--coordinator-port", &value); !s.ok()) {
        return s;
      }
      auto port = ParseInt("--coordinator-port", value, 1, 65535);
      if (!port.ok()) return port.status();
      options.coordinator_port = *port;
    } else if (is(arg, "--secret")) {
      if (auto s = value_of(arg, "--secret", &value); !s.ok()) return s;
      if (value.empty()) {
        return Invalid("--secret must not be empty (omit it for a random "
                       "per-job secret)");
      }
      options.secret = value;
    } else if (is(arg, "--grace-ms")) {
      if (auto s = value_of(arg, "--grace-ms", &value); !s.ok()) return s;
      auto ms = ParseInt("--grace-ms", value, 0, INT_MAX);
      if (!ms.ok()) return ms.status();
      options.grace_ms = *ms;
    } else if (is(arg, "--bind-to")) {
      if (auto s = value_of(arg, "--bind-to", &value); !s.ok()) return s;
      if (value != "core" && value != "none") {
        return Invalid(absl::StrFormat(
            "--bind-to %s is not a binding; use core (rank i on the i-th "
            "usable CPU) or none",
            value));
      }
      options.bind_to_core = value == "core";
    } else {
      return Invalid(absl::StrFormat(
          "unknown option '%s' (options go before the program; put '--' "
          "before a program whose name starts with '-')",
          arg));
    }
  }
  if (!have_n) return Invalid("missing -n N (the number of ranks)");
  if (i >= args.size()) return Invalid("missing the program to run");
  options.argv.assign(args.begin() + i, args.end());
  return options;
}

absl::StatusOr<std::string> ResolveProgram(const std::string& program,
                                           const char* path_env) {
  if (program.empty()) return Invalid("the program name is empty");
  auto check = [](const std::string& path) -> absl::Status {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      return absl::NotFoundError(absl::StrFormat(
          "program '%s' not found (%s)", path, std::strerror(errno)));
    }
    if (!S_ISREG(st.st_mode)) {
      return Invalid(absl::StrFormat("program '%s' is not a regular file",
                                     path));
    }
    if (::access(path.c_str(), X_OK) != 0) {
      return Invalid(absl::StrFormat(
          "program '%s' is not executable (chmod +x it, or run it through "
          "its interpreter, e.g. bash script.sh)",
          path));
    }
    return absl::OkStatus();
  };
  if (program.find('/') != std::string::npos) {
    if (auto s = check(program); !s.ok()) return s;
    return program;
  }
  std::string path = path_env != nullptr ? path_env : "/usr/bin:/bin";
  absl::Status last = absl::NotFoundError("");
  for (absl::string_view dir : absl::StrSplit(path, ':')) {
    std::string candidate =
        (dir.empty() ? std::string(".") : std::string(dir)) + "/" + program;
    absl::Status s = check(candidate);
    if (s.ok()) return candidate;
    // Remember a found-but-unusable file: it explains more than "not found".
    if (!absl::IsNotFound(s)) last = s;
  }
  if (!absl::IsNotFound(last)) return last;
  return absl::NotFoundError(absl::StrFormat(
      "program '%s' not found in PATH (%s); give its path, e.g. ./%s",
      program, path, program));
}

}  // namespace launcher
}  // namespace pagewire
