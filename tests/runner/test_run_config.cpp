// Run config parsing: the issue's smoke config works unchanged; every unknown key and bad
// value is one clear error naming the file and key.
#include <catch2/catch.hpp>

#include <fmt/format.h>

#include "core/error.h"
#include "runner/run_config.h"
#include "core/yaml_json.h"

using namespace qeval;
using nlohmann::json;

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
  // Not numbers in YAML 1.2's core schema: a numeric field refuses them as strings.
  auto k = parse_yaml("a: nan\nb: inf\nc: 0x10\nd: -.5\ne: +3\nf: 1e3\n", "x");
  CHECK(k["a"] == "nan");
  CHECK(k["b"] == "inf");
  CHECK(k["c"] == "0x10");
  CHECK(k["d"] == -0.5);
  CHECK(k["e"] == 3);
  CHECK(k["f"] == 1000.0);
  auto signs = parse_yaml("a: +-5\nb: +-.5\nc: ++1\n", "x");
  CHECK(signs["a"] == "+-5");
  CHECK(signs["b"] == "+-.5");
  CHECK(signs["c"] == "++1");
}

TEST_CASE("yaml aliases: ordinary ones expand; one inside itself or an expansion bomb is an error") {
  auto j = parse_yaml("a: &x [1, 2]\nb: *x\nc: {k: *x}\n", "x");
  CHECK(j["b"] == json::array({1, 2}));
  CHECK(j["c"]["k"] == json::array({1, 2}));
  // An alias inside its own anchor: the value contains itself (this overflowed the stack).
  CHECK_THROWS_WITH(parse_yaml("a: &x [*x]\n", "self.yaml"),
                    Catch::Contains("self.yaml:1:") && Catch::Contains("refers to its own anchor"));
  CHECK_THROWS_WITH(parse_yaml("name: rv\ntasks: &x [gsm8k, {t: *x}]\n", "self2.yaml"),
                    Catch::Contains("self2.yaml:") && Catch::Contains("own anchor"));
  // Aliases of aliases: 9 lines that expand to 10^8 values (this ran out of time and memory).
  std::string bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\n";
  for (char c = 'b'; c <= 'h'; ++c)
    bomb += fmt::format("{0}: &{0} [*{1},*{1},*{1},*{1},*{1},*{1},*{1},*{1},*{1},*{1}]\n", c, char(c - 1));
  CHECK_THROWS_WITH(parse_yaml(bomb, "bomb.yaml"),
                    Catch::Contains("bomb.yaml:") && Catch::Contains("expands to more than"));
  // Deep nesting without aliases is bounded too.
  std::string deep = "a: " + std::string(300, '[') + std::string(300, ']') + "\n";
  CHECK_THROWS_WITH(parse_yaml(deep, "deep.yaml"), Catch::Contains("deep.yaml:1:") && Catch::Contains("levels deep"));
  CHECK_NOTHROW(parse_yaml("a: " + std::string(200, '[') + std::string(200, ']') + "\n", "ok.yaml"));
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
  // A comparison gate needs a variant beside the baseline.
  CHECK_THAT(err(base + "gates:\n  - {task: gsm8k, metric: m, max_drop: 0.1}\n"),
             Catch::Contains("gates[0]: max_drop, max_rel_drop and significant_drop compare"));
  std::string two = base + "  - {name: b, backend: openai}\n";
  CHECK_THAT(err(two + "gates:\n  - {task: gsm8k, metric: m, max_drop: 0.1, variants: [a, b]}\n"),
             Catch::Contains("would check the baseline itself"));
  CHECK_NOTHROW(parse(two + "gates:\n  - {task: gsm8k, metric: m, max_drop: 0.1}\n"));
  CHECK_NOTHROW(parse(base + "gates:\n  - {task: gsm8k, metric: m, min_value: 0.5}\n"));
  // Thresholds are fractions.
  CHECK_THAT(err(two + "gates:\n  - {task: gsm8k, metric: m, max_drop: 5}\n"),
             Catch::Contains("gates[0].max_drop: 5 is not between 0 and 1"));
  CHECK_THAT(err(two + "gates:\n  - {task: gsm8k, metric: m, min_value: -0.1}\n"), Catch::Contains("min_value"));
  // Integers do not wrap.
  CHECK_THAT(err(base + "limit: 4294967297\n"), Catch::Contains("limit: expected"));
  CHECK_THAT(err(two + "gates:\n  - {task: gsm8k, metric: m, max_errors: 4294967296}\n"), Catch::Contains("max_errors"));
  // Names that are directories and XML text.
  CHECK_THAT(err("name: x\ntasks: [gsm8k]\nvariants:\n  - {name: '..', backend: openai}\n"), Catch::Contains("variants[0].name"));
  CHECK_THAT(err("name: x\ntasks: [gsm8k]\nvariants:\n  - {name: \"a\\x1bb\", backend: openai}\n"),
             Catch::Contains("control characters"));
  // A key given twice (the second `gates:` would drop every gate).
  CHECK_THAT(err(two + "gates:\n  - {task: gsm8k, metric: m, max_drop: 0.1}\ngates: []\n"),
             Catch::Contains("run.yaml:8: duplicate key 'gates'"));
  CHECK_THAT(err("name: x\ntasks: [gsm8k]\nvariants:\n  - {name: a, backend: openai, model: p, model: q}\n"),
             Catch::Contains("duplicate key 'model'"));
  CHECK_THROWS_WITH(parse_yaml("a: [1, 2\n", "bad.yaml"), Catch::Contains("bad.yaml:"));
  // A byte that is not UTF-8 (Latin-1 "é") is an error with its line, before anything runs: it
  // could not be written to results.json.
  CHECK_THROWS_WITH(parse_yaml("name: x\nvariants:\n  - {name: caf\xe9}\n", "bad.yaml"),
                    Catch::Contains("bad.yaml:3:") && Catch::Contains("not UTF-8"));
  CHECK_THROWS_WITH(parse_yaml("caf\xe9: 1\n", "bad.yaml"), Catch::Contains("bad.yaml:1:"));
  CHECK(parse_yaml("name: caf\xc3\xa9\n", "ok.yaml")["name"] == "caf\xc3\xa9");
}
