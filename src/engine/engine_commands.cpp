// `generate` and `bench` command bodies on top of Engine.
#include "engine/engine_commands.h"

#include <algorithm>
#include <cstdint>
#include <new>

#include "core/error.h"
#include "core/median.h"
#include "engine/bench_reference.h"

namespace qeval {

namespace {

EngineOptions engine_options(const std::string& model, const std::string& dtype,
                             const std::string& quant, int threads, int max_batch) {
  EngineOptions o;
  o.model = model;
  if (!dtype.empty()) o.dtype = parse_compute_type(dtype, "--dtype");
  if (!quant.empty()) {
    try {
      o.quantization = parse_quant_scheme(quant == "w8a8_int8" ? "int8-channel" : quant);
    } catch (const Error& e) {
      fail("--quantization: {}", e.what());
    }
  }
  o.threads = threads;
  o.max_batch = max_batch;
  o.max_step_tokens = std::max<int64_t>(512, max_batch + 1);
  return o;
}

}  // namespace

int run_generate_command(const GenerateCommand& c, std::ostream& out) {
  if (c.model.empty()) fail("--model: missing (hint: a HF model directory or a .gguf file)");
  if (c.max_tokens < 1) fail("--max-tokens: must be >= 1, got {}", c.max_tokens);
  auto e = Engine::load(engine_options(c.model, c.dtype, c.quantization, c.threads, 1));
  if (!e->tokenizer()) fail("--model: '{}' has no tokenizer (random models are for bench)", c.model);
  GenerationRequest r;
  r.prompt = e->tokenizer()->encode(c.prompt, true, true);
  if (r.prompt.empty()) fail("--prompt: empty and the tokenizer adds no BOS (hint: give some text)");
  r.max_tokens = c.max_tokens;
  r.sampling.temperature = c.temperature;
  r.sampling.top_p = c.top_p;
  r.sampling.top_k = c.top_k;
  r.sampling.seed = c.seed;
  std::string text, error;
  e->generate(std::span<const GenerationRequest>(&r, 1), [&](size_t, GenerationOutput&& o) {
    text = std::move(o.text);
    error = std::move(o.error);
  });
  if (!error.empty()) fail("generate: {}", error);
  out << text << "\n";
  return 0;
}

nlohmann::json bench_to_json(const BenchResult& r, const Engine& e) {
  return {{"model", e.options().model},
          {"dtype", compute_type_name(e.dtype())},
          {"quantization", quant_scheme_name(e.quantization())},
          {"threads", r.threads},
          {"batch", r.batch},
          {"prompt_tokens", r.prompt_tokens},
          {"gen_tokens", r.gen_tokens},
          {"prefill_tokens_per_s", r.prefill_tokens_per_s},
          {"decode_tokens_per_s", r.decode_tokens_per_s},
          {"weight_bytes_per_step", r.weight_bytes_per_token},  // every sequence's step: per token at batch 1
          {"decode_weight_gb_per_s", r.decode_weight_gb_per_s},
          {"prefill_s", r.prefill_s},
          {"decode_s", r.decode_s}};
}

int run_bench_command(const BenchCommand& c, std::ostream& out) {
  if (c.batch < 1 || c.batch > kMaxEngineBatch) fail("--batch: must be from 1 to {}, got {}", kMaxEngineBatch, c.batch);
  if (c.prompt_tokens < 1) fail("--prompt-tokens: must be >= 1, got {}", c.prompt_tokens);
  if (c.gen_tokens < 0) fail("--gen-tokens: must be >= 0, got {}", c.gen_tokens);
  if (c.repeat < 1) fail("--repeat: must be >= 1, got {}", c.repeat);
  EngineOptions o = engine_options(c.model, c.dtype, c.quantization, c.threads, c.batch);
  auto e = Engine::load(o);
  // The context bounds the token counts before they size anything: past it the run is refused
  // anyway, and the KV cache sized from them could be larger than the machine (or overflow).
  const int64_t ctx = e->context_length();
  if (c.prompt_tokens > ctx || c.gen_tokens > ctx - c.prompt_tokens)
    fail("bench: --prompt-tokens {} + --gen-tokens {} exceed the model's context ({} tokens) (hint: ask for fewer "
         "tokens)", c.prompt_tokens, c.gen_tokens, ctx);
  size_t need = 0;
  const auto tokens = static_cast<size_t>(c.prompt_tokens + c.gen_tokens + KvCache::kBlockTokens);
  if (__builtin_mul_overflow(static_cast<size_t>(c.batch), tokens, &need) ||
      __builtin_mul_overflow(need, e->model().make_kv_cache(0)->bytes_per_token(), &need))
    need = SIZE_MAX;
  if (need > (size_t{2048} << 20)) {  // the default budget is capped; size it for the run
    const int64_t mib = static_cast<int64_t>(std::min<size_t>(need >> 20, size_t{1} << 50)) + 1;
    if (const int64_t ram = physical_memory_mib(); ram > 0 && mib > ram)
      fail("bench: batch {} x {} tokens needs {} MiB of KV cache, more than this machine's memory ({} MiB) (hint: a "
           "smaller --batch, --prompt-tokens or --gen-tokens)", c.batch, c.prompt_tokens + c.gen_tokens, mib, ram);
    o.kv_cache_mb = mib;
    e.reset();  // one model in memory at a time
    try {
      e = Engine::load(o);
    } catch (const std::bad_alloc&) {
      fail("bench: cannot allocate {} MiB of KV cache for batch {} x {} tokens (hint: a smaller --batch, "
           "--prompt-tokens or --gen-tokens)", mib, c.batch, c.prompt_tokens + c.gen_tokens);
    }
  }
  BenchOptions bo;
  bo.prompt_tokens = c.prompt_tokens;
  bo.gen_tokens = c.gen_tokens;
  bo.batch = c.batch;
  std::vector<BenchResult> runs;
  std::vector<double> bw, frac;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<ReadProbe> probe;
  if (c.reference) {
    pool = std::make_unique<ThreadPool>(e->threads());
    probe = std::make_unique<ReadProbe>(*pool, size_t{256} << 20);
  }
  // The read bandwidth is probed between the decode steps (this machine's bandwidth swings within
  // seconds): each step is held against the probes just before and just after it.
  std::vector<double> probes;
  if (c.reference) bo.between_steps = [&] { probes.push_back(probe->measure(2)); };
  for (int i = 0; i < c.repeat; ++i) {
    probes.clear();
    runs.push_back(e->bench(bo));
    const BenchResult& r = runs.back();
    for (size_t s = 0; c.reference && s < r.decode_step_s.size(); ++s) {
      const double step_gbps = static_cast<double>(r.weight_bytes_per_token) / r.decode_step_s[s] / 1e9;
      frac.push_back(step_gbps / (0.5 * (probes[s] + probes[s + 1])));
    }
    bw.insert(bw.end(), probes.begin(), probes.end());
  }
  // Medians over the runs (each figure its own: a bench of 2 runs reports the mean of the two).
  std::vector<double> dec, pre;
  for (const BenchResult& x : runs) {
    dec.push_back(x.decode_tokens_per_s);
    pre.push_back(x.prefill_tokens_per_s);
  }
  BenchResult r = runs.front();
  r.prefill_tokens_per_s = median(pre);
  r.decode_tokens_per_s = median(dec);
  // The times and the weight rate follow from the medians, so every printed figure agrees.
  r.prefill_s = r.prefill_tokens_per_s > 0 ? static_cast<double>(r.prompt_tokens * r.batch) / r.prefill_tokens_per_s : 0;
  r.decode_s = r.decode_tokens_per_s > 0 ? static_cast<double>(r.gen_tokens * r.batch) / r.decode_tokens_per_s : 0;
  r.decode_weight_gb_per_s = r.decode_tokens_per_s / r.batch * static_cast<double>(r.weight_bytes_per_token) / 1e9;
  if (c.json) {
    nlohmann::json j = bench_to_json(r, *e);
    j["repeat"] = c.repeat;
    j["decode_tokens_per_s_best"] = *std::max_element(dec.begin(), dec.end());
    j["prefill_tokens_per_s_best"] = *std::max_element(pre.begin(), pre.end());
    if (c.reference) {  // null without decode steps
      j["read_gb_per_s"] = bw.empty() ? nlohmann::json(nullptr) : nlohmann::json(median(bw));
      j["decode_bw_fraction"] = frac.empty() ? nlohmann::json(nullptr) : nlohmann::json(median(frac));
    }
    out << j.dump() << "\n";
  } else {
    out << fmt::format(
        "model {} ({}, {}), {} threads, batch {}, median of {} runs\n"
        "prefill {} tokens: {:.1f} tokens/s\n"
        "decode {} tokens: {:.2f} tokens/s ({:.1f} MB weights/step, {:.2f} GB/s)\n",
        c.model, compute_type_name(e->dtype()), quant_scheme_name(e->quantization()), r.threads,
        r.batch, c.repeat, r.prompt_tokens, r.prefill_tokens_per_s, r.gen_tokens, r.decode_tokens_per_s,
        static_cast<double>(r.weight_bytes_per_token) / 1e6, r.decode_weight_gb_per_s);
    if (c.reference && !frac.empty())
      out << fmt::format("read bandwidth {:.1f} GB/s (median of {} probes between the decode steps): decode at {:.0f}% "
                         "(median over {} steps, each against the probes before and after it)\n",
                         median(bw), bw.size(), 100 * median(frac), frac.size());
  }
  return 0;
}

}  // namespace qeval
