// KV cache storage: one allocation for keys and one for values, zero and mapped at start-up.
#include "mdi/kv_cache.h"

namespace mdi {

KVCache::KVCache(int layers, int samples, int T, int C) : S_(samples), T_(T), C_(C) {
  const size_t n = static_cast<size_t>(layers) * samples * T * C;
  k_.resize(n);
  v_.resize(n);
  k_.touch_pages();
  v_.touch_pages();
}

}  // namespace mdi
