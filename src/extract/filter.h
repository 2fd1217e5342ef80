// Answer extraction as named filter chains, in lm-evaluation-harness's spirit: a chain is a
// list of steps (regex -> take_first, remove_reasoning -> last_boxed, ...) that turns a raw
// model response into the string that is scored. A step that finds nothing ends the chain
// with the fallback string ("[invalid]" unless the step says otherwise).
//
// Step kinds (task YAML `filters: [{name, steps: [{kind: ..., ...}]}]`):
//   regex            {pattern, group_select: 0 (first) | -1 (last) | any Python index,
//                     fallback: "[invalid]"}. Python re.findall semantics; when the pattern
//                     has several groups the first non-empty group of the selected match is
//                     taken; the result is stripped as by Python str.strip().
//   take_first       keeps the first of the (single) response: a no-op kept for lm-eval parity.
//   remove_reasoning drops <think>...</think> blocks (see reasoning.h).
//   last_boxed       contents of the last \boxed{...} (nested braces balanced; also
//                     "\boxed 5" up to '$' or end of line); \fbox when there is no \boxed.
//                     An unbalanced last \boxed{ or an empty box finds nothing.
//   last_integer     SGLang's gsm8k rule: the last run of digits (any Unicode decimal digit)
//                     after removing ','; the sign is ignored as SGLang does; a run that is not
//                     a Python integer literal (a non-ASCII digit, "007") finds nothing.
//   first_letter     {letters: "ABCD" (optional)} skips leading whitespace/punctuation, takes
//                     the first ASCII letter (uppercased) if it is not followed by another
//                     letter (so "The" finds nothing) and, when `letters` is given, is one of them.
//   answer_line      {letters: "ABCD"} simple-evals' MMLU extraction: markdown/LaTeX wrappers
//                     removed (its normalize_response), then the FIRST match of
//                     `(?i)Answer\s*:[ \t]*([A-D])` (then of its translated markers, in
//                     simple-evals' order); Arabic, Bengali, fullwidth letters map to A-D. The
//                     letter is kept as written (simple-evals scores "c" against "C" as wrong).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace qeval {

inline constexpr std::string_view kInvalid = "[invalid]";

// One step of a chain. Implementations are immutable and thread-safe.
class FilterStep {
 public:
  virtual ~FilterStep() = default;
  // The transformed text, or false when nothing was found (the chain then stops).
  virtual bool apply(std::string_view in, std::string& out) const = 0;
  // The string the chain yields when this step finds nothing.
  virtual const std::string& fallback() const;
};

// Builds one step from its JSON spec ({"kind": ..., ...}). Unknown kinds or keys, wrong
// types and bad regexes throw Error naming `where` (e.g. "gsm8k.yaml: filters[0].steps[1]").
std::shared_ptr<const FilterStep> make_filter_step(const nlohmann::json& spec, const std::string& where);

struct FilterOutput {
  std::string text;  // the extracted answer, or the fallback
  bool found = false;
};

// A named chain. Copyable (steps are shared and immutable); thread-safe.
class FilterChain {
 public:
  // spec: {"name": "strict-match", "steps": [...]}. Throws Error naming `where`.
  static FilterChain parse(const nlohmann::json& spec, const std::string& where);
  FilterChain(std::string name, std::vector<std::shared_ptr<const FilterStep>> steps);

  const std::string& name() const { return name_; }
  FilterOutput apply(std::string_view response) const;

 private:
  std::string name_;
  std::vector<std::shared_ptr<const FilterStep>> steps_;
};

// The individual extractors, exposed for direct use and tests. Each returns false when
// nothing is found.
bool extract_last_boxed(std::string_view text, std::string& out);
bool extract_last_integer(std::string_view text, std::string& out);
bool extract_first_letter(std::string_view text, std::string_view letters, std::string& out);

}  // namespace qeval
