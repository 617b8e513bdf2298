// message_router.cc - messages to the handlers of their types.
#include "runtime/transport/message_router.h"

#include "absl/strings/str_format.h"
#include "runtime/base/log.h"

namespace pagewire {

absl::Status MessageRouter::Register(std::initializer_list<uint16_t> types,
                                     Handler handler) {
  absl::WriterMutexLock lock(&mutex_);
  for (uint16_t type : types) {
    if (handlers_.contains(type)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "message type %d has a handler already; each type has one", type));
    }
  }
  for (uint16_t type : types) {
    handlers_[type] = handler;
    retired_.erase(type);
  }
  return absl::OkStatus();
}

void MessageRouter::Unregister(std::initializer_list<uint16_t> types) {
  absl::WriterMutexLock lock(&mutex_);
  for (uint16_t type : types) {
    if (handlers_.erase(type) != 0) retired_.insert(type);
  }
}

void MessageRouter::Dispatch(int peer, uint16_t type,
                             absl::Span<const char> body) const {
  absl::ReaderMutexLock lock(&mutex_);
  auto it = handlers_.find(type);
  if (it == handlers_.end()) {
    if (retired_.contains(type)) {
      Debug("a message of type %d from rank %d arrived after its handler "
            "went; dropped",
            type, peer);
      return;
    }
    Warning("rank %d sent a message of type %d (%d bytes), which nothing "
            "here handles; dropped",
            peer, type, body.size());
    return;
  }
  it->second(peer, type, body);
}

}  // namespace pagewire
