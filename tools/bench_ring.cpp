// A ring benchmark for the rendezvous hold-up (docs/h200/README.md, "More cores per rank, other
// machines, GPT-2 medium"): N ranks pass N messages of BYTES around a ring as mdi-llm's workers do
// (receive posted before compute, three buffers, MPI_Isend after compute); "compute" is MS
// milliseconds of sleep per message, split into POLLS parts with MPI_Testall on the pending sends
// between them (1: no polling, as a rank that computes a whole pass). Prints per rank the time
// per message against MS and the share spent waiting for input.
//   cmake --build build --target bench_ring
//   mpirun -np 3 --mca btl_vader_single_copy_mechanism none build/bench_ring 4300 50 10 1
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, n = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  if (argc != 5) {
    if (rank == 0) std::fprintf(stderr, "usage: bench_ring BYTES LAPS MS POLLS\n");
    MPI_Finalize();
    return 2;
  }
  const int bytes = std::atoi(argv[1]), laps = std::atoi(argv[2]), polls = std::max(1, std::atoi(argv[4]));
  const double ms = std::atof(argv[3]);
  const int next = (rank + 1) % n, prev = (rank + n - 1) % n;
  std::vector<std::vector<char>> buf(3, std::vector<char>(size_t(std::max(bytes, 1))));
  MPI_Request sreq[3] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL, MPI_REQUEST_NULL}, rreq = MPI_REQUEST_NULL;
  auto compute = [&] {
    for (int i = 0; i < polls; ++i) {
      usleep(useconds_t(ms * 1000.0 / polls));
      int done = 0;
      if (polls > 1) MPI_Testall(3, sreq, &done, MPI_STATUSES_IGNORE);
    }
  };
  const int todo = laps * n;  // messages through this rank
  double wait = 0.0;
  MPI_Barrier(MPI_COMM_WORLD);
  const double t0 = MPI_Wtime();
  if (rank == 0)  // the n messages enter the ring
    for (int i = 0; i < n; ++i) {
      compute();
      MPI_Send(buf[0].data(), bytes, MPI_CHAR, next, 0, MPI_COMM_WORLD);
    }
  int cur = 0;
  MPI_Irecv(buf[cur].data(), bytes, MPI_CHAR, prev, 0, MPI_COMM_WORLD, &rreq);
  for (int k = 0; k < todo; ++k) {
    const double w = MPI_Wtime();
    MPI_Wait(&rreq, MPI_STATUS_IGNORE);
    wait += MPI_Wtime() - w;
    const int nxt = (cur + 1) % 3;
    MPI_Wait(&sreq[nxt], MPI_STATUS_IGNORE);
    if (k + 1 < todo) MPI_Irecv(buf[nxt].data(), bytes, MPI_CHAR, prev, 0, MPI_COMM_WORLD, &rreq);
    compute();
    if (!(rank == 0 && k >= todo - n))  // rank 0 keeps the last lap's messages
      MPI_Isend(buf[cur].data(), bytes, MPI_CHAR, next, 0, MPI_COMM_WORLD, &sreq[cur]);
    cur = nxt;
  }
  MPI_Waitall(3, sreq, MPI_STATUSES_IGNORE);
  const double total = MPI_Wtime() - t0;
  std::printf("rank %d: %d bytes, %d polls: %.2f ms per message (compute %.2f), waiting %.0f%%\n", rank, bytes,
              polls, 1e3 * total / todo, ms, 100.0 * wait / total);
  MPI_Finalize();
  return 0;
}
