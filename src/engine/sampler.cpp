// Sampling: argmax, llama2.c-compatible temperature / top-p sampling, top-k, log-softmax.
#include "engine/sampler.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace qeval {

int32_t argmax(std::span<const float> x) {
  // Blocks of 64: a block whose (NaN-ignoring) maximum does not beat the best so far cannot
  // change the answer, so only improving blocks are scanned element by element with the scalar
  // rule below; the result is that of the plain loop (first index on ties, NaNs skipped).
  const size_t n = x.size();
  if (n == 0) return 0;
  int32_t best = 0;
  size_t i = 1;
  if (x[0] == x[0]) {  // a NaN first element wins every comparison in the plain loop
    constexpr size_t kBlock = 64;
    for (size_t b = 0; b + kBlock <= n; b += kBlock) {
      __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
      for (size_t j = 0; j < kBlock; j += 8) m = _mm256_max_ps(_mm256_loadu_ps(x.data() + b + j), m);
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
      if (_mm_cvtss_f32(m4) > x[best])
        for (size_t j = std::max<size_t>(b, 1); j < b + kBlock; ++j)
          if (x[j] > x[best]) best = static_cast<int32_t>(j);
      i = b + kBlock;
    }
    i = std::max<size_t>(i, 1);
  }
  for (; i < n; ++i)
    if (x[i] > x[best]) best = static_cast<int32_t>(i);
  return best;
}

static double logsumexp(std::span<const float> x) {
  float mx = -std::numeric_limits<float>::infinity();
  for (float v : x) mx = std::max(mx, v);
  double s = 0.0;
  for (float v : x) s += std::exp(static_cast<double>(v) - mx);
  return mx + std::log(s);
}

void log_softmax(std::span<const float> x, std::span<float> out) {
  double lse = logsumexp(x);
  for (size_t i = 0; i < x.size(); ++i) out[i] = static_cast<float>(x[i] - lse);
}

double token_logprob(std::span<const float> x, int32_t id) {
  return static_cast<double>(x[id]) - logsumexp(x);
}

Sampler::Sampler(const SamplingParams& p) : p_(p), state_(p.seed ? p.seed : 0x9E3779B97F4A7C15ull) {}

float Sampler::next_uniform() {
  // xorshift64* as in llama2.c run.c (random_u32 / random_f32).
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  uint32_t u = static_cast<uint32_t>((state_ * 0x2545F4914F6CDD1Dull) >> 32);
  return static_cast<float>(u >> 8) / 16777216.0f;
}

int32_t Sampler::sample(std::span<const float> logits) {
  // top_p <= 0 keeps only the most likely token, as HF's TopPLogitsWarper and llama.cpp do (both
  // keep at least one token); llama2.c's run.c would turn the nucleus off instead.
  if (p_.temperature <= 0.0 || p_.top_p <= 0.0) return argmax(logits);
  const size_t n = logits.size();
  probs_.assign(logits.begin(), logits.end());
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < n) {
    // Keep exactly k tokens: highest logit first, lower id first on ties.
    std::vector<int32_t> idx(n);
    for (size_t i = 0; i < n; ++i) idx[i] = static_cast<int32_t>(i);
    std::nth_element(idx.begin(), idx.begin() + p_.top_k, idx.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (size_t i = p_.top_k; i < n; ++i) probs_[idx[i]] = -std::numeric_limits<float>::infinity();
  }
  // Softmax of logits / temperature in float, as run.c does.
  // A temperature so small that it is no normal float, or that logits / t overflow, is the limit
  // T -> 0: greedy (what HF and llama.cpp give for tiny temperatures). Computed on, exp(inf - inf)
  // would make every probability NaN and the draw below fall through to the last token.
  const float t = static_cast<float>(p_.temperature);
  if (!std::isnormal(t)) return argmax(logits);
  for (auto& v : probs_) v /= t;
  float mx = -std::numeric_limits<float>::infinity();
  for (float v : probs_) mx = std::max(mx, v);
  if (!std::isfinite(mx)) return argmax(logits);
  float sum = 0.0f;
  for (auto& v : probs_) {
    v = std::exp(v - mx);
    sum += v;
  }
  for (auto& v : probs_) v /= sum;

  float coin = next_uniform();
  if (p_.top_p >= 1.0) {
    float cdf = 0.0f;
    for (size_t i = 0; i < n; ++i) {
      cdf += probs_[i];
      if (coin < cdf) return static_cast<int32_t>(i);
    }
    return static_cast<int32_t>(n - 1);
  }
  // Nucleus: drop tokens below (1-p)/(n-1) (they cannot be in the nucleus), sort the rest by
  // probability (stable: lower id first on ties), cut where the cumulative mass exceeds p.
  const float topp = static_cast<float>(p_.top_p);
  const float cutoff = (1.0f - topp) / static_cast<float>(n - 1);
  cand_.clear();
  for (size_t i = 0; i < n; ++i)
    if (probs_[i] >= cutoff) cand_.emplace_back(probs_[i], static_cast<int32_t>(i));
  if (cand_.empty()) return argmax(logits);
  std::stable_sort(cand_.begin(), cand_.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  float cum = 0.0f;
  size_t last = cand_.size() - 1;
  for (size_t i = 0; i < cand_.size(); ++i) {
    cum += cand_[i].first;
    if (cum > topp) {
      last = i;
      break;
    }
  }
  float r = coin * cum;
  float cdf = 0.0f;
  for (size_t i = 0; i <= last; ++i) {
    cdf += cand_[i].first;
    if (r < cdf) return cand_[i].second;
  }
  return cand_[last].second;
}

}  // namespace qeval
