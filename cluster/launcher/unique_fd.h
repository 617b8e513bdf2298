// unique_fd.h - an owned file descriptor, closed on destruction. Move-only.
// Single-threaded use, like everything in the launcher.
#ifndef PAGEWIRE_CLUSTER_LAUNCHER_UNIQUE_FD_H_
#define PAGEWIRE_CLUSTER_LAUNCHER_UNIQUE_FD_H_

#include <unistd.h>

#include <utility>

namespace pagewire {
namespace launcher {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace launcher
}  // namespace pagewire

#endif  // PAGEWIRE_CLUSTER_LAUNCHER_UNIQUE_FD_H_
