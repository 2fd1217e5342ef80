// Every float8_e4m3fn code's value (1 sign, 4 exponent bits with bias 7, 3 mantissa bits;
// subnormals m/8 * 2^-6; 0x7F / 0xFF NaN; no infinities), built at compile time. Header-only,
// so the checkpoint readers (tensor.cpp) need no other engine code, and constant-initialised,
// so tables built from it during static initialisation never read it before it exists.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <limits>

namespace qeval {

namespace e4m3_detail {

// 2^e for a normal float exponent.
constexpr float pow2(int e) { return std::bit_cast<float>(static_cast<uint32_t>(e + 127) << 23); }

constexpr std::array<float, 256> make_table() {
  std::array<float, 256> t{};
  for (int b = 0; b < 256; ++b) {
    const int exp = (b >> 3) & 0xF, man = b & 7;
    float v;
    if (exp == 0xF && man == 7)
      v = std::numeric_limits<float>::quiet_NaN();
    else if (exp == 0)
      v = static_cast<float>(man) * pow2(-9);  // subnormal: m/8 * 2^-6
    else
      v = (1.0f + static_cast<float>(man) / 8.0f) * pow2(exp - 7);
    t[b] = (b & 0x80) ? -v : v;
  }
  return t;
}

}  // namespace e4m3_detail

inline constexpr std::array<float, 256> kE4m3Values = e4m3_detail::make_table();

}  // namespace qeval
