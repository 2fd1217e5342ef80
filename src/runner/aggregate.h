// Turns per-sample logs into the numbers of results.json: per-task metrics with stderr,
// sample accounting, throughput, group micro-averages and paired comparisons against the
// baseline. Pure: the caller supplies the logged samples.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace qeval {

// Samples of one (sub)task, doc_id -> logged sample line.
using SampleMap = std::map<int, nlohmann::json>;

struct TaskLayout {
  std::string name;                   // "gsm8k" or the group "mmlu"
  std::string version;
  std::vector<std::string> metrics;   // metric keys, e.g. "exact_match,strict-match"
  std::vector<std::string> subtasks;  // empty for a plain task; "mmlu_<subject>" for a group
  std::vector<int> expected_docs;     // per subtask (or [n] for a plain task): docs asked
};

// Results of one variant's task: {"version","n","n_errors","n_invalid","n_truncated",
// "n_prompt_truncated","metrics":{key:{"value","stderr","n"}},"throughput":{...}}, and
// "first_error" (the error of the lowest failed doc id) when n_errors > 0.
// Samples without an error count in the metrics; errors are counted, not scored. With no
// sample scored (n = 0) a metric's value and stderr are null.
nlohmann::json aggregate_samples(const std::vector<const SampleMap*>& parts,
                                 const std::vector<std::string>& metrics, const std::string& version);

// Paired comparison of `variant` against `base` on docs answered (without error) by both:
// {"delta","ci95":[lo,hi],"right_to_wrong","wrong_to_right","mcnemar_p","n_paired"}.
nlohmann::json compare_samples(const std::vector<const SampleMap*>& base,
                               const std::vector<const SampleMap*>& variant, const std::string& metric);

}  // namespace qeval
