// Recurrent pipelining over the ring: the whole mdi-llm run (set-up, generation, report) for one
// rank. Rank 0 embeds, samples and reports; every rank runs its layer range on the micro-batches
// that pass through it.
#pragma once

#include <mpi.h>

#include "mdi/cli.h"

namespace mdi {

// Returns the process exit status: 0, 1 for a user error (reported once by rank 0).
// Internal failures abort the whole job.
int run(const Options& options, MPI_Comm world);

}  // namespace mdi
