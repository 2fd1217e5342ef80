// Encoding of OpenAI-compatible request bodies and decoding of their responses (see
// openai_json.h for the contracts).
#include "backends/openai_json.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstdint>

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

namespace {

// ": the server says ..." for a reply that carries an error message instead of choices (some
// servers answer HTTP 200 with {"object": "error", "message": ...}), else "".
std::string server_says(const json& j) {
  if (!j.is_object() || (!j.contains("error") && !j.contains("message") && !j.contains("detail"))) return "";
  return ": the server says: " + error_message(j.dump());
}

}  // namespace

ParseError parse_gen_response(std::string_view body, bool chat, GenResult& out) {
  json j;
  if (ParseError e = parse_json(body, j)) return e;
  const json* choice = first_choice(j);
  if (!choice) return {"response has no choices[0]" + server_says(j)};
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
  out.served_model = string_or_empty(j, "model");
  read_usage(j, out.n_tokens_prompt, &out.n_tokens_gen);
  return {};
}

namespace {

// One choice's echoed-prompt logprobs in a flat form, filled either from a parsed json
// (score_continuation) or straight from the response text (the loglikelihood fast path).
struct EchoLogprobs {
  std::vector<std::string> tokens;
  std::vector<double> lps;
  std::vector<char> lp_is_number;
  std::vector<int64_t> offsets;
  bool offsets_valid = false;       // text_offset: an array of n non-negative integers
  bool tops_valid = false;          // top_logprobs: an array of n entries
  std::vector<char> top_ok;         // entry i is a non-empty object
  std::vector<std::string> top_best_token;
  std::vector<double> top_best;     // -1e300 when the object holds no number
  void clear() {
    tokens.clear();
    lps.clear();
    lp_is_number.clear();
    offsets.clear();
    top_ok.clear();
    top_best_token.clear();
    top_best.clear();
    offsets_valid = tops_valid = false;
  }
};

// Best (token, logprob) of one top_logprobs object: the highest number; among equal
// numbers the smallest key (the first in the sorted order of a json object).
void offer_top(const std::string& key, double v, std::string& best_token, double& best) {
  if (v > best || (v == best && key < best_token)) {
    best = v;
    best_token = key;
  }
}

ParseError echo_from_json(const json& logprobs, EchoLogprobs& e) {
  e.clear();
  if (!logprobs.is_object()) return {"choice has no logprobs object"};
  auto tokens_it = logprobs.find("tokens");
  auto lps_it = logprobs.find("token_logprobs");
  if (tokens_it == logprobs.end() || !tokens_it->is_array() || lps_it == logprobs.end() ||
      !lps_it->is_array()) {
    return {"logprobs lacks tokens or token_logprobs"};
  }
  const size_t n = tokens_it->size();
  if (lps_it->size() != n) return {"logprobs.tokens and token_logprobs differ in length"};
  for (const json& t : *tokens_it) {
    if (!t.is_string()) return {"logprobs.tokens holds a non-string"};
    e.tokens.push_back(t.get<std::string>());
  }
  for (const json& l : *lps_it) {
    e.lp_is_number.push_back(l.is_number());
    e.lps.push_back(l.is_number() ? l.get<double>() : 0.0);
  }
  auto off_it = logprobs.find("text_offset");
  if (off_it != logprobs.end() && off_it->is_array() && off_it->size() == n) {
    e.offsets_valid = true;
    for (const json& o : *off_it) {
      if (!o.is_number_integer() || o.get<int64_t>() < 0) {
        e.offsets_valid = false;
        break;
      }
      e.offsets.push_back(o.get<int64_t>());
    }
  }
  auto top_it = logprobs.find("top_logprobs");
  if (top_it != logprobs.end() && top_it->is_array() && top_it->size() == n) {
    e.tops_valid = true;
    for (const json& top : *top_it) {
      std::string best_token;
      double best = -1e300;
      const bool ok = top.is_object() && !top.empty();
      if (ok) {
        for (auto it = top.begin(); it != top.end(); ++it) {
          if (it.value().is_number()) offer_top(it.key(), it.value().get<double>(), best_token, best);
        }
      }
      e.top_ok.push_back(ok);
      e.top_best_token.push_back(std::move(best_token));
      e.top_best.push_back(best);
    }
  }
  return {};
}

ParseError score_echo(const EchoLogprobs& e, std::string_view context, std::string_view continuation,
                      ContinuationScore& out) {
  const size_t n = e.tokens.size();
  const bool tops = e.tops_valid && e.top_ok.size() == n;
  out = ContinuationScore{};
  out.is_greedy = tops;
  // Adds token i of the continuation to the score.
  auto take = [&](size_t i) -> ParseError {
    if (!e.lp_is_number[i]) return {fmt::format("token_logprobs[{}] is not a number", i)};
    const double lp = e.lps[i];
    out.logprob += lp;
    ++out.n_tokens_cont;
    if (!tops) return {};
    if (!e.top_ok[i]) {
      out.is_greedy = false;
      return {};
    }
    // Greedy: the token is the argmax of the top list, or ties with it.
    if (!(e.top_best_token[i] == e.tokens[i] || lp >= e.top_best[i] - 1e-9)) out.is_greedy = false;
    return {};
  };

  if (e.offsets_valid && e.offsets.size() == n) {
    // text_offset in code points from the start of the prompt (OpenAI, vLLM).
    const int64_t ctx_end = static_cast<int64_t>(utf8_length(context));
    const int64_t prompt_end = ctx_end + static_cast<int64_t>(utf8_length(continuation));
    for (size_t i = 0; i < n; ++i) {
      if (e.offsets[i] >= prompt_end) continue;
      ++out.n_tokens_prompt;
      if (e.offsets[i] < ctx_end) continue;
      if (ParseError err = take(i)) return err;
    }
    if (out.n_tokens_cont == 0) {
      return {fmt::format("no token starts inside the continuation (code points {}..{} of the "
                          "prompt); the tokenizer merged it with the context",
                          ctx_end, prompt_end),
              false};
    }
    return {};
  }

  // No usable offsets (SGLang sends -1). Summing token lengths from the start drifts wherever a
  // token holds part of a character (servers print it as U+FFFD or one char per byte), so the
  // continuation is found from the end instead: the last `g` tokens are generated (g = 1 for
  // the max_tokens 1 of an echo request, as lm-eval assumes; 0 for a server that generated
  // nothing), and the tokens before them must spell the continuation exactly. Only the
  // continuation's own tokens are read, so fragments in the context do not matter.
  if (continuation.empty()) return {"an empty continuation has no tokens to score", false};
  // A context that ends with the continuation's text: the last tokens before a generated one
  // could be the context's own (if the server generated nothing); refuse rather than guess.
  if (context.ends_with(continuation))
    return {fmt::format("the context ends with the continuation \"{}\", so without text_offset its tokens "
                        "cannot be told apart (hint: use a server that sends text_offset, such as vLLM)",
                        continuation),
            false};
  for (size_t g : {size_t{1}, size_t{0}}) {
    if (n < g + 1) continue;
    std::string tail;
    size_t i = n - g;
    while (i > 0 && tail.size() < continuation.size()) {
      --i;
      tail.insert(0, e.tokens[i]);
    }
    if (tail != continuation || (i == 0 && !context.empty())) continue;  // the context needs a token
    out.n_tokens_prompt = static_cast<int>(n - g);
    for (size_t k = i; k < n - g; ++k)
      if (ParseError err = take(k)) return err;
    return {};
  }
  return {fmt::format("the echoed tokens do not end with the continuation \"{}\" at a token boundary "
                      "(the server sent no text_offset, so the continuation is matched from the end); the "
                      "tokenizer merged it with the context, or the server's token strings differ from the text",
                      continuation),
          false};
}

// A strict pull scanner over JSON text for the hot path of loglikelihood responses (an echoed
// prompt's logprobs are most of the bytes a run reads). Every method returns false on
// anything it does not expect, invalid JSON included; the caller then falls back to the
// json DOM parser, which gives the error messages. Accepts exactly what json::parse accepts
// for the parts it reads (strings are UTF-8 checked, numbers follow the JSON grammar).
class Scanner {
 public:
  explicit Scanner(std::string_view s) : p_(s.data()), end_(s.data() + s.size()) {}

  void ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }
  bool at_end() {
    ws();
    return p_ == end_;
  }
  // Consumes `c` (after whitespace) when it is next.
  bool eat(char c) {
    ws();
    if (p_ < end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }
  char peek() {
    ws();
    return p_ < end_ ? *p_ : '\0';
  }
  bool null() {
    ws();
    if (end_ - p_ >= 4 && std::string_view(p_, 4) == "null") {
      p_ += 4;
      return true;
    }
    return false;
  }

  bool string(std::string& out) {
    out.clear();
    if (!eat('"')) return false;
    for (;;) {
      const char* q = p_;
      while (q < end_ && *q != '"' && *q != '\\' && static_cast<unsigned char>(*q) >= 0x20) ++q;
      std::string_view raw(p_, static_cast<size_t>(q - p_));
      if (!valid_utf8(raw)) return false;
      out.append(raw);
      p_ = q;
      if (p_ >= end_ || static_cast<unsigned char>(*p_) < 0x20) return false;
      if (*p_ == '"') {
        ++p_;
        return true;
      }
      if (++p_ >= end_) return false;  // after the backslash
      switch (*p_++) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = 0;
          if (!hex4(cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t lo = 0;
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return false;
            p_ += 2;
            if (!hex4(lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return false;
          }
          utf8_append(out, cp);
          break;
        }
        default: return false;
      }
    }
  }

  // A JSON number; is_int is true when it has no fraction and no exponent.
  bool number(double& value, bool& is_int, int64_t& int_value) {
    ws();
    const char* s = p_;
    const char* q = p_;
    if (q < end_ && *q == '-') ++q;
    if (q >= end_ || !is_digit(*q)) return false;
    if (*q == '0') {
      ++q;
    } else {
      while (q < end_ && is_digit(*q)) ++q;
    }
    is_int = true;
    if (q < end_ && *q == '.') {
      is_int = false;
      ++q;
      if (q >= end_ || !is_digit(*q)) return false;
      while (q < end_ && is_digit(*q)) ++q;
    }
    if (q < end_ && (*q == 'e' || *q == 'E')) {
      is_int = false;
      ++q;
      if (q < end_ && (*q == '+' || *q == '-')) ++q;
      if (q >= end_ || !is_digit(*q)) return false;
      while (q < end_ && is_digit(*q)) ++q;
    }
    if (is_int) {
      auto r = std::from_chars(s, q, int_value);
      if (r.ec != std::errc() || r.ptr != q) return false;  // beyond int64: let json decide
      value = static_cast<double>(int_value);
    } else {
      auto r = std::from_chars(s, q, value);
      if (r.ec != std::errc() || r.ptr != q) return false;
    }
    p_ = q;
    return true;
  }

  // Skips any JSON value, checking its syntax.
  bool skip(int depth = 0) {
    if (depth > 64) return false;
    switch (peek()) {
      case '"': return string(scratch_);
      case '{': {
        ++p_;
        if (eat('}')) return true;
        do {
          if (!string(scratch_) || !eat(':') || !skip(depth + 1)) return false;
        } while (eat(','));
        return eat('}');
      }
      case '[': {
        ++p_;
        if (eat(']')) return true;
        do {
          if (!skip(depth + 1)) return false;
        } while (eat(','));
        return eat(']');
      }
      case 't': return word("true");
      case 'f': return word("false");
      case 'n': return word("null");
      default: {
        double d;
        bool is_int;
        int64_t i;
        return number(d, is_int, i);
      }
    }
  }

 private:
  static bool is_digit(char c) { return c >= '0' && c <= '9'; }
  // Well-formed UTF-8 as RFC 3629 (no overlong forms, no surrogates, at most U+10FFFF): the
  // bytes json::parse accepts inside a string.
  static bool valid_utf8(std::string_view s) {
    auto in = [](unsigned char c, unsigned lo, unsigned hi) { return c >= lo && c <= hi; };
    size_t i = 0;
    const size_t n = s.size();
    while (i < n) {
      const auto c = static_cast<unsigned char>(s[i]);
      if (c < 0x80) {
        ++i;
        continue;
      }
      auto at = [&](size_t k) { return i + k < n ? static_cast<unsigned char>(s[i + k]) : 0u; };
      size_t len = 0;
      if (in(c, 0xC2, 0xDF)) {
        len = in(at(1), 0x80, 0xBF) ? 2 : 0;
      } else if (c == 0xE0) {
        len = in(at(1), 0xA0, 0xBF) && in(at(2), 0x80, 0xBF) ? 3 : 0;
      } else if (in(c, 0xE1, 0xEC) || in(c, 0xEE, 0xEF)) {
        len = in(at(1), 0x80, 0xBF) && in(at(2), 0x80, 0xBF) ? 3 : 0;
      } else if (c == 0xED) {
        len = in(at(1), 0x80, 0x9F) && in(at(2), 0x80, 0xBF) ? 3 : 0;
      } else if (c == 0xF0) {
        len = in(at(1), 0x90, 0xBF) && in(at(2), 0x80, 0xBF) && in(at(3), 0x80, 0xBF) ? 4 : 0;
      } else if (in(c, 0xF1, 0xF3)) {
        len = in(at(1), 0x80, 0xBF) && in(at(2), 0x80, 0xBF) && in(at(3), 0x80, 0xBF) ? 4 : 0;
      } else if (c == 0xF4) {
        len = in(at(1), 0x80, 0x8F) && in(at(2), 0x80, 0xBF) && in(at(3), 0x80, 0xBF) ? 4 : 0;
      }
      if (len == 0) return false;
      i += len;
    }
    return true;
  }
  bool word(std::string_view w) {
    if (end_ - p_ < static_cast<ptrdiff_t>(w.size()) || std::string_view(p_, w.size()) != w) return false;
    p_ += w.size();
    return true;
  }
  bool hex4(uint32_t& v) {
    if (end_ - p_ < 4) return false;
    v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = *p_++;
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
      else return false;
    }
    return true;
  }


  const char* p_;
  const char* end_;
  std::string scratch_;
};

// Reads an array, calling item() for each element; false when not an array or item fails.
template <typename F>
bool scan_array(Scanner& sc, F&& item) {
  if (!sc.eat('[')) return false;
  if (sc.eat(']')) return true;
  do {
    if (!item()) return false;
  } while (sc.eat(','));
  return sc.eat(']');
}

// Reads an object, calling field(key) for each member (positioned at its value).
template <typename F>
bool scan_object(Scanner& sc, std::string& key, F&& field) {
  if (!sc.eat('{')) return false;
  if (sc.eat('}')) return true;
  do {
    if (!sc.string(key) || !sc.eat(':') || !field()) return false;
  } while (sc.eat(','));
  return sc.eat('}');
}

// The `logprobs` object of one choice, straight from the text. False on anything unusual
// (the DOM path then decides), including repeated keys.
bool scan_echo(Scanner& sc, EchoLogprobs& e) {
  e.clear();
  std::string key, top_key;
  std::vector<std::string> keys;  // of one top_logprobs object; reused to spare allocations
  bool seen_tokens = false, seen_lps = false, seen_offsets = false, seen_tops = false;
  bool ok = scan_object(sc, key, [&] {
    if (key == "tokens") {
      if (seen_tokens) return false;
      seen_tokens = true;
      return scan_array(sc, [&] {
        e.tokens.emplace_back();
        return sc.string(e.tokens.back());
      });
    }
    if (key == "token_logprobs") {
      if (seen_lps) return false;
      seen_lps = true;
      return scan_array(sc, [&] {
        if (sc.null()) {
          e.lps.push_back(0.0);
          e.lp_is_number.push_back(false);
          return true;
        }
        double d;
        bool is_int;
        int64_t i;
        if (!sc.number(d, is_int, i)) return false;
        e.lps.push_back(d);
        e.lp_is_number.push_back(true);
        return true;
      });
    }
    if (key == "text_offset") {
      if (seen_offsets) return false;
      seen_offsets = true;
      if (sc.null()) return true;
      e.offsets_valid = true;
      return scan_array(sc, [&] {
        double d;
        bool is_int;
        int64_t i;
        if (sc.null()) {
          e.offsets_valid = false;
          return true;
        }
        if (!sc.number(d, is_int, i)) return false;
        if (!is_int || i < 0) e.offsets_valid = false;
        e.offsets.push_back(i);
        return true;
      });
    }
    if (key == "top_logprobs") {
      if (seen_tops) return false;
      seen_tops = true;
      if (sc.null()) return true;
      e.tops_valid = true;
      return scan_array(sc, [&] {
        std::string best_token;
        double best = -1e300;
        bool ok_top = false;
        if (sc.null()) {
          // not an object: not greedy
        } else {
          size_t n_keys = 0;
          bool fine = scan_object(sc, top_key, [&] {
            for (size_t k = 0; k < n_keys; ++k) {
              if (keys[k] == top_key) return false;  // repeated key: json keeps the last; let it decide
            }
            if (n_keys == keys.size()) keys.emplace_back();
            keys[n_keys++] = top_key;
            if (sc.peek() == '-' || (sc.peek() >= '0' && sc.peek() <= '9')) {
              double d;
              bool is_int;
              int64_t i;
              if (!sc.number(d, is_int, i)) return false;
              offer_top(top_key, d, best_token, best);
              return true;
            }
            return sc.skip();
          });
          if (!fine) return false;
          ok_top = n_keys > 0;
        }
        e.top_ok.push_back(ok_top);
        e.top_best_token.push_back(std::move(best_token));
        e.top_best.push_back(best);
        return true;
      });
    }
    return sc.skip();
  });
  if (!ok || !seen_tokens || !seen_lps || e.tokens.size() != e.lps.size()) return false;
  const size_t n = e.tokens.size();
  if (e.offsets.size() != n) e.offsets_valid = false;
  if (e.top_ok.size() != n) e.tops_valid = false;
  return true;
}

// The fast path of parse_loglik_response: fills `choices` (by index, the last one wins as in
// the DOM path) when the body is well-formed and has what it needs; false otherwise.
bool scan_loglik_response(std::string_view body, size_t n, std::vector<EchoLogprobs>& choices,
                          std::vector<char>& have, std::string& model) {
  Scanner sc(body);
  choices.assign(n, EchoLogprobs{});
  have.assign(n, 0);
  std::string key, ckey;
  bool seen_choices = false;
  EchoLogprobs tmp;
  bool seen_model = false;
  bool ok = scan_object(sc, key, [&] {
    if (key == "model") {
      if (seen_model) return false;  // repeated key: json keeps the last; let the DOM path decide
      seen_model = true;
      if (sc.peek() != '"') return sc.skip();
      return sc.string(model);
    }
    if (key != "choices") return sc.skip();
    if (seen_choices) return false;
    seen_choices = true;
    size_t pos = 0;
    return scan_array(sc, [&] {
      size_t idx = pos++;
      bool seen_lp = false, seen_index = false;
      bool fine = scan_object(sc, ckey, [&] {
        if (ckey == "index") {
          if (seen_index) return false;
          seen_index = true;
          double d;
          bool is_int;
          int64_t i;
          if (sc.peek() != '-' && (sc.peek() < '0' || sc.peek() > '9')) return sc.skip();
          if (!sc.number(d, is_int, i)) return false;
          if (!is_int || i < 0) return false;  // unusual: let the DOM path decide
          idx = static_cast<size_t>(i);
          return true;
        }
        if (ckey == "logprobs") {
          if (seen_lp) return false;
          seen_lp = true;
          return scan_echo(sc, tmp);
        }
        return sc.skip();
      });
      if (!fine || !seen_lp) return false;
      if (idx < n) {
        std::swap(choices[idx], tmp);
        have[idx] = 1;
      }
      return true;
    });
  });
  if (!ok || !sc.at_end()) return false;
  for (char h : have) {
    if (!h) return false;
  }
  return true;
}

}  // namespace

ParseError score_continuation(const json& logprobs, std::string_view context,
                              std::string_view continuation, ContinuationScore& out) {
  EchoLogprobs e;
  if (ParseError err = echo_from_json(logprobs, e)) return err;
  return score_echo(e, context, continuation, out);
}

ParseError parse_loglik_response(std::string_view body, const LoglikRequest& req,
                                 LoglikResult& out) {
  const size_t n = req.continuations.size();
  // Fast path: read the logprobs straight from the text (no DOM); any surprise, and any
  // scoring error, goes through the DOM path below for the exact message.
  {
    std::vector<EchoLogprobs> choices;
    std::vector<char> have;
    std::string model;
    if (scan_loglik_response(body, n, choices, have, model)) {
      LoglikResult r;
      r.logprob.assign(n, 0.0);
      r.is_greedy.assign(n, false);
      bool fine = true;
      for (size_t i = 0; i < n && fine; ++i) {
        ContinuationScore s;
        if (score_echo(choices[i], req.context, req.continuations[i], s)) {
          fine = false;
          break;
        }
        r.logprob[i] = s.logprob;
        r.is_greedy[i] = s.is_greedy;
        r.n_tokens_prompt += s.n_tokens_prompt;
      }
      if (fine) {
        out.logprob = std::move(r.logprob);
        out.is_greedy = std::move(r.is_greedy);
        out.n_tokens_prompt = r.n_tokens_prompt;
        out.served_model = std::move(model);
        return {};
      }
    }
  }
  json j;
  if (ParseError e = parse_json(body, j)) return e;
  auto choices_it = j.find("choices");
  if (choices_it == j.end() || !choices_it->is_array()) return {"response has no choices" + server_says(j)};
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
  out.served_model = string_or_empty(j, "model");
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
