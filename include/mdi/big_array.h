// An array for a rank's big buffers: its weights (gigabytes filled once by the loader, then only
// read) and its CPU KV cache. Its memory comes straight from mmap, so the array is not zero-filled
// in user space (the kernel's pages are zero), and it asks for transparent huge pages (madvise), so
// that filling it takes a page fault per 2 MiB instead of per 4 KiB where the kernel offers them.
// Both mattered: loading GPT-2 XL (fp16, 6.2 GB as fp32) on this project's 2-core VM spent 22% of
// its time in a std::vector's zero-fill and about 40% in page faults. Linux only, like the rest of
// the project.
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace mdi {

// Memory of at least `bytes`, zero, 2 MiB aligned with a huge-page hint (under AddressSanitizer:
// from the heap, 64-byte aligned). Throws std::bad_alloc when the system has no room.
void* big_alloc(size_t bytes, size_t& mapped);
void big_free(void* p, size_t mapped);
// Writes a zero byte into every page of [p, p + bytes) (already zero): the pages are mapped now,
// so that writes to them later take no page fault.
void big_touch(void* p, size_t bytes);

template <typename T>
class BigArray {
  static_assert(std::is_trivial_v<T>, "BigArray holds plain values (no constructors run)");

 public:
  BigArray() = default;
  BigArray(const BigArray&) = delete;
  BigArray& operator=(const BigArray&) = delete;
  BigArray(BigArray&& o) noexcept { swap(o); }
  BigArray& operator=(BigArray&& o) noexcept {
    BigArray(std::move(o)).swap(*this);
    return *this;
  }
  ~BigArray() { big_free(data_, mapped_); }

  // n value-initialised (zero) elements; what was there is dropped.
  void resize(size_t n) {
    BigArray fresh;
    if (n > 0) fresh.data_ = static_cast<T*>(big_alloc(n * sizeof(T), fresh.mapped_));
    fresh.size_ = n;
    swap(fresh);
  }
  // Maps every page now (a KV cache: no page faults later, on the token path).
  void touch_pages() { big_touch(data_, size_ * sizeof(T)); }
  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  T* begin() { return data_; }
  T* end() { return data_ + size_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size_; }

 private:
  void swap(BigArray& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(mapped_, o.mapped_);
  }
  T* data_ = nullptr;
  size_t size_ = 0;
  size_t mapped_ = 0;  // bytes mapped (0: nothing)
};

}  // namespace mdi
