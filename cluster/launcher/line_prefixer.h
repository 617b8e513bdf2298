// line_prefixer.h - turns one rank's output stream into whole lines, each
// prefixed with "[rank] ".
//
// The launcher is the only writer of its stdout/stderr and writes only whole
// prefixed lines, so lines of different ranks never interleave mid-line.
// Single-threaded: used by the launcher's event loop only.
#ifndef PAGEWIRE_CLUSTER_LAUNCHER_LINE_PREFIXER_H_
#define PAGEWIRE_CLUSTER_LAUNCHER_LINE_PREFIXER_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace pagewire {
namespace launcher {

// A partial line longer than this is emitted as a line of its own, so a rank
// that never writes a newline cannot make the launcher's memory grow without
// bound. Far longer than any log line; the cut is at a byte boundary.
constexpr size_t kMaxLineBytes = size_t{1} << 20;

class LinePrefixer {
 public:
  explicit LinePrefixer(std::string prefix) : prefix_(std::move(prefix)) {}

  // Consumes `data`; appends every line it completes, prefixed and with its
  // newline, to *out. An unfinished last line is kept for the next call.
  void Append(absl::string_view data, std::string* out);

  // The stream ended: appends the unfinished line, if any, prefixed and with
  // a newline added.
  void Finish(std::string* out);

  bool has_partial_line() const { return !partial_.empty(); }

 private:
  void Emit(absl::string_view line, std::string* out) const;

  const std::string prefix_;
  std::string partial_;
};

}  // namespace launcher
}  // namespace pagewire

#endif  // PAGEWIRE_CLUSTER_LAUNCHER_LINE_PREFIXER_H_
