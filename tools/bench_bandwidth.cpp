// Memory-bandwidth benchmark: how close does decode (matmul with B = 1 .. 8) come to the machine's
// copy bandwidth? Prints a STREAM-like copy (GB/s of read + write bytes), then matmul_forward in
// GB/s of weight bytes and GFLOP/s: B = 1 on a cache-resident weight ("hot") and on copies that
// cycle through more memory than the caches hold ("cold"), B = 1, 2, 4, 8 on the lm_head ("big",
// larger than the caches), and a prefill batch; then one layer's attention_forward (GPT-2 124M
// shape) for a 900-token prompt and for 8 samples decoding at position 899. Not a full STREAM
// suite; not Google Benchmark either, because the point is one table of GB/s next to the copy
// figure.
//
// Usage: bench_bandwidth [threads] [--mib 256] [--reps 10] [--prefill-b 256] [--offset 0]
//   threads   OpenMP threads for the copy and mdi::cpu::set_threads (default: all cores)
//   --mib     size of each copy array and of the cold weight pool, MiB (default 256)
//   --reps    repetitions; the best is printed (default 10)
//   --prefill-b  rows of the prefill matmul (default 256)
//   --offset  start every buffer this many floats past a 64-byte boundary (default 0). Rows that
//             are not 32-byte aligned split every other load across cache lines: 4 costs about a
//             third of the prefill GFLOP/s on the Zen 5 dev box, so allocate weights and
//             activations 64-byte aligned (the results' bits do not depend on it).
// Weights benchmarked (OC x IC, torch Linear layout): 768 x 3072 (GPT-2 MLP c_proj),
// 3072 x 768 (c_fc), 50257 x 768 (GPT-2 lm_head). Example: build/bench_bandwidth 2 --reps 20

#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "mdi/cli_checks.h"
#include "mdi/cpu_ops.h"

namespace {

int g_offset = 0;  // floats by which every buffer is moved past a 64-byte boundary (--offset)

// A float buffer whose data starts g_offset floats after a 64-byte boundary.
struct Buf {
  explicit Buf(long count)
      : mem(static_cast<float*>(std::aligned_alloc(64, ((count + g_offset) * 4 + 63) / 64 * 64)),
            &std::free),
        n(count) {
    if (!mem) {
      std::fprintf(stderr, "out of memory allocating %ld floats\n", count);
      std::exit(1);
    }
  }
  float* data() const { return mem.get() + g_offset; }
  long size() const { return n; }
  std::unique_ptr<float, decltype(&std::free)> mem;
  long n;
};

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best time of reps calls of f.
template <class F>
double best_of(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    const double t0 = now();
    f();
    best = std::min(best, now() - t0);
  }
  return best;
}

// Fill in parallel so pages land where the threads that use them run (first touch).
void fill(float* x, long n, int nt, float seed) {
#pragma omp parallel for schedule(static) num_threads(nt)
  for (long i = 0; i < n; i++) x[i] = seed + (float)(i % 1021) * 1e-3f - 0.5f;
}

void bench_copy(long n, int nt, int reps) {
  Buf a(n), b(n);
  fill(a.data(), n, nt, 0.1f);
  fill(b.data(), n, nt, 0.2f);
  float* pa = a.data();
  float* pb = b.data();
  const double t = best_of(reps, [&] {
#pragma omp parallel for schedule(static) num_threads(nt)
    for (long i = 0; i < n; i++) pb[i] = pa[i];
  });
  std::printf("copy        %6.0f MiB x 2     %8.2f GB/s  (read + write, best of %d)\n",
              n * 4.0 / (1 << 20), 2.0 * n * 4 / t / 1e9, reps);
}

// matmul_forward with B rows on (OC, IC) weights; pool_bytes > 0 cycles through enough copies
// of the weight to cover that many bytes, so every call streams its weights from memory.
void bench_matmul(int B, int OC, int IC, long pool_bytes, int nt, int reps) {
  const long wn = (long)OC * IC;
  const int copies = pool_bytes > 0 ? (int)std::max(1L, pool_bytes / (wn * 4)) : 1;
  Buf w(wn * copies), bias(OC), inp((long)B * IC), out((long)B * OC);
  fill(w.data(), w.size(), nt, 0.0f);
  fill(bias.data(), OC, 1, 0.3f);
  fill(inp.data(), inp.size(), 1, 0.4f);
  int c = 0;
  auto call = [&] {
    mdi::cpu::matmul_forward(out.data(), inp.data(), w.data() + (long)c * wn, bias.data(), B, IC,
                             OC);
    c = (c + 1) % copies;
  };
  call();  // warm up (and fault in out)
  // Time a whole sweep over the copies, so each timed call streams a cold weight.
  const int calls = std::max(copies, B == 1 ? 20 : 3);
  const double t = best_of(reps,
                           [&] {
                             for (int i = 0; i < calls; i++) call();
                           }) /
                   calls;
  const char* kind = copies > 1 ? "cold" : (wn * 4 > (32L << 20) ? "big " : "hot ");
  std::printf("matmul B=%-3d %5d x %-5d %s %8.2f GB/s of weights %8.2f GFLOP/s %9.1f us/call\n", B,
              OC, IC, kind, wn * 4.0 / t / 1e9, 2.0 * B * wn / t / 1e9, t * 1e6);
}

// attention_forward of one GPT-2 124M layer (C 768, 12 heads): a prompt of rows rows of one sample
// (the prefill: rows 0 .. rows - 1 at positions 0 .. rows - 1), or `rows` samples of one row each
// at position pos (decode), every sample with its own cache.
void bench_attention(bool prefill, int rows, int pos, int nt, int reps) {
  const int C = 768, NH = 12, T = std::max(rows, pos + 1), caches = prefill ? 1 : rows;
  Buf q((long)rows * C), k((long)caches * T * C), v((long)caches * T * C), out((long)rows * C),
      scratch(mdi::cpu::attention_scratch_floats(T, nt));
  fill(q.data(), q.size(), nt, 0.1f);
  fill(k.data(), k.size(), nt, 0.2f);
  fill(v.data(), v.size(), nt, 0.3f);
  std::vector<const float*> kp(rows), vp(rows);
  std::vector<int> at(rows);
  for (int r = 0; r < rows; r++) {
    kp[r] = k.data() + (prefill ? 0L : (long)r * T * C);
    vp[r] = v.data() + (prefill ? 0L : (long)r * T * C);
    at[r] = prefill ? r : pos;
  }
  const double t = best_of(reps, [&] {
    mdi::cpu::attention_forward(out.data(), q.data(), kp.data(), vp.data(), at.data(), rows, C, NH,
                                T, scratch.data());
  });
  if (prefill)
    std::printf("attention   prefill of %4d rows, one sample          %9.3f ms/layer\n", rows,
                t * 1e3);
  else
    std::printf("attention   decode, %2d samples at position %4d       %9.3f ms/layer\n", rows, pos,
                t * 1e3);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Copy and decode-matmul bandwidth of the CPU kernels"};
  int nt = omp_get_num_procs();
  long mib = 256;
  int reps = 10, prefill_b = 256;
  app.add_option("threads", nt, "OpenMP threads (default: all cores)")->transform(mdi::cli::kPositive);
  app.add_option("--mib", mib, "MiB per copy array and of the cold weight pool")
      ->transform(mdi::cli::kPositive);
  app.add_option("--reps", reps, "repetitions (best is printed)")->transform(mdi::cli::kPositive);
  app.add_option("--prefill-b", prefill_b, "rows of the prefill matmul")
      ->transform(mdi::cli::kPositive);
  app.add_option("--offset", g_offset, "floats past a 64-byte boundary for every buffer")
      ->transform(mdi::cli::decimal_range(0, 15));
  CLI11_PARSE(app, argc, argv);

  mdi::cpu::set_threads(nt);
  std::printf("threads %d, arrays %ld MiB, buffers %d floats past 64-byte alignment\n", nt, mib,
              g_offset);
  bench_copy(mib << 18, nt, reps);  // mib MiB of floats
  const long pool = mib << 20;
  bench_matmul(1, 768, 3072, 0, nt, reps);
  bench_matmul(1, 768, 3072, pool, nt, reps);
  bench_matmul(1, 3072, 768, pool, nt, reps);
  for (int B : {1, 2, 4, 8}) bench_matmul(B, 50257, 768, 0, nt, reps);
  bench_matmul(prefill_b, 3072, 768, 0, nt, std::min(reps, 5));
  bench_matmul(prefill_b, 768, 3072, 0, nt, std::min(reps, 5));
  bench_attention(true, 900, 0, nt, std::min(reps, 5));
  bench_attention(false, 8, 899, nt, reps);
  return 0;
}
