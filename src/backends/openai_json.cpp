// Encoding of OpenAI-compatible request bodies and decoding of their responses (see
// openai_json.h for the contracts).
#include "backends/openai_json.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/text.h"

namespace qeval::openai {

using nlohmann::json;

namespace {

// Starts a body from extra_body so that the request's own fields, set afterwards, win.
json base_body(const BodyExtras& extras) {
  if (extras.extra_body.is_object()) return extras.extra_body;
  return json::object();
}

void add_sampling(json& body, const GenRequest& req) {
  body["max_tokens"] = req.max_tokens;
  body["temperature"] = req.temperature;
  if (req.top_p != 1.0) body["top_p"] = req.top_p;
  if (req.top_k > 0) body["top_k"] = req.top_k;
  if (!req.stop.empty()) body["stop"] = req.stop;
  if (req.seed) body["seed"] = *req.seed;
}

// Parses `body`; on failure returns a ParseError with a short quote of the body.
ParseError parse_json(std::string_view body, json& out) {
  out = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (out.is_discarded()) {
    return {fmt::format("response is not valid JSON: '{}'",
                        body.substr(0, utf8_valid_prefix(body.substr(0, 120))))};
  }
  if (!out.is_object()) return {"response is not a JSON object"};
  return {};
}

const json* first_choice(const json& j) {
  auto it = j.find("choices");
  if (it == j.end() || !it->is_array() || it->empty() || !(*it)[0].is_object()) return nullptr;
  return &(*it)[0];
}

std::string string_or_empty(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

void read_usage(const json& j, int& n_prompt, int* n_gen) {
  auto it = j.find("usage");
  if (it == j.end() || !it->is_object()) return;
  auto p = it->find("prompt_tokens");
  if (p != it->end() && p->is_number_integer()) n_prompt = p->get<int>();
  auto c = it->find("completion_tokens");
  if (n_gen && c != it->end() && c->is_number_integer()) *n_gen = c->get<int>();
}

}  // namespace

json completion_body(const GenRequest& req, const std::string& model, const BodyExtras& extras) {
  json body = base_body(extras);
  body["model"] = model;
  body["prompt"] = req.prompt;
  add_sampling(body, req);
  return body;
}

json chat_body(const GenRequest& req, const std::string& model, const BodyExtras& extras) {
  json body = base_body(extras);
  body["model"] = model;
  json messages = json::array();
  for (const ChatMessage& m : req.messages) {
    messages.push_back({{"role", m.role}, {"content", m.content}});
  }
  body["messages"] = std::move(messages);
  add_sampling(body, req);
  if (extras.chat_template_kwargs.is_object()) {
    body["chat_template_kwargs"] = extras.chat_template_kwargs;
  }
  return body;
}

json loglik_body(const LoglikRequest& req, const std::string& model, const BodyExtras& extras) {
  json body = base_body(extras);
  body["model"] = model;
  json prompts = json::array();
  for (const std::string& c : req.continuations) prompts.push_back(req.context + c);
  body["prompt"] = std::move(prompts);
  body["max_tokens"] = 1;
  body["temperature"] = 0.0;
  body["echo"] = true;
  body["logprobs"] = 1;
  return body;
}

ParseError parse_gen_response(std::string_view body, bool chat, GenResult& out) {
  json j;
  if (ParseError e = parse_json(body, j)) return e;
  const json* choice = first_choice(j);
  if (!choice) return {"response has no choices[0]"};
  if (chat) {
    auto msg = choice->find("message");
    if (msg == choice->end() || !msg->is_object()) return {"response has no choices[0].message"};
    auto content = msg->find("content");
    if (content != msg->end() && !content->is_string() && !content->is_null()) {
      return {"choices[0].message.content is not a string"};
    }
    out.text = string_or_empty(*msg, "content");
    out.reasoning = string_or_empty(*msg, "reasoning_content");
    if (out.reasoning.empty()) out.reasoning = string_or_empty(*msg, "reasoning");
  } else {
    auto text = choice->find("text");
    if (text == choice->end() || !text->is_string()) return {"response has no choices[0].text"};
    out.text = text->get<std::string>();
  }
  out.finish_reason = string_or_empty(*choice, "finish_reason");
  read_usage(j, out.n_tokens_prompt, &out.n_tokens_gen);
  return {};
}

ParseError score_continuation(const json& logprobs, std::string_view context,
                              std::string_view continuation, ContinuationScore& out) {
  if (!logprobs.is_object()) return {"choice has no logprobs object"};
  auto tokens_it = logprobs.find("tokens");
  auto lps_it = logprobs.find("token_logprobs");
  if (tokens_it == logprobs.end() || !tokens_it->is_array() || lps_it == logprobs.end() ||
      !lps_it->is_array()) {
    return {"logprobs lacks tokens or token_logprobs"};
  }
  const json& tokens = *tokens_it;
  const json& lps = *lps_it;
  const size_t n = tokens.size();
  if (lps.size() != n) return {"logprobs.tokens and token_logprobs differ in length"};
  for (const json& t : tokens) {
    if (!t.is_string()) return {"logprobs.tokens holds a non-string"};
  }

  // Offsets in code points from the start of the prompt.
  std::vector<int64_t> offsets(n, 0);
  bool have_offsets = false;
  auto off_it = logprobs.find("text_offset");
  if (off_it != logprobs.end() && off_it->is_array() && off_it->size() == n) {
    have_offsets = true;
    for (size_t i = 0; i < n; ++i) {
      const json& o = (*off_it)[i];
      if (!o.is_number_integer() || o.get<int64_t>() < 0) {
        have_offsets = false;
        break;
      }
      offsets[i] = o.get<int64_t>();
    }
  }
  if (!have_offsets) {
    std::string prompt = std::string(context) + std::string(continuation);
    std::string_view rest = prompt;
    int64_t pos = 0;
    bool leading = true;
    for (size_t i = 0; i < n; ++i) {
      const std::string& t = tokens[i].get_ref<const std::string&>();
      offsets[i] = pos;
      if (leading && !t.empty() && !starts_with(rest, t)) continue;  // BOS-like token
      leading = false;
      pos += static_cast<int64_t>(utf8_length(t));
    }
  }

  const int64_t ctx_end = static_cast<int64_t>(utf8_length(context));
  const int64_t prompt_end = ctx_end + static_cast<int64_t>(utf8_length(continuation));
  auto top_it = logprobs.find("top_logprobs");
  const json* tops = (top_it != logprobs.end() && top_it->is_array() && top_it->size() == n)
                         ? &*top_it
                         : nullptr;
  out = ContinuationScore{};
  out.is_greedy = tops != nullptr;
  for (size_t i = 0; i < n; ++i) {
    if (offsets[i] >= prompt_end) continue;
    ++out.n_tokens_prompt;
    if (offsets[i] < ctx_end) continue;
    if (!lps[i].is_number()) return {fmt::format("token_logprobs[{}] is not a number", i)};
    const double lp = lps[i].get<double>();
    out.logprob += lp;
    ++out.n_tokens_cont;
    if (!tops) continue;
    const json& top = (*tops)[i];
    if (!top.is_object() || top.empty()) {
      out.is_greedy = false;
      continue;
    }
    // Greedy: the token is the argmax of the top list, or ties with it.
    double best = -1e300;
    std::string best_token;
    for (auto it = top.begin(); it != top.end(); ++it) {
      if (it.value().is_number() && it.value().get<double>() > best) {
        best = it.value().get<double>();
        best_token = it.key();
      }
    }
    const std::string& tok = tokens[i].get_ref<const std::string&>();
    if (!(best_token == tok || lp >= best - 1e-9)) out.is_greedy = false;
  }
  if (out.n_tokens_cont == 0) {
    return {fmt::format("no token starts inside the continuation (code points {}..{} of the "
                        "prompt); the tokenizer merged it with the context",
                        ctx_end, prompt_end),
            false};
  }
  return {};
}

ParseError parse_loglik_response(std::string_view body, const LoglikRequest& req,
                                 LoglikResult& out) {
  json j;
  if (ParseError e = parse_json(body, j)) return e;
  auto choices_it = j.find("choices");
  if (choices_it == j.end() || !choices_it->is_array()) return {"response has no choices"};
  const size_t n = req.continuations.size();
  std::vector<const json*> by_index(n, nullptr);
  size_t pos = 0;
  for (const json& c : *choices_it) {
    size_t idx = pos++;
    if (!c.is_object()) return {"choices holds a non-object"};
    auto it = c.find("index");
    if (it != c.end() && it->is_number_unsigned()) idx = it->get<size_t>();
    if (idx < n) by_index[idx] = &c;
  }
  out.logprob.assign(n, 0.0);
  out.is_greedy.assign(n, false);
  out.n_tokens_prompt = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!by_index[i]) return {fmt::format("response has no choice for continuation {}", i)};
    auto lp = by_index[i]->find("logprobs");
    if (lp == by_index[i]->end()) return {fmt::format("choices[{}] has no logprobs", i)};
    ContinuationScore s;
    if (ParseError e = score_continuation(*lp, req.context, req.continuations[i], s)) {
      e.message = fmt::format("continuation {}: {}", i, e.message);
      return e;
    }
    out.logprob[i] = s.logprob;
    out.is_greedy[i] = s.is_greedy;
    out.n_tokens_prompt += s.n_tokens_prompt;
  }
  return {};
}

std::string error_message(std::string_view body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_object()) {
    auto err = j.find("error");
    if (err != j.end()) {
      if (err->is_string()) return err->get<std::string>();
      if (err->is_object() && err->contains("message") && (*err)["message"].is_string()) {
        return (*err)["message"].get<std::string>();
      }
    }
    for (const char* key : {"message", "detail"}) {
      auto it = j.find(key);
      if (it != j.end() && it->is_string()) return it->get<std::string>();
      if (it != j.end() && !it->is_null()) return it->dump();
    }
  }
  std::string_view cut = body.substr(0, 300);
  return std::string(cut.substr(0, utf8_valid_prefix(cut)));
}

}  // namespace qeval::openai
