#include "runner/run_config.h"

#include <algorithm>
#include <set>

#include "core/error.h"
#include "core/fs.h"
#include "runner/yaml_json.h"

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

}  // namespace

RunConfig parse_run_config(const nlohmann::json& j, const std::string& source) {
  RunConfig c;
  c.raw = j;
  if (!j.is_object()) fail("{}: the run config must be a mapping with name, tasks and variants", source);
  check_keys(j, {"name", "tasks", "limit", "baseline", "variants", "gates", "fidelity_text", "fidelity_prompts"}, source);
  c.name = get_string(j, "name", source, true);
  if (c.name.empty() || c.name.find('/') != std::string::npos || c.name == "." || c.name == "..")
    fail("{}: name: '{}' must be a non-empty file name (it names the output directory)", source, c.name);

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

  if (j.contains("limit") && !j["limit"].is_null()) {
    if (!j["limit"].is_number_integer() || j["limit"].get<long long>() <= 0)
      fail("{}: limit: expected a positive integer (docs per task)", source);
    c.limit = j["limit"].get<int>();
  }

  if (!j.contains("variants") || !j["variants"].is_array() || j["variants"].empty())
    fail("{}: variants: expected a non-empty list of variants (each with name and backend)", source);
  std::set<std::string> names;
  for (size_t i = 0; i < j["variants"].size(); ++i) {
    const auto& v = j["variants"][i];
    std::string where = fmt::format("{}: variants[{}]", source, i);
    if (!v.is_object()) fail("{}: expected a mapping", where);
    std::string name = get_string(v, "name", where, true);
    get_string(v, "backend", where, true);
    if (name.empty() || name.find_first_of("/\\ ") != std::string::npos)
      fail("{}.name: '{}' must be non-empty without '/', '\\' or spaces (it names a directory)", where, name);
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
      gc.max_drop = get_number(g, "max_drop", where);
      gc.max_rel_drop = get_number(g, "max_rel_drop", where);
      gc.significant_drop = get_number(g, "significant_drop", where);
      gc.min_value = get_number(g, "min_value", where);
      if (gc.significant_drop && (*gc.significant_drop <= 0 || *gc.significant_drop >= 1))
        fail("{}.significant_drop: expected a significance level between 0 and 1 (e.g. 0.05)", where);
      if (g.contains("max_errors")) {
        if (!g["max_errors"].is_number_integer() || g["max_errors"].get<int>() < 0)
          fail("{}.max_errors: expected a non-negative integer", where);
        gc.max_errors = g["max_errors"].get<int>();
      }
      if (g.contains("variants")) {
        if (!g["variants"].is_array()) fail("{}.variants: expected a list of variant names", where);
        for (const auto& v : g["variants"]) {
          if (!v.is_string() || !names.count(v.get<std::string>()))
            fail("{}.variants: '{}' is not the name of a variant", where, v.dump());
          gc.variants.push_back(v.get<std::string>());
        }
      }
      if (std::find(c.tasks.begin(), c.tasks.end(), gc.task) == c.tasks.end() &&
          gc.task.rfind("mmlu_", 0) != 0)
        fail("{}.task: '{}' is not one of the run's tasks", where, gc.task);
      if (!gc.max_drop && !gc.max_rel_drop && !gc.significant_drop && !gc.min_value &&
          !g.contains("max_errors"))
        fail("{}: a gate needs one of max_drop, max_rel_drop, significant_drop, min_value, max_errors", where);
      c.gates.push_back(gc);
    }
  }
  if (j.contains("fidelity_text")) c.fidelity_text = get_string(j, "fidelity_text", source, true);
  if (j.contains("fidelity_prompts")) {
    if (!j["fidelity_prompts"].is_number_integer() || j["fidelity_prompts"].get<int>() < 0)
      fail("{}: fidelity_prompts: expected a non-negative integer (task prompts scored for KLD)", source);
    c.fidelity_prompts = j["fidelity_prompts"].get<int>();
  }
  return c;
}

RunConfig load_run_config(const fs::path& path) {
  std::string text = read_file(path);
  RunConfig c = parse_run_config(parse_yaml(text, path.string()), path.string());
  c.path = path;
  c.sha256 = sha256_hex(text);
  if (c.fidelity_text && c.fidelity_text->is_relative())
    c.fidelity_text = path.parent_path() / *c.fidelity_text;
  return c;
}

}  // namespace qeval
