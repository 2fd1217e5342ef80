// Private to the engine's tokenizer: the one BPE implementation behind every Tokenizer
// (byte-level BPE from tokenizer.json / tiktoken / GGUF "gpt2", SentencePiece-style BPE with
// byte fallback from tokenizer.json / GGUF "llama" / SentencePiece .model), the PCRE2 regex
// wrapper used by the pre-tokenizers, and the loaders' shared helpers.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/tokenizer.h"

namespace qeval::tok {

// A compiled PCRE2 pattern (UTF + UCP, invalid UTF-8 tolerated, JIT when available).
// Immutable after construction; find_all may be called from several threads at once.
class Regex {
 public:
  // Throws Error naming `where` and the PCRE2 message when the pattern does not compile.
  Regex(std::string_view pattern, std::string_view where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the [begin, end) byte ranges of successive non-overlapping matches in `text`,
  // offsets relative to `text`. The regex sees only `text` (lookahead stops at its end).
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*
};

// One pre-tokenizer step: split every current piece by `regex` (HF "Split" semantics).
struct PreTokStep {
  enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
  std::shared_ptr<const Regex> regex;
  Behavior behavior = Behavior::kIsolated;
  bool invert = false;
};

// Named regexes: "gpt2", "llama3", "qwen2", "deepseek-v3" step lists (std::nullopt if unknown).
// Names are those GGUF's tokenizer.ggml.pre uses plus our short aliases.
std::optional<std::vector<PreTokStep>> named_pretokenizer(std::string_view name);

enum class TokenKind : uint8_t {
  kNormal,   // ordinary vocabulary piece
  kSpecial,  // control / unknown token: matched in text only with parse_special
  kAdded,    // user-defined added token: always matched in text, decoded as its text
  kByte,     // SentencePiece byte-fallback token <0xNN>
  kUnused,   // id without a piece (gap) or unused piece
};

enum class BpeMode { kByteLevel, kSentencePiece };

// How merge priorities are given.
enum class MergeSource {
  kMergeList,   // `merges`: pairs in priority order (HF / GGUF gpt2)
  kRanks,       // tiktoken: pair priority = id of the concatenation (lower first)
  kScores,      // SentencePiece: priority = score of the concatenation (higher first)
};

// Everything a loader knows about a vocabulary. pieces are in the internal form: raw bytes for
// kByteLevel (GPT-2 unicode mapping already undone), the stored text (with U+2581) for
// kSentencePiece; for added/special tokens the literal text.
struct BpeModel {
  BpeMode mode = BpeMode::kByteLevel;
  std::vector<std::string> pieces;
  std::vector<TokenKind> kinds;
  std::vector<float> scores;                               // kScores only
  std::vector<std::pair<std::string, std::string>> merges; // kMergeList only (internal form)
  MergeSource merge_source = MergeSource::kMergeList;
  std::vector<PreTokStep> pre;                             // applied in order
  bool ignore_merges = false;      // emit a pre-token directly when it is itself a piece
  bool byte_level_prefix_space = false;  // ByteLevel add_prefix_space
  // SentencePiece normalization: spaces -> U+2581, and a U+2581 prefixed to each text segment
  // that starts the input or follows an added token.
  bool add_space_prefix = true;
  bool prefix_only_first = false;  // Metaspace prepend_scheme "first"
  bool prefix_unless_space = false;  // Metaspace: no prefix for a segment starting with ' ' 
  bool byte_fallback = true;
  bool strip_leading_space = true; // decode: drop one space of the first decoded piece
  std::optional<int32_t> unk_id;
  std::vector<int32_t> added_lstrip, added_rstrip;         // ids with HF lstrip / rstrip
  std::string where;               // file name for error messages
};

class BpeTokenizer final : public Tokenizer {
 public:
  // Builds the lookup tables. Throws Error (naming model.where) on inconsistent input, e.g. a
  // merge whose parts are not pieces or a byte-level vocabulary missing a single byte.
  explicit BpeTokenizer(BpeModel model);

  std::vector<int32_t> encode(std::string_view text, bool add_special,
                              bool parse_special = true) const override;
  std::string token_bytes(int32_t id) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(m_.pieces.size()); }
  std::optional<int32_t> token_id(std::string_view piece) const override;
  bool is_special(int32_t id) const override;
  int32_t drop_added_from(int32_t rows) override;

  bool add_eos = false;

 private:
  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  struct AddedMatch {
    size_t begin, end;  // span in the text, including stripped whitespace
    int32_t id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void build_merges();
  std::vector<AddedMatch> find_added(std::string_view text, bool parse_special) const;
  void encode_segment(std::string_view text, bool first_segment, std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  struct StrHash {  // heterogeneous lookup: find(string_view) without a temporary string
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using PieceMap = std::unordered_map<std::string, int32_t, StrHash, std::equal_to<>>;

  BpeModel m_;
  PieceMap piece_to_id_;   // normal/byte pieces
  PieceMap added_to_id_;   // added/special by text
  std::unordered_map<uint64_t, Merge> merges_;
  std::array<int32_t, 256> byte_ids_{};                    // -1 when absent
  std::array<std::vector<int32_t>, 256> added_by_first_;   // added ids by first byte
  std::vector<uint8_t> lstrip_, rstrip_;
};

// GPT-2 byte <-> unicode mapping: text of byte-level vocab entries -> raw bytes. Characters
// outside the mapping are kept as their UTF-8 bytes (returns false then).
bool byte_level_decode(std::string_view mapped, std::string& out);
std::string byte_level_encode(std::string_view bytes);

// Reads a SentencePiece ModelProto (.model): pieces, scores and types into VocabData (model
// "llama"), with bos/eos/unk taken from the trainer spec (defaults 1/2/0) and
// add_space_prefix from the normalizer spec. Throws Error naming the file on malformed input.
VocabData read_sentencepiece_model(const std::filesystem::path& file);

}  // namespace qeval::tok
