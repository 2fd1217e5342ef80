// Tokenizer tests: small hand-made vocabularies (byte-level BPE via tiktoken and tokenizer.json,
// SentencePiece BPE via VocabData), the UTF-8 stream decoder, error paths, and — when
// $QEVAL_MODELS is set — exact agreement with published reference encodings (llama.cpp's
// tokenizer test vectors for Qwen2 / Llama 3 / Llama 2, Meta's Llama 3 unit test, stories260K).
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "engine/tokenizer_bpe.h"

namespace fs = std::filesystem;
using qeval::Tokenizer;
using Ids = std::vector<int32_t>;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("qeval_tok_" + name + "_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

void write(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

std::string b64(std::string_view s) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < s.size(); i += 3) {
    uint32_t v = (uint8_t(s[i]) << 16) | (uint8_t(s[i + 1]) << 8) | uint8_t(s[i + 2]);
    for (int k = 3; k >= 0; --k) out += t[(v >> (6 * k)) & 63];
  }
  if (i + 1 == s.size()) {
    uint32_t v = uint8_t(s[i]) << 16;
    out += t[(v >> 18) & 63];
    out += t[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == s.size()) {
    uint32_t v = (uint8_t(s[i]) << 16) | (uint8_t(s[i + 1]) << 8);
    out += t[(v >> 18) & 63];
    out += t[(v >> 12) & 63];
    out += t[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

// A tiktoken file: all 256 bytes (rank = byte value), then `extra` pieces in rank order.
fs::path tiny_tiktoken(const std::vector<std::string>& extra) {
  std::string s;
  for (int b = 0; b < 256; ++b) s += b64(std::string(1, char(b))) + " " + std::to_string(b) + "\n";
  for (size_t i = 0; i < extra.size(); ++i) s += b64(extra[i]) + " " + std::to_string(256 + i) + "\n";
  fs::path p = temp_dir("tiktoken") / "tiny.tiktoken";
  write(p, s);
  return p;
}

const char* models_dir() {
  const char* d = std::getenv("QEVAL_MODELS");
  return d && *d ? d : nullptr;
}

// llama.cpp test vectors: inputs separated by "\n__ggml_vocab_test__\n"; one output line each.
std::vector<std::string> read_inp(const fs::path& p) {
  std::string s = qeval::read_file(p);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> out;
  size_t pos = 0;
  for (size_t k; (k = s.find(sep, pos)) != std::string::npos; pos = k + sep.size())
    out.push_back(s.substr(pos, k - pos));
  return out;
}

std::vector<Ids> read_out(const fs::path& p) {
  std::string s = qeval::read_file(p);
  std::vector<Ids> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t nl = s.find('\n', pos);
    if (nl == std::string::npos) nl = s.size();
    std::string line = s.substr(pos, nl - pos);
    Ids ids;
    size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && line[i] == ' ') ++i;
      if (i >= line.size()) break;
      size_t j = i;
      while (j < line.size() && line[j] != ' ') ++j;
      ids.push_back(std::stoi(line.substr(i, j - i)));
      i = j;
    }
    out.push_back(ids);
    pos = nl + 1;
  }
  return out;
}

// Runs every llama.cpp vector through `tok`; returns the number of mismatches (and prints them).
int check_llamacpp_vectors(const Tokenizer& tok, const std::string& out_name) {
  fs::path dir = fs::path(models_dir()) / "llamacpp-tokenizer-tests";
  auto inp = read_inp(dir / "ggml-vocab.gguf.inp");
  auto out = read_out(dir / out_name);
  REQUIRE(inp.size() == 46);
  REQUIRE(out.size() >= inp.size());
  int bad = 0;
  for (size_t i = 0; i < inp.size(); ++i) {
    Ids got = tok.encode(inp[i], /*add_special=*/false, /*parse_special=*/false);
    if (got != out[i]) {
      ++bad;
      UNSCOPED_INFO("mismatch #" << i << " for \"" << inp[i] << "\"");
    }
    // Round trip: decoding the reference ids gives the input back.
    if (tok.decode(out[i]) != inp[i]) {
      ++bad;
      UNSCOPED_INFO("decode mismatch #" << i << " for \"" << inp[i] << "\"");
    }
  }
  return bad;
}

#define REQUIRE_MODELS()                                                  \
  if (!models_dir()) {                                                    \
    WARN("QEVAL_MODELS is unset: skipping tokenizer reference test");     \
    return;                                                               \
  }

}  // namespace

// ============================================================================ unit tests

TEST_CASE("tiktoken: merges follow ranks of the concatenation", "[tokenizer][unit]") {
  // "ab" (256) merges before "bc" (257); "abc" (258) from "ab"+"c".
  auto tok = qeval::load_tiktoken(tiny_tiktoken({"ab", "bc", "abc", " a", "cd"}), "qwen2");
  CHECK(tok->encode("abc", false) == Ids{258});          // whole word is a rank
  CHECK(tok->encode("abcd", false) == Ids{258, 'd'});    // ab, abc, then d
  CHECK(tok->encode("bcd", false) == Ids{257, 'd'});
  CHECK(tok->encode("xbcd", false) == Ids{'x', 257, 'd'});
  CHECK(tok->encode("acd", false) == Ids{'a', 260});
  // " abc" is one pre-token ([^\r\n\p{L}\p{N}]?\p{L}+); "ab" (256) beats " a" (259).
  CHECK(tok->encode(" abc", false) == Ids{' ', 258});
  CHECK(tok->encode(" acd", false) == Ids{259, 260});
  CHECK(tok->decode(Ids{259, 260}) == " acd");
  // Qwen specials follow the ranks; parse_special controls whether they are recognised.
  int32_t endoftext = 256 + 5;
  CHECK(tok->token_id("<|endoftext|>") == endoftext);
  CHECK(tok->token_id("<|im_end|>") == endoftext + 2);
  CHECK(tok->encode("a<|im_end|>", false) == Ids{'a', endoftext + 2});
  Ids plain = tok->encode("a<|im_end|>", false, /*parse_special=*/false);
  CHECK(plain.size() > 2);
  CHECK(tok->decode(plain) == "a<|im_end|>");
  CHECK(tok->is_special(endoftext + 2));
  CHECK_FALSE(tok->is_special('a'));
  CHECK(tok->decode(Ids{'a', endoftext + 2}, /*skip_special=*/true) == "a");
  CHECK(tok->eos_id == endoftext);
  CHECK_FALSE(tok->add_bos);
  CHECK(std::find(tok->stop_ids.begin(), tok->stop_ids.end(), endoftext + 2) != tok->stop_ids.end());
}

TEST_CASE("tiktoken: llama3 specials and digit grouping", "[tokenizer][unit]") {
  auto tok = qeval::load_tiktoken(tiny_tiktoken({"12", "123"}), "llama3");
  CHECK(tok->vocab_size() == 256 + 2 + 256);
  CHECK(tok->bos_id == 258);
  CHECK(tok->token_id("<|eot_id|>") == 258 + 9);
  CHECK(tok->add_bos);
  // \p{N}{1,3}: "12345" -> "123" "45"
  CHECK(tok->encode("12345", true) == Ids{258, 257, '4', '5'});
  // Tiny vocab has no token for "<|foo|>" as a whole, so it is plain text.
  CHECK(tok->encode("<|foo|>", false).size() > 1);
}

TEST_CASE("tiktoken: malformed files are errors naming the line", "[tokenizer][unit]") {
  fs::path p = temp_dir("bad") / "bad.tiktoken";
  write(p, "YQ== 0\nnot-base64! 1\n");
  CHECK_THROWS_WITH(qeval::load_tiktoken(p, "qwen2"), Catch::Contains("bad.tiktoken:2"));
  write(p, "YQ== 0\n");
  CHECK_THROWS_WITH(qeval::load_tiktoken(p, "qwen2"), Catch::Contains("no token for byte"));
  // A rank far past the line count would size the piece table by it.
  write(p, "YQ== 0\nYg== 9999999\n");
  CHECK_THROWS_WITH(qeval::load_tiktoken(p, "qwen2"), Catch::Contains("bad.tiktoken:2: rank 9999999 is beyond"));
  CHECK_THROWS_WITH(qeval::load_tiktoken(tiny_tiktoken({}), "nonesuch"), Catch::Contains("nonesuch"));
}

TEST_CASE("byte-level tokenizer.json with merges, added tokens and a Split regex", "[tokenizer][unit]") {
  using nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[qeval::tok::byte_level_encode(std::string(1, char(b)))] = b;
  // GPT-2 mapped: "Ġ" is space.
  vocab["Ġh"] = 256;
  vocab["Ġhi"] = 257;
  vocab["hi"] = 258;
  json tj = json::parse(R"({
    "model": {"type": "BPE", "merges": ["Ġ h", "Ġh i", "h i"]},
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": " ?\\p{L}+|\\s+|[^\\s\\p{L}]+"}, "behavior": "Isolated", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]},
    "decoder": {"type": "ByteLevel"},
    "added_tokens": [{"id": 259, "content": "<|end|>", "special": true},
                     {"id": 260, "content": "<|begin|>", "special": true}],
    "post_processor": {"type": "TemplateProcessing", "single": [
      {"SpecialToken": {"id": "<|begin|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]}
  })");
  tj["model"]["vocab"] = vocab;
  fs::path dir = temp_dir("hfbl");
  write(dir / "tokenizer.json", tj.dump());
  write(dir / "tokenizer_config.json", R"({"eos_token": "<|end|>", "chat_template": "<|im_start|>"})");
  write(dir / "generation_config.json", R"({"eos_token_id": [259, 260]})");
  auto tok = qeval::load_hf_tokenizer(dir);
  CHECK(tok->bos_id == 260);
  CHECK(tok->add_bos);
  CHECK(tok->eos_id == 259);
  CHECK(tok->chat_template == "<|im_start|>");
  CHECK(tok->stop_ids == Ids{259, 260});
  CHECK(tok->encode("hi hi!", true) == Ids{260, 258, 257, '!'});
  CHECK(tok->encode("hi<|end|>", false) == Ids{258, 259});
  CHECK(tok->decode(Ids{260, 258, 257, '!'}, true) == "hi hi!");
  CHECK(tok->token_id("Ġhi") == 257);  // mapped form is accepted
  CHECK(tok->token_id(" hi") == 257);  // raw-bytes form too

  write(dir / "generation_config.json", R"({"eos_token_id": 99999})");
  CHECK_THROWS_WITH(qeval::load_hf_tokenizer(dir), Catch::Contains("generation_config.json"));
  // Ids are not narrowed to int32 before the range check (2^32 + 2 is not 2).
  write(dir / "generation_config.json", R"({"eos_token_id": [259, 4294967298]})");
  CHECK_THROWS_WITH(qeval::load_hf_tokenizer(dir),
                    Catch::Contains("generation_config.json: eos_token_id 4294967298 is outside the vocabulary (size 261)"));
  write(dir / "generation_config.json", R"({"eos_token_id": 18446744073709551615})");
  CHECK_THROWS_WITH(qeval::load_hf_tokenizer(dir), Catch::Contains("eos_token_id 18446744073709551615 is outside"));
  write(dir / "generation_config.json", R"({"eos_token_id": [259, "x"]})");
  CHECK_THROWS_WITH(qeval::load_hf_tokenizer(dir), Catch::Contains("eos_token_id must be an integer or a list"));
  write(dir / "generation_config.json", R"({"eos_token_id": 259})");
  {
    // Without a BOS of its own, generation_config's bos_token_id is used: range checked too.
    json no_bos = tj;
    no_bos.erase("post_processor");
    write(dir / "tokenizer.json", no_bos.dump());
    write(dir / "generation_config.json", R"({"bos_token_id": 100000})");
    CHECK_THROWS_WITH(qeval::load_hf_tokenizer(dir), Catch::Contains("bos_token_id 100000 is outside the vocabulary"));
    write(dir / "generation_config.json", R"({"bos_token_id": 4294967556})");  // 2^32 + 260
    CHECK_THROWS_WITH(qeval::load_hf_tokenizer(dir), Catch::Contains("bos_token_id 4294967556 is outside"));
    write(dir / "generation_config.json", R"({"bos_token_id": 260})");
    CHECK(qeval::load_hf_tokenizer(dir)->bos_id == 260);
    // One id far past the vocabulary would size the piece table by it (10^7 pieces, ~500 MB).
    no_bos["model"]["vocab"]["zzz"] = 10000000;
    write(dir / "tokenizer.json", no_bos.dump());
    CHECK_THROWS_WITH(qeval::load_hf_tokenizer(dir),
                      Catch::Contains("tokenizer.json: token id 10000000 is outside [0, ") &&
                          Catch::Contains("the file lists 262 tokens"));
    no_bos["model"]["vocab"]["zzz"] = 400;  // a bounded gap is fine
    write(dir / "tokenizer.json", no_bos.dump());
    CHECK(qeval::load_hf_tokenizer(dir)->vocab_size() == 401);
  }
  tj["model"]["merges"] = json::array({"Ġ zz"});
  write(dir / "tokenizer.json", tj.dump());
  CHECK_THROWS_WITH(qeval::load_hf_tokenizer(dir), Catch::Contains("merge #0"));
  write(dir / "tokenizer.json", "{");
  CHECK_THROWS_WITH(qeval::load_hf_tokenizer(dir), Catch::Contains("tokenizer.json"));
  CHECK_THROWS_WITH(qeval::load_hf_tokenizer(temp_dir("empty")), Catch::Contains("not found"));
}

TEST_CASE("Split behaviors: Removed and MergedWithPrevious", "[tokenizer][unit]") {
  using nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[qeval::tok::byte_level_encode(std::string(1, char(b)))] = b;
  vocab["ab"] = 256;
  vocab["b-"] = 257;
  json tj = json::parse(R"({"model": {"type": "BPE", "merges": ["a b", "b -"]},
                             "decoder": {"type": "ByteLevel"}})");
  tj["model"]["vocab"] = vocab;
  fs::path dir = temp_dir("split");
  auto load = [&](const std::string& behavior) {
    tj["pre_tokenizer"] = json::parse(R"({"type": "Split", "pattern": {"String": "-"}})");
    tj["pre_tokenizer"]["behavior"] = behavior;
    write(dir / "tokenizer.json", tj.dump());
    return qeval::load_hf_tokenizer(dir);
  };
  CHECK(load("Removed")->encode("ab-ab", false) == Ids{256, 256});
  CHECK(load("Isolated")->encode("ab-ab", false) == Ids{256, '-', 256});
  // "ab-" stays one pre-token: "a" + "b-" would be rank 1, "ab" is rank 0 -> "ab" "-".
  CHECK(load("MergedWithPrevious")->encode("ab-ab", false) == Ids{256, '-', 256});
  CHECK(load("MergedWithPrevious")->encode("b-b", false) == Ids{257, 'b'});
  CHECK(load("MergedWithNext")->encode("b-b", false) == Ids{'b', '-', 'b'});
  // Consecutive matches (HF): only the match beside a non-match joins it. With "--" merged
  // first, a "b--" or "--b" pre-token would give 258.
  tj["model"]["merges"] = json::array({"- -", "a b", "b -"});
  tj["model"]["vocab"]["--"] = 258;
  CHECK(load("MergedWithPrevious")->encode("b--b", false) == Ids{257, '-', 'b'});   // "b-" "-" "b"
  CHECK(load("MergedWithNext")->encode("b--b", false) == Ids{'b', '-', '-', 'b'});  // "b" "-" "-b"
}

TEST_CASE("Metaspace pre-tokenizer: split (HF's default) and no prefix before a leading space", "[tokenizer][unit]") {
  // HF tokenizers' Metaspace: with split, pieces start at each U+2581 (MergedWithNext); the
  // U+2581 prefix is added only when the text does not already start with one.
  using nlohmann::json;
  json tj = json::parse(R"({"normalizer": null,
    "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": false,
              "vocab": {"<unk>": 0, "\u2581": 1, "a": 2, "b": 3, "\u2581\u2581": 4, "\u2581b": 5},
              "merges": ["\u2581 \u2581", "\u2581 b"]},
    "added_tokens": [{"id": 0, "content": "<unk>", "special": true}]})");
  fs::path dir = temp_dir("metaspace");
  auto load = [&](const json& pre) {
    tj["pre_tokenizer"] = pre;
    tj["decoder"] = pre;
    write(dir / "tokenizer.json", tj.dump());
    return qeval::load_hf_tokenizer(dir);
  };
  // No split field: HF splits. "a  b" -> "\u2581a" "\u2581" "\u2581b".
  auto split = load(json::parse(R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always"})"));
  CHECK(split->encode("a  b", false) == Ids{1, 2, 1, 5});
  CHECK(split->encode(" b", false) == Ids{5});  // already starts with a space: no prefix
  CHECK(split->encode("\u2581b", false) == Ids{5});  // or with a U+2581
  auto whole = load(json::parse(R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": false})"));
  CHECK(whole->encode("a  b", false) == Ids{1, 2, 4, 3});
  CHECK(whole->encode(" b", false) == Ids{5});
}

TEST_CASE("SentencePiece BPE from VocabData: scores, byte fallback, prefix space", "[tokenizer][unit]") {
  qeval::VocabData v;
  v.model = "llama";
  v.tokens = {"<unk>", "<s>", "</s>"};
  v.token_types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    v.tokens.push_back(buf);
    v.token_types.push_back(6);
  }
  v.scores.assign(v.tokens.size(), 0.0f);
  auto add = [&](const std::string& p, float score) {
    v.tokens.push_back(p);
    v.scores.push_back(score);
    v.token_types.push_back(1);
    return int32_t(v.tokens.size() - 1);
  };
  const std::string sp = "\xE2\x96\x81";
  int32_t s_sp = add(sp, -1), s_h = add("h", -2), s_i = add("i", -3), s_hi = add("hi", -4);
  int32_t s_sphi = add(sp + "hi", -5), s_sph = add(sp + "h", -0.5f);
  v.bos_id = 1;
  v.eos_id = 2;
  v.unk_id = 0;
  auto tok = qeval::make_tokenizer(v);
  // "▁hi": "▁h" has the best score, then "▁hi" from "▁h"+"i".
  CHECK(tok->encode("hi", true) == Ids{1, s_sphi});
  CHECK(tok->encode("hi hi", false) == Ids{s_sphi, s_sphi});
  CHECK(tok->encode("ihi", false) == Ids{s_sp, s_i, s_hi});
  // Unknown character -> UTF-8 bytes through <0xNN> (id = 3 + byte).
  CHECK(tok->encode("\xC3\xA9", false) == Ids{s_sp, 3 + 0xC3, 3 + 0xA9});
  CHECK(tok->decode(Ids{1, s_sp, 3 + 0xC3, 3 + 0xA9}, true) == "\xC3\xA9");
  CHECK(tok->decode(Ids{1, s_sphi, s_sphi}, true) == "hi hi");
  CHECK(tok->decode(Ids{1, s_sphi}) == "<s> hi");
  CHECK(tok->token_bytes(s_sph) == " h");
  CHECK(tok->token_bytes(3 + 'A') == "A");
  // Specials: "</s>" in text is recognised only with parse_special; the segment after a special
  // gets its own prefix space (as llama.cpp and HF legacy do).
  CHECK(tok->encode("hi</s>hi", false) == Ids{s_sphi, 2, s_sphi});
  CHECK(tok->encode("", true) == Ids{1});
  CHECK(tok->add_bos);
  (void)s_h;
  v.add_space_prefix = false;
  CHECK(qeval::make_tokenizer(v)->encode("hi", false) == Ids{s_hi});
  v.scores.pop_back();
  CHECK_THROWS_AS(qeval::make_tokenizer(v), qeval::Error);
  v.model = "bert";
  CHECK_THROWS_WITH(qeval::make_tokenizer(v), Catch::Contains("bert"));
}

TEST_CASE("Utf8StreamDecoder holds back incomplete sequences", "[tokenizer][unit]") {
  qeval::Utf8StreamDecoder d;
  std::string euro = "\xE2\x82\xAC";
  CHECK(d.push("a\xE2") == "a");
  CHECK(d.push("\x82") == "");
  CHECK(d.push("\xAC!") == euro + "!");
  CHECK(d.push("\xF0\x9F") == "");
  CHECK(d.finish() == "\xF0\x9F");
  CHECK(d.push("\xFF") == "\xFF");  // invalid bytes pass through
  CHECK(d.finish().empty());
}

// ============================================================================ reference vectors

TEST_CASE("qwen.tiktoken matches HF Qwen ids on llama.cpp's vectors", "[tokenizer][model]") {
  REQUIRE_MODELS();
  auto t0 = std::chrono::steady_clock::now();
  auto tok = qeval::load_tiktoken(fs::path(models_dir()) / "qwen-tokenizer/qwen.tiktoken", "qwen2");
  double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  WARN("qwen.tiktoken load: " << load_s << " s");
  CHECK(tok->vocab_size() == 151643 + 22);
  CHECK(tok->token_id("<|im_end|>") == 151645);
  CHECK(check_llamacpp_vectors(*tok, "ggml-vocab-qwen2.gguf.out") == 0);
  CHECK(tok->encode("ied 4 \xC2\xBD months", false) == Ids{1122, 220, 19, 220, 26062, 3951});
}

TEST_CASE("Llama 3 tokenizer.model matches HF and Meta references", "[tokenizer][model]") {
  REQUIRE_MODELS();
  fs::path dir = fs::path(models_dir()) / "llama3-tokenizer";
  auto tok = qeval::load_tiktoken(dir / "tokenizer.model", "llama3");
  CHECK(check_llamacpp_vectors(*tok, "ggml-vocab-llama-bpe.gguf.out") == 0);

  auto ref = nlohmann::json::parse(qeval::read_file(dir / "meta_test_tokenizer_reference.json"));
  for (auto& [name, id] : ref["special_tokens"].items()) CHECK(tok->token_id(name) == id.get<int32_t>());
  for (auto& e : ref["encode"]) {
    Ids got = tok->encode(e["text"].get<std::string>(), e["bos"].get<bool>());
    if (e["eos"].get<bool>()) got.push_back(*tok->eos_id);
    CHECK(got == e["ids"].get<Ids>());
  }
  for (auto& e : ref["decode"]) CHECK(tok->decode(e["ids"].get<Ids>()) == e["text"].get<std::string>());
  // Meta's chat encoding, written as text with special tokens.
  for (auto& e : ref["encode_message"]) {
    std::string text = "<|start_header_id|>" + e["message"]["role"].get<std::string>() +
                       "<|end_header_id|>\n\n" + e["message"]["content"].get<std::string>() + "<|eot_id|>";
    CHECK(tok->encode(text, false) == e["ids"].get<Ids>());
  }
  for (auto& e : ref["encode_dialog_prompt"]) {
    std::string text;
    for (auto& m : e["dialog"])
      text += "<|start_header_id|>" + m["role"].get<std::string>() + "<|end_header_id|>\n\n" +
              m["content"].get<std::string>() + "<|eot_id|>";
    text += "<|start_header_id|>assistant<|end_header_id|>\n\n";
    CHECK(tok->encode(text, true) == e["ids"].get<Ids>());
  }
  CHECK(tok->stop_ids == Ids{128001, 128009});
}

TEST_CASE("Llama 2 SentencePiece .model matches HF ids on llama.cpp's vectors", "[tokenizer][model]") {
  REQUIRE_MODELS();
  auto v = qeval::tok::read_sentencepiece_model(fs::path(models_dir()) / "llama2-tokenizer/tokenizer.model");
  CHECK(v.tokens.size() == 32000);
  CHECK(v.tokens[3] == "<0x00>");
  CHECK(v.bos_id == 1);
  auto tok = qeval::make_tokenizer(v);
  CHECK(check_llamacpp_vectors(*tok, "ggml-vocab-llama-spm.gguf.out") == 0);
}

namespace {

void check_stories_reference(const Tokenizer& tok, bool hf_parses_specials) {
  auto ref = nlohmann::json::parse(qeval::read_file(
      fs::path(models_dir()) / "stories260K/reference/tokenizer_reference_encodings.json"));
  int n = 0;
  for (auto& e : ref["encodings"]) {
    std::string text = e["text"].get<std::string>();
    Ids want = e["ids"].get<Ids>();
    Ids got = tok.encode(text, /*add_special=*/true, /*parse_special=*/false);
    INFO("text: " << text);
    CHECK(got == want);
    CHECK(tok.decode(got, /*skip_special=*/true) == text);
    ++n;
    if (hf_parses_specials && text.find("<s>") != std::string::npos) {
      Ids parsed = tok.encode(text, true, true);
      CHECK(std::count(parsed.begin(), parsed.end(), 1) == 2);
    }
  }
  CHECK(n >= 20);
  // Greedy reference ids decode to the expected story.
  std::string ids_txt = qeval::read_file(fs::path(models_dir()) / "stories260K/reference/greedy_ids_from_bos_n200.txt");
  Ids ids;
  for (size_t i = 0; i < ids_txt.size();) {
    while (i < ids_txt.size() && !std::isdigit(uint8_t(ids_txt[i]))) ++i;
    size_t j = i;
    while (j < ids_txt.size() && std::isdigit(uint8_t(ids_txt[j]))) ++j;
    if (j > i) ids.push_back(std::stoi(ids_txt.substr(i, j - i)));
    i = j;
  }
  REQUIRE(ids.size() >= 200);
  std::string story = tok.decode(ids);
  CHECK(story.rfind("Once upon a time, there was a little girl named Lily.", 0) == 0);
}

}  // namespace

TEST_CASE("stories260K-hf tokenizer.json matches the reference encodings", "[tokenizer][model]") {
  REQUIRE_MODELS();
  auto tok = qeval::load_hf_tokenizer(fs::path(models_dir()) / "stories260K-hf");
  CHECK(tok->vocab_size() == 512);
  CHECK(tok->bos_id == 1);
  CHECK(tok->eos_id == 2);
  CHECK(tok->add_bos);
  CHECK(tok->stop_ids == Ids{2});
  check_stories_reference(*tok, true);
}

TEST_CASE("stories260K vocabulary as VocabData (tok512.bin scores) matches the reference", "[tokenizer][model]") {
  REQUIRE_MODELS();
  // llama2.c tokenizer format: int32 max_len, then per id float score, int32 len, bytes
  // (spaces stand for U+2581; <s> and </s> written as "\n<s>\n" / "\n</s>\n").
  std::string bin = qeval::read_file(fs::path(models_dir()) / "stories260K/tok512.bin");
  qeval::VocabData v;
  v.model = "llama";
  size_t pos = 4;
  for (int i = 0; i < 512; ++i) {
    float score;
    int32_t len;
    std::memcpy(&score, bin.data() + pos, 4);
    std::memcpy(&len, bin.data() + pos + 4, 4);
    std::string piece = bin.substr(pos + 8, len);
    pos += 8 + len;
    if (piece == "\n<s>\n") piece = "<s>";
    if (piece == "\n</s>\n") piece = "</s>";
    std::string p2;
    for (char c : piece) p2 += c == ' ' ? std::string("\xE2\x96\x81") : std::string(1, c);
    v.tokens.push_back(p2);
    v.scores.push_back(score);
    v.token_types.push_back(i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1);
  }
  v.bos_id = 1;
  v.eos_id = 2;
  v.unk_id = 0;
  auto tok = qeval::make_tokenizer(v);
  check_stories_reference(*tok, false);
  // Literal "<s>" is matched as a special only with parse_special.
  CHECK(tok->encode("<s>", false, true) == Ids{1});
}

TEST_CASE("tokenizer throughput on MMLU-sized prompts", "[tokenizer][model]") {
  REQUIRE_MODELS();
  auto tok = qeval::load_tiktoken(fs::path(models_dir()) / "llama3-tokenizer/tokenizer.model", "llama3");
  std::string text;
  while (text.size() < 2500)
    text += "The following are multiple choice questions (with answers) about high school physics.\n\n"
            "A 2 kg block slides 3.5 m down a frictionless incline; what is its speed? A. 5.9 m/s\n";
  std::string longword(20000, 'x');  // one pre-token, 20k bytes: must not be quadratic
  auto t0 = std::chrono::steady_clock::now();
  size_t n_tok = 0;
  for (int i = 0; i < 200; ++i) n_tok += tok->encode(text, true).size();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto t1 = std::chrono::steady_clock::now();
  auto lw = tok->encode(longword, false);
  double s_long = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  WARN("llama3 encode: " << 200 * text.size() / s / 1e6 << " MB/s, " << n_tok / s
                         << " tokens/s; 20k-byte word: " << s_long * 1e3 << " ms");
  CHECK(tok->decode(lw) == longword);
  CHECK(s_long < 1.0);
}

TEST_CASE("stories260K.gguf vocabulary (GGUF VocabData path) matches the reference", "[tokenizer][model]") {
  REQUIRE_MODELS();
  auto gguf = qeval::GgufFile::open(fs::path(models_dir()) / "stories260K/stories260K.gguf");
  qeval::VocabData v = gguf->vocab();
  CHECK(v.model == "llama");
  auto tok = qeval::make_tokenizer(v);
  CHECK(tok->vocab_size() == 512);
  CHECK(tok->add_bos);
  check_stories_reference(*tok, false);
}

namespace {

// Random text mixing ASCII, spaces/newlines, multi-byte UTF-8 and invalid bytes.
std::string random_text(std::mt19937& rng, size_t n) {
  static const std::vector<std::string> atoms = {
      "a", "Z", " ", "  ", "\n", "\t", "7", "42", "'s", ".", "\xC3\xA9", "\xE4\xB8\xAD", "\xF0\x9F\xA6\x99",
      "\xFF", "\x80", "\xE2\x82", "<", "|", "the", " of", "\r\n", "\xC2\xA0"};
  std::string s;
  while (s.size() < n) s += atoms[rng() % atoms.size()];
  return s;
}

void check_round_trip(const Tokenizer& tok, bool skip_special) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 300; ++i) {
    std::string text = random_text(rng, 1 + rng() % 64);
    auto ids = tok.encode(text, /*add_special=*/true, /*parse_special=*/false);
    INFO("case " << i);
    CHECK(tok.decode(ids, skip_special) == text);
  }
}

}  // namespace

TEST_CASE("random byte strings round-trip exactly (tiny vocabularies)", "[tokenizer][unit]") {
  auto bl = qeval::load_tiktoken(tiny_tiktoken({"th", "the", " o", " of", "42"}), "llama3");
  check_round_trip(*bl, true);
  qeval::VocabData v;
  v.model = "llama";
  v.tokens = {"<unk>", "<s>", "</s>"};
  v.token_types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    v.tokens.push_back(buf);
    v.token_types.push_back(6);
  }
  for (const char* p : {"\xE2\x96\x81", "t", "h", "e", "th", "the", "\xE2\x96\x81the", "a"}) {
    v.tokens.push_back(p);
    v.token_types.push_back(1);
  }
  v.scores.assign(v.tokens.size(), 0.0f);
  for (size_t i = 259; i < v.scores.size(); ++i) v.scores[i] = -float(i);
  v.bos_id = 1;
  v.unk_id = 0;
  check_round_trip(*qeval::make_tokenizer(v), true);
}

TEST_CASE("random byte strings round-trip exactly (real vocabularies)", "[tokenizer][model]") {
  REQUIRE_MODELS();
  fs::path m = models_dir();
  check_round_trip(*qeval::load_tiktoken(m / "llama3-tokenizer/tokenizer.model", "llama3"), true);
  check_round_trip(*qeval::load_tiktoken(m / "qwen-tokenizer/qwen.tiktoken", "qwen2"), true);
  check_round_trip(*qeval::make_tokenizer(qeval::tok::read_sentencepiece_model(m / "llama2-tokenizer/tokenizer.model")), true);
}

namespace {

// Builds a Hugging Face tokenizer.json equivalent to a tiktoken rank file, the way HF
// conversions do: every token's merge is the last step of a rank-limited BPE of its bytes.
// Lets the tokenizer.json code path be checked against the same reference ids.
fs::path tiktoken_as_hf_dir(const fs::path& tiktoken, const std::string& name, const std::string& regex,
                            bool ignore_merges, const std::vector<std::string>& specials) {
  using nlohmann::json;
  std::string data = qeval::read_file(tiktoken);
  std::vector<std::string> pieces;
  std::unordered_map<std::string, int> rank;
  auto b64v = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  size_t pos = 0;
  while (pos < data.size()) {
    size_t nl = data.find('\n', pos);
    if (nl == std::string::npos) nl = data.size();
    std::string line = data.substr(pos, nl - pos);
    pos = nl + 1;
    size_t sp = line.find(' ');
    if (sp == std::string::npos) continue;
    std::string bytes;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < sp && line[i] != '='; ++i) {
      acc = (acc << 6) | uint32_t(b64v(line[i]));
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        bytes += char((acc >> bits) & 0xFF);
      }
    }
    int r = std::stoi(line.substr(sp + 1));
    if (r != int(pieces.size())) FAIL(tiktoken.string() << ": ranks are not consecutive at " << r);
    pieces.push_back(bytes);
    rank[bytes] = r;
  }
  json vocab = json::object();
  json merges = json::array();
  for (size_t r = 0; r < pieces.size(); ++r) {
    const std::string& t = pieces[r];
    vocab[qeval::tok::byte_level_encode(t)] = r;
    if (t.size() < 2) continue;
    std::vector<std::string> parts;
    for (char c : t) parts.emplace_back(1, c);
    while (parts.size() > 2) {
      int best = -1, best_rank = int(r);
      for (size_t i = 0; i + 1 < parts.size(); ++i) {
        auto it = rank.find(parts[i] + parts[i + 1]);
        if (it != rank.end() && it->second < best_rank) {
          best_rank = it->second;
          best = int(i);
        }
      }
      if (best < 0) break;
      parts[best] += parts[best + 1];
      parts.erase(parts.begin() + best + 1);
    }
    if (parts.size() == 2)
      merges.push_back(qeval::tok::byte_level_encode(parts[0]) + " " + qeval::tok::byte_level_encode(parts[1]));
  }
  json added = json::array();
  for (size_t i = 0; i < specials.size(); ++i)
    added.push_back({{"id", pieces.size() + i}, {"content", specials[i]}, {"special", true}});
  json tj = json::parse(R"({"normalizer": {"type": "NFC"}, "decoder": {"type": "ByteLevel"},
      "post_processor": {"type": "ByteLevel"},
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]}})");
  tj["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", regex}};
  tj["added_tokens"] = added;
  tj["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"ignore_merges", ignore_merges},
                 {"byte_fallback", false}};
  fs::path dir = temp_dir("hf_" + name);
  write(dir / "tokenizer.json", tj.dump());
  return dir;
}

}  // namespace

TEST_CASE("tokenizer.json path (tiktoken ranks converted to merges) matches the reference ids", "[tokenizer][model]") {
  REQUIRE_MODELS();
  fs::path m = models_dir();
  const std::string qwen_re =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const std::string llama3_re =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  SECTION("Qwen2.5-style") {
    fs::path dir = tiktoken_as_hf_dir(m / "qwen-tokenizer/qwen.tiktoken", "qwen", qwen_re, false,
                                      {"<|endoftext|>", "<|im_start|>", "<|im_end|>"});
    write(dir / "tokenizer_config.json",
          R"({"bos_token": null, "eos_token": "<|im_end|>", "chat_template": "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"})");
    write(dir / "generation_config.json", R"({"bos_token_id": 151643, "eos_token_id": [151645, 151643]})");
    auto tok = qeval::load_hf_tokenizer(dir);
    CHECK(check_llamacpp_vectors(*tok, "ggml-vocab-qwen2.gguf.out") == 0);
    CHECK_FALSE(tok->add_bos);
    CHECK(tok->eos_id == 151645);
    CHECK(tok->stop_ids == Ids{151645, 151643});
    CHECK(tok->encode("<|im_start|>user\nhi<|im_end|>", true).front() == 151644);
    CHECK(tok->chat_template.find("You are Qwen") != std::string::npos);
  }
  SECTION("Llama-3-style (ignore_merges)") {
    std::vector<std::string> specials = {"<|begin_of_text|>", "<|end_of_text|>"};
    fs::path dir = tiktoken_as_hf_dir(m / "llama3-tokenizer/tokenizer.model", "llama3", llama3_re, true, specials);
    auto tj = nlohmann::json::parse(qeval::read_file(dir / "tokenizer.json"));
    tj["post_processor"] = nlohmann::json::parse(R"({"type": "Sequence", "processors": [
        {"type": "ByteLevel"},
        {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                                                  {"Sequence": {"id": "A", "type_id": 0}}]}]})");
    write(dir / "tokenizer.json", tj.dump());
    auto tok = qeval::load_hf_tokenizer(dir);
    CHECK(check_llamacpp_vectors(*tok, "ggml-vocab-llama-bpe.gguf.out") == 0);
    CHECK(tok->add_bos);
    CHECK(tok->bos_id == 128000);
    CHECK(tok->encode("This is a test sentence.", true) == Ids{128000, 2028, 374, 264, 1296, 11914, 13});
  }
}
