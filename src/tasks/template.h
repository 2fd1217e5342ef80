// A tiny, strict substitution language for task prompts over a doc's JSON fields, covering
// what the built-in tasks need from lm-eval's Jinja templates:
//   {{question}}   {{ question.strip() }}   {{choices[0]}}   {{subject_name}}   {{answer}}
// A path is a field name followed by `[index]` or `.field` steps; `.strip()` at the end is
// Python's str.strip() (Unicode whitespace). Strings render verbatim, integers in decimal.
// Everything outside `{{ }}` is literal (a single `{` or `}` included, e.g. "\boxed{}").
// Field names are checked when the template is parsed; anything else is an Error naming the
// task file and the template.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace qeval {

class Template {
 public:
  Template() = default;
  // Parses `text`. `fields` are the top-level doc fields a template may name; `where` names
  // the task file and key in error messages. Throws Error on syntax errors or unknown fields.
  static Template parse(const std::string& text, const std::vector<std::string>& fields,
                        const std::string& where);

  bool empty() const { return parts_.empty(); }
  const std::string& text() const { return text_; }

  // The rendered string. Throws Error naming `where` when the doc lacks a field, an index is
  // out of range or a value is neither a string nor an integer.
  std::string render(const nlohmann::json& doc) const;

  // When the template is exactly one `{{path}}` (no literal text, no strip): the raw JSON
  // value at that path (e.g. MMLU's integer `answer`); otherwise the rendered string.
  nlohmann::json render_value(const nlohmann::json& doc) const;

 private:
  struct Step {
    bool is_index = false;
    std::string field;  // when !is_index
    size_t index = 0;   // when is_index
  };
  struct Part {
    bool is_expr = false;
    std::string literal;      // when !is_expr
    std::vector<Step> path;   // when is_expr; path[0] is a field
    bool strip = false;
    std::string source;       // the expression text, for messages
  };
  const nlohmann::json& lookup(const Part& p, const nlohmann::json& doc) const;

  std::string text_, where_;
  std::vector<Part> parts_;
};

}  // namespace qeval
