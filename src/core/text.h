// Text utilities shared by several modules.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qeval {

// Number of Unicode code points in UTF-8 text (continuation bytes are not counted; invalid
// bytes count as one each).
size_t utf8_length(std::string_view s);

// Byte offset of the code point with index `cp` (clamped to s.size()).
size_t utf8_byte_offset(std::string_view s, size_t cp);

// Appends code point `cp` encoded as UTF-8 (no validation of surrogates).
void utf8_append(std::string& out, uint32_t cp);

// Length of the longest prefix of `s` that is complete, valid UTF-8.
size_t utf8_valid_prefix(std::string_view s);

std::string trim(std::string_view s);  // strips ASCII whitespace on both ends, as Python's strip()
bool starts_with(std::string_view s, std::string_view p);
bool ends_with(std::string_view s, std::string_view p);
std::vector<std::string> split(std::string_view s, char sep);

// Git revision the binary was built from ("unknown" outside a checkout).
const char* git_revision();

}  // namespace qeval
