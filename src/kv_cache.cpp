// KV cache storage: one allocation for keys and one for values, zero-filled once at start-up.
#include "mdi/kv_cache.h"

namespace mdi {

KVCache::KVCache(int layers, int samples, int T, int C)
    : S_(samples), T_(T), C_(C),
      k_(static_cast<size_t>(layers) * samples * T * C, 0.0f),
      v_(static_cast<size_t>(layers) * samples * T * C, 0.0f) {}

}  // namespace mdi
