// file_dataspace.cc - pread(2) on the manager's threads, answers by post.
#include "runtime/memory/file_dataspace.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "runtime/fault/completion_queue.h"
#include "runtime/base/page.h"

namespace pagewire {

absl::StatusOr<std::shared_ptr<FileDataspace>> FileDataspace::Open(
    const std::string& path, int io_threads) {
  if (io_threads < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "file dataspace %s: io_threads is %d; it needs at least 1", path,
        io_threads));
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrFormat(
        "cannot open %s for a file dataspace: %s", path, strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is not a non-empty regular file; a file dataspace needs one",
        path));
  }
  return std::shared_ptr<FileDataspace>(new FileDataspace(
      fd, path, static_cast<uint64_t>(st.st_size), io_threads));
}

FileDataspace::FileDataspace(int fd, std::string path, uint64_t file_size,
                             int io_threads)
    : fd_(fd),
      path_(std::move(path)),
      file_size_(file_size),
      size_(PageUp(file_size)) {
  for (int i = 0; i < io_threads; ++i) {
    io_threads_.emplace_back([this] { Serve(); });
  }
}

FileDataspace::~FileDataspace() {
  {
    absl::MutexLock lock(&mutex_);
    closing_ = true;
  }
  for (std::thread& t : io_threads_) t.join();
  ::close(fd_);
}

void FileDataspace::RequestPage(const PageRequest& request) {
  if (request.upgrade) {
    request.completion_queue->Post(
        OutcomeCompletion(request, Resolution::kWritable));
    return;
  }
  absl::MutexLock lock(&mutex_);
  queue_.push_back(request);
}

void FileDataspace::Serve() {
  pthread_setname_np(pthread_self(), "pw-file-io");
  for (;;) {
    PageRequest request;
    {
      absl::MutexLock lock(&mutex_);
      // Waits for work without a timeout; closing ends the wait.
      mutex_.Await(absl::Condition(
          +[](FileDataspace* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(
               self->mutex_) { return self->closing_ || !self->queue_.empty(); },
          this));
      if (queue_.empty()) return;  // closing, and every request answered
      request = queue_.front();
      queue_.pop_front();
    }
    char* landing = static_cast<char*>(request.landing);
    uint64_t want = std::min(kPageSize, file_size_ - request.offset);
    uint64_t got = 0;
    int err = 0;
    while (got < want) {
      ssize_t n = ::pread(fd_, landing + got, want - got,
                          static_cast<off_t>(request.offset + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        err = n < 0 ? errno : 0;
        break;
      }
      got += static_cast<uint64_t>(n);
    }
    if (got < want) {
      request.completion_queue->Post(OutcomeCompletion(
          request, Resolution::kFailed,
          absl::DataLossError(absl::StrFormat(
              "reading %s at offset 0x%x failed: %s", path_, request.offset,
              err ? strerror(err) : "the file shrank"))));
      continue;
    }
    std::memset(landing + got, 0, kPageSize - got);
    request.completion_queue->Post(DataCompletion(request, landing));
  }
}

}  // namespace pagewire
