// Checkpoint: opens HF directories (single or sharded safetensors) and GGUF files, maps GGUF
// names to HF names, un-permutes llama-GGUF Q/K rows, validates expected tensor shapes.
#include "engine/checkpoint.h"

#include <algorithm>
#include <cstdint>

#include "core/error.h"
#include "core/fs.h"
#include "engine/gguf.h"
#include "engine/safetensors.h"

namespace qeval {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

}  // namespace

Checkpoint::~Checkpoint() = default;

std::unique_ptr<Checkpoint> Checkpoint::open(const std::filesystem::path& path) {
  std::unique_ptr<Checkpoint> ck(new Checkpoint());
  ck->path_ = path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    ck->open_hf(path);
  } else if (std::filesystem::is_regular_file(path, ec)) {
    ck->open_gguf(path);
  } else {
    fail("{}: no such model (hint: pass an HF model directory or a .gguf file)", path.string());
  }
  ck->validate_shapes();
  return ck;
}

void Checkpoint::open_hf(const std::filesystem::path& dir) {
  config_ = load_hf_config(dir);
  auto index_path = dir / "model.safetensors.index.json";
  auto single = dir / "model.safetensors";
  std::error_code ec;
  if (std::filesystem::exists(index_path, ec)) {
    SafetensorsIndex idx = read_safetensors_index(index_path);
    std::map<std::string, size_t> shard_of_file;
    for (const auto& f : idx.files()) {
      shard_of_file[f] = shards_.size();
      shards_.push_back(SafetensorsFile::open(dir / f));
    }
    for (const auto& [name, file] : idx.weight_map) {
      const auto& sh = *shards_[shard_of_file.at(file)];
      if (!sh.find(name))
        fail("{}: weight_map says tensor {} is in {}, but that file has no such tensor", index_path.string(), name, file);
    }
    for (const auto& sh : shards_) {
      for (const auto& t : sh->tensors()) {
        auto it = idx.weight_map.find(t.name);
        if (it != idx.weight_map.end() && (dir / it->second).string() != sh->source()) continue;  // listed elsewhere
        if (tensors_.count(t.name))
          fail("{}: tensor {} appears in both {} and {}", dir.string(), t.name, tensor_file_[t.name], sh->source());
        tensors_[t.name] = t;
        tensor_file_[t.name] = sh->source();
      }
    }
  } else if (std::filesystem::exists(single, ec)) {
    shards_.push_back(SafetensorsFile::open(single));
    for (const auto& t : shards_.back()->tensors()) {
      tensors_[t.name] = t;
      tensor_file_[t.name] = shards_.back()->source();
    }
  } else {
    fail("{}: neither model.safetensors nor model.safetensors.index.json found (hint: qeval reads HF safetensors "
         "checkpoints and .gguf files)", dir.string());
  }
}

void Checkpoint::open_gguf(const std::filesystem::path& file) {
  gguf_ = GgufFile::open(file);
  config_ = gguf_->model_config();
  const bool permuted = config_.arch == "llama";  // llama.cpp permutes Q/K only for llama
  for (const auto& ti : gguf_->tensor_infos()) {
    const TensorView* v = gguf_->find(ti.name);  // throws for quantized types
    TensorView t = *v;
    t.name = gguf_to_hf_name(ti.name);
    const bool is_q = ends_with(t.name, "self_attn.q_proj.weight") || ends_with(t.name, "self_attn.q_proj.bias");
    const bool is_k = ends_with(t.name, "self_attn.k_proj.weight") || ends_with(t.name, "self_attn.k_proj.bias");
    if (permuted && (is_q || is_k) && !t.shape.empty()) {
      int64_t rows = t.shape[0];
      size_t row_bytes = rows ? t.nbytes / static_cast<size_t>(rows) : 0;
      int64_t n_head = is_q ? config_.n_heads : config_.n_kv_heads;
      if (rows % (2 * n_head) != 0)
        fail("{}: tensor {}: {} rows do not split into {} heads of even size", file.string(), ti.name, rows, n_head);
      owned_.emplace_back(t.nbytes);
      unpermute_qk_rows(t.data, owned_.back().data(), rows, row_bytes, n_head);
      t.data = owned_.back().data();
    }
    if (tensors_.count(t.name)) fail("{}: two tensors map to {}", file.string(), t.name);
    tensor_file_[t.name] = file.string();
    tensors_[t.name] = std::move(t);
  }
}

void Checkpoint::validate_shapes() const {
  const ModelConfig& c = config_;
  const std::string where = path_.string();
  auto expect = [&](const std::string& name, std::vector<int64_t> shape, bool required) {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      if (required)
        fail("{}: tensor {} is missing (expected shape {}; the config says {} layers, hidden {})", where, name,
             shape_str(shape), c.n_layers, c.hidden_size);
      return;
    }
    const TensorView& t = it->second;
    const std::string& file = tensor_file_.at(name);
    if (t.shape != shape)
      fail("{}: tensor {}: expected shape {}, got {} (does config.json match the weights?)", file, name,
           shape_str(shape), shape_str(t.shape));
    const std::string base = ends_with(name, ".weight") ? name.substr(0, name.size() - 7) : "";
    const TensorView* s_inv = base.empty() ? nullptr : find(base + ".weight_scale_inv");
    const TensorView* s_row = base.empty() ? nullptr : find(base + ".weight_scale");
    if (!is_float(t.dtype)) {
      bool quant = (t.dtype == DType::F8_E4M3 || t.dtype == DType::I8) && (s_inv || s_row);
      if (!quant)
        fail("{}: tensor {}: dtype {} needs a weight_scale_inv or weight_scale tensor (or use a float dtype)", file,
             name, dtype_name(t.dtype));
    }
    if (shape.size() == 2) {
      if (s_inv) {
        std::vector<int64_t> es = {(shape[0] + 127) / 128, (shape[1] + 127) / 128};
        if (s_inv->shape != es || s_inv->dtype != DType::F32)
          fail("{}: tensor {}.weight_scale_inv: expected F32 {}, got {} {}", tensor_file_.at(base + ".weight_scale_inv"),
               base, shape_str(es), dtype_name(s_inv->dtype), shape_str(s_inv->shape));
      }
      if (s_row) {
        std::vector<int64_t> es = {shape[0], 1};
        if (s_row->shape != es || s_row->dtype != DType::F32)
          fail("{}: tensor {}.weight_scale: expected F32 {}, got {} {}", tensor_file_.at(base + ".weight_scale"), base,
               shape_str(es), dtype_name(s_row->dtype), shape_str(s_row->shape));
      }
    }
  };
  const int64_t H = c.hidden_size, V = c.vocab_size, I = c.intermediate_size;
  const int64_t q_out = c.n_heads * c.head_dim, kv_out = c.n_kv_heads * c.head_dim;
  expect("model.embed_tokens.weight", {V, H}, true);
  expect("model.norm.weight", {H}, true);
  expect("lm_head.weight", {V, H}, !c.tie_word_embeddings);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    expect(p + "input_layernorm.weight", {H}, true);
    expect(p + "post_attention_layernorm.weight", {H}, true);
    expect(p + "self_attn.q_proj.weight", {q_out, H}, true);
    expect(p + "self_attn.k_proj.weight", {kv_out, H}, true);
    expect(p + "self_attn.v_proj.weight", {kv_out, H}, true);
    expect(p + "self_attn.o_proj.weight", {H, q_out}, true);
    expect(p + "self_attn.q_proj.bias", {q_out}, c.attention_bias);
    expect(p + "self_attn.k_proj.bias", {kv_out}, c.attention_bias);
    expect(p + "self_attn.v_proj.bias", {kv_out}, c.attention_bias);
    expect(p + "mlp.gate_proj.weight", {I, H}, true);
    expect(p + "mlp.up_proj.weight", {I, H}, true);
    expect(p + "mlp.down_proj.weight", {H, I}, true);
  }
  // Layers past the config's count would be ignored silently, and the model would run with
  // fewer layers than it has (garbage, exit 0). Multi-token-prediction layers, stored right
  // after the decoder's, are the exception.
  const int64_t n_allowed = c.n_layers + c.num_nextn_predict_layers;
  const std::string* first = nullptr;
  int64_t first_layer = 0;
  for (const auto& [name, t] : tensors_) {
    int64_t layer = -1;
    for (const char* prefix : {"model.layers.", "blk."}) {
      const size_t n = std::char_traits<char>::length(prefix);
      if (name.compare(0, n, prefix) != 0) continue;
      const size_t dot = name.find('.', n);
      if (dot == std::string::npos || dot == n) continue;
      if (!std::all_of(name.begin() + n, name.begin() + dot, [](char ch) { return ch >= '0' && ch <= '9'; })) continue;
      layer = dot - n > 18 ? INT64_MAX : std::stoll(name.substr(n, dot - n));
    }
    if (layer >= n_allowed && (!first || layer < first_layer)) {
      first = &name;
      first_layer = layer;
    }
  }
  if (first) {
    const bool gguf = is_gguf();
    fail("{}: tensor {} is in layer {}, beyond {} {}{} (does {} match the weights? a layer past the count would be "
         "ignored)",
         tensor_file_.at(*first), *first, first_layer, gguf ? c.arch + ".block_count" : "num_hidden_layers",
         c.n_layers,
         c.num_nextn_predict_layers ? fmt::format(" and num_nextn_predict_layers {}", c.num_nextn_predict_layers)
                                    : "",
         gguf ? "the GGUF's metadata" : "config.json");
  }
}

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const TensorView& Checkpoint::get(const std::string& name) const {
  const TensorView* t = find(name);
  if (!t) fail("{}: tensor {} not found in the checkpoint (it has {} tensors)", path_.string(), name, tensors_.size());
  return *t;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [k, v] : tensors_) out.push_back(k);
  return out;
}

std::string Checkpoint::file_of(const std::string& name) const {
  auto it = tensor_file_.find(name);
  return it == tensor_file_.end() ? "" : it->second;
}

std::string Checkpoint::fingerprint() const {
  std::string s = config_to_json(config_).dump();
  for (const auto& [name, t] : tensors_) {
    s += '\n';
    s += name;
    s += ' ';
    s += dtype_name(t.dtype);
    s += ' ';
    s += shape_str(t.shape);
    s += ' ';
    s += std::to_string(t.nbytes);
  }
  return sha256_hex(s);
}

}  // namespace qeval
