// home_protocol_fuzzer.cc - the home protocol (runtime/dsm/home_protocol.h)
// as the peers of a rank could send it: fetches and claims to its home
// manager, ready/claimed answers and key lists to its remote fetcher, and
// the sequential-consistency requests, grants and recalls, each parsed and
// acted on by the real handlers of one in-process rank (fuzz_rank.h).
//
// The input is a sequence of operations:
//   0..5  a message from a peer: a type of the protocol (or any type), and
//         a body of the type's size with its allocation and page steered
//         into the rank's allocations (or any bytes, any length);
//   6     this rank touches a page, so a request waits for an answer;
//   7     a peer dies.
#include <cstdint>
#include <cstring>
#include <string>

#include "runtime/dsm/home_protocol.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/fuzz_rank.h"

namespace pagewire::fuzz {
namespace {

namespace hp = home_protocol;

constexpr uint16_t kTypes[] = {hp::kFetch,     hp::kReady,    hp::kClaim,
                               hp::kClaimed,   hp::kAllocKeys, hp::kScRequest,
                               hp::kScGrant,   hp::kScRecall, hp::kScRecalled};

template <typename T>
T Fill(FuzzInput& in) {
  T m;
  const std::string bytes = in.Bytes(sizeof(T));
  std::memset(&m, 0, sizeof(T));
  std::memcpy(&m, bytes.data(), bytes.size());
  return m;
}

// Most of the time an allocation and page that exist, so the handlers get
// past their look-ups; otherwise whatever the input says.
uint32_t SteerAlloc(uint32_t id) {
  return (id & 0x80000000u) ? id : 1 + id % FuzzRank::kAllocations;
}
uint64_t SteerPage(uint64_t page) {
  return (page >> 63) ? page : page % (FuzzRank::kPages + 1);
}

template <typename T>
std::string Raw(const T& m) {
  return std::string(reinterpret_cast<const char*>(&m), sizeof(m));
}

// A well-formed body of `type`, its fields from the input.
std::string Body(FuzzInput& in, uint16_t type) {
  switch (type) {
    case hp::kFetch: {
      auto m = Fill<hp::Fetch>(in);
      m.alloc_id = SteerAlloc(m.alloc_id);
      m.page = SteerPage(m.page);
      return Raw(m);
    }
    case hp::kClaim: {
      auto m = Fill<hp::Claim>(in);
      m.alloc_id = SteerAlloc(m.alloc_id);
      m.page = SteerPage(m.page);
      return Raw(m);
    }
    case hp::kReady: {
      auto m = Fill<hp::Ready>(in);
      m.page = SteerPage(m.page);
      return Raw(m);
    }
    case hp::kClaimed: {
      auto m = Fill<hp::Claimed>(in);
      m.page = SteerPage(m.page);
      return Raw(m);
    }
    case hp::kAllocKeys: {
      auto h = Fill<hp::AllocKeysHeader>(in);
      h.alloc_id = SteerAlloc(h.alloc_id);
      h.count %= 4;
      std::string body = Raw(h);
      for (uint32_t i = 0; i < h.count; ++i) body += Raw(Fill<hp::AllocKey>(in));
      return body;
    }
    case hp::kScRequest: {
      auto m = Fill<hp::ScRequest>(in);
      m.alloc_id = SteerAlloc(m.alloc_id);
      m.page = SteerPage(m.page);
      return Raw(m);
    }
    case hp::kScGrant: {
      auto m = Fill<hp::ScGrant>(in);
      m.page = SteerPage(m.page);
      return Raw(m);
    }
    case hp::kScRecall: {
      auto m = Fill<hp::ScRecall>(in);
      m.alloc_id = SteerAlloc(m.alloc_id);
      m.page = SteerPage(m.page);
      return Raw(m);
    }
    case hp::kScRecalled: {
      auto m = Fill<hp::ScRecalled>(in);
      m.alloc_id = SteerAlloc(m.alloc_id);
      m.page = SteerPage(m.page);
      return Raw(m);
    }
  }
  return in.String(64);
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
    if (op < 6) {
      const int peer = PickPeer(in);
      const uint8_t pick = in.U8();
      uint16_t type = kTypes[pick % std::size(kTypes)];
      if (pick >= 0xf0) type = in.U16();  // any type at all
      // Now and then a body of any length, to reach the size checks.
      const std::string body = (pick & 0x10) ? in.String(80) : Body(in, type);
      rank.Deliver(peer, type, body);
    } else if (op == 6) {
      const uint32_t id = 1 + in.Below(FuzzRank::kAllocations);
      rank.Touch(id, in.U8());
    } else {
      rank.PeerDied(PickPeer(in));
    }
  }
  return 0;
}
