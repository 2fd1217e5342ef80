// Checkpoint loader: HF single-file and sharded directories, config parsing (Qwen2 biases,
// llama3 rope scaling, tied embeddings), shape validation errors, fingerprints.
#include <catch2/catch.hpp>

#include <limits>

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

TEST_CASE("HF config parsing: a field of the wrong type names the field and the value", "[checkpoint][unit]") {
  const nlohmann::json base = {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 128}, {"hidden_size", 64},
                               {"intermediate_size", 128}, {"num_hidden_layers", 2}, {"num_attention_heads", 8}};
  auto with = [&](const nlohmann::json& patch) {
    nlohmann::json j = base;
    j.merge_patch(patch);
    return j;
  };
  auto err = [&](const nlohmann::json& patch) -> std::string {
    try {
      parse_hf_config(with(patch), "d/config.json");
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  // Each was an internal json type_error naming neither file nor field.
  CHECK(err({{"tie_word_embeddings", "yes"}}) == "d/config.json: field tie_word_embeddings must be true or false, got \"yes\"");
  CHECK(err({{"attention_bias", 1}}) == "d/config.json: field attention_bias must be true or false, got 1");
  CHECK(err({{"mlp_bias", "no"}}) == "d/config.json: field mlp_bias must be true or false, got \"no\"");
  CHECK(err({{"hidden_act", 7}}) == "d/config.json: field hidden_act must be a string, got 7");
  CHECK(err({{"torch_dtype", 16}}) == "d/config.json: field torch_dtype must be a string, got 16");
  CHECK(err({{"model_type", 5}}) == "d/config.json: field model_type must be a string, got 5");
  CHECK(err({{"rope_scaling", {{"type", 5}}}}) == "d/config.json: field rope_scaling.type must be a string, got 5");
  CHECK(err({{"rope_scaling", {{"rope_type", true}, {"type", "linear"}}}}) ==
        "d/config.json: field rope_scaling.rope_type must be a string, got true");
  CHECK(err({{"quantization_config", {{"quant_method", 8}}}}) ==
        "d/config.json: field quantization_config.quant_method must be a string, got 8");
  // null is absent, as in transformers (PretrainedConfig takes torch_dtype=None as not given).
  nlohmann::json j = base;
  for (const char* key : {"torch_dtype", "model_type", "tie_word_embeddings", "attention_bias", "mlp_bias", "hidden_act"})
    j[key] = nullptr;
  j["rope_scaling"] = {{"rope_type", nullptr}, {"type", "linear"}, {"factor", 2.0}};
  ModelConfig c = parse_hf_config(j, "d/config.json");
  CHECK(c.torch_dtype.empty());
  CHECK(!c.tie_word_embeddings);
  CHECK(c.rope_scaling_type == "linear");
  j["architectures"] = nullptr;
  j["model_type"] = "qwen2";
  CHECK(parse_hf_config(j, "d/config.json").arch == "qwen2");
}

TEST_CASE("HF config parsing: sizes are bounded, so that derived sizes cannot overflow", "[checkpoint][unit]") {
  const nlohmann::json base = {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 128}, {"hidden_size", 64},
                               {"intermediate_size", 128}, {"num_hidden_layers", 2}, {"num_attention_heads", 8}};
  auto err = [&](const nlohmann::json& patch) -> std::string {
    nlohmann::json j = base;
    j.merge_patch(patch);
    try {
      parse_hf_config(j, "c.json");
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  const int64_t p62 = int64_t{1} << 62;
  // The KV budget (max_batch * positions * bytes per token) wrapped to a few KB.
  CHECK_THAT(err({{"max_position_embeddings", p62}}),
             Catch::StartsWith("c.json: max_position_embeddings must be at most 2147483647, got 4611686018427387904"));
  // n_heads * head_dim was a signed overflow ("expected shape [-9223372036854775808, 64]").
  CHECK_THAT(err({{"num_attention_heads", p62}, {"head_dim", 2}}),
             Catch::StartsWith("c.json: num_attention_heads must be at most 65536"));
  CHECK_THAT(err({{"head_dim", int64_t{1} << 61}}), Catch::StartsWith("c.json: head_dim must be at most 65536"));
  CHECK_THAT(err({{"num_attention_heads", 4096}, {"head_dim", 8192}}),
             Catch::StartsWith("c.json: num_attention_heads 4096 * head_dim 8192 = 33554432 must be at most 16777216"));
  CHECK_THAT(err({{"vocab_size", int64_t{1} << 40}}), Catch::StartsWith("c.json: vocab_size must be at most"));
  CHECK_THAT(err({{"hidden_size", int64_t{1} << 40}}), Catch::StartsWith("c.json: hidden_size must be at most"));
  CHECK_THAT(err({{"intermediate_size", int64_t{1} << 40}}), Catch::StartsWith("c.json: intermediate_size must be at most"));
  CHECK_THAT(err({{"num_hidden_layers", int64_t{1} << 40}}), Catch::StartsWith("c.json: num_hidden_layers must be at most"));
  CHECK_THAT(err({{"num_key_value_heads", p62}}), Catch::StartsWith("c.json: num_key_value_heads must be at most"));
  CHECK_THAT(err({{"num_nextn_predict_layers", -1}}), Catch::StartsWith("c.json: num_nextn_predict_layers must be"));
  CHECK_THAT(err({{"rope_scaling", {{"rope_type", "llama3"}, {"original_max_position_embeddings", 1e300}}}}),
             Catch::StartsWith("c.json: field rope_scaling.original_max_position_embeddings must be between 1 and"));
  // An infinite theta or eps passed (!(x > 0) is false for inf) and made every rotation NaN.
  CHECK_THAT(err({{"rope_theta", std::numeric_limits<double>::infinity()}}), Catch::StartsWith("c.json: rope_theta must be positive and finite"));
  CHECK_THAT(err({{"rms_norm_eps", std::numeric_limits<double>::infinity()}}), Catch::StartsWith("c.json: rms_norm_eps must be positive and finite"));
  CHECK(err({{"max_position_embeddings", 10000000}, {"rope_theta", 1e308}}) == "(no error)");
}

TEST_CASE("Checkpoint: layers past num_hidden_layers are an error, MTP layers are not", "[checkpoint][unit]") {
  auto dir = fx::temp_dir("ck");
  auto m = fx::write_hf_model(dir, {.layers = 3, .hidden = 32, .heads = 4, .kv_heads = 2, .ffn = 48, .tied = true});
  auto cfg = m.config;
  cfg["num_hidden_layers"] = 2;
  write_file_atomic(dir / "config.json", cfg.dump());
  // The weights have layers 0-2: a 2-layer config used to run them as 2 layers (garbage, exit 0).
  CHECK_THROWS_WITH(Checkpoint::open(dir),
                    Catch::StartsWith((dir / "model.safetensors").string() +
                                      ": tensor model.layers.2.input_layernorm.weight is in layer 2, beyond "
                                      "num_hidden_layers 2 (does config.json match the weights?"));
  // DeepSeek-V3 style: the multi-token-prediction layer follows the decoder's layers.
  cfg["num_nextn_predict_layers"] = 1;
  write_file_atomic(dir / "config.json", cfg.dump());
  auto ck = Checkpoint::open(dir);
  CHECK(ck->config().n_layers == 2);
  CHECK(ck->config().num_nextn_predict_layers == 1);
  CHECK(ck->find("model.layers.2.mlp.up_proj.weight") != nullptr);
  ck.reset();
  cfg["num_hidden_layers"] = 1;  // layer 2 is past the one MTP layer too
  write_file_atomic(dir / "config.json", cfg.dump());
  CHECK_THROWS_WITH(Checkpoint::open(dir), Catch::Contains("is in layer 2, beyond num_hidden_layers 1 and "
                                                           "num_nextn_predict_layers 1"));
  // Tensors outside the layers stay allowed, whatever their name.
  write_file_atomic(dir / "config.json", m.config.dump());
  fx::FixtureTensor extra{"model.rotary_emb.inv_freq", {4}, {1, 2, 3, 4}, "F32", {}};
  std::vector<fx::FixtureTensor*> all = {&extra};
  for (auto& [name, t] : m.tensors) all.push_back(&t);
  fx::write_safetensors(dir / "model.safetensors", all, "F32");
  CHECK(Checkpoint::open(dir)->find("model.rotary_emb.inv_freq") != nullptr);
  // A stray tensor of a layer that does not exist (a huge index included).
  fx::FixtureTensor stray{"model.layers.99999999999999999999.mlp.up_proj.weight", {4}, {1, 2, 3, 4}, "F32", {}};
  all.push_back(&stray);
  fx::write_safetensors(dir / "model.safetensors", all, "F32");
  CHECK_THROWS_WITH(Checkpoint::open(dir), Catch::Contains("tensor model.layers.99999999999999999999.mlp.up_proj.weight"));
  fs::remove_all(dir);
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

  // An added token past the embedding's rows (Meta's first Llama-2 upload: <pad> = 32000 of
  // 32000 rows) loads with a warning and is read as plain text from then on: no id past the rows
  // comes out. Fewer ids than rows (263 of 272 here) is fine.
  const std::string tj_text = read_file(dir / "hf" / "tokenizer.json");
  auto tj = nlohmann::json::parse(tj_text);
  tj["added_tokens"].push_back({{"id", 300}, {"content", "XYZ"}, {"single_word", false}, {"lstrip", false},
                                {"rstrip", false}, {"normalized", false}, {"special", true}});
  write_file_atomic(dir / "hf" / "tokenizer.json", tj.dump());
  auto padded = Checkpoint::open(dir / "hf")->tokenizer();
  CHECK(padded->vocab_size() == 301);
  for (int32_t id : padded->encode("the XYZ cat", false)) CHECK(id < 272);
  CHECK(padded->decode(padded->encode("the XYZ cat", false)) == "the XYZ cat");
  // An ordinary vocabulary id past the rows can come out of plain text: an error when the
  // tokenizer is loaded, not when a prompt first holds it.
  tj = nlohmann::json::parse(tj_text);
  tj["model"]["vocab"]["XYZ"] = 300;
  write_file_atomic(dir / "hf" / "tokenizer.json", tj.dump());
  CHECK_THROWS_WITH(Checkpoint::open(dir / "hf")->tokenizer(),
                    Catch::Contains((dir / "hf" / "tokenizer.json").string()) &&
                        Catch::Contains("301 token ids") && Catch::Contains("model.embed_tokens.weight of " + (dir / "hf").string() + " has 272 rows") &&
                        Catch::Contains("hint:"));
  fs::remove_all(dir);
}
