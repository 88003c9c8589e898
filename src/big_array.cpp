// Anonymous mappings for BigArray (include/mdi/big_array.h): 2 MiB aligned, with a huge-page hint.
// Under AddressSanitizer the memory comes from the heap instead, so that reads past a rank's
// weights stay errors ASan reports.
#include "mdi/big_array.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

#if defined(__SANITIZE_ADDRESS__)
#define MDI_BIG_ARRAY_HEAP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MDI_BIG_ARRAY_HEAP 1
#endif
#endif

namespace mdi {

#ifdef MDI_BIG_ARRAY_HEAP

void* big_alloc(size_t bytes, size_t& mapped) {
  if (bytes > SIZE_MAX / 2) throw std::bad_alloc();  // ASan would abort on it instead
  void* p = ::operator new (bytes, std::align_val_t{64});
  std::memset(p, 0, bytes);
  mapped = bytes;
  return p;
}

void big_free(void* p, size_t) {
  ::operator delete (p, std::align_val_t{64});
}

#else

namespace {
// A transparent huge page on x86-64 and aarch64 (with 4 KiB base pages).
constexpr size_t kHuge = size_t(2) << 20;
}  // namespace

void* big_alloc(size_t bytes, size_t& mapped) {
  if (bytes > SIZE_MAX - 2 * kHuge) throw std::bad_alloc();
  const size_t size = (bytes + kHuge - 1) / kHuge * kHuge;
  // Map one huge page more than needed and give back the unaligned ends.
  void* raw =
      mmap(nullptr, size + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  char* const start = static_cast<char*>(raw);
  char* const p =
      reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(start) + kHuge - 1) / kHuge * kHuge);
  if (p > start) munmap(start, size_t(p - start));
  if (start + kHuge > p) munmap(p + size, size_t(start + kHuge - p));
  madvise(p, size, MADV_HUGEPAGE);  // a hint: without THP (or with it off) the pages stay 4 KiB
  mapped = size;
  return p;
}

void big_free(void* p, size_t mapped) {
  if (p) munmap(p, mapped);
}

#endif

void big_touch(void* p, size_t bytes) {
  static const size_t page = size_t(sysconf(_SC_PAGESIZE));
  volatile char* c = static_cast<char*>(p);
  for (size_t i = 0; i < bytes; i += page) c[i] = 0;
}

}  // namespace mdi
