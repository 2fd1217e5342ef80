// Statistics for reporting and comparing accuracies: means with lm-eval's standard error,
// paired differences between two variants on the same samples (CI, flips, exact McNemar test)
// and group micro-averages. Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <span>

namespace qeval {

inline constexpr double kZ95 = 1.959963984540054;  // standard normal 97.5% quantile

struct MeanStat {
  double value = 0.0;    // mean of the per-sample scores (0 when n == 0)
  double std_err = 0.0;  // sample sd (n-1 denominator) / sqrt(n), as lm-eval; NaN when n < 2
  int64_t n = 0;
};

// Mean and lm-eval standard error of per-sample scores.
MeanStat mean_stat(std::span<const double> xs);

// Micro-average of groups given their MeanStats (e.g. the 57 MMLU subjects -> `mmlu`):
// identical (up to rounding) to mean_stat over all samples concatenated. Parts with n == 0
// are ignored; a part with n == 1 contributes no within-part spread.
MeanStat micro_average(std::span<const MeanStat> parts);

// A group's result as lm-eval reports it (a group of subtasks aggregated with weight_by_size,
// e.g. `mmlu`): the micro-average value, and lm-eval's pooled_sample_stderr,
//   sqrt( Σ_i (n_i - 1) · se_i² · n_i / (N - k) / N ),   N = Σ n_i over the k parts with n_i ≥ 1,
// which pools the within-subtask variances and leaves out the spread between subtask means.
// A part with n_i == 1 adds no variance; NaN when N - k <= 0. One part: mean_stat's value and
// stderr (up to rounding).
MeanStat group_stat(std::span<const MeanStat> parts);

struct Interval {
  double lo = 0.0, hi = 0.0;
};

// Exact two-sided McNemar p-value from the discordant counts b and c:
// min(1, 2 * P[X <= min(b, c)]) with X ~ Binomial(b + c, 1/2); 1.0 when b + c == 0.
double mcnemar_exact_p(int64_t b, int64_t c);

struct PairedComparison {
  int64_t n_paired = 0;
  double baseline_mean = 0.0, variant_mean = 0.0;
  double delta = 0.0;         // variant_mean - baseline_mean
  Interval ci95;              // 0/1 scores: Bonett-Price adjusted Wald interval for paired
                              // proportions (discordant counts + 1, n + 2), within [-1, 1].
                              // Other scores: delta -/+ z * sd(d) / sqrt(n) over d_i = variant_i -
                              // baseline_i (sample sd, n-1); NaN bounds when n < 2
  int64_t right_to_wrong = 0; // baseline right (score > 0.5), variant wrong
  int64_t wrong_to_right = 0; // baseline wrong, variant right
  double mcnemar_p = 1.0;     // mcnemar_exact_p(right_to_wrong, wrong_to_right)
};

// Compares two score vectors over the same samples in the same order (scores 0/1, or any
// values for the mean/CI). Throws Error when the sizes differ.
PairedComparison paired_difference(std::span<const double> baseline, std::span<const double> variant);

}  // namespace qeval
