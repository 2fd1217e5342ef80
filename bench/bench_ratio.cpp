// Speed ratios of the quantised variants against BF16, measured interleaved: all variants of one
// random-weight model are loaded in one process and, round after round, each runs the same
// prefill (512 tokens) and batch-1 decode, so every ratio compares runs seconds apart (this kind
// of shared machine swings by 2x between minutes). Prints per-variant medians and the median of
// the per-round ratios to the BF16 run of the same round, next to the weight-byte ceiling; then
// the best run of each variant and the ratios of those.
// Usage: bench_ratio [shape=qwen2.5-0.5b] [rounds=5] [threads=2] [gen tokens=32]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/median.h"
#include "engine/engine.h"

using namespace qeval;

namespace {

double best(const std::vector<double>& v) { return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()); }

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string shape = argc > 1 ? argv[1] : "qwen2.5-0.5b";
    const int rounds = argc > 2 ? std::atoi(argv[2]) : 5;
    const int threads = argc > 3 ? std::atoi(argv[3]) : 2;
    const int64_t gen = argc > 4 ? std::atoi(argv[4]) : 32;
    const QuantScheme schemes[] = {QuantScheme::None, QuantScheme::Int8Channel, QuantScheme::Int8Block,
                                   QuantScheme::Fp8Block};
    std::vector<std::unique_ptr<Engine>> engines;
    for (QuantScheme q : schemes) {
      EngineOptions o;
      o.model = "random:" + shape;
      o.dtype = ComputeType::BF16;
      o.quantization = q;
      o.threads = threads;
      o.max_batch = 1;
      engines.push_back(Engine::load(o));
    }
    BenchOptions bo;
    bo.prompt_tokens = 512;
    bo.gen_tokens = gen;
    bo.batch = 1;
    const size_t nv = engines.size();
    std::vector<std::vector<double>> pre(nv), dec(nv), pre_ratio(nv), dec_ratio(nv);
    std::vector<size_t> bytes(nv);
    // Round r starts with variant r mod nv: a run's place in the round can matter (in a kernel
    // harness that alternated two variants in a fixed order, the second was up to 25% faster with
    // both running the same code), so every variant takes every place in turn.
    for (int r = 0; r < rounds; ++r) {
      for (size_t i = 0; i < nv; ++i) {
        const size_t v = (static_cast<size_t>(r) + i) % nv;
        const BenchResult res = engines[v]->bench(bo);
        pre[v].push_back(res.prefill_tokens_per_s);
        dec[v].push_back(res.decode_tokens_per_s);
        bytes[v] = res.weight_bytes_per_token;
      }
      for (size_t v = 0; v < nv; ++v) {
        pre_ratio[v].push_back(pre[v].back() / pre[0].back());
        dec_ratio[v].push_back(dec[v].back() / dec[0].back());
      }
    }
    std::printf("%s, %d threads, %d interleaved rounds (prefill 512, decode %lld at batch 1)\n", shape.c_str(),
                threads, rounds, static_cast<long long>(gen));
    std::printf("%-13s %10s %10s %12s %12s %14s %12s\n", "scheme", "prefill/s", "decode/s", "prefill/bf16",
                "decode/bf16", "byte ceiling", "of ceiling");
    for (size_t v = 0; v < nv; ++v) {
      const double ceiling = static_cast<double>(bytes[0]) / static_cast<double>(bytes[v]);
      std::printf("%-13s %10.1f %10.2f %11.2fx %11.2fx %13.2fx %11.0f%%\n", quant_scheme_name(schemes[v]),
                  median(pre[v]), median(dec[v]), median(pre_ratio[v]), median(dec_ratio[v]), ceiling,
                  100 * median(dec_ratio[v]) / ceiling);
    }
    // Interference only ever slows a run down, and it comes and goes within a round: the best run
    // of each variant estimates its undisturbed speed, and their ratio is the second estimate.
    std::printf("best of %d runs each (same rounds):\n", rounds);
    std::printf("%-13s %10s %10s %12s %12s %14s %12s\n", "scheme", "prefill/s", "decode/s", "prefill/bf16",
                "decode/bf16", "byte ceiling", "of ceiling");
    for (size_t v = 0; v < nv; ++v) {
      const double ceiling = static_cast<double>(bytes[0]) / static_cast<double>(bytes[v]);
      const double pr = best(pre[v]) / best(pre[0]), dr = best(dec[v]) / best(dec[0]);
      std::printf("%-13s %10.1f %10.2f %11.2fx %11.2fx %13.2fx %11.0f%%\n", quant_scheme_name(schemes[v]),
                  best(pre[v]), best(dec[v]), pr, dr, ceiling, 100 * dr / ceiling);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
