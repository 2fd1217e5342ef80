// AVX2 kernels (the engine's baseline ISA, x86-64-v3), for CPUs without AVX-512:
//   INT8: weights and activations widened to int16, vpmaddwd (exact int32 pair sums) over the
//   same packed VNNI blocks as AMX / AVX-512; bit-exact integer sums.
//   Float panels: f32 FMA, the scalar twin's sequential order (bit-exact).
// One row at a time (int8) or up to 2 rows (float) with per-row accumulators: batch invariant.
#include <immintrin.h>

#include <algorithm>

#include "engine/kernels/cpu/gemm_cpu.h"
#include "engine/quant.h"

namespace qeval::cpu {

namespace {

// Stores the 8 floats of columns [n, n+8), clipped to N, at dst (column n of its row), adding bias.
inline void store8(float* dst, int64_t N, int64_t n, __m256 v, const float* bias) {
  if (n + 8 <= N) {
    if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + n));
    _mm256_storeu_ps(dst, v);
    return;
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  for (int64_t j = n; j < N; ++j) dst[j - n] = bias ? t[j - n] + bias[j] : t[j - n];
}

// 4 madd accumulators of one 16-column tile -> 16 int32 column sums (2 vectors of 8).
inline void reduce_tile(const __m256i v[4], __m256i out[2]) {
  out[0] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(v[0], v[1]), 0xD8);
  out[1] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(v[2], v[3]), 0xD8);
}

template <bool kChannel, bool kInOrder>
void int8_row(const Int8Packed& p, const int8_t* qa, const float* sa, int64_t m, const float* bias,
              const YOut& y, int64_t nb) {
  const int64_t kp = p.kp, n_chunks = kp / 64, G = p.groups, n0 = nb * 32, N = p.n;
  const int64_t quads = kp / 4, qpg = kChannel ? quads : kQuantBlock / 4;
  const int8_t* wblk = p.w.data() + nb * n_chunks * 2048;
  __m256 facc[4];
  for (auto& f : facc) f = _mm256_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m256i iacc[2][4];
    for (auto& t : iacc)
      for (auto& v : t) v = _mm256_setzero_si256();
    const int64_t q1 = std::min(quads, (g + 1) * qpg);
    const auto quad = [&](int64_t q, int t) {
      const __m128i a8 = _mm_cvtsi32_si128(*reinterpret_cast<const int32_t*>(qa + m * kp + q * 4));
      const __m256i a = _mm256_broadcastq_epi64(_mm_cvtepi8_epi16(a8));  // a0..a3 as int16, x4
      const int8_t* wp = wblk + (q / 16) * 2048 + t * 1024 + (q % 16) * 64;
      for (int j = 0; j < 4; ++j) {
        const __m256i w = _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(wp + j * 16)));
        iacc[t][j] = _mm256_add_epi32(iacc[t][j], _mm256_madd_epi16(a, w));
      }
    };
    if constexpr (kInOrder) {
      // Each 2 KiB chunk (16 quads) as tile 0's rows, then tile 1's: one sequential weight
      // stream, for a lone row whose weight comes from DRAM (quads % 16 == 0; see row_signed
      // in avx512.cpp). Measured (0.5B GEMV, 2 threads, Zen 5): 17 -> 38-40 GB/s.
      for (int64_t c = g * qpg / 16; c < q1 / 16; ++c) {
        // The chunk's lines 512 B ahead, as in avx512.cpp's row_signed: +5% here (0.5B layer
        // GEMVs, in one process, alternating; 1 KiB and more lost 10-20%).
        for (int l = 0; l < 32; ++l) _mm_prefetch(reinterpret_cast<const char*>(wblk + c * 2048) + 512 + 64 * l, _MM_HINT_T0);
        for (int t = 0; t < 2; ++t)
          for (int64_t q = c * 16; q < c * 16 + 16; ++q) quad(q, t);
      }
    } else {  // rows of a batch: the block is in cache; one activation broadcast per quad
      for (int64_t q = g * qpg; q < q1; ++q) {
        quad(q, 0);
        quad(q, 1);
      }
    }
    for (int t = 0; t < 2; ++t) {
      __m256i s[2];
      reduce_tile(iacc[t], s);
      for (int h = 0; h < 2; ++h) {
        const __m256 v = _mm256_cvtepi32_ps(s[h]);
        const int64_t n = n0 + t * 16 + h * 8;
        if constexpr (kChannel) {
          facc[t * 2 + h] = _mm256_mul_ps(v, _mm256_mul_ps(_mm256_set1_ps(sa[m]), _mm256_loadu_ps(p.sw.data() + n)));
        } else {
          const __m256 sc = _mm256_set1_ps(sa[m * G + g] * p.sw[(n0 / kQuantBlock) * G + g]);
          facc[t * 2 + h] = _mm256_fmadd_ps(v, sc, facc[t * 2 + h]);
        }
      }
    }
  }
  for (int j = 0; j < 4; ++j)
    if (n0 + j * 8 < N) store8(y.at(m, n0 + j * 8), N, n0 + j * 8, facc[j], bias);
}

// Row k of the 32-column block of panels nt, nt+1 (nt even) as f32, columns 0-7, 8-15, 16-23, 24-31.
inline void load_row(const float* w, int64_t kp, int64_t nt, int64_t k, __m256 (&v)[4]) {
  const float* r = w + (nt * kp + k) * 16;
  v[0] = _mm256_load_ps(r);
  v[1] = _mm256_load_ps(r + 8);
  v[2] = _mm256_load_ps(r + kp * 16);
  v[3] = _mm256_load_ps(r + kp * 16 + 8);
}
inline void load_row(const uint16_t* w, int64_t kp, int64_t nt, int64_t k, __m256 (&v)[4]) {
  const uint16_t* r = w + ((nt / 2) * kp + k) * 32;  // bf16 pairs (c, c + 16)
  const __m256i lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(r));
  const __m256i hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(r + 16));
  const __m256i mask = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  v[0] = _mm256_castsi256_ps(_mm256_slli_epi32(lo, 16));
  v[1] = _mm256_castsi256_ps(_mm256_slli_epi32(hi, 16));
  v[2] = _mm256_castsi256_ps(_mm256_and_si256(lo, mask));
  v[3] = _mm256_castsi256_ps(_mm256_and_si256(hi, mask));
}

// Rows [m0, m0+R) x the two 16-column panels nt, nt+1 (4 vectors of 8 columns).
template <int R, class W, bool kGrouped>
void panel_block(const FloatPacked& p, const W* w, const float* xf, const float* sa, int64_t m0,
                 const float* bias, const YOut& y, int64_t nt) {
  const int64_t K = p.k, kp = p.kp, N = p.n, n0 = nt * 16, G = p.groups;
  const int64_t gsize = kGrouped ? kQuantBlock : std::max<int64_t>(K, 1);
  __m256 acc[R][4];
  for (int i = 0; i < R; ++i)
    for (auto& v : acc[i]) v = _mm256_setzero_ps();
  for (int64_t k0 = 0, g = 0; k0 < K; k0 += gsize, ++g) {
    const int64_t k1 = std::min(K, k0 + gsize);
    __m256 gacc[R][4];
    for (int i = 0; i < R; ++i)
      for (auto& v : gacc[i]) v = _mm256_setzero_ps();
    for (int64_t k = k0; k < k1; ++k) {
      __m256 wv[4];
      load_row(w, kp, nt, k, wv);
      for (int i = 0; i < R; ++i) {
        const __m256 x = _mm256_set1_ps(xf[(m0 + i) * kp + k]);
        for (int j = 0; j < 4; ++j) gacc[i][j] = _mm256_fmadd_ps(x, wv[j], gacc[i][j]);
      }
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < 4; ++j) {
        if constexpr (kGrouped) {
          const __m256 s = _mm256_set1_ps(sa[(m0 + i) * G + g] * p.sw[(n0 / kQuantBlock) * G + g]);
          acc[i][j] = _mm256_fmadd_ps(gacc[i][j], s, acc[i][j]);
        } else {
          acc[i][j] = gacc[i][j];
        }
      }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < 4; ++j)
      if (n0 + j * 8 < N) store8(y.at(m0 + i, n0 + j * 8), N, n0 + j * 8, acc[i][j], bias);
}

template <class W, bool kGrouped>
void panel_gemm(const FloatPacked& p, const W* w, const float* xf, const float* sa, int64_t M,
                const float* bias, const YOut& y, int64_t nt0, int64_t nt1) {
  for (int64_t nt = nt0; nt < nt1; nt += 2)
    for (int64_t m0 = 0; m0 < M; m0 += 2) {
      if (M - m0 >= 2)
        panel_block<2, W, kGrouped>(p, w, xf, sa, m0, bias, y, nt);
      else
        panel_block<1, W, kGrouped>(p, w, xf, sa, m0, bias, y, nt);
    }
}

}  // namespace

void gemm_int8_avx2(const Int8Packed& p, const int8_t* qa, const float* sa, int64_t M,
                    const float* bias, const YOut& y, int64_t nb0, int64_t nb1) {
  for (int64_t nb = nb0; nb < nb1; ++nb)
    for (int64_t m = 0; m < M; ++m) {
      // The first row reads the block from DRAM: in address order, with the prefetch (the others
      // find it in cache). Measured on the 0.5B int8-block layer GEMVs, in one process,
      // alternating with all rows quad-major: M = 2 +83%, M = 4 +53%, M = 5 +33%, 8 +26%, 16
      // +8%, 64 +7%, 512 unchanged.
      const bool in_order = m == 0;
      if (p.channel)
        in_order ? int8_row<true, true>(p, qa, sa, m, bias, y, nb) : int8_row<true, false>(p, qa, sa, m, bias, y, nb);
      else
        in_order ? int8_row<false, true>(p, qa, sa, m, bias, y, nb) : int8_row<false, false>(p, qa, sa, m, bias, y, nb);
    }
}

void gemm_float_avx2(const FloatPacked& p, const float* xf, const float* sa, int64_t M,
                     const float* bias, const YOut& y, int64_t nt0, int64_t nt1) {
  switch (p.kind) {
    case FloatKind::F32: panel_gemm<float, false>(p, p.wf.data(), xf, sa, M, bias, y, nt0, nt1); break;
    case FloatKind::Bf16: panel_gemm<uint16_t, false>(p, p.wb.data(), xf, sa, M, bias, y, nt0, nt1); break;
    case FloatKind::Fp8Block: panel_gemm<uint16_t, true>(p, p.wb.data(), xf, sa, M, bias, y, nt0, nt1); break;
  }
}

}  // namespace qeval::cpu
