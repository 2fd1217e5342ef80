// Checkpoint::tokenizer(), kept in its own object file so that code using only the tensor
// loader does not pull in the tokenizer implementation when linking statically.
#include "engine/checkpoint.h"
#include "engine/gguf.h"

namespace qeval {

std::unique_ptr<Tokenizer> Checkpoint::tokenizer() const {
  if (gguf_) return make_tokenizer(gguf_->vocab());
  return load_hf_tokenizer(path_);
}

}  // namespace qeval
