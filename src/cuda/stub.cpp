// The CUDA backend's entry points in a build without CUDA (MDI_HAVE_CUDA off): no devices, and a
// clear UserError for anyone who asks for one. Compiled instead of src/cuda/backend.cpp.
#include "mdi/cuda_backend.h"
#include "mdi/error.h"

namespace mdi {

bool cuda_available() { return false; }
int cuda_device_count() { return 0; }

CudaStart::CudaStart(std::function<int()>, DType, int, int) {}
CudaStart::~CudaStart() = default;
void* CudaStart::take() {
  return nullptr;
}

std::unique_ptr<Backend> make_cuda_backend(const Config&, const Weights&, const BackendSpec&, int,
                                           DType, CudaStart*) {
  throw UserError("--device cuda: this build has no CUDA support (rebuild with a CUDA compiler "
                  "found by CMake)");
}

}  // namespace mdi
