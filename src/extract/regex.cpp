// Python-style findall / sub loops over RE2::Match (and one PCRE2 look after an empty match).
#include "extract/regex.h"

#include <cstdint>
#include <optional>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <re2/re2.h>

#include "core/error.h"
#include "core/text.h"

namespace qeval {

// A pattern compiled by PCRE2 too, for the one look after an empty match (see for_each_match).
struct RegexPcre {
  std::unique_ptr<pcre2_code_8, decltype(&pcre2_code_free_8)> re{nullptr, &pcre2_code_free_8};
};

namespace {

// Byte length of the UTF-8 sequence starting at s[i] (1 for invalid lead bytes), so an empty
// match never splits a code point.
size_t code_point_len(std::string_view s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 1;
  return i + n <= s.size() ? n : 1;
}

// After an empty match at p, Python (3.7+) looks at p again for a match that is not empty (the
// first in its backtracking order, e.g. 'a' for `a??`) before it moves on. RE2 cannot exclude
// the empty match, so that one look is PCRE2's, anchored at p with PCRE2_NOTEMPTY_ATSTART, which
// is exactly Python's rule; its backtracking is bounded by a match limit (past it, or in a text
// that is not UTF-8, the look finds nothing and the search moves on one code point).
constexpr uint32_t kPcreMatchLimit = 1'000'000;

// PCRE2's non-empty match anchored at a byte position; match data made once per search.
class NonEmptyMatcher {
 public:
  explicit NonEmptyMatcher(const RegexPcre& code)
      : code_(code),
        md_(pcre2_match_data_create_from_pattern_8(code.re.get(), nullptr), &pcre2_match_data_free_8),
        mc_(pcre2_match_context_create_8(nullptr), &pcre2_match_context_free_8) {
    if (mc_) pcre2_set_match_limit_8(mc_.get(), kPcreMatchLimit);
  }

  // The match at `pos` of a valid UTF-8 `text` into `sub` (groups that did not take part become null pieces); false
  // when there is none.
  bool match_at(std::string_view text, size_t pos, std::vector<re2::StringPiece>& sub) const {
    if (!md_ || !mc_) return false;
    // The text was checked once (PCRE2 would check all of it at every call).
    const int rc = pcre2_match_8(code_.re.get(), reinterpret_cast<PCRE2_SPTR8>(text.data()), text.size(), pos,
                                 PCRE2_ANCHORED | PCRE2_NOTEMPTY_ATSTART | PCRE2_NO_UTF_CHECK, md_.get(), mc_.get());
    if (rc <= 0) return false;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer_8(md_.get());
    const uint32_t n_pairs = pcre2_get_ovector_count_8(md_.get());
    for (size_t i = 0; i < sub.size(); ++i) {
      if (i < n_pairs && ov[2 * i] != PCRE2_UNSET)
        sub[i] = re2::StringPiece(text.data() + ov[2 * i], ov[2 * i + 1] - ov[2 * i]);
      else
        sub[i] = re2::StringPiece();
    }
    return true;
  }

 private:
  const RegexPcre& code_;
  std::unique_ptr<pcre2_match_data_8, decltype(&pcre2_match_data_free_8)> md_;
  std::unique_ptr<pcre2_match_context_8, decltype(&pcre2_match_context_free_8)> mc_;
};

// Calls on_match(groups) for each match re.finditer would give; groups[0] is the whole match.
// on_match returns false to stop early.
template <typename F>
void for_each_match(const re2::RE2& re, const RegexPcre* nonempty, std::string_view text, F&& on_match) {
  const int n_sub = re.NumberOfCapturingGroups() + 1;
  std::vector<re2::StringPiece> sub(static_cast<size_t>(n_sub));
  const re2::StringPiece whole(text.data(), text.size());
  std::optional<NonEmptyMatcher> again;  // made at the first empty match, for valid UTF-8 only
  bool again_checked = false;
  size_t pos = 0;
  bool after_empty = false;  // the last match was empty and ended at pos
  while (pos <= text.size()) {
    if (after_empty) {
      after_empty = false;
      if (nonempty && !again_checked) {
        again_checked = true;
        if (utf8_first_invalid(text) == std::string_view::npos) again.emplace(*nonempty);
      }
      if (again && again->match_at(text, pos, sub)) {
        if (!on_match(sub)) break;
        pos = static_cast<size_t>(sub[0].data() - text.data()) + sub[0].size();
        continue;
      }
      if (pos >= text.size()) break;
      pos += code_point_len(text, pos);
    }
    if (!re.Match(whole, pos, text.size(), re2::RE2::UNANCHORED, sub.data(), n_sub)) break;
    if (!on_match(sub)) break;
    const size_t begin = static_cast<size_t>(sub[0].data() - text.data());
    pos = begin + sub[0].size();
    after_empty = sub[0].empty();
  }
}

// True when the pattern can match the empty string somewhere. An empty match depends only on
// the assertions at its position (^ $ \A \z \b \B, multi-line or not), which look at no more
// than the characters either side: trying every kind of neighbour (none, word, other, newline)
// on both sides covers them all.
bool can_match_empty(const re2::RE2& re) {
  static const char* const kSides[] = {"", "a", " ", "\n"};
  for (const char* before : kSides)
    for (const char* after : kSides) {
      const std::string text = std::string(before) + after;
      const size_t at = std::string_view(before).size();
      if (re.Match(re2::StringPiece(text), at, at, re2::RE2::ANCHOR_BOTH, nullptr, 0)) return true;
    }
  return false;
}

std::string_view view(const re2::StringPiece& p) {
  return p.data() ? std::string_view(p.data(), p.size()) : std::string_view();
}

}  // namespace

Regex::Regex(const std::string& pattern, const std::string& where) : pattern_(pattern) {
  re2::RE2::Options opt;
  opt.set_log_errors(false);
  opt.set_encoding(re2::RE2::Options::EncodingUTF8);
  re_ = std::make_unique<re2::RE2>(pattern, opt);
  if (!re_->ok()) {
    fail("{}: regex '{}' does not compile: {} (RE2 syntax: no look-around or back-references)",
         where, pattern, re_->error());
  }
  if (!can_match_empty(*re_)) return;
  // The same syntax as RE2 reads it: UTF-8, ASCII \d \s \w \b, `$` only at the very end, `.` not "\n".
  pcre2_compile_context_8* cc = pcre2_compile_context_create_8(nullptr);
  pcre2_set_newline_8(cc, PCRE2_NEWLINE_LF);
  int err = 0;
  PCRE2_SIZE err_at = 0;
  nonempty_ = std::make_unique<RegexPcre>();
  nonempty_->re.reset(pcre2_compile_8(reinterpret_cast<PCRE2_SPTR8>(pattern.data()), pattern.size(),
                                      PCRE2_UTF | PCRE2_DOLLAR_ENDONLY, &err, &err_at, cc));
  pcre2_compile_context_free_8(cc);
  if (!nonempty_->re) {
    PCRE2_UCHAR8 msg[256];
    pcre2_get_error_message_8(err, msg, sizeof msg);
    fail("{}: regex '{}' can match the empty string, and what follows an empty match cannot be found as Python "
         "does for this pattern ({} at offset {}) (hint: make the pattern match at least one character, e.g. + "
         "instead of *)", where, pattern, reinterpret_cast<const char*>(msg), err_at);
  }
}

Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

int Regex::n_groups() const { return re_->NumberOfCapturingGroups(); }

std::vector<std::vector<std::string_view>> Regex::findall(std::string_view text) const {
  std::vector<std::vector<std::string_view>> out;
  for_each_match(*re_, nonempty_.get(), text, [&](const std::vector<re2::StringPiece>& sub) {
    std::vector<std::string_view> groups;
    if (sub.size() == 1) {
      groups.push_back(view(sub[0]));
    } else {
      for (size_t i = 1; i < sub.size(); i++) groups.push_back(view(sub[i]));
    }
    out.push_back(std::move(groups));
    return true;
  });
  return out;
}

std::string Regex::remove_all(std::string_view text) const {
  std::string out;
  out.reserve(text.size());
  size_t copied = 0;
  for_each_match(*re_, nonempty_.get(), text, [&](const std::vector<re2::StringPiece>& sub) {
    size_t begin = static_cast<size_t>(sub[0].data() - text.data());
    out.append(text.substr(copied, begin - copied));
    copied = begin + sub[0].size();
    return true;
  });
  out.append(text.substr(copied));
  return out;
}

bool Regex::search(std::string_view text) const {
  return re2::RE2::PartialMatch(re2::StringPiece(text.data(), text.size()), *re_);
}

}  // namespace qeval
