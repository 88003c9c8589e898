// The CUDA backend: the Backend interface (backend.h) on one GPU, with cuBLAS GEMMs (fp32
// accumulation) and own kernels (src/cuda/ops.cu). Weights and the KV cache live on the GPU in
// the chosen dtype; everything is allocated once in the constructor. Builds without CUDA get
// stubs that throw UserError, so callers need no #ifdef; in CUDA builds the functions below load
// the backend, a plugin beside libmdi_core.so (src/cuda/plugin.h), on first use.
#pragma once

#include <cstddef>
#include <memory>

#include "mdi/backend.h"

namespace mdi {

// Storage type of the weight matrices, embeddings and KV cache on the GPU. The residual stream,
// LayerNorm parameters, biases, GEMM accumulation and outputs stay fp32.
enum class DType { kF32, kF16, kBF16 };

const char* dtype_name(DType dt);  // "fp32", "fp16", "bf16"
size_t dtype_size(DType dt);       // bytes per element

// Built with CUDA and at least one device visible.
bool cuda_available();
// Devices visible (0 when built without CUDA or when the driver reports none / an error).
int cuda_device_count();

// Throws mdi::UserError when built without CUDA ("this build has no CUDA support"), when no GPU
// is visible, when `device` is out of range, when the GPU cannot hold weights + workspace, or
// when bf16 is asked of a GPU below compute capability 8.0. The weights are copied to the GPU:
// w may be freed once this returns.
std::unique_ptr<Backend> make_cuda_backend(const Config& cfg, const Weights& w,
                                           const BackendSpec& spec, int device, DType dtype);

}  // namespace mdi
