// Per-sample metrics: lm-eval's exact_match (with its normalisation options) for generated
// answers, and acc (argmax of choice loglikelihoods) for multiple choice.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace qeval {

class Regex;

// lm-eval's exact_match (the HF `evaluate` implementation it vendors). Normalisation, applied
// to prediction and reference alike, in this order: remove every match of each of
// `regexes_to_ignore` (re.sub, in list order), lowercase (ASCII) if ignore_case, delete ASCII
// punctuation if ignore_punctuation, delete digits if ignore_numbers. Thread-safe.
class ExactMatch {
 public:
  // spec: the task's `metric` mapping minus `kind`: {ignore_case, ignore_punctuation,
  // ignore_numbers, regexes_to_ignore: [..]}; all optional. Throws Error naming `where`.
  static ExactMatch parse(const nlohmann::json& spec, const std::string& where);
  ExactMatch() = default;

  std::string normalize(std::string_view s) const;
  // 1.0 when normalize(prediction) == normalize(reference), else 0.0.
  double score(std::string_view prediction, std::string_view reference) const;

 private:
  bool ignore_case_ = false, ignore_punctuation_ = false, ignore_numbers_ = false;
  std::vector<std::shared_ptr<const Regex>> regexes_to_ignore_;
};

// Index of the largest value; ties go to the first, and the first NaN counts as the largest
// (as numpy.argmax). -1 when empty.
int argmax_first(std::span<const double> values);

// lm-eval's acc for multiple choice: 1.0 when argmax_first(logprobs) == gold, else 0.0.
double acc_score(std::span<const double> logprobs, int gold);

}  // namespace qeval
