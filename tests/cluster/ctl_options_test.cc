// ctl_options_test.cc - pagewire-ctl's command line (ParseCtlOptions): what
// it accepts, what it refuses, and that what it returns stands on its own.
#include "cluster/coordinator/ctl_options.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "cluster/coordinator/job_secret.h"
#include "gtest/gtest.h"

namespace pagewire::cluster {
namespace {

std::string TempFile(const std::string& name, const std::string& text) {
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(dir ? dir : "/tmp") + "/" + name;
  std::ofstream(path) << text;
  return path;
}

// Found by //tests/fuzz:cluster_flags_fuzzer: the options pointed at their
// --secret-file path inside ParseCtlOptions's own frame, so pagewire-ctl
// read the secret file's name from a dead stack frame. Each parse now
// holds its own path, and the secret is read from it.
TEST(CtlOptionsTest, EachParseKeepsItsOwnSecretFile) {
  const std::string a = TempFile("ctl_secret_a", "secret-a\n");
  const std::string b = TempFile("ctl_secret_b", "secret-b\n");
  auto first = ParseCtlOptions(
      {"--coordinator", "127.0.0.1:1", "--secret-file", a, "status"});
  auto second = ParseCtlOptions(
      {"--coordinator", "127.0.0.1:1", "--secret-file", b, "status"});
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(first->secret_file.has_value());
  ASSERT_TRUE(second->secret_file.has_value());
  EXPECT_EQ(*first->secret_file, a);
  EXPECT_EQ(*second->secret_file, b);
  CtlOptions copy = *first;
  first = absl::InvalidArgumentError("gone");
  ASSERT_TRUE(copy.secret_file.has_value());
  auto secret = ReadJobSecret(&*copy.secret_file);
  ASSERT_TRUE(secret.ok()) << secret.status();
  EXPECT_EQ(*secret, "secret-a");
}

TEST(CtlOptionsTest, WithoutSecretFileTheEnvironmentIsUsed) {
  auto o = ParseCtlOptions({"--coordinator", "127.0.0.1:1", "status"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_FALSE(o->secret_file.has_value());
  EXPECT_EQ(o->command, "status");
}

TEST(CtlOptionsTest, DeclareDeadNeedsOneRankAndPrefixesTheReason) {
  auto o = ParseCtlOptions({"--coordinator", "h:1", "declare-dead", "3",
                            "--reason", "host gone"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->rank, 3);
  EXPECT_EQ(o->reason, "pagewire-ctl: host gone");
  EXPECT_FALSE(ParseCtlOptions({"--coordinator", "h:1", "declare-dead"}).ok());
  EXPECT_FALSE(
      ParseCtlOptions({"--coordinator", "h:1", "declare-dead", "-1"}).ok());
  EXPECT_FALSE(ParseCtlOptions({"--coordinator", "h:1", "stop"}).ok());
  EXPECT_FALSE(ParseCtlOptions({"--coordinator"}).ok());
}

// Found by //tests/fuzz:cluster_flags_fuzzer: --secret-file /dev/full (or
// any endless or huge file) was read whole, until memory ran out. A file
// longer than kMaxSecretFileBytes is refused, naming it.
TEST(JobSecretTest, AnEndlessSecretFileIsRefused) {
  const std::string dev_zero = "/dev/zero";
  auto s = ReadJobSecret(&dev_zero);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("/dev/zero is longer than"),
            absl::string_view::npos)
      << s.status();
  const std::string longest =
      TempFile("secret_longest", std::string(kMaxSecretFileBytes, 'k'));
  auto ok = ReadJobSecret(&longest);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->size(), kMaxSecretFileBytes);
}

}  // namespace
}  // namespace pagewire::cluster
