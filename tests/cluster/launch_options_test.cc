// launch_options_test.cc - ParseLaunchOptions and ResolveProgram: accepted
// forms, and a clear InvalidArgument/NotFound for every bad input.
#include "cluster/launcher/launch_options.h"

#include <sys/stat.h>

#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pagewire {
namespace launcher {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

absl::StatusOr<LaunchOptions> Parse(std::vector<std::string> args) {
  return ParseLaunchOptions(args);
}

std::string ErrorOf(std::vector<std::string> args) {
  auto r = Parse(std::move(args));
  EXPECT_FALSE(r.ok());
  return r.ok() ? "" : std::string(r.status().message());
}

TEST(LaunchOptionsTest, ParsesAllOptions) {
  auto r = Parse({"-n", "4", "--netns", "pw", "--coordinator-port=4000",
                  "--secret", "s", "--grace-ms", "10", "--bind-to", "core",
                  "--", "prog", "-x"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->nranks, 4);
  EXPECT_EQ(r->netns_prefix, "pw");
  EXPECT_EQ(r->coordinator_port, 4000);
  EXPECT_EQ(r->secret, "s");
  EXPECT_EQ(r->grace_ms, 10);
  EXPECT_TRUE(r->bind_to_core);
  EXPECT_THAT(r->argv, ElementsAre("prog", "-x"));
}

TEST(LaunchOptionsTest, ProgramStartsAtFirstNonOption) {
  auto r = Parse({"-n2", "prog", "--not-ours", "-n", "9"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->nranks, 2);
  EXPECT_EQ(r->grace_ms, kDefaultGraceMs);
  EXPECT_FALSE(r->secret.has_value());
  EXPECT_THAT(r->argv, ElementsAre("prog", "--not-ours", "-n", "9"));
}

TEST(LaunchOptionsTest, HelpNeedsNothingElse) {
  auto r = Parse({"--help"});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->help);
}

TEST(LaunchOptionsTest, RejectsBadInputWithTheReason) {
  EXPECT_THAT(ErrorOf({"prog"}), HasSubstr("missing -n N"));
  EXPECT_THAT(ErrorOf({"-n", "0", "prog"}), HasSubstr("between 1 and"));
  EXPECT_THAT(ErrorOf({"-n", "-3", "prog"}), HasSubstr("between 1 and"));
  EXPECT_THAT(ErrorOf({"-n", "4x", "prog"}), HasSubstr("needs an integer"));
  EXPECT_THAT(ErrorOf({"-n"}), HasSubstr("-n needs a value"));
  EXPECT_THAT(ErrorOf({"-n", "2"}), HasSubstr("missing the program"));
  EXPECT_THAT(ErrorOf({"-n", "2", "--wat", "prog"}),
              HasSubstr("unknown option '--wat'"));
  EXPECT_THAT(ErrorOf({"-n", "2", "--coordinator-port", "0", "prog"}),
              HasSubstr("between 1 and 65535"));
  EXPECT_THAT(ErrorOf({"-n", "2", "--secret=", "prog"}),
              HasSubstr("must not be empty"));
  EXPECT_THAT(ErrorOf({"-n", "2", "--netns", "a b", "prog"}),
              HasSubstr("may only contain"));
  EXPECT_THAT(ErrorOf({"-n", "2", "--grace-ms", "-1", "prog"}),
              HasSubstr("between 0 and"));
  EXPECT_THAT(ErrorOf({"-n", "2", "--bind-to", "socket", "prog"}),
              HasSubstr("use core (rank i on the i-th usable CPU) or none"));
}

TEST(ResolveProgramTest, FindsProgramsInPath) {
  auto r = ResolveProgram("sh", "/nonexistent:/bin:/usr/bin");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "/bin/sh");
}

TEST(ResolveProgramTest, ExplainsWhatIsWrong) {
  auto missing = ResolveProgram("no-such-program-pw", "/bin");
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
  EXPECT_THAT(missing.status().message(), HasSubstr("not found in PATH"));
  auto dir = ResolveProgram("/", "/bin");
  EXPECT_THAT(dir.status().message(), HasSubstr("not a regular file"));
  std::string plain = std::string(::testing::TempDir()) + "/plain";
  std::ofstream(plain) << "echo hi\n";
  ASSERT_EQ(::chmod(plain.c_str(), 0644), 0);
  auto not_exec = ResolveProgram(plain, "/bin");
  EXPECT_THAT(not_exec.status().message(), HasSubstr("not executable"));
}

}  // namespace
}  // namespace launcher
}  // namespace pagewire
