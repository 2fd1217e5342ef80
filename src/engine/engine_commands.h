// The engine's command-line pieces, called by the CLI's `generate` and `bench` subcommands:
// option structs (one field per flag) and functions that load the model, run and print.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/engine.h"

namespace qeval {

// `qeval generate --model PATH --prompt TEXT [--max-tokens N] [--temperature T] [--top-p P]
//  [--top-k K] [--seed S] [--dtype D] [--quantization Q] [--threads N]`
struct GenerateCommand {
  std::string model;             // HF dir or .gguf
  std::string prompt;            // "" = BOS alone (tokenizer rules decide BOS)
  int max_tokens = 256;
  double temperature = 0.0;
  double top_p = 1.0;
  int top_k = 0;
  uint64_t seed = 0;
  std::string dtype;             // "" = checkpoint's
  std::string quantization;      // "" = checkpoint's
  int threads = 0;
};

// Prints only the completion, then "\n", to `out`. Returns 0; throws Error when the model
// cannot be loaded or the options are invalid.
int run_generate_command(const GenerateCommand& c, std::ostream& out);

// `qeval bench --model PATH|random:<shape> [--dtype D] [--quantization Q] --prompt-tokens N
//  --gen-tokens M --batch B [--threads N] [--json]`
struct BenchCommand {
  std::string model = "random:qwen2.5-0.5b";
  std::string dtype;             // "" = checkpoint's (random models: bf16)
  std::string quantization;      // "" = checkpoint's
  int64_t prompt_tokens = 512;
  int64_t gen_tokens = 64;
  int batch = 1;
  int threads = 0;
  bool json = false;
  int repeat = 1;          // runs of the whole bench; medians are reported (and the best)
  bool reference = false;  // probe the read bandwidth between the decode steps (bench_reference.h)
};

// Runs Engine::bench `repeat` times and prints a human summary, or with `json` one JSON object
// (bench_to_json of the median run, plus "repeat", "decode_tokens_per_s_best",
// "prefill_tokens_per_s_best", and with `reference` "read_gb_per_s" (median of the read
// bandwidth probes taken before every decode step and after the last, ReadProbe over 256 MiB,
// best of 2 passes) and "decode_bw_fraction" (median over every decode step of every run of the
// step's weight GB/s / the mean of the probes just before and just after it)) and a newline.
// Returns 0; throws Error on bad options.
int run_bench_command(const BenchCommand& c, std::ostream& out);

// {"model", "dtype", "quantization", "threads", "batch", "prompt_tokens", "gen_tokens",
//  "prefill_tokens_per_s", "decode_tokens_per_s", "weight_bytes_per_step",
//  "decode_weight_gb_per_s", "prefill_s", "decode_s"}
nlohmann::json bench_to_json(const BenchResult& r, const Engine& e);

}  // namespace qeval
