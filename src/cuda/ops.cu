// CUDA kernels of the GPT-2 forward pass (declared in ops.h): conversion, embedding, layer norm,
// QKV split into the KV cache, causal attention with its softmax, bias + GELU, residual add, and
// the cuBLAS GEMM. Templated on the storage type T (float, __half, __nv_bfloat16); arithmetic is
// fp32 throughout. Simple, readable kernels: one block per row (layer norm) or per (row, head)
// (attention), grid-stride loops for the elementwise ops.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cublas_v2.h>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "check.h"
#include "grid_barrier.cuh"
#include "mdi/error.h"
#include "ops.h"

namespace mdi::cuda {

namespace {

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float gelu_f(float x) {
  const float s = 0.7978845608028654f;  // sqrt(2 / pi)
  return 0.5f * x * (1.0f + tanhf(s * (x + 0.044715f * x * x * x)));
}

// Sum (or max) over the block; every thread gets the result. `red` holds 32 floats of shared
// memory; blockDim.x is a multiple of 32.
template <bool kMax>
__device__ float block_reduce(float v, float* red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
  v = kMax ? warp_max(v) : warp_sum(v);
  __syncthreads();  // red may still be read by a previous reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = lane < nw ? red[lane] : (kMax ? -INFINITY : 0.0f);
  return kMax ? warp_max(r) : warp_sum(r);
}

// Sums NB values over the block at once (two barriers for all of them); every thread gets the
// results. `red` holds NB * 32 floats of shared memory.
template <int NB>
__device__ void block_sum_n(float (&v)[NB], float* red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
#pragma unroll
  for (int b = 0; b < NB; ++b) v[b] = warp_sum(v[b]);
  __syncthreads();  // red may still be read by a previous reduction
  if (lane == 0)
#pragma unroll
    for (int b = 0; b < NB; ++b) red[b * 32 + warp] = v[b];
  __syncthreads();
#pragma unroll
  for (int b = 0; b < NB; ++b) v[b] = warp_sum(lane < nw ? red[b * 32 + lane] : 0.0f);
}

// Programmatic dependent launch (Hopper and newer; no-ops below): a kernel launched with the
// programmatic-serialization attribute may start while the previous kernel of the stream still
// runs. pdl_wait() blocks until that kernel has finished and its writes are visible: everything
// before it may only read what no earlier kernel writes (weights). pdl_launch_dependents() lets
// the next kernel start early.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Grid for an elementwise kernel over N elements with grid-stride loops.
inline int grid_for(long N, int threads) {
  long g = (N + threads - 1) / threads;
  return int(g < 1 ? 1 : (g > 65535L * 8 ? 65535L * 8 : g));
}

constexpr int kThreads = 256;

// out = in converted (S: float, or __half for a file's halves).
template <typename T, typename S = float>
__global__ void convert_kernel(T* out, const S* in, long N) {
  for (long i = blockIdx.x * long(blockDim.x) + threadIdx.x; i < N; i += long(gridDim.x) * blockDim.x)
    out[i] = from_f<T>(to_f(in[i]));
}

template <typename T>
__global__ void to_float_kernel(float* out, const T* in, long N) {
  for (long i = blockIdx.x * long(blockDim.x) + threadIdx.x; i < N; i += long(gridDim.x) * blockDim.x)
    out[i] = to_f(in[i]);
}

template <typename T>
__global__ void embedding_kernel(float* out, const int* tokens, const int* pos, const T* wte,
                                 const T* wpe, int R, int C) {
  const long N = long(R) * C;
  for (long i = blockIdx.x * long(blockDim.x) + threadIdx.x; i < N; i += long(gridDim.x) * blockDim.x) {
    const long r = i / C, c = i % C;
    out[i] = to_f(wte[long(tokens[r]) * C + c]) + to_f(wpe[long(pos[r]) * C + c]);
  }
}

// One block per row; two passes over the row (mean, then variance about the mean) in fp32.
template <typename T>
__global__ void layernorm_kernel(T* out, const float* inp, const float* weight, const float* bias,
                                 int C, float eps) {
  __shared__ float red[32];
  const float* x = inp + long(blockIdx.x) * C;
  T* o = out + long(blockIdx.x) * C;
  float s = 0.0f;
  for (int i = threadIdx.x; i < C; i += blockDim.x) s += x[i];
  const float mean = block_reduce<false>(s, red) / C;
  float v = 0.0f;
  for (int i = threadIdx.x; i < C; i += blockDim.x) {
    const float d = x[i] - mean;
    v += d * d;
  }
  const float rstd = rsqrtf(block_reduce<false>(v, red) / C + eps);
  for (int i = threadIdx.x; i < C; i += blockDim.x) {
    const float y = (x[i] - mean) * rstd * weight[i] + (bias ? bias[i] : 0.0f);
    o[i] = from_f<T>(y);
  }
}

template <typename T>
__global__ void qkv_scatter_kernel(float* q, T* k, T* v, const float* qkv, const float* bias,
                                   const int* row_sample, const int* row_pos, int B, int C, int T_) {
  const long N = long(B) * C;
  for (long i = blockIdx.x * long(blockDim.x) + threadIdx.x; i < N; i += long(gridDim.x) * blockDim.x) {
    const long b = i / C, c = i % C;
    const float* row = qkv + b * 3 * C;
    const long dst = (long(row_sample[b]) * T_ + row_pos[b]) * C + c;
    q[i] = row[c] + (bias ? bias[c] : 0.0f);
    k[dst] = from_f<T>(row[C + c] + (bias ? bias[C + c] : 0.0f));
    v[dst] = from_f<T>(row[2 * C + c] + (bias ? bias[2 * C + c] : 0.0f));
  }
}

// One block per (head, row). Shared memory: the query head (HS floats), the scores of positions
// 0 .. P (P + 1 <= T floats), and G * HS partial outputs. Scores: a thread per position (all its
// key loads independent); softmax with block reductions; output: G groups of HS threads, group g
// summing positions g, g + G, ..., then the groups added in order.
template <typename T>
__global__ void attention_kernel(T* out, const float* q, const T* k, const T* v,
                                 const int* row_sample, const int* row_pos, int C, int NH, int T_,
                                 float scale) {
  extern __shared__ float sm[];
  __shared__ float red[32];
  const int h = blockIdx.x, b = blockIdx.y, HS = C / NH, P = row_pos[b];
  const long base = long(row_sample[b]) * T_ * C + long(h) * HS;  // (sample, t = 0, head h)
  float* qs = sm;
  float* att = sm + HS;
  float* part = att + T_;
  for (int d = threadIdx.x; d < HS; d += blockDim.x) qs[d] = q[long(b) * C + h * HS + d];
  __syncthreads();

  float m = -INFINITY;
  for (int t = threadIdx.x; t <= P; t += blockDim.x) {
    const T* kt = k + base + long(t) * C;
    float s = 0.0f;
#pragma unroll 8
    for (int d = 0; d < HS; ++d) s = fmaf(qs[d], to_f(kt[d]), s);
    att[t] = s * scale;
    m = fmaxf(m, att[t]);
  }
  m = block_reduce<true>(m, red);
  float s = 0.0f;
  for (int t = threadIdx.x; t <= P; t += blockDim.x) {  // the same positions as above: no barrier
    const float e = expf(att[t] - m);
    att[t] = e;
    s += e;
  }
  const float inv = 1.0f / block_reduce<false>(s, red);  // its barriers also publish att[]

  if (HS <= int(blockDim.x)) {
    const int G = blockDim.x / HS, g = threadIdx.x / HS, d = threadIdx.x % HS;
    if (g < G) {
      const T* vd = v + base + d;
      float acc = 0.0f;
#pragma unroll 4
      for (int t = g; t <= P; t += G) acc = fmaf(att[t], to_f(vd[long(t) * C]), acc);
      part[g * HS + d] = acc;
    }
    __syncthreads();
    if (threadIdx.x < HS) {
      float acc = 0.0f;
      for (int j = 0; j < G; ++j) acc += part[j * HS + threadIdx.x];
      out[long(b) * C + h * HS + threadIdx.x] = from_f<T>(acc * inv);
    }
  } else {
    for (int d = threadIdx.x; d < HS; d += blockDim.x) {
      const T* vd = v + base + d;
      float acc = 0.0f;
      for (int t = 0; t <= P; ++t) acc = fmaf(att[t], to_f(vd[long(t) * C]), acc);
      out[long(b) * C + h * HS + d] = from_f<T>(acc * inv);
    }
  }
}

template <typename T>
__global__ void gelu_kernel(T* out, const float* inp, const float* bias, int B, int OC) {
  const long N = long(B) * OC;
  for (long i = blockIdx.x * long(blockDim.x) + threadIdx.x; i < N; i += long(gridDim.x) * blockDim.x)
    out[i] = from_f<T>(gelu_f(inp[i] + (bias ? bias[i % OC] : 0.0f)));
}

__global__ void residual_kernel(float* x, const float* y, const float* bias, int B, int C) {
  const long N = long(B) * C;
  for (long i = blockIdx.x * long(blockDim.x) + threadIdx.x; i < N; i += long(gridDim.x) * blockDim.x)
    x[i] += y[i] + (bias ? bias[i % C] : 0.0f);
}

// A logit as an unsigned key whose order is the selection's: larger logit, larger key; -0 and +0
// equal; NaN below everything (0; -inf is 0x007fffff).
__device__ __forceinline__ uint32_t order_key(float f) {
  if (f != f) return 0u;
  const uint32_t u = __float_as_uint(f == 0.0f ? 0.0f : f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

constexpr int kTopThreads = 1024;

// One block per row (top_forward). Radix select: after pass p, the keys that share `prefix` in
// their top 8(p+1) bits hold the k-th largest, `need` of them still to take from the top. Then each
// thread counts its contiguous slice of ids, a block scan gives the slices' offsets, and the
// slices are written in id order: every key above the k-th, and the first `need` equal to it.
__global__ void __launch_bounds__(kTopThreads) top_kernel(int* ids, float* vals, const float* logits,
                                                          int stride, int V, int k) {
  using Scan = cub::BlockScan<unsigned long long, kTopThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ unsigned hist[256];
  __shared__ uint32_t s_prefix;
  __shared__ int s_need;
  const float* row = logits + size_t(blockIdx.x) * stride;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  uint32_t prefix = 0, mask = 0;
  int need = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    for (int i0 = warp * 32; i0 < V; i0 += blockDim.x) {  // warp-uniform: the match is warp-wide
      const int i = i0 + lane;
      const uint32_t key = i < V ? order_key(row[i]) : 0u;
      const bool in = i < V && (key & mask) == prefix;
      const unsigned bin = in ? (key >> shift) & 255u : 256u;
      const unsigned peers = __match_any_sync(0xffffffffu, bin);
      if (in && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], unsigned(__popc(peers)));
    }
    __syncthreads();
    if (warp == 0) {  // the bin holding the need-th largest: lane l sums bins 255-8l .. 248-8l
      unsigned c[8], sum = 0;
      for (int j = 0; j < 8; ++j) sum += c[j] = hist[255 - 8 * lane - j];
      unsigned incl = sum;
      for (int o = 1; o < 32; o <<= 1) {
        const unsigned v = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += v;
      }
      const unsigned excl = incl - sum;
      if (excl < unsigned(need) && incl >= unsigned(need)) {  // exactly one lane
        unsigned before = excl;
        for (int j = 0; j < 8; ++j) {
          if (before + c[j] >= unsigned(need)) {
            s_prefix = prefix | (uint32_t(255 - 8 * lane - j) << shift);
            s_need = need - int(before);
            break;
          }
          before += c[j];
        }
      }
    }
    __syncthreads();
    prefix = s_prefix;
    need = s_need;
    mask |= 255u << shift;
  }
  const uint32_t kth = prefix;  // the k-th largest key; take `need` of the keys equal to it

  const int per = (V + blockDim.x - 1) / blockDim.x;
  const int lo = min(V, int(threadIdx.x) * per), hi = min(V, lo + per);
  unsigned above = 0, equal = 0;
  for (int i = lo; i < hi; ++i) {
    const uint32_t key = order_key(row[i]);
    above += key > kth;
    equal += key == kth;
  }
  unsigned long long before;
  Scan(scan_tmp).ExclusiveSum((static_cast<unsigned long long>(above) << 32) | equal, before);
  unsigned eq_seen = unsigned(before & 0xffffffffu);
  int out = int(before >> 32) + int(min(eq_seen, unsigned(need)));
  int* row_ids = ids + size_t(blockIdx.x) * k;
  float* row_vals = vals + size_t(blockIdx.x) * k;
  for (int i = lo; i < hi; ++i) {
    const float f = row[i];
    const uint32_t key = order_key(f);
    if (key > kth || (key == kth && eq_seen++ < unsigned(need))) {
      row_ids[out] = i;
      row_vals[out] = f;
      ++out;
    }
  }
}

// Top 1 (greedy), one block per row: a single pass where top_kernel's radix select makes five,
// with the same answer (the largest order_key, the lowest id among equal ones; id 0 when every
// logit is NaN). Each candidate is one 64-bit word, key above the complemented id, so the
// largest word wins.
struct MaxU64 {
  __device__ __forceinline__ unsigned long long operator()(unsigned long long a, unsigned long long b) const {
    return a > b ? a : b;
  }
};

__global__ void __launch_bounds__(kTopThreads) argmax_kernel(int* ids, float* vals, const float* logits,
                                                             int stride, int V) {
  using Reduce = cub::BlockReduce<unsigned long long, kTopThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const float* row = logits + size_t(blockIdx.x) * stride;
  unsigned long long best = 0;
  constexpr int kU = 8;  // loads in flight per thread (one at a time left the pass latency-bound)
  for (int i0 = int(threadIdx.x); i0 < V; i0 += kU * int(blockDim.x)) {
    float f[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int i = i0 + u * int(blockDim.x);
      if (i < V) f[u] = row[i];
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int i = i0 + u * int(blockDim.x);
      if (i < V) best = MaxU64{}(best, (static_cast<unsigned long long>(order_key(f[u])) << 32) | (0xffffffffu - unsigned(i)));
    }
  }
  best = Reduce(tmp).Reduce(best, MaxU64{});
  if (threadIdx.x == 0) {
    const int id = int(0xffffffffu - unsigned(best & 0xffffffffu));
    ids[blockIdx.x] = id;
    vals[blockIdx.x] = row[id];
  }
}

// 16 bytes of T (8 halves or 4 floats) converted to fp32.
template <typename T>
struct Vec16 {
  static constexpr int N = 16 / sizeof(T);
  float f[N];
  __device__ __forceinline__ void from(const uint4& raw) {
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int j = 0; j < N; ++j) f[j] = to_f(e[j]);
  }
  __device__ __forceinline__ void load(const T* p) { from(__ldg(reinterpret_cast<const uint4*>(p))); }
};

// 16 bytes at p: through the read-only (non-coherent) cache with kNC, which is only for data no
// thread of the running kernel writes; a plain load without.
template <bool kNC>
__device__ __forceinline__ uint4 load16(const void* p) {
  if constexpr (kNC) return __ldg(static_cast<const uint4*>(p));
  else return *static_cast<const uint4*>(p);
}

template <typename T, Epilogue E>
__device__ __forceinline__ void epilogue(void* out, long i, float y) {
  if constexpr (E == Epilogue::kStore) static_cast<float*>(out)[i] = y;
  if constexpr (E == Epilogue::kGelu) static_cast<T*>(out)[i] = from_f<T>(gelu_f(y));
  if constexpr (E == Epilogue::kResidual) static_cast<float*>(out)[i] += y;
}

constexpr int kMatvecWarps = 8;  // warps per block of the matrix-vector kernels

struct MatvecParams {
  void* out;
  const void* inp;     // (NB, IC): in T, or fp32 when the LayerNorm is fused (kLN)
  const float* ln_w;   // kLN: LayerNorm weight and bias (IC; bias may be nullptr)
  const float* ln_b;
  float eps;
  const void* w;       // (OC, IC) in T
  const float* bias;   // (OC) or nullptr
  int IC, OC;
  QkvOut qkv;          // Epilogue::kQkv
  int slices;          // warps per output column (1, 2, 4 or 8): see matvec_kernel
};

// Output column oc of row b through the epilogue: kQkv puts q, or the row's key / value into the
// KV cache; the others write out.
template <typename T, Epilogue E>
__device__ __forceinline__ void write_out(const MatvecParams& p, int b, int oc, float y) {
  if constexpr (E == Epilogue::kQkv) {
    const QkvOut& o = p.qkv;
    const int C = p.OC / 3, part = oc / C, c = oc % C;
    if (part == 0) {
      o.q[long(b) * C + c] = y;
    } else {
      const long dst = (long(o.row_sample[b]) * o.T + o.row_pos[b]) * C + c;
      static_cast<T*>(part == 1 ? o.k : o.v)[dst] = from_f<T>(y);
    }
  } else {
    epilogue<T, E>(p.out, long(b) * p.OC + oc, y);
  }
}

// What the epilogue adds to the sum of row b, column oc: the bias and, for kResidual, the
// residual (row b of out, written only by the thread that writes this element). The matrix-vector
// kernels load them as a column begins, after the wait for the pass before (which may write out),
// so that the loads are in flight during the products and no load waits at the write.
template <Epilogue E>
struct EpilogueOperands {
  float bo = 0.0f, res = 0.0f;
  __device__ __forceinline__ EpilogueOperands(const MatvecParams& p, int b, int oc, bool load) {
    if (!load) return;
    if (p.bias) bo = __ldg(p.bias + oc);
    if constexpr (E == Epilogue::kResidual)
      res = static_cast<const float*>(p.out)[long(b) * p.OC + oc];
  }
  // write_out of sum + bias, the residual added as epilogue's `+=` adds it.
  template <typename T>
  __device__ __forceinline__ void write(const MatvecParams& p, int b, int oc, float sum) const {
    const float y = sum + bo;
    if constexpr (E == Epilogue::kResidual)
      static_cast<float*>(p.out)[long(b) * p.OC + oc] = res + y;
    else
      write_out<T, E>(p, b, oc, y);
  }
};

// With kLN: normalises the NB fp32 rows inp (NB, IC) into xs (NB, IC), two-pass mean / variance,
// with the LayerNorm weight lnw and bias lnb already in shared memory. Ends with a barrier.
template <int NB>
__device__ void layernorm_rows(float* xs, const float* inp, const float* lnw, const float* lnb, int IC,
                               float eps, float* red) {
  const float4* x = reinterpret_cast<const float4*>(inp);
  float s[NB];
#pragma unroll
  for (int b = 0; b < NB; ++b) {
    s[b] = 0.0f;
#pragma unroll 2
    for (int i = threadIdx.x; i < IC / 4; i += blockDim.x) {
      const float4 v = x[long(b) * (IC / 4) + i];
      reinterpret_cast<float4*>(xs + b * IC)[i] = v;
      s[b] += (v.x + v.y) + (v.z + v.w);
    }
  }
  block_sum_n<NB>(s, red);
  float mean[NB], var[NB];
#pragma unroll
  for (int b = 0; b < NB; ++b) {
    mean[b] = s[b] / IC;
    var[b] = 0.0f;
    for (int i = threadIdx.x; i < IC; i += blockDim.x) {
      const float d = xs[b * IC + i] - mean[b];
      var[b] += d * d;
    }
  }
  block_sum_n<NB>(var, red);
#pragma unroll
  for (int b = 0; b < NB; ++b) {
    const float rstd = rsqrtf(var[b] / IC + eps);
    for (int i = threadIdx.x; i < IC; i += blockDim.x)
      xs[b * IC + i] = (xs[b * IC + i] - mean[b]) * rstd * lnw[i] + lnb[i];
  }
  __syncthreads();
}

// Stages the LayerNorm weight and bias (IC; bias may be nullptr: zeros) into shared memory.
__device__ __forceinline__ void stage_layernorm(float* lnw, float* lnb, const float* w, const float* b, int IC) {
  const float4* w4 = reinterpret_cast<const float4*>(w);
  const float4* b4 = reinterpret_cast<const float4*>(b);
#pragma unroll 2
  for (int i = threadIdx.x; i < IC / 4; i += blockDim.x) {
    reinterpret_cast<float4*>(lnw)[i] = __ldg(w4 + i);
    reinterpret_cast<float4*>(lnb)[i] = b ? __ldg(b4 + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
}

// acc[b] += weight vector j (16 bytes of T, `raw`) . the same elements of row b: from xs (NB, IC)
// fp32 with kLN, from inp (NB, IC) in T without (through the read-only cache with kNC).
template <typename T, int NB, bool kLN, bool kNC>
__device__ __forceinline__ void dot_rows(float (&acc)[NB], const uint4& raw, int j, const float* xs,
                                         const void* inp, int IC) {
  constexpr int N = Vec16<T>::N;
  Vec16<T> wv;
  wv.from(raw);
#pragma unroll
  for (int b = 0; b < NB; ++b) {
    float xv[N];
    if constexpr (kLN) {
      const float4* src = reinterpret_cast<const float4*>(xs + b * IC + j * N);
#pragma unroll
      for (int q = 0; q < N / 4; ++q) {
        const float4 f = src[q];
        xv[4 * q] = f.x, xv[4 * q + 1] = f.y, xv[4 * q + 2] = f.z, xv[4 * q + 3] = f.w;
      }
    } else {
      Vec16<T> in;
      in.from(load16<kNC>(static_cast<const T*>(inp) + long(b) * IC + j * N));
#pragma unroll
      for (int e = 0; e < N; ++e) xv[e] = in.f[e];
    }
#pragma unroll
    for (int e = 0; e < N; ++e) acc[b] = fmaf(wv.f[e], xv[e], acc[b]);
  }
}

// The end of one column pass of the CUDA-core kernels (every thread of the block calls it, with
// S block-uniform): each warp's lane sums are added over the warp, the S slice sums of column oc
// in slice order by its first warp (through pt, one of two buffers used by alternate passes, so
// that no barrier is needed before the writes), and lane b of that warp writes row b, with the
// operands eo it loaded (row b, column oc) before the products.
template <typename T, int NB, Epilogue E>
__device__ __forceinline__ void finish_column(const MatvecParams& p, float (&acc)[NB],
                                              float (&pt)[kMatvecWarps][NB], int oc, bool active,
                                              const EpilogueOperands<E>& eo) {
  static_assert(NB <= 32, "lane b writes row b");
  const int S = p.slices, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int b = 0; b < NB; ++b) acc[b] = warp_sum(acc[b]);
  if (S > 1) {
    if (lane == 0)
#pragma unroll
      for (int b = 0; b < NB; ++b) pt[warp][b] = acc[b];
    __syncthreads();
    if (warp % S != 0) return;
#pragma unroll
    for (int b = 0; b < NB; ++b) {
      float t = pt[warp][b];
      for (int k = 1; k < S; ++k) t += pt[warp + k][b];
      acc[b] = t;
    }
  }
  if (!active) return;
#pragma unroll
  for (int b = 0; b < NB; ++b)
    if (lane == b) eo.template write<T>(p, b, oc, acc[b]);
}

// 16-byte vectors per lane of a column's weight slice loaded ahead (see matvec_kernel).
constexpr int kPre = 8;

// Where the calling warp works in a CUDA-core matrix-vector pass over the whole grid: S warps
// per output column, this warp reading slice warp % S (16-byte vectors lo .. hi) of each weight
// row; the block's columns are c0, c0 + stride, ... (plus warp / S).
template <typename T>
struct MatvecWarp {
  int nvec, S, warp, lane, lo, hi, stride, c0;
  __device__ __forceinline__ explicit MatvecWarp(const MatvecParams& p) {
    nvec = p.IC / Vec16<T>::N;
    S = p.slices;
    warp = threadIdx.x / 32;
    lane = threadIdx.x % 32;
    const int cols = kMatvecWarps / S, per = (nvec + S - 1) / S;
    lo = (warp % S) * per;
    hi = min(nvec, lo + per);
    stride = gridDim.x * cols;
    c0 = blockIdx.x * cols;
  }
  __device__ __forceinline__ const uint4* row(const MatvecParams& p, int oc) const {
    return static_cast<const uint4*>(p.w) + long(oc) * nvec;
  }
  // The first kPre vectors of this lane's part of column oc's slice (nothing past OC).
  __device__ __forceinline__ void load(const MatvecParams& p, uint4 (&pre)[kPre], int oc) const {
    if (oc >= p.OC) return;
#pragma unroll
    for (int u = 0; u < kPre; ++u)
      if (lo + lane + 32 * u < hi) pre[u] = __ldg(row(p, oc) + lo + lane + 32 * u);
  }
};

// What a matrix-vector pass does before waiting for whatever writes its inputs (weights do not
// depend on it): loads the warp's first column slice into pre and, with kLN, stages the
// LayerNorm weight and bias into shared memory after the NB rows (xs + NB * IC).
template <typename T, int NB, bool kLN>
__device__ __forceinline__ void matvec_prologue(const MatvecParams& p, uint4 (&pre)[kPre], float* xs) {
  const MatvecWarp<T> mw(p);
  mw.load(p, pre, mw.c0 + mw.warp / mw.S);
  if constexpr (kLN) stage_layernorm(xs + NB * p.IC, xs + (NB + 1) * p.IC, p.ln_w, p.ln_b, p.IC);
}

// The rest of the pass, after matvec_prologue and the wait: with kLN the block normalises the NB
// fp32 rows into xs, then loops over its columns. kNC: the input rows are read through the
// read-only cache (only where nothing in the same kernel writes them).
template <typename T, int NB, Epilogue E, bool kLN, bool kNC>
__device__ __forceinline__ void matvec_columns(const MatvecParams& p, uint4 (&pre)[kPre], float* xs, float* red,
                                               float (&part)[2][kMatvecWarps][NB]) {
  constexpr int kUnroll = 4;
  const MatvecWarp<T> mw(p);
  const int IC = p.IC, S = mw.S, lane = mw.lane, lo = mw.lo, hi = mw.hi, stride = mw.stride, c0 = mw.c0;
  if constexpr (kLN)
    layernorm_rows<NB>(xs, static_cast<const float*>(p.inp), xs + NB * IC, xs + (NB + 1) * IC, IC, p.eps, red);

  // Block-uniform trip count (the slice sums meet at a barrier): while the block's first column
  // exists; warps past OC only take part in the barriers.
  for (int it = 0; c0 + it * stride < p.OC; ++it) {
    const int oc = c0 + it * stride + mw.warp / S;
    const bool active = oc < p.OC;
    // Lane b of the column's first warp writes row b (finish_column).
    const EpilogueOperands<E> eo(p, lane, oc, active && mw.warp % S == 0 && lane < NB);
    float acc[NB] = {};
    if (active) {
#pragma unroll
      for (int u = 0; u < kPre; ++u)
        if (lo + lane + 32 * u < hi) dot_rows<T, NB, kLN, kNC>(acc, pre[u], lo + lane + 32 * u, xs, p.inp, IC);
      for (int j0 = lo + lane + 32 * kPre; j0 < hi; j0 += 32 * kUnroll) {  // slices beyond 32 * kPre
        uint4 raw[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
          if (j0 + 32 * u < hi) raw[u] = __ldg(mw.row(p, oc) + j0 + 32 * u);
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
          if (j0 + 32 * u < hi) dot_rows<T, NB, kLN, kNC>(acc, raw[u], j0 + 32 * u, xs, p.inp, IC);
      }
      mw.load(p, pre, oc + stride);  // in flight during the reductions and the epilogue
    }
    finish_column<T, NB, E>(p, acc, part[it % 2], oc, active, eo);
  }
}

// Decode rows: S warps per output column oc (S = 1, 2, 4 or 8, MatvecParams::slices), warp s
// reading slice s of the weight row (IC), so that a slice of at most 32 * kPre 16-byte vectors
// is loaded, all at once, before waiting for the previous kernel (weights do not depend on it).
// Lane l takes the slice's vectors l, l + 32, ... in order, dotted with each of the NB input
// rows (dot_rows); finish_column adds them up and writes. With kLN the block first normalises
// the NB fp32 rows into shared memory (the LayerNorm parameters are staged into shared memory
// before the wait). Row b's arithmetic is the same for every NB: results do not depend on which
// rows share a launch. The grid is one wave (no more blocks than fit on the GPU at once), each
// block looping over its columns c0, c0 + stride, ...: the LayerNorm is computed once per block
// and the next column's slice is loaded into registers while the current one's sums are reduced
// and written. (decode_layers_kernel runs the same two parts, prologue and columns.)
template <typename T, int NB, Epilogue E, bool kLN>
__global__ void __launch_bounds__(256) matvec_kernel(MatvecParams p) {
  extern __shared__ float xs[];  // kLN: (NB, IC) normalised rows, then ln_w (IC), ln_b (IC)
  __shared__ float red[NB * 32];
  __shared__ float part[2][kMatvecWarps][NB];  // slice sums, by iteration parity
  uint4 pre[kPre];  // the current column's slice
  matvec_prologue<T, NB, kLN>(p, pre, xs);
  pdl_launch_dependents();
  pdl_wait();
  matvec_columns<T, NB, E, kLN, true>(p, pre, xs, red, part);
}

// One mma.sync m16n8k16 (fp32 accumulation, d += a . b) with A rows 8-15 zero: a0 / a2 hold
// row g's k pairs (2t, 2t+1) / (2t+8, 2t+9), b0 / b1 column g's same k pairs (PTX ISA fragment
// layouts; g = lane / 4, t = lane % 4).
template <typename T>
__device__ __forceinline__ void mma_row8(float (&d)[4], uint32_t a0, uint32_t a2, uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __half>)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1));
  else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1));
#endif
}

// Decode rows of 16-bit weights on tensor cores (compute capability 8.0+): up to 8 rows per
// launch for the price of one, where the CUDA-core matvec_kernel reads its inputs from shared
// memory once per row and weight and is bound by that at 4 rows. out = epi(x . W^T + bias), x
// (B <= 8 rows) in T (the LayerNorm output is rounded to T, as the prefill's GEMMs take it),
// fp32 accumulation. A warp takes an 8-column tile and one of S slices of its k-steps (32 k
// each): lane (g, t) loads 16 bytes of column g at k + 8t and the same 8 k of row g, and two MMAs
// take them, the k order inside an MMA permuted alike in A and B. The S slice sums are added in
// slice order. Rows 8-15 of A are zero; the row count only decides which rows are loaded and
// written, so row b's result is the same whatever else shares the launch. With kLN, warp b
// normalises row b (two-pass mean / variance) into shared memory first. One wave of blocks, each
// looping over 8 / S tiles at a time. The first k-steps' weights are loaded before the PDL wait;
// each later batch of kPre k-steps once the one before it is multiplied, so that a warp's next
// tile's first batch is in flight through the current tile's reductions and writes.
template <typename T, Epilogue E, bool kLN>
__global__ void __launch_bounds__(256) mma_matvec_kernel(MatvecParams p, int B) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int kWarps = kMatvecWarps;
  extern __shared__ float xs[];  // kLN: ln_w (IC), ln_b (IC), then the B rows in T (stride IC + 32)
  __shared__ float part[2][kWarps][32][2];  // slice sums, by iteration parity
  const int IC = p.IC, S = p.slices, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int ksteps = (IC + 31) / 32, per = (ksteps + S - 1) / S;
  const int sl = warp % S, k_lo = min(ksteps, sl * per), k_hi = min(ksteps, k_lo + per);
  const int tiles = (p.OC + 7) / 8, tpb = kWarps / S;  // 8-column tiles; tiles per block pass
  const int xstride = IC + 32;  // halves: rows 64 bytes apart in the banks, no conflicts
  const T* w = static_cast<const T*>(p.w);
  T* xh = reinterpret_cast<T*>(xs + 2 * IC);
  uint4 pre[kPre];
  auto load = [&](int tile, int ks0) {  // k-steps ks0 .. ks0 + kPre - 1 of column tile * 8 + g
    const int col = tile * 8 + g;
#pragma unroll
    for (int u = 0; u < kPre; ++u) {
      const int k = (ks0 + u) * 32 + 8 * t;
      pre[u] = ks0 + u < k_hi && col < p.OC && k < IC
                   ? __ldg(reinterpret_cast<const uint4*>(w + long(col) * IC + k))
                   : make_uint4(0u, 0u, 0u, 0u);
    }
  };
  if (blockIdx.x * tpb + warp / S < tiles) load(blockIdx.x * tpb + warp / S, k_lo);
  if constexpr (kLN) stage_layernorm(xs, xs + IC, p.ln_w, p.ln_b, IC);
  pdl_launch_dependents();
  pdl_wait();

  if constexpr (kLN) {
    __syncthreads();  // ln_w, ln_b staged
    if (warp < B) {  // warp b normalises row b
      const float4* x4 = static_cast<const float4*>(p.inp) + long(warp) * (IC / 4);
      float sum = 0.0f;
      for (int i = lane; i < IC / 4; i += 32) {
        const float4 v = x4[i];
        sum += (v.x + v.y) + (v.z + v.w);
      }
      const float mean = warp_sum(sum) / IC;
      float sq = 0.0f;
      for (int i = lane; i < IC / 4; i += 32) {
        const float4 v = x4[i];
        const float a = v.x - mean, b = v.y - mean, c = v.z - mean, d = v.w - mean;
        sq += (a * a + b * b) + (c * c + d * d);
      }
      const float rstd = rsqrtf(warp_sum(sq) / IC + p.eps);
      T* dst = xh + warp * xstride;
      for (int i = lane; i < IC / 4; i += 32) {
        const float4 v = x4[i], lw = reinterpret_cast<const float4*>(xs)[i],
                     lb = reinterpret_cast<const float4*>(xs + IC)[i];
        dst[4 * i] = from_f<T>((v.x - mean) * rstd * lw.x + lb.x);
        dst[4 * i + 1] = from_f<T>((v.y - mean) * rstd * lw.y + lb.y);
        dst[4 * i + 2] = from_f<T>((v.z - mean) * rstd * lw.z + lb.z);
        dst[4 * i + 3] = from_f<T>((v.w - mean) * rstd * lw.w + lb.w);
      }
    }
    __syncthreads();
  }
  auto xload = [&](int ks) {  // row g's 8 k at this lane's place in k-step ks
    const int k = ks * 32 + 8 * t;
    if (g >= B || k >= IC) return make_uint4(0u, 0u, 0u, 0u);
    if constexpr (kLN) return *reinterpret_cast<const uint4*>(xh + g * xstride + k);
    else return __ldg(reinterpret_cast<const uint4*>(static_cast<const T*>(p.inp) + long(g) * IC + k));
  };

  // Block-uniform trip count (the slice sums meet at a barrier).
  for (int it = 0; (blockIdx.x + it * gridDim.x) * tpb < tiles; ++it) {
    const int tile = (blockIdx.x + it * gridDim.x) * tpb + warp / S;
    const bool active = tile < tiles;
    // Lane (g, t) of the tile's first slice writes row g, columns oc0 and oc0 + 1.
    const int oc0 = tile * 8 + 2 * t;
    const bool writes = active && sl == 0 && g < B;
    const EpilogueOperands<E> eo[2] = {{p, g, oc0, writes && oc0 < p.OC},
                                       {p, g, oc0 + 1, writes && oc0 + 1 < p.OC}};
    float d0[4] = {}, d1[4] = {};  // two chains of MMAs: k pairs 0-3 and 4-7 of each 16 bytes
    if (active) {
      for (int ks0 = k_lo; ks0 < k_hi; ks0 += kPre) {  // pre holds k-steps ks0 .. ks0 + kPre - 1
#pragma unroll
        for (int u = 0; u < kPre; ++u) {
          if (ks0 + u < k_hi) {
            const uint4 xv = xload(ks0 + u);
            mma_row8<T>(d0, xv.x, xv.y, pre[u].x, pre[u].y);
            mma_row8<T>(d1, xv.z, xv.w, pre[u].z, pre[u].w);
          }
        }
        if (ks0 + kPre < k_hi) load(tile, ks0 + kPre);
        else load(tile + gridDim.x * tpb, k_lo);  // this warp's tile in the next iteration
      }
    }
    float r[2] = {d0[0] + d1[0], d0[1] + d1[1]};  // row g, columns tile * 8 + 2t, + 1
    if (S > 1) {
      float(&pt)[kWarps][32][2] = part[it % 2];  // two buffers: no barrier needed before the writes
      pt[warp][lane][0] = r[0];
      pt[warp][lane][1] = r[1];
      __syncthreads();
      if (sl != 0) continue;
      for (int j = 0; j < 2; ++j) {
        float v = pt[warp][lane][j];
        for (int k = 1; k < S; ++k) v += pt[warp + k][lane][j];
        r[j] = v;
      }
    }
    if (!active || g >= B) continue;
#pragma unroll
    for (int j = 0; j < 2; ++j)
      if (oc0 + j < p.OC) eo[j].template write<T>(p, g, oc0 + j, r[j]);
  }
#else
  (void)p, (void)B;
  __trap();  // launched only where the kernels run as 8.0+ code (tensor_cores_ok)
#endif
}

// Attention for head sizes HS = G * (16 / sizeof(T)), G a power of two <= 32: one block per
// (head h, row b). Scores: a group of G threads per position, one 16-byte key load each and a
// shuffle sum within the group; softmax with block reductions; output: group g sums positions
// g, g + NG, ... (16 bytes of V per thread), then the NG partial rows are added in order. All
// loads of a pass are independent, so long contexts keep many in flight. Any row (decode or
// prefill) takes it, so a row's result does not depend on what else is in the batch. sm: shared
// memory for T_ + NG * HS floats; kNC: keys and values through the read-only cache (not where
// the same kernel writes them).
template <typename T, int G, bool kNC>
__device__ __forceinline__ void attention_row(T* out, const float* q, const T* k, const T* v,
                                              const int* row_sample, const int* row_pos, int C, int T_,
                                              float scale, int h, int b, float* sm) {
  constexpr int VN = 16 / sizeof(T), HS = G * VN;
  __shared__ float qs[HS];
  __shared__ float red[32];
  const int NG = blockDim.x / G;
  const int g = threadIdx.x / G, l = threadIdx.x % G;
  const int P = row_pos[b];
  const long base = long(row_sample[b]) * T_ * C + long(h) * HS;  // (sample, t = 0, head h)
  for (int d = threadIdx.x; d < HS; d += blockDim.x) qs[d] = q[long(b) * C + h * HS + d] * scale;
  __syncthreads();
  float qv[VN];
#pragma unroll
  for (int e = 0; e < VN; ++e) qv[e] = qs[l * VN + e];

  float* att = sm;
  float m = -INFINITY;
  constexpr int kU = 4;  // positions per thread whose loads are in flight together
  for (int t0 = 0; t0 <= P; t0 += kU * NG) {  // the same trip count for every thread: shuffles stay full
    uint4 raw[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int t = t0 + u * NG + g;
      if (t <= P) raw[u] = load16<kNC>(k + base + long(t) * C + l * VN);
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int t = t0 + u * NG + g;
      float s = 0.0f;
      if (t <= P) {
        Vec16<T> kv;
        kv.from(raw[u]);
#pragma unroll
        for (int e = 0; e < VN; ++e) s = fmaf(qv[e], kv.f[e], s);
      }
#pragma unroll
      for (int o = G / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      if (t <= P) {
        if (l == 0) att[t] = s;
        m = fmaxf(m, s);
      }
    }
  }
  m = block_reduce<true>(m, red);  // its barriers publish att[]
  float sum = 0.0f;
  for (int t = threadIdx.x; t <= P; t += blockDim.x) {
    const float e = expf(att[t] - m);
    att[t] = e;
    sum += e;
  }
  const float inv = 1.0f / block_reduce<false>(sum, red);  // and publish the exponentials

  float acc[VN] = {};
  for (int t0 = g; t0 <= P; t0 += kU * NG) {  // positions t0, t0 + NG, ... in order
    uint4 raw[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u)
      if (t0 + u * NG <= P) raw[u] = load16<kNC>(v + base + long(t0 + u * NG) * C + l * VN);
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int t = t0 + u * NG;
      if (t > P) break;
      Vec16<T> vv;
      vv.from(raw[u]);
      const float a = att[t];
#pragma unroll
      for (int e = 0; e < VN; ++e) acc[e] = fmaf(a, vv.f[e], acc[e]);
    }
  }
  float* part = sm + T_;
#pragma unroll
  for (int e = 0; e < VN; ++e) part[g * HS + l * VN + e] = acc[e];
  __syncthreads();
  for (int d = threadIdx.x; d < HS; d += blockDim.x) {
    float o = 0.0f;
    for (int j = 0; j < NG; ++j) o += part[j * HS + d];
    out[long(b) * C + h * HS + d] = from_f<T>(o * inv);
  }
}

// attention_row with one block per (head, row): grid (NH, B).
template <typename T, int G>
__global__ void __launch_bounds__(256) attention_decode_kernel(T* out, const float* q, const T* k,
                                                                const T* v, const int* row_sample,
                                                                const int* row_pos, int C, int T_,
                                                                float scale) {
  extern __shared__ float sm[];  // scores (T_), then NG partial outputs (NG, HS)
  pdl_launch_dependents();
  pdl_wait();
  attention_row<T, G, true>(out, q, k, v, row_sample, row_pos, C, T_, scale, blockIdx.x, blockIdx.y, sm);
}

// Matrix-vector pass `stage` of layer l in decode_layers_kernel: 0 LayerNorm 1 + QKV into q and
// the KV cache, 1 attention projection added to x, 2 LayerNorm 2 + fc + GELU into h, 3 MLP
// projection added to x; the same parameters decode_block_forward gives matvec_forward.
__device__ __forceinline__ MatvecParams layer_pass(const DecodeLayersArgs& a, int l, int stage, int slices_c,
                                                   int slices_4c) {
  const DecodeLayer& L = a.layers[l];
  const int C = a.C;
  MatvecParams p{};
  p.eps = a.eps;
  p.IC = C;
  p.slices = slices_c;
  switch (stage) {
    case 0:
      p.inp = a.x, p.ln_w = L.ln1_w, p.ln_b = L.ln1_b, p.w = L.attn_w, p.bias = L.attn_b, p.OC = 3 * C;
      p.qkv = QkvOut{a.q, L.k, L.v, a.row_sample, a.row_pos, a.T};
      break;
    case 1: p.out = a.x, p.inp = a.att, p.w = L.aproj_w, p.bias = L.aproj_b, p.OC = C; break;
    case 2:
      p.out = a.h, p.inp = a.x, p.ln_w = L.ln2_w, p.ln_b = L.ln2_b, p.w = L.fc_w, p.bias = L.fc_b, p.OC = 4 * C;
      break;
    default:
      p.out = a.x, p.inp = a.h, p.w = L.mproj_w, p.bias = L.mproj_b, p.IC = 4 * C, p.OC = C, p.slices = slices_4c;
      break;
  }
  return p;
}

// Every layer of the rank on NB decode rows in one persistent launch: the five kernels of
// decode_block_forward per layer (four matrix-vector passes and the attention) become stages of
// one grid, separated by grid barriers, so no stage waits for a kernel launch or for the
// previous kernel's blocks to leave the GPU. Before each barrier the blocks load their first
// weights of the next pass (matvec_prologue): weights stream while the grid waits. The passes are
// matvec_kernel's and attention_decode_kernel's own code, in the same order, so every row's
// result is bit-identical to decode_block_forward's on CUDA cores; only the loads of what this
// kernel writes (activations, the KV cache) bypass the read-only cache. Head size 64: G = 64 / (16
// / sizeof(T)) threads per key.
template <typename T, int NB, int G>
__global__ void __launch_bounds__(256, 2) decode_layers_kernel(DecodeLayersArgs a, int slices_c, int slices_4c,
                                                               float scale) {
  extern __shared__ float xs[];  // LayerNorm rows and parameters, or the attention's scores
  __shared__ float red[NB * 32];
  __shared__ float part[2][kMatvecWarps][NB];
  unsigned barriers = 0;
  auto sync = [&] { grid_barrier(a.barrier, ++barriers); };
  uint4 pre[kPre];
  MatvecParams p = layer_pass(a, 0, 0, slices_c, slices_4c);
  matvec_prologue<T, NB, true>(p, pre, xs);
  for (int l = 0; l < a.n_layers; ++l) {
    matvec_columns<T, NB, Epilogue::kQkv, true, false>(p, pre, xs, red, part);
    p = layer_pass(a, l, 1, slices_c, slices_4c);
    matvec_prologue<T, NB, false>(p, pre, xs);
    sync();
    const T* k = static_cast<const T*>(a.layers[l].k);
    const T* v = static_cast<const T*>(a.layers[l].v);
    for (int w = blockIdx.x; w < a.n_head * NB; w += gridDim.x) {  // (head, row) items
      __syncthreads();  // shared memory of the previous item
      attention_row<T, G, false>(static_cast<T*>(a.att), a.q, k, v, a.row_sample, a.row_pos, a.C, a.T, scale,
                                 w % a.n_head, w / a.n_head, xs);
    }
    sync();
    matvec_columns<T, NB, Epilogue::kResidual, false, false>(p, pre, xs, red, part);
    p = layer_pass(a, l, 2, slices_c, slices_4c);
    matvec_prologue<T, NB, true>(p, pre, xs);
    sync();
    matvec_columns<T, NB, Epilogue::kGelu, true, false>(p, pre, xs, red, part);
    p = layer_pass(a, l, 3, slices_c, slices_4c);
    matvec_prologue<T, NB, false>(p, pre, xs);
    sync();
    matvec_columns<T, NB, Epilogue::kResidual, false, false>(p, pre, xs, red, part);
    if (l + 1 < a.n_layers) {
      p = layer_pass(a, l + 1, 0, slices_c, slices_4c);
      matvec_prologue<T, NB, true>(p, pre, xs);
      sync();
    }
  }
}

// The epilogue of the cuBLAS path: out = epi(y + bias), elementwise over (B, OC).
template <typename T, Epilogue E>
__global__ void epilogue_kernel(void* out, const float* y, const float* bias, int B, int OC) {
  const long N = long(B) * OC;
  for (long i = blockIdx.x * long(blockDim.x) + threadIdx.x; i < N; i += long(gridDim.x) * blockDim.x)
    epilogue<T, E>(out, i, y[i] + (bias ? bias[i % OC] : 0.0f));
}

// Calls f with a null pointer of the storage type for dt: f(static_cast<T*>(nullptr)).
template <typename F>
void dispatch(DType dt, F&& f) {
  switch (dt) {
    case DType::kF32: f(static_cast<float*>(nullptr)); break;
    case DType::kF16: f(static_cast<__half*>(nullptr)); break;
    case DType::kBF16: f(static_cast<__nv_bfloat16*>(nullptr)); break;
  }
}

cudaDataType_t cuda_type(DType dt) {
  switch (dt) {
    case DType::kF16: return CUDA_R_16F;
    case DType::kBF16: return CUDA_R_16BF;
    case DType::kF32: break;
  }
  return CUDA_R_32F;
}

}  // namespace

void convert_forward(void* out, const float* in, long N, DType dt, cudaStream_t st) {
  dispatch(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    convert_kernel<T><<<grid_for(N, kThreads), kThreads, 0, st>>>(static_cast<T*>(out), in, N);
    MDI_LAUNCH_CHECK();
  });
}

void convert_half_forward(void* out, const void* in, long N, DType dt, cudaStream_t st) {
  dispatch(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    convert_kernel<T, __half><<<grid_for(N, kThreads), kThreads, 0, st>>>(
        static_cast<T*>(out), static_cast<const __half*>(in), N);
    MDI_LAUNCH_CHECK();
  });
}

void to_float_forward(float* out, const void* in, long N, DType dt, cudaStream_t st) {
  dispatch(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    to_float_kernel<T><<<grid_for(N, kThreads), kThreads, 0, st>>>(out, static_cast<const T*>(in), N);
    MDI_LAUNCH_CHECK();
  });
}

void embedding_forward(float* out, const int* tokens, const int* pos, const void* wte,
                       const void* wpe, int R, int C, DType dt, cudaStream_t st) {
  dispatch(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    embedding_kernel<T><<<grid_for(long(R) * C, kThreads), kThreads, 0, st>>>(
        out, tokens, pos, static_cast<const T*>(wte), static_cast<const T*>(wpe), R, C);
    MDI_LAUNCH_CHECK();
  });
}

void layernorm_forward(void* out, const float* inp, const float* weight, const float* bias, int B,
                       int C, float eps, DType dt, cudaStream_t st) {
  dispatch(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    layernorm_kernel<T><<<B, kThreads, 0, st>>>(static_cast<T*>(out), inp, weight, bias, C, eps);
    MDI_LAUNCH_CHECK();
  });
}

cublasStatus_t gemm_status(float* out, const void* inp, const void* weight, int B, int IC, int OC,
                           DType dt, cublasHandle_t h) {
  // Row-major out (B, OC) is column-major (OC, B) = W^T . inp in column-major terms, where the
  // row-major weight (OC, IC) is column-major (IC, OC) and inp (B, IC) is column-major (IC, B).
  const float alpha = 1.0f, beta = 0.0f;
  const cudaDataType_t t = cuda_type(dt);
  return cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, OC, B, IC, &alpha, weight, t, IC, inp, t, IC,
                      &beta, out, CUDA_R_32F, OC, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

namespace {

void gemm(float* out, const void* inp, const void* weight, int B, int IC, int OC, DType dt,
          cublasHandle_t h) {
  MDI_CUBLAS_CHECK(gemm_status(out, inp, weight, B, IC, OC, dt, h));
}

// What the kernels need to know of the current device, read once per device.
struct DeviceInfo {
  // The architecture this file's kernels run as on the device (__CUDA_ARCH__'s scale, e.g. 900):
  // that of the PTX they were built from, which is below the device's compute capability where
  // the build has no code for it (an A100, 8.0, runs a 75;87;90 build's compute_75 PTX). Features
  // compiled in only from some architecture on (tensor cores 800, PDL 900) are chosen by this.
  int arch = 0;
  size_t smem_optin = 0;  // most dynamic shared memory a block may ask for
  int sms = 0;            // multiprocessors
  bool cooperative = false;  // cooperative launches (a grid whose blocks are all resident at once)
};

const DeviceInfo& device_info() {
  static DeviceInfo info[64];
  static std::atomic<bool> known[64];
  int dev = 0;
  MDI_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) abort_job(fmt::format("internal error: CUDA device {} out of range", dev));
  if (!known[dev].load(std::memory_order_acquire)) {
    int smem = 0, sms = 0, coop = 0;
    cudaFuncAttributes fa{};
    MDI_CUDA_CHECK(cudaFuncGetAttributes(&fa, convert_kernel<float>));  // ptxVersion: e.g. 90 for compute_90
    MDI_CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    MDI_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    MDI_CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
    info[dev] = DeviceInfo{fa.ptxVersion * 10, size_t(smem), sms, coop != 0};
    known[dev].store(true, std::memory_order_release);
  }
  return info[dev];
}

// Dynamic shared memory the LayerNorm-fused matvec, tensor-core, persistent and attention kernels
// may use: at most 200 KiB, and kStaticSmem below the device's per-block opt-in, which must also
// hold the kernel's static shared memory (cudaFuncSetAttribute refuses dynamic + static beyond
// it: the tensor-core kernel has 4 KiB, so a 1 KiB margin failed wherever the opt-in is under
// 201 KiB, e.g. A100 and Jetson Orin). 200 KiB on the H100 / H200 either way.
constexpr size_t kStaticSmem = 8 * 1024;
size_t smem_limit() { return std::min<size_t>(200 * 1024, device_info().smem_optin - kStaticSmem); }

// Lets `kernel` ask for up to smem_limit() of dynamic shared memory; its static shared memory
// must fit in the kStaticSmem left for it.
template <typename... KArgs>
void allow_smem(void (*kernel)(KArgs...)) {
  cudaFuncAttributes a{};
  MDI_CUDA_CHECK(cudaFuncGetAttributes(&a, kernel));
  if (a.sharedSizeBytes > kStaticSmem)
    abort_job(fmt::format("internal error: a CUDA kernel has {} bytes of static shared memory, more than the {} "
                          "reserved for it",
                          a.sharedSizeBytes, kStaticSmem));
  MDI_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_limit())));
}

// Kernels go out with the programmatic-serialization attribute (see pdl_wait) where they run as
// compute capability 9.0+ code (pdl_wait compiled in), on a stream of their own (not the legacy
// stream), unless MDI_CUDA_PDL=0 or set_pdl() turned it off; never from a toolkit before 11.8.
std::atomic<int> pdl_mode{-1};  // -1: not yet decided, 0 off, 1 on (for GPUs that support it)

bool pdl_device() {
  int mode = pdl_mode.load(std::memory_order_relaxed);
  if (mode < 0) {
    const char* env = std::getenv("MDI_CUDA_PDL");
    mode = env && std::string(env) == "0" ? 0 : 1;
    pdl_mode.store(mode, std::memory_order_relaxed);
  }
  return CUDART_VERSION >= 11080 && mode == 1 && device_info().arch >= 900;
}

bool pdl_enabled(cudaStream_t st) { return st != nullptr && pdl_device(); }

// kernel<<<grid, block, smem, st>>>(args...), with programmatic dependent launch where
// pdl_enabled(st). The launch attribute needs CUDA 11.8 (cudaLaunchKernelEx); an older toolkit
// (JetPack 5's CUDA 11.4) builds no Hopper code, so it launches plainly.
template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
            Args&&... args) {
#if CUDART_VERSION >= 11080
  if (pdl_enabled(st)) {
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    MDI_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
    return;
  }
#endif
  kernel<<<grid, block, smem, st>>>(std::forward<Args>(args)...);
  MDI_LAUNCH_CHECK();
}

// A cooperative launch of kernel(args...): every block resident at once, or an error.
template <typename... KArgs, typename... Args>
void launch_cooperative(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                        cudaStream_t st, Args&&... args) {
  std::tuple<std::decay_t<KArgs>...> params(std::forward<Args>(args)...);
  auto ptrs =
      std::apply([](auto&... p) { return std::array<void*, sizeof...(KArgs)>{&p...}; }, params);
  MDI_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), grid, block,
                                             ptrs.data(), smem, st));
}

// Blocks of kMatvecWarps warps of `kernel` with `smem` bytes of dynamic shared memory that fit on
// the current GPU at once (one wave). It depends only on the kernel, its shared memory and the
// device: asked once per (kernel, device, smem) and thread, not on every launch.
template <typename... KArgs>
int wave_blocks(void (*kernel)(KArgs...), size_t smem) {
  struct Fit { const void* kernel; int dev; size_t smem; int blocks; };
  thread_local std::vector<Fit> fits;
  int dev = 0;
  MDI_CUDA_CHECK(cudaGetDevice(&dev));
  const void* k = reinterpret_cast<const void*>(kernel);
  for (const Fit& f : fits)
    if (f.kernel == k && f.dev == dev && f.smem == smem) return f.blocks;
  int per_sm = 0;
  MDI_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kMatvecWarps * 32, smem));
  fits.push_back({k, dev, smem, std::max(1, per_sm) * device_info().sms});
  return fits.back().blocks;
}

template <typename T, Epilogue E, bool kLN, int NB>
void launch_matvec(const MatvecParams& p, int B, cudaStream_t st) {
  if constexpr (NB > 1) {
    if (B < NB) return launch_matvec<T, E, kLN, NB - 1>(p, B, st);
  }
  const size_t smem = kLN ? size_t(NB + 2) * p.IC * sizeof(float) : 0;
  const int cols = kMatvecWarps / p.slices;  // output columns per block
  // One wave: at most as many blocks as fit on the GPU at once, each looping over its columns.
  const int need = (p.OC + cols - 1) / cols, fit = wave_blocks(matvec_kernel<T, NB, E, kLN>, smem);
  launch(matvec_kernel<T, NB, E, kLN>, dim3(std::min(need, fit)), dim3(kMatvecWarps * 32), smem, st, p);
  MDI_LAUNCH_CHECK();
}

// Shared memory of the tensor-core kernel with the LayerNorm: ln_w, ln_b and 8 rows in 16 bits.
size_t mma_smem(int IC, bool layernorm) {
  return layernorm ? 2 * size_t(IC) * sizeof(float) + size_t(kMmaRows) * (IC + 32) * 2 : 0;
}

// Warps per 8-column tile of the tensor-core kernel: at least 6 k-steps (of 32) each. (Choosing
// it to keep the grid to one wave measured slower: fewer warps, fewer loads in flight.)
int mma_slices(int IC) {
  const int ksteps = (IC + 31) / 32;
  int s = 1;
  while (s < kMatvecWarps && ksteps / (2 * s) >= 6) s *= 2;
  return s;
}

template <typename T, Epilogue E, bool kLN>
void launch_mma(MatvecParams p, int B, cudaStream_t st) {
  const size_t smem = mma_smem(p.IC, kLN);
  p.slices = mma_slices(p.IC);
  const int tiles = (p.OC + 7) / 8, per_block = kMatvecWarps / p.slices;
  const int need = (tiles + per_block - 1) / per_block, fit = wave_blocks(mma_matvec_kernel<T, E, kLN>, smem);
  launch(mma_matvec_kernel<T, E, kLN>, dim3(std::min(need, fit)), dim3(kMatvecWarps * 32), smem, st, p, B);
  MDI_LAUNCH_CHECK();
}

// Lets every LayerNorm-fused instantiation use up to smem_limit() of dynamic shared memory.
template <typename T, Epilogue E, int NB>
void allow_matvec_smem() {
  allow_smem(matvec_kernel<T, NB, E, true>);
  if constexpr (NB > 1) allow_matvec_smem<T, E, NB - 1>();
  if constexpr (NB == kDecodeRows && !std::is_same_v<T, float>)
    if (device_info().arch >= 800)
      allow_smem(mma_matvec_kernel<T, E, true>);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Dynamic shared memory of decode_layers_kernel: the LayerNorm rows and parameters, or the
// attention's scores and partial outputs (attention_forward's fast path), whichever is larger.
size_t decode_layers_smem(int C, int T, int NB, size_t esize) {
  const int G = int(64 / (16 / esize));
  return std::max(size_t(NB + 2) * C, size_t(T) + size_t(256 / G) * 64) * sizeof(float);
}

template <typename T, int NB>
void allow_layers_smem() {
  constexpr int G = 64 / Vec16<T>::N;
  allow_smem(decode_layers_kernel<T, NB, G>);
  if constexpr (NB > 1) allow_layers_smem<T, NB - 1>();
}

}  // namespace

void set_pdl(bool on) { pdl_mode.store(on ? 1 : 0, std::memory_order_relaxed); }
bool pdl_on() { return pdl_device(); }
bool tensor_cores_ok(DType dt, int IC, bool layernorm) {
  return dt != DType::kF32 && device_info().arch >= 800 && mma_smem(IC, layernorm) <= smem_limit();
}

void configure_kernels() {
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    dispatch(dt, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      allow_matvec_smem<T, Epilogue::kStore, kDecodeRows>();
      allow_matvec_smem<T, Epilogue::kGelu, kDecodeRows>();
      allow_matvec_smem<T, Epilogue::kResidual, kDecodeRows>();
      allow_matvec_smem<T, Epilogue::kQkv, kDecodeRows>();
      if (device_info().arch >= 700) allow_layers_smem<T, kDecodeRows>();
    });
  }
}

// With the LayerNorm the kernel holds its rows and the LayerNorm weight and bias in shared memory:
// one row must fit (matvec_rows chunks the rest). Without it the kernel needs none.
bool matvec_ok(int IC, bool layernorm) {
  return IC > 0 && IC % 8 == 0 && (!layernorm || size_t(IC) * 3 * sizeof(float) <= smem_limit());
}

int matvec_rows(int IC, bool layernorm, bool tensor_cores) {
  if (tensor_cores) return kMmaRows;
  if (!layernorm) return kDecodeRows;
  const size_t n = smem_limit() / (size_t(IC) * sizeof(float));  // rows plus weight and bias
  return int(std::max<size_t>(1, std::min<size_t>(kDecodeRows, n > 2 ? n - 2 : 1)));
}

// Warps per output column: enough that one warp's slice of a weight row (32 lanes x 8 16-byte
// vectors) is loaded at once.
static int matvec_slices(int IC, DType dt) {
  const int nvec = IC / int(16 / dtype_size(dt));
  int s = 1;
  while (s < kMatvecWarps && s * 32 * 8 < nvec) s *= 2;
  return s;
}

void matvec_forward(void* out, const void* inp, const float* ln_w, const float* ln_b, float eps,
                    const void* weight, const float* bias, int B, int IC, int OC, Epilogue epi,
                    const QkvOut* qkv, DType dt, bool tensor_cores, cudaStream_t st) {
  const bool ln = ln_w != nullptr;
  if (!matvec_ok(IC, ln) || !aligned16(inp) || !aligned16(weight) || !aligned16(ln_w) || !aligned16(ln_b) ||
      (epi == Epilogue::kQkv && !qkv))
    abort_job(fmt::format("internal error: matvec_forward needs IC % 8 == 0 ({}), a LayerNorm row in shared "
                          "memory and 16-byte aligned operands", IC));
  if (tensor_cores && !tensor_cores_ok(dt, IC, ln))
    abort_job(fmt::format("internal error: matvec_forward on tensor cores for {} rows of {}", dtype_name(dt), IC));
  const int rows = matvec_rows(IC, ln, tensor_cores);
  const size_t in_row = size_t(IC) * (ln ? sizeof(float) : dtype_size(dt));
  const size_t out_row = size_t(OC) * (epi == Epilogue::kGelu ? dtype_size(dt) : sizeof(float));
  dispatch(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    for (int r0 = 0; r0 < B; r0 += rows) {  // chunks of rows: each row's result is the same in any chunk
      const int nb = std::min(rows, B - r0);
      MatvecParams p{};
      p.out = out ? static_cast<char*>(out) + r0 * out_row : nullptr;
      p.inp = static_cast<const char*>(inp) + r0 * in_row;
      p.ln_w = ln_w;
      p.ln_b = ln_b;
      p.eps = eps;
      p.w = weight;
      p.bias = bias;
      p.IC = IC;
      p.OC = OC;
      p.slices = matvec_slices(IC, dt);  // the tensor-core kernel chooses its own
      if (qkv) {
        p.qkv = *qkv;
        p.qkv.q += size_t(r0) * (OC / 3);
        p.qkv.row_sample += r0;
        p.qkv.row_pos += r0;
      }
      auto run = [&](auto e) {
        constexpr Epilogue E = decltype(e)::value;
        if constexpr (!std::is_same_v<T, float>) {
          if (tensor_cores) return ln ? launch_mma<T, E, true>(p, nb, st) : launch_mma<T, E, false>(p, nb, st);
        }
        if (ln) launch_matvec<T, E, true, kDecodeRows>(p, nb, st);
        else launch_matvec<T, E, false, kDecodeRows>(p, nb, st);
      };
      switch (epi) {
        case Epilogue::kStore: run(std::integral_constant<Epilogue, Epilogue::kStore>{}); break;
        case Epilogue::kGelu: run(std::integral_constant<Epilogue, Epilogue::kGelu>{}); break;
        case Epilogue::kResidual: run(std::integral_constant<Epilogue, Epilogue::kResidual>{}); break;
        case Epilogue::kQkv: run(std::integral_constant<Epilogue, Epilogue::kQkv>{}); break;
      }
    }
  });
}

namespace {

template <typename T, int NB>
void launch_layers(const DecodeLayersArgs& a, DType dt, cudaStream_t st) {
  constexpr int G = 64 / Vec16<T>::N;
  auto* kernel = decode_layers_kernel<T, NB, G>;
  const size_t smem = decode_layers_smem(a.C, a.T, NB, sizeof(T));
  MDI_CUDA_CHECK(cudaMemsetAsync(a.barrier, 0, sizeof(unsigned), st));
  // One wave, launched cooperatively: the grid barriers need every block resident at once, which
  // a plain launch does not promise where other work shares the GPU (e.g. another rank's
  // persistent kernel under MPS); a cooperative one starts all blocks together or fails.
  launch_cooperative(kernel, dim3(wave_blocks(kernel, smem)), dim3(kMatvecWarps * 32), smem, st, a,
                     matvec_slices(a.C, dt), matvec_slices(4 * a.C, dt), 1.0f / std::sqrt(64.0f));
}

}  // namespace

bool decode_layers_ok(int C, int n_head, int T, int B, DType dt) {
  return device_info().arch >= 700 && device_info().cooperative && n_head > 0 && C == 64 * n_head && T > 0 &&
         B >= 1 && B <= kDecodeRows && matvec_ok(C, true) && matvec_ok(4 * C, false) &&
         B <= matvec_rows(C, true, false) &&
         decode_layers_smem(C, T, B, dtype_size(dt)) <= smem_limit();
}

void decode_layers_forward(const DecodeLayersArgs& a, int B, DType dt, cudaStream_t st) {
  if (!decode_layers_ok(a.C, a.n_head, a.T, B, dt) || !a.barrier || !a.layers || a.n_layers < 1)
    abort_job(fmt::format("internal error: decode_layers_forward of {} rows, C {}, {} heads", B, a.C, a.n_head));
  dispatch(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    static_assert(kDecodeRows == 4, "one case per row count");
    switch (B) {
      case 1: return launch_layers<T, 1>(a, dt, st);
      case 2: return launch_layers<T, 2>(a, dt, st);
      case 3: return launch_layers<T, 3>(a, dt, st);
      default: return launch_layers<T, 4>(a, dt, st);
    }
  });
}

int gemm_min_rows() {
  return kMatvecRows + 1;
}

void matmul_forward(void* out, const void* inp, const void* weight, const float* bias, int B,
                    int IC, int OC, Epilogue epi, float* scratch, DType dt, bool tensor_cores,
                    cublasHandle_t h, cudaStream_t st) {
  if (epi == Epilogue::kQkv) abort_job("internal error: matmul_forward has no QKV epilogue (use matvec_forward)");
  if (B <= kMatvecRows && matvec_ok(IC, false) && aligned16(inp) && aligned16(weight))
    return matvec_forward(out, inp, nullptr, nullptr, 0.0f, weight, bias, B, IC, OC, epi, nullptr, dt,
                          tensor_cores, st);
  if (epi == Epilogue::kStore && !bias) {
    gemm(static_cast<float*>(out), inp, weight, B, IC, OC, dt, h);
    return;
  }
  gemm(scratch, inp, weight, B, IC, OC, dt, h);
  dispatch(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    auto run = [&](auto e) {
      constexpr Epilogue E = decltype(e)::value;
      epilogue_kernel<T, E><<<grid_for(long(B) * OC, kThreads), kThreads, 0, st>>>(out, scratch, bias, B, OC);
      MDI_LAUNCH_CHECK();
    };
    switch (epi) {
      case Epilogue::kStore: run(std::integral_constant<Epilogue, Epilogue::kStore>{}); break;
      case Epilogue::kGelu: run(std::integral_constant<Epilogue, Epilogue::kGelu>{}); break;
      case Epilogue::kResidual: run(std::integral_constant<Epilogue, Epilogue::kResidual>{}); break;
      case Epilogue::kQkv: break;
    }
  });
}

void qkv_scatter_forward(float* q, void* k, void* v, const float* qkv, const float* bias,
                         const int* row_sample, const int* row_pos, int B, int C, int T, DType dt,
                         cudaStream_t st) {
  dispatch(dt, [&](auto* tag) {
    using E = std::remove_pointer_t<decltype(tag)>;
    qkv_scatter_kernel<E><<<grid_for(long(B) * C, kThreads), kThreads, 0, st>>>(
        q, static_cast<E*>(k), static_cast<E*>(v), qkv, bias, row_sample, row_pos, B, C, T);
    MDI_LAUNCH_CHECK();
  });
}

void attention_forward(void* out, const float* q, const void* k, const void* v,
                       const int* row_sample, const int* row_pos, int B, int C, int NH, int T,
                       DType dt, cudaStream_t st) {
  const int HS = C / NH;
  const float scale = 1.0f / std::sqrt(float(HS));
  const dim3 grid(NH, B);
  dispatch(dt, [&](auto* tag) {
    using E = std::remove_pointer_t<decltype(tag)>;
    constexpr int VN = 16 / sizeof(E), kThreadsAtt = 256;
    const int G = HS % VN == 0 ? HS / VN : 0;
    const size_t smem = size_t(T + (G ? kThreadsAtt / G : 0) * HS) * sizeof(float);
    auto fast = [&](auto g) {
      constexpr int kG = decltype(g)::value;
      auto* kernel = attention_decode_kernel<E, kG>;
      if (smem > 48 * 1024)
        MDI_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
      launch(kernel, grid, dim3(kThreadsAtt), smem, st, static_cast<E*>(out), q, static_cast<const E*>(k),
             static_cast<const E*>(v), row_sample, row_pos, C, T, scale);
      MDI_LAUNCH_CHECK();
    };
    const bool aligned = aligned16(k) && aligned16(v) && (size_t(C) * sizeof(E)) % 16 == 0;
    if (aligned && smem <= smem_limit()) {
      switch (G) {
        case 2: return fast(std::integral_constant<int, 2>{});
        case 4: return fast(std::integral_constant<int, 4>{});
        case 8: return fast(std::integral_constant<int, 8>{});
        case 16: return fast(std::integral_constant<int, 16>{});
        case 32: return fast(std::integral_constant<int, 32>{});
        default: break;
      }
    }
    constexpr int kAttThreads = 128;
    const size_t smem_g = size_t(HS + T + std::max(kAttThreads, HS)) * sizeof(float);
    if (smem_g > 48 * 1024)  // beyond the default dynamic limit (very long contexts)
      MDI_CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<E>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_g)));
    attention_kernel<E><<<grid, kAttThreads, smem_g, st>>>(
        static_cast<E*>(out), q, static_cast<const E*>(k), static_cast<const E*>(v), row_sample,
        row_pos, C, NH, T, scale);
    MDI_LAUNCH_CHECK();
  });
}

void gelu_forward(void* out, const float* inp, const float* bias, int B, int OC, DType dt,
                  cudaStream_t st) {
  dispatch(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    gelu_kernel<T><<<grid_for(long(B) * OC, kThreads), kThreads, 0, st>>>(static_cast<T*>(out), inp,
                                                                           bias, B, OC);
    MDI_LAUNCH_CHECK();
  });
}

void residual_forward(float* x, const float* y, const float* bias, int B, int C, cudaStream_t st) {
  residual_kernel<<<grid_for(long(B) * C, kThreads), kThreads, 0, st>>>(x, y, bias, B, C);
  MDI_LAUNCH_CHECK();
}

void top_forward(int* ids, float* vals, const float* logits, int B, int stride, int V, int k,
                 cudaStream_t st) {
  if (B < 1) return;
  if (k < 1 || k > V || V > stride)
    abort_job(fmt::format("internal error: top_forward of {} from {} (stride {})", k, V, stride));
  if (k == 1) argmax_kernel<<<B, kTopThreads, 0, st>>>(ids, vals, logits, stride, V);
  else top_kernel<<<B, kTopThreads, 0, st>>>(ids, vals, logits, stride, V, k);
  MDI_LAUNCH_CHECK();
}

}  // namespace mdi::cuda
