// `qeval run`: from a run config to samples, results.json, report.md and gates.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace qeval {

struct RunOptions {
  std::filesystem::path config;
  std::optional<std::filesystem::path> out;   // default reports/<config name>/
  std::optional<int> limit;                   // overrides the config's limit
  bool resume = false;                        // skip samples already answered
  bool overwrite = false;                     // discard existing samples
  std::optional<std::filesystem::path> junit; // also write JUnit XML here
};

// Runs everything; returns 0 (all gates passed), 1 (a gate failed). Throws Error (exit 2)
// when the run cannot be done.
int run_eval(const RunOptions& opts);

// `qeval prompts`: prints one JSON line per test doc of `task` (as the config's tasks would
// build it) to stdout.
void print_prompts(const std::filesystem::path& config, const std::string& task, std::optional<int> limit);

// `qeval report`: re-renders report.md (and the SVG beside it) from results.json.
void rerender_report(const std::filesystem::path& results, const std::optional<std::filesystem::path>& out_md);

}  // namespace qeval
