// userfaultfd.h - opening the process's userfaultfd and checking that the
// kernel offers what the fault service needs.
//
// The fault service needs faults raised inside the kernel too (read(2) into
// global memory), so the fd is opened without UFFD_USER_MODE_ONLY; that needs
// vm.unprivileged_userfaultfd=1, CAP_SYS_PTRACE, or access to
// /dev/userfaultfd. It needs write-protect faults for write tracking.
//
// The system calls go through UffdSyscalls so tests can inject each start-up
// failure. Every failure is a Status naming the cause and the fix.
#ifndef PAGEWIRE_RUNTIME_FAULT_USERFAULTFD_H_
#define PAGEWIRE_RUNTIME_FAULT_USERFAULTFD_H_

#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"

namespace pagewire {

struct UffdSyscalls {
  // Returns an fd or -1 with errno set, like userfaultfd(2).
  std::function<int(int flags)> open_userfaultfd;
  // Like ioctl(2) on the userfaultfd (UFFDIO_API, UFFDIO_REGISTER).
  std::function<int(int fd, unsigned long request, void* arg)> ioctl;

  static UffdSyscalls Kernel();
};

// An open userfaultfd after a successful UFFDIO_API handshake. Closes on
// destruction. Move-only.
class Userfaultfd {
 public:
  // Opens, handshakes and verifies the features. Non-blocking, close-on-exec.
  static absl::StatusOr<Userfaultfd> Open(const UffdSyscalls& sys);

  Userfaultfd(Userfaultfd&& other) noexcept;
  Userfaultfd& operator=(Userfaultfd&& other) noexcept;
  ~Userfaultfd();

  int fd() const { return fd_; }
  uint64_t features() const { return features_; }

  // Registers [start, start + len) for missing and write-protect faults and
  // checks that the range offers copy, zero-page, wake and write-protect.
  absl::Status Register(uintptr_t start, uint64_t len) const;
  absl::Status Unregister(uintptr_t start, uint64_t len) const;

 private:
  Userfaultfd(int fd, uint64_t features, UffdSyscalls sys)
      : fd_(fd), features_(features), sys_(std::move(sys)) {}

  int fd_ = -1;
  uint64_t features_ = 0;
  UffdSyscalls sys_;
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_FAULT_USERFAULTFD_H_
