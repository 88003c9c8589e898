// Parameter counts derived from the hyper-parameters (memory estimates, partition costs).
#include "mdi/config.h"

namespace mdi {

int64_t Config::block_params() const {
  const int64_t C = n_embd;
  int64_t p = 12 * C * C;          // c_attn 3C^2, attn c_proj C^2, c_fc 4C^2, mlp c_proj 4C^2
  p += 2 * C;                      // ln_1, ln_2 weights
  if (bias) p += 2 * C + 3 * C + C + 4 * C + C;  // ln biases, c_attn, c_proj, c_fc, c_proj
  return p;
}

int64_t Config::head_params() const {
  const int64_t C = n_embd;
  int64_t p = int64_t(vocab_size) * C + int64_t(block_size) * C + C + (bias ? C : 0);
  if (!tied_lm_head) p += int64_t(vocab_size) * C;
  return p;
}

}  // namespace mdi
