// Error reporting. Every MPI and HDF5 call goes through a checking macro that names the call, the
// file and line, and the host and rank. User errors (bad flag, bad file, bad prompt) are thrown as
// mdi::UserError and reported once by rank 0 (see pipeline's coordinated exit); internal failures
// abort the whole job. Checks are never compiled out.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace mdi {

// A problem with what the user handed us: reported as one clear line, exit status 1.
struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// fmt 8 and newer check a format string against its arguments at compile time; older fmt
// (Ubuntu 20.04, JetPack 5: 6.1) checks it when it formats.
#if FMT_VERSION >= 80000
template <typename... Args>
using FormatString = fmt::format_string<Args...>;
#else
template <typename... Args>
using FormatString = fmt::string_view;
#endif

template <typename... Args>
[[noreturn]] void user_error(FormatString<Args...> f, Args&&... args) {
  throw UserError(fmt::format(f, std::forward<Args>(args)...));
}

// "1 rank", "3 ranks": a count with its noun, for messages (the plural: `many`, or `one` and an s).
inline std::string count_of(long long n, std::string_view one, std::string_view many = {}) {
  if (n == 1) return fmt::format("1 {}", one);
  return many.empty() ? fmt::format("{} {}s", n, one) : fmt::format("{} {}", n, many);
}

// "host:rank" of this process once MPI is up ("host" alone before); prefix of every error line.
const std::string& where();
void set_where(int rank);

// Prints "mdi-llm: [host:rank] <what>" to stderr and ends the whole MPI job (MPI_Abort), or the
// process when MPI is not initialised.
[[noreturn]] void abort_job(const std::string& what);

[[noreturn]] void mpi_failure(int rc, const char* call, const char* file, int line);
[[noreturn]] void h5_failure(const char* call, const char* file, int line);

}  // namespace mdi

#define MDI_MPI_CHECK(call)                                                   \
  do {                                                                        \
    int mdi_rc_ = (call);                                                     \
    if (mdi_rc_ != MPI_SUCCESS) ::mdi::mpi_failure(mdi_rc_, #call, __FILE__, __LINE__); \
  } while (0)

// For HDF5 calls returning herr_t or hid_t: negative means failure. Yields the value.
#define MDI_H5_CHECK(call)                                                          \
  ([&]() {                                                                          \
    auto mdi_v_ = (call);                                                           \
    if (mdi_v_ < 0) ::mdi::h5_failure(#call, __FILE__, __LINE__);                   \
    return mdi_v_;                                                                  \
  }())
