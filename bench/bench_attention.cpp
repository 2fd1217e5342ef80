// Attention benchmark: the AMX-BF16 attention kernel (bf16 compute, bf16 KV cache) on the work of
// one layer and kv head of a 512-token prefill, for the Qwen2.5-0.5B (7 query heads per kv head,
// head_dim 64) and R1-Distill-Qwen-1.5B (6 per kv head, head_dim 128) shapes, against its scalar
// twin measured in the same run; also prints the largest difference between the two.
//
// Usage: bench_attention [tokens=512]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "core/median.h"
#include "engine/cpu_features.h"
#include "engine/kernels/cpu/attention_amx.h"
#include "engine/kernels/ref/attention_ref.h"
#include "engine/kv_cache.h"
#include "engine/quant.h"

using namespace qeval;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Shape {
  const char* name;
  int64_t group, head_dim;
};

}  // namespace

int main(int argc, char** argv) {
  const int64_t N = argc > 1 ? std::atoll(argv[1]) : 512;
  if (N < 1) {
    std::fprintf(stderr, "bench_attention: tokens must be >= 1\n");
    return 2;
  }
  if (max_kernel_level() < KernelLevel::Amx) {
    std::printf("no AMX on this CPU: the AMX attention is not used here\n");
    return 0;
  }
  constexpr int64_t kB = KvCache::kBlockTokens;
  std::printf("causal attention of one layer and kv head over a %lld-token prefill, one thread\n",
              static_cast<long long>(N));
  std::printf("%-22s %6s %5s %10s %9s %10s %9s %12s\n", "shape", "group", "E", "AMX ms", "GFLOP/s", "twin ms",
              "vs twin", "max |diff|");
  for (const Shape& s : {Shape{"qwen2.5-0.5b", 7, 64}, Shape{"r1-distill-qwen-1.5b", 6, 128}}) {
    const int64_t E = s.head_dim, G = s.group, tile = std::max<int64_t>(1, 32 / G);
    std::mt19937 rng(1);
    std::normal_distribution<float> d(0.0f, 1.0f);
    const int64_t nblk = (N + kB - 1) / kB;
    std::vector<std::vector<uint16_t>> kt(nblk, std::vector<uint16_t>(kB * E)), vt = kt;
    std::vector<const uint16_t*> kp, vp;
    for (int64_t b = 0; b < nblk; ++b) {
      for (auto& x : kt[b]) x = bf16_from_f32(d(rng));
      for (auto& x : vt[b]) x = bf16_from_f32(d(rng));
      kp.push_back(kt[b].data());
      vp.push_back(vt[b].data());
    }
    std::vector<float> q(N * G * E), out(N * G * E), out_ref(N * G * E);
    for (auto& x : q) x = 3.0f * d(rng);
    // The prefill's work items: `tile` consecutive tokens x the group's query heads.
    std::vector<std::vector<AttnQuery>> items, items_ref;
    double flops = 0;
    for (int64_t t0 = 0; t0 < N; t0 += tile) {
      items.emplace_back();
      items_ref.emplace_back();
      for (int64_t t = t0; t < std::min(N, t0 + tile); ++t)
        for (int64_t h = 0; h < G; ++h) {
          const int64_t o = (t * G + h) * E;
          items.back().push_back({q.data() + o, out.data() + o, t + 1});
          items_ref.back().push_back({q.data() + o, out_ref.data() + o, t + 1});
          flops += 4.0 * static_cast<double>(t + 1) * static_cast<double>(E);
        }
    }
    const float scale = 1.0f / std::sqrt(static_cast<float>(E));
    auto run = [&](bool fast) {
      const double t0 = now_s();
      for (size_t i = 0; i < items.size(); ++i) {
        if (fast)
          cpu::attend_bf16_amx(items[i].data(), static_cast<int64_t>(items[i].size()), E, scale, kp.data(), vp.data());
        else
          ref::attend_bf16(items_ref[i].data(), static_cast<int64_t>(items_ref[i].size()), E, scale, kp.data(),
                           vp.data());
      }
      return now_s() - t0;
    };
    // Interleaved: the twin once per 10 AMX runs; medians.
    std::vector<double> ta, tr;
    for (int round = 0; round < 3; ++round) {
      tr.push_back(run(false));
      for (int i = 0; i < 10; ++i) ta.push_back(run(true));
    }
    double diff = 0;
    for (size_t i = 0; i < out.size(); ++i) diff = std::max(diff, static_cast<double>(std::fabs(out[i] - out_ref[i])));
    const double a = median(ta), r = median(tr);
    std::printf("%-22s %6lld %5lld %10.3f %9.1f %10.3f %8.1fx %12.2e\n", s.name, static_cast<long long>(G),
                static_cast<long long>(E), a * 1e3, flops / a / 1e9, r * 1e3, r / a, diff);
  }
  return 0;
}
