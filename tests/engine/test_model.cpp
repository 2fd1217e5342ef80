// Transformer forward pass against a plain float64 reference written here (random HF-layout
// fixtures: GQA, qkv bias, untied and tied heads, RoPE scaling), in F32 and BF16; KV cache
// paging and forking; GGUF and HF copies of one model agree.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"
#include "engine/checkpoint.h"
#include "engine/cpu_features.h"
#include "engine/model.h"
#include "engine/fixtures_model.h"

using namespace qeval;
namespace fx = qeval::fixtures;

namespace {

// Plain float64 forward over all tokens of one sequence; returns logits [T][V].
std::vector<std::vector<double>> reference_logits(const fx::FixtureModel& m,
                                                  const std::vector<int32_t>& tokens) {
  const auto& s = m.spec;
  const int64_t D = s.hidden, H = s.heads, G = s.kv_heads, E = s.head_dim ? s.head_dim : D / H,
                F = s.ffn, V = s.vocab, T = static_cast<int64_t>(tokens.size());
  auto W = [&](const std::string& n) -> const std::vector<float>& { return m.tensors.at(n).values; };
  auto has = [&](const std::string& n) { return m.tensors.count(n) > 0; };
  auto matvec = [&](const std::vector<float>& w, const std::vector<double>& x, int64_t n, int64_t k) {
    std::vector<double> y(n, 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j) y[i] += static_cast<double>(w[i * k + j]) * x[j];
    return y;
  };
  auto rms = [&](const std::vector<double>& x, const std::vector<float>& w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    double r = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + s.rms_norm_eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * w[i];
    return y;
  };
  // inv_freq with HF's rope_scaling rules (linear: divide; llama3: wavelength bands).
  std::vector<double> inv(E / 2);
  for (int64_t i = 0; i < E / 2; ++i) {
    double f = std::pow(s.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(E));
    const auto& rs = s.rope_scaling;
    if (!rs.is_null()) {
      std::string type = rs.value("rope_type", rs.value("type", std::string()));
      double factor = rs.value("factor", 1.0);
      if (type == "linear") f /= factor;
      if (type == "llama3") {
        double lo = rs.value("low_freq_factor", 1.0), hi = rs.value("high_freq_factor", 4.0);
        double old = rs.value("original_max_position_embeddings", 8192.0);
        double wl = 2 * std::numbers::pi / f;
        if (wl > old / lo) f = f / factor;
        else if (wl >= old / hi) {
          double sm = (old / wl - lo) / (hi - lo);
          f = (1 - sm) * f / factor + sm * f;
        }
      }
    }
    inv[i] = f;
  }
  auto rope = [&](std::vector<double>& v, int64_t heads, int64_t pos) {
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < E / 2; ++i) {
        double c = std::cos(pos * inv[i]), sn = std::sin(pos * inv[i]);
        double a = v[h * E + i], b = v[h * E + i + E / 2];
        v[h * E + i] = a * c - b * sn;
        v[h * E + i + E / 2] = b * c + a * sn;
      }
  };
  std::vector<std::vector<double>> x(T, std::vector<double>(D));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D; ++i) x[t][i] = W("model.embed_tokens.weight")[tokens[t] * D + i];
  for (int64_t l = 0; l < s.layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    std::vector<std::vector<double>> K(T), Vv(T), Q(T);
    for (int64_t t = 0; t < T; ++t) {
      auto xn = rms(x[t], W(p + "input_layernorm.weight"));
      Q[t] = matvec(W(p + "self_attn.q_proj.weight"), xn, H * E, D);
      K[t] = matvec(W(p + "self_attn.k_proj.weight"), xn, G * E, D);
      Vv[t] = matvec(W(p + "self_attn.v_proj.weight"), xn, G * E, D);
      if (has(p + "self_attn.q_proj.bias")) {
        for (int64_t i = 0; i < H * E; ++i) Q[t][i] += W(p + "self_attn.q_proj.bias")[i];
        for (int64_t i = 0; i < G * E; ++i) K[t][i] += W(p + "self_attn.k_proj.bias")[i];
        for (int64_t i = 0; i < G * E; ++i) Vv[t][i] += W(p + "self_attn.v_proj.bias")[i];
      }
      rope(Q[t], H, t);
      rope(K[t], G, t);
    }
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> att(H * E, 0.0);
      for (int64_t h = 0; h < H; ++h) {
        int64_t g = h / (H / G);
        std::vector<double> sc(t + 1);
        double mx = -1e300;
        for (int64_t j = 0; j <= t; ++j) {
          double d = 0;
          for (int64_t e = 0; e < E; ++e) d += Q[t][h * E + e] * K[j][g * E + e];
          sc[j] = d / std::sqrt(static_cast<double>(E));
          mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (auto& v : sc) sum += (v = std::exp(v - mx));
        for (int64_t j = 0; j <= t; ++j)
          for (int64_t e = 0; e < E; ++e) att[h * E + e] += sc[j] / sum * Vv[j][g * E + e];
      }
      auto o = matvec(W(p + "self_attn.o_proj.weight"), att, D, H * E);
      for (int64_t i = 0; i < D; ++i) x[t][i] += o[i];
      auto xn = rms(x[t], W(p + "post_attention_layernorm.weight"));
      auto gt = matvec(W(p + "mlp.gate_proj.weight"), xn, F, D);
      auto up = matvec(W(p + "mlp.up_proj.weight"), xn, F, D);
      for (int64_t i = 0; i < F; ++i) gt[i] = gt[i] / (1 + std::exp(-gt[i])) * up[i];
      auto dn = matvec(W(p + "mlp.down_proj.weight"), gt, D, F);
      for (int64_t i = 0; i < D; ++i) x[t][i] += dn[i];
    }
  }
  std::vector<std::vector<double>> out(T);
  const auto& head = s.tied ? W("model.embed_tokens.weight") : W("lm_head.weight");
  for (int64_t t = 0; t < T; ++t) out[t] = matvec(head, rms(x[t], W("model.norm.weight")), V, D);
  return out;
}

// Logits of every token of `tokens`, fed as chunks of `chunk` tokens through the KV cache.
std::vector<std::vector<float>> model_logits(Model& model, const std::vector<int32_t>& tokens,
                                             int64_t chunk, ThreadPool& pool) {
  auto kv = model.make_kv_cache(1 << 20);
  int seq = kv->create();
  REQUIRE(kv->reserve(seq, static_cast<int64_t>(tokens.size())));
  std::vector<std::vector<float>> out(tokens.size());
  for (size_t p = 0; p < tokens.size(); p += chunk) {
    size_t n = std::min<size_t>(chunk, tokens.size() - p);
    SeqChunk c{seq, static_cast<int64_t>(p), std::span<const int32_t>(tokens.data() + p, n), 0};
    model.forward(std::span<const SeqChunk>(&c, 1), *kv, pool,
                  [&](size_t, int64_t t, std::span<const float> lg) {
                    out[p + t].assign(lg.begin(), lg.end());
                  });
  }
  return out;
}

// max |a - b| / max |b| over all positions.
double rel_err(const std::vector<std::vector<float>>& a, const std::vector<std::vector<double>>& b) {
  double num = 0, den = 0;
  for (size_t t = 0; t < b.size(); ++t)
    for (size_t i = 0; i < b[t].size(); ++i) {
      num = std::max(num, std::abs(a[t][i] - b[t][i]));
      den = std::max(den, std::abs(b[t][i]));
    }
  return num / den;
}

std::unique_ptr<Model> load_model(const Checkpoint& ck, ComputeType ct) {
  ModelOptions mo;
  mo.compute = ct;
  return std::make_unique<Model>(ck.config(), [&](const std::string& n) { return ck.find(n); }, mo);
}

std::vector<int32_t> some_tokens(int n, int vocab, int seed) {
  std::vector<int32_t> t;
  uint32_t s = 12345u + seed;
  for (int i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    t.push_back(static_cast<int32_t>((s >> 8) % vocab));
  }
  return t;
}

}  // namespace

TEST_CASE("model: logits match the float64 reference (2 layers, GQA, qkv bias, untied)", "[engine-model]") {
  auto dir = fx::temp_dir("model-ref");
  fx::ModelSpec spec;
  spec.arch = "qwen2";
  spec.qkv_bias = true;
  spec.tied = false;
  spec.layers = 2;
  spec.heads = 4;
  spec.kv_heads = 2;
  auto fm = fx::write_hf_model(dir, spec);
  auto ck = Checkpoint::open(dir);
  ThreadPool pool(2);
  auto tokens = some_tokens(40, static_cast<int>(spec.vocab), 1);
  auto ref = reference_logits(fm, tokens);

  // Every chunking of the prompt within tol of the reference.
  auto check_chunks = [&](Model& m, const std::vector<std::vector<double>>& want, double tol) {
    for (int64_t chunk : {40, 7, 1}) {
      double e = rel_err(model_logits(m, tokens, chunk, pool), want);
      INFO("head_dim " << m.config().head_dim << ", chunk " << chunk << ", rel err " << e);
      CHECK(e <= tol);
    }
  };
  check_chunks(*load_model(*ck, ComputeType::F32), ref, 1e-5);
  auto bf16 = load_model(*ck, ComputeType::BF16);
  double e = rel_err(model_logits(*bf16, tokens, 40, pool), ref);
  INFO("bf16 rel err " << e);
  CHECK(e <= 2e-2);
  CHECK(e > 1e-6);  // the bf16 path really rounds

  // head_dim 32: the bf16 model keeps a bf16 KV cache and runs the AMX attention where the CPU
  // has AMX (head_dim 16 above keeps the f32 attention).
  auto dir32 = fx::temp_dir("model-ref-hd32");
  spec.head_dim = 32;
  auto fm32 = fx::write_hf_model(dir32, spec);
  auto ck32 = Checkpoint::open(dir32);
  auto ref32 = reference_logits(fm32, tokens);
  check_chunks(*load_model(*ck32, ComputeType::BF16), ref32, 2e-2);
}

TEST_CASE("model: logits are bit-identical whatever the prefill chunking (attention tiles)", "[engine-model]") {
  // Chunks of 70, 9, 5, 3, 1 tokens put a token in attention tiles of different sizes and key
  // ranges (and cross KV block edges differently); its logits must not change at all. Nor at
  // the AVX2 level: both vector kernels (attention, SiLU) promise the same operations in the same
  // order (the AVX-512 one reduces 16 sums at once with a transposed tree), and f32 linears are
  // exact at both levels.
  // head_dim 32 with bf16: the AMX attention over a bf16 cache, where the CPU has AMX.
  for (int64_t head_dim : {0, 32}) {
  auto dir = fx::temp_dir("model-tiles");
  fx::ModelSpec spec;
  spec.layers = 2;
  spec.heads = 4;
  spec.kv_heads = 2;
  spec.head_dim = head_dim;
  auto fm = fx::write_hf_model(dir, spec);
  auto ck = Checkpoint::open(dir);
  ThreadPool pool(2);
  auto tokens = some_tokens(70, static_cast<int>(spec.vocab), 3);
  for (ComputeType ct : {ComputeType::F32, ComputeType::BF16}) {
    auto m = load_model(*ck, ct);
    auto whole = model_logits(*m, tokens, 70, pool);
    for (int64_t chunk : {9, 5, 3, 1}) {
      INFO("head_dim " << head_dim << ", chunk " << chunk);
      CHECK(model_logits(*m, tokens, chunk, pool) == whole);
    }
    if (ct == ComputeType::F32 && max_kernel_level() >= KernelLevel::Avx512) {
      set_kernel_level_override(KernelLevel::Avx2);
      auto m2 = load_model(*ck, ct);
      set_kernel_level_override(std::nullopt);
      CHECK(model_logits(*m2, tokens, 70, pool) == whole);
    }
  }
  }
}

TEST_CASE("model: RoPE scaling (llama3, linear), tied head, llama arch", "[engine-model]") {
  for (std::string type : {"llama3", "linear"}) {
    auto dir = fx::temp_dir("model-rope");
    fx::ModelSpec spec;
    spec.arch = "llama";
    spec.tied = true;
    spec.head_dim = 32;
    spec.rope_theta = 500000.0;
    if (type == "llama3")
      spec.rope_scaling = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
    else
      spec.rope_scaling = {{"type", "linear"}, {"factor", 4.0}};
    auto fm = fx::write_hf_model(dir, spec);
    auto ck = Checkpoint::open(dir);
    ThreadPool pool(1);
    auto tokens = some_tokens(70, static_cast<int>(spec.vocab), 2);
    auto m = load_model(*ck, ComputeType::F32);
    double e = rel_err(model_logits(*m, tokens, 70, pool), reference_logits(fm, tokens));
    INFO(type << " rel err " << e);
    CHECK(e <= 1e-5);
  }
}

TEST_CASE("model: GGUF copy of a llama fixture gives the HF logits", "[engine-model]") {
  auto dir = fx::temp_dir("model-gguf");
  fx::ModelSpec spec;
  spec.arch = "llama";
  auto fm = fx::write_hf_model(dir, spec);
  fx::write_tiny_gguf(dir / "m.gguf", fm);
  auto hf = Checkpoint::open(dir);
  auto gg = Checkpoint::open(dir / "m.gguf");
  ThreadPool pool(2);
  auto tokens = some_tokens(20, static_cast<int>(spec.vocab), 3);
  auto a = model_logits(*load_model(*hf, ComputeType::F32), tokens, 20, pool);
  auto b = model_logits(*load_model(*gg, ComputeType::F32), tokens, 20, pool);
  CHECK(a == b);
  CHECK(rel_err(a, reference_logits(fm, tokens)) <= 1e-5);
}

TEST_CASE("model: a GGUF's rope_freqs.weight (llama.cpp's llama3 scaling) scales the RoPE frequencies", "[engine-model]") {
  auto dir = fx::temp_dir("model-rope-freqs");
  fx::ModelSpec spec;
  spec.arch = "llama";
  spec.rope_theta = 500000.0;
  spec.rope_scaling = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
  auto fm = fx::write_hf_model(dir, spec);
  // llama.cpp's convert_hf_to_gguf: one factor per frequency, by which the angle is divided
  // (factor in the low band, 1 in the high band, 1 / ((1 - smooth) / factor + smooth) between).
  // head_dim 16: wavelengths 6.3 (kept), 32.6 (smoothed), 167 and up (divided by 8).
  fx::FixtureTensor rf{"rope_freqs.weight", {8}, std::vector<float>(8), "", {}};
  for (int i = 0; i < 8; ++i) {
    const double f = std::pow(500000.0, -2.0 * i / 16.0), wl = 2 * std::numbers::pi / f;
    const double lo_wl = 64.0 / 1.0, hi_wl = 64.0 / 4.0;
    rf.values[i] = wl < hi_wl ? 1.0f : wl > lo_wl ? 8.0f : static_cast<float>(1.0 / ((1 - (64.0 / wl - 1.0) / 3.0) / 8.0 + (64.0 / wl - 1.0) / 3.0));
  }
  fm.tensors["rope_freqs.weight"] = rf;
  fx::write_tiny_gguf(dir / "m.gguf", fm);  // no scaling metadata: the tensor carries it
  auto gg = Checkpoint::open(dir / "m.gguf");
  ThreadPool pool(2);
  auto tokens = some_tokens(70, static_cast<int>(spec.vocab), 4);
  double e = rel_err(model_logits(*load_model(*gg, ComputeType::F32), tokens, 70, pool), reference_logits(fm, tokens));
  INFO("rel err " << e);
  CHECK(e <= 1e-5);
}

TEST_CASE("model: bad tensor shape is an Error naming the tensor", "[engine-model]") {
  ModelConfig c;
  c.arch = "llama";
  c.vocab_size = 8;
  c.hidden_size = 4;
  c.intermediate_size = 4;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 2;
  c.max_position_embeddings = 16;
  std::vector<float> emb(8 * 5, 0.0f);
  TensorView t{"model.embed_tokens.weight", DType::F32, {8, 5}, emb.data(), emb.size() * 4};
  auto find = [&](const std::string& n) -> const TensorView* {
    return n == t.name ? &t : nullptr;
  };
  try {
    Model m(c, find, {});
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("model.embed_tokens.weight") != std::string::npos);
    CHECK(std::string(e.what()).find("[8, 4]") != std::string::npos);
  }
}

TEST_CASE("kv cache: budget, fork shares full blocks, release returns them", "[engine-model]") {
  KvCache kv(2, 1, 4, 0);  // budget 0 -> one block
  CHECK(kv.n_blocks_total() == 1);
  KvCache kv2(2, 1, 4, 10 * KvCache::kBlockTokens * 2 * 2 * 4 * 4);
  CHECK(kv2.n_blocks_total() == 10);
  int a = kv2.create();
  REQUIRE(kv2.reserve(a, 70));  // 3 blocks
  CHECK(kv2.n_blocks_free() == 7);
  for (int64_t p = 0; p < 70; ++p) kv2.k_at(a, 1, 0, p)[0] = static_cast<float>(p);
  int b = kv2.fork(a, 40);      // shares block 0, copies block 1
  CHECK(kv2.n_blocks_free() == 6);
  REQUIRE(kv2.reserve(b, 64));
  CHECK(kv2.n_blocks_free() == 6);
  kv2.k_at(b, 1, 0, 45)[0] = -1.0f;
  CHECK(kv2.k_at(a, 1, 0, 45)[0] == 45.0f);  // the copy is private
  CHECK(kv2.k_at(b, 1, 0, 39)[0] == 39.0f);
  CHECK(kv2.k_at(b, 1, 0, 5)[0] == 5.0f);
  CHECK_FALSE(kv2.reserve(b, 1000));
  kv2.release(a);
  CHECK(kv2.n_blocks_free() == 8);  // block 0 still held by b
  kv2.release(b);
  CHECK(kv2.n_blocks_free() == 10);
}

TEST_CASE("kv cache: bf16 tile layout holds twice the tokens; fork copies its partial block", "[engine-model]") {
  const int64_t E = 32;
  const size_t f32_block = static_cast<size_t>(KvCache::kBlockTokens) * 2 * 2 * E * 4;  // 2 layers, 1 head
  KvCache kv(2, 1, E, 10 * f32_block, KvType::Bf16Tiles);
  CHECK(kv.type() == KvType::Bf16Tiles);
  CHECK(kv.n_blocks_total() == 20);
  CHECK(kv.bytes_per_token() == 2 * 2 * E * 2);
  int a = kv.create();
  REQUIRE(kv.reserve(a, 70));
  // Every (element, key) of a block has its own slot in both layouts.
  std::vector<int> seen_k(KvCache::kBlockTokens * E), seen_v(KvCache::kBlockTokens * E);
  for (int64_t j = 0; j < KvCache::kBlockTokens; ++j)
    for (int64_t e = 0; e < E; ++e) {
      ++seen_k.at(KvCache::k_tile_index(e, j));
      ++seen_v.at(KvCache::v_tile_index(e, j, E));
    }
  CHECK(std::all_of(seen_k.begin(), seen_k.end(), [](int c) { return c == 1; }));
  CHECK(std::all_of(seen_v.begin(), seen_v.end(), [](int c) { return c == 1; }));
  for (int64_t p = 0; p < 70; ++p)
    kv.v_tiles(a, 1, 0, p)[KvCache::v_tile_index(3, p % KvCache::kBlockTokens, E)] = static_cast<uint16_t>(p);
  int b = kv.fork(a, 40);
  kv.v_tiles(b, 1, 0, 45)[KvCache::v_tile_index(3, 45 % KvCache::kBlockTokens, E)] = 9999;
  CHECK(kv.v_tiles(a, 1, 0, 45)[KvCache::v_tile_index(3, 13, E)] == 45);  // the copy is private
  CHECK(kv.v_tiles(b, 1, 0, 39)[KvCache::v_tile_index(3, 7, E)] == 39);
  CHECK(kv.v_tiles(b, 1, 0, 5)[KvCache::v_tile_index(3, 5, E)] == 5);
}

TEST_CASE("kv cache: the bf16 vector layout holds twice the tokens, each value in its own slot", "[engine-model]") {
  const int64_t E = 24, L = 2, H = 3;
  const size_t f32_block = static_cast<size_t>(KvCache::kBlockTokens) * L * 2 * H * E * 4;
  KvCache kv(L, H, E, 10 * f32_block, KvType::Bf16);
  CHECK(kv.n_blocks_total() == 20);
  CHECK(kv.bytes_per_token() == static_cast<size_t>(L * 2 * H * E * 2));
  const int a = kv.create();
  REQUIRE(kv.reserve(a, 70));
  // Write a distinct value into every (layer, head, position, element) of K and V, then read all back.
  auto code = [&](int64_t l, int64_t h, int64_t p, int64_t e, int kv_) {
    return static_cast<uint16_t>((((l * H + h) * 70 + p) * E + e) * 2 + kv_);
  };
  for (int64_t l = 0; l < L; ++l)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t p = 0; p < 70; ++p)
        for (int64_t e = 0; e < E; ++e) {
          kv.k_at<uint16_t>(a, l, h, p)[e * KvCache::kBlockTokens] = code(l, h, p, e, 0);
          kv.v_at<uint16_t>(a, l, h, p)[e] = code(l, h, p, e, 1);
        }
  bool all = true;
  for (int64_t l = 0; l < L; ++l)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t p = 0; p < 70; ++p)
        for (int64_t e = 0; e < E; ++e)
          all = all && kv.k_at<uint16_t>(a, l, h, p)[e * KvCache::kBlockTokens] == code(l, h, p, e, 0) &&
                kv.v_at<uint16_t>(a, l, h, p)[e] == code(l, h, p, e, 1);
  CHECK(all);
}

TEST_CASE("model: a KV cache of the other layout is refused", "[engine-model]") {
  auto dir = fx::temp_dir("model-kvtype");
  fx::ModelSpec spec;
  spec.head_dim = 32;
  fx::write_hf_model(dir, spec);
  auto ck = Checkpoint::open(dir);
  auto m = load_model(*ck, ComputeType::F32);
  KvCache wrong(spec.layers, spec.kv_heads, 32, 1 << 20, KvType::Bf16Tiles);
  const int s = wrong.create();
  REQUIRE(wrong.reserve(s, 4));
  const std::vector<int32_t> toks = {1, 2, 3};
  SeqChunk c{s, 0, std::span<const int32_t>(toks), 0};
  ThreadPool pool(1);
  CHECK_THROWS_AS(m->forward(std::span<const SeqChunk>(&c, 1), wrong, pool, [](size_t, int64_t, std::span<const float>) {}),
                  Error);

  // Which layout a model takes: bf16 tiles for bf16 compute at the AMX level with head_dim a
  // multiple of 32; the vector layout in bf16 for other bf16 compute; f32 for f32 compute.
  CHECK(m->make_kv_cache(0)->type() == KvType::F32);
  const bool amx = max_kernel_level() >= KernelLevel::Amx;
  CHECK(load_model(*ck, ComputeType::BF16)->make_kv_cache(0)->type() == (amx ? KvType::Bf16Tiles : KvType::Bf16));
  if (amx) {
    set_kernel_level_override(KernelLevel::Avx512);
    auto m512 = load_model(*ck, ComputeType::BF16);
    set_kernel_level_override(std::nullopt);
    CHECK(m512->make_kv_cache(0)->type() == KvType::Bf16);
  }
  auto dir16 = fx::temp_dir("model-kvtype16");
  spec.head_dim = 16;
  fx::write_hf_model(dir16, spec);
  auto ck16 = Checkpoint::open(dir16);
  CHECK(load_model(*ck16, ComputeType::BF16)->make_kv_cache(0)->type() == KvType::Bf16);
}
