// Unit tests of the pure OpenAI payload functions (backends/openai_json.h): exact request
// JSON, response decoding, and loglikelihood token selection by code-point offsets.
#include <catch2/catch.hpp>

#include "backends/openai_json.h"

using nlohmann::json;
using namespace qeval;
using namespace qeval::openai;

TEST_CASE("completion body is exact", "[openai][json]") {
  GenRequest q;
  q.prompt = "Question: 1+1?\nAnswer:";
  q.stop = {"Question:", "</s>"};
  q.max_tokens = 256;
  json want = json::parse(R"({"model":"m","prompt":"Question: 1+1?\nAnswer:","max_tokens":256,
      "temperature":0.0,"stop":["Question:","</s>"]})");
  CHECK(completion_body(q, "m") == want);

  q.stop.clear();
  q.top_p = 0.9;
  q.top_k = 20;
  q.seed = 1234;
  q.temperature = 0.6;
  BodyExtras extras;
  extras.extra_body = {{"repetition_penalty", 1.1}, {"temperature", 2.0}};
  extras.chat_template_kwargs = {{"enable_thinking", false}};  // chat only
  want = json::parse(R"({"model":"m","prompt":"Question: 1+1?\nAnswer:","max_tokens":256,
      "temperature":0.6,"top_p":0.9,"top_k":20,"seed":1234,"repetition_penalty":1.1})");
  CHECK(completion_body(q, "m", extras) == want);
}

TEST_CASE("chat body is exact", "[openai][json]") {
  GenRequest q;
  q.chat = true;
  q.messages = {{"system", "Be brief."}, {"user", "2+2? ü"}};
  q.max_tokens = 1024;
  BodyExtras extras;
  extras.chat_template_kwargs = {{"enable_thinking", true}};
  json want = json::parse(R"({"model":"qwen","messages":[{"role":"system","content":"Be brief."},
      {"role":"user","content":"2+2? ü"}],"max_tokens":1024,"temperature":0.0,
      "chat_template_kwargs":{"enable_thinking":true}})");
  CHECK(chat_body(q, "qwen", extras) == want);
}

TEST_CASE("loglikelihood body is exact", "[openai][json]") {
  LoglikRequest q{"Answer:", {" A", " B"}};
  BodyExtras extras;
  extras.extra_body = {{"echo", false}, {"priority", 1}};  // request fields win
  json want = json::parse(R"({"model":"m","prompt":["Answer: A","Answer: B"],"max_tokens":1,
      "temperature":0.0,"echo":true,"logprobs":1,"priority":1})");
  CHECK(loglik_body(q, "m", extras) == want);
}

TEST_CASE("generation responses decode", "[openai][json]") {
  GenResult r;
  REQUIRE_FALSE(parse_gen_response(
      R"({"choices":[{"index":0,"text":" 42\n","finish_reason":"length"}],
          "usage":{"prompt_tokens":17,"completion_tokens":3,"total_tokens":20}})",
      false, r));
  CHECK(r.text == " 42\n");
  CHECK(r.finish_reason == "length");
  CHECK(r.n_tokens_prompt == 17);
  CHECK(r.n_tokens_gen == 3);
  CHECK(r.served_model.empty());
  GenResult m;
  REQUIRE_FALSE(parse_gen_response(R"({"model":"Qwen/Qwen2.5-0.5B","choices":[{"text":"x"}]})", false, m));
  CHECK(m.served_model == "Qwen/Qwen2.5-0.5B");

  GenResult c;
  REQUIRE_FALSE(parse_gen_response(
      R"({"choices":[{"message":{"role":"assistant","content":"\\boxed{4}",
          "reasoning_content":"2+2=4"},"finish_reason":"stop"}]})",
      true, c));
  CHECK(c.text == "\\boxed{4}");
  CHECK(c.reasoning == "2+2=4");
  CHECK(c.finish_reason == "stop");
  CHECK(c.n_tokens_prompt == 0);

  GenResult v;  // vLLM >= 0.11: `reasoning`, content null while still thinking
  REQUIRE_FALSE(parse_gen_response(
      R"({"choices":[{"message":{"content":null,"reasoning":"hmm"},"finish_reason":"length"}]})",
      true, v));
  CHECK(v.text.empty());
  CHECK(v.reasoning == "hmm");
  CHECK(v.finish_reason == "length");

  GenResult bad;
  ParseError e = parse_gen_response("<html>oops</html>", false, bad);
  CHECK(e.retry);
  CHECK_THAT(e.message, Catch::Contains("not valid JSON"));
  CHECK(parse_gen_response(R"({"id":"x"})", false, bad).retry);
  CHECK(parse_gen_response(R"({"id":"x"})", false, bad).message == "response has no choices[0]");
  // HTTP 200 with an error object instead of choices: the server's words are kept.
  ParseError overloaded = parse_gen_response(R"({"object":"error","message":"model overloaded","code":503})", false, bad);
  CHECK(overloaded.retry);
  CHECK(overloaded.message == "response has no choices[0]: the server says: model overloaded");
  CHECK(parse_gen_response(R"({"choices":[{"text":1}]})", false, bad));
  CHECK(parse_gen_response(R"({"choices":[{"text":"x"}]})", true, bad));  // chat wants message
  CHECK(parse_gen_response(R"({"choices":[{"text":"x")", false, bad));    // truncated
}

namespace {

// A logprobs object for tokens with given logprobs; offsets in code points, or `offsets`.
json logprobs_of(const std::vector<std::string>& tokens, const std::vector<double>& lps,
                 const json& offsets) {
  json j = {{"tokens", tokens}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()}};
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i == 0) {
      j["token_logprobs"].push_back(nullptr);
      j["top_logprobs"].push_back(nullptr);
    } else {
      j["token_logprobs"].push_back(lps[i]);
      j["top_logprobs"].push_back({{tokens[i], lps[i]}});
    }
  }
  if (!offsets.is_null()) j["text_offset"] = offsets;
  return j;
}

}  // namespace

TEST_CASE("continuation tokens are chosen by code-point offsets", "[openai][json]") {
  // "Ça coûte 5 €. Answer:" has 21 code points but 25 bytes.
  const std::string context = "Ça coûte 5 €. Answer:";
  const std::string cont = " Ü";
  std::vector<std::string> tokens = {"Ça", " coûte", " 5", " €.", " Answer:", " Ü", " the"};
  std::vector<double> lps = {0, -1.5, -0.5, -2.0, -0.25, -0.75, -3.0};
  ContinuationScore s;

  SECTION("text_offset in code points") {
    json offs = {0, 2, 8, 10, 13, 21, 23};
    REQUIRE_FALSE(score_continuation(logprobs_of(tokens, lps, offs), context, cont, s));
    CHECK(s.logprob == -0.75);
    CHECK(s.is_greedy);
    CHECK(s.n_tokens_cont == 1);
    CHECK(s.n_tokens_prompt == 6);
  }
  SECTION("text_offset -1 (SGLang): cumulative token lengths") {
    json offs = json(std::vector<int>(tokens.size(), -1));
    REQUIRE_FALSE(score_continuation(logprobs_of(tokens, lps, offs), context, cont, s));
    CHECK(s.logprob == -0.75);
    CHECK(s.n_tokens_prompt == 6);
  }
  SECTION("no text_offset, with a BOS token") {
    std::vector<std::string> with_bos = tokens;
    with_bos.insert(with_bos.begin(), "<s>");
    std::vector<double> lps_bos = lps;
    lps_bos.insert(lps_bos.begin(), 0);
    REQUIRE_FALSE(score_continuation(logprobs_of(with_bos, lps_bos, json()), context, cont, s));
    CHECK(s.logprob == -0.75);
  }
  SECTION("byte offsets would pick the wrong tokens: a check that the test can fail") {
    json byte_offs = {0, 3, 10, 12, 17, 25, 28};  // offsets in bytes
    ParseError e = score_continuation(logprobs_of(tokens, lps, byte_offs), context, cont, s);
    CHECK((e || s.logprob != -0.75));
  }
}

TEST_CASE("without text_offset the continuation is matched from the end (SGLang, split characters)", "[openai][json]") {
  // "∃x ⊃ y. Answer:" where the server split ∃ and ⊃ into byte pieces and printed each as U+FFFD
  // (or one latin-1 char per byte): summing token lengths from the start would drift past the
  // continuation and score a context token.
  const std::string context = "\u2203x \u2283 y. Answer:";
  const std::string fffd = "\ufffd";
  for (bool latin1 : {false, true}) {
    INFO("latin1 " << latin1);
    const std::string a = latin1 ? "\u00e2\u0088" : fffd, b = latin1 ? "\u0083" : fffd;
    std::vector<std::string> tokens = {a, b, "x", " ", a, b, " y", ".", " Answer", ":", " B", " the"};
    std::vector<double> lps = {0, -9, -1, -1, -9, -9, -1, -1, -1, -2, -0.75, -3};
    ContinuationScore s;
    REQUIRE_FALSE(score_continuation(logprobs_of(tokens, lps, json(std::vector<int>(tokens.size(), -1))), context,
                                     " B", s));
    CHECK(s.logprob == -0.75);
    CHECK(s.n_tokens_cont == 1);
    CHECK(s.n_tokens_prompt == 11);
    CHECK(s.is_greedy);
    // A server that generated nothing: the last token is the continuation's.
    tokens.pop_back();
    lps.pop_back();
    REQUIRE_FALSE(score_continuation(logprobs_of(tokens, lps, json()), context, " B", s));
    CHECK(s.logprob == -0.75);
    CHECK(s.n_tokens_prompt == 11);
  }
  // The continuation merged into a context token: an error, not a score of the wrong token.
  json merged = {{"tokens", {"Answer", ":B", " the"}}, {"token_logprobs", {nullptr, -1.0, -1.0}}};
  ContinuationScore s;
  ParseError e = score_continuation(merged, "Answer:", "B", s);
  CHECK(e);
  CHECK_FALSE(e.retry);
  // An empty continuation, and one the context also ends with when no token was generated
  // (it could be the context's last token): errors, not guesses.
  json twice = {{"tokens", {"Answer:", " B", " B"}}, {"token_logprobs", {nullptr, -1.0, -2.0}}};
  CHECK(score_continuation(twice, "Answer:", "", s));
  REQUIRE_FALSE(score_continuation(twice, "Answer:", " B", s));  // one generated " B"
  CHECK(s.logprob == -1.0);
  // The server generated nothing and the context ends with " B": the last " B" but one is the
  // context's, yet dropping the last token as generated would score it.
  CHECK(score_continuation(twice, "Answer: B", " B", s));
}

TEST_CASE("multi-token continuations sum and is_greedy needs every token", "[openai][json]") {
  json lp = {{"tokens", {"Answer", ":", " the", " end", "!"}},
             {"token_logprobs", {nullptr, -0.5, -1.0, -2.0, -4.0}},
             {"top_logprobs",
              {nullptr, {{":", -0.5}}, {{" the", -1.0}}, {{" a", -0.1}, {" end", -2.0}}, {{"!", -4.0}}}},
             {"text_offset", {0, 6, 7, 11, 15}}};
  ContinuationScore s;
  REQUIRE_FALSE(score_continuation(lp, "Answer:", " the end", s));
  CHECK(s.logprob == -3.0);
  CHECK(s.n_tokens_cont == 2);
  CHECK_FALSE(s.is_greedy);  // " end" was not the top token

  REQUIRE_FALSE(score_continuation(lp, "Answer:", " the", s));
  CHECK(s.logprob == -1.0);
  CHECK(s.is_greedy);

  lp.erase("top_logprobs");
  REQUIRE_FALSE(score_continuation(lp, "Answer:", " the", s));
  CHECK_FALSE(s.is_greedy);  // unknown without top_logprobs

  // The continuation merged into a context token: no token starts inside it.
  json merged = {{"tokens", {"Answer", ":A", "!"}},
                 {"token_logprobs", {nullptr, -1.0, -1.0}},
                 {"text_offset", {0, 6, 8}}};
  ParseError e = score_continuation(merged, "Answer:", "A", s);
  CHECK(e);
  CHECK_FALSE(e.retry);
}

TEST_CASE("loglikelihood responses decode by choice index", "[openai][json]") {
  LoglikRequest q{"Answer:", {" A", " B"}};
  json a = {{"tokens", {"Answer:", " A", " the"}},
            {"token_logprobs", {nullptr, -1.25, -1.0}},
            {"top_logprobs", {nullptr, {{" A", -1.25}}, {{" the", -1.0}}}},
            {"text_offset", {0, 7, 9}}};
  json b = {{"tokens", {"Answer:", " B", " the"}},
            {"token_logprobs", {nullptr, -0.5, -1.0}},
            {"top_logprobs", {nullptr, {{" C", -0.1}, {" B", -0.5}}, {{" the", -1.0}}}},
            {"text_offset", {0, 7, 9}}};
  json body = {{"choices", {{{"index", 1}, {"logprobs", b}}, {{"index", 0}, {"logprobs", a}}}}};
  LoglikResult r;
  REQUIRE_FALSE(parse_loglik_response(body.dump(), q, r));
  CHECK(r.logprob == std::vector<double>{-1.25, -0.5});
  CHECK(r.is_greedy == std::vector<bool>{true, false});
  CHECK(r.n_tokens_prompt == 4);

  // The reply's top-level `model` is kept, by the fast scanner and by the DOM path (an
  // `index` of 1.0 sends it there); a top_logprobs key "model" is not it.
  a["top_logprobs"][2] = {{"model", -3.0}, {" the", -1.0}};
  json named = {{"choices", {{{"index", 0}, {"logprobs", a}}, {{"index", 1}, {"logprobs", b}}}},
                {"model", "served-x"}};
  LoglikResult fast;
  REQUIRE_FALSE(parse_loglik_response(named.dump(), q, fast));
  CHECK(fast.served_model == "served-x");
  CHECK(fast.logprob == r.logprob);
  named["choices"][0]["index"] = 0.0;
  named["choices"][1]["index"] = 1.0;
  LoglikResult dom;
  REQUIRE_FALSE(parse_loglik_response(named.dump(), q, dom));
  CHECK(dom.served_model == "served-x");
  CHECK(dom.logprob == r.logprob);
  CHECK(r.served_model.empty());

  json missing = {{"choices", {{{"index", 0}, {"logprobs", a}}}}};
  ParseError e = parse_loglik_response(missing.dump(), q, r);
  CHECK(e.retry);
  CHECK_THAT(e.message, Catch::Contains("continuation 1"));
}

TEST_CASE("error messages are read from the usual places", "[openai][json]") {
  CHECK(error_message(R"({"error":{"message":"bad echo","type":"invalid"}})") == "bad echo");
  CHECK(error_message(R"({"object":"error","message":"too long","code":400})") == "too long");
  CHECK(error_message(R"({"detail":"Not Found"})") == "Not Found");
  CHECK(error_message("plain text") == "plain text");
  CHECK(error_message(std::string(1000, 'x')).size() == 300);
}
