// Filter steps and chains. make_filter_step is the only place naming the concrete steps.
#include "extract/filter.h"

#include "core/error.h"
#include "core/text.h"
#include "extract/reasoning.h"
#include "extract/regex.h"
#include "extract/spec.h"

namespace qeval {

namespace {

const std::string& invalid_string() {
  static const std::string s(kInvalid);
  return s;
}

bool is_ascii_letter(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
char ascii_upper(char c) { return (c >= 'a' && c <= 'z') ? char(c - 'a' + 'A') : c; }

// regex: lm-eval's RegexFilter (findall, group_select, first non-empty group, strip).
class RegexStep : public FilterStep {
 public:
  RegexStep(const std::string& pattern, int64_t group_select, std::string fallback,
            const std::string& where)
      : re_(pattern, where), group_select_(group_select), fallback_(std::move(fallback)) {}

  bool apply(std::string_view in, std::string& out) const override {
    auto matches = re_.findall(in);
    int64_t n = static_cast<int64_t>(matches.size());
    int64_t i = group_select_ < 0 ? n + group_select_ : group_select_;
    if (i < 0 || i >= n) return false;
    const auto& groups = matches[static_cast<size_t>(i)];
    if (groups.size() > 1) {  // a tuple: the first non-empty group
      for (auto g : groups) {
        if (!g.empty()) {
          out = py_strip(g);
          return true;
        }
      }
      return false;
    }
    out = py_strip(groups[0]);
    return true;
  }
  const std::string& fallback() const override { return fallback_; }

 private:
  Regex re_;
  int64_t group_select_;
  std::string fallback_;
};

class TakeFirstStep : public FilterStep {
 public:
  bool apply(std::string_view in, std::string& out) const override {
    out.assign(in);
    return true;
  }
};

class RemoveReasoningStep : public FilterStep {
 public:
  bool apply(std::string_view in, std::string& out) const override {
    out = split_reasoning(in).answer;
    return true;
  }
};

class LastBoxedStep : public FilterStep {
 public:
  bool apply(std::string_view in, std::string& out) const override { return extract_last_boxed(in, out); }
};

class LastIntegerStep : public FilterStep {
 public:
  bool apply(std::string_view in, std::string& out) const override { return extract_last_integer(in, out); }
};

class FirstLetterStep : public FilterStep {
 public:
  explicit FirstLetterStep(std::string letters) : letters_(std::move(letters)) {}
  bool apply(std::string_view in, std::string& out) const override {
    return extract_first_letter(in, letters_, out);
  }

 private:
  std::string letters_;
};

class AnswerLineStep : public FilterStep {
 public:
  AnswerLineStep(const std::string& letters, const std::string& where)
      : re_("(?i)Answer\\s*:\\s*([" + letters + "])", where) {}
  bool apply(std::string_view in, std::string& out) const override {
    auto matches = re_.findall(in);
    if (matches.empty()) return false;
    out.assign(matches.back()[0]);
    for (auto& c : out) c = ascii_upper(c);
    return true;
  }

 private:
  Regex re_;
};

// Letters for a character class: ASCII letters only, so the class cannot be broken.
std::string checked_letters(const std::string& letters, const std::string& where) {
  for (char c : letters) {
    if (!is_ascii_letter(c)) fail("{}.letters: '{}' must hold ASCII letters only", where, letters);
  }
  return letters;
}

}  // namespace

const std::string& FilterStep::fallback() const { return invalid_string(); }

std::shared_ptr<const FilterStep> make_filter_step(const nlohmann::json& spec, const std::string& where) {
  if (!spec.is_object()) fail("{}: a filter step must be a mapping with a 'kind'", where);
  std::string kind = spec::need_string(spec, "kind", where);
  if (kind == "regex") {
    spec::check_keys(spec, {"kind", "pattern", "group_select", "fallback"}, where);
    return std::make_shared<RegexStep>(spec::need_string(spec, "pattern", where),
                                       spec::get_int(spec, "group_select", 0, where),
                                       spec::get_string(spec, "fallback", std::string(kInvalid), where),
                                       where + ".pattern");
  }
  if (kind == "answer_line") {
    spec::check_keys(spec, {"kind", "letters"}, where);
    return std::make_shared<AnswerLineStep>(
        checked_letters(spec::get_string(spec, "letters", "ABCD", where), where), where);
  }
  if (kind == "first_letter") {
    spec::check_keys(spec, {"kind", "letters"}, where);
    return std::make_shared<FirstLetterStep>(checked_letters(spec::get_string(spec, "letters", "", where), where));
  }
  spec::check_keys(spec, {"kind"}, where);
  if (kind == "take_first") return std::make_shared<TakeFirstStep>();
  if (kind == "remove_reasoning") return std::make_shared<RemoveReasoningStep>();
  if (kind == "last_boxed") return std::make_shared<LastBoxedStep>();
  if (kind == "last_integer") return std::make_shared<LastIntegerStep>();
  fail("{}.kind: unknown filter step '{}' (known: regex, take_first, remove_reasoning, last_boxed, "
       "last_integer, first_letter, answer_line)", where, kind);
}

FilterChain::FilterChain(std::string name, std::vector<std::shared_ptr<const FilterStep>> steps)
    : name_(std::move(name)), steps_(std::move(steps)) {}

FilterChain FilterChain::parse(const nlohmann::json& spec, const std::string& where) {
  spec::check_keys(spec, {"name", "steps"}, where);
  std::string name = spec::need_string(spec, "name", where);
  if (name.empty()) fail("{}.name: must not be empty", where);
  auto it = spec.find("steps");
  if (it == spec.end() || !it->is_array() || it->empty()) {
    fail("{}.steps: expected a non-empty list of steps", where);
  }
  std::vector<std::shared_ptr<const FilterStep>> steps;
  for (size_t i = 0; i < it->size(); i++) {
    steps.push_back(make_filter_step((*it)[i], fmt::format("{}.steps[{}]", where, i)));
  }
  return FilterChain(std::move(name), std::move(steps));
}

FilterOutput FilterChain::apply(std::string_view response) const {
  FilterOutput out;
  std::string cur(response), next;
  for (const auto& step : steps_) {
    if (!step->apply(cur, next)) {
      out.text = step->fallback();
      return out;
    }
    cur.swap(next);
  }
  out.text = std::move(cur);
  out.found = true;
  return out;
}

bool extract_last_boxed(std::string_view text, std::string& out) {
  size_t idx = text.rfind("\\boxed");
  size_t name_len = 6;
  if (idx == std::string_view::npos) {
    idx = text.rfind("\\fbox");
    name_len = 5;
    if (idx == std::string_view::npos) return false;
  }
  size_t p = idx + name_len;
  if (p < text.size() && text[p] == ' ') {  // "\boxed 5": up to '$' or end of line
    size_t end = text.find_first_of("$\n", p);
    out = trim(text.substr(p, end == std::string_view::npos ? std::string_view::npos : end - p));
    return !out.empty();
  }
  if (p >= text.size() || text[p] != '{') return false;
  int depth = 0;
  for (size_t i = p; i < text.size(); i++) {
    if (text[i] == '{') {
      depth++;
    } else if (text[i] == '}') {
      if (--depth == 0) {
        out = trim(text.substr(p + 1, i - p - 1));
        return !out.empty();
      }
    }
  }
  return false;  // unbalanced: cut off inside the box
}

bool extract_last_integer(std::string_view text, std::string& out) {
  // Removing ',' first joins "1,000" into one number, as SGLang does.
  size_t end = std::string_view::npos;
  size_t i = text.size();
  while (i > 0) {
    char c = text[i - 1];
    if (c >= '0' && c <= '9') {
      end = i;
      break;
    }
    i--;
  }
  if (end == std::string_view::npos) return false;
  std::string digits;
  for (size_t j = end; j > 0; j--) {
    char c = text[j - 1];
    if (c >= '0' && c <= '9') {
      digits.push_back(c);
    } else if (c != ',') {
      break;
    }
  }
  std::string s(digits.rbegin(), digits.rend());
  size_t nz = s.find_first_not_of('0');
  out = nz == std::string::npos ? "0" : s.substr(nz);
  return true;
}

bool extract_first_letter(std::string_view text, std::string_view letters, std::string& out) {
  constexpr std::string_view kSkip = " \t\r\n\v\f([{<\"'*_`:.-";
  size_t i = 0;
  while (i < text.size() && kSkip.find(text[i]) != std::string_view::npos) i++;
  if (i >= text.size() || !is_ascii_letter(text[i])) return false;
  if (i + 1 < text.size() && is_ascii_letter(text[i + 1])) return false;  // a word, not a letter
  char c = ascii_upper(text[i]);
  if (!letters.empty()) {
    bool ok = false;
    for (char l : letters) ok = ok || ascii_upper(l) == c;
    if (!ok) return false;
  }
  out.assign(1, c);
  return true;
}

}  // namespace qeval
