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

// The literal default system message a ChatML template writes as
// '<|im_start|>system\n...<|im_end|>' (with "\n" escaped in the Jinja source); "" if none.
std::string chatml_default_system(std::string_view tpl) {
  for (std::string_view head : {std::string_view("<|im_start|>system\\n"), std::string_view("<|im_start|>system\n")}) {
    for (size_t pos = tpl.find(head); pos != std::string_view::npos; pos = tpl.find(head, pos + 1)) {
      size_t start = pos + head.size();
      size_t end = tpl.find("<|im_end|>", start);
      if (end == std::string_view::npos) break;
      std::string_view body = tpl.substr(start, end - start);
      // A literal message: no Jinja expression, no string concatenation or quote in between.
      if (body.empty() || contains(body, "{") || contains(body, "'") || contains(body, "\"") ||
          contains(body, "+"))
        continue;
      std::string out;
      for (size_t i = 0; i < body.size(); ++i) {
        if (body[i] == '\\' && i + 1 < body.size() && body[i + 1] == 'n') {
          out += '\n';
          ++i;
        } else {
          out += body[i];
        }
      }
      return out;
    }
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
