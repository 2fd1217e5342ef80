// RFC 4180 CSV parser: a single pass over the bytes with two states (in / out of quotes).
#include "data/csv.h"

#include "core/error.h"
#include "core/fs.h"

namespace qeval {

namespace {
// A byte as it should appear in an error message.
std::string show_char(char c) {
  if (c == '\r') return "\\r";
  if (c == '\t') return "\\t";
  if (static_cast<unsigned char>(c) < 0x20) return fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
  return std::string(1, c);
}
}  // namespace

std::vector<CsvRecord> parse_csv(std::string_view text, const std::string& name, size_t expected_fields,
                                 bool strict) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  std::vector<CsvRecord> records;
  const size_t n = text.size();
  size_t i = 0;
  size_t line = 1;
  while (i < n) {
    CsvRecord rec;
    rec.line = line;
    const size_t record_no = records.size() + 1;
    // One iteration per field; ends at a record end (LF, CRLF) or at the end of the text.
    bool record_done = false;
    while (!record_done) {
      std::string field;
      if (i < n && text[i] == '"') {
        const size_t open_line = line;
        ++i;
        bool closed = false;
        while (i < n) {
          char c = text[i];
          if (c == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            ++i;
            closed = true;
            break;
          }
          if (c == '\n') ++line;
          field += c;
          ++i;
        }
        if (!closed)
          fail("{}: record {} (line {}): quoted field opened on line {} is never closed (unterminated quote)",
               name, record_no, rec.line, open_line);
        // After the closing quote only a separator, a record end or the end may follow.
        if (i < n && text[i] != ',' && text[i] != '\n' && !(text[i] == '\r' && i + 1 < n && text[i + 1] == '\n') &&
            !(text[i] == '\r' && i + 1 == n))
          fail("{}: record {} (line {}): unexpected character '{}' after a closing quote in field {} "
               "(quotes inside a quoted field must be doubled)",
               name, record_no, line, show_char(text[i]), rec.fields.size() + 1);
      } else {
        while (i < n) {
          char c = text[i];
          if (c == ',' || c == '\n' || (c == '\r' && (i + 1 == n || text[i + 1] == '\n'))) break;
          if (c == '"' && strict)
            fail("{}: record {} (line {}): stray quote inside unquoted field {} "
                 "(a field containing quotes must be enclosed in quotes, with inner quotes doubled)",
                 name, record_no, line, rec.fields.size() + 1);
          field += c;
          ++i;
        }
      }
      rec.fields.push_back(std::move(field));
      if (i >= n) {
        record_done = true;
      } else if (text[i] == ',') {
        ++i;
        if (i == n) rec.fields.emplace_back();  // "a,b," at the very end: a last empty field
        record_done = (i == n);
      } else {  // LF, CRLF or a final lone CR
        if (text[i] == '\r') ++i;
        if (i < n) {
          ++i;  // the LF
          ++line;
        }
        record_done = true;
      }
    }
    if (expected_fields > 0 && rec.fields.size() != expected_fields)
      fail("{}: record {} (line {}): expected {} fields, found {}", name, record_no, rec.line, expected_fields,
           rec.fields.size());
    records.push_back(std::move(rec));
  }
  return records;
}

std::vector<CsvRecord> read_csv(const std::filesystem::path& file, size_t expected_fields, bool strict) {
  return parse_csv(read_file(file), file.string(), expected_fields, strict);
}

}  // namespace qeval
