// Streaming safetensors writer: the header is computed up front from the tensor specs, then
// tensor bytes are appended in spec order (a tensor may arrive in several pieces), so memory
// stays bounded whatever the tensor sizes. The file is written under a temporary name and
// renamed into place by finish(), so a reader never sees a partial file.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace qeval {

struct TensorSpec {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t nbytes() const;  // numel x dtype size
};

// The file prefix for `specs` in order: u64 LE header length + JSON header (data_offsets
// consecutive from 0, `__metadata__` when non-empty), padded with spaces to a multiple of 8.
std::string safetensors_header(const std::vector<TensorSpec>& specs,
                               const std::map<std::string, std::string>& metadata);

class SafetensorsWriter {
 public:
  // Creates `path` + ".partial" (overwriting a leftover one; parent directories are created)
  // and writes the header. Throws
  // Error when the file cannot be created. Not thread-safe.
  SafetensorsWriter(const std::filesystem::path& path, std::vector<TensorSpec> specs,
                    std::map<std::string, std::string> metadata = {});
  // Removes the partial file unless finish() succeeded.
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Appends the next `n` data bytes (they belong to the current tensor, then the next, in spec
  // order). Throws Error when more bytes arrive than the specs describe, or on a write error.
  void append(const void* data, size_t n);
  // Writes a whole tensor; `name` must be the next tensor in spec order and `n` its size.
  void write(const std::string& name, const void* data, size_t n);
  // Name of the tensor the next byte belongs to ("" when all are complete).
  std::string current() const;
  // Checks every byte was written, flushes, fsyncs and renames the file into place.
  void finish();

  uint64_t data_bytes() const { return total_; }

 private:
  std::filesystem::path path_, tmp_;
  std::vector<TensorSpec> specs_;
  std::vector<uint64_t> ends_;   // cumulative end offset of each tensor
  uint64_t total_ = 0, written_ = 0;
  FILE* f_ = nullptr;
  bool done_ = false;
};

}  // namespace qeval
