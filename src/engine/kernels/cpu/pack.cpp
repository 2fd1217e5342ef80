// Weight packing (once, at load) and the level dispatchers of the fast CPU kernels.
#include <algorithm>
#include <vector>

#include "core/error.h"
#include "engine/kernels/cpu/gemm_cpu.h"
#include "engine/quant.h"

namespace qeval::cpu {

namespace {

// Byte offset of int8 weight (n, k) in the VNNI-block layout (see Int8Packed).
inline size_t int8_offset(int64_t n, int64_t k, int64_t kp) {
  const int64_t t = n / 16, c = k / 64;
  return static_cast<size_t>((((t / 2) * (kp / 64) + c) * 2 + t % 2) * 1024 + ((k % 64) / 4) * 64 +
                             (n % 16) * 4 + k % 4);
}

// Element offset of bf16 weight (n, k) in the AMX-BF16 block layout (see FloatPacked).
inline size_t bf16_amx_offset(int64_t n, int64_t k, int64_t kp) {
  const int64_t t = n / 16, c = k / 32;
  return static_cast<size_t>((((t / 2) * (kp / 32) + c) * 2 + t % 2) * 512 + ((k % 32) / 2) * 32 +
                             (n % 16) * 2 + k % 2);
}

// Element offset of (n, k) in the f32 panel layout [np/16][kp][16].
inline size_t panel_offset(int64_t n, int64_t k, int64_t kp) {
  return static_cast<size_t>(((n / 16) * kp + k) * 16 + n % 16);
}

// Element offset of bf16 weight (n, k) in the bf16 panel layout (see FloatPacked): rows of 32
// columns, column c of a block at 2 (c % 16) + c / 16.
inline size_t bf16_panel_offset(int64_t n, int64_t k, int64_t kp) {
  return static_cast<size_t>(((n / 32) * kp + k) * 32 + (n % 16) * 2 + (n % 32) / 16);
}

// Byte offset of e4m3 weight (n, k) in the e4m3 panel layout: rows k, k + 1 (k even) of a block
// are one 64-byte unit holding the 64 elements e = 32 (k % 2) + (bf16 panel position) in the
// order the kernel's byte unpack (unpacklo/hi_epi8 within 128-bit lanes) turns into elements
// 0-63: e in [8 L, 8 L + 8) at bytes 16 L + 0-7 and e in [32 + 8 L, 40 + 8 L) at 16 L + 8-15.
inline size_t e4m3_panel_offset(int64_t n, int64_t k, int64_t kp) {
  const int64_t e = (k % 2) * 32 + (n % 16) * 2 + (n % 32) / 16;
  const int64_t pos = (e % 32) / 8 * 16 + (e / 32) * 8 + e % 8;
  return static_cast<size_t>(((n / 32) * kp + k - k % 2) * 32 + pos);
}

}  // namespace

Int8Packed pack_int8(const int8_t* qw, const float* sw, int64_t N, int64_t K, bool channel) {
  Int8Packed p;
  p.n = N;
  p.k = K;
  p.channel = channel;
  p.np = round_up(N, 32);
  p.kp = round_up(K, channel ? 64 : kQuantBlock);
  p.groups = channel ? 1 : n_groups(K);
  p.w = AlignedBuffer<int8_t>(static_cast<size_t>(p.np * p.kp));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const int8_t v = qw[n * K + k];
      p.w[int8_offset(n, k, p.kp)] = v;
      p.has_minus128 |= v == -128;
    }
  if (channel) {
    p.sw = AlignedBuffer<float>(static_cast<size_t>(p.np));
    std::copy(sw, sw + N, p.sw.data());
  } else {
    const size_t ns = static_cast<size_t>(n_groups(N) * p.groups);
    p.sw = AlignedBuffer<float>(ns);
    std::copy(sw, sw + ns, p.sw.data());
  }
  return p;
}

FloatPacked pack_f32(const float* w, int64_t N, int64_t K) {
  FloatPacked p;
  p.kind = FloatKind::F32;
  p.n = N;
  p.k = K;
  p.np = round_up(N, 32);
  p.kp = K;
  p.wf = AlignedBuffer<float>(static_cast<size_t>(p.np * p.kp));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) p.wf[panel_offset(n, k, p.kp)] = w[n * K + k];
  return p;
}

namespace {

// Shared by pack_bf16 / pack_fp8: `get(n, k)` returns the bf16 bits of element (n, k).
template <class Get>
void fill_bf16(FloatPacked& p, Get get) {
  p.wb = AlignedBuffer<uint16_t>(static_cast<size_t>(p.np * p.kp));
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t k = 0; k < p.k; ++k)
      p.wb[p.amx ? bf16_amx_offset(n, k, p.kp) : bf16_panel_offset(n, k, p.kp)] = get(n, k);
}

}  // namespace

FloatPacked pack_bf16(const uint16_t* w, int64_t N, int64_t K, bool amx) {
  FloatPacked p;
  p.kind = FloatKind::Bf16;
  p.amx = amx;
  p.n = N;
  p.k = K;
  p.np = round_up(N, 32);
  p.kp = amx ? round_up(K, 32) : K;
  fill_bf16(p, [&](int64_t n, int64_t k) { return w[n * K + k]; });
  return p;
}

FloatPacked pack_fp8(const uint8_t* w, const float* sw, int64_t N, int64_t K, KernelLevel level) {
  const bool amx = level == KernelLevel::Amx;
  FloatPacked p;
  p.kind = FloatKind::Fp8Block;
  p.amx = amx;
  p.e4m3 = level == KernelLevel::Avx512 && cpu_features().avx512vbmi;
  p.n = N;
  p.k = K;
  p.np = round_up(N, 32);
  p.kp = round_up(K, kQuantBlock);
  p.groups = n_groups(K);
  if (amx) {  // e4m3 bytes in AMX element order; the kernel decodes them per column block
    p.w8 = AlignedBuffer<uint8_t>(static_cast<size_t>(p.np * p.kp));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) p.w8[bf16_amx_offset(n, k, p.kp)] = w[n * K + k];
  } else if (p.e4m3) {
    p.w8 = AlignedBuffer<uint8_t>(static_cast<size_t>(p.np * p.kp));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) p.w8[e4m3_panel_offset(n, k, p.kp)] = w[n * K + k];
  } else {
    // Every finite e4m3 value is a bf16 value (3 mantissa bits, exponents 2^-9..2^8): exact.
    fill_bf16(p, [&](int64_t n, int64_t k) { return bf16_from_f32(e4m3_to_f32(w[n * K + k])); });
  }
  const size_t ns = static_cast<size_t>(n_groups(N) * p.groups);
  p.sw = AlignedBuffer<float>(ns);
  std::copy(sw, sw + ns, p.sw.data());
  return p;
}

namespace {

// Runs fn(nb0, nb1) over the 32-column blocks [0, nblocks) in pieces of a few blocks: each
// thread takes the pieces of its own contiguous share in order, then helps with the far ends of
// the others' (ThreadPool::parallel_for_stealing). Balanced: on a shared machine one core is
// often slowed by other load, and with fixed halves the other then waits (about 15% of the
// thread time of a 0.5B prefill); pieces from one shared counter instead (measured in one
// process, alternating with fixed halves: 0.5B prefill +8-23% int8-channel, +10-40% bf16, 1.5B
// fp8-block decode +7-13%) scatter each thread's reads, so its weight stream restarts at every
// piece. Measured in one process, alternating with the shared counter (Zen 5, 2 threads,
// prompt 64, 8-12 rounds, with by_pieces below): decode +3-4% for every scheme at 0.5B
// (int8-channel, int8-block, fp8-block, bf16) and +4-5% at 1.5B (int8-block, bf16); prefill
// unchanged or better. A block's result does not depend on how blocks are grouped or which
// thread runs them, so the output is the same bits.
template <class Fn>
void for_column_blocks(ThreadPool& pool, int64_t nblocks, Fn fn) {
  pool.parallel_for_stealing(nblocks, column_block_grain(nblocks, pool.size()),
                             [&](int, int64_t b, int64_t e) { fn(b, e); });
}

// An int8 product's column blocks [nb0, nb1) into y, whichever the kernel family. asum: what
// the AVX-512 kernel needs of the activations (act_sums), found once per call.
struct Int8Call {
  KernelLevel level;
  const Int8Packed& p;
  const int8_t* qa;
  const float* sa;
  int64_t M;
  const float* bias;
  std::vector<int32_t> asum;

  Int8Call(KernelLevel level, const Int8Packed& p, const int8_t* qa, const float* sa, int64_t M, const float* bias)
      : level(level), p(p), qa(qa), sa(sa), M(M), bias(bias) {
    if (level != KernelLevel::Amx && level != KernelLevel::Avx512 && level != KernelLevel::Avx2)
      fail("gemm_int8: no fast kernel at level {}", kernel_level_name(level));
    // A lone row over a weight without -128 is summed in signed form (row_signed in avx512.cpp)
    // and reads no sums: batch-1 decode skips them.
    if (level == KernelLevel::Avx512 && (M > 1 || p.has_minus128)) {
      asum.resize(static_cast<size_t>(M * p.groups));
      act_sums_avx512(qa, M, p.kp, p.groups, asum.data());
    }
  }
  void operator()(const YOut& y, int64_t nb0, int64_t nb1) const {
    switch (level) {
      case KernelLevel::Amx: gemm_int8_amx(p, qa, sa, M, bias, y, nb0, nb1); break;
      case KernelLevel::Avx512: gemm_int8_avx512(p, qa, sa, asum.data(), M, bias, y, nb0, nb1); break;
      default: gemm_int8_avx2(p, qa, sa, M, bias, y, nb0, nb1); break;
    }
  }
};

// Column blocks [nb0, nb1) of a float GEMM into y, whichever the kernel family.
void float_blocks(KernelLevel level, const FloatPacked& p, const uint16_t* xb, const float* xf, const float* sa,
                  int64_t M, const float* bias, const YOut& y, int64_t nb0, int64_t nb1) {
  if (p.amx) {
    if (level != KernelLevel::Amx) fail("gemm_float: AMX-packed weight at level {}", kernel_level_name(level));
    gemm_float_amx(p, xb, sa, M, bias, y, nb0, nb1);
    return;
  }
  if (p.e4m3 && level != KernelLevel::Avx512) fail("gemm_float: e4m3 panels at level {}", kernel_level_name(level));
  auto fn = level >= KernelLevel::Avx512 ? &gemm_float_avx512
            : level == KernelLevel::Avx2 ? &gemm_float_avx2
                                         : nullptr;
  if (!fn) fail("gemm_float: no fast kernel at level {}", kernel_level_name(level));
  fn(p, xf, sa, M, bias, y, 2 * nb0, 2 * nb1);  // pairs of 16-column panels
}

// An output of 1 MiB or more is written past the caches: a plain store first reads the line
// (read-for-ownership) and the consumer finds it out of L2 anyway. Measured in one process,
// alternating (AMX, prefill 512): kernel alone +10-26% at 1 thread and up to +77% at 2 threads
// (N = K = 896); engine prefill +2-5% for bf16, int8-channel and int8-block, 0.5B and 1.5B.
bool large_output(int64_t M, int64_t N) { return M * N * 4 >= (int64_t{1} << 20); }

thread_local AlignedBuffer<float> t_piece;  // gemm_*_pieces: one piece of output columns

// Pieces of whole grain units, each computed into the calling thread's scratch and handed on.
template <class Blocks>
void by_pieces(ThreadPool& pool, int64_t nblocks, int64_t M, int64_t grain, const PieceFn& done, Blocks blocks) {
  grain = std::max<int64_t>(1, grain);
  const int64_t ld = 32 * grain;
  auto body = [&](int, int64_t b, int64_t e) {
    if (t_piece.size() < static_cast<size_t>(M * ld)) t_piece = AlignedBuffer<float>(M * ld);
    for (int64_t u = b; u < e; ++u) {
      const int64_t nb0 = u * grain, nb1 = std::min(nblocks, nb0 + grain);
      blocks(YOut{t_piece.data(), ld, nb0 * 32}, nb0, nb1);
      done(nb0, nb1, t_piece.data(), ld);
    }
  };
  pool.parallel_for_stealing((nblocks + grain - 1) / grain, 1, body);  // see for_column_blocks
}

}  // namespace

void gemm_int8(KernelLevel level, const Int8Packed& p, const int8_t* qa, const float* sa, int64_t M,
               const float* bias, float* y, ThreadPool& pool) {
  const Int8Call call(level, p, qa, sa, M, bias);
  const YOut out{y, p.n, 0, large_output(M, p.n)};
  for_column_blocks(pool, p.np / 32, [&](int64_t b, int64_t e) { call(out, b, e); });
}

void gemm_int8_pieces(KernelLevel level, const Int8Packed& p, const int8_t* qa, const float* sa, int64_t M,
                      const float* bias, int64_t grain, const PieceFn& done, ThreadPool& pool) {
  const Int8Call call(level, p, qa, sa, M, bias);
  by_pieces(pool, p.np / 32, M, grain, done, [&](const YOut& out, int64_t b, int64_t e) { call(out, b, e); });
}

void gemm_float(KernelLevel level, const FloatPacked& p, const uint16_t* xb, const float* xf,
                const float* sa, int64_t M, const float* bias, float* y, ThreadPool& pool) {
  const YOut out{y, p.n, 0, large_output(M, p.n)};
  // Whole blocks of 32 columns (pairs of panels), so threads never share a cache line of y.
  for_column_blocks(pool, p.np / 32,
                    [&](int64_t b, int64_t e) { float_blocks(level, p, xb, xf, sa, M, bias, out, b, e); });
}

void gemm_float_pieces(KernelLevel level, const FloatPacked& p, const uint16_t* xb, const float* xf,
                       const float* sa, int64_t M, const float* bias, int64_t grain, const PieceFn& done,
                       ThreadPool& pool) {
  by_pieces(pool, p.np / 32, M, grain, done, [&](const YOut& out, int64_t b, int64_t e) {
    float_blocks(level, p, xb, xf, sa, M, bias, out, b, e);
  });
}

}  // namespace qeval::cpu
