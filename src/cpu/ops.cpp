// CPU kernels of the GPT-2 forward pass (see include/mdi/cpu_ops.h), written with GCC/Clang vector
// extensions so the same source runs on x86 (AVX2/AVX-512, FMA) and ARM (NEON, Jetson).
// Not here: quantised weights, fp16 compute, anything that makes a result depend on the batch.
// float16 weights are widened to fp32 (exactly) before they meet any product.
//
// The one reduction order. Every dot product of length n in this file, whether it comes from dot(),
// from any register-blocked matmul kernel or from layer norm, is computed as:
//   1. one 8-lane accumulator, zero, then acc = fma(a[k:k+8], b[k:k+8], acc) for k = 0, 8, 16, ...
//      while k + 8 <= n (lane j sums elements j, j+8, j+16, ... in that order);
//   2. a fixed tree over the lanes: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7));
//   3. the scalar tail in order: s = fma(a[k], b[k], s) for the last n % 8 elements;
//   4. matmul only: out = s + bias.
// The kernels differ only in how many such chains they run side by side (their register block), so
// an output element does not depend on B, on its row's place in the batch, on alignment (all loads
// are unaligned loads) or on the thread count. Every multiply-add, in reductions and element-wise
// ops alike, goes through fma8() / fma1() (explicit fma), so the compiler's FMA contraction cannot
// make two paths, or GCC and Clang, differ. GELU's tanh and the attention's exp are this file's own
// (exp8, tanh8), not libm's: the bits are the same for any compiler, -O level, C library and target
// with FMA (tests/test_ops.cpp, Ops.SameBitsOnEveryTarget: GCC 9-12 and Clang 14, AVX2 and AVX-512,
// glibc 2.31-2.36, and aarch64 under qemu).
// One accumulator per output (not four) keeps a block of 2x8 or 6x8 outputs in (or near)
// registers, and the independent chains of a block give the instruction-level parallelism. With
// AVX-512, one register holds two rows' chains side by side (the same operations, lane for lane),
// in the products and in a prompt's attention (MDI_ROW_PAIRS).

#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "mdi/cpu_ops.h"
#include "mdi/half.h"

#if (defined(__FMA__) || defined(__F16C__)) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

// v8f never crosses this file's ABI (everything below is internal and inlined), so the warning that
// 32-byte vector arguments pass differently without AVX (MDI_NATIVE=OFF builds) does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace mdi::cpu {

namespace {

typedef float v8f __attribute__((vector_size(32)));

std::atomic<int> g_threads{0};  // 0: not set yet, use omp_get_max_threads()

// body(i) for i in [0, n), statically split over nt OpenMP threads when `parallel`, else a plain
// loop: libgomp allocates a team even for a region its if() clause serialises, and small decode
// steps would then allocate on every call.
template <typename I, typename F>
void parallel_for(I n, int nt, bool parallel, F&& body) {
  if (!parallel || nt <= 1) {
    for (I i = 0; i < n; i++) body(i);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(nt)
  for (I i = 0; i < n; i++) body(i);
}

inline v8f load8(const float* p) {
  v8f v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

inline void store8(float* p, v8f v) {
  __builtin_memcpy(p, &v, sizeof v);
}

// The one multiply-add, c + a * b: fused (one rounding) wherever the target has an FMA instruction,
// and then written as an explicit fma so that the compiler's contraction cannot make two code
// paths differ. A target without FMA (x86 built with MDI_NATIVE=OFF) uses a * b + c, which nothing
// can fuse there; software fmaf would be ~70x slower. Its bits then differ from FMA builds'.
#if (defined(__FMA__) && (defined(__x86_64__) || defined(__i386__))) || defined(__aarch64__) || \
    defined(__FP_FAST_FMAF)
#define MDI_FUSED 1
inline float fma1(float a, float b, float c) {
  return std::fma(a, b, c);
}
#else
#define MDI_FUSED 0
inline float fma1(float a, float b, float c) {
  return a * b + c;
}
#endif

inline v8f fma8(v8f a, v8f b, v8f c) {
#if defined(__FMA__) && (defined(__x86_64__) || defined(__i386__))
  return (v8f)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#elif defined(__aarch64__)
  float32x4_t a2[2], b2[2], c2[2];
  __builtin_memcpy(a2, &a, sizeof a);
  __builtin_memcpy(b2, &b, sizeof b);
  __builtin_memcpy(c2, &c, sizeof c);
  c2[0] = vfmaq_f32(c2[0], a2[0], b2[0]);
  c2[1] = vfmaq_f32(c2[1], a2[1], b2[1]);
  v8f r;
  __builtin_memcpy(&r, c2, sizeof r);
  return r;
#elif MDI_FUSED
  v8f r;  // another target with a fast fmaf: lane by lane, exactly like fma1
  for (int j = 0; j < 8; j++) r[j] = std::fma(a[j], b[j], c[j]);
  return r;
#else
  return a * b + c;
#endif
}

// Step 2 of the order: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
inline float hsum8(v8f v) {
  const float s0 = v[0] + v[4], s1 = v[1] + v[5], s2 = v[2] + v[6], s3 = v[3] + v[7];
  return (s0 + s2) + (s1 + s3);
}

inline v8f splat(float a) {
  return v8f{a, a, a, a, a, a, a, a};
}

typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));

// exp(x), lane by lane (Cephes' expf: x = n ln2 + r, |r| <= ln2 / 2, a degree-7 polynomial in r,
// times 2^n), as a fixed sequence of IEEE operations with explicit fmas: the same bits on every
// target with FMA, where libm's expf may differ between libraries. For x up to 88 (+inf above);
// below -104, 0 (exp(x) rounds to 0 there); NaN stays NaN. 2^n is applied in two halves so that
// results below 2^-126 round once, as subnormals.
inline v8f exp8(v8f x) {
  const v8f magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const v8f t = fma8(x, splat(1.44269504088896341f), magic);
  const v8f n = t - magic;
  v8f r = fma8(n, splat(-0.693359375f), x);  // ln 2 in two parts (Cody and Waite)
  r = fma8(n, splat(2.12194440e-4f), r);
  v8f p = splat(1.9875691500e-4f);
  p = fma8(p, r, splat(1.3981999507e-3f));
  p = fma8(p, r, splat(8.3334519073e-3f));
  p = fma8(p, r, splat(4.1665795894e-2f));
  p = fma8(p, r, splat(1.6666665459e-1f));
  p = fma8(p, r, splat(5.0000001201e-1f));
  const v8f y = fma8(p, r * r, r) + splat(1.0f);
  // n as an integer, and 2^n as two factors' exponent fields, in unsigned arithmetic: it wraps
  // (no undefined behaviour) in lanes where x < -104, which are replaced by 0 below.
  const v8u ni = (v8u)t - (v8u)magic, n1 = (v8u)((v8i)ni >> 1), n2 = ni - n1;
  const v8f e = y * (v8f)((n1 + 127) << 23) * (v8f)((n2 + 127) << 23);
  return x < splat(-104.0f) ? splat(0.0f) : e;
}

// tanh(u), lane by lane (Cephes' tanhf): an odd polynomial below |u| = 0.625, else
// 1 - 2 / (exp(2|u|) + 1) with u's sign; |u| >= 10 gives +-1. Within 2 ulp of tanh (tested
// against double over every float in [-10.5, 10.5] once, and in tests/test_ops.cpp on a sample).
inline v8f tanh8(v8f u) {
  const v8i sign = (v8i)u & INT32_MIN;
  const v8f a = (v8f)((v8i)u & INT32_MAX);  // |u|
  const v8f z = u * u;
  v8f p = splat(-5.70498872745e-3f);
  p = fma8(p, z, splat(2.06390887954e-2f));
  p = fma8(p, z, splat(-5.37397155531e-2f));
  p = fma8(p, z, splat(1.33314422036e-1f));
  p = fma8(p, z, splat(-3.33332819422e-1f));
  const v8f small = fma8(p * z, u, u);
  const v8f e = exp8(splat(2.0f) * (a < splat(10.0f) ? a : splat(10.0f)));
  const v8f big = (v8f)((v8i)(splat(1.0f) - splat(2.0f) / (e + splat(1.0f))) | sign);
  return a < splat(0.625f) ? small : big;
}

// x (n) = f(x), eight elements at a time; a last partial chunk goes through f padded with zeros, so
// every element gets the same operations wherever it sits.
template <typename F>
inline void map8(float* x, long n, F&& f) {
  long i = 0;
  for (; i + 8 <= n; i += 8) store8(x + i, f(load8(x + i)));
  if (i < n) {
    float tail[8] = {};
    std::memcpy(tail, x + i, (n - i) * sizeof(float));
    store8(tail, f(load8(tail)));
    std::memcpy(x + i, tail, (n - i) * sizeof(float));
  }
}

// A weight as fp32: a float as it is, a binary16 widened (exactly: every half is a float), so that
// a product over halves has the bits of the same product over their widening.
inline float wval(float w) {
  return w;
}
inline float wval(uint16_t w) {
  return half_to_float(w);
}

// Eight weights from p as fp32.
inline v8f loadw8(const float* p) {
  return load8(p);
}
inline v8f loadw8(const uint16_t* p) {
#if defined(__F16C__)
  return (v8f)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#elif defined(__aarch64__)
  float16x4_t h[2];
  __builtin_memcpy(h, p, sizeof h);
  const float32x4_t f[2] = {vcvt_f32_f16(h[0]), vcvt_f32_f16(h[1])};
  v8f r;
  __builtin_memcpy(&r, f, sizeof r);
  return r;
#else
  v8f r;
  for (int j = 0; j < 8; j++) r[j] = half_to_float(p[j]);
  return r;
#endif
}

// Steps 2 and 3: finish a chain whose vector part stopped at k.
template <typename W>
inline float finish(v8f acc, const float* a, const W* b, int k, int n) {
  float s = hsum8(acc);
  for (; k < n; k++) s = fma1(a[k], wval(b[k]), s);
  return s;
}

// Fixed-order sum of x (n): the dot order with b = 1 (fma(x, 1, s) == s + x exactly).
float sum_fixed(const float* x, int n) {
  const v8f one = splat(1.0f);
  v8f acc = {};
  int k = 0;
  for (; k + 8 <= n; k += 8) acc = fma8(load8(x + k), one, acc);
  float s = hsum8(acc);
  for (; k < n; k++) s += x[k];
  return s;
}

// Fixed-order sum of (x - m)^2 (n).
float sumsq_fixed(const float* x, float m, int n) {
  const v8f mv = splat(m);
  v8f acc = {};
  int k = 0;
  for (; k + 8 <= n; k += 8) {
    const v8f d = load8(x + k) - mv;
    acc = fma8(d, d, acc);
  }
  float s = hsum8(acc);
  for (; k < n; k++) {
    const float d = x[k] - m;
    s = fma1(d, d, s);
  }
  return s;
}

// Register-blocked matmul kernel: out[r][n] = dot(inp row r, weight row n) + bias[n] for an
// R x N block, with R*N chains in registers. inp rows have stride IC, out rows stride OC.
template <typename W, int R, int N>
void mm_block(float* out, const float* inp, const W* w, const float* bias, int IC, int OC) {
  v8f acc[R][N];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 8
    for (int n = 0; n < N; n++) acc[r][n] = v8f{};
  int k = 0;
  for (; k + 8 <= IC; k += 8) {
    v8f x[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) x[r] = load8(inp + (size_t)r * IC + k);
#pragma GCC unroll 8
    for (int n = 0; n < N; n++) {
      const v8f wv = loadw8(w + (size_t)n * IC + k);
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) acc[r][n] = fma8(x[r], wv, acc[r][n]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int n = 0; n < N; n++) {
      float s = finish(acc[r][n], inp + (size_t)r * IC, w + (size_t)n * IC, k, IC);
      if (bias) s += bias[n];
      out[(size_t)r * OC + n] = s;
    }
}

#ifndef MDI_ROW_PAIRS  // -DMDI_ROW_PAIRS=0 builds the 256-bit kernels alone, for comparison
#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__F16C__) && defined(__FMA__)
#define MDI_ROW_PAIRS 1
#else
#define MDI_ROW_PAIRS 0
#endif
#endif
#if MDI_ROW_PAIRS
// Two input rows side by side in one 512-bit register: lanes 0-7 hold row r's eight elements,
// lanes 8-15 row r + 1's, multiplied by the same eight weights in both halves. Each half is the
// 8-lane chain of mm_block, fma for fma, so the outputs have the same bits, for half the fma
// instructions: a core with 512-bit fma units does twice the multiply-adds per cycle.
// (The maskz forms with a full mask compile to the plain instructions; the plain intrinsics make
// GCC 12 warn about its own headers' undefined registers, GCC bug 105593.)
inline __m512 load_pair(const float* a, const float* b) {
  return _mm512_insertf32x8(_mm512_maskz_broadcast_f32x8(0xffff, _mm256_loadu_ps(a)),
                            _mm256_loadu_ps(b), 1);
}
inline __m512 loadw_both(const float* p) {
  return _mm512_maskz_broadcast_f32x8(0xffff, _mm256_loadu_ps(p));
}
inline __m512 loadw_both(const uint16_t* p) {
  return _mm512_maskz_cvtph_ps(
      0xffff, _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

// mm_block for R input rows (2 <= R) x N weight rows, in (R + 1) / 2 pairs; an odd R's last row
// fills both halves of its pair and the copy is not stored.
template <typename W, int R, int N>
void mm_pairs(float* out, const float* inp, const W* w, const float* bias, int IC, int OC) {
  constexpr int P = (R + 1) / 2;
  __m512 acc[P][N];
#pragma GCC unroll 8
  for (int p = 0; p < P; p++)
#pragma GCC unroll 8
    for (int n = 0; n < N; n++) acc[p][n] = _mm512_setzero_ps();
  int k = 0;
  for (; k + 8 <= IC; k += 8) {
    __m512 x[P];
#pragma GCC unroll 8
    for (int p = 0; p < P; p++)
      x[p] = load_pair(inp + (size_t)(2 * p) * IC + k,
                       inp + (size_t)std::min(2 * p + 1, R - 1) * IC + k);
#pragma GCC unroll 8
    for (int n = 0; n < N; n++) {
      const __m512 wv = loadw_both(w + (size_t)n * IC + k);
#pragma GCC unroll 8
      for (int p = 0; p < P; p++) acc[p][n] = _mm512_fmadd_ps(x[p], wv, acc[p][n]);
    }
  }
  for (int p = 0; p < P; p++)
    for (int n = 0; n < N; n++) {
      const v8f half[2] = {(v8f)_mm512_extractf32x8_ps(acc[p][n], 0),
                           (v8f)_mm512_extractf32x8_ps(acc[p][n], 1)};
      for (int r = 2 * p; r < std::min(2 * p + 2, R); r++) {
        float s = finish(half[r - 2 * p], inp + (size_t)r * IC, w + (size_t)n * IC, k, IC);
        if (bias) s += bias[n];
        out[(size_t)r * OC + n] = s;
      }
    }
}
#endif

// Block shape: MR input rows x NR weight rows per kernel call; an input block stays in L1 while a
// tile of weight rows streams past it (from memory for the first block, from L2 after that).
// Eight weight rows side by side are what let B = 1 reach memory bandwidth on one core (Zen 5 dev
// box: 4 rows ~27 GB/s, 8 rows ~37 GB/s). x86 with AVX-512: 6 rows in three pairs (mm_pairs) x 8
// puts 24 two-chain accumulators in the 32 vector registers; a 256-row prefill product on one core
// of the Zen 5 dev box went from 82-85 GFLOP/s (3x8 in 256-bit registers) to 106-139, ahead of 4x8,
// 8x6, 6x10 and 12x4 (tools/bench_bandwidth; B = 1 keeps mm_block, which is bound by memory).
// AVX2 alone (16 registers): 2x8 (a few spills) measured faster than 3x4 and 2x6.
// aarch64: a v8f is two q registers, so 2x4 (2x8 spills in Clang's code, 2x4 does not); NEON speed
// is untested. (One block of all B <= 8 rows, streaming the weights in a single pass, measured no
// faster here and was dropped.) Override with -DMDI_MATMUL_MR=.. -DMDI_MATMUL_NR=.. to tune.
#if defined(MDI_MATMUL_MR) && defined(MDI_MATMUL_NR)
constexpr int MR = MDI_MATMUL_MR, NR = MDI_MATMUL_NR;
#elif MDI_ROW_PAIRS
constexpr int MR = 6, NR = 8;  // three row pairs x 8: 24 of the 32 registers accumulate
#elif defined(__AVX512F__)
constexpr int MR = 3, NR = 8;
#elif defined(__aarch64__)
constexpr int MR = 2, NR = 4;
#else
constexpr int MR = 2, NR = 8;
#endif

template <typename W>
using Kernel = void (*)(float*, const float*, const W*, const float*, int, int);

// The kernel for R x N blocks: in row pairs where the target has them, for R >= 2.
template <typename W, int R, int N>
constexpr Kernel<W> block_kernel() {
#if MDI_ROW_PAIRS
  if constexpr (R >= 2) return &mm_pairs<W, R, N>;
#endif
  return &mm_block<W, R, N>;
}

template <typename W, int R, int... Ns>
constexpr auto kernel_row(std::integer_sequence<int, Ns...>) {
  return std::array<Kernel<W>, sizeof...(Ns)>{block_kernel<W, R, Ns + 1>()...};
}

template <typename W, int... Rs>
constexpr auto kernel_table(std::integer_sequence<int, Rs...>) {
  return std::array<std::array<Kernel<W>, NR>, sizeof...(Rs)>{
      kernel_row<W, Rs + 1>(std::make_integer_sequence<int, NR>{})...};
}

// kKernels<W>[r - 1][n - 1]: the kernel for an r x n block (edges use the smaller ones), on float
// or binary16 weights.
template <typename W>
constexpr auto kKernels = kernel_table<W>(std::make_integer_sequence<int, MR>{});

// Parallel regions only for work above this many multiply-adds (a region costs a few us).
constexpr long kParallelMin = 1L << 15;

}  // namespace

float dot(const float* a, const float* b, int n) {
  v8f acc = {};
  int k = 0;
  for (; k + 8 <= n; k += 8) acc = fma8(load8(a + k), load8(b + k), acc);
  return finish(acc, a, b, k, n);
}

namespace {

// W: float, or binary16 weights, which the kernels widen as they load them, once per block of
// input rows: measured faster than widening a tile once into a buffer, at 8 rows and in prefill
// alike (an 8-row step of GPT-2 medium: 158-166 against 79-92 tokens/s).
template <typename W>
void matmul_tiles(float* out, const float* inp, const W* weight, const float* bias, int B, int IC,
                  int OC, int ldo) {
  const int ld = ldo > 0 ? ldo : OC;
  // Tiles of OT weight rows (about 128 KiB of floats, a multiple of NR) are a thread's unit of
  // work and stay in L2 while every input row streams past them, MR rows at a time; each weight
  // row is read from memory once per call.
  const int OT =
      std::max(NR, std::min(256, (int)((128 * 1024) / (4L * std::max(IC, 1))) / NR * NR));
  const int ntiles = (OC + OT - 1) / OT;
  const int nt = threads();
  parallel_for(ntiles, nt, ntiles > 1 && (long)B * IC * OC >= kParallelMin, [&](int t) {
    const int o0 = t * OT, o1 = std::min(OC, o0 + OT);
    for (int b = 0; b < B; b += MR) {
      const int rb = std::min(MR, B - b);
      for (int o = o0; o < o1; o += NR) {
        const int nb = std::min(NR, o1 - o);
        kKernels<W>[rb - 1][nb - 1](out + (size_t)b * ld + o, inp + (size_t)b * IC,
                                    weight + (size_t)o * IC, bias ? bias + o : nullptr, IC, ld);
      }
    }
  });
}

}  // namespace

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int B,
                    int IC, int OC, int ldo) {
  matmul_tiles(out, inp, weight, bias, B, IC, OC, ldo);
}

void matmul_forward(float* out, const float* inp, const uint16_t* weight, const float* bias, int B,
                    int IC, int OC, int ldo) {
  matmul_tiles(out, inp, weight, bias, B, IC, OC, ldo);
}

void layernorm_forward(float* out, const float* inp, const float* weight, const float* bias, int B,
                       int C, float eps) {
  const int nt = threads();
  parallel_for(B, nt, (long)B * C >= kParallelMin, [&](int b) {
    const float* x = inp + (size_t)b * C;
    float* o = out + (size_t)b * C;
    const float m = sum_fixed(x, C) / (float)C;
    const float var = sumsq_fixed(x, m, C) / (float)C;
    const float rstd = 1.0f / std::sqrt(var + eps);
    // Element by element (out may alias inp: x[i] is read before o[i] is written).
    if (bias) {
      for (int i = 0; i < C; i++) o[i] = fma1((x[i] - m) * rstd, weight[i], bias[i]);
    } else {
      for (int i = 0; i < C; i++) o[i] = ((x[i] - m) * rstd) * weight[i];
    }
  });
}

void gelu_forward(float* x, long N) {
  const v8f s = splat(0.7978845608028654f);  // sqrt(2 / pi)
  const v8f c = splat(0.044715f), half = splat(0.5f), one = splat(1.0f);
  // v + 0.044715 v^3 as one explicit fma; each element gets the same operations for any N or
  // thread count (map8).
  auto gelu8 = [&](v8f v) { return half * v * (one + tanh8(s * fma8(c * v * v, v, v))); };
  constexpr long kPiece = 1024;  // elements per parallel item (a multiple of 8)
  const long pieces = (N + kPiece - 1) / kPiece;
  const int nt = threads();
  parallel_for(pieces, nt, N >= kParallelMin / 8,
               [&](long i) { map8(x + i * kPiece, std::min(kPiece, N - i * kPiece), gelu8); });
}

void residual_forward(float* x, const float* y, long N) {
  const int nt = threads();
  parallel_for(N, nt, N >= kParallelMin * 8, [&](long i) { x[i] += y[i]; });
}

namespace {

#if defined(__AVX2__)
// hsum8 of a[0 .. 7], all eight at once: the same three rounds of additions, each on the same two
// operands as hsum8's, done in vector lanes.
inline v8f reduce_8(const v8f* a) {
  // Round 1, l0 + l4 .. l3 + l7: u[j] holds key 2j's four sums, then key 2j + 1's.
  __m256 u[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; j++) {
    const __m256 x = (__m256)a[2 * j], y = (__m256)a[2 * j + 1];
    u[j] = _mm256_add_ps(_mm256_permute2f128_ps(x, y, 0x20), _mm256_permute2f128_ps(x, y, 0x31));
  }
  // Round 2, (l0 + l4) + (l2 + l6) and (l1 + l5) + (l3 + l7), two keys per 128-bit half.
  __m256 w[2];
#pragma GCC unroll 2
  for (int j = 0; j < 2; j++)
    w[j] = _mm256_add_ps(_mm256_shuffle_ps(u[2 * j], u[2 * j + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm256_shuffle_ps(u[2 * j], u[2 * j + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  // Round 3, the two halves of the tree: keys 0, 2, 4, 6, 1, 3, 5, 7, put in order.
  const __m256 r = _mm256_add_ps(_mm256_shuffle_ps(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm256_shuffle_ps(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1)));
  return (v8f)_mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
#endif

// Scores of keys t0 .. t0 + N - 1 against qh, side by side: each is the chain dot() computes (the
// one order), so att[t] does not depend on how the keys are grouped. N independent chains keep the
// FMA units busy where one short dot product a call waits on its own latency.
template <int N>
inline void scores(float* att, const float* qh, const float* kh, int t0, int C, int HS,
                   float scale) {
  v8f acc[N] = {};
  int k = 0;
  for (; k + 8 <= HS; k += 8) {
    const v8f a = load8(qh + k);
#pragma GCC unroll 8
    for (int j = 0; j < N; j++) acc[j] = fma8(a, load8(kh + (size_t)(t0 + j) * C + k), acc[j]);
  }
#if defined(__AVX2__)
  if constexpr (N == 8) {
    if (k == HS) {  // no tail: reduce_8 ends all eight chains at once
      store8(att + t0, reduce_8(acc) * splat(scale));
      return;
    }
  }
#endif
#pragma GCC unroll 8
  for (int j = 0; j < N; j++)
    att[t0 + j] = finish(acc[j], qh, kh + (size_t)(t0 + j) * C, k, HS) * scale;
}

// oh[8j .. 8j + 7] for j < G = sum over t = 0 .. P in order of att[t] * vh[t][8j .. 8j + 7]: each
// element is its own chain in t, as in a loop over the elements, with the G chunks' rows of v read
// together (one pass over the cached rows instead of one per chunk).
template <int G>
void weighted_sum(float* oh, const float* att, const float* vh, int P, int C) {
  v8f acc[G] = {};
  for (int t = 0; t <= P; t++) {
    const v8f av = splat(att[t]);
    const float* vt = vh + (size_t)t * C;
#pragma GCC unroll 8
    for (int j = 0; j < G; j++) acc[j] = fma8(av, load8(vt + 8 * j), acc[j]);
  }
#pragma GCC unroll 8
  for (int j = 0; j < G; j++) store8(oh + 8 * j, acc[j]);
}

using WeightedSum = void (*)(float*, const float*, const float*, int, int);
constexpr WeightedSum kWeightedSums[8] = {weighted_sum<1>, weighted_sum<2>, weighted_sum<3>,
                                          weighted_sum<4>, weighted_sum<5>, weighted_sum<6>,
                                          weighted_sum<7>, weighted_sum<8>};

}  // namespace

namespace {

// att[0 .. P] = softmax(att[0 .. P]) in place: the max, exp(score - max) and their sum (the one
// order), then the scaling.
void softmax_scores(float* att, int P) {
  float maxv = -INFINITY;
  for (int t = 0; t <= P; t++) maxv = std::max(maxv, att[t]);
  const v8f mv = splat(maxv);
  map8(att, P + 1, [&](v8f a) { return exp8(a - mv); });
  const float inv = 1.0f / sum_fixed(att, P + 1);
  for (int t = 0; t <= P; t++) att[t] *= inv;
}

// oh[i] for i = i0 .. HS - 1 (a head's last HS % 8 elements): weighted_sum's chain, one element
// at a time.
void weighted_tail(float* oh, const float* att, const float* vh, int P, int C, int i0, int HS) {
  for (int i = i0; i < HS; i++) {
    float acc = 0.0f;
    for (int t = 0; t <= P; t++) acc = fma1(att[t], vh[(size_t)t * C + i], acc);
    oh[i] = acc;
  }
}

// One query row's head: oh (HS) = softmax(qh . kh[0 .. P] * scale) . vh[0 .. P].
void attend_row(float* oh, float* att, const float* qh, const float* kh, const float* vh, int P,
                int C, int HS, float scale) {
  int t = 0;
  for (; t + 8 <= P + 1; t += 8) scores<8>(att, qh, kh, t, C, HS, scale);
  for (; t <= P; t++) scores<1>(att, qh, kh, t, C, HS, scale);
  softmax_scores(att, P);
  // out = sum over t = 0 .. P in order of att[t] * v[t], element by element: up to 64 elements
  // per pass over the rows, then the tail (each element its own chain either way).
  int i = 0;
  while (i + 8 <= HS) {
    const int g = std::min(8, (HS - i) / 8);
    kWeightedSums[g - 1](oh + i, att, vh + i, P, C);
    i += 8 * g;
  }
  weighted_tail(oh, att, vh, P, C, i, HS);
}

#if MDI_ROW_PAIRS
// Two query rows of one sample (one cache) in row pairs, as in mm_pairs: row 0's chains in lanes
// 0-7, row 1's in lanes 8-15, each key and value loaded once for both. Every chain is attend_row's.

// hsum8 of the 16 chains in a[0 .. 7] (row 0's of key j in lanes 0-7 of a[j], row 1's in 8-15),
// all at once: the same three rounds of additions, each on the same two operands as hsum8's, done
// in vector lanes. Returns row 0's eight sums in lanes 0-7, row 1's in 8-15.
inline __m512 reduce_8x2(const __m512* a) {
  // Round 1, l0 + l4 .. l3 + l7: a[j]'s 128-bit blocks are row 0's low and high half, row 1's low
  // and high half; u[j] holds, per block, keys 2j (row 0, row 1) and 2j + 1 (row 0, row 1).
  __m512 u[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; j++)
    u[j] = _mm512_add_ps(
        _mm512_maskz_shuffle_f32x4(0xffff, a[2 * j], a[2 * j + 1], _MM_SHUFFLE(2, 0, 2, 0)),
        _mm512_maskz_shuffle_f32x4(0xffff, a[2 * j], a[2 * j + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  // Round 2, (l0 + l4) + (l2 + l6) and (l1 + l5) + (l3 + l7), two chains per block and source.
  __m512 w[2];
#pragma GCC unroll 2
  for (int j = 0; j < 2; j++)
    w[j] = _mm512_add_ps(_mm512_shuffle_ps(u[2 * j], u[2 * j + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(u[2 * j], u[2 * j + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  // Round 3, the two halves of the tree; lane i then holds chain (row, key) with i = 8 (key % 2)
  // + 4 row + key / 2, put in order by the permutation.
  const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_maskz_permutexvar_ps(
      0xffff, _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15), r);
}

// scores<N> of q0 and q1 against keys t0 .. t0 + N - 1.
template <int N>
inline void scores_pair(float* att0, float* att1, const float* q0, const float* q1, const float* kh,
                        int t0, int C, int HS, float scale) {
  __m512 acc[N];
#pragma GCC unroll 8
  for (int j = 0; j < N; j++) acc[j] = _mm512_setzero_ps();
  int k = 0;
  for (; k + 8 <= HS; k += 8) {
    const __m512 a = load_pair(q0 + k, q1 + k);
#pragma GCC unroll 8
    for (int j = 0; j < N; j++)
      acc[j] = _mm512_fmadd_ps(a, loadw_both(kh + (size_t)(t0 + j) * C + k), acc[j]);
  }
  if constexpr (N == 8) {
    if (k == HS) {  // no tail: every chain ends in its lane tree, reduce_8x2 does all 16
      const __m512 sc = _mm512_mul_ps(reduce_8x2(acc), _mm512_set1_ps(scale));
      _mm256_storeu_ps(att0 + t0, _mm512_extractf32x8_ps(sc, 0));
      _mm256_storeu_ps(att1 + t0, _mm512_extractf32x8_ps(sc, 1));
      return;
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < N; j++) {
    const float* kt = kh + (size_t)(t0 + j) * C;
    att0[t0 + j] = finish((v8f)_mm512_extractf32x8_ps(acc[j], 0), q0, kt, k, HS) * scale;
    att1[t0 + j] = finish((v8f)_mm512_extractf32x8_ps(acc[j], 1), q1, kt, k, HS) * scale;
  }
}

// weighted_sum<G> of both rows: together over the cached rows both attend to (t <= min(P0, P1)),
// then the longer row's chains go on alone.
template <int G>
void weighted_sum_pair(float* o0, float* o1, const float* att0, const float* att1, const float* vh,
                       int P0, int P1, int C) {
  __m512 acc[G];
#pragma GCC unroll 8
  for (int j = 0; j < G; j++) acc[j] = _mm512_setzero_ps();
  const int P = std::min(P0, P1);
  for (int t = 0; t <= P; t++) {
    const __m512 av = _mm512_insertf32x8(_mm512_set1_ps(att0[t]), _mm256_set1_ps(att1[t]), 1);
    const float* vt = vh + (size_t)t * C;
#pragma GCC unroll 8
    for (int j = 0; j < G; j++) acc[j] = _mm512_fmadd_ps(av, loadw_both(vt + 8 * j), acc[j]);
  }
  v8f a0[G], a1[G];
#pragma GCC unroll 8
  for (int j = 0; j < G; j++) {
    a0[j] = (v8f)_mm512_extractf32x8_ps(acc[j], 0);
    a1[j] = (v8f)_mm512_extractf32x8_ps(acc[j], 1);
  }
  for (int t = P + 1; t <= P0; t++) {
    const v8f av = splat(att0[t]);
#pragma GCC unroll 8
    for (int j = 0; j < G; j++) a0[j] = fma8(av, load8(vh + (size_t)t * C + 8 * j), a0[j]);
  }
  for (int t = P + 1; t <= P1; t++) {
    const v8f av = splat(att1[t]);
#pragma GCC unroll 8
    for (int j = 0; j < G; j++) a1[j] = fma8(av, load8(vh + (size_t)t * C + 8 * j), a1[j]);
  }
#pragma GCC unroll 8
  for (int j = 0; j < G; j++) {
    store8(o0 + 8 * j, a0[j]);
    store8(o1 + 8 * j, a1[j]);
  }
}

using WeightedSumPair = void (*)(float*, float*, const float*, const float*, const float*, int, int,
                                 int);
constexpr WeightedSumPair kWeightedSumPairs[8] = {
    weighted_sum_pair<1>, weighted_sum_pair<2>, weighted_sum_pair<3>, weighted_sum_pair<4>,
    weighted_sum_pair<5>, weighted_sum_pair<6>, weighted_sum_pair<7>, weighted_sum_pair<8>};

// attend_row for two rows of one cache, at positions P0 and P1.
void attend_pair(float* o0, float* o1, float* att0, float* att1, const float* q0, const float* q1,
                 const float* kh, const float* vh, int P0, int P1, int C, int HS, float scale) {
  const int P = std::min(P0, P1);
  int t = 0;
  for (; t + 8 <= P + 1; t += 8) scores_pair<8>(att0, att1, q0, q1, kh, t, C, HS, scale);
  for (; t <= P; t++) scores_pair<1>(att0, att1, q0, q1, kh, t, C, HS, scale);
  // The longer row's own keys, eight at a time where it has them (t may start unaligned: each
  // score is its own chain).
  float* att = P0 > P ? att0 : att1;
  const float* qh = P0 > P ? q0 : q1;
  const int Pm = std::max(P0, P1);
  for (; t + 8 <= Pm + 1; t += 8) scores<8>(att, qh, kh, t, C, HS, scale);
  for (; t <= Pm; t++) scores<1>(att, qh, kh, t, C, HS, scale);
  softmax_scores(att0, P0);
  softmax_scores(att1, P1);
  int i = 0;
  while (i + 8 <= HS) {
    const int g = std::min(8, (HS - i) / 8);
    kWeightedSumPairs[g - 1](o0 + i, o1 + i, att0, att1, vh + i, P0, P1, C);
    i += 8 * g;
  }
  weighted_tail(o0, att0, vh, P0, C, i, HS);
  weighted_tail(o1, att1, vh, P1, C, i, HS);
}
#endif

}  // namespace

void attention_forward(float* out, const float* q, const float* const* k, const float* const* v,
                       const int* pos, int B, int C, int NH, int T, float* scratch) {
  const int HS = C / NH;
  const float scale = 1.0f / std::sqrt((float)HS);
  long work = 0;  // multiply-adds: two passes over pos + 1 cached rows of HS
  for (int b = 0; b < B; b++) work += 2L * (pos[b] + 1) * C;
  const int nt = threads();
  // Work items: a head of R consecutive rows (R = 2 where the target has row pairs and the batch
  // has rows of one sample, as in a prefill: they share each key and value they load). Head-major:
  // the rows of one head follow each other, so a prefill's keys and values of that head (P x HS of
  // each) stay in cache from one item to the next.
  auto one_cache = [&](int b) { return k[b] == k[b + 1] && v[b] == v[b + 1]; };  // rows b, b + 1
  bool pairs = false;
  for (int b = 0; MDI_ROW_PAIRS && b + 1 < B; b++) pairs |= one_cache(b);
  const int R = pairs ? 2 : 1;
  const int groups = (B + R - 1) / R;
  parallel_for(groups * NH, nt, groups * NH > 1 && work >= kParallelMin, [&](int hg) {
    const int h = hg / groups, b0 = hg % groups * R, b1 = std::min(B, b0 + R);
    float* att = scratch + omp_get_thread_num() * attention_scratch_floats(T, 1);
#if MDI_ROW_PAIRS
    if (R == 2 && b1 - b0 == 2 && one_cache(b0)) {
      attend_pair(out + (size_t)b0 * C + h * HS, out + (size_t)(b0 + 1) * C + h * HS, att, att + T,
                  q + (size_t)b0 * C + h * HS, q + (size_t)(b0 + 1) * C + h * HS, k[b0] + h * HS,
                  v[b0] + h * HS, pos[b0], pos[b0 + 1], C, HS, scale);
      return;
    }
#endif
    for (int b = b0; b < b1; b++)
      attend_row(out + (size_t)b * C + h * HS, att, q + (size_t)b * C + h * HS, k[b] + h * HS,
                 v[b] + h * HS, pos[b], C, HS, scale);
  });
}

void softmax_forward(float* out, const float* in, int n) {
  double maxv = -INFINITY;
  for (int i = 0; i < n; i++) maxv = std::max(maxv, (double)in[i]);
  double sum = 0.0;
  for (int i = 0; i < n; i++) sum += std::exp((double)in[i] - maxv);
  for (int i = 0; i < n; i++) out[i] = (float)(std::exp((double)in[i] - maxv) / sum);
}

void set_threads(int n) {
  g_threads.store(std::max(1, n));
}

int threads() {
  const int n = g_threads.load();
  return n > 0 ? n : std::max(1, omp_get_max_threads());
}

}  // namespace mdi::cpu
