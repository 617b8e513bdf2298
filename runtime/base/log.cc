// log.cc - stderr logging with a replaceable sink.
#include "runtime/base/log.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace pagewire {
namespace {

absl::Mutex sink_mutex;
LogSink& Sink() ABSL_EXCLUSIVE_LOCKS_REQUIRED(sink_mutex) {
  static LogSink* sink = new LogSink();  // never destroyed: threads log at exit
  return *sink;
}

const char* Prefix(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "pagewire: debug: ";
    case LogLevel::kInfo: return "pagewire: ";
    case LogLevel::kWarning: return "pagewire: warning: ";
    case LogLevel::kError: return "pagewire: error: ";
  }
  return "pagewire: ";
}

}  // namespace

LogSink SetLogSink(LogSink sink) {
  absl::MutexLock lock(&sink_mutex);
  return std::exchange(Sink(), std::move(sink));
}

void LogLine(LogLevel level, absl::string_view line) {
  absl::MutexLock lock(&sink_mutex);
  if (Sink()) {
    Sink()(level, line);
    return;
  }
  static const bool debug = [] {
    const char* v = std::getenv("PAGEWIRE_LOG");
    return v != nullptr && std::strcmp(v, "debug") == 0;
  }();
  if (level == LogLevel::kDebug && !debug) return;
  // One write(2) per line so lines of concurrent ranks and threads never mix.
  std::string out = absl::StrCat(Prefix(level), line, "\n");
  ssize_t ignored = ::write(STDERR_FILENO, out.data(), out.size());
  (void)ignored;
}

}  // namespace pagewire
