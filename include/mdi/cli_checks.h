// CLI11 checks for integer flags, shared by mdi-llm and the tools. CLI11 2.1 reads integers with
// strtoull / strtoll in base 0, so "010" would be 8, "0x10" 16, and "-5" for an unsigned option
// 2^64 - 5. These validators take plain decimal digits only and drop leading zeros before CLI11
// converts (so add them with Option::transform, which passes the changed text on; check() would
// not), and print readable ranges (CLI11's PositiveNumber prints its bound as a 300-digit double).
#pragma once

#include <CLI/CLI.hpp>
#include <algorithm>
#include <limits>
#include <string>

namespace mdi::cli {

// Decimal digits only, at most 19 (below 2^64, so that no unsigned option saturates silently);
// drops v's leading zeros. Returns the error, or "".
inline std::string not_decimal(std::string& v) {
  if (v.empty() || v.size() > 19 || v.find_first_not_of("0123456789") != std::string::npos)
    return "expected a decimal number >= 0 of at most 19 digits, got '" + v + "'";
  v.erase(0, std::min(v.find_first_not_of('0'), v.size() - 1));
  return "";
}

inline const CLI::Validator kDecimal([](std::string& v) { return not_decimal(v); }, "UINT");

// A decimal integer in [lo, hi].
inline CLI::Validator decimal_range(unsigned long long lo, unsigned long long hi) {
  return CLI::Validator(
      [lo, hi](std::string& v) -> std::string {
        if (std::string e = not_decimal(v); !e.empty()) return e;
        const unsigned long long x = std::stoull(v);
        if (x < lo || x > hi) return "Value " + v + " not in range " + std::to_string(lo) + " to " + std::to_string(hi);
        return "";
      },
      "INT in [" + std::to_string(lo) + " - " + std::to_string(hi) + "]");
}

inline const CLI::Validator kPositive = decimal_range(1, std::numeric_limits<int>::max());
inline const CLI::Validator kNonNegative = decimal_range(0, std::numeric_limits<int>::max());

}  // namespace mdi::cli
