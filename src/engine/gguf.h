// GGUF (v2 and v3) reader: header, metadata key/values of every type, tensor infos, alignment
// and data offsets, all validated before use; F32/F16/BF16 tensors as views into the mapping
// (shape reversed to HF's outermost-first order). Also the llama.cpp -> HF helpers: tensor
// name mapping, model config, tokenizer vocabulary and the Q/K row un-permutation.
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

#include <nlohmann/json.hpp>

#include "engine/mmap_file.h"
#include "engine/model_config.h"
#include "engine/tensor.h"
#include "engine/tokenizer.h"

namespace qeval {

// GGUF metadata value types (gguf_type).
enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
  U64 = 10, I64 = 11, F64 = 12,
};

struct GgufValue {
  GgufType type = GgufType::U8;
  GgufType elem_type = GgufType::U8;  // arrays only
  nlohmann::json value;               // number / bool / string / array (strings are raw bytes)
};

// A tensor as GGUF describes it; `view` is filled only for F32/F16/BF16 (shape reversed to
// outermost-first, e.g. token_embd [vocab, hidden]).
struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> ne;   // GGUF dimension order: ne[0] innermost
  uint32_t ggml_type = 0;
  uint64_t offset = 0;        // relative to the data section
  uint64_t nbytes = 0;        // 0 for types whose size qeval does not know
};

// "F32", "Q4_0", "Q8_0", ...; "type<N>" for unknown codes.
std::string ggml_type_name(uint32_t t);

class GgufFile {
 public:
  // Maps and validates `path`. Throws Error naming the file (and key / tensor) on any problem.
  static std::unique_ptr<GgufFile> open(const std::filesystem::path& path);
  // Validates `bytes` without copying; views point into `bytes`, which must outlive the
  // result. `source` names the input in errors. (Fuzz entry.)
  static std::unique_ptr<GgufFile> parse(std::span<const uint8_t> bytes, std::string source);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::string& source() const { return source_; }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const std::vector<GgufTensorInfo>& tensor_infos() const { return infos_; }

  // Typed metadata accessors; nullptr/nullopt when absent; Error naming the key when present
  // with an incompatible type.
  const GgufValue* find_kv(const std::string& key) const;
  std::optional<int64_t> get_int(const std::string& key) const;
  std::optional<double> get_float(const std::string& key) const;   // accepts integer types too
  std::optional<bool> get_bool(const std::string& key) const;
  std::optional<std::string> get_string(const std::string& key) const;

  // The tensor under its GGUF name as a view. Throws Error for tensors of types other than
  // F32/F16/BF16 ("unsupported tensor type Q4_0 ... hint: use an F16/BF16/F32 GGUF"); nullptr
  // when absent.
  const TensorView* find(const std::string& gguf_name) const;
  // All tensors as views; throws like find() when any is of an unsupported type.
  std::vector<const TensorView*> views() const;

  // general.architecture ("llama", "qwen2", ...); Error when missing.
  std::string architecture() const;
  // Hyperparameters from {arch}.* keys (+ tensor shapes for vocab size, tying, biases).
  ModelConfig model_config() const;
  // Vocabulary from tokenizer.ggml.* keys (+ tokenizer.chat_template).
  VocabData vocab() const;

 private:
  GgufFile() = default;
  void parse_impl(std::span<const uint8_t> bytes);

  std::optional<MappedFile> map_;
  std::string source_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensorInfo> infos_;
  std::map<std::string, size_t> index_;
  std::vector<std::optional<TensorView>> views_;  // parallel to infos_
};

// HF name of a llama.cpp tensor name ("blk.3.attn_q.weight" ->
// "model.layers.3.self_attn.q_proj.weight"); the GGUF name itself when there is no mapping.
std::string gguf_to_hf_name(const std::string& gguf_name);

// Inverse of llama.cpp's HF->GGUF Q/K permutation for `llama`-architecture files:
// convert did W' = W.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2), i.e. GGUF row
// h*hd + 2*j + i came from HF row h*hd + i*hd/2 + j (hd = rows / n_head). `src` is [rows, cols]
// with rows elements of `row_bytes` bytes; writes HF rotate-half order into `dst`. n_head is
// the head count of that projection (n_kv_heads for K). Throws Error when rows is not a
// multiple of 2*n_head.
void unpermute_qk_rows(const void* src, void* dst, int64_t rows, size_t row_bytes, int64_t n_head);

// The forward permutation (HF -> GGUF), as llama.cpp's converter applies it (for fixtures/tests).
void permute_qk_rows(const void* src, void* dst, int64_t rows, size_t row_bytes, int64_t n_head);

}  // namespace qeval
