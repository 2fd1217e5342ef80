// Engine subcommands: generate and bench (embedded engine), convert (checkpoint formats).
#include <charconv>
#include <cmath>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/commands.h"
#include "core/error.h"
#include "data/fetch.h"
#include "engine/convert.h"
#include "engine/engine.h"
#include "engine/engine_commands.h"

namespace qeval {

namespace {

// A numeric flag's lower bound, with a message that states it (CLI11's PositiveNumber prints a
// range up to DBL_MAX, and names 0 as its lower end while refusing 0). NaN and inf are refused:
// NaN passes every comparison-based range check, and no flag here has a meaning for inf.
CLI::Validator at_least(double lo, bool strict = false) {
  std::string what = fmt::format("a number {} {}", strict ? ">" : ">=", lo);
  return CLI::Validator(
      [lo, strict, what](std::string& s) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(s, v)) return fmt::format("{} is not a number", s);
        bool ok = std::isfinite(v) && (strict ? v > lo : v >= lo);
        return ok ? std::string() : fmt::format("{} is out of range: give {}", s, what);
      },
      what);
}

// A real-valued flag's closed range [lo, hi]; NaN is refused (CLI::Range lets it through, as
// `v < lo || v > hi` is false for NaN).
CLI::Validator finite_range(double lo, double hi) {
  std::string what = fmt::format("a number from {} to {}", lo, hi);
  return CLI::Validator(
      [lo, hi, what](std::string& s) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(s, v)) return fmt::format("{} is not a number", s);
        return v >= lo && v <= hi ? std::string() : fmt::format("{} is out of range: give {}", s, what);
      },
      what);
}

// An integer flag's closed range, in the same words.
CLI::Validator between(int lo, int hi, const char* hint) {
  std::string what = fmt::format("an integer from {} to {}", lo, hi);
  return CLI::Validator(
      [lo, hi, what, hint](std::string& s) -> std::string {
        long long v = 0;
        if (!CLI::detail::lexical_cast(s, v)) return fmt::format("{} is not an integer", s);
        return v >= lo && v <= hi ? std::string() : fmt::format("{} is out of range: give {} ({})", s, what, hint);
      },
      what);
}

// An unsigned 64-bit flag. CLI11 turns "-1" and anything past 2^64-1 into 2^64-1 silently.
CLI::Validator any_uint64() {
  std::string what = "an integer from 0 to 18446744073709551615";
  return CLI::Validator(
      [what](std::string& s) -> std::string {
        uint64_t v = 0;
        const char* end = s.data() + s.size();
        const auto [p, ec] = std::from_chars(s.data(), end, v);
        if (ec == std::errc::result_out_of_range || (!s.empty() && s[0] == '-'))
          return fmt::format("{} is out of range: give {}", s, what);
        return ec == std::errc() && p == end ? std::string() : fmt::format("{} is not an integer: give {}", s, what);
      },
      what);
}

// bench --prompt-tokens / --gen-tokens at most: 16M tokens, more than any model's context.
constexpr int kMaxBenchTokens = 1 << 24;

// The schemes --quantization takes: the engine's names and SGLang's w8a8_int8 (= int8-channel), as
// a run config's engine variant takes them.
const std::vector<std::string> kQuantizationFlagValues = {"none", "fp8-block", "int8-block", "int8-channel",
                                                          "w8a8_int8"};

}  // namespace

void register_engine_commands(CLI::App& app, int& rc) {
  static GenerateCommand gen;
  auto* g = app.add_subcommand("generate", "Generate a completion with the embedded engine (prints only the completion)");
  g->add_option("--model", gen.model, "HF model directory or .gguf file")->required();
  g->add_option("--prompt", gen.prompt, "Prompt text (\"\" starts from BOS alone)")->required();
  g->add_option("--max-tokens", gen.max_tokens, "New tokens at most (default 256)")->check(at_least(1));
  g->add_option("--temperature", gen.temperature, "0 = greedy (default)")->check(at_least(0));
  g->add_option("--top-p", gen.top_p,
                "Nucleus sampling: keep the most likely tokens up to this probability mass (default 1 = off; "
                "0 = only the top token, greedy, as in HF and llama.cpp)")
      ->check(finite_range(0, 1));
  g->add_option("--top-k", gen.top_k, "Keep the k most likely tokens (0 = off)")->check(at_least(0));
  g->add_option("--seed", gen.seed, "Sampling seed (reproducible)")->check(any_uint64());
  g->add_option("--dtype", gen.dtype, "Compute precision")->check(CLI::IsMember({"bf16", "f32"}));
  g->add_option("--quantization", gen.quantization, "Quantization scheme")
      ->check(CLI::IsMember(kQuantizationFlagValues));
  g->add_option("--threads", gen.threads, "Threads (0 = all cores, the default)")
      ->check(between(0, kMaxEngineThreads, "0 uses every core"));
  g->callback([&rc] {
    gen.model = resolve_model_name(gen.model);
    rc = run_generate_command(gen, std::cout);
  });

  static BenchCommand bench;
  auto* b = app.add_subcommand("bench", "Measure prefill and decode speed of the embedded engine");
  b->add_option("--model", bench.model, "HF dir, .gguf, or random:qwen2.5-0.5b | random:r1-distill-qwen-1.5b");
  b->add_option("--dtype", bench.dtype, "Compute precision")->check(CLI::IsMember({"bf16", "f32"}));
  b->add_option("--quantization", bench.quantization, "Quantization scheme")
      ->check(CLI::IsMember(kQuantizationFlagValues));
  // Bounded so that no count overflows what is computed from it; the model's context is checked
  // when it is loaded.
  b->add_option("--prompt-tokens", bench.prompt_tokens, "Prompt tokens per sequence")
      ->check(between(1, kMaxBenchTokens, "no less, and within the model's context"));
  b->add_option("--gen-tokens", bench.gen_tokens, "Decode steps")
      ->check(between(1, kMaxBenchTokens, "no less, and within the model's context"));
  b->add_option("--batch", bench.batch, "Sequences in the batch")
      ->check(between(1, kMaxEngineBatch, "the engine's max_batch limit"));
  b->add_option("--threads", bench.threads, "Threads (0 = all cores, the default)")
      ->check(between(0, kMaxEngineThreads, "0 uses every core"));
  b->add_flag("--json", bench.json, "Print one JSON object");
  b->add_option("--repeat", bench.repeat, "Run the bench N times; report medians and the best (default 1)")
      ->check(CLI::Range(1, 1000));
  b->add_flag("--reference", bench.reference,
              "Probe the read bandwidth between the decode steps and report decode as a fraction of it");
  b->callback([&rc] {
    bench.model = resolve_model_name(bench.model);
    rc = run_bench_command(bench, std::cout);
  });

  static ConvertOptions conv;
  static double shard_gb = 5.0;
  auto* c = app.add_subcommand("convert", "Convert a checkpoint: DeepSeek FP8 -> BF16 -> INT8 (formats SGLang loads)");
  c->add_option("--in", conv.in, "Input HF checkpoint directory (BF16/F16/F32 or DeepSeek FP8)")->required();
  c->add_option("--out", conv.out, "Output directory")->required();
  c->add_option("--to", conv.to, "Target format")
      ->required()
      ->check(CLI::IsMember({"bf16", "int8-block", "int8-channel", "fp8-block"}));
  c->add_flag("--verify", conv.verify, "Re-read the output and check every tensor");
  c->add_option("--shard-size-gb", shard_gb, "Maximum output shard size in GB (default 5)")
      ->check(finite_range(0.001, 1e6));
  c->callback([&rc] {
    conv.shard_bytes = static_cast<uint64_t>(shard_gb * 1e9);
    if (std::string why = conv.validate(); !why.empty()) fail("convert: {}", why);
    rc = convert_main(conv);
  });
}

}  // namespace qeval
