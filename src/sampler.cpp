// Next-token sampling on rank 0: greedy, temperature, top-k, top-p, one draw per call.
// Cost per token is O(V) except top-p, which sorts only the tokens that can be in the nucleus.
// Leaves out: repetition penalties, min-p, logit biases.
#include "mdi/sampler.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "mdi/error.h"

namespace mdi {

namespace {
// Lowest id of the largest logit (NaNs are skipped). Eight independent running maxima so that the
// compiler vectorises the scan; a single "if (l[i] > l[best])" chain is ~8x slower at V = 50257.
int argmax(const float* l, int V) {
  float m[8];
  for (float& x : m) x = -INFINITY;
  int i = 0;
  for (; i + 8 <= V; i += 8)
    for (int j = 0; j < 8; ++j) m[j] = l[i + j] > m[j] ? l[i + j] : m[j];
  float mx = m[0];
  for (int j = 1; j < 8; ++j) mx = m[j] > mx ? m[j] : mx;
  for (; i < V; ++i) mx = l[i] > mx ? l[i] : mx;
  for (int b = 0; b < V; ++b)
    if (l[b] == mx) return b;
  return 0;  // every logit is NaN
}

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
}  // namespace

// The stream's state is splitmix64(seed) ^ splitmix64(stream ^ K), then one more splitmix64 step,
// so neighbouring seeds and neighbouring samples start far apart. This derivation is part of the
// output: changing it changes every sampled text for a given --seed.
Rng::Rng(uint64_t seed, uint64_t stream) {
  uint64_t a = seed, b = stream ^ 0x5851f42d4c957f2dULL;
  state_ = splitmix64(a) ^ splitmix64(b);
  splitmix64(state_);
}

uint64_t Rng::next_u64() { return splitmix64(state_); }

double Rng::uniform() { return double(next_u64() >> 11) * 0x1.0p-53; }

Sampler::Sampler(const SamplingParams& p, int V) : p_(p), V_(V) {
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature))
    user_error("--temperature must be >= 0, got {}", p.temperature);
  if (p.top_k < 0) user_error("--top-k must be >= 0 (0 = off), got {}", p.top_k);
  if (!(p.top_p > 0 && p.top_p <= 1)) user_error("--top-p must be in (0, 1] (1 = off), got {}", p.top_p);
  if (V <= 0) user_error("vocabulary size must be positive, got {}", V);
  probs_.resize(V);
  order_.resize(V);
  if (candidates() > 1) {
    top_ids_.resize(candidates());
    top_vals_.resize(candidates());
  }
}

int sampling_candidates(const SamplingParams& p, int V) {
  if (p.temperature == 0) return 1;
  return p.top_k > 0 && p.top_k < V ? p.top_k : 0;
}

namespace {
// select_top on caller-provided scratch (V ints).
void select_into(const float* logits, int V, int k, int* scratch, int* ids, float* vals) {
  if (k < 1 || k > V) abort_job(fmt::format("internal error: select_top of {} from {}", k, V));
  if (k == 1) {
    ids[0] = argmax(logits, V);  // the same order: NaNs skipped, lowest id of the maximum
  } else {
    // NaN after every number; equal logits (-0 == +0 too) by id: a total order.
    auto better = [logits](int a, int b) {
      const float x = logits[a], y = logits[b];
      if (std::isnan(x) || std::isnan(y)) return !std::isnan(x) || (std::isnan(y) && a < b);
      return x > y || (x == y && a < b);
    };
    for (int i = 0; i < V; ++i) scratch[i] = i;
    std::nth_element(scratch, scratch + k - 1, scratch + V, better);  // [0, k) are the k best
    std::sort(scratch, scratch + k);
    std::copy(scratch, scratch + k, ids);
  }
  for (int i = 0; i < k; ++i) vals[i] = logits[ids[i]];
}
}  // namespace

void select_top(const float* logits, int V, int k, int* ids, float* vals) {
  std::vector<int> scratch(size_t(std::max(V, 0)));
  select_into(logits, V, k, scratch.data(), ids, vals);
}

int Sampler::sample(const float* logits, Rng& rng) {
  const int k = candidates();
  if (k == 0) {  // every id is a candidate: no index list
    const double u = rng.uniform();  // always exactly one draw: streams stay aligned
    return draw(u, nullptr, logits, V_);
  }
  if (k == 1) {
    rng.uniform();
    return argmax(logits, V_);
  }
  select_into(logits, V_, k, order_.data(), top_ids_.data(), top_vals_.data());
  return sample_top(top_ids_.data(), top_vals_.data(), rng);
}

int Sampler::sample_top(const int* ids, const float* vals, Rng& rng) {
  const double u = rng.uniform();  // always exactly one draw: streams stay aligned
  const int k = candidates();
  if (k == 0) abort_job("internal error: sample_top needs a sampler with candidates() > 0");
  return k == 1 ? ids[0] : draw(u, ids, vals, k);
}

// Candidate c is token ids[c] (c itself when ids is null), of logit vals[c]; ids ascend. Weights
// are exp((l - max) / T) in probs_[0, n). The draw walks the candidates in order: id order, except
// under top-p, where it is the nucleus order (logit desc, id asc), so the result never depends on
// std::nth_element's layout.
int Sampler::draw(double u, const int* ids, const float* vals, int n) {
  const int best = argmax(vals, n);
  const double mx = vals[best], inv_t = 1.0 / p_.temperature;
  auto id = [ids](int c) { return ids ? ids[c] : c; };
  double* w = probs_.data();
  double z = 0;
  for (int c = 0; c < n; ++c) z += w[c] = std::exp((double(vals[c]) - mx) * inv_t);

  if (p_.top_p < 1.0f && n > 1) {
    // The nucleus: the smallest prefix, by (logit desc, id asc), with mass >= top_p * z. Only
    // candidates of weight >= thr can be in it: if one below thr were needed, it and everything
    // after it weigh < (n-1) * thr = (1-top_p) * z / 2, so the prefix before it already had
    // > top_p * z. The margin (1-top_p) * z / 2 dwarfs rounding, so the cut is exactly the one a
    // full sort gives; only the sort is smaller (the whole vocabulary only when nearly flat).
    const double thr = 0.5 * (1.0 - double(p_.top_p)) * z / double(n - 1);
    int* order = order_.data();
    int m = 0;
    for (int c = 0; c < n; ++c)
      if (w[c] >= thr) order[m++] = c;  // the maximum (w = 1 > thr) always stays
    // Candidate order is id order, so ties in logit go to the lower candidate index.
    std::sort(order, order + m, [vals](int a, int b) { return vals[a] > vals[b] || (vals[a] == vals[b] && a < b); });
    const double target_mass = double(p_.top_p) * z;
    double c = 0;
    int cut = m;
    for (int i = 0; i < m; ++i) {
      c += w[i] = std::exp((double(vals[order[i]]) - mx) * inv_t);
      if (c >= target_mass) {
        cut = i + 1;
        break;
      }
    }
    const double target = u * c;
    double acc = 0;
    for (int i = 0; i < cut; ++i)
      if ((acc += w[i]) > target) return id(order[i]);
    return id(order[cut - 1]);  // rounding: the last kept token
  }

  const double target = u * z;
  double c = 0;
  for (int i = 0; i < n; ++i)
    if ((c += w[i]) > target) return id(i);
  return id(n - 1);  // rounding: the last candidate
}

}  // namespace mdi
