// CPU kernels of the GPT-2 forward pass, one free function per op, output first (llm.c style).
// Every output element is reduced in one fixed order that does not depend on the number of rows,
// the row's place in the batch, its alignment or the number of threads: a sample's activations are
// bit-identical however samples are grouped into micro-batches or ranks. (Eigen's products switch
// kernels with the shape, GEMV for one row and GEBP for several, so they cannot promise that;
// tests/test_ops.cpp shows it.) Threads: OpenMP, split over output columns or rows only.
#pragma once

#include <cstdint>

namespace mdi::cpu {

// Fixed-order dot product: one 8-lane fma accumulator over chunks of 8, a fixed tree over the
// lanes, then the tail in order (src/cpu/ops.cpp).
float dot(const float* a, const float* b, int n);

// out (B, OC) = inp (B, IC) . weight (OC, IC)^T + bias (OC); bias may be nullptr. Rows of out are
// ldo floats apart (0: OC), so that columns of a wider output can be computed in parts; each
// output is its own fixed-order dot product, the same bits in any part.
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int B,
                    int IC, int OC, int ldo = 0);

// The same with the weight in IEEE binary16 (a float16 file's matrices, kept as they are): the
// kernels widen each weight as they load it (exactly), so out is that of matmul_forward on the
// widened matrix, bit for bit, for half the bytes of weights read.
void matmul_forward(float* out, const float* inp, const uint16_t* weight, const float* bias, int B,
                    int IC, int OC, int ldo = 0);

// out (B, C) = (inp - mean) / sqrt(var + eps) * weight + bias, per row; bias may be nullptr.
// out may alias inp.
void layernorm_forward(float* out, const float* inp, const float* weight, const float* bias, int B,
                       int C, float eps);

// x (N) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in place; tanh is the kernels' own
// (within 2 ulp; no libm), so the bits are the same on every target with FMA.
void gelu_forward(float* x, long N);

// x (N) += y (N).
void residual_forward(float* x, const float* y, long N);

// Causal self-attention of B query rows against a KV cache.
// q: (B, C) queries. Row b attends to positions 0 .. pos[b] of its sample, whose keys and values
// are rows of k[b] and v[b] (each (T, C), row stride C, already holding position pos[b]).
// out (B, C): per head softmax(q.k / sqrt(HS)) . v, exp the kernels' own (no libm). Consecutive
// rows with the same k and v (a prefill's) may be computed together, with the same bits as alone.
// scratch: attention_scratch_floats(T, threads) floats for up to `threads` OpenMP threads.
void attention_forward(float* out, const float* q, const float* const* k, const float* const* v,
                       const int* pos, int B, int C, int NH, int T, float* scratch);
inline long attention_scratch_floats(int T, int threads) {
  return 2L * T * threads;  // two rows of scores per thread
}

// out (n) = softmax(in (n)) in double accumulation; returns nothing, used by the sampler tests.
void softmax_forward(float* out, const float* in, int n);

// Threads the ops use (OpenMP); 1 disables parallel regions.
void set_threads(int n);
int threads();

}  // namespace mdi::cpu
