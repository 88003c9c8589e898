// IEEE binary16 (the float16 of weight files) to binary32: the loader's, the converter's and the
// CPU kernels' widening, inline so that loops over it vectorize.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace mdi {

// A float's bits and back (std::bit_cast before C++20).
inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// binary16 -> binary32, exact (every half is a float). Branch-free (after Marat Dukhan's FP16
// library): a normal half's exponent and mantissa shifted into place and scaled by 2^-112 (which
// also carries exponent 31, inf and nan, to 255); a subnormal's mantissa through the magic
// number 0.5.
inline float half_to_float(uint16_t h) {
  const uint32_t w = uint32_t(h) << 16, sign = w & 0x80000000u, two_w = w + w;
  const float normal = bits_float((two_w >> 4) + (0xe0u << 23)) * 0x1.0p-112f;
  const float subnormal = bits_float((two_w >> 17) | (126u << 23)) - 0.5f;
  return bits_float(sign | float_bits(two_w < (1u << 27) ? subnormal : normal));
}

// n of them (no overlap).
inline void halves_to_floats(const uint16_t* in, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = half_to_float(in[i]);
}

// Widens, in place, n 16-bit values stored in the back half of the n floats at out:
// widen(in, out, m) turns m of them into floats. Front to back, a block at a time through a copy
// of the block's values: floats [i, i + m) overwrite values below i + m only, since i + m <= n.
template <class Widen>
void widen_in_place(float* out, size_t n, Widen widen) {
  const uint16_t* raw = reinterpret_cast<const uint16_t*>(out) + n;
  constexpr size_t kBlock = 1024;
  uint16_t block[kBlock];
  for (size_t i = 0; i < n; i += kBlock) {
    const size_t m = std::min(kBlock, n - i);
    std::memcpy(block, raw + i, m * sizeof(uint16_t));
    widen(block, out + i, m);
  }
}

}  // namespace mdi
