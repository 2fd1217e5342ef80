// The loglikelihood response fast path (openai_json.cpp reads echoed logprobs straight from
// the text, for harness throughput) must agree with the json DOM path (score_continuation on
// the parsed choice) on random well-formed responses, and must never accept a body the DOM
// parser rejects (every truncation of a valid body is an error).
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <random>

#include "backends/openai_json.h"

using namespace qeval;
using namespace qeval::openai;
using nlohmann::json;

namespace {

// A random token: ASCII words, spaces, newlines, quotes, backslashes, control characters
// (escaped by dump) and multi-byte UTF-8 (2, 3 and 4 bytes).
std::string random_token(std::mt19937& rng) {
  static const std::vector<std::string> parts = {"a", "Answer", ":", " ", "\n", "\"", "\\", "\t", "\x01",
                                                 "é", "€", "😀", "/", "x", "0", " A", " B"};
  std::string t;
  int k = 1 + static_cast<int>(rng() % 3);
  for (int i = 0; i < k; ++i) t += parts[rng() % parts.size()];
  return t;
}

struct Case {
  LoglikRequest req;
  json body;
};

Case random_case(std::mt19937& rng) {
  Case c;
  const int n_tok = 2 + static_cast<int>(rng() % 12);
  std::vector<std::string> toks;
  for (int i = 0; i < n_tok; ++i) toks.push_back(random_token(rng));
  // Context = all but the last 1-2 tokens; each continuation = the rest (same for all).
  const int n_cont = 1 + static_cast<int>(rng() % std::min(2, n_tok - 1));
  std::string ctx, cont;
  for (int i = 0; i < n_tok; ++i) (i < n_tok - n_cont ? ctx : cont) += toks[i];
  c.req.context = ctx;
  const int n_choices = 1 + static_cast<int>(rng() % 4);
  json choices = json::array();
  std::vector<int> order(n_choices);
  for (int i = 0; i < n_choices; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  for (int ci = 0; ci < n_choices; ++ci) {
    c.req.continuations.push_back(cont);
    json lp;
    json tokens = json::array(), lps = json::array(), tops = json::array(), offs = json::array();
    size_t cp = 0;
    const bool bos = rng() % 4 == 0;
    if (bos) {
      tokens.push_back("<s>");
      lps.push_back(nullptr);
      tops.push_back(nullptr);
      offs.push_back(0);
    }
    for (int i = 0; i < n_tok; ++i) {
      tokens.push_back(toks[i]);
      offs.push_back(cp);
      for (unsigned char ch : toks[i]) cp += (ch & 0xC0) != 0x80;
      if (i == 0 && !bos) {
        lps.push_back(nullptr);
        tops.push_back(nullptr);
        continue;
      }
      // Integers and decimals, with ties in the top lists.
      double v = rng() % 5 == 0 ? -static_cast<double>(rng() % 3) : -static_cast<double>(rng() % 1000) / 64.0;
      lps.push_back(v);
      json top = json::object();
      switch (rng() % 5) {
        case 0: top[toks[i]] = v; break;
        case 1: top["<alt>"] = v + 0.5; top[toks[i]] = v; break;
        case 2: top["<alt>"] = v; top[toks[i]] = v; break;          // tie
        case 3: top["zz"] = v; top["aa"] = v + 1e-12; break;        // near tie
        default: top = json::object(); break;                       // empty: not greedy
      }
      tops.push_back(top);
    }
    tokens.push_back(" the");
    lps.push_back(-1);
    tops.push_back({{" the", -1}});
    offs.push_back(cp);
    lp["tokens"] = tokens;
    lp["token_logprobs"] = lps;
    switch (rng() % 4) {
      case 0: break;                                                     // no text_offset
      case 1: lp["text_offset"] = json::array(); for (size_t i = 0; i < tokens.size(); ++i) lp["text_offset"].push_back(-1); break;
      default: lp["text_offset"] = offs; break;
    }
    if (rng() % 5) lp["top_logprobs"] = tops;
    json choice = {{"text", ctx + cont + " the"}, {"logprobs", lp}, {"finish_reason", "length"}};
    if (rng() % 4) choice["index"] = order[ci];
    choices.push_back(choice);
  }
  // Without indices, choices are matched by position.
  bool all_indexed = true;
  for (const auto& ch : choices) all_indexed &= ch.contains("index");
  if (!all_indexed)
    for (size_t i = 0; i < choices.size(); ++i) choices[i].erase("index");
  c.body = {{"id", "x"}, {"object", "text_completion"}, {"choices", choices},
            {"usage", {{"prompt_tokens", 3}, {"completion_tokens", 1}}}};
  return c;
}

// The DOM path, by hand: each choice's logprobs through score_continuation.
ParseError dom_result(const Case& c, LoglikResult& out) {
  const size_t n = c.req.continuations.size();
  std::vector<const json*> by_index(n, nullptr);
  size_t pos = 0;
  for (const json& ch : c.body["choices"]) {
    size_t idx = pos++;
    if (ch.contains("index")) idx = ch["index"].get<size_t>();
    if (idx < n) by_index[idx] = &ch;
  }
  out.logprob.assign(n, 0);
  out.is_greedy.assign(n, false);
  for (size_t i = 0; i < n; ++i) {
    ContinuationScore s;
    if (ParseError e = score_continuation((*by_index[i])["logprobs"], c.req.context, c.req.continuations[i], s)) {
      e.message = fmt::format("continuation {}: {}", i, e.message);  // as parse_loglik_response names it
      return e;
    }
    out.logprob[i] = s.logprob;
    out.is_greedy[i] = s.is_greedy;
    out.n_tokens_prompt += s.n_tokens_prompt;
  }
  return {};
}

}  // namespace

TEST_CASE("loglik fast path agrees with the DOM path on random responses") {
  std::mt19937 rng(1234);
  int n_ok = 0, n_err = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    Case c = random_case(rng);
    // Both compact and pretty-printed bodies (whitespace everywhere).
    const std::string text = iter % 3 == 0 ? c.body.dump(1) : c.body.dump();
    LoglikResult fast, dom;
    ParseError ef = parse_loglik_response(text, c.req, fast);
    ParseError ed = dom_result(c, dom);
    INFO(text);
    REQUIRE(ef.message == ed.message);
    if (ef) {
      ++n_err;
      continue;
    }
    ++n_ok;
    REQUIRE(fast.logprob == dom.logprob);
    REQUIRE(fast.is_greedy == dom.is_greedy);
    REQUIRE(fast.n_tokens_prompt == dom.n_tokens_prompt);
  }
  CHECK(n_ok > 1000);
}

TEST_CASE("loglik fast path: every truncation of a valid body is an error, never a result") {
  std::mt19937 rng(99);
  for (int iter = 0; iter < 40; ++iter) {
    Case c = random_case(rng);
    LoglikResult full;
    const std::string text = c.body.dump();
    if (parse_loglik_response(text, c.req, full)) continue;
    for (size_t k = 0; k < text.size(); k += 1 + k / 50) {
      LoglikResult r;
      INFO(text.substr(0, k));
      CHECK(parse_loglik_response(std::string_view(text).substr(0, k), c.req, r));
    }
  }
}

TEST_CASE("loglik fast path: invalid UTF-8 and bad escapes are rejected as json::parse does") {
  LoglikRequest req{"Answer:", {" A"}};
  auto body = [](const std::string& tok) {
    return R"({"choices":[{"index":0,"logprobs":{"tokens":[")" + tok +
           R"(", " A"," the"],"token_logprobs":[null,-0.5,-1],"top_logprobs":[null,{" A":-0.5},{" the":-1}],"text_offset":[0,7,9]}}]})";
  };
  LoglikResult r;
  REQUIRE_FALSE(parse_loglik_response(body("Answer:"), req, r));
  CHECK(r.logprob[0] == -0.5);
  CHECK(r.is_greedy[0]);
  for (std::string bad : {std::string("Ans\xC0\x80wer:"), std::string("Ans\xED\xA0\x80wer:"), std::string("Ans\\qwer:"),
                          std::string("Ans\\uD800wer:"), std::string("Ans\twer:"), std::string("Ans\xF4\x90\x80\x80r:")}) {
    INFO(bad);
    bool dom_ok = !json::parse(body(bad), nullptr, false).is_discarded();
    CHECK_FALSE(dom_ok);
    CHECK(parse_loglik_response(body(bad), req, r));
  }
}
