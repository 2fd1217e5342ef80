// JSONL reader, GSM8K/MMLU loaders and validation, and the datasets tree paths.
#include <algorithm>
#include <set>

#include <catch2/catch.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "data/datasets.h"
#include "data/jsonl.h"
#include "data_test_util.h"

using Catch::Matchers::Contains;
using qeval::test::EnvGuard;
using qeval::test::TempDir;
using qeval::test::write_bytes;

TEST_CASE("jsonl: one value per line, LF/CRLF, optional final newline", "[jsonl]") {
  auto v = qeval::parse_jsonl("{\"a\":1}\n[2]\n\"x\"\n", "t.jsonl");
  REQUIRE(v.size() == 3);
  CHECK(v[0]["a"] == 1);
  CHECK(v[1][0] == 2);
  CHECK(v[2] == "x");
  CHECK(qeval::parse_jsonl("{\"a\":1}\r\n{\"a\":2}", "t").size() == 2);
  CHECK(qeval::parse_jsonl("{\"a\":1}\n\n\n", "t").size() == 1);  // trailing blank lines
  CHECK(qeval::parse_jsonl("", "t").empty());
}

TEST_CASE("jsonl: malformed line names file:line", "[jsonl]") {
  REQUIRE_THROWS_WITH(qeval::parse_jsonl("{\"a\":1}\n{\"a\":\n{\"a\":3}\n", "bad.jsonl"),
                      Contains("bad.jsonl:2: malformed JSON"));
  REQUIRE_THROWS_WITH(qeval::parse_jsonl("{\"a\":1}\n{\"a\":2} x\n", "bad.jsonl"), Contains("bad.jsonl:2:"));
}

TEST_CASE("jsonl: blank line in the middle is an error, not skipped", "[jsonl]") {
  REQUIRE_THROWS_WITH(qeval::parse_jsonl("1\n\n2\n", "b.jsonl"), Contains("b.jsonl:2: empty line"));
}

TEST_CASE("jsonl: read_jsonl names the file", "[jsonl]") {
  TempDir dir;
  auto p = dir.path() / "x.jsonl";
  write_bytes(p, "1\n2\n{\n");
  REQUIRE_THROWS_WITH(qeval::read_jsonl(p), Contains(p.string() + ":3:"));
}

TEST_CASE("gsm8k: loads question/answer objects", "[gsm8k]") {
  TempDir dir;
  auto p = dir.path() / "g.jsonl";
  write_bytes(p, "{\"question\": \"1+1?\", \"answer\": \"1+1=<<1+1=2>>2\\n#### 2\"}\n"
                 "{\"question\": \"q2\", \"answer\": \"#### 1,450,000\"}\n");
  auto docs = qeval::load_gsm8k(p);
  REQUIRE(docs.size() == 2);
  CHECK(docs[0]["question"] == "1+1?");
  CHECK(docs[0]["answer"] == "1+1=<<1+1=2>>2\n#### 2");
  CHECK(docs[1]["answer"] == "#### 1,450,000");
}

TEST_CASE("gsm8k: validation errors name file and line", "[gsm8k]") {
  TempDir dir;
  auto p = dir.path() / "g.jsonl";
  const std::string ok = "{\"question\": \"q\", \"answer\": \"a\\n#### 1\"}\n";
  write_bytes(p, ok + "[1,2]\n");
  REQUIRE_THROWS_WITH(qeval::load_gsm8k(p), Contains(p.string() + ":2: expected a JSON object"));
  write_bytes(p, ok + ok + "{\"question\": \"q\"}\n");
  REQUIRE_THROWS_WITH(qeval::load_gsm8k(p), Contains(p.string() + ":3: missing key \"answer\""));
  write_bytes(p, "{\"question\": \"q\", \"answer\": 4}\n");
  REQUIRE_THROWS_WITH(qeval::load_gsm8k(p), Contains(p.string() + ":1: \"answer\" must be a string"));
  write_bytes(p, ok + "{\"question\": \n");
  REQUIRE_THROWS_WITH(qeval::load_gsm8k(p), Contains(p.string() + ":2: malformed JSON"));
  // An answer without its "#### <number>" line has nothing to score against.
  write_bytes(p, ok + ok + "{\"question\": \"q\", \"answer\": \"She makes 5 dollars.\\n5\"}\n");
  REQUIRE_THROWS_WITH(qeval::load_gsm8k(p), Contains(p.string() + ":3: \"answer\" has no \"#### <number>\""));
  // ... and so has one whose "####" is not followed by a number.
  write_bytes(p, ok + "{\"question\": \"q\", \"answer\": \"x\\n#### eighteen\"}\n");
  REQUIRE_THROWS_WITH(qeval::load_gsm8k(p), Contains(p.string() + ":2: \"answer\" ends with \"#### eighteen\", not a number"));
  write_bytes(p, ok + "{\"question\": \"q\", \"answer\": \"x\\n#### -3.5\"}\n");
  CHECK(qeval::load_gsm8k(p).size() == 2);
  write_bytes(p, "");
  REQUIRE_THROWS_WITH(qeval::load_gsm8k(p), Contains(p.string() + ": no documents") && Contains("qeval fetch"));
}

TEST_CASE("mmlu: rows become docs with choices, answer index and subject", "[mmlu]") {
  TempDir dir;
  auto p = dir.path() / "abstract_algebra_dev.csv";
  write_bytes(p, "\"Find all c in Z_3, \"\"really\"\".\",0,1, 2 ,3,B\r\n"
                 "\"Line one\nline two\",x,y,z,w,D");
  auto docs = qeval::load_mmlu(p, "abstract_algebra");
  REQUIRE(docs.size() == 2);
  CHECK(docs[0]["question"] == "Find all c in Z_3, \"really\".");
  CHECK(docs[0]["choices"] == nlohmann::json::array({"0", "1", " 2 ", "3"}));
  CHECK(docs[0]["answer"] == 1);
  CHECK(docs[0]["subject"] == "abstract_algebra");
  CHECK(docs[0]["subject_name"] == "abstract algebra");
  CHECK(docs[1]["question"] == "Line one\nline two");
  CHECK(docs[1]["answer"] == 3);
}

TEST_CASE("mmlu: validation errors name file and record", "[mmlu]") {
  TempDir dir;
  auto p = dir.path() / "s.csv";
  write_bytes(p, "q,a,b,c,d,A\nq,a,b,c,D\n");
  REQUIRE_THROWS_WITH(qeval::load_mmlu(p, "anatomy"),
                      Contains(p.string() + ": record 2 (line 2): expected 6 fields, found 5"));
  write_bytes(p, "q,a,b,c,d,A\n\"multi\nline\",a,b,c,d,E\n");
  REQUIRE_THROWS_WITH(qeval::load_mmlu(p, "anatomy"),
                      Contains(p.string() + ": record 2 (line 2)") && Contains("A, B, C, D, got \"E\""));
  write_bytes(p, "q,a,b,c,d,a\n");
  REQUIRE_THROWS_WITH(qeval::load_mmlu(p, "anatomy"), Contains("record 1"));
  write_bytes(p, "q,a,b,c,d,\"A\n");
  REQUIRE_THROWS_WITH(qeval::load_mmlu(p, "anatomy"), Contains("unterminated quote"));
  write_bytes(p, "q,a,b,c,d,A\n\"x\ny\",a,b,c,d,B\nWh\xff" "at?,a,b,c,d,A\n");
  REQUIRE_THROWS_WITH(qeval::load_mmlu(p, "anatomy"),
                      Contains(p.string() + ": record 3 (line 4): field 1 is not valid UTF-8 at byte 2"));
  write_bytes(p, "q,a,b,\"\xc3\",d,A\n");  // a truncated 2-byte sequence
  REQUIRE_THROWS_WITH(qeval::load_mmlu(p, "anatomy"), Contains("record 1 (line 1): field 4 is not valid UTF-8"));
  write_bytes(p, "");
  REQUIRE_THROWS_WITH(qeval::load_mmlu(p, "anatomy"), Contains(p.string() + ": no records"));
}

TEST_CASE("mmlu: 57 sorted unique subjects", "[mmlu]") {
  const auto& s = qeval::mmlu_subjects();
  CHECK(s.size() == 57);
  CHECK(std::is_sorted(s.begin(), s.end()));
  CHECK(std::set<std::string>(s.begin(), s.end()).size() == 57);
  CHECK(s.front() == "abstract_algebra");
  CHECK(s.back() == "world_religions");
}

TEST_CASE("datasets tree: root from $QEVAL_DATA, else the cache", "[paths]") {
  {
    EnvGuard env("QEVAL_DATA", "/some/where");
    CHECK(qeval::datasets_root() == std::filesystem::path("/some/where"));
  }
  {
    EnvGuard env("QEVAL_DATA", std::nullopt);
    CHECK(qeval::datasets_root() == qeval::cache_dir() / "datasets");
  }
}

TEST_CASE("datasets tree: file paths, missing files and bad names", "[paths]") {
  TempDir dir;
  EnvGuard env("QEVAL_DATA", dir.path().string());
  write_bytes(dir.path() / "gsm8k" / "test.jsonl", "");
  write_bytes(dir.path() / "mmlu" / "val" / "anatomy_val.csv", "");
  CHECK(qeval::gsm8k_file("test") == dir.path() / "gsm8k" / "test.jsonl");
  CHECK(qeval::mmlu_file("anatomy", "val") == dir.path() / "mmlu" / "val" / "anatomy_val.csv");
  auto missing = (dir.path() / "gsm8k" / "train.jsonl").string();
  REQUIRE_THROWS_WITH(qeval::gsm8k_file("train"), Contains(missing) && Contains("qeval fetch gsm8k mmlu") &&
                                                      Contains("--mirror"));
  REQUIRE_THROWS_WITH(qeval::mmlu_file("anatomy", "test"),
                      Contains((dir.path() / "mmlu" / "test" / "anatomy_test.csv").string()) &&
                          Contains("qeval fetch gsm8k mmlu"));
  REQUIRE_THROWS_WITH(qeval::gsm8k_file("validation"), Contains("\"train\" or \"test\""));
  REQUIRE_THROWS_WITH(qeval::mmlu_file("anatomy", "train"), Contains("\"dev\", \"val\" or \"test\""));
  REQUIRE_THROWS_WITH(qeval::mmlu_file("anatomyy", "val"), Contains("subject \"anatomyy\" does not exist"));
}
