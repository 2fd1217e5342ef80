// Engine backend: variant validation, completion and chat generation through the embedded
// engine on a random fixture model, loglikelihood, chat-format errors, stories260K end to end.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <map>

#include "backends/engine_backend.h"
#include "core/error.h"
#include "engine/fixtures_model.h"

using namespace qeval;
namespace fx = qeval::fixtures;

namespace {

std::string error_of(const nlohmann::json& v) {
  try {
    make_engine_backend(v, "run.yaml: variants[0]");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::filesystem::path fixture_dir(bool chat_template) {
  auto dir = fx::temp_dir("engine-backend");
  fx::ModelSpec spec;
  spec.arch = "qwen2";
  fx::write_hf_model(dir, spec);
  if (!chat_template) {
    auto p = dir / "tokenizer_config.json";
    nlohmann::json j = nlohmann::json::parse(std::ifstream(p));
    j.erase("chat_template");
    std::ofstream(p) << j.dump();
  }
  return dir;
}

}  // namespace

TEST_CASE("engine backend: variant keys are validated", "[engine-backend]") {
  CHECK(error_of({{"backend", "engine"}, {"model", "x"}, {"bogus", 1}}).find("bogus") != std::string::npos);
  CHECK(error_of({{"backend", "engine"}}).find("model") != std::string::npos);
  CHECK(error_of({{"backend", "engine"}, {"model", "x"}, {"dtype", "fp16"}}).find("dtype") != std::string::npos);
  CHECK(error_of({{"backend", "engine"}, {"model", "x"}, {"quantization", "int4"}}).find("quantization") !=
        std::string::npos);
  CHECK(error_of({{"backend", "engine"}, {"model", "x"}, {"threads", "two"}}).find("threads") != std::string::npos);
  CHECK(error_of({{"backend", "engine"}, {"model", "x"}, {"chat_format", "vicuna"}}).find("chat_format") !=
        std::string::npos);
  CHECK(error_of({{"backend", "engine"}, {"model", "x"}, {"max_batch", 0}}).find("max_batch") != std::string::npos);
  // Upper bounds: no silent int truncation (2^32 + 1 threads was 1), no thread or memory storm.
  CHECK(error_of({{"backend", "engine"}, {"model", "x"}, {"threads", 4294967297LL}}) ==
        "run.yaml: variants[0]: threads: must be at most 1024, got 4294967297 (hint: 0 uses every core)");
  CHECK(error_of({{"backend", "engine"}, {"model", "x"}, {"threads", 18446744073709551615ULL}}).find("at most 1024") !=
        std::string::npos);
  CHECK(error_of({{"backend", "engine"}, {"model", "x"}, {"max_batch", 257}}).find("at most 256") != std::string::npos);
  CHECK(error_of({{"backend", "engine"}, {"model", "x"}, {"kv_cache_mb", int64_t{1} << 39}}).find("memory") !=
        std::string::npos);
  // Sampling belongs to the task: a variant's temperature would be ignored, so it is refused.
  CHECK(error_of({{"backend", "engine"}, {"model", "x"}, {"temperature", 1.5}}).find("set by the task") !=
        std::string::npos);
  auto c = parse_engine_config({{"name", "a"}, {"backend", "engine"}, {"model", "m.gguf"}, {"dtype", "bf16"},
                                {"quantization", "int8-block"}, {"threads", 2}, {"chat_format", "chatml"},
                                {"max_batch", 8}, {"kv_cache_mb", 64}, {"seed", 3}},
                               "v");
  CHECK(c.engine.model == "m.gguf");
  CHECK(c.engine.dtype == ComputeType::BF16);
  CHECK(c.engine.quantization == QuantScheme::Int8Block);
  CHECK(c.engine.threads == 2);
  CHECK(c.engine.max_batch == 8);
  CHECK(c.engine.kv_cache_mb == 64);
  CHECK(c.seed == 3);
  // A missing model is an Error at check_ready, naming the variant.
  auto b = make_engine_backend({{"backend", "engine"}, {"model", "/nonexistent/dir"}}, "run.yaml: variants[2]");
  try {
    b->check_ready();
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("variants[2]") != std::string::npos);
  }
}

TEST_CASE("engine backend: completion, chat and loglikelihood on a fixture model", "[engine-backend]") {
  auto dir = fixture_dir(true);
  auto b = make_engine_backend({{"backend", "engine"}, {"model", dir.string()}, {"threads", 2}, {"max_batch", 3}},
                               "v");
  b->check_ready();
  std::vector<GenRequest> reqs(5);
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].prompt = "Question " + std::to_string(i) + ": the";
    reqs[i].max_tokens = 6 + static_cast<int>(i);
  }
  reqs[3].chat = true;
  reqs[3].messages = {{"user", "hello"}};
  reqs[4].temperature = 0.8;
  reqs[4].seed = 11;
  std::map<size_t, GenResult> out;
  b->generate(reqs, [&](size_t i, GenResult&& r) { out[i] = std::move(r); });
  REQUIRE(out.size() == 5);
  for (auto& [i, r] : out) {
    INFO(i << ": " << r.error);
    CHECK(r.error.empty());
    CHECK(r.n_tokens_prompt > 0);
    CHECK(r.n_tokens_gen <= reqs[i].max_tokens);
    CHECK((r.finish_reason == "stop" || r.finish_reason == "length"));
  }
  // The seeded sample is reproducible.
  std::map<size_t, GenResult> again;
  b->generate(std::span<const GenRequest>(&reqs[4], 1), [&](size_t i, GenResult&& r) { again[i] = std::move(r); });
  CHECK(again[0].text == out[4].text);
  // Chat prompt: "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n" is more tokens than "hello".
  CHECK(out[3].n_tokens_prompt > 10);

  std::vector<LoglikRequest> ll(2);
  ll[0].context = "Question: the answer is";
  ll[0].continuations = {" A", " B", " C", " D"};
  ll[1].context = "x";
  ll[1].continuations = {"yz"};
  std::map<size_t, LoglikResult> lo;
  b->loglikelihood(ll, [&](size_t i, LoglikResult&& r) { lo[i] = std::move(r); });
  REQUIRE(lo.size() == 2);
  CHECK(lo[0].error.empty());
  REQUIRE(lo[0].logprob.size() == 4);
  for (double v : lo[0].logprob) CHECK(v < 0);
  CHECK(lo[1].logprob.size() == 1);
  auto info = b->info();
  CHECK(info.backend == "engine");
  CHECK(info.details["chat_format"] == "chatml");
  CHECK(info.details["dtype"] == "f32");
  REQUIRE(engine_of(*b) != nullptr);
  CHECK(engine_of(*b)->config().arch == "qwen2");
}

TEST_CASE("engine backend: a chat task without a known chat format is an Error", "[engine-backend]") {
  auto dir = fixture_dir(false);
  auto b = make_engine_backend({{"backend", "engine"}, {"model", dir.string()}}, "run.yaml: variants[1]");
  std::vector<GenRequest> reqs(1);
  reqs[0].chat = true;
  reqs[0].messages = {{"user", "hi"}};
  try {
    b->generate(reqs, [](size_t, GenResult&&) {});
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("chat_format") != std::string::npos);
  }
  // With chat_format set it works.
  auto b2 = make_engine_backend({{"backend", "engine"}, {"model", dir.string()}, {"chat_format", "chatml"}}, "v");
  int n = 0;
  b2->generate(reqs, [&](size_t, GenResult&& r) {
    CHECK(r.error.empty());
    ++n;
  });
  CHECK(n == 1);
}

TEST_CASE("engine backend: a template that opens <think> gets it back on the output", "[engine-backend]") {
  auto dir = fixture_dir(false);
  std::vector<GenRequest> reqs(1);
  reqs[0].chat = true;
  reqs[0].messages = {{"user", "hi"}};
  reqs[0].max_tokens = 3;
  for (const char* fmt : {"deepseek-r1", "chatml"}) {
    auto b = make_engine_backend({{"backend", "engine"}, {"model", dir.string()}, {"chat_format", fmt}}, "v");
    b->generate(reqs, [&](size_t, GenResult&& r) {
      REQUIRE(r.error.empty());
      CHECK((r.text.rfind("<think>\n", 0) == 0) == (std::string(fmt) == "deepseek-r1"));
    });
  }
}

TEST_CASE("engine backend: stories260K greedy completion from an empty prompt", "[engine-backend][model]") {
  const char* m = std::getenv("QEVAL_MODELS");
  if (!m || !*m) {
    WARN("QEVAL_MODELS is unset: skipping stories260K backend test");
    return;
  }
  auto b = make_engine_backend(
      {{"backend", "engine"}, {"model", std::string(m) + "/stories260K/stories260K.gguf"}}, "v");
  std::vector<GenRequest> reqs(1);
  reqs[0].max_tokens = 20;
  reqs[0].stop = {"."};
  std::string text;
  b->generate(reqs, [&](size_t, GenResult&& r) { text = r.text; });
  CHECK(text == "Once upon a time, there was a little girl named Lily");
}
