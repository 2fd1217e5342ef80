// Run config parsing: the issue's smoke config works unchanged; every unknown key and bad
// value is one clear error naming the file and key.
#include <catch2/catch.hpp>

#include "core/error.h"
#include "runner/run_config.h"
#include "runner/yaml_json.h"

using namespace qeval;

namespace {
const char* kSmoke = R"(name: smoke
tasks: [gsm8k, mmlu]
limit: 20
baseline: a
variants:
  - {name: a, backend: openai, base_url: "http://127.0.0.1:8000/v1", model: m, concurrency: 8}
  - {name: b, backend: openai, base_url: "http://127.0.0.1:8000/v1", model: m2, concurrency: 8,
     api_key_env: MY_KEY, timeout_s: 120, max_retries: 5}
gates:
  - {task: gsm8k, metric: "exact_match,strict-match", max_drop: 0.05}
  - {task: mmlu, metric: "acc,none", max_rel_drop: 0.02}
  - {task: gsm8k, metric: "exact_match,flexible-extract", significant_drop: 0.05}
)";

RunConfig parse(const std::string& text) { return parse_run_config(parse_yaml(text, "run.yaml"), "run.yaml"); }
}  // namespace

TEST_CASE("the smoke config of the issue parses unchanged") {
  RunConfig c = parse(kSmoke);
  CHECK(c.name == "smoke");
  CHECK(c.tasks == std::vector<std::string>{"gsm8k", "mmlu"});
  CHECK(c.limit == 20);
  CHECK(c.baseline == "a");
  REQUIRE(c.variants.size() == 2);
  CHECK(c.variants[1]["timeout_s"] == 120);
  CHECK(c.variants[1]["base_url"] == "http://127.0.0.1:8000/v1");
  REQUIRE(c.gates.size() == 3);
  CHECK(c.gates[0].max_drop == Approx(0.05));
  CHECK(c.gates[1].max_rel_drop == Approx(0.02));
  CHECK(c.gates[2].significant_drop == Approx(0.05));
}

TEST_CASE("yaml scalars: quoted stay strings, plain become numbers and bools") {
  auto j = parse_yaml("a: '8'\nb: 8\nc: 0.5\nd: true\ne: ~\nf: v1\n", "x");
  CHECK(j["a"] == "8");
  CHECK(j["b"] == 8);
  CHECK(j["c"] == 0.5);
  CHECK(j["d"] == true);
  CHECK(j["e"].is_null());
  CHECK(j["f"] == "v1");
}

TEST_CASE("bad configs give one clear error naming the key") {
  auto err = [](const std::string& text) {
    try {
      parse(text);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  std::string base = "name: x\ntasks: [gsm8k]\nvariants:\n  - {name: a, backend: openai}\n";
  CHECK_THAT(err(base + "bogus: 1\n"), Catch::Contains("run.yaml: unknown key 'bogus'"));
  CHECK_THAT(err(base + "gates:\n  - {task: gsm8k, metric: m, max_drop: 0.1, oops: 2}\n"),
             Catch::Contains("gates[0]: unknown key 'oops'"));
  CHECK_THAT(err(base + "baseline: zz\n"), Catch::Contains("baseline: 'zz' is not the name of a variant"));
  CHECK_THAT(err(base + "limit: -3\n"), Catch::Contains("limit"));
  CHECK_THAT(err("name: x\ntasks: [gsm8k]\nvariants:\n  - {name: a, backend: openai}\n  - {name: a, backend: openai}\n"),
             Catch::Contains("duplicate variant name 'a'"));
  CHECK_THAT(err("name: x\nvariants:\n  - {name: a, backend: openai}\n"), Catch::Contains("missing required key 'tasks'"));
  CHECK_THAT(err("name: x\ntasks: [gsm8k]\nvariants:\n  - {backend: openai}\n"), Catch::Contains("variants[0]: missing required key 'name'"));
  CHECK_THAT(err(base + "gates:\n  - {task: gsm8k, metric: m}\n"), Catch::Contains("a gate needs one of"));
  CHECK_THAT(err(base + "gates:\n  - {task: gsm8k, metric: m, significant_drop: 5}\n"), Catch::Contains("significance level"));
  CHECK_THAT(err(base + "gates:\n  - {task: mmlu, metric: m, max_drop: 0.1}\n"), Catch::Contains("not one of the run's tasks"));
  CHECK_THROWS_WITH(parse_yaml("a: [1, 2\n", "bad.yaml"), Catch::Contains("bad.yaml:"));
}
