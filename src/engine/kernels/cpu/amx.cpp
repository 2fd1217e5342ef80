// AMX kernels: INT8 (TDPBSSD, int32 tiles) for both int8 schemes, BF16 (TDPBF16PS, f32 tiles)
// for bf16 and fp8-block weights. Compiled with function-level target attributes and only
// called after the runtime dispatch found AMX and the OS granted the tile state.
//
// Tiles: tmm0..3 accumulators (2 row tiles x 2 column tiles = 32 x 32 outputs), tmm4/5 the two
// 16-row activation tiles, tmm6/7 the two weight tiles of a 32-column block; every tile is 16
// rows x 64 bytes. A row's result depends only on that row of the activation tile and the
// weights, never on other rows, and the k-chunk order is fixed: batch invariant.
#include <immintrin.h>

#include <array>

// GCC 12 reports a false "may be used uninitialized" inside its own AVX-512 intrinsics headers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>

#include "engine/kernels/cpu/gemm_cpu.h"
#include "engine/quant.h"

constexpr int64_t kPrefetchBytes = 16 * 1024;  // software prefetch distance of weight streams

#define QEVAL_AMX \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16,avx512vbmi,amx-tile,amx-int8,amx-bf16")))

namespace qeval::cpu {

namespace {

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Palette 1, tiles 0-7 of 64 bytes per row; entry r (1-16) gives the accumulator and activation
// tiles (0-5) r rows and the weight tiles (6, 7) 16: a product's cost and a tile store's length
// scale with the rows, and decode has fewer than 16. Entry 16 is the full layout.
// Kept in static storage, never built on the stack: GCC 12's _tile_loadconfig macro gives
// ldtilecfg an 8-byte memory operand, so the compiler may drop stores to the rest of a local
// config as dead (it did, in an out-of-line loader: every tile then had 0 rows and the first
// tileloadd raised SIGILL).
constexpr auto kTileConfigRows = [] {
  std::array<TileConfig, 17> t{};
  for (int r = 1; r <= 16; ++r) {
    t[r].palette_id = 1;
    for (int i = 0; i < 8; ++i) {
      t[r].colsb[i] = 64;
      t[r].rows[i] = static_cast<uint8_t>(i < 6 ? r : 16);
    }
  }
  return t;
}();

}  // namespace

QEVAL_AMX void load_amx_tile_config() { _tile_loadconfig(&kTileConfigRows[16]); }

namespace {

enum class Epi { Int8Channel, Int8Block, Fp8Block, Bf16 };

thread_local AlignedBuffer<uint16_t> t_decoded;  // one decoded fp8 column block per thread

constexpr int64_t kRowsPerChunk = 128;  // fp8: activation rows kept hot in L2 while weights stream
constexpr int64_t kL2Budget = 768 * 1024;  // bytes of activations / of weights kept in L2
constexpr int64_t kL2Chunks = 64;          // K slice of the L2 blocking: 4 KiB (see below)
// 1 KiB of K: a 32-row activation slice (32 KiB) stays in L1 while the weight blocks stream past
// it. Measured against 8 chunks (kernel alone, one thread, M = 512, weights loaded with the hint
// below): channel-wise +9-26% at K = 1536, 4864 and 8960; block-wise +3-9%.
constexpr int64_t kChunksPerKBlock = 16;

thread_local AlignedBuffer<int32_t> t_spill;  // per slot (see `slots`): 4 accumulator tiles (4 KiB)
thread_local AlignedBuffer<float> t_acc;      // per slot: 32 x 32 rescaled group sums

// Computes y for rows [0, M) and 32-column blocks [nb0, nb1).
// a: activations, lda bytes per row; wb: packed weight blocks (2 KiB per 64-byte k chunk);
// n_chunks: k chunks of 64 bytes; chunks_per_group: chunks per scale group (all for no groups).
// w_e4m3 (Fp8Block only, else null): e4m3 weights in the AMX element order of `wb`, decoded per
// column block into a per-thread buffer which then plays the role of wb.
//
// Blocking: for each 32-row strip and each K block of kChunksPerKBlock chunks, all column
// blocks of [nb0, nb1) run over that K block (the activation slice is reused from L1; the
// weights stream from L2); the accumulator tiles are spilled to a per-column-block buffer
// between K blocks (exact: int32, or the very f32 values the tile held), so every row still
// sees the same chunk order and instruction sequence: bit-identical to one pass over K and
// batch invariant. Grouped schemes align K blocks to groups, so no group straddles a spill.
// Fp8Block keeps one pass over K per column block (its weights are decoded per block).
//
// What limits the channel-wise kernel (single thread, pinned, kernel alone, M = 512; measured
// with temporary harnesses): every weight tile taken from one L1-resident 2 KiB chunk reached 60%
// of the register-only peak against 36% for the real stream from L2; storing the output tiles to
// an L1 scratch instead of y gave +14% to +34% (most at K = 896) — which the engine's gate/up now
// gets from YOut pieces. Software prefetch of the next one or two weight chunks into L1
// (prefetcht0), with or without K blocks of 7-10 chunks at K = 896, measured 0-10%, within noise.

// For kN consecutive groups i (kN = 1 or 2), in order, rows [0, rows) of a 32 x 32 block:
// acc[r] += f32(sums of row r in cb + i * 1024) * (sa_row[r * stride + i] * swg[i]). cb holds the
// block's 4 accumulator tiles (2 x 2 of 16 x 16) per group, int32 (kIntSums) or f32 bits; acc is
// 32 rows of 32 floats. Per element, one fma per group in group order: folding two groups at
// once gives the bits of two single folds, with one acc load and store instead of two. The first
// group (kFirst) starts from +0 instead of reading a zero-filled acc (the same fma, so the same
// bits): kernel alone 0-17% faster. (Writing the last group's result straight to y instead of
// finish() measured 0-15% slower.)
// The rows of a full strip are unrolled with the row scale's address stepped by a pointer: the
// loop with its indices recomputed per row (and captured values re-read through references)
// took about 30 instructions per row, three times the work, and the fold runs between tile
// products whose in-order retirement bounds how many instructions can wait behind them. Against
// that loop, one process, alternating in both orders: kernel alone +20-36% at two threads
// (block-wise, M = 512, 0.5B and 1.5B shapes); with the pairs below as well, +40-47%, and
// engine int8-block prefill +16% (0.5B) and +29% (1.5B).
template <bool kIntSums, bool kFirst, int kN>
QEVAL_AMX inline __attribute__((always_inline)) void fold_groups(const int32_t* cb, float* acc, const float* sa_row,
                                                                 int64_t stride, const float* swg, int64_t rows) {
  __m512 w[kN];
  for (int i = 0; i < kN; ++i) w[i] = _mm512_set1_ps(swg[i]);
  auto row = [&](int64_t r) QEVAL_AMX __attribute__((always_inline)) {
    // sa * swg as one f32 multiply, broadcast: the same value as the scalar product.
    __m512 s[kN];
    for (int i = 0; i < kN; ++i) s[i] = _mm512_mul_ps(_mm512_set1_ps(sa_row[i]), w[i]);
    sa_row += stride;
    const int32_t* cp = cb + (r / 16) * 512 + (r % 16) * 16;
    for (int ni = 0; ni < 2; ++ni) {
      float* ap = acc + r * 32 + ni * 16;
      __m512 t = kFirst ? _mm512_setzero_ps() : _mm512_load_ps(ap);
      for (int i = 0; i < kN; ++i) {
        const __m512i raw = _mm512_load_si512(cp + i * 1024 + ni * 256);
        t = _mm512_fmadd_ps(kIntSums ? _mm512_cvtepi32_ps(raw) : _mm512_castsi512_ps(raw), s[i], t);
      }
      _mm512_store_ps(ap, t);
    }
  };
  if (rows == 32) {
#pragma GCC unroll 32
    for (int r = 0; r < 32; ++r) row(r);
  } else {
    for (int64_t r = 0; r < rows; ++r) row(r);
  }
}

// The last step of a 32 x 32 block: y rows from its sums. src: the rescaled group sums (kAcc: 32
// rows of 32 floats) or the 4 accumulator tiles (2 x 2 of 16 x 16, int32 or f32 bits), or
// (kInPlace) y itself, where the tiles were stored. int8-channel (kScale): y = f32(isum) *
// (sa[m] * sw[n]); the others take the sums as they are; then + bias (kBias). Columns past the N
// edge are masked; with nontemporal, full 64-byte-aligned rows are streamed.
// Written as a free function over values, with the y row stepped by a pointer: as lambdas reading
// the captured values through references, the rows took about 40 instructions each. Against
// them, one process, alternating in both orders: kernel alone +3-8% (channel-wise, M = 512, 256
// and 480 output columns, one and two threads); engine prefill unchanged within noise.
struct Finish {
  const void* src;
  float* y;
  int64_t ld;
  const float* sa;  // row scales from row m0 (kScale)
  __m512 sw[2], bias[2];
  __mmask16 mask[2];
  bool nontemporal;
};

template <bool kAcc, bool kScale, bool kBias, bool kInPlace = false>
QEVAL_AMX inline __attribute__((always_inline)) void finish_rows(const Finish& f, int64_t rows) {
  const __m512 sw0 = f.sw[0], sw1 = f.sw[1], b0 = f.bias[0], b1 = f.bias[1];
  const __mmask16 mk0 = f.mask[0], mk1 = f.mask[1];
  const bool nt = f.nontemporal && mk0 == 0xFFFF && mk1 == 0xFFFF;
  const auto* src = static_cast<const int32_t*>(f.src);
  float* yp = f.y;
  const int64_t ld = f.ld;
  const float* sa = f.sa;
  for (int64_t r = 0; r < rows; ++r, yp += ld) {
    const int32_t* p0 = kInPlace ? reinterpret_cast<const int32_t*>(yp)
                        : kAcc   ? src + r * 32
                                 : src + (r / 16) * 512 + (r % 16) * 16;
    const int32_t* p1 = kInPlace || kAcc ? p0 + 16 : p0 + 256;
    const __m512i raw0 = _mm512_loadu_si512(p0), raw1 = _mm512_loadu_si512(p1);
    __m512 v0, v1;
    if constexpr (kScale) {
      const __m512 s = _mm512_set1_ps(sa[r]);
      v0 = _mm512_mul_ps(_mm512_cvtepi32_ps(raw0), _mm512_mul_ps(s, sw0));
      v1 = _mm512_mul_ps(_mm512_cvtepi32_ps(raw1), _mm512_mul_ps(s, sw1));
    } else {
      v0 = _mm512_castsi512_ps(raw0);
      v1 = _mm512_castsi512_ps(raw1);
    }
    if constexpr (kBias) {  // a separate rounding, as the twin's: the builtin with a rounding
      // operand is never contracted with the multiply into an fma (GNU mode contracts plain ones)
      v0 = _mm512_add_round_ps(v0, b0, _MM_FROUND_CUR_DIRECTION);
      v1 = _mm512_add_round_ps(v1, b1, _MM_FROUND_CUR_DIRECTION);
    }
    if constexpr (kInPlace) {
      _mm512_storeu_ps(yp, v0);
      _mm512_storeu_ps(yp + 16, v1);
    } else if (nt && (reinterpret_cast<uintptr_t>(yp) & 63) == 0) {
      _mm512_stream_ps(yp, v0);
      _mm512_stream_ps(yp + 16, v1);
    } else {
      _mm512_mask_storeu_ps(yp, mk0, v0);
      _mm512_mask_storeu_ps(yp + 16, mk1, v1);
    }
  }
}

// C += A B on tiles c, a, b: int8 sums (TDPBSSD) or bf16 products in f32 (TDPBF16PS); the tile
// numbers must be constants, hence a macro. Used inside amx_gemm, where kInt8 is defined.
#define QEVAL_TILE_PRODUCT(c, a, b) \
  do {                              \
    if constexpr (kInt8)            \
      _tile_dpbssd(c, a, b);        \
    else                            \
      _tile_dpbf16ps(c, a, b);      \
  } while (0)

template <Epi kEpi>
QEVAL_AMX void amx_gemm(const uint8_t* a, int64_t lda, const uint8_t* wb, const uint8_t* w_e4m3, int64_t n_chunks,
                        int64_t chunks_per_group, int64_t groups, const float* sa,
                        const float* sw, int64_t M, int64_t N, const float* bias, const YOut& y,
                        int64_t nb0, int64_t nb1) {
  constexpr bool kGrouped = kEpi == Epi::Int8Block || kEpi == Epi::Fp8Block;
  constexpr bool kInt8 = kEpi == Epi::Int8Channel || kEpi == Epi::Int8Block;
  // Fewer than 16 rows (decode): tiles of M rows. Measured in one process, alternating: batch-1
  // fp8 decode 13-15% faster (0.5B and 1.5B shapes), bf16 about 6%.
  _tile_loadconfig(&kTileConfigRows[std::min<int64_t>(M, 16)]);
  // int32 or f32 bits of the 4 accumulator tiles; grouped: the second group of a pair (see
  // block()) from cbuf + 1024
  alignas(64) int32_t cbuf[2 * 4 * 256];
  const int64_t nblocks = nb1 - nb0;
  uint16_t* decoded = nullptr;
  if (w_e4m3) {
    if (t_decoded.size() < static_cast<size_t>(n_chunks * 1024)) t_decoded = AlignedBuffer<uint16_t>(n_chunks * 1024);
    decoded = t_decoded.data();
  }
  // K block in chunks: a whole number of groups (grouped), everything for fp8.
  int64_t kc_len = n_chunks;
  if (!w_e4m3) {
    kc_len = kGrouped ? std::max<int64_t>(1, kChunksPerKBlock / chunks_per_group) * chunks_per_group : kChunksPerKBlock;
    kc_len = std::min(kc_len, n_chunks);
    // One row tile (decode, small batches): the activation rows are tiny and stay in L1 anyway,
    // and K blocking would only add spills (4 tile stores and loads per K block).
    if (M <= 16) kc_len = n_chunks;
    // A 32-row strip of at most 32 KiB stays in L1 whole: no K blocks, so no spills. Measured in
    // one process, alternating: 0.5B int8-channel prefill +4-6% (K = 896). Block-wise has no
    // spills to save and measured the same either way.
    if (!kGrouped && lda <= 1024) kc_len = n_chunks;
  }
  const bool spill = kc_len < n_chunks && !kGrouped;
  // L2 blocking (not fp8): chunks [kc2, kc2 + l2_chunks) of a chunk of rows (<= kL2Budget of
  // activations) and of a group of column blocks (<= kL2Budget of weights) stay in L2 while every
  // strip x K block x column block of them runs, so the weights are read from L3/memory about
  // M / rows_chunk times and the activations nblocks / nb_group times, not once per strip. The
  // slice of K (l2_chunks, a whole number of K blocks) lets both chunks grow where K is long: at
  // K = 8960 the whole rows gave chunks of 64 rows and 2 column blocks. Measured with slices of
  // kL2Chunks against whole rows (kernel alone, 2 threads, M = 512, one process, alternating):
  // K = 8960 channel-wise +37-50%, block-wise +20-31%; K = 4864 -5% to +14%; 1.5B engine prefill
  // bf16 +25%, int8 +0-3%.
  const int64_t l2_chunks =
      kc_len < n_chunks ? std::min(n_chunks, std::max<int64_t>(1, kL2Chunks / kc_len) * kc_len) : n_chunks;
  const int64_t rows_chunk = std::clamp<int64_t>(kL2Budget / (l2_chunks * 64) / 32 * 32, 32, 512);
  const int64_t nb_group = std::min(nblocks, std::max<int64_t>(1, kL2Budget / (l2_chunks * 2048)));
  // Spilled tiles / rescaled sums: one slot of 4 KiB per column block of the group (fp8: per
  // column block), and per strip of the row chunk only where K is sliced, as a strip then keeps
  // them across slices. Otherwise a strip is done with its slots before the next one starts, and
  // reusing them keeps them in L2: at K = 1536 the per-strip slots took 1 MiB per thread, each
  // first touched by a write miss. One process, alternating in both orders, K = 1536: kernel
  // alone, 2 threads, M = 512, +8% channel-wise and +1% block-wise; 1.5B int8-channel engine
  // prefill +2% (within noise).
  const bool strip_slots = l2_chunks < n_chunks;
  const int64_t slots = w_e4m3 ? nblocks : (strip_slots ? rows_chunk / 32 : 1) * nb_group;
  if (spill && t_spill.size() < static_cast<size_t>(slots * 1024)) t_spill = AlignedBuffer<int32_t>(slots * 1024);
  if (kGrouped && t_acc.size() < static_cast<size_t>(slots * 1024)) t_acc = AlignedBuffer<float>(slots * 1024);

  // Small M (decode): the weights stream from memory once and the tile loads alone do not keep
  // enough requests in flight — software prefetch into L2 ahead of the loads lifted batch-1 bf16
  // decode from ~70% to ~95% of the measured read bandwidth. (Past the last block it prefetches
  // addresses beyond the weights: prefetches never fault.) Large M reuses weights from L2.
  const bool stream = M <= 16 && !w_e4m3;
  // Prefill: the weight tiles load with the non-temporal hint (TILELOADDT1). Each weight line is
  // used once per strip, and with plain loads the weight stream pushed the activation slice
  // (reused by every column block) out of L1. Kernel alone, one thread, M = 512, one process,
  // alternating: channel-wise +40-52% at K = 896 and 1536, +17% at K = 4864; block-wise 0-18%.
  // Decode keeps plain loads: fp8's decoded group is read back from L1 (4% slower with the hint).
  const bool pass_weights = M > 32;
  // acc[32 x 32] += f32(group sums in cbuf) * sa[m, g] * sw[n / 128, g], rows [m0, m0 + rows) of
  // column block nb (see fold_groups); with two, groups g and g + 1 in one pass (their sums at
  // cbuf and cbuf + 1024).
  auto rescale = [&](float* acc, int64_t m0, int64_t rows, int64_t nb, int64_t g, bool two) QEVAL_AMX {
    const float* swg = sw + (nb * 32 / kQuantBlock) * groups + g;
    const float* sa_row = sa + m0 * groups + g;
    if (two && g == 0)
      fold_groups<kInt8, true, 2>(cbuf, acc, sa_row, groups, swg, rows);
    else if (two)
      fold_groups<kInt8, false, 2>(cbuf, acc, sa_row, groups, swg, rows);
    else if (g == 0)
      fold_groups<kInt8, true, 1>(cbuf, acc, sa_row, groups, swg, rows);
    else
      fold_groups<kInt8, false, 1>(cbuf, acc, sa_row, groups, swg, rows);
  };
  // Per-column factors of column block n0, loaded once per block (masked at the N edge): weight
  // scales (channel-wise) and bias (0 when none).
  auto column_factors = [&](int64_t n0, const __mmask16* mk, __m512* swv, __m512* bv) QEVAL_AMX {
    for (int ni = 0; ni < 2; ++ni) {
      swv[ni] = kEpi == Epi::Int8Channel ? _mm512_maskz_loadu_ps(mk[ni], sw + n0 + ni * 16) : _mm512_setzero_ps();
      bv[ni] = bias ? _mm512_maskz_loadu_ps(mk[ni], bias + n0 + ni * 16) : _mm512_setzero_ps();
    }
  };
  // Writes rows [m0, m0 + rows) of the 32-column block nb (masked at the N edge), adding the bias:
  // from acc (grouped schemes) or from the sums in cb (see finish_rows).
  auto finish = [&](const int32_t* cb, const float* acc, int64_t m0, int64_t rows, int64_t nb) QEVAL_AMX {
    const int64_t n0 = nb * 32;
    const __mmask16 mk[2] = {
        static_cast<__mmask16>(N - n0 >= 16 ? 0xFFFF : (N > n0 ? (1u << (N - n0)) - 1 : 0)),
        static_cast<__mmask16>(N - n0 >= 32 ? 0xFFFF : (N > n0 + 16 ? (1u << (N - n0 - 16)) - 1 : 0))};
    __m512 swv[2], bv[2];
    column_factors(n0, mk, swv, bv);
    const Finish f{kGrouped ? static_cast<const void*>(acc) : cb, y.at(m0, n0), y.ld, sa ? sa + m0 : nullptr,
                   {swv[0], swv[1]}, {bv[0], bv[1]}, {mk[0], mk[1]}, y.nontemporal};
    if (bias)
      finish_rows<kGrouped, kEpi == Epi::Int8Channel, true>(f, rows);
    else
      finish_rows<kGrouped, kEpi == Epi::Int8Channel, false>(f, rows);
  };
  // finish() for a full 32 x 32 block whose sums were stored straight into y (non-grouped).
  auto finish_in_place = [&](int64_t m0, int64_t nb) QEVAL_AMX {
    if (kEpi != Epi::Int8Channel && !bias) return;  // bf16: the f32 sums are the output
    const int64_t n0 = nb * 32;
    const __mmask16 full[2] = {0xFFFF, 0xFFFF};
    __m512 swv[2], bv[2];
    column_factors(n0, full, swv, bv);
    float* yp = y.at(m0, n0);
    const Finish f{yp, yp, y.ld, sa ? sa + m0 : nullptr, {swv[0], swv[1]}, {bv[0], bv[1]}, {full[0], full[1]}, false};
    if (bias)
      finish_rows<false, kEpi == Epi::Int8Channel, true, true>(f, 32);
    else
      finish_rows<false, kEpi == Epi::Int8Channel, false, true>(f, 32);
  };
  // One 32-row strip x one column block x chunks [kc0, kc1).
  // wblk holds the weights of chunks [wc0, ...) of column block nb; slot is the pair's spill / acc slot.
  auto block = [&](int64_t m0, int64_t nb, int64_t kc0, int64_t kc1, const uint8_t* wblk, int64_t wc0,
                   int64_t slot) QEVAL_AMX {
    const int64_t rows = std::min<int64_t>(32, M - m0);
    const bool two_m = rows > 16;
    const uint8_t* a0 = a + m0 * lda;
    const uint8_t* a1 = a0 + 16 * lda;
    int32_t* sp = spill ? t_spill.data() + slot * 1024 : nullptr;
    float* acc = kGrouped ? t_acc.data() + slot * 1024 : nullptr;
    const int64_t n0 = nb * 32;
    const bool direct = !y.nontemporal && !kGrouped && rows == 32 && n0 + 32 <= N;
    // Direct: the tiles go to y by tile stores (pieces in cache, outputs under 1 MiB); a large
    // output (y.nontemporal) is staged in cbuf and written by finish() with non-temporal stores.
    // The tile stores of a direct block miss the cache (y is written once): fetching
    // its lines during the last K block measured 15-25% faster (int8-channel kernel alone, 0.5B
    // and 1.5B shapes, one process, alternating; prefetchw no better than prefetcht0); staging
    // in cbuf with the same prefetch, 5-10% slower than this.
    const bool prefetch_y = direct && kc1 == n_chunks;
    bool paired = false;  // grouped: the previous group's sums wait in cbuf
    for (int64_t c0 = kc0; c0 < kc1; c0 += chunks_per_group) {
      const int64_t g = c0 / chunks_per_group;
      if (sp && c0 > 0) {
        _tile_loadd(0, sp, 64);
        _tile_loadd(1, sp + 256, 64);
        _tile_loadd(2, sp + 512, 64);
        _tile_loadd(3, sp + 768, 64);
      } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
      }
      const int64_t c1 = std::min(kc1, c0 + chunks_per_group);
      // prefetch_y: the 32 rows of y the tiles go to (two lines each), spread over the chunks,
      // a row pointer stepped per row. (Indexing each line with two divisions per chunk cost
      // about as many instructions as the chunk's tile work; this measured +1-12%, kernel alone
      // with 256 output columns, one process, alternating in both orders.)
      const char* ypf = prefetch_y ? reinterpret_cast<const char*>(y.at(m0, n0)) : nullptr;
      const int64_t ystride = y.ld * 4, pf_per_chunk = prefetch_y ? (32 + (c1 - c0) - 1) / (c1 - c0) : 0;
      int64_t pf_rows = 0;
      for (int64_t c = c0; c < c1; ++c) {
        const uint8_t* bp = wblk + (c - wc0) * 2048;
        for (int64_t k = 0; k < pf_per_chunk && pf_rows < 32; ++k, ++pf_rows, ypf += ystride) {
          _mm_prefetch(ypf, _MM_HINT_T0);
          _mm_prefetch(ypf + 64, _MM_HINT_T0);
        }
        if (stream) {  // decode: weights come from memory once; keep the stream ahead in L2
          const char* pf = reinterpret_cast<const char*>(bp) + kPrefetchBytes;
          for (int l = 0; l < 2048; l += 64) _mm_prefetch(pf + l, _MM_HINT_T1);
        }
        // Order: A0, B0, C0 += A0 B0, A1, C2 += A1 B0, B1, C1 += A0 B1, C3 += A1 B1. Tile
        // registers are not renamed, so a load waits for the last product reading its tile. Each
        // weight tile (from L2, the slow loads) is read by two consecutive products, so its next
        // load has the other two products' time to arrive; the activation tiles (from L1) have
        // one. Each accumulator sees the same products in the same order as before, so the same
        // bits. Against the order A0, B0, B1, A1 (the weight tile B0 then had one product's
        // time), one process, alternating in both orders: kernel alone -4% to -1% (2 threads,
        // M = 512), engine prefill +3-5% (0.5B int8-channel and bf16, 1.5B int8-channel): no
        // difference that the noise lets through.
        _tile_loadd(4, a0 + c * 64, lda);
        if (pass_weights)
          _tile_stream_loadd(6, bp, 64);
        else
          _tile_loadd(6, bp, 64);
        QEVAL_TILE_PRODUCT(0, 4, 6);
        if (two_m) {
          _tile_loadd(5, a1 + c * 64, lda);
          QEVAL_TILE_PRODUCT(2, 5, 6);
        }
        if (pass_weights)
          _tile_stream_loadd(7, bp + 1024, 64);
        else
          _tile_loadd(7, bp + 1024, 64);
        QEVAL_TILE_PRODUCT(1, 4, 7);
        if (two_m) QEVAL_TILE_PRODUCT(3, 5, 7);
      }
      if (sp && c1 < n_chunks) {  // not done with K: park the partial sums
        _tile_stored(0, sp, 64);
        _tile_stored(1, sp + 256, 64);
        _tile_stored(2, sp + 512, 64);
        _tile_stored(3, sp + 768, 64);
        return;
      }
      if (direct) {
        // A full 32 x 32 block inside y: the tiles go straight to y (the sums, f32 or int32
        // bits) and are finished in place — measured faster than staging them in cbuf, as the
        // y lines are then fetched by one tile store each instead of by 64 vector stores.
        float* yb = y.at(m0, n0);
        const int64_t ld = y.ld;
        _tile_stored(0, yb, ld * 4);
        _tile_stored(1, yb + 16, ld * 4);
        _tile_stored(2, yb + 16 * ld, ld * 4);
        _tile_stored(3, yb + 16 * ld + 16, ld * 4);
        continue;
      }
      // Grouped: the first group of a pair waits in cbuf, the second goes to cbuf + 1024 and
      // both are folded (a last unpaired group alone).
      int32_t* dst = kGrouped && paired ? cbuf + 1024 : cbuf;
      _tile_stored(0, dst, 64);
      _tile_stored(1, dst + 256, 64);
      if (two_m) {
        _tile_stored(2, dst + 512, 64);
        _tile_stored(3, dst + 768, 64);
      }
      // The per-group rescale (fold_groups) is what block-wise adds to channel-wise: 4 tile
      // stores and 64 vectors of cvt + fma per group of 8 products. fold_groups cut its
      // instructions by two thirds, and folding groups in pairs (fold_groups<2>: one acc load
      // and store per element for two groups) measured +2-9% more (2 threads, M = 512, 0.5B
      // and 1.5B shapes, alternating in both orders); in fours, 2-12% slower than pairs. The
      // fold still costs a fifth to a quarter of the time: without it (the tile stores kept),
      // 1.26-1.40x faster, measured the same way. What it costs is work in flight: tile products
      // retire in order and slowly, so the ~128 stores per group of the fold and the tile stores
      // fill the store buffer and the next group's products wait (register-only
      // microbenchmark, ref cycles per group: products + tile stores 140, with the fold after
      // them 279-300; 128 plain vector ops, or 64 stores, alone hide behind the products).
      // Tried and not kept (one process, alternating; kernel alone unless said):
      // - a pipeline storing each group's tiles during the next group's products and folding
      //   the group before in 4-row pieces between them: 157 cycles in the microbenchmark, but
      //   in the kernel 4-15% slower with fold_groups (with the older fold loop: 0-10% faster at
      //   one thread, 4-7% slower at two, 4-5% slower in the engine);
      // - deferring the rescale by one group; with the older fold loop, folding 2, 4 or 8
      //   groups per acc load and store (-23% to +7%); 256-bit arithmetic; 32 x 16 halves
      //   alternating; int32 sums run on without per-group zeroing (the fold subtracting the
      //   previous sums); the last group's fold written straight to y; y prefetched during the
      //   last K block;
      // - a 16 x 32 kernel whose two accumulator pairs alternate by group: 15-26% of the peak,
      //   as three tile loads per two products plus the fold's loads exceed two loads per cycle.
      // 4K aliasing between cbuf and acc was ruled out (±5% at several offsets).
      if constexpr (kGrouped) {
        if (paired)
          rescale(acc, m0, rows, nb, g - 1, true);
        else if (c1 == kc1)
          rescale(acc, m0, rows, nb, g, false);
        paired = !paired && c1 < kc1;
      }
    }
    if (kc1 < n_chunks) return;
    if (direct)
      finish_in_place(m0, nb);
    else
      finish(cbuf, acc, m0, rows, nb);
  };

  if (w_e4m3 && M <= 32) {
    // One strip (decode, small batches): decode one scale group at a time (8 KiB of bf16), so the
    // decoded weights are still in L1 when the tiles load them. Same tile instruction sequence
    // per row as below: identical results. (Two column blocks at a time in tiles 0,1 and 2,3,
    // to run two accumulation chains side by side at M <= 16, measured 35% slower; decoding one
    // group ahead into a second buffer, no faster. The decode alone streams at the read
    // bandwidth; here about half the time is spent in it, waiting on its loads.)
    for (int64_t nb = nb0; nb < nb1; ++nb)
      for (int64_t c0 = 0; c0 < n_chunks; c0 += chunks_per_group) {
        const int64_t c1 = std::min(n_chunks, c0 + chunks_per_group);
        decode_e4m3_to_bf16_vbmi(w_e4m3 + (nb * n_chunks + c0) * 1024, decoded, (c1 - c0) * 1024);
        block(0, nb, c0, c1, reinterpret_cast<const uint8_t*>(decoded), c0, nb - nb0);
      }
    _tile_release();
    return;
  }
  if (w_e4m3) {
    for (int64_t mc = 0; mc < M; mc += kRowsPerChunk) {
      const int64_t mc_end = std::min(M, mc + kRowsPerChunk);
      for (int64_t nb = nb0; nb < nb1; ++nb) {
        decode_e4m3_to_bf16_vbmi(w_e4m3 + nb * n_chunks * 1024, decoded, n_chunks * 1024);
        for (int64_t m0 = mc; m0 < mc_end; m0 += 32)
          block(m0, nb, 0, n_chunks, reinterpret_cast<const uint8_t*>(decoded), 0, nb - nb0);
      }
    }
    _tile_release();
    return;
  }
  for (int64_t mc = 0; mc < M; mc += rows_chunk) {
    const int64_t mc_end = std::min(M, mc + rows_chunk);
    for (int64_t g0 = nb0; g0 < nb1; g0 += nb_group) {
      const int64_t g1 = std::min(nb1, g0 + nb_group);
      for (int64_t kc2 = 0; kc2 < n_chunks; kc2 += l2_chunks)
        for (int64_t m0 = mc; m0 < mc_end; m0 += 32)
          for (int64_t kc0 = kc2; kc0 < std::min(n_chunks, kc2 + l2_chunks); kc0 += kc_len)
            for (int64_t nb = g0; nb < g1; ++nb)
              block(m0, nb, kc0, std::min(n_chunks, kc0 + kc_len), wb + nb * n_chunks * 2048, 0,
                    (strip_slots ? (m0 - mc) / 32 * nb_group : 0) + (nb - g0));
    }
  }
  _tile_release();
}

}  // namespace

void gemm_int8_amx(const Int8Packed& p, const int8_t* qa, const float* sa, int64_t M,
                   const float* bias, const YOut& y, int64_t nb0, int64_t nb1) {
  const auto* a = reinterpret_cast<const uint8_t*>(qa);
  const auto* w = reinterpret_cast<const uint8_t*>(p.w.data());
  const int64_t n_chunks = p.kp / 64;
  if (p.channel)
    amx_gemm<Epi::Int8Channel>(a, p.kp, w, nullptr, n_chunks, n_chunks, 1, sa, p.sw.data(), M, p.n, bias, y, nb0, nb1);
  else
    amx_gemm<Epi::Int8Block>(a, p.kp, w, nullptr, n_chunks, kQuantBlock / 64, p.groups, sa, p.sw.data(), M, p.n,
                             bias, y, nb0, nb1);
  if (y.nontemporal) _mm_sfence();  // order the non-temporal stores before the pool's barrier
}

void gemm_float_amx(const FloatPacked& p, const uint16_t* xb, const float* sa, int64_t M,
                    const float* bias, const YOut& y, int64_t nb0, int64_t nb1) {
  const auto* a = reinterpret_cast<const uint8_t*>(xb);
  const auto* w = reinterpret_cast<const uint8_t*>(p.wb.data());
  const int64_t n_chunks = p.kp / 32;  // 32 bf16 = 64 bytes per chunk
  if (p.kind == FloatKind::Fp8Block)
    amx_gemm<Epi::Fp8Block>(a, p.kp * 2, nullptr, p.w8.data(), n_chunks, kQuantBlock / 32, p.groups, sa, p.sw.data(), M,
                            p.n, bias, y, nb0, nb1);
  else
    amx_gemm<Epi::Bf16>(a, p.kp * 2, w, nullptr, n_chunks, n_chunks, 1, nullptr, nullptr, M, p.n, bias, y, nb0,
                        nb1);
  if (y.nontemporal) _mm_sfence();  // order the non-temporal stores before the pool's barrier
}

}  // namespace qeval::cpu
