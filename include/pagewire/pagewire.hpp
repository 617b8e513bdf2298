// pagewire.hpp - the C++ API of Pagewire, over the C API.
//
//   absl::StatusOr<pagewire::Session> pw = pagewire::Session::Init(&argc, &argv);
//   auto grid = pw->Alloc<double>(n * n, PW_PLACE_BLOCK);   // collective
//   (*grid)[i] = 1.0;                                      // plain stores
//   pw->Barrier();
//
// Session is the RAII runtime: it calls pw_finalize() when it goes away.
// GlobalArray<T> owns a collective allocation and frees it (collectively)
// when destroyed: every rank must destroy its arrays in the same order, as
// with every collective. Errors are absl::Status values whose message names
// the problem and the fix. Link with `pkg-config --libs pagewire` plus
// Abseil's status library (`pkg-config --libs absl_statusor`).
#ifndef PAGEWIRE_PAGEWIRE_HPP_
#define PAGEWIRE_PAGEWIRE_HPP_

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pagewire/pagewire.h"

namespace pagewire {

// The absl::Status for a pw_status_t, with pw_last_error() as its message.
inline absl::Status ToStatus(pw_status_t s) {
  const std::string detail = pw_last_error();
  const std::string message =
      detail.empty() ? std::string(pw_status_str(s)) : detail;
  switch (s) {
    case PW_OK: return absl::OkStatus();
    case PW_ERR_INVALID_ARGUMENT: return absl::InvalidArgumentError(message);
    case PW_ERR_NOT_INITIALIZED:
    case PW_ERR_ALREADY_INITIALIZED:
      return absl::FailedPreconditionError(message);
    case PW_ERR_UNSUPPORTED: return absl::UnimplementedError(message);
    case PW_ERR_PERMISSION: return absl::PermissionDeniedError(message);
    case PW_ERR_NO_MEMORY: return absl::ResourceExhaustedError(message);
    case PW_ERR_NOT_FOUND: return absl::NotFoundError(message);
    case PW_ERR_UNAVAILABLE: return absl::UnavailableError(message);
    case PW_ERR_INTERNAL: return absl::InternalError(message);
    case PW_ERR_STATE: return absl::FailedPreconditionError(message);
    case PW_ERR_NOT_MEMBER: return absl::AbortedError(message);
  }
  return absl::UnknownError(message);
}

// A typed collective allocation of global memory. Move-only.
template <typename T>
class GlobalArray {
  static_assert(std::is_trivially_copyable<T>::value,
                "global memory holds plain data: pointers into it are valid "
                "on every rank, but objects with owning pointers are not");

 public:
  GlobalArray() = default;
  GlobalArray(GlobalArray&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  GlobalArray& operator=(GlobalArray&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  GlobalArray(const GlobalArray&) = delete;
  GlobalArray& operator=(const GlobalArray&) = delete;
  ~GlobalArray() { Reset(); }

  T* data() const { return data_; }
  size_t size() const { return size_; }
  T& operator[](size_t i) const { return data_[i]; }
  T* begin() const { return data_; }
  T* end() const { return data_ + size_; }

  // Frees the allocation now (collective).
  absl::Status Free() {
    if (data_ == nullptr) return absl::OkStatus();
    pw_status_t s = pw_free(data_);
    data_ = nullptr;
    size_ = 0;
    return ToStatus(s);
  }

 private:
  friend class Session;
  GlobalArray(T* data, size_t size) : data_(data), size_(size) {}
  void Reset() { (void)Free(); }

  T* data_ = nullptr;
  size_t size_ = 0;
};

// The runtime of this process. Move-only; pw_finalize() on destruction.
class Session {
 public:
  static absl::StatusOr<Session> Init(int* argc = nullptr,
                                      char*** argv = nullptr) {
    pw_status_t s = pw_init(argc, argv);
    if (s != PW_OK) return ToStatus(s);
    return Session(true);
  }

  Session(Session&& other) noexcept
      : active_(std::exchange(other.active_, false)) {}
  Session& operator=(Session&& other) noexcept {
    if (this != &other) {
      Finalize();
      active_ = std::exchange(other.active_, false);
    }
    return *this;
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session() { Finalize(); }

  int rank() const { return pw_rank(); }
  int nranks() const { return pw_nranks(); }

  // Collective: `count` elements of T, homed by `placement`.
  template <typename T>
  absl::StatusOr<GlobalArray<T>> Alloc(size_t count,
                                       pw_placement_t placement = PW_PLACE_BLOCK) {
    if (count == 0 || count > SIZE_MAX / sizeof(T)) {
      return absl::InvalidArgumentError(
          "Session::Alloc: the element count must be positive and its size "
          "in bytes must fit a size_t");
    }
    void* p = pw_alloc(count * sizeof(T), placement);
    if (p == nullptr) return ToStatus(PW_ERR_INVALID_ARGUMENT);
    return GlobalArray<T>(static_cast<T*>(p), count);
  }
  // Collective: every page homed on `home_rank`.
  template <typename T>
  absl::StatusOr<GlobalArray<T>> AllocOn(size_t count, int home_rank) {
    if (count == 0 || count > SIZE_MAX / sizeof(T)) {
      return absl::InvalidArgumentError(
          "Session::AllocOn: the element count must be positive and its size "
          "in bytes must fit a size_t");
    }
    void* p = pw_alloc_on(count * sizeof(T), home_rank);
    if (p == nullptr) return ToStatus(PW_ERR_INVALID_ARGUMENT);
    return GlobalArray<T>(static_cast<T*>(p), count);
  }

  // Collective: sequentially consistent memory (pw_alloc_sc): loads see
  // the latest store of any rank without barriers; std::atomic_ref and the
  // CPU's atomics work across ranks on it.
  template <typename T>
  absl::StatusOr<GlobalArray<T>> AllocSequential(
      size_t count, pw_placement_t placement = PW_PLACE_BLOCK) {
    if (count == 0 || count > SIZE_MAX / sizeof(T)) {
      return absl::InvalidArgumentError(
          "Session::AllocSequential: the element count must be positive and "
          "its size in bytes must fit a size_t");
    }
    void* p = pw_alloc_sc(count * sizeof(T), placement);
    if (p == nullptr) return ToStatus(PW_ERR_INVALID_ARGUMENT);
    return GlobalArray<T>(static_cast<T*>(p), count);
  }

  absl::Status Barrier() { return ToStatus(pw_barrier()); }

  absl::StatusOr<pw_stats_t> Stats() const {
    pw_stats_t s;
    pw_status_t rc = pw_get_stats(&s);
    if (rc != PW_OK) return ToStatus(rc);
    return s;
  }

 private:
  explicit Session(bool active) : active_(active) {}
  void Finalize() {
    if (active_) pw_finalize();
    active_ = false;
  }
  bool active_ = false;
};

}  // namespace pagewire

#endif  // PAGEWIRE_PAGEWIRE_HPP_
