// Sample logs survive kill -9: a torn last line is ignored on read and repaired on append.
#include <catch2/catch.hpp>

#include <fstream>

#include "core/error.h"
#include "core/fs.h"
#include "runner/aggregate.h"
#include "runner/sample_log.h"

using namespace qeval;
using nlohmann::json;

namespace {
fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("qeval_test_" + name + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}
}  // namespace

TEST_CASE("torn final line is ignored and repaired; later lines supersede earlier ones") {
  fs::path d = temp_dir("log");
  fs::path p = d / "t.jsonl";
  {
    std::ofstream f(p);
    f << R"({"doc_id":0,"error":"boom"})" << "\n" << R"({"doc_id":1,"error":null})" << "\n" << R"({"doc_id":2,"err)";
  }
  auto m = read_sample_log(p);
  CHECK(m.size() == 2);
  {
    SampleLog log(p);
    log.append(json{{"doc_id", 0}, {"error", nullptr}});
    log.append(json{{"doc_id", 2}, {"error", nullptr}});
  }
  m = read_sample_log(p);
  REQUIRE(m.size() == 3);
  CHECK(m[0]["error"].is_null());
  CHECK(read_file(p).find("err)") == std::string::npos);
  fs::remove_all(d);
}

TEST_CASE("a malformed middle line is an error naming file and line") {
  fs::path d = temp_dir("bad");
  fs::path p = d / "t.jsonl";
  {
    std::ofstream f(p);
    f << R"({"doc_id":0})" << "\nnot json\n" << R"({"doc_id":1})" << "\n";
  }
  CHECK_THROWS_WITH(read_sample_log(p), Catch::Contains("t.jsonl:2"));
  fs::remove_all(d);
}

TEST_CASE("aggregation counts errors apart and compares paired samples") {
  SampleMap a, b;
  // 10 docs; baseline right on 0..5, variant right on 0..3 and 8; doc 9 errored in the variant.
  for (int i = 0; i < 10; ++i) {
    a[i] = json{{"doc_id", i}, {"error", nullptr}, {"scores", {{"acc,none", i < 6 ? 1.0 : 0.0}}},
                {"tokens", {{"output", 2}}}, {"latency_s", 0.5}, {"t_end", 100.0 + i}};
    if (i == 9)
      b[i] = json{{"doc_id", i}, {"error", "HTTP 500"}, {"scores", nullptr}};
    else
      b[i] = json{{"doc_id", i}, {"error", nullptr}, {"scores", {{"acc,none", (i < 4 || i == 8) ? 1.0 : 0.0}}}};
  }
  json ja = aggregate_samples({&a}, {"acc,none"}, "1.0");
  CHECK(ja["n"] == 10);
  CHECK(ja["metrics"]["acc,none"]["value"].get<double>() == Approx(0.6));
  CHECK(ja["metrics"]["acc,none"]["stderr"].get<double>() == Approx(0.16329931618554522));  // sqrt(0.6*0.4*10/9/10)
  // Requests [t_end - 0.5, t_end] do not overlap: 10 x 0.5 s busy for 20 tokens.
  CHECK(ja["throughput"]["output_tokens_per_s"].get<double>() == Approx(20.0 / 5.0));
  json jb = aggregate_samples({&b}, {"acc,none"}, "1.0");
  CHECK(jb["n"] == 9);
  CHECK(jb["n_errors"] == 1);
  CHECK(jb["metrics"]["acc,none"]["value"].get<double>() == Approx(5.0 / 9));
  json c = compare_samples({&a}, {&b}, "acc,none");
  CHECK(c["n_paired"] == 9);
  CHECK(c["right_to_wrong"] == 2);  // docs 4, 5
  CHECK(c["wrong_to_right"] == 1);  // doc 8
  CHECK(c["mcnemar_p"].get<double>() == Approx(1.0));
  CHECK(c["delta"].get<double>() == Approx(5.0 / 9 - 6.0 / 9));
  CHECK(jb["first_error"] == "HTTP 500");
  CHECK_FALSE(ja.contains("first_error"));
  // Every request failed: no value (not 0), and the first error is kept.
  SampleMap e;
  for (int i = 0; i < 3; ++i) e[i] = json{{"doc_id", i}, {"error", fmt::format("HTTP 404 ({})", 2 - i)}, {"scores", nullptr}};
  json je = aggregate_samples({&e}, {"acc,none"}, "1.0");
  CHECK(je["n"] == 0);
  CHECK(je["n_errors"] == 3);
  CHECK(je["metrics"]["acc,none"]["value"].is_null());
  CHECK(je["metrics"]["acc,none"]["stderr"].is_null());
  CHECK(je["first_error"] == "HTTP 404 (2)");  // of the lowest doc id
  // No doc scored on both sides: no difference and no p-value (not 0 and 1).
  json none = compare_samples({&a}, {&e}, "acc,none");
  CHECK(none["n_paired"] == 0);
  CHECK(none["delta"].is_null());
  CHECK(none["mcnemar_p"].is_null());
}

TEST_CASE("throughput counts busy time only: a pause between runs (kill + resume) is excluded") {
  SampleMap a;
  // Two bursts of requests 1000 s apart, each request 1 s long, 10 output tokens each.
  for (int i = 0; i < 4; ++i)
    a[i] = json{{"doc_id", i}, {"error", nullptr}, {"scores", {{"m", 1.0}}}, {"tokens", {{"output", 10}}},
                {"latency_s", 1.0}, {"t_end", (i < 2 ? 100.0 : 1100.0) + 0.5 * (i % 2)}};
  json j = aggregate_samples({&a}, {"m"}, "1");
  // Busy: [99, 100.5] and [1099, 1100.5] = 3 s; 40 tokens.
  CHECK(j["throughput"]["output_tokens_per_s"].get<double>() == Approx(40.0 / 3.0));
}
