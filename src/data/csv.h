// RFC 4180 CSV reader: quoted fields with embedded commas, doubled quotes and line breaks
// (LF or CRLF), CRLF or LF record ends, optional final newline. Fields are returned verbatim
// (no trimming, no type conversion); a leading UTF-8 byte order mark is dropped.
// A double quote inside an unquoted field (`a"b`) is kept literally by default, as Python's csv
// module and pandas do: the official MMLU release has one such row (val/college_medicine_val.csv,
// record 6, `...Will to Truth?",...`). Pass strict = true to reject it instead.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace qeval {

struct CsvRecord {
  std::vector<std::string> fields;
  size_t line = 0;  // 1-based line on which the record starts
};

// Parses CSV text. `name` (usually the file path) prefixes error messages. When
// `expected_fields` > 0 every record must have exactly that many fields. Throws Error
// "<name>: record N (line L): ..." on an unterminated quoted field, a quote inside an unquoted
// field (strict only), a stray character after a closing quote, or a wrong field count.
// Every line of the input belongs to some record: an empty line is a record with one empty
// field (never skipped).
std::vector<CsvRecord> parse_csv(std::string_view text, const std::string& name, size_t expected_fields = 0,
                                 bool strict = false);

// Reads and parses a CSV file (see parse_csv); errors name the file.
std::vector<CsvRecord> read_csv(const std::filesystem::path& file, size_t expected_fields = 0, bool strict = false);

}  // namespace qeval
