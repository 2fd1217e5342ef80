#include "runner/sample_log.h"

#include <unistd.h>

#include "core/error.h"
#include "core/fs.h"

namespace qeval {

std::map<int, nlohmann::json> read_sample_log(const fs::path& path) {
  std::map<int, nlohmann::json> out;
  std::error_code ec;
  if (!fs::exists(path, ec)) return out;
  std::string text = read_file(path);
  size_t pos = 0;
  int line_no = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    ++line_no;
    if (nl == std::string::npos) break;  // torn final line: never completed, ignore
    std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 1;
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("doc_id") || !j["doc_id"].is_number_integer())
      fail("{}:{}: malformed sample line (hint: the file was edited or corrupted; move it away "
           "and --resume to redo those samples)", path.string(), line_no);
    // Read the id first: json's operator= takes its argument by value, and C++17 evaluates
    // the right side of `=` first, so `out[j["doc_id"]] = std::move(j)` reads a moved-from j.
    const int doc_id = j["doc_id"].get<int>();
    out[doc_id] = std::move(j);
  }
  return out;
}

SampleLog::SampleLog(const fs::path& path) : path_(path) {
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (fs::exists(path, ec)) {
    std::string text = read_file(path);
    size_t keep = text.rfind('\n');
    keep = keep == std::string::npos ? 0 : keep + 1;
    if (keep != text.size() && truncate(path.c_str(), static_cast<off_t>(keep)) != 0)
      fail("{}: cannot repair a torn last line (is the file writable?)", path.string());
  }
  file_ = std::fopen(path.c_str(), "ab");
  if (!file_) fail("{}: cannot open for appending (is the directory writable?)", path.string());
}

SampleLog::~SampleLog() {
  if (file_) std::fclose(file_);
}

void SampleLog::append(const nlohmann::json& sample) {
  std::string line = sample.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line += '\n';
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
    fail("{}: write failed (disk full?)", path_.string());
}

}  // namespace qeval
