// bootstrap_env_test.cc - BootstrapEnv's variables and ReadNetnsHosts's
// parsing of netns-hosts.sh's address map.
#include "cluster/launcher/bootstrap_env.h"

#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pagewire {
namespace launcher {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

std::string WriteFile(const std::string& name, const std::string& text) {
  std::string path = std::string(::testing::TempDir()) + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(BootstrapEnvTest, ReplacesInheritedVariablesAndSetsAll) {
  BootstrapEnv env;
  env.nranks = 2;
  env.coordinator = "10.0.0.1:5000";
  env.cluster_id = "abc";
  env.secret = "s";
  env.hosts = {"10.0.0.1", "10.0.0.2"};
  char a[] = "PATH=/bin", b[] = "PAGEWIRE_RANK=7", c[] = "PAGEWIRE_RANKS=x";
  char* base[] = {a, b, c, nullptr};
  std::vector<std::string> e = env.EnvironmentFor(1, base);
  EXPECT_THAT(e, Contains("PATH=/bin"));
  EXPECT_THAT(e, Contains("PAGEWIRE_RANKS=x"));  // not one of ours
  EXPECT_THAT(e, Not(Contains("PAGEWIRE_RANK=7")));
  EXPECT_THAT(e, Contains("PAGEWIRE_RANK=1"));
  EXPECT_THAT(e, Contains("PAGEWIRE_NRANKS=2"));
  EXPECT_THAT(e, Contains("PAGEWIRE_COORDINATOR=10.0.0.1:5000"));
  EXPECT_THAT(e, Contains("PAGEWIRE_CLUSTER_ID=abc"));
  EXPECT_THAT(e, Contains("PAGEWIRE_SECRET=s"));
  EXPECT_THAT(e, Contains("PAGEWIRE_HOST=10.0.0.2"));
}

TEST(BootstrapEnvTest, RandomHexIsHexAndDiffers) {
  auto a = RandomHex(16), b = RandomHex(16);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 32u);
  EXPECT_EQ(a->find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(*a, *b);
}

TEST(ReadNetnsHostsTest, ReadsTheMap) {
  std::string path = WriteFile("ok.hosts", "0 10.1.0.1\n1 10.1.0.2\n2 10.1.0.3\n");
  auto hosts = ReadNetnsHosts(path, "p", 2);
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  EXPECT_THAT(*hosts, ElementsAre("10.1.0.1", "10.1.0.2"));
}

TEST(ReadNetnsHostsTest, NamesTheProblemAndTheFix) {
  auto missing = ReadNetnsHosts("/nonexistent/p.hosts", "p", 2);
  EXPECT_THAT(missing.status().message(),
              HasSubstr("cluster/netns/netns-hosts.sh up p 2"));
  auto short_map =
      ReadNetnsHosts(WriteFile("short.hosts", "0 10.1.0.1\n"), "p", 2);
  EXPECT_THAT(short_map.status().message(), HasSubstr("needs namespace p1"));
  auto garbage =
      ReadNetnsHosts(WriteFile("bad.hosts", "0 10.1.0.1\n1 nope\n"), "p", 2);
  EXPECT_THAT(garbage.status().message(), HasSubstr("bad.hosts:2"));
  auto twice = ReadNetnsHosts(
      WriteFile("twice.hosts", "0 10.1.0.1\n0 10.1.0.2\n"), "p", 1);
  EXPECT_THAT(twice.status().message(), HasSubstr("listed twice"));
}

TEST(PickFreePortTest, ReturnsABindablePort) {
  auto port = PickFreePort("127.0.0.1", UniqueFd());
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_GT(*port, 0);
  EXPECT_LT(*port, 65536);
}

}  // namespace
}  // namespace launcher
}  // namespace pagewire
