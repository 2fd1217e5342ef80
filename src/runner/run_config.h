// The run config (YAML): which tasks, which variants (backends), which baseline, which gates.
// Parsed strictly: unknown keys anywhere are an Error naming the file and key.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "report/gates.h"

namespace qeval {

struct RunConfig {
  std::string name;
  std::filesystem::path path;             // the YAML file
  std::string sha256;                     // of the YAML text
  std::vector<std::string> tasks;         // built-in names or paths to task YAMLs
  std::optional<int> limit;               // per (sub)task
  std::string baseline;                   // variant name; default: the first variant
  std::vector<nlohmann::json> variants;   // each has at least name and backend
  std::vector<Gate> gates;
  std::optional<std::filesystem::path> fidelity_text;  // text for KLD/PPL of engine variants
  int fidelity_prompts = 16;              // task prompts scored for fidelity (0 = none)
  bool fidelity_prompts_set = false;      // fidelity_prompts given in the config
  nlohmann::json raw;                     // the whole config as JSON
};

// Reads and validates a run config. Throws Error (file + key + hint) on any problem.
RunConfig load_run_config(const std::filesystem::path& path);

// Validates an already-parsed config; `source` names it in messages.
RunConfig parse_run_config(const nlohmann::json& j, const std::string& source);

// Throws Error when `obj` has a key outside `allowed`, naming `where` and the key.
void check_keys(const nlohmann::json& obj, const std::vector<std::string>& allowed,
                const std::string& where);

}  // namespace qeval
