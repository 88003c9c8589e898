// Model hyper-parameters, read from the HDF5 root attributes (see DESIGN.md, "The weight file").
// Dimension names used across the code base:
//   B  rows in a batch (tokens of several samples, stacked)   T  block_size (context length)
//   C  n_embd     NH n_head     HS head size = C / NH     L  n_layer     V  vocab_size
#pragma once

#include <cstdint>
#include <string>

namespace mdi {

struct Config {
  std::string model_type;  // "gpt2" | "nanogpt"
  int n_layer = 0;         // L
  int n_head = 0;          // NH
  int n_embd = 0;          // C
  int block_size = 0;      // T
  int vocab_size = 0;      // V
  bool bias = true;        // Linear and LayerNorm biases present
  bool tied_lm_head = true;  // lm_head shares wte (no /lm_head/weight dataset)
  float layer_norm_eps = 1e-5f;

  int head_size() const { return n_embd / n_head; }
  // Parameters of one transformer block (weights and, if bias, biases).
  int64_t block_params() const;
  // Parameters only rank 0 holds: wte, wpe, ln_f (and lm_head when untied).
  int64_t head_params() const;
};

}  // namespace mdi
