// The embedded engine through the whole runner: engine variants (stories260K) beside each
// other in one table, with fidelity against the baseline. Skipped without $QEVAL_MODELS.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <functional>

#include <fmt/format.h>

#include "core/fs.h"
#include "engine/engine.h"
#include "fixtures/datasets_fixture.h"
#include "fixtures/run_fixture.h"
#include "runner/runner.h"

using namespace qeval;
using nlohmann::json;

TEST_CASE("engine variants: one table, identical variants agree exactly, quantized ones differ") {
  const char* models = std::getenv("QEVAL_MODELS");
  if (!models) {
    WARN("QEVAL_MODELS unset: skipping the engine run test");
    return;
  }
  testfx::TempDir tmp("engine_run");
  testfx::DatasetSizes z;
  z.gsm8k_test = 3;
  z.mmlu_test_fixed = 1;
  testfx::write_datasets(tmp.path() / "data", z);
  testfx::EnvGuard env("QEVAL_DATA", (tmp.path() / "data").string());
  // A long first GSM8K question: its prompt (about 1000 tokens) is longer than the HF copy's
  // context, so the fidelity sequences must be cut to the shortest context compared.
  {
    std::string q;
    for (int i = 0; i < 200; ++i) q += "Once upon a time. ";
    const std::filesystem::path test = tmp.path() / "data" / "gsm8k" / "test.jsonl";
    std::string rest = read_file(test);
    rest = rest.substr(rest.find('\n') + 1);
    testfx::write_text(test, json{{"question", q}, {"answer", "1 + 1 = 2\n#### 2"}}.dump() + "\n" + rest);
  }
  std::string gguf = std::string(models) + "/stories260K/stories260K.gguf";
  testfx::write_text(tmp.path() / "text.txt", std::string(3000, 'a') + " Once upon a time there was a cat. ");
  testfx::write_text(tmp.path() / "run.yaml", fmt::format(R"(name: eng
tasks: [gsm8k, mmlu]
limit: 1
baseline: ref
fidelity_text: text.txt
fidelity_prompts: 4
variants:
  - {{name: ref, backend: engine, model: "{0}", dtype: f32}}
  - {{name: same, backend: engine, model: "{0}", dtype: f32, max_batch: 3}}
  - {{name: int8, backend: engine, model: "{0}", dtype: f32, quantization: int8-channel}}
  - {{name: hf, backend: engine, model: "{1}", dtype: f32}}
gates:
  - {{task: gsm8k, metric: "exact_match,strict-match", max_drop: 1.0}}
)", gguf, std::string(models) + "/stories260K-hf"));
  RunOptions o;
  o.config = tmp.path() / "run.yaml";
  o.out = tmp.path() / "out";
  CHECK(run_eval(o) == 0);
  json r = json::parse(read_file(tmp.path() / "out" / "results.json"));
  CHECK(r["variants"]["ref"]["backend"] == "engine");
  CHECK(r["variants"]["ref"]["tasks"]["mmlu"]["n"] == 57);
  CHECK(r["variants"]["ref"]["tasks"]["gsm8k"]["n"] == 1);
  // Same weights, same dtype, different batch size: bit-identical answers and distributions.
  const json& same = r["variants"]["same"]["fidelity"]["task_prompts"];
  CHECK(same["kld_mean"].get<double>() == 0.0);
  CHECK(same["top1_agreement"].get<double>() == 1.0);
  CHECK(r["comparisons"]["same"]["mmlu"]["acc,none"]["right_to_wrong"] == 0);
  CHECK(r["comparisons"]["same"]["mmlu"]["acc,none"]["wrong_to_right"] == 0);
  // Quantized: distributions move a little.
  const json& q = r["variants"]["int8"]["fidelity"];
  CHECK(q["task_prompts"]["kld_mean"].get<double>() > 0.0);
  CHECK(q["task_prompts"]["kld_mean"].get<double>() < 0.1);
  CHECK(q["text"]["n_tokens"].get<int>() > 0);
  CHECK(q["task_prompts"]["top1_agreement"].get<double>() > 0.5);
  // The HF copy has a context of 512 against the GGUF's 2048: fidelity sequences fit both.
  CHECK(r["variants"]["hf"]["fidelity"]["task_prompts"]["n_tokens"].get<int>() > 0);
  std::string md = read_file(tmp.path() / "out" / "report.md");
  CHECK(md.find("| task | metric | ref (baseline) | same | int8 | hf |") != std::string::npos);
  CHECK(md.find("## Fidelity against the baseline") != std::string::npos);

  // A fidelity_text too short to score fails the run before any variant is asked anything.
  testfx::write_text(tmp.path() / "text.txt", "Once upon a time.");
  o.out = tmp.path() / "short";
  CHECK_THROWS_WITH(run_eval(o), Catch::Contains("fidelity_text:") && Catch::Contains("fewer than one chunk"));
  CHECK_FALSE(std::filesystem::exists(tmp.path() / "short" / "samples" / "ref"));
}

TEST_CASE("one run mixing an engine variant and an openai variant gives one table") {
  const char* models = std::getenv("QEVAL_MODELS");
  if (!models) {
    WARN("QEVAL_MODELS unset: skipping the mixed engine/openai run test");
    return;
  }
  testfx::TempDir tmp("mixed_run");
  testfx::DatasetSizes z;
  z.gsm8k_test = 2;
  z.mmlu_test_fixed = 1;
  testfx::write_datasets(tmp.path() / "data", z);
  testfx::EnvGuard env("QEVAL_DATA", (tmp.path() / "data").string());
  testing::FakeOptions fo;
  fo.model_name = "remote";
  fo.model = testfx::Oracle{0}.model();
  auto server = std::make_unique<testing::FakeOpenAI>(std::move(fo));
  std::string gguf = std::string(models) + "/stories260K/stories260K.gguf";
  testfx::write_text(tmp.path() / "run.yaml", fmt::format(R"(name: mixed
tasks: [gsm8k, mmlu]
limit: 2
baseline: local
variants:
  - {{name: local, backend: engine, model: "{0}", dtype: f32}}
  - {{name: remote, backend: openai, base_url: "{1}", model: remote, concurrency: 4}}
)", gguf, server->base_url()));
  RunOptions o;
  o.config = tmp.path() / "run.yaml";
  o.out = tmp.path() / "out";
  CHECK(run_eval(o) == 0);
  json r = json::parse(read_file(tmp.path() / "out" / "results.json"));
  CHECK(r["variants"]["local"]["backend"] == "engine");
  CHECK(r["variants"]["remote"]["backend"] == "openai");
  CHECK(r["variants"]["remote"]["tasks"]["mmlu"]["n"] == 57);
  CHECK(r["comparisons"]["remote"]["mmlu"]["acc,none"]["n_paired"] == 57);
  CHECK(r["comparisons"]["remote"]["gsm8k"]["exact_match,strict-match"]["n_paired"] == 2);
  std::string md = read_file(tmp.path() / "out" / "report.md");
  CHECK(md.find("| task | metric | local (baseline) | remote |") != std::string::npos);
}

namespace {

// What `f` writes to stderr (fmt::print(stderr, ...) warnings), through a file.
std::string stderr_of(const std::function<void()>& f, const std::filesystem::path& file) {
  std::fflush(stderr);
  const int saved = ::dup(2);
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ::dup2(fd, 2);
  ::close(fd);
  auto restore = [&] {
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
  };
  try {
    f();
  } catch (...) {
    restore();
    throw;
  }
  restore();
  return read_file(file);
}

}  // namespace

TEST_CASE("fidelity: another tokenizer is not compared; a KV cache too small fails first; fidelity_text always checked") {
  const char* models = std::getenv("QEVAL_MODELS");
  if (!models) {
    WARN("QEVAL_MODELS unset: skipping the fidelity checks test");
    return;
  }
  namespace fs = std::filesystem;
  testfx::TempDir tmp("fidelity_checks");
  testfx::DatasetSizes z;
  z.gsm8k_test = 1;
  z.mmlu_test_fixed = 1;
  testfx::write_datasets(tmp.path() / "data", z);
  testfx::EnvGuard env("QEVAL_DATA", (tmp.path() / "data").string());
  const std::string gguf = std::string(models) + "/stories260K/stories260K.gguf";
  const fs::path hf = fs::path(models) / "stories260K-hf";
  // The HF copy with a tokenizer that adds no BOS, as a conversion with wrong add_bos metadata:
  // the same vocabulary size, other tokens for every prompt.
  const fs::path nobos = tmp.path() / "nobos";
  fs::create_directories(nobos);
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors"}) fs::copy_file(hf / f, nobos / f);
  json tj = json::parse(read_file(hf / "tokenizer.json"));
  tj["post_processor"] = nullptr;
  testfx::write_text(nobos / "tokenizer.json", tj.dump());
  json tc = json::parse(read_file(hf / "tokenizer_config.json"));
  tc["add_bos_token"] = false;
  testfx::write_text(nobos / "tokenizer_config.json", tc.dump());
  // A text with special-token strings in it: llama-perplexity keeps them as plain text, so they
  // are several tokens each, not one (with them as special tokens it is less than two chunks).
  std::string text = "Lily said bye to the cat.";
  for (int i = 0; i < 200; ++i) text += "</s><s>";
  testfx::write_text(tmp.path() / "text.txt", text);
  size_t plain_chunks = 0;
  {
    EngineOptions eo;
    eo.model = gguf;
    auto e = Engine::load(eo);
    const size_t plain = e->tokenizer()->encode(text, true, false).size();
    const size_t special = e->tokenizer()->encode(text, true, true).size();
    INFO("tokens as plain text " << plain << ", with special tokens " << special);
    REQUIRE(plain / 512 >= 2);
    REQUIRE(special / 512 < plain / 512);
    plain_chunks = plain / 512;
  }

  testfx::write_text(tmp.path() / "run.yaml", fmt::format(R"(name: fid
tasks: [mmlu]
limit: 1
baseline: ref
fidelity_text: text.txt
fidelity_prompts: 2
variants:
  - {{name: ref, backend: engine, model: "{0}", dtype: f32}}
  - {{name: same, backend: engine, model: "{0}", dtype: f32, max_batch: 3}}
  - {{name: nobos, backend: engine, model: "{1}", dtype: f32}}
)", gguf, nobos.string()));
  RunOptions o;
  o.config = tmp.path() / "run.yaml";
  o.out = tmp.path() / "out";
  const std::string err = stderr_of([&] { CHECK(run_eval(o) == 0); }, tmp.path() / "stderr.txt");
  json r = json::parse(read_file(tmp.path() / "out" / "results.json"));
  // Not compared, and why, in results.json and the report (it was KLD 0, top-1 100%).
  CHECK_FALSE(r["variants"]["nobos"].contains("fidelity"));
  CHECK_THAT(r["variants"]["nobos"].value("fidelity_skipped", ""),
             Catch::Contains("tokenizer encodes task prompt 0 differently"));
  CHECK_THAT(err, Catch::Contains("nobos is not compared with the baseline"));
  CHECK(r["variants"]["nobos"]["tasks"]["mmlu"]["n"] == 57);
  const std::string md = read_file(tmp.path() / "out" / "report.md");
  CHECK_THAT(md, Catch::Contains("**nobos**: not compared with the baseline: its tokenizer encodes"));
  // The text's chunks: special-token strings tokenised as plain text.
  const json& same = r["variants"]["same"]["fidelity"];
  CHECK(same["text"]["kld_mean"].get<double>() == 0.0);
  CHECK(same["text"]["n_sequences"].get<size_t>() == plain_chunks);
  CHECK(same["task_prompts"]["n_sequences"] == 2);

  // A KV cache that cannot hold the longest fidelity sequence (1 MiB of f32 cache is 800 tokens
  // of this model; a long GSM8K prompt is cut to 1024) fails before any request, naming the
  // file, the variant and the key. It failed after every task had run, writing no results.
  {
    std::string q;
    for (int i = 0; i < 200; ++i) q += "Once upon a time. ";
    testfx::write_text(tmp.path() / "data" / "gsm8k" / "test.jsonl",
                       json{{"question", q}, {"answer", "1 + 1 = 2\n#### 2"}}.dump() + "\n");
  }
  testfx::write_text(tmp.path() / "kv.yaml", fmt::format(R"(name: kv
tasks: [gsm8k]
limit: 1
baseline: ref
fidelity_prompts: 1
variants:
  - {{name: ref, backend: engine, model: "{0}", dtype: f32}}
  - {{name: small, backend: engine, model: "{0}", dtype: f32, kv_cache_mb: 1}}
)", gguf));
  o.config = tmp.path() / "kv.yaml";
  o.out = tmp.path() / "out_kv";
  CHECK_THROWS_WITH(run_eval(o), Catch::Contains("kv.yaml: variants[1] (small): kv_cache_mb: 1 MiB holds 800 tokens") &&
                                     Catch::Contains("up to 1024 tokens") && Catch::Contains("hint: raise kv_cache_mb"));
  CHECK_FALSE(fs::exists(tmp.path() / "out_kv" / "samples" / "ref"));

  // One engine variant: a fidelity_text too short to score is the same error as with two, and a
  // usable one is ignored with a warning that says why.
  testfx::write_text(tmp.path() / "short.txt", "Once upon a time.");
  testfx::write_text(tmp.path() / "one.yaml", fmt::format(R"(name: one
tasks: [mmlu]
limit: 1
fidelity_text: short.txt
variants:
  - {{name: ref, backend: engine, model: "{0}", dtype: f32}}
)", gguf));
  o.config = tmp.path() / "one.yaml";
  o.out = tmp.path() / "out_one";
  CHECK_THROWS_WITH(run_eval(o), Catch::Contains("fidelity_text:") && Catch::Contains("fewer than one chunk"));
  testfx::write_text(tmp.path() / "short.txt", text);
  const std::string warn = stderr_of([&] { CHECK(run_eval(o) == 0); }, tmp.path() / "stderr_one.txt");
  CHECK_THAT(warn, Catch::Contains("one.yaml: fidelity_text and fidelity_prompts are ignored: there is no other "
                                   "engine variant"));
  CHECK_FALSE(json::parse(read_file(tmp.path() / "out_one" / "results.json"))["variants"]["ref"].contains("fidelity"));
}
