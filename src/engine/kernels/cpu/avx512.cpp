// AVX-512 kernels (function-level target attributes; dispatched at run time):
//   INT8 with VNNI (vpdpbusd, u8 x s8): activations are shifted to u8 (a + 128) and the exact
//   correction 128 * sum(w) per column and group is subtracted — bit-exact integer sums.
//   Float panels: f32 FMA over [16 columns] panels, the scalar twin's sequential order.
// Rows are processed in blocks of up to 4, each row with its own accumulators: the per-row
// instruction sequence does not depend on the block size, so results are batch invariant.
#include <immintrin.h>

// GCC 12 reports a false "may be used uninitialized" inside its own AVX-512 intrinsics headers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>

#include "engine/kernels/cpu/gemm_cpu.h"
#include "engine/quant.h"

#define QEVAL_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

namespace qeval::cpu {

namespace {

QEVAL_AVX512 inline __mmask16 col_mask(int64_t N, int64_t n0) {
  if (N - n0 >= 16) return 0xFFFF;
  if (N <= n0) return 0;
  return static_cast<__mmask16>((1u << (N - n0)) - 1);
}

// One row's int32 sums over the 64-wide k chunks [c0, c1) of a 32-column block (wblk), reading
// the weight in address order: each 2 KiB chunk is tile 0's 16 rows of k-quads, then tile 1's.
// The quad-major order of the batched loop below reads two streams 1 KiB apart, which the
// hardware prefetcher follows poorly: an M = 1 GEMV over DRAM-resident int8 weights measured 23
// GB/s that way and 46-50 GB/s this way (read bandwidth 55-60, Zen 5, 2 threads). The sums are
// exact integers, so the order does not change them.
QEVAL_AVX512 inline void rows_in_order(const int8_t* wblk, const int8_t* a, int64_t c0, int64_t c1,
                                       __m512i (&iacc)[2]) {
  const __m512i flip = _mm512_set1_epi32(static_cast<int>(0x80808080u));
  __m512i s[4] = {iacc[0], _mm512_setzero_si512(), iacc[1], _mm512_setzero_si512()};
  for (int64_t c = c0; c < c1; ++c) {
    const int8_t* wp = wblk + c * 2048;
    __m512i av[16];
    for (int r = 0; r < 16; ++r) {
      int32_t quad;
      __builtin_memcpy(&quad, a + c * 64 + r * 4, 4);
      av[r] = _mm512_xor_si512(_mm512_set1_epi32(quad), flip);  // s8 -> u8 (a + 128)
    }
    for (int r = 0; r < 16; r += 2) {
      s[0] = _mm512_dpbusd_epi32(s[0], av[r], _mm512_load_si512(wp + r * 64));
      s[1] = _mm512_dpbusd_epi32(s[1], av[r + 1], _mm512_load_si512(wp + r * 64 + 64));
    }
    for (int r = 0; r < 16; r += 2) {
      s[2] = _mm512_dpbusd_epi32(s[2], av[r], _mm512_load_si512(wp + 1024 + r * 64));
      s[3] = _mm512_dpbusd_epi32(s[3], av[r + 1], _mm512_load_si512(wp + 1024 + r * 64 + 64));
    }
  }
  iacc[0] = _mm512_add_epi32(s[0], s[1]);
  iacc[1] = _mm512_add_epi32(s[2], s[3]);
}

// Rows [m0, m0+R) x 32-column block nb.
template <int R, bool kChannel>
QEVAL_AVX512 void vnni_block(const Int8Packed& p, const int8_t* qa, const float* sa, int64_t m0,
                             const float* bias, const YOut& y, int64_t nb) {
  const int64_t kp = p.kp, n_chunks = kp / 64, G = p.groups, n0 = nb * 32, N = p.n;
  const int64_t quads = kp / 4, qpg = kChannel ? quads : kQuantBlock / 4;
  const int8_t* wblk = p.w.data() + nb * n_chunks * 2048;
  const __m512i flip = _mm512_set1_epi32(static_cast<int>(0x80808080u));
  __m512 facc[R][2];
  __m512i iacc[R][2];
  for (int i = 0; i < R; ++i) facc[i][0] = facc[i][1] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    for (int i = 0; i < R; ++i) iacc[i][0] = iacc[i][1] = _mm512_setzero_si512();
    const int64_t q1 = std::min(quads, (g + 1) * qpg);
    if constexpr (R == 1) {
      rows_in_order(wblk, qa + m0 * kp, g * qpg / 16, q1 / 16, iacc[0]);  // quads % 16 == 0
    } else {
      for (int64_t q = g * qpg; q < q1; ++q) {
        const int8_t* wp = wblk + (q / 16) * 2048 + (q % 16) * 64;
        const __m512i w0 = _mm512_load_si512(wp), w1 = _mm512_load_si512(wp + 1024);
        for (int i = 0; i < R; ++i) {
          int32_t quad;
          __builtin_memcpy(&quad, qa + (m0 + i) * kp + q * 4, 4);
          const __m512i a = _mm512_xor_si512(_mm512_set1_epi32(quad), flip);  // s8 -> u8 (a + 128)
          iacc[i][0] = _mm512_dpbusd_epi32(iacc[i][0], a, w0);
          iacc[i][1] = _mm512_dpbusd_epi32(iacc[i][1], a, w1);
        }
      }
    }
    const __m512i cs0 = _mm512_slli_epi32(_mm512_load_si512(p.colsum.data() + ((2 * nb) * G + g) * 16), 7);
    const __m512i cs1 = _mm512_slli_epi32(_mm512_load_si512(p.colsum.data() + ((2 * nb + 1) * G + g) * 16), 7);
    for (int i = 0; i < R; ++i) {
      const __m512 v0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(iacc[i][0], cs0));
      const __m512 v1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(iacc[i][1], cs1));
      const int64_t m = m0 + i;
      if constexpr (kChannel) {
        const __m512 s = _mm512_set1_ps(sa[m]);
        facc[i][0] = _mm512_mul_ps(v0, _mm512_mul_ps(s, _mm512_loadu_ps(p.sw.data() + n0)));
        facc[i][1] = _mm512_mul_ps(v1, _mm512_mul_ps(s, _mm512_loadu_ps(p.sw.data() + n0 + 16)));
      } else {
        const __m512 s = _mm512_set1_ps(sa[m * G + g] * p.sw[(n0 / kQuantBlock) * G + g]);
        facc[i][0] = _mm512_fmadd_ps(v0, s, facc[i][0]);
        facc[i][1] = _mm512_fmadd_ps(v1, s, facc[i][1]);
      }
    }
  }
  const __mmask16 mk0 = col_mask(N, n0), mk1 = col_mask(N, n0 + 16);
  for (int i = 0; i < R; ++i) {
    __m512 v0 = facc[i][0], v1 = facc[i][1];
    if (bias) {
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(mk0, bias + n0));
      v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(mk1, bias + n0 + 16));
    }
    float* yp = y.at(m0 + i, n0);
    _mm512_mask_storeu_ps(yp, mk0, v0);
    _mm512_mask_storeu_ps(yp + 16, mk1, v1);
  }
}

template <bool kChannel>
QEVAL_AVX512 void vnni_gemm(const Int8Packed& p, const int8_t* qa, const float* sa, int64_t M,
                            const float* bias, const YOut& y, int64_t nb0, int64_t nb1) {
  for (int64_t nb = nb0; nb < nb1; ++nb)
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      switch (std::min<int64_t>(4, M - m0)) {
        case 4: vnni_block<4, kChannel>(p, qa, sa, m0, bias, y, nb); break;
        case 3: vnni_block<3, kChannel>(p, qa, sa, m0, bias, y, nb); break;
        case 2: vnni_block<2, kChannel>(p, qa, sa, m0, bias, y, nb); break;
        default: vnni_block<1, kChannel>(p, qa, sa, m0, bias, y, nb); break;
      }
    }
}

// Row k of the 32-column block of panels nt, nt+1 (nt even) as f32: columns 0-15 and 16-31.
QEVAL_AVX512 inline void load_row(const float* w, int64_t kp, int64_t nt, int64_t k, __m512& a0, __m512& a1) {
  const float* r = w + (nt * kp + k) * 16;
  a0 = _mm512_load_ps(r);
  a1 = _mm512_load_ps(r + kp * 16);
}
QEVAL_AVX512 inline void load_row(const uint16_t* w, int64_t kp, int64_t nt, int64_t k, __m512& a0, __m512& a1) {
  const __m512i v = _mm512_load_si512(w + ((nt / 2) * kp + k) * 32);  // bf16 pairs (c, c + 16)
  a0 = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  a1 = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
}

// Rows [m0, m0+R) x the B 32-column blocks of panels nt .. nt + 2B - 1 (nt even). Each column is
// one fma chain over k, so B only sets how many chains (and weight streams) run side by side.
template <int R, int B, class W, bool kGrouped>
QEVAL_AVX512 void panel_block(const FloatPacked& p, const W* w, const float* xf, const float* sa,
                              int64_t m0, const float* bias, const YOut& y, int64_t nt) {
  constexpr int P = 2 * B;  // 16-column panels
  const int64_t K = p.k, kp = p.kp, N = p.n, n0 = nt * 16, G = p.groups;
  const int64_t gsize = kGrouped ? kQuantBlock : std::max<int64_t>(K, 1);
  __m512 acc[R][P];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < P; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t k0 = 0, g = 0; k0 < K; k0 += gsize, ++g) {
    const int64_t k1 = std::min(K, k0 + gsize);
    __m512 gacc[R][P];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < P; ++j) gacc[i][j] = _mm512_setzero_ps();
    for (int64_t k = k0; k < k1; ++k) {
      __m512 a[P];
      for (int b = 0; b < B; ++b) load_row(w, kp, nt + 2 * b, k, a[2 * b], a[2 * b + 1]);
      for (int i = 0; i < R; ++i) {
        const __m512 x = _mm512_set1_ps(xf[(m0 + i) * kp + k]);
        for (int j = 0; j < P; ++j) gacc[i][j] = _mm512_fmadd_ps(x, a[j], gacc[i][j]);
      }
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < P; ++j) {
        if constexpr (kGrouped) {
          const int64_t nb = (n0 + 16 * j) / kQuantBlock;
          const __m512 s = _mm512_set1_ps(sa[(m0 + i) * G + g] * p.sw[nb * G + g]);
          acc[i][j] = _mm512_fmadd_ps(gacc[i][j], s, acc[i][j]);
        } else {
          acc[i][j] = gacc[i][j];
        }
      }
  }
  for (int j = 0; j < P; ++j) {
    const int64_t c = n0 + 16 * j;
    const __mmask16 mk = col_mask(N, c);
    for (int i = 0; i < R; ++i) {
      __m512 v = acc[i][j];
      if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, bias + c));
      _mm512_mask_storeu_ps(y.at(m0 + i, c), mk, v);
    }
  }
}

// A single row (decode) takes two column blocks at a time: one block's two fma chains leave the
// loads waiting on the chain (measured, M = 1 bf16 over DRAM-resident weights: ~10% more with
// two blocks).
template <class W, bool kGrouped>
QEVAL_AVX512 void panel_gemm(const FloatPacked& p, const W* w, const float* xf, const float* sa,
                             int64_t M, const float* bias, const YOut& y, int64_t nt0, int64_t nt1) {
  int64_t nt = nt0;
  if (M == 1)
    for (; nt + 4 <= nt1; nt += 4) panel_block<1, 2, W, kGrouped>(p, w, xf, sa, 0, bias, y, nt);
  for (; nt < nt1; nt += 2)
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      switch (std::min<int64_t>(4, M - m0)) {
        case 4: panel_block<4, 1, W, kGrouped>(p, w, xf, sa, m0, bias, y, nt); break;
        case 3: panel_block<3, 1, W, kGrouped>(p, w, xf, sa, m0, bias, y, nt); break;
        case 2: panel_block<2, 1, W, kGrouped>(p, w, xf, sa, m0, bias, y, nt); break;
        default: panel_block<1, 1, W, kGrouped>(p, w, xf, sa, m0, bias, y, nt); break;
      }
    }
}

}  // namespace

void gemm_int8_avx512(const Int8Packed& p, const int8_t* qa, const float* sa, int64_t M,
                      const float* bias, const YOut& y, int64_t nb0, int64_t nb1) {
  if (p.channel)
    vnni_gemm<true>(p, qa, sa, M, bias, y, nb0, nb1);
  else
    vnni_gemm<false>(p, qa, sa, M, bias, y, nb0, nb1);
}

void gemm_float_avx512(const FloatPacked& p, const float* xf, const float* sa, int64_t M,
                       const float* bias, const YOut& y, int64_t nt0, int64_t nt1) {
  switch (p.kind) {
    case FloatKind::F32: panel_gemm<float, false>(p, p.wf.data(), xf, sa, M, bias, y, nt0, nt1); break;
    case FloatKind::Bf16: panel_gemm<uint16_t, false>(p, p.wb.data(), xf, sa, M, bias, y, nt0, nt1); break;
    case FloatKind::Fp8Block: panel_gemm<uint16_t, true>(p, p.wb.data(), xf, sa, M, bias, y, nt0, nt1); break;
  }
}

}  // namespace qeval::cpu
