// Pure encoding and decoding of OpenAI-compatible request and response bodies
// (/v1/completions, /v1/chat/completions, loglikelihood via echo + logprobs). No network:
// the HTTP client in openai.cpp only moves the bytes these functions produce and read.
// Every function here is thread-safe (no shared state).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/backend.h"

namespace qeval::openai {

// Fields the variant adds to every request body. `extra_body` (a JSON object or null) is
// merged first, so the request's own fields win over it; `chat_template_kwargs` (object or
// null) goes only into chat requests.
struct BodyExtras {
  nlohmann::json extra_body;
  nlohmann::json chat_template_kwargs;
};

// Body for POST /completions: model, prompt, max_tokens, temperature always; top_p only when
// != 1, top_k only when > 0, stop only when non-empty, seed only when set.
nlohmann::json completion_body(const GenRequest& req, const std::string& model,
                               const BodyExtras& extras = {});

// Body for POST /chat/completions: as completion_body with `messages` instead of `prompt`,
// plus chat_template_kwargs when given.
nlohmann::json chat_body(const GenRequest& req, const std::string& model,
                         const BodyExtras& extras = {});

// Body for the loglikelihood request of one doc: POST /completions with
// prompt = [context + continuation_i ...], echo: true, logprobs: 1, max_tokens: 1 (SGLang
// refuses 0), temperature: 0. Choice i of the answer belongs to continuation i.
nlohmann::json loglik_body(const LoglikRequest& req, const std::string& model,
                           const BodyExtras& extras = {});

// Why a response body could not be used. `retry` is true when asking again may help
// (garbage, truncated JSON, missing fields); false when the answer is well-formed but
// unusable for a deterministic reason (e.g. no token starts inside the continuation).
struct ParseError {
  std::string message;  // empty = no error
  bool retry = true;
  explicit operator bool() const { return !message.empty(); }
};

// Fills out.text, out.reasoning, out.finish_reason, out.n_tokens_prompt, out.n_tokens_gen
// from a /completions (chat = false) or /chat/completions (chat = true) response body. Chat
// reasoning is read from `reasoning_content` (SGLang, older vLLM) or `reasoning` (vLLM >=
// 0.11); a null content is read as "". Returns an error when the body is not JSON or lacks
// choices[0].text / choices[0].message.
ParseError parse_gen_response(std::string_view body, bool chat, GenResult& out);

// Log-likelihood of one continuation read from one choice's `logprobs` object
// {tokens, token_logprobs, top_logprobs, text_offset}.
struct ContinuationScore {
  double logprob = 0.0;   // sum over the continuation's tokens
  bool is_greedy = false; // every continuation token was the top-1 token (false when the
                          // server sent no top_logprobs)
  int n_tokens_prompt = 0;  // tokens that start before the end of the prompt
  int n_tokens_cont = 0;    // tokens summed into logprob
};

// Scores the continuation from `logprobs` of an echoed prompt context + continuation.
// With `text_offset` (OpenAI, vLLM: code points from the start of the prompt), token i belongs
// to the continuation when its offset is >= utf8_length(context) and < utf8_length(context +
// continuation); the generated token, at or after the end of the prompt, is dropped. Without
// usable offsets (missing, null, or negative: SGLang sends -1) the continuation is matched from
// the end: the last token is the generated one (max_tokens 1), or none was generated, and the
// tokens before it must spell the continuation exactly; summing token lengths from the start
// would drift wherever the server prints a split character as U+FFFD or per byte. An empty
// continuation, or one that is ambiguous (no generated token, and the context ends with the
// continuation's text), is an error.
ParseError score_continuation(const nlohmann::json& logprobs, std::string_view context,
                              std::string_view continuation, ContinuationScore& out);

// Fills out.logprob, out.is_greedy and out.n_tokens_prompt (summed over continuations) from
// a loglikelihood response body to loglik_body(req). Choices are matched by their `index`
// (or their position when it is absent); every continuation must have its choice.
ParseError parse_loglik_response(std::string_view body, const LoglikRequest& req,
                                 LoglikResult& out);

// The human-readable message in an error response body: error.message, message, detail,
// or else the body itself (cut to 300 bytes).
std::string error_message(std::string_view body);

}  // namespace qeval::openai
