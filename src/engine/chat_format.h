// Chat prompt rendering for the embedded engine: the few chat templates the evaluated model
// families use (ChatML as in Qwen2.5, Llama 3 / 3.1+, DeepSeek-R1 distills), implemented
// natively instead of with a Jinja interpreter, and recognised from a model's chat_template
// by its marker tokens. Pure functions; thread-safe.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace qeval {

// One chat message (the engine's own twin of backends' ChatMessage, so that the engine does
// not depend on backends).
struct ChatTurn {
  std::string role;     // "system" | "user" | "assistant"
  std::string content;
};

struct ChatFormat {
  enum class Kind { kChatml, kLlama3, kDeepseekR1 };
  Kind kind = Kind::kChatml;
  // kChatml: system turn inserted when the first message is not a system message ("" = none).
  std::string default_system;
  // kLlama3: Llama 3.1+ system block ("Cutting Knowledge Date: December 2023\nToday Date: ...")
  // always written first, holding the first system message.
  bool llama31_system_block = false;
  // Llama 3.1 and 3.3 templates write this date. Llama 3.2's writes today's date where its
  // renderer has strftime_now (transformers, so vLLM and SGLang): qeval keeps the fixed date, so
  // a prompt (and its --resume hash) does not change from one day to the next; a server-side
  // Llama 3.2 prompt differs from the engine's by that line.
  std::string date_string = "26 Jul 2024";

  // "chatml" | "llama3" | "llama3.1" | "deepseek-r1".
  std::string name() const;
};

// The default system message of Qwen2.5's template.
inline constexpr std::string_view kQwen25DefaultSystem =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

// Recognises a chat template (tokenizer_config.json / GGUF tokenizer.chat_template) by its
// marker tokens: "<｜User｜>"/"<｜Assistant｜>" -> deepseek-r1, "<|start_header_id|>" -> llama3
// (llama3.1 when it writes "Cutting Knowledge Date"), "<|im_start|>" -> chatml with the default
// system message the template writes literally (if any). std::nullopt when none matches;
// the caller reports the error.
std::optional<ChatFormat> detect_chat_format(std::string_view chat_template);

// A format by name: "chatml" (Qwen2.5 rules, its default system message), "chatml-plain"
// (no default system message), "llama3", "llama3.1", "deepseek-r1". std::nullopt if unknown.
std::optional<ChatFormat> chat_format_by_name(std::string_view name);

// Renders `messages` as the model's template does, followed by the generation prompt when
// `add_generation_prompt` ("<|im_start|>assistant\n", "<|start_header_id|>assistant
// <|end_header_id|>\n\n", "<｜Assistant｜><think>\n"). Where the template writes bos_token
// (llama3, deepseek-r1) the text starts with the BOS token's text, so encode the result with
// add_special = false and parse_special = true. Throws Error on a role the format does not know.
std::string render_chat(const ChatFormat& format, std::span<const ChatTurn> messages,
                        bool add_generation_prompt = true);

}  // namespace qeval
