// The embedded engine through the whole runner: engine variants (stories260K) beside each
// other in one table, with fidelity against the baseline. Skipped without $QEVAL_MODELS.
#include <catch2/catch.hpp>

#include <fmt/format.h>

#include "core/fs.h"
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
