// GSM8K and MMLU loaders and the datasets tree layout (see datasets.h).
#include "data/datasets.h"

#include <algorithm>
#include <cstdlib>

#include <re2/re2.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/text.h"
#include "data/csv.h"
#include "data/jsonl.h"

namespace qeval {

namespace {

constexpr const char* kFetchHint =
    "run `qeval fetch gsm8k mmlu` (downloads into the qeval cache), or `qeval fetch gsm8k mmlu --mirror DIR` "
    "to copy from a local copy, or point $QEVAL_DATA at a datasets tree";

std::string describe_root() {
  const char* env = std::getenv("QEVAL_DATA");
  return env && *env ? "from $QEVAL_DATA" : "the default; set $QEVAL_DATA to use another tree";
}

// Throws the "missing dataset file" Error for .
[[noreturn]] void fail_missing(const std::filesystem::path& path, const std::string& what) {
  fail("{}: {} not found (datasets root {}, {}); {}", path.string(), what, datasets_root().string(), describe_root(),
       kFetchHint);
}

}  // namespace

std::vector<nlohmann::json> load_gsm8k(const std::filesystem::path& jsonl_file) {
  std::vector<nlohmann::json> docs = read_jsonl(jsonl_file);
  if (docs.empty()) fail("{}: no documents (an empty file); {}", jsonl_file.string(), kFetchHint);
  for (size_t i = 0; i < docs.size(); ++i) {
    const nlohmann::json& d = docs[i];
    if (!d.is_object()) fail("{}:{}: expected a JSON object with \"question\" and \"answer\", got {}",
                             jsonl_file.string(), i + 1, d.type_name());
    for (const char* key : {"question", "answer"}) {
      auto it = d.find(key);
      if (it == d.end()) fail("{}:{}: missing key \"{}\" (GSM8K lines need string \"question\" and \"answer\")",
                              jsonl_file.string(), i + 1, key);
      if (!it->is_string()) fail("{}:{}: \"{}\" must be a string, got {}", jsonl_file.string(), i + 1, key,
                                 it->type_name());
    }
    // The reference answer (and a few-shot example's) ends with "#### <number>": without it
    // there is nothing to score against.
    const std::string& answer = d["answer"].get_ref<const std::string&>();
    const size_t mark = answer.rfind("####");
    if (mark == std::string::npos)
      fail("{}:{}: \"answer\" has no \"#### <number>\" final answer (every GSM8K answer ends with one; "
           "hint: the file is damaged or not GSM8K: fetch it again)", jsonl_file.string(), i + 1);
    // What follows is a number (digits, commas, an optional sign and decimals): anything else
    // could never be matched by an extracted answer.
    static const RE2 kNumber(R"(\s*-?[0-9][0-9,]*(\.[0-9]+)?\s*)");
    if (!RE2::FullMatch(answer.substr(mark + 4), kNumber))
      fail("{}:{}: \"answer\" ends with \"####{}\", not a number (hint: the file is damaged or not GSM8K: "
           "fetch it again)", jsonl_file.string(), i + 1, answer.substr(mark + 4, 40));
  }
  return docs;
}

std::vector<nlohmann::json> load_mmlu(const std::filesystem::path& csv_file, const std::string& subject) {
  if (subject.empty()) fail("{}: load_mmlu needs a subject name (e.g. abstract_algebra)", csv_file.string());
  std::string subject_name = subject;
  std::replace(subject_name.begin(), subject_name.end(), '_', ' ');
  std::vector<CsvRecord> records = read_csv(csv_file, 6);
  if (records.empty()) fail("{}: no records (an empty file); {}", csv_file.string(), kFetchHint);
  std::vector<nlohmann::json> docs;
  docs.reserve(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    const CsvRecord& r = records[i];
    for (size_t f = 0; f < r.fields.size(); ++f)
      if (const size_t bad = utf8_first_invalid(r.fields[f]); bad != std::string_view::npos)
        fail("{}: record {} (line {}): field {} is not valid UTF-8 at byte {} (hint: the MMLU CSVs are UTF-8; "
             "the file is damaged: fetch it again)", csv_file.string(), i + 1, r.line, f + 1, bad);
    const std::string& letter = r.fields[5];
    if (letter.size() != 1 || letter[0] < 'A' || letter[0] > 'D')
      fail("{}: record {} (line {}): answer field (6th) must be one of A, B, C, D, got \"{}\"", csv_file.string(),
           i + 1, r.line, letter);
    docs.push_back({{"question", r.fields[0]},
                    {"choices", {r.fields[1], r.fields[2], r.fields[3], r.fields[4]}},
                    {"answer", letter[0] - 'A'},
                    {"subject", subject},
                    {"subject_name", subject_name}});
  }
  return docs;
}

const std::vector<std::string>& mmlu_subjects() {
  static const std::vector<std::string> kSubjects = {
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
    "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
    "college_medicine", "college_physics", "computer_security", "conceptual_physics",
    "econometrics", "electrical_engineering", "elementary_mathematics", "formal_logic",
    "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics",
    "high_school_physics", "high_school_psychology", "high_school_statistics",
    "high_school_us_history", "high_school_world_history", "human_aging", "human_sexuality",
    "international_law", "jurisprudence", "logical_fallacies", "machine_learning", "management",
    "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios",
    "nutrition", "philosophy", "prehistory", "professional_accounting", "professional_law",
    "professional_medicine", "professional_psychology", "public_relations", "security_studies",
    "sociology", "us_foreign_policy", "virology", "world_religions",
  };
  return kSubjects;
}

std::filesystem::path datasets_root() {
  if (const char* env = std::getenv("QEVAL_DATA"); env && *env) return std::filesystem::path(env);
  return cache_dir() / "datasets";
}

std::filesystem::path gsm8k_file(const std::string& split) {
  if (split != "train" && split != "test")
    fail("GSM8K split \"{}\" does not exist (use \"train\" or \"test\")", split);
  std::filesystem::path p = datasets_root() / "gsm8k" / (split + ".jsonl");
  if (!std::filesystem::is_regular_file(p)) fail_missing(p, "GSM8K " + split + " split");
  return p;
}

std::filesystem::path mmlu_file(const std::string& subject, const std::string& split) {
  if (split != "dev" && split != "val" && split != "test")
    fail("MMLU split \"{}\" does not exist (use \"dev\", \"val\" or \"test\")", split);
  const auto& subs = mmlu_subjects();
  if (!std::binary_search(subs.begin(), subs.end(), subject))
    fail("MMLU subject \"{}\" does not exist (one of the 57 snake_case names such as abstract_algebra, "
         "high_school_physics; see mmlu_subjects())", subject);
  std::filesystem::path p = datasets_root() / "mmlu" / split / (subject + "_" + split + ".csv");
  if (!std::filesystem::is_regular_file(p)) fail_missing(p, "MMLU " + subject + " " + split + " file");
  return p;
}

}  // namespace qeval
