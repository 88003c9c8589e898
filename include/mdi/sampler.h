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

// The k best of logits[0, V) by (logit desc, id asc), NaNs last, written in id order to ids and
// their logits to vals; 1 <= k <= V. The ordering is total, so the set is unique: any correct
// selection (the CUDA backend's on the GPU) gives exactly these ids and values.
void select_top(const float* logits, int V, int k, int* ids, float* vals);

// How many of a row's best logits sampling with p over V tokens depends on: 1 when greedy, k
// under top-k (k < V), 0 when it needs the whole row (plain temperature, top-p alone).
int sampling_candidates(const SamplingParams& p, int V);

class Sampler {
 public:
  // V = vocab size; the scratch buffers are sized here, once.
  Sampler(const SamplingParams& p, int V);
  // logits: V floats. Draws one number from rng (also when greedy, to keep streams aligned).
  int sample(const float* logits, Rng& rng);
  // sampling_candidates of this sampler.
  int candidates() const { return sampling_candidates(p_, V_); }
  // sample() from only the candidates() best of a row (select_top's output): the same token
  // and the same one draw as sample() on the whole row.
  int sample_top(const int* ids, const float* vals, Rng& rng);

 private:
  // The draw over candidates ids[0, n) (ascending) with logits vals[0, n): temperature, then
  // top-p within them.
  int draw(double u, const int* ids, const float* vals, int n);

  SamplingParams p_;
  int V_;
  std::vector<double> probs_;  // candidate weights exp((l - max) / T), in candidate order
  std::vector<int> order_;     // candidate indices (top-p) / token ids (top-k selection)
  std::vector<int> top_ids_;   // the top-k candidates of sample(): ids, then their logits
  std::vector<float> top_vals_;
};

}  // namespace mdi
