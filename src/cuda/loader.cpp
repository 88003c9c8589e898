// mdi_core's side of the CUDA plugin (plugin.h): cuda_device_count() and make_cuda_backend() load
// libmdi_cuda.so from the folder of libmdi_core.so on first use, once per process. Where it cannot
// be loaded (a board without CUDA's libraries), no device is visible and --device cuda is a user
// error that quotes the loader's message.
#include <dlfcn.h>

#include <string>
#include <utility>

#include "mdi/cuda_backend.h"
#include "mdi/error.h"
#include "plugin.h"

namespace mdi {

namespace {

struct Loaded {
  const CudaPlugin* api = nullptr;
  std::string error;  // why api is null
};

// The plugin's path: beside the library (or executable) this function was linked into.
std::string plugin_path() {
  Dl_info info{};
  std::string dir = ".";
  if (dladdr(reinterpret_cast<void*>(&plugin_path), &info) != 0 && info.dli_fname != nullptr) {
    const std::string self = info.dli_fname;
    const size_t slash = self.rfind('/');
    if (slash != std::string::npos) dir = self.substr(0, slash);
  }
  return dir + "/" + kCudaPluginFile;
}

const Loaded& plugin() {
  static const Loaded loaded = [] {
    Loaded l;
    const std::string path = plugin_path();
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      l.error = fmt::format("cannot load the CUDA backend: {}", dlerror());
      return l;
    }
    using Entry = const CudaPlugin* (*)();
    const auto entry = reinterpret_cast<Entry>(dlsym(handle, kCudaPluginEntry));
    if (entry == nullptr) {
      l.error = fmt::format("{} is not mdi-llm's CUDA backend: {}", path, dlerror());
      return l;
    }
    l.api = entry();
    return l;
  }();
  return loaded;
}

}  // namespace

int cuda_device_count() {
  const Loaded& l = plugin();
  return l.api != nullptr ? l.api->device_count() : 0;
}

bool cuda_available() { return cuda_device_count() > 0; }

CudaStart::CudaStart(std::function<int()> device, DType dtype, int n_embd, int rows)
    : thread_([this, device = std::move(device), dtype, n_embd, rows] {
        try {
          const Loaded& l = plugin();
          if (l.api != nullptr) state_ = l.api->warm_up(device(), dtype, n_embd, rows);
        } catch (...) {  // the backend meets the same failure and reports it
        }
      }) {}

CudaStart::~CudaStart() {
  if (thread_.joinable()) thread_.join();
  if (state_ != nullptr) plugin().api->release(state_);
}

void* CudaStart::take() {
  if (thread_.joinable()) thread_.join();
  return std::exchange(state_, nullptr);
}

std::unique_ptr<Backend> make_cuda_backend(const Config& cfg, const Weights& w,
                                           const BackendSpec& spec, int device, DType dtype,
                                           CudaStart* start) {
  void* warm = start != nullptr ? start->take() : nullptr;
  const Loaded& l = plugin();
  if (l.api == nullptr) throw UserError("--device cuda: " + l.error);
  return l.api->make_backend(cfg, w, spec, device, dtype, warm);
}

}  // namespace mdi
