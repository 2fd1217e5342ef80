// Random-weight models of real shapes, in memory.
#include "engine/random_model.h"

#include <cmath>
#include <cstring>

#include "core/error.h"

namespace qeval {

ModelConfig random_model_config(std::string_view name) {
  ModelConfig c;
  c.arch = "qwen2";
  c.rms_norm_eps = 1e-6;
  c.attention_bias = true;
  c.torch_dtype = "bfloat16";
  if (name == "qwen2.5-0.5b") {
    c.vocab_size = 151936;
    c.hidden_size = 896;
    c.intermediate_size = 4864;
    c.n_layers = 24;
    c.n_heads = 14;
    c.n_kv_heads = 2;
    c.head_dim = 64;
    c.max_position_embeddings = 32768;
    c.rope_theta = 1000000.0;
    c.tie_word_embeddings = true;
  } else if (name == "r1-distill-qwen-1.5b") {
    c.vocab_size = 151936;
    c.hidden_size = 1536;
    c.intermediate_size = 8960;
    c.n_layers = 28;
    c.n_heads = 12;
    c.n_kv_heads = 2;
    c.head_dim = 128;
    c.max_position_embeddings = 131072;
    c.rope_theta = 10000.0;
    c.tie_word_embeddings = false;
  } else if (name == "tiny") {
    c.vocab_size = 256;
    c.hidden_size = 64;
    c.intermediate_size = 96;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 16;
    c.max_position_embeddings = 256;
    c.rope_theta = 10000.0;
    c.tie_word_embeddings = false;
    c.torch_dtype = "float32";
  } else {
    fail("random model: unknown shape '{}' (hint: qwen2.5-0.5b, r1-distill-qwen-1.5b or tiny)",
         name);
  }
  return c;
}

RandomModel::RandomModel(const ModelConfig& cfg, DType dtype, uint64_t seed)
    : cfg_(cfg), dtype_(dtype), state_(seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull) {
  if (dtype != DType::F32 && dtype != DType::BF16) fail("random model: dtype must be F32 or BF16");
  if (std::string e = cfg.validate(); !e.empty()) fail("random model config: {}", e);
  const int64_t D = cfg.hidden_size, V = cfg.vocab_size, H = cfg.n_heads, G = cfg.n_kv_heads,
                E = cfg.head_dim, F = cfg.intermediate_size;
  auto w = [](int64_t k) { return static_cast<float>(std::sqrt(3.0 / static_cast<double>(k))); };
  add("model.embed_tokens.weight", {V, D}, -1.0f, 1.0f);
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {D}, 0.5f, 1.5f);
    add(p + "post_attention_layernorm.weight", {D}, 0.5f, 1.5f);
    add(p + "self_attn.q_proj.weight", {H * E, D}, -w(D), w(D));
    add(p + "self_attn.k_proj.weight", {G * E, D}, -w(D), w(D));
    add(p + "self_attn.v_proj.weight", {G * E, D}, -w(D), w(D));
    if (cfg.attention_bias) {
      add(p + "self_attn.q_proj.bias", {H * E}, -0.1f, 0.1f);
      add(p + "self_attn.k_proj.bias", {G * E}, -0.1f, 0.1f);
      add(p + "self_attn.v_proj.bias", {G * E}, -0.1f, 0.1f);
    }
    add(p + "self_attn.o_proj.weight", {D, H * E}, -w(H * E), w(H * E));
    add(p + "mlp.gate_proj.weight", {F, D}, -w(D), w(D));
    add(p + "mlp.up_proj.weight", {F, D}, -w(D), w(D));
    add(p + "mlp.down_proj.weight", {D, F}, -w(F), w(F));
  }
  add("model.norm.weight", {D}, 0.5f, 1.5f);
  if (!cfg.tie_word_embeddings) add("lm_head.weight", {V, D}, -w(D), w(D));
}

void RandomModel::add(const std::string& name, std::vector<int64_t> shape, float lo, float hi) {
  TensorView t;
  t.name = name;
  t.dtype = dtype_;
  t.shape = std::move(shape);
  const int64_t n = t.numel();
  t.nbytes = static_cast<size_t>(n) * dtype_size(dtype_);
  storage_.emplace_back(new uint8_t[t.nbytes]);
  uint8_t* buf = storage_.back().get();
  for (int64_t i = 0; i < n; ++i) {
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    uint64_t r = state_ * 0x2545F4914F6CDD1Dull;
    float u = static_cast<float>(r >> 40) / 16777216.0f;  // [0, 1)
    float v = lo + (hi - lo) * u;
    if (dtype_ == DType::F32) {
      std::memcpy(buf + 4 * i, &v, 4);
    } else {
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      bits += 0x7FFFu + ((bits >> 16) & 1u);
      uint16_t h = static_cast<uint16_t>(bits >> 16);
      std::memcpy(buf + 2 * i, &h, 2);
    }
  }
  t.data = buf;
  tensors_[name] = std::move(t);
}

TensorLookup RandomModel::lookup() const {
  return [this](const std::string& name) -> const TensorView* {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? nullptr : &it->second;
  };
}

}  // namespace qeval
