// safetensors reader: validates the whole header before anything is used (8-byte LE header
// size, JSON, dtypes, shapes x dtype size = data_offsets range, ranges inside the file, sorted
// without overlap or holes, checked 64-bit math) and returns views into the mapping. Also the
// sharded layout's `model.safetensors.index.json`.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/mmap_file.h"
#include "engine/tensor.h"

namespace qeval {

// "F32" -> DType::F32, ...; nullopt for dtypes qeval does not read (F64, BOOL, F8_E5M2, ...).
std::optional<DType> dtype_from_name(std::string_view name);

class SafetensorsFile {
 public:
  // Maps and validates `path`. Throws Error naming the file (and tensor) on any problem.
  static std::unique_ptr<SafetensorsFile> open(const std::filesystem::path& path);

  // Validates `bytes` as a whole safetensors file without copying; the views point into
  // `bytes`, which must outlive the result. `source` names the input in errors. (Fuzz entry.)
  static std::unique_ptr<SafetensorsFile> parse(std::span<const uint8_t> bytes, std::string source);

  // Tensors in file (data offset) order. Data pointers may be unaligned (header sizes need not
  // be multiples of 8): read them with memcpy or to_f32.
  const std::vector<TensorView>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorView* find(std::string_view name) const;
  // The `__metadata__` string map (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& source() const { return source_; }
  // Byte offset of the data section in the file (8 + header size).
  uint64_t data_start() const { return data_start_; }
  // The mapping (nullptr for parse()).
  const MappedFile* mapping() const { return map_ ? &*map_ : nullptr; }

 private:
  SafetensorsFile() = default;
  void parse_impl(std::span<const uint8_t> bytes);

  std::optional<MappedFile> map_;
  std::string source_;
  uint64_t data_start_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// A parsed `model.safetensors.index.json`: tensor name -> shard file name (relative).
struct SafetensorsIndex {
  std::map<std::string, std::string> weight_map;
  std::vector<std::string> files() const;  // distinct shard file names, sorted
};

// Reads an index file. Throws Error naming the file and field when malformed (shard names
// must be plain file names, no path separators).
SafetensorsIndex read_safetensors_index(const std::filesystem::path& index_json);

}  // namespace qeval
