// Unit tests of the CPU kernels (src/cpu/ops.cpp): each op against a naive loop in double, and the
// determinism contract: a row's result is bit-identical alone or in any batch, at any alignment and
// thread count. The Eigen test only documents why the kernels do not use Eigen's product.
// Not here: comparisons with PyTorch (test_model.cpp) or with the CUDA kernels.

// GCC 12 warns inside its own AVX-512 intrinsics (_mm512_undefined_ps, a known false positive) when
// Eigen inlines them; Eigen is included first so that those headers are read under this pragma.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Dense>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <sstream>
#include <vector>

#include "mdi/cpu_ops.h"
#include "mdi/half.h"

namespace mdi::cpu {
namespace {

std::vector<float> random_vec(size_t n, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

bool same_bits(const float* a, const float* b, size_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

// Sets the ops' thread count for one test and restores it afterwards.
struct ThreadsGuard {
  explicit ThreadsGuard(int n) : saved(threads()) { set_threads(n); }
  ~ThreadsGuard() { set_threads(saved); }
  int saved;
};

// Naive reference: out (B, OC) = inp (B, IC) . weight (OC, IC)^T + bias, in double, and the sum of
// |products| per element, which bounds the float rounding error.
void matmul_ref(std::vector<double>& out, std::vector<double>& mag, const float* inp,
                const float* w, const float* bias, int B, int IC, int OC) {
  out.assign((size_t)B * OC, 0.0);
  mag.assign((size_t)B * OC, 0.0);
  for (int b = 0; b < B; b++)
    for (int o = 0; o < OC; o++) {
      double s = bias ? bias[o] : 0.0, m = bias ? std::fabs(bias[o]) : 0.0;
      for (int i = 0; i < IC; i++) {
        const double p = (double)inp[(size_t)b * IC + i] * w[(size_t)o * IC + i];
        s += p;
        m += std::fabs(p);
      }
      out[(size_t)b * OC + o] = s;
      mag[(size_t)b * OC + o] = m;
    }
}

TEST(Ops, DotMatchesDoubleAndMatmul) {
  for (int n : {0, 1, 7, 8, 9, 31, 32, 33, 67, 768}) {
    auto a = random_vec(n, 1), b = random_vec(n, 2);
    double ref = 0.0, mag = 0.0;
    for (int i = 0; i < n; i++) {
      ref += (double)a[i] * b[i];
      mag += std::fabs((double)a[i] * b[i]);
    }
    const float d = dot(a.data(), b.data(), n);
    EXPECT_NEAR(d, ref, 1e-6 * mag + 1e-7) << "n=" << n;
    float m = 0.0f;
    matmul_forward(&m, a.data(), b.data(), nullptr, 1, n, 1);
    EXPECT_TRUE(same_bits(&m, &d, 1)) << "dot and matmul differ at n=" << n;
  }
}

// The documented order (src/cpu/ops.cpp), written out in scalar code: 8 lanes of fma over chunks
// of 8, the tree ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), then the tail by fma.
float dot_documented_order(const float* a, const float* b, int n) {
  float l[8] = {};
  int k = 0;
  for (; k + 8 <= n; k += 8)
    for (int j = 0; j < 8; j++) l[j] = std::fma(a[k + j], b[k + j], l[j]);
  float s = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
  for (; k < n; k++) s = std::fma(a[k], b[k], s);
  return s;
}

TEST(Ops, DotFollowsTheDocumentedOrder) {
#if !(defined(__FMA__) || defined(__aarch64__) || defined(__FP_FAST_FMAF))
  GTEST_SKIP() << "built without FMA: the kernels use a * b + c (see fma1 in ops.cpp)";
#endif
  for (int n : {1, 8, 13, 64, 67, 768, 3072}) {
    auto a = random_vec(n, 30), b = random_vec(n, 31);
    const float want = dot_documented_order(a.data(), b.data(), n);
    const float got = dot(a.data(), b.data(), n);
    EXPECT_TRUE(same_bits(&got, &want, 1)) << "n=" << n << ": " << got << " vs " << want;
  }
}

TEST(Ops, MatmulMatchesDoubleReference) {
  struct Shape {
    int B, IC, OC;
  };
  for (Shape s : {Shape{1, 67, 13}, Shape{3, 67, 13}, Shape{17, 67, 13}, Shape{130, 67, 13},
                  Shape{5, 768, 37}, Shape{4, 8, 8}, Shape{2, 3, 5}}) {
    auto inp = random_vec((size_t)s.B * s.IC, 3), w = random_vec((size_t)s.OC * s.IC, 4),
         bias = random_vec(s.OC, 5);
    for (const float* bp : {(const float*)bias.data(), (const float*)nullptr}) {
      std::vector<float> out((size_t)s.B * s.OC, NAN);
      matmul_forward(out.data(), inp.data(), w.data(), bp, s.B, s.IC, s.OC);
      std::vector<double> ref, mag;
      matmul_ref(ref, mag, inp.data(), w.data(), bp, s.B, s.IC, s.OC);
      for (size_t i = 0; i < out.size(); i++)
        ASSERT_NEAR(out[i], ref[i], 1e-5 * mag[i] + 1e-6)
            << "B=" << s.B << " IC=" << s.IC << " OC=" << s.OC << " i=" << i
            << (bp ? " bias" : " no bias");
    }
  }
}

// Every row of a 130-row batch equals that row computed alone (B = 1) and inside batches of
// 1 .. 9 rows (every edge kernel), with every buffer offset by 0 .. 7 floats.
TEST(Ops, MatmulRowIsBitIdenticalAloneOrInBatch) {
  for (int IC : {67, 768}) {
    const int B = 130, OC = 37;
    auto inp = random_vec((size_t)B * IC, 6), w = random_vec((size_t)OC * IC, 7),
         bias = random_vec(OC, 8);
    std::vector<float> batch((size_t)B * OC);
    matmul_forward(batch.data(), inp.data(), w.data(), bias.data(), B, IC, OC);

    // Each row alone, with the input, weight, bias and output shifted by off floats.
    for (int off = 0; off < 8; off++) {
      std::vector<float> wo(off + w.size()), bo(off + OC), io(off + IC), oo(off + OC);
      std::copy(w.begin(), w.end(), wo.begin() + off);
      std::copy(bias.begin(), bias.end(), bo.begin() + off);
      for (int b = 0; b < B; b++) {
        std::copy(inp.begin() + (size_t)b * IC, inp.begin() + (size_t)(b + 1) * IC,
                  io.begin() + off);
        matmul_forward(oo.data() + off, io.data() + off, wo.data() + off, bo.data() + off, 1, IC,
                       OC);
        ASSERT_TRUE(same_bits(oo.data() + off, &batch[(size_t)b * OC], OC))
            << "IC=" << IC << " row " << b << " offset " << off;
      }
    }
    // Batches of n = 1 .. 9 rows starting at every row: every kernel shape sees every row.
    std::vector<float> part(9 * (size_t)OC);
    for (int n = 1; n <= 9; n++)
      for (int b = 0; b + n <= B; b += 7) {
        matmul_forward(part.data(), &inp[(size_t)b * IC], w.data(), bias.data(), n, IC, OC);
        ASSERT_TRUE(same_bits(part.data(), &batch[(size_t)b * OC], (size_t)n * OC))
            << "IC=" << IC << " rows " << b << " .. " << b + n - 1;
      }
    // Every element is also exactly dot() + bias.
    for (int b = 0; b < B; b += 13)
      for (int o = 0; o < OC; o++) {
        const float e = dot(&inp[(size_t)b * IC], &w[(size_t)o * IC], IC) + bias[o];
        ASSERT_TRUE(same_bits(&e, &batch[(size_t)b * OC + o], 1)) << "b=" << b << " o=" << o;
      }
  }
}

TEST(Ops, MatmulIsBitIdenticalAcrossThreadCounts) {
  struct Shape {
    int B, IC, OC;
  };
  for (Shape s : {Shape{1, 768, 600}, Shape{17, 67, 600}, Shape{64, 768, 130}}) {
    auto inp = random_vec((size_t)s.B * s.IC, 9), w = random_vec((size_t)s.OC * s.IC, 10),
         bias = random_vec(s.OC, 11);
    std::vector<float> one((size_t)s.B * s.OC), two((size_t)s.B * s.OC);
    {
      ThreadsGuard g(1);
      matmul_forward(one.data(), inp.data(), w.data(), bias.data(), s.B, s.IC, s.OC);
    }
    {
      ThreadsGuard g(2);
      matmul_forward(two.data(), inp.data(), w.data(), bias.data(), s.B, s.IC, s.OC);
    }
    EXPECT_TRUE(same_bits(one.data(), two.data(), one.size()))
        << "B=" << s.B << " IC=" << s.IC << " OC=" << s.OC;
  }
}

// binary16 weights (a float16 file's matrices) give the bits of the fp32 product on their exact
// widening: every shape of kernel block, tile edges, a strided output, 1 and 2 threads, and
// halves of every kind (subnormals, large values, -0).
TEST(Ops, MatmulOnHalvesIsThatOnTheirWidening) {
  struct Shape {
    int B, IC, OC, ldo;
  };
  std::mt19937 rng(12);
  for (Shape s : {Shape{1, 768, 600, 0}, Shape{3, 67, 37, 0}, Shape{9, 100, 130, 0},
                  Shape{130, 64, 70, 0}, Shape{2, 3072, 41, 0}, Shape{5, 48, 20, 33}}) {
    std::vector<uint16_t> h((size_t)s.OC * s.IC);
    for (auto& x : h) {
      x = uint16_t(rng());
      if ((x & 0x7c00) == 0x7c00) x &= 0xbfff;  // no inf or nan: a finite weight file
    }
    std::vector<float> w(h.size());
    halves_to_floats(h.data(), w.data(), h.size());
    const auto inp = random_vec((size_t)s.B * s.IC, 13), bias = random_vec(s.OC, 14);
    const int ld = s.ldo ? s.ldo : s.OC;
    for (int nt : {1, 2}) {
      ThreadsGuard g(nt);
      std::vector<float> want((size_t)s.B * ld, 7.0f), got(want);
      matmul_forward(want.data(), inp.data(), w.data(), bias.data(), s.B, s.IC, s.OC, s.ldo);
      matmul_forward(got.data(), inp.data(), h.data(), bias.data(), s.B, s.IC, s.OC, s.ldo);
      EXPECT_TRUE(same_bits(want.data(), got.data(), want.size()))
          << "B=" << s.B << " IC=" << s.IC << " OC=" << s.OC << " ldo=" << s.ldo << " threads "
          << nt;
      matmul_forward(got.data(), inp.data(), h.data(), nullptr, s.B, s.IC, s.OC, s.ldo);
      matmul_forward(want.data(), inp.data(), w.data(), nullptr, s.B, s.IC, s.OC, s.ldo);
      EXPECT_TRUE(same_bits(want.data(), got.data(), want.size())) << "no bias, B=" << s.B;
    }
  }
}

TEST(Ops, LayernormMatchesDoubleAndMayAlias) {
  const float eps = 1e-5f;
  for (int C : {67, 768}) {
    const int B = 3;
    auto inp = random_vec((size_t)B * C, 12, -2.0f, 3.0f), w = random_vec(C, 13),
         bias = random_vec(C, 14);
    for (const float* bp : {(const float*)bias.data(), (const float*)nullptr}) {
      std::vector<float> out((size_t)B * C);
      layernorm_forward(out.data(), inp.data(), w.data(), bp, B, C, eps);
      for (int b = 0; b < B; b++) {
        const float* x = &inp[(size_t)b * C];
        double m = 0.0, v = 0.0;
        for (int i = 0; i < C; i++) m += x[i];
        m /= C;
        for (int i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
        v /= C;
        const double rstd = 1.0 / std::sqrt(v + eps);
        for (int i = 0; i < C; i++) {
          const double ref = (x[i] - m) * rstd * w[i] + (bp ? bp[i] : 0.0);
          ASSERT_NEAR(out[(size_t)b * C + i], ref, 1e-5 * (1.0 + std::fabs(ref)))
              << "C=" << C << " b=" << b << " i=" << i;
        }
      }
      // In place gives the same bits; so does each row alone.
      std::vector<float> inplace = inp;
      layernorm_forward(inplace.data(), inplace.data(), w.data(), bp, B, C, eps);
      EXPECT_TRUE(same_bits(inplace.data(), out.data(), out.size())) << "C=" << C;
      std::vector<float> row(C);
      for (int b = 0; b < B; b++) {
        layernorm_forward(row.data(), &inp[(size_t)b * C], w.data(), bp, 1, C, eps);
        EXPECT_TRUE(same_bits(row.data(), &out[(size_t)b * C], C)) << "C=" << C << " b=" << b;
      }
    }
  }
}

// GELU against double: within 2 units of ulp(ref) + 2^-24 |x| (the rounding of 1 + tanh for
// negative x costs up to an ulp of 1 times |x| / 2); the kernel measured 0.83 units at worst over
// [-12, 12], libm's tanhf in the same formula 1.02. The same bits for any thread count, and for an
// element inside a chunk of 8 or in the last partial one.
TEST(Ops, GeluMatchesDoubleAndIsThreadIndependent) {
  const long N = 100003;
  auto x = random_vec(N, 15, -12.0f, 12.0f);
  std::vector<float> one = x, two = x, shifted(x.begin() + 3, x.end());
  {
    ThreadsGuard g(1);
    gelu_forward(one.data(), N);
  }
  {
    ThreadsGuard g(2);
    gelu_forward(two.data(), N);
  }
  gelu_forward(shifted.data(), N - 3);
  EXPECT_TRUE(same_bits(one.data(), two.data(), N));
  EXPECT_TRUE(same_bits(one.data() + 3, shifted.data(), N - 3));
  const double s = std::sqrt(2.0 / 3.14159265358979323846);
  for (long i = 0; i < N; i++) {
    const double v = x[i], ref = 0.5 * v * (1.0 + std::tanh(s * (v + 0.044715 * v * v * v)));
    const float rf = std::fabs((float)ref);
    const double unit = (std::nextafter(rf, INFINITY) - rf) + std::ldexp(std::fabs(v), -24);
    ASSERT_LE(std::fabs(one[i] - ref), 2.0 * unit) << "x=" << v;
  }
  std::vector<float> special = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 40.0f, -40.0f, 1e-30f};
  gelu_forward(special.data(), (long)special.size());
  EXPECT_EQ(std::signbit(special[0]), false);
  EXPECT_EQ(special[0], 0.0f);
  EXPECT_EQ(special[1], 0.0f);
  EXPECT_EQ(special[2], INFINITY);
  EXPECT_TRUE(std::isnan(special[3]));  // -inf * (1 + tanh(-inf)) = -inf * 0, as in the formula
  EXPECT_TRUE(std::isnan(special[4]));
  EXPECT_EQ(special[5], 40.0f);
  EXPECT_EQ(special[6], 0.0f);
  EXPECT_EQ(special[7], 5e-31f);
}

TEST(Ops, ResidualAdds) {
  const long N = 1 << 19;  // large enough for the parallel path
  auto x = random_vec(N, 16), y = random_vec(N, 17);
  std::vector<float> out = x;
  residual_forward(out.data(), y.data(), N);
  for (long i = 0; i < N; i++) ASSERT_EQ(out[i], x[i] + y[i]) << i;
}

// Naive attention of one query row in double: q (C), k and v (T, C), positions 0 .. P.
std::vector<double> attention_ref(const float* q, const float* k, const float* v, int P, int C,
                                  int NH) {
  const int HS = C / NH;
  std::vector<double> out(C, 0.0), att(P + 1);
  for (int h = 0; h < NH; h++) {
    double maxv = -INFINITY, sum = 0.0;
    for (int t = 0; t <= P; t++) {
      double s = 0.0;
      for (int i = 0; i < HS; i++) s += (double)q[h * HS + i] * k[(size_t)t * C + h * HS + i];
      att[t] = s / std::sqrt((double)HS);
      maxv = std::max(maxv, att[t]);
    }
    for (int t = 0; t <= P; t++) sum += (att[t] = std::exp(att[t] - maxv));
    for (int t = 0; t <= P; t++)
      for (int i = 0; i < HS; i++) out[h * HS + i] += att[t] / sum * v[(size_t)t * C + h * HS + i];
  }
  return out;
}

TEST(Ops, AttentionMatchesNaiveAndIsBitIdenticalAloneOrInBatch) {
  struct Shape {
    int C, NH, T;
    float q_range;  // queries uniform in [-q_range, q_range]
  };
  // The last shape's queries spread the scores over hundreds: exp underflows to subnormals and to 0
  // at some positions.
  for (Shape s : {Shape{48, 4, 16, 2.0f}, Shape{128, 2, 40, 2.0f}, Shape{36, 3, 9, 2.0f},
                  Shape{64, 2, 33, 60.0f}}) {
    const int C = s.C, NH = s.NH, T = s.T, B = 4;
    // Four rows of four different samples at different positions.
    const std::vector<int> pos = {0, T / 3, T - 1, T / 2};
    std::vector<std::vector<float>> kc, vc;
    std::vector<const float*> kp, vp;
    for (int b = 0; b < B; b++) {
      kc.push_back(random_vec((size_t)T * C, 100 + b, -2.0f, 2.0f));
      vc.push_back(random_vec((size_t)T * C, 200 + b));
    }
    for (int b = 0; b < B; b++) {
      kp.push_back(kc[b].data());
      vp.push_back(vc[b].data());
    }
    auto q = random_vec((size_t)B * C, 18, -s.q_range, s.q_range);
    std::vector<float> scratch(attention_scratch_floats(T, std::max(2, threads())));
    std::vector<float> one((size_t)B * C), two((size_t)B * C), row(C);
    {
      ThreadsGuard g(1);
      attention_forward(one.data(), q.data(), kp.data(), vp.data(), pos.data(), B, C, NH, T,
                        scratch.data());
    }
    {
      ThreadsGuard g(2);
      attention_forward(two.data(), q.data(), kp.data(), vp.data(), pos.data(), B, C, NH, T,
                        scratch.data());
    }
    EXPECT_TRUE(same_bits(one.data(), two.data(), one.size())) << "C=" << C;
    for (int b = 0; b < B; b++) {
      const auto ref = attention_ref(&q[(size_t)b * C], kp[b], vp[b], pos[b], C, NH);
      for (int i = 0; i < C; i++)
        ASSERT_NEAR(one[(size_t)b * C + i], ref[i], 1e-5 * (1.0 + std::fabs(ref[i])))
            << "C=" << C << " b=" << b << " i=" << i;
      attention_forward(row.data(), &q[(size_t)b * C], &kp[b], &vp[b], &pos[b], 1, C, NH, T,
                        scratch.data());
      EXPECT_TRUE(same_bits(row.data(), &one[(size_t)b * C], C)) << "C=" << C << " b=" << b;
    }

    // Rows of one sample, as in a prefill (computed in row pairs where the target has them):
    // positions rising, falling, equal, and rows of another sample between them; each row has
    // the bits it has alone, with 1 and 2 threads.
    const std::vector<int> src = {0, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0},
                           at = {0, 1, T - 1, T / 2, 3, 5, 5, T - 1, 2, 9 % T, 7 % T};
    const int B2 = (int)src.size();
    std::vector<const float*> kp2, vp2;
    for (int i : src) {
      kp2.push_back(kp[i]);
      vp2.push_back(vp[i]);
    }
    const auto q2 = random_vec((size_t)B2 * C, 19, -s.q_range, s.q_range);
    for (int nt : {1, 2}) {
      ThreadsGuard g(nt);
      std::vector<float> all((size_t)B2 * C);
      attention_forward(all.data(), q2.data(), kp2.data(), vp2.data(), at.data(), B2, C, NH, T,
                        scratch.data());
      for (int b = 0; b < B2; b++) {
        attention_forward(row.data(), &q2[(size_t)b * C], &kp2[b], &vp2[b], &at[b], 1, C, NH, T,
                          scratch.data());
        EXPECT_TRUE(same_bits(row.data(), &all[(size_t)b * C], C))
            << "C=" << C << " threads " << nt << " row " << b << " of one cache";
      }
    }
  }
}

TEST(Ops, SoftmaxMatchesDouble) {
  auto x = random_vec(1000, 19, -50.0f, 50.0f);
  x[7] = 1000.0f;  // would overflow exp without the max subtraction
  x[8] = 999.0f;
  std::vector<float> p(x.size());
  softmax_forward(p.data(), x.data(), (int)x.size());
  double sum = 0.0;
  for (float v : p) sum += v;
  EXPECT_NEAR(sum, 1.0, 1e-6);
  EXPECT_NEAR(p[7], 1.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(p[8], std::exp(-1.0) / (1.0 + std::exp(-1.0)), 1e-6);
}

// The one order is a fixed sequence of IEEE operations with explicit fmas, and GELU's tanh and the
// attention's exp are the kernels' own (no libm), so the bits do not depend on the target: x86
// with FMA (AVX2 or AVX-512, GCC or Clang) and aarch64 (NEON; arm_ops_qemu runs this file there)
// give these outputs. The checksum is theirs as the x86 build computed it; a change to the kernels'
// arithmetic changes it, and then the new value is to be recorded only if the aarch64 run agrees.
// Inputs come from an integer generator (std's distributions may differ between libraries).
#if (defined(__FMA__) && (defined(__x86_64__) || defined(__i386__))) || defined(__aarch64__)
TEST(Ops, SameBitsOnEveryTarget) {
  uint64_t state = 42;
  auto gen = [&](size_t n, float scale) {
    std::vector<float> v(n);
    for (auto& x : v) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      x = scale * ((float)(state >> 40) / 16777216.0f * 2.0f - 1.0f);  // exact: 24 bits
    }
    return v;
  };
  uint64_t hash = 14695981039346656037ULL;  // FNV-1a over the outputs' bytes
  auto mix = [&](const std::vector<float>& v) {
    for (float f : v) {
      uint32_t u;
      std::memcpy(&u, &f, 4);
      for (int i = 0; i < 4; i++) hash = (hash ^ ((u >> (8 * i)) & 0xff)) * 1099511628211ULL;
    }
  };
  const int B = 5, IC = 67, OC = 13;
  const auto inp = gen((size_t)B * IC, 1.0f), w = gen((size_t)OC * IC, 0.5f), bias = gen(OC, 0.1f);
  std::vector<float> out((size_t)B * OC);
  matmul_forward(out.data(), inp.data(), w.data(), bias.data(), B, IC, OC);
  mix(out);
  std::vector<uint16_t> wh(w.size());
  for (auto& h : wh) {  // finite halves below 1 in magnitude, both signs
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    h = (uint16_t)((state >> 48) & 0xbbff);
  }
  matmul_forward(out.data(), inp.data(), wh.data(), nullptr, B, IC, OC);
  mix(out);
  std::vector<float> ln((size_t)B * IC);
  const auto g = gen(IC, 1.0f), beta = gen(IC, 0.2f);
  layernorm_forward(ln.data(), inp.data(), g.data(), beta.data(), B, IC, 1e-5f);
  mix(ln);
  auto act = gen(1001, 8.0f);
  gelu_forward(act.data(), (long)act.size());
  mix(act);
  const int C = 48, NH = 4, T = 20;
  const std::vector<int> pos = {0, 9, 19};
  const auto q = gen(3 * C, 6.0f), kc = gen((size_t)T * C, 2.0f), vc = gen((size_t)T * C, 1.0f);
  const std::vector<const float*> kp(3, kc.data()), vp(3, vc.data());
  std::vector<float> att(3 * C), scratch(attention_scratch_floats(T, std::max(2, threads())));
  attention_forward(att.data(), q.data(), kp.data(), vp.data(), pos.data(), 3, C, NH, T,
                    scratch.data());
  mix(att);
  {  // a head size of 16 (no tail), five rows of one cache
    const int C2 = 64, NH2 = 4;
    const std::vector<int> pos2 = {3, 17, 18, 19, 8};
    const auto q2 = gen(5 * C2, 3.0f), k2 = gen((size_t)T * C2, 2.0f),
               v2 = gen((size_t)T * C2, 1.0f);
    const std::vector<const float*> kp2(5, k2.data()), vp2(5, v2.data());
    std::vector<float> att2(5 * C2);
    attention_forward(att2.data(), q2.data(), kp2.data(), vp2.data(), pos2.data(), 5, C2, NH2, T,
                      scratch.data());
    mix(att2);
  }
  mix({dot(inp.data(), w.data(), IC)});
  EXPECT_EQ(hash, 0x9bc636eb7c09426dULL) << std::hex << "outputs' checksum 0x" << hash;
}
#endif

// Documentation, not a requirement: Eigen picks GEMV for one row and GEBP for a batch, which
// reduce in different orders, so a row's bits can depend on the batch. The finding is printed and
// recorded; only our own kernel is asserted.
TEST(Ops, EigenProductDependsOnBatchButOursDoesNot) {
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const int B = 64, IC = 768, OC = 256;
  auto inp = random_vec((size_t)B * IC, 20), w = random_vec((size_t)OC * IC, 21);
  Eigen::Map<const RowMat> X(inp.data(), B, IC), W(w.data(), OC, IC);
  const RowMat batch = X * W.transpose();  // GEMM
  long eigen_diff = 0, ours_diff = 0;
  std::vector<float> ours((size_t)B * OC), alone(OC);
  matmul_forward(ours.data(), inp.data(), w.data(), nullptr, B, IC, OC);
  for (int b = 0; b < B; b++) {
    const RowMat one = X.row(b) * W.transpose();  // GEMV
    for (int o = 0; o < OC; o++) eigen_diff += one(0, o) != batch(b, o);
    matmul_forward(alone.data(), &inp[(size_t)b * IC], w.data(), nullptr, 1, IC, OC);
    for (int o = 0; o < OC; o++) ours_diff += !same_bits(&alone[o], &ours[(size_t)b * OC + o], 1);
  }
  std::ostringstream msg;
  msg << "Eigen " << EIGEN_WORLD_VERSION << "." << EIGEN_MAJOR_VERSION << "." << EIGEN_MINOR_VERSION
      << ": " << eigen_diff << " of " << B * OC
      << " elements differ in bits between one row (GEMV) and a " << B
      << "-row batch (GEMM); mdi::cpu::matmul_forward: " << ours_diff;
  std::printf("[   NOTE   ] %s\n", msg.str().c_str());
  RecordProperty("eigen_batch_dependent_elements", (int)eigen_diff);
  RecordProperty("note", msg.str());
  EXPECT_EQ(ours_diff, 0);
}

}  // namespace
}  // namespace mdi::cpu
