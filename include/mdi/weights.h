// Loading one rank's share of the model from the HDF5 weight file (schema in DESIGN.md).
// A rank reads only the groups of its own layers (and rank 0 the embeddings and ln_f), into one
// allocation, converted to fp32 (a float16 file's matrices may stay halves: keep_halves). Every
// shape is checked against the root attributes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mdi/big_array.h"
#include "mdi/config.h"

namespace mdi {

// Pointers into Weights::storage; biases are nullptr when Config::bias is false.
struct LayerWeights {
  const float* ln1_w;    // (C)
  const float* ln1_b;    // (C)
  const float* attn_w;   // (3C, C)   rows: q, k, v
  const float* attn_b;   // (3C)
  const float* aproj_w;  // (C, C)
  const float* aproj_b;  // (C)
  const float* ln2_w;    // (C)
  const float* ln2_b;    // (C)
  const float* fc_w;     // (4C, C)
  const float* fc_b;     // (4C)
  const float* mproj_w;  // (C, 4C)
  const float* mproj_b;  // (C)
};

struct HeadWeights {
  const float* wte;      // (V, C); rank 0 only
  const float* wpe;      // (T, C); rank 0 only
  const float* lnf_w;    // (C)
  const float* lnf_b;    // (C)
  const float* lm_head;  // (lm_end - lm_begin, C): rows [lm_begin, lm_end) of the lm_head (of wte when tied)
  int lm_begin = 0, lm_end = 0;  // empty on ranks that compute no logits
};

struct Weights {
  int layer_begin = 0, layer_end = 0;  // this rank's layers [begin, end)
  bool has_head = false;               // embeddings, ln_f, lm_head rows (rank 0)
  std::vector<LayerWeights> layers;    // layer_end - layer_begin entries
  HeadWeights head{};
  // When true, the 2-D tensors (the four matrices of each layer, wte, wpe, the lm_head's rows) hold
  // IEEE binary16 values, read through f16() (offsets in halves); the 1-D ones are fp32 always.
  // Only load_weights' keep_halves sets it. Both backends take such weights: the CPU's widens them
  // exactly before any product, a CUDA rank copies them to the GPU.
  bool matrices_f16 = false;
  BigArray<float> storage;  // the one allocation; every tensor starts 64-byte aligned
  size_t bytes() const { return storage.size() * sizeof(float); }
  static const uint16_t* f16(const float* p) { return reinterpret_cast<const uint16_t*>(p); }
};

// Reads the root attributes and checks them (positive sizes, n_embd % n_head == 0, format).
// Throws UserError naming the file and attribute.
Config read_config(const std::string& path);

// Loads layers [layer_begin, layer_end), if with_head the embeddings, and ln_f with the lm_head's
// rows [lm_begin, lm_end) (lm_end < 0: rows [0, vocab_size) with the head, none without; the last
// rank of a head split loads its rows without the embeddings).
// keep_halves: a file whose 2-D datasets are all float16 keeps them so (Weights::matrices_f16),
// half the memory of fp32 and no conversion; otherwise, and by default, everything is fp32.
// Throws UserError on a missing dataset or a wrong shape ("expected (a, b), got (c, d)").
Weights load_weights(const std::string& path, const Config& cfg, int layer_begin, int layer_end,
                     bool with_head, int lm_begin = 0, int lm_end = -1, bool keep_halves = false);

}  // namespace mdi
