// split_reasoning: a single left-to-right scan over the tags.
#include "extract/reasoning.h"

namespace qeval {

ReasoningSplit split_reasoning(std::string_view text) {
  constexpr std::string_view kOpen = "<think>", kClose = "</think>";
  ReasoningSplit out;
  size_t pos = 0;
  // An orphan closing tag before any opening tag: the reasoning started in the prompt.
  size_t first_open = text.find(kOpen), first_close = text.find(kClose);
  if (first_close != std::string_view::npos &&
      (first_open == std::string_view::npos || first_close < first_open)) {
    pos = first_close + kClose.size();
  }
  while (pos < text.size()) {
    size_t open = text.find(kOpen, pos);
    if (open == std::string_view::npos) {
      out.answer.append(text.substr(pos));
      break;
    }
    out.answer.append(text.substr(pos, open - pos));
    size_t close = text.find(kClose, open + kOpen.size());
    if (close == std::string_view::npos) {
      out.unclosed = true;
      break;
    }
    pos = close + kClose.size();
  }
  return out;
}

}  // namespace qeval
