// Tests of the scalar quantization numerics (quant.h): e4m3 and bf16 rounding against
// hand-checked values, weight quantisation (scales, edges, all-zero blocks, round trips) and the
// activation quantisers (values, floors, vectorised == scalar twin).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"
#include "engine/quant.h"

using namespace qeval;

namespace {

std::vector<float> random_vec(size_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

uint32_t bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}

}  // namespace

TEST_CASE("e4m3 encode matches PyTorch's float8_e4m3fn cast on hand-checked values", "[quant]") {
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    float x;
    uint8_t want;
  };
  const Case cases[] = {
      {0.0f, 0x00},           {-0.0f, 0x80},
      {1.0f, 0x38},           {-1.0f, 0xB8},
      {1.0625f, 0x38},        // tie between 1.0 and 1.125 -> even mantissa (1.0)
      {1.1875f, 0x3A},        // tie between 1.125 and 1.25 -> even (1.25)
      {0x1p-9f, 0x01},        // smallest subnormal
      {0x1p-10f, 0x00},       // half of it: tie -> even (0)
      {0x1.8p-10f, 0x01},     // 0.75 * 2^-9 rounds up to 2^-9
      {0x1.8p-9f, 0x02},      // 1.5 * 2^-9: tie -> even (2 * 2^-9)
      {7 * 0x1p-9f, 0x07},    // largest subnormal
      {0x1p-6f, 0x08},        // smallest normal
      {448.0f, 0x7E},         {-448.0f, 0xFE},
      {464.0f, 0x7E},         // midpoint of 448 and 480: tie -> even (448)
      {465.0f, 0x7F},         // rounds up onto the NaN code: the cast does not saturate
      {480.0f, 0x7F},         {1e9f, 0x7F},
      {inf, 0x7F},            {-inf, 0xFF},
      {-500.0f, 0xFF},
  };
  for (const auto& c : cases) {
    INFO("x = " << c.x);
    CHECK(int{e4m3_from_f32(c.x)} == int{c.want});
  }
  CHECK((e4m3_from_f32(std::numeric_limits<float>::quiet_NaN()) & 0x7F) == 0x7F);
}

TEST_CASE("e4m3 decode is exact and encode(decode(b)) == b", "[quant]") {
  CHECK(e4m3_to_f32(0x01) == 0x1p-9f);
  CHECK(e4m3_to_f32(0x08) == 0x1p-6f);
  CHECK(e4m3_to_f32(0x7E) == 448.0f);
  CHECK(e4m3_to_f32(0xB8) == -1.0f);
  CHECK(std::isnan(e4m3_to_f32(0x7F)));
  CHECK(std::isnan(e4m3_to_f32(0xFF)));
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7F) == 0x7F) continue;
    INFO("b = " << b);
    CHECK(int{e4m3_from_f32(e4m3_to_f32(static_cast<uint8_t>(b)))} == b);
    // every e4m3 value is a bf16 value
    CHECK(bf16_round(e4m3_to_f32(static_cast<uint8_t>(b))) == e4m3_to_f32(static_cast<uint8_t>(b)));
  }
}

TEST_CASE("bf16 rounds to nearest even; the vector version equals the scalar one", "[quant]") {
  CHECK(bf16_from_f32(1.0f) == 0x3F80);
  CHECK(bf16_from_f32(1.0f + 0x1p-8f) == 0x3F80);        // tie -> even
  CHECK(bf16_from_f32(1.0f + 3 * 0x1p-8f) == 0x3F82);    // tie -> even (up)
  CHECK(bf16_from_f32(1.0f + 0x1p-8f + 0x1p-20f) == 0x3F81);
  CHECK(std::isnan(bf16_to_f32(bf16_from_f32(std::numeric_limits<float>::quiet_NaN()))));
  std::vector<float> v = random_vec(1000, 1, 100.0f);
  v.push_back(std::numeric_limits<float>::quiet_NaN());
  v.push_back(std::numeric_limits<float>::infinity());
  v.push_back(3.4e38f);
  v.push_back(1e-40f);
  std::vector<uint16_t> out(v.size());
  bf16_from_f32_n(v.data(), static_cast<int64_t>(v.size()), out.data());
  for (size_t i = 0; i < v.size(); ++i) CHECK(out[i] == bf16_from_f32(v[i]));
}

TEST_CASE("weight quantisation: scales, RNE, edge blocks, all-zero blocks, round trip", "[quant]") {
  const int64_t N = 130, K = 200;  // partial blocks on both edges
  std::vector<float> w = random_vec(N * K, 2, 0.05f);
  for (int64_t n = 0; n < 128; ++n)  // block (0, 1) is all zero
    for (int64_t k = 128; k < K; ++k) w[n * K + k] = 0.0f;
  for (int64_t k = 0; k < K; ++k) w[5 * K + k] = 0.0f;  // row 5 all zero
  w[129 * K + 199] = 3.0f;                              // the amax of block (1, 1)

  SECTION("fp8 block") {
    QuantizedWeight q = quantize_weight(w.data(), N, K, QuantScheme::Fp8Block);
    REQUIRE(q.scale.size() == 4);
    CHECK(q.scale[1] == 1.0f);           // all-zero block
    CHECK(q.scale[3] == 3.0f / 448.0f);  // partial edge block
    CHECK(q.q[129 * K + 199] == 0x7E);   // the amax element maps to 448
    std::vector<float> d = dequantize_weight(q);
    for (int64_t i = 0; i < N * K; ++i) {
      const float s = q.scale[(i / K / 128) * 2 + (i % K) / 128];
      CHECK(std::fabs(d[i] - w[i]) <= std::max(std::fabs(w[i]) * 0x1p-4f, s * 0x1p-10f));
    }
  }
  SECTION("int8 block") {
    QuantizedWeight q = quantize_weight(w.data(), N, K, QuantScheme::Int8Block);
    REQUIRE(q.scale.size() == 4);
    CHECK(q.scale[1] == 1.0f);
    CHECK(q.scale[3] == 3.0f / 127.0f);
    CHECK(static_cast<int8_t>(q.q[129 * K + 199]) == 127);
    std::vector<float> d = dequantize_weight(q);
    for (int64_t i = 0; i < N * K; ++i) {
      const float s = q.scale[(i / K / 128) * 2 + (i % K) / 128];
      CHECK(std::fabs(d[i] - w[i]) <= s * 0.5f * (1 + 1e-6f));
    }
  }
  SECTION("int8 channel") {
    QuantizedWeight q = quantize_weight(w.data(), N, K, QuantScheme::Int8Channel);
    REQUIRE(q.scale.size() == static_cast<size_t>(N));
    CHECK(q.scale[5] == 1.0f);  // all-zero row: scale 1, not NaN
    for (int64_t k = 0; k < K; ++k) CHECK(q.q[5 * K + k] == 0);
    CHECK(q.scale[129] == 3.0f / 127.0f);
    std::vector<float> d = dequantize_weight(q);
    for (int64_t i = 0; i < N * K; ++i) CHECK(std::fabs(d[i] - w[i]) <= q.scale[i / K] * 0.5f * (1 + 1e-6f));
  }
}

TEST_CASE("int8 rounding is round-half-to-even, not truncation", "[quant]") {
  // amax 127 -> s = 1 exactly, so x / s are the listed values.
  const float x[] = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 0.7f, -126.6f};
  const int want[] = {127, 0, 2, 2, 0, -2, 1, -127};
  int8_t q[8];
  float s;
  quantize_act_int8_token(x, 1, 8, q, 8, &s);
  CHECK(s == 1.0f);
  for (int i = 0; i < 8; ++i) CHECK(int{q[i]} == want[i]);
  QuantizedWeight qw = quantize_weight(x, 1, 8, QuantScheme::Int8Channel);
  for (int i = 0; i < 8; ++i) CHECK(int{static_cast<int8_t>(qw.q[i])} == want[i]);
}

// The int8 quantisers' vector levels: AVX2 always, AVX-512 where the CPU has it.
std::vector<KernelLevel> int8_quant_levels() {
  std::vector<KernelLevel> v{KernelLevel::Avx2};
  if (max_kernel_level() >= KernelLevel::Avx512) v.push_back(KernelLevel::Avx512);
  return v;
}

TEST_CASE("activation quantisers: floors, and vector == scalar twin bit for bit", "[quant]") {
  for (KernelLevel level : int8_quant_levels())
  for (int64_t K : {1, 7, 16, 31, 32, 127, 128, 129, 300, 896, 4864}) {
    const int64_t M = 3, ldq = K + 5, G = n_groups(K);
    std::vector<float> x = random_vec(M * K, 10 + static_cast<uint32_t>(K), 2.0f);
    for (int64_t k = 0; k < K; ++k) x[K + k] = 0.0f;  // row 1 all zero: floors apply
    x[0] = 1e6f;                                        // outlier
    INFO("K = " << K << ", level " << kernel_level_name(level));
    {
      std::vector<int8_t> q1(M * ldq, 99), q2(M * ldq, 99);
      std::vector<float> s1(M * G), s2(M * G);
      quantize_act_int8_group(x.data(), M, K, q1.data(), ldq, s1.data(), nullptr, level);
      quantize_act_int8_group_ref(x.data(), M, K, q2.data(), ldq, s2.data());
      CHECK(q1 == q2);
      CHECK(std::memcmp(s1.data(), s2.data(), s1.size() * 4) == 0);
      CHECK(s1[G] == kInt8ActAmaxFloor / 127.0f);
      CHECK(q1[K] == 99);  // columns past K untouched
    }
    {
      std::vector<int8_t> q1(M * ldq), q2(M * ldq);
      std::vector<float> s1(M), s2(M);
      quantize_act_int8_token(x.data(), M, K, q1.data(), ldq, s1.data(), nullptr, level);
      quantize_act_int8_token_ref(x.data(), M, K, q2.data(), ldq, s2.data());
      CHECK(q1 == q2);
      CHECK(bits(s1[2]) == bits(s2[2]));
    }
    {  // one group at a time, its maximum given: the group quantiser's codes and scales
      std::vector<int8_t> q1(M * ldq, 99), q2(M * ldq, 99);
      std::vector<float> s1(M * G), s2(M * G), amax(M * G);
      group_amax(x.data(), M, K, amax.data());
      quantize_act_int8_group_ref(x.data(), M, K, q2.data(), ldq, s2.data());
      for (int64_t m = 0; m < M; ++m)
        for (int64_t g = 0; g < G; ++g) {
          const int64_t k0 = g * kQuantBlock;
          s1[m * G + g] = quantize_act_int8_piece(x.data() + m * K + k0, std::min(K - k0, kQuantBlock),
                                                  amax[m * G + g], q1.data() + m * ldq + k0, level);
        }
      CHECK(q1 == q2);
      CHECK(std::memcmp(s1.data(), s2.data(), s1.size() * 4) == 0);
    }
    {
      std::vector<uint8_t> q1(M * ldq), q2(M * ldq);
      std::vector<float> s1(M * G), s2(M * G);
      quantize_act_fp8_group(x.data(), M, K, q1.data(), ldq, s1.data());
      quantize_act_fp8_group_ref(x.data(), M, K, q2.data(), ldq, s2.data());
      CHECK(q1 == q2);
      CHECK(std::memcmp(s1.data(), s2.data(), s1.size() * 4) == 0);
      CHECK(s1[G] == kFp8ActAmaxFloor / 448.0f);
      CHECK(q1[0] == 0x7E);  // the group amax maps to 448
      for (auto b : q1) CHECK((b & 0x7F) != 0x7F);  // clamped: never NaN
    }
  }
}

// The vector int8 quantiser rounds x * (1 / s) and divides only where that lands near a
// half-integer: values at and a few ulps around (k + 1/2) * s, for a scale whose inverse is
// inexact, must still give the twin's RNE(x / s).
TEST_CASE("int8 activation quantiser: values next to the rounding boundaries equal the twin", "[quant]") {
  for (float amax : {1.2345678f, 3.0e-3f, 77.7f}) {
    std::vector<float> x{amax};
    const float s = amax / kInt8Max;
    for (int k = -127; k <= 126; ++k) {
      float b = (static_cast<float>(k) + 0.5f) * s;
      for (int u = 0; u < 3; ++u) b = std::nextafter(b, -1e30f);
      for (int u = 0; u < 7; ++u, b = std::nextafter(b, 1e30f))
        if (std::fabs(b) <= amax) x.push_back(b);
    }
    const int64_t K = static_cast<int64_t>(x.size());
    for (KernelLevel level : int8_quant_levels()) {
      INFO("amax = " << amax << ", K = " << K << ", level " << kernel_level_name(level));
      std::vector<int8_t> q1(K), q2(K);
      float s1 = 0, s2 = 0;
      quantize_act_int8_token(x.data(), 1, K, q1.data(), K, &s1, nullptr, level);
      quantize_act_int8_token_ref(x.data(), 1, K, q2.data(), K, &s2);
      REQUIRE(bits(s1) == bits(s2));
      CHECK(q1 == q2);
      const int64_t G = n_groups(K);
      std::vector<float> g1(G), g2(G);
      quantize_act_int8_group(x.data(), 1, K, q1.data(), K, g1.data(), nullptr, level);
      quantize_act_int8_group_ref(x.data(), 1, K, q2.data(), K, g2.data());
      CHECK(q1 == q2);
    }
  }
}

// Where a given maximum is below the true one (x / s past +-127, up to infinity; no twin takes
// such a maximum), the AVX-512 int8 quantiser still equals the AVX2 one: the engine's output
// must not depend on the CPU it runs on.
TEST_CASE("int8 activation quantiser: AVX-512 equals AVX2 on NaN, infinities and values past the maximum",
          "[quant]") {
  if (max_kernel_level() < KernelLevel::Avx512) {
    WARN("no AVX-512 here: nothing to compare");
    return;
  }
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> x = random_vec(3 * 160, 77, 4.0f);
  for (int i = 0; i < 480; i += 7) x[i] = (i % 3 == 0) ? nan : (i % 3 == 1 ? inf : -inf);
  for (int i = 3; i < 480; i += 11) x[i] = (i % 2 ? 1.0f : -1.0f) * std::ldexp(1.0f, 20 + i % 100);
  const std::vector<float> amax(3 * 2, 1.5f);  // below most |x|: many codes clamp
  for (int64_t K : {160, 480}) {
    const int64_t M = 480 / K, G = n_groups(K);
    std::vector<int8_t> q1(M * K), q2(M * K);
    std::vector<float> s1(M * G), s2(M * G);
    quantize_act_int8_group(x.data(), M, K, q1.data(), K, s1.data(), amax.data(), KernelLevel::Avx2);
    quantize_act_int8_group(x.data(), M, K, q2.data(), K, s2.data(), amax.data(), KernelLevel::Avx512);
    CHECK(q1 == q2);
    quantize_act_int8_token(x.data(), M, K, q1.data(), K, s1.data(), amax.data(), KernelLevel::Avx2);
    quantize_act_int8_token(x.data(), M, K, q2.data(), K, s2.data(), amax.data(), KernelLevel::Avx512);
    CHECK(q1 == q2);
    quantize_act_int8_token(x.data(), M, K, q1.data(), K, s1.data(), nullptr, KernelLevel::Avx2);
    quantize_act_int8_token(x.data(), M, K, q2.data(), K, s2.data(), nullptr, KernelLevel::Avx512);
    CHECK(q1 == q2);
  }
}

// A producer may hand the quantisers the group maxima of its output (the SwiGLU epilogue does):
// the same scales and codes as when they look for them, for every scheme, with partial last
// groups, an all-zero row, a NaN (its group's maximum is NaN) and an outlier.
TEST_CASE("activation quantisers: given group maxima give the same result as found ones", "[quant]") {
  for (int64_t K : {1, 127, 128, 129, 300, 896}) {
    const int64_t M = 3, ldq = K + 5, G = n_groups(K);
    std::vector<float> x = random_vec(M * K, 20 + static_cast<uint32_t>(K), 2.0f);
    for (int64_t k = 0; k < K; ++k) x[K + k] = 0.0f;
    x[2 * K + K / 2] = 1e5f;
    if (K > 1) x[K - 1] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> amax(M * G);
    group_amax(x.data(), M, K, amax.data());
    CHECK(amax[G] == 0.0f);
    CHECK(amax[2 * G + (K / 2) / 128] == 1e5f);
    if (K > 1) CHECK(std::isnan(amax[G - 1]));
    INFO("K = " << K);
    // Runs quant(x, ..., amax) with the maxima found and given: same codes and scales.
    auto same = [&](auto code, int64_t n_scales, auto quant) {
      std::vector<decltype(code)> q1(M * ldq, code), q2(M * ldq, code);
      std::vector<float> s1(n_scales), s2(n_scales);
      quant(x.data(), M, K, q1.data(), ldq, s1.data(), nullptr);
      quant(x.data(), M, K, q2.data(), ldq, s2.data(), amax.data());
      CHECK(q1 == q2);
      CHECK(std::memcmp(s1.data(), s2.data(), s1.size() * 4) == 0);
    };
    for (KernelLevel level : int8_quant_levels()) {
      INFO("level " << kernel_level_name(level));
      same(int8_t{7}, M * G, [&](auto... a) { quantize_act_int8_group(a..., level); });
      same(int8_t{7}, M, [&](auto... a) { quantize_act_int8_token(a..., level); });
    }
    same(uint8_t{7}, M * G, quantize_act_fp8_group);
  }
}

// An inf or NaN activation: its group's (int8-channel: its token's) maximum and so its scale are
// not finite, and the group's codes are all 0, in every quantiser, fast or twin, wherever the
// value falls (vector body or scalar tail); other groups are untouched. A float max would drop
// the NaN: the fast quantisers once gave -127 (or e4m3 -448) for it where the twins gave 0.
TEST_CASE("activation quantisers: a non-finite value zeroes its group and makes its scale non-finite", "[quant]") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (int64_t K : {20, 40, 128, 160, 300}) {
    for (float bad : {nan, -nan, inf, -inf}) {
      for (int64_t pos : {int64_t{0}, int64_t{17}, K - 1}) {
        INFO("K = " << K << " bad = " << bad << " at " << pos);
        const int64_t M = 2, G = n_groups(K), g_bad = pos / kQuantBlock;
        std::vector<float> x = random_vec(M * K, 5 + static_cast<uint32_t>(K + pos), 3.0f);
        x[K + pos] = bad;  // row 1
        std::vector<int8_t> r8(M * K, 7), t8(M * K, 7);
        std::vector<uint8_t> rf(M * K, 7), tf(M * K, 7);
        std::vector<float> rs(M * G), ts(M * G), rst(M), tst(M);
        quantize_act_int8_group_ref(x.data(), M, K, r8.data(), K, rs.data());
        for (int64_t g = 0; g < G; ++g) {
          CHECK(std::isfinite(rs[g]));
          CHECK(std::isfinite(rs[G + g]) == (g != g_bad));
        }
        const int64_t k0 = g_bad * kQuantBlock, k1 = std::min(K, k0 + kQuantBlock);
        for (int64_t k = k0; k < k1; ++k) CHECK(r8[K + k] == 0);
        quantize_act_int8_token_ref(x.data(), M, K, t8.data(), K, rst.data());
        CHECK(std::isfinite(rst[0]));
        CHECK_FALSE(std::isfinite(rst[1]));
        for (int64_t k = 0; k < K; ++k) CHECK(t8[K + k] == 0);
        quantize_act_fp8_group_ref(x.data(), M, K, rf.data(), K, rs.data());
        for (int64_t k = k0; k < k1; ++k) CHECK(rf[K + k] == 0);
        for (KernelLevel level : int8_quant_levels()) {
          INFO("level " << kernel_level_name(level));
          std::vector<int8_t> q(M * K, 9);
          std::vector<float> s(M * G);
          quantize_act_int8_group(x.data(), M, K, q.data(), K, s.data(), nullptr, level);
          CHECK(q == r8);
          quantize_act_int8_group_ref(x.data(), M, K, r8.data(), K, rs.data());
          CHECK(std::memcmp(s.data(), rs.data(), s.size() * 4) == 0);
          std::vector<float> st(M);
          quantize_act_int8_token(x.data(), M, K, q.data(), K, st.data(), nullptr, level);
          CHECK(q == t8);
          CHECK(std::memcmp(st.data(), rst.data(), st.size() * 4) == 0);
        }
        quantize_act_fp8_group(x.data(), M, K, tf.data(), K, ts.data());
        quantize_act_fp8_group_ref(x.data(), M, K, rf.data(), K, rs.data());
        CHECK(tf == rf);
        CHECK(std::memcmp(ts.data(), rs.data(), ts.size() * 4) == 0);
      }
    }
  }
}

// A weight that is inf or NaN has no code: quantising it is an error naming its place, not a
// silent 0 (NaN) or a whole block of NaN outputs (inf).
TEST_CASE("quantize_weight refuses inf and NaN weights", "[quant]") {
  for (QuantScheme sc : {QuantScheme::Fp8Block, QuantScheme::Int8Block, QuantScheme::Int8Channel}) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
      std::vector<float> w = random_vec(4 * 200, 3, 1.0f);
      w[2 * 200 + 150] = bad;
      try {
        quantize_weight(w.data(), 4, 200, sc);
        FAIL("no error");
      } catch (const Error& e) {
        CHECK_THAT(e.what(), Catch::Contains("row 2 col 150") && Catch::Contains("not finite"));
      }
    }
  }
}
