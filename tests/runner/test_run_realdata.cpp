// Integration on the real datasets ($QEVAL_DATA; skipped with a WARN when unset): run_eval
// of gsm8k and mmlu (limit 5: 5 + 57 x 5 samples) against a FakeOpenAI that knows every
// answer (GSM8K: the reference after "####" looked up by question; MMLU: the gold letter
// looked up by context), so every metric must be exactly 1.0, with no errors and one sample
// line per doc. Exercises real text (Unicode, quotes, CSV quirks) end to end.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <mutex>
#include <unordered_map>

#include "core/fs.h"
#include "data/datasets.h"
#include "runner/fixtures/run_fixture.h"
#include "runner/runner.h"
#include "tasks/task.h"

using namespace qeval;
using namespace qeval::testfx;
using nlohmann::json;

TEST_CASE("run_eval on the real datasets scores an all-knowing fake model at exactly 1.0") {
  const char* data = std::getenv("QEVAL_DATA");
  if (!data || !*data) {
    WARN("QEVAL_DATA is not set: skipping the real-data integration test");
    return;
  }
  constexpr int kLimit = 5;

  // GSM8K: question -> the text after "#### " of its reference answer.
  auto gsm = std::make_shared<std::unordered_map<std::string, std::string>>();
  for (const auto& d : load_gsm8k(gsm8k_file("test"))) {
    std::string a = d["answer"].get<std::string>();
    (*gsm)[d["question"].get<std::string>()] = a.substr(a.rfind("#### ") + 5);
  }
  // MMLU: context (the exact prompt) -> gold index, for the docs the run will ask.
  auto mmlu = std::make_shared<std::unordered_map<std::string, int>>();
  TaskSpec spec = load_task("mmlu");
  for (const auto& sub : expand_task(spec))
    for (const auto& in : build_instances(spec, sub, kLimit)) (*mmlu)[in.loglik->context] = in.gold;

  testing::FakeOptions o;
  o.model_name = "oracle";
  o.model.complete = [gsm](const std::string& prompt) {
    testing::FakeGen g;
    size_t q = prompt.rfind("Question: ");
    size_t a = prompt.rfind("\nAnswer:");
    auto it = q != std::string::npos && a != std::string::npos && a > q ? gsm->find(prompt.substr(q + 10, a - q - 10))
                                                                         : gsm->end();
    g.text = it == gsm->end() ? " no idea" : " Let me think.\n#### " + it->second;
    return g;
  };
  o.model.score = [mmlu](std::string_view prefix, std::string_view tok) -> testing::FakeTokenScore {
    if (tok.size() == 2 && tok[0] == ' ' && tok[1] >= 'A' && tok[1] <= 'D' && prefix.ends_with("Answer:")) {
      auto it = mmlu->find(std::string(prefix));
      if (it != mmlu->end()) return {tok[1] - 'A' == it->second ? -0.1 : -5.0, true};
    }
    return {-1.0, true};
  };
  testing::FakeOpenAI server(std::move(o));

  TempDir tmp("realdata");
  const fs::path cfg = tmp.path() / "run.yaml";
  write_text(cfg, "name: real\ntasks: [gsm8k, mmlu]\nlimit: " + std::to_string(kLimit) +
                      "\nvariants:\n  - {name: a, backend: openai, base_url: \"" + server.base_url() +
                      "\", model: oracle, concurrency: 8}\n");
  RunOptions opts;
  opts.config = cfg;
  opts.out = tmp.path() / "out";
  REQUIRE(run_eval(opts) == 0);

  json r = json::parse(read_file(tmp.path() / "out" / "results.json"));
  const json& t = r["variants"]["a"]["tasks"];
  CHECK(t["gsm8k"]["n"] == kLimit);
  CHECK(t["gsm8k"]["n_errors"] == 0);
  CHECK(t["gsm8k"]["metrics"]["exact_match,strict-match"]["value"].get<double>() == 1.0);
  CHECK(t["gsm8k"]["metrics"]["exact_match,flexible-extract"]["value"].get<double>() == 1.0);
  CHECK(t["mmlu"]["n"] == 57 * kLimit);
  CHECK(t["mmlu"]["n_errors"] == 0);
  CHECK(t["mmlu"]["metrics"]["acc,none"]["value"].get<double>() == 1.0);
  CHECK(t["mmlu"]["metrics"]["acc,none"]["n"] == 57 * kLimit);
  CHECK(count_lines(tmp.path() / "out" / "samples") == static_cast<size_t>(kLimit + 57 * kLimit));
  CHECK(server.total_answered() == kLimit + 57 * kLimit);
  // The dataset files read, each the published file.
  CHECK(r["datasets"]["gsm8k/test.jsonl"]["published"] == true);
  CHECK(r["datasets"]["gsm8k/train.jsonl"]["published"] == true);
  CHECK(r["datasets"]["mmlu/test/abstract_algebra_test.csv"]["published"] == true);
  CHECK(r["datasets"]["mmlu/dev/virology_dev.csv"]["published"] == true);
  CHECK(r["datasets"].size() == 2 + 2 * 57);
}
