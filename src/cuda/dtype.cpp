// Names and sizes of the CUDA backend's storage types (built with and without CUDA).
#include "mdi/cuda_backend.h"

namespace mdi {

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::kF16: return "fp16";
    case DType::kBF16: return "bf16";
    case DType::kF32: break;
  }
  return "fp32";
}

size_t dtype_size(DType dt) { return dt == DType::kF32 ? 4 : 2; }

}  // namespace mdi
