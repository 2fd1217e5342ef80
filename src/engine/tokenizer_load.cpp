// Tokenizer loaders: Hugging Face tokenizer.json (+ tokenizer_config.json,
// generation_config.json), tiktoken rank files with a named pre-tokenizer, GGUF vocabularies
// (VocabData) and SentencePiece ModelProto files. All of them build a tok::BpeModel.
#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "engine/tokenizer_bpe.h"

namespace qeval {

using json = nlohmann::json;
using tok::BpeMode;
using tok::BpeModel;
using tok::BpeTokenizer;
using tok::MergeSource;
using tok::PreTokStep;
using tok::TokenKind;

namespace {

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";

// End-of-turn / end-of-text markers of the supported model families; present ones become stop ids.
const char* const kStopMarkers[] = {
    "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>",
    "<\xEF\xBD\x9C" "end\xE2\x96\x81" "of\xE2\x96\x81" "sentence\xEF\xBD\x9C>",  // <｜end▁of▁sentence｜>
    "</s>",
};

void add_stop(Tokenizer& t, std::optional<int32_t> id) {
  if (id && std::find(t.stop_ids.begin(), t.stop_ids.end(), *id) == t.stop_ids.end())
    t.stop_ids.push_back(*id);
}

void add_marker_stops(Tokenizer& t) {
  for (const char* m : kStopMarkers) {
    auto id = t.token_id(m);
    if (id && t.is_special(*id)) add_stop(t, id);
  }
}

// ----------------------------------------------------------------------------- base64

int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

bool b64_decode(std::string_view in, std::string& out) {
  out.clear();
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    int v = b64_value(c);
    if (v < 0) return false;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return true;
}

// ----------------------------------------------------------------------------- tiktoken

struct SpecialList {
  int32_t first_id;
  std::vector<std::string> names;
  std::optional<int32_t> bos, eos;
  bool add_bos;
};

SpecialList tiktoken_specials(std::string_view pre, int32_t n_ranks) {
  SpecialList s{n_ranks, {}, std::nullopt, std::nullopt, false};
  if (pre == "llama3" || pre == "llama-bpe") {
    // Meta Llama 3 (llama/tokenizer.py): 256 special tokens after the 128,000 ranks.
    s.names = {"<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
               "<|reserved_special_token_1|>", "<|reserved_special_token_2|>",
               "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
               "<|reserved_special_token_4|>", "<|eot_id|>"};
    for (int i = 5; s.names.size() < 256; ++i)
      s.names.push_back(fmt::format("<|reserved_special_token_{}|>", i));
    s.bos = n_ranks;
    s.eos = n_ranks + 1;
    s.add_bos = true;
  } else if (pre == "qwen2") {
    // Qwen2.5 added tokens (151643..151664); the first three are shared by Qwen1.5 / Qwen2.
    s.names = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
               "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
               "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
               "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
               "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"};
    s.eos = n_ranks;
  }
  return s;
}

// ----------------------------------------------------------------------------- tokenizer.json

const json* find_key(const json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

// The text of a token given as a string or as {"content": ...}.
std::optional<std::string> token_text(const json* j) {
  if (!j) return std::nullopt;
  if (j->is_string()) return j->get<std::string>();
  if (j->is_object()) {
    if (auto c = find_key(*j, "content"); c && c->is_string()) return c->get<std::string>();
  }
  return std::nullopt;
}

std::string regex_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x80 && !std::isalnum(u)) out += '\\';
    out += c;
  }
  return out;
}

struct HfPreState {
  std::vector<PreTokStep> steps;
  bool byte_level = false;
  bool byte_level_prefix_space = false;
  bool metaspace = false;
  bool metaspace_prefix = false;
  bool metaspace_first_only = false;
};

PreTokStep::Behavior parse_behavior(const std::string& b, const std::string& where) {
  using B = PreTokStep::Behavior;
  if (b == "Isolated") return B::kIsolated;
  if (b == "Removed") return B::kRemoved;
  if (b == "MergedWithPrevious") return B::kMergedWithPrevious;
  if (b == "MergedWithNext") return B::kMergedWithNext;
  if (b == "Contiguous") return B::kContiguous;
  fail("{}: pre_tokenizer Split behavior \"{}\" is not supported", where, b);
}

void parse_pre_tokenizer(const json& j, HfPreState& st, const std::string& where) {
  std::string type = j.value("type", "");
  if (type == "Sequence") {
    for (const json& p : j.at("pretokenizers")) parse_pre_tokenizer(p, st, where);
  } else if (type == "Split") {
    const json& pat = j.at("pattern");
    std::string re;
    if (auto r = find_key(pat, "Regex")) re = r->get<std::string>();
    else if (auto s = find_key(pat, "String")) re = regex_escape(s->get<std::string>());
    else fail("{}: pre_tokenizer Split has no pattern.Regex / pattern.String", where);
    PreTokStep step;
    step.regex = std::make_shared<const tok::Regex>(re, where + " pre_tokenizer Split");
    step.behavior = parse_behavior(j.value("behavior", "Isolated"), where);
    step.invert = j.value("invert", false);
    st.steps.push_back(std::move(step));
  } else if (type == "ByteLevel") {
    st.byte_level = true;
    st.byte_level_prefix_space = j.value("add_prefix_space", false);
    if (j.value("use_regex", true)) {
      auto gpt2 = tok::named_pretokenizer("gpt2");
      st.steps.insert(st.steps.end(), gpt2->begin(), gpt2->end());
    }
  } else if (type == "Digits") {
    PreTokStep step;
    step.regex = std::make_shared<const tok::Regex>(
        j.value("individual_digits", false) ? "\\p{N}" : "\\p{N}+", where + " pre_tokenizer Digits");
    st.steps.push_back(std::move(step));
  } else if (type == "Metaspace") {
    st.metaspace = true;
    std::string scheme = j.value("prepend_scheme", j.value("add_prefix_space", true) ? "always" : "never");
    st.metaspace_prefix = scheme != "never";
    st.metaspace_first_only = scheme == "first";
    // split (HF's default when the field is absent): each piece starts at a U+2581, which
    // stays with the text after it (MergedWithNext).
    if (j.value("split", true)) {
      PreTokStep step;
      step.regex = std::make_shared<const tok::Regex>("\xe2\x96\x81", where + " pre_tokenizer Metaspace");
      step.behavior = PreTokStep::Behavior::kMergedWithNext;
      st.steps.push_back(std::move(step));
    }
  } else {
    fail("{}: pre_tokenizer type \"{}\" is not supported (supported: Split, ByteLevel, Digits, "
         "Metaspace, Sequence)", where, type);
  }
}

// Collects normalizer facts; returns false on an unsupported normalizer.
void parse_normalizer(const json& j, bool& prepend_space, bool& replace_space, const std::string& where) {
  std::string type = j.value("type", "");
  if (type == "Sequence") {
    for (const json& n : j.at("normalizers")) parse_normalizer(n, prepend_space, replace_space, where);
  } else if (type == "Prepend") {
    if (j.value("prepend", "") != kSpmSpace)
      fail("{}: normalizer Prepend of \"{}\" is not supported (only U+2581)", where, j.value("prepend", ""));
    prepend_space = true;
  } else if (type == "Replace") {
    auto s = token_text(find_key(j.at("pattern"), "String"));
    if (!s || *s != " " || j.value("content", "") != kSpmSpace)
      fail("{}: normalizer Replace is supported only for \" \" -> U+2581", where);
    replace_space = true;
  } else if (type == "NFC" || type == "NFKC") {
    // Accepted without normalizing: the evaluation texts are already composed (NFC); see report.
  } else {
    fail("{}: normalizer type \"{}\" is not supported", where, type);
  }
}

// post_processor: first template element a SpecialToken -> BOS; last one -> EOS.
void parse_post_processor(const json& j, std::optional<std::string>& bos, std::optional<std::string>& eos) {
  std::string type = j.value("type", "");
  if (type == "Sequence") {
    for (const json& p : j.at("processors")) parse_post_processor(p, bos, eos);
  } else if (type == "TemplateProcessing") {
    const json& single = j.at("single");
    if (!single.is_array() || single.empty()) return;
    if (auto s = find_key(single.front(), "SpecialToken")) bos = s->value("id", "");
    if (single.size() > 1)
      if (auto s = find_key(single.back(), "SpecialToken")) eos = s->value("id", "");
  }
}

std::optional<json> read_json_opt(const fs::path& p) {
  if (!fs::exists(p)) return std::nullopt;
  try {
    return json::parse(read_file(p));
  } catch (const json::exception& e) {
    fail("{}: invalid JSON: {}", p.string(), e.what());
  }
}

void finish_ids_from_names(Tokenizer& t, const std::optional<std::string>& bos,
                           const std::optional<std::string>& eos) {
  if (bos) if (auto id = t.token_id(*bos)) t.bos_id = id;
  if (eos) if (auto id = t.token_id(*eos)) t.eos_id = id;
}

}  // namespace

// =============================================================================== loaders

std::unique_ptr<Tokenizer> load_tiktoken(const fs::path& file, std::string_view pre) {
  const std::string where = file.string();
  std::string data = read_file(file);
  BpeModel m;
  m.mode = BpeMode::kByteLevel;
  m.merge_source = MergeSource::kRanks;
  m.ignore_merges = true;
  m.where = where;
  auto steps = tok::named_pretokenizer(pre);
  if (!steps)
    fail("{}: unknown pre-tokenizer name \"{}\" (known: qwen2, llama3, gpt2, deepseek-v3)", where, pre);
  m.pre = std::move(*steps);
  size_t line_no = 0;
  std::string bytes;
  // Ranks may leave gaps, but not unbounded ones (the piece table is as long as the largest
  // rank, and the special ids follow it).
  const long max_rank = 2 * static_cast<long>(std::count(data.begin(), data.end(), '\n')) + 1024;
  for (size_t pos = 0; pos < data.size();) {
    size_t nl = data.find('\n', pos);
    if (nl == std::string::npos) nl = data.size();
    std::string_view line(data.data() + pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    size_t sp = line.find(' ');
    long rank = -1;
    if (sp != std::string_view::npos) {
      try {
        rank = std::stol(std::string(line.substr(sp + 1)));
      } catch (...) {
        rank = -1;
      }
    }
    if (sp == std::string_view::npos || rank < 0 || !b64_decode(line.substr(0, sp), bytes) || bytes.empty())
      fail("{}:{}: expected \"<base64 token> <rank>\"; is this a tiktoken rank file?", where, line_no);
    if (rank > max_rank)
      fail("{}:{}: rank {} is beyond {}: the file has {} lines, and ranks may exceed that count only by a "
           "bounded gap (hint: a corrupt or hand-edited rank file?)",
           where, line_no, rank, max_rank, (max_rank - 1024) / 2);
    if (size_t(rank) >= m.pieces.size()) {
      m.pieces.resize(rank + 1);
      m.kinds.resize(rank + 1, TokenKind::kUnused);
    }
    m.pieces[rank] = bytes;
    m.kinds[rank] = TokenKind::kNormal;
  }
  if (m.pieces.empty()) fail("{}: no ranks found", where);
  SpecialList sp = tiktoken_specials(pre, int32_t(m.pieces.size()));
  for (const std::string& name : sp.names) {
    m.pieces.push_back(name);
    m.kinds.push_back(TokenKind::kSpecial);
  }
  auto t = std::make_unique<BpeTokenizer>(std::move(m));
  t->bos_id = sp.bos;
  t->eos_id = sp.eos;
  t->add_bos = sp.add_bos;
  add_stop(*t, t->eos_id);
  add_marker_stops(*t);
  return t;
}

std::unique_ptr<Tokenizer> make_tokenizer(const VocabData& v) {
  const std::string where = "GGUF tokenizer.ggml (model \"" + v.model + "\")";
  BpeModel m;
  m.where = where;
  const size_t n = v.tokens.size();
  if (n == 0) fail("{}: tokenizer.ggml.tokens is empty", where);
  if (!v.token_types.empty() && v.token_types.size() != n)
    fail("{}: {} token types for {} tokens", where, v.token_types.size(), n);
  m.kinds.resize(n, TokenKind::kNormal);
  for (size_t i = 0; i < v.token_types.size(); ++i) {
    switch (v.token_types[i]) {
      case 2: case 3: m.kinds[i] = TokenKind::kSpecial; break;
      case 4: m.kinds[i] = TokenKind::kAdded; break;
      case 5: m.kinds[i] = TokenKind::kUnused; break;
      case 6: m.kinds[i] = TokenKind::kByte; break;
      default: m.kinds[i] = TokenKind::kNormal; break;
    }
  }
  if (v.model == "llama") {
    m.mode = BpeMode::kSentencePiece;
    m.merge_source = MergeSource::kScores;
    m.pieces = v.tokens;
    m.scores = v.scores;
    if (m.scores.size() != n) fail("{}: tokenizer.ggml.scores has {} entries for {} tokens", where, m.scores.size(), n);
    m.add_space_prefix = v.add_space_prefix;
    m.strip_leading_space = v.add_space_prefix;
    m.byte_fallback = true;
    m.unk_id = v.unk_id;
    if (v.token_types.empty()) {  // infer byte tokens by their shape
      for (size_t i = 0; i < n; ++i) {
        const std::string& p = v.tokens[i];
        if (p.size() == 6 && p.compare(0, 3, "<0x") == 0 && p[5] == '>') m.kinds[i] = TokenKind::kByte;
      }
    }
  } else if (v.model == "gpt2") {
    m.mode = BpeMode::kByteLevel;
    m.merge_source = MergeSource::kMergeList;
    auto steps = tok::named_pretokenizer(v.pre);
    if (!steps)
      fail("{}: tokenizer.ggml.pre \"{}\" is not supported (known: llama-bpe, qwen2, "
           "deepseek-r1-qwen, deepseek-v3, deepseek-llm, default)", where, v.pre);
    m.pre = std::move(*steps);
    m.ignore_merges = v.pre == "llama-bpe" || v.pre == "llama3";
    m.pieces.resize(n);
    for (size_t i = 0; i < n; ++i) {
      if (m.kinds[i] == TokenKind::kNormal || m.kinds[i] == TokenKind::kUnused)
        tok::byte_level_decode(v.tokens[i], m.pieces[i]);
      else
        m.pieces[i] = v.tokens[i];
    }
    m.merges.reserve(v.merges.size());
    for (size_t i = 0; i < v.merges.size(); ++i) {
      const std::string& s = v.merges[i];
      size_t sp = s.find(' ', 1);
      if (sp == std::string::npos) fail("{}: tokenizer.ggml.merges[{}] \"{}\" has no space", where, i, s);
      std::string a, b;
      tok::byte_level_decode(std::string_view(s).substr(0, sp), a);
      tok::byte_level_decode(std::string_view(s).substr(sp + 1), b);
      m.merges.emplace_back(std::move(a), std::move(b));
    }
  } else {
    fail("{}: tokenizer model \"{}\" is not supported (supported: llama, gpt2)", where, v.model);
  }
  auto t = std::make_unique<BpeTokenizer>(std::move(m));
  auto check = [&](std::optional<int32_t> id, const char* key) {
    if (id && (*id < 0 || size_t(*id) >= n)) fail("{}: {} = {} is out of range", where, key, *id);
    return id;
  };
  t->bos_id = check(v.bos_id, "tokenizer.ggml.bos_token_id");
  t->eos_id = check(v.eos_id, "tokenizer.ggml.eos_token_id");
  t->add_bos = v.add_bos && t->bos_id.has_value();
  t->add_eos = v.add_eos;
  t->chat_template = v.chat_template;
  add_stop(*t, t->eos_id);
  add_stop(*t, check(v.eot_id, "tokenizer.ggml.eot_token_id"));
  add_marker_stops(*t);
  return t;
}

std::unique_ptr<Tokenizer> load_hf_tokenizer(const fs::path& model_dir) {
  const fs::path tj_path = model_dir / "tokenizer.json";
  const std::string where = tj_path.string();
  if (!fs::exists(tj_path))
    fail("{}: not found; the engine needs a Hugging Face tokenizer.json next to the weights", where);
  json tj = *read_json_opt(tj_path);
  BpeModel m;
  m.where = where;
  std::optional<std::string> bos_name, eos_name;
  bool add_bos = false, add_eos = false;
  try {
    const json& model = tj.at("model");
    std::string type = model.value("type", "BPE");
    if (type != "BPE")
      fail("{}: model.type \"{}\" is not supported (only BPE: byte-level or SentencePiece-style)", where, type);
    HfPreState pre;
    if (auto p = find_key(tj, "pre_tokenizer")) parse_pre_tokenizer(*p, pre, where);
    bool decoder_byte_level = false;
    if (auto d = find_key(tj, "decoder")) decoder_byte_level = d->dump().find("\"ByteLevel\"") != std::string::npos;
    bool prepend = false, replace = false;
    if (auto nz = find_key(tj, "normalizer")) parse_normalizer(*nz, prepend, replace, where);
    m.byte_fallback = model.value("byte_fallback", false);
    m.ignore_merges = model.value("ignore_merges", false);
    if (pre.byte_level || decoder_byte_level) {
      m.mode = BpeMode::kByteLevel;
      m.byte_level_prefix_space = pre.byte_level_prefix_space;
    } else if (m.byte_fallback || prepend || replace || pre.metaspace) {
      m.mode = BpeMode::kSentencePiece;
      m.add_space_prefix = prepend || pre.metaspace_prefix;
      m.prefix_only_first = pre.metaspace_first_only;
      // The Metaspace pre-tokenizer prepends only to text not already starting with a space;
      // the legacy Prepend normalizer always does.
      m.prefix_unless_space = pre.metaspace_prefix && !prepend;
      m.strip_leading_space = m.add_space_prefix;
    } else {
      fail("{}: BPE model is neither byte-level (ByteLevel pre-tokenizer/decoder) nor "
           "SentencePiece-style (byte_fallback / U+2581 normalizer); not supported", where);
    }
    m.pre = std::move(pre.steps);

    const json& vocab = model.at("vocab");
    if (!vocab.is_object()) fail("{}: model.vocab must be an object of piece -> id", where);
    // Ids may leave gaps, but not unbounded ones: the piece table is as long as the largest id,
    // so one id of 10^7 in a few-KB file would allocate ~500 MB.
    const json* added_tokens = find_key(tj, "added_tokens");
    const int64_t n_entries = static_cast<int64_t>(vocab.size() + (added_tokens ? added_tokens->size() : 0));
    const int64_t max_id = 2 * n_entries + 1024;
    auto place = [&](int64_t id, std::string piece, TokenKind kind) {
      if (id < 0 || id > max_id)
        fail("{}: token id {} is outside [0, {}]: the file lists {} tokens, and ids may exceed that count only "
             "by a bounded gap (hint: a corrupt or hand-edited tokenizer.json?)",
             where, id, max_id, n_entries);
      if (size_t(id) >= m.pieces.size()) {
        m.pieces.resize(id + 1);
        m.kinds.resize(id + 1, TokenKind::kUnused);
      }
      m.pieces[id] = std::move(piece);
      m.kinds[id] = kind;
    };
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const std::string& key = it.key();
      std::string piece;
      TokenKind kind = TokenKind::kNormal;
      if (m.mode == BpeMode::kByteLevel) {
        tok::byte_level_decode(key, piece);
      } else {
        piece = key;
        if (m.byte_fallback && key.size() == 6 && key.compare(0, 3, "<0x") == 0 && key[5] == '>')
          kind = TokenKind::kByte;
      }
      place(it.value().get<int64_t>(), std::move(piece), kind);
    }
    if (const json* added = added_tokens) {
      for (const json& a : *added) {
        int64_t id = a.at("id").get<int64_t>();
        std::string content = a.at("content").get<std::string>();
        bool special = a.value("special", false);
        place(id, content, special ? TokenKind::kSpecial : TokenKind::kAdded);
        if (a.value("lstrip", false)) m.added_lstrip.push_back(int32_t(id));
        if (a.value("rstrip", false)) m.added_rstrip.push_back(int32_t(id));
      }
    }
    if (auto unk = find_key(model, "unk_token"); unk && unk->is_string()) {
      auto it = vocab.find(unk->get<std::string>());
      if (it != vocab.end()) m.unk_id = it->get<int32_t>();
    }
    m.merge_source = MergeSource::kMergeList;
    if (auto merges = find_key(model, "merges")) {
      m.merges.reserve(merges->size());
      for (const json& mj : *merges) {
        std::string a, b;
        if (mj.is_string()) {
          const std::string s = mj.get<std::string>();
          size_t sp = s.find(' ', 1);
          if (sp == std::string::npos) fail("{}: model.merges entry \"{}\" has no space", where, s);
          a = s.substr(0, sp);
          b = s.substr(sp + 1);
        } else if (mj.is_array() && mj.size() == 2) {
          a = mj[0].get<std::string>();
          b = mj[1].get<std::string>();
        } else {
          fail("{}: model.merges entries must be \"a b\" strings or [a, b] pairs", where);
        }
        if (m.mode == BpeMode::kByteLevel) {
          std::string ra, rb;
          tok::byte_level_decode(a, ra);
          tok::byte_level_decode(b, rb);
          m.merges.emplace_back(std::move(ra), std::move(rb));
        } else {
          m.merges.emplace_back(std::move(a), std::move(b));
        }
      }
    }
    if (auto pp = find_key(tj, "post_processor")) {
      parse_post_processor(*pp, bos_name, eos_name);
      add_bos = bos_name.has_value();
      add_eos = eos_name.has_value();
    }
  } catch (const json::exception& e) {
    fail("{}: unexpected structure: {}", where, e.what());
  }
  auto t = std::make_unique<BpeTokenizer>(std::move(m));
  finish_ids_from_names(*t, bos_name, eos_name);
  t->add_bos = add_bos && t->bos_id;
  t->add_eos = add_eos && t->eos_id;

  // tokenizer_config.json: add_bos_token / add_eos_token, bos/eos names, chat_template.
  const fs::path tc_path = model_dir / "tokenizer_config.json";
  if (auto tc = read_json_opt(tc_path)) {
    try {
      auto bos = token_text(find_key(*tc, "bos_token"));
      auto eos = token_text(find_key(*tc, "eos_token"));
      finish_ids_from_names(*t, bos, eos);
      if (auto b = find_key(*tc, "add_bos_token")) t->add_bos = b->get<bool>() && t->bos_id;
      if (auto e = find_key(*tc, "add_eos_token")) t->add_eos = e->get<bool>() && t->eos_id;
      if (auto ct = find_key(*tc, "chat_template")) {
        if (ct->is_string()) {
          t->chat_template = ct->get<std::string>();
        } else if (ct->is_array()) {  // [{name, template}, ...]: the "default" one
          for (const json& e : *ct)
            if (e.value("name", "") == "default") t->chat_template = e.value("template", "");
        }
      }
    } catch (const json::exception& e) {
      fail("{}: unexpected structure: {}", tc_path.string(), e.what());
    }
  }
  if (t->chat_template.empty() && fs::exists(model_dir / "chat_template.jinja"))
    t->chat_template = read_file(model_dir / "chat_template.jinja");

  // generation_config.json: eos_token_id (int or list) -> stop ids.
  add_stop(*t, t->eos_id);
  const fs::path gc_path = model_dir / "generation_config.json";
  if (auto gc = read_json_opt(gc_path)) {
    try {
      // Ids are read as int64 and range checked: get<int32_t> would wrap 2^32 + 2 to 2.
      auto checked_id = [&](const json& v, const char* key) -> int32_t {
        if (!v.is_number_integer())
          fail("{}: {} must be an integer or a list of integers, got {}", gc_path.string(), key, v.dump());
        const int64_t id = v.get<int64_t>();
        if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX))
          fail("{}: {} {} is outside the vocabulary (size {})", gc_path.string(), key, v.dump(), t->vocab_size());
        if (id < 0 || id >= t->vocab_size())
          fail("{}: {} {} is outside the vocabulary (size {})", gc_path.string(), key, id, t->vocab_size());
        return static_cast<int32_t>(id);
      };
      if (auto e = find_key(*gc, "eos_token_id")) {
        std::vector<int32_t> ids;
        if (e->is_array()) {
          for (const json& x : *e) ids.push_back(checked_id(x, "eos_token_id"));
        } else {
          ids.push_back(checked_id(*e, "eos_token_id"));
        }
        for (int32_t id : ids) add_stop(*t, id);
        if (!t->eos_id && !ids.empty()) t->eos_id = ids.front();
      }
      if (auto b = find_key(*gc, "bos_token_id"); b && b->is_number_integer() && !t->bos_id)
        t->bos_id = checked_id(*b, "bos_token_id");
    } catch (const json::exception& e) {
      fail("{}: unexpected structure: {}", gc_path.string(), e.what());
    }
  }
  add_marker_stops(*t);
  return t;
}

// ----------------------------------------------------------------------------- SentencePiece

namespace tok {

namespace {

struct ProtoReader {
  const uint8_t* p;
  const uint8_t* end;
  const std::string& where;

  bool done() const { return p >= end; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) fail("{}: truncated protobuf varint; is this a SentencePiece .model file?", where);
      uint8_t b = *p++;
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("{}: malformed protobuf varint", where);
  }
  std::string_view bytes() {
    uint64_t len = varint();
    if (len > uint64_t(end - p)) fail("{}: protobuf field length {} runs past the end", where, len);
    std::string_view s(reinterpret_cast<const char*>(p), len);
    p += len;
    return s;
  }
  uint32_t fixed32() {
    if (end - p < 4) fail("{}: truncated protobuf fixed32", where);
    uint32_t v;
    std::memcpy(&v, p, 4);
    p += 4;
    return v;
  }
  void skip(int wire) {
    switch (wire) {
      case 0: varint(); break;
      case 1: if (end - p < 8) fail("{}: truncated protobuf fixed64", where); p += 8; break;
      case 2: bytes(); break;
      case 5: fixed32(); break;
      default: fail("{}: unsupported protobuf wire type {}; is this a SentencePiece .model file?", where, wire);
    }
  }
};

ProtoReader sub_reader(std::string_view s, const std::string& where) {
  auto b = reinterpret_cast<const uint8_t*>(s.data());
  return ProtoReader{b, b + s.size(), where};
}

}  // namespace

VocabData read_sentencepiece_model(const fs::path& file) {
  const std::string where = file.string();
  const std::string data = read_file(file);
  VocabData v;
  v.model = "llama";
  v.pre = "default";
  v.bos_id = 1;
  v.eos_id = 2;
  v.unk_id = 0;
  int64_t model_type = 1;  // UNIGRAM is SentencePiece's default
  ProtoReader r = sub_reader(data, where);
  while (!r.done()) {
    uint64_t key = r.varint();
    int field = int(key >> 3), wire = int(key & 7);
    if (field == 1 && wire == 2) {  // SentencePiece piece
      ProtoReader pr = sub_reader(r.bytes(), where);
      std::string piece;
      float score = 0;
      int32_t type = 1;
      while (!pr.done()) {
        uint64_t k = pr.varint();
        int f = int(k >> 3), w = int(k & 7);
        if (f == 1 && w == 2) piece = std::string(pr.bytes());
        else if (f == 2 && w == 5) { uint32_t u = pr.fixed32(); std::memcpy(&score, &u, 4); }
        else if (f == 3 && w == 0) type = int32_t(pr.varint());
        else pr.skip(w);
      }
      v.tokens.push_back(std::move(piece));
      v.scores.push_back(score);
      v.token_types.push_back(type);
    } else if (field == 2 && wire == 2) {  // TrainerSpec
      ProtoReader tr = sub_reader(r.bytes(), where);
      while (!tr.done()) {
        uint64_t k = tr.varint();
        int f = int(k >> 3), w = int(k & 7);
        if (w != 0) { tr.skip(w); continue; }
        int64_t val = int64_t(tr.varint());
        auto id = [&]() -> std::optional<int32_t> { return int32_t(val) < 0 ? std::nullopt : std::optional<int32_t>(int32_t(val)); };
        if (f == 3) model_type = val;
        else if (f == 40) v.unk_id = id();
        else if (f == 41) v.bos_id = id();
        else if (f == 42) v.eos_id = id();
      }
    } else if (field == 3 && wire == 2) {  // NormalizerSpec
      ProtoReader nr = sub_reader(r.bytes(), where);
      while (!nr.done()) {
        uint64_t k = nr.varint();
        int f = int(k >> 3), w = int(k & 7);
        if (f == 3 && w == 0) v.add_space_prefix = nr.varint() != 0;
        else nr.skip(w);
      }
    } else {
      r.skip(wire);
    }
  }
  if (v.tokens.empty()) fail("{}: no pieces found; is this a SentencePiece .model file?", where);
  if (model_type != 2)
    fail("{}: SentencePiece model_type {} is not BPE (2); unigram models are not supported", where, model_type);
  return v;
}

}  // namespace tok
}  // namespace qeval
