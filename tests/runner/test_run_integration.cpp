// End-to-end tests of `run_eval` (in-process) against two loopback FakeOpenAI servers whose
// fake models answer deterministically per doc (fixtures/run_fixture.h) while every fault
// kind is injected on a schedule. Asserts: no sample lost or duplicated, each correct answer
// consumed once, exact accuracies (gsm8k both filters, mmlu micro average, a reasoning chat
// task), comparisons and gates, persistent failures recorded and re-asked by --resume, the
// refused output directory, an unreachable server, and report.md rendered from results.json.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "data/datasets.h"
#include "runner/fixtures/run_fixture.h"
#include "runner/runner.h"
#include "tasks/task.h"

using namespace qeval;
using namespace qeval::testfx;
using nlohmann::json;
using qeval::testing::FakeOpenAI;
using qeval::testing::Fault;

namespace {

const std::vector<Fault> kAllFaults = {Fault::kCloseNoReply, Fault::kCloseMidReply, Fault::kDelay,
                                       Fault::k408,          Fault::k429,           Fault::k500,
                                       Fault::k502,          Fault::k503,           Fault::kGarbage,
                                       Fault::kTruncated,    Fault::kMissingFields};

// A fault schedule that records what it injected. Attempts 0 and 1 of a key fail with
// probability 0.3 (kind from a hash of key and attempt); with `persistent`, a few chosen docs
// fail on every attempt.
struct FaultPlan {
  bool persistent = false;
  std::mutex mu;
  std::map<Fault, int> injected;
  std::map<std::string, int> delays;  // kDelay per key: answered by the server after a timeout
  std::map<std::string, std::vector<std::pair<Fault, std::chrono::steady_clock::time_point>>> attempts;
  std::set<std::string> persistent_keys;

  static bool is_chat(const std::string& key) { return key.find("Please reason") != std::string::npos; }

  // The docs that never get an answer (server of variant b only): gsm8k 7 and 13, gsm8k_chat
  // 4, mmlu subject 5 row 1.
  static bool always_fails(const std::string& key) {
    int q = last_gsm8k_marker(key);
    if (q >= 0) return is_chat(key) ? q == 4 : (q == 7 || q == 13);
    auto [s, id] = last_mmlu_marker(key);
    return s == 5 && id == 1;
  }

  Fault decide(const std::string& key, int attempt) {
    Fault f = Fault::kNone;
    if (persistent && always_fails(key)) {
      f = is_chat(key) ? Fault::kCloseNoReply : (last_gsm8k_marker(key) >= 0 ? Fault::k503 : Fault::k500);
    } else if (attempt < 2) {
      uint64_t h = testing::fake_hash(key + "#" + std::to_string(attempt), 99);
      h ^= h >> 31;
      h *= 0x9e3779b97f4a7c15ull;
      h ^= h >> 29;
      if (h % 100 < 30) f = kAllFaults[(h >> 20) % kAllFaults.size()];
    }
    std::lock_guard<std::mutex> lock(mu);
    if (persistent && always_fails(key)) persistent_keys.insert(key);
    if (f != Fault::kNone) ++injected[f];
    if (f == Fault::kDelay) ++delays[key];
    attempts[key].push_back({f, std::chrono::steady_clock::now()});
    return f;
  }
};

std::unique_ptr<FakeOpenAI> make_server(int variant, const std::string& model, std::shared_ptr<FaultPlan> plan) {
  testing::FakeOptions o;
  o.model_name = model;
  o.model = Oracle{variant}.model();
  o.delay_s = 2.5;  // kDelay: beyond the variants' timeout_s of 2
  o.retry_after_s = 1;
  if (plan) o.fault = [plan](const std::string& key, int attempt) { return plan->decide(key, attempt); };
  return std::make_unique<FakeOpenAI>(std::move(o));
}

std::string config_yaml(const std::string& name, const std::string& url_a, const std::string& url_b,
                        const std::string& gates) {
  return "name: " + name +
         "\n"
         "tasks: [gsm8k, mmlu, gsm8k_chat]\n"
         "limit: 20\n"
         "baseline: a\n"
         "variants:\n"
         "  - {name: a, backend: openai, base_url: \"" + url_a + "\", model: model-a, concurrency: 8, timeout_s: 2}\n"
         "  - {name: b, backend: openai, base_url: \"" + url_b + "\", model: model-b, concurrency: 8,\n"
         "     timeout_s: 2, max_retries: 2}\n" + gates;
}

// Expected per-doc scores of one variant, computed from the oracle alone.
struct Expected {
  std::vector<double> strict, flex, chat, mmlu;       // per doc, in doc order
  std::vector<int> strict_docs, chat_docs;            // doc ids (without the errored ones)
  std::vector<std::pair<int, int>> mmlu_docs;         // (subject, row)
  int n_invalid_gsm = 0, n_invalid_chat = 0, n_trunc_chat = 0;
};

Expected expected(int variant, const DatasetSizes& z, bool drop_persistent) {
  Oracle o{variant};
  Expected e;
  for (int id = 0; id < 20; ++id) {
    if (!(drop_persistent && (id == 7 || id == 13))) {
      e.strict_docs.push_back(id);
      e.strict.push_back(o.strict_right(id));
      e.flex.push_back(o.flex_right(id));
      e.n_invalid_gsm += o.strict_invalid(id);
    }
    if (!(drop_persistent && id == 4)) {
      e.chat_docs.push_back(id);
      e.chat.push_back(o.chat_right(id));
      e.n_invalid_chat += o.chat_invalid(id);
      e.n_trunc_chat += o.chat_truncated(id);
    }
  }
  for (int s = 0; s < 57; ++s)
    for (int id = 0; id < mmlu_test_rows(z, s); ++id) {
      if (drop_persistent && s == 5 && id == 1) continue;
      e.mmlu_docs.push_back({s, id});
      e.mmlu.push_back(o.mmlu_right(s, id));
    }
  return e;
}

void check_metric(const json& m, const std::vector<double>& x) {
  INFO(m.dump());
  CHECK(m["n"].get<long>() == static_cast<long>(x.size()));
  CHECK(m["value"].get<double>() == Approx(mean_of(x)).margin(1e-12));
  CHECK(m["stderr"].get<double>() == Approx(mean_stderr(x)).margin(1e-12));
}

// Checks a comparison entry against paired per-doc scores (docs answered by both).
void check_comparison(const json& c, const std::vector<double>& a, const std::vector<double>& b) {
  INFO(c.dump());
  REQUIRE(a.size() == b.size());
  int r2w = 0, w2r = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    r2w += a[i] == 1 && b[i] == 0;
    w2r += a[i] == 0 && b[i] == 1;
  }
  CHECK(c["n_paired"].get<long>() == static_cast<long>(a.size()));
  CHECK(c["right_to_wrong"].get<int>() == r2w);
  CHECK(c["wrong_to_right"].get<int>() == w2r);
  CHECK(c["delta"].get<double>() == Approx(mean_of(b) - mean_of(a)).margin(1e-12));
  CHECK(c["mcnemar_p"].get<double>() == Approx(mcnemar_p(r2w, w2r)).epsilon(1e-9));
  REQUIRE(c["ci95"].is_array());
  CHECK(c["ci95"][0].get<double>() <= c["delta"].get<double>() + 1e-12);
  CHECK(c["ci95"][1].get<double>() >= c["delta"].get<double>() - 1e-12);
}

// The b-side scores restricted to docs both variants answered.
std::vector<double> pick(const std::vector<double>& scores, const std::vector<int>& docs, const std::vector<int>& keep) {
  std::vector<double> out;
  for (size_t i = 0; i < docs.size(); ++i)
    if (std::find(keep.begin(), keep.end(), docs[i]) != keep.end()) out.push_back(scores[i]);
  return out;
}

void check_results(const json& r, const DatasetSizes& z, bool b_has_errors, const std::string& cfg_text) {
  CHECK(r["schema"] == "qeval.results/1");
  CHECK(r["config_sha256"] == sha256_hex(cfg_text));
  CHECK(r["git_revision"].is_string());
  CHECK(!r["git_revision"].get<std::string>().empty());
  CHECK(r["created"].is_string());
  CHECK(r["baseline"] == "a");
  for (const char* v : {"a", "b"}) {
    INFO("variant " << v);
    const json& vj = r["variants"][v];
    CHECK(vj["backend"] == "openai");
    CHECK(vj["model"] == std::string("model-") + v);
    int variant = v[0] - 'a';
    bool errs = variant == 1 && b_has_errors;
    Expected e = expected(variant, z, errs);

    const json& g = vj["tasks"]["gsm8k"];
    CHECK(g["version"] == "3.0");
    CHECK(g["n"].get<int>() == static_cast<int>(e.strict.size()));
    CHECK(g["n_errors"].get<int>() == (errs ? 2 : 0));
    CHECK(g["n_invalid"].get<int>() == e.n_invalid_gsm);
    CHECK(g["n_truncated"].get<int>() == 0);
    check_metric(g["metrics"]["exact_match,strict-match"], e.strict);
    check_metric(g["metrics"]["exact_match,flexible-extract"], e.flex);
    for (const char* k : {"output_tokens_per_s", "latency_s_p50", "latency_s_p99"})
      CHECK(g["throughput"][k].is_number());
    CHECK(g["throughput"]["latency_s_p50"].get<double>() > 0);

    const json& c = vj["tasks"]["gsm8k_chat"];
    CHECK(c["n"].get<int>() == static_cast<int>(e.chat.size()));
    CHECK(c["n_errors"].get<int>() == (errs ? 1 : 0));
    CHECK(c["n_truncated"].get<int>() == e.n_trunc_chat);
    CHECK(c["n_invalid"].get<int>() == e.n_invalid_chat);
    check_metric(c["metrics"]["exact_match,boxed"], e.chat);

    const json& m = vj["tasks"]["mmlu"];
    CHECK(m["n"].get<int>() == static_cast<int>(e.mmlu.size()));
    CHECK(m["n_errors"].get<int>() == (errs ? 1 : 0));
    {
      // The micro average over all questions, with lm-eval's group stderr (pooled_sample_stderr):
      // sqrt(Σ (n_s - 1) · se_s² · n_s / (N - k) / N) over the subjects s.
      std::vector<std::vector<double>> by_subject(57);
      for (size_t i = 0; i < e.mmlu_docs.size(); ++i) by_subject[e.mmlu_docs[i].first].push_back(e.mmlu[i]);
      double pooled = 0;
      size_t n_all = 0, k = 0;
      for (const auto& xs : by_subject) {
        if (xs.empty()) continue;
        n_all += xs.size(), ++k;
        if (xs.size() >= 2) pooled += double(xs.size() - 1) * std::pow(mean_stderr(xs), 2) * double(xs.size());
      }
      const json& acc = m["metrics"]["acc,none"];
      INFO(acc.dump());
      CHECK(acc["n"].get<size_t>() == e.mmlu.size());
      CHECK(acc["value"].get<double>() == Approx(mean_of(e.mmlu)).margin(1e-12));
      CHECK(acc["stderr"].get<double>() == Approx(std::sqrt(pooled / double(n_all - k) / double(n_all))).epsilon(1e-12));
    }
    REQUIRE(m["subtasks"].size() == 57);
    // Per subject: mmlu_<subject> entries with their own n.
    for (int s : {0, 5, 56}) {
      const std::string name = "mmlu_" + mmlu_subjects()[s];
      std::vector<double> xs;
      for (size_t i = 0; i < e.mmlu_docs.size(); ++i)
        if (e.mmlu_docs[i].first == s) xs.push_back(e.mmlu[i]);
      INFO(name);
      REQUIRE(vj["tasks"].contains(name));
      CHECK(vj["tasks"][name]["metrics"]["acc,none"]["n"].get<size_t>() == xs.size());
      CHECK(vj["tasks"][name]["metrics"]["acc,none"]["value"].get<double>() == Approx(mean_of(xs)));
    }
  }

  // Comparisons b vs a on docs answered by both.
  Expected ea = expected(0, z, false), eb = expected(1, z, b_has_errors);
  const json& cmp = r["comparisons"]["b"];
  check_comparison(cmp["gsm8k"]["exact_match,strict-match"], pick(ea.strict, ea.strict_docs, eb.strict_docs), eb.strict);
  check_comparison(cmp["gsm8k"]["exact_match,flexible-extract"], pick(ea.flex, ea.strict_docs, eb.strict_docs), eb.flex);
  check_comparison(cmp["gsm8k_chat"]["exact_match,boxed"], pick(ea.chat, ea.chat_docs, eb.chat_docs), eb.chat);
  std::vector<double> am;
  for (size_t i = 0; i < ea.mmlu_docs.size(); ++i)
    if (std::find(eb.mmlu_docs.begin(), eb.mmlu_docs.end(), ea.mmlu_docs[i]) != eb.mmlu_docs.end()) am.push_back(ea.mmlu[i]);
  check_comparison(cmp["mmlu"]["acc,none"], am, eb.mmlu);
}

// Each samples file holds one line per doc; returns the number of lines per file.
void check_samples(const fs::path& out, const std::string& variant, const DatasetSizes& z, int extra_lines_b) {
  size_t total_lines = 0, total_docs = 0;
  auto check_file = [&](const std::string& task, int n_docs) {
    fs::path p = out / "samples" / variant / (task + ".jsonl");
    INFO(p.string());
    REQUIRE(fs::exists(p));
    auto lines = read_lines(p);
    std::set<int> docs;
    for (const auto& l : lines) {
      for (const char* k : {"task", "doc_id", "request_hash", "response", "extracted", "scores", "error",
                            "finish_reason", "tokens", "latency_s"})
        CHECK(l.contains(k));
      CHECK(l["task"] == task);
      docs.insert(l["doc_id"].get<int>());
    }
    CHECK(static_cast<int>(docs.size()) == n_docs);
    CHECK(*docs.begin() == 0);
    CHECK(*docs.rbegin() == n_docs - 1);
    total_lines += lines.size();
    total_docs += docs.size();
  };
  check_file("gsm8k", 20);
  check_file("gsm8k_chat", 20);
  for (int s = 0; s < 57; ++s) check_file("mmlu_" + mmlu_subjects()[s], mmlu_test_rows(z, s));
  CHECK(total_lines == total_docs + extra_lines_b);
}

// Waits until the server has sent `n` answers (a timed-out kDelay answer is sent late).
void wait_answered(const FakeOpenAI& s, int n) {
  for (int i = 0; i < 400 && s.total_answered() < n; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

// Every key the server was asked was answered exactly once (plus the late kDelay answers
// the client had given up on), except the persistent failures: never answered.
void check_consumed_once(const FakeOpenAI& s, FaultPlan& plan) {
  std::lock_guard<std::mutex> lock(plan.mu);
  int expect_total = 0;
  for (const auto& [key, att] : plan.attempts)
    expect_total += plan.persistent_keys.count(key) ? 0 : 1 + plan.delays[key];
  wait_answered(s, expect_total);
  CHECK(s.total_answered() == expect_total);
  for (const auto& [key, att] : plan.attempts) {
    int want = plan.persistent_keys.count(key) ? 0 : 1 + plan.delays[key];
    if (s.answered(key) != want) FAIL_CHECK("key answered " << s.answered(key) << " times, want " << want << ": " << key.substr(key.size() - 120));
  }
}

const char* kGatesPass =
    "gates:\n"
    "  - {task: gsm8k, metric: \"exact_match,strict-match\", max_drop: 0.5}\n"
    "  - {task: mmlu, metric: \"acc,none\", max_drop: 0.9}\n"
    "  - {task: gsm8k_chat, metric: \"exact_match,boxed\", min_value: 0.0, max_errors: 1}\n";
const char* kGatesFail =
    "gates:\n"
    "  - {task: gsm8k, metric: \"exact_match,strict-match\", max_drop: 0.5}\n"
    "  - {task: mmlu, metric: \"acc,none\", significant_drop: 0.05}\n";

}  // namespace

TEST_CASE("run_eval end to end: faults, exact accuracy, comparisons, gates, errors, resume") {
  DatasetSizes z;
  DataDir tmp("integ", z);

  auto plan_a = std::make_shared<FaultPlan>();
  auto plan_b = std::make_shared<FaultPlan>();
  plan_b->persistent = true;
  auto sa = make_server(0, "model-a", plan_a);
  auto sb = make_server(1, "model-b", plan_b);

  const fs::path cfg = tmp.path() / "run.yaml";
  const std::string cfg_text = config_yaml("integ", sa->base_url(), sb->base_url(), kGatesPass);
  write_text(cfg, cfg_text);
  const fs::path out = tmp.path() / "out";

  RunOptions opts;
  opts.config = cfg;
  opts.out = out;

  // Run 1: every fault kind on both servers; on b, 4 docs fail for good.
  auto t0 = std::chrono::steady_clock::now();
  int rc = run_eval(opts);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  WARN("run with faults took " << secs << " s");
  CHECK(rc == 1);  // the gsm8k and mmlu gates allow no errors

  for (auto* p : {plan_a.get(), plan_b.get()}) {
    std::lock_guard<std::mutex> lock(p->mu);
    for (Fault f : kAllFaults) CHECK(p->injected[f] > 0);
    // Retry-After (1 s on 429 and 503) is honoured before the next attempt.
    for (const auto& [key, att] : p->attempts)
      for (size_t i = 0; i + 1 < att.size(); ++i)
        if (att[i].first == Fault::k429 || att[i].first == Fault::k503)
          CHECK(std::chrono::duration<double>(att[i + 1].second - att[i].second).count() >= 0.95);
  }
  CHECK(plan_b->persistent_keys.size() == 4);
  for (const auto& k : plan_b->persistent_keys) {
    INFO("persistent key: ..." << k.substr(k.size() > 100 ? k.size() - 100 : 0));
    if (FaultPlan::is_chat(k)) {
      // A connection dropped before any reply byte: libcurl re-sends the request once more on
      // a fresh connection when the dead one was a reused keep-alive connection, so the
      // server may see more than 1 + max_retries requests; the backend still gives up.
      CHECK(sb->requests(k) >= 3);
      CHECK(sb->requests(k) <= 3 * 6);
    } else {
      CHECK(sb->requests(k) == 3);  // 1 + max_retries
    }
  }
  check_consumed_once(*sa, *plan_a);
  check_consumed_once(*sb, *plan_b);

  check_samples(out, "a", z, 0);
  check_samples(out, "b", z, 0);
  {
    // The failed samples carry their error and no scores.
    auto lines = read_lines(out / "samples" / "b" / "gsm8k.jsonl");
    int n_err = 0;
    for (const auto& l : lines) {
      int id = l["doc_id"];
      if (id == 7 || id == 13) {
        ++n_err;
        CHECK(l["error"].is_string());
        CHECK(l["error"].get<std::string>().find("503") != std::string::npos);
        CHECK(l["scores"].is_null());
      } else {
        CHECK(l["error"].is_null());
      }
    }
    CHECK(n_err == 2);
  }

  json r1 = json::parse(read_file(out / "results.json"));
  check_results(r1, z, true, cfg_text);
  {
    // Gates: errors fail gsm8k and mmlu; gsm8k_chat allows one error.
    std::map<std::string, bool> passed;
    for (const auto& g : r1["gates"]) {
      CHECK(g["variant"] == "b");
      CHECK(g["why"].is_string());
      passed[g["task"].get<std::string>()] = g["passed"];
    }
    CHECK_FALSE(passed.at("gsm8k"));
    CHECK_FALSE(passed.at("mmlu"));
    CHECK(passed.at("gsm8k_chat"));
  }

  // report.md exists and is rendered from results.json alone.
  const std::string report = read_file(out / "report.md");
  CHECK(report.find("gsm8k") != std::string::npos);
  CHECK(fs::exists(out / "report.svg"));
  fs::create_directories(tmp.path() / "rerender");
  rerender_report(out / "results.json", tmp.path() / "rerender" / "report.md");
  CHECK(read_file(tmp.path() / "rerender" / "report.md") == report);
  CHECK(read_file(tmp.path() / "rerender" / "report.svg") == read_file(out / "report.svg"));
  // A hand-damaged results.json is one clear error naming the file, and nothing is written.
  {
    json bad = json::parse(read_file(out / "results.json"));
    for (auto& [v, vj] : bad["variants"].items())
      for (auto& [t, tj] : vj["tasks"].items())
        for (auto& [m, mj] : tj["metrics"].items()) mj.erase("n");
    write_file_atomic(tmp.path() / "bad.json", bad.dump());
    CHECK_THROWS_WITH(rerender_report(tmp.path() / "bad.json", tmp.path() / "bad" / "report.md"),
                      Catch::Contains("bad.json: a field is missing") && Catch::Contains("'n'"));
    CHECK(!fs::exists(tmp.path() / "bad" / "report.md"));
  }

  // The output directory holds samples: refused without --resume / --overwrite.
  int req_a = sa->total_requests(), req_b = sb->total_requests();
  {
    RunOptions again = opts;
    CHECK_THROWS_AS(run_eval(again), Error);
    CHECK_THROWS_WITH(run_eval(again), Catch::Contains("--resume"));
  }
  CHECK(sa->total_requests() == req_a);
  CHECK(sb->total_requests() == req_b);

  // Run 2: --resume with the servers healthy asks again only the 4 failed samples.
  sa->options().fault = nullptr;
  sb->options().fault = nullptr;
  sb->reset_counters();
  RunOptions resume = opts;
  resume.resume = true;
  CHECK(run_eval(resume) == 0);
  CHECK(sa->total_requests() == req_a);
  CHECK(sb->total_requests() == 4);
  for (const auto& k : plan_b->persistent_keys) CHECK(sb->answered(k) == 1);
  check_samples(out, "a", z, 0);
  check_samples(out, "b", z, 4);  // the error lines stay, superseded by the new ones
  json r2 = json::parse(read_file(out / "results.json"));
  check_results(r2, z, false, cfg_text);
  for (const auto& g : r2["gates"]) CHECK(g["passed"].get<bool>());

  // Run 3: the same samples judged by a stricter config: b's MMLU drop is significant.
  const fs::path cfg_fail = tmp.path() / "strict.yaml";
  const std::string fail_text = config_yaml("integ", sa->base_url(), sb->base_url(), kGatesFail);
  write_text(cfg_fail, fail_text);
  RunOptions strict = resume;
  strict.config = cfg_fail;
  CHECK(run_eval(strict) == 1);
  CHECK(sb->total_requests() == 4);  // nothing asked again
  json r3 = json::parse(read_file(out / "results.json"));
  check_results(r3, z, false, fail_text);
  REQUIRE(r3["gates"].size() == 2);
  CHECK(r3["gates"][0]["passed"].get<bool>());
  CHECK_FALSE(r3["gates"][1]["passed"].get<bool>());
  CHECK(r3["gates"][1]["why"].get<std::string>().find("significant") != std::string::npos);
  CHECK(r3["comparisons"]["b"]["mmlu"]["acc,none"]["mcnemar_p"].get<double>() < 0.05);
}

TEST_CASE("run_eval: an unreachable server is an Error before anything is written") {
  DataDir tmp("unreach");
  // A port nobody listens on: bind one, then close it.
  int port = 0;
  {
    FakeOpenAI s;
    port = s.port();
  }
  const fs::path cfg = tmp.path() / "run.yaml";
  write_text(cfg, "name: u\ntasks: [gsm8k]\nlimit: 2\nvariants:\n"
                  "  - {name: a, backend: openai, base_url: \"http://127.0.0.1:" + std::to_string(port) +
                      "/v1\", model: m, timeout_s: 2}\n");
  RunOptions opts;
  opts.config = cfg;
  opts.out = tmp.path() / "out";
  CHECK_THROWS_WITH(run_eval(opts), Catch::Contains("cannot reach") && Catch::Contains(std::to_string(port)));
  CHECK_FALSE(fs::exists(tmp.path() / "out"));
}

// A variant whose every request of a task fails (a dead server, a wrong base_url) did not run
// that task: exit 2 after writing the results (nothing computed is lost), with no value (not
// 0) for its metrics, even without gates.
TEST_CASE("run_eval: a task of which a variant got no answer at all exits 2") {
  DataDir tmp("allfail");
  auto good = make_server(0, "m", nullptr);
  testing::FakeOptions o;
  o.fault = [](const std::string&, int) { return Fault::k500; };
  FakeOpenAI bad(o);
  const fs::path cfg = tmp.path() / "run.yaml";
  write_text(cfg, "name: f\ntasks: [gsm8k]\nlimit: 3\nvariants:\n"
                  "  - {name: a, backend: openai, base_url: \"" + good->base_url() + "\", model: m}\n"
                  "  - {name: b, backend: openai, base_url: \"" + bad.base_url() + "\", model: m, max_retries: 0}\n");
  RunOptions opts;
  opts.config = cfg;
  opts.out = tmp.path() / "out";
  CHECK(run_eval(opts) == 2);
  json r = json::parse(read_file(tmp.path() / "out" / "results.json"));
  const json& b = r["variants"]["b"]["tasks"]["gsm8k"];
  CHECK(b["n"] == 0);
  CHECK(b["n_errors"] == 3);
  CHECK(b["metrics"]["exact_match,strict-match"]["value"].is_null());
  CHECK_THAT(b["first_error"].get<std::string>(), Catch::Contains("HTTP 500"));
  CHECK(r["variants"]["a"]["tasks"]["gsm8k"]["n"] == 3);
  CHECK(fs::exists(tmp.path() / "out" / "report.md"));
}

TEST_CASE("run_eval: --overwrite discards earlier samples; --limit overrides the config") {
  DataDir tmp("overwrite");
  auto s = make_server(0, "m", nullptr);
  const fs::path cfg = tmp.path() / "run.yaml";
  write_text(cfg, "name: o\ntasks: [gsm8k]\nlimit: 20\nvariants:\n"
                  "  - {name: a, backend: openai, base_url: \"" + s->base_url() + "\", model: m}\n");
  RunOptions opts;
  opts.config = cfg;
  opts.out = tmp.path() / "out";
  opts.limit = 6;
  CHECK(run_eval(opts) == 0);
  CHECK(read_lines(tmp.path() / "out" / "samples" / "a" / "gsm8k.jsonl").size() == 6);
  opts.overwrite = true;
  opts.limit = 4;
  opts.junit = tmp.path() / "junit.xml";
  CHECK(run_eval(opts) == 0);
  CHECK(read_file(tmp.path() / "junit.xml").find("<testsuite") != std::string::npos);
  CHECK(read_lines(tmp.path() / "out" / "samples" / "a" / "gsm8k.jsonl").size() == 4);
  json r = json::parse(read_file(tmp.path() / "out" / "results.json"));
  CHECK(r["variants"]["a"]["tasks"]["gsm8k"]["n"] == 4);
  CHECK(s->total_requests() == 10);
  // The fixture's dataset is not the published GSM8K: results.json says so.
  CHECK(r["datasets"]["gsm8k/test.jsonl"]["published"] == false);
  CHECK(r["datasets"]["gsm8k/test.jsonl"]["sha256"] == sha256_file(datasets_root() / "gsm8k" / "test.jsonl"));
  opts.resume = true;
  CHECK_THROWS_AS(run_eval(opts), Error);  // --resume with --overwrite

  // --resume never reuses an answer to a different question: change doc 2's question and
  // only doc 2 is asked again.
  opts.overwrite = false;
  {
    fs::path test_file = tmp.path() / "data" / "gsm8k" / "test.jsonl";
    std::string text = read_file(test_file);
    const std::string q2 = gsm8k_question(2);
    size_t at = text.find(q2);
    REQUIRE(at != std::string::npos);
    text.replace(at, q2.size(), q2 + " Really?");
    write_text(test_file, text);
  }
  CHECK(run_eval(opts) == 0);
  CHECK(s->total_requests() == 11);
  auto lines = read_lines(tmp.path() / "out" / "samples" / "a" / "gsm8k.jsonl");
  REQUIRE(lines.size() == 5);
  CHECK(lines.back()["doc_id"] == 2);
}

TEST_CASE("run_eval: --resume refuses a changed variant, scores logged answers as the task now says; one variant is gated") {
  DataDir tmp("identity");
  auto s = make_server(0, "m", nullptr);
  // A task file beside the config (found from there, whatever the working directory): the
  // built-in gsm8k under its own name.
  std::string task_yaml;
  for (const auto& [n, t] : builtin_task_yamls())
    if (n == "gsm8k") task_yaml = std::string(t);
  REQUIRE(task_yaml.find("task: gsm8k\n") != std::string::npos);
  task_yaml.replace(task_yaml.find("task: gsm8k\n"), 12, "task: mygsm\n");
  const fs::path dir = tmp.path() / "cfg";
  fs::create_directories(dir);
  write_text(dir / "mygsm.yaml", task_yaml);
  auto config = [&](const std::string& extra) {
    write_text(dir / "run.yaml", "name: i\ntasks: [mygsm.yaml]\nlimit: 12\nvariants:\n"
                                 "  - {name: a, backend: openai, base_url: \"" + s->base_url() + "\", model: m" + extra + "}\n"
                                 "gates:\n  - {task: mygsm, metric: \"exact_match,strict-match\", min_value: 0.9}\n");
  };
  config("");
  RunOptions opts;
  opts.config = dir / "run.yaml";
  opts.out = tmp.path() / "out";
  // The one variant is gated (strict-match is right on docs of category 0, 4, 5: half of them).
  CHECK(run_eval(opts) == 1);
  json r = json::parse(read_file(tmp.path() / "out" / "results.json"));
  REQUIRE(r["gates"].size() == 1);
  CHECK(r["gates"][0]["variant"] == "a");
  CHECK(r["gates"][0]["passed"] == false);
  CHECK(r["variants"]["a"]["tasks"]["mygsm"]["metrics"]["exact_match,strict-match"]["value"] == Approx(0.5));
  CHECK(s->total_requests() == 12);

  // The task's strict-match filter changes: no answer is asked again, every logged one is
  // scored again (now none matches), and the log holds the new scores.
  std::string changed = task_yaml;
  const std::string pat = "pattern: '#### (\\-?[0-9\\.\\,]+)'";
  REQUIRE(changed.find(pat) != std::string::npos);
  changed.replace(changed.find(pat), pat.size(), "pattern: 'NEVER (\\d+)'");
  write_text(dir / "mygsm.yaml", changed);
  opts.resume = true;
  CHECK(run_eval(opts) == 1);
  CHECK(s->total_requests() == 12);
  r = json::parse(read_file(tmp.path() / "out" / "results.json"));
  CHECK(r["variants"]["a"]["tasks"]["mygsm"]["metrics"]["exact_match,strict-match"]["value"] == Approx(0.0));
  CHECK(r["variants"]["a"]["tasks"]["mygsm"]["metrics"]["exact_match,flexible-extract"]["value"] == Approx(0.5));
  auto lines = read_lines(tmp.path() / "out" / "samples" / "a" / "mygsm.jsonl");
  CHECK(lines.back()["scores"]["exact_match,strict-match"] == 0.0);

  // How the variant is reached may change; what answers may not.
  config(", concurrency: 3, timeout_s: 9");
  CHECK(run_eval(opts) == 1);
  config(", extra_body: {top_k: 5}");
  try {
    run_eval(opts);
    FAIL("a changed variant was resumed");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("variant 'a' changed") && Catch::Contains("extra_body: (unset) -> {\"top_k\":5}"));
  }
  CHECK(s->total_requests() == 12);
  // --overwrite starts it again.
  opts.resume = false;
  opts.overwrite = true;
  CHECK(run_eval(opts) == 1);
  CHECK(s->total_requests() == 24);

  // A variant with no answer logged (here: every line an error) may change on --resume: the
  // fix for what failed is often in the variant's config.
  {
    fs::path log = tmp.path() / "out" / "samples" / "a" / "mygsm.jsonl";
    std::string failed;
    for (json line : read_lines(log)) {
      line["error"] = "HTTP 400: bad extra_body";
      line["scores"] = nullptr;
      failed += line.dump() + "\n";
    }
    write_text(log, failed);
  }
  config(", extra_body: {top_k: 5}");
  opts.overwrite = false;
  opts.resume = true;
  CHECK(run_eval(opts) == 1);
  CHECK(s->total_requests() == 36);
  CHECK(json::parse(read_file(tmp.path() / "out" / "samples" / "a" / "variant.json"))["identity"]["extra_body"] ==
        json{{"top_k", 5}});

  // A task file named like a subtask of another task of the run would share its sample file.
  task_yaml.replace(task_yaml.find("task: mygsm\n"), 12, "task: mmlu_anatomy\n");
  write_text(dir / "anat.yaml", task_yaml);
  write_text(dir / "dup.yaml", "name: d\ntasks: [mmlu, anat.yaml]\nvariants:\n"
                               "  - {name: a, backend: openai, base_url: \"" + s->base_url() + "\", model: m}\n");
  RunOptions dup;
  dup.config = dir / "dup.yaml";
  dup.out = tmp.path() / "dup";
  CHECK_THROWS_WITH(run_eval(dup), Catch::Contains("tasks[1]: task 'mmlu_anatomy' has a (sub)task named 'mmlu_anatomy'"));
  CHECK_FALSE(fs::exists(tmp.path() / "dup"));
}
