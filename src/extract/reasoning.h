// Separating a chat model's reasoning (<think>...</think>) from its answer, so that answers
// are never searched for inside the reasoning.
#pragma once

#include <string>
#include <string_view>

namespace qeval {

struct ReasoningSplit {
  std::string answer;     // the text outside every <think>...</think> block
  bool unclosed = false;  // a <think> block never closed: the output was cut inside reasoning
};

// Removes every `<think>...</think>` block. Text before a `</think>` that has no opening tag
// is reasoning too (chat templates that open <think> in the prompt): it is removed. After an
// unclosed `<think>`, everything is reasoning and `unclosed` is set.
ReasoningSplit split_reasoning(std::string_view text);

}  // namespace qeval
