// Reference numerics of the quantization schemes; see quant.h for the formulas. The activation
// quantisers come as a scalar `_ref` twin and AVX2 and AVX-512 versions (the engine is built for
// x86-64-v3), equal bit for bit: amax is order-independent, the scale is one scalar division,
// and x / s, RNE rounding and the e4m3 bit manipulation are exact IEEE operations either way.
#include "engine/quant.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "engine/e4m3_table.h"

namespace qeval {

namespace {

uint32_t f32_bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}
float bits_f32(uint32_t b) {
  float x;
  std::memcpy(&x, &b, 4);
  return x;
}

// Round to nearest even (the default FP environment) then clamp to +-127. v is finite: a
// non-finite scale never reaches here (see nonfinite_scale), and a finite one bounds |v|.
inline int8_t int8_rne(float v) {
  float r = std::nearbyint(v);
  r = std::min(std::max(r, -kInt8Max), kInt8Max);
  return static_cast<int8_t>(static_cast<int>(r));
}

// Clamp to +-448 then PyTorch's e4m3fn cast (RNE).
inline uint8_t fp8_clamped(float v) {
  return e4m3_from_f32(std::min(std::max(v, -kE4m3Max), kE4m3Max));
}

float amax_of(const float* x, int64_t n) {
  float a = 0.0f;
  for (int64_t i = 0; i < n; ++i) a = amax_step(a, x[i]);
  return a;
}

// A group's scale from an amax that was inf or NaN: its codes are all 0 (quant.h).
inline bool nonfinite_scale(float s) { return !(std::fabs(s) <= std::numeric_limits<float>::max()); }

}  // namespace

uint32_t amax_bits(const float* x, int64_t n) {
  const __m256i abs = _mm256_set1_epi32(0x7FFFFFFF);
  __m256i m = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    m = _mm256_max_epu32(m, _mm256_and_si256(abs, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i))));
  alignas(32) uint32_t t[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), m);
  uint32_t a = 0;
  for (uint32_t v : t) a = std::max(a, v);
  for (; i < n; ++i) a = std::max(a, f32_bits(x[i]) & 0x7FFFFFFFu);
  return a;
}

// ---- element formats -------------------------------------------------------------------

uint8_t e4m3_from_f32(float x) {
  // Same steps as PyTorch's fp8e4m3fn_from_fp32_value (facts, re-derived): work on |x| bits.
  constexpr uint32_t kFirstNan = 1087u << 20;     // 480.0f: first value beyond the format
  constexpr uint32_t kDenormMask = 141u << 23;    // 2^14: adding it RNE-rounds to 2^-9 steps
  uint32_t f = f32_bits(x);
  const uint32_t sign = f & 0x80000000u;
  f ^= sign;
  uint8_t r;
  if (f >= kFirstNan) {
    r = 0x7F;  // NaN, inf and |x| >= 480 -> NaN (no saturation in the cast itself)
  } else if (f < (121u << 23)) {
    // |x| < 2^-6 (smallest normal): the float addition rounds to a multiple of 2^-9 with RNE.
    r = static_cast<uint8_t>(f32_bits(bits_f32(f) + bits_f32(kDenormMask)) - kDenormMask);
  } else {
    // Normal: rebias the exponent (127 -> 7) and round the mantissa from 23 to 3 bits, RNE
    // (add half-1 plus the kept LSB, truncate). A carry may reach 0x7F (NaN) for (464, 480).
    const uint32_t mant_odd = (f >> 20) & 1u;
    f += (static_cast<uint32_t>(7 - 127) << 23) + 0x7FFFFu;
    f += mant_odd;
    r = static_cast<uint8_t>(f >> 20);
  }
  return static_cast<uint8_t>(r | (sign >> 24));
}

float e4m3_to_f32(uint8_t b) { return kE4m3Values[b]; }
const float* e4m3_table() { return kE4m3Values.data(); }

uint16_t bf16_from_f32(float x) {
  uint32_t b = f32_bits(x);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((b >> 16) | 0x40u);  // qNaN
  b += 0x7FFFu + ((b >> 16) & 1u);  // RNE on the low 16 bits
  return static_cast<uint16_t>(b >> 16);
}

float bf16_to_f32(uint16_t b) { return bits_f32(static_cast<uint32_t>(b) << 16); }

void bf16_from_f32_n(const float* x, int64_t n, uint16_t* out) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF), inf = _mm256_set1_epi32(0x7F800000);
  const __m256i half = _mm256_set1_epi32(0x7FFF), one = _mm256_set1_epi32(1);
  const __m256i qnan = _mm256_set1_epi32(0x40);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    const __m256i rounded = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(b, half), _mm256_and_si256(_mm256_srli_epi32(b, 16), one)), 16);
    const __m256i nan = _mm256_or_si256(_mm256_srli_epi32(b, 16), qnan);
    const __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(b, abs_mask), inf);
    const __m256i r = _mm256_blendv_epi8(rounded, nan, is_nan);
    // 8 x u32 (each < 2^16) -> 8 x u16
    const __m128i lo = _mm256_castsi256_si128(r), hi = _mm256_extracti128_si256(r, 1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm_packus_epi32(lo, hi));
  }
  for (; i < n; ++i) out[i] = bf16_from_f32(x[i]);
}

// ---- weights ---------------------------------------------------------------------------

int64_t QuantizedWeight::scale_rows() const {
  return scheme == QuantScheme::Int8Channel ? n : (n + kQuantBlock - 1) / kQuantBlock;
}
int64_t QuantizedWeight::scale_cols() const {
  return scheme == QuantScheme::Int8Channel ? 1 : (k + kQuantBlock - 1) / kQuantBlock;
}

QuantizedWeight quantize_weight(const float* w, int64_t N, int64_t K, QuantScheme scheme) {
  if (scheme == QuantScheme::None) fail("quantize_weight: scheme none has nothing to quantise");
  QuantizedWeight out;
  out.scheme = scheme;
  out.n = N;
  out.k = K;
  out.q.resize(static_cast<size_t>(N * K));
  out.scale.resize(static_cast<size_t>(out.scale_rows() * out.scale_cols()));
  const float qmax = scheme == QuantScheme::Fp8Block ? kE4m3Max : kInt8Max;

  auto check_finite = [&](float amax, int64_t n0, int64_t n1, int64_t k0, int64_t k1) {
    if (!nonfinite_scale(amax)) return;
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t k = k0; k < k1; ++k)
        if (!std::isfinite(w[n * K + k]))
          fail("row {} col {}: value {} is not finite, so it has no {} code (hint: the checkpoint is damaged; "
               "check it against its source)", n, k, w[n * K + k], quant_scheme_name(scheme));
  };
  if (scheme == QuantScheme::Int8Channel) {
    for (int64_t n = 0; n < N; ++n) {
      const float amax = amax_of(w + n * K, K);
      check_finite(amax, n, n + 1, 0, K);
      const float s = weight_scale(amax, qmax);  // all-zero row: s = 1, not NaN
      out.scale[n] = s;
      for (int64_t k = 0; k < K; ++k)
        out.q[n * K + k] = static_cast<uint8_t>(int8_rne(w[n * K + k] / s));
    }
    return out;
  }

  const int64_t nb = out.scale_rows(), kb = out.scale_cols();
  for (int64_t bn = 0; bn < nb; ++bn) {
    const int64_t n0 = bn * kQuantBlock, n1 = std::min(N, n0 + kQuantBlock);
    for (int64_t bk = 0; bk < kb; ++bk) {
      const int64_t k0 = bk * kQuantBlock, k1 = std::min(K, k0 + kQuantBlock);  // partial edge
      float amax = 0.0f;
      for (int64_t n = n0; n < n1; ++n) amax = amax_step(amax, amax_of(w + n * K + k0, k1 - k0));
      check_finite(amax, n0, n1, k0, k1);
      const float s = weight_scale(amax, qmax);  // all-zero block: s = 1
      out.scale[bn * kb + bk] = s;
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t k = k0; k < k1; ++k) {
          const float v = w[n * K + k] / s;
          out.q[n * K + k] = scheme == QuantScheme::Fp8Block ? fp8_clamped(v)
                                                             : static_cast<uint8_t>(int8_rne(v));
        }
    }
  }
  return out;
}

std::vector<float> dequantize_weight(const QuantizedWeight& qw) {
  std::vector<float> w(static_cast<size_t>(qw.n * qw.k));
  const int64_t kb = qw.scale_cols();
  for (int64_t n = 0; n < qw.n; ++n)
    for (int64_t k = 0; k < qw.k; ++k) {
      const uint8_t b = qw.q[n * qw.k + k];
      const float s = qw.scheme == QuantScheme::Int8Channel
                          ? qw.scale[n]
                          : qw.scale[(n / kQuantBlock) * kb + k / kQuantBlock];
      const float v = qw.scheme == QuantScheme::Fp8Block ? e4m3_to_f32(b)
                                                         : static_cast<float>(static_cast<int8_t>(b));
      w[n * qw.k + k] = v * s;
    }
  return w;
}

// ---- activations: scalar twins ---------------------------------------------------------

void quantize_act_fp8_group_ref(const float* x, int64_t M, int64_t K, uint8_t* q, int64_t ldq,
                                float* s) {
  const int64_t G = n_groups(K);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < G; ++g) {
      const int64_t k0 = g * kQuantBlock, k1 = std::min(K, k0 + kQuantBlock);
      const float sc = std::max(amax_of(x + m * K + k0, k1 - k0), kFp8ActAmaxFloor) / kE4m3Max;
      s[m * G + g] = sc;
      for (int64_t k = k0; k < k1; ++k) q[m * ldq + k] = nonfinite_scale(sc) ? 0 : fp8_clamped(x[m * K + k] / sc);
    }
}

void quantize_act_int8_group_ref(const float* x, int64_t M, int64_t K, int8_t* q, int64_t ldq,
                                 float* s) {
  const int64_t G = n_groups(K);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < G; ++g) {
      const int64_t k0 = g * kQuantBlock, k1 = std::min(K, k0 + kQuantBlock);
      const float sc = std::max(amax_of(x + m * K + k0, k1 - k0), kInt8ActAmaxFloor) / kInt8Max;
      s[m * G + g] = sc;
      for (int64_t k = k0; k < k1; ++k) q[m * ldq + k] = nonfinite_scale(sc) ? 0 : int8_rne(x[m * K + k] / sc);
    }
}

void quantize_act_int8_token_ref(const float* x, int64_t M, int64_t K, int8_t* q, int64_t ldq,
                                 float* s) {
  for (int64_t m = 0; m < M; ++m) {
    const float sc = std::max(amax_of(x + m * K, K), kInt8ActAmaxFloor) / kInt8Max;
    s[m] = sc;
    for (int64_t k = 0; k < K; ++k) q[m * ldq + k] = nonfinite_scale(sc) ? 0 : int8_rne(x[m * K + k] / sc);
  }
}

// ---- activations: AVX2 ----------------------------------------------------------------

namespace {

// max |x[i]| over n values, NaN kept (amax_step; the integer max of the |x| bits).
float amax_avx2(const float* x, int64_t n) { return bits_f32(amax_bits(x, n)); }

// q[i] = clamp(RNE(x[i] / s), +-127) for n values.
// The division is the slow part (vdivps: 8 lanes per ~5 cycles), so each vector is first
// rounded from t = x * (1 / s). With 1 / s and the product each rounded once, |t - x / s| <=
// 1.5 * 2^-23 * |x / s|, and the quotient fl(x / s) is within 2^-24 * |x / s| of x / s: for
// |x / s| <= 128 they are less than 3e-5 apart (|x| <= amax gives |x / s| <= 127). So RNE(t)
// equals RNE(fl(x / s)) unless t lies within 3e-5 of a half-integer; a vector with a lane
// within 1e-4 of one is divided instead. (A larger |x / s|, from a given maximum below the
// true one, clamps to +-127 either way.) t - RNE(t) is exact (Sterbenz). NaN compares false and
// takes the product, which is NaN as the quotient is. Per-token quantisation of 64 x 4864
// values in L2, one thread: 1.3x faster than dividing every vector (in memory, 512 rows: 1.15x).
void int8_quant_avx2(const float* x, int64_t n, float s, int8_t* q) {
  if (nonfinite_scale(s)) return void(std::memset(q, 0, static_cast<size_t>(n)));
  const __m256 vs = _mm256_set1_ps(s), inv = _mm256_set1_ps(1.0f / s);
  const __m256 lo = _mm256_set1_ps(-kInt8Max), hi = _mm256_set1_ps(kInt8Max);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)), near = _mm256_set1_ps(0.5f - 1e-4f);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  auto cvt = [&](const float* p) {
    const __m256 xv = _mm256_loadu_ps(p);
    const __m256 t = _mm256_mul_ps(xv, inv);
    __m256 v = _mm256_round_ps(t, kRne);
    const __m256 d = _mm256_and_ps(_mm256_sub_ps(t, v), abs_mask);
    if (_mm256_movemask_ps(_mm256_cmp_ps(d, near, _CMP_GT_OQ)) != 0) v = _mm256_round_ps(_mm256_div_ps(xv, vs), kRne);
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
  };
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i a = cvt(x + i), b = cvt(x + i + 8), c = cvt(x + i + 16), d = cvt(x + i + 24);
    __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    __m256i r = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), perm);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), r);
  }
  for (; i < n; ++i) q[i] = int8_rne(x[i] / s);
}

// q[i] = e4m3(clamp(x[i] / s, +-448)) for n values (PyTorch's cast, vectorised bit for bit).
void fp8_quant_avx2(const float* x, int64_t n, float s, uint8_t* q) {
  if (nonfinite_scale(s)) return void(std::memset(q, 0, static_cast<size_t>(n)));
  const __m256 vs = _mm256_set1_ps(s), lo = _mm256_set1_ps(-kE4m3Max), hi = _mm256_set1_ps(kE4m3Max);
  const __m256i sign_mask = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i denorm = _mm256_set1_epi32(141 << 23), min_normal = _mm256_set1_epi32(121 << 23);
  const __m256i rebias = _mm256_set1_epi32(static_cast<int>(0xC407FFFFu)), one = _mm256_set1_epi32(1);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  auto cvt = [&](const float* p) {
    __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(_mm256_loadu_ps(p), vs), lo), hi);
    __m256i b = _mm256_castps_si256(v);
    __m256i sign = _mm256_and_si256(b, sign_mask);
    __m256i f = _mm256_xor_si256(b, sign);
    __m256i dres = _mm256_sub_epi32(
        _mm256_castps_si256(_mm256_add_ps(_mm256_castsi256_ps(f), _mm256_castsi256_ps(denorm))), denorm);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(f, 20), one);
    __m256i nres = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(f, rebias), odd), 20);
    __m256i is_denorm = _mm256_cmpgt_epi32(min_normal, f);
    __m256i r = _mm256_blendv_epi8(nres, dres, is_denorm);
    return _mm256_or_si256(_mm256_and_si256(r, _mm256_set1_epi32(0xFF)), _mm256_srli_epi32(sign, 24));
  };
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i a = cvt(x + i), b = cvt(x + i + 8), c = cvt(x + i + 16), d = cvt(x + i + 24);
    __m256i ab = _mm256_packus_epi32(a, b), cd = _mm256_packus_epi32(c, d);
    __m256i r = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), perm);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), r);
  }
  for (; i < n; ++i) q[i] = fp8_clamped(x[i] / s);
}

}  // namespace

// ---- activations: AVX-512 (the engine's Avx512 and Amx levels) -------------------------------
// The same results as the AVX2 versions above, bit for bit, in half the instructions: VREDUCEPS
// gives t - RNE(t) in one step (exact), and VPMOVSDB narrows 16 lanes to bytes. The near-half
// test, its division fallback, the clamp, the all-zero codes of a non-finite scale and the
// scalar tail are the AVX2 version's. Its share of 0.5B int8-block prefill (perf): 5.6% -> 2.5%; engine
// prefill with it (and the SwiGLU epilogue quantising for the down projection, model.cpp),
// against neither, one process, alternating, medians of 10 rounds: int8-block +4%,
// int8-channel +9%.

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw")
// GCC 12 reports false "(may be) used uninitialized" warnings inside its own AVX-512 intrinsics
// headers (their _mm512_undefined_ps operands), as in amx.cpp.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace {

// amax_avx2's integer max of the |x| bits (NaN kept), 32 lanes at a time.
float amax_avx512(const float* x, int64_t n) {
  const __m512i abs = _mm512_set1_epi32(0x7FFFFFFF);
  __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm512_max_epu32(_mm512_and_si512(_mm512_loadu_si512(x + i), abs), a0);
    a1 = _mm512_max_epu32(_mm512_and_si512(_mm512_loadu_si512(x + i + 16), abs), a1);
  }
  for (; i + 16 <= n; i += 16) a0 = _mm512_max_epu32(_mm512_and_si512(_mm512_loadu_si512(x + i), abs), a0);
  uint32_t a = _mm512_reduce_max_epu32(_mm512_max_epu32(a0, a1));
  for (; i < n; ++i) a = std::max(a, f32_bits(x[i]) & 0x7FFFFFFFu);
  return bits_f32(a);
}

void int8_quant_avx512(const float* x, int64_t n, float s, int8_t* q) {
  if (nonfinite_scale(s)) return void(std::memset(q, 0, static_cast<size_t>(n)));
  const __m512 vs = _mm512_set1_ps(s), inv = _mm512_set1_ps(1.0f / s);
  const __m512 lo = _mm512_set1_ps(-kInt8Max), hi = _mm512_set1_ps(kInt8Max), near = _mm512_set1_ps(0.5f - 1e-4f);
  constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 xv = _mm512_loadu_ps(x + i);
    __m512 t = _mm512_mul_ps(xv, inv);
    if (_mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_reduce_ps(t, kRne)), near, _CMP_GT_OQ) != 0) t = _mm512_div_ps(xv, vs);
    // Clamping before rounding gives the same codes as after (the bounds are integers).
    const __m512i v = _mm512_cvt_roundps_epi32(_mm512_min_ps(_mm512_max_ps(t, lo), hi), kRne);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtsepi32_epi8(v));
  }
  for (; i < n; ++i) q[i] = int8_rne(x[i] / s);
}

}  // namespace

#pragma GCC diagnostic pop
#pragma GCC pop_options

namespace {

// Per token, per 128-wide group of K: scale = max(amax, floor) / qmax, then quant(x, len, scale, q).
// amax: the group maxima [M, G] if the producer has them, else found here.
template <typename T, typename Quant, typename Amax = float (*)(const float*, int64_t)>
void quantize_act_groups(const float* x, int64_t M, int64_t K, T* q, int64_t ldq, float* s, float floor,
                         float qmax, const float* amax, Quant quant, Amax amax_fn = amax_avx2) {
  const int64_t G = n_groups(K);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < G; ++g) {
      const int64_t k0 = g * kQuantBlock, len = std::min(K, k0 + kQuantBlock) - k0;
      const float* xr = x + m * K + k0;
      const float sc = std::max(amax ? amax[m * G + g] : amax_fn(xr, len), floor) / qmax;
      s[m * G + g] = sc;
      quant(xr, len, sc, q + m * ldq + k0);
    }
}

}  // namespace

void quantize_act_fp8_group(const float* x, int64_t M, int64_t K, uint8_t* q, int64_t ldq,
                            float* s, const float* amax) {
  quantize_act_groups(x, M, K, q, ldq, s, kFp8ActAmaxFloor, kE4m3Max, amax, fp8_quant_avx2);
}

void quantize_act_int8_group(const float* x, int64_t M, int64_t K, int8_t* q, int64_t ldq,
                             float* s, const float* amax, KernelLevel level) {
  if (level >= KernelLevel::Avx512)
    quantize_act_groups(x, M, K, q, ldq, s, kInt8ActAmaxFloor, kInt8Max, amax, int8_quant_avx512, amax_avx512);
  else
    quantize_act_groups(x, M, K, q, ldq, s, kInt8ActAmaxFloor, kInt8Max, amax, int8_quant_avx2);
}

float quantize_act_int8_piece(const float* x, int64_t n, float amax, int8_t* q, KernelLevel level) {
  if (n > kQuantBlock) fail("quantize_act_int8_piece: {} values (a group holds at most {})", n, kQuantBlock);
  float s = 0.0f;
  quantize_act_int8_group(x, 1, n, q, n, &s, &amax, level);
  return s;
}

void quantize_act_int8_token(const float* x, int64_t M, int64_t K, int8_t* q, int64_t ldq,
                             float* s, const float* amax, KernelLevel level) {
  const int64_t G = n_groups(K);
  const bool wide = level >= KernelLevel::Avx512;
  const auto amax_fn = wide ? amax_avx512 : amax_avx2;
  const auto quant = wide ? int8_quant_avx512 : int8_quant_avx2;
  for (int64_t m = 0; m < M; ++m) {
    float a = 0.0f;
    if (amax)
      for (int64_t g = 0; g < G; ++g) a = amax_step(a, amax[m * G + g]);
    else
      a = amax_fn(x + m * K, K);
    const float sc = std::max(a, kInt8ActAmaxFloor) / kInt8Max;
    s[m] = sc;
    quant(x + m * K, K, sc, q + m * ldq);
  }
}

void group_amax(const float* x, int64_t M, int64_t K, float* amax) {
  const int64_t G = n_groups(K);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < G; ++g)
      amax[m * G + g] = amax_of(x + m * K + g * kQuantBlock, std::min(K - g * kQuantBlock, kQuantBlock));
}

}  // namespace qeval
