// CUDA backend against the CPU reference: each op on random inputs (normalised error per dtype),
// the whole model's logits on the fixtures, layers split over two GPU stages, and 50 steps of
// greedy decoding of three batched samples (tokens identical in fp32). Every test skips with a
// visible message when no GPU is visible (CI); built only when CMake found a CUDA compiler.
#include <gtest/gtest.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <tuple>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cuda/check.h"
#include "cuda/ops.h"
#include "mdi/backend.h"
#include "mdi/cpu_ops.h"
#include "mdi/cuda_backend.h"
#include "mdi/sampler.h"
#include "mdi/weights.h"

namespace {

using mdi::DType;

const std::string kFixtures = MDI_FIXTURES;

std::string no_gpu_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  cudaGetLastError();
  if (e != cudaSuccess) return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
  return "cudaGetDeviceCount found 0 devices";
}

#define MDI_REQUIRE_GPU()                                                               \
  do {                                                                                  \
    if (!mdi::cuda_available()) GTEST_SKIP() << "no CUDA device: " << no_gpu_reason(); \
  } while (0)

// Skips bf16 on GPUs below compute capability 8.0 (the backend refuses it there).
#define MDI_REQUIRE_DTYPE(dt)                                                           \
  do {                                                                                  \
    cudaDeviceProp p{};                                                                 \
    MDI_CUDA_CHECK(cudaGetDeviceProperties(&p, 0));                                     \
    if ((dt) == DType::kBF16 && p.major < 8)                                            \
      GTEST_SKIP() << "bf16 needs compute capability 8.0, device 0 is " << p.major << "." << p.minor; \
  } while (0)

// Normalised error ||got - want||_2 / ||want||_2 over all elements.
double norm_err(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += double(got[i] - want[i]) * (got[i] - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

double max_abs(const std::vector<float>& got, const std::vector<float>& want) {
  double m = 0;
  for (size_t i = 0; i < want.size(); ++i) m = std::max(m, double(std::fabs(got[i] - want[i])));
  return m;
}

// Per-op normalised error thresholds: fp32 is exact up to summation order; the 16-bit types
// round inputs and outputs to 11 (fp16) or 8 (bf16) significant bits.
double op_tol(DType dt) {
  switch (dt) {
    case DType::kF16: return 2e-3;
    case DType::kBF16: return 1.6e-2;
    case DType::kF32: break;
  }
  return 1e-5;
}

std::vector<float> randn(size_t n, std::mt19937& g, float mean = 0.0f, float sd = 1.0f) {
  std::normal_distribution<float> d(mean, sd);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

// A device allocation, freed on scope exit.
struct DevBuf {
  void* p = nullptr;
  explicit DevBuf(size_t bytes) { MDI_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 1))); }
  DevBuf(DevBuf&& o) noexcept : p(o.p) { o.p = nullptr; }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  float* f() const { return static_cast<float*>(p); }
  int* i() const { return static_cast<int*>(p); }
};

// Host fp32 -> device, stored as dt (converted on the device by the backend's own kernel).
DevBuf to_dev(const std::vector<float>& h, DType dt = DType::kF32) {
  DevBuf d(h.size() * mdi::dtype_size(dt));
  if (dt == DType::kF32) {
    MDI_CUDA_CHECK(cudaMemcpy(d.p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
    return d;
  }
  DevBuf tmp = to_dev(h);
  mdi::cuda::convert_forward(d.p, tmp.f(), long(h.size()), dt, nullptr);
  MDI_CUDA_CHECK(cudaDeviceSynchronize());
  return d;
}

DevBuf to_dev(const std::vector<int>& h) {
  DevBuf d(h.size() * sizeof(int));
  MDI_CUDA_CHECK(cudaMemcpy(d.p, h.data(), h.size() * sizeof(int), cudaMemcpyHostToDevice));
  return d;
}

// n elements of dt on the device -> host fp32.
std::vector<float> from_dev(const void* d, size_t n, DType dt = DType::kF32) {
  std::vector<float> h(n);
  if (dt == DType::kF32) {
    MDI_CUDA_CHECK(cudaDeviceSynchronize());
    MDI_CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
  }
  DevBuf tmp(n * sizeof(float));
  mdi::cuda::to_float_forward(tmp.f(), d, long(n), dt, nullptr);
  MDI_CUDA_CHECK(cudaDeviceSynchronize());
  MDI_CUDA_CHECK(cudaMemcpy(h.data(), tmp.p, n * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

void report(const char* what, DType dt, double err, double tol) {
  std::printf("[ figure ] cuda %s %s: normalised error vs CPU %.3g (threshold %.3g)\n", what,
              mdi::dtype_name(dt), err, tol);
}

// ---------------------------------------------------------------------------------------------
// Per op, CUDA vs CPU.

class CudaOps : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    MDI_REQUIRE_GPU();
    MDI_REQUIRE_DTYPE(GetParam());
    MDI_CUDA_CHECK(cudaSetDevice(0));
    mdi::cpu::set_threads(1);
  }
  std::mt19937 g{42};
};

TEST_P(CudaOps, LayerNorm) {
  const DType dt = GetParam();
  for (bool with_bias : {true, false}) {
    const int B = 7, C = 200;
    const std::vector<float> x = randn(size_t(B) * C, g, 0.5f, 2.0f), w = randn(C, g, 1.0f, 0.1f),
                             b = randn(C, g, 0.0f, 0.1f);
    std::vector<float> want(x.size());
    mdi::cpu::layernorm_forward(want.data(), x.data(), w.data(), with_bias ? b.data() : nullptr, B, C, 1e-5f);
    DevBuf dx = to_dev(x), dw = to_dev(w), db = to_dev(b), out(x.size() * mdi::dtype_size(dt));
    mdi::cuda::layernorm_forward(out.p, dx.f(), dw.f(), with_bias ? db.f() : nullptr, B, C, 1e-5f, dt, nullptr);
    const double err = norm_err(from_dev(out.p, x.size(), dt), want);
    report(with_bias ? "layernorm" : "layernorm (no bias)", dt, err, op_tol(dt));
    EXPECT_LE(err, op_tol(dt));
  }
}

// Both paths (the fused matrix-vector kernel up to kMatvecRows rows, cuBLAS beyond) and every
// epilogue: out = y, gelu(y), x + y with y = inp . W^T + bias. IC 18432 is wider than a
// LayerNorm row the fused kernel could hold in shared memory (3 x IC floats > 200 KiB): without
// the LayerNorm it still takes the matrix-vector kernel.
TEST_P(CudaOps, Matmul) {
  using mdi::cuda::Epilogue;
  const DType dt = GetParam();
  cublasHandle_t h;
  MDI_CUBLAS_CHECK(cublasCreate(&h));
  EXPECT_TRUE(mdi::cuda::matvec_ok(18432, false));
  EXPECT_FALSE(mdi::cuda::matvec_ok(18432, true));
  for (const auto& [B, IC, OC] : std::vector<std::array<int, 3>>{
           {1, 96, 136}, {3, 200, 600}, {4, 640, 160}, {5, 96, 136}, {33, 200, 600}, {2, 100, 30}, {3, 96, 50},
           {2, 18432, 24}}) {
    const std::vector<float> x = randn(size_t(B) * IC, g), w = randn(size_t(OC) * IC, g, 0.0f, 0.1f),
                             b = randn(OC, g, 0.0f, 0.5f), x0 = randn(size_t(B) * OC, g);
    std::vector<float> y(size_t(B) * OC);
    mdi::cpu::matmul_forward(y.data(), x.data(), w.data(), b.data(), B, IC, OC);
    DevBuf dx = to_dev(x, dt), dw = to_dev(w, dt), db = to_dev(b), scratch(y.size() * sizeof(float));
    for (Epilogue epi : {Epilogue::kStore, Epilogue::kGelu, Epilogue::kResidual}) {
      for (bool with_bias : {true, false}) {
        if (!with_bias && epi != Epilogue::kStore) continue;
        std::vector<float> want = y;
        if (!with_bias) mdi::cpu::matmul_forward(want.data(), x.data(), w.data(), nullptr, B, IC, OC);
        if (epi == Epilogue::kGelu) mdi::cpu::gelu_forward(want.data(), long(want.size()));
        if (epi == Epilogue::kResidual)
          for (size_t i = 0; i < want.size(); ++i) want[i] += x0[i];
        const DType out_dt = epi == Epilogue::kGelu ? dt : DType::kF32;
        for (bool tc : {false, true}) {
          if (tc && !mdi::cuda::tensor_cores_ok(dt, IC, false)) continue;
          DevBuf out = to_dev(x0);  // (B, OC) fp32: the residual stream for kResidual
          DevBuf out16(y.size() * mdi::dtype_size(dt));
          void* o = epi == Epilogue::kGelu ? out16.p : out.p;
          mdi::cuda::matmul_forward(o, dx.p, dw.p, with_bias ? db.f() : nullptr, B, IC, OC, epi,
                                    scratch.f(), dt, tc, h, nullptr);
          const double err = norm_err(from_dev(o, y.size(), out_dt), want);
          const char* names[] = {"store", "gelu", "residual"};
          report(("matmul B=" + std::to_string(B) + " IC=" + std::to_string(IC) + " " + names[int(epi)] +
                  (with_bias ? "" : " (no bias)") + (tc ? " tensor cores" : "")).c_str(), dt, err, op_tol(dt));
          EXPECT_LE(err, op_tol(dt)) << "B " << B << " IC " << IC << " OC " << OC << " epilogue " << names[int(epi)]
                                     << " tensor cores " << tc;
        }
      }
    }
  }
  MDI_CUBLAS_CHECK(cublasDestroy(h));
}

TEST_P(CudaOps, BiasGelu) {
  const DType dt = GetParam();
  const int B = 9, OC = 260;
  const std::vector<float> x = randn(size_t(B) * OC, g, 0.0f, 2.0f), b = randn(OC, g, 0.0f, 0.5f);
  std::vector<float> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) want[i] = x[i] + b[i % OC];
  mdi::cpu::gelu_forward(want.data(), long(want.size()));
  DevBuf dx = to_dev(x), db = to_dev(b), out(x.size() * mdi::dtype_size(dt));
  mdi::cuda::gelu_forward(out.p, dx.f(), db.f(), B, OC, dt, nullptr);
  const double err = norm_err(from_dev(out.p, x.size(), dt), want);
  report("bias+gelu", dt, err, op_tol(dt));
  EXPECT_LE(err, op_tol(dt));
}

TEST_P(CudaOps, Embedding) {
  const DType dt = GetParam();
  const int V = 50, T = 20, C = 72;
  const std::vector<float> wte = randn(size_t(V) * C, g), wpe = randn(size_t(T) * C, g);
  const std::vector<int> tok = {3, 49, 0, 7, 7, 21}, pos = {0, 1, 2, 19, 5, 0};
  const int R = int(tok.size());
  std::vector<float> want(size_t(R) * C);
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) want[size_t(r) * C + c] = wte[size_t(tok[r]) * C + c] + wpe[size_t(pos[r]) * C + c];
  DevBuf dte = to_dev(wte, dt), dpe = to_dev(wpe, dt), dtok = to_dev(tok), dpos = to_dev(pos),
         out(want.size() * sizeof(float));
  mdi::cuda::embedding_forward(out.f(), dtok.i(), dpos.i(), dte.p, dpe.p, R, C, dt, nullptr);
  const double err = norm_err(from_dev(out.p, want.size()), want);
  report("embedding", dt, err, op_tol(dt));
  EXPECT_LE(err, op_tol(dt));
}

// The QKV split writes q (fp32, + bias) and the rows' keys / values at their (sample, position)
// in the cache, and nothing else.
TEST_P(CudaOps, QkvScatter) {
  const DType dt = GetParam();
  const int S = 3, T = 10, C = 40;
  const std::vector<int> rs = {0, 2, 2, 1}, rp = {0, 4, 5, 9};
  const int B = int(rs.size());
  const std::vector<float> qkv = randn(size_t(B) * 3 * C, g), bias = randn(3 * C, g);
  std::vector<float> q(size_t(B) * C), k(size_t(S) * T * C, 0.0f), v(k.size(), 0.0f);
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < C; ++c) {
      const float* row = qkv.data() + size_t(b) * 3 * C;
      q[size_t(b) * C + c] = row[c] + bias[c];
      k[(size_t(rs[b]) * T + rp[b]) * C + c] = row[C + c] + bias[C + c];
      v[(size_t(rs[b]) * T + rp[b]) * C + c] = row[2 * C + c] + bias[2 * C + c];
    }
  DevBuf dqkv = to_dev(qkv), db = to_dev(bias), drs = to_dev(rs), drp = to_dev(rp),
         dq(q.size() * sizeof(float)), dk = to_dev(std::vector<float>(k.size(), 0.0f), dt),
         dv = to_dev(std::vector<float>(v.size(), 0.0f), dt);
  mdi::cuda::qkv_scatter_forward(dq.f(), dk.p, dv.p, dqkv.f(), db.f(), drs.i(), drp.i(), B, C, T, dt, nullptr);
  EXPECT_EQ(0.0, max_abs(from_dev(dq.p, q.size()), q));
  const double err = std::max(norm_err(from_dev(dk.p, k.size(), dt), k), norm_err(from_dev(dv.p, v.size(), dt), v));
  report("qkv scatter", dt, err, op_tol(dt));
  EXPECT_LE(err, op_tol(dt));
}

// Rows of several samples at various positions attend over their own sample's cache.
TEST_P(CudaOps, Attention) {
  const DType dt = GetParam();
  for (const auto& [C, NH, T] : std::vector<std::array<int, 3>>{{64, 4, 20}, {48, 2, 300}, {48, 4, 33}, {512, 2, 40}, {128, 2, 1024}, {1600, 25, 70}}) {
    const int S = 3;
    const std::vector<int> rs = {0, 0, 1, 2, 2, 1, 0}, rp = {0, 5, T - 1, 7, 8, 3, T - 1};
    const int B = int(rs.size());
    const std::vector<float> q = randn(size_t(B) * C, g), k = randn(size_t(S) * T * C, g),
                             v = randn(size_t(S) * T * C, g);
    std::vector<float> want(size_t(B) * C),
        scratch(mdi::cpu::attention_scratch_floats(T, mdi::cpu::threads()));
    std::vector<const float*> kp(B), vp(B);
    for (int b = 0; b < B; ++b) {
      kp[b] = k.data() + size_t(rs[b]) * T * C;
      vp[b] = v.data() + size_t(rs[b]) * T * C;
    }
    mdi::cpu::attention_forward(want.data(), q.data(), kp.data(), vp.data(), rp.data(), B, C, NH, T,
                                scratch.data());
    DevBuf dq = to_dev(q), dk = to_dev(k, dt), dv = to_dev(v, dt), drs = to_dev(rs), drp = to_dev(rp),
           out(want.size() * mdi::dtype_size(dt));
    mdi::cuda::attention_forward(out.p, dq.f(), dk.p, dv.p, drs.i(), drp.i(), B, C, NH, T, dt, nullptr);
    const double err = norm_err(from_dev(out.p, want.size(), dt), want);
    report(("attention T=" + std::to_string(T)).c_str(), dt, err, op_tol(dt));
    EXPECT_LE(err, op_tol(dt)) << "C " << C << " NH " << NH << " T " << T;
  }
}

// The decode kernel with the LayerNorm fused in front, every epilogue (the QKV one writes q and
// the cache), against LayerNorm + matmul on the CPU; and each row's result bit-identical however
// the rows are batched (all at once, one by one, in chunks of several launches).
TEST_P(CudaOps, MatvecLayerNorm) {
  using mdi::cuda::Epilogue;
  const DType dt = GetParam();
  mdi::cuda::configure_kernels();
  for (const auto& [B, C] : std::vector<std::array<int, 2>>{{1, 64}, {3, 200}, {8, 96}, {11, 1600}}) {
    const int OC = 3 * C, S = 4, T = 6;
    const std::vector<float> x = randn(size_t(B) * C, g, 0.3f, 1.5f), lw = randn(C, g, 1.0f, 0.1f),
                             lb = randn(C, g, 0.0f, 0.1f), w = randn(size_t(OC) * C, g, 0.0f, 0.1f),
                             bias = randn(OC, g, 0.0f, 0.5f), x0 = randn(size_t(B) * OC, g);
    std::vector<float> ln(x.size()), y(size_t(B) * OC);
    mdi::cpu::layernorm_forward(ln.data(), x.data(), lw.data(), lb.data(), B, C, 1e-5f);
    mdi::cpu::matmul_forward(y.data(), ln.data(), w.data(), bias.data(), B, C, OC);
    std::vector<int> rs(B), rp(B);
    for (int b = 0; b < B; ++b) rs[b] = b % S, rp[b] = (b / S) % T;  // distinct (sample, pos)
    DevBuf dx = to_dev(x), dlw = to_dev(lw), dlb = to_dev(lb), dw = to_dev(w, dt), dbias = to_dev(bias),
           drs = to_dev(rs), drp = to_dev(rp);
    for (bool tc : {false, true}) {
    if (tc && !mdi::cuda::tensor_cores_ok(dt, C, true)) continue;
    for (Epilogue epi : {Epilogue::kStore, Epilogue::kGelu, Epilogue::kResidual, Epilogue::kQkv}) {
      const char* names[] = {"store", "gelu", "residual", "qkv"};
      std::vector<float> want = y;
      if (epi == Epilogue::kGelu) mdi::cpu::gelu_forward(want.data(), long(want.size()));
      if (epi == Epilogue::kResidual)
        for (size_t i = 0; i < want.size(); ++i) want[i] += x0[i];
      // Three batchings of the same rows: all in one call, one call per row, and 1 + the rest.
      std::vector<std::vector<float>> got;
      for (int batching = 0; batching < 3; ++batching) {
        DevBuf out = epi == Epilogue::kGelu ? DevBuf(y.size() * mdi::dtype_size(dt)) : to_dev(x0);
        DevBuf q(size_t(B) * C * sizeof(float)), kc = to_dev(std::vector<float>(size_t(S) * T * C, 0.0f), dt),
            vc = to_dev(std::vector<float>(size_t(S) * T * C, 0.0f), dt);
        std::vector<std::array<int, 2>> parts;
        if (batching == 0) parts = {{0, B}};
        if (batching == 1) for (int b = 0; b < B; ++b) parts.push_back({b, 1});
        if (batching == 2) parts = {{0, 1}, {1, B - 1}};
        for (const auto& [r0, n] : parts) {
          if (n == 0) continue;
          const mdi::cuda::QkvOut qkv{q.f() + size_t(r0) * C, kc.p, vc.p, drs.i() + r0, drp.i() + r0, T};
          const size_t out_row = size_t(OC) * (epi == Epilogue::kGelu ? mdi::dtype_size(dt) : sizeof(float));
          mdi::cuda::matvec_forward(static_cast<char*>(out.p) + r0 * out_row, dx.f() + size_t(r0) * C, dlw.f(),
                                    dlb.f(), 1e-5f, dw.p, dbias.f(), n, C, OC, epi, &qkv, dt, tc, nullptr);
        }
        std::vector<float> res;
        if (epi == Epilogue::kQkv) {  // gather q, k, v back into (B, 3C) rows
          const std::vector<float> hq = from_dev(q.p, size_t(B) * C), hk = from_dev(kc.p, size_t(S) * T * C, dt),
                                   hv = from_dev(vc.p, size_t(S) * T * C, dt);
          res.resize(y.size());
          for (int b = 0; b < B; ++b)
            for (int c = 0; c < C; ++c) {
              const size_t at = (size_t(rs[b]) * T + rp[b]) * C + c;
              res[size_t(b) * OC + c] = hq[size_t(b) * C + c];
              res[size_t(b) * OC + C + c] = hk[at];
              res[size_t(b) * OC + 2 * C + c] = hv[at];
            }
        } else {
          res = from_dev(out.p, y.size(), epi == Epilogue::kGelu ? dt : DType::kF32);
        }
        got.push_back(res);
      }
      // q stays fp32; k and v are stored in dt: the 16-bit error bound covers the whole row.
      const double err = norm_err(got[0], want);
      const std::string what = "layernorm+matvec B=" + std::to_string(B) + " C=" + std::to_string(C) + " " +
                               names[int(epi)] + (tc ? " tensor cores" : "");
      report(what.c_str(), dt, err, op_tol(dt));
      EXPECT_LE(err, op_tol(dt)) << what;
      EXPECT_EQ(got[0], got[1]) << "one call vs one row per call: " << what;
      EXPECT_EQ(got[0], got[2]) << "one call vs 1 + rest: " << what;
    }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaOps,
                         ::testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           return std::string(mdi::dtype_name(i.param));
                         });

TEST(CudaOpsF32, ResidualIsExact) {
  MDI_REQUIRE_GPU();
  std::mt19937 g(7);
  const int B = 5, C = 130;
  const std::vector<float> x = randn(size_t(B) * C, g), y = randn(x.size(), g), b = randn(C, g);
  std::vector<float> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) want[i] = x[i] + (y[i] + b[i % C]);
  DevBuf dx = to_dev(x), dy = to_dev(y), db = to_dev(b);
  mdi::cuda::residual_forward(dx.f(), dy.f(), db.f(), B, C, nullptr);
  EXPECT_EQ(0.0, max_abs(from_dev(dx.p, x.size()), want));
}

// The GPU selection is exact: the same ids and logit bits as mdi::select_top, on rows with ties,
// signed zeros, infinities and NaNs (one row all NaN), for k from 1 (greedy: a kernel of its
// own) to V, rows of a padded stride.
TEST(CudaOpsF32, TopIsSelectTop) {
  MDI_REQUIRE_GPU();
  std::mt19937 g(17);
  const int B = 6, V = 50257, stride = 50304;
  std::vector<float> l = randn(size_t(B) * stride, g, 0.0f, 3.0f);
  for (int i = 0; i < stride; ++i) {
    l[size_t(1) * stride + i] = float(int(l[size_t(1) * stride + i]));  // many ties
    l[size_t(2) * stride + i] = 0.5f;                                    // all equal
    float& x = l[size_t(3) * stride + i];
    if (i % 7 == 0) x = i % 14 ? NAN : (i % 28 ? -0.0f : 0.0f);
    if (i % 101 == 0) x = i % 202 ? INFINITY : -INFINITY;
    l[size_t(4) * stride + i] = i % 3 ? NAN : l[size_t(4) * stride + i];  // mostly NaN
    l[size_t(5) * stride + i] = NAN;                                     // all NaN
  }
  l[size_t(0) * stride + V] = 1e30f;  // in the padding: never a candidate
  DevBuf dl = to_dev(l);
  for (int k : {1, 2, 40, 200, 1000, 20000, V}) {
    DevBuf di(size_t(B) * k * sizeof(int)), dv(size_t(B) * k * sizeof(float));
    mdi::cuda::top_forward(static_cast<int*>(di.p), dv.f(), dl.f(), B, stride, V, k, nullptr);
    std::vector<int> ids(size_t(B) * k);
    MDI_CUDA_CHECK(cudaMemcpy(ids.data(), di.p, ids.size() * sizeof(int), cudaMemcpyDeviceToHost));
    const std::vector<float> vals = from_dev(dv.p, ids.size());
    for (int b = 0; b < B; ++b) {
      std::vector<int> want_ids(k);
      std::vector<float> want_vals(k);
      mdi::select_top(l.data() + size_t(b) * stride, V, k, want_ids.data(), want_vals.data());
      ASSERT_TRUE(std::equal(want_ids.begin(), want_ids.end(), ids.begin() + size_t(b) * k)) << "row " << b << " k " << k;
      ASSERT_EQ(0, std::memcmp(want_vals.data(), vals.data() + size_t(b) * k, k * sizeof(float)))
          << "row " << b << " k " << k;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Whole model, CUDA vs CPU.

// Logits at every position of a prefill of `tokens` through the stages (the first has the head).
std::vector<float> prefill_logits(const std::vector<mdi::Backend*>& stages, const mdi::Config& cfg,
                                  const std::vector<int>& tokens) {
  const int T = int(tokens.size()), C = cfg.n_embd, V = cfg.vocab_size;
  std::vector<float> x(size_t(T) * C), out(size_t(T) * V);
  const mdi::BatchItem all{0, 0, T};
  stages[0]->embed(x.data(), tokens.data(), &all, 1);
  for (mdi::Backend* s : stages) s->forward(x.data(), &all, 1);
  std::vector<mdi::BatchItem> rows;  // one item per row: logits of every position
  for (int p = 0; p < T; ++p) rows.push_back({0, p, 1});
  stages[0]->logits(out.data(), x.data(), rows.data(), T);
  return out;
}

std::vector<int> fixture_tokens(const mdi::Config& cfg) {
  std::vector<int> t(cfg.block_size);
  for (int i = 0; i < cfg.block_size; ++i) t[i] = (i * 7 + 3) % cfg.vocab_size;
  return t;
}

// Model-level thresholds: fp32 max abs <= 1e-3; 16-bit normalised error <= 2e-2.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, DType dt,
                  const std::string& what) {
  const double ma = max_abs(got, want), ne = norm_err(got, want);
  std::printf("[ figure ] cuda %s %s: logits vs CPU max abs %.3g, normalised %.3g\n", what.c_str(),
              mdi::dtype_name(dt), ma, ne);
  if (dt == DType::kF32)
    EXPECT_LE(ma, 1e-3) << what;
  else
    EXPECT_LE(ne, 2e-2) << what;
}

using ModelParam = std::tuple<const char*, DType>;
class CudaModel : public ::testing::TestWithParam<ModelParam> {};

TEST_P(CudaModel, LogitsMatchCpu) {
  MDI_REQUIRE_GPU();
  const auto [name, dt] = GetParam();
  MDI_REQUIRE_DTYPE(dt);
  const std::string path = kFixtures + "/" + name + ".h5";
  const mdi::Config cfg = mdi::read_config(path);
  const mdi::Weights w = mdi::load_weights(path, cfg, 0, cfg.n_layer, true);
  const mdi::BackendSpec spec{cfg.block_size, 1, 1};
  auto cpu = mdi::make_cpu_backend(cfg, w, spec);
  auto gpu = mdi::make_cuda_backend(cfg, w, spec, 0, dt);
  std::printf("[ info ] %s, workspace %zu bytes\n", gpu->name().c_str(), gpu->workspace_bytes());
  const std::vector<int> tokens = fixture_tokens(cfg);
  const std::vector<float> want = prefill_logits({cpu.get()}, cfg, tokens);
  expect_close(prefill_logits({gpu.get()}, cfg, tokens), want, dt, std::string(name) + " prefill");
  // A run of 4 samples: the matrix-vector kernels on tensor cores where they apply (16 bits).
  auto gpu4 = mdi::make_cuda_backend(cfg, w, mdi::BackendSpec{cfg.block_size, 4, 1}, 0, dt);
  std::printf("[ info ] %s\n", gpu4->name().c_str());
  expect_close(prefill_logits({gpu4.get()}, cfg, tokens), want, dt, std::string(name) + " prefill, 4-sample run");
}

// Layers split over two GPU backends (as over two ranks) against the whole model on the CPU.
TEST_P(CudaModel, SplitStagesMatchCpu) {
  MDI_REQUIRE_GPU();
  const auto [name, dt] = GetParam();
  MDI_REQUIRE_DTYPE(dt);
  const std::string path = kFixtures + "/" + name + ".h5";
  const mdi::Config cfg = mdi::read_config(path);
  const int mid = cfg.n_layer / 2;
  const mdi::Weights whole = mdi::load_weights(path, cfg, 0, cfg.n_layer, true);
  const mdi::Weights w0 = mdi::load_weights(path, cfg, 0, mid, true);
  const mdi::Weights w1 = mdi::load_weights(path, cfg, mid, cfg.n_layer, false);
  const mdi::BackendSpec spec{cfg.block_size, 1, 1};
  auto cpu = mdi::make_cpu_backend(cfg, whole, spec);
  auto g0 = mdi::make_cuda_backend(cfg, w0, spec, 0, dt);
  auto g1 = mdi::make_cuda_backend(cfg, w1, spec, 0, dt);
  const std::vector<int> tokens = fixture_tokens(cfg);
  expect_close(prefill_logits({g0.get(), g1.get()}, cfg, tokens), prefill_logits({cpu.get()}, cfg, tokens),
               dt, std::string(name) + " split");
}

// How a row is computed must not depend on what else shares its batch (the micro-batches differ
// with the number of ranks): a batch of prefills and decode rows of several samples, run as one
// forward and item by item, gives bit-identical activations and logits.
TEST_P(CudaModel, RowsDoNotDependOnTheBatch) {
  MDI_REQUIRE_GPU();
  const auto [name, dt] = GetParam();
  MDI_REQUIRE_DTYPE(dt);
  const std::string path = kFixtures + "/" + name + ".h5";
  const mdi::Config cfg = mdi::read_config(path);
  const mdi::Weights w = mdi::load_weights(path, cfg, 0, cfg.n_layer, true);
  const int S = 6, C = cfg.n_embd, V = cfg.vocab_size;
  const mdi::BackendSpec spec{S * cfg.block_size, S, 1};
  // Prompts of lengths 5, 1, 9, 3, 2, 7; then decode rows for all six, twice.
  const std::vector<int> len = {5, 1, 9, 3, 2, 7};
  std::vector<float> outs[2];  // per step, per sample: its rows' activations, then its logits
  for (int split = 0; split < 2; ++split) {
    auto gpu = mdi::make_cuda_backend(cfg, w, spec, 0, dt);
    std::vector<float>& all = outs[split];
    for (int step = 0; step < 3; ++step) {
      std::vector<mdi::BatchItem> items;
      std::vector<int> toks;
      for (int s = 0; s < S; ++s) {
        const int rows = step == 0 ? len[s] : 1, pos = step == 0 ? 0 : len[s] + step - 1;
        items.push_back({s, pos, rows});
        for (int r = 0; r < rows; ++r) toks.push_back((s * 11 + (pos + r) * 5 + 1) % V);
      }
      std::vector<std::vector<mdi::BatchItem>> calls;
      if (split == 0) calls = {items};
      else for (const mdi::BatchItem& it : items) calls.push_back({it});
      size_t t0 = 0;
      for (const auto& c : calls) {
        int rows = 0;
        for (const mdi::BatchItem& it : c) rows += it.rows;
        std::vector<float> x(size_t(rows) * C), logits(c.size() * V);
        gpu->embed(x.data(), toks.data() + t0, c.data(), int(c.size()));
        gpu->forward(x.data(), c.data(), int(c.size()));
        gpu->logits(logits.data(), x.data(), c.data(), int(c.size()));
        size_t r = 0;
        for (size_t i = 0; i < c.size(); ++i) {  // item by item, in sample order either way
          all.insert(all.end(), x.begin() + r * C, x.begin() + (r + c[i].rows) * C);
          all.insert(all.end(), logits.begin() + i * V, logits.begin() + (i + 1) * V);
          r += c[i].rows;
        }
        t0 += rows;
      }
    }
  }
  ASSERT_EQ(outs[0].size(), outs[1].size());
  EXPECT_TRUE(outs[0] == outs[1]) << name << " " << mdi::dtype_name(dt) << ": max abs difference "
                                  << max_abs(outs[0], outs[1]);
}

// A CUDA rank's start-up (pipeline.cpp): a float16 file's matrices kept as halves on the host
// (load_weights' keep_halves) and a CudaStart's context and cuBLAS handle, whose GEMMs ran at the
// model's shapes, taken over. The logits are those of fp32 host weights and a backend that
// started alone, bit for bit, in every dtype; and for layers split over two stages.
class CudaStartup : public ::testing::TestWithParam<DType> {};

TEST_P(CudaStartup, HalvesAndAStartGiveTheSameBits) {
  MDI_REQUIRE_GPU();
  const DType dt = GetParam();
  MDI_REQUIRE_DTYPE(dt);
  const std::string path = kFixtures + "/tiny_gpt2_fp16.h5";
  const mdi::Config cfg = mdi::read_config(path);
  const int L = cfg.n_layer, mid = L / 2;
  const mdi::BackendSpec spec{cfg.block_size, 1, 1};
  const std::vector<int> tokens = fixture_tokens(cfg);
  const mdi::Weights w0 = mdi::load_weights(path, cfg, 0, mid, true);
  const mdi::Weights w1 = mdi::load_weights(path, cfg, mid, L, false);
  const mdi::Weights h0 = mdi::load_weights(path, cfg, 0, mid, true, 0, -1, true);
  const mdi::Weights h1 = mdi::load_weights(path, cfg, mid, L, false, 0, -1, true);
  ASSERT_TRUE(h0.matrices_f16 && h1.matrices_f16);
  auto r0 = mdi::make_cuda_backend(cfg, w0, spec, 0, dt);
  auto r1 = mdi::make_cuda_backend(cfg, w1, spec, 0, dt);
  const std::vector<float> want = prefill_logits({r0.get(), r1.get()}, cfg, tokens);
  mdi::CudaStart s0([] { return 0; }, dt, cfg.n_embd, spec.max_rows);
  mdi::CudaStart s1([] { return 0; }, dt, cfg.n_embd, spec.max_rows);
  auto g0 = mdi::make_cuda_backend(cfg, h0, spec, 0, dt, &s0);
  auto g1 = mdi::make_cuda_backend(cfg, h1, spec, 0, dt, &s1);
  const std::vector<float> got = prefill_logits({g0.get(), g1.get()}, cfg, tokens);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0);
  // A start on a device that does not exist leaves nothing to take over: the backend starts alone.
  mdi::CudaStart other([] { return 1 << 20; }, dt, cfg.n_embd, spec.max_rows);
  auto g2 = mdi::make_cuda_backend(cfg, h0, spec, 0, dt, &other);
  auto g3 = mdi::make_cuda_backend(cfg, h1, spec, 0, dt);
  EXPECT_EQ(std::memcmp(prefill_logits({g2.get(), g3.get()}, cfg, tokens).data(), want.data(),
                        want.size() * sizeof(float)),
            0);
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaStartup,
                         ::testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           return std::string(mdi::dtype_name(i.param));
                         });

INSTANTIATE_TEST_SUITE_P(Cuda, CudaModel,
                         ::testing::Combine(::testing::Values("tiny_gpt2", "tiny_nanogpt"),
                                            ::testing::Values(DType::kF32, DType::kF16, DType::kBF16)),
                         [](const ::testing::TestParamInfo<ModelParam>& i) {
                           return std::string(std::get<0>(i.param)) + "_" + mdi::dtype_name(std::get<1>(i.param));
                         });

// A random GPT-2-shaped model held in memory (no file): long enough a context for 50 decode steps.
mdi::Weights random_model(const mdi::Config& cfg, unsigned seed) {
  const size_t C = cfg.n_embd, V = cfg.vocab_size, T = cfg.block_size;
  mdi::Weights w;
  w.layer_begin = 0;
  w.layer_end = cfg.n_layer;
  w.has_head = true;
  const size_t per_layer[12] = {C, C, 3 * C * C, 3 * C, C * C, C, C, C, 4 * C * C, 4 * C, 4 * C * C, C};
  size_t total = 0;
  auto pad = [](size_t n) { return (n + 15) / 16 * 16; };
  for (int l = 0; l < cfg.n_layer; ++l)
    for (size_t n : per_layer) total += pad(n);
  total += pad(V * C) + pad(T * C) + 2 * pad(C);
  w.storage.resize(total);
  // Uniform on [-a, a] with a = 0.1 sqrt(3) (std 0.1), from a 64-bit LCG: fast enough to fill a
  // GPT-2 XL-shaped model (1.6e9 floats) for the benchmark.
  uint64_t st = 0x9E3779B97F4A7C15ull * (seed + 1);
  const float a = 0.1f * std::sqrt(3.0f);
  for (float& x : w.storage) {
    st = st * 6364136223846793005ull + 1442695040888963407ull;
    x = a * (float(st >> 40) * (2.0f / 16777216.0f) - 1.0f);
  }
  size_t off = 0;
  auto take = [&](size_t n, bool is_ln_weight) {
    float* p = w.storage.data() + off;
    if (is_ln_weight)
      for (size_t i = 0; i < n; ++i) p[i] += 1.0f;
    off += pad(n);
    return static_cast<const float*>(p);
  };
  for (int l = 0; l < cfg.n_layer; ++l) {
    mdi::LayerWeights L{};
    L.ln1_w = take(C, true);
    L.ln1_b = take(C, false);
    L.attn_w = take(3 * C * C, false);
    L.attn_b = take(3 * C, false);
    L.aproj_w = take(C * C, false);
    L.aproj_b = take(C, false);
    L.ln2_w = take(C, true);
    L.ln2_b = take(C, false);
    L.fc_w = take(4 * C * C, false);
    L.fc_b = take(4 * C, false);
    L.mproj_w = take(4 * C * C, false);
    L.mproj_b = take(C, false);
    w.layers.push_back(L);
  }
  w.head.wte = take(V * C, false);
  w.head.wpe = take(T * C, false);
  w.head.lnf_w = take(C, true);
  w.head.lnf_b = take(C, false);
  w.head.lm_head = w.head.wte;
  w.head.lm_end = cfg.vocab_size;
  return w;
}

// A small GPT-2-shaped configuration: 4 heads of 16.
mdi::Config small_config(int n_layer, int block_size, int vocab_size) {
  mdi::Config cfg;
  cfg.model_type = "gpt2";
  cfg.n_layer = n_layer;
  cfg.n_head = 4;
  cfg.n_embd = 64;
  cfg.block_size = block_size;
  cfg.vocab_size = vocab_size;
  return cfg;
}

int argmax(const float* v, int n) { return int(std::max_element(v, v + n) - v); }

// Greedy decoding of three samples batched together (a prefill of three prompts of different
// lengths, then 50 steps of one row per sample): the same tokens on the GPU (fp32) as on the CPU.
// First, logits of 96 single-row items (more than one ln_f / lm_head pass) match too.
TEST(CudaGreedy, FiftyStepsIdenticalTokensFp32) {
  MDI_REQUIRE_GPU();
  const mdi::Config cfg = small_config(3, 96, 80);
  const mdi::Weights w = random_model(cfg, 99);
  const int S = 3, C = cfg.n_embd, V = cfg.vocab_size, steps = 50;
  const mdi::BackendSpec spec{S * cfg.block_size, S, 1};
  auto cpu = mdi::make_cpu_backend(cfg, w, spec);
  auto gpu = mdi::make_cuda_backend(cfg, w, spec, 0, DType::kF32);
  setenv("MDI_CUDA_GRAPHS", "0", 1);  // a third run launching kernel by kernel
  auto gpu_eager = mdi::make_cuda_backend(cfg, w, spec, 0, DType::kF32);
  unsetenv("MDI_CUDA_GRAPHS");

  std::vector<int> long_prompt(cfg.block_size);
  for (int i = 0; i < cfg.block_size; ++i) long_prompt[i] = (i * 13 + 5) % V;
  expect_close(prefill_logits({gpu.get()}, cfg, long_prompt), prefill_logits({cpu.get()}, cfg, long_prompt),
               DType::kF32, "random model, 96 items");

  const std::vector<std::vector<int>> prompts = {{1, 2, 3, 4}, {10, 20, 30, 40, 50, 60, 70}, {5, 5, 5, 9, 9}};
  std::vector<std::vector<int>> out[3];  // tokens generated by cpu, gpu, gpu without graphs
  for (int k = 0; k < 3; ++k) {
    mdi::Backend* be = k == 0 ? cpu.get() : k == 1 ? gpu.get() : gpu_eager.get();
    std::vector<mdi::BatchItem> items;
    std::vector<int> toks;
    for (int s = 0; s < S; ++s) {
      items.push_back({s, 0, int(prompts[s].size())});
      toks.insert(toks.end(), prompts[s].begin(), prompts[s].end());
    }
    out[k].assign(S, {});
    std::vector<float> x(toks.size() * C), logits(size_t(S) * V);
    for (int step = 0; step <= steps; ++step) {
      be->embed(x.data(), toks.data(), items.data(), S);
      be->forward(x.data(), items.data(), S);
      be->logits(logits.data(), x.data(), items.data(), S);
      for (int s = 0; s < S; ++s) {
        const int next = argmax(logits.data() + size_t(s) * V, V);
        out[k][s].push_back(next);
        items[s] = {s, items[s].pos + items[s].rows, 1};
        toks[s] = next;
      }
      toks.resize(S);
    }
  }
  for (int s = 0; s < S; ++s) {
    EXPECT_EQ(out[0][s], out[1][s]) << "sample " << s;
    EXPECT_EQ(out[1][s], out[2][s]) << "sample " << s << ", graphs vs kernel by kernel";
  }
  std::printf("[ figure ] cuda greedy: sample 1 tokens:");
  for (int t : out[1][1]) std::printf(" %d", t);
  std::printf("\n");
}

// The persistent decode kernel (every layer in one launch; head size 64) against the kernels
// layer by layer: bit-identical activations and logits, with and without CUDA graphs, for
// decode batches of 1 to 4 rows at positions past prompts of different lengths; in fp32 the
// logits also match the CPU's. Five samples, the tensor-core kernel off, so that batches of all
// five split into rows of 4 + 1 and every row count of the kernel is taken.
class CudaPersistent : public ::testing::TestWithParam<DType> {};

TEST_P(CudaPersistent, SameBitsAsLayerByLayer) {
  MDI_REQUIRE_GPU();
  const DType dt = GetParam();
  MDI_REQUIRE_DTYPE(dt);
  mdi::Config cfg = small_config(3, 40, 97);
  cfg.n_head = 2;
  cfg.n_embd = 128;
  const mdi::Weights w = random_model(cfg, 7);
  const int S = 5, C = cfg.n_embd, V = cfg.vocab_size;
  const mdi::BackendSpec spec{S * cfg.block_size, S, 1};
  // The same with the KV cache sized to the longest context (prompt of 9, 11 steps): 20 of 40 rows.
  const mdi::BackendSpec small{S * cfg.block_size, S, 1, 0, 20};
  setenv("MDI_CUDA_MMA", "0", 1);
  setenv("MDI_CUDA_PERSISTENT", "1", 1);  // on whether or not the GPU has programmatic dependent launch
  auto persistent = mdi::make_cuda_backend(cfg, w, spec, 0, dt);
  auto persistent_small = mdi::make_cuda_backend(cfg, w, small, 0, dt);
  setenv("MDI_CUDA_GRAPHS", "0", 1);
  auto eager = mdi::make_cuda_backend(cfg, w, spec, 0, dt);
  unsetenv("MDI_CUDA_GRAPHS");
  setenv("MDI_CUDA_PERSISTENT", "0", 1);
  auto layered = mdi::make_cuda_backend(cfg, w, spec, 0, dt);
  auto layered_small = mdi::make_cuda_backend(cfg, w, small, 0, dt);
  unsetenv("MDI_CUDA_PERSISTENT");
  unsetenv("MDI_CUDA_MMA");
  auto cpu = mdi::make_cpu_backend(cfg, w, spec);
  std::printf("[ info ] %s; %s\n", persistent->name().c_str(), layered->name().c_str());
  ASSERT_NE(persistent->name().find("persistent decode"), std::string::npos);
  ASSERT_NE(eager->name().find("persistent decode"), std::string::npos);
  ASSERT_EQ(layered->name().find("persistent decode"), std::string::npos);
  ASSERT_NE(persistent_small->name().find("persistent decode"), std::string::npos);
  ASSERT_EQ(layered_small->name().find("persistent decode"), std::string::npos);
  EXPECT_LT(layered_small->workspace_bytes(), layered->workspace_bytes());

  const std::vector<int> len = {5, 9, 2, 1, 7};
  // Which samples share a forward: all five, then 0-1 and 2-4, then one by one.
  const std::vector<std::vector<std::vector<int>>> groups = {
      {{0, 1, 2, 3, 4}}, {{0, 1}, {2, 3, 4}}, {{0}, {1}, {2}, {3}, {4}}};
  // persistent, eager, layered, cpu, then the two with the small KV cache: every forward's rows,
  // then its logits
  std::vector<float> outs[6];
  mdi::Backend* bes[6] = {persistent.get(), eager.get(), layered.get(), cpu.get(), persistent_small.get(),
                          layered_small.get()};
  for (int k = 0; k < 6; ++k) {
    std::vector<int> next(S);
    for (int s = 0; s < S; ++s) next[s] = (s * 13 + 1) % V;
    for (int step = 0; step < 12; ++step) {
      for (const std::vector<int>& g : groups[step % 3]) {
        std::vector<mdi::BatchItem> items;
        std::vector<int> toks;
        for (int s : g) {
          const int rows = step == 0 ? len[s] : 1, pos = step == 0 ? 0 : len[s] + step - 1;
          items.push_back({s, pos, rows});
          for (int r = 0; r < rows; ++r) toks.push_back(step == 0 ? (s * 7 + r * 3 + 2) % V : next[s]);
        }
        const int n = int(items.size());
        std::vector<float> x(toks.size() * C), logits(size_t(n) * V);
        bes[k]->embed(x.data(), toks.data(), items.data(), n);
        bes[k]->forward(x.data(), items.data(), n);
        bes[k]->logits(logits.data(), x.data(), items.data(), n);
        outs[k].insert(outs[k].end(), x.begin(), x.end());
        outs[k].insert(outs[k].end(), logits.begin(), logits.end());
        for (int i = 0; i < n; ++i)  // the next tokens from the CPU's choice would differ: use the
          next[g[i]] = (next[g[i]] * 31 + 17 + step) % V;  // same fixed sequence on every backend
      }
    }
  }
  ASSERT_EQ(outs[0].size(), outs[2].size());
  EXPECT_EQ(0, std::memcmp(outs[0].data(), outs[2].data(), outs[0].size() * sizeof(float)))
      << "persistent vs layer by layer: max abs difference " << max_abs(outs[0], outs[2]);
  EXPECT_EQ(0, std::memcmp(outs[1].data(), outs[2].data(), outs[1].size() * sizeof(float)))
      << "persistent without graphs vs layer by layer: max abs difference " << max_abs(outs[1], outs[2]);
  for (const auto& [k, full] : {std::pair{4, 0}, std::pair{5, 2}})  // small vs block_size rows
    EXPECT_EQ(0, std::memcmp(outs[k].data(), outs[full].data(), outs[k].size() * sizeof(float)))
        << "KV cache of 20 rows vs 40, " << bes[k]->name();
  const double ma = max_abs(outs[0], outs[3]), ne = norm_err(outs[0], outs[3]);
  std::printf("[ figure ] cuda persistent decode %s: vs CPU max abs %.3g, normalised %.3g\n",
              mdi::dtype_name(dt), ma, ne);
  if (dt == DType::kF32) EXPECT_LE(ma, 1e-3);
  else EXPECT_LE(ne, 2e-2);
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaPersistent, ::testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                         [](const ::testing::TestParamInfo<DType>& i) { return std::string(mdi::dtype_name(i.param)); });

// Rows in page-locked memory from host_buffer (the ring's messages) are copied straight to and
// from the GPU: the same activations as from pageable memory, prefill and decode.
TEST(CudaModelF32, PageLockedRowsAsPageable) {
  MDI_REQUIRE_GPU();
  const mdi::Config cfg = small_config(2, 32, 50);
  const mdi::Weights w = random_model(cfg, 3);
  const int C = cfg.n_embd, T = 9;
  const mdi::BackendSpec spec{cfg.block_size, 1, 1};
  auto a = mdi::make_cuda_backend(cfg, w, spec, 0, DType::kF32);
  auto b = mdi::make_cuda_backend(cfg, w, spec, 0, DType::kF32);
  std::vector<int> toks(T);
  for (int i = 0; i < T; ++i) toks[i] = (i * 5 + 2) % cfg.vocab_size;
  std::vector<float> xa(size_t(T) * C);
  mdi::HostBuffer buf = b->host_buffer(xa.size() * sizeof(float));
  float* xb = reinterpret_cast<float*>(buf.get());
  for (const mdi::BatchItem it : {mdi::BatchItem{0, 0, T - 1}, mdi::BatchItem{0, T - 1, 1}}) {
    a->embed(xa.data(), toks.data() + it.pos, &it, 1);
    b->embed(xb, toks.data() + it.pos, &it, 1);
    a->forward(xa.data(), &it, 1);
    b->forward(xb, &it, 1);
    EXPECT_EQ(0, std::memcmp(xa.data(), xb, size_t(it.rows) * C * sizeof(float))) << "rows at " << it.pos;
  }
}

// The ring's progress hook (Backend::set_progress): forward(), logits() and top() call it while
// they wait for the GPU, at least once each, and the rows, logits and candidates stay those of
// the same calls without it (prefill, decode through a graph, the lm_head and greedy selection).
TEST(CudaModelF32, ProgressHookKeepsTheBits) {
  MDI_REQUIRE_GPU();
  const mdi::Config cfg = small_config(2, 32, 50);
  const mdi::Weights w = random_model(cfg, 4);
  const int C = cfg.n_embd, V = cfg.vocab_size, T = 9;
  const mdi::BackendSpec spec{cfg.block_size, 1, 1, 1};
  auto plain = mdi::make_cuda_backend(cfg, w, spec, 0, DType::kF32);
  auto hooked = mdi::make_cuda_backend(cfg, w, spec, 0, DType::kF32);
  int calls = 0;
  hooked->set_progress([&] { ++calls; });
  std::vector<int> toks(T);
  for (int i = 0; i < T; ++i) toks[i] = (i * 7 + 1) % V;
  std::vector<float> xa(size_t(T) * C), xb(xa.size()), la(V), lb(V);
  int ia = -1, ib = -2;
  float va = 0, vb = 1;
  for (const mdi::BatchItem it : {mdi::BatchItem{0, 0, T - 1}, mdi::BatchItem{0, T - 1, 1}}) {
    plain->embed(xa.data(), toks.data() + it.pos, &it, 1);
    hooked->embed(xb.data(), toks.data() + it.pos, &it, 1);
    plain->forward(xa.data(), &it, 1);
    int before = calls;
    hooked->forward(xb.data(), &it, 1);
    EXPECT_GE(calls, before + 1) << "forward at " << it.pos;
    EXPECT_EQ(0, std::memcmp(xa.data(), xb.data(), size_t(it.rows) * C * sizeof(float))) << "rows at " << it.pos;
    plain->logits(la.data(), xa.data(), &it, 1);
    before = calls;
    hooked->logits(lb.data(), xb.data(), &it, 1);
    EXPECT_GE(calls, before + 1);
    EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)));
    ASSERT_TRUE(plain->top(1, V, &ia, &va, xa.data(), &it, 1));
    before = calls;
    ASSERT_TRUE(hooked->top(1, V, &ib, &vb, xb.data(), &it, 1));
    EXPECT_GE(calls, before + 1);
    EXPECT_EQ(ia, ib);
    EXPECT_EQ(0, std::memcmp(&va, &vb, sizeof va));
  }
}

// What rank 0 copies back for sampling: Backend::top's candidates are select_top's of the
// backend's own logits(), for greedy (k = 1) and top-k, over the tokenizer's V of a padded vocabulary
// (nanoGPT's 50304), in lm_head passes of several items; k above the spec's is declined.
TEST(CudaModelF32, TopIsSelectTopOfTheLogits) {
  MDI_REQUIRE_GPU();
  const mdi::Config cfg = small_config(2, 32, 1000);
  const mdi::Weights w = random_model(cfg, 5);
  const int S = 20, C = cfg.n_embd, V = cfg.vocab_size, Vtok = 990, K = 50;
  for (DType dt : {DType::kF32, DType::kF16}) {
    const mdi::BackendSpec spec{S, S, 1, K};
    auto gpu = mdi::make_cuda_backend(cfg, w, spec, 0, dt);
    std::vector<int> toks(S);
    std::vector<mdi::BatchItem> items;
    for (int s = 0; s < S; ++s) {
      toks[s] = (s * 37 + 1) % Vtok;
      items.push_back({s, 0, 1});
    }
    std::vector<float> x(size_t(S) * C), logits(size_t(S) * V);
    gpu->embed(x.data(), toks.data(), items.data(), S);
    gpu->forward(x.data(), items.data(), S);
    gpu->logits(logits.data(), x.data(), items.data(), S);
    for (int k : {1, 7, K}) {
      std::vector<int> ids(size_t(S) * k), want_ids(k);
      std::vector<float> vals(size_t(S) * k), want_vals(k);
      ASSERT_TRUE(gpu->top(k, Vtok, ids.data(), vals.data(), x.data(), items.data(), S));
      for (int s = 0; s < S; ++s) {
        mdi::select_top(logits.data() + size_t(s) * V, Vtok, k, want_ids.data(), want_vals.data());
        ASSERT_TRUE(std::equal(want_ids.begin(), want_ids.end(), ids.begin() + size_t(s) * k))
            << mdi::dtype_name(dt) << " sample " << s << " k " << k;
        ASSERT_EQ(0, std::memcmp(want_vals.data(), vals.data() + size_t(s) * k, k * sizeof(float)));
      }
    }
    std::vector<int> ids(size_t(S) * (K + 1));
    std::vector<float> vals(ids.size());
    EXPECT_FALSE(gpu->top(K + 1, Vtok, ids.data(), vals.data(), x.data(), items.data(), S));
  }
}

// ---------------------------------------------------------------------------------------------
// Benchmark (not a test; run with --gtest_also_run_disabled_tests): a GPT-2 XL-shaped random model
// in fp16 on one GPU, decode step time (embed + 48 layers + logits) for 1 and 8 samples, against
// the bound weight bytes / memory bandwidth (measured by a device-to-device copy).

double measure_bandwidth() {
  const size_t bytes = size_t(1) << 30;
  DevBuf a(bytes), b(bytes);
  MDI_CUDA_CHECK(cudaMemset(a.p, 1, bytes));
  cudaEvent_t e0, e1;
  MDI_CUDA_CHECK(cudaEventCreate(&e0));
  MDI_CUDA_CHECK(cudaEventCreate(&e1));
  MDI_CUDA_CHECK(cudaMemcpy(b.p, a.p, bytes, cudaMemcpyDeviceToDevice));
  const int reps = 10;
  MDI_CUDA_CHECK(cudaEventRecord(e0));
  for (int i = 0; i < reps; ++i) MDI_CUDA_CHECK(cudaMemcpy(b.p, a.p, bytes, cudaMemcpyDeviceToDevice));
  MDI_CUDA_CHECK(cudaEventRecord(e1));
  MDI_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  MDI_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  MDI_CUDA_CHECK(cudaEventDestroy(e0));
  MDI_CUDA_CHECK(cudaEventDestroy(e1));
  return 2.0 * bytes * reps / (ms * 1e-3);  // read + write
}

// Microseconds per call of f (after a warm-up), timed with events on the legacy stream.
template <typename F>
double time_us(F&& f, int reps = 200) {
  f();
  cudaEvent_t e0, e1;
  MDI_CUDA_CHECK(cudaEventCreate(&e0));
  MDI_CUDA_CHECK(cudaEventCreate(&e1));
  MDI_CUDA_CHECK(cudaEventRecord(e0));
  for (int i = 0; i < reps; ++i) f();
  MDI_CUDA_CHECK(cudaEventRecord(e1));
  MDI_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  MDI_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  MDI_CUDA_CHECK(cudaEventDestroy(e0));
  MDI_CUDA_CHECK(cudaEventDestroy(e1));
  return ms * 1e3 / reps;
}

// The ops one at a time at GPT-2 XL shapes, fp16 (back-to-back launches: includes launch gaps).
TEST(CudaBench, DISABLED_OpsGpt2XlFp16) {
  MDI_REQUIRE_GPU();
  using mdi::cuda::Epilogue;
  mdi::cuda::configure_kernels();
  const DType dt = DType::kF16;
  const int C = 1600, NH = 25, T = 1024, S = 8;
  std::mt19937 g(3);
  cublasHandle_t h;
  MDI_CUBLAS_CHECK(cublasCreate(&h));
  DevBuf x = to_dev(randn(size_t(S) * 4 * C, g)), ln(size_t(S) * 4 * C * 2), y(size_t(S) * 4 * C * 4),
      w = to_dev(randn(size_t(4) * C * C, g, 0.0f, 0.02f), dt), lw = to_dev(randn(C, g, 1.0f, 0.1f)),
      kc = to_dev(randn(size_t(S) * T * C, g), dt), vc = to_dev(randn(size_t(S) * T * C, g), dt),
      bias = to_dev(randn(size_t(4) * C, g));
  mdi::cuda::convert_forward(ln.p, x.f(), long(S) * 4 * C, dt, nullptr);
  std::printf("[ figure ] ops: layernorm B=1 %.1f us, B=8 %.1f us\n",
              time_us([&] { mdi::cuda::layernorm_forward(ln.p, x.f(), lw.f(), lw.f(), 1, C, 1e-5f, dt, nullptr); }),
              time_us([&] { mdi::cuda::layernorm_forward(ln.p, x.f(), lw.f(), lw.f(), 8, C, 1e-5f, dt, nullptr); }));
  for (const auto& [IC, OC] : std::vector<std::pair<int, int>>{{C, 3 * C}, {C, C}, {C, 4 * C}, {4 * C, C}}) {
    auto row = [&](const char* how, int B, double us) {
      std::printf("[ figure ] ops: %s IC=%d OC=%d B=%d: %.1f us, %.0f GB/s of weights\n", how, IC, OC, B, us,
                  2.0 * IC * OC / (us * 1e3));
    };
    for (int B : {1, 4, 8})
      for (bool tc : {false, true})
        row(tc ? "matvec, tensor cores" : "matvec, CUDA cores", B, time_us([&] {
              mdi::cuda::matvec_forward(y.p, ln.p, nullptr, nullptr, 0.0f, w.p, bias.f(), B, IC, OC, Epilogue::kStore,
                                        nullptr, dt, tc, nullptr);
            }));
    row("cuBLAS", 8, time_us([&] {
          mdi::cuda::matmul_forward(y.p, ln.p, w.p, bias.f(), 8, IC, OC, Epilogue::kStore, y.f(), dt, false, h, nullptr);
        }));
  }
  std::vector<int> rs(S), rp(S, 100), rp2(S, 1000);
  for (int s = 0; s < S; ++s) rs[s] = s;
  DevBuf drs = to_dev(rs), drp = to_dev(rp), drp2 = to_dev(rp2);
  for (int B : {1, 8})
    std::printf("[ figure ] ops: attention B=%d pos 100: %.1f us, pos 1000: %.1f us\n", B,
                time_us([&] { mdi::cuda::attention_forward(ln.p, x.f(), kc.p, vc.p, drs.i(), drp.i(), B, C, NH, T, dt, nullptr); }),
                time_us([&] { mdi::cuda::attention_forward(ln.p, x.f(), kc.p, vc.p, drs.i(), drp2.i(), B, C, NH, T, dt, nullptr); }));
  std::printf("[ figure ] ops: qkv scatter B=1 %.1f us\n", time_us([&] {
    mdi::cuda::qkv_scatter_forward(x.f(), kc.p, vc.p, y.f(), bias.f(), drs.i(), drp.i(), 1, C, T, dt, nullptr);
  }));
  {  // The head as the backend's top(1) runs it: ln_f inside the lm_head's matrix-vector kernel,
     // then the greedy pick (the weights' values do not change the time: a constant fill).
    const int V = 50257;
    DevBuf wv(size_t(V) * C * 2), logits(size_t(V) * 4), id(4), val(4);
    MDI_CUDA_CHECK(cudaMemset(wv.p, 0x11, size_t(V) * C * 2));
    const double lm_us = time_us([&] {
      mdi::cuda::matvec_forward(logits.p, x.f(), lw.f(), lw.f(), 1e-5f, wv.p, nullptr, 1, C, V, Epilogue::kStore,
                                nullptr, dt, false, nullptr);
    });
    std::printf("[ figure ] ops: ln_f + lm_head IC=%d OC=%d B=1: %.1f us, %.0f GB/s of weights; argmax %.1f us\n",
                C, V, lm_us, 2.0 * C * V / (lm_us * 1e3),
                time_us([&] { mdi::cuda::top_forward(id.i(), val.f(), logits.f(), 1, V, V, 1, nullptr); }));
  }
  MDI_CUBLAS_CHECK(cublasDestroy(h));
}

TEST(CudaBench, DISABLED_DecodeStepGpt2XlFp16) {
  MDI_REQUIRE_GPU();
  mdi::Config cfg;
  cfg.model_type = "gpt2";
  cfg.n_layer = 48;
  cfg.n_head = 25;
  cfg.n_embd = 1600;
  cfg.block_size = 1024;
  cfg.vocab_size = 50257;
  const int C = cfg.n_embd, V = cfg.vocab_size;
  const double bw = measure_bandwidth();
  const mdi::Weights w = random_model(cfg, 1);
  const double wbytes = 2.0 * (double(cfg.n_layer) * 12 * C * C + double(V) * C + double(cfg.block_size) * C);
  int dev = 0, sms = 0;
  MDI_CUDA_CHECK(cudaGetDevice(&dev));
  MDI_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  std::printf("[ figure ] bench: %d SMs; device-to-device bandwidth %.0f GB/s; fp16 matrices %.2f GB; bound "
              "%.3f ms per decode step\n", sms, bw / 1e9, wbytes / 1e9, wbytes / bw * 1e3);
  struct Run {
    int samples;
    std::string graphs;
    bool pdl, mma;
    int persistent;  // MDI_CUDA_PERSISTENT 1 / 0, or -1: unset (the backend's own choice)
  };
  std::vector<Run> runs{{1, "1", true, false, 1},  {1, "1", true, false, 0}, {1, "0", true, false, 1},
                        {1, "1", false, false, 0}, {4, "1", true, false, 1},  {4, "1", true, true, 0},
                        {8, "1", true, true, 0},   {8, "1", true, false, 1}};
  // MDI_BENCH_RUNS="samples,graphs,pdl,tensor cores[,persistent];...": these runs instead (without
  // the fifth field the backend chooses).
  if (const char* env = std::getenv("MDI_BENCH_RUNS")) {
    runs.clear();
    const std::string all = env;
    for (size_t at = 0; at < all.size();) {
      const size_t end = std::min(all.find(';', at), all.size());
      int s = 0, g = 1, pdl = 1, mma = 0, pers = -1;
      if (std::sscanf(all.substr(at, end - at).c_str(), "%d,%d,%d,%d,%d", &s, &g, &pdl, &mma, &pers) >= 4 && s > 0)
        runs.push_back({s, std::to_string(g), pdl != 0, mma != 0, pers < 0 ? -1 : int(pers != 0)});
      at = end + 1;
    }
  }
  for (const auto& [S, graphs, pdl, mma, persistent] : runs) {
    mdi::cuda::set_pdl(pdl);
    setenv("MDI_CUDA_MMA", mma ? "1" : "0", 1);
    setenv("MDI_CUDA_GRAPHS", graphs.c_str(), 1);
    if (persistent >= 0) setenv("MDI_CUDA_PERSISTENT", persistent ? "1" : "0", 1);
    auto gpu = mdi::make_cuda_backend(cfg, w, mdi::BackendSpec{S * 64, S, 1, 1}, 0, DType::kF16);
    unsetenv("MDI_CUDA_GRAPHS");
    unsetenv("MDI_CUDA_PERSISTENT");
    // Prefill 64 tokens per sample, then time decode steps at positions 64 .. 64 + steps.
    std::vector<mdi::BatchItem> items;
    std::vector<int> toks;
    for (int s = 0; s < S; ++s) {
      items.push_back({s, 0, 64});
      for (int t = 0; t < 64; ++t) toks.push_back((t * 31 + s) % V);
    }
    std::vector<float> x(toks.size() * C), logits(size_t(S) * V), best(S);
    gpu->embed(x.data(), toks.data(), items.data(), S);
    gpu->forward(x.data(), items.data(), S);
    const int steps = 40, warm = 5;
    double embed_s = 0, fwd_s = 0, all_s = 0;
    bool on_gpu = false;
    for (int step = 0; step < warm + steps; ++step) {
      for (int s = 0; s < S; ++s) items[s] = {s, 64 + step, 1};
      toks.resize(S);
      const auto t0 = std::chrono::steady_clock::now();
      gpu->embed(x.data(), toks.data(), items.data(), S);
      const auto t1 = std::chrono::steady_clock::now();
      gpu->forward(x.data(), items.data(), S);
      const auto t2 = std::chrono::steady_clock::now();
      // Greedy as the product decodes it (Head::finish): the GPU selects each sample's best token.
      on_gpu = gpu->top(1, V, toks.data(), best.data(), x.data(), items.data(), S);
      if (!on_gpu) {
        gpu->logits(logits.data(), x.data(), items.data(), S);
        for (int s = 0; s < S; ++s) toks[s] = argmax(logits.data() + size_t(s) * V, V);
      }
      const auto t3 = std::chrono::steady_clock::now();
      if (step >= warm) {
        embed_s += std::chrono::duration<double>(t1 - t0).count();
        fwd_s += std::chrono::duration<double>(t2 - t1).count();
        all_s += std::chrono::duration<double>(t3 - t0).count();
      }
    }
    const double step_ms = all_s / steps * 1e3, bound_ms = wbytes / bw * 1e3;
    std::printf("[ figure ] bench: %s, %d sample(s), graphs %s, PDL %d, tensor cores %d, greedy %s: decode step "
                "%.3f ms (embedding %.3f ms, layers %.3f ms, head %.3f ms), %.2fx the bound, %.0f tokens/s\n",
                gpu->name().c_str(), S, graphs.c_str(), int(pdl), int(mma), on_gpu ? "on the GPU" : "on the host",
                step_ms, embed_s / steps * 1e3, fwd_s / steps * 1e3, (all_s - embed_s - fwd_s) / steps * 1e3,
                step_ms / bound_ms, S / (step_ms * 1e-3));
  }
  mdi::cuda::set_pdl(true);
  unsetenv("MDI_CUDA_MMA");
}

}  // namespace
