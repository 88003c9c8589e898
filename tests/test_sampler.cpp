// Sampler tests: greedy and ties, one draw per call, per-stream determinism, the distributions of
// temperature, top-k and top-p sampling against their definitions, token-exact agreement with a
// plain full-sort reference on large vocabularies, and flag validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "mdi/error.h"
#include "mdi/sampler.h"

namespace {

mdi::SamplingParams params(float t, int k = 0, float p = 1.0f) {
  mdi::SamplingParams s;
  s.temperature = t;
  s.top_k = k;
  s.top_p = p;
  return s;
}

// The rows the tests sample from: normal(0, sd); the same with every 997th token 15 ahead
// (peaked); all equal to `flat`; normal rounded toward zero (coarse: many ties); normal with
// signed zeros, NaNs and infinities at fixed ids (special). One draw of gen per token, none when
// flat.
enum class Row { kNormal, kPeaked, kFlat, kCoarse, kSpecial };

std::vector<float> test_row(Row kind, int V, std::mt19937& gen, float sd, float flat = 0.5f) {
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> l(V);
  for (int i = 0; i < V; ++i) {
    switch (kind) {
      case Row::kNormal: l[i] = nd(gen); break;
      case Row::kPeaked: l[i] = nd(gen) + (i % 997 == 0 ? 15.0f : 0.0f); break;
      case Row::kFlat: l[i] = flat; break;
      case Row::kCoarse: l[i] = float(int(nd(gen))); break;
      case Row::kSpecial:
        l[i] = nd(gen);
        if (i % 7 == 0) l[i] = i % 14 ? NAN : (i % 28 ? -0.0f : 0.0f);
        if (i % 101 == 0) l[i] = i % 202 ? INFINITY : -INFINITY;
        break;
    }
  }
  return l;
}

// Draws n samples and returns the frequency of each id.
std::vector<double> frequencies(const mdi::SamplingParams& sp, const std::vector<float>& logits, int n) {
  mdi::Sampler s(sp, int(logits.size()));
  mdi::Rng rng(42, 0);
  std::vector<double> f(logits.size(), 0);
  for (int i = 0; i < n; ++i) f[s.sample(logits.data(), rng)] += 1.0 / n;
  return f;
}

// Expected probabilities: softmax(l / t) over `keep`, zero elsewhere.
std::vector<double> expected(const std::vector<float>& l, float t, const std::vector<int>& keep) {
  std::vector<double> p(l.size(), 0);
  double z = 0;
  for (int i : keep) z += p[i] = std::exp(l[i] / t);
  for (double& x : p) x /= z;
  return p;
}

// Within 5 standard deviations of a binomial frequency.
void expect_close(const std::vector<double>& got, const std::vector<double>& want, int n) {
  for (size_t i = 0; i < got.size(); ++i) {
    const double sd = std::sqrt(want[i] * (1 - want[i]) / n) + 1e-12;
    EXPECT_LE(std::fabs(got[i] - want[i]), 5 * sd + (want[i] == 0 ? 0 : 1e-9)) << "token " << i;
  }
}

TEST(Sampler, GreedyPicksFirstMaximumAndDrawsOnce) {
  std::vector<float> l = {0.1f, 2.0f, -1.0f, 2.0f};
  mdi::Sampler s(params(0), 4);
  mdi::Rng a(7, 3), b(7, 3);
  EXPECT_EQ(s.sample(l.data(), a), 1);
  b.next_u64();
  EXPECT_EQ(a.next_u64(), b.next_u64());  // exactly one number was drawn
}

TEST(Sampler, EveryModeDrawsExactlyOnce) {
  std::vector<float> l(1000);
  for (size_t i = 0; i < l.size(); ++i) l[i] = float(std::cos(0.37 * double(i)) * 4);
  for (const mdi::SamplingParams& sp : {params(0), params(1), params(0.7f, 10), params(1, 0, 0.9f),
                                        params(1.3f, 50, 0.5f), params(1, 1), params(1, 0, 1e-6f)}) {
    mdi::Sampler s(sp, int(l.size()));
    mdi::Rng a(9, 4), b(9, 4);
    for (int i = 0; i < 50; ++i) {
      s.sample(l.data(), a);
      b.next_u64();
    }
    EXPECT_EQ(a.next_u64(), b.next_u64()) << sp.temperature << " " << sp.top_k << " " << sp.top_p;
  }
}

// The stream derivation is part of the output (a --seed must give the same text on every build):
// pinned values of splitmix64(seed) ^ splitmix64(stream ^ 0x5851f42d4c957f2d), one more step, then
// splitmix64 outputs (checked against a Python transcription of the same formula).
TEST(Sampler, StreamDerivationIsPinned) {
  mdi::Rng a(1337, 0), b(0, 0), c(1337, 5);
  EXPECT_EQ(a.next_u64(), 0x003f65ccb6985ff1ULL);
  EXPECT_EQ(a.next_u64(), 0x5cda2771e1268377ULL);
  EXPECT_EQ(b.next_u64(), 0x175347a385b9d9d4ULL);
  EXPECT_EQ(b.next_u64(), 0xbb2dc4b526767c78ULL);
  EXPECT_EQ(c.next_u64(), 0x5e9156df728e020eULL);
  mdi::Rng d(1337, 5);
  d.next_u64();
  EXPECT_EQ(d.uniform(), double(0xa935fbfd281a4f11ULL >> 11) * 0x1.0p-53);
}

TEST(Sampler, StreamsAreDeterministicAndDistinct) {
  mdi::Rng a(1337, 0), b(1337, 0), c(1337, 1), d(1338, 0);
  for (int i = 0; i < 100; ++i) {
    const uint64_t x = a.next_u64();
    EXPECT_EQ(x, b.next_u64());
    EXPECT_NE(x, c.next_u64());
    EXPECT_NE(x, d.next_u64());
  }
  mdi::Rng u(5, 5);
  for (int i = 0; i < 1000; ++i) {
    const double v = u.uniform();
    EXPECT_GE(v, 0.0);
    EXPECT_LT(v, 1.0);
  }
}

TEST(Sampler, TemperatureMatchesSoftmax) {
  const std::vector<float> l = {1.0f, 0.5f, -0.3f, 2.0f, 0.0f};
  const int n = 200000;
  for (float t : {1.0f, 0.5f, 2.0f})
    expect_close(frequencies(params(t), l, n), expected(l, t, {0, 1, 2, 3, 4}), n);
}

TEST(Sampler, TopKKeepsOnlyTheKBestRenormalised) {
  const std::vector<float> l = {1.0f, 0.5f, -0.3f, 2.0f, 0.0f, 1.5f};
  const int n = 200000;
  expect_close(frequencies(params(1.0f, 3), l, n), expected(l, 1.0f, {3, 5, 0}), n);
  // Ties at the cut: the lower id wins.
  const std::vector<float> tie = {1.0f, 3.0f, 1.0f, 1.0f};
  expect_close(frequencies(params(1.0f, 2), tie, n), expected(tie, 1.0f, {1, 0}), n);
}

TEST(Sampler, TopPKeepsTheSmallestPrefix) {
  // probabilities ~ 0.5, 0.25, 0.125, 0.125 (as logits of powers of two)
  const std::vector<float> l = {std::log(4.0f), std::log(2.0f), 0.0f, 0.0f};
  const int n = 200000;
  expect_close(frequencies(params(1.0f, 0, 0.7f), l, n), expected(l, 1.0f, {0, 1}), n);
  expect_close(frequencies(params(1.0f, 0, 0.4f), l, n), expected(l, 1.0f, {0}), n);
  expect_close(frequencies(params(1.0f, 0, 0.8f), l, n), expected(l, 1.0f, {0, 1, 2}), n);
  // top-k then top-p
  expect_close(frequencies(params(1.0f, 3, 0.9f), l, n), expected(l, 1.0f, {0, 1, 2}), n);
}

// The definition written out plainly: sort everything by (logit desc, id asc), keep the top k, then
// the smallest prefix with mass >= top_p, draw u * mass. Candidate weights are summed in id order
// and the draw walks ids in id order without top-p and the nucleus in sorted order with it, as the
// sampler documents, so the two must agree token for token.
int reference_sample(const mdi::SamplingParams& sp, const std::vector<float>& l, double u) {
  const int V = int(l.size());
  std::vector<int> ids(V);
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return l[a] > l[b]; });
  if (sp.temperature == 0) return ids[0];
  const int k = sp.top_k > 0 && sp.top_k < V ? sp.top_k : V;
  std::vector<int> cand(ids.begin(), ids.begin() + k);  // sorted
  std::vector<int> by_id = cand;
  std::sort(by_id.begin(), by_id.end());
  const double mx = l[ids[0]];
  auto w = [&](int i) { return std::exp((double(l[i]) - mx) * (1.0 / sp.temperature)); };
  double z = 0;
  for (int i : by_id) z += w(i);
  std::vector<int> walk = by_id;
  double mass = z;
  if (sp.top_p < 1.0f && k > 1) {
    double c = 0;
    size_t n = 0;
    while (n < cand.size()) {
      c += w(cand[n++]);
      if (c >= double(sp.top_p) * z) break;
    }
    walk.assign(cand.begin(), cand.begin() + n);
    mass = c;
  }
  double c = 0;
  for (int i : walk)
    if ((c += w(i)) > u * mass) return i;
  return walk.back();
}

TEST(Sampler, AgreesWithAFullSortReference) {
  std::mt19937 gen(3);
  const int V = 3000;
  // flat: every token is a candidate; coarse: many ties at the cuts
  const Row kinds[] = {Row::kNormal, Row::kPeaked, Row::kFlat, Row::kCoarse};
  for (int dist = 0; dist < 4; ++dist) {
    const std::vector<float> l = test_row(kinds[dist], V, gen, 2.5f);
    for (const mdi::SamplingParams& sp :
         {params(0), params(1), params(0.8f, 40), params(1, 2999), params(0.8f, 0, 0.95f), params(1, 0, 0.5f),
          params(1.5f, 0, 0.999f), params(0.8f, 40, 0.9f), params(1, 1000, 0.3f), params(1, 0, 1e-6f)}) {
      mdi::Sampler s(sp, V);
      mdi::Rng rng(11, uint64_t(dist));
      for (int i = 0; i < 60; ++i) {
        mdi::Rng peek = rng;
        const double u = peek.uniform();
        ASSERT_EQ(s.sample(l.data(), rng), reference_sample(sp, l, u))
            << "dist " << dist << " T " << sp.temperature << " k " << sp.top_k << " p " << sp.top_p << " draw " << i;
      }
    }
  }
}

// select_top against a full stable sort under the order it documents (logit desc, NaN last, id
// asc), on rows with ties, signed zeros, infinities and NaNs.
TEST(Sampler, SelectTopIsTheUniqueBestSetInIdOrder) {
  std::mt19937 gen(5);
  const int V = 777;
  const Row kinds[] = {Row::kNormal, Row::kCoarse, Row::kFlat, Row::kSpecial};
  for (int dist = 0; dist < 4; ++dist) {
    const std::vector<float> l = test_row(kinds[dist], V, gen, 2.0f, 0.25f);
    std::vector<int> order(V);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return std::isnan(l[b]) ? !std::isnan(l[a]) : l[a] > l[b];
    });
    for (int k : {1, 2, 40, 100, 776, 777}) {
      std::vector<int> ids(k), want(order.begin(), order.begin() + k);
      std::vector<float> vals(k);
      mdi::select_top(l.data(), V, k, ids.data(), vals.data());
      std::sort(want.begin(), want.end());
      ASSERT_EQ(ids, want) << "dist " << dist << " k " << k;
      for (int i = 0; i < k; ++i) ASSERT_EQ(std::memcmp(&vals[i], &l[ids[i]], sizeof(float)), 0);
    }
  }
}

// What the CUDA backend relies on: the k best of a row are all a sampler with candidates() = k
// needs. sample_top on select_top's output gives sample()'s token and consumes the same draw.
TEST(Sampler, SampleTopOnTheBestCandidatesEqualsSampleOnTheRow) {
  std::mt19937 gen(9);
  const int V = 5000;
  const Row kinds[] = {Row::kNormal, Row::kCoarse, Row::kFlat};
  for (int dist = 0; dist < 3; ++dist) {
    const std::vector<float> l = test_row(kinds[dist], V, gen, 3.0f, 1.0f);
    for (const mdi::SamplingParams& sp : {params(0), params(1, 1), params(0.8f, 40), params(1.3f, 4999),
                                          params(0.8f, 40, 0.9f), params(1, 1000, 0.3f)}) {
      mdi::Sampler whole(sp, V), top(sp, V);
      const int k = whole.candidates();
      ASSERT_EQ(k, sp.temperature == 0 ? 1 : sp.top_k);
      std::vector<int> ids(k);
      std::vector<float> vals(k);
      mdi::select_top(l.data(), V, k, ids.data(), vals.data());
      mdi::Rng a(21, uint64_t(dist)), b(21, uint64_t(dist));
      for (int i = 0; i < 50; ++i)
        ASSERT_EQ(whole.sample(l.data(), a), top.sample_top(ids.data(), vals.data(), b))
            << "dist " << dist << " T " << sp.temperature << " k " << sp.top_k << " p " << sp.top_p;
      ASSERT_EQ(a.next_u64(), b.next_u64());
    }
  }
  EXPECT_EQ(mdi::Sampler(params(1), V).candidates(), 0);          // plain temperature: whole row
  EXPECT_EQ(mdi::Sampler(params(1, 0, 0.9f), V).candidates(), 0);  // top-p alone: whole row
  EXPECT_EQ(mdi::Sampler(params(1, V), V).candidates(), 0);        // k = V keeps every token
}

TEST(Sampler, LargeVocabularyIsCheapAndValid) {
  std::vector<float> l(50257);
  for (size_t i = 0; i < l.size(); ++i) l[i] = float(std::sin(double(i)));
  mdi::Sampler s(params(0.8f, 40, 0.95f), int(l.size()));
  mdi::Rng rng(1, 2);
  for (int i = 0; i < 200; ++i) {
    const int id = s.sample(l.data(), rng);
    ASSERT_GE(id, 0);
    ASSERT_LT(id, int(l.size()));
    EXPECT_GT(l[id], 0.99f);  // the top 40 of sin(i) over 50257 ids are all above 0.99
  }
}

TEST(Sampler, RejectsBadParameters) {
  EXPECT_THROW(mdi::Sampler(params(-1.0f), 4), mdi::UserError);
  EXPECT_THROW(mdi::Sampler(params(NAN), 4), mdi::UserError);
  EXPECT_THROW(mdi::Sampler(params(1.0f, -1), 4), mdi::UserError);
  EXPECT_THROW(mdi::Sampler(params(1.0f, 0, 0.0f), 4), mdi::UserError);
  EXPECT_THROW(mdi::Sampler(params(1.0f, 0, 1.5f), 4), mdi::UserError);
  EXPECT_THROW(mdi::Sampler(params(1.0f), 0), mdi::UserError);
}

}  // namespace
