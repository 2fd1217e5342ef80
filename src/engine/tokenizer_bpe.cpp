// The BPE engine behind every Tokenizer: added-token splitting, normalization (SentencePiece
// spaces), regex pre-tokenization (PCRE2), rank-ordered pair merging with a heap (O(n log n) per
// pre-token), decoding, and the UTF-8 stream decoder.
#include "engine/tokenizer_bpe.h"

#include "core/text.h"

#include <algorithm>
#include <cstring>
#include <queue>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.h"

namespace qeval {
namespace tok {

namespace {

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK

// Length of the UTF-8 sequence starting at s[i]; 1 for an invalid or truncated sequence.
size_t utf8_char_len(std::string_view s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
  if (i + len > s.size()) return 1;
  for (size_t k = 1; k < len; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 1;
  }
  return len;
}

bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Per-thread PCRE2 match state: match data and a JIT stack large enough for long inputs.
struct MatchState {
  pcre2_match_data_8* md = nullptr;
  pcre2_match_context_8* mctx = nullptr;
  pcre2_jit_stack_8* jit = nullptr;
  MatchState() {
    md = pcre2_match_data_create_8(32, nullptr);
    mctx = pcre2_match_context_create_8(nullptr);
    jit = pcre2_jit_stack_create_8(32 * 1024, 4 * 1024 * 1024, nullptr);
    if (mctx && jit) pcre2_jit_stack_assign_8(mctx, nullptr, jit);
  }
  ~MatchState() {
    pcre2_match_data_free_8(md);
    pcre2_match_context_free_8(mctx);
    pcre2_jit_stack_free_8(jit);
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Regex

Regex::Regex(std::string_view pattern, std::string_view where) {
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code_8* code = pcre2_compile_8(reinterpret_cast<PCRE2_SPTR8>(pattern.data()), pattern.size(),
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off,
                                       nullptr);
  if (!code) {
    PCRE2_UCHAR8 buf[256];
    pcre2_get_error_message_8(err, buf, sizeof buf);
    fail("{}: pre-tokenizer regex does not compile at offset {}: {} (pattern: {})", where, off,
         reinterpret_cast<const char*>(buf), pattern);
  }
  pcre2_jit_compile_8(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter on failure
  code_ = code;
}

Regex::~Regex() { pcre2_code_free_8(static_cast<pcre2_code_8*>(code_)); }

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  thread_local MatchState st;
  auto* code = static_cast<pcre2_code_8*>(code_);
  auto subject = reinterpret_cast<PCRE2_SPTR8>(text.data());
  size_t pos = 0;
  while (pos <= text.size()) {
    int rc = pcre2_match_8(code, subject, text.size(), pos, 0, st.md, st.mctx);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR8 buf[256];
      pcre2_get_error_message_8(rc, buf, sizeof buf);
      fail("tokenizer: regex match failed: {} (input of {} bytes)", reinterpret_cast<const char*>(buf),
           text.size());
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer_8(st.md);
    size_t b = ov[0], e = ov[1];
    if (e <= b) {  // empty match: step one character past it
      if (b >= text.size()) break;
      pos = b + utf8_char_len(text, b);
      continue;
    }
    out.emplace_back(b, e);
    pos = e;
  }
}

// ---------------------------------------------------------------------------------------------
// Named pre-tokenizers

std::optional<std::vector<PreTokStep>> named_pretokenizer(std::string_view name) {
  static const char* kGpt2 =
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
  static const char* kLlama3 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  static const char* kQwen2 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  static const std::vector<const char*> kDeepseekV3 = {
      R"(\p{N}{1,3})",
      "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+",
      R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
  };
  // deepseek-llm (the older 100K vocabulary): llama.cpp's list; not verified against ids here.
  static const std::vector<const char*> kDeepseekLlm = {
      R"([\r\n])",
      "\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-"
      "\u02AF\u0370-\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1"
      "\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-"
      "\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77\u1D79-\u1D9A\u1E00-\u1F15"
      "\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B\u1F5D\u1F5F-\u1F7D"
      "\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB"
      "\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D"
      "\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139\u213C-\u213F\u2145-\u2149\u214E"
      "\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D\uA680-"
      "\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17"
      "\uFF21-\uFF3A\uFF41-\uFF5A\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}"
      "\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]+",
      "\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+",
      R"(\s+$)",
      "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+",
      R"(\p{N}+)",
  };
  std::vector<const char*> patterns;
  if (name == "gpt2" || name == "default" || name.empty() || name == "gpt-2") {
    patterns = {kGpt2};
  } else if (name == "llama3" || name == "llama-bpe" || name == "llama-v3" || name == "smaug-bpe" ||
             name == "dbrx") {
    patterns = {kLlama3};
  } else if (name == "qwen2" || name == "deepseek-r1-qwen" || name == "qwen") {
    patterns = {kQwen2};
  } else if (name == "deepseek-v3" || name == "deepseek3-llm") {
    patterns = kDeepseekV3;
  } else if (name == "deepseek-llm") {
    patterns = kDeepseekLlm;
  } else {
    return std::nullopt;
  }
  std::vector<PreTokStep> steps;
  for (const char* p : patterns) {
    PreTokStep s;
    s.regex = std::make_shared<const Regex>(p, fmt::format("pre-tokenizer '{}'", name));
    s.behavior = PreTokStep::Behavior::kIsolated;
    steps.push_back(std::move(s));
  }
  return steps;
}

// ---------------------------------------------------------------------------------------------
// GPT-2 byte <-> unicode mapping

namespace {

struct ByteMap {
  std::array<uint32_t, 256> byte_to_cp{};
  std::unordered_map<uint32_t, uint8_t> cp_to_byte;
  ByteMap() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      byte_to_cp[b] = printable ? b : 256 + n++;
      cp_to_byte[byte_to_cp[b]] = static_cast<uint8_t>(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}


}  // namespace

bool byte_level_decode(std::string_view mapped, std::string& out) {
  const auto& m = byte_map();
  bool ok = true;
  for (size_t i = 0; i < mapped.size();) {
    size_t len = utf8_char_len(mapped, i);
    uint32_t cp = static_cast<unsigned char>(mapped[i]);
    if (len == 2) cp = ((cp & 0x1F) << 6) | (mapped[i + 1] & 0x3F);
    else if (len == 3) cp = ((cp & 0x0F) << 12) | ((mapped[i + 1] & 0x3F) << 6) | (mapped[i + 2] & 0x3F);
    else if (len == 4)
      cp = ((cp & 0x07) << 18) | ((mapped[i + 1] & 0x3F) << 12) | ((mapped[i + 2] & 0x3F) << 6) |
           (mapped[i + 3] & 0x3F);
    auto it = m.cp_to_byte.find(cp);
    if (it != m.cp_to_byte.end() && !(len == 1 && cp >= 0x80)) {
      out += static_cast<char>(it->second);
    } else {
      out.append(mapped.substr(i, len));
      ok = false;
    }
    i += len;
  }
  return ok;
}

std::string byte_level_encode(std::string_view bytes) {
  std::string out;
  for (unsigned char c : bytes) utf8_append(out, byte_map().byte_to_cp[c]);
  return out;
}

// ---------------------------------------------------------------------------------------------
// BpeTokenizer

BpeTokenizer::BpeTokenizer(BpeModel model) : m_(std::move(model)) {
  const size_t n = m_.pieces.size();
  if (m_.kinds.size() != n) fail("{}: internal: {} kinds for {} pieces", m_.where, m_.kinds.size(), n);
  byte_ids_.fill(-1);
  lstrip_.assign(n, 0);
  rstrip_.assign(n, 0);
  for (int32_t id : m_.added_lstrip) if (id >= 0 && size_t(id) < n) lstrip_[id] = 1;
  for (int32_t id : m_.added_rstrip) if (id >= 0 && size_t(id) < n) rstrip_[id] = 1;
  piece_to_id_.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    const std::string& p = m_.pieces[i];
    int32_t id = static_cast<int32_t>(i);
    switch (m_.kinds[i]) {
      case TokenKind::kNormal:
        piece_to_id_.emplace(p, id);
        if (m_.mode == BpeMode::kByteLevel && p.size() == 1 && byte_ids_[uint8_t(p[0])] < 0)
          byte_ids_[uint8_t(p[0])] = id;
        break;
      case TokenKind::kByte: {
        // "<0xNN>"
        unsigned v = 0;
        if (p.size() == 6 && p.compare(0, 3, "<0x") == 0 && p[5] == '>' &&
            std::sscanf(p.c_str() + 3, "%2x", &v) == 1) {
          if (byte_ids_[v] < 0) byte_ids_[v] = id;
        }
        piece_to_id_.emplace(p, id);
        break;
      }
      case TokenKind::kSpecial:
      case TokenKind::kAdded:
        if (!p.empty()) {
          added_to_id_.emplace(p, id);
          added_by_first_[uint8_t(p[0])].push_back(id);
        }
        break;
      case TokenKind::kUnused:
        break;
    }
  }
  for (auto& v : added_by_first_) {
    std::stable_sort(v.begin(), v.end(), [&](int32_t a, int32_t b) {
      return m_.pieces[a].size() > m_.pieces[b].size();
    });
  }
  if (m_.mode == BpeMode::kByteLevel) {
    for (int b = 0; b < 256; ++b) {
      if (byte_ids_[b] < 0)
        fail("{}: byte-level vocabulary has no token for byte 0x{:02X}; is this a byte-level BPE "
             "vocabulary?", m_.where, b);
    }
  }
  build_merges();
}

void BpeTokenizer::build_merges() {
  auto find = [&](std::string_view s) -> int32_t {
    auto it = piece_to_id_.find(s);
    return it == piece_to_id_.end() ? -1 : it->second;
  };
  switch (m_.merge_source) {
    case MergeSource::kMergeList: {
      merges_.reserve(m_.merges.size() * 2);
      int32_t rank = 0;
      for (const auto& [a, b] : m_.merges) {
        int32_t ia = find(a), ib = find(b), im = find(a + b);
        if (ia < 0 || ib < 0 || im < 0)
          fail("{}: merge #{} \"{} {}\" names a piece that is not in the vocabulary", m_.where, rank,
               a, b);
        merges_.emplace(pair_key(ia, ib), Merge{rank, im});
        ++rank;
      }
      break;
    }
    case MergeSource::kRanks:
    case MergeSource::kScores: {
      // Every split of a piece into two pieces is a merge producing it; its priority is the
      // piece's rank (tiktoken) or its score order (SentencePiece; equal scores share a rank).
      std::vector<int32_t> score_rank;
      if (m_.merge_source == MergeSource::kScores) {
        if (m_.scores.size() != m_.pieces.size())
          fail("{}: {} scores for {} tokens", m_.where, m_.scores.size(), m_.pieces.size());
        std::vector<float> distinct(m_.scores);
        std::sort(distinct.begin(), distinct.end(), std::greater<float>());
        distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
        score_rank.resize(m_.pieces.size());
        for (size_t i = 0; i < m_.pieces.size(); ++i)
          score_rank[i] = static_cast<int32_t>(
              std::lower_bound(distinct.begin(), distinct.end(), m_.scores[i], std::greater<float>()) -
              distinct.begin());
      }
      merges_.reserve(m_.pieces.size() * 4);
      for (size_t i = 0; i < m_.pieces.size(); ++i) {
        if (m_.kinds[i] != TokenKind::kNormal) continue;
        const std::string& p = m_.pieces[i];
        int32_t rank = m_.merge_source == MergeSource::kRanks ? int32_t(i) : score_rank[i];
        for (size_t k = 1; k < p.size(); ++k) {
          int32_t ia = find(std::string_view(p).substr(0, k));
          if (ia < 0) continue;
          int32_t ib = find(std::string_view(p).substr(k));
          if (ib < 0) continue;
          auto [it, inserted] = merges_.emplace(pair_key(ia, ib), Merge{rank, int32_t(i)});
          if (!inserted && rank < it->second.rank) it->second = Merge{rank, int32_t(i)};
        }
      }
      break;
    }
  }
}

int32_t BpeTokenizer::drop_added_from(int32_t rows) {
  int32_t others = 0;
  for (int32_t id = std::max(rows, 0); id < vocab_size(); ++id) {
    const TokenKind k = m_.kinds[id];
    if (k == TokenKind::kUnused) continue;
    if (k != TokenKind::kSpecial && k != TokenKind::kAdded) {
      ++others;
      continue;
    }
    const std::string& p = m_.pieces[id];
    if (p.empty()) continue;
    if (auto it = added_to_id_.find(p); it != added_to_id_.end() && it->second == id) added_to_id_.erase(it);
    auto& v = added_by_first_[uint8_t(p[0])];
    v.erase(std::remove(v.begin(), v.end(), id), v.end());
  }
  return others;
}

std::vector<BpeTokenizer::AddedMatch> BpeTokenizer::find_added(std::string_view text,
                                                               bool parse_special) const {
  std::vector<AddedMatch> out;
  size_t prev_end = 0;
  for (size_t i = 0; i < text.size();) {
    const auto& cands = added_by_first_[uint8_t(text[i])];
    int32_t hit = -1;
    for (int32_t id : cands) {
      if (m_.kinds[id] == TokenKind::kSpecial && !parse_special) continue;
      const std::string& p = m_.pieces[id];
      if (text.compare(i, p.size(), p) == 0) {
        hit = id;
        break;  // candidates are sorted longest first
      }
    }
    if (hit < 0) {
      ++i;
      continue;
    }
    size_t b = i, e = i + m_.pieces[hit].size();
    if (lstrip_[hit]) while (b > prev_end && is_ascii_space(text[b - 1])) --b;
    if (rstrip_[hit]) while (e < text.size() && is_ascii_space(text[e])) ++e;
    out.push_back({b, e, hit});
    prev_end = e;
    i = e;
  }
  return out;
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_special,
                                          bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special && add_bos && bos_id) out.push_back(*bos_id);
  size_t pos = 0;
  for (const AddedMatch& m : find_added(text, parse_special)) {
    if (m.begin > pos) encode_segment(text.substr(pos, m.begin - pos), pos == 0, out);
    out.push_back(m.id);
    pos = m.end;
  }
  if (pos < text.size()) encode_segment(text.substr(pos), pos == 0, out);
  if (add_special && add_eos && eos_id) out.push_back(*eos_id);
  return out;
}

void BpeTokenizer::encode_segment(std::string_view text, bool first_segment,
                                  std::vector<int32_t>& out) const {
  std::string norm;
  if (m_.mode == BpeMode::kSentencePiece) {
    norm.reserve(text.size() + 16);
    if (m_.add_space_prefix && (first_segment || !m_.prefix_only_first) &&
        !(m_.prefix_unless_space && (starts_with(text, " ") || starts_with(text, kSpmSpace))))
      norm += kSpmSpace;
    for (char c : text) {
      if (c == ' ') norm += kSpmSpace;
      else norm += c;
    }
  } else {
    if (m_.byte_level_prefix_space && !text.empty() && text[0] != ' ') norm += ' ';
    norm.append(text);
  }
  if (m_.pre.empty()) {
    encode_word(norm, out);
    return;
  }
  // Pieces as [begin, end) into norm; each step splits every piece.
  std::vector<std::pair<size_t, size_t>> pieces{{0, norm.size()}}, next, found;
  using B = PreTokStep::Behavior;
  for (const PreTokStep& step : m_.pre) {
    next.clear();
    for (auto [pb, pe] : pieces) {
      found.clear();
      step.regex->find_all(std::string_view(norm).substr(pb, pe - pb), found);
      // (begin, end, is_match) covering the piece.
      std::vector<std::tuple<size_t, size_t, bool>> parts;
      size_t cur = pb;
      for (auto [mb, me] : found) {
        if (pb + mb > cur) parts.emplace_back(cur, pb + mb, step.invert);
        parts.emplace_back(pb + mb, pb + me, !step.invert);
        cur = pb + me;
      }
      if (cur < pe) parts.emplace_back(cur, pe, step.invert);
      size_t first_new = next.size();
      bool prev_was_match = false;
      bool pending_next = false;  // kMergedWithNext: a match waiting for the following part
      size_t pending_begin = 0;
      // HF's MergedWithPrevious / MergedWithNext: a match joins the neighbouring part only when
      // that part is not itself a match ("a--b" with "-" MergedWithNext: "a" "-" "-b").
      for (auto [b, e, is_match] : parts) {
        switch (step.behavior) {
          case B::kRemoved:
            if (!is_match) next.emplace_back(b, e);
            break;
          case B::kIsolated:
            next.emplace_back(b, e);
            break;
          case B::kContiguous:
            if (is_match && prev_was_match && next.size() > first_new) next.back().second = e;
            else next.emplace_back(b, e);
            break;
          case B::kMergedWithPrevious:
            if (is_match && !prev_was_match && next.size() > first_new) next.back().second = e;
            else next.emplace_back(b, e);
            break;
          case B::kMergedWithNext:
            if (is_match) {
              if (pending_next) next.emplace_back(pending_begin, b);  // followed by a match: alone
              pending_begin = b;
              pending_next = true;
            } else {
              next.emplace_back(pending_next ? pending_begin : b, e);
              pending_next = false;
            }
            break;
        }
        prev_was_match = is_match;
      }
      if (pending_next) next.emplace_back(pending_begin, pe);
    }
    pieces.swap(next);
  }
  for (auto [b, e] : pieces) {
    if (e > b) encode_word(std::string_view(norm).substr(b, e - b), out);
  }
}

void BpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (m_.ignore_merges) {
    auto it = piece_to_id_.find(word);
    if (it != piece_to_id_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  constexpr int32_t kDead = INT32_MIN;
  struct Sym {
    int32_t id;  // -1: unknown character (byte fallback / unk at the end)
    int32_t prev, next;
    uint32_t begin, end;
  };
  std::vector<Sym> syms;
  syms.reserve(word.size());
  if (m_.mode == BpeMode::kByteLevel) {
    for (size_t i = 0; i < word.size(); ++i)
      syms.push_back({byte_ids_[uint8_t(word[i])], int32_t(i) - 1, int32_t(i) + 1, uint32_t(i),
                      uint32_t(i + 1)});
  } else {
    for (size_t i = 0; i < word.size();) {
      size_t len = utf8_char_len(word, i);
      auto it = piece_to_id_.find(word.substr(i, len));
      int32_t id = (it == piece_to_id_.end() || m_.kinds[it->second] == TokenKind::kByte) ? -1 : it->second;
      int32_t k = int32_t(syms.size());
      syms.push_back({id, k - 1, k + 1, uint32_t(i), uint32_t(i + len)});
      i += len;
    }
  }
  syms.back().next = -1;

  struct Cand {
    int32_t rank;
    int32_t left;
    int32_t left_id, right_id, merged;
    bool operator>(const Cand& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push_pair = [&](int32_t l) {
    if (l < 0) return;
    int32_t r = syms[l].next;
    if (r < 0 || syms[l].id < 0 || syms[r].id < 0) return;
    auto it = merges_.find(pair_key(syms[l].id, syms[r].id));
    if (it == merges_.end()) return;
    heap.push({it->second.rank, l, syms[l].id, syms[r].id, it->second.merged});
  };
  for (int32_t i = 0; i + 1 < int32_t(syms.size()); ++i) push_pair(i);
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    Sym& l = syms[c.left];
    if (l.id != c.left_id) continue;
    int32_t r = l.next;
    if (r < 0 || syms[r].id != c.right_id) continue;
    l.id = c.merged;
    l.end = syms[r].end;
    l.next = syms[r].next;
    if (l.next >= 0) syms[l.next].prev = c.left;
    syms[r].id = kDead;
    push_pair(l.prev);
    push_pair(c.left);
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    const Sym& s = syms[i];
    if (s.id >= 0) {
      out.push_back(s.id);
      continue;
    }
    bool have_bytes = m_.byte_fallback;
    for (uint32_t k = s.begin; k < s.end && have_bytes; ++k) have_bytes = byte_ids_[uint8_t(word[k])] >= 0;
    if (have_bytes) {
      for (uint32_t k = s.begin; k < s.end; ++k) out.push_back(byte_ids_[uint8_t(word[k])]);
    } else if (m_.unk_id) {
      out.push_back(*m_.unk_id);
    } else {
      fail("{}: cannot encode \"{}\": no byte-fallback tokens and no unk token", m_.where,
           word.substr(s.begin, s.end - s.begin));
    }
  }
}

std::string BpeTokenizer::token_bytes(int32_t id) const {
  if (id < 0 || size_t(id) >= m_.pieces.size()) return {};
  const std::string& p = m_.pieces[id];
  switch (m_.kinds[id]) {
    case TokenKind::kByte: {
      unsigned v = 0;
      if (p.size() == 6 && std::sscanf(p.c_str() + 3, "%2x", &v) == 1) return std::string(1, char(v));
      return p;
    }
    case TokenKind::kNormal:
    case TokenKind::kUnused:
      if (m_.mode == BpeMode::kSentencePiece) {
        std::string s;
        s.reserve(p.size());
        for (size_t i = 0; i < p.size();) {
          if (p.compare(i, kSpmSpace.size(), kSpmSpace) == 0) {
            s += ' ';
            i += kSpmSpace.size();
          } else {
            s += p[i++];
          }
        }
        return s;
      }
      return p;
    case TokenKind::kSpecial:
    case TokenKind::kAdded:
      return p;
  }
  return p;
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  bool first = true;
  for (int32_t id : ids) {
    if (skip_special && is_special(id)) continue;
    std::string s = token_bytes(id);
    if (first && m_.mode == BpeMode::kSentencePiece && m_.strip_leading_space && !s.empty() &&
        s[0] == ' ')
      out.append(s, 1);
    else
      out += s;
    first = false;
  }
  return out;
}

std::optional<int32_t> BpeTokenizer::token_id(std::string_view piece) const {
  if (auto it = added_to_id_.find(piece); it != added_to_id_.end()) return it->second;
  if (auto it = piece_to_id_.find(piece); it != piece_to_id_.end()) return it->second;
  if (m_.mode == BpeMode::kByteLevel) {
    std::string raw;
    if (byte_level_decode(piece, raw)) {
      if (auto it = piece_to_id_.find(raw); it != piece_to_id_.end()) return it->second;
    }
  }
  return std::nullopt;
}

bool BpeTokenizer::is_special(int32_t id) const {
  return id >= 0 && size_t(id) < m_.kinds.size() && m_.kinds[id] == TokenKind::kSpecial;
}

}  // namespace tok

// ---------------------------------------------------------------------------------------------
// Utf8StreamDecoder

std::string Utf8StreamDecoder::push(std::string_view bytes) {
  pending_.append(bytes);
  // Hold back a trailing lead byte whose continuation bytes have not all arrived yet.
  size_t n = pending_.size();
  size_t cut = n;
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    unsigned char c = static_cast<unsigned char>(pending_[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (len > back) cut = n - back;    // incomplete sequence at the end
    break;
  }
  std::string out = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return out;
}

std::string Utf8StreamDecoder::finish() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace qeval
