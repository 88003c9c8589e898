// Sampler tests: greedy and ties, one draw per call, per-stream determinism, the distributions of
// temperature, top-k and top-p sampling against their definitions, and flag validation.
#include <gtest/gtest.h>

#include <cmath>
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
