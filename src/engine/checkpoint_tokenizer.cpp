// Checkpoint::tokenizer(), kept in its own object file so that code using only the tensor
// loader does not pull in the tokenizer implementation when linking statically.
#include "engine/checkpoint.h"

#include "core/error.h"
#include "engine/gguf.h"

namespace qeval {

std::unique_ptr<Tokenizer> Checkpoint::tokenizer() const {
  std::unique_ptr<Tokenizer> tok = gguf_ ? make_tokenizer(gguf_->vocab()) : load_hf_tokenizer(path_);
  // validate_shapes() made the embedding [vocab_size, hidden]: a larger id would fail only when
  // a prompt or a sample first holds it, mid-run and with no file named.
  const int64_t rows = config_.vocab_size;
  const std::string src = gguf_ ? path_.string() + " (tokenizer.ggml.tokens)" : (path_ / "tokenizer.json").string();
  const std::string embed = gguf_ ? "token_embd.weight" : "model.embed_tokens.weight";
  if (tok->vocab_size() > rows)
    fail("{}: the tokenizer has {} token ids, but the embedding {} of {} has {} rows (vocab_size {}), so ids {} to {} "
         "have no embedding (hint: the tokenizer does not belong to these weights, or tokens were added without "
         "resizing the embedding)",
         src, tok->vocab_size(), embed, path_.string(), rows, rows, rows, tok->vocab_size() - 1);
  auto check = [&](std::optional<int32_t> id, const char* what) {
    if (id && (*id < 0 || *id >= rows))
      fail("{}: {} id {} is outside the embedding {} of {} ({} rows) (hint: the tokenizer does not belong to "
           "these weights)",
           src, what, *id, embed, path_.string(), rows);
  };
  check(tok->bos_id, "bos");
  check(tok->eos_id, "eos");
  for (int32_t id : tok->stop_ids) check(id, "stop token");
  return tok;
}

}  // namespace qeval
