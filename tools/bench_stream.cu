// Experiment for the 1-sample decode step (issue 4's 1.3x target): how close to the bandwidth bound
// does a weight stream come that runs on across the grid-wide dependencies between a layer's
// matrix-vector passes? Not part of mdi-llm: only the weight traffic and the dependencies of a
// decode step, 48 layers of 4 fp16 matrices (QKV 4800x1600, projection 1600x1600, fc 6400x1600, MLP
// projection 1600x6400), one row, fp32 accumulation; no LayerNorm, attention, bias or residual (but
// see WS_FULL below). One persistent block per SM (launched cooperatively) owns a slice of rows of
// every matrix and copies it, chunk by chunk, into a ring of shared-memory slots (cp.async by all
// threads, or one bulk copy (TMA) completing on the slot's mbarrier), RING - 1 chunks ahead of the
// chunk being multiplied; at each pass's end the grid meets at a barrier, since the next pass needs
// every block's outputs. `cross 1` lets the copies run ahead into the next pass while a block waits
// at the barrier; `cross 0` stops them at the pass's end. Prints each variant's step time against
// the bound (weight bytes / device-to-device copy bandwidth). Figures: docs/h200/.
// ws_kernel, run first, is the warp-specialized form of the same stream (a producer warp, consumer
// warps owning whole rows, slots released through mbarriers; optionally an L2 prefetch some chunks
// ahead of the copies), each ring timed with skip 3, 2, 1 and 0, with the input row in one of
// three layouts (row_dot). dyn_kernel, run last, is that stream with the chunks handed out at run
// time from a counter per pass (optionally taken one ahead) and a count of each pass's chunks
// done in place of the grid barriers (skip 2: no waits). Every whole-step run's results (skip 0)
// are checked against the first ws_kernel run's, bit for bit. Before them all, barriers_kernel
// times the grid barriers alone (nothing streamed), in ws_kernel's grid and in mdi-llm's
// persistent decode kernel's.
//   cmake --build build --target bench_stream && build/bench_stream [layers] [skip]
//   skip (timing only, wrong results): 1 leaves the multiplications out, 2 the grid barriers
//   WS_ONLY=1: only the warp-specialized runs (ws_kernel, dyn_kernel); WS_SKIP=k: only their skip k
//   WS_DIAG=DIR: only ws_kernel's diagnosis runs (skip 3, 1, 0), 4 x 48 KB and 12 x 16 KB slots
//     (WS_NO48: the 16 KB ones only), skips 3 and 1 also with longer waits at every pass boundary
//     (0.5-8 us; WS_NO_DELAYS: none), then one traced run of each skip whose times go to DIR for
//     tools/stream_trace.py; WS_CAPS=a,b,..: at most that many copies in flight per block (0: the
//     whole ring; the traces take the last); WS_FULL=1: whole GPT-2 layers (LayerNorms, attention
//     over WS_T cached positions in WS_SPLITS blocks a head, biases, GELU, residuals)
//   WS_LL=[DIR]: ws_kernel with grid barriers against ws_kernel<.., LL = true>, whose pass
//     boundaries are 8-byte words carrying a flag (no barriers), each ring and WS_CAPS (default 2),
//     WS_LL_NAPS=a,b,..: ns between a warp's polls; with DIR, one traced flagged launch (WS_FULL too)
//   WS_DROP=m1,m2,..: ws_kernel with the grid barriers before the passes in each mask left out
//     (bit k: a layer's pass k), WS_DROP_NS=a,b,.. ns spun in their place: timing only, the best
//     that fusing those passes into the one before could give; WS_DROP_SKIP=a,b,..: skip bits (1
//     no multiply, 4 no attention, 8 no LayerNorm); WS_PRE_EPI=0,1: biases, residuals staged
// Built for sm_90 only (bulk copies); -DSLOT_KB=.. -DRING=.. change the first kernel's ring.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <utility>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <vector>

#include "grid_barrier.cuh"

#define CK(call)                                                                          \
  do {                                                                                    \
    cudaError_t e_ = (call);                                                              \
    if (e_ != cudaSuccess) {                                                              \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)

namespace {

constexpr int kThreads = 512, kWarps = kThreads / 32;
#ifndef SLOT_KB  // -DSLOT_KB=.. -DRING=.. to try other rings (slots * KB <= ~190)
#define SLOT_KB 48
#define RING 4
#endif
constexpr int kSlot = SLOT_KB * 1024;  // bytes of one ring slot
constexpr int kRing = RING;            // slots: kRing - 1 chunks in flight ahead of the one in use
// A chunk holds kSlot / (IC * 2) <= kWarps rows (IC >= 1024), and a warp's share of it, at most
// two rows (IC >= 800).
constexpr int kMaxIC = 6400;
constexpr int kMaxPasses = 256;

// What ws_kernel does around a pass's products (WS_FULL; the other kernels do plain passes):
// LayerNorm of the input row (unit weight, zero bias), GELU of the biased output, the residual
// added, or instead of a pass's rows (OC 0, no weights), the attention: `splits` blocks a head,
// each over a share of the positions (kAttend), added up as the next pass stages its input
// (kCombine). kNoWait (WS_DROP, timing only): no grid barrier before the pass, c_drop_ns of
// spinning in its place.
enum PassFlags { kLnIn = 1, kGelu = 2, kAttend = 4, kCombine = 8, kNoWait = 16 };
__constant__ unsigned c_drop_ns;
// WS_PRE_EPI (ws_kernel with barriers): the share's biases and residuals are loaded into shared
// memory with the input row, not by each row's lane 0 after its product.
__constant__ int c_pre_epi;

struct Pass {
  const __half* w;  // (OC, IC)
  const float* x;   // (IC) input
  float* y;         // (OC) output
  int IC, OC;
  int flags = 0;
  const float* bias = nullptr;  // (OC), added to every output row
  const float* res = nullptr;   // (OC), the residual: y = res + W x + bias
  const __half* kc = nullptr;   // kAttend: the layer's cached keys and values, (T, IC / 3) each;
  const __half* vc = nullptr;   // x is the QKV pass's output (q, k, v of the new position)
  int T = 0, heads = 0, splits = 1;
};

// This block's share of a pass: rows [r0, r0 + rows), rc rows a chunk, nch chunks.
struct Share {
  int r0, rows, rc, nch;
};

// The calling block's share of pass p with chunks of at most `slot` bytes.
__device__ __forceinline__ Share share_of(const Pass& p, int slot) {
  const int r0 = int((long)p.OC * blockIdx.x / gridDim.x);
  const int r1 = int((long)p.OC * (blockIdx.x + 1) / gridDim.x);
  const int rc = slot / (p.IC * 2);
  return Share{r0, r1 - r0, rc, (r1 - r0 + rc - 1) / rc};
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

// Bulk copies (TMA) into a slot, completing on the slot's mbarrier.
__device__ __forceinline__ unsigned smem_u32(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(unsigned long long* bar, unsigned arrivals = 1) {
  asm volatile("mbarrier.init.shared.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(arrivals) : "memory");
}
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned bytes, unsigned long long* bar) {
  asm volatile("mbarrier.arrive.expect_tx.shared.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
          smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar))
      : "memory");
}
__device__ __forceinline__ void mbar_wait(unsigned long long* bar, unsigned parity) {
  asm volatile(
      "{\n .reg .pred p;\n WAIT_%=:\n"
      " mbarrier.try_wait.parity.shared.b64 p, [%0], %1;\n"
      " @!p bra WAIT_%=;\n}" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
}

__global__ void __launch_bounds__(kThreads, 1)
    stream_kernel(const Pass* passes, int n_passes, unsigned* bar, int cross, int tma, int skip) {
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* ring = smem;                                  // kRing * kSlot
  float* xs = reinterpret_cast<float*>(smem + kRing * kSlot);  // kMaxIC
  float* red = xs + kMaxIC;                                    // kWarps * 2
  int* red_row = reinterpret_cast<int*>(red + kWarps * 2);     // kWarps
  Share* share = reinterpret_cast<Share*>(red_row + kWarps);   // kMaxPasses
  auto* full = reinterpret_cast<unsigned long long*>(share + kMaxPasses);  // kRing mbarriers
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  for (int i = tid; i < n_passes; i += kThreads) share[i] = share_of(passes[i], kSlot);
  if (tid < kRing) mbar_init(full + tid);
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  __syncthreads();

  // Producer cursor (pass pp, chunk pc); `issued` counts the chunks copied.
  int pp = 0, pc = 0;
  long issued = 0;
  unsigned barriers = 0;
  auto produce = [&](int limit_pass) {  // copies the producer's next chunk, if there is one
    while (pp < n_passes && pc >= share[pp].nch) pp++, pc = 0;
    if (pp < n_passes && pp <= limit_pass) {
      const Share sh = share[pp];
      const int IC = passes[pp].IC, ra = sh.r0 + pc * sh.rc;
      const int n16 = min(sh.rc, sh.r0 + sh.rows - ra) * IC / 8;
      const uint4* src = reinterpret_cast<const uint4*>(passes[pp].w + (size_t)ra * IC);
      uint4* dst = reinterpret_cast<uint4*>(ring + (issued % kRing) * kSlot);
      if (tma) {
        if (tid == 0) bulk_copy(dst, src, unsigned(n16) * 16, full + issued % kRing);
      } else {
        for (int u = tid; u < n16; u += kThreads) cp_async16(dst + u, src + u);
      }
      pc++;
      issued++;
    }
    cp_commit();  // one group per call, empty or not, so that wait_group counts chunks
  };

  for (int i = 0; i < kRing - 1; ++i) produce(cross ? n_passes : 0);
  long used = 0;
  for (int s = 0; s < n_passes; ++s) {
    const Pass p = passes[s];
    const Share sh = share[s];
    if (s > 0) {
      if (!(skip & 2)) grid_barrier(bar, ++barriers);  // every block's outputs of pass s - 1 are written
      if (!cross)  // the copies stopped at the pass's end: start this pass's (kRing - 1 groups,
        for (int i = 0; i < kRing - 1; ++i) produce(s);  // empty past its chunks)
    }
    for (int i = tid; i < p.IC; i += kThreads) xs[i] = p.x[i];
    const int units_per_row = p.IC / 8;
    const unsigned inv = 0xffffffffu / unsigned(units_per_row) + 1;  // u * inv >> 32 == u / units_per_row
    for (int c = 0; c < sh.nch; ++c, ++used) {
      produce(cross ? n_passes : s);
      if (tma) {
        mbar_wait(full + used % kRing, unsigned(used / kRing) & 1);  // the chunk has landed
        __syncthreads();  // xs is in shared memory
      } else {
        cp_wait<kRing - 1>();
        __syncthreads();  // the chunk (all threads' copies) and xs are in shared memory
      }
      const int ra = sh.r0 + c * sh.rc, rows = min(sh.rc, sh.r0 + sh.rows - ra);
      const int n16 = rows * units_per_row;
      const uint4* w = reinterpret_cast<const uint4*>(ring + (used % kRing) * kSlot);
      // Warp `warp` takes units [u0, u1): contiguous, so at most two rows (a row has >= 200).
      const int u0 = n16 * warp / kWarps, u1 = (skip & 1) ? u0 : n16 * (warp + 1) / kWarps;
      const int row0 = __umulhi(unsigned(u0), inv);
      float acc0 = 0.0f, acc1 = 0.0f;
      for (int u = u0 + lane; u < u1; u += 32) {
        const int row = __umulhi(unsigned(u), inv), col = (u - row * units_per_row) * 8;
        const uint4 q = w[u];
        const __half2* h = reinterpret_cast<const __half2*>(&q);
        const float4 xa = *reinterpret_cast<const float4*>(xs + col);
        const float4 xb = *reinterpret_cast<const float4*>(xs + col + 4);
        const float2 w0 = __half22float2(h[0]), w1 = __half22float2(h[1]);
        const float2 w2 = __half22float2(h[2]), w3 = __half22float2(h[3]);
        float d = w0.x * xa.x;
        d = fmaf(w0.y, xa.y, d), d = fmaf(w1.x, xa.z, d), d = fmaf(w1.y, xa.w, d);
        d = fmaf(w2.x, xb.x, d), d = fmaf(w2.y, xb.y, d), d = fmaf(w3.x, xb.z, d);
        d = fmaf(w3.y, xb.w, d);
        if (row == row0) acc0 += d;
        else acc1 += d;
      }
      for (int o = 16; o > 0; o >>= 1) {
        acc0 += __shfl_xor_sync(0xffffffffu, acc0, o);
        acc1 += __shfl_xor_sync(0xffffffffu, acc1, o);
      }
      if (lane == 0) red[warp * 2] = acc0, red[warp * 2 + 1] = acc1, red_row[warp] = u0 < u1 ? row0 : -2;
      __syncthreads();  // also: every thread is done with the slot before it is copied into again
      if (warp < rows) {  // warp r sums row r's parts, in warp order (a tree over 16 lanes)
        float v = 0.0f;
        if (lane < kWarps) {
          const int r0w = red_row[lane];
          v = r0w == warp ? red[lane * 2] : r0w + 1 == warp ? red[lane * 2 + 1] : 0.0f;
        }
        for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) p.y[ra + warp] = v;
      }
    }
  }
  cp_wait<0>();
}


// The warp-specialized variant: one producer warp (its first lane) streams every pass's chunks
// through the ring with bulk copies and never waits for the grid; a slot is refilled once every
// consumer warp has released it (the slot's `empty` mbarrier), not at a block-wide barrier. WC
// consumer warps own whole rows (row i of the block's share: warp i % WC), so a warp that has no
// row in a chunk releases it once it has landed and moves on; the grid barriers and the input row's staging
// are among the consumers only (named barrier 1). A row's sum is the warp's own (no cross-warp
// reduction), so rows are written without a block barrier.
__device__ __forceinline__ void mbar_arrive(unsigned long long* bar) {
  asm volatile("mbarrier.arrive.shared.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}
template <int WC>
__device__ __forceinline__ void consumers_sync() {
  asm volatile("bar.sync 1, %0;" ::"n"(WC * 32) : "memory");
}

// One warp's dot product of a weight row in shared memory (n16 units of 8 fp16) with the input
// row: two chains of FMAs over the lanes, then a butterfly; every lane gets the sum. Unit u's 8
// inputs are xa[u * xst .. + 3] and xb[u * xst .. + 3], by the input's layout L:
// - kAsIs: the row as it is (xa = xs, xb = xs + 4, xst 8): each 16-byte load of a warp spans 1 KB
//   and two lanes of each quarter warp meet in the same banks (two-way conflicts);
// - kSplit: split into its units' halves (xb = xs + IC / 2, xst 4): conflict-free;
// - kSwapped: as it is, but lanes with (u >> 2) odd load their second half first: each quarter
//   warp's 8 loads then fall into 8 different bank groups.
// The same products in the same order, so the same sums in every layout.
enum Layout { kAsIs, kSplit, kSwapped };
template <Layout L>
__device__ __forceinline__ float row_dot(const uint4* w, const float* xa, const float* xb, int n16, int lane) {
  constexpr int xst = L == kSplit ? 4 : 8;
  float acc = 0.0f, acc2 = 0.0f;
#pragma unroll 4
  for (int u = lane; u < n16; u += 32) {
    const uint4 q = w[u];
    const __half2* h = reinterpret_cast<const __half2*>(&q);
    float4 a, b;
    if constexpr (L == kSwapped) {
      const int sw = (u >> 2) & 1;
      const float4 f0 = *reinterpret_cast<const float4*>(xa + u * xst + 4 * sw);
      const float4 f1 = *reinterpret_cast<const float4*>(xa + u * xst + 4 * (sw ^ 1));
      a = sw ? f1 : f0, b = sw ? f0 : f1;
    } else {
      a = *reinterpret_cast<const float4*>(xa + u * xst);
      b = *reinterpret_cast<const float4*>(xb + u * xst);
    }
    const float2 w0 = __half22float2(h[0]), w1 = __half22float2(h[1]);
    const float2 w2 = __half22float2(h[2]), w3 = __half22float2(h[3]);
    acc = fmaf(w0.x, a.x, acc), acc2 = fmaf(w0.y, a.y, acc2), acc = fmaf(w1.x, a.z, acc);
    acc2 = fmaf(w1.y, a.w, acc2), acc = fmaf(w2.x, b.x, acc), acc2 = fmaf(w2.y, b.y, acc2);
    acc = fmaf(w3.x, b.z, acc), acc2 = fmaf(w3.y, b.w, acc2);
  }
  acc += acc2;
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  return acc;
}

// Where float4 k of an input row of IC goes in xs in layout L (kSplit: unit u's halves to xs[u]
// and xs[IC / 8 + u], as float4s), and where row_dot then finds the units' second halves.
template <Layout L>
__device__ __forceinline__ int staged_at(int k, int IC) {
  return L == kSplit ? (k & 1) * (IC / 8) + (k >> 1) : k;
}
template <Layout L>
__device__ __forceinline__ const float* second_halves(const float* xs, int IC) {
  return L == kSplit ? xs + IC / 2 : xs + 4;
}

// The consumers' copy of a pass's input row into xs in layout L; returns second_halves.
template <int WC, Layout L>
__device__ __forceinline__ const float* stage_input(float* xs, const float* x, int IC, int tid) {
  for (int k = tid; k < IC / 4; k += WC * 32)
    reinterpret_cast<float4*>(xs)[staged_at<L>(k, IC)] = reinterpret_cast<const float4*>(x)[k];
  return second_halves<L>(xs, IC);
}

// The global nanosecond clock (the same on every SM).
__device__ __forceinline__ unsigned long long now_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ void spin_ns(unsigned ns) {
  for (const unsigned long long t0 = now_ns(); now_ns() - t0 < ns;) {
  }
}

// ws_kernel's trace (WS_DIAG): per block kTraceStride times (ns), at kArrive + s the consumers'
// arrival at pass s's barrier (or pass boundary), at kRelease + s their release, at kLand + i the
// time chunk i of the block was seen landed by an observer warp (warp WC + 1, launched only when
// tracing) that polls each slot's `full` mbarrier in turn.
constexpr int kArrive = 0, kRelease = kMaxPasses, kLand = 2 * kMaxPasses, kMaxTraceChunks = 2048;
constexpr int kTraceStride = kLand + kMaxTraceChunks;

// The consumers' sum (or max) of v, every consumer thread gets it; red: WC floats.
template <int WC, bool kMax = false>
__device__ __forceinline__ float consumers_reduce(float v, float* red, int tid) {
  for (int o = 16; o > 0; o >>= 1) {
    const float u = __shfl_xor_sync(0xffffffffu, v, o);
    v = kMax ? fmaxf(v, u) : v + u;
  }
  if ((tid & 31) == 0) red[tid >> 5] = v;
  consumers_sync<WC>();
  v = red[0];
  for (int w = 1; w < WC; ++w) v = kMax ? fmaxf(v, red[w]) : v + red[w];
  consumers_sync<WC>();  // red is free again
  return v;
}

// LayerNorm (two-pass variance, unit weight, zero bias) of the IC values in xs, in place: the
// order of xs does not matter (any Layout).
template <int WC>
__device__ __forceinline__ void layernorm_xs(float* xs, int IC, int tid, float* red) {
  float sum = 0.0f;
  for (int k = tid; k < IC; k += WC * 32) sum += xs[k];
  const float mean = consumers_reduce<WC>(sum, red, tid) / float(IC);
  float var = 0.0f;
  for (int k = tid; k < IC; k += WC * 32) var += (xs[k] - mean) * (xs[k] - mean);
  const float rstd = rsqrtf(consumers_reduce<WC>(var, red, tid) / float(IC) + 1e-5f);
  for (int k = tid; k < IC; k += WC * 32) xs[k] = (xs[k] - mean) * rstd;
  consumers_sync<WC>();
}

// The attention's softmax over a block's share of n scores in sc (each warp's written): sc[t]
// becomes exp(sc[t] - m); returns (m, the sum z) to every consumer thread.
template <int WC>
__device__ __forceinline__ float2 softmax_share(float* sc, int n, int tid, float* red) {
  consumers_sync<WC>();
  float m = -INFINITY;
  for (int t = tid; t < n; t += WC * 32) m = fmaxf(m, sc[t]);
  m = consumers_reduce<WC, true>(m, red, tid);
  float z = 0.0f;
  for (int t = tid; t < n; t += WC * 32) z += (sc[t] = __expf(sc[t] - m));
  z = consumers_reduce<WC>(z, red, tid);  // its barriers also publish sc
  return make_float2(m, z);
}

// Block b's part of the attention for one new position (head size 64): head b / splits over
// its share of the T cached positions and the new one (split b % splits), written as its max m,
// sum z and unnormalised output o[64] (66 floats at y + 66 * b); the projection's staging adds
// the splits up (stage_combined). Warps take positions, lanes two dimensions each; the warps'
// parts of o meet in shared memory (sc: the share's scores, part: WC x 64), added in warp order.
template <int WC>
__device__ __forceinline__ void attend(const Pass& p, int b, int tid, float* red, float* sc, float* part) {
  const int C = p.IC / 3, lane = tid & 31, warp = tid >> 5, T = p.T, h = b / p.splits, sp = b % p.splits;
  const int t0 = (T + 1) * sp / p.splits, t1 = (T + 1) * (sp + 1) / p.splits;
  // Dimension d of position t's key (at = 1) or value (at = 2): cached, or the new one in x.
  auto kv = [&](int at, int t, int d) {
    return t < T ? __half2float((at == 1 ? p.kc : p.vc)[size_t(t) * C + h * 64 + d]) : p.x[at * C + h * 64 + d];
  };
  const float q0 = p.x[h * 64 + lane], q1 = p.x[h * 64 + lane + 32];
  for (int t = t0 + warp; t < t1; t += WC) {
    float d = q0 * kv(1, t, lane) + q1 * kv(1, t, lane + 32);
    for (int o = 16; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
    if (lane == 0) sc[t - t0] = d * 0.125f;
  }
  const float2 mz = softmax_share<WC>(sc, t1 - t0, tid, red);
  const float m = mz.x, z = mz.y;  // its barriers also publish sc
  float a0 = 0.0f, a1 = 0.0f;
  for (int t = t0 + warp; t < t1; t += WC)
    a0 = fmaf(sc[t - t0], kv(2, t, lane), a0), a1 = fmaf(sc[t - t0], kv(2, t, lane + 32), a1);
  part[warp * 64 + lane] = a0, part[warp * 64 + lane + 32] = a1;
  consumers_sync<WC>();
  float* out = p.y + 66 * b;
  if (tid < 64) {
    float o = 0.0f;
    for (int w = 0; w < WC; ++w) o += part[w * 64 + tid];
    out[2 + tid] = o;
  }
  if (tid == 0) out[0] = m, out[1] = z;
}

// The projection's input row: the attention's splits of each head added up (softmax rescaled),
// staged into xs in layout L as stage_input does; x holds the splits' (m, z, o[64]).
template <int WC, Layout L>
__device__ __forceinline__ const float* stage_combined(float* xs, const float* x, int IC, int splits, int tid) {
  for (int k = tid; k < IC / 4; k += WC * 32) {
    const int h = (4 * k) / 64, e = 4 * k - 64 * h;
    const float* part = x + 66 * h * splits;
    float M = -INFINITY;
    for (int sp = 0; sp < splits; ++sp) M = fmaxf(M, part[66 * sp]);
    float z = 0.0f;
    float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int sp = 0; sp < splits; ++sp) {
      const float* ps = part + 66 * sp;
      const float f = ps[1] > 0.0f ? __expf(ps[0] - M) : 0.0f;
      z = fmaf(f, ps[1], z);
      o.x = fmaf(f, ps[2 + e], o.x), o.y = fmaf(f, ps[3 + e], o.y);
      o.z = fmaf(f, ps[4 + e], o.z), o.w = fmaf(f, ps[5 + e], o.w);
    }
    const float r = 1.0f / z;
    reinterpret_cast<float4*>(xs)[staged_at<L>(k, IC)] = make_float4(o.x * r, o.y * r, o.z * r, o.w * r);
  }
  return second_halves<L>(xs, IC);
}

// WS_LL: the pass boundaries without grid barriers, as NCCL's low-latency protocol passes data.
// Every activation is an 8-byte word, its float in the low half and a flag in the high half,
// written with one 64-bit store; a reader loads the words it needs (single-copy atomic) and loads
// again those whose flag is not yet the launch's (kLLFlag: the activations are zeroed before each
// launch and every pass has its own buffer). The wait for a pass's inputs is then the load that
// finds them, with no arrival counter and no second round trip for the data.
constexpr unsigned kLLFlag = 1;
constexpr int kMaxRowsLL = 128;  // rows of a pass a block may own
using u64 = unsigned long long;
__device__ __forceinline__ u64 ll_ld(const u64* p) {
  u64 v;
  asm volatile("ld.volatile.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ ulonglong2 ll_ld2(const u64* p) {  // two words, p 16-byte aligned
  ulonglong2 v;
  asm volatile("ld.volatile.global.v2.u64 {%0, %1}, [%2];" : "=l"(v.x), "=l"(v.y) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void ll_st(float* base, int i, float v) {
  const u64 w = (u64(kLLFlag) << 32) | __float_as_uint(v);
  asm volatile("st.volatile.global.u64 [%0], %1;" ::"l"(reinterpret_cast<u64*>(base) + i), "l"(w) : "memory");
}
__device__ __forceinline__ bool ll_ready(u64 v) { return unsigned(v >> 32) == kLLFlag; }
__device__ __forceinline__ bool ll_ready(ulonglong2 v) { return ll_ready(v.x) && ll_ready(v.y); }
__device__ __forceinline__ u64 ll_load_one(const u64* p) { return ll_ld(p); }
__device__ __forceinline__ ulonglong2 ll_load_one(const ulonglong2* p) { return ll_ld2(reinterpret_cast<const u64*>(p)); }
__device__ __forceinline__ float ll_val(u64 v) { return __uint_as_float(unsigned(v)); }

// Loads v[j] = *at(j) for every j with ok(j), all issued before the first is checked. While
// some are not ready, one lane of the warp polls one of them (every c_ll_nap ns), and once it is
// ready the warp loads again all that were not, all at once. (Every lane polling all of its words
// would load the whole input row in every block and every round: megabytes a microsecond through
// the L2 that the weights stream through.) Called by whole warps.
__constant__ unsigned c_ll_nap;
template <int N, typename V, typename At, typename Ok>
__device__ __forceinline__ void ll_fetch(V (&v)[N], At at, Ok ok) {
#pragma unroll
  for (int j = 0; j < N; ++j)
    if (ok(j)) v[j] = ll_load_one(at(j));
  for (;;) {
    int first = -1;
#pragma unroll
    for (int j = N - 1; j >= 0; --j)
      if (ok(j) && !ll_ready(v[j])) first = j;
    const unsigned waiting = __ballot_sync(0xffffffffu, first >= 0);
    if (!waiting) return;
    if ((threadIdx.x & 31) == __ffs(waiting) - 1) {
      V t;
      do {
        if (c_ll_nap) __nanosleep(c_ll_nap);
        t = ll_load_one(at(first));
      } while (!ll_ready(t));
    }
    __syncwarp();
#pragma unroll
    for (int j = 0; j < N; ++j)
      if (ok(j) && !ll_ready(v[j])) v[j] = ll_load_one(at(j));
  }
}

// stage_input from an LL row.
template <int WC, Layout L>
__device__ __forceinline__ const float* stage_input_ll(float* xs, const float* x, int IC, int tid) {
  constexpr int kPer = (kMaxIC / 4 + WC * 32 - 1) / (WC * 32);  // float4s a thread
  const auto* src = reinterpret_cast<const ulonglong2*>(x);     // float4 k: src[2k], src[2k + 1]
  ulonglong2 v[2 * kPer];
  ll_fetch(v, [&](int j) { return src + 2 * (tid + (j / 2) * WC * 32) + (j & 1); },
           [&](int j) { return tid + (j / 2) * WC * 32 < IC / 4; });
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int k = tid + j * WC * 32;
    if (k < IC / 4)
      reinterpret_cast<float4*>(xs)[staged_at<L>(k, IC)] =
          make_float4(ll_val(v[2 * j].x), ll_val(v[2 * j].y), ll_val(v[2 * j + 1].x), ll_val(v[2 * j + 1].y));
  }
  return second_halves<L>(xs, IC);
}

// stage_combined from LL splits (at most kMaxSplitsLL; one float4 of the row a thread).
constexpr int kMaxSplitsLL = 5;
template <int WC, Layout L>
__device__ __forceinline__ const float* stage_combined_ll(float* xs, const float* x, int IC, int splits, int tid) {
  const int k = tid;
  const auto* src = reinterpret_cast<const u64*>(x);
  const int h = (4 * k) / 64, e = 4 * k - 64 * h;
  const u64* part = src + 66 * h * splits;
  // Per split: (m, z), (o[e], o[e + 1]), (o[e + 2], o[e + 3]).
  ulonglong2 v[3 * kMaxSplitsLL];
  ll_fetch(v,
           [&](int j) {
             const u64* ps = part + 66 * (j / 3);
             return reinterpret_cast<const ulonglong2*>(ps + (j % 3 == 0 ? 0 : j % 3 == 1 ? 2 + e : 4 + e));
           },
           [&](int j) { return k < IC / 4 && j / 3 < splits; });
  if (k < IC / 4) {
    float M = -INFINITY;
#pragma unroll
    for (int sp = 0; sp < kMaxSplitsLL; ++sp)
      if (sp < splits) M = fmaxf(M, ll_val(v[3 * sp].x));
    float z = 0.0f;
    float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int sp = 0; sp < kMaxSplitsLL; ++sp) {
      if (sp >= splits) break;
      const float m = ll_val(v[3 * sp].x), zs = ll_val(v[3 * sp].y);
      const float f = zs > 0.0f ? __expf(m - M) : 0.0f;
      z = fmaf(f, zs, z);
      o.x = fmaf(f, ll_val(v[3 * sp + 1].x), o.x), o.y = fmaf(f, ll_val(v[3 * sp + 1].y), o.y);
      o.z = fmaf(f, ll_val(v[3 * sp + 2].x), o.z), o.w = fmaf(f, ll_val(v[3 * sp + 2].y), o.w);
    }
    const float r = 1.0f / z;
    reinterpret_cast<float4*>(xs)[staged_at<L>(k, IC)] = make_float4(o.x * r, o.y * r, o.z * r, o.w * r);
  }
  return second_halves<L>(xs, IC);
}

// attend with an LL input row: each warp's cached keys and values (at most kMaxTPW positions a
// warp) are loaded before the new row is waited for; the same arithmetic in the same order.
constexpr int kMaxTPW = 8;
template <int WC>
__device__ __forceinline__ void attend_ll(const Pass& p, int b, int tid, float* red, float* sc, float* part) {
  const int C = p.IC / 3, lane = tid & 31, warp = tid >> 5, T = p.T, h = b / p.splits, sp = b % p.splits;
  const int t0 = (T + 1) * sp / p.splits, t1 = (T + 1) * (sp + 1) / p.splits;
  float k0[kMaxTPW], k1[kMaxTPW], v0[kMaxTPW], v1[kMaxTPW];
#pragma unroll
  for (int j = 0; j < kMaxTPW; ++j) {
    const int t = t0 + warp + WC * j;
    if (t < t1 && t < T) {
      const size_t at = size_t(t) * C + h * 64 + lane;
      k0[j] = __half2float(p.kc[at]), k1[j] = __half2float(p.kc[at + 32]);
      v0[j] = __half2float(p.vc[at]), v1[j] = __half2float(p.vc[at + 32]);
    }
  }
  // The new position's q, k, v (dimensions lane and lane + 32).
  const auto* src = reinterpret_cast<const u64*>(p.x);
  u64 w[6];
  ll_fetch(w, [&](int j) { return src + (j / 2) * C + h * 64 + lane + 32 * (j & 1); }, [](int) { return true; });
  const float q0 = ll_val(w[0]), q1 = ll_val(w[1]);
#pragma unroll
  for (int j = 0; j < kMaxTPW; ++j) {
    const int t = t0 + warp + WC * j;
    if (t < t1) {
      float d = q0 * (t < T ? k0[j] : ll_val(w[2])) + q1 * (t < T ? k1[j] : ll_val(w[3]));
      for (int o = 16; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
      if (lane == 0) sc[t - t0] = d * 0.125f;
    }
  }
  const float2 mz = softmax_share<WC>(sc, t1 - t0, tid, red);
  const float m = mz.x, z = mz.y;
  float a0 = 0.0f, a1 = 0.0f;
#pragma unroll
  for (int j = 0; j < kMaxTPW; ++j) {
    const int t = t0 + warp + WC * j;
    if (t < t1)
      a0 = fmaf(sc[t - t0], t < T ? v0[j] : ll_val(w[4]), a0), a1 = fmaf(sc[t - t0], t < T ? v1[j] : ll_val(w[5]), a1);
  }
  part[warp * 64 + lane] = a0, part[warp * 64 + lane + 32] = a1;
  consumers_sync<WC>();
  if (tid < 64) {
    float o = 0.0f;
    for (int w2 = 0; w2 < WC; ++w2) o += part[w2 * 64 + tid];
    ll_st(p.y, 66 * b + 2 + tid, o);
  }
  if (tid == 0) ll_st(p.y, 66 * b, m), ll_st(p.y, 66 * b + 1, z);
}

template <int SLOT, int R, int WC, int P, Layout L, bool LL = false>
__global__ void __launch_bounds__((WC + 2) * 32, 1)
    ws_kernel(const Pass* passes, int n_passes, unsigned* bar, int skip, unsigned delay_ns,
              unsigned long long* trace, int cap) {
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* ring = smem;                                    // R * SLOT
  float* xs = reinterpret_cast<float*>(smem + R * SLOT);         // kMaxIC
  Share* share = reinterpret_cast<Share*>(xs + kMaxIC);          // kMaxPasses
  auto* full = reinterpret_cast<unsigned long long*>(share + kMaxPasses);  // R
  auto* empty = full + R;                                                  // R
  __shared__ float red[WC];  // the consumers' reductions (WS_FULL)
  __shared__ float rb[kMaxRowsLL], rr[kMaxRowsLL];  // LL, WS_PRE_EPI: the share's biases, residuals
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int i = tid; i < n_passes; i += blockDim.x) share[i] = share_of(passes[i], SLOT);
  if (tid < R) mbar_init(full + tid), mbar_init(empty + tid, WC);
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  __syncthreads();

  unsigned long long* tr = trace ? trace + size_t(blockIdx.x) * kTraceStride : nullptr;
  if (warp == WC + 1) {  // the observer (tracing only): when each chunk lands
    if (lane != 0) return;
    long i = 0;
    for (int s = 0; s < n_passes; ++s)
      for (int c = 0; c < share[s].nch && i < kMaxTraceChunks; ++c, ++i) {
        mbar_wait(full + int(i % R), unsigned((i / R) & 1));
        tr[kLand + i] = now_ns();
      }
    return;
  }
  if (warp == WC) {  // the producer
    if (lane != 0) return;
    long i = 0;
    // A second cursor P chunks ahead of the copies asks L2 for its chunk (the ring alone holds
    // too few bytes in flight once the consumers hold some of its slots).
    int fs = 0, fc = 0;
    auto prefetch_next = [&]() {
      while (fs < n_passes && fc >= share[fs].nch) fs++, fc = 0;
      if (fs >= n_passes) return;
      const Share sh = share[fs];
      const int IC = passes[fs].IC, ra = sh.r0 + fc * sh.rc, rows = min(sh.rc, sh.r0 + sh.rows - ra);
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(passes[fs].w + (size_t)ra * IC),
                   "r"(unsigned(rows * IC * 2))
                   : "memory");
      fc++;
    };
    for (int k = 0; k < P; ++k) prefetch_next();
    for (int s = 0; s < n_passes; ++s) {
      const Share sh = share[s];
      const int IC = passes[s].IC;
      for (int c = 0; c < sh.nch; ++c, ++i) {
        if (P > 0) prefetch_next();
        const int slot = int(i % R);
        if (i >= R) {
          mbar_wait(empty + slot, unsigned((i / R - 1) & 1));
          // The consumers' reads of the slot (generic proxy), ordered before this wait by their
          // arrivals, before the bulk copy's writes (async proxy).
          asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        }
        // WS_CAPS: at most `cap` copies in flight (chunk i - cap has landed), so that the rest of
        // the ring holds landed chunks and the memory system's queues stay short.
        // (cap < R: chunk i - cap's slot has not been reused yet, so its phase is the one waited for.)
        if (cap > 0 && cap < R && i >= cap) mbar_wait(full + int((i - cap) % R), unsigned(((i - cap) / R) & 1));
        const int ra = sh.r0 + c * sh.rc, rows = min(sh.rc, sh.r0 + sh.rows - ra);
        bulk_copy(ring + size_t(slot) * SLOT, passes[s].w + (size_t)ra * IC, unsigned(rows * IC * 2), full + slot);
      }
    }
    for (long j = i - R < 0 ? 0 : i - R; j < i; ++j)  // stays until its copies are consumed
      mbar_wait(empty + int(j % R), unsigned((j / R) & 1));
    return;
  }
  long i = 0;
  unsigned barriers = 0;
  for (int s = 0; s < n_passes; ++s) {
    const Pass p = passes[s];
    const Share sh = share[s];
    const float* xb = nullptr;
    if constexpr (LL) {  // no barrier: the staging's loads wait for the inputs
      consumers_sync<WC>();  // every warp is done with xs, rb and rr
      if (tr && tid == 0) tr[kArrive + s] = now_ns();
      if (p.flags & kAttend) {
        if (int(blockIdx.x) < p.heads * p.splits) attend_ll<WC>(p, blockIdx.x, tid, red, xs, xs + 1088);
        continue;
      }
      // This share's residuals (LL words, written passes ago) and biases, loaded with the input.
      const bool row = tid < sh.rows;
      u64 res = 0;
      if (row && p.res) res = ll_ld(reinterpret_cast<const u64*>(p.res) + sh.r0 + tid);
      if (row) rb[tid] = p.bias ? p.bias[sh.r0 + tid] : 0.0f;
      xb = (p.flags & kCombine) ? stage_combined_ll<WC, L>(xs, p.x, p.IC, p.splits, tid)
                                : stage_input_ll<WC, L>(xs, p.x, p.IC, tid);
      if (row && p.res) {
        while (!ll_ready(res)) res = ll_ld(reinterpret_cast<const u64*>(p.res) + sh.r0 + tid);
        rr[tid] = ll_val(res);
      }
      consumers_sync<WC>();
      if (tr && tid == 0) tr[kRelease + s] = now_ns();
    } else if (s > 0 && (!(skip & 2) || delay_ns || tr)) {  // every block's outputs of pass s - 1 are written
      consumers_sync<WC>();
      if (tid == 0) {
        if (tr) tr[kArrive + s] = now_ns();
        if (p.flags & kNoWait) {
          if (c_drop_ns) spin_ns(c_drop_ns);
          if (tr) tr[kRelease + s] = now_ns();
        } else {
          if (!(skip & 2)) grid_arrive_and_wait(bar, ++barriers);
          if (tr) tr[kRelease + s] = now_ns();
          if (delay_ns) spin_ns(delay_ns);  // WS_DELAY: a longer wait at every pass boundary
        }
      }
      consumers_sync<WC>();
    }
    if constexpr (!LL) {
      if (p.flags & kAttend) {  // no rows: the heads' attention, `splits` blocks each
        if (int(blockIdx.x) < p.heads * p.splits && !(skip & 4)) attend<WC>(p, blockIdx.x, tid, red, xs, xs + 1088);
        continue;
      }
      if (c_pre_epi && tid < sh.rows) {
        rb[tid] = p.bias ? p.bias[sh.r0 + tid] : 0.0f;
        rr[tid] = p.res ? p.res[sh.r0 + tid] : 0.0f;
      }
      xb = (p.flags & kCombine) ? stage_combined<WC, L>(xs, p.x, p.IC, p.splits, tid)
                                : stage_input<WC, L>(xs, p.x, p.IC, tid);
      consumers_sync<WC>();
    }
    const int n16 = p.IC / 8;
    if ((p.flags & kLnIn) && !(skip & 8)) layernorm_xs<WC>(xs, p.IC, tid, red);
    for (int c = 0; c < sh.nch; ++c, ++i) {
      const int slot = int(i % R), ra = sh.r0 + c * sh.rc, rows = min(sh.rc, sh.r0 + sh.rows - ra);
      // This warp's rows of the chunk: share rows c * rc + r with (c * rc + r) % WC == warp.
      // Every warp waits for the chunk, rows or not: an arrival on `empty` for the slot's next use
      // before this use's phase completes would be counted in this one.
      int r = (warp - (c * sh.rc) % WC + WC) % WC;
      mbar_wait(full + slot, unsigned((i / R) & 1));
      if (r < rows) {
        for (; r < rows; r += WC) {
          const uint4* w = reinterpret_cast<const uint4*>(ring + size_t(slot) * SLOT) + size_t(r) * n16;
          float acc = (skip & 1) ? 0.0f : row_dot<L>(w, xs, xb, n16, lane);
          if (lane == 0) {
            const int q = ra + r - sh.r0;  // the row in the share
            if (p.bias) acc += LL || c_pre_epi ? rb[q] : p.bias[ra + r];
            if (p.flags & kGelu)
              acc = 0.5f * acc * (1.0f + tanhf(0.7978845608f * (acc + 0.044715f * acc * acc * acc)));
            if (p.res) acc += LL || c_pre_epi ? rr[q] : p.res[ra + r];
            if constexpr (LL) ll_st(p.y, ra + r, acc);
            else p.y[ra + r] = acc;
          }
        }
        __syncwarp();
      }
      if (lane == 0) mbar_arrive(empty + slot);
    }
    // (The grid barrier's consumer barriers keep the next pass from staging its row into xs
    // while a warp still reads this one; without them, skip 2, the results are timing only.)
  }
}

// The warp-specialized stream with chunks handed out at run time (dyn_kernel): does the grid-wide
// dependency cost less when no block has a fixed share of a pass? In ws_kernel each block owns a
// fixed slice of rows of every pass, so a pass ends when its slowest block's slice has streamed,
// and the others wait at the barrier (their rings absorb ~6 us). Here a pass is cut into chunks of
// whole rows, one slot each, and each block's producer takes the pass's next chunk from a global
// counter (next[s]) once a slot is free; a block that streams faster takes more. A pass's chunks are
// all handed out before any of the next pass's, so every ring holds its chunks in pass order.
// Consumers count a chunk as done (done[s]) once its rows are written, and before a pass's first
// chunk in this block they wait for done[s - 1] to reach that pass's chunks (the only grid-wide
// wait: no barrier), then stage its input row. A block may have no chunk of a pass. The producer
// ends the stream with a slot that names pass n_passes. Rows of a chunk go to warp (k % WC), k
// counting the rows this block has taken, so consecutive chunks of few rows use different warps.
// Results: the same row sums as ws_kernel (row_dot), so the same bits (checked in main).
__device__ __forceinline__ void chunking(const Pass& p, int slot, int& rc, int& nch) {
  rc = slot / (p.IC * 2);
  nch = (p.OC + rc - 1) / rc;
}

template <int SLOT, int R, int WC, bool kAhead, Layout L>
__global__ void __launch_bounds__((WC + 1) * 32, 1)
    dyn_kernel(const Pass* passes, int n_passes, unsigned* next, unsigned* done, int skip) {
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* ring = smem;                                          // R * SLOT
  float* xs = reinterpret_cast<float*>(smem + R * SLOT);               // kMaxIC
  int2* meta = reinterpret_cast<int2*>(xs + kMaxIC);                   // R: (pass, chunk) of a slot
  int* count = reinterpret_cast<int*>(meta + R);  // 2R: warps done with a slot's use, by its parity
  auto* full = reinterpret_cast<unsigned long long*>(count + 2 * R);  // R
  auto* empty = full + R;                                             // R
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if (tid < R) mbar_init(full + tid), mbar_init(empty + tid, WC);
  if (tid < 2 * R) count[tid] = 0;
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  __syncthreads();

  if (warp == WC) {  // the producer
    if (lane != 0) return;
    long i = 0;
    auto take_slot = [&]() {  // the next slot, once every consumer warp has released it
      const int slot = int(i % R);
      if (i >= R) {
        mbar_wait(empty + slot, unsigned((i / R - 1) & 1));
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // as in ws_kernel
      }
      ++i;
      return slot;
    };
    // The next chunk, (s, c): the first left of pass s or a later one; s == n_passes at the end.
    int s = 0, c = 0;
    auto claim = [&]() {
      for (; s < n_passes; ++s) {
        int rc, nch;
        chunking(passes[s], SLOT, rc, nch);
        if ((c = int(atomicAdd(next + s, 1u))) < nch) return;
      }
    };
    // kAhead: the next chunk is taken as soon as the last one's copy is issued, so the counter's
    // round trip overlaps the wait for a slot (at most one chunk then waits for this block's
    // ring); otherwise only once a slot is free for it.
    if (kAhead) claim();
    for (;;) {
      const int slot = take_slot();
      if (!kAhead) claim();
      if (s >= n_passes) {  // the end of the stream
        meta[slot] = make_int2(n_passes, 0);
        mbar_arrive(full + slot);
        break;
      }
      const Pass& p = passes[s];
      int rc, nch;
      chunking(p, SLOT, rc, nch);
      const int ra = c * rc, rows = min(rc, p.OC - ra);
      meta[slot] = make_int2(s, c);  // published by the copy's arrival on `full`
      bulk_copy(ring + size_t(slot) * SLOT, p.w + (size_t)ra * p.IC, unsigned(rows * p.IC * 2), full + slot);
      if (kAhead) claim();
    }
    for (long j = i - R < 0 ? 0 : i - R; j < i - 1; ++j)  // stays until its copies are consumed
      mbar_wait(empty + int(j % R), unsigned((j / R) & 1));
    return;
  }
  long i = 0, taken = 0;  // slots used; rows taken by this block
  int cur = -1;
  const float* xb = nullptr;
  for (;; ++i) {
    const int slot = int(i % R);
    mbar_wait(full + slot, unsigned((i / R) & 1));
    const int2 m = meta[slot];
    if (m.x >= n_passes) break;
    const Pass p = passes[m.x];
    if (m.x != cur) {  // this block's first chunk of pass m.x: its input row, once complete
      consumers_sync<WC>();  // every warp is done with the previous row
      if (tid == 0 && m.x > 0 && !(skip & 2)) {
        int rc, nch;
        chunking(passes[m.x - 1], SLOT, rc, nch);
        unsigned seen = 0;
        do {
          asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(done + m.x - 1) : "memory");
        } while (seen < unsigned(nch));
      }
      consumers_sync<WC>();
      xb = stage_input<WC, L>(xs, p.x, p.IC, tid);
      consumers_sync<WC>();
      cur = m.x;
    }
    int rc, nch;
    chunking(p, SLOT, rc, nch);
    const int ra = m.y * rc, rows = min(rc, p.OC - ra), n16 = p.IC / 8;
    for (int r = int((warp - taken % WC + WC) % WC); r < rows; r += WC) {
      const uint4* w = reinterpret_cast<const uint4*>(ring + size_t(slot) * SLOT) + size_t(r) * n16;
      const float acc = (skip & 1) ? 0.0f : row_dot<L>(w, xs, xb, n16, lane);
      if (lane == 0) p.y[ra + r] = acc;
    }
    taken += rows;
    __syncwarp();
    if (lane == 0) {
      mbar_arrive(empty + slot);  // the slot is read: the producer may refill it
      // The last warp done with the chunk counts it, after every warp's rows (each warp's fence
      // orders its writes before its count; the last one's, the count before done's increment).
      // The slot's next use counts in the other entry; this one is reset before the resetting
      // warp arrives for that next use, so before the use after it (this entry again) begins.
      int* n = count + 2 * slot + int((i / R) & 1);
      __threadfence();
      if (atomicAdd(n, 1) == WC - 1) {
        *n = 0;
        __threadfence();
        atomicAdd(done + m.x, 1u);
      }
    }
  }
}

// The grid barriers alone, n of them, with nothing to stream or compute: what one costs when
// every block arrives at once (the floor under the waits of ws_kernel's skip 1 and 0).
__global__ void barriers_kernel(unsigned* bar, int n) {
  for (int k = 1; k <= n; ++k) grid_barrier(bar, unsigned(k));
}

// The best of `reps` timings of launch(), `zero` (the barrier or chunk counters) zeroed before each.
template <typename F>
float best_ms(int reps, void* zero, size_t zero_bytes, cudaEvent_t e0, cudaEvent_t e1, F&& launch) {
  float best = 1e9f;
  for (int r = 0; r < reps; ++r) {
    CK(cudaMemset(zero, 0, zero_bytes));
    CK(cudaEventRecord(e0));
    launch();
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    best = std::min(best, ms);
  }
  CK(cudaGetLastError());
  return best;
}

// LL: ws_kernel<.., true>, the activations (zero, zero_bytes) zeroed before each launch.
template <int SLOT_KB_, int R, int WC, int P, Layout L = kAsIs, bool LL = false>
float run_ws(Pass* dp, int n_passes, unsigned* bar, int skip, int sms, int reps, cudaEvent_t e0, cudaEvent_t e1,
             unsigned delay_ns = 0, unsigned long long* trace = nullptr, int cap = 0, void* zero = nullptr,
             size_t zero_bytes = 0) {
  constexpr int SLOT = SLOT_KB_ * 1024;
  const size_t shm = size_t(R) * SLOT + sizeof(float) * kMaxIC + sizeof(Share) * kMaxPasses + 16 * R;
  auto* kernel = ws_kernel<SLOT, R, WC, P, L, LL>;
  CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shm)));
  void* args[] = {&dp, &n_passes, &bar, &skip, &delay_ns, &trace, &cap};
  const int warps = WC + (trace ? 2 : 1);
  return best_ms(reps, LL ? zero : bar, LL ? zero_bytes : sizeof(unsigned), e0, e1, [&] {
    CK(cudaLaunchCooperativeKernel((void*)kernel, dim3(sms), dim3(warps * 32), args, shm));
  });
}

template <int SLOT_KB_, int R, int WC, bool kAhead, Layout L = kAsIs>
float run_dyn(Pass* dp, int n_passes, unsigned* ctr, int skip, int sms, int reps, cudaEvent_t e0, cudaEvent_t e1) {
  constexpr int SLOT = SLOT_KB_ * 1024;
  const size_t shm = size_t(R) * SLOT + sizeof(float) * kMaxIC + (sizeof(int2) + 2 * sizeof(int)) * R + 16 * R;
  CK(cudaFuncSetAttribute(dyn_kernel<SLOT, R, WC, kAhead, L>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shm)));
  unsigned *next = ctr, *done = ctr + kMaxPasses;
  void* args[] = {&dp, &n_passes, &next, &done, &skip};
  return best_ms(reps, ctr, 2 * kMaxPasses * sizeof(unsigned), e0, e1, [&] {
    CK(cudaLaunchCooperativeKernel((void*)dyn_kernel<SLOT, R, WC, kAhead, L>, dim3(sms), dim3((WC + 1) * 32), args, shm));
  });
}

__global__ void fill_half(__half* w, size_t n, unsigned seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    unsigned h = unsigned(i) * 2654435761u ^ seed;
    h ^= h >> 13, h *= 0x5bd1e995u, h ^= h >> 15;
    w[i] = __float2half((float(h & 0xffff) / 65535.0f - 0.5f) * 0.05f);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // each line as it is printed, also into a pipe
  const int layers = argc > 1 ? std::atoi(argv[1]) : 48, reps = 20;
  int skip = argc > 2 ? std::atoi(argv[2]) : 0;
  const int C = 1600;
  const int shapes[4][2] = {{3 * C, C}, {C, C}, {4 * C, C}, {C, 4 * C}};  // (OC, IC)
  size_t per_layer = 0;
  for (auto& s : shapes) per_layer += size_t(s[0]) * s[1];
  const size_t n_w = per_layer * layers, bytes = n_w * sizeof(__half);
  __half* w;
  float *act, *x0;
  unsigned* bar;
  CK(cudaMalloc(&w, bytes));
  // WS_FULL=1: ws_kernel's passes make whole GPT-2 layers (five passes each): LayerNorm 1 and
  // QKV, the heads' attention over WS_T (128) cached positions, the projection plus the residual,
  // LayerNorm 2, fc and GELU, the MLP projection plus the residual; biases everywhere.
  const bool full = std::getenv("WS_FULL") != nullptr;
  if (full && !std::getenv("WS_DIAG") && !std::getenv("WS_LL") && !std::getenv("WS_DROP"))
    return std::fprintf(stderr, "WS_FULL runs with WS_DIAG, WS_LL or WS_DROP only\n"), 1;
  const int T = std::getenv("WS_T") ? std::atoi(std::getenv("WS_T")) : 128;
  const int passes_per_layer = full ? 5 : 4;
  // Floats of a pass's output (full: the attention's splits), twice over: WS_LL's 8-byte words.
  const int act_stride = 2 * (full ? 8 * C : 4 * C);
  CK(cudaMalloc(&act, sizeof(float) * act_stride * passes_per_layer * layers));
  CK(cudaMalloc(&x0, sizeof(float) * 4 * C));
  CK(cudaMalloc(&bar, sizeof(unsigned)));
  fill_half<<<1024, 256>>>(w, n_w, 7);
  std::vector<float> hx(4 * C, 1.0f);
  if (full)
    for (int i = 0; i < 4 * C; ++i) hx[i] = 0.5f * std::sin(0.37f * float(i));
  CK(cudaMemcpy(x0, hx.data(), sizeof(float) * 4 * C, cudaMemcpyHostToDevice));
  std::vector<Pass> hp;
  size_t off = 0;
  const float* in = x0;
  if (!full) {
    for (int l = 0; l < layers; ++l)
      for (int k = 0; k < 4; ++k) {
        float* out = act + size_t(hp.size()) * act_stride;
        hp.push_back(Pass{w + off, in, out, shapes[k][1], shapes[k][0]});
        off += size_t(shapes[k][0]) * shapes[k][1];
        in = out;
      }
  } else {
    __half* kv;  // every layer's cached keys and values, (T, C) each
    float* bias;
    CK(cudaMalloc(&kv, sizeof(__half) * 2 * layers * size_t(std::max(T, 1)) * C));
    CK(cudaMalloc(&bias, sizeof(float) * 4 * C));
    fill_half<<<1024, 256>>>(kv, 2 * layers * size_t(std::max(T, 1)) * C, 11);
    std::vector<float> hb(4 * C);
    for (int i = 0; i < 4 * C; ++i) hb[i] = 0.01f * std::cos(0.11f * float(i));
    CK(cudaMemcpy(bias, hb.data(), sizeof(float) * 4 * C, cudaMemcpyHostToDevice));
    // WS_SPLITS (default: as many as the SMs allow, 5 on 132) blocks a head in the attention.
    int sms0 = 0;
    CK(cudaDeviceGetAttribute(&sms0, cudaDevAttrMultiProcessorCount, 0));
    const int splits = std::getenv("WS_SPLITS") ? std::atoi(std::getenv("WS_SPLITS")) : sms0 / (C / 64);
    if (splits < 1 || splits * (C / 64) > sms0 || (T + splits) / splits > 1088 || 66 * splits * (C / 64) > act_stride / 2)
      return std::fprintf(stderr, "WS_SPLITS or WS_T out of range\n"), 1;
    std::printf("whole layers: attention over %d cached positions, %d block(s) a head\n", T, splits);
    auto out = [&] { return act + size_t(hp.size()) * act_stride; };
    auto matrix = [&](int k) {  // the next matrix, of shape k
      const __half* m = w + off;
      off += size_t(shapes[k][0]) * shapes[k][1];
      return m;
    };
    for (int l = 0; l < layers; ++l) {
      const float* x = in;
      Pass qkv{matrix(0), x, out(), C, 3 * C, kLnIn, bias};
      hp.push_back(qkv);
      Pass att{nullptr, qkv.y, out(), 3 * C, 0, kAttend};
      att.kc = kv + size_t(2 * l) * T * C, att.vc = att.kc + size_t(T) * C, att.T = T, att.heads = C / 64;
      att.splits = splits;
      hp.push_back(att);
      Pass proj{matrix(1), att.y, out(), C, C, kCombine, bias, x};
      proj.heads = att.heads, proj.splits = splits;
      hp.push_back(proj);
      Pass fc{matrix(2), proj.y, out(), C, 4 * C, kLnIn | kGelu, bias};
      hp.push_back(fc);
      Pass proj2{matrix(3), fc.y, out(), 4 * C, C, 0, bias, proj.y};
      hp.push_back(proj2);
      in = proj2.y;
    }
  }
  Pass* dp;
  CK(cudaMalloc(&dp, sizeof(Pass) * hp.size()));
  CK(cudaMemcpy(dp, hp.data(), sizeof(Pass) * hp.size(), cudaMemcpyHostToDevice));

  // The bound: device-to-device copy bandwidth (read + write bytes / time) over 2 x 1 GiB.
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  void *ca, *cb;
  const size_t cbytes = size_t(1) << 30;
  CK(cudaMalloc(&ca, cbytes));
  CK(cudaMalloc(&cb, cbytes));
  float best_copy = 1e9f;
  for (int r = 0; r < 10; ++r) {
    CK(cudaEventRecord(e0));
    CK(cudaMemcpy(cb, ca, cbytes, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    best_copy = std::min(best_copy, ms);
  }
  const double bw = 2.0 * cbytes / (best_copy * 1e-3);
  const double bound_ms = bytes / bw * 1e3;
  std::printf("weights %.3f GB, copy bandwidth %.0f GB/s, bound %.3f ms\n", bytes / 1e9, bw / 1e9, bound_ms);

  int dev = 0, sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const size_t shm = kRing * kSlot + sizeof(float) * (kMaxIC + kWarps * 2) + sizeof(int) * kWarps +
                     sizeof(Share) * kMaxPasses + 8 * kRing;
  if (int(hp.size()) > kMaxPasses) return std::fprintf(stderr, "at most %d passes\n", kMaxPasses), 1;
  CK(cudaFuncSetAttribute(stream_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shm)));
  int n_passes = int(hp.size());
  // The warp-specialized variants (ws_kernel, dyn_kernel: `dyn`): ring slots x KB, consumer warps;
  // each with every skip (WS_SKIP=k: only k). The first skip-0 run's outputs of every pass are the
  // reference: every later skip-0 run must give them bit for bit (the same row_dot everywhere).
  const size_t n_act = size_t(act_stride) * passes_per_layer * layers;
  std::vector<float> ref, got(n_act);
  unsigned* ctr;  // dyn_kernel's next[] and done[]
  CK(cudaMalloc(&ctr, sizeof(unsigned) * 2 * kMaxPasses));
  auto check_bits = [&]() -> const char* {  // a skip-0 run's outputs (in got) against the first one's
    if (ref.empty()) return ref = got, "; the reference bits";
    return std::memcmp(got.data(), ref.data(), sizeof(float) * n_act) == 0 ? "; same bits" : "; NOT the same bits";
  };
  auto ws = [&](const char* what, bool dyn, auto f) {
    for (int sk : {3, 2, 1, 0}) {
      if (const char* only = std::getenv("WS_SKIP"); only && std::atoi(only) != sk) continue;
      CK(cudaMemset(act, 0, sizeof(float) * n_act));
      const float ms = f(sk);
      CK(cudaMemcpy(got.data(), act, sizeof(float) * n_act, cudaMemcpyDeviceToHost));
      const char* bits = sk == 0 ? check_bits() : "";
      std::printf("%s %s, skip %d (%s): %.3f ms (%.2fx the bound); y[0] %g%s\n",
                  dyn ? "chunks handed out" : "warp-specialized", what, sk,
                  sk == 3 ? "stream only" : sk == 2 ? (dyn ? "no waits" : "no barriers") : sk == 1 ? "no multiply" : "whole step",
                  ms, ms / bound_ms, got[(hp.size() - 1) * act_stride], bits);
    }
  };
  // The grid barriers alone: in ws_kernel's grid (one block of 17 warps per SM) and in mdi-llm's
  // persistent decode kernel's (two blocks of 8 warps per SM).
  for (int per_sm : {1, 2}) {
    const int threads = per_sm == 1 ? 17 * 32 : 256;
    int n = n_passes - 1;
    void* args[] = {&bar, &n};
    const float ms = best_ms(reps, bar, sizeof(unsigned), e0, e1, [&] {
      CK(cudaLaunchCooperativeKernel((void*)barriers_kernel, dim3(per_sm * sms), dim3(threads), args, 0));
    });
    std::printf("grid barriers alone, %d blocks of %d threads: %d in %.3f ms (%.2f us each, %.2fx the bound)\n",
                per_sm * sms, threads, n, ms, ms * 1e3 / n, ms / bound_ms);
  }
  auto int_list = [](const char* env, const char* dflt) {  // "a,b,..": environment variable env or dflt
    std::vector<int> v;
    for (const char* c = std::getenv(env) ? std::getenv(env) : dflt; *c;) {
      v.push_back(std::atoi(c));
      while (*c && *c != ',') ++c;
      if (*c == ',') ++c;
    }
    return v;
  };
  std::vector<int> caps = int_list("WS_CAPS", "0");  // copies in flight, 0 = the ring
  // WS_LL and WS_PRE_EPI keep a block's biases and residuals in rb, rr: at most kMaxRowsLL rows.
  const bool rows_fit = std::all_of(hp.begin(), hp.end(), [&](const Pass& q) { return (q.OC + sms - 1) / sms <= kMaxRowsLL; });
  if (std::getenv("WS_DROP")) {
    // What would fewer grid-wide waits per layer give, at best? WS_DROP=m1,m2,..: for each mask m
    // (bit k: a layer's pass k, WS_FULL: 0 QKV, 1 attention, 2 projection, 3 fc, 4 MLP projection)
    // the passes in m start without the grid barrier, with WS_DROP_NS=a,b,.. ns of spinning in its
    // place (what a cluster's barrier or a combining of partial sums might cost); 16 KB x 12 slots,
    // each cap of WS_CAPS (default 1,2); WS_DROP_SKIP=a,b,..: skip bits (1 no multiplications,
    // 4 no attention, 8 no LayerNorm); WS_PRE_EPI=0,1: the biases and residuals staged with the
    // input row (1) or loaded after each product (0). Timing only: a pass in m may read its input
    // unwritten, and so may any run with skip bits.
    caps = int_list("WS_CAPS", "1,2");
    if (!rows_fit) return std::fprintf(stderr, "WS_DROP: too many rows a block\n"), 1;
    for (const int pre : int_list("WS_PRE_EPI", "0")) {
      CK(cudaMemcpyToSymbol(c_pre_epi, &pre, sizeof pre));
      for (const int dskip : int_list("WS_DROP_SKIP", "0")) {
        for (const int mask : int_list("WS_DROP", "0")) {
          std::vector<Pass> hd = hp;
          int dropped = 0;
          for (size_t k = 1; k < hd.size(); ++k)
            if (mask >> (k % passes_per_layer) & 1) hd[k].flags |= kNoWait, dropped++;
          CK(cudaMemcpy(dp, hd.data(), sizeof(Pass) * hd.size(), cudaMemcpyHostToDevice));
          for (const int ns : int_list("WS_DROP_NS", "0")) {
            if (mask == 0 && ns > 0) continue;
            const unsigned dns = unsigned(ns);
            CK(cudaMemcpyToSymbol(c_drop_ns, &dns, sizeof dns));
            for (const int cap : caps) {
              if (cap >= 12) continue;
              CK(cudaMemset(act, 0, sizeof(float) * n_act));
              const float ms = run_ws<16, 12, 16, 0, kSplit>(dp, n_passes, bar, dskip, sms, reps, e0, e1, 0, nullptr, cap);
              CK(cudaMemcpy(got.data(), act, sizeof(float) * n_act, cudaMemcpyDeviceToHost));
              std::printf("drop mask %d (%d of %d barriers left), %u ns in place, 16 KB x 12, cap %d, skip %d%s: %.3f ms (%.2fx the bound)%s\n",
                          mask, n_passes - 1 - dropped, n_passes - 1, dns, cap, dskip, pre ? ", epilogue staged" : "",
                          ms, ms / bound_ms, mask == 0 && dskip == 0 ? check_bits() : "; timing only");
            }
          }
        }
      }
    }
    return 0;
  }
  if (const char* dir = std::getenv("WS_LL")) {
    // ws_kernel with grid barriers against the same with LL words (no barriers), each ring and cap
    // of WS_CAPS (default 2), skip 0 and 1; then one traced LL launch (16 KB slots, the last cap)
    // to DIR/trace_ll_16_skip0_cap<n>.bin (arrive: a pass's staging begins; release: it is done).
    caps = int_list("WS_CAPS", "2");
    const std::vector<int> naps = int_list("WS_LL_NAPS", "0");  // ns between a warp's polls
    const int splits = full ? hp[1].splits : 1;
    if (full && (splits > kMaxSplitsLL || ((T + 1) / splits + 1 + 15) / 16 > kMaxTPW))
      return std::fprintf(stderr, "WS_LL: at most %d splits and %d positions a warp\n", kMaxSplitsLL, kMaxTPW), 1;
    if (!rows_fit) return std::fprintf(stderr, "WS_LL: too many rows a block\n"), 1;
    // The same passes with the first input row (and first residual) as LL words.
    u64* x0ll;
    CK(cudaMalloc(&x0ll, sizeof(u64) * 4 * C));
    std::vector<u64> hx64(4 * C);
    for (int k = 0; k < 4 * C; ++k) {
      unsigned b;
      std::memcpy(&b, &hx[k], sizeof b);
      hx64[k] = (u64(kLLFlag) << 32) | b;
    }
    CK(cudaMemcpy(x0ll, hx64.data(), sizeof(u64) * 4 * C, cudaMemcpyHostToDevice));
    std::vector<Pass> hpl = hp;
    for (Pass& q : hpl) {
      if (q.x == x0) q.x = reinterpret_cast<const float*>(x0ll);
      if (q.res == x0) q.res = reinterpret_cast<const float*>(x0ll);
    }
    Pass* dpl;
    CK(cudaMalloc(&dpl, sizeof(Pass) * hpl.size()));
    CK(cudaMemcpy(dpl, hpl.data(), sizeof(Pass) * hpl.size(), cudaMemcpyHostToDevice));
    std::vector<float> raw(n_act);
    auto ll_bits = [&]() {  // the LL words' floats, where the barrier runs write theirs
      CK(cudaMemcpy(raw.data(), act, sizeof(float) * n_act, cudaMemcpyDeviceToHost));
      std::fill(got.begin(), got.end(), 0.0f);
      for (size_t b = 0; b < n_act; b += act_stride)
        for (int k = 0; k < act_stride / 2; ++k) got[b + k] = raw[b + 2 * k];
      return check_bits();
    };
    const size_t act_bytes = sizeof(float) * n_act;
    auto pair = [&](const char* ring, int slots, auto run_bar, auto run_ll) {
      for (int cap : caps) {
        if (cap >= slots) continue;
        CK(cudaMemset(act, 0, act_bytes));
        float ms = run_bar(0, cap);
        CK(cudaMemcpy(got.data(), act, act_bytes, cudaMemcpyDeviceToHost));
        std::printf("ll %s, cap %d, grid barriers, whole step: %.3f ms (%.2fx the bound)%s\n", ring, cap, ms,
                    ms / bound_ms, check_bits());
        for (const unsigned nap : naps) {
          CK(cudaMemcpyToSymbol(c_ll_nap, &nap, sizeof nap));
          ms = run_ll(0, cap, nullptr, reps);
          std::printf("ll %s, cap %d, LL words, polls %u ns apart, whole step: %.3f ms (%.2fx the bound)%s\n", ring,
                      cap, nap, ms, ms / bound_ms, ll_bits());
          ms = run_ll(1, cap, nullptr, reps);
          std::printf("ll %s, cap %d, LL words, polls %u ns apart, no multiply: %.3f ms (%.2fx the bound)\n", ring, cap,
                      nap, ms, ms / bound_ms);
        }
      }
    };
    pair("16 KB x 12", 12,
         [&](int sk, int cap) { return run_ws<16, 12, 16, 0, kSplit>(dp, n_passes, bar, sk, sms, reps, e0, e1, 0, nullptr, cap); },
         [&](int sk, int cap, unsigned long long* t, int r) {
           return run_ws<16, 12, 16, 0, kSplit, true>(dpl, n_passes, bar, sk, sms, r, e0, e1, 0, t, cap, act, act_bytes);
         });
    pair("48 KB x 4", 4,
         [&](int sk, int cap) { return run_ws<48, 4, 16, 0, kSplit>(dp, n_passes, bar, sk, sms, reps, e0, e1, 0, nullptr, cap); },
         [&](int sk, int cap, unsigned long long* t, int r) {
           return run_ws<48, 4, 16, 0, kSplit, true>(dpl, n_passes, bar, sk, sms, r, e0, e1, 0, t, cap, act, act_bytes);
         });
    if (*dir) {
      unsigned long long* trace;
      CK(cudaMalloc(&trace, sizeof(unsigned long long) * sms * kTraceStride));
      CK(cudaMemset(trace, 0, sizeof(unsigned long long) * sms * kTraceStride));
      const unsigned nap = unsigned(naps.front());
      CK(cudaMemcpyToSymbol(c_ll_nap, &nap, sizeof nap));
      const float ms = run_ws<16, 12, 16, 0, kSplit, true>(dpl, n_passes, bar, 0, sms, 1, e0, e1, 0, trace, caps.back(),
                                                           act, act_bytes);
      std::vector<unsigned long long> h(size_t(sms) * kTraceStride);
      CK(cudaMemcpy(h.data(), trace, sizeof(unsigned long long) * h.size(), cudaMemcpyDeviceToHost));
      char path[512];
      std::snprintf(path, sizeof path, "%s/trace_ll_16_skip0_cap%d.bin", dir, caps.back());
      if (FILE* f = std::fopen(path, "wb")) {
        std::fwrite(h.data(), sizeof(unsigned long long), h.size(), f);
        std::fclose(f);
        std::printf("ll 16 KB x 12, cap %d, traced: %.3f ms -> %s\n", caps.back(), ms, path);
      }
    }
    return 0;
  }
  if (const char* dir = std::getenv("WS_DIAG")) {
    // Does the ring carry the stream across the barriers? Skip 1 (no multiply) and 3 (neither
    // multiply nor barriers) with a longer wait at every pass boundary, then one traced launch of
    // each skip, its times written to DIR/trace_<slot KB>_skip<k>_cap<n>.bin (uint64, blocks x
    // kTraceStride) for tools/stream_trace.py.
    unsigned long long* trace;
    CK(cudaMalloc(&trace, sizeof(unsigned long long) * sms * kTraceStride));
    const bool delays = !std::getenv("WS_NO_DELAYS");
    auto diag = [&](int slot_kb, int slots, auto run) {  // run: run_ws with that ring
      for (int cap : caps)
        for (int sk : {3, 1, 0})
          for (unsigned d : {0u, 500u, 1000u, 2000u, 4000u, 8000u}) {
            if (cap >= slots || (d > 0 && (!delays || sk == 0))) continue;
            if (sk == 0) CK(cudaMemset(act, 0, sizeof(float) * n_act));
            const float ms = run(sk, d, nullptr, reps, cap);
            const char* bits = "";
            if (sk == 0) {
              CK(cudaMemcpy(got.data(), act, sizeof(float) * n_act, cudaMemcpyDeviceToHost));
              bits = check_bits();
            }
            std::printf("diag %d KB slots, cap %d, skip %d, %u ns more per pass boundary: %.3f ms (%.2fx the bound)%s\n",
                        slot_kb, cap, sk, d, ms, ms / bound_ms, bits);
          }
      const int cap = caps.back();
      for (int sk : {3, 1, 0}) {
        CK(cudaMemset(trace, 0, sizeof(unsigned long long) * sms * kTraceStride));
        const float ms = run(sk, 0u, trace, 1, cap);
        std::vector<unsigned long long> h(size_t(sms) * kTraceStride);
        CK(cudaMemcpy(h.data(), trace, sizeof(unsigned long long) * h.size(), cudaMemcpyDeviceToHost));
        char path[512];
        std::snprintf(path, sizeof path, "%s/trace_%d_skip%d_cap%d.bin", dir, slot_kb, sk, cap);
        FILE* f = std::fopen(path, "wb");
        if (!f) return std::perror(path), void();
        std::fwrite(h.data(), sizeof(unsigned long long), h.size(), f);
        std::fclose(f);
        std::printf("diag %d KB slots, cap %d, skip %d, traced: %.3f ms -> %s\n", slot_kb, cap, sk, ms, path);
      }
    };
    if (!std::getenv("WS_NO48"))
      diag(48, 4, [&](int sk, unsigned d, unsigned long long* t, int r, int cap) {
        return run_ws<48, 4, 16, 0, kSplit>(dp, n_passes, bar, sk, sms, r, e0, e1, d, t, cap);
      });
    diag(16, 12, [&](int sk, unsigned d, unsigned long long* t, int r, int cap) {
      return run_ws<16, 12, 16, 0, kSplit>(dp, n_passes, bar, sk, sms, r, e0, e1, d, t, cap);
    });
    std::printf("trace: %d blocks, stride %d, arrive %d, release %d, land %d; passes (OC, IC):", sms, kTraceStride,
                kArrive, kRelease, kLand);
    for (int l = 0; l < 4; ++l) std::printf(" (%d, %d)%s", shapes[l][0], shapes[l][1], full && l == 0 ? " (0, 4800)" : "");
    std::printf(" x %d layers%s\n", layers, full ? " (whole layers: stream_trace.py --full)" : "");
    return 0;
  }
  ws("4 x 48 KB, 16 consumer warps", false, [&](int sk) { return run_ws<48, 4, 16, 0>(dp, n_passes, bar, sk, sms, reps, e0, e1); });
  ws("4 x 48 KB, 16 consumer warps, input split", false, [&](int sk) { return run_ws<48, 4, 16, 0, kSplit>(dp, n_passes, bar, sk, sms, reps, e0, e1); });
  ws("4 x 48 KB, 16 consumer warps, loads swapped", false, [&](int sk) { return run_ws<48, 4, 16, 0, kSwapped>(dp, n_passes, bar, sk, sms, reps, e0, e1); });
  ws("6 x 32 KB, 16 consumer warps, input split", false, [&](int sk) { return run_ws<32, 6, 16, 0, kSplit>(dp, n_passes, bar, sk, sms, reps, e0, e1); });
  ws("12 x 16 KB, 16 consumer warps, input split", false, [&](int sk) { return run_ws<16, 12, 16, 0, kSplit>(dp, n_passes, bar, sk, sms, reps, e0, e1); });
  ws("4 x 48 KB, 8 consumer warps, input split", false, [&](int sk) { return run_ws<48, 4, 8, 0, kSplit>(dp, n_passes, bar, sk, sms, reps, e0, e1); });
  ws("4 x 48 KB, 16 consumer warps", true, [&](int sk) { return run_dyn<48, 4, 16, false>(dp, n_passes, ctr, sk, sms, reps, e0, e1); });
  ws("4 x 48 KB, 16 consumer warps, taken ahead", true, [&](int sk) { return run_dyn<48, 4, 16, true>(dp, n_passes, ctr, sk, sms, reps, e0, e1); });
  ws("6 x 32 KB, 16 consumer warps, taken ahead", true, [&](int sk) { return run_dyn<32, 6, 16, true>(dp, n_passes, ctr, sk, sms, reps, e0, e1); });
  ws("4 x 48 KB, 16 consumer warps, taken ahead, input split", true, [&](int sk) { return run_dyn<48, 4, 16, true, kSplit>(dp, n_passes, ctr, sk, sms, reps, e0, e1); });
  if (std::getenv("WS_ONLY")) return 0;
  for (auto [cross, tma] : {std::pair{0, 0}, std::pair{1, 0}, std::pair{0, 1}, std::pair{1, 1}}) {
    void* args[] = {&dp, &n_passes, &bar, &cross, &tma, &skip};
    const float best = best_ms(reps, bar, sizeof(unsigned), e0, e1, [&] {
      CK(cudaLaunchCooperativeKernel((void*)stream_kernel, dim3(sms), dim3(kThreads), args, shm));
    });
    std::vector<float> y(C);
    CK(cudaMemcpy(y.data(), hp.back().y, sizeof(float) * C, cudaMemcpyDeviceToHost));
    std::printf("skip %d, %s, cross %d: %d layers, %d passes, %d blocks: %.3f ms (%.2fx the bound, %.0f GB/s); y[0] %g\n",
                skip, tma ? "bulk copies" : "cp.async", cross, layers, n_passes, sms, best, best / bound_ms, bytes / (best * 1e-3) / 1e9, y[0]);
  }
  return 0;
}
