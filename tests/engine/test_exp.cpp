// exp16_avx512 scales by 2^k with vscalefps; the AVX2 exp8 (model.cpp) multiplies by two
// power-of-two factors. The AVX-512 attention and SwiGLU promise the AVX2 bits, so the two must
// agree on every input: here against the two-factor form of the same polynomial over a dense
// sweep (subnormal results, both clamps, infinities, NaN), and for 1 + exp(x) with the product
// fused into the add as GCC fuses it in the SwiGLU.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/cpu_features.h"
#include "engine/kernels/cpu/exp_avx512.h"

using namespace qeval;

namespace {

#define QEVAL_TEST_AVX512 __attribute__((target("avx512f,fma")))

// The two-factor form: p * 2^(k/2) * 2^(k - k/2).
QEVAL_TEST_AVX512 void two_factor(const float* x, float* e, float* one_plus) {
  __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_loadu_ps(x), _mm512_set1_ps(-87.33654f)), _mm512_set1_ps(88.72283f));
  __m512 k;
  const __m512 p = exp16_reduced(v, k);
  const __m512i ki = _mm512_cvtps_epi32(k);
  const __m512i k1 = _mm512_srai_epi32(ki, 1), k2 = _mm512_sub_epi32(ki, k1);
  const __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(k1, _mm512_set1_epi32(127)), 23));
  const __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(k2, _mm512_set1_epi32(127)), 23));
  const __m512 ps1 = _mm512_mul_ps(p, s1);
  _mm512_storeu_ps(e, _mm512_mul_ps(ps1, s2));
  _mm512_storeu_ps(one_plus, _mm512_fmadd_ps(ps1, s2, _mm512_set1_ps(1.0f)));
}

QEVAL_TEST_AVX512 void scalef_form(const float* x, float* e, float* one_plus) {
  const __m512 r = exp16_avx512(_mm512_loadu_ps(x));
  _mm512_storeu_ps(e, r);
  _mm512_storeu_ps(one_plus, _mm512_add_round_ps(r, _mm512_set1_ps(1.0f), _MM_FROUND_CUR_DIRECTION));
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

}  // namespace

TEST_CASE("exp16_avx512 gives the bits of the two-factor exp on every input", "[kernels]") {
  if (max_kernel_level() < KernelLevel::Avx512) {
    WARN("no AVX-512 on this CPU: nothing to compare");
    return;
  }
  std::vector<float> xs;
  for (float x = -100.0f; x <= 100.0f; x += 0.00390625f) xs.push_back(x);
  for (float x = -87.5f; x <= -86.0f; x = std::nextafter(x, 0.0f)) xs.push_back(x);  // subnormal results
  for (float x = 88.6f; x <= 88.8f; x = std::nextafter(x, 100.0f)) xs.push_back(x);   // the top of the range
  const float inf = std::numeric_limits<float>::infinity();
  for (float x : {0.0f, -0.0f, inf, -inf, std::numeric_limits<float>::quiet_NaN(), 1e-40f, -1e-40f}) xs.push_back(x);
  while (xs.size() % 16) xs.push_back(0.5f);
  int64_t mismatches = 0;
  for (size_t i = 0; i < xs.size(); i += 16) {
    float e1[16], o1[16], e2[16], o2[16];
    two_factor(&xs[i], e1, o1);
    scalef_form(&xs[i], e2, o2);
    for (int l = 0; l < 16; ++l)
      if (!same_bits(e1[l], e2[l]) || !same_bits(o1[l], o2[l])) {
        if (++mismatches <= 5) WARN("x = " << xs[i + l] << ": " << e1[l] << " vs " << e2[l]);
      }
  }
  INFO(xs.size() << " inputs");
  CHECK(mismatches == 0);
}
