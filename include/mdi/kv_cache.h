// Per-rank, per-sample key/value cache of the CPU backend: for each local layer and each sample,
// T rows of C keys and C values (T: the run's longest context, at most block_size). Sized once at
// start-up from (layers, samples, T).
#pragma once

#include <cstddef>

#include "mdi/big_array.h"

namespace mdi {

class KVCache {
 public:
  KVCache() = default;
  KVCache(int layers, int samples, int T, int C);
  float* k(int layer, int sample) { return k_.data() + offset(layer, sample); }
  float* v(int layer, int sample) { return v_.data() + offset(layer, sample); }
  size_t bytes() const { return (k_.size() + v_.size()) * sizeof(float); }
  int samples() const { return S_; }

 private:
  size_t offset(int layer, int sample) const {
    return (static_cast<size_t>(layer) * S_ + sample) * static_cast<size_t>(T_) * C_;
  }
  int S_ = 0, T_ = 0, C_ = 0;
  BigArray<float> k_, v_;
};

}  // namespace mdi
