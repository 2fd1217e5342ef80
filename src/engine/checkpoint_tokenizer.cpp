// Checkpoint::tokenizer(), kept in its own object file so that code using only the tensor
// loader does not pull in the tokenizer implementation when linking statically.
#include "engine/checkpoint.h"

#include <fmt/format.h>

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
  if (tok->vocab_size() > rows) {
    // Added tokens past the rows happen in real checkpoints (Meta's first Llama-2 HF upload
    // added <pad> as id 32000 to 32000 rows): they are read as plain text from then on. Any
    // other id past the rows could come out of plain text, so that is an error.
    const int32_t n_extra = tok->vocab_size() - static_cast<int32_t>(rows);
    if (const int32_t others = tok->drop_added_from(static_cast<int32_t>(rows)); others > 0)
      fail("{}: the tokenizer has {} token ids, but the embedding {} of {} has {} rows (vocab_size {}), so {} "
           "ids from {} to {} have no embedding (hint: the tokenizer does not belong to these weights, or tokens "
           "were added without resizing the embedding)",
           src, tok->vocab_size(), embed, path_.string(), rows, rows, others, rows, tok->vocab_size() - 1);
    fmt::print(stderr, "warning: {}: {} added token(s) from id {} (first: '{}') have no row in the embedding {} "
               "({} rows): they are read as plain text\n",
               src, n_extra, rows, tok->token_bytes(static_cast<int32_t>(rows)), embed, rows);
  }
  // The ids the tokenizer itself uses must have rows; a stop id past them can never be
  // generated (the model has no logit for it), so it is dropped.
  auto check = [&](std::optional<int32_t> id, const char* what, const char* from) {
    if (id && (*id < 0 || *id >= rows))
      fail("{}: {} id {} is outside the embedding {} of {} ({} rows) (hint: the tokenizer does not belong to "
           "these weights)",
           from, what, *id, embed, path_.string(), rows);
  };
  const std::string id_src =
      gguf_ ? src : path_.string() + " (tokenizer.json, tokenizer_config.json or generation_config.json)";
  check(tok->bos_id, "bos", id_src.c_str());
  check(tok->eos_id, "eos", id_src.c_str());
  std::erase_if(tok->stop_ids, [&](int32_t id) { return id < 0 || id >= rows; });
  return tok;
}

}  // namespace qeval
