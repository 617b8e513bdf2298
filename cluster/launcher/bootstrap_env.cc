// bootstrap_env.cc - bootstrap variables, netns address map, free ports.
#include "cluster/launcher/bootstrap_env.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace pagewire {
namespace launcher {
namespace {

std::string UpCommand(const std::string& prefix, int nranks) {
  return absl::StrFormat("cluster/netns/netns-hosts.sh up %s %d", prefix,
                         nranks);
}

std::string Errno() { return std::strerror(errno); }

}  // namespace

std::vector<std::string> BootstrapEnv::EnvironmentFor(int rank,
                                                      char** base) const {
  static constexpr const char* kOurs[] = {kEnvRank,      kEnvNranks,
                                          kEnvCoordinator, kEnvClusterId,
                                          kEnvSecret,    kEnvHost};
  std::vector<std::string> env;
  for (char** e = base; e != nullptr && *e != nullptr; ++e) {
    absl::string_view entry(*e);
    bool ours = false;
    for (const char* name : kOurs) {
      if (absl::StartsWith(entry, absl::StrCat(name, "="))) ours = true;
    }
    if (!ours) env.emplace_back(entry);
  }
  env.push_back(absl::StrCat(kEnvRank, "=", rank));
  env.push_back(absl::StrCat(kEnvNranks, "=", nranks));
  env.push_back(absl::StrCat(kEnvCoordinator, "=", coordinator));
  env.push_back(absl::StrCat(kEnvClusterId, "=", cluster_id));
  env.push_back(absl::StrCat(kEnvSecret, "=", secret));
  env.push_back(absl::StrCat(kEnvHost, "=", hosts[rank]));
  return env;
}

absl::StatusOr<std::string> RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  size_t got = 0;
  while (got < bytes) {
    ssize_t n = ::getrandom(&raw[got], bytes - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(
          absl::StrFormat("getrandom failed: %s", Errno()));
    }
    got += static_cast<size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : raw) {
    hex.push_back(kHex[c >> 4]);
    hex.push_back(kHex[c & 15]);
  }
  return hex;
}

absl::StatusOr<std::vector<std::string>> ReadNetnsHosts(
    const std::string& hosts_file, const std::string& prefix, int nranks) {
  std::ifstream in(hosts_file);
  if (!in) {
    return absl::NotFoundError(absl::StrFormat(
        "no address map for network namespaces '%s' (%s: %s); create them "
        "with: %s",
        prefix, hosts_file, Errno(), UpCommand(prefix, nranks)));
  }
  std::vector<std::string> hosts(nranks);
  std::set<int> seen;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    absl::string_view text = absl::StripAsciiWhitespace(line);
    if (text.empty() || text[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(text, ' ', absl::SkipEmpty());
    int index = -1;
    in_addr addr;
    if (fields.size() != 2 || !absl::SimpleAtoi(fields[0], &index) ||
        index < 0 ||
        ::inet_pton(AF_INET, std::string(fields[1]).c_str(), &addr) != 1) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s:%d: expected '<index> <IPv4 address>', got '%s'; recreate it "
          "with: %s",
          hosts_file, lineno, text, UpCommand(prefix, nranks)));
    }
    if (!seen.insert(index).second) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s:%d: index %d listed twice; recreate it with: %s", hosts_file,
          lineno, index, UpCommand(prefix, nranks)));
    }
    if (index < nranks) hosts[index] = std::string(fields[1]);
  }
  for (int i = 0; i < nranks; ++i) {
    if (hosts[i].empty()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s has %d host(s) but -n %d needs namespace %s%d; recreate the "
          "namespaces with: cluster/netns/netns-hosts.sh down %s && %s",
          hosts_file, static_cast<int>(seen.size()), nranks, prefix, i,
          prefix, UpCommand(prefix, nranks)));
    }
  }
  return hosts;
}

absl::StatusOr<UniqueFd> OpenNetns(const std::string& name,
                                   const std::string& prefix, int nranks) {
  std::string path = absl::StrCat(kNetnsDir, "/", name);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    return absl::NotFoundError(absl::StrFormat(
        "cannot open network namespace %s (%s); create the namespaces with: "
        "%s",
        path, Errno(), UpCommand(prefix, nranks)));
  }
  return fd;
}

absl::StatusOr<int> PickFreePort(const std::string& host,
                                 const UniqueFd& netns_fd) {
  UniqueFd sock;
  if (netns_fd.valid()) {
    // A socket belongs to the namespace it was created in: step into the
    // namespace just for socket(2), then step back.
    UniqueFd self(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!self.valid()) {
      return absl::InternalError(
          absl::StrFormat("open /proc/self/ns/net: %s", Errno()));
    }
    if (::setns(netns_fd.get(), CLONE_NEWNET) != 0) {
      return absl::PermissionDeniedError(absl::StrFormat(
          "cannot enter rank 0's network namespace: setns: %s (--netns "
          "needs root or CAP_SYS_ADMIN)",
          Errno()));
    }
    sock.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int saved = errno;
    if (::setns(self.get(), CLONE_NEWNET) != 0) {
      return absl::InternalError(absl::StrFormat(
          "cannot return to the launcher's network namespace: %s", Errno()));
    }
    errno = saved;
  } else {
    sock.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  }
  if (!sock.valid()) {
    return absl::InternalError(absl::StrFormat("socket: %s", Errno()));
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("'%s' is not an IPv4 address", host));
  }
  if (::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) !=
      0) {
    return absl::UnavailableError(absl::StrFormat(
        "cannot bind %s:0 to pick a coordinator port: %s (is the address "
        "configured? pass --coordinator-port to choose one yourself)",
        host, Errno()));
  }
  socklen_t len = sizeof addr;
  if (::getsockname(sock.get(), reinterpret_cast<sockaddr*>(&addr), &len) !=
      0) {
    return absl::InternalError(absl::StrFormat("getsockname: %s", Errno()));
  }
  return static_cast<int>(ntohs(addr.sin_port));
}

}  // namespace launcher
}  // namespace pagewire
