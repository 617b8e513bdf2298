// log.h - the runtime's diagnostics: one line per message on stderr, or into
// a sink a test installs to read what was said.
//
// Any thread may log. Logging is never on the fast path of a fault: only
// failures, warnings and start-up/shutdown are logged. Debug lines (every
// connection, every join and allocation) reach stderr only with
// PAGEWIRE_LOG=debug; a sink gets them always.
#ifndef PAGEWIRE_RUNTIME_BASE_LOG_H_
#define PAGEWIRE_RUNTIME_BASE_LOG_H_

#include <functional>
#include <string>

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace pagewire {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

using LogSink = std::function<void(LogLevel, absl::string_view)>;

// Replaces where messages go; an empty sink restores stderr. Returns the
// previous sink so a test can put it back.
LogSink SetLogSink(LogSink sink);

void LogLine(LogLevel level, absl::string_view line);

template <typename... Args>
void Log(const absl::FormatSpec<Args...>& fmt, const Args&... args) {
  LogLine(LogLevel::kInfo, absl::StrFormat(fmt, args...));
}
template <typename... Args>
void Debug(const absl::FormatSpec<Args...>& fmt, const Args&... args) {
  LogLine(LogLevel::kDebug, absl::StrFormat(fmt, args...));
}
template <typename... Args>
void Warning(const absl::FormatSpec<Args...>& fmt, const Args&... args) {
  LogLine(LogLevel::kWarning, absl::StrFormat(fmt, args...));
}
template <typename... Args>
void Error(const absl::FormatSpec<Args...>& fmt, const Args&... args) {
  LogLine(LogLevel::kError, absl::StrFormat(fmt, args...));
}

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_BASE_LOG_H_
