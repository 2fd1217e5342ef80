// Tokenizer interface of the embedded engine: byte-level BPE (HF tokenizer.json with a Split
// regex pre-tokenizer, tiktoken rank files) and SentencePiece-style BPE with byte fallback
// (Llama-2, stories260K), from tokenizer.json or from a GGUF's embedded vocabulary.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace qeval {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`. With add_special, the tokenizer's own rules add BOS (and EOS if
  // configured). With parse_special, special/added tokens written in the text ("<|im_end|>")
  // become their ids; otherwise they are encoded as plain text.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special,
                                      bool parse_special = true) const = 0;

  // The raw bytes a token stands for (byte-fallback tokens give their byte; SentencePiece's
  // U+2581 becomes a space; special tokens give their text). Not necessarily valid UTF-8.
  virtual std::string token_bytes(int32_t id) const = 0;

  // Concatenated bytes of `ids`, following the tokenizer's decode rules (e.g. SentencePiece
  // drops the space it prefixed to the first piece when `strip_leading_space`).
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special = false) const = 0;

  virtual int32_t vocab_size() const = 0;
  virtual std::optional<int32_t> token_id(std::string_view piece) const = 0;
  virtual bool is_special(int32_t id) const = 0;

  // For weights with only `rows` embedding rows: added/special tokens with an id >= rows are no
  // longer matched in text (they are encoded as plain text). Returns how many ids >= rows are
  // other tokens, which plain text can still produce (0: every encoding fits the rows).
  virtual int32_t drop_added_from(int32_t rows) { return std::max(0, vocab_size() - rows); }

  std::optional<int32_t> bos_id, eos_id;
  std::vector<int32_t> stop_ids;    // end-of-generation ids (eos, <|im_end|>, <|eot_id|>, ...)
  bool add_bos = false;
  std::string chat_template;        // from tokenizer_config.json / GGUF, "" when absent
};

// Emits the longest valid UTF-8 prefix of the bytes pushed so far, holding back an incomplete
// trailing sequence until it completes.
class Utf8StreamDecoder {
 public:
  std::string push(std::string_view bytes);
  std::string finish();             // whatever is left (invalid bytes passed through)
 private:
  std::string pending_;
};

// Vocabulary description as GGUF stores it (tokenizer.ggml.*); the GGUF loader fills it.
struct VocabData {
  std::string model;                // "llama" (SentencePiece BPE) | "gpt2" (byte-level BPE)
  std::string pre;                  // pre-tokenizer name ("llama-bpe", "qwen2", "default", ...)
  std::vector<std::string> tokens;
  std::vector<float> scores;        // SentencePiece merge priorities
  std::vector<int32_t> token_types; // 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte
  std::vector<std::string> merges;  // "a b" pairs, highest priority first (gpt2)
  std::optional<int32_t> bos_id, eos_id, unk_id, eot_id;
  bool add_bos = true;
  bool add_eos = false;
  bool add_space_prefix = true;
  std::string chat_template;
};

// Loaders. Each throws Error naming the file and field when the input is malformed.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path& model_dir);
std::unique_ptr<Tokenizer> make_tokenizer(const VocabData& vocab);
// tiktoken rank file ("base64 rank" lines) with a named pre-tokenizer ("qwen2", "llama3").
std::unique_ptr<Tokenizer> load_tiktoken(const std::filesystem::path& file, std::string_view pre);

}  // namespace qeval
