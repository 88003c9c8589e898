// CUDA kernels of the GPT-2 forward pass, one free function per op, output first, the same names
// as the CPU ops (include/mdi/cpu_ops.h). All pointers are device pointers. `void*` buffers hold
// elements of the DType `dt` (weights, LayerNorm / GELU outputs that feed a GEMM, KV cache);
// `float*` buffers are fp32 (residual stream, GEMM outputs, queries, biases, LayerNorm params).
// Every launch is on `st` and checked; nothing here synchronises or allocates.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "mdi/cuda_backend.h"

namespace mdi::cuda {

// out (N) = in (N) converted to dt (round to nearest even).
void convert_forward(void* out, const float* in, long N, DType dt, cudaStream_t st);
// out (N) = in (N, binary16) converted to dt (exact for fp32, a copy for fp16, rounded for bf16).
void convert_half_forward(void* out, const void* in, long N, DType dt, cudaStream_t st);
// out (N) = in (N, dt) converted to fp32.
void to_float_forward(float* out, const void* in, long N, DType dt, cudaStream_t st);

// out (R, C) = wte[tokens[r]] + wpe[pos[r]]; wte (V, C) and wpe (T, C) in dt.
void embedding_forward(float* out, const int* tokens, const int* pos, const void* wte,
                       const void* wpe, int R, int C, DType dt, cudaStream_t st);

// out (B, C, dt) = (inp - mean) / sqrt(var + eps) * weight + bias, per row; bias may be nullptr.
void layernorm_forward(void* out, const float* inp, const float* weight, const float* bias, int B,
                       int C, float eps, DType dt, cudaStream_t st);

// What a matmul does with its result y = inp . weight^T + bias, per element:
enum class Epilogue {
  kStore,     // out (B, OC) fp32 = y
  kGelu,      // out (B, OC) dt = gelu_tanh(y)
  kResidual,  // out (B, OC) fp32 += y  (the residual stream)
  kQkv,       // matvec_forward only, OC = 3C: q (B, C) fp32, keys and values into the KV cache
};

// Where Epilogue::kQkv writes: q (B, C) fp32; row b's key and value at (row_sample[b],
// row_pos[b]) of this layer's cache k, v (S, T, C) in dt.
struct QkvOut {
  float* q;
  void* k;
  void* v;
  const int* row_sample;
  const int* row_pos;
  int T;
};

// matmul_forward takes the matrix-vector kernel for batches of at most this many rows.
constexpr int kMatvecRows = 4;
// Rows one launch of the matrix-vector kernel serves (more are done in chunks).
// (8 was slower on an H200 with the earlier kernel, whose grid then took two waves; the kernel
// runs one wave now, and 8 has not been measured with it. At 4 rows it already holds ~125
// registers per thread.)
constexpr int kDecodeRows = 4;
// Rows one launch of the tensor-core kernel serves (16-bit weights, compute capability 8.0+):
// an m16n8k16 MMA's A has 16 rows, of which the kernel uses 8.
constexpr int kMmaRows = 8;

// Once per process and device, before the first matvec_forward: lets the LayerNorm-fused kernels
// use more than 48 KiB of shared memory.
void configure_kernels();
// Turns programmatic dependent launch (Hopper+: the next kernel starts while the previous
// finishes; on by default, MDI_CUDA_PDL=0 turns it off) on or off for later launches.
void set_pdl(bool on);
// Whether later launches on the current device (on a stream of their own) use programmatic
// dependent launch.
bool pdl_on();

// Whether matvec_forward takes rows of IC (IC % 8 == 0 and, with the LayerNorm, a row fits in
// shared memory; without it the kernel needs none), and how many rows one of its launches serves
// (fewer with the LayerNorm for very wide rows).
bool matvec_ok(int IC, bool layernorm);
int matvec_rows(int IC, bool layernorm, bool tensor_cores);
// Whether matvec_forward may take tensor cores for rows of IC: 16-bit weights, the kernels
// running as compute capability 8.0+ code (an 8.0 / 8.6 GPU runs a build without code for it as
// compute_75: no tensor cores) and, with the LayerNorm, its rows fit in shared memory (without it
// the kernel needs none: the 4C-wide rows of a model whose C qualifies always do).
bool tensor_cores_ok(DType dt, int IC, bool layernorm);

// Decode rows (any B, in chunks of matvec_rows): out = epi(x . weight (OC, IC)^T + bias), each
// weight row read once per chunk, fp32 accumulation. With ln_w, x = the LayerNorm (ln_w, ln_b
// (may be nullptr), eps) of inp (B, IC) fp32, computed in the kernel; without, x = inp (B, IC) in
// dt. Two kernels: warps per output column on CUDA cores, whose cost grows with the rows (they
// read their inputs from shared memory once per row and weight: 4 rows take twice as long as 1),
// and, with tensor_cores (tensor_cores_ok), mma.sync on 8 rows at once for the price of about
// one, slower than the first at 1 row; the LayerNorm output is rounded to dt there, as the
// prefill's GEMMs take it. Their results differ; each row's result is bit-identical whatever else
// shares the batch under either. qkv: where kQkv writes (out unused then). inp, weight, ln_w and
// ln_b 16-byte aligned.
void matvec_forward(void* out, const void* inp, const float* ln_w, const float* ln_b, float eps,
                    const void* weight, const float* bias, int B, int IC, int OC, Epilogue epi,
                    const QkvOut* qkv, DType dt, bool tensor_cores, cudaStream_t st);

// One layer's device pointers for decode_layers_forward: matrices in dt, vectors fp32 (biases
// and LayerNorm biases may be nullptr), and the layer's KV cache k, v (S, T, C) in dt.
struct DecodeLayer {
  const float *ln1_w, *ln1_b, *attn_b, *aproj_b, *ln2_w, *ln2_b, *fc_b, *mproj_b;
  const void *attn_w, *aproj_w, *fc_w, *mproj_w;
  void *k, *v;
};

struct DecodeLayersArgs {
  const DecodeLayer* layers;  // device array of n_layers
  int n_layers;
  float* x;             // (B, C) fp32: the residual stream, updated in place
  void* att;            // (B, C) in dt: scratch
  void* h;              // (B, 4C) in dt: scratch
  float* q;             // (B, C) fp32: scratch
  const int* row_sample;  // (B): each row's KV cache slot and position
  const int* row_pos;
  int C, n_head, T;     // T: the KV cache's positions per sample
  float eps;            // LayerNorm epsilon
  unsigned* barrier;    // one device word, zeroed by decode_layers_forward
};

// Whether decode_layers_forward takes B rows of this model shape: compute capability 7.0+ with
// cooperative launches, head size 64, 1 <= B <= kDecodeRows, rows that matvec_forward takes in
// one chunk.
bool decode_layers_ok(int C, int n_head, int T, int B, DType dt);
// Every layer of a.layers on B decode rows in one persistent launch (grid barriers between the
// stages), bit-identical to calling, per layer, matvec_forward (CUDA cores) and attention_forward
// as the backend's decode block does, and faster: no launch gaps, and each pass's first weights
// are loaded while the grid waits at a barrier.
void decode_layers_forward(const DecodeLayersArgs& a, int B, DType dt, cudaStream_t st);

// out (B, OC) fp32 = inp (B, IC, dt) . weight (OC, IC, dt)^T through cuBLAS on h's stream: the
// GEMM that matmul_forward runs for B >= gemm_min_rows() (and on inputs its matrix-vector
// kernels cannot take). Unchecked, unlike everything else here: it returns cuBLAS's status (for
// the start-up's warm-up, whose failures the backend meets and reports later).
cublasStatus_t gemm_status(float* out, const void* inp, const void* weight, int B, int IC, int OC,
                           DType dt, cublasHandle_t h);
int gemm_min_rows();

// out = epi(inp (B, IC) . weight (OC, IC)^T + bias (OC)); inp and weight in dt, fp32 accumulation;
// bias may be nullptr. B <= kMatvecRows (IC % 8 == 0, 16-byte aligned rows): matvec_forward.
// Otherwise cublasGemmEx (CUBLAS_COMPUTE_32F) into `scratch` (B, OC) fp32 (unused for kStore
// without bias, may be nullptr then) and an elementwise epilogue. The handle must be bound to `st`.
void matmul_forward(void* out, const void* inp, const void* weight, const float* bias, int B,
                    int IC, int OC, Epilogue epi, float* scratch, DType dt, bool tensor_cores,
                    cublasHandle_t h, cudaStream_t st);

// Splits qkv (B, 3C) + bias (3C, may be nullptr) into q (B, C) fp32 and the rows' keys and values,
// written into the KV cache of this layer at (row_sample[b], row_pos[b]). k, v: (S, T, C) in dt.
void qkv_scatter_forward(float* q, void* k, void* v, const float* qkv, const float* bias,
                         const int* row_sample, const int* row_pos, int B, int C, int T, DType dt,
                         cudaStream_t st);

// Causal self-attention of B query rows against the KV cache (the softmax is inside): row b
// attends to positions 0 .. row_pos[b] of sample row_sample[b]. q (B, C) fp32; k, v (S, T, C) in
// dt; out (B, C) in dt: per head softmax(q.k / sqrt(HS)) . v. Each row's result is independent
// of the other rows (one kernel per head shape, whatever the batch).
void attention_forward(void* out, const float* q, const void* k, const void* v,
                       const int* row_sample, const int* row_pos, int B, int C, int NH, int T,
                       DType dt, cudaStream_t st);

// out (B, OC, dt) = gelu_tanh(inp (B, OC) + bias (OC)); bias may be nullptr.
void gelu_forward(void* out, const float* inp, const float* bias, int B, int OC, DType dt,
                  cudaStream_t st);

// x (B, C) += y (B, C) + bias (C); bias may be nullptr.
void residual_forward(float* x, const float* y, const float* bias, int B, int C, cudaStream_t st);

// For each of B rows of logits (fp32, row stride `stride`): the k best of its first V values by
// (logit desc, NaN last, id asc), 1 <= k <= V, in id order: ids (B, k) and their logits vals
// (B, k), exactly mdi::select_top's output. One block per row: a radix select of the k-th key
// (4 passes of 8 bits), then an ordered compaction; for k = 1 a single pass.
void top_forward(int* ids, float* vals, const float* logits, int B, int stride, int V, int k,
                 cudaStream_t st);

}  // namespace mdi::cuda
