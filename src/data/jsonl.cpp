// JSON Lines reader built on nlohmann::json.
#include "data/jsonl.h"

#include "core/error.h"
#include "core/fs.h"

namespace qeval {

namespace {
bool is_blank(std::string_view s) {
  return s.find_first_not_of(" \t\r\n") == std::string_view::npos;
}
}  // namespace

std::vector<nlohmann::json> parse_jsonl(std::string_view text, const std::string& name) {
  std::vector<nlohmann::json> out;
  size_t pos = 0;
  size_t line_no = 0;
  while (pos < text.size()) {
    ++line_no;
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (is_blank(line)) {
      if (is_blank(text.substr(pos))) break;  // only blank lines remain
      fail("{}:{}: empty line inside the file (every line must hold one JSON value)", name, line_no);
    }
    try {
      out.push_back(nlohmann::json::parse(line));
    } catch (const nlohmann::json::parse_error& e) {
      fail("{}:{}: malformed JSON (byte {} of the line): {}", name, line_no, e.byte, e.what());
    }
    pos = end + 1;
  }
  return out;
}

std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& file) {
  return parse_jsonl(read_file(file), file.string());
}

}  // namespace qeval
