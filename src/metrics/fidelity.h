// Fidelity of a quantized variant against its reference on the same token sequences, as
// llama.cpp's `llama-perplexity --kl-divergence` reports it: KL divergence of the next-token
// distributions (mean and percentiles), agreement of the top token, and perplexity ratio.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include <nlohmann/json.hpp>

namespace qeval {

// The chunks of a tokenised text that perplexity and KLD are measured on, as llama-perplexity
// cuts them: consecutive `chunk`-token pieces of `all` (at most `max_chunks`, a partial tail
// dropped), each with its first token replaced by `bos` when the tokenizer adds one.
std::vector<std::vector<int32_t>> perplexity_chunks(std::span<const int32_t> all, int64_t chunk, int64_t max_chunks,
                                                    std::optional<int32_t> bos);

class FidelityAccumulator {
 public:
  // Adds one position: log-probabilities over the vocabulary from the reference and from the
  // variant (same length V), and the id of the token that actually follows (-1 when unknown:
  // then perplexity is not updated). KL(ref || var) = Σ p_ref · (log p_ref − log p_var).
  void add(std::span<const float> logp_ref, std::span<const float> logp_var, int32_t next_token);

  int64_t n_positions() const { return static_cast<int64_t>(kld_.size()); }

  // {"n_tokens", "kld_mean", "kld_stderr", "kld_percentiles": {"max","99.9","99","95","90",
  //  "50","10","5","1","0.1","min"}, "top1_agreement", "top1_stderr", "ppl_ref", "ppl_variant",
  //  "ppl_ratio", "ppl_ratio_stderr", "ln_ppl_ratio", "ln_ppl_ratio_stderr", "n_ppl_tokens",
  //  "n_nonfinite" (when > 0)}, as llama-perplexity --kl-divergence reports them: stderr of a
  //  mean = sample sd / sqrt(n); top-1 stderr = sqrt(p (1 - p) / (n - 1)); ln_ppl_ratio = mean of
  //  log p_ref(next) - log p_var(next), and ppl_ratio_stderr = ppl_ratio * its stderr. A stderr
  //  is null below two positions. Percentiles interpolate linearly between sorted values. A position with a NaN or +inf log-probability, or an infinite KL, is left out of
  //  every statistic and counted in n_nonfinite.
  nlohmann::json result() const;

 private:
  std::vector<double> kld_;
  int64_t same_top_ = 0;
  double nll_ref_ = 0, nll_var_ = 0;
  double sum_d2_ = 0;  // Σ (log p_ref(next) - log p_var(next))^2
  int64_t n_ppl_ = 0;
  int64_t n_nonfinite_ = 0;
};

}  // namespace qeval
