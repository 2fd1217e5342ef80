// Kernel benchmark: decode GEMV (M = 1) and prefill GEMM (M = 512) of the linear layers of real
// model shapes (Qwen2.5-0.5B: hidden 896, FFN 4864, 14/2 heads of 64; R1-Distill-Qwen-1.5B:
// hidden 1536, FFN 8960, 12/2 heads of 128), for every scheme and every kernel level this CPU
// has, printed as GB/s of weights and TOPS, with ratios against the scalar twin measured in the
// same run, against the read bandwidth measured here, and against the AMX-INT8 peak measured
// here (a register-only TDPBSSD loop).
//
// Usage: bench_kernels [threads=2] [layers=8] [model=0.5b|1.5b|both] [part=all|gemv|gemm]
//                      [scheme substring, e.g. int8; default all]
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "engine/cpu_features.h"
#include "engine/linear.h"

using namespace qeval;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median-of-runs timer: runs fn until `budget` seconds pass (at least `min_runs`).
template <class Fn>
double time_it(Fn fn, double budget = 0.6, int min_runs = 3) {
  std::vector<double> ts;
  const double t_end = now_s() + budget;
  while (static_cast<int>(ts.size()) < min_runs || now_s() < t_end) {
    const double t0 = now_s();
    fn();
    ts.push_back(now_s() - t0);
    if (ts.size() >= 200) break;
  }
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

// Read bandwidth: threads sum disjoint halves of a buffer far larger than the caches.
double measure_read_bw(ThreadPool& pool) {
  const size_t n = size_t{1} << 28;  // 1 GiB of floats
  std::vector<float> buf(n, 1.0f);
  std::vector<double> sums(pool.size());
  auto run = [&] {
    pool.parallel_for(static_cast<int64_t>(n / 64), [&](int t, int64_t b, int64_t e) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t i = b * 64; i < e * 64; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(&buf[i]));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(&buf[i + 8]));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(&buf[i + 16]));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(&buf[i + 24]));
      }
      alignas(32) float l[8];
      _mm256_store_ps(l, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
      sums[t] = l[0];
    });
  };
  const double t = time_it(run, 1.0);
  return n * 4.0 / t / 1e9;
}

struct alignas(64) TileConfig {
  uint8_t palette_id, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Register-only TDPBSSD loop: 16x16x64 int8 MACs per instruction.
__attribute__((target("amx-tile,amx-int8"))) double amx_int8_peak_one_thread(int64_t iters) {
  TileConfig cfg{};
  cfg.palette_id = 1;
  for (int i = 0; i < 8; ++i) {
    cfg.colsb[i] = 64;
    cfg.rows[i] = 16;
  }
  _tile_loadconfig(&cfg);
  alignas(64) int8_t src[1024] = {};
  _tile_loadd(4, src, 64);
  _tile_loadd(5, src, 64);
  _tile_loadd(6, src, 64);
  _tile_loadd(7, src, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const double t0 = now_s();
  for (int64_t i = 0; i < iters; ++i) {
    _tile_dpbssd(0, 4, 6);
    _tile_dpbssd(1, 4, 7);
    _tile_dpbssd(2, 5, 6);
    _tile_dpbssd(3, 5, 7);
  }
  alignas(64) int32_t out[256];
  _tile_stored(0, out, 64);
  const double t = now_s() - t0;
  _tile_release();
  return iters * 4.0 * 16 * 16 * 64 * 2 / t / 1e12;  // TOPS (1 MAC = 2 ops)
}

double amx_int8_peak(ThreadPool& pool) {
  std::vector<double> tops(pool.size());
  pool.run_on_all([&](int t) { tops[t] = amx_int8_peak_one_thread(2'000'000); });
  double s = 0;
  for (double v : tops) s += v;
  return s;
}

struct Shape {
  const char* name;
  int64_t n, k;
};

struct Model {
  const char* name;
  std::vector<Shape> linears;  // one transformer layer
};

const Model kModels[] = {
    {"qwen2.5-0.5b",
     {{"q", 896, 896}, {"k", 128, 896}, {"v", 128, 896}, {"o", 896, 896},
      {"gate", 4864, 896}, {"up", 4864, 896}, {"down", 896, 4864}}},
    {"r1-distill-qwen-1.5b",
     {{"q", 1536, 1536}, {"k", 256, 1536}, {"v", 256, 1536}, {"o", 1536, 1536},
      {"gate", 8960, 1536}, {"up", 8960, 1536}, {"down", 1536, 8960}}},
};

struct Variant {
  QuantScheme scheme;
  ComputeType compute;
  const char* name;
};
const Variant kVariants[] = {
    {QuantScheme::None, ComputeType::BF16, "bf16"},
    {QuantScheme::Fp8Block, ComputeType::BF16, "fp8-block"},
    {QuantScheme::Int8Block, ComputeType::BF16, "int8-block"},
    {QuantScheme::Int8Channel, ComputeType::BF16, "int8-channel"},
    {QuantScheme::None, ComputeType::F32, "f32"},
};

std::vector<float> random_vec(size_t n, uint32_t seed, float sd) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::unique_ptr<Linear> build(const std::vector<float>& w, const Shape& s, const Variant& v, KernelLevel level) {
  TensorView t;
  t.name = s.name;
  t.dtype = DType::F32;
  t.shape = {s.n, s.k};
  t.data = w.data();
  t.nbytes = w.size() * 4;
  set_kernel_level_override(level);
  auto l = make_linear(t, nullptr, nullptr, v.scheme, v.compute);
  set_kernel_level_override(std::nullopt);
  return l;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int layers = argc > 2 ? std::atoi(argv[2]) : 8;
  const std::string which = argc > 3 ? argv[3] : "both";
  const std::string part = argc > 4 ? argv[4] : "all";
  const std::string scheme_filter = argc > 5 ? argv[5] : "";
  auto skip_variant = [&](const Variant& v) { return std::string(v.name).find(scheme_filter) == std::string::npos; };
  ThreadPool pool(threads);
  const KernelLevel top = max_kernel_level();
  std::printf("threads %d, layers %d, best kernel level: %s\n", threads, layers, kernel_level_name(top));
  const double bw = measure_read_bw(pool);
  std::printf("read bandwidth (1 GiB stream, %d threads): %.1f GB/s\n", threads, bw);
  double peak = 0;
  if (top == KernelLevel::Amx) {
    peak = amx_int8_peak(pool);
    std::printf("AMX-INT8 peak (register-only TDPBSSD, %d threads): %.2f TOPS (%.2f per thread)\n", threads,
                peak, peak / threads);
  }

  std::vector<KernelLevel> levels;
  for (KernelLevel l : {KernelLevel::Ref, KernelLevel::Avx2, KernelLevel::Avx512, KernelLevel::Amx})
    if (static_cast<int>(l) <= static_cast<int>(top)) levels.push_back(l);

  for (const Model& model : kModels) {
    if (which != "both" && std::string(model.name).find(which) == std::string::npos) continue;
    std::vector<std::vector<float>> wf;
    for (size_t i = 0; i < model.linears.size(); ++i)
      wf.push_back(random_vec(model.linears[i].n * model.linears[i].k, 1000 + i, 0.02f));
    std::vector<float> x = random_vec(512 * 8960, 7, 1.0f), y(512 * 8960);
    if (part != "gemm") {
    std::printf("\n== %s: decode GEMV (M=1) over %d layers of q,k,v,o,gate,up,down ==\n", model.name, layers);
    std::printf("%-13s %-7s %10s %9s %9s %9s\n", "scheme", "level", "MB/layer", "GB/s", "vs ref", "vs bw");
    for (const Variant& v : kVariants) {
      if (skip_variant(v)) continue;
      double ref_gbs = 0;
      for (KernelLevel level : levels) {
        // Scalar twin: one layer (it is slow); fast paths: `layers` layers so weights exceed caches.
        const int n_layers = level == KernelLevel::Ref ? 1 : layers;
        std::vector<std::unique_ptr<Linear>> ls;
        size_t bytes = 0;
        for (int l = 0; l < n_layers; ++l)
          for (size_t i = 0; i < model.linears.size(); ++i) {
            ls.push_back(build(wf[i], model.linears[i], v, level));
            bytes += ls.back()->weight_bytes();
          }
        const double t = time_it([&] {
          for (auto& l : ls) l->forward(x.data(), 1, y.data(), pool);
        }, level == KernelLevel::Ref ? 0.3 : 1.0, level == KernelLevel::Ref ? 1 : 3);
        const double gbs = bytes / t / 1e9;
        if (level == KernelLevel::Ref) ref_gbs = gbs;
        std::printf("%-13s %-7s %10.2f %9.2f %8.1fx %8.0f%%\n", v.name, kernel_level_name(level),
                    bytes / 1e6 / n_layers, gbs, gbs / ref_gbs, 100 * gbs / bw);
      }
    }

    }
    if (part == "gemv") continue;
    std::printf("\n== %s: prefill GEMM (M=512), per linear shape ==\n", model.name);
    std::printf("%-13s %-5s %-7s %6s %6s %9s %9s %9s\n", "scheme", "shape", "level", "N", "K", "TOPS", "vs ref",
                "vs peak");
    for (const Variant& v : kVariants) {
      if (skip_variant(v)) continue;
      for (size_t i : {size_t{0}, size_t{4}, size_t{6}}) {  // q (square), gate (wide), down (deep)
        const Shape& s = model.linears[i];
        double ref_tops = 0;
        for (KernelLevel level : levels) {
          auto l = build(wf[i], s, v, level);
          // The scalar twin runs 8 rows (its cost is linear in M); fast paths run 512.
          const int64_t M = level == KernelLevel::Ref ? 8 : 512;
          const double t = time_it([&] { l->forward(x.data(), M, y.data(), pool); },
                                   level == KernelLevel::Ref ? 0.2 : 0.6, level == KernelLevel::Ref ? 1 : 3);
          const double tops = 2.0 * M * s.n * s.k / t / 1e12;
          if (level == KernelLevel::Ref) ref_tops = tops;
          std::printf("%-13s %-5s %-7s %6lld %6lld %9.3f %8.0fx %8.0f%%\n", v.name, s.name, kernel_level_name(level),
                      static_cast<long long>(s.n), static_cast<long long>(s.k), tops, tops / ref_tops,
                      peak > 0 ? 100 * tops / peak : 0.0);
        }
      }
    }
  }
  return 0;
}
