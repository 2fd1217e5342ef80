// Scalar twin of the AMX-BF16 attention kernel (kernels/cpu/attention_amx.h): the definition of
// the bf16 attention's numerics. Per query row with n keys (positions 0..n-1):
//   q, K and V are rounded to bf16 (nearest even; the cache stores K and V that way);
//   s[j] = f32(sum_e q[e] k[j][e]) * scale;  m = max_j s[j];
//   p[j] = bf16(exp(s[j] - m));  out[e] = f32(sum_j p[j] v[j][e]) * (1 / sum_j p[j]).
// The twin sums in f32 with one fma per term, in index order; the kernel's tile dot products
// sum in another order (and treat bf16 subnormals as zero), so the two agree within rounding.
#pragma once

#include <cstdint>

namespace qeval {

// One query row: q [head_dim] (f32), out [head_dim], and its key count n >= 1.
struct AttnQuery {
  const float* q;
  float* out;
  int64_t n;
};

namespace ref {

// k_blocks[b], v_blocks[b]: the bf16 K and V of keys [32 b, 32 b + 32) in the cache's tile layout
// (KvCache::k_tile_index / v_tile_index), for b < ceil(max n / 32).
void attend_bf16(const AttnQuery* rows, int64_t n_rows, int64_t head_dim, float scale,
                 const uint16_t* const* k_blocks, const uint16_t* const* v_blocks);

}  // namespace ref
}  // namespace qeval
