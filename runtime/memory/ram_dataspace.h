// ram_dataspace.h - anonymous memory as a dataspace.
//
// The manager has every page at hand, so it answers inline, pointing the
// fault service at its own storage (no extra copy). Storage is reserved
// lazily: untouched pages cost nothing and read as zeros.
//
// Threads: RequestPage() from the fault loop; data() for filling the
// dataspace before it is attached (or through the coherence protocol).
#ifndef PAGEWIRE_RUNTIME_MEMORY_RAM_DATASPACE_H_
#define PAGEWIRE_RUNTIME_MEMORY_RAM_DATASPACE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "runtime/memory/dataspace.h"

namespace pagewire {

class RamDataspace final : public Dataspace {
 public:
  static absl::StatusOr<std::shared_ptr<RamDataspace>> Create(uint64_t size);
  ~RamDataspace() override;

  char* data() { return data_; }

  uint64_t size() const override { return size_; }
  void RequestPage(const PageRequest& request) override;
  std::string Describe() const override;

 private:
  RamDataspace(char* data, uint64_t size) : data_(data), size_(size) {}
  char* const data_;
  const uint64_t size_;
};

}  // namespace pagewire

#endif  // PAGEWIRE_RUNTIME_MEMORY_RAM_DATASPACE_H_
