// RFC 4180 CSV parser: quoting, line breaks inside quotes, record ends, and error positions.
#include <catch2/catch.hpp>

#include "core/error.h"
#include "data/csv.h"
#include "data_test_util.h"

using Catch::Matchers::Contains;
using qeval::parse_csv;

namespace {
std::vector<std::vector<std::string>> fields_of(const std::vector<qeval::CsvRecord>& recs) {
  std::vector<std::vector<std::string>> out;
  for (const auto& r : recs) out.push_back(r.fields);
  return out;
}
using Rows = std::vector<std::vector<std::string>>;
}  // namespace

TEST_CASE("csv: plain records with LF ends", "[csv]") {
  auto recs = parse_csv("a,b,c\n1,2,3\n", "t.csv");
  CHECK(fields_of(recs) == Rows{{"a", "b", "c"}, {"1", "2", "3"}});
  CHECK(recs[0].line == 1);
  CHECK(recs[1].line == 2);
}

TEST_CASE("csv: CRLF record ends and no final newline", "[csv]") {
  CHECK(fields_of(parse_csv("a,b\r\nc,d\r\n", "t")) == Rows{{"a", "b"}, {"c", "d"}});
  CHECK(fields_of(parse_csv("a,b\nc,d", "t")) == Rows{{"a", "b"}, {"c", "d"}});
  CHECK(fields_of(parse_csv("a,b\r\nc,d", "t")) == Rows{{"a", "b"}, {"c", "d"}});
  CHECK(fields_of(parse_csv("\"a\",\"b\"", "t")) == Rows{{"a", "b"}});
  CHECK(parse_csv("", "t").empty());
}

TEST_CASE("csv: quoted fields with commas and doubled quotes", "[csv]") {
  auto recs = parse_csv("\"a,b\",\"say \"\"hi\"\"\",c\n\"\",\"\"\"\"\n", "t");
  CHECK(fields_of(recs) == Rows{{"a,b", "say \"hi\"", "c"}, {"", "\""}});
}

TEST_CASE("csv: line breaks inside quotes are kept and counted", "[csv]") {
  auto recs = parse_csv("\"x\ny\nz\",2\nw,3\n", "t");
  REQUIRE(recs.size() == 2);
  CHECK(recs[0].fields[0] == "x\ny\nz");
  CHECK(recs[1].fields == std::vector<std::string>{"w", "3"});
  CHECK(recs[1].line == 4);
}

TEST_CASE("csv: CRLF inside quotes is kept verbatim", "[csv]") {
  auto recs = parse_csv("\"a\r\nb\",c\r\nd,e\r\n", "t");
  CHECK(fields_of(recs) == Rows{{"a\r\nb", "c"}, {"d", "e"}});
  CHECK(recs[1].line == 3);
}

TEST_CASE("csv: spaces, empty fields and UTF-8 are kept verbatim", "[csv]") {
  CHECK(fields_of(parse_csv(" a , b \n", "t")) == Rows{{" a ", " b "}});
  CHECK(fields_of(parse_csv(",,\n", "t")) == Rows{{"", "", ""}});
  CHECK(fields_of(parse_csv("a,b,", "t")) == Rows{{"a", "b", ""}});
  CHECK(fields_of(parse_csv("a,b,\n", "t")) == Rows{{"a", "b", ""}});
  CHECK(fields_of(parse_csv("\xC3\xA9t\xC3\xA9,\xE2\x82\xAC 5\n", "t")) == Rows{{"\xC3\xA9t\xC3\xA9", "\xE2\x82\xAC 5"}});
  CHECK(fields_of(parse_csv("\xEF\xBB\xBFq,a\n", "t")) == Rows{{"q", "a"}});  // BOM dropped
}

TEST_CASE("csv: empty lines are records, never skipped", "[csv]") {
  CHECK(fields_of(parse_csv("a,b\n\nc,d\n", "t")) == Rows{{"a", "b"}, {""}, {"c", "d"}});
  REQUIRE_THROWS_WITH(parse_csv("a,b\n\nc,d\n", "t.csv", 2),
                      Contains("t.csv: record 2 (line 2)") && Contains("expected 2 fields, found 1"));
}

TEST_CASE("csv: unterminated quote names file, record and line", "[csv]") {
  REQUIRE_THROWS_WITH(parse_csv("a,b\nc,d\n\"e,f\ng,h\n", "u.csv"),
                      Contains("u.csv: record 3 (line 3)") && Contains("unterminated quote"));
}

TEST_CASE("csv: a quote inside an unquoted field is literal, or an error when strict", "[csv]") {
  // As in the MMLU release (val/college_medicine_val.csv): read like Python's csv module.
  CHECK(fields_of(parse_csv("Will to Truth?\",b\nc,d\"e\n", "s.csv")) == Rows{{"Will to Truth?\"", "b"}, {"c", "d\"e"}});
  REQUIRE_THROWS_WITH(parse_csv("a,b\nc,d\"e\n", "s.csv", 0, true),
                      Contains("s.csv: record 2 (line 2)") && Contains("stray quote") && Contains("field 2"));
}

TEST_CASE("csv: a character after a closing quote is an error", "[csv]") {
  REQUIRE_THROWS_WITH(parse_csv("\"a\"b,c\n", "q.csv"), Contains("q.csv: record 1 (line 1)") && Contains("'b'"));
  REQUIRE_THROWS_WITH(parse_csv("\"a\"\rb\n", "q.csv"), Contains("'\\r'"));
}

TEST_CASE("csv: wrong field count after a multi-line record names the right line", "[csv]") {
  REQUIRE_THROWS_WITH(parse_csv("\"x\ny\",b\nc\n", "w.csv", 2),
                      Contains("w.csv: record 2 (line 3)") && Contains("expected 2 fields, found 1"));
  REQUIRE_THROWS_WITH(parse_csv("a,b,c\n", "w.csv", 2), Contains("found 3"));
}

TEST_CASE("csv: read_csv names the file", "[csv]") {
  qeval::test::TempDir dir;
  auto p = dir.path() / "f.csv";
  qeval::test::write_bytes(p, "a,b\nc\n");
  REQUIRE_THROWS_WITH(qeval::read_csv(p, 2), Contains(p.string() + ": record 2"));
  CHECK(qeval::read_csv(p).size() == 2);
  REQUIRE_THROWS_AS(qeval::read_csv(dir.path() / "missing.csv"), qeval::Error);
}
