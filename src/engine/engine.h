// The embedded inference engine: a loaded model (checkpoint or random weights), its tokenizer,
// a KV cache with a memory budget and a thread pool, and the schedulers on top of
// Model::forward — continuous-batching generation (finished sequences leave, queued ones join;
// prompts prefilled in chunks beside the running decodes), loglikelihood scoring with the
// shared context computed once per request, next-token distributions for fidelity (KL) and a
// speed benchmark. Results never depend on how requests were batched (see model.h).
// Not thread-safe: one call at a time per Engine.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "engine/linear.h"
#include "engine/model.h"
#include "engine/model_config.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

namespace qeval {

class Checkpoint;
class RandomModel;

// The most threads an engine takes: each is an OS thread, and past the core count they only
// wait for each other (llama.cpp's own limit is 512).
inline constexpr int kMaxEngineThreads = 1024;

// The most sequences an engine decodes together (max_batch, bench --batch).
inline constexpr int kMaxEngineBatch = 256;

// This machine's memory in MiB (0 when unknown): a KV cache budget above it cannot be meant.
int64_t physical_memory_mib();

struct EngineOptions {
  std::string model;                        // HF dir, .gguf file, or "random:<shape>"
                                            // (see random_model.h)
  std::optional<ComputeType> dtype;         // default: the checkpoint's precision (F32 stays
                                            // F32, F16/BF16 -> BF16)
  std::optional<QuantScheme> quantization;  // default: the checkpoint's own (config.json
                                            // quantization_config), else none
  int threads = 0;                          // <= 0: all cores
  int max_batch = 16;                       // sequences decoded together
  int64_t kv_cache_mb = 0;                  // <= 0: enough for max_batch full contexts,
                                            // capped at 2048 MiB
  int64_t max_step_tokens = 512;            // tokens per forward step (prefill chunking)
  uint64_t seed = 0;                        // random-weight models' seed

  // "" when usable, else what is wrong ("max_batch must be >= 1").
  std::string validate() const;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;              // token ids (BOS included by the caller)
  SamplingParams sampling;
  int max_tokens = 256;                     // new tokens at most
  std::vector<std::string> stop;            // stop strings (output excludes them)
  bool stop_at_stop_ids = true;             // end on tokenizer->stop_ids
};

struct GenerationOutput {
  std::vector<int32_t> tokens;              // generated ids (a final stop id excluded)
  std::string text;                         // completion text, cut before a stop string
  std::string finish_reason;                // "stop" | "length"
  int n_tokens_prompt = 0;                  // after truncation
  bool prompt_truncated = false;            // left-truncated to fit context - max_tokens
  std::string error;                        // non-empty: this request failed
};

// One loglikelihood request in tokens: for each continuation, the full token sequence
// (context then continuation) and how many leading tokens are context (>= 1).
struct ScoreRequest {
  std::vector<std::vector<int32_t>> sequences;
  std::vector<int64_t> n_context;
};

struct ScoreOutput {
  std::vector<double> logprob;              // sum of continuation token logprobs
  std::vector<bool> is_greedy;              // every continuation token was the argmax
  int n_tokens_prompt = 0;                  // context tokens (first continuation, after truncation)
  bool prompt_truncated = false;
  std::string error;
};

// Benchmark: `batch` sequences of `prompt_tokens` random ids prefilled, then `gen_tokens`
// greedy decode steps for all of them.
struct BenchOptions {
  int64_t prompt_tokens = 512;
  int64_t gen_tokens = 64;
  int batch = 1;
  // Called before every decode step and once after the last, outside the timing (a reference
  // measurement taken between the steps); may be empty.
  std::function<void()> between_steps;
};

struct BenchResult {
  double prefill_tokens_per_s = 0, decode_tokens_per_s = 0;
  double prefill_s = 0, decode_s = 0;
  size_t weight_bytes_per_token = 0;        // weight bytes read per decode step (batch 1: per token)
  double decode_weight_gb_per_s = 0;        // weight_bytes_per_token * decode steps / s / 1e9
  int threads = 0, batch = 0;
  int64_t prompt_tokens = 0, gen_tokens = 0;
  std::vector<double> decode_step_s;        // each decode step's seconds (they sum to decode_s)
};

class Engine {
 public:
  // Loads the model and tokenizer. Throws Error (naming the path/field) when it cannot.
  static std::unique_ptr<Engine> load(const EngineOptions& opt);
  ~Engine();

  const ModelConfig& config() const { return model_->config(); }
  const Model& model() const { return *model_; }
  const EngineOptions& options() const { return opt_; }
  ComputeType dtype() const { return model_->options().compute; }
  QuantScheme quantization() const { return model_->options().quant; }
  // nullptr for random-weight models.
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  // Context length in tokens (max_position_embeddings).
  int64_t context_length() const { return config().max_position_embeddings; }
  // Most positions one sequence can hold in the KV cache (its kv_cache_mb budget, in whole
  // blocks), and the cache's bytes per position.
  int64_t kv_capacity_tokens() const;
  size_t kv_bytes_per_token() const;
  // Checkpoint fingerprint (or "random:<shape>:<seed>").
  const std::string& fingerprint() const { return fingerprint_; }
  int threads() const { return pool_->size(); }

  // Runs all requests with continuous batching; on_done(index, output) is called once per
  // request on the calling thread as each finishes. Per-request problems (prompt empty, KV
  // budget too small for it) go into output.error.
  void generate(std::span<const GenerationRequest> requests,
                const std::function<void(size_t, GenerationOutput&&)>& on_done);

  // Scores every request (shared context prefilled once, continuations forked from it and run
  // together); on_done once per request on the calling thread.
  void score(std::span<const ScoreRequest> requests,
             const std::function<void(size_t, ScoreOutput&&)>& on_done);

  // Token sequences for loglikelihood(context, continuation) as lm-eval builds them: trailing
  // whitespace of the context (Python's rstrip()) moves to the continuation; the sequence is
  // encode(context) followed by encode(context + continuation)[len(encode(context)):], and the
  // continuation is what follows the context's tokens. BOS follows the tokenizer's rules; an
  // empty context becomes BOS (or EOS). Needs a tokenizer.
  ScoreRequest make_score_request(const std::string& context,
                                  std::span<const std::string> continuations) const;

  // Next-token log-probabilities after each prefix: for every sequence s and position i,
  // on_row(s, i, logprobs[V]) gives log p(· | seq[0..i]). Sequences longer than the context are
  // an Error. Batched like generation; rows arrive sequence by sequence, positions in order.
  void next_token_logprobs(std::span<const std::vector<int32_t>> seqs,
                           const std::function<void(size_t, int64_t, std::span<const float>)>& on_row);
  // Convenience: [n_tokens][V] log-probabilities for one sequence.
  std::vector<std::vector<float>> logprobs_all_positions(std::span<const int32_t> tokens);

  BenchResult bench(const BenchOptions& opt);

 private:
  Engine() = default;
  struct Feed {
    int seq;
    std::span<const int32_t> tokens;
    int64_t pos0;
    int64_t logits_from;
    size_t id;  // caller's tag, passed back with logits
  };
  // Feeds every job's tokens through the model in steps of at most max_step_tokens, each job's
  // tokens in order; on_logits(id, token index within the feed, logits).
  void run_feeds(std::vector<Feed>& feeds,
                 const std::function<void(size_t, int64_t, std::span<const float>)>& on_logits);
  // Text of a newly generated token; the first one is decoded after a short tail of `prompt` so
  // position-dependent decoding rules apply.
  std::string completion_piece(std::span<const int32_t> prompt, int32_t token, bool first) const;

  EngineOptions opt_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<RandomModel> random_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<KvCache> kv_;
  std::string fingerprint_;
};

// "bf16" | "f32" → ComputeType; throws Error naming `where` otherwise.
ComputeType parse_compute_type(const std::string& s, const std::string& where);
const char* compute_type_name(ComputeType t);

}  // namespace qeval
