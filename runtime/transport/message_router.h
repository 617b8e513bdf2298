// message_router.h - hands each message a Transport receives to the
// component that registered its type.
//
// The router is the transport's one message handler
// (Transport::SetMessageHandler with Handler()). Components register the
// message types they handle when they are made and unregister them before
// they go, so nobody routes messages on their behalf and nothing is wired
// afterwards with setters. A message of a type nobody ever handled is
// dropped with a warning naming the sender and the type; one whose handler
// has gone (a component being torn down at the end of a job) quietly.
//
// Threads: Register and Unregister from any thread but a handler's;
// Dispatch on the transport's receive thread, which the handlers must not
// block. Unregister returns once no call of the handlers it removes is
// running, so a component may go right after it.
#ifndef PAGEWIRE_RUNTIME_TRANSPORT_MESSAGE_ROUTER_H_
#define PAGEWIRE_RUNTIME_TRANSPORT_MESSAGE_ROUTER_H_

#include <cstdint>
#include <initializer_list>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "runtime/transport/transport.h"

namespace pagewire {

class MessageRouter {
 public:
  using Handler = Transport::MessageHandler;

  // Routes `types` to `handler`. A type has one handler: registering it
  // twice is a wiring error (FailedPrecondition, naming the type).
  absl::Status Register(std::initializer_list<uint16_t> types, Handler handler);
  void Unregister(std::initializer_list<uint16_t> types);

  void Dispatch(int peer, uint16_t type, absl::Span<const char> body) const;
  // A Transport::MessageHandler that dispatches here.
  Handler AsHandler() const {
    return [this](int peer, uint16_t type, absl::Span<const char> body) {
      Dispatch(peer, type, body);
    };
  }

 private:
  // Readers: dispatches, held across the handler's call; writers:
  // (un)registration.
  mutable absl::Mutex mutex_;
  absl::flat_hash_map<uint16_t, Handler> handlers_ ABSL_GUARDED_BY(mutex_);
  absl::flat_hash_set<uint16_t> retired_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_TRANSPORT_MESSAGE_ROUTER_H_
