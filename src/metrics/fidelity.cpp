#include "metrics/fidelity.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace qeval {

std::vector<std::vector<int32_t>> perplexity_chunks(std::span<const int32_t> all, int64_t chunk, int64_t max_chunks,
                                                    std::optional<int32_t> bos) {
  std::vector<std::vector<int32_t>> out;
  if (chunk <= 0) return out;
  for (int64_t b = 0; b + chunk <= static_cast<int64_t>(all.size()) && static_cast<int64_t>(out.size()) < max_chunks;
       b += chunk) {
    out.emplace_back(all.begin() + b, all.begin() + b + chunk);
    if (bos) out.back()[0] = *bos;
  }
  return out;
}

void FidelityAccumulator::add(std::span<const float> logp_ref, std::span<const float> logp_var,
                              int32_t next_token) {
  if (logp_ref.size() != logp_var.size() || logp_ref.empty())
    fail("fidelity: distributions of different sizes ({} vs {})", logp_ref.size(), logp_var.size());
  double kld = 0;
  size_t top_ref = 0, top_var = 0;
  bool broken = false;  // a NaN or +inf log-probability: the position has no distribution to compare
  for (size_t i = 0; i < logp_ref.size(); ++i) {
    const double lp = logp_ref[i], lq = logp_var[i];
    broken |= std::isnan(lp) || std::isnan(lq) || lp == INFINITY || lq == INFINITY;
    if (std::isfinite(lp)) kld += std::exp(lp) * (lp - lq);
    if (logp_ref[i] > logp_ref[top_ref]) top_ref = i;
    if (logp_var[i] > logp_var[top_var]) top_var = i;
  }
  // Left out of every statistic, and counted: max(0, NaN) would have scored it a perfect 0. An
  // infinite KL (the variant gives probability 0 to a token the reference does not) is counted
  // the same way.
  if (broken || !std::isfinite(kld)) {
    ++n_nonfinite_;
    return;
  }
  kld_.push_back(std::max(0.0, kld));  // rounding can give a tiny negative value
  same_top_ += top_ref == top_var;
  if (next_token >= 0 && static_cast<size_t>(next_token) < logp_ref.size()) {
    nll_ref_ -= logp_ref[next_token];
    nll_var_ -= logp_var[next_token];
    const double d = static_cast<double>(logp_ref[next_token]) - logp_var[next_token];
    sum_d2_ += d * d;
    ++n_ppl_;
  }
}

nlohmann::json FidelityAccumulator::result() const {
  nlohmann::json j;
  const size_t n = kld_.size();
  j["n_tokens"] = n;
  if (n_nonfinite_ > 0) j["n_nonfinite"] = n_nonfinite_;
  if (n == 0) return j;
  double sum = 0, sum2 = 0;
  for (double x : kld_) sum += x, sum2 += x * x;
  const double mean = sum / static_cast<double>(n);
  j["kld_mean"] = mean;
  // Standard error of a mean from its sums: sample sd / sqrt(n); null below two values.
  auto stderr_of = [](double sum, double sum_sq, double k) -> nlohmann::json {
    if (k < 2) return nullptr;
    const double m = sum / k;
    return std::sqrt(std::max(0.0, (sum_sq - k * m * m) / (k - 1)) / k);
  };
  j["kld_stderr"] = stderr_of(sum, sum2, static_cast<double>(n));
  std::vector<double> s = kld_;
  std::sort(s.begin(), s.end());
  auto pct = [&](double q) {
    double pos = q / 100.0 * static_cast<double>(n - 1);
    size_t lo = static_cast<size_t>(std::floor(pos)), hi = static_cast<size_t>(std::ceil(pos));
    return s[lo] + (s[hi] - s[lo]) * (pos - static_cast<double>(lo));
  };
  j["kld_percentiles"] = {{"max", s.back()}, {"99.9", pct(99.9)}, {"99", pct(99)}, {"95", pct(95)},
                          {"90", pct(90)},   {"50", pct(50)},     {"10", pct(10)}, {"5", pct(5)},
                          {"1", pct(1)},     {"0.1", pct(0.1)},   {"min", s.front()}};
  const double top1 = static_cast<double>(same_top_) / static_cast<double>(n);
  j["top1_agreement"] = top1;
  j["top1_stderr"] = n > 1 ? nlohmann::json(std::sqrt(top1 * (1 - top1) / static_cast<double>(n - 1))) : nullptr;
  if (n_ppl_ > 0) {
    const double pr = std::exp(nll_ref_ / static_cast<double>(n_ppl_));
    const double pv = std::exp(nll_var_ / static_cast<double>(n_ppl_));
    j["ppl_ref"] = pr;
    j["ppl_variant"] = pv;
    j["ppl_ratio"] = pv / pr;
    const double k = static_cast<double>(n_ppl_), ln_ratio = (nll_var_ - nll_ref_) / k;
    j["ln_ppl_ratio"] = ln_ratio;
    j["ln_ppl_ratio_stderr"] = stderr_of(nll_var_ - nll_ref_, sum_d2_, k);
    j["ppl_ratio_stderr"] = j["ln_ppl_ratio_stderr"].is_number()
                                ? nlohmann::json(pv / pr * j["ln_ppl_ratio_stderr"].get<double>())
                                : nlohmann::json(nullptr);
    j["n_ppl_tokens"] = n_ppl_;
  }
  return j;
}

}  // namespace qeval
