// Per-sample logs: samples/<variant>/<task>.jsonl, one JSON object per finished sample,
// appended and flushed as each sample finishes. They are the run's memory: --resume reads
// them back, and results.json is computed from them.
#pragma once

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace qeval {

// Reads a sample log. Returns doc_id -> the last line logged for that doc (a retried sample
// supersedes its earlier error line). A torn final line (the process was killed mid-write) is
// ignored; any other malformed line is an Error naming file and line. Missing file = empty.
std::map<int, nlohmann::json> read_sample_log(const std::filesystem::path& path);

// Append-only writer. Opening repairs a torn final line (truncates to the last newline) so
// appended lines stay well-formed. Not thread-safe: call from one thread.
class SampleLog {
 public:
  explicit SampleLog(const std::filesystem::path& path);
  ~SampleLog();
  SampleLog(const SampleLog&) = delete;
  SampleLog& operator=(const SampleLog&) = delete;

  // Writes one line and flushes it to the OS (survives kill -9; no fsync).
  void append(const nlohmann::json& sample);

 private:
  std::filesystem::path path_;
  FILE* file_ = nullptr;
};

}  // namespace qeval
