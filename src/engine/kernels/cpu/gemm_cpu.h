// Fast CPU kernels of the linear layers, with weights packed once at load time:
//   INT8 (block 128x128 or per channel): AMX-INT8 tiles, AVX-512 VNNI, AVX2 — exact int32 sums,
//     bit-identical to the scalar twins in kernels/ref.
//   Float (f32, bf16, fp8 block): AMX-BF16 tiles for bf16 and fp8 (e4m3 -> bf16 is exact, and so
//     are products of two bf16 values in f32); AVX-512 / AVX2 FMA "panel" kernels for f32 and as
//     the non-AMX path of bf16/fp8 — those follow the scalar twin's sequential fma order exactly.
// Every kernel computes each output row with the same instruction sequence whatever M and
// whichever other rows are in the batch, so results are batch invariant (see gemm_ref.h for the
// per-row accumulation order). Work is split over N (column blocks of 32) on the ThreadPool.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "core/thread_pool.h"
#include "engine/cpu_features.h"
#include "engine/huge_pages.h"

namespace qeval::cpu {

// Owning, zero-initialised, 64-byte-aligned array (tile loads and vector loads want alignment).
template <class T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t n) : n_(n) {
    if (n == 0) return;
    p_ = static_cast<T*>(qeval::allocate_hugepage_aligned(bytes()));
    std::memset(static_cast<void*>(p_), 0, bytes());  // after the madvise: faults in huge pages
  }
  ~AlignedBuffer() { qeval::free_hugepage_aligned(p_, bytes()); }
  AlignedBuffer(AlignedBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }
  T& operator[](size_t i) { return p_[i]; }
  const T& operator[](size_t i) const { return p_[i]; }

 private:
  size_t bytes() const { return (n_ * sizeof(T) + 63) / 64 * 64; }

  T* p_ = nullptr;
  size_t n_ = 0;
};

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// ---- INT8 ------------------------------------------------------------------------------

// Packed int8 weight for AMX / AVX-512 VNNI / AVX2. Layout ("VNNI blocks"): column blocks of 32
// (two 16-column tiles), K in chunks of 64; each (block, chunk, tile) is one 1 KiB AMX B tile:
// 16 rows of k-quads, each row [16 columns][4 consecutive k] int8. Padding is zero.
struct Int8Packed {
  int64_t n = 0, k = 0;    // logical N, K
  int64_t np = 0, kp = 0;  // padded: np % 32 == 0, kp % 128 == 0 (block) / % 64 == 0 (channel)
  bool channel = false;    // per-channel scales (else 128x128 block scales)
  int64_t groups = 1;      // K groups with their own scale: ceil(K/128) (block) or 1 (channel)
  AlignedBuffer<int8_t> w;        // np * kp bytes, layout above
  AlignedBuffer<float> sw;        // block: [ceil(N/128), groups]; channel: [np] (0 past N)
  bool has_minus128 = false;      // some weight is -128 (a checkpoint's; ours clamp to ±127)
  size_t bytes() const { return w.size() + 4 * sw.size(); }
};

// Packs qw [N, K] int8 (row-major) with scales sw (block [ceil(N/128), ceil(K/128)] or channel [N]).
Int8Packed pack_int8(const int8_t* qw, const float* sw, int64_t N, int64_t K, bool channel);

// Where a kernel writes output element (m, n): data[m * ld + n - col0]. The whole output
// [M, N] is {y, N, 0}; the columns of a piece [col0, ...) can go to a scratch of row stride ld.
struct YOut {
  float* data;
  int64_t ld, col0;
  // Whole rows of 16 aligned columns may be written with non-temporal stores (the AMX kernels'
  // choice for an output too large to stay in cache; pieces stay in cache for their consumer).
  bool nontemporal = false;
  float* at(int64_t m, int64_t n) const { return data + m * ld + (n - col0); }
};

// Padded activation row count the int8/bf16 AMX kernels may read (tiles of 16 rows).
inline int64_t act_rows(int64_t M) { return round_up(M, 16); }

// y[M, N] (row stride N) = dequantised (qa · W^T) (+ bias[N] if not null).
// qa: [act_rows(M), p.kp] int8, zero past K and past M; sa: [M, groups] (block) or [M] (channel).
// level: Amx, Avx512 or Avx2.
void gemm_int8(KernelLevel level, const Int8Packed& p, const int8_t* qa, const float* sa, int64_t M,
               const float* bias, float* y, ThreadPool& pool);

// ---- float (f32 / bf16 / fp8 block) ------------------------------------------------------

enum class FloatKind { F32, Bf16, Fp8Block };

// Packed float weight. amx: bf16 "VNNI blocks" (column blocks of 32, K chunks of 32, 1 KiB tiles
// of 16 k-pairs x [16 columns][2 k]); an Fp8Block weight keeps its e4m3 bytes in that element
// order (w8, half the bytes to stream) and the kernel decodes one column block at a time to bf16
// (exact). Otherwise "panels", read one k row of a 32-column block at a time: F32 as
// [np/16][kp][16] f32 (two 16-column panels per block); Bf16 and Fp8Block (decoded exactly to
// bf16 at pack time) as [np/32][kp][32] bf16 bits, one 64-byte row per k, column c of the block
// at element 2 (c % 16) + c / 16, so a row splits into columns 0-15 (each 32-bit lane's low
// half) and 16-31 (high halves) with a shift and a mask, and a GEMV streams one sequential row
// per k (measured on Zen 5: 0.5B decode GEMV 42 -> 51 GB/s, read bandwidth 60-70). With e4m3
// (AVX-512 VBMI), an Fp8Block weight keeps its e4m3 bytes in that element order instead (w8, 32
// bytes per row), decoded by the kernel. Padding is zero.
struct FloatPacked {
  FloatKind kind = FloatKind::F32;
  bool amx = false;
  bool e4m3 = false;                     // Fp8Block panels kept as e4m3 bytes (w8): AVX-512 VBMI only
  int64_t n = 0, k = 0, np = 0, kp = 0;  // np % 32 == 0; kp % 128 (fp8) / % 32 (amx) / == k
  int64_t groups = 1;                    // Fp8Block: ceil(K/128)
  AlignedBuffer<float> wf;               // F32 panels
  AlignedBuffer<uint16_t> wb;            // bf16 (panels or AMX blocks)
  AlignedBuffer<uint8_t> w8;             // Fp8Block + amx / e4m3: e4m3 bytes in AMX block / panel order
  AlignedBuffer<float> sw;               // Fp8Block: [ceil(N/128), groups]
  size_t bytes() const { return 4 * wf.size() + 2 * wb.size() + w8.size() + 4 * sw.size(); }
};

// w [N, K] as f32 values (F32), bf16 bits (Bf16) or e4m3 bits (Fp8Block, with sw
// [ceil(N/128), ceil(K/128)]). amx selects the AMX layout (Bf16 / Fp8Block only). pack_fp8 packs
// for the kernels of `level`: AMX blocks of e4m3 at Amx; e4m3 panels at Avx512 on a CPU with
// VBMI (half the bytes of bf16 to stream; the kernel decodes them); bf16 panels otherwise.
FloatPacked pack_f32(const float* w, int64_t N, int64_t K);
FloatPacked pack_bf16(const uint16_t* w, int64_t N, int64_t K, bool amx);
FloatPacked pack_fp8(const uint8_t* w, const float* sw, int64_t N, int64_t K, KernelLevel level);

// y[M, N] (+ bias). Activations:
//   amx:   xb [act_rows(M), p.kp] bf16 bits (x rounded to bf16, or decoded e4m3), zero padded;
//   panel: xf [M, p.kp] f32 (x, bf16-rounded x, or decoded e4m3 values), zero padded.
// sa: Fp8Block [M, groups], else null. level: Avx2 / Avx512 (panel) or Amx (bf16 / fp8 only).
void gemm_float(KernelLevel level, const FloatPacked& p, const uint16_t* xb, const float* xf,
                const float* sa, int64_t M, const float* bias, float* y, ThreadPool& pool);

// Configures all 8 AMX tiles as 16 rows x 64 bytes (the layout every AMX kernel here uses).
// Call only at kernel level Amx.
void load_amx_tile_config();

// e4m3 bytes -> bf16 bits, bf16_from_f32(e4m3_to_f32(b)) for every byte (exact; NaN gives that
// NaN), with the AVX-512 VBMI byte tables of the panel decode; the AMX fp8 path decodes weights
// and activations with it. Needs AVX-512 (BW, VNNI) and VBMI: every AMX CPU has them.
void decode_e4m3_to_bf16_vbmi(const uint8_t* src, uint16_t* dst, int64_t n);

// The same in pieces of whole units of `grain` column blocks of 32 (a piece starts on a multiple
// of grain and holds at most grain blocks; the last may be shorter), taken by whichever thread is
// free: each piece is written to a per-thread scratch [M, 32 * grain] and handed, still in
// cache, to done(nb0, nb1, scratch, ld) on that thread; nothing is written to a full [M, N]
// output. For an epilogue that consumes the columns at once (the SwiGLU of a fused gate/up).
using PieceFn = std::function<void(int64_t nb0, int64_t nb1, const float* ys, int64_t ld)>;
void gemm_int8_pieces(KernelLevel level, const Int8Packed& p, const int8_t* qa, const float* sa, int64_t M,
                      const float* bias, int64_t grain, const PieceFn& done, ThreadPool& pool);
void gemm_float_pieces(KernelLevel level, const FloatPacked& p, const uint16_t* xb, const float* xf,
                       const float* sa, int64_t M, const float* bias, int64_t grain, const PieceFn& done,
                       ThreadPool& pool);

// The pieces gemm_int8 / gemm_float hand out to the pool's threads: this many 32-column blocks
// (the last piece shorter), split by ThreadPool::parallel_for_stealing.
inline int64_t column_block_grain(int64_t nblocks, int threads) {
  return std::clamp<int64_t>(nblocks / (4 * threads), 1, 16);
}

// ---- per-ISA entry points (used by the dispatchers above) --------------------------------
// Each computes column blocks [nb0, nb1) of 32 (int8, amx float) or tiles of 16 (panels).
void gemm_int8_amx(const Int8Packed& p, const int8_t* qa, const float* sa, int64_t M,
                   const float* bias, const YOut& y, int64_t nb0, int64_t nb1);
// 128 * the sum of each of M rows of activation codes (row stride kp) over each of its G groups
// (kp / G wide), [M, G]: the AVX-512 int8 kernel's correction for its u8 weights (w + 128); it
// reads none (asum may be null) for a lone row over a weight without -128.
void act_sums_avx512(const int8_t* qa, int64_t M, int64_t kp, int64_t G, int32_t* out);
void gemm_int8_avx512(const Int8Packed& p, const int8_t* qa, const float* sa, const int32_t* asum, int64_t M,
                      const float* bias, const YOut& y, int64_t nb0, int64_t nb1);
void gemm_int8_avx2(const Int8Packed& p, const int8_t* qa, const float* sa, int64_t M,
                    const float* bias, const YOut& y, int64_t nb0, int64_t nb1);
void gemm_float_amx(const FloatPacked& p, const uint16_t* xb, const float* sa, int64_t M,
                    const float* bias, const YOut& y, int64_t nb0, int64_t nb1);
void gemm_float_avx512(const FloatPacked& p, const float* xf, const float* sa, int64_t M,
                       const float* bias, const YOut& y, int64_t nt0, int64_t nt1);
void gemm_float_avx2(const FloatPacked& p, const float* xf, const float* sa, int64_t M,
                     const float* bias, const YOut& y, int64_t nt0, int64_t nt1);

}  // namespace qeval::cpu
