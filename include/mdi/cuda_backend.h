// The CUDA backend: the Backend interface (backend.h) on one GPU, with cuBLAS GEMMs (fp32
// accumulation) and own kernels (src/cuda/ops.cu). Weights and the KV cache live on the GPU in
// the chosen dtype; everything is allocated once in the constructor. Builds without CUDA get
// stubs that throw UserError, so callers need no #ifdef; in CUDA builds the functions below load
// the backend, a plugin beside libmdi_core.so (src/cuda/plugin.h), on first use.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <thread>

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

// What a CUDA rank can do before it has its weights, begun on a thread of its own so that it
// runs while the rank reads them: load the backend, create the GPU's context and a cuBLAS handle,
// and make cuBLAS's first GEMMs at the model's shapes, which load its kernels (on an H100 about
// 0.3 s, 74 ms and 21 ms; docs/h200/README.md). `device` (called on that thread) picks the GPU;
// `rows` is the most rows a forward pass will take. make_cuda_backend takes the result over; the
// destructor waits for the thread. Failures are not reported here: the backend meets and reports
// them. A build without CUDA starts nothing.
class CudaStart {
 public:
  CudaStart(std::function<int()> device, DType dtype, int n_embd, int rows);
  ~CudaStart();
  CudaStart(const CudaStart&) = delete;
  CudaStart& operator=(const CudaStart&) = delete;
  void* take();  // waits for the thread; the plugin's state (the caller's to hand on), or nullptr

 private:
  void* state_ = nullptr;  // before thread_, which writes it: initialised before the thread starts
  std::thread thread_;
};

// Throws mdi::UserError when built without CUDA ("this build has no CUDA support"), when no GPU
// is visible, when `device` is out of range, when the GPU cannot hold weights + workspace, or
// when bf16 is asked of a GPU below compute capability 8.0. The weights are copied to the GPU:
// w may be freed once this returns. start, if given, is taken over (its context and cuBLAS).
std::unique_ptr<Backend> make_cuda_backend(const Config& cfg, const Weights& w,
                                           const BackendSpec& spec, int device, DType dtype,
                                           CudaStart* start = nullptr);

}  // namespace mdi
