#include "core/yaml_json.h"

#include <charconv>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "core/text.h"

namespace qeval {

namespace {

// Strings go into results.json and reports: bytes that are not UTF-8 would be found only when
// the results are written, after the whole run.
void check_utf8(const YAML::Node& node, const std::string& source) {
  const std::string& s = node.Scalar();
  if (size_t at = utf8_first_invalid(s); at != std::string_view::npos)
    fail("{}:{}: '{}' holds a byte that is not UTF-8 (0x{:02x} at byte {}) (hint: save the file as UTF-8)", source,
         node.Mark().line + 1, s.substr(0, at), static_cast<unsigned char>(s[at]), at);
}

// YAML 1.2 core schema, as far as configs need it: null, booleans, decimal integers and floats.
// Anything else plain (including "nan", "inf", hex) stays a string, so a numeric field refuses it.
nlohmann::json scalar_to_json(const YAML::Node& node) {
  const std::string& s = node.Scalar();
  if (node.Tag() == "!") return s;  // quoted: always a string
  if (s.empty() || s == "null" || s == "~" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  if (s.size() > 1 && s[0] == '+' && (s[1] == '+' || s[1] == '-')) return s;  // "+-5": not a number
  const char* b = s.data() + (s[0] == '+' ? 1 : 0);
  const char* e = s.data() + s.size();
  int64_t i = 0;
  if (auto r = std::from_chars(b, e, i); r.ec == std::errc() && r.ptr == e) return i;
  if (s.find_first_not_of("+-0123456789.eE") != std::string::npos || s.find_first_of("0123456789") == std::string::npos)
    return s;
  double d = 0;
  if (auto r = std::from_chars(b, e, d, std::chars_format::general); r.ec == std::errc() && r.ptr == e) return d;
  return s;  // out of range, or not a number after all ("1e", "--1")
}

// Nesting deeper than any config needs, and more values than any config holds: past them the
// file is an alias that contains itself (`a: &x [*x]`, endless) or aliases of aliases (a few
// lines that expand to 10^8 values), not a config.
constexpr int kMaxYamlDepth = 256;
constexpr int64_t kMaxYamlValues = 1'000'000;

struct YamlWalk {
  const std::string& source;
  std::vector<YAML::Node> path;  // the collections enclosing the current node
  int64_t n_values = 0;

  nlohmann::json convert(const YAML::Node& node) {
    if (++n_values > kMaxYamlValues)
      fail("{}:{}: expands to more than {} values (hint: aliases (*name) of aliases multiply; write the values "
           "out instead)", source, node.Mark().line + 1, kMaxYamlValues);
    switch (node.Type()) {
      case YAML::NodeType::Null:
      case YAML::NodeType::Undefined:
        return nullptr;
      case YAML::NodeType::Scalar:
        check_utf8(node, source);
        return scalar_to_json(node);
      case YAML::NodeType::Sequence:
      case YAML::NodeType::Map:
        break;
    }
    for (const auto& p : path)
      if (p.is(node))
        fail("{}:{}: a YAML alias refers to its own anchor, so the value would contain itself without end (hint: "
             "an alias (*name) can only repeat a value defined before it, outside it)", source, node.Mark().line + 1);
    if (path.size() >= kMaxYamlDepth)
      fail("{}:{}: nested more than {} levels deep (hint: no config needs this; check the brackets and "
           "indentation)", source, node.Mark().line + 1, kMaxYamlDepth);
    path.push_back(node);
    nlohmann::json out;
    if (node.IsSequence()) {
      out = nlohmann::json::array();
      for (const auto& x : node) out.push_back(convert(x));
    } else {
      out = nlohmann::json::object();
      for (const auto& kv : node) {
        if (!kv.first.IsScalar())
          fail("{}:{}: a key must be a plain name", source, kv.first.Mark().line + 1);
        check_utf8(kv.first, source);
        const std::string key = kv.first.Scalar();
        // yaml-cpp keeps both; the last would silently win (a second `gates: []` dropping every gate).
        if (out.contains(key))
          fail("{}:{}: duplicate key '{}' (hint: each key may appear once in a mapping)", source,
               kv.first.Mark().line + 1, key);
        out[key] = convert(kv.second);
      }
    }
    path.pop_back();
    return out;
  }
};

}  // namespace

nlohmann::json yaml_to_json(const YAML::Node& node, const std::string& source) {
  YamlWalk walk{source, {}, 0};
  return walk.convert(node);
}

YAML::Node load_yaml(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail("{}:{}:{}: invalid YAML: {} (hint: check indentation and quoting)", source, e.mark.line + 1,
         e.mark.column + 1, e.msg);
  }
}

nlohmann::json parse_yaml(const std::string& text, const std::string& source) {
  return yaml_to_json(load_yaml(text, source), source);
}

}  // namespace qeval
