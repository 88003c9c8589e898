// Error reporting helpers: the "host:rank" prefix and the failure paths of the check macros.
#include "mdi/error.h"

#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace mdi {

namespace {
std::string& where_storage() {
  static std::string w = [] {
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    return std::string(host);
  }();
  return w;
}
}  // namespace

const std::string& where() { return where_storage(); }

void set_where(int rank) {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  where_storage() = fmt::format("{}:{}", host, rank);
}

void abort_job(const std::string& what) {
  std::fprintf(stderr, "mdi-llm: [%s] %s\n", where().c_str(), what.c_str());
  std::fflush(stderr);
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Abort(MPI_COMM_WORLD, 2);
  std::_Exit(2);
}

void mpi_failure(int rc, const char* call, const char* file, int line) {
  char msg[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  abort_job(fmt::format("MPI error in {} ({}:{}): {}", call, file, line, msg));
}

void h5_failure(const char* call, const char* file, int line) {
  throw UserError(fmt::format("HDF5 call {} failed ({}:{})", call, file, line));
}

}  // namespace mdi
