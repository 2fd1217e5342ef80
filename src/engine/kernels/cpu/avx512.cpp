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

QEVAL_AVX512 inline __m512 load_w16(const float* p) { return _mm512_load_ps(p); }
QEVAL_AVX512 inline __m512 load_w16(const uint16_t* p) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(p))), 16));
}

// Rows [m0, m0+R) x the two 16-column panels nt, nt+1.
template <int R, class W, bool kGrouped>
QEVAL_AVX512 void panel_block(const FloatPacked& p, const W* w, const float* xf, const float* sa,
                              int64_t m0, const float* bias, const YOut& y, int64_t nt) {
  const int64_t K = p.k, kp = p.kp, N = p.n, n0 = nt * 16, G = p.groups;
  const W* w0 = w + nt * kp * 16;
  const W* w1 = w0 + kp * 16;
  const int64_t gsize = kGrouped ? kQuantBlock : std::max<int64_t>(K, 1);
  __m512 acc[R][2];
  for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t k0 = 0, g = 0; k0 < K; k0 += gsize, ++g) {
    const int64_t k1 = std::min(K, k0 + gsize);
    __m512 gacc[R][2];
    for (int i = 0; i < R; ++i) gacc[i][0] = gacc[i][1] = _mm512_setzero_ps();
    for (int64_t k = k0; k < k1; ++k) {
      const __m512 a0 = load_w16(w0 + k * 16), a1 = load_w16(w1 + k * 16);
      for (int i = 0; i < R; ++i) {
        const __m512 x = _mm512_set1_ps(xf[(m0 + i) * kp + k]);
        gacc[i][0] = _mm512_fmadd_ps(x, a0, gacc[i][0]);
        gacc[i][1] = _mm512_fmadd_ps(x, a1, gacc[i][1]);
      }
    }
    for (int i = 0; i < R; ++i) {
      if constexpr (kGrouped) {
        const __m512 s = _mm512_set1_ps(sa[(m0 + i) * G + g] * p.sw[(n0 / kQuantBlock) * G + g]);
        acc[i][0] = _mm512_fmadd_ps(gacc[i][0], s, acc[i][0]);
        acc[i][1] = _mm512_fmadd_ps(gacc[i][1], s, acc[i][1]);
      } else {
        acc[i][0] = gacc[i][0];
        acc[i][1] = gacc[i][1];
      }
    }
  }
  const __mmask16 mk0 = col_mask(N, n0), mk1 = col_mask(N, n0 + 16);
  for (int i = 0; i < R; ++i) {
    __m512 v0 = acc[i][0], v1 = acc[i][1];
    if (bias) {
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(mk0, bias + n0));
      v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(mk1, bias + n0 + 16));
    }
    float* yp = y.at(m0 + i, n0);
    _mm512_mask_storeu_ps(yp, mk0, v0);
    _mm512_mask_storeu_ps(yp + 16, mk1, v1);
  }
}

template <class W, bool kGrouped>
QEVAL_AVX512 void panel_gemm(const FloatPacked& p, const W* w, const float* xf, const float* sa,
                             int64_t M, const float* bias, const YOut& y, int64_t nt0, int64_t nt1) {
  for (int64_t nt = nt0; nt < nt1; nt += 2)
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      switch (std::min<int64_t>(4, M - m0)) {
        case 4: panel_block<4, W, kGrouped>(p, w, xf, sa, m0, bias, y, nt); break;
        case 3: panel_block<3, W, kGrouped>(p, w, xf, sa, m0, bias, y, nt); break;
        case 2: panel_block<2, W, kGrouped>(p, w, xf, sa, m0, bias, y, nt); break;
        default: panel_block<1, W, kGrouped>(p, w, xf, sa, m0, bias, y, nt); break;
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
