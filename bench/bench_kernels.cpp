// Kernel benchmark: decode GEMV (M = 1) and prefill GEMM (M = 512) of the linear layers of real
// model shapes (Qwen2.5-0.5B: hidden 896, FFN 4864, 14/2 heads of 64; R1-Distill-Qwen-1.5B:
// hidden 1536, FFN 8960, 12/2 heads of 128), for every scheme and every kernel level this CPU
// has, printed as GB/s of weights and TOPS, with ratios against the scalar twin measured in the
// same run, against the read bandwidth measured here, against the int8 peak measured here (a
// register-only TDPBSSD loop; VPDPBUSD on a machine without AMX), and (GEMV) against a plain
// summing loop over the same bytes split into the same pieces, alternated with the GEMVs: how
// close they come to what the memory system gives that structure of parallel sections at the
// time.
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

#include "core/median.h"
#include "core/thread_pool.h"
#include "engine/bench_reference.h"
#include "engine/huge_pages.h"
#include "engine/kernels/cpu/gemm_cpu.h"
#include "engine/quant.h"
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
  return median(ts);
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
  const double bw = measure_read_bandwidth(pool, size_t{1} << 30);
  std::printf("read bandwidth (1 GiB stream, %d threads): %.1f GB/s\n", threads, bw);
  // The int8 peak the prefill GEMMs are held against: AMX-INT8, or AVX-512 VNNI on a machine
  // without AMX (its best int8 kernel level).
  const bool amx = top == KernelLevel::Amx;
  const char* peak_name = amx ? "AMX" : "VNNI";
  auto int8_peak = [&](double seconds) {
    return amx ? measure_amx_int8_peak(pool, seconds) : measure_vnni_int8_peak(pool, seconds);
  };
  const double peak = int8_peak(0.2);
  if (peak > 0)
    std::printf("%s int8 peak (register-only %s, %d threads): %.2f TOPS (%.2f per thread)\n",
                amx ? "AMX-INT8" : "AVX-512 VNNI", amx ? "TDPBSSD" : "VPDPBUSD", threads, peak, peak / threads);

  std::vector<KernelLevel> levels;
  for (KernelLevel l : {KernelLevel::Ref, KernelLevel::Avx2, KernelLevel::Avx512, KernelLevel::Amx})
    if (static_cast<int>(l) <= static_cast<int>(top)) levels.push_back(l);

  for (const Model& model : kModels) {
    if (which != "both" && std::string(model.name).find(which) == std::string::npos) continue;
    std::vector<std::vector<float>> wf;
    for (size_t i = 0; i < model.linears.size(); ++i)
      wf.push_back(random_vec(model.linears[i].n * model.linears[i].k, 1000 + i, 0.02f));
    // Activations live on huge pages, as the engine's do (model.h ActVec).
    const std::vector<float> xs = random_vec(512 * 8960, 7, 1.0f);
    std::vector<float, qeval::HugePageAllocator<float>> x(xs.begin(), xs.end()), y(512 * 8960);
    if (part != "gemm") {
    std::printf("\n== %s: decode GEMV (M=1) over %d layers of q,k,v,o,gate,up,down ==\n", model.name, layers);
    std::printf("(vs read: against a plain summing loop over the same bytes, split the same way, alternated)\n");
    std::printf("%-13s %-7s %10s %9s %9s %9s %9s\n", "scheme", "level", "MB/layer", "GB/s", "vs ref", "vs bw",
                "vs read");
    for (const Variant& v : kVariants) {
      if (skip_variant(v)) continue;
      double ref_layer_s = 0;  // the scalar twin's seconds per layer
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
        // "vs ref" compares times per layer, not GB/s: a path may hold other bytes than the twin
        // (fp8 without VBMI keeps bf16, twice the twin's fp8 bytes).
        const double layer_s = t / n_layers;
        if (level == KernelLevel::Ref) ref_layer_s = layer_s;
        // "vs read": the same bytes read by a plain summing loop split and handed out the way
        // the GEMVs split them (time_split_read), alternated with the GEMVs: median of 9 ratios.
        std::string vs_read = "-";
        if (level != KernelLevel::Ref) {
          std::vector<SplitRead> reads;
          std::vector<cpu::AlignedBuffer<float>> bufs;  // zeroed, on huge pages like the weights
          size_t read_bytes = 0;
          for (size_t j = 0; j < ls.size(); ++j) {
            const int64_t units = (model.linears[j % model.linears.size()].n + 31) / 32;
            const size_t b = ls[j]->weight_bytes() / (128 * units) * (128 * units);
            bufs.emplace_back(b / 4);
            reads.push_back({bufs.back().data(), b, units, cpu::column_block_grain(units, threads)});
            read_bytes += b;
          }
          std::vector<double> ratios;
          for (int r = 0; r < 9; ++r) {
            double t0 = now_s();
            for (auto& l : ls) l->forward(x.data(), 1, y.data(), pool);
            const double tg = now_s() - t0;
            const double tr = time_split_read(pool, reads);
            ratios.push_back((bytes / tg) / (read_bytes / tr));
          }
          vs_read = std::to_string(static_cast<int>(100 * median(ratios) + 0.5)) + "%";
        }
        std::printf("%-13s %-7s %10.2f %9.2f %8.1fx %8.0f%% %9s\n", v.name, kernel_level_name(level),
                    bytes / 1e6 / n_layers, gbs, ref_layer_s / layer_s, 100 * gbs / bw, vs_read.c_str());
      }
    }

    }
    if (part == "gemv") continue;
    std::printf("\n== %s: prefill GEMM (M=512, activation quantisation included), per linear shape ==\n"
                "(* median of 15 ratios, each against the %s int8 peak measured just before and after that call)\n",
                model.name, peak_name);
    std::printf("%-13s %-5s %-7s %6s %6s %9s %9s %9s\n", "scheme", "shape", "level", "N", "K", "TOPS", "vs ref",
                "vs peak*");
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
          // vs peak: the int8 peak is measured just before and just after each timed call (this
          // machine's AMX throughput swings by 2x within seconds); median of the per-call ratios.
          double vs_peak = 0;
          if (peak > 0 && level != KernelLevel::Ref) {
            std::vector<double> ratios;
            for (int r = 0; r < 15; ++r) {
              const double p0 = int8_peak(0.005);
              const double t0 = now_s();
              l->forward(x.data(), M, y.data(), pool);
              const double dt = now_s() - t0;
              const double p1 = int8_peak(0.005);
              ratios.push_back(2.0 * M * s.n * s.k / dt / 1e12 / (0.5 * (p0 + p1)));
            }
            vs_peak = median(ratios);
          }
          char peak_col[16] = "        -";  // no int8 peak here (or the twin): none to divide by
          if (peak > 0 && level != KernelLevel::Ref) std::snprintf(peak_col, sizeof peak_col, "%8.0f%%", 100 * vs_peak);
          std::printf("%-13s %-5s %-7s %6lld %6lld %9.3f %8.0fx %s\n", v.name, s.name, kernel_level_name(level),
                      static_cast<long long>(s.n), static_cast<long long>(s.k), tops, tops / ref_tops, peak_col);
        }
      }
    }
    if (peak > 0) {
      // The INT8 GEMM kernel alone: activations quantised beforehand (as the fused qkv and
      // gate/up projections share one quantisation), weights packed as the engine packs them.
      std::printf("\n== %s: INT8 prefill GEMM kernel alone (M=512, pre-quantised activations), %s ==\n"
                  "(* median (and max) of 15 ratios, each against the register-only %s peak measured just before\n"
                  "   and after two back-to-back calls, timing the second; 1st call: the same for the first, which\n"
                  "   runs straight after the peak loop and is often slower; vs loaded (AMX only): against the same\n"
                  "   TDPBSSD loop re-loading its 4 tiles from L1;\n"
                  "   gu*: gate and up as one matmul, its output handed on in pieces of 256 columns while in cache,\n"
                  "   as the engine's SwiGLU takes it, instead of written to a full y)\n",
                  model.name, kernel_level_name(top), peak_name);
      std::printf("%-13s %-5s %6s %6s %9s %9s %9s %11s %11s\n", "scheme", "shape", "N", "K", "TOPS", "vs peak*", "(max)",
                  "1st call*", "vs loaded*");
      const int64_t M = 512;
      for (const Variant& v : kVariants) {
        if (skip_variant(v) || (v.scheme != QuantScheme::Int8Block && v.scheme != QuantScheme::Int8Channel)) continue;
        const bool channel = v.scheme == QuantScheme::Int8Channel;
        for (size_t i : {size_t{0}, size_t{4}, size_t{6}, size_t{99}}) {
          // 99: gate and up fused (N = 2 x FFN) with its output in pieces of 256 columns left in
          // cache for the epilogue (a no-op here), as the engine runs its largest matmul.
          const bool pieces = i == 99;
          Shape s = model.linears[pieces ? 4 : i];
          std::vector<float> wcat;
          if (pieces) {
            wcat = wf[4];
            wcat.insert(wcat.end(), wf[5].begin(), wf[5].end());
            s.n *= 2;
            s.name = "gu*";
          }
          const std::vector<float>& wsrc = pieces ? wcat : wf[i];
          const QuantizedWeight qw = quantize_weight(wsrc.data(), s.n, s.k, v.scheme);
          const cpu::Int8Packed p = cpu::pack_int8(reinterpret_cast<const int8_t*>(qw.q.data()), qw.scale.data(),
                                                   s.n, s.k, channel);
          cpu::AlignedBuffer<int8_t> qa(static_cast<size_t>(cpu::act_rows(M) * p.kp));
          std::vector<float> sa(static_cast<size_t>(M * p.groups));
          if (channel)
            quantize_act_int8_token(x.data(), M, s.k, qa.data(), p.kp, sa.data());
          else
            quantize_act_int8_group(x.data(), M, s.k, qa.data(), p.kp, sa.data());
          auto run = [&] {
            if (pieces)
              cpu::gemm_int8_pieces(top, p, qa.data(), sa.data(), M, nullptr, 8,
                                    [](int64_t, int64_t, const float*, int64_t) {}, pool);
            else
              cpu::gemm_int8(top, p, qa.data(), sa.data(), M, nullptr, y.data(), pool);
          };
          const double t = time_it(run, 0.4, 3);
          // The call straight after the peak loops is often slower than the next one (in an A/A
          // test of two identical kernels alternating in a fixed order, the second was up to 25%
          // faster), which the engine, running GEMMs back to back, does not see: both calls
          // are timed and the second is the measure; the first is shown beside it.
          std::vector<double> ratios, firsts, loaded;
          for (int r = 0; r < 15; ++r) {
            const double p0 = int8_peak(0.005), l0 = measure_amx_int8_loaded_peak(pool, 0.005);  // 0 without AMX
            const double t0 = now_s();
            run();
            const double t1 = now_s();
            run();
            const double t2 = now_s();
            const double l1 = measure_amx_int8_loaded_peak(pool, 0.005), p1 = int8_peak(0.005);
            const double ops = 2.0 * M * s.n * s.k / 1e12;
            ratios.push_back(ops / (t2 - t1) / (0.5 * (p0 + p1)));
            firsts.push_back(ops / (t1 - t0) / (0.5 * (p0 + p1)));
            if (amx) loaded.push_back(ops / (t2 - t1) / (0.5 * (l0 + l1)));
          }
          char loaded_col[16] = "          -";
          if (!loaded.empty()) std::snprintf(loaded_col, sizeof loaded_col, "%10.0f%%", 100 * median(loaded));
          std::printf("%-13s %-5s %6lld %6lld %9.3f %8.0f%% %8.0f%% %10.0f%% %s\n", v.name, s.name,
                      static_cast<long long>(s.n), static_cast<long long>(s.k), 2.0 * M * s.n * s.k / t / 1e12,
                      100 * median(ratios), 100 * *std::max_element(ratios.begin(), ratios.end()), 100 * median(firsts),
                      loaded_col);
        }
      }
    }
  }
  return 0;
}
