// Transformer forward pass over a batch of sequence chunks with a paged KV cache.
#include "engine/model.h"

#include <immintrin.h>

// GCC 12 reports a false "may be used uninitialized" inside its own AVX-512 intrinsics headers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>

#include "core/error.h"
#include "engine/cpu_features.h"
#include "engine/kernels/cpu/attention_amx.h"
#include "engine/kernels/cpu/exp_avx512.h"
#include "engine/quant.h"

namespace qeval {

float round_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7F800000u) == 0x7F800000u) {  // inf / nan: truncate, keep nan quiet
    if (u & 0x007FFFFFu) u |= 0x00400000u;
    u &= 0xFFFF0000u;
  } else {
    u += 0x7FFFu + ((u >> 16) & 1u);
    u &= 0xFFFF0000u;
  }
  float y;
  std::memcpy(&y, &u, 4);
  return y;
}

namespace {

// Rows of gate and of up that alternate in a fused gate/up weight: a piece of 2 * kGluUnit output
// columns holds the gate and up values of kGluUnit intermediate features (a multiple of the
// 128-row quantisation blocks, so the fused layer quantises exactly as the separate ones).
constexpr int64_t kGluUnit = 128;

// Grows a per-step buffer to at least n elements and never shrinks it: a prefill after decode
// steps would otherwise zero-fill megabytes on every resize (the kernels read only [0, n)).
template <class V>
void grow(V& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

// exp(x) for 8 floats (Cephes-style: x = k ln2 + r, degree-6 polynomial for e^r, scale by 2^k);
// relative error ~2 ulp; inputs clamped to [-87.3, 88.7].
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.72283f));
  __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^k, split in two factors so k = 128 (x near 88.7) does not overflow the exponent field.
  __m256i ki = _mm256_cvtps_epi32(k);
  __m256i k1 = _mm256_srai_epi32(ki, 1), k2 = _mm256_sub_epi32(ki, k1);
  __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, _mm256_set1_epi32(127)), 23));
  __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, _mm256_set1_epi32(127)), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

inline float exp1(float x) {
  alignas(32) float b[8] = {x};
  _mm256_store_ps(b, exp8(_mm256_load_ps(b)));
  return b[0];
}

// 16-lane float vectors for attention_kernel.inc. Avx2Vec16 is two __m256; Avx512Vec16 (below,
// compiled for AVX-512) one __m512. Every operation gives the same bits in both.
struct Avx2Vec16 {
  __m256 lo, hi;
  static Avx2Vec16 zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static Avx2Vec16 set1(float x) { return {_mm256_set1_ps(x), _mm256_set1_ps(x)}; }
  static Avx2Vec16 load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  // 16 bf16 values widened to f32 (exact: the bits shifted into the high half).
  static Avx2Vec16 load(const uint16_t* p) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return {_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(w)), 16)),
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(w, 1)), 16))};
  }
  static void store(float* p, Avx2Vec16 v) {
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
  }
  // Lane i < m: all ones.
  static void first_mask(int64_t m, __m256i& lo, __m256i& hi) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mm = _mm256_set1_epi32(static_cast<int>(std::clamp<int64_t>(m, 0, 16)));
    lo = _mm256_cmpgt_epi32(mm, iota);
    hi = _mm256_cmpgt_epi32(mm, _mm256_add_epi32(iota, _mm256_set1_epi32(8)));
  }
  // Lanes i < m of p, 0 elsewhere (lanes >= m are not read).
  static Avx2Vec16 load_first(const float* p, int64_t m) {
    __m256i lo, hi;
    first_mask(m, lo, hi);
    return {_mm256_maskload_ps(p, lo), _mm256_maskload_ps(p + 8, hi)};
  }
  static Avx2Vec16 load_first(const uint16_t* p, int64_t m) {
    alignas(32) uint16_t b[16] = {};
    std::copy(p, p + std::clamp<int64_t>(m, 0, 16), b);
    return load(b);
  }
  // Stores lanes i < m of v to p (lanes >= m are not written).
  static void store_first(float* p, Avx2Vec16 v, int64_t m) {
    __m256i lo, hi;
    first_mask(m, lo, hi);
    _mm256_maskstore_ps(p, lo, v.lo);
    _mm256_maskstore_ps(p + 8, hi, v.hi);
  }
  // Lanes i < m from x, the rest from other.
  static Avx2Vec16 blend_first(Avx2Vec16 x, Avx2Vec16 other, int64_t m) {
    __m256i lo, hi;
    first_mask(m, lo, hi);
    return {_mm256_blendv_ps(other.lo, x.lo, _mm256_castsi256_ps(lo)),
            _mm256_blendv_ps(other.hi, x.hi, _mm256_castsi256_ps(hi))};
  }
  static Avx2Vec16 add(Avx2Vec16 a, Avx2Vec16 b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
  static Avx2Vec16 sub(Avx2Vec16 a, Avx2Vec16 b) { return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
  static Avx2Vec16 mul(Avx2Vec16 a, Avx2Vec16 b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
  static Avx2Vec16 div(Avx2Vec16 a, Avx2Vec16 b) { return {_mm256_div_ps(a.lo, b.lo), _mm256_div_ps(a.hi, b.hi)}; }
  static Avx2Vec16 max(Avx2Vec16 a, Avx2Vec16 b) { return {_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)}; }
  static Avx2Vec16 abs(Avx2Vec16 a) {
    const __m256 m = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    return {_mm256_and_ps(a.lo, m), _mm256_and_ps(a.hi, m)};
  }
  static Avx2Vec16 fmadd(Avx2Vec16 a, Avx2Vec16 b, Avx2Vec16 c) {
    return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
  }
  static Avx2Vec16 exp(Avx2Vec16 x) { return {exp8(x.lo), exp8(x.hi)}; }
  // ((l[i] + l[i+8]) for i<8, then halves of 4, 2, 1.
  static float reduce_add(Avx2Vec16 v) { return reduce8_add(_mm256_add_ps(v.lo, v.hi)); }
  static float reduce_max(Avx2Vec16 v) { return reduce8_max(_mm256_max_ps(v.lo, v.hi)); }
  // acc = max(acc, |x|) keeping NaN (quant.h amax_step: the integer max of the |x| bits).
  static Avx2Vec16 amax(Avx2Vec16 acc, Avx2Vec16 x) {
    const Avx2Vec16 a = abs(x);
    return {_mm256_castsi256_ps(_mm256_max_epu32(_mm256_castps_si256(acc.lo), _mm256_castps_si256(a.lo))),
            _mm256_castsi256_ps(_mm256_max_epu32(_mm256_castps_si256(acc.hi), _mm256_castps_si256(a.hi)))};
  }
  static float reduce_amax(Avx2Vec16 v) {  // the integer max tree of reduce8_max's shape
    const __m256i m8 = _mm256_max_epu32(_mm256_castps_si256(v.lo), _mm256_castps_si256(v.hi));
    __m128i m4 = _mm_max_epu32(_mm256_castsi256_si128(m8), _mm256_extracti128_si256(m8, 1));
    m4 = _mm_max_epu32(m4, _mm_shuffle_epi32(m4, _MM_SHUFFLE(1, 0, 3, 2)));
    m4 = _mm_max_epu32(m4, _mm_shuffle_epi32(m4, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtss_f32(_mm_castsi128_ps(m4));
  }
  static float reduce8_add(__m256 s8) {
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
  }
  static float reduce8_max(__m256 s8) {
    __m128 s4 = _mm_max_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_max_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_max_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
  }
};

// One attention query row: head h of token t. sc is its scratch [stride]; n its keys
// (positions 0..n-1).
struct AttnRow {
  const float* q;  // [E]
  float* out;      // [E]
  float* sc;       // [stride]
  int64_t n;
};

namespace avx2 {
using V = Avx2Vec16;
#include "engine/attention_kernel.inc"
}  // namespace avx2

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw")

struct Avx512Vec16 {
  __m512 v;
  static Avx512Vec16 zero() { return {_mm512_setzero_ps()}; }
  static Avx512Vec16 set1(float x) { return {_mm512_set1_ps(x)}; }
  static Avx512Vec16 load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static Avx512Vec16 load(const uint16_t* p) {  // bf16, widened exactly
    return {_mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16))};
  }
  static void store(float* p, Avx512Vec16 x) { _mm512_storeu_ps(p, x.v); }
  static __mmask16 first_mask(int64_t m) {
    return m >= 16 ? static_cast<__mmask16>(0xFFFF)
                   : m <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << m) - 1);
  }
  static Avx512Vec16 load_first(const float* p, int64_t m) { return {_mm512_maskz_loadu_ps(first_mask(m), p)}; }
  static Avx512Vec16 load_first(const uint16_t* p, int64_t m) {
    return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(first_mask(m), p)), 16))};
  }
  static void store_first(float* p, Avx512Vec16 x, int64_t m) { _mm512_mask_storeu_ps(p, first_mask(m), x.v); }
  static Avx512Vec16 blend_first(Avx512Vec16 x, Avx512Vec16 other, int64_t m) {
    return {_mm512_mask_blend_ps(first_mask(m), other.v, x.v)};
  }
  static Avx512Vec16 add(Avx512Vec16 a, Avx512Vec16 b) { return {_mm512_add_ps(a.v, b.v)}; }
  static Avx512Vec16 sub(Avx512Vec16 a, Avx512Vec16 b) { return {_mm512_sub_ps(a.v, b.v)}; }
  static Avx512Vec16 mul(Avx512Vec16 a, Avx512Vec16 b) { return {_mm512_mul_ps(a.v, b.v)}; }
  static Avx512Vec16 div(Avx512Vec16 a, Avx512Vec16 b) { return {_mm512_div_ps(a.v, b.v)}; }
  static Avx512Vec16 max(Avx512Vec16 a, Avx512Vec16 b) { return {_mm512_max_ps(a.v, b.v)}; }
  static Avx512Vec16 abs(Avx512Vec16 a) {
    return {_mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a.v), _mm512_set1_epi32(0x7FFFFFFF)))};
  }
  static Avx512Vec16 fmadd(Avx512Vec16 a, Avx512Vec16 b, Avx512Vec16 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
  static Avx512Vec16 exp(Avx512Vec16 x) { return {exp16_avx512(x.v)}; }
  static float reduce_add(Avx512Vec16 x) {
    return Avx2Vec16::reduce8_add(_mm256_add_ps(_mm512_castps512_ps256(x.v), _mm512_extractf32x8_ps(x.v, 1)));
  }
  static Avx512Vec16 amax(Avx512Vec16 acc, Avx512Vec16 x) {  // as Avx2Vec16::amax
    return {_mm512_castsi512_ps(_mm512_max_epu32(_mm512_castps_si512(acc.v), _mm512_castps_si512(abs(x).v)))};
  }
  static float reduce_amax(Avx512Vec16 x) {
    return Avx2Vec16::reduce_amax({_mm512_extractf32x8_ps(x.v, 0), _mm512_extractf32x8_ps(x.v, 1)});
  }
  static float reduce_max(Avx512Vec16 x) {
    // (extract, not _mm512_castps512_ps256: GCC 12 warns about its own header in that cast here)
    return Avx2Vec16::reduce8_max(_mm256_max_ps(_mm512_extractf32x8_ps(x.v, 0), _mm512_extractf32x8_ps(x.v, 1)));
  }
};

namespace avx512 {
using V = Avx512Vec16;
#include "engine/attention_kernel.inc"
}  // namespace avx512

#pragma GCC pop_options

// out = w * (x / sqrt(mean(x^2) + eps)); the sum of squares is accumulated in double.
// The sum of squares runs in double in 16 interleaved partial sums (element i into sum i % 16,
// combined in a fixed order; the compiler turns them into vector lanes): the same value for a
// row whatever the batch or kernel level. One sequential double sum was a dependency chain of
// n additions. Measured in one process, alternating with it: 0.5B prefill +6% (int8-channel),
// +7% (bf16).
void rms_norm(const float* x, const float* w, float* out, int64_t n, double eps) {
  constexpr int kLanes = 16;
  double part[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) part[j] += static_cast<double>(x[i + j]) * x[i + j];
  for (int j = 0; i < n; ++i, ++j) part[j] += static_cast<double>(x[i]) * x[i];
  for (int width = kLanes / 2; width > 0; width /= 2)
    for (int j = 0; j < width; ++j) part[j] += part[j + width];
  const double ss = part[0];
  float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * scale);
}

// Runs fn(begin, end) over [0, n) on the pool, or inline when the work is too small to pay
// for waking the workers (decode steps with few rows).
template <class Fn>
void rows_for(ThreadPool& pool, int64_t n, int64_t work, Fn&& fn) {
  if (work < (int64_t{1} << 15)) {
    fn(int64_t{0}, n);
    return;
  }
  // Pieces of 1/8 of a thread's share, taken by whichever thread is free (see for_column_blocks).
  pool.parallel_for_dynamic(n, std::max<int64_t>(1, n / (8 * pool.size())), [&](int, int64_t b, int64_t e) { fn(b, e); });
}

const TensorView& need(const TensorLookup& find, const std::string& name,
                       std::initializer_list<int64_t> shape) {
  const TensorView* t = find(name);
  if (!t) fail("model: tensor '{}' is missing (hint: is the checkpoint complete and of a supported architecture?)", name);
  std::vector<int64_t> want(shape);
  if (t->shape != want) {
    auto str = [](const std::vector<int64_t>& s) {
      std::string r = "[";
      for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
      return r + "]";
    };
    fail("model: tensor '{}' has shape {}, expected {}", name, str(t->shape), str(want));
  }
  return *t;
}

std::vector<float> norm_weight(const TensorLookup& find, const std::string& name, int64_t n) {
  return to_f32(need(find, name, {n}));
}

}  // namespace

Model::Model(const ModelConfig& cfg, const TensorLookup& find, const ModelOptions& opt)
    : cfg_(cfg), opt_(opt) {
  if (std::string e = cfg.validate(); !e.empty()) fail("model config: {}", e);
  const int64_t D = cfg.hidden_size, V = cfg.vocab_size, H = cfg.n_heads, G = cfg.n_kv_heads,
                E = cfg.head_dim, F = cfg.intermediate_size;
  if (E % 2 != 0) fail("model config: head_dim {} must be even for RoPE", E);
  use_avx512_ = active_kernel_level() >= KernelLevel::Avx512;
  // The bf16 attention keeps K and V in bf16 (as the bf16 compute type keeps every matmul operand)
  // and runs both products on AMX-BF16 tiles: at 512 tokens of the 0.5B shape, attention on f32
  // FMAs took a fifth of an int8 prefill. Other levels, f32 compute and head dims that are not
  // whole 32-element tile chunks keep the vector kernels (AVX2 / AVX-512) and their layout.
  amx_attention_ = opt.compute == ComputeType::BF16 && active_kernel_level() >= KernelLevel::Amx && E % 32 == 0 &&
                   E <= cpu::kMaxAttnHeadDim;
  // The vector kernels keep K and V in bf16 too under bf16 compute (the f32 layout at half the
  // bytes, widened exactly as loaded), as SGLang and vLLM keep a bf16 model's cache: a decode
  // step reads half the cache bytes, and a cache budget holds twice the tokens. f32 compute
  // keeps an f32 cache, and so does bf16 compute when asked to (opt.f32_kv). Measured in one
  // process, alternating with the f32 cache (0.5B int8-block, Zen 5, 2 threads, medians of 6-12
  // rounds): prefill unchanged at 512 and 2048 tokens (-1.5% to +1%, within noise), decode +1%
  // after a 512-token prompt and +1-6% after a 2048-token one.
  amx_attention_ = amx_attention_ && !opt.f32_kv;
  kv_type_ = amx_attention_                                    ? KvType::Bf16Tiles
             : opt.compute == ComputeType::BF16 && !opt.f32_kv ? KvType::Bf16
                                                               : KvType::F32;
  embed_ = need(find, "model.embed_tokens.weight", {V, D});
  if (embed_.dtype != DType::F32 && embed_.dtype != DType::BF16 && embed_.dtype != DType::F16)
    fail("model: tensor 'model.embed_tokens.weight' has dtype {}, expected F32, BF16 or F16",
         dtype_name(embed_.dtype));

  auto linear = [&](const std::string& base, int64_t n, int64_t k, bool want_bias,
                    QuantScheme q) {
    const TensorView& w = need(find, base + ".weight", {n, k});
    const TensorView* b = want_bias ? &need(find, base + ".bias", {n}) : find(base + ".bias");
    const TensorView* s_inv = find(base + ".weight_scale_inv");
    const TensorView* s_ch = find(base + ".weight_scale");
    if (s_inv && s_ch)
      fail("checkpoint: {} has both weight_scale_inv and weight_scale (hint: a weight has one scale: "
           "weight_scale_inv for block schemes, weight_scale for w8a8_int8)", base);
    const TensorView* s = s_inv ? s_inv : s_ch;
    if (opt.quant_from_checkpoint) {
      // A pre-quantised checkpoint: quantised exactly where a scale exists, as SGLang loads it,
      // and the scale's kind must be the one config.json names.
      if (!s) return make_linear(w, b, nullptr, QuantScheme::None, opt_.compute);
      const QuantScheme held = stored_scheme(w, *s);
      if (held != q)
        fail("checkpoint: {} holds {} weights ({} {}), but config.json's quantization_config says {} (hint: "
             "fix quant_method in config.json, or set quantization: none to dequantise)",
             base, quant_scheme_name(held), dtype_name(w.dtype), s->name, quant_scheme_name(q));
    }
    return make_linear(w, b, s, q, opt_.compute);
  };
  // Tensors that are never quantised must not come with a scale.
  for (std::string t : {"model.embed_tokens", "model.norm", "lm_head"})
    for (const char* suffix : {".weight_scale_inv", ".weight_scale"})
      if (find(t + suffix))
        fail("checkpoint: tensor {}{}: {} is not quantised in any scheme (hint: embeddings, norms and lm_head "
             "stay BF16/F32; reconvert the checkpoint)", t, suffix, t);
  // Concatenation of same-K weights along N as one layer, or nullptr when they cannot be
  // fused without changing any output (checkpoint scales, mixed dtypes, quant blocks that would
  // straddle the seams). interleave > 0: the rows alternate between the parts in runs of that
  // many (every part's n a multiple of it), so that matching rows of the parts sit together.
  auto fused = [&](std::initializer_list<std::pair<std::string, int64_t>> parts, int64_t k,
                   bool want_bias, int64_t interleave = 0) -> std::unique_ptr<Linear> {
    if (!opt.fuse) return nullptr;
    std::vector<const TensorView*> ws, bs;
    std::vector<int64_t> ns;
    int64_t n_total = 0;
    for (const auto& [base, n] : parts) {
      const TensorView& w = need(find, base + ".weight", {n, k});
      if (find(base + ".weight_scale_inv") || find(base + ".weight_scale")) return nullptr;
      if (!ws.empty() && w.dtype != ws[0]->dtype) return nullptr;
      if (w.dtype != DType::F32 && w.dtype != DType::BF16 && w.dtype != DType::F16) return nullptr;
      if (opt.quant != QuantScheme::None && !opt.quant_from_checkpoint && opt.quant != QuantScheme::Int8Channel &&
          n % 128 != 0)
        return nullptr;
      if (interleave > 0 && (n % interleave != 0 || n != parts.begin()->second)) return nullptr;
      ws.push_back(&w);
      bs.push_back(want_bias ? &need(find, base + ".bias", {n}) : find(base + ".bias"));
      ns.push_back(n);
      n_total += n;
    }
    // The parts' rows (row_bytes each) to dst: part after part, or alternating in runs of
    // `interleave` rows.
    auto concat_rows = [&](const std::vector<const uint8_t*>& src, size_t row_bytes, uint8_t* dst) {
      const int64_t step = interleave > 0 ? interleave : n_total;
      for (int64_t r0 = 0; r0 < n_total; r0 += step)
        for (size_t i = 0; i < src.size(); ++i) {
          const int64_t rows = std::min(step, ns[i] - r0);
          if (rows <= 0) continue;
          std::memcpy(dst, src[i] + static_cast<size_t>(r0) * row_bytes, static_cast<size_t>(rows) * row_bytes);
          dst += static_cast<size_t>(rows) * row_bytes;
        }
    };
    const size_t esz = dtype_size(ws[0]->dtype);
    std::vector<uint8_t> wbuf(static_cast<size_t>(n_total * k) * esz);
    std::vector<const uint8_t*> wsrc;
    for (const TensorView* w : ws) wsrc.push_back(static_cast<const uint8_t*>(w->data));
    concat_rows(wsrc, static_cast<size_t>(k) * esz, wbuf.data());
    TensorView wv{"fused:" + ws[0]->name, ws[0]->dtype, {n_total, k}, wbuf.data(), wbuf.size()};
    std::vector<float> bias;
    const bool any_bias = std::any_of(bs.begin(), bs.end(), [](auto* b) { return b != nullptr; });
    if (any_bias) {
      std::vector<std::vector<float>> pb;
      std::vector<const uint8_t*> bsrc;
      pb.reserve(bs.size());
      for (size_t i = 0; i < bs.size(); ++i) {
        pb.push_back(bs[i] ? to_f32(*bs[i]) : std::vector<float>(static_cast<size_t>(ns[i]), 0.0f));
        bsrc.push_back(reinterpret_cast<const uint8_t*>(pb.back().data()));
      }
      bias.resize(static_cast<size_t>(n_total));
      concat_rows(bsrc, sizeof(float), reinterpret_cast<uint8_t*>(bias.data()));
    }
    TensorView bv{"fused-bias", DType::F32, {n_total}, bias.data(), bias.size() * 4};
    // Fused parts have no scale: in a pre-quantised checkpoint they stay unquantised.
    return make_linear(wv, any_bias ? &bv : nullptr, nullptr,
                       opt.quant_from_checkpoint ? QuantScheme::None : opt.quant, opt_.compute);
  };
  layers_.resize(cfg.n_layers);
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    Layer& L = layers_[l];
    L.attn_norm = norm_weight(find, p + "input_layernorm.weight", D);
    L.ffn_norm = norm_weight(find, p + "post_attention_layernorm.weight", D);
    L.wqkv = fused({{p + "self_attn.q_proj", H * E}, {p + "self_attn.k_proj", G * E},
                    {p + "self_attn.v_proj", G * E}},
                   D, cfg.attention_bias);
    if (!L.wqkv) {
      L.wq = linear(p + "self_attn.q_proj", H * E, D, cfg.attention_bias, opt.quant);
      L.wk = linear(p + "self_attn.k_proj", G * E, D, cfg.attention_bias, opt.quant);
      L.wv = linear(p + "self_attn.v_proj", G * E, D, cfg.attention_bias, opt.quant);
    }
    L.wo = linear(p + "self_attn.o_proj", D, H * E, false, opt.quant);
    L.w_gate_up = fused({{p + "mlp.gate_proj", F}, {p + "mlp.up_proj", F}}, D, false, kGluUnit);
    if (!L.w_gate_up) {
      L.w_gate = linear(p + "mlp.gate_proj", F, D, false, opt.quant);
      L.w_up = linear(p + "mlp.up_proj", F, D, false, opt.quant);
    }
    L.w_down = linear(p + "mlp.down_proj", D, F, false, opt.quant);
  }
  final_norm_ = norm_weight(find, "model.norm.weight", D);
  const TensorView* head = find("lm_head.weight");
  if (cfg.tie_word_embeddings || !head) {
    lm_head_ = make_linear(embed_, nullptr, nullptr, QuantScheme::None, opt_.compute);
  } else {
    lm_head_ = linear("lm_head", V, D, false, QuantScheme::None);
  }

  // RoPE inverse frequencies theta^(-2i/E), with HF's rope_scaling rules. A GGUF converted by
  // llama.cpp from a rope_type llama3 model holds its scaling as the tensor rope_freqs.weight
  // (one factor per frequency, the angle divided by it) instead of metadata.
  std::vector<float> freq_factors;
  if (find("rope_freqs.weight")) {
    freq_factors = to_f32(need(find, "rope_freqs.weight", {E / 2}));
    if (!cfg.rope_scaling_type.empty())
      fail("model: both rope_scaling ({}) and a rope_freqs.weight tensor: the RoPE frequencies would be scaled twice",
           cfg.rope_scaling_type);
    for (float x : freq_factors)
      if (!(x > 0) || !std::isfinite(x)) fail("model: rope_freqs.weight holds {}, not a positive factor", x);
  }
  inv_freq_.resize(E / 2);
  for (int64_t i = 0; i < E / 2; ++i) {
    double f = 1.0 / std::pow(cfg.rope_theta, static_cast<double>(2 * i) / static_cast<double>(E));
    if (cfg.rope_scaling_type == "linear") {
      f /= cfg.rope_factor;
    } else if (cfg.rope_scaling_type == "llama3") {
      const double old_ctx = static_cast<double>(cfg.rope_original_max_position);
      const double low_wl = old_ctx / cfg.rope_low_freq_factor;
      const double high_wl = old_ctx / cfg.rope_high_freq_factor;
      const double wl = 2.0 * std::numbers::pi / f;
      if (wl > low_wl) {
        f /= cfg.rope_factor;
      } else if (wl >= high_wl) {
        double smooth = (old_ctx / wl - cfg.rope_low_freq_factor) /
                        (cfg.rope_high_freq_factor - cfg.rope_low_freq_factor);
        f = (1.0 - smooth) * f / cfg.rope_factor + smooth * f;
      }
    } else if (!cfg.rope_scaling_type.empty()) {
      fail("model config: rope_scaling type '{}' is not supported (hint: linear or llama3)",
           cfg.rope_scaling_type);
    }
    if (!freq_factors.empty()) f /= freq_factors[static_cast<size_t>(i)];
    inv_freq_[i] = f;
  }
}

Model::~Model() = default;

size_t Model::weight_bytes_per_step() const {
  size_t b = lm_head_->weight_bytes();
  auto bytes = [](const std::unique_ptr<Linear>& l) { return l ? l->weight_bytes() : size_t{0}; };
  for (const Layer& L : layers_)
    b += bytes(L.wqkv) + bytes(L.wq) + bytes(L.wk) + bytes(L.wv) + bytes(L.wo) +
         bytes(L.w_gate_up) + bytes(L.w_gate) + bytes(L.w_up) + bytes(L.w_down);
  return b;
}

std::unique_ptr<KvCache> Model::make_kv_cache(size_t budget_bytes) const {
  return std::make_unique<KvCache>(cfg_.n_layers, cfg_.n_kv_heads, cfg_.head_dim, budget_bytes, kv_type_);
}

void Model::embed(int32_t token, float* out) const {
  const int64_t D = cfg_.hidden_size;
  if (token < 0 || token >= cfg_.vocab_size)
    fail("model: token id {} outside the vocabulary [0, {})", token, cfg_.vocab_size);
  const size_t off = static_cast<size_t>(token) * D;
  switch (embed_.dtype) {
    case DType::F32: {
      const float* src = static_cast<const float*>(embed_.data) + off;
      for (int64_t i = 0; i < D; ++i)
        out[i] = opt_.compute == ComputeType::BF16 ? round_bf16(src[i]) : src[i];
      break;
    }
    case DType::BF16: {
      const uint16_t* src = static_cast<const uint16_t*>(embed_.data) + off;
      for (int64_t i = 0; i < D; ++i) {
        uint32_t u = static_cast<uint32_t>(src[i]) << 16;
        std::memcpy(&out[i], &u, 4);
      }
      break;
    }
    case DType::F16: {
      const uint16_t* src = static_cast<const uint16_t*>(embed_.data) + off;
      for (int64_t i = 0; i < D; ++i) {
        float f = _cvtsh_ss(src[i]);
        out[i] = opt_.compute == ComputeType::BF16 ? round_bf16(f) : f;
      }
      break;
    }
    default:
      break;
  }
}

void Model::attention(int64_t layer, std::span<const SeqChunk> chunks, ThreadPool& pool) {
  const int64_t H = cfg_.n_heads, G = cfg_.n_kv_heads, E = cfg_.head_dim;
  const int64_t group = H / G;
  const int64_t T = static_cast<int64_t>(tok_seq_.size());
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(E)));
  // Work items: tile_tokens consecutive tokens of one chunk x one kv head; their
  // tile_tokens * group query rows share every K/V load (a row's result does not depend on the
  // tile, see attend_rows). The AMX kernel takes up to 32 rows (two row tiles) at once.
  const int64_t tile_tokens = amx_attention_ ? std::max<int64_t>(1, 32 / group) : 4;
  tiles_.clear();
  int64_t max_pos = 0, work = 0;
  {
    int64_t t = 0;
    for (const SeqChunk& c : chunks) {
      const int64_t n = static_cast<int64_t>(c.tokens.size());
      for (int64_t i = 0; i < n; i += tile_tokens) tiles_.push_back(t + i);
      t += n;
    }
    tiles_.push_back(T);  // tile k = tokens [tiles_[k], min(tiles_[k] + tile_tokens, tiles_[k+1]))
  }
  for (int64_t t = 0; t < T; ++t) {
    max_pos = std::max(max_pos, tok_pos_[t]);
    work += (tok_pos_[t] + 1) * H * E;
  }
  const int64_t n_tiles = static_cast<int64_t>(tiles_.size()) - 1;
  const int64_t stride = (max_pos + KvCache::kBlockTokens) / KvCache::kBlockTokens * KvCache::kBlockTokens;
  const int64_t max_rows = tile_tokens * group;
  const int64_t max_blocks = stride / KvCache::kBlockTokens;
  if (!amx_attention_) {
    scores_.resize(pool.size());
    for (auto& s : scores_)
      if (static_cast<int64_t>(s.size()) < max_rows * (stride + 1)) s.resize(max_rows * (stride + 1));
  }
  const KvCache& kv = *kv_;
  const bool wide = use_avx512_, bf16_kv = kv.type() == KvType::Bf16;
  // att[t, h, :] = softmax_j(q[t,h]·k[j,g] * scale) · v[j,g], j = 0..pos[t] (causal).
  auto run = [&](int thread, int64_t begin, int64_t end) {
    thread_local std::vector<AttnRow> rows;
    thread_local std::vector<AttnQuery> queries;
    thread_local std::vector<const uint16_t*> blocks;  // K blocks, then V blocks
    rows.resize(max_rows);
    queries.resize(max_rows);
    blocks.resize(2 * max_blocks);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t k = item / G, g = item % G;
      const int64_t t0 = tiles_[k], t1 = std::min(t0 + tile_tokens, tiles_[k + 1]);
      const int seq = tok_seq_[t0];
      if (amx_attention_) {
        int64_t n_rows = 0, n_max = 0;
        for (int64_t t = t0; t < t1; ++t)
          for (int64_t hh = 0; hh < group; ++hh, ++n_rows) {
            const int64_t h = g * group + hh;
            queries[n_rows] = {q_.data() + (t * H + h) * E, att_.data() + (t * H + h) * E, tok_pos_[t] + 1};
            n_max = std::max(n_max, tok_pos_[t] + 1);
          }
        const uint16_t** kb = blocks.data();
        const uint16_t** vb = kb + max_blocks;
        for (int64_t b = 0; b * KvCache::kBlockTokens < n_max; ++b) {
          kb[b] = kv.k_tiles(seq, layer, g, b * KvCache::kBlockTokens);
          vb[b] = kv.v_tiles(seq, layer, g, b * KvCache::kBlockTokens);
        }
        cpu::attend_bf16_amx(queries.data(), n_rows, E, scale, kb, vb);
        continue;
      }
      float* sc = scores_[thread].data();
      float* inv = sc + max_rows * stride;
      int64_t n_rows = 0;
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t hh = 0; hh < group; ++hh, ++n_rows) {
          const int64_t h = g * group + hh;
          rows[n_rows] = {q_.data() + (t * H + h) * E, att_.data() + (t * H + h) * E,
                          sc + n_rows * stride, tok_pos_[t] + 1};
        }
      if (bf16_kv) {
        if (wide)
          avx512::attend_rows<uint16_t>(rows.data(), n_rows, E, scale, kv, seq, layer, g, inv);
        else
          avx2::attend_rows<uint16_t>(rows.data(), n_rows, E, scale, kv, seq, layer, g, inv);
      } else if (wide) {
        avx512::attend_rows<float>(rows.data(), n_rows, E, scale, kv, seq, layer, g, inv);
      } else {
        avx2::attend_rows<float>(rows.data(), n_rows, E, scale, kv, seq, layer, g, inv);
      }
    }
  };
  if (work < (int64_t{1} << 17)) {
    run(0, 0, n_tiles * G);
    return;
  }
  // Items are taken one at a time by whichever thread is free, last first: under the causal
  // mask a prefill's last tokens attend to every earlier one, so within a chunk the costliest
  // go first and the short ones fill the gaps at the end. (Fixed ranges, even ones balanced by
  // work, left the other thread waiting whenever one core was slowed by other load.) An item's
  // result does not depend on the thread that runs it. Measured in one process, alternating,
  // with the GEMM and row loops also taken in pieces: 0.5B prefill +8-23% (int8-channel),
  // +10-40% (bf16).
  const int64_t n_items = n_tiles * G;
  pool.parallel_for_dynamic(n_items, 1, [&](int t, int64_t b, int64_t e) { run(t, n_items - e, n_items - b); });
}

void Model::forward(std::span<const SeqChunk> chunks, KvCache& kv, ThreadPool& pool,
                    const LogitsFn& on_logits) {
  const int64_t D = cfg_.hidden_size, V = cfg_.vocab_size, H = cfg_.n_heads,
                G = cfg_.n_kv_heads, E = cfg_.head_dim, F = cfg_.intermediate_size;
  const int64_t half = E / 2;
  const int64_t nq = H * E, nk = G * E;  // q and k/v row widths
  auto silu_mul = [&](float* out, const float* g, const float* u, int64_t n) {  // same bits either way
    return use_avx512_ ? avx512::silu_mul(out, g, u, n) : avx2::silu_mul(out, g, u, n);
  };
  if (kv.type() != kv_type_)
    fail("model: the KV cache's layout is not this model's (hint: make it with Model::make_kv_cache)");
  kv_ = &kv;
  tok_seq_.clear();
  tok_pos_.clear();
  for (const SeqChunk& c : chunks) {
    if (c.pos0 + static_cast<int64_t>(c.tokens.size()) > kv.capacity(c.seq))
      fail("model: sequence {} needs {} cached positions but holds {}", c.seq,
           c.pos0 + c.tokens.size(), kv.capacity(c.seq));
    for (size_t i = 0; i < c.tokens.size(); ++i) {
      tok_seq_.push_back(c.seq);
      tok_pos_.push_back(c.pos0 + static_cast<int64_t>(i));
    }
  }
  const int64_t T = static_cast<int64_t>(tok_seq_.size());
  if (T == 0) return;
  grow(x_, T * D);
  grow(xn_, T * D);
  grow(q_, T * H * E);
  grow(k_, T * G * E);
  grow(v_, T * G * E);
  grow(att_, T * H * E);
  grow(o_, T * D);
  grow(gate_, T * F);
  grow(up_, T * F);
  grow(rope_cos_, T * half);
  grow(rope_sin_, T * half);

  {
    int64_t t = 0;
    for (const SeqChunk& c : chunks)
      for (int32_t tok : c.tokens) embed(tok, x_.data() + (t++) * D);
  }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i) {
      double a = static_cast<double>(tok_pos_[t]) * inv_freq_[i];
      rope_cos_[t * half + i] = static_cast<float>(std::cos(a));
      rope_sin_[t * half + i] = static_cast<float>(std::sin(a));
    }
  // Rotate-half RoPE on n_heads heads of one token row, from src to dst (which may be src).
  auto rope = [&](const float* src, float* dst, int64_t n_heads, int64_t t) {
    const float* c = rope_cos_.data() + t * half;
    const float* s = rope_sin_.data() + t * half;
    for (int64_t h = 0; h < n_heads; ++h) {
      const float* x = src + h * E;
      float* y = dst + h * E;
      for (int64_t i = 0; i < half; ++i) {
        float x0 = x[i], x1 = x[i + half];
        y[i] = x0 * c[i] - x1 * s[i];
        y[i + half] = x1 * c[i] + x0 * s[i];
      }
    }
  };

  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    Layer& L = layers_[l];
    // xn = rmsnorm(x) [T, D]
    rows_for(pool, T, T * D, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        rms_norm(x_.data() + t * D, L.attn_norm.data(), xn_.data() + t * D, D, cfg_.rms_norm_eps);
    });
    if (L.wqkv) {
      // fused [T, (H+2G)*E] -> q [T, H*E], k, v [T, G*E]
      grow(fused_, T * (nq + 2 * nk));
      L.wqkv->forward(xn_.data(), T, fused_.data(), pool);  // split below, with RoPE
    } else {
      L.wq->forward(xn_.data(), T, q_.data(), pool);  // [T, H*E]
      L.wk->forward(xn_.data(), T, k_.data(), pool);  // [T, G*E]
      L.wv->forward(xn_.data(), T, v_.data(), pool);  // [T, G*E]
    }
    rows_for(pool, T, T * (H + 2 * G) * E, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        // q, k, v of this token: a row of the fused product, or the three separate ones
        const float* r = L.wqkv ? fused_.data() + t * (nq + 2 * nk) : nullptr;
        const float* qsrc = L.wqkv ? r : q_.data() + t * nq;
        const float* ksrc = L.wqkv ? r + nq : k_.data() + t * nk;
        const float* vsrc = L.wqkv ? r + nq + nk : v_.data() + t * nk;
        rope(qsrc, q_.data() + t * nq, H, t);
        rope(ksrc, k_.data() + t * nk, G, t);
        for (int64_t g = 0; g < G; ++g) {
          const float* ks = k_.data() + (t * G + g) * E;
          const float* vs = vsrc + g * E;
          if (amx_attention_) {  // bf16, nearest even, in tile order
            uint16_t kb[cpu::kMaxAttnHeadDim], vb[cpu::kMaxAttnHeadDim];
            bf16_from_f32_n(ks, E, kb);
            bf16_from_f32_n(vs, E, vb);
            uint16_t* kd = kv.k_tiles(tok_seq_[t], l, g, tok_pos_[t]);
            uint16_t* vd = kv.v_tiles(tok_seq_[t], l, g, tok_pos_[t]);
            const int64_t j = tok_pos_[t] % KvCache::kBlockTokens;
            for (int64_t e = 0; e < E; ++e) {
              kd[KvCache::k_tile_index(e, j)] = kb[e];
              vd[KvCache::v_tile_index(e, j, E)] = vb[e];
            }
            continue;
          }
          if (kv_type_ == KvType::Bf16) {  // nearest even; K transposed: element e at [e * 32]
            uint16_t* kd = kv.k_at<uint16_t>(tok_seq_[t], l, g, tok_pos_[t]);
            for (int64_t e = 0; e < E; ++e) kd[e * KvCache::kBlockTokens] = bf16_from_f32(ks[e]);
            bf16_from_f32_n(vs, E, kv.v_at<uint16_t>(tok_seq_[t], l, g, tok_pos_[t]));
            continue;
          }
          float* kd = kv.k_at(tok_seq_[t], l, g, tok_pos_[t]);  // transposed: element e at [e * 32]
          for (int64_t e = 0; e < E; ++e) kd[e * KvCache::kBlockTokens] = ks[e];
          std::memcpy(kv.v_at(tok_seq_[t], l, g, tok_pos_[t]), vs, sizeof(float) * E);
        }
      }
    });
    attention(l, chunks, pool);                       // att [T, H*E]
    L.wo->forward(att_.data(), T, o_.data(), pool);   // [T, D]
    rows_for(pool, T, T * D, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        float* x = x_.data() + t * D;
        const float* o = o_.data() + t * D;
        for (int64_t i = 0; i < D; ++i) x[i] += o[i];
        rms_norm(x, L.ffn_norm.data(), xn_.data() + t * D, D, cfg_.rms_norm_eps);
      }
    });
    // Where the SwiGLU epilogue quantises for an int8-block down projection (see below): the
    // row stride of its codes in down_q_; else 0.
    const int64_t ldq = L.w_gate_up ? L.w_down->int8_groups_ld() : 0;
    if (L.w_gate_up) {
      // gate [T, F] = silu(gate) * up, a piece of kGluUnit gate and kGluUnit up columns at a
      // time as the matmul hands them on (still in cache; the [T, 2F] product is never written
      // out, nor read back by a separate pass). Measured in one process, alternating with the full
      // product plus that pass: 0.5B prefill +5-6% (int8-channel), +1-10% (bf16); decode the same.
      // The epilogue also finds the group maxima of its output (a piece is one 128-wide group),
      // which the down projection's activation quantisation then need not look for: one read of
      // the [T, F] output less. Measured in one process, alternating: 0.5B prefill +3%
      // (int8-channel), +1-3% (int8-block).
      // An int8-block down projection quantises its input per token per group, so the epilogue
      // does that too, group by group, and hands it the codes: the f32 [T, F] is never written
      // out nor read back (at 512 tokens of the 0.5B shape, 10 MB each way per layer). Measured
      // in one process, alternating with the path above (medians of 12 and 6 rounds): int8-block
      // prefill +5% (0.5B) and +6% (1.5B) with the AVX-512 quantiser, +0-2% with the AVX2 one.
      static_assert(kGluUnit == kQuantBlock, "a SwiGLU piece must be one quantisation group");
      const int64_t GF = n_groups(F);
      grow(gate_amax_, T * GF);
      const KernelLevel level = use_avx512_ ? KernelLevel::Avx512 : KernelLevel::Avx2;
      if (ldq > 0) {
        const size_t need = static_cast<size_t>(Linear::int8_groups_rows(T) * ldq);
        if (down_q_.size() < need) down_q_.resize(need);
      }
      L.w_gate_up->forward_columns(
          xn_.data(), T, 2 * kGluUnit,
          [&](int64_t c0, int64_t c1, const float* ys, int64_t ld) {
            const int64_t n = (c1 - c0) / 2, g = c0 / (2 * kGluUnit);
            if (ldq > 0) {
              alignas(64) float h[kGluUnit];
              for (int64_t t = 0; t < T; ++t)
                gate_amax_[t * GF + g] = quantize_act_int8_piece(
                    h, n, silu_mul(h, ys + t * ld, ys + t * ld + n, n), down_q_.data() + t * ldq + c0 / 2, level);
            } else {
              for (int64_t t = 0; t < T; ++t)
                gate_amax_[t * GF + g] = silu_mul(gate_.data() + t * F + c0 / 2, ys + t * ld, ys + t * ld + n, n);
            }
          },
          pool);
    } else {
      L.w_gate->forward(xn_.data(), T, gate_.data(), pool);  // [T, F]
      L.w_up->forward(xn_.data(), T, up_.data(), pool);      // [T, F]
      rows_for(pool, T, T * F * 4, [&](int64_t b, int64_t e) {
        silu_mul(gate_.data() + b * F, gate_.data() + b * F, up_.data() + b * F, (e - b) * F);
      });
    }
    if (ldq > 0)  // gate_amax_ holds the scales of the codes
      L.w_down->forward_int8_groups(down_q_.data(), gate_amax_.data(), T, o_.data(), pool);
    else
      L.w_down->forward(gate_.data(), L.w_gate_up ? gate_amax_.data() : nullptr, T, o_.data(), pool);  // [T, D]
    rows_for(pool, T, T * D, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        float* x = x_.data() + t * D;
        const float* o = o_.data() + t * D;
        for (int64_t i = 0; i < D; ++i) x[i] += o[i];
      }
    });
  }

  // Logits for the requested rows, kLogitRows at a time: rmsnorm → lm_head [R, V].
  constexpr int64_t kLogitRows = 64;
  struct Want {
    size_t chunk;
    int64_t token, row;
  };
  std::vector<Want> wants;
  {
    int64_t t = 0;
    for (size_t ci = 0; ci < chunks.size(); ++ci) {
      const int64_t n = static_cast<int64_t>(chunks[ci].tokens.size());
      for (int64_t i = 0; i < n; ++i, ++t)
        if (i >= chunks[ci].logits_from) wants.push_back({ci, i, t});
    }
  }
  for (size_t w0 = 0; w0 < wants.size(); w0 += kLogitRows) {
    const int64_t R = std::min<int64_t>(kLogitRows, static_cast<int64_t>(wants.size() - w0));
    grow(head_in_, R * D);
    grow(logits_, R * V);
    for (int64_t r = 0; r < R; ++r)
      rms_norm(x_.data() + wants[w0 + r].row * D, final_norm_.data(), head_in_.data() + r * D, D,
               cfg_.rms_norm_eps);
    lm_head_->forward(head_in_.data(), R, logits_.data(), pool);
    for (int64_t r = 0; r < R; ++r)
      on_logits(wants[w0 + r].chunk, wants[w0 + r].token,
                std::span<const float>(logits_.data() + r * V, V));
  }
}

}  // namespace qeval
