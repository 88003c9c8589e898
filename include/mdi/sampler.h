// Choosing the next token from logits on rank 0: greedy, temperature, top-k, top-p.
// Each sample has its own random stream derived from (seed, sample index) and draws exactly one
// number per generated token, so neither the split nor the micro-batching can change the result.
#pragma once

#include <cstdint>
#include <vector>

namespace mdi {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy (argmax, lowest id on ties)
  int top_k = 0;             // 0 = off; else keep the k most likely tokens
  float top_p = 1.0f;        // 1 = off; else keep the smallest set with probability >= top_p
  uint64_t seed = 1337;
};

// splitmix64-based stream, fixed across platforms and library versions.
class Rng {
 public:
  Rng(uint64_t seed, uint64_t stream);
  uint64_t next_u64();
  double uniform();  // [0, 1), 53 random bits

 private:
  uint64_t state_;
};

class Sampler {
 public:
  // V = vocab size; the scratch buffers are sized here, once.
  Sampler(const SamplingParams& p, int V);
  // logits: V floats. Draws one number from rng (also when greedy, to keep streams aligned).
  int sample(const float* logits, Rng& rng);

 private:
  SamplingParams p_;
  int V_;
  std::vector<double> probs_;  // candidate weights exp((l - max) / T), in candidate order
  std::vector<int> order_;
};

}  // namespace mdi
