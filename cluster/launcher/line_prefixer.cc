// line_prefixer.cc - line splitting with a bounded partial-line buffer.
#include "cluster/launcher/line_prefixer.h"

namespace pagewire {
namespace launcher {

void LinePrefixer::Emit(absl::string_view line, std::string* out) const {
  out->append(prefix_);
  out->append(line.data(), line.size());
  out->push_back('\n');
}

void LinePrefixer::Append(absl::string_view data, std::string* out) {
  while (!data.empty()) {
    size_t nl = data.find('\n');
    if (nl == absl::string_view::npos) {
      partial_.append(data.data(), data.size());
      while (partial_.size() >= kMaxLineBytes) {
        Emit(absl::string_view(partial_).substr(0, kMaxLineBytes), out);
        partial_.erase(0, kMaxLineBytes);
      }
      return;
    }
    if (partial_.empty()) {
      Emit(data.substr(0, nl), out);
    } else {
      partial_.append(data.data(), nl);
      Emit(partial_, out);
      partial_.clear();
    }
    data.remove_prefix(nl + 1);
  }
}

void LinePrefixer::Finish(std::string* out) {
  if (partial_.empty()) return;
  Emit(partial_, out);
  partial_.clear();
}

}  // namespace launcher
}  // namespace pagewire
