#include "runner/run_config.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <set>

#include "core/error.h"
#include "core/fs.h"
#include "core/yaml_json.h"

namespace qeval {

void check_keys(const nlohmann::json& obj, const std::vector<std::string>& allowed,
                const std::string& where) {
  if (!obj.is_object()) fail("{}: expected a mapping", where);
  for (const auto& [k, v] : obj.items()) {
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      fail("{}: unknown key '{}' (allowed: {})", where, k, list);
    }
  }
}

namespace {

std::string get_string(const nlohmann::json& o, const char* key, const std::string& where,
                       bool required) {
  if (!o.contains(key)) {
    if (required) fail("{}: missing required key '{}'", where, key);
    return "";
  }
  if (!o[key].is_string()) fail("{}.{}: expected a string", where, key);
  return o[key].get<std::string>();
}

std::optional<double> get_number(const nlohmann::json& o, const char* key, const std::string& where) {
  if (!o.contains(key)) return std::nullopt;
  if (!o[key].is_number()) fail("{}.{}: expected a number", where, key);
  return o[key].get<double>();
}

// A gate threshold on a metric (a fraction: 0.02 is 2 points).
std::optional<double> get_fraction(const nlohmann::json& o, const char* key, const std::string& where) {
  std::optional<double> v = get_number(o, key, where);
  if (v && !(*v >= 0 && *v <= 1))
    fail("{}.{}: {} is not between 0 and 1 (hint: metrics are fractions: 0.02 is a drop of 2 points, the "
         "report's 2.0)", where, key, *v);
  return v;
}

// An integer in [lo, hi] (YAML integers are 64-bit; a value past an int field's range must not wrap).
int get_int_in(const nlohmann::json& v, long long lo, long long hi, const std::string& where, const char* what) {
  if (!v.is_number_integer() || v.get<long long>() < lo || v.get<long long>() > hi)
    fail("{}: expected {} (an integer from {} to {})", where, what, lo, hi);
  return static_cast<int>(v.get<long long>());
}

// A name that becomes a directory and appears in markdown, SVG and JUnit XML (a variant's name
// also has no spaces).
bool bad_name(const std::string& s, bool space_ok = false) {
  if (s.empty() || s == "." || s == ".." || s.find_first_of(space_ok ? "/\\" : "/\\ ") != std::string::npos)
    return true;
  for (unsigned char ch : s)
    if (ch < 0x20 || ch == 0x7f) return true;
  return false;
}

}  // namespace

RunConfig parse_run_config(const nlohmann::json& j, const std::string& source) {
  RunConfig c;
  c.raw = j;
  if (!j.is_object()) fail("{}: the run config must be a mapping with name, tasks and variants", source);
  check_keys(j, {"name", "tasks", "limit", "baseline", "variants", "gates", "fidelity_text", "fidelity_prompts"}, source);
  c.name = get_string(j, "name", source, true);
  if (bad_name(c.name, true))
    fail("{}: name: '{}' must be a file name without '/', '\\' or control characters, not '.' or '..' "
         "(it names the output directory)", source, c.name);

  if (!j.contains("tasks")) fail("{}: missing required key 'tasks' (e.g. tasks: [gsm8k, mmlu])", source);
  const auto& tasks = j["tasks"];
  if (tasks.is_string()) {
    c.tasks.push_back(tasks.get<std::string>());
  } else if (tasks.is_array() && !tasks.empty()) {
    for (size_t i = 0; i < tasks.size(); ++i) {
      if (!tasks[i].is_string()) fail("{}: tasks[{}]: expected a task name", source, i);
      c.tasks.push_back(tasks[i].get<std::string>());
    }
  } else {
    fail("{}: tasks: expected a non-empty list of task names", source);
  }

  if (j.contains("limit") && !j["limit"].is_null())
    c.limit = get_int_in(j["limit"], 1, 1 << 30, source + ": limit", "a positive number of docs per task");

  if (!j.contains("variants") || !j["variants"].is_array() || j["variants"].empty())
    fail("{}: variants: expected a non-empty list of variants (each with name and backend)", source);
  std::set<std::string> names;
  for (size_t i = 0; i < j["variants"].size(); ++i) {
    const auto& v = j["variants"][i];
    std::string where = fmt::format("{}: variants[{}]", source, i);
    if (!v.is_object()) fail("{}: expected a mapping", where);
    std::string name = get_string(v, "name", where, true);
    get_string(v, "backend", where, true);
    if (bad_name(name))
      fail("{}.name: '{}' must be non-empty, without '/', '\\', spaces or control characters, and not '.' or '..' "
           "(it names a directory)", where, name);
    if (!names.insert(name).second) fail("{}.name: duplicate variant name '{}'", where, name);
    c.variants.push_back(v);
  }

  c.baseline = j.contains("baseline") ? get_string(j, "baseline", source, true)
                                      : c.variants.front()["name"].get<std::string>();
  if (!names.count(c.baseline))
    fail("{}: baseline: '{}' is not the name of a variant", source, c.baseline);

  if (j.contains("gates")) {
    if (!j["gates"].is_array()) fail("{}: gates: expected a list", source);
    for (size_t i = 0; i < j["gates"].size(); ++i) {
      const auto& g = j["gates"][i];
      std::string where = fmt::format("{}: gates[{}]", source, i);
      check_keys(g, {"task", "metric", "max_drop", "max_rel_drop", "significant_drop", "min_value",
                     "max_errors", "variants"},
                 where);
      Gate gc;
      gc.task = get_string(g, "task", where, true);
      gc.metric = get_string(g, "metric", where, true);
      gc.max_drop = get_fraction(g, "max_drop", where);
      gc.max_rel_drop = get_fraction(g, "max_rel_drop", where);
      gc.significant_drop = get_number(g, "significant_drop", where);
      gc.min_value = get_fraction(g, "min_value", where);
      if (gc.significant_drop && (*gc.significant_drop <= 0 || *gc.significant_drop >= 1))
        fail("{}.significant_drop: expected a significance level between 0 and 1 (e.g. 0.05)", where);
      if (g.contains("max_errors"))
        gc.max_errors = get_int_in(g["max_errors"], 0, INT32_MAX, where + ".max_errors", "a number of per-sample errors");
      if (g.contains("variants")) {
        if (!g["variants"].is_array()) fail("{}.variants: expected a list of variant names", where);
        for (const auto& v : g["variants"]) {
          if (!v.is_string() || !names.count(v.get<std::string>()))
            fail("{}.variants: '{}' is not the name of a variant", where, v.dump());
          gc.variants.push_back(v.get<std::string>());
        }
      }
      if (!gc.max_drop && !gc.max_rel_drop && !gc.significant_drop && !gc.min_value &&
          !g.contains("max_errors"))
        fail("{}: a gate needs one of max_drop, max_rel_drop, significant_drop, min_value, max_errors", where);
      // A comparison needs a variant beside the baseline: a gate on the baseline alone, or one
      // that names the baseline, would compare it with itself and pass.
      const bool compares = gc.max_drop || gc.max_rel_drop || gc.significant_drop;
      const bool names_base = std::find(gc.variants.begin(), gc.variants.end(), c.baseline) != gc.variants.end();
      if (compares && (names_base || (gc.variants.empty() && names.size() == 1)))
        fail("{}: max_drop, max_rel_drop and significant_drop compare a variant with the baseline '{}', and this "
             "gate would check the baseline itself (hint: list other variants under variants:, or gate the baseline "
             "with min_value / max_errors in a gate of its own)", where, c.baseline);
      c.gates.push_back(gc);
    }
  }
  if (j.contains("fidelity_text")) c.fidelity_text = get_string(j, "fidelity_text", source, true);
  c.fidelity_prompts_set = j.contains("fidelity_prompts");
  if (c.fidelity_prompts_set)
    c.fidelity_prompts = get_int_in(j["fidelity_prompts"], 0, 1 << 20, source + ": fidelity_prompts",
                                    "a number of task prompts scored for KLD");
  return c;
}

RunConfig load_run_config(const fs::path& path) {
  std::string text = read_file(path);
  RunConfig c = parse_run_config(parse_yaml(text, path.string()), path.string());
  c.path = path;
  c.sha256 = sha256_hex(text);
  if (c.fidelity_text && c.fidelity_text->is_relative())
    c.fidelity_text = path.parent_path() / *c.fidelity_text;
  std::error_code ec;
  if (c.fidelity_text && (!fs::is_regular_file(*c.fidelity_text, ec) || !std::ifstream(*c.fidelity_text)))
    fail("{}: fidelity_text: {} is not a readable file (hint: a relative path is taken from the config's "
         "directory)", path.string(), c.fidelity_text->string());
  // Whatever the variants: a run that cannot use the text (no second engine variant) says so, and
  // an empty one is the same mistake there as in a run that would score it.
  if (c.fidelity_text && fs::file_size(*c.fidelity_text, ec) == 0 && !ec)
    fail("{}: fidelity_text: {} is empty (hint: a plain text of a few thousand words, such as wiki.test.raw, "
         "which llama-perplexity uses)", path.string(), c.fidelity_text->string());
  // A task given as a relative .yaml path is taken from the config's directory, as fidelity_text
  // is (and from the current directory when it is not there).
  for (auto& t : c.tasks) {
    fs::path p(t);
    const bool file_like = p.has_parent_path() || p.extension() == ".yaml" || p.extension() == ".yml";
    if (file_like && p.is_relative() && fs::exists(path.parent_path() / p, ec)) t = (path.parent_path() / p).string();
  }
  return c;
}

}  // namespace qeval
