// coherence_messages_fuzzer.cc - the barrier and lock messages of release
// consistency (runtime/coherence/coherence.h) as the peers of a rank could
// send them: write notices with pushed pages and subscriptions
// (kEpochWrites), and lock acquires, grants, releases and destroys, parsed
// by Coherence::ParsePageList and acted on by the lock's home and the
// barrier's bookkeeping of one in-process rank (fuzz_rank.h).
//
// The input is a sequence of operations:
//   0..6  a message from a peer: one of the six types (or any type), a
//         PageListHeader and page refs steered into the rank's allocations
//         and locks, pushed pages after them; or the same cut short or
//         padded, or any bytes;
//   7     a peer dies (its locks break, its subscriptions go).
#include <cstdint>
#include <cstring>
#include <string>

#include "runtime/base/page.h"
#include "runtime/dsm/home_protocol.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/fuzz_rank.h"

namespace pagewire::fuzz {
namespace {

namespace hp = home_protocol;

constexpr uint16_t kTypes[] = {hp::kEpochWrites, hp::kLockAcquire,
                               hp::kLockGrant,   hp::kLockRelease,
                               hp::kLockDestroy, hp::kLockDestroyed};

std::string Raw(const void* p, size_t n) {
  return std::string(static_cast<const char*>(p), n);
}

// A page list message: header, refs, pushed pages.
std::string PageList(FuzzInput& in, uint16_t type) {
  hp::PageListHeader h;
  std::memset(&h, 0, sizeof(h));
  const uint8_t shape = in.U8();
  // The lock's offset in the global range (8-byte aligned, inside the
  // allocations), or the barrier's epoch, or anything.
  const uint64_t key = in.U64();
  if (shape & 1) {
    h.epoch_or_lock = key;
  } else if (type == hp::kEpochWrites) {
    h.epoch_or_lock = key % 4;
  } else {
    h.epoch_or_lock =
        (key % (FuzzRank::kAllocations * FuzzRank::kPages * kPageSize)) & ~uint64_t{7};
  }
  h.ticket = (shape & 2) ? in.U64() : in.U8() % 4;
  h.flags = in.U32();
  if (!(shape & 4)) h.flags &= hp::kLastPart | hp::kAllPages;
  const uint32_t count = (shape & 8) ? in.U32() : in.U8() % 9;
  h.count = count;
  std::string body = Raw(&h, sizeof(h));
  uint32_t pushed = 0;
  for (uint32_t i = 0; i < count && i < 16 && !in.empty(); ++i) {
    hp::PageRef r;
    r.alloc_id = in.U32();
    r.flags = in.U32();
    r.page = in.U64();
    if (!(shape & 16)) {
      r.alloc_id = 1 + r.alloc_id % FuzzRank::kAllocations;
      r.flags %= 3;  // a write, a pushed write or a subscription
      r.page %= FuzzRank::kPages + 1;
    }
    pushed += (r.flags & hp::kRefPushed) != 0;
    body += Raw(&r, sizeof(r));
  }
  for (uint32_t i = 0; i < pushed; ++i) body += std::string(kPageSize, char(in.U8()));
  if (shape & 32) body.resize(in.U16() % (body.size() + 64));  // cut or padded
  return body;
}

}  // namespace
}  // namespace pagewire::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  pagewire::fuzz::FuzzRank::InitializeOnce();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pagewire::fuzz;
  FuzzInput in(data, size);
  FuzzRank rank;
  for (int ops = 0; !in.empty() && ops < 64; ++ops) {
    const uint8_t op = in.U8() % 8;
    if (op < 7) {
      const int peer = PickPeer(in);
      const uint8_t pick = in.U8();
      uint16_t type = kTypes[pick % std::size(kTypes)];
      if (pick >= 0xf8) type = in.U16();  // any type at all
      const std::string body = pick >= 0xf0 && pick < 0xf8 ? in.String(80)
                                                           : PageList(in, type);
      rank.Deliver(peer, type, body);
    } else {
      rank.PeerDied(PickPeer(in));
    }
  }
  return 0;
}
