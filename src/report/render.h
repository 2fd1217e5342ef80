// Renders a run's results.json (schema qeval.results/1) into human formats: the markdown
// side-by-side report, an SVG bar chart with 95% error bars, and JUnit XML for CI. Pure
// functions of the JSON; nothing here reads samples or talks to backends.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace qeval {

// The full report.md text. `svg_file` is the chart's file name to link ("" = no chart).
std::string render_markdown(const nlohmann::json& results, const std::string& svg_file);

// A self-contained SVG: one group of bars per (task, metric) row of the main table, one bar
// per variant, error bars = value ± 1.96·stderr.
std::string render_svg(const nlohmann::json& results);

// JUnit XML: one test case per gate and variant (failure message = the gate's `why`).
std::string render_junit(const nlohmann::json& results);

// Throws Error naming `source` when `results` is not a qeval.results/1 document.
void validate_results(const nlohmann::json& results, const std::string& source);

}  // namespace qeval
