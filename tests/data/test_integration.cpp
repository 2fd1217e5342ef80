// Integration: the real GSM8K and MMLU files under $QEVAL_DATA load with the documented row
// counts (skipped with a WARN when $QEVAL_DATA is unset).
#include <cstdlib>

#include <catch2/catch.hpp>

#include "data/datasets.h"

TEST_CASE("integration: GSM8K and all 57 MMLU subjects load with the published row counts", "[data]") {
  const char* data = std::getenv("QEVAL_DATA");
  if (!data || !*data) {
    WARN("QEVAL_DATA not set: skipping the real-data integration test");
    return;
  }
  CHECK(qeval::load_gsm8k(qeval::gsm8k_file("train")).size() == 7473);
  CHECK(qeval::load_gsm8k(qeval::gsm8k_file("test")).size() == 1319);
  size_t dev = 0, val = 0, test = 0;
  size_t answer_counts[4] = {0, 0, 0, 0};
  for (const auto& s : qeval::mmlu_subjects()) {
    auto d = qeval::load_mmlu(qeval::mmlu_file(s, "dev"), s);
    CHECK(d.size() == 5);
    dev += d.size();
    val += qeval::load_mmlu(qeval::mmlu_file(s, "val"), s).size();
    auto t = qeval::load_mmlu(qeval::mmlu_file(s, "test"), s);
    test += t.size();
    for (const auto& doc : t) ++answer_counts[doc["answer"].get<int>()];
  }
  CHECK(dev == 285);
  CHECK(val == 1531);
  CHECK(test == 14042);
  for (size_t c : answer_counts) CHECK(c > 2000);  // every letter is used (roughly balanced)
  auto aa = qeval::load_mmlu(qeval::mmlu_file("abstract_algebra", "test"), "abstract_algebra");
  CHECK(aa.size() == 100);
  CHECK(qeval::load_mmlu(qeval::mmlu_file("professional_law", "test"), "professional_law").size() == 1534);
  // The one row with a bare quote in an unquoted field keeps it, as Python's csv module does.
  auto cm = qeval::load_mmlu(qeval::mmlu_file("college_medicine", "val"), "college_medicine");
  REQUIRE(cm.size() == 22);
  CHECK(cm[5]["question"].get<std::string>().substr(cm[5]["question"].get<std::string>().size() - 7) == "Truth?\"");
  CHECK(cm[5]["choices"][0] == "An intrinsic desire to know the truth.");
}
