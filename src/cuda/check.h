// Checking macros for every CUDA runtime and cuBLAS call: a failure names the call, the file and
// line, and the host:rank (mdi::where), then ends the whole job (mdi::abort_job). Never compiled
// out. MDI_LAUNCH_CHECK() follows every kernel launch.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

namespace mdi {

[[noreturn]] void cuda_failure(cudaError_t rc, const char* call, const char* file, int line);
[[noreturn]] void cublas_failure(cublasStatus_t rc, const char* call, const char* file, int line);

}  // namespace mdi

#define MDI_CUDA_CHECK(call)                                                         \
  do {                                                                               \
    cudaError_t mdi_cuda_rc_ = (call);                                               \
    if (mdi_cuda_rc_ != cudaSuccess)                                                 \
      ::mdi::cuda_failure(mdi_cuda_rc_, #call, __FILE__, __LINE__);                  \
  } while (0)

#define MDI_CUBLAS_CHECK(call)                                                       \
  do {                                                                               \
    cublasStatus_t mdi_cublas_rc_ = (call);                                          \
    if (mdi_cublas_rc_ != CUBLAS_STATUS_SUCCESS)                                     \
      ::mdi::cublas_failure(mdi_cublas_rc_, #call, __FILE__, __LINE__);              \
  } while (0)

// After a kernel launch: catches bad launch configurations at once (asynchronous faults show at
// the next checked synchronising call).
#define MDI_LAUNCH_CHECK() MDI_CUDA_CHECK(cudaGetLastError())
