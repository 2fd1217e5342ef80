// Tests of the openai backend against the loopback FakeOpenAI server: answers, every fault
// kind recovered, retries exhausted, run-ending errors, concurrency, replicas, API key.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <set>

#include "backends/openai.h"
#include "core/error.h"
#include "support/fake_openai.h"

using nlohmann::json;
using namespace qeval;
using qeval::testing::Fault;
using qeval::testing::FakeGen;
using qeval::testing::FakeOpenAI;

namespace {

OpenAIConfig config_for(const std::vector<std::string>& urls, int concurrency = 8) {
  OpenAIConfig c;
  c.model = "fake-model";
  c.base_urls = urls;
  c.concurrency = concurrency;
  c.timeout_s = 5;
  c.max_retries = 5;
  c.backoff_base_s = 0.005;  // keep tests fast; the policy is the same
  c.backoff_max_s = 0.05;
  return c;
}

std::vector<GenRequest> completion_requests(int n, const std::string& tag = "p") {
  std::vector<GenRequest> out(n);
  for (int i = 0; i < n; ++i) out[i].prompt = fmt::format("Question {} {}?\nAnswer:", tag, i);
  return out;
}

// Runs generate and checks every index is delivered exactly once.
std::vector<GenResult> run_generate(Backend& b, const std::vector<GenRequest>& reqs) {
  std::vector<GenResult> out(reqs.size());
  std::vector<int> calls(reqs.size(), 0);
  b.generate(reqs, [&](size_t i, GenResult&& r) {
    ++calls.at(i);
    out[i] = std::move(r);
  });
  for (int c : calls) REQUIRE(c == 1);
  return out;
}

std::vector<LoglikResult> run_loglik(Backend& b, const std::vector<LoglikRequest>& reqs) {
  std::vector<LoglikResult> out(reqs.size());
  std::vector<int> calls(reqs.size(), 0);
  b.loglikelihood(reqs, [&](size_t i, LoglikResult&& r) {
    ++calls.at(i);
    out[i] = std::move(r);
  });
  for (int c : calls) REQUIRE(c == 1);
  return out;
}

// A port on which nothing listens (a server that was just stopped).
int dead_port() {
  FakeOpenAI s;
  return s.port();
}

// MMLU-like docs whose right answer is letter (i % 4); the fake model likes that letter.
std::vector<LoglikRequest> mmlu_requests(int n) {
  std::vector<LoglikRequest> out;
  for (int i = 0; i < n; ++i) {
    out.push_back({fmt::format("Q{}: pick {}. Réponse ü:\nAnswer:", i, "ABCD"[i % 4]),
                   {" A", " B", " C", " D"}});
  }
  return out;
}

FakeOpenAI::Options mmlu_model() {
  FakeOpenAI::Options o;
  o.model.score = [](std::string_view prefix, std::string_view token) {
    // The letter after "pick " in the prompt is the answer.
    size_t p = prefix.find("pick ");
    char want = p == std::string_view::npos ? '?' : prefix[p + 5];
    if (token.size() == 2 && token[0] == ' ' && token[1] >= 'A' && token[1] <= 'D') {
      return qeval::testing::FakeTokenScore{token[1] == want ? -0.25 : -2.0, token[1] == want};
    }
    return qeval::testing::FakeTokenScore{-1.0, true};
  };
  return o;
}

}  // namespace

TEST_CASE("completions and chat answers arrive intact", "[openai][backend]") {
  FakeOpenAI::Options o;
  o.model.chat = [](const json& messages) {
    FakeGen g;
    g.text = "The answer is 4.";
    g.reasoning = "2+2=4";
    g.reasoning_field = messages.size() > 1 ? "reasoning" : "reasoning_content";
    g.finish_reason = "stop";
    return g;
  };
  FakeOpenAI server(o);
  auto backend = make_openai_backend(config_for({server.base_url()}), "test: variants[0]");
  backend->check_ready();

  auto reqs = completion_requests(20);
  GenRequest chat1;
  chat1.chat = true;
  chat1.messages = {{"user", "2+2?"}};
  GenRequest chat2 = chat1;
  chat2.messages.insert(chat2.messages.begin(), {"system", "be brief"});
  reqs.push_back(chat1);
  reqs.push_back(chat2);
  auto res = run_generate(*backend, reqs);
  for (int i = 0; i < 20; ++i) {
    CHECK(res[i].error.empty());
    CHECK(res[i].text == "echo:" + reqs[i].prompt.substr(reqs[i].prompt.size() - 16));
    CHECK(res[i].finish_reason == "stop");
    CHECK(res[i].n_tokens_prompt == 5);  // "Question", " p", " 0?", "\n", "Answer:"
    CHECK(res[i].latency_s > 0);
  }
  for (size_t i : {20, 21}) {
    CHECK(res[i].error.empty());
    CHECK(res[i].text == "The answer is 4.");
    CHECK(res[i].reasoning == "2+2=4");
  }
  BackendInfo info = backend->info();
  CHECK(info.backend == "openai");
  CHECK(info.model == "fake-model");
  CHECK(info.details["base_urls"] == json::array({server.base_url()}));
}

TEST_CASE("loglikelihood gives exact accuracy in every offset mode", "[openai][backend]") {
  auto mode = GENERATE(FakeOpenAI::Offsets::kCodePoints, FakeOpenAI::Offsets::kMinusOne,
                       FakeOpenAI::Offsets::kMissing);
  FakeOpenAI::Options o = mmlu_model();
  o.offsets = mode;
  if (mode == FakeOpenAI::Offsets::kMissing) o.bos = "<|begin_of_text|>";
  FakeOpenAI server(o);
  auto backend = make_openai_backend(config_for({server.base_url()}), "test");
  auto reqs = mmlu_requests(40);
  auto res = run_loglik(*backend, reqs);
  for (size_t i = 0; i < reqs.size(); ++i) {
    REQUIRE(res[i].error.empty());
    REQUIRE(res[i].logprob.size() == 4);
    for (size_t c = 0; c < 4; ++c) {
      const bool right = c == i % 4;
      CHECK(res[i].logprob[c] == (right ? -0.25 : -2.0));
      CHECK(res[i].is_greedy[c] == right);
    }
    CHECK(res[i].n_tokens_prompt > 0);
  }
  CHECK(server.total_requests() == 40);  // one request per doc
}

TEST_CASE("every fault kind is retried and recovered", "[openai][backend]") {
  const Fault fault = GENERATE(Fault::kCloseNoReply, Fault::kCloseMidReply, Fault::kDelay,
                               Fault::k408, Fault::k429, Fault::k500, Fault::k502, Fault::k503,
                               Fault::kGarbage, Fault::kTruncated, Fault::kMissingFields);
  CAPTURE(static_cast<int>(fault));
  FakeOpenAI::Options o = mmlu_model();
  o.fault = FakeOpenAI::fail_first(1, fault);
  o.delay_s = 1.5;
  o.retry_after_s = 1;
  FakeOpenAI server(o);
  OpenAIConfig c = config_for({server.base_url()}, 4);
  c.timeout_s = 1.0;  // generous: the build machine may be loaded
  auto backend = make_openai_backend(c, "test");

  auto t0 = std::chrono::steady_clock::now();
  auto reqs = completion_requests(6);
  auto res = run_generate(*backend, reqs);
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (size_t i = 0; i < reqs.size(); ++i) {
    CHECK(res[i].error.empty());
    CHECK(res[i].text.starts_with("echo:"));
    CHECK(server.requests(reqs[i].prompt) == 2);
    // (a delayed answer is sent after the client gave up, so the server counts it)
    if (fault != Fault::kDelay) CHECK(server.answered(reqs[i].prompt) == 1);
  }
  if (fault == Fault::k429 || fault == Fault::k503) CHECK(elapsed >= 0.95);  // Retry-After: 1

  auto lreqs = mmlu_requests(4);
  auto lres = run_loglik(*backend, lreqs);
  for (size_t i = 0; i < lreqs.size(); ++i) {
    CHECK(lres[i].error.empty());
    CHECK(lres[i].logprob[i % 4] == -0.25);
    const std::string key = lreqs[i].context + lreqs[i].continuations[0];
    CHECK(server.requests(key) == 2);
  }
}

TEST_CASE("no answer is lost or duplicated under random faults", "[openai][backend]") {
  FakeOpenAI::Options o;
  o.fault = FakeOpenAI::fail_rate(0.3,
                                  {Fault::kCloseNoReply, Fault::kCloseMidReply, Fault::k408,
                                   Fault::k429, Fault::k500, Fault::k502, Fault::k503,
                                   Fault::kGarbage, Fault::kTruncated, Fault::kMissingFields},
                                  7);
  o.retry_after_s = 0;
  FakeOpenAI server(o);
  OpenAIConfig c = config_for({server.base_url()}, 16);
  c.max_retries = 12;
  auto backend = make_openai_backend(c, "test");
  auto reqs = completion_requests(300, "rnd");
  auto res = run_generate(*backend, reqs);
  std::set<std::string> texts;
  for (size_t i = 0; i < reqs.size(); ++i) {
    CHECK(res[i].error.empty());
    CHECK(server.answered(reqs[i].prompt) == 1);
    texts.insert(res[i].text);
  }
  CHECK(server.total_answered() == 300);
  CHECK(server.total_requests() > 330);  // faults did happen
}

TEST_CASE("a request that keeps failing records its error", "[openai][backend]") {
  FakeOpenAI::Options o;
  o.fault = [](const std::string& key, int) {
    return key.find(" 1?") != std::string::npos ? Fault::k500 : Fault::kNone;
  };
  FakeOpenAI server(o);
  OpenAIConfig c = config_for({server.base_url()});
  c.max_retries = 3;
  auto backend = make_openai_backend(c, "test");
  auto reqs = completion_requests(3);
  auto res = run_generate(*backend, reqs);
  CHECK(res[0].error.empty());
  CHECK(res[2].error.empty());
  CHECK_THAT(res[1].error, Catch::Contains("HTTP 500") && Catch::Contains("4 attempts"));
  CHECK(res[1].text.empty());
  CHECK(server.requests(reqs[1].prompt) == 4);
}

TEST_CASE("context too long is a per-sample error, not retried", "[openai][backend]") {
  FakeOpenAI::Options o;
  o.fault = FakeOpenAI::fail_first(100, Fault::k400ContextTooLong);
  FakeOpenAI server(o);
  auto backend = make_openai_backend(config_for({server.base_url()}), "test");
  auto reqs = completion_requests(2);
  auto res = run_generate(*backend, reqs);
  CHECK_THAT(res[0].error, Catch::Contains("HTTP 400") && Catch::Contains("maximum context length"));
  CHECK(server.requests(reqs[0].prompt) == 1);
  auto lres = run_loglik(*backend, mmlu_requests(1));
  CHECK_THAT(lres[0].error, Catch::Contains("maximum context length"));
}

TEST_CASE("a server rejecting echo ends the run with a hint", "[openai][backend]") {
  FakeOpenAI::Options o;
  o.fault = FakeOpenAI::fail_first(100, Fault::k400Echo);
  FakeOpenAI server(o);
  auto backend = make_openai_backend(config_for({server.base_url()}), "run.yaml: variants[0]");
  auto reqs = mmlu_requests(8);
  CHECK_THROWS_WITH(run_loglik(*backend, reqs),
                    Catch::Contains("mmlu_generative") && Catch::Contains("run.yaml: variants[0]"));
  // The backend stays usable after the throw.
  server.options().fault = nullptr;
  CHECK(run_loglik(*backend, reqs)[0].error.empty());
}

TEST_CASE("an unreachable server is a run-ending error naming the URL", "[openai][backend]") {
  const std::string url = fmt::format("http://127.0.0.1:{}/v1", dead_port());
  auto backend = make_openai_backend(config_for({url}), "run.yaml: variants[1]");
  CHECK_THROWS_AS(backend->check_ready(), Error);
  CHECK_THROWS_WITH(backend->check_ready(),
                    Catch::Contains(url) && Catch::Contains("run.yaml: variants[1]"));

  // Requests to it fail per sample after the retries (no waiting for it to come back).
  OpenAIConfig c = config_for({url});
  c.max_retries = 2;
  c.outage_wait_s = 0;
  auto b2 = make_openai_backend(c, "test");
  auto res = run_generate(*b2, completion_requests(2));
  CHECK_THAT(res[0].error, Catch::Contains("connection error") && Catch::Contains("3 attempts"));
}

// A server that stops answering for a while (a restart): requests wait for it, one probe at a
// time, without using up their retries, and no sample fails. Past outage_wait_s, attempts
// count again and the samples fail.
TEST_CASE("an outage shorter than outage_wait_s costs no sample", "[openai][backend]") {
  FakeOpenAI::Options o;
  const auto t_back = std::chrono::steady_clock::now() + std::chrono::milliseconds(2500);
  o.down = [t_back] { return std::chrono::steady_clock::now() < t_back; };
  auto while_down = std::make_shared<std::atomic<int>>(0);
  o.fault = [t_back, while_down](const std::string&, int) {
    if (std::chrono::steady_clock::now() >= t_back) return Fault::kNone;
    ++*while_down;
    return Fault::k503;
  };
  FakeOpenAI server(o);
  OpenAIConfig c = config_for({server.base_url()}, 8);
  c.max_retries = 1;  // without the outage rule every sample would fail within the 2.5 s
  c.backoff_max_s = 0.5;
  auto backend = make_openai_backend(c, "test");
  auto res = run_generate(*backend, completion_requests(20));
  for (auto& r : res) CHECK(r.error.empty());
  // While down: the first wave and its retries until the outage is seen, then one probe per 2 s.
  INFO("requests while down: " << while_down->load());
  CHECK(while_down->load() <= 8 * 2 + 3);

  // Down for longer than outage_wait_s: the samples fail after it, not after hours.
  const std::string url = fmt::format("http://127.0.0.1:{}/v1", dead_port());
  OpenAIConfig d = config_for({url}, 4);
  d.max_retries = 1;
  d.outage_wait_s = 1.0;
  d.backoff_max_s = 0.2;
  auto down = make_openai_backend(d, "test");
  const auto t0 = std::chrono::steady_clock::now();
  res = run_generate(*down, completion_requests(6));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (auto& r : res) CHECK_THAT(r.error, Catch::Contains("connection error"));
  CHECK(took >= 1.0);
  CHECK(took < 10.0);

  // A server that is up (GET /models answers) but refuses some requests is no outage: those
  // samples fail after their retries, at once.
  FakeOpenAI::Options p;
  p.fault = [](const std::string& key, int) { return key.find("Question p 3?") != std::string::npos ? Fault::kCloseNoReply : Fault::kNone; };
  FakeOpenAI poison(p);
  OpenAIConfig q = config_for({poison.base_url()}, 4);
  q.max_retries = 3;
  q.backoff_max_s = 0.2;
  auto pb = make_openai_backend(q, "test");
  const auto t1 = std::chrono::steady_clock::now();
  res = run_generate(*pb, completion_requests(6));
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count() < 10.0);
  int failed = 0;
  for (auto& r : res) failed += !r.error.empty();
  CHECK(failed == 1);
}

// A replica down at start-up is benched, not dropped: a run of hours may see it come back.
TEST_CASE("a replica unreachable at start-up is benched while one answers", "[openai][backend]") {
  FakeOpenAI server;
  const std::string dead = fmt::format("http://127.0.0.1:{}/v1", dead_port());
  auto backend = make_openai_backend(config_for({dead, server.base_url()}), "test");
  backend->check_ready();
  auto res = run_generate(*backend, completion_requests(10));
  for (auto& r : res) CHECK(r.error.empty());  // benched for 30 s: no request tried it
  CHECK(server.total_requests() == 10);
  CHECK(backend->info().details["base_urls"] == json::array({dead, server.base_url()}));
}

// A replica that fails every request (HTTP 500, or refused: it died after check_ready) while
// another answers: the failing one is benched and retries go elsewhere, so no sample fails,
// and it gets the first wave and a few probes only.
TEST_CASE("retries avoid a failing replica while a healthy one remains", "[openai][backend]") {
  FakeOpenAI::Options sick;
  sick.fault = [](const std::string&, int) { return Fault::k500; };
  FakeOpenAI bad(sick), good;
  for (bool dead : {false, true}) {
    CAPTURE(dead);
    const std::string bad_url = dead ? fmt::format("http://127.0.0.1:{}/v1", dead_port()) : bad.base_url();
    OpenAIConfig c = config_for({bad_url, good.base_url()}, 8);
    c.max_retries = 2;
    auto backend = make_openai_backend(c, "test");
    const int good_before = good.total_requests();
    auto res = run_generate(*backend, completion_requests(200, dead ? "dead" : "sick"));
    int errors = 0;
    for (auto& r : res) errors += !r.error.empty();
    CHECK(errors == 0);
    CHECK(good.total_requests() - good_before >= 200);
  }
  CHECK(bad.total_requests() <= 24);
}

TEST_CASE("a reply larger than 64 MiB is cut off and recorded, not held in memory", "[openai][backend]") {
  FakeOpenAI::Options o;
  o.model.complete = [](const std::string&) { return FakeGen{std::string(size_t{65} << 20, 'x')}; };
  FakeOpenAI server(o);
  OpenAIConfig c = config_for({server.base_url()});
  c.max_retries = 0;
  c.timeout_s = 120;  // the fake server builds a 65 MiB reply: slow on a loaded machine
  auto backend = make_openai_backend(c, "test");
  auto res = run_generate(*backend, completion_requests(1));
  CHECK_THAT(res[0].error, Catch::Contains("larger than 64 MiB"));
  CHECK(res[0].text.empty());
}

TEST_CASE("timeouts are retried and then recorded", "[openai][backend]") {
  FakeOpenAI::Options o;
  o.fault = FakeOpenAI::fail_first(100, Fault::kDelay);
  o.delay_s = 0.5;
  FakeOpenAI server(o);
  OpenAIConfig c = config_for({server.base_url()});
  c.timeout_s = 0.2;
  c.max_retries = 1;
  auto backend = make_openai_backend(c, "test");
  auto res = run_generate(*backend, completion_requests(1));
  CHECK_THAT(res[0].error, Catch::Contains("timed out") && Catch::Contains("2 attempts"));
}

TEST_CASE("concurrency bounds the requests in flight", "[openai][backend]") {
  const int n = GENERATE(1, 4, 12);
  FakeOpenAI::Options o;
  o.model.complete = [](const std::string& p) {
    std::this_thread::sleep_for(std::chrono::milliseconds(15));
    return FakeGen{"x:" + p};
  };
  FakeOpenAI server(o);
  auto backend = make_openai_backend(config_for({server.base_url()}, n), "test");
  auto reqs = completion_requests(4 * n + 3);
  auto res = run_generate(*backend, reqs);
  for (size_t i = 0; i < reqs.size(); ++i) CHECK(res[i].text == "x:" + reqs[i].prompt);
  CHECK(server.max_in_flight() <= n);
  CHECK(server.max_in_flight() >= std::max(1, n / 2));  // and it is actually used
}

TEST_CASE("load is spread over replicas", "[openai][backend]") {
  FakeOpenAI::Options o;
  o.model.complete = [](const std::string& p) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return FakeGen{"x"};
  };
  FakeOpenAI a(o), b(o);
  auto backend = make_openai_backend(config_for({a.base_url(), b.base_url() + "/"}, 8), "test");
  backend->check_ready();
  auto res = run_generate(*backend, completion_requests(80));
  for (auto& r : res) CHECK(r.error.empty());
  CHECK(a.total_requests() + b.total_requests() == 80);
  CHECK(a.total_requests() >= 20);
  CHECK(b.total_requests() >= 20);
  CHECK(a.max_in_flight() <= 8);
}

TEST_CASE("the model each replica says answered is recorded", "[openai][backend]") {
  FakeOpenAI::Options o = mmlu_model();
  FakeOpenAI a(o);
  o.model_name = "other-model";
  FakeOpenAI b(o);
  auto one = make_openai_backend(config_for({a.base_url()}, 4), "test");
  CHECK_FALSE(one->info().details.contains("served_models"));
  for (auto& r : run_generate(*one, completion_requests(4))) CHECK(r.served_model == "fake-model");
  for (auto& r : run_loglik(*one, mmlu_requests(4))) CHECK(r.served_model == "fake-model");
  CHECK(one->info().details["served_models"] == json{{a.base_url(), {"fake-model"}}});

  auto two = make_openai_backend(config_for({a.base_url(), b.base_url()}, 4), "test");
  for (auto& r : run_loglik(*two, mmlu_requests(40))) CHECK(r.error.empty());
  REQUIRE(a.total_requests() > 8);
  REQUIRE(b.total_requests() > 0);
  CHECK(two->info().details["served_models"] ==
        json{{a.base_url(), {"fake-model"}}, {b.base_url(), {"other-model"}}});
}

TEST_CASE("the API key is sent but never shown", "[openai][backend]") {
  const std::string key = "sk-test-9f8e7d6c5b4a";
  ::setenv("QEVAL_TEST_OPENAI_KEY", key.c_str(), 1);
  FakeOpenAI::Options o;
  o.api_key = key;
  o.fault = [](const std::string& k, int) {
    return k.find(" 0?") != std::string::npos ? Fault::k400ContextTooLong : Fault::kNone;
  };
  FakeOpenAI server(o);
  OpenAIConfig c = config_for({server.base_url()});
  c.api_key_env = "QEVAL_TEST_OPENAI_KEY";
  auto backend = make_openai_backend(c, "test");
  backend->check_ready();
  auto res = run_generate(*backend, completion_requests(2));
  CHECK(server.last_authorization() == "Bearer " + key);
  CHECK(res[1].error.empty());
  CHECK_FALSE(res[0].error.empty());
  CHECK(res[0].error.find(key) == std::string::npos);
  CHECK(json(backend->info().details).dump().find(key) == std::string::npos);

  // A wrong key: check_ready fails naming the variable, not the key.
  const std::string wrong = "sk-wrong-0123456789";
  ::setenv("QEVAL_TEST_OPENAI_KEY", wrong.c_str(), 1);
  auto bad = make_openai_backend(c, "test");
  try {
    bad->check_ready();
    FAIL("check_ready accepted a wrong key");
  } catch (const Error& e) {
    std::string msg = e.what();
    CHECK_THAT(msg, Catch::Contains("401") && Catch::Contains("QEVAL_TEST_OPENAI_KEY"));
    CHECK(msg.find(wrong) == std::string::npos);
  }
  ::unsetenv("QEVAL_TEST_OPENAI_KEY");
}

TEST_CASE("variant config is validated", "[openai][config]") {
  json v = json::parse(R"({"name":"b","backend":"openai","base_url":"http://127.0.0.1:8000/v1/",
      "model":"m2","concurrency":8,"api_key_env":"MY_KEY","timeout_s":120,"max_retries":5})");
  OpenAIConfig c = parse_openai_config(v, "run.yaml: variants[1]");
  CHECK(c.base_urls == std::vector<std::string>{"http://127.0.0.1:8000/v1"});
  CHECK(c.model == "m2");
  CHECK(c.timeout_s == 120);
  CHECK(c.api_key_env == "MY_KEY");
  // Sampling belongs to the task (it sends each request a seed of its own): refused on a variant.
  for (const char* key : {"temperature", "seed"}) {
    json t = v;
    t[key] = 1;
    CHECK_THROWS_WITH(parse_openai_config(t, "run.yaml: variants[1]"), Catch::Contains(key));
  }

  json d = {{"backend", "openai"}, {"model", "m"}, {"base_url", {"http://a/v1", "http://b/v1"}},
            {"extra_body", {{"top_k", 20}}}, {"chat_template_kwargs", {{"enable_thinking", false}}}};
  c = parse_openai_config(d, "w");
  CHECK(c.base_urls.size() == 2);
  CHECK(c.concurrency == 8);
  CHECK(c.timeout_s == 300);
  CHECK(c.max_retries == 5);
  CHECK(c.extra_body["top_k"] == 20);

  auto bad = [&](json j, const std::string& what) {
    CHECK_THROWS_WITH(parse_openai_config(j, "run.yaml: variants[2]"),
                      Catch::Contains(what) && Catch::Contains("run.yaml: variants[2]"));
  };
  json base = {{"backend", "openai"}, {"model", "m"}, {"base_url", "http://x/v1"}};
  json j = base;
  j["concurency"] = 4;
  bad(j, "concurency");
  j = base;
  j.erase("model");
  bad(j, "model");
  j = base;
  j["base_url"] = "localhost:8000";
  bad(j, "base_url");
  j = base;
  j["concurrency"] = 0;
  bad(j, "concurrency");
  j = base;
  j["timeout_s"] = "fast";
  bad(j, "timeout_s");
  j = base;
  j["extra_body"] = "x";
  bad(j, "extra_body");
}
