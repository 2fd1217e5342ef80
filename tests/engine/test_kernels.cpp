// Tests of the linear-layer kernels: every fast path (AVX2, AVX-512, AMX — those this CPU has)
// against the scalar twin (kernels/ref) through make_linear, on random shapes with N, K not
// multiples of the tile sizes and M = 1..40; bit-exact where the math is integer (and for the
// FMA panel kernels, which follow the twin's order), within a tolerance for AMX-BF16. Also:
// batch invariance, all-zero groups, pre-quantised checkpoint tensors, and the twins themselves
// against a plain double-precision matmul.
#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "core/thread_pool.h"
#include "engine/cpu_features.h"
#include "engine/kernels/cpu/gemm_cpu.h"
#include "engine/kernels/ref/gemm_ref.h"
#include "engine/linear.h"
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

TensorView view_f32(const std::vector<float>& v, std::vector<int64_t> shape, const char* name = "w") {
  TensorView t;
  t.name = name;
  t.dtype = DType::F32;
  t.shape = std::move(shape);
  t.data = v.data();
  t.nbytes = v.size() * 4;
  return t;
}

// A quantised checkpoint weight: the bytes of q as an [N, K] tensor of the given dtype.
template <class T>
TensorView view_quantised(const std::vector<T>& q, DType dtype, int64_t N, int64_t K, const char* name = "w") {
  static_assert(sizeof(T) == 1);
  TensorView t;
  t.name = name;
  t.dtype = dtype;
  t.shape = {N, K};
  t.data = q.data();
  t.nbytes = q.size();
  return t;
}

struct Variant {
  QuantScheme scheme;
  ComputeType compute;
  const char* name;
  bool integer;  // exact integer sums
};
const Variant kVariants[] = {
    {QuantScheme::None, ComputeType::F32, "f32", false},
    {QuantScheme::None, ComputeType::BF16, "bf16", false},
    {QuantScheme::Fp8Block, ComputeType::BF16, "fp8-block", false},
    {QuantScheme::Int8Block, ComputeType::BF16, "int8-block", true},
    {QuantScheme::Int8Channel, ComputeType::BF16, "int8-channel", true},
};

// Builds the layer at a given kernel level.
std::unique_ptr<Linear> build(KernelLevel level, const std::vector<float>& w, int64_t N, int64_t K,
                              const std::vector<float>* bias, const Variant& v) {
  set_kernel_level_override(level);
  TensorView wt = view_f32(w, {N, K});
  TensorView bt;
  if (bias) bt = view_f32(*bias, {N}, "b");
  auto l = make_linear(wt, bias ? &bt : nullptr, nullptr, v.scheme, v.compute);
  set_kernel_level_override(std::nullopt);
  return l;
}

std::vector<KernelLevel> fast_levels() {
  std::vector<KernelLevel> out;
  for (KernelLevel l : {KernelLevel::Avx2, KernelLevel::Avx512, KernelLevel::Amx})
    if (static_cast<int>(l) <= static_cast<int>(max_kernel_level())) out.push_back(l);
  // Say so once: every kernel test passes here without amx.cpp ever running.
  static const bool warned = [] {
    if (max_kernel_level() < KernelLevel::Amx) WARN("no AMX on this CPU: the AMX GEMM kernels are not tested here");
    return true;
  }();
  (void)warned;
  return out;
}

std::vector<float> abs_vec(const std::vector<float>& v) {
  std::vector<float> a(v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = std::fabs(v[i]);
  return a;
}

// Runs M rows through the fast kernel and its twin: the twin's result (bit for bit for integer
// math, the AMX-BF16 family within rounding), and rows 0, 16 and M - 1 (those there are)
// computed alone give the same bits as in the batch. with_bias: a random bias, and every 7th
// weight scaled by 1e-4 (e4m3 subnormals after scaling). Outputs start as -1 and -2, so a value
// neither kernel writes differs.
void check_against_twin(KernelLevel level, const Variant& v, int64_t N, int64_t K, const std::vector<int64_t>& Ms,
                        ThreadPool& pool, uint32_t& seed, bool with_bias = false) {
  std::vector<float> w = random_vec(N * K, seed++, 0.05f);
  std::vector<float> bias;
  if (with_bias) {
    for (size_t i = 0; i < w.size(); i += 7) w[i] *= 1e-4f;
    bias = random_vec(N, seed++, 0.1f);
  }
  const std::vector<float>* b = with_bias ? &bias : nullptr;
  auto fast = build(level, w, N, K, b, v);
  auto ref = build(KernelLevel::Ref, w, N, K, b, v);
  // |x| . |W| through the twin bounds the float rounding error (RNE and e4m3 are symmetric).
  auto ref_abs = build(KernelLevel::Ref, abs_vec(w), N, K, nullptr, v);
  for (int64_t M : Ms) {
    INFO(kernel_level_name(level) << " " << v.name << " N=" << N << " K=" << K << " M=" << M
                                  << " threads=" << pool.size());
    std::vector<float> x = random_vec(M * K, seed++);
    std::vector<float> y1(M * N, -1.0f), y2(M * N, -2.0f), ya(M * N), y_row(N);
    fast->forward(x.data(), M, y1.data(), pool);
    ref->forward(x.data(), M, y2.data(), pool);
    const bool exact = v.integer || level != KernelLevel::Amx || v.compute == ComputeType::F32;
    if (exact) {
      REQUIRE(std::memcmp(y1.data(), y2.data(), y1.size() * 4) == 0);
    } else {
      std::vector<float> xa = abs_vec(x);
      ref_abs->forward(xa.data(), M, ya.data(), pool);
      for (int64_t i = 0; i < M * N; ++i) REQUIRE(std::fabs(y1[i] - y2[i]) <= 1e-5f * ya[i] + 1e-30f);
    }
    for (int64_t r : {int64_t{0}, int64_t{16}, M - 1}) {
      if (r >= M) continue;
      fast->forward(x.data() + r * K, 1, y_row.data(), pool);
      REQUIRE(std::memcmp(y_row.data(), y1.data() + r * N, N * 4) == 0);
    }
  }
}

}  // namespace

// A NaN or inf activation makes every output of its row NaN or inf in every scheme and on every
// path (the quantised ones through the non-finite scale of its group, quant.h), and leaves
// the other rows as the twin computes them. The fast int8/fp8 paths once turned a NaN into a
// finite code and a finite, wrong row (and a CPU-dependent one).
TEST_CASE("a non-finite activation poisons its row on every path, as in the twin", "[kernels]") {
  ThreadPool pool(2);
  const int64_t N = 40, K = 300, M = 3;
  std::vector<float> w = random_vec(N * K, 11, 0.05f);
  for (const Variant& v : kVariants)
    for (KernelLevel level : fast_levels())
      for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()})
        for (int64_t pos : {int64_t{3}, int64_t{150}, K - 1}) {
          INFO(kernel_level_name(level) << " " << v.name << " bad " << bad << " at " << pos);
          auto fast = build(level, w, N, K, nullptr, v);
          auto ref = build(KernelLevel::Ref, w, N, K, nullptr, v);
          std::vector<float> x = random_vec(M * K, 12);
          x[K + pos] = bad;
          std::vector<float> y1(M * N), y2(M * N);
          fast->forward(x.data(), M, y1.data(), pool);
          ref->forward(x.data(), M, y2.data(), pool);
          for (int64_t n = 0; n < N; ++n) {
            CHECK_FALSE(std::isfinite(y1[N + n]));
            CHECK_FALSE(std::isfinite(y2[N + n]));
          }
          for (int64_t r : {int64_t{0}, int64_t{2}})
            for (int64_t n = 0; n < N; ++n) {
              CHECK(std::isfinite(y1[r * N + n]));
              if (v.integer || level != KernelLevel::Amx || v.compute == ComputeType::F32) CHECK(y1[r * N + n] == y2[r * N + n]);
            }
        }
}

TEST_CASE("every fast kernel matches its scalar twin", "[kernels]") {
  ThreadPool pool(2);
  const int64_t shapes[][2] = {{1, 1}, {17, 33}, {32, 128}, {45, 200}, {130, 257}, {96, 384}, {200, 130}};
  uint32_t seed = 100;
  for (KernelLevel level : fast_levels())
    for (const Variant& v : kVariants)
      for (const auto& s : shapes)
        check_against_twin(level, v, s[0], s[1], {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 33, 40}, pool, seed, /*with_bias=*/true);
}

// Long K (the AMX kernel splits K into blocks of 1 KiB and parks the partial sums between
// them; past 4 KiB its L2 blocking also takes K in slices of 4 KiB, each slice over every strip
// of a row chunk) and more rows than one row chunk (128 for fp8, 192 at K = 4500): still the
// twin's result, and each row's result equals the row computed alone.
TEST_CASE("long K and many rows: K blocks and row chunks keep results exact", "[kernels]") {
  ThreadPool pool(2);
  const int64_t shapes[][2] = {{70, 1100}, {100, 700}, {40, 4500}};
  uint32_t seed = 900;
  for (KernelLevel level : fast_levels())
    for (const Variant& v : kVariants)
      for (const auto& s : shapes) check_against_twin(level, v, s[0], s[1], {17, 230}, pool, seed);
}

// One thread takes 10 column blocks in pieces of 2, so each call runs several column blocks
// through 2 K blocks (K = 1100, not sliced), with 4 strips reusing the same parked sums: each
// column block needs its own parking slot.
TEST_CASE("several column blocks per call across K blocks", "[kernels]") {
  ThreadPool pool(1);
  uint32_t seed = 950;
  for (KernelLevel level : fast_levels())
    for (const Variant& v : kVariants) check_against_twin(level, v, 300, 1100, {100}, pool, seed);
}

// A single row (decode) runs up to four 32-column blocks side by side (bf16 and e4m3 panels at
// AVX-512; two for f32), a call's blocks split in even groups: one thread, so one call takes
// every block. N = 20, 40, 150, 270, 290 and 320 are 1, 2, 5 (3 + 2), 9 (3 + 3 + 3) and 10
// blocks (4 + 3 + 3), N = 290 with a partial last block.
TEST_CASE("a single row through several column blocks at once", "[kernels]") {
  ThreadPool pool(1);
  uint32_t seed = 970;
  for (KernelLevel level : fast_levels())
    for (const Variant& v : kVariants)
      for (int64_t N : {20, 40, 150, 270, 290, 320})
        for (int64_t K : {130, 257}) check_against_twin(level, v, N, K, {1, 2}, pool, seed, /*with_bias=*/true);
}

// fp8-block weights take one of two panel forms: e4m3 bytes (AVX-512 with VBMI) or bf16 values
// (AVX2, and AVX-512 CPUs without VBMI). Every form and kernel runs each column's fma chain in
// the same order over the same exact values, so all give the same bits from the same inputs —
// which also runs the AVX-512 kernel over bf16 fp8 panels, a path make_linear never takes on a
// CPU with VBMI. Every finite byte value is a weight; M = 1..5 and 9 cover the one-row
// multi-block path, the in-register decode (M <= 4) and the decode-to-scratch path.
TEST_CASE("fp8-block panels: e4m3 and bf16 forms, every panel kernel, the same bits", "[kernels]") {
  if (static_cast<int>(max_kernel_level()) < static_cast<int>(KernelLevel::Avx2)) {
    WARN("no AVX2 on this CPU: nothing to compare");
    return;
  }
  const bool avx512 = static_cast<int>(max_kernel_level()) >= static_cast<int>(KernelLevel::Avx512);
  ThreadPool pool(2);
  std::mt19937 rng(1234);
  for (const auto& s : std::vector<std::array<int64_t, 2>>{{290, 257}, {64, 128}, {333, 700}}) {
    const int64_t N = s[0], K = s[1], G = (K + 127) / 128;
    std::vector<uint8_t> w(static_cast<size_t>(N * K));
    for (auto& b : w) b = static_cast<uint8_t>(rng() % 0x7F) | static_cast<uint8_t>(rng() & 0x80);  // no NaN
    std::vector<float> sw(static_cast<size_t>((N + 127) / 128 * G));
    for (auto& v : sw) v = std::ldexp(1.0f + static_cast<float>(rng() % 100) / 100.0f, -static_cast<int>(rng() % 12));
    const cpu::FloatPacked bf = cpu::pack_fp8(w.data(), sw.data(), N, K, KernelLevel::Avx2);
    REQUIRE_FALSE(bf.e4m3);
    std::vector<cpu::FloatPacked> forms;
    if (avx512) forms.push_back(cpu::pack_fp8(w.data(), sw.data(), N, K, KernelLevel::Avx512));
    for (int64_t M : {1, 2, 3, 4, 5, 9}) {
      INFO("N=" << N << " K=" << K << " M=" << M);
      std::vector<float> xf(static_cast<size_t>(M * bf.kp), 0.0f), sa(static_cast<size_t>(M * G));
      for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < K; ++k) xf[m * bf.kp + k] = e4m3_to_f32(static_cast<uint8_t>(rng() % 0x7F) | (rng() & 0x80));
      for (auto& v : sa) v = static_cast<float>(rng() % 1000 + 1) / 4096.0f;
      std::vector<float> y0(M * N, -1.0f);
      cpu::gemm_float(KernelLevel::Avx2, bf, nullptr, xf.data(), sa.data(), M, nullptr, y0.data(), pool);
      if (!avx512) continue;
      std::vector<float> y1(M * N, -2.0f);
      cpu::gemm_float(KernelLevel::Avx512, bf, nullptr, xf.data(), sa.data(), M, nullptr, y1.data(), pool);
      for (float v : y0) REQUIRE(std::isfinite(v));
      REQUIRE(std::memcmp(y0.data(), y1.data(), y0.size() * 4) == 0);
      for (const cpu::FloatPacked& f : forms) {
        std::vector<float> y2(M * N, -3.0f);
        cpu::gemm_float(KernelLevel::Avx512, f, nullptr, xf.data(), sa.data(), M, nullptr, y2.data(), pool);
        REQUIRE(std::memcmp(y0.data(), y2.data(), y0.size() * 4) == 0);
      }
    }
    if (!avx512) WARN("no AVX-512 on this CPU: only the AVX2 kernel ran");
  }
}

// An output of 1 MiB or more is written with non-temporal stores where a row's 16 columns are
// 64-byte aligned, and with plain masked stores elsewhere (the N edge, unaligned rows): the
// twin's bits either way, into an aligned y and into one shifted by a float.
TEST_CASE("large outputs (non-temporal stores) equal the twin, aligned or not", "[kernels]") {
  ThreadPool pool(2);
  const int64_t N = 1800, K = 160, M = 150;  // M * N * 4 = 1.08 MB; N is not a multiple of 32
  REQUIRE(M * N * 4 >= (int64_t{1} << 20));
  std::vector<float> w = random_vec(N * K, 4242, 0.05f), bias = random_vec(N, 4243, 0.1f);
  const std::vector<float> x = random_vec(M * K, 4244);
  cpu::AlignedBuffer<float> buf(M * N + 16);
  for (KernelLevel level : fast_levels()) {
    for (const Variant& v : kVariants) {
      // AMX-BF16 is not the twin's bits: there each row is checked against the row computed
      // alone (a 7 KB output, plain stores), which batch invariance makes the same bits.
      const bool exact = v.integer || level != KernelLevel::Amx || v.compute == ComputeType::F32;
      auto fast = build(level, w, N, K, &bias, v);
      auto ref = build(KernelLevel::Ref, w, N, K, &bias, v);
      std::vector<float> y2(M * N);
      if (exact) ref->forward(x.data(), M, y2.data(), pool);
      else
        for (int64_t r = 0; r < M; ++r) fast->forward(x.data() + r * K, 1, y2.data() + r * N, pool);
      for (int64_t shift : {0, 1}) {
        INFO(kernel_level_name(level) << " " << v.name << " shift " << shift);
        float* y1 = buf.data() + shift;
        std::fill(y1, y1 + M * N, -1.0f);
        fast->forward(x.data(), M, y1, pool);
        REQUIRE(std::memcmp(y1, y2.data(), y2.size() * 4) == 0);
      }
    }
  }
}

// forward() with the input's group maxima given by its producer: the same bits as without,
// for every level and scheme (non-quantising layers ignore them).
TEST_CASE("given group maxima of the input change nothing", "[kernels]") {
  ThreadPool pool(2);
  const int64_t N = 70, K = 300, M = 37;
  std::vector<float> w = random_vec(N * K, 515, 0.05f), x = random_vec(M * K, 516);
  x[5] = 40.0f;
  std::vector<float> amax(M * n_groups(K));
  group_amax(x.data(), M, K, amax.data());
  for (KernelLevel level : fast_levels()) {
    for (const Variant& v : kVariants) {
      INFO(kernel_level_name(level) << " " << v.name);
      auto l = build(level, w, N, K, nullptr, v);
      std::vector<float> y1(M * N), y2(M * N);
      l->forward(x.data(), M, y1.data(), pool);
      l->forward(x.data(), amax.data(), M, y2.data(), pool);
      REQUIRE(std::memcmp(y1.data(), y2.data(), y1.size() * 4) == 0);
    }
  }
}

// An int8-block layer given its input already quantised (as the SwiGLU epilogue hands it to the
// down projection) computes what forward() computes from the floats, at every level, with a bias,
// K past a whole group and rows that do not fill a tile; the padding (columns from K, rows from
// M) starts as junk.
// Every other layer says it does not take such input, and refuses it.
TEST_CASE("int8-block layers take pre-quantised groups: the bits of forward()", "[kernels]") {
  ThreadPool pool(2);
  const int64_t N = 70, K = 300, G = n_groups(K);
  std::vector<float> w = random_vec(N * K, 521, 0.05f), bias = random_vec(N, 522, 0.1f);
  std::vector<KernelLevel> levels = fast_levels();
  levels.push_back(KernelLevel::Ref);
  for (KernelLevel level : levels)
    for (const Variant& v : kVariants) {
      auto l = build(level, w, N, K, &bias, v);
      if (v.scheme != QuantScheme::Int8Block) {
        CHECK(l->int8_groups_ld() == 0);
        std::vector<int8_t> q(64 * K);
        std::vector<float> s(G), y(N);
        CHECK_THROWS(l->forward_int8_groups(q.data(), s.data(), 1, y.data(), pool));
        continue;
      }
      const int64_t ld = l->int8_groups_ld();
      REQUIRE(ld >= K);
      for (int64_t M : {1, 19, 37}) {
        INFO(kernel_level_name(level) << " M=" << M);
        std::vector<float> x = random_vec(M * K, 523 + static_cast<uint32_t>(M));
        std::vector<int8_t> q(Linear::int8_groups_rows(M) * ld, int8_t{-99});
        std::vector<float> s(M * G), y1(M * N, -1.0f), y2(M * N, -2.0f);
        quantize_act_int8_group(x.data(), M, K, q.data(), ld, s.data());
        l->forward(x.data(), M, y1.data(), pool);
        l->forward_int8_groups(q.data(), s.data(), M, y2.data(), pool);
        REQUIRE(std::memcmp(y1.data(), y2.data(), y1.size() * 4) == 0);
      }
    }
}

TEST_CASE("batch invariance: a row's output does not depend on the batch", "[kernels]") {
  ThreadPool pool(2);
  const int64_t N = 150, K = 300, M = 37;
  std::vector<float> w = random_vec(N * K, 7, 0.05f);
  std::vector<float> x = random_vec(M * K, 8);
  std::vector<KernelLevel> levels = fast_levels();
  levels.push_back(KernelLevel::Ref);
  for (KernelLevel level : levels)
    for (const Variant& v : kVariants) {
      INFO(kernel_level_name(level) << " " << v.name);
      auto l = build(level, w, N, K, nullptr, v);
      std::vector<float> y(M * N);
      l->forward(x.data(), M, y.data(), pool);
      for (int64_t r : {0, 1, 15, 16, 17, 31, 32, 36}) {
        std::vector<float> y1(N);
        l->forward(x.data() + r * K, 1, y1.data(), pool);
        REQUIRE(std::memcmp(y1.data(), y.data() + r * N, N * 4) == 0);
      }
      // a sub-batch starting mid-tile
      std::vector<float> y5(5 * N);
      l->forward(x.data() + 14 * K, 5, y5.data(), pool);
      REQUIRE(std::memcmp(y5.data(), y.data() + 14 * N, 5 * N * 4) == 0);
    }
}

TEST_CASE("thread invariance: the output does not depend on the threads or how they split the work", "[kernels]") {
  // 22 column blocks: pieces of 1-2 blocks, taken by whichever thread is free.
  const int64_t N = 700, K = 300;
  std::vector<float> w = random_vec(N * K, 9, 0.05f);
  std::vector<float> x = random_vec(40 * K, 10);
  ThreadPool p1(1), p2(2), p3(3);
  for (KernelLevel level : fast_levels())
    for (const Variant& v : kVariants)
      for (int64_t M : {1, 40}) {
        INFO(kernel_level_name(level) << " " << v.name << " M=" << M);
        auto l = build(level, w, N, K, nullptr, v);
        std::vector<float> y1(M * N), y2(M * N), y3(M * N);
        l->forward(x.data(), M, y1.data(), p1);
        for (int rep = 0; rep < 3; ++rep) {
          l->forward(x.data(), M, y2.data(), p2);
          l->forward(x.data(), M, y3.data(), p3);
          REQUIRE(std::memcmp(y1.data(), y2.data(), M * N * 4) == 0);
          REQUIRE(std::memcmp(y1.data(), y3.data(), M * N * 4) == 0);
        }
      }
}

TEST_CASE("forward_columns hands on the same bits as forward, in pieces of whole units", "[kernels]") {
  ThreadPool pool(2);
  const int64_t N = 300, K = 200;  // 300: the last piece is partial
  std::vector<float> w = random_vec(N * K, 13, 0.05f);
  std::vector<float> bias = random_vec(N, 14);
  std::vector<float> x = random_vec(37 * K, 15);
  std::vector<KernelLevel> levels = fast_levels();
  levels.push_back(KernelLevel::Ref);
  for (KernelLevel level : levels)
    for (const Variant& v : kVariants)
      for (int64_t M : {1, 37})
        for (int64_t unit : {32, 128}) {
          INFO(kernel_level_name(level) << " " << v.name << " M=" << M << " unit=" << unit);
          auto l = build(level, w, N, K, &bias, v);
          std::vector<float> y(M * N), yc(M * N, -1.0f);
          std::vector<std::atomic<int>> seen(static_cast<size_t>(N));
          std::atomic<int> bad{0};
          l->forward(x.data(), M, y.data(), pool);
          l->forward_columns(x.data(), M, unit, [&](int64_t c0, int64_t c1, const float* ys, int64_t ld) {
            if (c0 % unit != 0 || c1 <= c0 || c1 - c0 > unit || c1 > N || ld < c1 - c0) { bad++; return; }
            for (int64_t c = c0; c < c1; ++c) seen[static_cast<size_t>(c)]++;
            for (int64_t m = 0; m < M; ++m) std::memcpy(yc.data() + m * N + c0, ys + m * ld, (c1 - c0) * 4);
          }, pool);
          CHECK(bad == 0);
          for (int64_t c = 0; c < N; ++c) REQUIRE(seen[static_cast<size_t>(c)] == 1);
          REQUIRE(std::memcmp(y.data(), yc.data(), M * N * 4) == 0);
        }
}

TEST_CASE("all-zero weight blocks and activation groups", "[kernels]") {
  ThreadPool pool(2);
  const int64_t N = 140, K = 260, M = 3;
  std::vector<float> w = random_vec(N * K, 11, 0.05f);
  for (int64_t n = 0; n < 128; ++n)
    for (int64_t k = 128; k < 256; ++k) w[n * K + k] = 0.0f;
  std::vector<float> x = random_vec(M * K, 12);
  for (int64_t k = 0; k < 128; ++k) x[k] = 0.0f;  // row 0, group 0
  for (int64_t k = 0; k < K; ++k) x[2 * K + k] = 0.0f;  // row 2 entirely
  std::vector<KernelLevel> levels = fast_levels();
  levels.push_back(KernelLevel::Ref);
  for (KernelLevel level : levels)
    for (const Variant& v : kVariants) {
      INFO(kernel_level_name(level) << " " << v.name);
      auto l = build(level, w, N, K, nullptr, v);
      std::vector<float> y(M * N);
      l->forward(x.data(), M, y.data(), pool);
      for (float f : y) REQUIRE(std::isfinite(f));
      for (int64_t n = 0; n < N; ++n) REQUIRE(y[2 * N + n] == 0.0f);
    }
}

TEST_CASE("the scalar twins agree with a double-precision matmul of the dequantised operands",
          "[kernels]") {
  const int64_t M = 4, N = 40, K = 300, G = n_groups(K);
  std::vector<float> x = random_vec(M * K, 21), w = random_vec(N * K, 22, 0.05f);
  auto check = [&](const std::vector<float>& got, auto xval, auto wval, double rel) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double acc = 0, mag = 0;
        for (int64_t k = 0; k < K; ++k) {
          acc += xval(m, k) * wval(n, k);
          mag += std::fabs(xval(m, k) * wval(n, k));
        }
        REQUIRE(std::fabs(got[m * N + n] - acc) <= rel * mag + 1e-12);
      }
  };
  std::vector<float> y(M * N);
  SECTION("int8 block") {
    QuantizedWeight qw = quantize_weight(w.data(), N, K, QuantScheme::Int8Block);
    std::vector<int8_t> qa(M * K);
    std::vector<float> sa(M * G);
    quantize_act_int8_group_ref(x.data(), M, K, qa.data(), K, sa.data());
    const auto* q = reinterpret_cast<const int8_t*>(qw.q.data());
    ref::gemm_int8_block(qa.data(), sa.data(), q, qw.scale.data(), M, N, K, y.data());
    check(y, [&](int64_t m, int64_t k) { return double(qa[m * K + k]) * sa[m * G + k / 128]; },
          [&](int64_t n, int64_t k) { return double(q[n * K + k]) * qw.scale[(n / 128) * G + k / 128]; }, 1e-6);
  }
  SECTION("int8 channel") {
    QuantizedWeight qw = quantize_weight(w.data(), N, K, QuantScheme::Int8Channel);
    std::vector<int8_t> qa(M * K);
    std::vector<float> sa(M);
    quantize_act_int8_token_ref(x.data(), M, K, qa.data(), K, sa.data());
    const auto* q = reinterpret_cast<const int8_t*>(qw.q.data());
    ref::gemm_int8_channel(qa.data(), sa.data(), q, qw.scale.data(), M, N, K, y.data());
    check(y, [&](int64_t m, int64_t k) { return double(qa[m * K + k]) * sa[m]; },
          [&](int64_t n, int64_t k) { return double(q[n * K + k]) * qw.scale[n]; }, 1e-6);
  }
  SECTION("fp8 block") {
    QuantizedWeight qw = quantize_weight(w.data(), N, K, QuantScheme::Fp8Block);
    std::vector<uint8_t> qa(M * K);
    std::vector<float> sa(M * G);
    quantize_act_fp8_group_ref(x.data(), M, K, qa.data(), K, sa.data());
    ref::gemm_fp8_block(qa.data(), sa.data(), qw.q.data(), qw.scale.data(), M, N, K, y.data());
    check(y, [&](int64_t m, int64_t k) { return double(e4m3_to_f32(qa[m * K + k])) * sa[m * G + k / 128]; },
          [&](int64_t n, int64_t k) { return double(e4m3_to_f32(qw.q[n * K + k])) * qw.scale[(n / 128) * G + k / 128]; },
          1e-5);
  }
  SECTION("f32") {
    ref::gemm_f32(x.data(), w.data(), M, N, K, y.data());
    check(y, [&](int64_t m, int64_t k) { return double(x[m * K + k]); },
          [&](int64_t n, int64_t k) { return double(w[n * K + k]); }, 1e-5);
  }
  SECTION("quantised outputs are close to the float matmul") {
    ThreadPool pool(1);
    std::vector<float> yf(M * N), yq(M * N);
    auto lf = build(KernelLevel::Ref, w, N, K, nullptr, kVariants[0]);
    lf->forward(x.data(), M, yf.data(), pool);
    for (int i = 1; i < 5; ++i) {
      INFO(kVariants[i].name);
      auto lq = build(max_kernel_level(), w, N, K, nullptr, kVariants[i]);
      lq->forward(x.data(), M, yq.data(), pool);
      double err = 0, ref = 0;
      for (int64_t j = 0; j < M * N; ++j) {
        err += (yq[j] - yf[j]) * double(yq[j] - yf[j]);
        ref += double(yf[j]) * yf[j];
      }
      REQUIRE(std::sqrt(err / ref) < 0.05);  // fp8 ~3%, int8 ~1% relative RMS error
    }
  }
}

TEST_CASE("pre-quantised checkpoint tensors load as they are", "[kernels]") {
  ThreadPool pool(2);
  const int64_t N = 70, K = 150, M = 5;
  std::vector<float> w = random_vec(N * K, 31, 0.05f), x = random_vec(M * K, 32);
  for (int i = 2; i < 5; ++i) {
    const Variant& v = kVariants[i];
    INFO(v.name);
    QuantizedWeight qw = quantize_weight(w.data(), N, K, v.scheme);
    TensorView wt = view_quantised(qw.q, v.scheme == QuantScheme::Fp8Block ? DType::F8_E4M3 : DType::I8, N, K);
    TensorView st = view_f32(qw.scale, {qw.scale_rows(), qw.scale_cols()}, "s");
    auto from_ckpt = make_linear(wt, nullptr, &st, v.scheme, ComputeType::BF16);
    auto from_float = build(active_kernel_level(), w, N, K, nullptr, v);
    std::vector<float> y1(M * N), y2(M * N);
    from_ckpt->forward(x.data(), M, y1.data(), pool);
    from_float->forward(x.data(), M, y2.data(), pool);
    REQUIRE(std::memcmp(y1.data(), y2.data(), y1.size() * 4) == 0);
    // scheme none dequantises: equals an f32 layer built from the dequantised weight
    auto deq = make_linear(wt, nullptr, &st, QuantScheme::None, ComputeType::F32);
    std::vector<float> wd = dequantize_weight(qw);
    auto from_deq = build(active_kernel_level(), wd, N, K, nullptr, kVariants[0]);
    deq->forward(x.data(), M, y1.data(), pool);
    from_deq->forward(x.data(), M, y2.data(), pool);
    REQUIRE(std::memcmp(y1.data(), y2.data(), y1.size() * 4) == 0);
  }
  // a bad scale shape is an Error, not a crash
  std::vector<int8_t> q(N * K);
  std::vector<float> s(3);
  TensorView wt = view_quantised(q, DType::I8, N, K, "model.layers.0.mlp.up_proj.weight");
  TensorView st = view_f32(s, {3}, "s");
  REQUIRE_THROWS_WITH(make_linear(wt, nullptr, &st, QuantScheme::Int8Block, ComputeType::BF16),
                      Catch::Contains("up_proj") && Catch::Contains("not a known layout"));
  REQUIRE_THROWS_AS(make_linear(wt, nullptr, nullptr, QuantScheme::Int8Block, ComputeType::BF16), std::exception);
  // a NaN scale in the checkpoint, and an inf weight quantised at load time, are errors naming
  // the tensor, not silent NaN rows
  std::vector<float> good_s(n_groups(N) * n_groups(K), 0.01f);
  good_s[1] = std::numeric_limits<float>::quiet_NaN();
  TensorView nan_st = view_f32(good_s, {n_groups(N), n_groups(K)}, "model.layers.0.mlp.up_proj.weight_scale_inv");
  REQUIRE_THROWS_WITH(make_linear(wt, nullptr, &nan_st, QuantScheme::Int8Block, ComputeType::BF16),
                      Catch::Contains("weight_scale_inv") && Catch::Contains("element 1") &&
                          Catch::Contains("not a finite scale"));
  w[3 * K + 7] = std::numeric_limits<float>::infinity();
  TensorView inf_w = view_f32(w, {N, K}, "model.layers.1.mlp.down_proj.weight");
  for (int i = 2; i < 5; ++i)
    REQUIRE_THROWS_WITH(make_linear(inf_w, nullptr, nullptr, kVariants[i].scheme, ComputeType::BF16),
                        Catch::Contains("down_proj") && Catch::Contains("row 3 col 7") && Catch::Contains("not finite"));
}

TEST_CASE("int8 checkpoint weights of -128: every path equals the twin", "[kernels]") {
  // Our quantiser clamps to ±127, but a checkpoint's I8 weight may hold -128, whose negation
  // wraps: the one-row AVX-512 path (sum |a| * (w negated where a < 0)) must not take it.
  ThreadPool pool(2);
  const int64_t N = 70, K = 300;
  std::mt19937 rng(77);
  std::uniform_int_distribution<int> code(-128, 127);
  std::vector<int8_t> q(N * K);
  for (auto& v : q) v = static_cast<int8_t>(rng() % 4 == 0 ? -128 : code(rng));
  for (bool channel : {false, true}) {
    const QuantScheme scheme = channel ? QuantScheme::Int8Channel : QuantScheme::Int8Block;
    std::vector<float> scale = random_vec(channel ? N : n_groups(N) * n_groups(K), 78, 0.01f);
    for (auto& s : scale) s = std::fabs(s) + 1e-3f;
    TensorView wt = view_quantised(q, DType::I8, N, K);
    TensorView st = channel ? view_f32(scale, {N, 1}, "s") : view_f32(scale, {n_groups(N), n_groups(K)}, "s");
    auto layer = [&](KernelLevel level) {
      set_kernel_level_override(level);
      auto l = make_linear(wt, nullptr, &st, scheme, ComputeType::BF16);
      set_kernel_level_override(std::nullopt);
      return l;
    };
    auto ref = layer(KernelLevel::Ref);
    for (KernelLevel level : fast_levels()) {
      auto fast = layer(level);
      for (int64_t M : {1, 2, 5}) {
        INFO(kernel_level_name(level) << (channel ? " channel" : " block") << " M=" << M);
        std::vector<float> x = random_vec(M * K, 79 + static_cast<uint32_t>(M));
        std::vector<float> y1(M * N, -1.0f), y2(M * N, -2.0f);
        fast->forward(x.data(), M, y1.data(), pool);
        ref->forward(x.data(), M, y2.data(), pool);
        REQUIRE(std::memcmp(y1.data(), y2.data(), y1.size() * 4) == 0);
      }
    }
  }
}

TEST_CASE("scheme names and kernel levels parse", "[kernels]") {
  for (auto q : {QuantScheme::None, QuantScheme::Fp8Block, QuantScheme::Int8Block, QuantScheme::Int8Channel})
    CHECK(parse_quant_scheme(quant_scheme_name(q)) == q);
  CHECK_THROWS(parse_quant_scheme("int4"));
  CHECK(parse_kernel_level("avx2") == KernelLevel::Avx2);
  CHECK_THROWS(parse_kernel_level("sse"));
  set_kernel_level_override(KernelLevel::Ref);
  CHECK(active_kernel_level() == KernelLevel::Ref);
  set_kernel_level_override(std::nullopt);
  if (!std::getenv("QEVAL_KERNEL")) CHECK(active_kernel_level() == max_kernel_level());
}

TEST_CASE("VBMI e4m3 -> bf16 decode (the AMX path's) equals the scalar decode for all 256 bytes", "[kernels][fp8]") {
  if (static_cast<int>(max_kernel_level()) < static_cast<int>(KernelLevel::Avx512) || !cpu_features().avx512vbmi) {
    WARN("no AVX-512 VBMI on this CPU: skipping");
    return;
  }
  // Every byte value, NaN included, in a shuffled order, at a length that exercises the scalar
  // tail too.
  std::vector<uint8_t> src(256 * 3 + 7);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>((i * 97 + 13) % 256);
  std::vector<uint16_t> dst(src.size(), 0xDEAD);
  cpu::decode_e4m3_to_bf16_vbmi(src.data(), dst.data(), static_cast<int64_t>(src.size()));
  for (size_t i = 0; i < src.size(); ++i) {
    INFO("byte " << int(src[i]) << " at " << i);
    CHECK(dst[i] == bf16_from_f32(e4m3_to_f32(src[i])));
  }
}
