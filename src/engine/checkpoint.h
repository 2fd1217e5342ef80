// A model checkpoint opened for inference or conversion: a Hugging Face directory
// (config.json + model.safetensors or sharded safetensors with an index) or a single GGUF file.
// Tensors are exposed under HF names whatever the file format; GGUF names are mapped and
// llama-GGUF Q/K rows un-permuted back to HF's rotate-half order, so the transformer sees one
// layout and one RoPE convention.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/model_config.h"
#include "engine/tensor.h"
#include "engine/tokenizer.h"

namespace qeval {

class SafetensorsFile;
class GgufFile;

class Checkpoint {
 public:
  // Opens an HF model directory or a `.gguf` file, parses the config and validates the shape
  // of every tensor the architecture expects (error names the tensor, expected and actual
  // shape, and the file). Tensor bytes stay memory-mapped; only Q/K tensors that need
  // un-permuting (llama GGUF) are copied into owned buffers. Throws Error on any problem.
  static std::unique_ptr<Checkpoint> open(const std::filesystem::path& path);

  ~Checkpoint();
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  const ModelConfig& config() const { return config_; }

  // The tensor under its HF name ("model.layers.0.self_attn.q_proj.weight",
  // "model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
  // "model.layers.N.{input,post_attention}_layernorm.weight", "...mlp.{gate,up,down}_proj.weight",
  // "...self_attn.{q,k,v}_proj.bias", "...weight_scale_inv" / "...weight_scale").
  // find: nullptr if absent. get: throws Error naming the tensor and the checkpoint if absent.
  // Views stay valid as long as the Checkpoint lives. Thread-safe (read-only).
  const TensorView* find(const std::string& hf_name) const;
  const TensorView& get(const std::string& hf_name) const;

  // All tensor names (HF spelling), sorted.
  std::vector<std::string> names() const;

  // The file a tensor lives in (for error messages), "" if absent.
  std::string file_of(const std::string& hf_name) const;

  // The model's tokenizer: load_hf_tokenizer(dir) for HF directories, make_tokenizer(vocab)
  // built from the GGUF's tokenizer.ggml.* metadata for GGUF files. Throws Error naming both
  // sizes when the tokenizer has an id (any id, or bos/eos/stop) the embedding has no row for;
  // fewer tokenizer ids than rows is fine (Qwen pads 151665 ids to 151936 rows).
  std::unique_ptr<Tokenizer> tokenizer() const;

  // Lowercase hex sha256 over the config JSON and the tensor index (names, dtypes, shapes,
  // byte sizes) — not the weights themselves. Stable across runs and machines.
  std::string fingerprint() const;

  const std::filesystem::path& path() const { return path_; }
  bool is_gguf() const { return gguf_ != nullptr; }

 private:
  Checkpoint() = default;
  void open_hf(const std::filesystem::path& dir);
  void open_gguf(const std::filesystem::path& file);
  void validate_shapes() const;

  std::filesystem::path path_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::unique_ptr<GgufFile> gguf_;
  std::map<std::string, TensorView> tensors_;       // HF name -> view
  std::map<std::string, std::string> tensor_file_;  // HF name -> file path
  std::vector<std::vector<uint8_t>> owned_;         // buffers of un-permuted tensors
};

}  // namespace qeval
