// The toolchain hazard behind intercept_tls_get_addr=0 in MDI_ASAN_OPTIONS (CMakeLists.txt), run
// under the same options as every sanitized test: a thread takes a dynamic TLS block of a
// dlopen'ed library (dtls_probe_lib) until one lands 16 bytes past a page boundary, stays alive,
// and the process exits, so LeakSanitizer scans that thread. With the __tls_get_addr interceptor
// of GCC <= 13 on, its tracer reads the block's "glibc 2.19 header" out of heap data and dies
// (exit 1, "Tracer caught signal 11"); without it the exit is clean. Exit 77 (skipped): no block
// landed there in 2000 threads, so the hazard was not exercised.
#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>

namespace {
void* (*block_of_thread)() = nullptr;
enum Outcome { pending, missed, landed };
std::atomic<int> outcome{pending};

void* probe(void*) {
  const auto address = reinterpret_cast<std::uintptr_t>(block_of_thread());
  const bool at_16 = address % 4096 == 16;
  outcome = at_16 ? landed : missed;
  if (at_16)
    for (;;) pause();  // alive when the process exits
  return nullptr;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: dtls_probe LIBRARY\n");
    return 2;
  }
  void* library = dlopen(argv[1], RTLD_NOW);
  if (library == nullptr) {
    std::fprintf(stderr, "dtls_probe: %s\n", dlerror());
    return 2;
  }
  block_of_thread = reinterpret_cast<void* (*)()>(dlsym(library, "dtls_probe_block"));
  if (block_of_thread == nullptr) {
    std::fprintf(stderr, "dtls_probe: %s\n", dlerror());
    return 2;
  }
  bool hit = false;
  for (int i = 0; i < 2000 && !hit; ++i) {
    outcome = pending;
    pthread_t thread;
    if (pthread_create(&thread, nullptr, probe, nullptr) != 0) return 2;
    while (outcome == pending) usleep(50);
    hit = outcome == landed;
    if (!hit) pthread_join(thread, nullptr);
  }
  std::printf(hit ? "a dynamic TLS block at 16 mod 4096 is live at exit\n"
                  : "no dynamic TLS block landed at 16 mod 4096: not exercised\n");
  return hit ? 0 : 77;
}
