// Next-token sampling on rank 0: greedy, temperature, top-k, top-p, one draw per call.
#include "mdi/sampler.h"

#include <algorithm>
#include <cmath>

#include "mdi/error.h"

namespace mdi {

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
}  // namespace

// The stream's state is two rounds of splitmix64 over seed and stream index, so neighbouring
// seeds and neighbouring samples start far apart.
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
  if (p.top_k < 0) user_error("--top-k must be >= 0, got {}", p.top_k);
  if (!(p.top_p > 0 && p.top_p <= 1)) user_error("--top-p must be in (0, 1], got {}", p.top_p);
  if (V <= 0) user_error("vocabulary size must be positive, got {}", V);
  probs_.resize(V);
  order_.resize(V);
}

int Sampler::sample(const float* logits, Rng& rng) {
  const double u = rng.uniform();  // always exactly one draw: streams stay aligned
  if (p_.temperature == 0) return int(std::max_element(logits, logits + V_) - logits);  // first max

  // The candidate set: all ids, or the top k by (logit desc, id asc).
  int n = V_;
  for (int i = 0; i < V_; ++i) order_[i] = i;
  auto better = [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  const bool top_k = p_.top_k > 0 && p_.top_k < V_;
  const bool top_p = p_.top_p < 1.0f;
  if (top_k) {
    std::nth_element(order_.begin(), order_.begin() + p_.top_k, order_.begin() + V_, better);
    n = p_.top_k;
  }
  if (top_p || top_k) std::sort(order_.begin(), order_.begin() + n, better);

  // Probabilities of the candidates at this temperature (double, max subtracted).
  const double inv_t = 1.0 / p_.temperature;
  double mx = -INFINITY;
  for (int i = 0; i < n; ++i) mx = std::max(mx, double(logits[order_[i]]));
  double z = 0;
  for (int i = 0; i < n; ++i) {
    const double e = std::exp((double(logits[order_[i]]) - mx) * inv_t);
    probs_[i] = e;
    z += e;
  }
  // top-p: the smallest prefix (most likely first) with mass >= top_p.
  double kept = z;
  if (top_p) {
    double c = 0;
    for (int i = 0; i < n; ++i) {
      c += probs_[i];
      if (c >= p_.top_p * z) {
        n = i + 1;
        break;
      }
    }
    kept = c;
  }
  const double target = u * kept;
  double c = 0;
  for (int i = 0; i < n; ++i) {
    c += probs_[i];
    if (c > target) return order_[i];
  }
  return order_[n - 1];  // rounding: the last kept token
}

}  // namespace mdi
