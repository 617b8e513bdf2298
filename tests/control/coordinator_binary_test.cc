// coordinator_binary_test.cc - the standalone pagewire-coordinator: starts
// on port 0 and says where it listens, serves two ranks, exits 0 on
// SIGTERM, and refuses bad flags with a message naming the flag.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "runtime/control/control_client.h"
#include "tests/control/control_test_support.h"

extern char** environ;

namespace pagewire::control::testing {
namespace {

std::string BinaryPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  return absl::StrCat(srcdir ? srcdir : ".", "/",
                      workspace ? workspace : "pagewire",
                      "/cluster/coordinator/pagewire-coordinator");
}

// A child process with its stdout and stderr on pipes.
struct Child {
  pid_t pid = -1;
  int out = -1;
  int err = -1;
};

Child Spawn(const std::vector<std::string>& args,
            const std::vector<std::string>& extra_env) {
  int out[2], err[2];
  EXPECT_EQ(pipe(out), 0);
  EXPECT_EQ(pipe(err), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  posix_spawn_file_actions_addclose(&fa, err[0]);
  std::vector<std::string> argv_s = {BinaryPath()};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s;
  for (char** e = environ; *e != nullptr; ++e) {
    if (!absl::StartsWith(*e, "PAGEWIRE_SECRET=")) env_s.emplace_back(*e);
  }
  env_s.insert(env_s.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> envp;
  for (std::string& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  Child child;
  const int rc = posix_spawn(&child.pid, argv[0], &fa, nullptr, argv.data(),
                             envp.data());
  EXPECT_EQ(rc, 0) << "cannot run " << argv[0] << ": " << strerror(rc);
  posix_spawn_file_actions_destroy(&fa);
  close(out[1]);
  close(err[1]);
  child.out = out[0];
  child.err = err[0];
  return child;
}

std::string ReadLine(int fd) {
  std::string line;
  char c;
  while (read(fd, &c, 1) == 1 && c != '\n') line.push_back(c);
  return line;
}

std::string ReadAll(int fd) {
  std::string s;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) s.append(buf, n);
  return s;
}

// Exit status of `child` (128 + signal if killed).
int Wait(const Child& child) {
  int status = 0;
  EXPECT_EQ(waitpid(child.pid, &status, 0), child.pid);
  close(child.out);
  close(child.err);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

TEST(CoordinatorBinaryTest, ServesTwoRanksAndStopsOnSigterm) {
  const std::string secret_file =
      absl::StrCat(std::getenv("TEST_TMPDIR"), "/secret");
  {
    std::ofstream f(secret_file);
    f << kSecret << "\n";  // a trailing newline is not part of the secret
  }
  Child child = Spawn({"--listen", "127.0.0.1:0", "--nranks=2",
                       "--cluster-id", kCluster, "--secret-file", secret_file,
                       "--lease-ms", "1000", "--global-size", "1G"},
                      {});
  ASSERT_GT(child.pid, 0);
  const std::string line = ReadLine(child.out);
  const std::string prefix = "pagewire-coordinator: listening on 127.0.0.1:";
  ASSERT_TRUE(absl::StartsWith(line, prefix)) << "stdout said: " << line;
  const std::string address = line.substr(line.rfind(' ') + 1);
  const int port = std::atoi(line.substr(prefix.size()).c_str());
  EXPECT_GT(port, 0);

  ViewRecorder rec0;
  std::unique_ptr<ControlClient> clients[2];
  for (int i = 0; i < 2; ++i) {
    ControlClientConfig c;
    c.coordinator = address;
    c.cluster_id = kCluster;
    c.secret = kSecret;
    c.endpoint = TestEndpoint(i);
    if (i == 0) c.on_view = rec0.Callback();
    auto client = ControlClient::Join(c);
    ASSERT_TRUE(client.ok()) << client.status();
    clients[i] = *std::move(client);
    EXPECT_EQ(clients[i]->global_size(), uint64_t{1} << 30);
  }
  ASSERT_TRUE(rec0.WaitFor([](const View& v) { return AllAlive(v, 2); }));
  absl::Status b0;
  std::thread t([&] { b0 = clients[0]->Barrier(1); });
  EXPECT_TRUE(clients[1]->Barrier(1).ok());
  t.join();
  EXPECT_TRUE(b0.ok()) << b0;

  // SIGTERM with both ranks connected (watch streams open): a clean exit.
  ASSERT_EQ(kill(child.pid, SIGTERM), 0);
  const std::string err = ReadAll(child.err);
  EXPECT_EQ(Wait(child), 0) << err;
  EXPECT_TRUE(absl::StrContains(err, "SIGTERM received")) << err;
  EXPECT_FALSE(absl::StrContains(err, kSecret)) << "the secret was logged";
}

struct BadFlagsCase {
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::string expect;  // in stderr
};

TEST(CoordinatorBinaryTest, BadFlagsNameTheFlagAndExitNonZero) {
  const std::vector<std::string> ok = {"--listen", "127.0.0.1:0", "--nranks",
                                       "2", "--cluster-id", "job"};
  const std::string env_secret = "PAGEWIRE_SECRET=abc";
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = ok;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  const std::vector<BadFlagsCase> cases = {
      {{"--nranks", "zero"}, {env_secret}, "--nranks 'zero'"},
      {{"--listen", "127.0.0.1:0", "--cluster-id", "x"}, {env_secret},
       "--nranks is required"},
      {{"--listen", "nowhere", "--nranks", "2", "--cluster-id", "x"},
       {env_secret}, "--listen"},
      {ok, {}, "PAGEWIRE_SECRET"},
      {with({"--secret-file", "/nonexistent/secret"}), {}, "--secret-file"},
      {with({"--global-size", "lots"}), {env_secret}, "--global-size"},
      {with({"--global-base", "4097"}), {env_secret}, "page-aligned"},
      {with({"--lease-ms", "150"}), {env_secret}, "--lease-ms"},
      {with({"--bogus", "1"}), {env_secret}, "unknown flag --bogus"},
      {with({"--nranks", "3"}), {env_secret}, "--nranks given twice"},
  };
  for (const BadFlagsCase& c : cases) {
    Child child = Spawn(c.args, c.env);
    ASSERT_GT(child.pid, 0);
    const std::string err = ReadAll(child.err);
    const int rc = Wait(child);
    EXPECT_NE(rc, 0) << absl::StrJoin(c.args, " ");
    EXPECT_TRUE(absl::StrContains(err, c.expect))
        << "args: " << absl::StrJoin(c.args, " ") << "\nstderr: " << err;
    EXPECT_FALSE(absl::StrContains(err, "abc")) << "the secret was printed";
  }

  // A port already in use: exit 1, saying so.
  Child first = Spawn({"--listen", "127.0.0.1:0", "--nranks", "1",
                       "--cluster-id", "job"},
                      {env_secret});
  const std::string line = ReadLine(first.out);
  const std::string address = line.substr(line.rfind(' ') + 1);
  Child second = Spawn({"--listen", address, "--nranks", "1", "--cluster-id",
                        "job"},
                       {env_secret});
  const std::string err = ReadAll(second.err);
  EXPECT_EQ(Wait(second), 1) << err;
  EXPECT_TRUE(absl::StrContains(err, "cannot listen on " + address)) << err;
  kill(first.pid, SIGINT);
  EXPECT_EQ(Wait(first), 0);
}

}  // namespace
}  // namespace pagewire::control::testing
