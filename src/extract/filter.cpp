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

// answer_line: simple-evals' MMLU extraction (mmlu_eval.py with common.py): the response is
// normalised (markdown bold and LaTeX wrappers removed), then for each answer marker in order
// ("Answer\s*:" first, then its translations) the FIRST match of
// (?i)MARKER[ \t]*([letters]|Arabic, Bengali or fullwidth A-D) is taken, and a non-Latin
// letter is mapped to A-D. The letter is not uppercased: simple-evals compares it as written.
class AnswerLineStep : public FilterStep {
 public:
  AnswerLineStep(const std::string& letters, const std::string& where) {
    // The non-Latin letters stand for A-D only.
    const std::string alt = letters == "ABCD" ? "|[أ-د]|[অ]|[ব]|[ড]|[ঢ]|[Ａ]|[Ｂ]|[Ｃ]|[Ｄ]" : "";
    for (const char* marker : kMarkers) {
      // Python's \s (str patterns) is Unicode whitespace; RE2's is ASCII only.
      std::string m = marker;
      for (size_t at; (at = m.find("\\s")) != std::string::npos;) m.replace(at, 2, kPySpace);
      res_.push_back(std::make_unique<Regex>("(?i)" + m + "[ \\t]*([" + letters + "]" + alt + ")", where));
    }
  }
  bool apply(std::string_view in, std::string& out) const override {
    const std::string text = normalize(in);
    for (const auto& re : res_) {
      auto m = re->findall(text);
      if (m.empty()) continue;
      out = latin(m.front()[0]);
      return true;
    }
    return false;
  }

 private:
  static constexpr const char* kPySpace =
      "[\\t\\n\\v\\f\\r\\x1c-\\x20\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}]";

  // MULTILINGUAL_ANSWER_REGEXES of simple-evals' common.py, in its order (its second entry, an
  // "Answer" with an invisible Korean character, is left out).
  static constexpr const char* kMarkers[] = {
      "Answer\\s*:", "উত্তর\\s*:", "उत्तर\\s*:", "উত্তরঃ", "উত্তর\\s*:", "Antwort\\s*:", "답변\\s*:", "정답\\s*:",
      "답\\s*:", "答案\\s*：", "答案\\s*:", "答\\s*：", "答\\s*:", "答复\\s*：", "答曰\\s*：", "الإجابة:", "الجواب:",
      "إجابة:", "الإجابة النهائية:", "الإجابة الصحيحة:", "الإجابة الصحيحة هي:", "الإجابة هي:", "الجواب النهائي:",
      "Respuesta\\s*:", "Risposta\\s*:", "答え\\s*:", "答え\\s*：", "回答\\s*:", "回答\\s*：", "解答\\s*:",
      "Jawaban\\s*:", "Réponse\\s*:", "Resposta\\s*:", "Jibu\\s*:", "Idahun\\s*:", "Ìdáhùn\\s*:", "Idáhùn\\s*:",
      "Àmọ̀nà\\s*:", "Àdáhùn\\s*:", "Ànúgọ\\s*:", "Àṣàyàn\\s*:"};

  // simple-evals' normalize_response: these replacements, in this order.
  static std::string normalize(std::string_view in) {
    static const char* const kDrop[] = {"**", "$\\boxed{", "}$", "\\$", "$\\text{", "$", "\\mathrm{", "\\{",
                                        "\\text", "\\(", "\\mathbf{", "{", "\\boxed"};
    std::string s(in);
    for (const char* d : kDrop) {
      const std::string_view needle(d);
      std::string next;
      size_t from = 0, at;
      while ((at = s.find(needle, from)) != std::string::npos) {
        next.append(s, from, at - from);
        from = at + needle.size();
      }
      next.append(s, from, std::string::npos);
      s.swap(next);
    }
    return s;
  }

  // simple-evals' normalize_extracted_answer: Arabic, Bengali and fullwidth letters to A-D.
  static std::string latin(std::string_view letter) {
    static const std::pair<const char*, const char*> kMap[] = {
        {"أ", "A"}, {"ب", "B"}, {"ج", "C"}, {"د", "D"}, {"অ", "A"}, {"ব", "B"},
        {"ড", "C"}, {"ঢ", "D"}, {"Ａ", "A"}, {"Ｂ", "B"}, {"Ｃ", "C"}, {"Ｄ", "D"}};
    for (const auto& [from, to] : kMap)
      if (letter == from) return to;
    return std::string(letter);
  }

  std::vector<std::unique_ptr<Regex>> res_;
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
  // SGLang's get_answer_value: remove ',' (joining "1,000"), take the last run of \d (Python's
  // \d: any Unicode decimal digit) and ast.literal_eval it. A run with a non-ASCII digit, or a
  // leading zero before other digits ("007": not a Python literal) is INVALID there, so here.
  static const Regex digits("\\p{Nd}+", "last_integer");
  std::string joined;
  joined.reserve(text.size());
  for (char c : text)
    if (c != ',') joined += c;
  auto runs = digits.findall(joined);
  if (runs.empty()) return false;
  const std::string_view last = runs.back()[0];
  for (char c : last)
    if (c < '0' || c > '9') return false;
  const size_t nz = last.find_first_not_of('0');
  if (nz == std::string_view::npos) {
    out = "0";  // "0", "000": the literal 0
    return true;
  }
  if (nz > 0) return false;
  out.assign(last);
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
