// measure_read_bandwidth / measure_amx_int8_peak / measure_vnni_int8_peak (see bench_reference.h).
#include "engine/bench_reference.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "engine/cpu_features.h"
#include "engine/huge_pages.h"
#include "engine/kernels/cpu/gemm_cpu.h"

namespace qeval {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

__attribute__((target("avx2"))) float sum_floats(const float* p, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
  }
  alignas(32) float l[8];
  _mm256_store_ps(l, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  return l[0] + l[1] + l[2] + l[3] + l[4] + l[5] + l[6] + l[7];
}

// TDPBSSD on four accumulator tiles fed by four operand tiles: never reloaded, or (kLoads)
// re-loaded from an L1-resident buffer before every four products.
template <bool kLoads>
__attribute__((target("amx-tile,amx-int8"))) double amx_peak_one_thread(double seconds) {
  cpu::load_amx_tile_config();
  alignas(64) int8_t src[4096];
  for (int i = 0; i < 4096; ++i) src[i] = static_cast<int8_t>(i * 37 + 11);  // non-zero operands
  _tile_loadd(4, src, 64);
  _tile_loadd(5, src, 64);
  _tile_loadd(6, src, 64);
  _tile_loadd(7, src, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  int64_t iters = 0;
  const double t0 = now_s();
  double t = 0;
  do {
    for (int i = 0; i < 1000; ++i) {
      if constexpr (kLoads) {
        _tile_loadd(4, src, 64);
        _tile_loadd(6, src + 1024, 64);
        _tile_dpbssd(0, 4, 6);
        _tile_loadd(7, src + 2048, 64);
        _tile_dpbssd(1, 4, 7);
        _tile_loadd(5, src + 3072, 64);
        _tile_dpbssd(2, 5, 6);
        _tile_dpbssd(3, 5, 7);
        continue;
      }
      _tile_dpbssd(0, 4, 6);
      _tile_dpbssd(1, 4, 7);
      _tile_dpbssd(2, 5, 6);
      _tile_dpbssd(3, 5, 7);
    }
    iters += 1000;
    t = now_s() - t0;
  } while (t < seconds);
  alignas(64) int32_t out[256];
  _tile_stored(0, out, 64);
  _tile_release();
  return static_cast<double>(iters) * 4 * 16 * 16 * 64 * 2 / t / 1e12;
}

}  // namespace

ReadProbe::ReadProbe(ThreadPool& pool, size_t bytes)
    : pool_(pool), n_(static_cast<int64_t>(bytes / sizeof(float)) / 1024 * 1024), sums_(static_cast<size_t>(pool.size())) {
  buf_ = static_cast<float*>(allocate_hugepage_aligned(static_cast<size_t>(n_) * sizeof(float)));
  std::fill(buf_, buf_ + n_, 1.0f);
}

ReadProbe::~ReadProbe() { free_hugepage_aligned(buf_, static_cast<size_t>(n_) * sizeof(float)); }

double ReadProbe::measure(int passes) {
  double best = 0;
  for (int p = 0; p < passes; ++p) {
    const double t0 = now_s();
    pool_.parallel_for(n_ / 1024, [&](int t, int64_t b, int64_t e) {
      if (b < e) sums_[static_cast<size_t>(t)] += sum_floats(buf_ + b * 1024, (e - b) * 1024);
    });
    best = std::max(best, static_cast<double>(n_) * sizeof(float) / (now_s() - t0) / 1e9);
  }
  return best;
}

double measure_read_bandwidth(ThreadPool& pool, size_t bytes, int passes) {
  return ReadProbe(pool, bytes).measure(passes);
}

double time_split_read(ThreadPool& pool, const std::vector<SplitRead>& buffers, double* sum) {
  std::vector<double> sums(static_cast<size_t>(pool.size()) * 8);  // a cache line per thread
  const double t0 = now_s();
  for (const SplitRead& b : buffers) {
    const int64_t unit = static_cast<int64_t>(b.bytes) / b.units / 4;  // floats per unit
    const float* f = static_cast<const float*>(b.data);
    pool.parallel_for_stealing(b.units, b.grain, [&](int t, int64_t u0, int64_t u1) {  // as the GEMMs split
      sums[static_cast<size_t>(t) * 8] += sum_floats(f + u0 * unit, (u1 - u0) * unit);
    });
  }
  const double t = now_s() - t0;
  double total = 0;
  for (double v : sums) total += v;
  if (sum) *sum = total;
  volatile double sink = total;  // the sums are used whether or not the caller asks
  (void)sink;
  return t;
}

namespace {

// Sum over the pool's threads of amx_peak_one_thread<kLoads>; 0 without AMX.
template <bool kLoads>
double amx_peak_all(ThreadPool& pool, double seconds) {
  if (max_kernel_level() != KernelLevel::Amx) return 0;
  std::vector<double> tops(static_cast<size_t>(pool.size()));
  pool.run_on_all([&](int t) { tops[static_cast<size_t>(t)] = amx_peak_one_thread<kLoads>(seconds); });
  double s = 0;
  for (double v : tops) s += v;
  return s;
}

// VPDPBUSD (64 MACs each) on 12 accumulator registers (12 chains cover its latency at two per
// cycle), no loads: the AVX-512 VNNI int8 peak.
__attribute__((target("avx512f,avx512vnni"))) double vnni_peak_one_thread(double seconds) {
  const __m512i a = _mm512_set1_epi32(0x05030201), b = _mm512_set1_epi32(0x01FF0203);  // non-zero operands
  __m512i c0 = _mm512_set1_epi32(0), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0,
          c9 = c0, c10 = c0, c11 = c0;
  int64_t iters = 0;
  const double t0 = now_s();
  double t = 0;
  do {
    for (int i = 0; i < 1000; ++i)
      asm volatile(
          "vpdpbusd %13, %12, %0\n\tvpdpbusd %13, %12, %1\n\tvpdpbusd %13, %12, %2\n\tvpdpbusd %13, %12, %3\n\t"
          "vpdpbusd %13, %12, %4\n\tvpdpbusd %13, %12, %5\n\tvpdpbusd %13, %12, %6\n\tvpdpbusd %13, %12, %7\n\t"
          "vpdpbusd %13, %12, %8\n\tvpdpbusd %13, %12, %9\n\tvpdpbusd %13, %12, %10\n\tvpdpbusd %13, %12, %11"
          : "+v"(c0), "+v"(c1), "+v"(c2), "+v"(c3), "+v"(c4), "+v"(c5), "+v"(c6), "+v"(c7), "+v"(c8), "+v"(c9),
            "+v"(c10), "+v"(c11)
          : "v"(a), "v"(b));
    iters += 1000;
    t = now_s() - t0;
  } while (t < seconds);
  alignas(64) int32_t out[16];  // the chains' results are used
  _mm512_store_si512(out, _mm512_add_epi32(_mm512_add_epi32(c0, c11), c5));
  volatile int32_t sink = out[0];
  (void)sink;
  return static_cast<double>(iters) * 12 * 64 * 2 / t / 1e12;
}

}  // namespace

double measure_vnni_int8_peak(ThreadPool& pool, double seconds) {
  if (!cpu_features().avx512vnni || max_kernel_level() < KernelLevel::Avx512) return 0;
  std::vector<double> tops(static_cast<size_t>(pool.size()));
  pool.run_on_all([&](int t) { tops[static_cast<size_t>(t)] = vnni_peak_one_thread(seconds); });
  double s = 0;
  for (double v : tops) s += v;
  return s;
}

double measure_amx_int8_peak(ThreadPool& pool, double seconds) { return amx_peak_all<false>(pool, seconds); }

double measure_amx_int8_loaded_peak(ThreadPool& pool, double seconds) { return amx_peak_all<true>(pool, seconds); }

}  // namespace qeval
