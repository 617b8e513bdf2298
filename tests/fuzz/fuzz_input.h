// fuzz_input.h - reads a fuzzer's input as a sequence of values: fixed-width
// little-endian integers and byte strings, zeros once the input runs out
// (so every input, however short, is a valid sequence of choices).
//
// A small stand-in for clang's FuzzedDataProvider, which only clang ships:
// the fuzz targets also build with gcc (tests/fuzz/replay_main.cc).
#ifndef PAGEWIRE_TESTS_FUZZ_FUZZ_INPUT_H_
#define PAGEWIRE_TESTS_FUZZ_FUZZ_INPUT_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace pagewire::fuzz {

// An argument list from `text`: NUL-separated words (at most 24). A word
// whose first byte is below the table's size starts with that known word
// (`words[byte]`), the rest of it appended; any other is taken as it is.
template <size_t N>
std::vector<std::string> SplitWords(const std::string& text,
                                    const char* const (&words)[N]) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size() && out.size() < 24) {
    size_t end = text.find('\0', start);
    if (end == std::string::npos) end = text.size();
    std::string w = text.substr(start, end - start);
    if (!w.empty() && static_cast<uint8_t>(w[0]) < N) {
      w = words[static_cast<uint8_t>(w[0])] + w.substr(1);
    }
    out.push_back(w);
    start = end + 1;
  }
  return out;
}

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return size_ == 0; }
  size_t remaining() const { return size_; }

  template <typename T>
  T Integral() {
    T v{};
    const size_t n = size_ < sizeof(T) ? size_ : sizeof(T);
    if (n > 0) std::memcpy(&v, data_, n);
    data_ += n;
    size_ -= n;
    return v;
  }
  uint8_t U8() { return Integral<uint8_t>(); }
  uint16_t U16() { return Integral<uint16_t>(); }
  uint32_t U32() { return Integral<uint32_t>(); }
  uint64_t U64() { return Integral<uint64_t>(); }
  bool Bool() { return (U8() & 1) != 0; }
  // A value in [0, n), n > 0.
  uint32_t Below(uint32_t n) { return U32() % n; }

  // Up to `n` bytes (fewer if the input ends).
  std::string Bytes(size_t n) {
    if (n > size_) n = size_;
    std::string s(reinterpret_cast<const char*>(data_), n);
    data_ += n;
    size_ -= n;
    return s;
  }
  // A string whose length (0..max_len) comes first.
  std::string String(size_t max_len) { return Bytes(U8() % (max_len + 1)); }
  std::string Rest() { return Bytes(size_); }

 private:
  const uint8_t* data_;
  size_t size_;
};

}  // namespace pagewire::fuzz

#endif  // PAGEWIRE_TESTS_FUZZ_FUZZ_INPUT_H_
