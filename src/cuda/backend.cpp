// CUDA backend: the GPT-2 block as a sequence of op calls (src/cuda/ops.h) on one GPU, mirroring
// the CPU backend (src/cpu/backend.cpp): rows of several samples per batch, a per-sample KV cache,
// rows processed in chunks. Weights, KV cache, activations, cuBLAS workspace and pinned host
// staging are allocated once in the constructor; the per-call path only copies and launches on
// one stream. Decode rows take fused kernels (src/cuda/ops.h: LayerNorm inside the matrix-vector
// kernels, programmatic dependent launch) and small decode batches replay CUDA graphs; how a row
// is computed never depends on the other rows of its batch; with head size 64 (every GPT-2) the
// decode rows go through all layers in one persistent kernel. The ring's messages live in
// page-locked memory (host_buffer). Not here: a CUDA-aware MPI path (neither machine's Open MPI
// has one to test it on).
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "check.h"
#include "mdi/cuda_backend.h"
#include "mdi/error.h"
#include "ops.h"
#include "plugin.h"

namespace mdi {

namespace {

constexpr int kChunkRows = 512;             // rows per pass through a layer
constexpr int kLogitRows = 64;              // items per ln_f + lm_head pass
constexpr int kGraphRows = 16;              // batches of at most this many rows replay a CUDA graph
// Runs of at least this many samples (16-bit weights, compute capability 8.0+) take the
// tensor-core matrix-vector kernel: GPT-2 XL fp16 decode steps of 8 samples took 2.84 ms
// against 7.29 ms on CUDA cores, of 1 sample 2.41 ms against 1.77 (H200, 2026-12-02). It
// depends on the run's samples, not on a batch's rows, so 1 and N ranks compute every row alike.
constexpr int kTensorCoreSamples = 4;
constexpr size_t kCublasWorkspace = 32u << 20;  // bytes (NVIDIA's advice for Hopper)
constexpr size_t kAlign = 256;              // bytes; every device tensor starts so aligned

// Offsets handed out in a first pass, one cudaMalloc afterwards: base + offset.
struct Arena {
  size_t size = 0;
  char* base = nullptr;
  size_t take(size_t bytes) {
    const size_t off = size;
    size += (bytes + kAlign - 1) / kAlign * kAlign;
    return off;
  }
  template <typename P>
  P* at(size_t off) const { return reinterpret_cast<P*>(base + off); }
};

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the error (no driver, no device): "none" is the answer
    return 0;
  }
  return n;
}

// CudaStart's work (include/mdi/cuda_backend.h), on its thread: warm_up() makes the context, a
// cuBLAS handle bound as the backend binds its own, and one GEMM of each of a layer's four
// shapes at the largest and the smallest row count that takes cuBLAS (the first GEMM in a
// process loads cuBLAS's kernels: 74 ms on an H100, and 21 ms for another kernel family). The
// backend adopts the handle. No step is checked beyond its return code: the constructor repeats
// each one with its checks and reports what fails.
struct Warm {
  int device = -1;
  cublasHandle_t handle = nullptr;
  ~Warm() {
    if (handle != nullptr) cublasDestroy(handle);
  }
};

void* warm_up(int device, DType dt, int C, int rows) {
  try {
    auto w = std::make_unique<Warm>();
    w->device = device;
    cudaDeviceProp prop{};
    if (device < 0 || device >= device_count()) return nullptr;
    if (cudaSetDevice(device) != cudaSuccess || cudaFree(nullptr) != cudaSuccess ||
        cudaGetDeviceProperties(&prop, device) != cudaSuccess ||
        cublasCreate(&w->handle) != CUBLAS_STATUS_SUCCESS) {
      cudaGetLastError();
      return nullptr;
    }
    const int r0 = cuda::gemm_min_rows(), r1 = std::min(rows, kChunkRows);
    if (r1 < r0 || (dt == DType::kBF16 && prop.major < 8)) return w.release();
    const size_t e = dtype_size(dt), Cs = size_t(C);
    const size_t bytes =
        kCublasWorkspace + 4 * Cs * Cs * e + size_t(r1) * 4 * Cs * (e + sizeof(float)) + 3 * kAlign;
    char* buf = nullptr;
    cudaStream_t st = nullptr;
    if (cudaMalloc(reinterpret_cast<void**>(&buf), bytes) == cudaSuccess &&
        cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking) == cudaSuccess &&
        cudaMemsetAsync(buf, 0, bytes, st) == cudaSuccess &&
        cublasSetStream(w->handle, st) == CUBLAS_STATUS_SUCCESS &&
        cublasSetWorkspace(w->handle, buf, kCublasWorkspace) == CUBLAS_STATUS_SUCCESS) {
      Arena a{kCublasWorkspace, buf};
      char* weight = buf + a.take(4 * Cs * Cs * e);
      char* inp = buf + a.take(size_t(r1) * 4 * Cs * e);
      float* out = reinterpret_cast<float*>(buf + a.take(size_t(r1) * 4 * Cs * sizeof(float)));
      bool ok = true;
      for (int r : {r1, r0})
        for (auto [oc, ic] : {std::pair{3 * C, C}, {C, C}, {4 * C, C}, {C, 4 * C}})
          ok = ok && cuda::gemm_status(out, inp, weight, r, ic, oc, dt, w->handle) ==
                         CUBLAS_STATUS_SUCCESS;
      cudaStreamSynchronize(st);
    }
    cublasSetStream(w->handle, nullptr);  // and the default workspace: buf and st go
    if (st != nullptr) cudaStreamDestroy(st);
    if (buf != nullptr) cudaFree(buf);
    cudaGetLastError();
    return w.release();
  } catch (...) {
    return nullptr;
  }
}

void release(void* warm) {
  delete static_cast<Warm*>(warm);
}

// Device pointers of one layer: matrices in the chosen dtype, vectors in fp32.
struct DevLayer {
  const float *ln1_w, *ln1_b, *attn_b, *aproj_b, *ln2_w, *ln2_b, *fc_b, *mproj_b;
  const void *attn_w, *aproj_w, *fc_w, *mproj_w;
};

struct DevHead {
  const void *wte, *wpe, *lm_head;
  const float *lnf_w, *lnf_b;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(const Config& cfg, const Weights& w, const BackendSpec& spec, int device, DType dt,
              std::unique_ptr<Warm> warm)
      : warm_(std::move(warm)),
        cfg_(cfg),
        w_(w),
        has_head_(w.has_head),
        spec_(spec),
        device_(device),
        dt_(dt),
        chunk_(std::min(kChunkRows, std::max(1, spec.max_rows))),
        lchunk_(std::min(kLogitRows, std::max(1, spec.max_rows))),
        T_(kv_positions(spec, cfg)) {
    const int n = device_count();
    if (n == 0) throw UserError("--device cuda: no CUDA device is visible");
    if (device < 0 || device >= n)
      user_error("--device cuda: device {} asked for, but {} CUDA device(s) are visible", device, n);
    MDI_CUDA_CHECK(cudaSetDevice(device_));
    cudaDeviceProp prop{};
    MDI_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
    gpu_name_ = prop.name;
    char bus[32] = {0};
    MDI_CUDA_CHECK(cudaDeviceGetPCIBusId(bus, int(sizeof bus), device_));
    gpu_id_ = bus;
    if (dt_ == DType::kBF16 && prop.major < 8)
      user_error("--dtype bf16 needs a GPU of compute capability 8.0 or newer; device {} ({}) is {}.{}",
                 device_, prop.name, prop.major, prop.minor);
    if (spec.max_rows < 1 || spec.samples < 1)
      abort_job(fmt::format("internal error: CUDA backend needs max_rows and samples >= 1 (got {}, {})",
                            spec.max_rows, spec.samples));
    // The lm_head is rank 0's, whole (the head split is for CPU ranks: pipeline.cpp).
    if (w.head.lm_end > w.head.lm_begin && !(w.has_head && w.head.lm_begin == 0 && w.head.lm_end == cfg.vocab_size))
      user_error("--device cuda computes the whole lm_head on rank 0: lm_head rows [{}, {}) cannot be split "
                 "off (--head-split 0)", w.head.lm_begin, w.head.lm_end);

    // The fused decode kernels need C and 4C to be multiples of 8 (16-byte rows) and a LayerNorm
    // row of C in shared memory (the 4C-wide projection has no LayerNorm).
    fused_ = cuda::matvec_ok(cfg_.n_embd, true) && cuda::matvec_ok(4 * cfg_.n_embd, false);
    tc_ = use_tensor_cores();
    decode_rows_ = cuda::matvec_rows(cfg_.n_embd, true, tc_);
    persistent_ = use_persistent();
    segs_.reserve(size_t(spec.max_rows) + 1);
    plan_weights();
    plan_workspace();
    size_t free_b = 0, total_b = 0;
    MDI_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    if (wts_.size + work_.size > free_b)
      user_error("GPU {} ({}) cannot hold this rank's share: {:.1f} MiB of {} weights and {:.1f} MiB "
                 "of KV cache and scratch, {:.1f} MiB free (try fewer --samples, a 16-bit --dtype "
                 "or more ranks)",
                 device_, gpu_name_, wts_.size / 1048576.0, dtype_name(dt_), work_.size / 1048576.0,
                 free_b / 1048576.0);
    MDI_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&wts_.base), wts_.size));
    MDI_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&work_.base), work_.size));
    MDI_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&h_x_), pinned_x_bytes()));
    MDI_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&h_meta_), pinned_meta_bytes()));
    if (w_.has_head) {
      MDI_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&h_logits_), pinned_logits_bytes()));
      if (top_cap() > 0) {
        MDI_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&h_top_ids_), pinned_top_bytes()));
        MDI_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&h_top_vals_), pinned_top_bytes()));
      }
    }

    MDI_CUDA_CHECK(cudaStreamCreateWithFlags(&st_, cudaStreamNonBlocking));
    if (warm_ && warm_->device == device_ && warm_->handle)
      cublas_ = std::exchange(warm_->handle, nullptr);
    else
      MDI_CUBLAS_CHECK(cublasCreate(&cublas_));
    warm_.reset();
    MDI_CUBLAS_CHECK(cublasSetStream(cublas_, st_));
    MDI_CUBLAS_CHECK(cublasSetWorkspace(cublas_, work_.at<void>(off_cublas_), kCublasWorkspace));
    cuda::configure_kernels();
    upload_weights();
    upload_decode_layers();
    const char* env = std::getenv("MDI_CUDA_GRAPHS");  // "0": launch kernel by kernel always
    if (!(env && std::string(env) == "0")) graphs_.assign(std::min(kGraphRows, spec.max_rows), nullptr);
  }

  ~CudaBackend() override {
    // Errors here would come from a device already broken; report them like any other.
    MDI_CUDA_CHECK(cudaSetDevice(device_));
    MDI_CUDA_CHECK(cudaStreamSynchronize(st_));
    for (cudaGraphExec_t g : graphs_)
      if (g) MDI_CUDA_CHECK(cudaGraphExecDestroy(g));
    MDI_CUBLAS_CHECK(cublasDestroy(cublas_));
    MDI_CUDA_CHECK(cudaStreamDestroy(st_));
    MDI_CUDA_CHECK(cudaFreeHost(h_top_vals_));
    MDI_CUDA_CHECK(cudaFreeHost(h_top_ids_));
    MDI_CUDA_CHECK(cudaFreeHost(h_logits_));
    MDI_CUDA_CHECK(cudaFreeHost(h_meta_));
    MDI_CUDA_CHECK(cudaFreeHost(h_x_));
    MDI_CUDA_CHECK(cudaFree(work_.base));
    MDI_CUDA_CHECK(cudaFree(wts_.base));
  }

  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override {
    return fmt::format("cuda:{} ({}, {}{})", device_, gpu_name_, dtype_name(dt_),
                       tc_ ? ", tensor cores" : persistent_ ? ", persistent decode" : "");
  }

  std::string gpu_id() const override { return gpu_id_; }

  // Page-locked: the ring's messages are received straight into memory the GPU copies from.
  HostBuffer host_buffer(size_t bytes) const override {
    MDI_CUDA_CHECK(cudaSetDevice(device_));
    void* p = nullptr;
    MDI_CUDA_CHECK(cudaMallocHost(&p, std::max<size_t>(bytes, 1)));
    std::memset(p, 0, bytes);
    return HostBuffer(static_cast<std::byte*>(p), [](std::byte* q) { MDI_CUDA_CHECK(cudaFreeHost(q)); });
  }

  size_t workspace_bytes() const override {
    return work_.size + pinned_x_bytes() + pinned_meta_bytes() +
           (has_head_ ? pinned_logits_bytes() + 2 * pinned_top_bytes() : 0);
  }

  // Decode batches (every item one row) of at most kGraphRows rows replay a CUDA graph captured
  // at their first use, one per row count: launching 5 kernels per layer one by one costs more
  // than they run at one row. The graph's copies read the pinned buffers, so it serves any such
  // batch of that many rows.
  // Other batches copy straight from and to x when it is page-locked (a ring message from
  // host_buffer), through the pinned staging buffer when it is not.
  void forward(float* x, const BatchItem* items, int n_items) override {
    const int R = expand_rows(items, n_items);
    if (R == 0) return;
    const size_t bytes = size_t(R) * cfg_.n_embd * sizeof(float);
    MDI_CUDA_CHECK(cudaSetDevice(device_));
    const bool all_decode = plan_segments(items, n_items);
    float* host = h_x_;
    if (all_decode && R <= int(graphs_.size())) {
      std::memcpy(h_x_, x, bytes);
      cudaGraphExec_t& g = graphs_[R - 1];
      if (!g) {
        cudaGraph_t graph;
        MDI_CUDA_CHECK(cudaStreamBeginCapture(st_, cudaStreamCaptureModeThreadLocal));
        enqueue_forward(R, h_x_);
        MDI_CUDA_CHECK(cudaStreamEndCapture(st_, &graph));
        MDI_CUDA_CHECK(cudaGraphInstantiateWithFlags(&g, graph, 0));
        MDI_CUDA_CHECK(cudaGraphDestroy(graph));
      }
      MDI_CUDA_CHECK(cudaGraphLaunch(g, st_));
    } else {
      if (page_locked(x)) host = x;
      else std::memcpy(h_x_, x, bytes);
      enqueue_forward(R, host);
    }
    wait_stream();
    if (host != x) std::memcpy(x, h_x_, bytes);
  }

  void embed(float* x, const int* tokens, const BatchItem* items, int n_items) override {
    require_head("embed");
    const int R = expand_rows(items, n_items);
    if (R == 0) return;
    const size_t C = cfg_.n_embd;
    for (int r = 0; r < R; ++r) {
      if (tokens[r] < 0 || tokens[r] >= cfg_.vocab_size)
        abort_job(fmt::format("token id {} out of range [0, {})", tokens[r], cfg_.vocab_size));
      h_tokens()[r] = tokens[r];
    }
    MDI_CUDA_CHECK(cudaSetDevice(device_));
    upload_rows(R);
    int* d_tok = work_.at<int>(off_tokens_);
    MDI_CUDA_CHECK(cudaMemcpyAsync(d_tok, h_tokens(), R * sizeof(int), cudaMemcpyHostToDevice, st_));
    float* d_x = work_.at<float>(off_x_);
    cuda::embedding_forward(d_x, d_tok, work_.at<int>(off_pos_), head_.wte, head_.wpe, R, int(C), dt_, st_);
    MDI_CUDA_CHECK(cudaMemcpyAsync(h_x_, d_x, R * C * sizeof(float), cudaMemcpyDeviceToHost, st_));
    MDI_CUDA_CHECK(cudaStreamSynchronize(st_));
    std::memcpy(x, h_x_, R * C * sizeof(float));
  }

  void logits(float* out, const float* x, const BatchItem* items, int n_items) override {
    require_head("logits");
    expand_rows(items, n_items);
    const size_t V = cfg_.vocab_size;
    MDI_CUDA_CHECK(cudaSetDevice(device_));
    const float* d_logits = work_.at<float>(off_logits_);
    const float* last = x;  // just past the last row of the items done so far
    for (int i0 = 0; i0 < n_items; i0 += lchunk_) {
      const int n = std::min(lchunk_, n_items - i0);
      enqueue_head(last, items + i0, n);
      MDI_CUDA_CHECK(cudaMemcpyAsync(h_logits_, d_logits, n * V * sizeof(float),
                                     cudaMemcpyDeviceToHost, st_));
      wait_stream();
      std::memcpy(out + size_t(i0) * V, h_logits_, n * V * sizeof(float));
    }
  }

  // The selection runs on the GPU next to the logits; only k ids and logits per row come back.
  bool top(int k, int V, int* ids, float* vals, const float* x, const BatchItem* items,
           int n_items) override {
    require_head("top");
    if (k < 1 || k > spec_.top_k || V > cfg_.vocab_size || k > V) return false;
    expand_rows(items, n_items);
    MDI_CUDA_CHECK(cudaSetDevice(device_));
    const float* d_logits = work_.at<float>(off_logits_);
    int* d_ids = work_.at<int>(off_top_ids_);
    float* d_vals = work_.at<float>(off_top_vals_);
    const float* last = x;
    for (int i0 = 0; i0 < n_items; i0 += lchunk_) {
      const int n = std::min(lchunk_, n_items - i0);
      const size_t m = size_t(n) * k;
      enqueue_head(last, items + i0, n);
      cuda::top_forward(d_ids, d_vals, d_logits, n, cfg_.vocab_size, V, k, st_);
      MDI_CUDA_CHECK(cudaMemcpyAsync(h_top_ids_, d_ids, m * sizeof(int), cudaMemcpyDeviceToHost, st_));
      MDI_CUDA_CHECK(cudaMemcpyAsync(h_top_vals_, d_vals, m * sizeof(float), cudaMemcpyDeviceToHost, st_));
      wait_stream();
      std::memcpy(ids + size_t(i0) * k, h_top_ids_, m * sizeof(int));
      std::memcpy(vals + size_t(i0) * k, h_top_vals_, m * sizeof(float));
    }
    return true;
  }

 private:
  // Waits for the stream's work. With the ring's progress hook set, polls instead of blocking and
  // calls the hook between polls (at least once), so that the rank's sends move on meanwhile.
  void wait_stream() {
    if (!has_progress()) {
      MDI_CUDA_CHECK(cudaStreamSynchronize(st_));
      return;
    }
    for (;;) {
      progress();
      const cudaError_t e = cudaStreamQuery(st_);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) MDI_CUDA_CHECK(e);
    }
  }

  size_t esize() const { return dtype_size(dt_); }
  size_t pinned_x_bytes() const { return size_t(spec_.max_rows) * cfg_.n_embd * sizeof(float); }
  size_t pinned_meta_bytes() const { return 3 * size_t(spec_.max_rows) * sizeof(int); }
  size_t pinned_logits_bytes() const { return size_t(lchunk_) * cfg_.vocab_size * sizeof(float); }
  size_t top_cap() const { return size_t(std::clamp(spec_.top_k, 0, cfg_.vocab_size)); }
  size_t pinned_top_bytes() const { return size_t(lchunk_) * top_cap() * sizeof(int); }  // ids or vals
  int* h_sample() { return h_meta_; }
  int* h_pos() { return h_meta_ + spec_.max_rows; }
  int* h_tokens() { return h_meta_ + 2 * spec_.max_rows; }

  // Enqueues ln_f + lm_head of the last row of each of items[0, n) (n <= lchunk_) into the
  // logits buffer (n, V). last points just past the rows before items[0]; it moves past them.
  void enqueue_head(const float*& last, const BatchItem* items, int n) {
    const size_t C = cfg_.n_embd, V = cfg_.vocab_size;
    float* d_in = work_.at<float>(off_x_);  // the last row of each item, gathered
    float* d_logits = work_.at<float>(off_logits_);
    for (int i = 0; i < n; ++i) {
      last += size_t(items[i].rows) * C;
      std::memcpy(h_x_ + size_t(i) * C, last - C, C * sizeof(float));
    }
    MDI_CUDA_CHECK(cudaMemcpyAsync(d_in, h_x_, n * C * sizeof(float), cudaMemcpyHostToDevice, st_));
    if (fused_) {  // ln_f inside the lm_head's matrix-vector kernel: each row alone, any n
      cuda::matvec_forward(d_logits, d_in, head_.lnf_w, head_.lnf_b, cfg_.layer_norm_eps, head_.lm_head,
                           nullptr, n, int(C), int(V), cuda::Epilogue::kStore, nullptr, dt_, tc_, st_);
    } else {
      void* d_ln = work_.at<void>(off_lnf_);
      cuda::layernorm_forward(d_ln, d_in, head_.lnf_w, head_.lnf_b, n, int(C), cfg_.layer_norm_eps,
                              dt_, st_);
      cuda::matmul_forward(d_logits, d_ln, head_.lm_head, nullptr, n, int(C), int(V),
                           cuda::Epilogue::kStore, nullptr, dt_, tc_, cublas_, st_);
    }
  }

  // Whether the matrix-vector kernels run on tensor cores: with kTensorCoreSamples samples or
  // more where they can (MDI_CUDA_MMA=1: always where they can, 0: never).
  bool use_tensor_cores() const {
    if (!cuda::tensor_cores_ok(dt_, cfg_.n_embd, true)) return false;
    const char* env = std::getenv("MDI_CUDA_MMA");
    if (env && std::string(env) == "0") return false;
    if (env && std::string(env) == "1") return true;
    return spec_.samples >= kTensorCoreSamples;
  }

  // Whether decode rows go through all layers in one persistent kernel (cuda::decode_layers_ok;
  // CUDA cores only): where programmatic dependent launch is not (below compute capability 9.0:
  // the Jetsons), since with it the kernels layer by layer are faster (GPT-2 XL fp16, 1 sample,
  // H200: 1.68 ms against 1.98; without it 2.13). MDI_CUDA_PERSISTENT=1 / 0 forces it on / off.
  // Rows are bit-identical either way.
  bool use_persistent() const {
    if (!fused_ || tc_ || w_.layers.empty() ||
        !cuda::decode_layers_ok(cfg_.n_embd, cfg_.n_head, T_, decode_rows_, dt_))
      return false;
    const char* env = std::getenv("MDI_CUDA_PERSISTENT");
    if (env && std::string(env) == "0") return false;
    if (env && std::string(env) == "1") return true;
    return !cuda::pdl_on();
  }

  void require_head(const char* what) const {
    if (!has_head_) abort_job(fmt::format("internal error: {} called on a rank without the head", what));
  }

  // Fills the pinned row_sample / row_pos for the batch (expand_batch).
  int expand_rows(const BatchItem* items, int n_items) {
    return expand_batch(items, n_items, spec_, T_, h_sample(), h_pos());
  }

  void upload_rows(int R) {
    MDI_CUDA_CHECK(cudaMemcpyAsync(work_.at<int>(off_sample_), h_sample(), R * sizeof(int),
                                   cudaMemcpyHostToDevice, st_));
    MDI_CUDA_CHECK(cudaMemcpyAsync(work_.at<int>(off_pos_), h_pos(), R * sizeof(int),
                                   cudaMemcpyHostToDevice, st_));
  }

  // Rows of the batch in the pieces a layer processes, in order: runs of one-row items (decode)
  // in chunks of decode_rows_, and each longer item (a prefill) in chunks of chunk_ rows. So how
  // a row is computed depends on its own item only, never on what else shares the batch: the
  // same tokens on any number of ranks. Returns whether every item is one row.
  bool plan_segments(const BatchItem* items, int n_items) {
    segs_.clear();
    bool all_decode = true;
    for (int i = 0, r = 0; i < n_items;) {
      if (items[i].rows == 1 && fused_) {
        int j = i;
        while (j < n_items && items[j].rows == 1 && j - i < decode_rows_) ++j;
        segs_.push_back({r, j - i, true});
        r += j - i;
        i = j;
        continue;
      }
      all_decode = false;
      for (int r0 = 0; r0 < items[i].rows; r0 += chunk_)
        segs_.push_back({r + r0, std::min(chunk_, items[i].rows - r0), false});
      r += items[i].rows;
      ++i;
    }
    return all_decode;
  }

  // Copies host (R rows, page-locked) and the row metadata in, runs every layer over the planned
  // segments, copies the result back to host.
  void enqueue_forward(int R, float* host) {
    const size_t C = cfg_.n_embd;
    float* d_x = work_.at<float>(off_x_);
    MDI_CUDA_CHECK(cudaMemcpyAsync(d_x, host, R * C * sizeof(float), cudaMemcpyHostToDevice, st_));
    upload_rows(R);
    for (const Segment& sg : segs_)  // rows are independent: each segment may go through alone
      if (sg.decode && persistent_) decode_layers(d_x + sg.r0 * C, sg.r0, sg.rows);
    for (int l = 0; l < int(layers_.size()); ++l)
      for (const Segment& sg : segs_) {
        if (!sg.decode) block_forward(l, d_x + sg.r0 * C, sg.r0, sg.rows);
        else if (!persistent_) decode_block_forward(l, d_x + sg.r0 * C, sg.r0, sg.rows);
      }
    MDI_CUDA_CHECK(cudaMemcpyAsync(host, d_x, R * C * sizeof(float), cudaMemcpyDeviceToHost, st_));
  }

  static bool page_locked(const void* p) {
    cudaPointerAttributes a{};
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
      cudaGetLastError();  // not known to CUDA: pageable
      return false;
    }
    return a.type == cudaMemoryTypeHost;
  }

  // One transformer block on B decode rows [r0, r0 + B): five kernels, both LayerNorms fused into
  // the matrix-vector kernel that follows them and the QKV split into the first one's epilogue.
  // The scratch buffers of a pass and layer l's KV cache; row metadata from row r0 on.
  struct Bufs {
    void *ln, *att, *h, *k, *v;
    float *qkv, *q, *y;
    const int *rs, *rp;
  };
  Bufs bufs(int l, int r0) {
    const size_t kv_layer = size_t(spec_.samples) * T_ * cfg_.n_embd * esize();
    return Bufs{work_.at<void>(off_ln_), work_.at<void>(off_att_), work_.at<void>(off_h_),
                work_.at<char>(off_k_) + l * kv_layer, work_.at<char>(off_v_) + l * kv_layer,
                work_.at<float>(off_qkv_), work_.at<float>(off_q_), work_.at<float>(off_y_),
                work_.at<int>(off_sample_) + r0, work_.at<int>(off_pos_) + r0};
  }

  void decode_block_forward(int l, float* x, int r0, int B) {
    const DevLayer& w = layers_[l];
    const int C = cfg_.n_embd, T = T_;
    const float eps = cfg_.layer_norm_eps;
    const auto [ln, att, h, k, v, qkv_unused, q, y, rs, rp] = bufs(l, r0);
    const cuda::QkvOut qkv{q, k, v, rs, rp, T};
    using cuda::Epilogue;
    cuda::matvec_forward(nullptr, x, w.ln1_w, w.ln1_b, eps, w.attn_w, w.attn_b, B, C, 3 * C, Epilogue::kQkv,
                         &qkv, dt_, tc_, st_);
    cuda::attention_forward(att, q, k, v, rs, rp, B, C, cfg_.n_head, T, dt_, st_);
    cuda::matvec_forward(x, att, nullptr, nullptr, 0.0f, w.aproj_w, w.aproj_b, B, C, C, Epilogue::kResidual,
                         nullptr, dt_, tc_, st_);
    cuda::matvec_forward(h, x, w.ln2_w, w.ln2_b, eps, w.fc_w, w.fc_b, B, C, 4 * C, Epilogue::kGelu, nullptr,
                         dt_, tc_, st_);
    cuda::matvec_forward(x, h, nullptr, nullptr, 0.0f, w.mproj_w, w.mproj_b, B, 4 * C, C, Epilogue::kResidual,
                         nullptr, dt_, tc_, st_);
  }

  // Every layer on B decode rows [r0, r0 + B) in one persistent kernel: the same results as
  // decode_block_forward layer by layer, without the launch gaps between its kernels.
  void decode_layers(float* x, int r0, int B) {
    const auto [ln, att, h, k, v, qkv, q, y, rs, rp] = bufs(0, r0);
    const cuda::DecodeLayersArgs a{work_.at<const cuda::DecodeLayer>(off_layers_), int(layers_.size()), x, att, h,
                                   q, rs, rp, cfg_.n_embd, cfg_.n_head, T_, cfg_.layer_norm_eps,
                                   work_.at<unsigned>(off_barrier_)};
    cuda::decode_layers_forward(a, B, dt_, st_);
  }

  // One transformer block (layer l of this rank) on rows [r0, r0 + B) of the batch; x is on the
  // device and updated in place.
  void block_forward(int l, float* x, int r0, int B) {
    constexpr cuda::Epilogue kStore = cuda::Epilogue::kStore, kGelu = cuda::Epilogue::kGelu,
                             kResidual = cuda::Epilogue::kResidual;
    const DevLayer& w = layers_[l];
    const int C = cfg_.n_embd, T = T_;
    const float eps = cfg_.layer_norm_eps;
    const auto [ln, att, h, k, v, qkv, q, y, rs, rp] = bufs(l, r0);

    cuda::layernorm_forward(ln, x, w.ln1_w, w.ln1_b, B, C, eps, dt_, st_);
    cuda::matmul_forward(qkv, ln, w.attn_w, nullptr, B, C, 3 * C, kStore, nullptr, dt_, tc_, cublas_, st_);
    cuda::qkv_scatter_forward(q, k, v, qkv, w.attn_b, rs, rp, B, C, T, dt_, st_);
    cuda::attention_forward(att, q, k, v, rs, rp, B, C, cfg_.n_head, T, dt_, st_);
    cuda::matmul_forward(x, att, w.aproj_w, w.aproj_b, B, C, C, kResidual, y, dt_, tc_, cublas_, st_);
    cuda::layernorm_forward(ln, x, w.ln2_w, w.ln2_b, B, C, eps, dt_, st_);
    cuda::matmul_forward(h, ln, w.fc_w, w.fc_b, B, C, 4 * C, kGelu, y, dt_, tc_, cublas_, st_);
    cuda::matmul_forward(x, h, w.mproj_w, w.mproj_b, B, 4 * C, C, kResidual, y, dt_, tc_, cublas_, st_);
  }

  // --- start-up: sizes, allocation, upload ---------------------------------------------------

  // A host tensor and where its device copy goes (offset into wts_), as dtype or as fp32; the
  // host's matrices may be binary16 (Weights::matrices_f16).
  struct Upload {
    const float* src;
    size_t n;
    size_t off;
    bool as_dtype;
    bool half_src;
  };

  // Reserves a device tensor for host tensor src (n elements); nullptr stays nullptr (no bias).
  // The tensors stored as dtype are the 2-D ones, which the host holds as halves where
  // w_.matrices_f16.
  size_t plan(const float* src, size_t n, bool as_dtype) {
    if (!src) return kNone;
    const size_t off = wts_.take(n * (as_dtype ? esize() : sizeof(float)));
    uploads_.push_back({src, n, off, as_dtype, as_dtype && w_.matrices_f16});
    return off;
  }

  static constexpr size_t kNone = ~size_t(0);

  void plan_weights() {
    const size_t C = cfg_.n_embd, V = cfg_.vocab_size, T = cfg_.block_size;
    for (const LayerWeights& l : w_.layers) {
      layer_off_.push_back({plan(l.ln1_w, C, false), plan(l.ln1_b, C, false),
                            plan(l.attn_b, 3 * C, false), plan(l.aproj_b, C, false),
                            plan(l.ln2_w, C, false), plan(l.ln2_b, C, false),
                            plan(l.fc_b, 4 * C, false), plan(l.mproj_b, C, false),
                            plan(l.attn_w, 3 * C * C, true), plan(l.aproj_w, C * C, true),
                            plan(l.fc_w, 4 * C * C, true), plan(l.mproj_w, 4 * C * C, true)});
    }
    if (w_.has_head) {
      const size_t wte = plan(w_.head.wte, V * C, true);
      const size_t wpe = plan(w_.head.wpe, T * C, true);
      const size_t lm = w_.head.lm_head == w_.head.wte ? wte : plan(w_.head.lm_head, V * C, true);
      head_off_ = {wte, wpe, lm, plan(w_.head.lnf_w, C, false), plan(w_.head.lnf_b, C, false)};
    }
  }

  void plan_workspace() {
    const size_t C = cfg_.n_embd, T = T_, S = spec_.samples, MR = spec_.max_rows;
    const size_t L = w_.layers.size(), ch = chunk_, e = esize();
    off_cublas_ = work_.take(kCublasWorkspace);
    off_k_ = work_.take(L * S * T * C * e);
    off_v_ = work_.take(L * S * T * C * e);
    off_x_ = work_.take(MR * C * sizeof(float));
    off_ln_ = work_.take(ch * C * e);
    off_qkv_ = work_.take(ch * 3 * C * sizeof(float));
    off_q_ = work_.take(ch * C * sizeof(float));
    off_att_ = work_.take(ch * C * e);
    off_y_ = work_.take(ch * 4 * C * sizeof(float));
    off_h_ = work_.take(ch * 4 * C * e);
    off_sample_ = work_.take(MR * sizeof(int));
    off_pos_ = work_.take(MR * sizeof(int));
    off_tokens_ = work_.take(MR * sizeof(int));
    off_layers_ = work_.take(L * sizeof(cuda::DecodeLayer));
    off_barrier_ = work_.take(sizeof(unsigned));
    if (w_.has_head) {
      off_lnf_ = work_.take(size_t(lchunk_) * C * e);
      off_logits_ = work_.take(size_t(lchunk_) * cfg_.vocab_size * sizeof(float));
      off_top_ids_ = work_.take(size_t(lchunk_) * top_cap() * sizeof(int));
      off_top_vals_ = work_.take(size_t(lchunk_) * top_cap() * sizeof(float));
    }
  }

  // Copies every planned tensor to the GPU. Halves into fp16 and floats into fp32 go straight
  // there; the others through a device buffer (freed at the end of start-up) and a conversion
  // kernel. Copies and conversions are ordered on st_: a plain cudaMemcpy from pageable memory
  // may return before its DMA lands, and st_ does not wait for the legacy stream, so a conversion
  // on st_ could read the buffer half-written.
  void upload_weights() {
    const size_t kStage = size_t(16) << 20;  // bytes per conversion pass
    void* stage = nullptr;
    for (const Upload& u : uploads_) {
      char* dst = wts_.base + u.off;
      const DType to = u.as_dtype ? dt_ : DType::kF32;
      const size_t src_size = u.half_src ? sizeof(uint16_t) : sizeof(float);
      const char* src = reinterpret_cast<const char*>(u.src);
      if (to == (u.half_src ? DType::kF16 : DType::kF32)) {
        MDI_CUDA_CHECK(cudaMemcpyAsync(dst, src, u.n * src_size, cudaMemcpyHostToDevice, st_));
        continue;
      }
      if (!stage) MDI_CUDA_CHECK(cudaMalloc(&stage, kStage));
      const size_t per = kStage / src_size;
      for (size_t i = 0; i < u.n; i += per) {
        const size_t m = std::min(per, u.n - i);
        MDI_CUDA_CHECK(
            cudaMemcpyAsync(stage, src + i * src_size, m * src_size, cudaMemcpyHostToDevice, st_));
        if (u.half_src)
          cuda::convert_half_forward(dst + i * esize(), stage, long(m), to, st_);
        else
          cuda::convert_forward(dst + i * esize(), static_cast<const float*>(stage), long(m), to,
                                st_);
      }
    }
    MDI_CUDA_CHECK(cudaStreamSynchronize(st_));
    if (stage) MDI_CUDA_CHECK(cudaFree(stage));
    uploads_.clear();
    uploads_.shrink_to_fit();

    auto f32 = [&](size_t off) { return off == kNone ? nullptr : wts_.at<const float>(off); };
    auto any = [&](size_t off) { return off == kNone ? nullptr : wts_.at<const void>(off); };
    for (const std::array<size_t, 12>& o : layer_off_) {
      layers_.push_back({f32(o[0]), f32(o[1]), f32(o[2]), f32(o[3]), f32(o[4]), f32(o[5]), f32(o[6]),
                         f32(o[7]), any(o[8]), any(o[9]), any(o[10]), any(o[11])});
    }
    if (w_.has_head)
      head_ = {any(head_off_[0]), any(head_off_[1]), any(head_off_[2]), f32(head_off_[3]),
               f32(head_off_[4])};
  }

  // The layers' pointers, KV caches included, as decode_layers_forward reads them on the GPU
  // (where it is used: persistent_ implies layers).
  void upload_decode_layers() {
    if (!persistent_) return;
    std::vector<cuda::DecodeLayer> dl;
    for (int l = 0; l < int(layers_.size()); ++l) {
      const DevLayer& w = layers_[l];
      const Bufs b = bufs(l, 0);
      dl.push_back({w.ln1_w, w.ln1_b, w.attn_b, w.aproj_b, w.ln2_w, w.ln2_b, w.fc_b, w.mproj_b, w.attn_w,
                    w.aproj_w, w.fc_w, w.mproj_w, b.k, b.v});
    }
    // On st_, which the kernels use: a plain cudaMemcpy from pageable memory may return before its
    // DMA lands, and st_ (non-blocking) does not wait for the legacy stream.
    MDI_CUDA_CHECK(cudaMemcpyAsync(work_.at<void>(off_layers_), dl.data(), dl.size() * sizeof(dl[0]),
                                   cudaMemcpyHostToDevice, st_));
    MDI_CUDA_CHECK(cudaStreamSynchronize(st_));  // dl goes out of scope
  }

  struct Segment {
    int r0, rows;
    bool decode;
  };

  std::unique_ptr<Warm> warm_;  // CudaStart's handle until the constructor adopts it
  Config cfg_;
  const Weights& w_;  // read during construction only: the caller may free the host weights after
  bool has_head_;
  BackendSpec spec_;
  int device_;
  DType dt_;
  int chunk_, lchunk_;
  int T_;  // KV cache rows per sample (kv_positions)
  bool fused_ = false;   // the decode kernels apply (C and 4C: cuda::matvec_ok)
  bool tc_ = false;      // matrix-vector kernels on tensor cores (use_tensor_cores)
  bool persistent_ = false;  // decode rows through decode_layers (use_persistent)
  int decode_rows_ = 1;  // decode rows per launch
  std::vector<Segment> segs_;  // this forward's pieces (plan_segments); reserved at start-up
  std::string gpu_name_;
  std::string gpu_id_;  // PCI bus id

  Arena wts_, work_;
  std::vector<Upload> uploads_;
  // Offsets into wts_ (kNone: absent), in the order of DevLayer / DevHead's fields.
  std::vector<std::array<size_t, 12>> layer_off_;
  std::array<size_t, 5> head_off_{};
  std::vector<DevLayer> layers_;
  DevHead head_{};
  size_t off_cublas_ = 0, off_k_ = 0, off_v_ = 0, off_x_ = 0, off_ln_ = 0, off_qkv_ = 0, off_q_ = 0,
         off_att_ = 0, off_y_ = 0, off_h_ = 0, off_sample_ = 0, off_pos_ = 0, off_tokens_ = 0,
         off_lnf_ = 0, off_logits_ = 0, off_top_ids_ = 0, off_top_vals_ = 0, off_layers_ = 0, off_barrier_ = 0;

  std::vector<cudaGraphExec_t> graphs_;  // [R - 1]: forward of R rows; empty when disabled
  cudaStream_t st_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  float* h_x_ = nullptr;       // pinned (max_rows, C)
  int* h_meta_ = nullptr;      // pinned row_sample, row_pos, tokens: max_rows each
  float* h_logits_ = nullptr;  // pinned (lchunk, V), head rank only
  int* h_top_ids_ = nullptr;   // pinned (lchunk, spec top_k): top()'s ids and logits
  float* h_top_vals_ = nullptr;
};

std::unique_ptr<Backend> make_backend(const Config& cfg, const Weights& w, const BackendSpec& spec,
                                      int device, DType dtype, void* warm) {
  std::unique_ptr<Warm> owned(static_cast<Warm*>(warm));
  return std::make_unique<CudaBackend>(cfg, w, spec, device, dtype, std::move(owned));
}

constexpr CudaPlugin kPlugin{&device_count, &warm_up, &release, &make_backend};

}  // namespace

}  // namespace mdi

const mdi::CudaPlugin* mdi_cuda_plugin() { return &mdi::kPlugin; }
