// Transformer forward pass over a batch of sequence chunks with a paged KV cache.
#include "engine/model.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>

#include "core/error.h"

namespace qeval {

float round_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7F800000u) == 0x7F800000u) {  // inf / nan: truncate, keep nan quiet
    if (u & 0x007FFFFFu) u |= 0x00400000u;
    u &= 0xFFFF0000u;
  } else {
    u += 0x7FFFu + ((u >> 16) & 1u);
    u &= 0xFFFF0000u;
  }
  float y;
  std::memcpy(&y, &u, 4);
  return y;
}

namespace {

// Dot product of n floats in a fixed order: 8 lanes over the multiple-of-8 prefix, a fixed
// pairwise lane reduction, then the tail in index order.
inline float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float s = 0.0f;
  if (n >= 8) {
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8)
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    __m128 lo = _mm256_castps256_ps128(acc), hi = _mm256_extractf128_ps(acc, 1);
    __m128 q = _mm_add_ps(lo, hi);
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
    s = _mm_cvtss_f32(q);
  }
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y[i] += a * x[i]
inline void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// out = w * (x / sqrt(mean(x^2) + eps)); the sum of squares is accumulated in double.
void rms_norm(const float* x, const float* w, float* out, int64_t n, double eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * scale);
}

const TensorView& need(const TensorLookup& find, const std::string& name,
                       std::initializer_list<int64_t> shape) {
  const TensorView* t = find(name);
  if (!t) fail("model: tensor '{}' is missing (hint: is the checkpoint complete and of a supported architecture?)", name);
  std::vector<int64_t> want(shape);
  if (t->shape != want) {
    auto str = [](const std::vector<int64_t>& s) {
      std::string r = "[";
      for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
      return r + "]";
    };
    fail("model: tensor '{}' has shape {}, expected {}", name, str(t->shape), str(want));
  }
  return *t;
}

std::vector<float> norm_weight(const TensorLookup& find, const std::string& name, int64_t n) {
  return to_f32(need(find, name, {n}));
}

}  // namespace

Model::Model(const ModelConfig& cfg, const TensorLookup& find, const ModelOptions& opt)
    : cfg_(cfg), opt_(opt) {
  if (std::string e = cfg.validate(); !e.empty()) fail("model config: {}", e);
  const int64_t D = cfg.hidden_size, V = cfg.vocab_size, H = cfg.n_heads, G = cfg.n_kv_heads,
                E = cfg.head_dim, F = cfg.intermediate_size;
  if (E % 2 != 0) fail("model config: head_dim {} must be even for RoPE", E);
  embed_ = need(find, "model.embed_tokens.weight", {V, D});
  if (embed_.dtype != DType::F32 && embed_.dtype != DType::BF16 && embed_.dtype != DType::F16)
    fail("model: tensor 'model.embed_tokens.weight' has dtype {}, expected F32, BF16 or F16",
         dtype_name(embed_.dtype));

  auto linear = [&](const std::string& base, int64_t n, int64_t k, bool want_bias,
                    QuantScheme q) {
    const TensorView& w = need(find, base + ".weight", {n, k});
    const TensorView* b = want_bias ? &need(find, base + ".bias", {n}) : find(base + ".bias");
    const TensorView* s = find(base + ".weight_scale_inv");
    if (!s) s = find(base + ".weight_scale");
    return make_linear(w, b, s, q, opt_.compute);
  };
  layers_.resize(cfg.n_layers);
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    Layer& L = layers_[l];
    L.attn_norm = norm_weight(find, p + "input_layernorm.weight", D);
    L.ffn_norm = norm_weight(find, p + "post_attention_layernorm.weight", D);
    L.wq = linear(p + "self_attn.q_proj", H * E, D, cfg.attention_bias, opt.quant);
    L.wk = linear(p + "self_attn.k_proj", G * E, D, cfg.attention_bias, opt.quant);
    L.wv = linear(p + "self_attn.v_proj", G * E, D, cfg.attention_bias, opt.quant);
    L.wo = linear(p + "self_attn.o_proj", D, H * E, false, opt.quant);
    L.w_gate = linear(p + "mlp.gate_proj", F, D, false, opt.quant);
    L.w_up = linear(p + "mlp.up_proj", F, D, false, opt.quant);
    L.w_down = linear(p + "mlp.down_proj", D, F, false, opt.quant);
  }
  final_norm_ = norm_weight(find, "model.norm.weight", D);
  const TensorView* head = find("lm_head.weight");
  if (cfg.tie_word_embeddings || !head) {
    lm_head_ = make_linear(embed_, nullptr, nullptr, QuantScheme::None, opt_.compute);
  } else {
    lm_head_ = linear("lm_head", V, D, false, QuantScheme::None);
  }

  // RoPE inverse frequencies theta^(-2i/E), with HF's rope_scaling rules.
  inv_freq_.resize(E / 2);
  for (int64_t i = 0; i < E / 2; ++i) {
    double f = 1.0 / std::pow(cfg.rope_theta, static_cast<double>(2 * i) / static_cast<double>(E));
    if (cfg.rope_scaling_type == "linear") {
      f /= cfg.rope_factor;
    } else if (cfg.rope_scaling_type == "llama3") {
      const double old_ctx = static_cast<double>(cfg.rope_original_max_position);
      const double low_wl = old_ctx / cfg.rope_low_freq_factor;
      const double high_wl = old_ctx / cfg.rope_high_freq_factor;
      const double wl = 2.0 * std::numbers::pi / f;
      if (wl > low_wl) {
        f /= cfg.rope_factor;
      } else if (wl >= high_wl) {
        double smooth = (old_ctx / wl - cfg.rope_low_freq_factor) /
                        (cfg.rope_high_freq_factor - cfg.rope_low_freq_factor);
        f = (1.0 - smooth) * f / cfg.rope_factor + smooth * f;
      }
    } else if (!cfg.rope_scaling_type.empty()) {
      fail("model config: rope_scaling type '{}' is not supported (hint: linear or llama3)",
           cfg.rope_scaling_type);
    }
    inv_freq_[i] = f;
  }
}

Model::~Model() = default;

size_t Model::weight_bytes_per_step() const {
  size_t b = lm_head_->weight_bytes();
  for (const Layer& L : layers_)
    b += L.wq->weight_bytes() + L.wk->weight_bytes() + L.wv->weight_bytes() +
         L.wo->weight_bytes() + L.w_gate->weight_bytes() + L.w_up->weight_bytes() +
         L.w_down->weight_bytes();
  return b;
}

std::unique_ptr<KvCache> Model::make_kv_cache(size_t budget_bytes) const {
  return std::make_unique<KvCache>(cfg_.n_layers, cfg_.n_kv_heads, cfg_.head_dim, budget_bytes);
}

void Model::embed(int32_t token, float* out) const {
  const int64_t D = cfg_.hidden_size;
  if (token < 0 || token >= cfg_.vocab_size)
    fail("model: token id {} outside the vocabulary [0, {})", token, cfg_.vocab_size);
  const size_t off = static_cast<size_t>(token) * D;
  switch (embed_.dtype) {
    case DType::F32: {
      const float* src = static_cast<const float*>(embed_.data) + off;
      for (int64_t i = 0; i < D; ++i)
        out[i] = opt_.compute == ComputeType::BF16 ? round_bf16(src[i]) : src[i];
      break;
    }
    case DType::BF16: {
      const uint16_t* src = static_cast<const uint16_t*>(embed_.data) + off;
      for (int64_t i = 0; i < D; ++i) {
        uint32_t u = static_cast<uint32_t>(src[i]) << 16;
        std::memcpy(&out[i], &u, 4);
      }
      break;
    }
    case DType::F16: {
      const uint16_t* src = static_cast<const uint16_t*>(embed_.data) + off;
      for (int64_t i = 0; i < D; ++i) {
        float f = _cvtsh_ss(src[i]);
        out[i] = opt_.compute == ComputeType::BF16 ? round_bf16(f) : f;
      }
      break;
    }
    default:
      break;
  }
}

void Model::attention(int64_t layer, std::span<const SeqChunk> chunks, ThreadPool& pool) {
  const int64_t H = cfg_.n_heads, G = cfg_.n_kv_heads, E = cfg_.head_dim;
  const int64_t group = H / G;
  const int64_t T = static_cast<int64_t>(tok_seq_.size());
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(E)));
  int64_t max_pos = 0;
  for (int64_t t = 0; t < T; ++t) max_pos = std::max(max_pos, tok_pos_[t]);
  scores_.resize(pool.size());
  for (auto& s : scores_)
    if (static_cast<int64_t>(s.size()) < max_pos + 1) s.resize(max_pos + 1);
  const KvCache& kv = *kv_;
  // att[t, h, :] = softmax_j(q[t,h]·k[j,g] * scale) · v[j,g], j = 0..pos[t] (causal).
  pool.parallel_for(T * H, [&](int thread, int64_t begin, int64_t end) {
    float* sc = scores_[thread].data();
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / H, h = item % H, g = h / group;
      const int seq = tok_seq_[t];
      const int64_t n = tok_pos_[t] + 1;
      const float* q = q_.data() + (t * H + h) * E;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j0 = 0; j0 < n; j0 += KvCache::kBlockTokens) {
        const float* kb = kv.k_at(seq, layer, g, j0);
        const int64_t m = std::min<int64_t>(KvCache::kBlockTokens, n - j0);
        for (int64_t j = 0; j < m; ++j) {
          float s = dot(q, kb + j * E, E) * scale;
          sc[j0 + j] = s;
          mx = std::max(mx, s);
        }
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < n; ++j) {
        sc[j] = std::exp(sc[j] - mx);
        sum += sc[j];
      }
      float* out = att_.data() + (t * H + h) * E;
      std::fill(out, out + E, 0.0f);
      for (int64_t j0 = 0; j0 < n; j0 += KvCache::kBlockTokens) {
        const float* vb = kv.v_at(seq, layer, g, j0);
        const int64_t m = std::min<int64_t>(KvCache::kBlockTokens, n - j0);
        for (int64_t j = 0; j < m; ++j) axpy(sc[j0 + j], vb + j * E, out, E);
      }
      const float inv = 1.0f / sum;
      for (int64_t e = 0; e < E; ++e) out[e] *= inv;
    }
  });
}

void Model::forward(std::span<const SeqChunk> chunks, KvCache& kv, ThreadPool& pool,
                    const LogitsFn& on_logits) {
  const int64_t D = cfg_.hidden_size, V = cfg_.vocab_size, H = cfg_.n_heads,
                G = cfg_.n_kv_heads, E = cfg_.head_dim, F = cfg_.intermediate_size;
  const int64_t half = E / 2;
  kv_ = &kv;
  tok_seq_.clear();
  tok_pos_.clear();
  for (const SeqChunk& c : chunks) {
    if (c.pos0 + static_cast<int64_t>(c.tokens.size()) > kv.capacity(c.seq))
      fail("model: sequence {} needs {} cached positions but holds {}", c.seq,
           c.pos0 + c.tokens.size(), kv.capacity(c.seq));
    for (size_t i = 0; i < c.tokens.size(); ++i) {
      tok_seq_.push_back(c.seq);
      tok_pos_.push_back(c.pos0 + static_cast<int64_t>(i));
    }
  }
  const int64_t T = static_cast<int64_t>(tok_seq_.size());
  if (T == 0) return;
  x_.resize(T * D);
  xn_.resize(T * D);
  q_.resize(T * H * E);
  k_.resize(T * G * E);
  v_.resize(T * G * E);
  att_.resize(T * H * E);
  o_.resize(T * D);
  gate_.resize(T * F);
  up_.resize(T * F);
  rope_cos_.resize(T * half);
  rope_sin_.resize(T * half);

  {
    int64_t t = 0;
    for (const SeqChunk& c : chunks)
      for (int32_t tok : c.tokens) embed(tok, x_.data() + (t++) * D);
  }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i) {
      double a = static_cast<double>(tok_pos_[t]) * inv_freq_[i];
      rope_cos_[t * half + i] = static_cast<float>(std::cos(a));
      rope_sin_[t * half + i] = static_cast<float>(std::sin(a));
    }
  // Rotate-half RoPE on n_heads heads of one token row.
  auto rope = [&](float* row, int64_t n_heads, int64_t t) {
    const float* c = rope_cos_.data() + t * half;
    const float* s = rope_sin_.data() + t * half;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* x = row + h * E;
      for (int64_t i = 0; i < half; ++i) {
        float x0 = x[i], x1 = x[i + half];
        x[i] = x0 * c[i] - x1 * s[i];
        x[i + half] = x1 * c[i] + x0 * s[i];
      }
    }
  };

  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    Layer& L = layers_[l];
    // xn = rmsnorm(x) [T, D]
    pool.parallel_for(T, [&](int, int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        rms_norm(x_.data() + t * D, L.attn_norm.data(), xn_.data() + t * D, D, cfg_.rms_norm_eps);
    });
    L.wq->forward(xn_.data(), T, q_.data(), pool);  // [T, H*E]
    L.wk->forward(xn_.data(), T, k_.data(), pool);  // [T, G*E]
    L.wv->forward(xn_.data(), T, v_.data(), pool);  // [T, G*E]
    pool.parallel_for(T, [&](int, int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        rope(q_.data() + t * H * E, H, t);
        rope(k_.data() + t * G * E, G, t);
        for (int64_t g = 0; g < G; ++g) {
          std::memcpy(kv.k_at(tok_seq_[t], l, g, tok_pos_[t]), k_.data() + (t * G + g) * E,
                      E * sizeof(float));
          std::memcpy(kv.v_at(tok_seq_[t], l, g, tok_pos_[t]), v_.data() + (t * G + g) * E,
                      E * sizeof(float));
        }
      }
    });
    attention(l, chunks, pool);                       // att [T, H*E]
    L.wo->forward(att_.data(), T, o_.data(), pool);   // [T, D]
    pool.parallel_for(T, [&](int, int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        float* x = x_.data() + t * D;
        const float* o = o_.data() + t * D;
        for (int64_t i = 0; i < D; ++i) x[i] += o[i];
        rms_norm(x, L.ffn_norm.data(), xn_.data() + t * D, D, cfg_.rms_norm_eps);
      }
    });
    L.w_gate->forward(xn_.data(), T, gate_.data(), pool);  // [T, F]
    L.w_up->forward(xn_.data(), T, up_.data(), pool);      // [T, F]
    pool.parallel_for(T * F, [&](int, int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        float g = gate_[i];
        gate_[i] = g / (1.0f + std::exp(-g)) * up_[i];  // silu(gate) * up
      }
    });
    L.w_down->forward(gate_.data(), T, o_.data(), pool);  // [T, D]
    pool.parallel_for(T, [&](int, int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        float* x = x_.data() + t * D;
        const float* o = o_.data() + t * D;
        for (int64_t i = 0; i < D; ++i) x[i] += o[i];
      }
    });
  }

  // Logits for the requested rows, kLogitRows at a time: rmsnorm → lm_head [R, V].
  constexpr int64_t kLogitRows = 64;
  struct Want {
    size_t chunk;
    int64_t token, row;
  };
  std::vector<Want> wants;
  {
    int64_t t = 0;
    for (size_t ci = 0; ci < chunks.size(); ++ci) {
      const int64_t n = static_cast<int64_t>(chunks[ci].tokens.size());
      for (int64_t i = 0; i < n; ++i, ++t)
        if (i >= chunks[ci].logits_from) wants.push_back({ci, i, t});
    }
  }
  for (size_t w0 = 0; w0 < wants.size(); w0 += kLogitRows) {
    const int64_t R = std::min<int64_t>(kLogitRows, static_cast<int64_t>(wants.size() - w0));
    head_in_.resize(R * D);
    logits_.resize(R * V);
    for (int64_t r = 0; r < R; ++r)
      rms_norm(x_.data() + wants[w0 + r].row * D, final_norm_.data(), head_in_.data() + r * D, D,
               cfg_.rms_norm_eps);
    lm_head_->forward(head_in_.data(), R, logits_.data(), pool);
    for (int64_t r = 0; r < R; ++r)
      on_logits(wants[w0 + r].chunk, wants[w0 + r].token,
                std::span<const float>(logits_.data() + r * V, V));
  }
}

}  // namespace qeval
