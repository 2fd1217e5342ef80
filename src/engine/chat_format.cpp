// Native renderings of the ChatML (Qwen2.5), Llama 3 / 3.1 and DeepSeek-R1 chat templates,
// following the templates' text exactly for system / user / assistant messages (tools are not
// supported), and their detection from a template's marker tokens.
#include "engine/chat_format.h"

#include "core/error.h"
#include "core/text.h"

namespace qeval {

namespace {

constexpr std::string_view kR1Bos = "<\xEF\xBD\x9C" "begin\xE2\x96\x81" "of\xE2\x96\x81" "sentence\xEF\xBD\x9C>";
constexpr std::string_view kR1Eos = "<\xEF\xBD\x9C" "end\xE2\x96\x81" "of\xE2\x96\x81" "sentence\xEF\xBD\x9C>";
constexpr std::string_view kR1User = "<\xEF\xBD\x9CUser\xEF\xBD\x9C>";            // <｜User｜>
constexpr std::string_view kR1Assistant = "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>";  // <｜Assistant｜>

bool contains(std::string_view s, std::string_view needle) { return s.find(needle) != std::string_view::npos; }

void check_role(const ChatTurn& m, std::string_view format) {
  if (m.role != "system" && m.role != "user" && m.role != "assistant")
    fail("chat format {}: unsupported message role \"{}\" (expected system, user or assistant)", format,
         m.role);
}

// The value of a Jinja string literal's body (the text between its quotes): Jinja's lexer
// turns "\r\n" and "\r" into "\n", then decodes it as Python's "unicode-escape" codec does
// after an ASCII backslashreplace (so "\\" -> "\", "\n" -> newline, an unknown escape such as
// "\q" stays, and a backslash before a non-ASCII character keeps its escaped code point as
// text). std::nullopt for what this does not decode (\N{...}, a malformed \x, \u or \U, a
// surrogate), so that the caller ignores the literal rather than guessing.
std::optional<std::string> jinja_string_value(std::string_view raw) {
  std::string text;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\r') {
      text += '\n';
      if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
    } else {
      text += raw[i];
    }
  }
  auto hex = [&](size_t at, size_t n) -> std::optional<uint32_t> {
    if (at + n > text.size()) return std::nullopt;
    uint32_t v = 0;
    for (size_t k = 0; k < n; ++k) {
      const char c = text[at + k];
      const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return std::nullopt;
      v = v * 16 + static_cast<uint32_t>(d);
    }
    return v;
  };
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\' || i + 1 == text.size()) {
      out += text[i];
      continue;
    }
    const char c = text[++i];
    switch (c) {
      case '\n': break;  // line continuation
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'v': out += '\v'; break;
      case 'x':
      case 'u':
      case 'U': {
        const size_t n = c == 'x' ? 2 : c == 'u' ? 4 : 8;
        auto cp = hex(i + 1, n);
        if (!cp || *cp > 0x10FFFF || (*cp >= 0xD800 && *cp <= 0xDFFF)) return std::nullopt;
        utf8_append(out, *cp);
        i += n;
        break;
      }
      default:
        if (c >= '0' && c <= '7') {  // octal, one to three digits
          uint32_t v = static_cast<uint32_t>(c - '0');
          for (int k = 0; k < 2 && i + 1 < text.size() && text[i + 1] >= '0' && text[i + 1] <= '7'; ++k)
            v = v * 8 + static_cast<uint32_t>(text[++i] - '0');
          utf8_append(out, v);
        } else if (c == 'N') {
          return std::nullopt;
        } else if (static_cast<unsigned char>(c) >= 0x80) {
          // backslashreplace made the character "\xe9" / "\u00..." first: "\\" then its code
          // point's escape as plain text.
          size_t len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
          if (len == 0 || i + len > text.size()) return std::nullopt;
          uint32_t cp = static_cast<unsigned char>(c) & (0xFF >> (len + 1));
          for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
          out += '\\';
          out += cp < 0x100 ? fmt::format("x{:02x}", cp) : cp < 0x10000 ? fmt::format("u{:04x}", cp)
                                                                          : fmt::format("U{:08x}", cp);
          i += len - 1;
        } else {
          out += '\\';
          out += c;
        }
    }
  }
  return out;
}

// The default system message of a ChatML template: the value of a Jinja string literal that is
// a whole output expression, {{ '<|im_start|>system\n...<|im_end|>\n' }} (with {{- / -}}), as
// Qwen2 and Qwen2.5 (and Qwen2.5-Math, whose message holds "\\boxed{}") write it; "" if none.
// Literals joined with other expressions (the template's own system turn) do not count.
std::string chatml_default_system(std::string_view tpl) {
  constexpr std::string_view kHead = "<|im_start|>system\n", kTail = "<|im_end|>\n";
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  for (size_t pos = tpl.find("<|im_start|>system"); pos != std::string_view::npos;
       pos = tpl.find("<|im_start|>system", pos + 1)) {
    if (pos == 0 || (tpl[pos - 1] != '\'' && tpl[pos - 1] != '"')) continue;
    const char quote = tpl[pos - 1];
    // Before the opening quote: "{{", "{{-" or "{{+" and spaces.
    size_t b = pos - 1;
    while (b > 0 && is_space(tpl[b - 1])) --b;
    if (b > 0 && (tpl[b - 1] == '-' || tpl[b - 1] == '+')) --b;
    if (b < 2 || tpl.substr(b - 2, 2) != "{{") continue;
    // The closing quote (a backslash escapes the next character), then spaces and "}}".
    size_t e = pos;
    while (e < tpl.size() && tpl[e] != quote) e += tpl[e] == '\\' ? 2 : 1;
    if (e >= tpl.size()) continue;
    size_t a = e + 1;
    while (a < tpl.size() && is_space(tpl[a])) ++a;
    if (a < tpl.size() && (tpl[a] == '-' || tpl[a] == '+')) ++a;
    if (tpl.substr(a, 2) != "}}") continue;
    std::optional<std::string> value = jinja_string_value(tpl.substr(pos, e - pos));
    if (!value || value->size() <= kHead.size() + kTail.size() || !value->starts_with(kHead) ||
        !value->ends_with(kTail))
      continue;
    std::string body = value->substr(kHead.size(), value->size() - kHead.size() - kTail.size());
    if (contains(body, "<|im_end|>") || contains(body, "<|im_start|>")) continue;
    return body;
  }
  return {};
}

std::string render_chatml(const ChatFormat& f, std::span<const ChatTurn> msgs, bool gen) {
  std::string out;
  if ((msgs.empty() || msgs.front().role != "system") && !f.default_system.empty())
    out += "<|im_start|>system\n" + f.default_system + "<|im_end|>\n";
  for (const ChatTurn& m : msgs) {
    check_role(m, "chatml");
    out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  }
  if (gen) out += "<|im_start|>assistant\n";
  return out;
}

std::string render_llama3(const ChatFormat& f, std::span<const ChatTurn> msgs, bool gen) {
  std::string out = "<|begin_of_text|>";
  auto turn = [&](const std::string& role, std::string_view content) {
    out += "<|start_header_id|>" + role + "<|end_header_id|>\n\n" + py_strip(content) + "<|eot_id|>";
  };
  size_t first = 0;
  if (f.llama31_system_block) {
    std::string system;
    if (!msgs.empty() && msgs.front().role == "system") {
      system = py_strip(msgs.front().content);
      first = 1;
    }
    out += "<|start_header_id|>system<|end_header_id|>\n\n";
    out += "Cutting Knowledge Date: December 2023\nToday Date: " + f.date_string + "\n\n";
    out += system + "<|eot_id|>";
  }
  for (size_t i = first; i < msgs.size(); ++i) {
    check_role(msgs[i], f.name());
    turn(msgs[i].role, msgs[i].content);
  }
  if (gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

std::string render_deepseek_r1(std::span<const ChatTurn> msgs, bool gen) {
  std::string system;  // the template keeps the last system message
  for (const ChatTurn& m : msgs) {
    check_role(m, "deepseek-r1");
    if (m.role == "system") system = m.content;
  }
  std::string out(kR1Bos);
  out += system;
  for (const ChatTurn& m : msgs) {
    if (m.role == "user") {
      out += kR1User;
      out += m.content;
    } else if (m.role == "assistant") {
      std::string_view content = m.content;
      if (size_t k = content.rfind("</think>"); k != std::string_view::npos)
        content = content.substr(k + std::string_view("</think>").size());
      out += kR1Assistant;
      out += content;
      out += kR1Eos;
    }
  }
  if (gen) {
    out += kR1Assistant;
    out += "<think>\n";
  }
  return out;
}

}  // namespace

std::string ChatFormat::name() const {
  switch (kind) {
    case Kind::kChatml: return "chatml";
    case Kind::kLlama3: return llama31_system_block ? "llama3.1" : "llama3";
    case Kind::kDeepseekR1: return "deepseek-r1";
  }
  return "?";
}

std::optional<ChatFormat> detect_chat_format(std::string_view tpl) {
  ChatFormat f;
  if (contains(tpl, kR1User) && contains(tpl, kR1Assistant)) {
    f.kind = ChatFormat::Kind::kDeepseekR1;
  } else if (contains(tpl, "<|start_header_id|>") && contains(tpl, "<|eot_id|>")) {
    f.kind = ChatFormat::Kind::kLlama3;
    f.llama31_system_block = contains(tpl, "Cutting Knowledge Date");
  } else if (contains(tpl, "<|im_start|>") && contains(tpl, "<|im_end|>")) {
    f.kind = ChatFormat::Kind::kChatml;
    f.default_system = chatml_default_system(tpl);
  } else {
    return std::nullopt;
  }
  return f;
}

std::optional<ChatFormat> chat_format_by_name(std::string_view name) {
  ChatFormat f;
  if (name == "chatml" || name == "qwen2.5") {
    f.default_system = std::string(kQwen25DefaultSystem);
  } else if (name == "chatml-plain") {
  } else if (name == "llama3") {
    f.kind = ChatFormat::Kind::kLlama3;
  } else if (name == "llama3.1") {
    f.kind = ChatFormat::Kind::kLlama3;
    f.llama31_system_block = true;
  } else if (name == "deepseek-r1") {
    f.kind = ChatFormat::Kind::kDeepseekR1;
  } else {
    return std::nullopt;
  }
  return f;
}

std::string render_chat(const ChatFormat& format, std::span<const ChatTurn> messages,
                        bool add_generation_prompt) {
  switch (format.kind) {
    case ChatFormat::Kind::kChatml: return render_chatml(format, messages, add_generation_prompt);
    case ChatFormat::Kind::kLlama3: return render_llama3(format, messages, add_generation_prompt);
    case ChatFormat::Kind::kDeepseekR1: return render_deepseek_r1(messages, add_generation_prompt);
  }
  return {};
}

}  // namespace qeval
