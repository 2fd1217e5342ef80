// AVX-512 kernels (function-level target attributes; dispatched at run time):
//   INT8 with VNNI (vpdpbusd, u8 x s8): the weights are flipped to u8 (w + 128) as they are
//   loaded, the activation codes are the s8 broadcast side, and the exact correction
//   128 * sum(a) per row and group (act_sums_avx512, once per call) is subtracted; a lone row
//   instead multiplies |a| by the weight negated where a < 0 (row_signed) — bit-exact integer
//   sums either way.
//   Float panels (panel_kernel.inc): f32 FMA over 32-column blocks, the scalar twin's sequential
//   order; fp8 weights kept as e4m3 bytes are decoded with VBMI byte tables.
// Rows are processed in groups, each row with its own accumulators: the per-row instruction
// sequence does not depend on the group size, so results are batch invariant.
#include <immintrin.h>

// GCC 12 reports a false "may be used uninitialized" inside its own AVX-512 intrinsics headers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <array>

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

// One row's exact int32 sums over the 64-wide k chunks [c0, c1) of a 32-column block (wblk):
// sum a * w as sum |a| * (w negated where a < 0), so vpdpbusd (u8 x s8) takes the activation
// as the unsigned side with no shift to undo. Exact while no weight is -128 (its negation
// wraps): the caller checks. Measured on the 0.5B and 1.5B layer GEMVs, in one process,
// alternating (Zen 5, 2 threads, 16-30 rounds): against the activation shifted by 128 and the
// weight's column sums read to undo it, int8-block +6% (the column sums were 3% more bytes, in
// two more streams), int8-channel +1-3%; against the weight flipped instead
// (rows_from_dram<1>, which reads no more bytes), int8-block -2%, int8-channel +5%.
// The weight is read in address order: each 2 KiB chunk is tile 0's 16 rows of k-quads, then
// tile 1's. The quad-major order of the batched loop below reads two streams 1 KiB apart, which
// the hardware prefetcher follows poorly: an M = 1 GEMV over DRAM-resident int8 weights measured
// 23 GB/s that way and 46-50 GB/s this way (read bandwidth 55-60, Zen 5, 2 threads). The sums
// are exact integers, so the order does not change them.
// Each chunk first prefetches its 32 lines shifted 512 B ahead (so every line once, 0.5-2.5 KiB
// of the stream before its load): the line requests otherwise leave late behind the
// accumulator chains. Measured on the 0.5B layer GEMVs, in one process, alternating (Zen 5, 2
// threads): +9% when the machine's read bandwidth was 50-65 GB/s (48 -> 52.5 GB/s, the rate of
// a plain summing loop), +17-21% when it was ~28; distances of 256-768 B measured alike, 1 KiB
// less, 2 KiB and more lost. (Past the weight's end the prefetches touch nothing: a prefetch
// never faults.)
QEVAL_AVX512 inline void row_signed(const int8_t* wblk, const int8_t* a, int64_t c0, int64_t c1,
                                    __m512i (&iacc)[2]) {
  const __m512i zero = _mm512_setzero_si512();
  __m512i s[4] = {iacc[0], zero, iacc[1], zero};  // added to iacc, as rows_from_dram does
  for (int64_t c = c0; c < c1; ++c) {
    const int8_t* wp = wblk + c * 2048;
    for (int l = 0; l < 32; ++l) _mm_prefetch(reinterpret_cast<const char*>(wp) + 512 + l * 64, _MM_HINT_T0);
    __m512i mag[16];   // |a| of the quad, broadcast (|-128| = 128 is right as u8)
    __mmask64 neg[16];  // the bytes whose activation is negative
    for (int r = 0; r < 16; ++r) {
      int32_t quad;
      __builtin_memcpy(&quad, a + c * 64 + r * 4, 4);
      const __m512i v = _mm512_set1_epi32(quad);
      mag[r] = _mm512_abs_epi8(v);
      neg[r] = _mm512_movepi8_mask(v);
    }
    for (int t = 0; t < 2; ++t)
      for (int r = 0; r < 16; r += 2) {
        const __m512i w0 = _mm512_load_si512(wp + t * 1024 + r * 64);
        const __m512i w1 = _mm512_load_si512(wp + t * 1024 + r * 64 + 64);
        s[2 * t] = _mm512_dpbusd_epi32(s[2 * t], mag[r], _mm512_mask_sub_epi8(w0, neg[r], zero, w0));
        s[2 * t + 1] = _mm512_dpbusd_epi32(s[2 * t + 1], mag[r + 1], _mm512_mask_sub_epi8(w1, neg[r + 1], zero, w1));
      }
  }
  iacc[0] = _mm512_add_epi32(s[0], s[1]);
  iacc[1] = _mm512_add_epi32(s[2], s[3]);
}

// R rows' int32 sums of (w + 128) * a over the 64-wide k chunks [c0, c1) of a 32-column block,
// for the first rows of a call (up to 10), which bring each weight block in from DRAM (the rows
// after them find it in cache: rows_from_cache). The weight is read in address order with its
// lines prefetched 512 B ahead, as in row_signed. Measured on the 0.5B layer GEMVs, in one
// process, alternating with the quad-major loop of rows_from_cache (Zen 5, 2 threads): M = 2, 3,
// 4 +50%, +77%, +58% (int8-block) and M = 2, 4 +52%, +85% (int8-channel).
// Two accumulator chains per row and tile (even and odd k-quad) up to 4 rows, one from 5 to 10
// (registers: 2 * R accumulators). At least a pair of quads per step, so the chain is known at
// compile time: indexed by r % 2 in a loop the compiler did not unroll, the accumulators lived
// on the stack, each step a store and a reload (M = 2 +19-87%, M = 4 +23% without).
// Each weight vector is flipped to u8 once for all R rows, where shifting the activation
// instead cost an XOR per row: measured (same GEMVs, alternating) M = 2 +4-24%, 4 +7-20%, 5 +5%,
// 8 -2 to +11%. Up to 3 rows, a chunk is one unrolled step (M = 2 +11-18%, 3 +9-11%, both
// schemes, alternating with the loop); from 4 rows the unrolled step lost 11-23%.
template <int R>
QEVAL_AVX512 inline void rows_from_dram(const int8_t* wblk, const int8_t* a, int64_t kp, int64_t c0, int64_t c1,
                                        __m512i (&iacc)[R][2]) {
  const __m512i flip = _mm512_set1_epi32(static_cast<int>(0x80808080u));
  constexpr int CH = R <= 4 ? 2 : 1;  // chains per row and tile: even / odd k-quad, or one
  __m512i s[2][CH][R];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < 2; ++t)
      for (int h = 0; h < CH; ++h) s[t][h][i] = _mm512_setzero_si512();
  for (int64_t c = c0; c < c1; ++c) {
    const int8_t* wp = wblk + c * 2048;
    const int8_t* ac = a + c * 64;
    for (int l = 0; l < 32; ++l) _mm_prefetch(reinterpret_cast<const char*>(wp) + 512 + l * 64, _MM_HINT_T0);
    // One weight vector (16 columns x 4 k) into chain h of tile t of each row; r: quad in chunk.
    const auto step = [&](int t, int r, int h) QEVAL_AVX512 __attribute__((always_inline)) {
      const __m512i w = _mm512_xor_si512(_mm512_load_si512(wp + t * 1024 + r * 64), flip);  // s8 -> u8 (w + 128)
      for (int i = 0; i < R; ++i) {
        int32_t quad;
        __builtin_memcpy(&quad, ac + i * kp + r * 4, 4);
        s[t][h][i] = _mm512_dpbusd_epi32(s[t][h][i], w, _mm512_set1_epi32(quad));
      }
    };
    if constexpr (R <= 3) {  // the whole chunk as one unrolled step
#pragma GCC unroll 2
      for (int t = 0; t < 2; ++t)
#pragma GCC unroll 16
        for (int r = 0; r < 16; ++r) step(t, r, r % CH);
    } else {
      for (int t = 0; t < 2; ++t)
        for (int r = 0; r < 16; r += 2) {
          step(t, r, 0);
          step(t, r + 1, CH - 1);
        }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < 2; ++t)
      for (int h = 0; h < CH; ++h) iacc[i][t] = _mm512_add_epi32(iacc[i][t], s[t][h][i]);
}

// The same sums for rows whose weight block is already in cache: quad by quad, both tiles of a
// quad with one broadcast of the activation per row. A chunk's 16 quads are one unrolled step
// with the accumulators in locals: written as one loop over quads, GCC copied every accumulator
// to a new register and back at each quad (16 moves per 8 vpdpbusd, seen in objdump). Measured
// on the 0.5B layer GEMVs, in one process, alternating (Zen 5, 2 threads), with the weight
// flipped once per load (this function) against the activation shifted per row in the plain
// loop: M = 12 +6%, 16 +13%, 24 +14%, 64 +30-50%, 512 +37-72%. Not for the first rows: reading
// the two tiles 1 KiB apart from DRAM lost 15% at M = 8 (rows_from_dram reads address order).
template <int R>
QEVAL_AVX512 inline void rows_from_cache(const int8_t* wblk, const int8_t* a, int64_t kp, int64_t c0, int64_t c1,
                                         __m512i (&iacc)[R][2]) {
  const __m512i flip = _mm512_set1_epi32(static_cast<int>(0x80808080u));
  __m512i s0[R], s1[R];
  for (int i = 0; i < R; ++i) {
    s0[i] = iacc[i][0];
    s1[i] = iacc[i][1];
  }
  for (int64_t c = c0; c < c1; ++c) {
    const int8_t* wp = wblk + c * 2048;
    const int8_t* ac = a + c * 64;
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r) {
      const __m512i w0 = _mm512_xor_si512(_mm512_load_si512(wp + r * 64), flip);  // s8 -> u8 (w + 128)
      const __m512i w1 = _mm512_xor_si512(_mm512_load_si512(wp + 1024 + r * 64), flip);
      for (int i = 0; i < R; ++i) {
        int32_t quad;
        __builtin_memcpy(&quad, ac + i * kp + r * 4, 4);
        const __m512i av = _mm512_set1_epi32(quad);
        s0[i] = _mm512_dpbusd_epi32(s0[i], w0, av);
        s1[i] = _mm512_dpbusd_epi32(s1[i], w1, av);
      }
    }
  }
  for (int i = 0; i < R; ++i) {
    iacc[i][0] = s0[i];
    iacc[i][1] = s1[i];
  }
}

// Rows [m0, m0+R) x 32-column block nb. asum: 128 * the sum of each row's codes per group.
template <int R, bool kChannel>
QEVAL_AVX512 void vnni_block(const Int8Packed& p, const int8_t* qa, const float* sa, const int32_t* asum, int64_t m0,
                             const float* bias, const YOut& y, int64_t nb) {
  const int64_t kp = p.kp, n_chunks = kp / 64, G = p.groups, n0 = nb * 32, N = p.n;
  const int64_t quads = kp / 4, qpg = kChannel ? quads : kQuantBlock / 4;
  const int8_t* wblk = p.w.data() + nb * n_chunks * 2048;
  const bool one_signed = R == 1 && !p.has_minus128;  // see row_signed
  const bool from_dram = m0 == 0;  // a call's first rows bring the block in from DRAM (vnni_gemm)
  __m512 facc[R][2];
  __m512i iacc[R][2];
  for (int i = 0; i < R; ++i) facc[i][0] = facc[i][1] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    for (int i = 0; i < R; ++i) iacc[i][0] = iacc[i][1] = _mm512_setzero_si512();
    const int64_t c0 = g * qpg / 16, c1 = std::min(quads, (g + 1) * qpg) / 16;  // quads % 16 == 0
    if (one_signed)
      row_signed(wblk, qa + m0 * kp, c0, c1, iacc[0]);
    else if (from_dram)
      rows_from_dram<R>(wblk, qa + m0 * kp, kp, c0, c1, iacc);
    else
      rows_from_cache<R>(wblk, qa + m0 * kp, kp, c0, c1, iacc);
    for (int i = 0; i < R; ++i) {
      const int64_t m = m0 + i;
      const __m512i shift = one_signed ? _mm512_setzero_si512() : _mm512_set1_epi32(asum[m * G + g]);
      const __m512 v0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(iacc[i][0], shift));
      const __m512 v1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(iacc[i][1], shift));
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
QEVAL_AVX512 void vnni_gemm(const Int8Packed& p, const int8_t* qa, const float* sa, const int32_t* asum, int64_t M,
                            const float* bias, const YOut& y, int64_t nb0, int64_t nb1) {
  // The first 8 rows (all of a call of at most 10) read each weight block from DRAM, in address
  // order (rows_from_dram); the later ones find it in cache, in even groups of at most 6. Measured on
  // the 0.5B int8-block layer GEMVs, in one process, alternating (Zen 5, 2 threads): before,
  // only calls of at most 4 rows read this way; reading the first 4 of more rows so: M = 5 +43%,
  // 8 +36%, 16 +27%, 32 +24%, 128 +6%, 512 unchanged; then the first 8 rather than 4: M = 5
  // +31%, 8 +29%, 12 and 16 +14%. For the rows from cache, even groups of at most 6 against
  // groups of 4 (both rows_from_cache): M = 24 +5%, 64 +3%, 512 +3%, 12 and 16 the same; groups
  // of 8 lost 1-8%. Calls of 9 or 10 rows read them all from DRAM (+16-25% at M = 9, +12-30% at
  // M = 10, both schemes, against 8 and a small group from cache); a first group of 10 in larger
  // calls measured -7 to +6% (M = 11-24), of 12 -5 to -10% (M = 12-16).
  for (int64_t nb = nb0; nb < nb1; ++nb)
    for (int64_t m0 = 0; m0 < M;) {
      const int64_t left = M - m0, groups = (left + 5) / 6;
      const int64_t R = m0 == 0 ? (left <= 10 ? left : 8) : (left + groups - 1) / groups;
      switch (R) {
        case 10: vnni_block<10, kChannel>(p, qa, sa, asum, m0, bias, y, nb); break;
        case 9: vnni_block<9, kChannel>(p, qa, sa, asum, m0, bias, y, nb); break;
        case 8: vnni_block<8, kChannel>(p, qa, sa, asum, m0, bias, y, nb); break;
        case 7: vnni_block<7, kChannel>(p, qa, sa, asum, m0, bias, y, nb); break;
        case 6: vnni_block<6, kChannel>(p, qa, sa, asum, m0, bias, y, nb); break;
        case 5: vnni_block<5, kChannel>(p, qa, sa, asum, m0, bias, y, nb); break;
        case 4: vnni_block<4, kChannel>(p, qa, sa, asum, m0, bias, y, nb); break;
        case 3: vnni_block<3, kChannel>(p, qa, sa, asum, m0, bias, y, nb); break;
        case 2: vnni_block<2, kChannel>(p, qa, sa, asum, m0, bias, y, nb); break;
        default: vnni_block<1, kChannel>(p, qa, sa, asum, m0, bias, y, nb); break;
      }
      m0 += R;
    }
}

// Byte tables of the e4m3 decode (vbmi::decode64 below): the low and the high byte of the bf16
// of each magnitude. Built here, outside the AVX-512 target regions, because static
// initialisation runs on every CPU.
struct alignas(64) E4m3Tables {
  uint8_t lo[128], hi[128];
};
const E4m3Tables kE4m3 = [] {
  E4m3Tables t{};
  for (int mag = 0; mag < 128; ++mag) {
    const uint16_t v = bf16_from_f32(e4m3_to_f32(static_cast<uint8_t>(mag)));
    t.lo[mag] = static_cast<uint8_t>(v & 0xFF);
    t.hi[mag] = static_cast<uint8_t>(v >> 8);
  }
  return t;
}();

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni")
namespace plain {

// bf16 row of 32 columns (pairs c, c + 16 in each 32-bit lane) -> f32 columns 0-15, 16-31.
inline void split_bf16(__m512i v, __m512& a0, __m512& a1) {
  a0 = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  a1 = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
}

// f32 block: two 16-column panels of kp rows each.
inline void load_row(const float* blk, int64_t kp, int64_t k, __m512& a0, __m512& a1) {
  a0 = _mm512_load_ps(blk + k * 16);
  a1 = _mm512_load_ps(blk + (kp + k) * 16);
}
inline void load_rows2(const float* blk, int64_t kp, int64_t k, __m512 (&a)[4]) {
  load_row(blk, kp, k, a[0], a[1]);
  load_row(blk, kp, k + 1, a[2], a[3]);
}
// bf16 block: one 64-byte row per k.
inline void load_row(const uint16_t* blk, int64_t, int64_t k, __m512& a0, __m512& a1) {
  split_bf16(_mm512_load_si512(blk + k * 32), a0, a1);
}
inline void load_rows2(const uint16_t* blk, int64_t kp, int64_t k, __m512 (&a)[4]) {
  load_row(blk, kp, k, a[0], a[1]);
  load_row(blk, kp, k + 1, a[2], a[3]);
}

#include "engine/kernels/cpu/panel_kernel.inc"

}  // namespace plain
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")
namespace vbmi {

using plain::split_bf16;

// e4m3 -> bf16 by byte tables, exact for every code (NaN gives the bf16 NaN that
// bf16_from_f32(e4m3_to_f32(code)) gives, as in the twin): vpermi2b looks up the low and the
// high byte of the bf16 of each magnitude (the low 7 bits of a byte index its 128 entries), the
// sign bit is OR-ed into the high byte, and unpacklo/hi_epi8 interleave the two byte vectors into
// 16-bit values. They work within 128-bit lanes, taking bytes 0-7 / 8-15 of each, so the packer
// stores the bytes in the order they expect (e4m3_panel_offset in pack.cpp).
//
// 64 e4m3 bytes b, in that order -> bf16 elements 0-31 (r0) and 32-63 (r1).
inline void decode64(__m512i b, __m512i& r0, __m512i& r1) {
  const __m512i lo = _mm512_permutex2var_epi8(_mm512_load_si512(kE4m3.lo), b, _mm512_load_si512(kE4m3.lo + 64));
  const __m512i hi = _mm512_permutex2var_epi8(_mm512_load_si512(kE4m3.hi), b, _mm512_load_si512(kE4m3.hi + 64));
  // hi | (b & 0x80): ternary-logic truth table A | (B & C) = 0xF8.
  const __m512i hs = _mm512_ternarylogic_epi32(hi, b, _mm512_set1_epi8(static_cast<char>(0x80)), 0xF8);
  r0 = _mm512_unpacklo_epi8(lo, hs);
  r1 = _mm512_unpackhi_epi8(lo, hs);
}

// e4m3 block: 32 bytes per row k; rows k, k + 1 (k even) are one aligned 64-byte load.
inline void load_rows2(const uint8_t* blk, int64_t, int64_t k, __m512 (&a)[4]) {
  __m512i r0, r1;
  decode64(_mm512_load_si512(blk + k * 32), r0, r1);
  split_bf16(r0, a[0], a[1]);
  split_bf16(r1, a[2], a[3]);
}

#include "engine/kernels/cpu/panel_kernel.inc"

// Fp8Block with e4m3 weights. Up to 64 rows (decode of a batch, short prompts) decode the weight
// in registers as they stream it (half the bytes of bf16), each group of 8 rows again from cache;
// more rows decode each column block once into a per-thread bf16 copy (kp x 32, in cache) and
// run the bf16 kernel over it for every row. The threshold was 4: measured on the 0.5B layer
// GEMVs, in one process, alternating (Zen 5, 2 threads), decoding in registers is faster up to
// 64 rows (M = 5 +49%, 8 +47%, 16 +25%, 32 +12%, 64 +3%), even at 128, and 2% slower at 512.
void e4m3_gemm(const FloatPacked& p, const float* xf, const float* sa, int64_t M, const float* bias,
               const YOut& y, int64_t nt0, int64_t nt1) {
  const int64_t bs = 32 * p.kp;
  if (M <= 64) {
    panel_rows<uint8_t, true>(p, p.w8.data() + nt0 / 2 * bs, xf, sa, 0, M, bias, y, nt0, nt1);
    return;
  }
  thread_local AlignedBuffer<uint16_t> t_block;
  if (t_block.size() < static_cast<size_t>(bs)) t_block = AlignedBuffer<uint16_t>(bs);
  uint16_t* dst = t_block.data();
  for (int64_t nt = nt0; nt < nt1; nt += 2) {
    const uint8_t* src = p.w8.data() + nt / 2 * bs;
    for (int64_t i = 0; i < bs; i += 64)
      decode64(_mm512_load_si512(src + i), *reinterpret_cast<__m512i*>(dst + i),
               *reinterpret_cast<__m512i*>(dst + i + 32));
    plain::panel_rows<uint16_t, true>(p, dst, xf, sa, 0, M, bias, y, nt, nt + 2);
  }
}

}  // namespace vbmi
#pragma GCC pop_options

}  // namespace

// The same tables in element order: vpermb first moves elements [8 L, 8 L + 8) to bytes 0-7 of
// 128-bit lane L and elements [32 + 8 L, 40 + 8 L) to its bytes 8-15, the order that
// vbmi::decode64 takes (the panels store their bytes so; these come in plain order).
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi"))) void decode_e4m3_to_bf16_vbmi(
    const uint8_t* src, uint16_t* dst, int64_t n) {
  alignas(64) static const auto kPerm = [] {
    std::array<uint8_t, 64> perm{};
    for (int pos = 0; pos < 64; ++pos) {
      const int lane = pos / 16, o = pos % 16;
      perm[pos] = static_cast<uint8_t>(o < 8 ? lane * 8 + o : 32 + lane * 8 + (o - 8));
    }
    return perm;
  }();
  const __m512i perm = _mm512_load_si512(kPerm.data());
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    // The AMX path decodes whole weight blocks from DRAM with it: prefetch 16 KiB ahead, to L2.
    _mm_prefetch(reinterpret_cast<const char*>(src + i) + 16 * 1024, _MM_HINT_T1);
    __m512i r0, r1;
    vbmi::decode64(_mm512_permutexvar_epi8(perm, _mm512_loadu_si512(src + i)), r0, r1);
    _mm512_storeu_si512(dst + i, r0);
    _mm512_storeu_si512(dst + i + 32, r1);
  }
  for (; i < n; ++i) {  // tail (n not a multiple of 64)
    const uint8_t mag = src[i] & 0x7F;
    dst[i] = static_cast<uint16_t>(kE4m3.lo[mag] | (kE4m3.hi[mag] << 8) | ((src[i] & 0x80) << 8));
  }
}

void gemm_int8_avx512(const Int8Packed& p, const int8_t* qa, const float* sa, const int32_t* asum, int64_t M,
                      const float* bias, const YOut& y, int64_t nb0, int64_t nb1) {
  if (p.channel)
    vnni_gemm<true>(p, qa, sa, asum, M, bias, y, nb0, nb1);
  else
    vnni_gemm<false>(p, qa, sa, asum, M, bias, y, nb0, nb1);
}

QEVAL_AVX512 void act_sums_avx512(const int8_t* qa, int64_t M, int64_t kp, int64_t G, int32_t* out) {
  const int64_t gsize = kp / G;  // 128, or the whole padded row (channel scales): a multiple of 64
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < G; ++g) {
      __m512i acc = _mm512_setzero_si512();
      const int8_t* a = qa + m * kp + g * gsize;
      for (int64_t j = 0; j < gsize; j += 64) acc = _mm512_dpbusd_epi32(acc, ones, _mm512_loadu_si512(a + j));
      out[m * G + g] = _mm512_reduce_add_epi32(acc) * 128;
    }
}

void gemm_float_avx512(const FloatPacked& p, const float* xf, const float* sa, int64_t M,
                       const float* bias, const YOut& y, int64_t nt0, int64_t nt1) {
  const int64_t bs = 32 * p.kp;  // elements per 32-column block
  switch (p.kind) {
    case FloatKind::F32:
      plain::panel_rows<float, false>(p, p.wf.data() + nt0 / 2 * bs, xf, sa, 0, M, bias, y, nt0, nt1);
      break;
    case FloatKind::Bf16:
      plain::panel_rows<uint16_t, false>(p, p.wb.data() + nt0 / 2 * bs, xf, sa, 0, M, bias, y, nt0, nt1);
      break;
    case FloatKind::Fp8Block:
      if (p.e4m3)
        vbmi::e4m3_gemm(p, xf, sa, M, bias, y, nt0, nt1);
      else
        plain::panel_rows<uint16_t, true>(p, p.wb.data() + nt0 / 2 * bs, xf, sa, 0, M, bias, y, nt0, nt1);
      break;
  }
}

}  // namespace qeval::cpu
