// Test fixtures for the engine (header-only): writes random-weight models in HF layout
// (config.json, model.safetensors or shards + index, a tiny byte-level BPE tokenizer or one
// copied from a directory) and a tiny llama-architecture F32 GGUF with the same weights. The
// writers here are independent of the library's readers and writer, so reader tests are not
// circular. Returned values are the weights exactly as stored (after dtype rounding), for
// float64 reference computations.
//
//   auto m = qeval::fixtures::write_hf_model(dir, {.arch = "qwen2", .layers = 2, .qkv_bias = true});
//   qeval::fixtures::write_tiny_gguf(dir / "m.gguf", m);   // llama arch only
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace qeval::fixtures {

namespace fs = std::filesystem;

// One tensor to write. `values` are f32 (converted to the file dtype); for dtypes that are not
// float ("I8", "F8_E4M3", ...) or to write exact bits, fill `raw` instead (then `values` is ignored).
struct FixtureTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
  std::string dtype;          // "F32" | "BF16" | "F16" | any safetensors dtype with `raw`; "" = file default
  std::vector<uint8_t> raw;
};

// What to generate. head_dim 0 = hidden / heads.
struct ModelSpec {
  std::string arch = "llama";          // "llama" | "qwen2" | "mistral"
  int64_t layers = 2, hidden = 64, heads = 4, kv_heads = 2, ffn = 128, vocab = 272, head_dim = 0;
  int64_t max_position = 512;
  bool qkv_bias = false;               // qwen2 always gets biases
  bool tied = false;
  std::string dtype = "F32";           // "F32" | "BF16" | "F16"
  uint64_t seed = 1;
  int shards = 1;                      // > 1: model-0000i-of-0000n.safetensors + index json
  fs::path tokenizer_from;             // copy tokenizer*.json / special_tokens_map.json from here
  bool write_tokenizer = true;         // else no tokenizer files (when tokenizer_from is empty)
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  nlohmann::json rope_scaling;         // null or {"rope_type": "llama3", ...}
};

struct FixtureModel {
  ModelSpec spec;
  nlohmann::json config;                            // what config.json holds
  std::map<std::string, FixtureTensor> tensors;     // HF names, values as stored
};

// ---- element formats -------------------------------------------------------------------

inline uint16_t fx_bf16_bits(float x) {  // round to nearest even
  uint32_t b;
  std::memcpy(&b, &x, 4);
  if ((b & 0x7F800000u) == 0x7F800000u && (b & 0x7FFFFFu)) return static_cast<uint16_t>((b >> 16) | 0x40);
  b += 0x7FFFu + ((b >> 16) & 1u);
  return static_cast<uint16_t>(b >> 16);
}
inline float fx_bf16_value(uint16_t h) {
  uint32_t b = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
inline uint16_t fx_f16_bits(float x) {  // normal-range values only (fixtures stay in range)
  uint32_t b;
  std::memcpy(&b, &x, 4);
  uint32_t sign = (b >> 16) & 0x8000u;
  int32_t e = static_cast<int32_t>((b >> 23) & 0xFF) - 127 + 15;
  uint32_t m = b & 0x7FFFFFu;
  if (e <= 0) return static_cast<uint16_t>(sign);  // flush tiny values to zero
  uint32_t h = (static_cast<uint32_t>(e) << 10) | (m >> 13);
  uint32_t rest = m & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}
inline float fx_f16_value(uint16_t h) {
  uint32_t e = (h >> 10) & 0x1F, m = h & 0x3FF;
  float v = e == 0 ? std::ldexp(static_cast<float>(m), -24) : std::ldexp(1.0f + m / 1024.0f, static_cast<int>(e) - 15);
  return (h & 0x8000) ? -v : v;
}

inline size_t fx_dtype_size(const std::string& d) {
  if (d == "F32" || d == "I32") return 4;
  if (d == "F16" || d == "BF16") return 2;
  if (d == "I64") return 8;
  return 1;
}

// Rounds `v` in place to what `dtype` stores and returns the little-endian bytes.
inline std::vector<uint8_t> fx_encode(std::vector<float>& v, const std::string& dtype) {
  std::vector<uint8_t> out(v.size() * fx_dtype_size(dtype));
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == "F32") {
      std::memcpy(&out[4 * i], &v[i], 4);
    } else if (dtype == "BF16") {
      uint16_t h = fx_bf16_bits(v[i]);
      v[i] = fx_bf16_value(h);
      std::memcpy(&out[2 * i], &h, 2);
    } else if (dtype == "F16") {
      uint16_t h = fx_f16_bits(v[i]);
      v[i] = fx_f16_value(h);
      std::memcpy(&out[2 * i], &h, 2);
    } else {
      throw std::runtime_error("fixtures: cannot encode floats as " + dtype + " (use raw)");
    }
  }
  return out;
}

// ---- safetensors -----------------------------------------------------------------------

// Writes `tensors` (in order) to a safetensors file; tensors without their own dtype use
// `dtype`. Float values are rounded in place to what is stored.
inline void write_safetensors(const fs::path& path, std::vector<FixtureTensor*> tensors, const std::string& dtype,
                              const nlohmann::json& metadata = nullptr) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.is_null()) header["__metadata__"] = metadata;
  std::vector<std::vector<uint8_t>> blobs;
  uint64_t off = 0;
  for (FixtureTensor* t : tensors) {
    if (t->dtype.empty()) t->dtype = dtype;
    blobs.push_back(t->raw.empty() ? fx_encode(t->values, t->dtype) : t->raw);
    int64_t n = 1;
    for (auto d : t->shape) n *= d;
    if (blobs.back().size() != static_cast<size_t>(n) * fx_dtype_size(t->dtype))
      throw std::runtime_error("fixtures: tensor " + t->name + " size does not match its shape");
    header[t->name] = {{"dtype", t->dtype}, {"shape", t->shape}, {"data_offsets", {off, off + blobs.back().size()}}};
    off += blobs.back().size();
  }
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  std::ofstream f(path, std::ios::binary);
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xFF));
  f.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (const auto& b : blobs) f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  if (!f) throw std::runtime_error("fixtures: cannot write " + path.string());
}

// ---- tokenizer -------------------------------------------------------------------------

// GPT-2 byte -> unicode mapping (printable bytes map to themselves, the rest to U+0100...).
inline std::string fx_byte_piece(int byte) {
  int cp;
  if ((byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || (byte >= 174 && byte <= 255)) {
    cp = byte;
  } else {
    int n = 0;
    for (int b = 0; b < byte; ++b)
      if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) ++n;
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) s += static_cast<char>(cp);
  else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// Writes a tiny byte-level BPE tokenizer (Qwen2-style Split regex + ByteLevel): ids 0..255 are
// the bytes, 256..259 merges ("Ġt", "he", "Ġthe", "in"), 260 <|endoftext|>, 261 <|im_start|>,
// 262 <|im_end|>; ChatML chat template. Needs vocab >= 263.
inline void write_byte_tokenizer(const fs::path& dir) {
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (int b = 0; b < 256; ++b) vocab[fx_byte_piece(b)] = b;
  const std::string G = fx_byte_piece(' ');  // "Ġ"
  std::vector<std::pair<std::string, std::string>> merges = {{G, "t"}, {"h", "e"}, {G + "t", "he"}, {"i", "n"}};
  int id = 256;
  nlohmann::json merge_list = nlohmann::json::array();
  for (auto& [a, b] : merges) {
    vocab[a + b] = id++;
    merge_list.push_back(a + " " + b);
  }
  nlohmann::json added = nlohmann::json::array();
  for (const char* s : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}) {
    vocab[s] = id;
    added.push_back({{"id", id++}, {"content", s}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                     {"normalized", false}, {"special", true}});
  }
  const char* regex =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
      "\\s+(?!\\S)|\\s+";
  nlohmann::json bl = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
  nlohmann::ordered_json tok = {
      {"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}}, bl}}}},
      {"post_processor", bl}, {"decoder", bl},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""}, {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", vocab},
        {"merges", merge_list}}}};
  nlohmann::json cfg = {
      {"bos_token", nullptr}, {"eos_token", "<|im_end|>"}, {"pad_token", "<|endoftext|>"}, {"add_bos_token", false},
      {"model_max_length", 512},
      {"chat_template",
       "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
       "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"}};
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << tok.dump(1);
  std::ofstream(dir / "tokenizer_config.json") << cfg.dump(1);
}

// ---- models ----------------------------------------------------------------------------

// Writes a random-weight model in HF layout to `dir` (created). Returns config and weights.
inline FixtureModel write_hf_model(const fs::path& dir, const ModelSpec& spec) {
  FixtureModel m;
  m.spec = spec;
  const int64_t hd = spec.head_dim ? spec.head_dim : spec.hidden / spec.heads;
  const bool bias = spec.qkv_bias || spec.arch == "qwen2";
  const std::string archname =
      spec.arch == "qwen2" ? "Qwen2ForCausalLM" : spec.arch == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM";
  m.config = {{"architectures", {archname}}, {"model_type", spec.arch}, {"vocab_size", spec.vocab},
              {"hidden_size", spec.hidden}, {"intermediate_size", spec.ffn}, {"num_hidden_layers", spec.layers},
              {"num_attention_heads", spec.heads}, {"num_key_value_heads", spec.kv_heads}, {"head_dim", hd},
              {"max_position_embeddings", spec.max_position}, {"rms_norm_eps", spec.rms_norm_eps},
              {"rope_theta", spec.rope_theta}, {"tie_word_embeddings", spec.tied}, {"hidden_act", "silu"},
              {"torch_dtype", spec.dtype == "BF16" ? "bfloat16" : spec.dtype == "F16" ? "float16" : "float32"},
              {"bos_token_id", 260}, {"eos_token_id", 262}};
  if (spec.arch == "llama") m.config["attention_bias"] = bias;
  if (!spec.rope_scaling.is_null()) m.config["rope_scaling"] = spec.rope_scaling;

  std::mt19937_64 rng(spec.seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<std::string> order;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float scale, float offset) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    FixtureTensor t{name, shape, std::vector<float>(static_cast<size_t>(n)), "", {}};
    for (auto& v : t.values) v = offset + scale * uni(rng);
    m.tensors[name] = std::move(t);
    order.push_back(name);
  };
  const int64_t H = spec.hidden, q_out = spec.heads * hd, kv_out = spec.kv_heads * hd;
  add("model.embed_tokens.weight", {spec.vocab, H}, 1.0f, 0.0f);
  for (int64_t l = 0; l < spec.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {H}, 0.1f, 1.0f);
    add(p + "self_attn.q_proj.weight", {q_out, H}, 1.0f / std::sqrt(float(H)), 0.0f);
    add(p + "self_attn.k_proj.weight", {kv_out, H}, 1.0f / std::sqrt(float(H)), 0.0f);
    add(p + "self_attn.v_proj.weight", {kv_out, H}, 1.0f / std::sqrt(float(H)), 0.0f);
    if (bias) {
      add(p + "self_attn.q_proj.bias", {q_out}, 0.1f, 0.0f);
      add(p + "self_attn.k_proj.bias", {kv_out}, 0.1f, 0.0f);
      add(p + "self_attn.v_proj.bias", {kv_out}, 0.1f, 0.0f);
    }
    add(p + "self_attn.o_proj.weight", {H, q_out}, 1.0f / std::sqrt(float(q_out)), 0.0f);
    add(p + "post_attention_layernorm.weight", {H}, 0.1f, 1.0f);
    add(p + "mlp.gate_proj.weight", {spec.ffn, H}, 1.0f / std::sqrt(float(H)), 0.0f);
    add(p + "mlp.up_proj.weight", {spec.ffn, H}, 1.0f / std::sqrt(float(H)), 0.0f);
    add(p + "mlp.down_proj.weight", {H, spec.ffn}, 1.0f / std::sqrt(float(spec.ffn)), 0.0f);
  }
  add("model.norm.weight", {H}, 0.1f, 1.0f);
  if (!spec.tied) add("lm_head.weight", {spec.vocab, H}, 1.0f / std::sqrt(float(H)), 0.0f);

  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << m.config.dump(1);
  std::ofstream(dir / "generation_config.json") << nlohmann::json{{"bos_token_id", 260}, {"eos_token_id", 262}}.dump(1);
  const int n_shards = std::max(1, spec.shards);
  if (n_shards == 1) {
    std::vector<FixtureTensor*> all;
    for (auto& name : order) all.push_back(&m.tensors[name]);
    write_safetensors(dir / "model.safetensors", all, spec.dtype, {{"format", "pt"}});
  } else {
    nlohmann::json wm = nlohmann::json::object();
    size_t per = (order.size() + n_shards - 1) / n_shards;
    for (int s = 0; s < n_shards; ++s) {
      char fname[64];
      std::snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
      std::vector<FixtureTensor*> part;
      for (size_t i = s * per; i < std::min(order.size(), (s + 1) * per); ++i) {
        part.push_back(&m.tensors[order[i]]);
        wm[order[i]] = fname;
      }
      write_safetensors(dir / fname, part, spec.dtype, {{"format", "pt"}});
    }
    std::ofstream(dir / "model.safetensors.index.json") << nlohmann::json{{"metadata", nlohmann::json::object()}, {"weight_map", wm}}.dump(1);
  }
  if (!spec.tokenizer_from.empty()) {
    for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"})
      if (fs::exists(spec.tokenizer_from / f))
        fs::copy_file(spec.tokenizer_from / f, dir / f, fs::copy_options::overwrite_existing);
  } else if (spec.write_tokenizer) {
    if (spec.vocab < 263) throw std::runtime_error("fixtures: the byte tokenizer needs vocab >= 263");
    write_byte_tokenizer(dir);
  }
  return m;
}

// ---- GGUF ------------------------------------------------------------------------------

// Writes `m` (llama arch, any stored dtype) as an F32 GGUF v3 the way llama.cpp's converter
// does: llama.cpp tensor names, dims innermost first, Q/K rows permuted for interleaved RoPE,
// and a SentencePiece-style vocabulary (<unk>, <s>, </s>, 256 byte tokens, then pieces) of
// m.spec.vocab tokens (needs vocab >= 259).
inline void write_tiny_gguf(const fs::path& file, const FixtureModel& m) {
  const ModelSpec& s = m.spec;
  if (s.arch != "llama") throw std::runtime_error("fixtures: write_tiny_gguf writes llama arch only");
  if (s.vocab < 259) throw std::runtime_error("fixtures: GGUF vocab needs >= 259 tokens");
  std::string out;
  auto u32 = [&](uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); };
  auto u64 = [&](uint64_t v) { out.append(reinterpret_cast<const char*>(&v), 8); };
  auto f32 = [&](float v) { out.append(reinterpret_cast<const char*>(&v), 4); };
  auto str = [&](const std::string& v) { u64(v.size()); out += v; };
  std::vector<std::function<void()>> kvs;
  auto kv_u32 = [&](std::string k, uint32_t v) { kvs.push_back([=, &str, &u32] { str(k); u32(4); u32(v); }); };
  auto kv_f32 = [&](std::string k, float v) { kvs.push_back([=, &str, &u32, &f32] { str(k); u32(6); f32(v); }); };
  auto kv_str = [&](std::string k, std::string v) { kvs.push_back([=, &str, &u32] { str(k); u32(8); str(v); }); };
  const int64_t hd = s.head_dim ? s.head_dim : s.hidden / s.heads;
  kv_str("general.architecture", "llama");
  kv_str("general.name", "qeval-fixture");
  kv_u32("general.alignment", 32);
  kv_u32("llama.context_length", static_cast<uint32_t>(s.max_position));
  kv_u32("llama.embedding_length", static_cast<uint32_t>(s.hidden));
  kv_u32("llama.block_count", static_cast<uint32_t>(s.layers));
  kv_u32("llama.feed_forward_length", static_cast<uint32_t>(s.ffn));
  kv_u32("llama.attention.head_count", static_cast<uint32_t>(s.heads));
  kv_u32("llama.attention.head_count_kv", static_cast<uint32_t>(s.kv_heads));
  kv_u32("llama.rope.dimension_count", static_cast<uint32_t>(hd));
  kv_f32("llama.attention.layer_norm_rms_epsilon", static_cast<float>(s.rms_norm_eps));
  kv_f32("llama.rope.freq_base", static_cast<float>(s.rope_theta));
  kv_str("tokenizer.ggml.model", "llama");
  kv_u32("tokenizer.ggml.bos_token_id", 1);
  kv_u32("tokenizer.ggml.eos_token_id", 2);
  kv_u32("tokenizer.ggml.unknown_token_id", 0);
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    tokens.push_back(buf);
  }
  for (int64_t i = 0; static_cast<int64_t>(tokens.size()) < s.vocab; ++i) {
    std::string p = "\xE2\x96\x81";  // U+2581
    for (int64_t x = i;; x = x / 26 - 1) {
      p += static_cast<char>('a' + x % 26);
      if (x < 26) break;
    }
    tokens.push_back(p);
  }
  kvs.push_back([&] {
    str("tokenizer.ggml.tokens"); u32(9); u32(8); u64(tokens.size());
    for (auto& t : tokens) str(t);
  });
  kvs.push_back([&] {
    str("tokenizer.ggml.scores"); u32(9); u32(6); u64(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) f32(i < 259 ? 0.0f : -static_cast<float>(i));
  });
  kvs.push_back([&] {
    str("tokenizer.ggml.token_type"); u32(9); u32(5); u64(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) u32(i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1);
  });

  struct G { std::string name; std::vector<int64_t> shape; std::vector<float> data; };
  std::vector<G> ts;
  auto permute = [&](const std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_head) {
    std::vector<float> o(w.size());
    const int64_t hdim = rows / n_head, half = hdim / 2;
    for (int64_t h = 0; h < n_head; ++h)
      for (int64_t i = 0; i < 2; ++i)
        for (int64_t j = 0; j < half; ++j)
          std::memcpy(&o[(h * hdim + 2 * j + i) * cols], &w[(h * hdim + i * half + j) * cols], cols * sizeof(float));
    return o;
  };
  auto put = [&](const std::string& gname, const std::string& hf, int64_t permute_heads) {
    const FixtureTensor& t = m.tensors.at(hf);
    std::vector<float> d = t.values;
    if (permute_heads) d = permute(d, t.shape[0], t.shape.size() > 1 ? t.shape[1] : 1, permute_heads);
    ts.push_back({gname, t.shape, d});
  };
  put("token_embd.weight", "model.embed_tokens.weight", 0);
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".", p = "model.layers." + std::to_string(l) + ".";
    put(b + "attn_norm.weight", p + "input_layernorm.weight", 0);
    put(b + "attn_q.weight", p + "self_attn.q_proj.weight", s.heads);
    put(b + "attn_k.weight", p + "self_attn.k_proj.weight", s.kv_heads);
    put(b + "attn_v.weight", p + "self_attn.v_proj.weight", 0);
    put(b + "attn_output.weight", p + "self_attn.o_proj.weight", 0);
    put(b + "ffn_norm.weight", p + "post_attention_layernorm.weight", 0);
    put(b + "ffn_gate.weight", p + "mlp.gate_proj.weight", 0);
    put(b + "ffn_up.weight", p + "mlp.up_proj.weight", 0);
    put(b + "ffn_down.weight", p + "mlp.down_proj.weight", 0);
  }
  put("output_norm.weight", "model.norm.weight", 0);
  if (!s.tied) put("output.weight", "lm_head.weight", 0);
  if (m.tensors.count("rope_freqs.weight")) put("rope_freqs.weight", "rope_freqs.weight", 0);  // llama3 scaling

  out = "GGUF";
  u32(3);
  u64(ts.size());
  u64(kvs.size());
  for (auto& f : kvs) f();
  uint64_t off = 0;
  for (auto& t : ts) {
    str(t.name);
    u32(static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) u64(static_cast<uint64_t>(*it));
    u32(0);  // F32
    u64(off);
    off += (t.data.size() * 4 + 31) / 32 * 32;
  }
  while (out.size() % 32) out += '\0';
  for (auto& t : ts) {
    out.append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * 4);
    while (out.size() % 32) out += '\0';
  }
  if (file.has_parent_path()) fs::create_directories(file.parent_path());
  std::ofstream f(file, std::ios::binary);
  f.write(out.data(), static_cast<std::streamsize>(out.size()));
  if (!f) throw std::runtime_error("fixtures: cannot write " + file.string());
}

// A fresh empty directory under the system temp dir, unique per call (not removed).
inline fs::path temp_dir(const std::string& tag) {
  static std::random_device rd;
  fs::path p = fs::temp_directory_path() / ("qeval-" + tag + "-" + std::to_string(rd()) + std::to_string(rd()));
  fs::create_directories(p);
  return p;
}

}  // namespace qeval::fixtures
