// Model hyperparameters of the decoder-only transformers the engine runs (Llama, Qwen2,
// Mistral), parsed from a Hugging Face config.json or from a GGUF's metadata, plus the rules
// that derive defaults (head_dim = hidden / heads, kv heads = heads, ...).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

namespace qeval {

struct ModelConfig {
  std::string arch;                   // "llama" | "qwen2" | "mistral"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;               // default hidden_size / n_heads
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::string rope_scaling_type;      // "" (none) | "linear" | "llama3"
  double rope_factor = 1.0;           // linear and llama3
  double rope_low_freq_factor = 1.0;  // llama3
  double rope_high_freq_factor = 4.0; // llama3
  int64_t rope_original_max_position = 0;  // llama3: original_max_position_embeddings
  bool tie_word_embeddings = false;
  bool attention_bias = false;        // q/k/v projections carry a bias (Qwen2)
  nlohmann::json quantization_config; // null when the checkpoint is not quantised
  std::string torch_dtype;            // "bfloat16", "float16", "float32" or "" when unknown
  // Multi-token-prediction layers stored after the decoder's (DeepSeek-V3: model.layers.61 with
  // 61 layers): the engine does not run them; the loader accepts their tensors.
  int64_t num_nextn_predict_layers = 0;

  // Human-readable description of the first inconsistency ("n_heads 7 does not divide
  // hidden_size 64"), or "" when the config is usable.
  std::string validate() const;
};

// Parses a HF config.json object. `source` names the file in error messages. Accepts
// LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM (by `architectures` or `model_type`).
// Throws Error naming the file and field for missing/invalid fields or an unsupported arch.
ModelConfig parse_hf_config(const nlohmann::json& j, const std::string& source);

// Reads and parses `<dir>/config.json`.
ModelConfig load_hf_config(const std::filesystem::path& model_dir);

// The config as JSON (stable key order), used for fingerprints and logs.
nlohmann::json config_to_json(const ModelConfig& c);

}  // namespace qeval
