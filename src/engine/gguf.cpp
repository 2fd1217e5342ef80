// GGUF parsing and validation, and llama.cpp -> HF mapping helpers.
//
// File layout (little-endian): "GGUF" magic, u32 version (2 or 3), u64 tensor_count,
// u64 kv_count, kv_count x {string key, u32 type, value}, tensor_count x {string name,
// u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset}, padding to `general.alignment`
// (default 32), then the data section. Strings are u64 length + bytes; arrays are u32 element
// type + u64 count + elements. Tensor offsets are relative to the data section and multiples of
// the alignment.
#include "engine/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <regex>
#include <set>

#include "core/error.h"

namespace qeval {

namespace {

struct GgmlTypeInfo {
  const char* name;
  uint64_t block;      // elements per block
  uint64_t type_size;  // bytes per block; 0 when qeval does not know it
};

GgmlTypeInfo ggml_type_info(uint32_t t) {
  switch (t) {
    case 0: return {"F32", 1, 4};
    case 1: return {"F16", 1, 2};
    case 2: return {"Q4_0", 32, 18};
    case 3: return {"Q4_1", 32, 20};
    case 6: return {"Q5_0", 32, 22};
    case 7: return {"Q5_1", 32, 24};
    case 8: return {"Q8_0", 32, 34};
    case 9: return {"Q8_1", 32, 36};
    case 10: return {"Q2_K", 256, 84};
    case 11: return {"Q3_K", 256, 110};
    case 12: return {"Q4_K", 256, 144};
    case 13: return {"Q5_K", 256, 176};
    case 14: return {"Q6_K", 256, 210};
    case 15: return {"Q8_K", 256, 292};
    case 16: return {"IQ2_XXS", 256, 0};
    case 17: return {"IQ2_XS", 256, 0};
    case 18: return {"IQ3_XXS", 256, 0};
    case 19: return {"IQ1_S", 256, 0};
    case 20: return {"IQ4_NL", 32, 0};
    case 21: return {"IQ3_S", 256, 0};
    case 22: return {"IQ2_S", 256, 0};
    case 23: return {"IQ4_XS", 256, 0};
    case 24: return {"I8", 1, 1};
    case 25: return {"I16", 1, 2};
    case 26: return {"I32", 1, 4};
    case 27: return {"I64", 1, 8};
    case 28: return {"F64", 1, 8};
    case 29: return {"IQ1_M", 256, 0};
    case 30: return {"BF16", 1, 2};
    case 34: return {"TQ1_0", 256, 0};
    case 35: return {"TQ2_0", 256, 0};
    default: return {nullptr, 1, 0};
  }
}

// Bounds-checked little-endian reader over the file bytes.
class Cursor {
 public:
  Cursor(std::span<const uint8_t> b, const std::string& src) : b_(b), src_(src) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return b_.size() - pos_; }
  void need(uint64_t n, const char* what) const {
    if (n > remaining())
      fail("{}: truncated: {} needs {} bytes at offset {} but only {} remain", src_, what, n, pos_, remaining());
  }
  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const char* what) {
    uint64_t n = read<uint64_t>(what);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  std::span<const uint8_t> b_;
  const std::string& src_;
  uint64_t pos_ = 0;
};

uint64_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    case GgufType::STRING: return 8;  // at least the length
    case GgufType::ARRAY: return 12;  // at least type + count
  }
  return 0;
}

bool valid_type(uint32_t t) { return t <= 12; }

nlohmann::json read_value(Cursor& c, GgufType t, const std::string& key, const std::string& src, int depth,
                          GgufType* elem_out) {
  switch (t) {
    case GgufType::U8: return c.read<uint8_t>("u8 value");
    case GgufType::I8: return c.read<int8_t>("i8 value");
    case GgufType::U16: return c.read<uint16_t>("u16 value");
    case GgufType::I16: return c.read<int16_t>("i16 value");
    case GgufType::U32: return c.read<uint32_t>("u32 value");
    case GgufType::I32: return c.read<int32_t>("i32 value");
    case GgufType::F32: return static_cast<double>(c.read<float>("f32 value"));
    case GgufType::BOOL: return c.read<uint8_t>("bool value") != 0;
    case GgufType::STRING: return c.read_string("string value");
    case GgufType::U64: return c.read<uint64_t>("u64 value");
    case GgufType::I64: return c.read<int64_t>("i64 value");
    case GgufType::F64: return c.read<double>("f64 value");
    case GgufType::ARRAY: {
      if (depth >= 4) fail("{}: key {}: arrays nested too deeply", src, key);
      uint32_t et = c.read<uint32_t>("array type");
      if (!valid_type(et)) fail("{}: key {}: unknown array element type {}", src, key, et);
      uint64_t n = c.read<uint64_t>("array length");
      uint64_t min_bytes;
      if (__builtin_mul_overflow(n, scalar_size(static_cast<GgufType>(et)), &min_bytes) || min_bytes > c.remaining())
        fail("{}: key {}: array of {} elements runs past the end of the file (truncated?)", src, key, n);
      if (elem_out) *elem_out = static_cast<GgufType>(et);
      nlohmann::json arr = nlohmann::json::array();
      auto& vec = arr.get_ref<nlohmann::json::array_t&>();
      vec.reserve(n);
      for (uint64_t i = 0; i < n; ++i) vec.push_back(read_value(c, static_cast<GgufType>(et), key, src, depth + 1, nullptr));
      return arr;
    }
  }
  fail("{}: key {}: unknown value type {}", src, key, static_cast<uint32_t>(t));
}

}  // namespace

std::string ggml_type_name(uint32_t t) {
  auto info = ggml_type_info(t);
  return info.name ? info.name : "type" + std::to_string(t);
}

std::unique_ptr<GgufFile> GgufFile::open(const std::filesystem::path& path) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->source_ = path.string();
  f->map_.emplace(path);
  f->parse_impl(f->map_->bytes());
  return f;
}

std::unique_ptr<GgufFile> GgufFile::parse(std::span<const uint8_t> bytes, std::string source) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->source_ = std::move(source);
  f->parse_impl(bytes);
  return f;
}

void GgufFile::parse_impl(std::span<const uint8_t> bytes) {
  const std::string& src = source_;
  Cursor c(bytes, src);
  if (bytes.size() < 4 || std::memcmp(bytes.data(), "GGUF", 4) != 0)
    fail("{}: not a GGUF file (magic is not 'GGUF'; hint: pass a .gguf file or an HF model directory)", src);
  c.read<uint32_t>("magic");
  version_ = c.read<uint32_t>("version");
  if (version_ == 1) fail("{}: GGUF version 1 is not supported (hint: re-convert with a current llama.cpp)", src);
  if (version_ != 2 && version_ != 3)
    fail("{}: unsupported GGUF version {} (qeval reads v2 and v3; a big-endian file?)", src, version_);
  uint64_t n_tensors = c.read<uint64_t>("tensor_count");
  uint64_t n_kv = c.read<uint64_t>("kv_count");
  if (n_kv > c.remaining() / 12) fail("{}: kv_count {} is impossible for a {}-byte file", src, n_kv, bytes.size());
  if (n_tensors > c.remaining() / 24)
    fail("{}: tensor_count {} is impossible for a {}-byte file", src, n_tensors, bytes.size());

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.read_string("metadata key");
    uint32_t t = c.read<uint32_t>("metadata type");
    if (!valid_type(t)) fail("{}: key {}: unknown value type {}", src, key, t);
    GgufValue v;
    v.type = static_cast<GgufType>(t);
    v.value = read_value(c, v.type, key, src, 0, &v.elem_type);
    if (kv_.count(key)) fail("{}: duplicate metadata key {}", src, key);
    kv_.emplace(std::move(key), std::move(v));
  }
  if (auto it = kv_.find("general.alignment"); it != kv_.end()) {
    if (it->second.type != GgufType::U32) fail("{}: general.alignment must be a u32", src);
    uint64_t a = it->second.value.get<uint64_t>();
    if (a == 0 || (a & (a - 1)) != 0 || a > (1u << 20))
      fail("{}: general.alignment {} is not a power of two (up to 1 MiB)", src, a);
    alignment_ = a;
  }

  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo ti;
    ti.name = c.read_string("tensor name");
    uint32_t nd = c.read<uint32_t>("tensor n_dims");
    if (nd == 0 || nd > 4) fail("{}: tensor {}: n_dims {} (must be 1..4)", src, ti.name, nd);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      uint64_t ne = c.read<uint64_t>("tensor dimension");
      if (ne > (uint64_t{1} << 62) || __builtin_mul_overflow(numel, ne, &numel) || numel > (uint64_t{1} << 62))
        fail("{}: tensor {}: dimensions overflow", src, ti.name);
      ti.ne.push_back(ne);
    }
    ti.ggml_type = c.read<uint32_t>("tensor type");
    ti.offset = c.read<uint64_t>("tensor offset");
    auto info = ggml_type_info(ti.ggml_type);
    if (!info.name) fail("{}: tensor {}: unknown ggml type {}", src, ti.name, ti.ggml_type);
    if (info.type_size) {
      if (ti.ne[0] % info.block != 0)
        fail("{}: tensor {}: row length {} is not a multiple of the {} block size {}", src, ti.name, ti.ne[0],
             info.name, info.block);
      if (__builtin_mul_overflow(numel / info.block, info.type_size, &ti.nbytes))
        fail("{}: tensor {}: byte size overflows", src, ti.name);
    }
    if (ti.offset % alignment_ != 0)
      fail("{}: tensor {}: offset {} is not a multiple of the alignment {}", src, ti.name, ti.offset, alignment_);
    if (index_.count(ti.name)) fail("{}: duplicate tensor name {}", src, ti.name);
    index_[ti.name] = infos_.size();
    infos_.push_back(std::move(ti));
  }
  uint64_t data_start = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
  if (data_start > bytes.size() && !infos_.empty())
    fail("{}: data section starts at {} past the end of the {}-byte file (truncated?)", src, data_start, bytes.size());
  uint64_t data_size = data_start <= bytes.size() ? bytes.size() - data_start : 0;

  // Ranges inside the data section, no overlap.
  std::vector<size_t> order(infos_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return infos_[a].offset < infos_[b].offset; });
  uint64_t prev_end = 0;
  std::string prev_name;
  for (size_t i : order) {
    const auto& ti = infos_[i];
    if (ti.offset > data_size || ti.nbytes > data_size - ti.offset)
      fail("{}: tensor {}: data [{}, +{}) runs past the {}-byte data section (truncated file?)", src, ti.name,
           ti.offset, ti.nbytes, data_size);
    if (ti.offset < prev_end)
      fail("{}: tensor {}: data at {} overlaps tensor {} (ends at {})", src, ti.name, ti.offset, prev_name, prev_end);
    if (ti.nbytes) {
      prev_end = ti.offset + ti.nbytes;
      prev_name = ti.name;
    }
  }

  views_.resize(infos_.size());
  for (size_t i = 0; i < infos_.size(); ++i) {
    const auto& ti = infos_[i];
    std::optional<DType> dt;
    if (ti.ggml_type == 0) dt = DType::F32;
    else if (ti.ggml_type == 1) dt = DType::F16;
    else if (ti.ggml_type == 30) dt = DType::BF16;
    if (!dt) continue;
    TensorView v;
    v.name = ti.name;
    v.dtype = *dt;
    for (auto it = ti.ne.rbegin(); it != ti.ne.rend(); ++it) v.shape.push_back(static_cast<int64_t>(*it));
    v.data = bytes.data() + data_start + ti.offset;
    v.nbytes = static_cast<size_t>(ti.nbytes);
    views_[i] = std::move(v);
  }
}

const GgufValue* GgufFile::find_kv(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

std::optional<int64_t> GgufFile::get_int(const std::string& key) const {
  const GgufValue* v = find_kv(key);
  if (!v) return std::nullopt;
  switch (v->type) {
    case GgufType::U8: case GgufType::I8: case GgufType::U16: case GgufType::I16: case GgufType::U32:
    case GgufType::I32: case GgufType::I64:
      return v->value.get<int64_t>();
    case GgufType::U64: {
      uint64_t u = v->value.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) fail("{}: key {}: value {} too large", source_, key, u);
      return static_cast<int64_t>(u);
    }
    default:
      fail("{}: key {}: expected an integer", source_, key);
  }
}

std::optional<double> GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find_kv(key);
  if (!v) return std::nullopt;
  if (v->type == GgufType::F32 || v->type == GgufType::F64) return v->value.get<double>();
  if (v->type == GgufType::STRING || v->type == GgufType::ARRAY || v->type == GgufType::BOOL)
    fail("{}: key {}: expected a number", source_, key);
  return static_cast<double>(*get_int(key));
}

std::optional<bool> GgufFile::get_bool(const std::string& key) const {
  const GgufValue* v = find_kv(key);
  if (!v) return std::nullopt;
  if (v->type != GgufType::BOOL) fail("{}: key {}: expected a bool", source_, key);
  return v->value.get<bool>();
}

std::optional<std::string> GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find_kv(key);
  if (!v) return std::nullopt;
  if (v->type != GgufType::STRING) fail("{}: key {}: expected a string", source_, key);
  return v->value.get<std::string>();
}

const TensorView* GgufFile::find(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) return nullptr;
  const auto& v = views_[it->second];
  if (!v)
    fail("{}: tensor {}: unsupported tensor type {} (qeval's engine reads F32, F16 and BF16 GGUF tensors; hint: use "
         "an F16/BF16/F32 GGUF, e.g. convert_hf_to_gguf.py --outtype bf16)",
         source_, name, ggml_type_name(infos_[it->second].ggml_type));
  return &*v;
}

std::vector<const TensorView*> GgufFile::views() const {
  std::vector<const TensorView*> out;
  for (const auto& ti : infos_) out.push_back(find(ti.name));
  return out;
}

std::string GgufFile::architecture() const {
  auto a = get_string("general.architecture");
  if (!a) fail("{}: missing general.architecture", source_);
  return *a;
}

ModelConfig GgufFile::model_config() const {
  ModelConfig c;
  std::string arch = architecture();
  if (arch != "llama" && arch != "qwen2")
    fail("{}: architecture '{}' is not supported (qeval runs llama, qwen2 and mistral models)", source_, arch);
  c.arch = arch;
  auto req = [&](const std::string& k) {
    auto v = get_int(arch + "." + k);
    if (!v) fail("{}: missing metadata key {}.{}", source_, arch, k);
    if (*v <= 0) fail("{}: {}.{} must be positive, got {}", source_, arch, k, *v);
    return *v;
  };
  c.max_position_embeddings = req("context_length");
  c.hidden_size = req("embedding_length");
  c.n_layers = req("block_count");
  c.intermediate_size = req("feed_forward_length");
  c.num_nextn_predict_layers = get_int(arch + ".nextn_predict_layers").value_or(0);
  c.n_heads = req("attention.head_count");
  c.n_kv_heads = get_int(arch + ".attention.head_count_kv").value_or(c.n_heads);
  c.head_dim = get_int(arch + ".attention.key_length").value_or(c.n_heads > 0 ? c.hidden_size / c.n_heads : 0);
  c.rms_norm_eps = get_float(arch + ".attention.layer_norm_rms_epsilon").value_or(1e-5);
  c.rope_theta = get_float(arch + ".rope.freq_base").value_or(10000.0);
  std::string st = get_string(arch + ".rope.scaling.type").value_or("");
  if (st == "linear") {
    c.rope_scaling_type = "linear";
    c.rope_factor = get_float(arch + ".rope.scaling.factor").value_or(1.0);
  } else if (st.empty() || st == "none") {
    if (auto f = get_float(arch + ".rope.scale_linear"); f && *f != 1.0) {
      c.rope_scaling_type = "linear";
      c.rope_factor = *f;
    }
  } else {
    fail("{}: {}.rope.scaling.type '{}' is not supported (qeval supports none and linear in GGUF)", source_, arch, st);
  }
  if (auto o = get_int(arch + ".rope.scaling.original_context_length")) c.rope_original_max_position = *o;
  if (const TensorView* e = find("token_embd.weight")) {
    c.vocab_size = e->shape.empty() ? 0 : e->shape[0];
    c.torch_dtype = e->dtype == DType::F32 ? "float32" : e->dtype == DType::F16 ? "float16" : "bfloat16";
  } else if (auto vs = get_int(arch + ".vocab_size")) {
    c.vocab_size = *vs;
  }
  c.tie_word_embeddings = index_.count("output.weight") == 0;
  c.attention_bias = index_.count("blk.0.attn_q.bias") != 0;
  std::string problem = c.validate();
  if (!problem.empty()) fail("{}: {}", source_, problem);
  return c;
}

VocabData GgufFile::vocab() const {
  VocabData v;
  auto model = get_string("tokenizer.ggml.model");
  if (!model) fail("{}: missing tokenizer.ggml.model (the GGUF has no embedded tokenizer)", source_);
  v.model = *model;
  v.pre = get_string("tokenizer.ggml.pre").value_or("default");
  auto array_of = [&](const std::string& key, GgufType elem) -> const nlohmann::json* {
    const GgufValue* kv = find_kv(key);
    if (!kv) return nullptr;
    if (kv->type != GgufType::ARRAY) fail("{}: key {}: expected an array", source_, key);
    bool ok = kv->elem_type == elem ||
              (elem == GgufType::I32 && (kv->elem_type == GgufType::U32 || kv->elem_type == GgufType::I32));
    if (!ok && !kv->value.empty()) fail("{}: key {}: unexpected array element type", source_, key);
    return &kv->value;
  };
  const nlohmann::json* tokens = array_of("tokenizer.ggml.tokens", GgufType::STRING);
  if (!tokens || tokens->empty()) fail("{}: missing or empty tokenizer.ggml.tokens", source_);
  v.tokens.reserve(tokens->size());
  for (const auto& t : *tokens) v.tokens.push_back(t.get<std::string>());
  const size_t n = v.tokens.size();
  if (const auto* s = array_of("tokenizer.ggml.scores", GgufType::F32)) {
    if (s->size() != n) fail("{}: tokenizer.ggml.scores has {} entries for {} tokens", source_, s->size(), n);
    for (const auto& x : *s) v.scores.push_back(static_cast<float>(x.get<double>()));
  }
  if (const auto* s = array_of("tokenizer.ggml.token_type", GgufType::I32)) {
    if (s->size() != n) fail("{}: tokenizer.ggml.token_type has {} entries for {} tokens", source_, s->size(), n);
    for (const auto& x : *s) v.token_types.push_back(static_cast<int32_t>(x.get<int64_t>()));
  }
  if (const auto* s = array_of("tokenizer.ggml.merges", GgufType::STRING))
    for (const auto& x : *s) v.merges.push_back(x.get<std::string>());
  auto id = [&](const std::string& key) -> std::optional<int32_t> {
    auto x = get_int(key);
    if (!x) return std::nullopt;
    if (*x < 0 || static_cast<uint64_t>(*x) >= n) fail("{}: {} = {} is outside the {}-token vocabulary", source_, key, *x, n);
    return static_cast<int32_t>(*x);
  };
  v.bos_id = id("tokenizer.ggml.bos_token_id");
  v.eos_id = id("tokenizer.ggml.eos_token_id");
  v.unk_id = id("tokenizer.ggml.unknown_token_id");
  v.eot_id = id("tokenizer.ggml.eot_token_id");
  v.add_bos = get_bool("tokenizer.ggml.add_bos_token").value_or(v.model == "llama");
  v.add_eos = get_bool("tokenizer.ggml.add_eos_token").value_or(false);
  v.add_space_prefix = get_bool("tokenizer.ggml.add_space_prefix").value_or(v.model == "llama");
  v.chat_template = get_string("tokenizer.chat_template").value_or("");
  return v;
}

std::string gguf_to_hf_name(const std::string& g) {
  if (g == "token_embd.weight") return "model.embed_tokens.weight";
  if (g == "output_norm.weight") return "model.norm.weight";
  if (g == "output.weight") return "lm_head.weight";
  static const std::regex re(R"(blk\.(\d+)\.([a-z_]+)\.(weight|bias))");
  std::smatch m;
  if (!std::regex_match(g, m, re)) return g;
  static const std::map<std::string, std::string> kMap = {
      {"attn_q", "self_attn.q_proj"},     {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"},     {"attn_output", "self_attn.o_proj"},
      {"attn_norm", "input_layernorm"},   {"ffn_norm", "post_attention_layernorm"},
      {"ffn_gate", "mlp.gate_proj"},      {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"},
  };
  auto it = kMap.find(m[2].str());
  if (it == kMap.end()) return g;
  return "model.layers." + m[1].str() + "." + it->second + "." + m[3].str();
}

namespace {
void check_qk(int64_t rows, int64_t n_head) {
  if (n_head <= 0 || rows % (2 * n_head) != 0)
    fail("Q/K permutation: {} rows are not a multiple of 2 x {} heads", rows, n_head);
}
}  // namespace

void unpermute_qk_rows(const void* src, void* dst, int64_t rows, size_t row_bytes, int64_t n_head) {
  check_qk(rows, n_head);
  const int64_t hd = rows / n_head, half = hd / 2;
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < half; ++j)
        std::memcpy(d + (h * hd + i * half + j) * row_bytes, s + (h * hd + 2 * j + i) * row_bytes, row_bytes);
}

void permute_qk_rows(const void* src, void* dst, int64_t rows, size_t row_bytes, int64_t n_head) {
  check_qk(rows, n_head);
  const int64_t hd = rows / n_head, half = hd / 2;
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < half; ++j)
        std::memcpy(d + (h * hd + 2 * j + i) * row_bytes, s + (h * hd + i * half + j) * row_bytes, row_bytes);
}

}  // namespace qeval
