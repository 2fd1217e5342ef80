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

// Length of the prefix of `s` that ends with a complete unit: every byte but an unfinished
// multi-byte sequence at the end (an invalid byte counts as a unit of its own, to be shown as
// U+FFFD). For streaming output; utf8_first_invalid validates.
size_t utf8_valid_prefix(std::string_view s);

// Offset of the first byte of `s` that is not part of well-formed UTF-8 (RFC 3629: no overlong
// forms, surrogates or code points past U+10FFFF; a sequence cut off at the end is invalid), or
// std::string_view::npos when all of `s` is well-formed.
size_t utf8_first_invalid(std::string_view s);

std::string trim(std::string_view s);  // strips ASCII whitespace on both ends

// Python's str.isspace() for one code point: ASCII whitespace, \x1c-\x1f, U+0085, U+00A0,
// U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000.
bool py_isspace(uint32_t cp);

// Python's str.strip() with no argument on UTF-8 text (Jinja's `trim` too): removes leading and
// trailing code points for which py_isspace is true.
std::string py_strip(std::string_view s);

// Byte length of `s` without its trailing run of py_isspace code points (Python's rstrip()).
size_t py_rstrip_size(std::string_view s);
bool starts_with(std::string_view s, std::string_view p);
bool ends_with(std::string_view s, std::string_view p);
std::vector<std::string> split(std::string_view s, char sep);

// Git revision the binary was built from ("unknown" outside a checkout, "-dirty" appended when
// tracked files differed from it).
const char* git_revision();

}  // namespace qeval
