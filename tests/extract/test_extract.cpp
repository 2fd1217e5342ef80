// Filter steps and chains: lm-eval's regex filter semantics (expected values printed by
// Python 3.11 running lm-eval's RegexFilter logic), the other extractors, and hostile inputs.
#include <catch2/catch.hpp>

#include "core/error.h"
#include "extract/filter.h"
#include "extract/reasoning.h"
#include "extract/regex.h"

using namespace qeval;
using nlohmann::json;

namespace {

FilterChain chain(const json& steps) {
  return FilterChain::parse(json{{"name", "t"}, {"steps", steps}}, "test.yaml: filters[0]");
}

const char* kStrict = R"(#### (\-?[0-9\.\,]+))";
const char* kFlex = R"((-?[$0-9.,]{2,})|(-?[0-9]+))";

std::string run(const FilterChain& c, std::string_view s) { return c.apply(s).text; }

}  // namespace

TEST_CASE("gsm8k strict-match and flexible-extract match lm-eval", "[extract]") {
  // Expected values from lm-eval's RegexFilter.apply logic in python3:
  //   m = re.findall(pat, s); m = m[group_select]; tuple -> first non-empty; .strip(); else "[invalid]"
  auto strict = chain(json::array({{{"kind", "regex"}, {"pattern", kStrict}, {"group_select", 0}},
                                   {{"kind", "take_first"}}}));
  auto flex = chain(json::array({{{"kind", "regex"}, {"pattern", kFlex}, {"group_select", -1}},
                                 {{"kind", "take_first"}}}));
  auto flex_first = chain(json::array({{{"kind", "regex"}, {"pattern", kFlex}}}));
  struct Case { std::string in, strict, flex, flex_first; };
  std::vector<Case> cases = {
      {"The answer is 42.\n#### 42", "42", "42", "42."},
      {"She pays $1,234.50 total, so 7 left", "[invalid]", "7", "$1,234.50"},
      {"no numbers here", "[invalid]", "[invalid]", "[invalid]"},
      {"#### -3.5 and #### 9", "-3.5", "9", "-3.5"},
      {"x 5 y", "[invalid]", "5", "5"},
      {"costs $18. The end", "[invalid]", "$18.", "$18."},
      {"1 2 3", "[invalid]", "3", "1"},
      {"###### 12", "12", "12", "12"},
      {"\xe2\x82\xac" "5 and 6\xe2\x82\xac", "[invalid]", "6", "5"},
  };
  for (const auto& c : cases) {
    INFO(c.in);
    CHECK(run(strict, c.in) == c.strict);
    CHECK(run(flex, c.in) == c.flex);
    CHECK(run(flex_first, c.in) == c.flex_first);
  }
  CHECK_FALSE(strict.apply("nothing").found);
  CHECK(strict.apply("#### 1").found);
}

TEST_CASE("regex group_select beyond the matches and custom fallback", "[extract]") {
  auto c = chain(json::array({{{"kind", "regex"}, {"pattern", "(\\d)"}, {"group_select", 3},
                               {"fallback", "NONE"}}}));
  CHECK(run(c, "1 2 3") == "NONE");
  CHECK(run(c, "1 2 3 4") == "4");
  auto neg = chain(json::array({{{"kind", "regex"}, {"pattern", "(\\d)"}, {"group_select", -2}}}));
  CHECK(run(neg, "1 2 3") == "2");
  CHECK(run(neg, "1") == "[invalid]");
}

TEST_CASE("Regex findall and remove_all follow Python for empty matches", "[extract]") {
  // python3: re.findall(r"a*","baaac") -> ['', 'aaa', '', '']; re.sub(r"a*","","baaac") -> 'bc'
  Regex a("a*", "t");
  auto m = a.findall("baaac");
  REQUIRE(m.size() == 4);
  CHECK(m[0][0] == "");
  CHECK(m[1][0] == "aaa");
  CHECK(a.remove_all("baaac") == "bc");
  // Empty matches do not split a multi-byte code point.
  CHECK(Regex("x*", "t").remove_all("\xc3\xa9x\xc3\xa9") == "\xc3\xa9\xc3\xa9");
  CHECK(Regex("(?s).*#### ", "t").remove_all("a\nb #### c #### 72") == "72");
}

TEST_CASE("after an empty match, findall and remove_all look for a non-empty one at the same place, as Python 3.7+",
          "[extract]") {
  // python3 3.11: [re.findall(p, t), re.sub(p, "", t)] for each row.
  struct Case {
    const char* pattern;
    const char* text;
    std::vector<std::vector<std::string>> findall;
    const char* removed;
  };
  const std::vector<Case> cases = {
      {"|a", "a", {{""}, {"a"}, {""}}, ""},
      {"a??", "aa", {{""}, {"a"}, {""}, {"a"}, {""}}, ""},
      {"\\d*?", "12", {{""}, {"1"}, {""}, {"2"}, {""}}, ""},
      {"(?:)|5", "15", {{""}, {""}, {"5"}, {""}}, "1"},
      {"x*", "axxb", {{""}, {"xx"}, {""}, {""}}, "ab"},
      {"(x?)", "axb", {{""}, {"x"}, {""}, {""}}, "ab"},
      {"(a|)(b?)", "abab", {{"a", "b"}, {"a", "b"}, {"", ""}}, ""},
      {"\\b", "ab cd", {{""}, {""}, {""}, {""}}, "ab cd"},
      {"a*?b?", "aab", {{""}, {"a"}, {""}, {"ab"}, {""}}, ""},
      {"(?:)|\xc3\xa9", "\xc3\xa9\xc3\xa9", {{""}, {"\xc3\xa9"}, {""}, {"\xc3\xa9"}, {""}}, ""},
      {"(\\d+)?", "1a22", {{"1"}, {""}, {"22"}, {""}}, "a"},
  };
  for (const auto& c : cases) {
    INFO("pattern " << c.pattern << " on " << c.text);
    Regex re(c.pattern, "t");
    std::vector<std::vector<std::string>> got;
    for (const auto& m : re.findall(c.text)) got.emplace_back(m.begin(), m.end());
    CHECK(got == c.findall);
    CHECK(re.remove_all(c.text) == c.removed);
  }
  // group_select indexes Python's list: re.findall("a??", "aa")[1] == 'a'.
  auto lazy = chain(json::array({{{"kind", "regex"}, {"pattern", "a??"}, {"group_select", 1}, {"fallback", "F"}}}));
  CHECK(run(lazy, "aa") == "a");
  // In a text that is not UTF-8 the look is skipped (the search moves on one code point), and a
  // long text takes linear time.
  CHECK(Regex("a??", "t").remove_all("\xff" "a\xfe") == "\xff" "a\xfe");
  std::string long_text(2'000'000, 'b');
  CHECK(Regex("a*?", "t").findall(long_text).size() == 2'000'001);
}

TEST_CASE("answer_line is simple-evals' MMLU extraction", "[extract]") {
  // simple-evals mmlu_eval.py: normalize_response, then for each marker the first
  // re.search(r"(?i)Answer\s*:[ \t]*([A-D]|...)"), normalize_extracted_answer, compared as written.
  auto c = chain(json::array({{{"kind", "answer_line"}}}));
  CHECK(run(c, "answer: b\nblah\nAnswer : C\nAnswer:E") == "b");  // the first match, not uppercased
  CHECK(run(c, "Answer: A is tempting, but...\n\nAnswer: C") == "A");
  CHECK(run(c, "**Answer:** B") == "B");         // ** removed first
  CHECK(run(c, "Answer: $B$") == "B");
  CHECK(run(c, "Answer: \\boxed{C}") == "C");
  CHECK(run(c, "Final Answer: **D**") == "D");
  CHECK(run(c, "Answer: \\(\\mathbf{A}\\)") == "A");
  CHECK(run(c, "Answer:\nC") == "[invalid]");    // only spaces or tabs after the colon
  CHECK(run(c, "Answer \t:\tD") == "D");
  // Python's \s is Unicode whitespace: NBSP, \v, U+202F before the colon.
  CHECK(run(c, "Answer\xc2\xa0: B") == "B");
  CHECK(run(c, "Answer\v: B") == "B");
  CHECK(run(c, "R\xc3\xa9ponse\xe2\x80\xaf: C") == "C");
  CHECK(run(c, "Answer: E") == "[invalid]");
  CHECK(run(c, "Antwort: C") == "C");            // a translated marker
  CHECK(run(c, "Antwort: C\nAnswer: B") == "B");  // markers in simple-evals' order, English first
  CHECK(run(c, "答案：Ｃ") == "C");                // fullwidth letters map to A-D
  CHECK(run(c, "الإجابة: ب") == "B");
  auto e = chain(json::array({{{"kind", "answer_line"}, {"letters", "ABCDEFGHIJ"}}}));
  CHECK(run(e, "Answer: J") == "J");
}

TEST_CASE("last_integer is SGLang's rule", "[extract]") {
  // python3 (SGLang get_answer_value): s.replace(",",""); re.findall(r"\d+", s)[-1]
  //   "1,234 and 5,6" -> 56, "-12" -> 12, "a1b22c" -> 22
  std::string out;
  CHECK((extract_last_integer("1,234 and 5,6", out) && out == "56"));
  CHECK((extract_last_integer("-12", out) && out == "12"));
  CHECK((extract_last_integer("a1b22c", out) && out == "22"));
  CHECK((extract_last_integer("total 1,000,000.", out) && out == "1000000"));
  // python3: ast.literal_eval("007") -> SyntaxError (INVALID); "000" -> 0; "١٨" -> SyntaxError.
  CHECK_FALSE(extract_last_integer("The answer is 007", out));
  CHECK_FALSE(extract_last_integer("...0,4", out));                       // "04" after the commas go
  CHECK_FALSE(extract_last_integer("18 or \xd9\xa1\xd9\xa8", out));      // Arabic-Indic 18 is the last run
  CHECK_FALSE(extract_last_integer("18\xd9\xa1", out));                  // one \d run with a non-ASCII digit
  CHECK((extract_last_integer("\xd9\xa1\xd9\xa8 or 18", out) && out == "18"));
  CHECK((extract_last_integer("000", out) && out == "0"));
  CHECK((extract_last_integer("0", out) && out == "0"));
  CHECK_FALSE(extract_last_integer("no digits, at all", out));
  CHECK_FALSE(extract_last_integer("", out));
}

TEST_CASE("last_boxed handles nesting, the brace-less form and broken boxes", "[extract]") {
  std::string out;
  CHECK((extract_last_boxed("so \\boxed{1} then \\boxed{\\frac{1}{2}}.", out) && out == "\\frac{1}{2}"));
  CHECK((extract_last_boxed("\\boxed{ 18 }", out) && out == "18"));
  CHECK((extract_last_boxed("\\boxed 5$ more", out) && out == "5"));
  CHECK((extract_last_boxed("\\fbox{7}", out) && out == "7"));
  CHECK((extract_last_boxed("\\boxed{{{a}}}", out) && out == "{{a}}"));
  CHECK_FALSE(extract_last_boxed("\\boxed{1} and \\boxed{2", out));  // last box cut off
  CHECK_FALSE(extract_last_boxed("\\boxed{}", out));
  CHECK_FALSE(extract_last_boxed("\\boxed", out));
  CHECK_FALSE(extract_last_boxed("\\boxedx", out));
  CHECK_FALSE(extract_last_boxed("}}}{{{", out));
  CHECK_FALSE(extract_last_boxed("", out));
}

TEST_CASE("first_letter", "[extract]") {
  std::string out;
  CHECK((extract_first_letter(" B", "ABCD", out) && out == "B"));
  CHECK((extract_first_letter("(c) because", "ABCD", out) && out == "C"));
  CHECK((extract_first_letter("**D.**", "ABCD", out) && out == "D"));
  CHECK_FALSE(extract_first_letter(" The answer", "ABCD", out));
  CHECK_FALSE(extract_first_letter(" E", "ABCD", out));
  CHECK((extract_first_letter(" E", "", out) && out == "E"));
  CHECK_FALSE(extract_first_letter(" 4", "ABCD", out));
  CHECK_FALSE(extract_first_letter("", "ABCD", out));
  CHECK_FALSE(extract_first_letter("\xc3\x89", "", out));
}

TEST_CASE("split_reasoning never lets reasoning reach the answer", "[extract]") {
  auto s = split_reasoning("<think>\\boxed{1}</think>The answer is \\boxed{2}");
  CHECK(s.answer == "The answer is \\boxed{2}");
  CHECK_FALSE(s.unclosed);
  s = split_reasoning("hidden \\boxed{1}</think> shown");  // opened by the chat template
  CHECK(s.answer == " shown");
  s = split_reasoning("a<think>x</think>b<think>y</think>c");
  CHECK(s.answer == "abc");
  s = split_reasoning("a<think>Answer: B and never closed");
  CHECK(s.answer == "a");
  CHECK(s.unclosed);
  s = split_reasoning("plain");
  CHECK(s.answer == "plain");
  CHECK_FALSE(s.unclosed);

  auto c = chain(json::array({{{"kind", "remove_reasoning"}}, {{"kind", "last_boxed"}}}));
  CHECK(run(c, "<think>\\boxed{1}</think>so \\boxed{2}") == "2");
  CHECK(run(c, "<think>\\boxed{1}") == "[invalid]");
  auto m = chain(json::array({{{"kind", "remove_reasoning"}}, {{"kind", "answer_line"}}}));
  CHECK(run(m, "<think>Answer: A</think>\nAnswer: D") == "D");
  CHECK(run(m, "<think>Answer: A</think>no letter") == "[invalid]");
}

TEST_CASE("hostile inputs: huge, unicode, invalid UTF-8", "[extract]") {
  auto flex = chain(json::array({{{"kind", "regex"}, {"pattern", kFlex}, {"group_select", -1}}}));
  std::string huge(5'000'000, '9');
  huge += " end";
  CHECK(run(flex, huge).size() == 5'000'000);
  std::string many;
  for (int i = 0; i < 200'000; i++) many += "12 ";
  CHECK(run(flex, many) == "12");
  std::string braces(1'000'000, '{');
  std::string out;
  CHECK_FALSE(extract_last_boxed("\\boxed" + braces, out));
  CHECK((extract_last_boxed("\\boxed" + braces + "x" + std::string(1'000'000, '}'), out)));
  CHECK(out.size() == 1'999'999);
  std::string bad = "\xff\xfe #### 5 \xc3";
  auto strict = chain(json::array({{{"kind", "regex"}, {"pattern", kStrict}}}));
  CHECK(run(strict, bad) == "5");
  CHECK(run(strict, std::string("#### 1\0 #### 2", 14)) == "1");
  CHECK(run(strict, "\xe4\xb8\xad\xe6\x96\x87 #### 3") == "3");
  CHECK(run(strict, "") == "[invalid]");
}

TEST_CASE("bad filter specs are errors naming the place and key", "[extract]") {
  auto msg = [](const json& spec) {
    try {
      FilterChain::parse(spec, "t.yaml: filters[0]");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(msg({{"name", "x"}, {"steps", {{{"kind", "regex"}, {"patern", "a"}}}}}),
             Catch::Contains("t.yaml: filters[0].steps[0]") && Catch::Contains("patern"));
  CHECK_THAT(msg({{"name", "x"}, {"steps", {{{"kind", "nope"}}}}}), Catch::Contains("unknown filter step 'nope'"));
  CHECK_THAT(msg({{"name", "x"}, {"steps", {{{"kind", "regex"}, {"pattern", "(?=a)"}}}}}),
             Catch::Contains("does not compile"));
  CHECK_THAT(msg({{"name", "x"}, {"steps", json::array()}}), Catch::Contains("non-empty"));
  CHECK_THAT(msg({{"name", "x"}, {"steps", {{{"kind", "take_first"}, {"x", 1}}}}}), Catch::Contains("'x'"));
  CHECK_THAT(msg({{"name", "x"}, {"steps", {{{"kind", "regex"}, {"pattern", "a"}, {"group_select", "0"}}}}}),
             Catch::Contains("group_select"));
  CHECK_THAT(msg({{"name", "x"}, {"steps", {{{"kind", "answer_line"}, {"letters", "A]"}}}}}),
             Catch::Contains("letters"));
  CHECK_THAT(msg({{"steps", {{{"kind", "take_first"}}}}}), Catch::Contains("missing key 'name'"));
}
