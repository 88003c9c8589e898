// CUDA kernels of the GPT-2 forward pass (declared in ops.h): conversion, embedding, layer norm,
// QKV split into the KV cache, causal attention with its softmax, bias + GELU, residual add, and
// the cuBLAS GEMM. Templated on the storage type T (float, __half, __nv_bfloat16); arithmetic is
// fp32 throughout. Simple, readable kernels: one block per row (layer norm) or per (row, head)
// (attention), grid-stride loops for the elementwise ops.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cublas_v2.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "check.h"
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

// Grid for an elementwise kernel over N elements with grid-stride loops.
inline int grid_for(long N, int threads) {
  long g = (N + threads - 1) / threads;
  return int(g < 1 ? 1 : (g > 65535L * 8 ? 65535L * 8 : g));
}

constexpr int kThreads = 256;

template <typename T>
__global__ void convert_kernel(T* out, const float* in, long N) {
  for (long i = blockIdx.x * long(blockDim.x) + threadIdx.x; i < N; i += long(gridDim.x) * blockDim.x)
    out[i] = from_f<T>(in[i]);
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

// One block per (head, row). Shared memory: the query head (HS floats) then the scores of
// positions 0 .. P (P + 1 <= T floats). Scores: one warp per position, lanes over the head dims;
// softmax with block reductions; output: threads over the head dims, positions in order.
template <typename T>
__global__ void attention_kernel(T* out, const float* q, const T* k, const T* v,
                                 const int* row_sample, const int* row_pos, int C, int NH, int T_,
                                 float scale) {
  extern __shared__ float sm[];
  __shared__ float red[32];
  const int h = blockIdx.x, b = blockIdx.y, HS = C / NH;
  const int P = row_pos[b];
  const long base = long(row_sample[b]) * T_ * C + long(h) * HS;  // (sample, t = 0, head h)
  float* qs = sm;
  float* att = sm + HS;
  for (int d = threadIdx.x; d < HS; d += blockDim.x) qs[d] = q[long(b) * C + h * HS + d];
  __syncthreads();

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
  for (int t = warp; t <= P; t += nw) {
    const T* kt = k + base + long(t) * C;
    float s = 0.0f;
    for (int d = lane; d < HS; d += 32) s += qs[d] * to_f(kt[d]);
    s = warp_sum(s);
    if (lane == 0) att[t] = s * scale;
  }
  __syncthreads();

  float m = -INFINITY;
  for (int t = threadIdx.x; t <= P; t += blockDim.x) m = fmaxf(m, att[t]);
  m = block_reduce<true>(m, red);
  float s = 0.0f;
  for (int t = threadIdx.x; t <= P; t += blockDim.x) {
    const float e = expf(att[t] - m);
    att[t] = e;
    s += e;
  }
  const float inv = 1.0f / block_reduce<false>(s, red);  // its barriers also publish att[]

  for (int d = threadIdx.x; d < HS; d += blockDim.x) {
    const T* vd = v + base + d;
    float acc = 0.0f;
    for (int t = 0; t <= P; ++t) acc += att[t] * to_f(vd[long(t) * C]);
    out[long(b) * C + h * HS + d] = from_f<T>(acc * inv);
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

// 16 bytes of T (8 halves or 4 floats) converted to fp32.
template <typename T>
struct Vec16 {
  static constexpr int N = 16 / sizeof(T);
  float f[N];
  __device__ __forceinline__ void load(const T* p) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int j = 0; j < N; ++j) f[j] = to_f(e[j]);
  }
};

template <typename T, Epilogue E>
__device__ __forceinline__ void epilogue(void* out, long i, float y) {
  if constexpr (E == Epilogue::kStore) static_cast<float*>(out)[i] = y;
  if constexpr (E == Epilogue::kGelu) static_cast<T*>(out)[i] = from_f<T>(gelu_f(y));
  if constexpr (E == Epilogue::kResidual) static_cast<float*>(out)[i] += y;
}

// A warp per output column oc: the weight row (IC) is read once, in 16-byte loads, kUnroll
// loads in flight per lane, and dotted with each of the NB input rows (cached in L1); then a
// warp reduction and lane b writes row b's element through the epilogue.
template <typename T, int NB, Epilogue E>
__global__ void matvec_kernel(void* out, const T* inp, const T* w, const float* bias, int IC, int OC) {
  constexpr int N = Vec16<T>::N, kUnroll = 4;
  const int oc = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (oc >= OC) return;  // the whole warp
  const T* wr = w + long(oc) * IC;
  float acc[NB] = {};
  for (int i0 = lane * N; i0 < IC; i0 += 32 * N * kUnroll) {
    Vec16<T> wv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (i0 + u * 32 * N < IC) wv[u].load(wr + i0 + u * 32 * N);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = i0 + u * 32 * N;
      if (i < IC) {
#pragma unroll
        for (int b = 0; b < NB; ++b) {
          Vec16<T> xv;
          xv.load(inp + long(b) * IC + i);
#pragma unroll
          for (int j = 0; j < N; ++j) acc[b] = fmaf(wv[u].f[j], xv.f[j], acc[b]);
        }
      }
    }
  }
  const float bo = bias ? bias[oc] : 0.0f;
#pragma unroll
  for (int b = 0; b < NB; ++b) {
    const float y = warp_sum(acc[b]);
    if (lane == b) epilogue<T, E>(out, long(b) * OC + oc, y + bo);
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

namespace {

void gemm(float* out, const void* inp, const void* weight, int B, int IC, int OC, DType dt,
          cublasHandle_t h) {
  // Row-major out (B, OC) is column-major (OC, B) = W^T . inp in column-major terms, where the
  // row-major weight (OC, IC) is column-major (IC, OC) and inp (B, IC) is column-major (IC, B).
  const float alpha = 1.0f, beta = 0.0f;
  const cudaDataType_t t = cuda_type(dt);
  MDI_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, OC, B, IC, &alpha, weight, t, IC, inp,
                                t, IC, &beta, out, CUDA_R_32F, OC, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT));
}

template <typename T, Epilogue E, int NB>
void launch_matvec(void* out, const void* inp, const void* weight, const float* bias, int B, int IC,
                   int OC, cudaStream_t st) {
  if constexpr (NB > 1) {
    if (B < NB) return launch_matvec<T, E, NB - 1>(out, inp, weight, bias, B, IC, OC, st);
  }
  constexpr int kWarps = 8;
  matvec_kernel<T, NB, E><<<(OC + kWarps - 1) / kWarps, kWarps * 32, 0, st>>>(
      out, static_cast<const T*>(inp), static_cast<const T*>(weight), bias, IC, OC);
  MDI_LAUNCH_CHECK();
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void matmul_forward(void* out, const void* inp, const void* weight, const float* bias, int B,
                    int IC, int OC, Epilogue epi, float* scratch, DType dt, cublasHandle_t h,
                    cudaStream_t st) {
  const bool matvec = B <= kMatvecRows && IC % 8 == 0 && aligned16(inp) && aligned16(weight);
  if (!matvec && epi == Epilogue::kStore && !bias) {
    gemm(static_cast<float*>(out), inp, weight, B, IC, OC, dt, h);
    return;
  }
  if (!matvec) gemm(scratch, inp, weight, B, IC, OC, dt, h);
  dispatch(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    auto run = [&](auto e) {
      constexpr Epilogue E = decltype(e)::value;
      if (matvec) {
        launch_matvec<T, E, kMatvecRows>(out, inp, weight, bias, B, IC, OC, st);
      } else {
        epilogue_kernel<T, E><<<grid_for(long(B) * OC, kThreads), kThreads, 0, st>>>(out, scratch, bias, B, OC);
        MDI_LAUNCH_CHECK();
      }
    };
    switch (epi) {
      case Epilogue::kStore: run(std::integral_constant<Epilogue, Epilogue::kStore>{}); break;
      case Epilogue::kGelu: run(std::integral_constant<Epilogue, Epilogue::kGelu>{}); break;
      case Epilogue::kResidual: run(std::integral_constant<Epilogue, Epilogue::kResidual>{}); break;
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
  const size_t smem = size_t(HS + T) * sizeof(float);
  const float scale = 1.0f / std::sqrt(float(HS));
  const dim3 grid(NH, B);
  constexpr int kAttThreads = 128;
  dispatch(dt, [&](auto* tag) {
    using E = std::remove_pointer_t<decltype(tag)>;
    if (smem > 48 * 1024)  // beyond the default dynamic limit (very long contexts)
      MDI_CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<E>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    attention_kernel<E><<<grid, kAttThreads, smem, st>>>(
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

}  // namespace mdi::cuda
