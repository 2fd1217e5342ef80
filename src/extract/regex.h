// Python `re` semantics (findall, sub) on top of RE2, for patterns taken from task files.
// RE2 runs in time linear in the input, so hostile model output cannot blow up extraction;
// `std::regex` is never used on model output. Differences from Python, by design of RE2:
// no look-around or back-references (rejected when the pattern is compiled), `\d`, `\s`, `\w`
// are ASCII-only, and `$` matches only at the very end (Python also matches before a final
// "\n"). After an empty match, findall and remove_all look again at the same position for a
// non-empty match, as Python 3.7+ does (`a??` on "aa": '', 'a', '', 'a', ''); that one look
// is PCRE2's (RE2 cannot exclude the empty match), its backtracking bounded by a match limit,
// and skipped in a text that is not UTF-8.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace re2 {
class RE2;
}

namespace qeval {

struct RegexPcre;

// A compiled pattern. Immutable after construction; safe to use from many threads.
class Regex {
 public:
  // Compiles `pattern` (UTF-8, Python/Perl syntax as RE2 accepts it). Throws Error naming
  // `where`, the pattern and RE2's complaint when it does not compile.
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;

  const std::string& pattern() const { return pattern_; }
  int n_groups() const;  // number of capturing groups

  // One element per non-overlapping match, left to right, as Python's re.findall builds
  // them: each element holds the whole match when the pattern has no groups, else one
  // entry per group ("" for a group that did not take part). Views point into `text`.
  std::vector<std::vector<std::string_view>> findall(std::string_view text) const;

  // Python's re.sub(pattern, "", text): removes every non-overlapping match.
  std::string remove_all(std::string_view text) const;

  // True when the pattern matches somewhere in `text` (re.search(...) is not None).
  bool search(std::string_view text) const;

 private:
  std::string pattern_;
  std::unique_ptr<re2::RE2> re_;
  std::unique_ptr<RegexPcre> nonempty_;  // only for a pattern that can match the empty string
};

}  // namespace qeval
