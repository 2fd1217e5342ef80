// Causal attention on AMX-BF16 tiles, for the bf16 compute type: q · K^T and p · V as tile dot
// products over the KV cache's Bf16Tiles blocks, softmax in f32 with AVX-512 between them. The
// numerics are defined by the scalar twin ref::attend_bf16 (kernels/ref/attention_ref.h), which
// it matches within rounding (tile dot products sum in their own order).
//
// Each row's result depends only on its own q and keys, whatever the other rows of the call: a
// tile row is computed from its own A row, the keys of a block between a row's n and the largest
// n get weight exactly 0, and every row sees the same blocks in the same order (zero products
// added to an f32 sum leave it unchanged). So results do not depend on the batch.
#pragma once

#include <cstdint>

#include "engine/kernels/ref/attention_ref.h"

namespace qeval::cpu {

// Attention of n_rows query rows that read one kv head: rows[r].out = softmax(q K^T * scale) V
// over keys 0..rows[r].n-1. k_blocks / v_blocks as for ref::attend_bf16. head_dim must be a
// multiple of 32 and at most kMaxAttnHeadDim. Call only at kernel level Amx.
constexpr int64_t kMaxAttnHeadDim = 256;
void attend_bf16_amx(const AttnQuery* rows, int64_t n_rows, int64_t head_dim, float scale,
                     const uint16_t* const* k_blocks, const uint16_t* const* v_blocks);

}  // namespace qeval::cpu
