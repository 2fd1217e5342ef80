// DType helpers and exact conversion of F16 / BF16 / F8_E4M3 to f32.
//
// Formats (all little-endian on disk):
//   F16      IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa; subnormals, inf, NaN.
//   BF16     the top 16 bits of an IEEE binary32.
//   F8_E4M3  "float8_e4m3fn": 1 sign, 4 exponent (bias 7), 3 mantissa; subnormals
//            (m/8 * 2^-6); no infinities; 0x7F / 0xFF are NaN; max finite 448.
// Every value of these formats is exactly representable in f32, so the conversions are exact.
#include "engine/tensor.h"

#include <cstring>

#include "core/error.h"
#include "engine/e4m3_table.h"

namespace qeval {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::F8_E4M3: return 1;
    case DType::I8: return 1;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::U8: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::I8: return "I8";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::U8: return "U8";
  }
  return "?";
}

namespace {

float bits_to_f32(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// Exact binary16 -> binary32.
float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t man = h & 0x3FFu;
  if (exp == 0x1F) return bits_to_f32(sign | 0x7F800000u | (man << 13));  // inf / NaN
  if (exp == 0) {
    if (man == 0) return bits_to_f32(sign);
    // Subnormal: man * 2^-24, exact in f32.
    float v = static_cast<float>(man) * 0x1p-24f;
    return sign ? -v : v;
  }
  return bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

}  // namespace

void to_f32_into(DType t, const void* src, size_t n, float* dst) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  switch (t) {
    case DType::F32:
      std::memcpy(dst, p, n * 4);
      return;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = bits_to_f32(static_cast<uint32_t>(h) << 16);
      }
      return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    case DType::F8_E4M3:
      for (size_t i = 0; i < n; ++i) dst[i] = kE4m3Values[p[i]];
      return;
    default:
      fail("to_f32: dtype {} is not a float type (hint: only F32/F16/BF16/F8_E4M3 convert to f32)",
           dtype_name(t));
  }
}

std::vector<float> to_f32(const TensorView& t) {
  size_t n = static_cast<size_t>(t.numel());
  if (n * dtype_size(t.dtype) != t.nbytes)
    fail("tensor {}: {} elements of {} do not fill its {} bytes", t.name, n, dtype_name(t.dtype), t.nbytes);
  if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16 && t.dtype != DType::F8_E4M3)
    fail("tensor {}: dtype {} is not a float type (hint: only F32/F16/BF16/F8_E4M3 convert to f32)",
         t.name, dtype_name(t.dtype));
  std::vector<float> out(n);
  if (n) to_f32_into(t.dtype, t.data, n, out.data());
  return out;
}

}  // namespace qeval
