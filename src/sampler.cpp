// Next-token sampling on rank 0: greedy, temperature, top-k, top-p, one draw per call.
// Cost per token is O(V) except top-p, which sorts only the tokens that can be in the nucleus.
// Leaves out: repetition penalties, min-p, logit biases.
#include "mdi/sampler.h"

#include <algorithm>
#include <cmath>

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
}

// Candidates are token ids in order_[0, n) and their weights exp((l - max) / T) in probs_[0, n).
// The draw walks the candidates in that order: id order, except under top-p, where it is the
// nucleus order (logit desc, id asc), so the result never depends on std::nth_element's layout.
int Sampler::sample(const float* logits, Rng& rng) {
  const double u = rng.uniform();  // always exactly one draw: streams stay aligned
  const int best = argmax(logits, V_);
  if (p_.temperature == 0) return best;

  const double mx = logits[best], inv_t = 1.0 / p_.temperature;
  auto better = [logits](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  const bool top_k = p_.top_k > 0 && p_.top_k < V_;
  const bool top_p = p_.top_p < 1.0f;
  int* ids = order_.data();
  double* w = probs_.data();

  if (!top_k && !top_p) {  // plain temperature: walk all ids, no index list
    double z = 0;
    for (int i = 0; i < V_; ++i) z += w[i] = std::exp((double(logits[i]) - mx) * inv_t);
    const double target = u * z;
    double c = 0;
    for (int i = 0; i < V_; ++i)
      if ((c += w[i]) > target) return i;
    return V_ - 1;  // rounding: the last candidate
  }

  // The candidate set: all ids, or the k best by (logit desc, id asc), in id order.
  int n = V_;
  for (int i = 0; i < V_; ++i) ids[i] = i;
  if (top_k) {
    n = p_.top_k;
    std::nth_element(ids, ids + n - 1, ids + V_, better);  // ids[0, n) are the k best
    std::sort(ids, ids + n);
  }
  double z = 0;
  for (int i = 0; i < n; ++i) z += w[i] = std::exp((double(logits[ids[i]]) - mx) * inv_t);

  double kept = z;
  if (top_p && n > 1) {
    // The nucleus: the smallest prefix, by (logit desc, id asc), with mass >= top_p * z. Only
    // candidates of weight >= thr can be in it: if one below thr were needed, it and everything
    // after it weigh < (n-1) * thr = (1-top_p) * z / 2, so the prefix before it already had
    // > top_p * z. The margin (1-top_p) * z / 2 dwarfs rounding, so the cut is exactly the one a
    // full sort gives; only the sort is smaller (the whole vocabulary only when nearly flat).
    const double thr = 0.5 * (1.0 - double(p_.top_p)) * z / double(n - 1);
    int m = 0;
    for (int i = 0; i < n; ++i)
      if (w[i] >= thr) ids[m++] = ids[i];  // the maximum (w = 1 > thr) always stays
    std::sort(ids, ids + m, better);
    const double target_mass = double(p_.top_p) * z;
    double c = 0;
    int cut = m;
    for (int i = 0; i < m; ++i) {
      c += w[i] = std::exp((double(logits[ids[i]]) - mx) * inv_t);
      if (c >= target_mass) {
        cut = i + 1;
        break;
      }
    }
    n = cut;
    kept = c;
  }

  const double target = u * kept;
  double c = 0;
  for (int i = 0; i < n; ++i)
    if ((c += w[i]) > target) return ids[i];
  return ids[n - 1];  // rounding: the last kept token
}

}  // namespace mdi
