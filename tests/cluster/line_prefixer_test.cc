// line_prefixer_test.cc - LinePrefixer: whole prefixed lines, partial lines
// kept until newline or end of stream, bounded partial-line buffer.
#include "cluster/launcher/line_prefixer.h"

#include <string>

#include "gtest/gtest.h"

namespace pagewire {
namespace launcher {
namespace {

TEST(LinePrefixerTest, PrefixesEachCompleteLine) {
  LinePrefixer p("[2] ");
  std::string out;
  p.Append("hello\nworld\n", &out);
  EXPECT_EQ(out, "[2] hello\n[2] world\n");
  EXPECT_FALSE(p.has_partial_line());
}

TEST(LinePrefixerTest, KeepsPartialLineUntilNewline) {
  LinePrefixer p("[0] ");
  std::string out;
  p.Append("par", &out);
  EXPECT_EQ(out, "");
  EXPECT_TRUE(p.has_partial_line());
  p.Append("tial", &out);
  EXPECT_EQ(out, "");
  p.Append(" line\nnext", &out);
  EXPECT_EQ(out, "[0] partial line\n");
  p.Finish(&out);
  EXPECT_EQ(out, "[0] partial line\n[0] next\n");
}

TEST(LinePrefixerTest, FinishWithoutPartialLineAddsNothing) {
  LinePrefixer p("[1] ");
  std::string out;
  p.Append("done\n", &out);
  p.Finish(&out);
  EXPECT_EQ(out, "[1] done\n");
}

TEST(LinePrefixerTest, EmptyLinesArePrefixedToo) {
  LinePrefixer p("[3] ");
  std::string out;
  p.Append("\n\n", &out);
  EXPECT_EQ(out, "[3] \n[3] \n");
}

TEST(LinePrefixerTest, CutsAnOverlongPartialLine) {
  LinePrefixer p("[0] ");
  std::string out;
  p.Append(std::string(kMaxLineBytes + 5, 'x'), &out);
  EXPECT_EQ(out, "[0] " + std::string(kMaxLineBytes, 'x') + "\n");
  out.clear();
  p.Append("y\n", &out);
  EXPECT_EQ(out, "[0] xxxxxy\n");
}

}  // namespace
}  // namespace launcher
}  // namespace pagewire
