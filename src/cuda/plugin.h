// The seam between mdi_core and the CUDA backend, which is a plugin: libmdi_cuda.so, next to
// libmdi_core.so, loaded (src/cuda/loader.cpp) the first time a process asks for a GPU. A process
// that runs on CPUs only never loads the CUDA runtime and cuBLAS: cuBLASLt's static constructors
// alone took ~0.45 s of every process start (measured on the 2-core VM), which every CPU rank,
// test and tool of a CUDA build paid; and a CUDA build runs on boards without CUDA's libraries.
#pragma once

#include <memory>

#include "mdi/cuda_backend.h"

namespace mdi {

// What the plugin offers; its one exported entry point (kCudaPluginEntry) returns it.
struct CudaPlugin {
  int (*device_count)();  // devices visible (0 when the driver reports none or an error)
  // CudaStart's work on its thread: the context, a cuBLAS handle and its first GEMMs on `device`.
  // Never throws; returns the state make_backend takes over, or nullptr where a step failed.
  void* (*warm_up)(int device, DType dtype, int n_embd, int rows);
  void (*release)(void* warm);  // frees warm_up's state where no backend took it
  // Takes warm (warm_up's state, or nullptr) over, whatever happens.
  std::unique_ptr<Backend> (*make_backend)(const Config& cfg, const Weights& w,
                                           const BackendSpec& spec, int device, DType dtype,
                                           void* warm);
};

constexpr const char* kCudaPluginFile = "libmdi_cuda.so";
constexpr const char* kCudaPluginEntry = "mdi_cuda_plugin";

}  // namespace mdi

extern "C" const mdi::CudaPlugin* mdi_cuda_plugin();
