// transport.cc - names for transport enums, for diagnostics.
#include "runtime/transport/transport.h"

namespace pagewire {

const char* WorkOpcodeName(WorkOpcode op) {
  switch (op) {
    case WorkOpcode::kRead: return "READ";
    case WorkOpcode::kWrite: return "WRITE";
    case WorkOpcode::kFetchAdd: return "FETCH_ADD";
    case WorkOpcode::kCompareSwap: return "COMPARE_SWAP";
  }
  return "UNKNOWN";
}

const char* WcStatusName(WcStatus s) {
  switch (s) {
    case WcStatus::kSuccess: return "success";
    case WcStatus::kRemoteAccessError: return "remote access error";
    case WcStatus::kLocalProtectionError: return "local protection error";
    case WcStatus::kPeerGone: return "peer gone";
    case WcStatus::kFlushed: return "flushed";
    case WcStatus::kTransportError: return "transport error";
  }
  return "unknown";
}

}  // namespace pagewire
