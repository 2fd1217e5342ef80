// Python-style findall / sub loops over RE2::Match.
#include "extract/regex.h"

#include <re2/re2.h>

#include "core/error.h"

namespace qeval {

namespace {

// Byte length of the UTF-8 sequence starting at s[i] (1 for invalid lead bytes), so an empty
// match never splits a code point.
size_t code_point_len(std::string_view s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 1;
  return i + n <= s.size() ? n : 1;
}

// Calls on_match(groups) for each non-overlapping match; groups[0] is the whole match.
// on_match returns false to stop early.
template <typename F>
void for_each_match(const re2::RE2& re, std::string_view text, F&& on_match) {
  const int n_sub = re.NumberOfCapturingGroups() + 1;
  std::vector<re2::StringPiece> sub(static_cast<size_t>(n_sub));
  const re2::StringPiece whole(text.data(), text.size());
  size_t pos = 0;
  while (pos <= text.size()) {
    if (!re.Match(whole, pos, text.size(), re2::RE2::UNANCHORED, sub.data(), n_sub)) break;
    if (!on_match(sub)) break;
    size_t begin = static_cast<size_t>(sub[0].data() - text.data());
    size_t end = begin + sub[0].size();
    if (end > begin) {
      pos = end;
    } else if (end < text.size()) {
      pos = end + code_point_len(text, end);
    } else {
      break;
    }
  }
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
}

Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

int Regex::n_groups() const { return re_->NumberOfCapturingGroups(); }

std::vector<std::vector<std::string_view>> Regex::findall(std::string_view text) const {
  std::vector<std::vector<std::string_view>> out;
  for_each_match(*re_, text, [&](const std::vector<re2::StringPiece>& sub) {
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
  for_each_match(*re_, text, [&](const std::vector<re2::StringPiece>& sub) {
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
