// The weight/matmul seam of the engine: a linear layer whose weight may be F32, BF16,
// FP8 (e4m3, 128x128 block scales), INT8 block-wise (128x128) or INT8 channel-wise, packed
// once at load time for the fastest kernel the CPU supports (kernels/cpu), with a plain scalar
// twin in kernels/ref. The transformer only sees this interface.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "engine/tensor.h"

namespace qeval {

// Compute precision of unquantised layers and of activations fed to BF16 kernels.
enum class ComputeType { F32, BF16 };

// Quantization scheme of a linear layer.
enum class QuantScheme { None, Fp8Block, Int8Block, Int8Channel };

QuantScheme parse_quant_scheme(const std::string& s);  // "none", "fp8-block", "int8-block", "int8-channel"
const char* quant_scheme_name(QuantScheme q);

class Linear {
 public:
  virtual ~Linear() = default;

  // y[M, N] = x[M, K] · W[N, K]^T (+ bias[N]); x and y are row-major f32. The reduction over K
  // runs in a fixed order independent of M and of which rows are in the batch, so every
  // row's result is bit-identical whatever the batch (batch invariance).
  void forward(const float* x, int64_t M, float* y, ThreadPool& pool) const { forward(x, nullptr, M, y, pool); }
  // The same, with the group maxima of x that its producer found on the way (null: none):
  // amax[m * ceil(K / 128) + g] = max |x| over columns [128 g, 128 g + 128) of row m, NaN
  // when one is NaN (group_amax in quant.h). A quantised layer then skips its own pass over x for them;
  // the output is the same bits. Layers that do not quantise their input ignore it.
  virtual void forward(const float* x, const float* amax, int64_t M, float* y, ThreadPool& pool) const = 0;

  // The same product, handed on in pieces of output columns while they are still in cache
  // instead of being written to a full y[M, N] (for an epilogue that consumes them at once, such
  // as the SwiGLU of a fused gate/up). fn(c0, c1, ys, ld) gets columns [c0, c1) of every row m
  // at ys[m * ld + (c - c0)]; c0 is a multiple of `unit` (a multiple of 32) and c1 - c0 <= unit.
  // Pieces may run concurrently on the pool's threads, in any order. Same bits as forward().
  using ColumnsFn = std::function<void(int64_t c0, int64_t c1, const float* ys, int64_t ld)>;
  virtual void forward_columns(const float* x, int64_t M, int64_t unit, const ColumnsFn& fn,
                               ThreadPool& pool) const = 0;

  // Int8-block layers take their input already quantised by its producer, per token per
  // 128-wide group exactly as forward() would (quantize_act_int8_group; a producer can do it
  // group by group with quantize_act_int8_piece while its output is still in cache): codes
  // q[m * ld + k] for k < K, scales s[m * ceil(K / 128) + g]. int8_groups_ld() gives ld, or 0
  // for a layer that does not take them. q holds int8_groups_rows(M) rows; forward_int8_groups
  // zeroes its padding (rows from M, columns from K) and computes y as forward() computes it
  // from the activations those codes came from: the same bits.
  virtual int64_t int8_groups_ld() const = 0;
  static int64_t int8_groups_rows(int64_t M);
  virtual void forward_int8_groups(int8_t* q, const float* s, int64_t M, float* y, ThreadPool& pool) const = 0;

  virtual int64_t n_out() const = 0;             // N
  virtual int64_t n_in() const = 0;              // K
  virtual size_t weight_bytes() const = 0;       // bytes read per forward (weights + scales)
};

// Builds a layer from a float weight view (F32/F16/BF16/F8_E4M3 [N, K]) and an optional bias
// (any float dtype, [N]). `scale` is the checkpoint's scale tensor for pre-quantized weights
// (weight_scale_inv [ceil(N/128), ceil(K/128)] or weight_scale [N, 1]), nullptr otherwise.
// With scheme None the weight is kept in `compute` precision; otherwise it is quantised at
// load time (or taken as it is when already quantised in that scheme).
// The scheme a quantised weight is stored in, from its dtype and its scale's shape: F8_E4M3 or
// I8 with [ceil(N/128), ceil(K/128)] block scales, or I8 with [N, 1] channel scales. Throws
// Error naming the tensors for any other layout or a scale that is not a float type.
QuantScheme stored_scheme(const TensorView& weight, const TensorView& scale);

std::unique_ptr<Linear> make_linear(const TensorView& weight, const TensorView* bias,
                                    const TensorView* scale, QuantScheme scheme,
                                    ComputeType compute);

}  // namespace qeval
