// Scalar twin of the AMX-BF16 attention (see attention_ref.h).
#include "engine/kernels/ref/attention_ref.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/kv_cache.h"
#include "engine/quant.h"

namespace qeval::ref {

void attend_bf16(const AttnQuery* rows, int64_t n_rows, int64_t E, float scale, const uint16_t* const* k_blocks,
                 const uint16_t* const* v_blocks) {
  constexpr int64_t kB = KvCache::kBlockTokens;
  std::vector<float> s, acc(static_cast<size_t>(E));
  for (int64_t r = 0; r < n_rows; ++r) {
    const AttnQuery& row = rows[r];
    s.assign(static_cast<size_t>(row.n), 0.0f);
    float mx = -INFINITY;
    for (int64_t j = 0; j < row.n; ++j) {
      const uint16_t* kt = k_blocks[j / kB];
      float dot = 0.0f;
      for (int64_t e = 0; e < E; ++e)
        dot = std::fma(bf16_round(row.q[e]), bf16_to_f32(kt[KvCache::k_tile_index(e, j % kB)]), dot);
      s[j] = dot * scale;
      mx = std::max(mx, s[j]);
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < row.n; ++j) {
      s[j] = bf16_round(std::exp(s[j] - mx));
      sum += s[j];
    }
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t j = 0; j < row.n; ++j) {
      const uint16_t* vt = v_blocks[j / kB];
      for (int64_t e = 0; e < E; ++e) acc[e] = std::fma(s[j], bf16_to_f32(vt[KvCache::v_tile_index(e, j % kB, E)]), acc[e]);
    }
    const float inv = 1.0f / sum;
    for (int64_t e = 0; e < E; ++e) row.out[e] = acc[e] * inv;
  }
}

}  // namespace qeval::ref
