// Helpers shared by the fuzz harnesses (tests/fuzz/fuzz_*.cpp): a check that aborts, so libFuzzer
// (or the replay driver) records the input, and the input bytes as a file for APIs that take a
// path.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

// Aborts with a message when cond is false: the harness found a bug.
#define FUZZ_CHECK(cond, ...)                                                             \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "FUZZ_CHECK failed: %s (%s:%d): ", #cond, __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);                                                  \
      std::fprintf(stderr, "\n");                                                         \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

namespace mdi_fuzz {

// The bytes as a file of their own, removed again by the destructor: in /dev/shm where there is
// one (memory, no disk), else in $TMPDIR or /tmp. A fresh file for every input, so that no library
// takes it for the file of an earlier input (HDF5 shares open files by inode). Not a memfd: HDF5
// resolves /proc/self/fd/N to its target and fails to open "/memfd:... (deleted)".
class TempFile {
 public:
  TempFile(const uint8_t* data, size_t size) {
    const char* dir = std::getenv("TMPDIR");
    if (access("/dev/shm", W_OK) == 0) dir = "/dev/shm";
    path_ = std::string(dir && *dir ? dir : "/tmp") + "/mdi-fuzz-XXXXXX";
    const int fd = mkstemp(path_.data());
    FUZZ_CHECK(fd >= 0, "mkstemp %s failed", path_.c_str());
    for (size_t done = 0; done < size;) {
      const ssize_t n = write(fd, data + done, size - done);
      FUZZ_CHECK(n > 0, "write to %s failed", path_.c_str());
      done += size_t(n);
    }
    close(fd);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace mdi_fuzz
