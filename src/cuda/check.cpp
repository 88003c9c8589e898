// Failure paths of the CUDA / cuBLAS checking macros (check.h): one line naming the call, file,
// line and error, prefixed with host:rank by abort_job, which ends the whole job.
#include "check.h"

#include <cublas_v2.h>

#include "mdi/error.h"

namespace mdi {

void cuda_failure(cudaError_t rc, const char* call, const char* file, int line) {
  abort_job(fmt::format("CUDA error in {} ({}:{}): {} ({})", call, file, line,
                        cudaGetErrorString(rc), cudaGetErrorName(rc)));
}

void cublas_failure(cublasStatus_t rc, const char* call, const char* file, int line) {
  abort_job(fmt::format("cuBLAS error in {} ({}:{}): {} ({})", call, file, line,
                        cublasGetStatusString(rc), int(rc)));
}

}  // namespace mdi
