// bare_uffd_loop.h - the floor of a userfaultfd fault: the least a handler
// can do per fault (poll, read a batch of events, UFFDIO_COPY each from a
// resident source page). Benchmarks measure the fault service against it.
//
// The loop is the one in bench/fault_latency.cc (BareLoop), with the range's
// address a parameter so that several benchmarks can place it clear of their
// own mappings. fault_latency keeps its private copy for now: switching it
// over means adding ":bare_uffd_loop" to its target's deps.
//
// Threads: Create, Reset, base and the destructor from the owner; any thread
// may fault on the range. The loop runs on its own thread, "bare-uffd".
#ifndef PAGEWIRE_BENCH_BARE_UFFD_LOOP_H_
#define PAGEWIRE_BENCH_BARE_UFFD_LOOP_H_

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "runtime/base/page.h"

namespace pagewire {
namespace bench {

class BareUffdLoop {
 public:
  // Maps [base, base + bytes) (MAP_FIXED_NOREPLACE), registers it for
  // missing-page faults and starts the loop. The source pages hold `fill`.
  static absl::StatusOr<std::unique_ptr<BareUffdLoop>> Create(uintptr_t base,
                                                              uint64_t bytes,
                                                              char fill) {
    std::unique_ptr<BareUffdLoop> loop(new BareUffdLoop(base, bytes));
    if (absl::Status s = loop->Setup(fill); !s.ok()) return s;
    loop->thread_ = std::thread([l = loop.get()] { l->Run(); });
    return loop;
  }

  ~BareUffdLoop() {
    if (thread_.joinable()) {
      uint64_t one = 1;
      ssize_t n = ::write(stop_, &one, sizeof(one));
      (void)n;
      thread_.join();
    }
    if (mapped_) ::munmap(base(), bytes_);
    if (source_ != nullptr) ::munmap(source_, bytes_);
    if (uffd_ >= 0) ::close(uffd_);
    if (stop_ >= 0) ::close(stop_);
  }
  BareUffdLoop(const BareUffdLoop&) = delete;
  BareUffdLoop& operator=(const BareUffdLoop&) = delete;

  char* base() const { return reinterpret_cast<char*>(base_); }
  uint64_t bytes() const { return bytes_; }
  // Drops every installed page: the next access to each faults again.
  void Reset() { ::madvise(base(), bytes_, MADV_DONTNEED); }

 private:
  BareUffdLoop(uintptr_t base, uint64_t bytes) : base_(base), bytes_(bytes) {}

  absl::Status Setup(char fill) {
    uffd_ = static_cast<int>(
        ::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
    if (uffd_ < 0) return Errno("userfaultfd");
    uffdio_api api{UFFD_API, 0, 0};
    if (::ioctl(uffd_, UFFDIO_API, &api) != 0) return Errno("UFFDIO_API");
    void* p = ::mmap(base(), bytes_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE |
                         MAP_FIXED_NOREPLACE,
                     -1, 0);
    if (p == MAP_FAILED) return Errno("mmap of the floor range");
    mapped_ = true;
    uffdio_register reg{};
    reg.range = {base_, bytes_};
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (::ioctl(uffd_, UFFDIO_REGISTER, &reg) != 0) {
      return Errno("UFFDIO_REGISTER");
    }
    // Distinct source pages, like a dataspace's storage, already resident.
    void* s = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) return Errno("mmap of the source pages");
    source_ = static_cast<char*>(s);
    std::memset(source_, fill, bytes_);
    stop_ = ::eventfd(0, EFD_CLOEXEC);
    if (stop_ < 0) return Errno("eventfd");
    return absl::OkStatus();
  }

  static absl::Status Errno(const char* what) {
    return absl::InternalError(
        absl::StrFormat("bare uffd loop: %s: %s", what, std::strerror(errno)));
  }

  void Run() {
    pthread_setname_np(pthread_self(), "bare-uffd");
    pollfd fds[2] = {{uffd_, POLLIN, 0}, {stop_, POLLIN, 0}};
    // A batch as large as the fault service's (kEventBatch).
    uffd_msg msgs[64];
    for (;;) {
      if (::poll(fds, 2, -1) < 0) continue;  // EINTR
      if (fds[1].revents) return;
      ssize_t n;
      while ((n = ::read(uffd_, msgs, sizeof(msgs))) > 0) {
        const ssize_t count = n / static_cast<ssize_t>(sizeof(uffd_msg));
        for (ssize_t i = 0; i < count; ++i) {
          const uint64_t page =
              msgs[i].arg.pagefault.address & ~(kPageSize - 1);
          uffdio_copy copy{};
          copy.dst = page;
          copy.src = reinterpret_cast<uintptr_t>(source_ + (page - base_));
          copy.len = kPageSize;
          ::ioctl(uffd_, UFFDIO_COPY, &copy);  // EEXIST: already woken
        }
      }
    }
  }

  const uintptr_t base_;
  const uint64_t bytes_;
  int uffd_ = -1;
  int stop_ = -1;
  bool mapped_ = false;
  char* source_ = nullptr;
  std::thread thread_;
};

}  // namespace bench
}  // namespace pagewire

#endif  // PAGEWIRE_BENCH_BARE_UFFD_LOOP_H_
