// Scalar reference numerics of the quantization schemes (issue 4): float8_e4m3fn and bf16
// rounding, weight quantisation (FP8 block 128x128, INT8 block 128x128, INT8 per output
// channel), dynamic activation quantisation (per token per 128-group, or per token) and
// dequantisation. Every kernel (kernels/ref, kernels/cpu) and the converter use these
// functions, so a value is rounded the same way everywhere.
//
// Conventions: a weight W is [N = out, K = in] row-major; activations x are [M, K] row-major.
// Scales are "multiply to dequantise": value = f32(q) * s (the checkpoint name of the FP8/INT8
// block scale is `weight_scale_inv`, which holds exactly this s). Every scale is computed in
// f32 as s = amax / Q (Q = 448 for e4m3, 127 for int8); rounding is round-to-nearest-even.
#pragma once

#include <bit>
#include <cstdint>
#include <vector>

#include "engine/cpu_features.h"
#include "engine/linear.h"

namespace qeval {

constexpr int64_t kQuantBlock = 128;   // block edge (weights) and group width (activations)
constexpr float kE4m3Max = 448.0f;     // largest finite float8_e4m3fn
constexpr float kInt8Max = 127.0f;     // symmetric int8 range [-127, 127]

// The scale of a weight row/block with largest magnitude `amax`: amax / qmax in f32. An
// all-zero block gets 1 (not NaN), and so does a block whose amax / qmax underflows to 0 (amax
// below ~qmax * 2^-149, possible only from F32 input): its values then quantise to 0 instead of
// dividing by zero. Every weight quantiser uses this one function.
inline float weight_scale(float amax, float qmax) {
  const float s = amax / qmax;
  return s > 0.0f ? s : 1.0f;
}
constexpr float kFp8ActAmaxFloor = 1e-4f;    // activation amax floor, FP8 groups
constexpr float kInt8ActAmaxFloor = 1e-10f;  // activation amax floor, INT8 groups/tokens

// max(a, |v|) for an amax (a >= 0 or NaN) that keeps NaN, as torch's amax does: on the bits of
// |v| the integer order is the float order for non-negative floats, and puts inf and then NaN
// above every finite value. (std::max(a, NaN) returns a: a float max would pass NaN over.)
inline float amax_step(float a, float v) {
  const uint32_t b = std::bit_cast<uint32_t>(v) & 0x7FFFFFFFu;
  return b > std::bit_cast<uint32_t>(a) ? std::bit_cast<float>(b) : a;
}
// max |x| over x[0, n) as the bits of the amax (sign cleared): >= 0x7F800000 when a value is
// inf or NaN (AVX2).
uint32_t amax_bits(const float* x, int64_t n);
constexpr uint32_t kInfBits = 0x7F800000u;

// Non-finite activations: a group (or token) holding inf or NaN has amax inf or NaN, hence a
// scale that is not finite; its codes are all 0 and the scale is kept, so every output that
// group feeds is NaN (0 * inf or NaN), as the reference's NaN scale makes it. Every quantiser
// below, fast or twin, does exactly this; a float max that dropped the NaN would instead give
// finite codes and a finite, wrong output (and different ones on different CPUs).

// ---- element formats -------------------------------------------------------------------

// f32 -> float8_e4m3fn bits, exactly as PyTorch's `tensor.to(torch.float8_e4m3fn)`
// (c10/util/Float8_e4m3fn.h, fp8e4m3fn_from_fp32_value): round to nearest even, including
// into the subnormal range (smallest 2^-9; |x| <= 2^-10 -> 0); NO saturation: |x| >= 480,
// +-inf and NaN give NaN (0x7F | sign), and values in (464, 480) round up onto the NaN code
// too. 464 (the midpoint of 448 and 480) rounds to even = 448. Callers that quantise clamp to
// +-448 first (see quantize_*), as DeepSeek/vLLM/SGLang do.
uint8_t e4m3_from_f32(float x);
// float8_e4m3fn bits -> f32, exact; 0x7F/0xFF -> NaN.
float e4m3_to_f32(uint8_t b);
// The 256 decoded values (index = bits); for vector gathers.
const float* e4m3_table();

// f32 -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN.
uint16_t bf16_from_f32(float x);
// bf16 bits -> f32, exact.
float bf16_to_f32(uint16_t b);
// Rounds to the nearest bf16 value and returns it as f32.
inline float bf16_round(float x) { return bf16_to_f32(bf16_from_f32(x)); }
// n values at once (AVX2), identical to bf16_from_f32 element by element.
void bf16_from_f32_n(const float* x, int64_t n, uint16_t* out);

// ---- weights ---------------------------------------------------------------------------

// A quantised weight [N, K] with its scales.
struct QuantizedWeight {
  QuantScheme scheme = QuantScheme::None;
  int64_t n = 0, k = 0;
  // [N, K]: e4m3 bits (Fp8Block) or int8 two's complement (Int8Block / Int8Channel).
  std::vector<uint8_t> q;
  // Fp8Block / Int8Block: [ceil(N/128), ceil(K/128)] (weight_scale_inv);
  // Int8Channel: [N] (weight_scale [N, 1]).
  std::vector<float> scale;

  int64_t scale_rows() const;  // ceil(N/128) or N
  int64_t scale_cols() const;  // ceil(K/128) or 1
};

// Quantises w [N, K] f32 in `scheme` (not None). Block schemes use 128x128 blocks (partial at
// the N/K edges) with s = amax/Q over the block; Int8Channel uses s = amax/Q over each row;
// an all-zero block/row gets s = 1. q = RNE(w / s), clamped to +-127 (int8) or +-448 before
// the e4m3 cast (fp8). Pure; thread-safe. An inf or NaN weight has no code: Error naming its
// row and column.
QuantizedWeight quantize_weight(const float* w, int64_t N, int64_t K, QuantScheme scheme);
// Dequantises to f32 [N, K]: f32(q) * s.
std::vector<float> dequantize_weight(const QuantizedWeight& qw);

// ---- activations (dynamic, per call) ---------------------------------------------------

// Number of 128-wide groups of a row of K values.
inline int64_t n_groups(int64_t K) { return (K + kQuantBlock - 1) / kQuantBlock; }

// FP8 per token per 128-group: s[m, g] = max(amax, 1e-4) / 448; q = e4m3(clamp(x/s, +-448)).
// x [M, K] (row stride K); q [M, ldq] (ldq >= K, columns K..ldq-1 untouched); s [M, G].
// amax (all three quantisers): null, or the producer's group maxima [M, G] (group_amax below),
// which spares the pass over x that finds them; the result is the same either way.
void quantize_act_fp8_group(const float* x, int64_t M, int64_t K, uint8_t* q, int64_t ldq,
                            float* s, const float* amax = nullptr);
// INT8 per token per 128-group: s[m, g] = max(amax, 1e-10) / 127; q = clamp(RNE(x/s), +-127).
// (SGLang's Triton per_token_group_quant_int8 truncates with .to(int8); we round to nearest
// even like its CUDA kernel and vLLM.)
// level: Avx512 or Amx runs the AVX-512 version, any other the AVX2 one (the same bits).
void quantize_act_int8_group(const float* x, int64_t M, int64_t K, int8_t* q, int64_t ldq,
                             float* s, const float* amax = nullptr, KernelLevel level = KernelLevel::Avx2);
// One row's group of quantize_act_int8_group (x[0, n), n <= 128) given its maximum |x| (amax):
// returns s = max(amax, 1e-10) / 127 and writes q[i] = clamp(RNE(x[i] / s), +-127). The same
// code as quantize_act_int8_group runs per group, so the same bits: for a producer that
// quantises each group of its output while it is still in cache.
float quantize_act_int8_piece(const float* x, int64_t n, float amax, int8_t* q,
                              KernelLevel level = KernelLevel::Avx2);
// INT8 per token: s[m] = max(amax, 1e-10) / 127 over the whole row; q = clamp(RNE(x/s), +-127).
void quantize_act_int8_token(const float* x, int64_t M, int64_t K, int8_t* q, int64_t ldq,
                             float* s, const float* amax = nullptr, KernelLevel level = KernelLevel::Avx2);
// The group maxima the quantisers take: amax[m * G + g] = max |x| over columns
// [128 g, min(K, 128 g + 128)) of row m, NaN if one of them is NaN (amax_step).
void group_amax(const float* x, int64_t M, int64_t K, float* amax);

// Scalar versions of the three quantisers above (the twins the vectorised ones are tested
// against; identical results bit for bit).
void quantize_act_fp8_group_ref(const float* x, int64_t M, int64_t K, uint8_t* q, int64_t ldq,
                                float* s);
void quantize_act_int8_group_ref(const float* x, int64_t M, int64_t K, int8_t* q, int64_t ldq,
                                 float* s);
void quantize_act_int8_token_ref(const float* x, int64_t M, int64_t K, int8_t* q, int64_t ldq,
                                 float* s);

}  // namespace qeval
