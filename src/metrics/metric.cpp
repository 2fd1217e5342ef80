// exact_match normalisation and acc.
#include "metrics/metric.h"

#include <cmath>

#include "core/error.h"
#include "extract/regex.h"
#include "extract/spec.h"

namespace qeval {

ExactMatch ExactMatch::parse(const nlohmann::json& spec, const std::string& where) {
  spec::check_keys(spec, {"ignore_case", "ignore_punctuation", "ignore_numbers", "regexes_to_ignore"}, where);
  ExactMatch m;
  m.ignore_case_ = spec::get_bool(spec, "ignore_case", false, where);
  m.ignore_punctuation_ = spec::get_bool(spec, "ignore_punctuation", false, where);
  m.ignore_numbers_ = spec::get_bool(spec, "ignore_numbers", false, where);
  auto regexes = spec::get_string_list(spec, "regexes_to_ignore", where);
  for (size_t i = 0; i < regexes.size(); i++) {
    m.regexes_to_ignore_.push_back(
        std::make_shared<Regex>(regexes[i], fmt::format("{}.regexes_to_ignore[{}]", where, i)));
  }
  return m;
}

std::string ExactMatch::normalize(std::string_view s) const {
  std::string out(s);
  for (const auto& re : regexes_to_ignore_) out = re->remove_all(out);
  if (ignore_case_) {
    for (auto& c : out) {
      if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    }
  }
  if (ignore_punctuation_ || ignore_numbers_) {
    constexpr std::string_view kPunct = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";  // string.punctuation
    std::string kept;
    for (char c : out) {
      bool drop = (ignore_punctuation_ && kPunct.find(c) != std::string_view::npos) ||
                  (ignore_numbers_ && c >= '0' && c <= '9');
      if (!drop) kept.push_back(c);
    }
    out.swap(kept);
  }
  return out;
}

double ExactMatch::score(std::string_view prediction, std::string_view reference) const {
  return normalize(prediction) == normalize(reference) ? 1.0 : 0.0;
}

int argmax_first(std::span<const double> values) {
  if (values.empty()) return -1;
  size_t best = 0;
  for (size_t i = 0; i < values.size(); i++) {
    if (std::isnan(values[i])) return static_cast<int>(i);  // numpy: the first NaN is the maximum
    if (values[i] > values[best]) best = i;
  }
  return static_cast<int>(best);
}

double acc_score(std::span<const double> logprobs, int gold) {
  return argmax_first(logprobs) == gold ? 1.0 : 0.0;
}

}  // namespace qeval
