// Dataset loaders (GSM8K JSONL, MMLU CSV) and the on-disk layout of the datasets tree.
// Docs are JSON objects so that task templates can address fields by name. All loaders are
// pure functions of their input file; they throw qeval::Error naming the file and line/record
// on malformed input and never skip rows. Thread safety: all functions are reentrant.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace qeval {

// GSM8K doc: {"question": str, "answer": str}. Each line must be a JSON object with string
// `question` and `answer` (extra keys are kept). Throws Error "file:line: ..." otherwise.
std::vector<nlohmann::json> load_gsm8k(const std::filesystem::path& jsonl_file);

// MMLU doc: {"question": str, "choices": [4 str], "answer": int 0..3,
//            "subject": "abstract_algebra", "subject_name": "abstract algebra"}.
// Each CSV record must have 6 fields (question, A, B, C, D, answer letter A-D); fields are
// kept verbatim. Throws Error naming the file and record number otherwise.
std::vector<nlohmann::json> load_mmlu(const std::filesystem::path& csv_file, const std::string& subject);

// The 57 MMLU subjects, sorted (static storage, never changes).
const std::vector<std::string>& mmlu_subjects();

// Root of the datasets tree: $QEVAL_DATA if set, else cache_dir()/"datasets". The layout is
// gsm8k/{train,test}.jsonl, mmlu/{dev,val,test}/<subject>_<split>.csv
std::filesystem::path datasets_root();

// Path of a dataset file under datasets_root(). Throws Error naming the expected path and
// hinting `qeval fetch gsm8k mmlu` (or --mirror DIR) when it is missing, or when the split /
// subject is unknown.
std::filesystem::path gsm8k_file(const std::string& split);                             // "train" | "test"
std::filesystem::path mmlu_file(const std::string& subject, const std::string& split);  // dev|val|test

}  // namespace qeval
