// Conversion of YAML nodes (yaml-cpp) to JSON values, so configs can be validated and passed
// around as nlohmann::json. Plain scalars become bool/int/float/null when they read as such
// (YAML 1.2 core schema); quoted scalars stay strings. A key given twice in one mapping is an
// Error naming `source` and its line, and so is an alias inside its own anchor (`a: &x [*x]`),
// nesting past 256 levels, or aliases that expand past a million values.
#pragma once

#include <string>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

namespace qeval {

nlohmann::json yaml_to_json(const YAML::Node& node, const std::string& source);

// Parses YAML text; Error naming `source` and the line on a syntax error.
YAML::Node load_yaml(const std::string& text, const std::string& source);

// Parses YAML text into JSON; Error naming `source` and the line on a syntax error.
nlohmann::json parse_yaml(const std::string& text, const std::string& source);

}  // namespace qeval
