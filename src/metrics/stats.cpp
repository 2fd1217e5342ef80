// Statistics: closed forms; the binomial tail of McNemar's test is summed in log space so
// that large discordant counts (MMLU: thousands) neither overflow nor underflow.
#include "metrics/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"

namespace qeval {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

MeanStat mean_stat(std::span<const double> xs) {
  MeanStat s;
  s.n = static_cast<int64_t>(xs.size());
  if (s.n == 0) {
    s.std_err = kNaN;
    return s;
  }
  double sum = 0.0;
  for (double x : xs) sum += x;
  s.value = sum / double(s.n);
  if (s.n < 2) {
    s.std_err = kNaN;
    return s;
  }
  double ss = 0.0;
  for (double x : xs) ss += (x - s.value) * (x - s.value);
  s.std_err = std::sqrt(ss / double(s.n - 1)) / std::sqrt(double(s.n));
  return s;
}

MeanStat micro_average(std::span<const MeanStat> parts) {
  MeanStat s;
  double sum = 0.0, sum_sq = 0.0;  // sum of x and of x^2 over all samples
  for (const auto& p : parts) {
    if (p.n <= 0) continue;
    double n = double(p.n);
    double within = (p.n >= 2 && std::isfinite(p.std_err)) ? p.std_err * p.std_err * n * (n - 1) : 0.0;
    s.n += p.n;
    sum += p.value * n;
    sum_sq += within + n * p.value * p.value;
  }
  if (s.n == 0) {
    s.std_err = kNaN;
    return s;
  }
  double n = double(s.n);
  s.value = sum / n;
  if (s.n < 2) {
    s.std_err = kNaN;
    return s;
  }
  double ss = std::max(0.0, sum_sq - n * s.value * s.value);
  s.std_err = std::sqrt(ss / (n - 1)) / std::sqrt(n);
  return s;
}

MeanStat group_stat(std::span<const MeanStat> parts) {
  MeanStat s = micro_average(parts);
  double pooled = 0.0;
  int64_t n = 0, k = 0;
  for (const auto& p : parts) {
    if (p.n <= 0) continue;
    n += p.n;
    ++k;
    if (p.n >= 2 && std::isfinite(p.std_err)) pooled += double(p.n - 1) * p.std_err * p.std_err * double(p.n);
  }
  s.std_err = n - k > 0 ? std::sqrt(pooled / double(n - k) / double(n)) : kNaN;
  return s;
}

double mcnemar_exact_p(int64_t b, int64_t c) {
  int64_t n = b + c;
  if (n <= 0) return 1.0;
  int64_t k = std::min(b, c);
  // log P[X = i] = lgamma(n+1) - lgamma(i+1) - lgamma(n-i+1) - n log 2
  double log_norm = std::lgamma(double(n) + 1.0) - double(n) * std::log(2.0);
  std::vector<double> terms;
  terms.reserve(size_t(k + 1));
  double top = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i <= k; i++) {
    double t = log_norm - std::lgamma(double(i) + 1.0) - std::lgamma(double(n - i) + 1.0);
    terms.push_back(t);
    top = std::max(top, t);
  }
  double acc = 0.0;
  for (double t : terms) acc += std::exp(t - top);
  double p = 2.0 * std::exp(top + std::log(acc));
  return std::min(1.0, p);
}

PairedComparison paired_difference(std::span<const double> baseline, std::span<const double> variant) {
  if (baseline.size() != variant.size()) {
    fail("paired_difference: {} baseline scores but {} variant scores (pair samples by doc first)",
         baseline.size(), variant.size());
  }
  PairedComparison r;
  r.n_paired = static_cast<int64_t>(baseline.size());
  std::vector<double> d(baseline.size());
  for (size_t i = 0; i < baseline.size(); i++) {
    d[i] = variant[i] - baseline[i];
    bool a = baseline[i] > 0.5, b = variant[i] > 0.5;
    if (a && !b) r.right_to_wrong++;
    if (!a && b) r.wrong_to_right++;
  }
  r.baseline_mean = mean_stat(baseline).value;
  r.variant_mean = mean_stat(variant).value;
  MeanStat ds = mean_stat(d);
  r.delta = ds.value;
  const bool binary = std::all_of(baseline.begin(), baseline.end(), [](double x) { return x == 0.0 || x == 1.0; }) &&
                      std::all_of(variant.begin(), variant.end(), [](double x) { return x == 0.0 || x == 1.0; });
  if (binary && !baseline.empty()) {
    // 0/1 scores: Bonett & Price's adjusted Wald interval for a difference of paired
    // proportions (one added to each discordant count, two to n). The plain Wald interval
    // collapses to zero width when no doc flips (claiming certainty from three docs) and can
    // leave [-1, 1] at small n; this one does neither.
    const double n2 = static_cast<double>(baseline.size()) + 2.0;
    const double p12 = (static_cast<double>(r.wrong_to_right) + 1.0) / n2;
    const double p21 = (static_cast<double>(r.right_to_wrong) + 1.0) / n2;
    const double c = p12 - p21, half = kZ95 * std::sqrt((p12 + p21 - c * c) / n2);
    r.ci95 = {std::max(-1.0, c - half), std::min(1.0, c + half)};
  } else {
    r.ci95 = {ds.value - kZ95 * ds.std_err, ds.value + kZ95 * ds.std_err};
  }
  r.mcnemar_p = mcnemar_exact_p(r.right_to_wrong, r.wrong_to_right);
  return r;
}

}  // namespace qeval
