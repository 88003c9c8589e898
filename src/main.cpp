// mdi-llm: the executable. Parses the flags on every rank, then runs the pipeline.
#include <mpi.h>

#include <cstdio>

#include "mdi/cli.h"
#include "mdi/error.h"
#include "mdi/file.h"
#include "mdi/pipeline.h"
#include "mdi/ring.h"

int main(int argc, char** argv) {
  mdi::default_transport_settings();
  MPI_Init(&argc, &argv);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  mdi::set_where(rank);
  mdi::ParseResult p = mdi::parse_cli(argc, argv);
  int code = p.exit_code;
  if (p.exit) {  // --help, --version, or a bad flag
    if (rank == 0 && code != 0) std::fputs(p.message.c_str(), stderr);
    if (rank == 0 && code == 0) {
      try {
        mdi::write_stdout(p.message, "");
      } catch (const mdi::UserError& e) {
        std::fprintf(stderr, "mdi-llm: error: %s\n", e.what());
        code = 1;
      }
    }
  } else {
    try {
      code = mdi::run(p.options, MPI_COMM_WORLD);
    } catch (const std::exception& e) {
      mdi::abort_job(std::string("internal error: ") + e.what());
    }
  }
  MPI_Finalize();
  return code;
}
