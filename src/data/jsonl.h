// JSON Lines reader: one JSON value per line, LF or CRLF line ends.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace qeval {

// Parses JSONL text into one value per line. `name` (usually the file path) prefixes errors.
// Blank lines at the very end are accepted; any other blank or malformed line throws Error
// "<name>:<line>: ..." (lines are 1-based). Nothing is skipped.
std::vector<nlohmann::json> parse_jsonl(std::string_view text, const std::string& name);

// Reads and parses a JSONL file (see parse_jsonl); errors name the file.
std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& file);

}  // namespace qeval
