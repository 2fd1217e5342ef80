// Token selection for the engine: greedy (argmax), temperature, top-k and top-p (nucleus)
// sampling with a per-request seeded generator, plus the log-softmax helpers loglikelihood and
// fidelity use. The random stream and the top-p procedure follow llama2.c's run.c (xorshift64*
// generator, one uniform draw per token, nucleus cut-off (1-p)/(n-1)), so a seeded run.c sample
// is reproducible here (except top_p = 0, greedy here as in HF and llama.cpp, nucleus-off in run.c). Everything is deterministic for a given seed and logits.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace qeval {

struct SamplingParams {
  double temperature = 0.0;  // <= 0: greedy; so small that logits / T overflow float: greedy too
  double top_p = 1.0;        // (0, 1): nucleus sampling; >= 1: off; <= 0: greedy (HF, llama.cpp)
  int top_k = 0;             // > 0: keep the k most likely tokens (ties: lower id first)
  uint64_t seed = 0;         // generator state; 0 is replaced by a fixed non-zero constant
};

// Index of the largest value (first one on ties).
int32_t argmax(std::span<const float> x);

// out[i] = x[i] - logsumexp(x), accumulated in double in index order.
void log_softmax(std::span<const float> x, std::span<float> out);

// Log-probability of x[id] under softmax(x) (double accumulation, index order).
double token_logprob(std::span<const float> x, int32_t id);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);

  // Picks the next token from raw logits [vocab]. Greedy consumes no randomness.
  int32_t sample(std::span<const float> logits);

  // Next uniform float in [0, 1) of the generator (run.c's random_f32).
  float next_uniform();

 private:
  SamplingParams p_;
  uint64_t state_;
  std::vector<float> probs_;
  std::vector<std::pair<float, int32_t>> cand_;
};

}  // namespace qeval
