// fake_peer_transport.cc - peers as buffers, operations served on the
// posting thread.
#include "runtime/testing/fake_peer_transport.h"

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_format.h"

namespace pagewire::testing {

FakePeerTransport::FakePeerTransport(uintptr_t base, uint64_t size, int nranks)
    : base_(base),
      size_(size),
      nranks_(nranks),
      event_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      dead_(nranks) {
  for (int p = 0; p < nranks; ++p) {
    // Lazily backed zeros, like a rank's untouched global range.
    void* m = ::mmap(nullptr, size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    memory_.emplace_back(m == MAP_FAILED ? nullptr : static_cast<char*>(m));
  }
}

FakePeerTransport::~FakePeerTransport() {
  for (auto& m : memory_) {
    if (m) ::munmap(m.release(), size_);
  }
  ::close(event_fd_);
}

char* FakePeerTransport::PeerMemory(int peer, uintptr_t addr) {
  return memory_[peer].get() + (addr - base_);
}

uint64_t FakePeerTransport::PeerWord(int peer, uintptr_t addr) {
  absl::MutexLock serve(&serve_mutex_);
  uint64_t v;
  std::memcpy(&v, PeerMemory(peer, addr), sizeof(v));
  return v;
}

void FakePeerTransport::SetGate(Gate gate) {
  absl::MutexLock lock(&mutex_);
  gate_ = std::move(gate);
}

void FakePeerTransport::SetMessageHook(MessageHook hook) {
  absl::MutexLock lock(&mutex_);
  hook_ = std::move(hook);
}

std::vector<FakePeerTransport::Message> FakePeerTransport::messages() const {
  absl::MutexLock lock(&mutex_);
  return messages_;
}

void FakePeerTransport::Deliver(int peer, uint16_t type,
                                absl::Span<const char> body) {
  MessageHandler handler;
  {
    absl::MutexLock lock(&mutex_);
    handler = handler_;
  }
  if (handler) handler(peer, type, body);
}

uint64_t FakePeerTransport::served(WorkOpcode op) const {
  absl::MutexLock lock(&mutex_);
  return served_[static_cast<int>(op)];
}

absl::StatusOr<MemoryRegion> FakePeerTransport::RegisterMemory(
    void* addr, uint64_t length) {
  absl::MutexLock lock(&mutex_);
  MemoryRegion r;
  r.addr = reinterpret_cast<uintptr_t>(addr);
  r.length = length;
  r.lkey = r.rkey = next_key_++;
  regions_.push_back(r);
  return r;
}

absl::Status FakePeerTransport::DeregisterMemory(const MemoryRegion& region) {
  absl::MutexLock lock(&mutex_);
  for (auto it = regions_.begin(); it != regions_.end(); ++it) {
    if (it->lkey == region.lkey) {
      regions_.erase(it);
      return absl::OkStatus();
    }
  }
  return absl::NotFoundError("fake transport: no such region");
}

absl::Status FakePeerTransport::Connect(int, const TransportEndpoint&) {
  return absl::OkStatus();
}

void FakePeerTransport::PeerDied(int peer) {
  absl::MutexLock lock(&mutex_);
  if (peer >= 0 && peer < nranks_) dead_[peer] = true;
}

WcStatus FakePeerTransport::Serve(int peer, const WorkRequest& wr) {
  {
    absl::MutexLock lock(&mutex_);
    if (dead_[peer]) return WcStatus::kPeerGone;
    bool local_ok = false;
    for (const MemoryRegion& r : regions_) {
      const uintptr_t a = reinterpret_cast<uintptr_t>(wr.local);
      if (r.lkey == wr.lkey && a >= r.addr && a + wr.length <= r.addr + r.length) {
        local_ok = true;
      }
    }
    if (!local_ok) return WcStatus::kLocalProtectionError;
    ++served_[static_cast<int>(wr.opcode)];
  }
  if (wr.rkey != kPeerKey || wr.remote_addr < base_ ||
      wr.remote_addr + wr.length > base_ + size_) {
    return WcStatus::kRemoteAccessError;
  }
  absl::MutexLock serve(&serve_mutex_);
  char* remote = PeerMemory(peer, wr.remote_addr);
  switch (wr.opcode) {
    case WorkOpcode::kRead:
      std::memcpy(wr.local, remote, wr.length);
      break;
    case WorkOpcode::kWrite:
      std::memcpy(remote, wr.local, wr.length);
      break;
    case WorkOpcode::kFetchAdd:
    case WorkOpcode::kCompareSwap: {
      uint64_t old;
      std::memcpy(&old, remote, sizeof(old));
      uint64_t now = wr.opcode == WorkOpcode::kFetchAdd ? old + wr.compare_add
                     : old == wr.compare_add            ? wr.swap
                                                        : old;
      std::memcpy(remote, &now, sizeof(now));
      std::memcpy(wr.local, &old, sizeof(old));
      break;
    }
  }
  return WcStatus::kSuccess;
}

absl::Status FakePeerTransport::PostSend(int peer, WorkRequest* chain) {
  if (peer < 0 || peer >= nranks_ || !memory_[peer]) {
    return absl::InvalidArgumentError(
        absl::StrFormat("fake transport: no peer %d", peer));
  }
  for (WorkRequest* wr = chain; wr != nullptr; wr = wr->next) {
    Gate gate;
    {
      absl::MutexLock lock(&mutex_);
      gate = gate_;
    }
    if (gate) gate(peer, *wr);
    const WcStatus status = Serve(peer, *wr);
    if (status != WcStatus::kSuccess || wr->signaled) {
      WorkCompletion wc;
      wc.wr_id = wr->wr_id;
      wc.status = status;
      wc.opcode = wr->opcode;
      wc.peer = peer;
      wc.byte_len = wr->length;
      Complete(wc);
    }
  }
  return absl::OkStatus();
}

void FakePeerTransport::Complete(const WorkCompletion& wc) {
  absl::MutexLock lock(&mutex_);
  completions_.push_back(wc);
  uint64_t one = 1;
  ssize_t n = ::write(event_fd_, &one, sizeof(one));
  (void)n;
}

int FakePeerTransport::PollCompletions(WorkCompletion* out, int max) {
  absl::MutexLock lock(&mutex_);
  int n = 0;
  while (n < max && !completions_.empty()) {
    out[n++] = completions_.front();
    completions_.pop_front();
  }
  if (completions_.empty()) {
    // Quiet until the next completion writes it again.
    uint64_t count;
    ssize_t r = ::read(event_fd_, &count, sizeof(count));
    (void)r;
  }
  return n;
}

void FakePeerTransport::SetMessageHandler(MessageHandler handler) {
  absl::MutexLock lock(&mutex_);
  handler_ = std::move(handler);
}

absl::Status FakePeerTransport::SendMessage(int peer, uint16_t type,
                                            absl::Span<const char> body) {
  Message m{peer, type, std::string(body.data(), body.size())};
  MessageHook hook;
  {
    absl::MutexLock lock(&mutex_);
    if (peer < 0 || peer >= nranks_ || dead_[peer]) {
      return absl::UnavailableError(
          absl::StrFormat("fake transport: peer %d is dead or unknown", peer));
    }
    messages_.push_back(m);
    hook = hook_;
  }
  if (hook) hook(m);
  return absl::OkStatus();
}

}  // namespace pagewire::testing
