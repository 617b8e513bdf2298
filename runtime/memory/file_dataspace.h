// file_dataspace.h - a file as a dataspace, read asynchronously: a real slow
// manager.
//
// Page requests queue up for the manager's own I/O threads ("pw-file-io"),
// which pread(2) into the request's landing buffer and post the answer. The
// fault loop never waits for the disk. Pages past the end of the file read as
// zeros up to the page boundary; the dataspace's size is the file's, rounded
// up to a page. Writes to installed pages stay in memory (like MAP_PRIVATE).
//
// Threads: RequestPage() from the fault loop; the I/O threads are private.
#ifndef PAGEWIRE_RUNTIME_MEMORY_FILE_DATASPACE_H_
#define PAGEWIRE_RUNTIME_MEMORY_FILE_DATASPACE_H_

#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "runtime/memory/dataspace.h"

namespace pagewire {

class FileDataspace final : public Dataspace {
 public:
  static absl::StatusOr<std::shared_ptr<FileDataspace>> Open(
      const std::string& path, int io_threads = 2);
  // Answers every queued request before the I/O threads end.
  ~FileDataspace() override;

  uint64_t size() const override { return size_; }
  void RequestPage(const PageRequest& request) override;
  std::string Describe() const override { return "file " + path_; }

 private:
  FileDataspace(int fd, std::string path, uint64_t file_size, int io_threads);
  void Serve();

  const int fd_;
  const std::string path_;
  const uint64_t file_size_;
  const uint64_t size_;

  absl::Mutex mutex_;
  std::deque<PageRequest> queue_ ABSL_GUARDED_BY(mutex_);
  bool closing_ ABSL_GUARDED_BY(mutex_) = false;
  std::vector<std::thread> io_threads_;
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_MEMORY_FILE_DATASPACE_H_
