// Task definitions: a task is data (configs/tasks/<name>.yaml, embedded in the binary, or any
// .yaml file with the same schema), parsed strictly into a TaskSpec. This header also holds
// what is built from a TaskSpec: the subtasks with their docs, one request per test doc
// (prompts byte-identical to lm-evaluation-harness for gsm8k and mmlu), and the scoring of a
// backend's answer (filters + metric).
//
// YAML schema (every key not listed is an Error naming the key and the file):
//   task: gsm8k                      # name (defaults to the file name without .yaml)
//   version: "3.0"                   # required, recorded in results.json
//   dataset: gsm8k | mmlu            # mmlu expands to one subtask per subject
//   test_split: test                 # gsm8k: train|test; mmlu: dev|val|test
//   fewshot_split: train             # required when num_fewshot > 0
//   num_fewshot: 5
//   fewshot_sampler: {kind: python_random, seed: 1234} | {kind: first_n}
//   output_type: generate_until | multiple_choice_loglikelihood | chat
//   description: "..."               # template, prepended once to completion prompts
//   doc_to_text: "Question: {{question}}\nAnswer:"          # template (completion prompts)
//   doc_to_target: "{{answer}}"      # template; with doc_to_choice it must give an index
//   doc_to_choice: [A, B, C, D]      # labels; loglikelihood continuations are
//                                    # target_delimiter + label
//   target_delimiter: " "            # between a shot's text and its target
//   fewshot_delimiter: "\n\n"        # after each shot
//   target_filter: [steps]           # optional filter steps applied to the scoring reference
//   chat_user: "..."                 # template of the user message (output_type chat)
//   generation: {until: [...], max_tokens: 256, temperature: 0.0}
//   filters: [{name: strict-match, steps: [...]}]   # see extract/filter.h
//   metric: {kind: exact_match, ignore_case: .., regexes_to_ignore: [..], ..} | {kind: acc}
// Templates: see template.h. Fields: gsm8k docs {question, answer}; mmlu docs {question,
// choices, answer, subject, subject_name}.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "extract/filter.h"
#include "metrics/metric.h"
#include "tasks/template.h"

namespace qeval {

// Generated at build time from configs/tasks/*.yaml: (name, YAML text), sorted by name.
const std::vector<std::pair<std::string_view, std::string_view>>& builtin_task_yamls();

enum class OutputType { kGenerateUntil, kMultipleChoice, kChat };
enum class FewshotSampler { kPythonRandom, kFirstN };
enum class MetricKind { kExactMatch, kAcc };

struct TaskSpec {
  std::string name;                // "gsm8k"
  std::string source;              // where it came from, for messages: "gsm8k.yaml (built-in)" or a path
  std::string yaml_text;           // the file as read
  std::string version;             // "3.0"
  std::string dataset;             // "gsm8k" | "mmlu"
  std::string test_split = "test";
  std::string fewshot_split;       // "" when num_fewshot == 0
  int num_fewshot = 0;
  FewshotSampler fewshot_sampler = FewshotSampler::kFirstN;
  int64_t fewshot_seed = 1234;     // python_random only
  OutputType output_type = OutputType::kGenerateUntil;
  Template description, doc_to_text, doc_to_target, chat_user;
  std::vector<std::string> doc_to_choice;
  std::string target_delimiter = " ", fewshot_delimiter = "\n\n";
  std::optional<FilterChain> target_filter;
  std::vector<std::string> until;  // stop strings
  int max_tokens = 256;
  double temperature = 0.0;
  std::vector<FilterChain> filters;
  MetricKind metric = MetricKind::kExactMatch;
  ExactMatch exact_match;
};

// Names of the built-in tasks, sorted.
std::vector<std::string> builtin_task_names();

// A built-in task by name ("gsm8k"), or a path to a .yaml/.yml file. Throws Error naming the
// file and key on any schema problem, or listing the built-in names for an unknown name.
TaskSpec load_task(const std::string& name_or_path);

// Parses YAML text; `source` names it in error messages and `default_name` is used when the
// file has no `task:` key. Throws Error as load_task.
TaskSpec parse_task_yaml(const std::string& yaml_text, const std::string& source,
                         const std::string& default_name);

// One unit of evaluation: gsm8k has one; mmlu-based tasks have one per subject
// ("<task>_<subject>", group = task name), in mmlu_subjects() order.
struct SubTask {
  std::string name;   // "gsm8k", "mmlu_abstract_algebra", "mmlu_chat_abstract_algebra"
  std::string group;  // "" or the task name ("mmlu")
  std::vector<nlohmann::json> test_docs, fewshot_docs;
  std::string test_file;     // where test_docs came from
  std::string fewshot_file;  // where fewshot_docs came from (for errors)
};

// Loads the docs through src/data (datasets_root(), $QEVAL_DATA). Throws Error when a file is
// missing or malformed.
std::vector<SubTask> expand_task(const TaskSpec& spec);

// The request for one test doc. Exactly one of gen / loglik is set.
struct Instance {
  std::string task;                    // subtask name
  int doc_id = 0;                      // 0-based index in the subtask's test split
  std::optional<GenRequest> gen;       // generate_until and chat
  std::optional<LoglikRequest> loglik; // multiple_choice_loglikelihood
  nlohmann::json doc;
  std::string target;                  // the scoring reference (after target_filter)
  int gold = -1;                       // multiple choice: index of the right choice
};

// One Instance per test doc, for the first `limit` docs (limit < 0: all). Few-shot examples
// are drawn exactly as lm-eval does: one sampler per subtask, advanced doc by doc in order
// (so the first N docs get the same shots as in a full run); when the few-shot split is the
// test split, the doc itself is excluded. Pure: no I/O. Throws Error (naming the task file)
// when a template cannot be rendered for a doc or there are too few few-shot docs.
std::vector<Instance> build_instances(const TaskSpec& spec, const SubTask& sub, int limit);

// {"task", "doc_id", "prompt"} (completion and loglikelihood context) or {"task", "doc_id",
// "messages": [{"role", "content"}]} (chat): the line `qeval prompts` prints.
nlohmann::json prompt_record(const Instance& inst);

struct SampleScore {
  nlohmann::json extracted = nlohmann::json::object();  // filter name -> extracted string
  nlohmann::json scores = nlohmann::json::object();     // metric key -> 0.0 / 1.0
  bool invalid = false;    // the first filter found no answer
  bool truncated = false;  // chat: finish_reason "length" or an unclosed <think>; scored 0
};

// Scores a successful generation (result.error must be empty: failed requests are recorded,
// never scored). Reasoning (GenResult::reasoning, <think> blocks) is never searched.
SampleScore score_generation(const TaskSpec& spec, const Instance& inst, const GenResult& result);

// Scores a successful loglikelihood request: acc = argmax (ties -> first) == gold.
// extracted = {"none": chosen label}. Throws Error when the result does not hold one
// logprob per continuation (a backend bug) or the request failed.
SampleScore score_loglikelihood(const TaskSpec& spec, const Instance& inst, const LoglikResult& result);

// The metric keys a task reports, in order: {"exact_match,<filter>", ...} or {"acc,none"}.
std::vector<std::string> metric_keys(const TaskSpec& spec);

}  // namespace qeval
