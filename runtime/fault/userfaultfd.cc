// userfaultfd.cc - open, handshake and register, with start-up errors that
// say what to do.
#include "runtime/fault/userfaultfd.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"

namespace pagewire {
namespace {

// Features the fault service cannot run without.
constexpr uint64_t kRequiredFeatures =
    UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_THREAD_ID;

// Ioctls every registered range must offer.
constexpr uint64_t kRequiredRangeIoctls =
    (1ULL << _UFFDIO_COPY) | (1ULL << _UFFDIO_ZEROPAGE) |
    (1ULL << _UFFDIO_WAKE) | (1ULL << _UFFDIO_WRITEPROTECT);

int KernelOpen(int flags) {
  int fd = static_cast<int>(::syscall(SYS_userfaultfd, flags));
  if (fd >= 0 || errno != EPERM) return fd;
  // The syscall refuses kernel-mode faults to the unprivileged; the device
  // node (Linux 6.1+) grants them to whoever may open it.
  int saved = errno;
  int dev = ::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev < 0) {
    errno = saved;
    return -1;
  }
  fd = ::ioctl(dev, USERFAULTFD_IOC_NEW, flags);
  ::close(dev);
  if (fd < 0) errno = saved;
  return fd;
}

}  // namespace

UffdSyscalls UffdSyscalls::Kernel() {
  UffdSyscalls sys;
  sys.open_userfaultfd = KernelOpen;
  sys.ioctl = [](int fd, unsigned long request, void* arg) {
    return ::ioctl(fd, request, arg);
  };
  return sys;
}

absl::StatusOr<Userfaultfd> Userfaultfd::Open(const UffdSyscalls& sys) {
  int fd = sys.open_userfaultfd(O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int err = errno;
    switch (err) {
      case ENOSYS:
        return absl::UnimplementedError(
            "userfaultfd is not available (ENOSYS): the kernel was built "
            "without CONFIG_USERFAULTFD, or a seccomp filter blocks the "
            "syscall. Fix: run on Linux >= 5.7 with CONFIG_USERFAULTFD=y, or "
            "allow userfaultfd in the container's seccomp profile");
      case EPERM:
        return absl::PermissionDeniedError(
            "userfaultfd refused (EPERM): handling faults raised inside the "
            "kernel needs privilege. Fix: `sysctl -w "
            "vm.unprivileged_userfaultfd=1`, or run with CAP_SYS_PTRACE, or "
            "grant read-write access to /dev/userfaultfd");
      default:
        return absl::InternalError(absl::StrFormat(
            "userfaultfd failed: %s (errno %d). Fix: check the kernel's "
            "userfaultfd support and the process's limits",
            strerror(err), err));
    }
  }

  uffdio_api api{};
  api.api = UFFD_API;
  api.features = kRequiredFeatures;
  if (sys.ioctl(fd, UFFDIO_API, &api) != 0) {
    int err = errno;
    ::close(fd);
    if (err == EINVAL) {
      return absl::UnimplementedError(
          "userfaultfd lacks write-protect faults or thread ids "
          "(UFFD_FEATURE_PAGEFAULT_FLAG_WP, UFFD_FEATURE_THREAD_ID): the "
          "UFFDIO_API handshake refused them. Fix: run on Linux >= 5.7 with "
          "CONFIG_HAVE_ARCH_USERFAULTFD_WP");
    }
    return absl::InternalError(absl::StrFormat(
        "userfaultfd UFFDIO_API handshake failed: %s", strerror(err)));
  }
  if ((api.features & kRequiredFeatures) != kRequiredFeatures) {
    ::close(fd);
    return absl::UnimplementedError(absl::StrFormat(
        "userfaultfd lacks write-protect faults or thread ids (features 0x%x "
        "offered, 0x%x needed). Fix: run on Linux >= 5.7 with "
        "CONFIG_HAVE_ARCH_USERFAULTFD_WP",
        api.features, kRequiredFeatures));
  }
  return Userfaultfd(fd, api.features, sys);
}

Userfaultfd::Userfaultfd(Userfaultfd&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      features_(other.features_),
      sys_(std::move(other.sys_)) {}

Userfaultfd& Userfaultfd::operator=(Userfaultfd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    features_ = other.features_;
    sys_ = std::move(other.sys_);
  }
  return *this;
}

Userfaultfd::~Userfaultfd() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status Userfaultfd::Register(uintptr_t start, uint64_t len) const {
  uffdio_register reg{};
  reg.range.start = start;
  reg.range.len = len;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP;
  if (sys_.ioctl(fd_, UFFDIO_REGISTER, &reg) != 0) {
    return absl::InternalError(absl::StrFormat(
        "UFFDIO_REGISTER of [0x%x, 0x%x) failed: %s. Fix: the range must be "
        "private anonymous memory owned by this process",
        start, start + len, strerror(errno)));
  }
  if ((reg.ioctls & kRequiredRangeIoctls) != kRequiredRangeIoctls) {
    return absl::UnimplementedError(absl::StrFormat(
        "the registered range offers ioctls 0x%x, but copy, zero-page, wake "
        "and write-protect (0x%x) are needed. Fix: run on Linux >= 5.7",
        reg.ioctls, kRequiredRangeIoctls));
  }
  return absl::OkStatus();
}

absl::Status Userfaultfd::Unregister(uintptr_t start, uint64_t len) const {
  uffdio_range range{start, len};
  if (sys_.ioctl(fd_, UFFDIO_UNREGISTER, &range) != 0) {
    return absl::InternalError(absl::StrFormat(
        "UFFDIO_UNREGISTER of [0x%x, 0x%x) failed: %s", start, start + len,
        strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace pagewire
