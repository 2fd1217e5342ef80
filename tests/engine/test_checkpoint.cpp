// Checkpoint loader: HF single-file and sharded directories, config parsing (Qwen2 biases,
// llama3 rope scaling, tied embeddings), shape validation errors, fingerprints.
#include <catch2/catch.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "engine/checkpoint.h"
#include "engine/safetensors.h"
#include "fixtures_model.h"

using namespace qeval;
namespace fx = qeval::fixtures;

TEST_CASE("Checkpoint opens single-file and sharded HF directories", "[checkpoint][unit]") {
  auto dir = fx::temp_dir("ck");
  fx::ModelSpec spec{.arch = "qwen2", .layers = 2, .hidden = 64, .heads = 4, .kv_heads = 2, .ffn = 96, .vocab = 280,
                     .dtype = "BF16", .seed = 5};
  auto m1 = fx::write_hf_model(dir / "one", spec);
  spec.shards = 3;
  auto m3 = fx::write_hf_model(dir / "three", spec);
  auto a = Checkpoint::open(dir / "one");
  auto b = Checkpoint::open(dir / "three");
  const ModelConfig& c = a->config();
  CHECK(c.arch == "qwen2");
  CHECK(c.attention_bias);
  CHECK(c.head_dim == 16);
  CHECK(c.torch_dtype == "bfloat16");
  CHECK(c.quantization_config.is_null());
  CHECK(a->names() == b->names());
  CHECK(a->names().size() == m1.tensors.size());
  for (const auto& name : a->names()) {
    INFO(name);
    CHECK(a->get(name).dtype == DType::BF16);
    CHECK(to_f32(a->get(name)) == m1.tensors.at(name).values);
    CHECK(to_f32(b->get(name)) == m3.tensors.at(name).values);
  }
  CHECK(b->file_of("model.embed_tokens.weight").find("model-00001-of-00003.safetensors") != std::string::npos);
  CHECK(a->find("model.layers.9.mlp.up_proj.weight") == nullptr);
  CHECK_THROWS_WITH(a->get("model.layers.9.mlp.up_proj.weight"), Catch::Contains("model.layers.9.mlp.up_proj.weight"));
  // Same config and index -> same fingerprint, whatever the sharding; a config change alters it.
  CHECK(a->fingerprint() == b->fingerprint());
  CHECK(a->fingerprint().size() == 64);
  fs::remove_all(dir);
}

TEST_CASE("Checkpoint validates every expected tensor shape", "[checkpoint][unit]") {
  auto dir = fx::temp_dir("ck");
  auto m = fx::write_hf_model(dir, {.layers = 2, .hidden = 32, .heads = 4, .kv_heads = 2, .ffn = 48, .tied = true});
  auto ck = Checkpoint::open(dir);
  CHECK(ck->config().tie_word_embeddings);
  CHECK(ck->find("lm_head.weight") == nullptr);
  const std::string fp = ck->fingerprint();
  ck.reset();

  auto cfg = m.config;
  cfg["intermediate_size"] = 64;
  write_file_atomic(dir / "config.json", cfg.dump());
  CHECK_THROWS_WITH(Checkpoint::open(dir), Catch::Contains("model.layers.0.mlp.gate_proj.weight") &&
                                               Catch::Contains("[64, 32]") && Catch::Contains("[48, 32]") &&
                                               Catch::Contains("model.safetensors"));
  cfg = m.config;
  cfg["num_hidden_layers"] = 3;
  write_file_atomic(dir / "config.json", cfg.dump());
  CHECK_THROWS_WITH(Checkpoint::open(dir), Catch::Contains("model.layers.2.") && Catch::Contains("missing"));
  cfg = m.config;
  cfg["tie_word_embeddings"] = false;
  write_file_atomic(dir / "config.json", cfg.dump());
  CHECK_THROWS_WITH(Checkpoint::open(dir), Catch::Contains("lm_head.weight"));
  cfg = m.config;
  cfg["rms_norm_eps"] = 1e-6;
  write_file_atomic(dir / "config.json", cfg.dump());
  CHECK(Checkpoint::open(dir)->fingerprint() != fp);
  cfg = m.config;
  cfg["architectures"] = {"GPT2LMHeadModel"};
  write_file_atomic(dir / "config.json", cfg.dump());
  CHECK_THROWS_WITH(Checkpoint::open(dir), Catch::Contains("GPT2LMHeadModel") && Catch::Contains("config.json"));
  cfg = m.config;
  cfg["attention_bias"] = true;
  write_file_atomic(dir / "config.json", cfg.dump());
  CHECK_THROWS_WITH(Checkpoint::open(dir), Catch::Contains("q_proj.bias"));
  CHECK_THROWS_WITH(Checkpoint::open(dir / "nothing"), Catch::Contains("no such model"));
  fs::remove(dir / "model.safetensors");
  write_file_atomic(dir / "config.json", m.config.dump());
  CHECK_THROWS_WITH(Checkpoint::open(dir), Catch::Contains("model.safetensors"));
  fs::remove_all(dir);
}

TEST_CASE("HF config parsing: rope scaling, defaults, errors", "[checkpoint][unit]") {
  nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 128}, {"hidden_size", 64},
                      {"intermediate_size", 128}, {"num_hidden_layers", 2}, {"num_attention_heads", 8},
                      {"max_position_embeddings", 4096}, {"rope_theta", 500000.0},
                      {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                        {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}}}};
  ModelConfig c = parse_hf_config(j, "c.json");
  CHECK(c.n_kv_heads == 8);
  CHECK(c.head_dim == 8);
  CHECK(c.rope_scaling_type == "llama3");
  CHECK(c.rope_factor == 8.0);
  CHECK(c.rope_original_max_position == 8192);
  CHECK(c.rope_theta == 500000.0);
  CHECK(!c.attention_bias);
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  c = parse_hf_config(j, "c.json");
  CHECK(c.rope_scaling_type == "linear");
  CHECK(c.rope_factor == 2.0);
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}};
  CHECK_THROWS_WITH(parse_hf_config(j, "c.json"), Catch::Contains("yarn"));
  j["rope_scaling"] = nullptr;
  j["num_key_value_heads"] = 3;
  CHECK_THROWS_WITH(parse_hf_config(j, "c.json"), Catch::Contains("num_key_value_heads 3"));
  j.erase("num_key_value_heads");
  j.erase("hidden_size");
  CHECK_THROWS_WITH(parse_hf_config(j, "c.json"), Catch::Contains("c.json") && Catch::Contains("hidden_size"));
  j["hidden_size"] = "64";
  CHECK_THROWS_WITH(parse_hf_config(j, "c.json"), Catch::Contains("must be an integer"));
  j["hidden_size"] = 64;
  j["quantization_config"] = {{"quant_method", "w8a8_int8"}};
  CHECK(parse_hf_config(j, "c.json").quantization_config["quant_method"] == "w8a8_int8");
  // Sliding-window attention: the context is the window (full attention equals it only there);
  // Qwen2's use_sliding_window false keeps the full context.
  j["sliding_window"] = 1024;
  CHECK(parse_hf_config(j, "c.json").max_position_embeddings == 1024);
  j["use_sliding_window"] = false;
  CHECK(parse_hf_config(j, "c.json").max_position_embeddings == 4096);
  j["use_sliding_window"] = true;
  j["sliding_window"] = 32768;
  CHECK(parse_hf_config(j, "c.json").max_position_embeddings == 4096);
  j["sliding_window"] = nullptr;
  CHECK(parse_hf_config(j, "c.json").max_position_embeddings == 4096);
  j["sliding_window"] = 1024;
  j["use_sliding_window"] = "yes";
  CHECK_THROWS_WITH(parse_hf_config(j, "c.json"), Catch::Contains("c.json: use_sliding_window must be true or false"));
  j["use_sliding_window"] = nullptr;  // as absent: a llama config's window applies
  CHECK(parse_hf_config(j, "c.json").max_position_embeddings == 1024);
  // Qwen2: the window is off by default, and unused when max_window_layers covers every layer.
  j["architectures"] = {"Qwen2ForCausalLM"};
  j.erase("use_sliding_window");
  CHECK(parse_hf_config(j, "c.json").max_position_embeddings == 4096);
  j["use_sliding_window"] = true;
  CHECK(parse_hf_config(j, "c.json").max_position_embeddings == 1024);
  j["max_window_layers"] = 2;
  CHECK(parse_hf_config(j, "c.json").max_position_embeddings == 4096);
}

TEST_CASE("Checkpoint::tokenizer loads the HF tokenizer or the GGUF vocabulary", "[checkpoint][unit]") {
  auto dir = fx::temp_dir("ck");
  auto m = fx::write_hf_model(dir / "hf", {.layers = 1, .hidden = 32, .heads = 2, .kv_heads = 1, .ffn = 32, .vocab = 272});
  fx::write_tiny_gguf(dir / "m.gguf", m);
  auto hf_tok = Checkpoint::open(dir / "hf")->tokenizer();
  REQUIRE(hf_tok);
  CHECK(hf_tok->token_id("<|im_end|>") == 262);
  CHECK(hf_tok->decode(hf_tok->encode("the cat", false)) == "the cat");
  auto g_tok = Checkpoint::open(dir / "m.gguf")->tokenizer();
  REQUIRE(g_tok);
  CHECK(g_tok->vocab_size() == 272);
  CHECK(g_tok->bos_id == 1);

  // A token id the embedding has no row for is an error when the tokenizer is loaded, not when
  // a prompt first holds it; fewer ids than rows (263 of 272 here) is fine.
  auto tj = nlohmann::json::parse(read_file(dir / "hf" / "tokenizer.json"));
  tj["added_tokens"].push_back({{"id", 300}, {"content", "XYZ"}, {"single_word", false}, {"lstrip", false},
                                {"rstrip", false}, {"normalized", false}, {"special", false}});
  write_file_atomic(dir / "hf" / "tokenizer.json", tj.dump());
  CHECK_THROWS_WITH(Checkpoint::open(dir / "hf")->tokenizer(),
                    Catch::Contains((dir / "hf" / "tokenizer.json").string()) &&
                        Catch::Contains("301 token ids") && Catch::Contains("model.embed_tokens.weight of " + (dir / "hf").string() + " has 272 rows") &&
                        Catch::Contains("hint:"));
  fs::remove_all(dir);
}
