// AMX-BF16 attention (see attention_amx.h). Up to 32 query rows at a time: two 16-row tiles of
// q (tmm4/5) against two 16-key tiles of K (tmm6/7) give a 32 x 32 block of scores (tmm0-3), as
// in the GEMM kernels (amx.cpp); then softmax per row in f32; then p (bf16, one 32-key block as
// the K dimension) against 32-column pieces of V.
#include "engine/kernels/cpu/attention_amx.h"

#include <immintrin.h>

// GCC 12 reports a false "may be used uninitialized" inside its own AVX-512 intrinsics headers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <limits>

#include "engine/kernels/cpu/exp_avx512.h"
#include "engine/kernels/cpu/gemm_cpu.h"
#include "engine/kv_cache.h"

#define QEVAL_AMX_ATTN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")))

namespace qeval::cpu {
namespace {

constexpr int64_t kB = KvCache::kBlockTokens;

thread_local AlignedBuffer<uint16_t> t_q;  // [32][E] bf16 q rows, zero past the call's rows
thread_local AlignedBuffer<float> t_s;     // [32][stride] scores
thread_local AlignedBuffer<uint16_t> t_p;  // [32][stride] bf16 weights
thread_local AlignedBuffer<float> t_o;     // [32][E] weighted sums
thread_local AlignedBuffer<uint16_t> t_v;  // the last V block, zero from the largest n on

template <class T>
void ensure(AlignedBuffer<T>& b, int64_t n) {
  if (static_cast<int64_t>(b.size()) < n) b = AlignedBuffer<T>(static_cast<size_t>(n));
}

// 16 f32 -> 16 bf16 (nearest even), stored at dst.
QEVAL_AMX_ATTN inline void store_bf16(uint16_t* dst, __m512 x) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(x)));
}

// Softmax of NR rows (scores S, weights P, row stride `stride`) that all have n keys: m = max_j
// s[j] * scale (the max of the scaled scores: the scale is positive); p = exp(s * scale - m)
// rounded to bf16, exactly 0 from n on; inv = 1 / (sum of the rounded p), lane sums over 16-key
// steps, then one reduction. Whole vectors of live keys unmasked, the last partial one masked,
// zeros to the end of the row. Each row's operations are those of a row alone; the NR rows run
// side by side so that their reductions and loop ends overlap (rows of ~256 keys are short).
template <int NR>
QEVAL_AMX_ATTN inline void softmax_rows(const float* S, uint16_t* P, int64_t stride, int64_t n, float scale,
                                        float* inv) {
  const int64_t nf = n / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (n - nf)) - 1);
  const __m512 vscale = _mm512_set1_ps(scale);
  __m512 vmx[NR], m[NR], vsum[NR];
  for (int r = 0; r < NR; ++r) vmx[r] = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < nf; j += 16)
    for (int r = 0; r < NR; ++r) vmx[r] = _mm512_max_ps(vmx[r], _mm512_loadu_ps(S + r * stride + j));
  for (int r = 0; r < NR; ++r) {
    if (tail) vmx[r] = _mm512_mask_max_ps(vmx[r], tail, vmx[r], _mm512_loadu_ps(S + r * stride + nf));
    m[r] = _mm512_set1_ps(_mm512_reduce_max_ps(vmx[r]) * scale);
    vsum[r] = _mm512_setzero_ps();
  }
  auto weigh = [&](int r, int64_t j, __mmask16 live) QEVAL_AMX_ATTN {
    const __m512 e =
        _mm512_maskz_mov_ps(live, exp16_nonpositive(_mm512_fmsub_ps(_mm512_loadu_ps(S + r * stride + j), vscale, m[r])));
    const __m256i b = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(e));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(P + r * stride + j), b);
    vsum[r] = _mm512_add_ps(vsum[r], _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16)));
  };
  for (int64_t j = 0; j < nf; j += 16)
    for (int r = 0; r < NR; ++r) weigh(r, j, 0xFFFF);
  const int64_t j1 = tail ? nf + 16 : nf;
  for (int r = 0; r < NR; ++r) {
    if (tail) weigh(r, nf, tail);
    for (int64_t j = j1; j < stride; j += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(P + r * stride + j), _mm256_setzero_si256());
    inv[r] = 1.0f / _mm512_reduce_add_ps(vsum[r]);
  }
}

// Rows [0, R) of at most 32 (R > 16 uses the second row tile).
QEVAL_AMX_ATTN void attend32(const AttnQuery* rows, int64_t R, int64_t E, float scale, const uint16_t* const* kb,
                             const uint16_t* const* vb) {
  const bool two = R > 16;
  const int64_t rows_p = two ? 32 : 16;  // rows the tiles cover
  int64_t n_max = 0;
  for (int64_t r = 0; r < R; ++r) n_max = std::max(n_max, rows[r].n);
  const int64_t nblk = (n_max + kB - 1) / kB, stride = nblk * kB;
  ensure(t_q, 32 * E);
  ensure(t_s, 32 * stride);
  ensure(t_p, 32 * stride);
  ensure(t_o, 32 * E);
  ensure(t_v, kB * E);
  uint16_t* qb = t_q.data();
  float* S = t_s.data();
  uint16_t* P = t_p.data();
  float* O = t_o.data();

  // q rows to bf16; the tile rows past R are zero (their sums are never used, but stay finite).
  for (int64_t r = 0; r < rows_p; ++r)
    for (int64_t e = 0; e < E; e += 16)
      store_bf16(qb + r * E + e, r < R ? _mm512_loadu_ps(rows[r].q + e) : _mm512_setzero_ps());

  // Scores: for each 32-key block, 32 x 32 sums over E in chunks of 32 (A: q rows, 64 bytes of a
  // chunk per row; B: 16 keys of the K block's pair rows 16c.., 128 bytes apart).
  const int64_t ldq = E * 2, lds = stride * 4;
  for (int64_t b = 0; b < nblk; ++b) {
    const uint16_t* kt = kb[b];
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t c = 0; c < E / 32; ++c) {
      _tile_loadd(4, qb + c * 32, ldq);
      _tile_loadd(6, kt + c * 16 * 2 * kB, 4 * kB);
      _tile_dpbf16ps(0, 4, 6);
      if (two) {
        _tile_loadd(5, qb + 16 * E + c * 32, ldq);
        _tile_dpbf16ps(2, 5, 6);
      }
      _tile_loadd(7, kt + c * 16 * 2 * kB + 32, 4 * kB);
      _tile_dpbf16ps(1, 4, 7);
      if (two) _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, S + b * kB, lds);
    _tile_stored(1, S + b * kB + 16, lds);
    if (two) {
      _tile_stored(2, S + 16 * stride + b * kB, lds);
      _tile_stored(3, S + 16 * stride + b * kB + 16, lds);
    }
  }

  // Softmax, NR rows with the same key count (the heads of one token) at a time: see
  // softmax_rows.
  alignas(64) float inv[32];
  for (int64_t r = 0; r < R;) {
    int64_t k = 1;
    while (k < 4 && r + k < R && rows[r + k].n == rows[r].n) ++k;
    const int64_t off = r * stride;
    switch (k) {
      case 1: softmax_rows<1>(S + off, P + off, stride, rows[r].n, scale, inv + r); break;
      case 2: softmax_rows<2>(S + off, P + off, stride, rows[r].n, scale, inv + r); break;
      case 3: softmax_rows<3>(S + off, P + off, stride, rows[r].n, scale, inv + r); break;
      default: softmax_rows<4>(S + off, P + off, stride, rows[r].n, scale, inv + r); break;
    }
    r += k;
  }
  for (int64_t r = R; r < rows_p; ++r) std::fill(P + r * stride, P + (r + 1) * stride, uint16_t{0});

  // The last block's V with keys from n_max on zeroed: those positions may hold anything (not yet
  // written, or left by an earlier sequence), and 0 * NaN would not be 0.
  const uint16_t* v_last = vb[nblk - 1];
  if (n_max % kB != 0) {
    uint16_t* v = t_v.data();
    const int64_t m = n_max % kB;  // keys [0, m) of the block are live
    for (int64_t kk = 0; kk < kB / 2; ++kk) {
      const uint16_t* src = v_last + kk * 2 * E;
      uint16_t* dst = v + kk * 2 * E;
      if (2 * kk + 1 < m)
        std::copy(src, src + 2 * E, dst);
      else if (2 * kk < m)  // the pair's first key only
        for (int64_t e = 0; e < E; ++e) {
          dst[2 * e] = src[2 * e];
          dst[2 * e + 1] = 0;
        }
      else
        std::fill(dst, dst + 2 * E, uint16_t{0});
    }
    v_last = v;
  }

  // out = p · V: 32 output columns at a time, the K dimension one 32-key block per step (A: 64
  // bytes of p per row; B: 16 columns of the block's 16 key-pair rows, 4 E bytes apart).
  const int64_t ldp = stride * 2, ldv = E * 4, ldo = E * 4;
  for (int64_t c = 0; c < E / 32; ++c) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t b = 0; b < nblk; ++b) {
      const uint16_t* vt = (b == nblk - 1 ? v_last : vb[b]) + c * 64;
      _tile_loadd(4, P + b * kB, ldp);
      _tile_loadd(6, vt, ldv);
      _tile_dpbf16ps(0, 4, 6);
      if (two) {
        _tile_loadd(5, P + 16 * stride + b * kB, ldp);
        _tile_dpbf16ps(2, 5, 6);
      }
      _tile_loadd(7, vt + 32, ldv);
      _tile_dpbf16ps(1, 4, 7);
      if (two) _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, O + c * 32, ldo);
    _tile_stored(1, O + c * 32 + 16, ldo);
    if (two) {
      _tile_stored(2, O + 16 * E + c * 32, ldo);
      _tile_stored(3, O + 16 * E + c * 32 + 16, ldo);
    }
  }
  for (int64_t r = 0; r < R; ++r) {
    const __m512 s = _mm512_set1_ps(inv[r]);
    for (int64_t e = 0; e < E; e += 16) _mm512_storeu_ps(rows[r].out + e, _mm512_mul_ps(_mm512_loadu_ps(O + r * E + e), s));
  }
}

}  // namespace

QEVAL_AMX_ATTN void attend_bf16_amx(const AttnQuery* rows, int64_t n_rows, int64_t E, float scale,
                                    const uint16_t* const* k_blocks, const uint16_t* const* v_blocks) {
  load_amx_tile_config();
  for (int64_t r0 = 0; r0 < n_rows; r0 += 32)
    attend32(rows + r0, std::min<int64_t>(32, n_rows - r0), E, scale, k_blocks, v_blocks);
  _tile_release();
}

}  // namespace qeval::cpu
