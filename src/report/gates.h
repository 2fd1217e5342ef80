// CI gates: pure evaluation of the configured gates against a results document.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace qeval {

struct Gate {
  std::string task, metric;
  std::optional<double> max_drop, max_rel_drop, significant_drop, min_value;
  int max_errors = 0;
  std::vector<std::string> variants;  // empty = every variant except the baseline
};

// One entry per (gate, variant): {"task","metric","variant","passed","why"}. A gate whose
// task or metric is missing from the results fails with a why that says so.
nlohmann::json evaluate_gates(const nlohmann::json& results, const std::vector<Gate>& gates);

}  // namespace qeval
