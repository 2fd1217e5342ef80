// GGUF reader: metadata, config, vocabulary, tensor views, Q/K un-permutation, unsupported
// types, corrupt/truncated files; stories260K GGUF vs its HF copy when $QEVAL_MODELS is set.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>

#include "core/error.h"
#include "core/fs.h"
#include "engine/checkpoint.h"
#include "engine/gguf.h"
#include "fixtures_model.h"

using namespace qeval;
namespace fx = qeval::fixtures;

namespace {

// A minimal GGUF with one tensor of ggml type `type` (ne = {32, 2}) and `extra` KV bytes.
std::vector<uint8_t> tiny_gguf(uint32_t type, uint64_t tensor_bytes) {
  std::string o = "GGUF";
  auto u32 = [&](uint32_t v) { o.append(reinterpret_cast<const char*>(&v), 4); };
  auto u64 = [&](uint64_t v) { o.append(reinterpret_cast<const char*>(&v), 8); };
  auto str = [&](const std::string& s) { u64(s.size()); o += s; };
  u32(3); u64(1); u64(2);
  str("general.architecture"); u32(8); str("llama");
  str("general.tags"); u32(9); u32(8); u64(2); str("a"); str("bc");
  str("w"); u32(2); u64(32); u64(2); u32(type); u64(0);
  while (o.size() % 32) o += '\0';
  o.append(tensor_bytes, '\x01');
  return {o.begin(), o.end()};
}

}  // namespace

TEST_CASE("Q/K permutation helpers invert llama.cpp's permutation", "[gguf][unit]") {
  const int64_t rows = 24, cols = 3, heads = 3;  // head dim 8
  std::vector<float> w(rows * cols);
  std::iota(w.begin(), w.end(), 0.0f);
  std::vector<float> p(w.size()), back(w.size());
  permute_qk_rows(w.data(), p.data(), rows, cols * 4, heads);
  // reshape(3, 2, 4, cols).swapaxes(1, 2): GGUF row 1 of head 0 is HF row 4 (i=1, j=0).
  CHECK(p[1 * cols] == w[4 * cols]);
  CHECK(p[2 * cols] == w[1 * cols]);
  CHECK(p[(8 + 3) * cols] == w[(8 + 4 + 1) * cols]);
  unpermute_qk_rows(p.data(), back.data(), rows, cols * 4, heads);
  CHECK(back == w);
  CHECK_THROWS_AS(unpermute_qk_rows(p.data(), back.data(), 6, 4, 4), Error);
}

TEST_CASE("GGUF name mapping", "[gguf][unit]") {
  CHECK(gguf_to_hf_name("token_embd.weight") == "model.embed_tokens.weight");
  CHECK(gguf_to_hf_name("output.weight") == "lm_head.weight");
  CHECK(gguf_to_hf_name("output_norm.weight") == "model.norm.weight");
  CHECK(gguf_to_hf_name("blk.12.attn_q.bias") == "model.layers.12.self_attn.q_proj.bias");
  CHECK(gguf_to_hf_name("blk.0.ffn_norm.weight") == "model.layers.0.post_attention_layernorm.weight");
  CHECK(gguf_to_hf_name("blk.0.attn_output.weight") == "model.layers.0.self_attn.o_proj.weight");
  CHECK(gguf_to_hf_name("rope_freqs.weight") == "rope_freqs.weight");
}

TEST_CASE("GGUF fixture: config, vocab and tensors match the HF fixture after un-permutation", "[gguf][unit]") {
  auto dir = fx::temp_dir("gguf");
  auto m = fx::write_hf_model(dir / "hf", {.layers = 2, .hidden = 64, .heads = 4, .kv_heads = 2, .ffn = 96, .vocab = 300});
  fx::write_tiny_gguf(dir / "m.gguf", m);
  auto g = GgufFile::open(dir / "m.gguf");
  CHECK(g->version() == 3);
  CHECK(g->architecture() == "llama");
  ModelConfig c = g->model_config();
  CHECK(c.hidden_size == 64);
  CHECK(c.n_layers == 2);
  CHECK(c.n_heads == 4);
  CHECK(c.n_kv_heads == 2);
  CHECK(c.head_dim == 16);
  CHECK(c.intermediate_size == 96);
  CHECK(c.vocab_size == 300);
  CHECK(c.max_position_embeddings == 512);
  CHECK(!c.tie_word_embeddings);
  CHECK(c.rms_norm_eps == Approx(1e-5));
  VocabData v = g->vocab();
  CHECK(v.model == "llama");
  REQUIRE(v.tokens.size() == 300);
  CHECK(v.tokens[3] == "<0x00>");
  CHECK(v.scores.size() == 300);
  CHECK(v.token_types[0] == 2);
  CHECK(v.bos_id == 1);
  CHECK(v.eos_id == 2);
  const TensorView* e = g->find("token_embd.weight");
  REQUIRE(e);
  CHECK(e->shape == std::vector<int64_t>{300, 64});

  auto gck = Checkpoint::open(dir / "m.gguf");
  auto hck = Checkpoint::open(dir / "hf");
  CHECK(gck->is_gguf());
  CHECK(gck->names() == hck->names());
  for (const auto& name : hck->names()) {
    INFO(name);
    CHECK(to_f32(gck->get(name)) == m.tensors.at(name).values);
  }
  fs::remove_all(dir);
}

TEST_CASE("GGUF: unsupported tensor types and corrupt files are clear errors", "[gguf][unit]") {
  auto q = GgufFile::parse(tiny_gguf(2, 36), "q.gguf");  // Q4_0: 2 rows x 1 block x 18 bytes
  CHECK(q->metadata().at("general.tags").value == nlohmann::json({"a", "bc"}));
  CHECK_THROWS_WITH(q->find("w"), Catch::Contains("Q4_0") && Catch::Contains("hint") && Catch::Contains("q.gguf"));
  auto f = GgufFile::parse(tiny_gguf(0, 256), "f.gguf");
  CHECK(f->find("w")->shape == std::vector<int64_t>{2, 32});
  CHECK_THROWS_WITH(GgufFile::parse(tiny_gguf(0, 255), "t.gguf"), Catch::Contains("runs past"));
  CHECK_THROWS_WITH(GgufFile::parse(tiny_gguf(99, 256), "t.gguf"), Catch::Contains("unknown ggml type"));
  auto bad = tiny_gguf(0, 256);
  bad[4] = 7;
  CHECK_THROWS_WITH(GgufFile::parse(bad, "v.gguf"), Catch::Contains("version 7"));
  bad = tiny_gguf(0, 256);
  bad[0] = 'X';
  CHECK_THROWS_WITH(GgufFile::parse(bad, "m.gguf"), Catch::Contains("not a GGUF"));
  CHECK_THROWS_WITH(f->model_config(), Catch::Contains("llama.context_length"));
  CHECK_THROWS_WITH(f->vocab(), Catch::Contains("tokenizer.ggml.model"));
}

TEST_CASE("GGUF: every truncation and random mutation is an Error or a valid file", "[gguf][unit]") {
  auto dir = fx::temp_dir("gguf");
  auto m = fx::write_hf_model(dir / "hf", {.layers = 1, .hidden = 32, .heads = 2, .kv_heads = 1, .ffn = 32, .vocab = 260,
                                           .write_tokenizer = false});
  fx::write_tiny_gguf(dir / "m.gguf", m);
  std::string s = read_file(dir / "m.gguf");
  std::vector<uint8_t> bytes(s.begin(), s.end());
  for (size_t n = 0; n < bytes.size(); n += (n < 20000 ? 1 : 97)) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
    CHECK_THROWS_AS(GgufFile::parse(cut, "cut"), Error);
  }
  std::mt19937 rng(11);
  const size_t header_end = 16000;  // mutate mostly the metadata / tensor-info region
  int errors = 0, ok = 0;
  for (int i = 0; i < 3000; ++i) {
    auto mb = bytes;
    int flips = 1 + rng() % 3;
    for (int k = 0; k < flips; ++k) mb[rng() % std::min(header_end, mb.size())] = static_cast<uint8_t>(rng());
    try {
      auto g = GgufFile::parse(mb, "mut");
      g->views();
      g->model_config();
      g->vocab();
      ++ok;
    } catch (const Error&) {
      ++errors;
    }
  }
  CHECK(errors > 0);
  CHECK(ok > 0);
  fs::remove_all(dir);
}

TEST_CASE("stories260K GGUF and HF copies agree tensor by tensor", "[gguf][model]") {
  const char* models = std::getenv("QEVAL_MODELS");
  if (!models || !*models) {
    WARN("QEVAL_MODELS unset: skipping stories260K GGUF/HF comparison");
    return;
  }
  auto g = Checkpoint::open(fs::path(models) / "stories260K" / "stories260K.gguf");
  auto h = Checkpoint::open(fs::path(models) / "stories260K-hf");
  const ModelConfig &gc = g->config(), &hc = h->config();
  CHECK(gc.hidden_size == hc.hidden_size);
  CHECK(gc.n_layers == hc.n_layers);
  CHECK(gc.n_heads == hc.n_heads);
  CHECK(gc.n_kv_heads == hc.n_kv_heads);
  CHECK(gc.head_dim == hc.head_dim);
  CHECK(gc.intermediate_size == hc.intermediate_size);
  CHECK(gc.vocab_size == hc.vocab_size);
  // The HF copy ties lm_head to the embeddings; llama.cpp's conversion wrote output.weight.
  if (hc.tie_word_embeddings && !gc.tie_word_embeddings)
    CHECK(to_f32(g->get("lm_head.weight")) == to_f32(h->get("model.embed_tokens.weight")));
  else
    CHECK(gc.tie_word_embeddings == hc.tie_word_embeddings);
  int compared = 0;
  for (const auto& name : h->names()) {
    INFO(name);
    const TensorView* gt = g->find(name);
    REQUIRE(gt);
    CHECK(gt->shape == h->get(name).shape);
    CHECK(to_f32(*gt) == to_f32(h->get(name)));
    ++compared;
  }
  CHECK(compared + (gc.tie_word_embeddings != hc.tie_word_embeddings ? 1 : 0) == static_cast<int>(g->names().size()));
  VocabData v = GgufFile::open(fs::path(models) / "stories260K" / "stories260K.gguf")->vocab();
  CHECK(static_cast<int64_t>(v.tokens.size()) == gc.vocab_size);
}
