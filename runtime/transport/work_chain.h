// work_chain.h - what every transport checks of a chain of work requests
// before it posts any of it, and of the memory a request names.
#ifndef PAGEWIRE_RUNTIME_TRANSPORT_WORK_CHAIN_H_
#define PAGEWIRE_RUNTIME_TRANSPORT_WORK_CHAIN_H_

#include <cstdint>

#include "absl/status/status.h"
#include "runtime/transport/transport.h"

namespace pagewire {

inline bool IsAtomic(WorkOpcode op) {
  return op == WorkOpcode::kFetchAdd || op == WorkOpcode::kCompareSwap;
}

// An opcode as it arrives on the wire or from a caller.
inline bool ValidOpcode(uint8_t op) {
  return op <= static_cast<uint8_t>(WorkOpcode::kCompareSwap);
}

// [addr, addr + len) inside [base, base + size), without overflow.
inline bool InsideRegion(uint64_t addr, uint64_t len, uint64_t base,
                         uint64_t size) {
  return addr >= base && len <= size && addr - base <= size - len;
}

// What a fabric allows in one work request.
struct ChainLimits {
  const char* fabric;        // "tcp", "verbs": names the transport
  uint32_t max_length;       // bytes one request may move
  const char* length_limit;  // who sets max_length, for the message
  bool atomics = true;       // whether the fabric has atomics at all
};

// A malformed chain is a caller bug: checked whole before any of it is
// posted. InvalidArgument naming the fabric, the peer, the wr_id and the
// problem (an unknown opcode, an atomic not of 8 bytes or on a fabric
// without atomics, a request longer than the limit).
absl::Status ValidateChain(int peer, const WorkRequest* chain,
                           const ChainLimits& limits);

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_TRANSPORT_WORK_CHAIN_H_
