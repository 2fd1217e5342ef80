// HF config.json parsing for Llama / Qwen2 / Mistral, defaults and consistency checks.
#include "engine/model_config.h"

#include <cmath>

#include "core/error.h"
#include "core/fs.h"

namespace qeval {

std::string ModelConfig::validate() const {
  // Upper bounds far above any real model (the largest have ~256k vocabularies, 10M-token
  // contexts, hidden 16k, ffn 53k, 128 layers, 128 heads) that keep every size the loader and
  // the engine derive (n_heads * head_dim, vocab * hidden, the KV cache per token) well inside
  // int64, and token ids and positions inside int32.
  constexpr int64_t kMaxIds = (int64_t{1} << 31) - 1;  // vocab_size, positions: int32
  constexpr int64_t kMaxWidth = int64_t{1} << 24;      // hidden, ffn, n_heads * head_dim
  constexpr int64_t kMaxCount = int64_t{1} << 16;      // layers, heads, head_dim
  auto in_range = [](int64_t v, int64_t hi) { return v > 0 && v <= hi; };
  auto range_msg = [](const char* field, int64_t v, int64_t hi) {
    return v > 0 ? fmt::format("{} must be at most {}, got {} (hint: is config.json for this model?)", field, hi, v)
                 : fmt::format("{} must be positive, got {}", field, v);
  };
  if (!in_range(vocab_size, kMaxIds)) return range_msg("vocab_size", vocab_size, kMaxIds);
  if (!in_range(hidden_size, kMaxWidth)) return range_msg("hidden_size", hidden_size, kMaxWidth);
  if (!in_range(intermediate_size, kMaxWidth)) return range_msg("intermediate_size", intermediate_size, kMaxWidth);
  if (!in_range(n_layers, kMaxCount)) return range_msg("num_hidden_layers", n_layers, kMaxCount);
  if (!in_range(n_heads, kMaxCount)) return range_msg("num_attention_heads", n_heads, kMaxCount);
  if (!in_range(n_kv_heads, kMaxCount)) return range_msg("num_key_value_heads", n_kv_heads, kMaxCount);
  if (n_heads % n_kv_heads != 0)
    return fmt::format("num_attention_heads {} is not a multiple of num_key_value_heads {}", n_heads, n_kv_heads);
  if (!in_range(head_dim, kMaxCount) || head_dim % 2 != 0)
    return head_dim > kMaxCount ? range_msg("head_dim", head_dim, kMaxCount)
                                : fmt::format("head_dim must be positive and even, got {}", head_dim);
  if (n_heads * head_dim > kMaxWidth)
    return fmt::format("num_attention_heads {} * head_dim {} = {} must be at most {}", n_heads, head_dim,
                       n_heads * head_dim, kMaxWidth);
  if (!in_range(max_position_embeddings, kMaxIds))
    return range_msg("max_position_embeddings", max_position_embeddings, kMaxIds);
  if (num_nextn_predict_layers < 0 || num_nextn_predict_layers > kMaxCount)
    return fmt::format("num_nextn_predict_layers must be between 0 and {}, got {}", kMaxCount,
                       num_nextn_predict_layers);
  // !(x > 0) also catches NaN; a theta or eps of inf makes every rotation or norm NaN.
  if (!(rms_norm_eps > 0) || !std::isfinite(rms_norm_eps))
    return fmt::format("rms_norm_eps must be positive and finite, got {}", rms_norm_eps);
  if (!(rope_theta > 0) || !std::isfinite(rope_theta))
    return fmt::format("rope_theta must be positive and finite, got {}", rope_theta);
  if (!rope_scaling_type.empty() && (!(rope_factor > 0) || !std::isfinite(rope_factor)))
    return fmt::format("rope_scaling.factor must be positive and finite, got {}", rope_factor);
  if (rope_scaling_type == "llama3" &&
      (!in_range(rope_original_max_position, kMaxIds) || !(rope_high_freq_factor > rope_low_freq_factor) ||
       !std::isfinite(rope_high_freq_factor) || !std::isfinite(rope_low_freq_factor)))
    return fmt::format("rope_scaling llama3 needs 0 < original_max_position_embeddings <= {} and finite "
                       "high_freq_factor > low_freq_factor", kMaxIds);
  return "";
}

ModelConfig parse_hf_config(const nlohmann::json& j, const std::string& src) {
  if (!j.is_object()) fail("{}: not a JSON object", src);
  // Typed getters: null counts as absent, as in transformers (PretrainedConfig takes a null
  // torch_dtype as "not given"); any other wrong type names the field and the value.
  auto get_str = [&](const nlohmann::json& o, const char* key, const std::string& def,
                     const char* where) -> std::string {
    auto it = o.find(key);
    if (it == o.end() || it->is_null()) return def;
    if (!it->is_string()) fail("{}: field {}{} must be a string, got {}", src, where, key, it->dump());
    return it->get<std::string>();
  };
  auto get_bool = [&](const char* key, bool def) -> bool {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return def;
    if (!it->is_boolean()) fail("{}: field {} must be true or false, got {}", src, key, it->dump());
    return it->get<bool>();
  };
  ModelConfig c;
  std::string archname, model_type = get_str(j, "model_type", "", "");
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string())
    archname = j["architectures"][0].get<std::string>();
  if (archname == "LlamaForCausalLM" || (archname.empty() && model_type == "llama")) c.arch = "llama";
  else if (archname == "Qwen2ForCausalLM" || (archname.empty() && model_type == "qwen2")) c.arch = "qwen2";
  else if (archname == "MistralForCausalLM" || (archname.empty() && model_type == "mistral")) c.arch = "mistral";
  else
    fail("{}: architectures '{}' (model_type '{}') is not supported (qeval runs LlamaForCausalLM, Qwen2ForCausalLM, "
         "MistralForCausalLM)", src, archname, model_type);

  auto get_int = [&](const char* key, std::optional<int64_t> def) -> int64_t {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      if (!def) fail("{}: missing field {}", src, key);
      return *def;
    }
    if (!it->is_number_integer()) fail("{}: field {} must be an integer, got {}", src, key, it->dump());
    return it->get<int64_t>();
  };
  auto get_num = [&](const nlohmann::json& o, const char* key, double def, const char* where) -> double {
    auto it = o.find(key);
    if (it == o.end() || it->is_null()) return def;
    if (!it->is_number()) fail("{}: field {}{} must be a number, got {}", src, where, key, it->dump());
    return it->get<double>();
  };
  c.vocab_size = get_int("vocab_size", std::nullopt);
  c.hidden_size = get_int("hidden_size", std::nullopt);
  c.intermediate_size = get_int("intermediate_size", std::nullopt);
  c.n_layers = get_int("num_hidden_layers", std::nullopt);
  c.n_heads = get_int("num_attention_heads", std::nullopt);
  c.n_kv_heads = get_int("num_key_value_heads", c.n_heads);
  c.head_dim = get_int("head_dim", c.n_heads > 0 ? c.hidden_size / c.n_heads : 0);
  c.max_position_embeddings = get_int("max_position_embeddings", 2048);
  c.num_nextn_predict_layers = get_int("num_nextn_predict_layers", 0);
  // Sliding-window attention (Mistral-7B-v0.1: 4096). The engine's attention is full, which
  // equals the window's only while a sequence fits in it: the context is cut to the window (a
  // longer prompt is left-truncated and counted as such). Qwen2 uses the window only with
  // use_sliding_window true (its default is false), and then only from layer max_window_layers.
  bool windowed = c.arch != "qwen2";
  if (auto u = j.find("use_sliding_window"); u != j.end() && !u->is_null()) {
    if (!u->is_boolean()) fail("{}: use_sliding_window must be true or false, got {}", src, u->dump());
    windowed = u->get<bool>();
  }
  if (auto mw = j.find("max_window_layers");
      c.arch == "qwen2" && windowed && mw != j.end() && mw->is_number_integer() && mw->get<int64_t>() >= c.n_layers)
    windowed = false;
  if (auto sw = j.find("sliding_window"); windowed && sw != j.end() && sw->is_number_integer() &&
                                          sw->get<int64_t>() > 0 && sw->get<int64_t>() < c.max_position_embeddings)
    c.max_position_embeddings = sw->get<int64_t>();
  c.rms_norm_eps = get_num(j, "rms_norm_eps", 1e-6, "");
  c.rope_theta = get_num(j, "rope_theta", 10000.0, "");
  c.tie_word_embeddings = get_bool("tie_word_embeddings", false);
  const bool attention_bias = get_bool("attention_bias", false);
  c.attention_bias = c.arch == "qwen2" ? true : attention_bias;
  if (get_bool("mlp_bias", false)) fail("{}: mlp_bias true is not supported", src);
  if (auto a = get_str(j, "hidden_act", "silu", ""); a != "silu")
    fail("{}: hidden_act '{}' is not supported (SwiGLU with silu only)", src, a);
  c.torch_dtype = get_str(j, "torch_dtype", "", "");
  if (auto it = j.find("quantization_config"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) fail("{}: quantization_config must be an object", src);
    get_str(*it, "quant_method", "", "quantization_config.");  // read as a string by the engine
    c.quantization_config = *it;
  }
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) fail("{}: rope_scaling must be an object or null", src);
    std::string type = get_str(*it, "rope_type", get_str(*it, "type", "", "rope_scaling."), "rope_scaling.");
    if (type == "default" || type.empty()) {
    } else if (type == "linear") {
      c.rope_scaling_type = "linear";
      c.rope_factor = get_num(*it, "factor", 1.0, "rope_scaling.");
    } else if (type == "llama3") {
      c.rope_scaling_type = "llama3";
      c.rope_factor = get_num(*it, "factor", 8.0, "rope_scaling.");
      c.rope_low_freq_factor = get_num(*it, "low_freq_factor", 1.0, "rope_scaling.");
      c.rope_high_freq_factor = get_num(*it, "high_freq_factor", 4.0, "rope_scaling.");
      // A number (some configs write 8192.0); outside int64 the cast would be undefined.
      const double omp = get_num(*it, "original_max_position_embeddings", 8192, "rope_scaling.");
      if (!(omp >= 1 && omp <= 2147483647.0))
        fail("{}: field rope_scaling.original_max_position_embeddings must be between 1 and 2147483647, got {}", src,
             omp);
      c.rope_original_max_position = static_cast<int64_t>(omp);
    } else {
      fail("{}: rope_scaling type '{}' is not supported (qeval supports linear and llama3)", src, type);
    }
  }
  std::string problem = c.validate();
  if (!problem.empty()) fail("{}: {}", src, problem);
  return c;
}

ModelConfig load_hf_config(const std::filesystem::path& model_dir) {
  auto p = model_dir / "config.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(p));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", p.string(), e.what());
  }
  return parse_hf_config(j, p.string());
}

nlohmann::json config_to_json(const ModelConfig& c) {
  nlohmann::json j;  // std::map-backed: keys sorted, stable
  j["arch"] = c.arch;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["n_layers"] = c.n_layers;
  j["n_heads"] = c.n_heads;
  j["n_kv_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["rope_scaling_type"] = c.rope_scaling_type;
  j["rope_factor"] = c.rope_factor;
  j["rope_low_freq_factor"] = c.rope_low_freq_factor;
  j["rope_high_freq_factor"] = c.rope_high_freq_factor;
  j["rope_original_max_position"] = c.rope_original_max_position;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["attention_bias"] = c.attention_bias;
  j["quantization_config"] = c.quantization_config;
  j["torch_dtype"] = c.torch_dtype;
  // Only when set, so that the fingerprints of checkpoints without MTP layers stay as they were.
  if (c.num_nextn_predict_layers != 0) j["num_nextn_predict_layers"] = c.num_nextn_predict_layers;
  return j;
}

}  // namespace qeval
