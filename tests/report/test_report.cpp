// Report rendering and gates from a fixed results.json.
#include <catch2/catch.hpp>

#include "core/error.h"
#include "report/gates.h"
#include "report/render.h"

using namespace qeval;
using nlohmann::json;

namespace {

json fixed_results() {
  return json::parse(R"({
    "schema": "qeval.results/1", "name": "smoke", "config_sha256": "abc", "git_revision": "r1",
    "created": "2026-11-28T00:00:00Z", "baseline": "a", "variant_order": ["a", "b"],
    "task_order": ["gsm8k", "mmlu"], "task_versions": {"gsm8k": "3.0", "mmlu": "1.0"},
    "variants": {
      "a": {"backend": "openai", "model": "m", "tasks": {
        "gsm8k": {"n": 20, "n_errors": 0, "n_invalid": 2, "n_truncated": 0,
                  "metrics": {"exact_match,strict-match": {"value": 0.55, "stderr": 0.114, "n": 20}},
                  "throughput": {"output_tokens": 250, "output_tokens_per_s": 12.5, "samples_per_s": 1.0,
                                 "latency_s_p50": 0.1, "latency_s_p99": 0.2}},
        "mmlu": {"n": 40, "n_errors": 0, "subtasks": ["mmlu_anatomy"],
                 "metrics": {"acc,none": {"value": 0.5, "stderr": 0.08, "n": 40}},
                 "throughput": {"output_tokens": 0, "output_tokens_per_s": 0.0, "samples_per_s": 8.0,
                                "latency_s_p50": 0.5, "latency_s_p99": 0.9}},
        "mmlu_anatomy": {"n": 40, "metrics": {"acc,none": {"value": 0.5, "stderr": 0.08, "n": 40}}}}},
      "b": {"backend": "openai", "model": "m2", "tasks": {
        "gsm8k": {"n": 20, "n_errors": 1, "n_invalid": 1, "n_truncated": 0,
                  "metrics": {"exact_match,strict-match": {"value": 0.45, "stderr": 0.114, "n": 20}}},
        "mmlu": {"n": 40, "n_errors": 0, "subtasks": ["mmlu_anatomy"],
                 "metrics": {"acc,none": {"value": 0.495, "stderr": 0.08, "n": 40}}},
        "mmlu_anatomy": {"n": 40, "metrics": {"acc,none": {"value": 0.495, "stderr": 0.08, "n": 40}}}}}},
    "comparisons": {"b": {"gsm8k": {"exact_match,strict-match": {"delta": -0.1, "ci95": [-0.25, 0.05],
        "right_to_wrong": 3, "wrong_to_right": 1, "mcnemar_p": 0.625, "n_paired": 19}},
        "mmlu": {"acc,none": {"delta": -0.005, "ci95": [-0.02, 0.01], "right_to_wrong": 1, "wrong_to_right": 1,
        "mcnemar_p": 1.0, "n_paired": 40}}}},
    "gates": []})");
}

}  // namespace

TEST_CASE("markdown report renders the side-by-side table from results.json") {
  json r = fixed_results();
  std::string md = render_markdown(r, "report.svg");
  CHECK(md.find("| task | metric | a (baseline) | b |") != std::string::npos);
  CHECK(md.find("| gsm8k | exact_match,strict-match | 55.0 ± 11.4 (n=20) | 45.0 ± 11.4 (n=20)<br>Δ -10.0 [-25.0, +5.0], flips 3/1, p=0.625 (n=19 paired) |") != std::string::npos);
  CHECK(md.find("flips 1/1, p=1.000 |") != std::string::npos);  // every doc paired: no note
  CHECK(md.find("| mmlu | acc,none |") != std::string::npos);
  CHECK(md.find("| mmlu_anatomy | acc,none |") > md.find("<details>"));  // subtasks only in details
  CHECK(md.find("<details><summary>mmlu: per-subtask results") != std::string::npos);
  CHECK(md.find("![accuracy by variant") != std::string::npos);
  CHECK(md.find("| b | gsm8k | 20 | 1 | 1 | 0 |") != std::string::npos);
  // Throughput: samples/s for every task, output tokens/s only where the task generates.
  CHECK(md.find("| a | gsm8k | 20 | 0 | 2 | 0 | 0 | 1.00 | 12.5 | 0.100 | 0.200 |") != std::string::npos);
  CHECK(md.find("| a | mmlu | 40 | 0 | 0 | 0 | 0 | 8.00 | — | 0.500 | 0.900 |") != std::string::npos);
  CHECK(md == render_markdown(r, "report.svg"));  // deterministic
}

TEST_CASE("svg chart has a bar and an error bar per variant and row") {
  std::string svg = render_svg(fixed_results());
  CHECK(svg.rfind("<svg", 0) == 0);
  size_t rects = 0, pos = 0;
  while ((pos = svg.find("<rect", pos)) != std::string::npos) ++rects, ++pos;
  CHECK(rects == 2 * 2 + 2);  // 2 rows x 2 variants + 2 legend swatches
}

TEST_CASE("gates: max_drop, max_rel_drop, significant_drop, max_errors") {
  json r = fixed_results();
  std::vector<Gate> gates(4);
  gates[0].task = "gsm8k", gates[0].metric = "exact_match,strict-match", gates[0].max_drop = 0.05, gates[0].max_errors = 5;
  gates[1].task = "mmlu", gates[1].metric = "acc,none", gates[1].max_rel_drop = 0.02;
  gates[2].task = "gsm8k", gates[2].metric = "exact_match,strict-match", gates[2].significant_drop = 0.05, gates[2].max_errors = 5;
  gates[3].task = "gsm8k", gates[3].metric = "exact_match,strict-match", gates[3].min_value = 0.0;  // max_errors 0
  json out = evaluate_gates(r, gates);
  REQUIRE(out.size() == 4);
  CHECK(out[0]["variant"] == "b");
  CHECK_FALSE(out[0]["passed"].get<bool>());  // drop 0.10 > 0.05
  CHECK(out[1]["passed"].get<bool>());        // 0.005/0.5 = 1% <= 2%
  CHECK(out[2]["passed"].get<bool>());        // p = 0.625: not significant
  CHECK_FALSE(out[3]["passed"].get<bool>());  // 1 error > max_errors 0
  CHECK(out[3]["why"].get<std::string>().find("1 per-sample errors") != std::string::npos);

  r["comparisons"]["b"]["gsm8k"]["exact_match,strict-match"]["mcnemar_p"] = 0.01;
  CHECK_FALSE(evaluate_gates(r, {gates[2]})[0]["passed"].get<bool>());
}

TEST_CASE("gates: the baseline's errors count, and no scored sample fails every gate") {
  std::vector<Gate> gates(2);
  gates[0].task = "mmlu", gates[0].metric = "acc,none", gates[0].max_rel_drop = 0.02;  // max_errors 0
  gates[1].task = "mmlu", gates[1].metric = "acc,none", gates[1].min_value = 0.1;
  json r = fixed_results();
  REQUIRE(evaluate_gates(r, gates)[0]["passed"].get<bool>());
  // Errors in the baseline make the comparison unsound: a comparing gate fails on them.
  r["variants"]["a"]["tasks"]["mmlu"]["n_errors"] = 3;
  json out = evaluate_gates(r, gates);
  CHECK_FALSE(out[0]["passed"].get<bool>());
  CHECK_THAT(out[0]["why"].get<std::string>(), Catch::Contains("baseline a: 3 per-sample errors > max_errors 0"));
  CHECK(out[1]["passed"].get<bool>());  // min_value does not compare
  // Every baseline request failed: n = 0, no value.
  r["variants"]["a"]["tasks"]["mmlu"]["n_errors"] = 0;
  r["variants"]["a"]["tasks"]["mmlu"]["n"] = 0;
  r["variants"]["a"]["tasks"]["mmlu"]["metrics"]["acc,none"] = {{"value", nullptr}, {"stderr", nullptr}, {"n", 0}};
  out = evaluate_gates(r, gates);
  CHECK_FALSE(out[0]["passed"].get<bool>());
  CHECK_THAT(out[0]["why"].get<std::string>(), Catch::Contains("baseline a has no scored sample"));
  // Every request of the compared variant failed.
  r = fixed_results();
  r["variants"]["b"]["tasks"]["mmlu"]["n"] = 0;
  r["variants"]["b"]["tasks"]["mmlu"]["n_errors"] = 40;
  r["variants"]["b"]["tasks"]["mmlu"]["metrics"]["acc,none"] = {{"value", nullptr}, {"stderr", nullptr}, {"n", 0}};
  gates[0].max_errors = 100;
  gates[1].max_errors = 100;
  out = evaluate_gates(r, gates);
  for (const json& g : out) {
    CHECK_FALSE(g["passed"].get<bool>());
    CHECK_THAT(g["why"].get<std::string>(), Catch::Contains("no scored sample (n=0, 40 errors)"));
  }
  // The report shows n/a and draws no bar for it.
  CHECK(render_markdown(r, "report.svg").find("n/a ± n/a (n=0)") != std::string::npos);
  std::string svg = render_svg(r);
  size_t rects = 0, pos = 0;
  while ((pos = svg.find("<rect", pos)) != std::string::npos) ++rects, ++pos;
  CHECK(rects == 2 * 2 + 2 - 1);
}

TEST_CASE("junit has one failing testcase per failed gate") {
  json r = fixed_results();
  r["gates"] = json::array({{{"task", "gsm8k"}, {"metric", "m"}, {"variant", "b"}, {"passed", false}, {"why", "drop <big>"}},
                            {{"task", "mmlu"}, {"metric", "acc"}, {"variant", "b"}, {"passed", true}, {"why", "ok"}}});
  std::string x = render_junit(r);
  CHECK(x.find("tests=\"2\" failures=\"1\"") != std::string::npos);
  CHECK(x.find("drop &lt;big&gt;") != std::string::npos);
  // Two gates on the same task, metric and variant get distinct names.
  r["gates"].push_back(r["gates"][0]);
  x = render_junit(r);
  CHECK(x.find("name=\"gsm8k m b\"") != std::string::npos);
  CHECK(x.find("name=\"gsm8k m b #2\"") != std::string::npos);
}

TEST_CASE("report: a p-value just under an alpha is not rounded onto it; min_value allows one ulp") {
  json r = fixed_results();
  r["comparisons"]["b"]["gsm8k"]["exact_match,strict-match"]["mcnemar_p"] = 0.04996;
  CHECK(render_markdown(r, "").find("p=0.04996 (n=19 paired)") != std::string::npos);
  r["comparisons"]["b"]["gsm8k"]["exact_match,strict-match"]["mcnemar_p"] = 0.3;
  CHECK(render_markdown(r, "").find("p=0.300") != std::string::npos);
  // 29/58 as a micro average of 28/55 and 1/3 is 0.49999999999999994: min_value 0.5 passes.
  r["variants"]["b"]["tasks"]["gsm8k"]["metrics"]["exact_match,strict-match"]["value"] = 0.49999999999999994;
  std::vector<Gate> g(1);
  g[0].task = "gsm8k", g[0].metric = "exact_match,strict-match", g[0].min_value = 0.5, g[0].max_errors = 5;
  g[0].variants = {"b"};
  CHECK(evaluate_gates(r, g)[0]["passed"].get<bool>());
  r["variants"]["b"]["tasks"]["gsm8k"]["metrics"]["exact_match,strict-match"]["value"] = 0.4999;
  CHECK_FALSE(evaluate_gates(r, g)[0]["passed"].get<bool>());
}

TEST_CASE("validate_results rejects other documents") {
  CHECK_THROWS_AS(validate_results(json::object(), "x.json"), Error);
  CHECK_THROWS_WITH(validate_results(json{{"schema", "other"}}, "x.json"), Catch::Contains("x.json"));
  CHECK_NOTHROW(validate_results(fixed_results(), "x.json"));
}

TEST_CASE("gates: no paired sample fails a significance gate; a run of one variant gates it") {
  json r = fixed_results();
  std::vector<Gate> gates(1);
  gates[0].task = "gsm8k", gates[0].metric = "exact_match,strict-match", gates[0].significant_drop = 0.05;
  gates[0].max_errors = 5;
  REQUIRE(evaluate_gates(r, gates)[0]["passed"].get<bool>());
  json& c = r["comparisons"]["b"]["gsm8k"]["exact_match,strict-match"];
  c["n_paired"] = 0, c["delta"] = nullptr, c["mcnemar_p"] = nullptr, c["ci95"] = {nullptr, nullptr};
  json out = evaluate_gates(r, gates);
  CHECK_FALSE(out[0]["passed"].get<bool>());
  CHECK_THAT(out[0]["why"].get<std::string>(), Catch::Contains("no paired sample"));
  CHECK(render_markdown(r, "").find("Δ n/a [n/a, n/a], flips 3/1, p=n/a") != std::string::npos);

  // One variant: the gate checks it (the default "all but the baseline" would check nothing).
  json one = fixed_results();
  one["variants"].erase("b");
  one["variant_order"] = {"a"};
  std::vector<Gate> mv(1);
  mv[0].task = "gsm8k", mv[0].metric = "exact_match,strict-match", mv[0].min_value = 0.6;
  out = evaluate_gates(one, mv);
  REQUIRE(out.size() == 1);
  CHECK(out[0]["variant"] == "a");
  CHECK_FALSE(out[0]["passed"].get<bool>());
}

TEST_CASE("report: fidelity without a value shows n/a and counts non-finite positions; XML has no control characters") {
  json r = fixed_results();
  r["variants"]["b"]["fidelity"]["text"] = {{"n_tokens", 0}, {"n_nonfinite", 7}};
  r["variants"]["b"]["fidelity"]["task_prompts"] = {{"n_tokens", 10}, {"kld_mean", 0.5}, {"kld_stderr", 0.1},
                                                    {"top1_agreement", 0.9}, {"ppl_ratio", nullptr}};
  std::string md = render_markdown(r, "");
  CHECK(md.find("| b | text | 0 | n/a ± n/a | n/a |") != std::string::npos);
  CHECK(md.find("| 90.00% | n/a |") != std::string::npos);
  CHECK(md.find("b text: 7 of 7 positions had a non-finite") != std::string::npos);
  r["gates"] = json::array({{{"task", "gsm8k"}, {"metric", "m"}, {"variant", "b"}, {"passed", false},
                             {"why", std::string("bad\x1b[31m")}}});
  std::string x = render_junit(r);
  CHECK(x.find('\x1b') == std::string::npos);
  CHECK(x.find("bad?[31m") != std::string::npos);
}

TEST_CASE("validate_results: a results file without variants is refused") {
  json r = fixed_results();
  r["variants"] = json::object();
  CHECK_THROWS_WITH(validate_results(r, "x.json"), Catch::Contains("x.json: field 'variants' is empty"));
}
