// Template parsing (a hand-written scanner over "{{ path[.strip()] }}") and rendering.
#include "tasks/template.h"

#include <algorithm>

#include "core/error.h"
#include "core/text.h"
#include "extract/regex.h"

namespace qeval {

namespace {

bool ident_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool ident_char(char c) { return ident_start(c) || (c >= '0' && c <= '9'); }

}  // namespace

Template Template::parse(const std::string& text, const std::vector<std::string>& fields,
                         const std::string& where) {
  Template t;
  t.text_ = text;
  t.where_ = where;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t open = text.find("{{", pos);
    if (open == std::string::npos) {
      t.parts_.push_back(Part{false, text.substr(pos), {}, false, ""});
      break;
    }
    if (open > pos) t.parts_.push_back(Part{false, text.substr(pos, open - pos), {}, false, ""});
    size_t close = text.find("}}", open + 2);
    if (close == std::string::npos) {
      fail("{}: unclosed '{{{{' in template \"{}\"", where, text);
    }
    std::string expr = trim(std::string_view(text).substr(open + 2, close - open - 2));
    Part part{true, "", {}, false, expr};
    std::string_view e = expr;
    auto bad = [&](const char* why) {
      fail("{}: {} in '{{{{{}}}}}' (supported: field, field[0], field.sub, field.strip())", where, why, expr);
    };
    if (ends_with(e, ".strip()")) {
      part.strip = true;
      e.remove_suffix(8);
    }
    size_t i = 0;
    auto read_ident = [&]() {
      if (i >= e.size() || !ident_start(e[i])) bad("expected a field name");
      size_t b = i;
      while (i < e.size() && ident_char(e[i])) i++;
      return std::string(e.substr(b, i - b));
    };
    part.path.push_back(Step{false, read_ident(), 0});
    if (std::find(fields.begin(), fields.end(), part.path[0].field) == fields.end()) {
      std::string known;
      for (const auto& f : fields) known += (known.empty() ? "" : ", ") + f;
      fail("{}: unknown field '{}' in '{{{{{}}}}}' (this dataset's docs have: {})", where,
           part.path[0].field, expr, known);
    }
    while (i < e.size()) {
      if (e[i] == '.') {
        i++;
        part.path.push_back(Step{false, read_ident(), 0});
      } else if (e[i] == '[') {
        size_t b = ++i;
        while (i < e.size() && e[i] >= '0' && e[i] <= '9') i++;
        if (i == b || i >= e.size() || e[i] != ']' || i - b > 6) bad("expected [non-negative index]");
        part.path.push_back(Step{true, "", std::stoul(std::string(e.substr(b, i - b)))});
        i++;
      } else {
        bad("unexpected character");
      }
    }
    t.parts_.push_back(std::move(part));
    pos = close + 2;
  }
  return t;
}

const nlohmann::json& Template::lookup(const Part& p, const nlohmann::json& doc) const {
  const nlohmann::json* v = &doc;
  for (const auto& s : p.path) {
    if (s.is_index) {
      if (!v->is_array() || s.index >= v->size()) {
        fail("{}: '{{{{{}}}}}': index {} out of range for this doc", where_, p.source, s.index);
      }
      v = &(*v)[s.index];
    } else {
      if (!v->is_object() || !v->contains(s.field)) {
        fail("{}: '{{{{{}}}}}': the doc has no field '{}'", where_, p.source, s.field);
      }
      v = &(*v)[s.field];
    }
  }
  return *v;
}

std::string Template::render(const nlohmann::json& doc) const {
  std::string out;
  for (const auto& p : parts_) {
    if (!p.is_expr) {
      out += p.literal;
      continue;
    }
    const auto& v = lookup(p, doc);
    std::string s;
    if (v.is_string()) {
      s = v.get<std::string>();
    } else if (v.is_number_integer()) {
      s = std::to_string(v.get<int64_t>());
    } else {
      fail("{}: '{{{{{}}}}}' is {} in this doc, not a string or integer", where_, p.source, v.type_name());
    }
    out += p.strip ? py_strip(s) : s;
  }
  return out;
}

nlohmann::json Template::render_value(const nlohmann::json& doc) const {
  if (parts_.size() == 1 && parts_[0].is_expr && !parts_[0].strip) return lookup(parts_[0], doc);
  return render(doc);
}

}  // namespace qeval
