// Task YAML parsing (strict), subtask expansion, few-shot prompt building and scoring.
#include "tasks/task.h"

#include <algorithm>
#include <filesystem>
#include <charconv>


#include "core/error.h"
#include "core/fs.h"
#include "core/text.h"
#include "core/yaml_json.h"
#include "data/datasets.h"
#include "extract/reasoning.h"
#include "extract/spec.h"
#include "tasks/py_random.h"

namespace qeval {

namespace {


std::vector<std::string> dataset_fields(const std::string& dataset) {
  if (dataset == "gsm8k") return {"question", "answer"};
  return {"question", "choices", "answer", "subject", "subject_name"};
}

bool valid_split(const std::string& dataset, const std::string& split) {
  if (dataset == "gsm8k") return split == "train" || split == "test";
  return split == "dev" || split == "val" || split == "test";
}

// The string form of a shot's / test doc's target (doc_to_choice label when set).
std::string target_text(const TaskSpec& spec, const nlohmann::json& doc, int* gold) {
  nlohmann::json v = spec.doc_to_target.render_value(doc);
  if (spec.doc_to_choice.empty()) {
    if (gold) *gold = -1;
    return v.is_string() ? v.get<std::string>() : v.dump();
  }
  int64_t idx = -1;
  if (v.is_number_integer()) {
    idx = v.get<int64_t>();
  } else if (v.is_string()) {
    auto it = std::find(spec.doc_to_choice.begin(), spec.doc_to_choice.end(), v.get<std::string>());
    if (it != spec.doc_to_choice.end()) idx = it - spec.doc_to_choice.begin();
  }
  if (idx < 0 || idx >= static_cast<int64_t>(spec.doc_to_choice.size())) {
    fail("{}: doc_to_target gave {} for a doc, not an index into doc_to_choice (doc: {:.200})",
         spec.source, v.dump(), doc.dump());
  }
  if (gold) *gold = static_cast<int>(idx);
  return spec.doc_to_choice[static_cast<size_t>(idx)];
}

}  // namespace

std::vector<std::string> builtin_task_names() {
  std::vector<std::string> names;
  for (const auto& [n, text] : builtin_task_yamls()) names.emplace_back(n);
  std::sort(names.begin(), names.end());
  return names;
}

TaskSpec load_task(const std::string& name_or_path) {
  for (const auto& [n, text] : builtin_task_yamls()) {
    if (n == name_or_path) return parse_task_yaml(std::string(text), std::string(n) + ".yaml (built-in)", std::string(n));
  }
  if (ends_with(name_or_path, ".yaml") || ends_with(name_or_path, ".yml") ||
      name_or_path.find('/') != std::string::npos) {
    fs::path p(name_or_path);
    if (!fs::exists(p)) fail("{}: task file not found", name_or_path);
    return parse_task_yaml(read_file(p), name_or_path, p.stem().string());
  }
  std::string known;
  for (const auto& n : builtin_task_names()) known += (known.empty() ? "" : ", ") + n;
  fail("unknown task '{}' (built-in tasks: {}; or give a path to a .yaml file)", name_or_path, known);
}

TaskSpec parse_task_yaml(const std::string& yaml_text, const std::string& source,
                         const std::string& default_name) {
  const std::string& w = source;
  const YAML::Node root = load_yaml(yaml_text, source);
  nlohmann::json j = yaml_to_json(root, source);
  if (!j.is_object()) fail("{}: a task file must be a mapping of keys", source);
  spec::check_keys(j,
                   {"task", "version", "dataset", "test_split", "fewshot_split", "num_fewshot",
                    "fewshot_sampler", "output_type", "description", "doc_to_text", "doc_to_target",
                    "doc_to_choice", "target_delimiter", "fewshot_delimiter", "target_filter",
                    "chat_user", "generation", "filters", "metric"},
                   w);
  TaskSpec t;
  t.source = source;
  t.yaml_text = yaml_text;
  t.name = spec::get_string(j, "task", default_name, w);
  // The name becomes a sample file's name (and a results key): a plain file name.
  if (t.name.empty() || t.name == "." || t.name == ".." ||
      t.name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != std::string::npos)
    fail("{}: task: '{}' must be a name of letters, digits, '_', '.' and '-' (it names the task's sample files)", w,
         t.name);
  // version as written (3.0 stays "3.0"), whether quoted or not.
  const YAML::Node version = root["version"];
  if (!version || version.IsNull()) fail("{}: missing key 'version' (e.g. version: \"1.0\"); results record it", w);
  if (!version.IsScalar())
    fail("{}: version: expected a string or number, got a {} (e.g. version: \"1.0\")", w,
         version.IsSequence() ? "list" : "mapping");
  if (version.Scalar().empty()) fail("{}: version: is empty (e.g. version: \"1.0\"); results record it", w);
  t.version = version.Scalar();
  t.dataset = spec::need_string(j, "dataset", w);
  if (t.dataset != "gsm8k" && t.dataset != "mmlu") {
    fail("{}: dataset: '{}' is not known (gsm8k, mmlu)", w, t.dataset);
  }
  auto fields = dataset_fields(t.dataset);
  t.test_split = spec::get_string(j, "test_split", "test", w);
  if (!valid_split(t.dataset, t.test_split)) fail("{}: test_split: '{}' is not a {} split", w, t.test_split, t.dataset);
  int64_t k = spec::get_int(j, "num_fewshot", 0, w);
  if (k < 0 || k > 1000) fail("{}: num_fewshot: {} is out of range (0..1000)", w, k);
  t.num_fewshot = static_cast<int>(k);
  t.fewshot_split = spec::get_string(j, "fewshot_split", "", w);
  if (t.num_fewshot > 0 && !valid_split(t.dataset, t.fewshot_split)) {
    fail("{}: fewshot_split: '{}' is not a {} split (needed because num_fewshot > 0)", w, t.fewshot_split, t.dataset);
  }
  if (j.contains("fewshot_sampler")) {
    const auto& s = j["fewshot_sampler"];
    std::string sw = w + ": fewshot_sampler";
    std::string kind = spec::need_string(s, "kind", sw);
    if (kind == "python_random") {
      spec::check_keys(s, {"kind", "seed"}, sw);
      t.fewshot_sampler = FewshotSampler::kPythonRandom;
      t.fewshot_seed = spec::get_int(s, "seed", 1234, sw);
    } else if (kind == "first_n") {
      spec::check_keys(s, {"kind"}, sw);
      t.fewshot_sampler = FewshotSampler::kFirstN;
    } else {
      fail("{}.kind: '{}' is not known (python_random, first_n)", sw, kind);
    }
  }
  std::string ot = spec::need_string(j, "output_type", w);
  if (ot == "generate_until") {
    t.output_type = OutputType::kGenerateUntil;
  } else if (ot == "multiple_choice_loglikelihood") {
    t.output_type = OutputType::kMultipleChoice;
  } else if (ot == "chat") {
    t.output_type = OutputType::kChat;
  } else {
    fail("{}: output_type: '{}' is not known (generate_until, multiple_choice_loglikelihood, chat)", w, ot);
  }
  auto tmpl = [&](const char* key) {
    return Template::parse(spec::get_string(j, key, "", w), fields, fmt::format("{}: {}", w, key));
  };
  t.description = tmpl("description");
  t.doc_to_text = tmpl("doc_to_text");
  t.doc_to_target = tmpl("doc_to_target");
  t.chat_user = tmpl("chat_user");
  t.doc_to_choice = spec::get_string_list(j, "doc_to_choice", w);
  t.target_delimiter = spec::get_string(j, "target_delimiter", " ", w);
  t.fewshot_delimiter = spec::get_string(j, "fewshot_delimiter", "\n\n", w);
  if (t.doc_to_target.empty()) fail("{}: missing key 'doc_to_target' (the reference answer)", w);
  if (j.contains("target_filter")) {
    t.target_filter = FilterChain::parse({{"name", "target"}, {"steps", j["target_filter"]}}, w + ": target_filter");
  }
  if (j.contains("generation")) {
    const auto& g = j["generation"];
    std::string gw = w + ": generation";
    spec::check_keys(g, {"until", "max_tokens", "temperature"}, gw);
    t.until = spec::get_string_list(g, "until", gw);
    int64_t mt = spec::get_int(g, "max_tokens", 256, gw);
    if (mt < 1 || mt > 1'000'000) fail("{}.max_tokens: {} is out of range", gw, mt);
    t.max_tokens = static_cast<int>(mt);
    if (g.contains("temperature")) {
      if (!g["temperature"].is_number() || g["temperature"].get<double>() < 0) {
        fail("{}.temperature: expected a number >= 0", gw);
      }
      t.temperature = g["temperature"].get<double>();
    }
  }
  if (j.contains("filters")) {
    const auto& f = j["filters"];
    if (!f.is_array()) fail("{}: filters: expected a list of {{name, steps}}", w);
    for (size_t i = 0; i < f.size(); i++) {
      t.filters.push_back(FilterChain::parse(f[i], fmt::format("{}: filters[{}]", w, i)));
      for (size_t p = 0; p < i; p++) {
        if (t.filters[p].name() == t.filters[i].name()) fail("{}: filters[{}]: duplicate name '{}'", w, i, t.filters[i].name());
      }
    }
  }
  if (!j.contains("metric")) fail("{}: missing key 'metric' ({{kind: exact_match}} or {{kind: acc}})", w);
  nlohmann::json m = j["metric"];
  std::string mw = w + ": metric";
  std::string mk = spec::need_string(m, "kind", mw);
  m.erase("kind");
  if (mk == "exact_match") {
    t.metric = MetricKind::kExactMatch;
    t.exact_match = ExactMatch::parse(m, mw);
  } else if (mk == "acc") {
    spec::check_keys(m, {}, mw);
    t.metric = MetricKind::kAcc;
  } else {
    fail("{}.kind: '{}' is not known (exact_match, acc)", mw, mk);
  }

  // Consistency between output type, templates, filters and metric.
  if (t.output_type == OutputType::kMultipleChoice) {
    if (t.doc_to_choice.empty()) fail("{}: multiple_choice_loglikelihood needs doc_to_choice", w);
    if (t.metric != MetricKind::kAcc) fail("{}: multiple_choice_loglikelihood is scored with metric kind acc", w);
    if (!t.filters.empty() || j.contains("generation")) {
      fail("{}: filters and generation do not apply to multiple_choice_loglikelihood", w);
    }
  } else {
    if (t.metric != MetricKind::kExactMatch) fail("{}: {} is scored with metric kind exact_match", w, ot);
    if (t.filters.empty()) fail("{}: {} needs at least one entry in filters", w, ot);
  }
  if (t.output_type == OutputType::kChat) {
    if (t.chat_user.empty()) fail("{}: output_type chat needs chat_user (the user message template)", w);
    if (t.num_fewshot != 0) fail("{}: output_type chat is zero-shot (num_fewshot must be 0)", w);
    // A chat task's one message is chat_user: these would be read and silently not used.
    for (const char* k : {"description", "doc_to_text", "target_delimiter", "fewshot_delimiter", "fewshot_split",
                          "fewshot_sampler"})
      if (j.contains(k)) fail("{}: {} does not apply to output_type chat (its user message is chat_user)", w, k);
  } else {
    if (t.doc_to_text.empty()) fail("{}: missing key 'doc_to_text'", w);
    if (j.contains("chat_user")) fail("{}: chat_user applies to output_type chat only (this task's prompt is doc_to_text)", w);
  }
  return t;
}

std::vector<SubTask> expand_task(const TaskSpec& spec) {
  std::vector<SubTask> subs;
  if (spec.dataset == "gsm8k") {
    SubTask s;
    s.name = spec.name;
    s.test_file = gsm8k_file(spec.test_split).string();
    s.test_docs = load_gsm8k(s.test_file);
    if (spec.num_fewshot > 0) {
      s.fewshot_file = gsm8k_file(spec.fewshot_split).string();
      s.fewshot_docs = load_gsm8k(s.fewshot_file);
    }
    subs.push_back(std::move(s));
    return subs;
  }
  for (const auto& subject : mmlu_subjects()) {
    SubTask s;
    s.name = spec.name + "_" + subject;
    s.group = spec.name;
    s.test_file = mmlu_file(subject, spec.test_split).string();
    s.test_docs = load_mmlu(s.test_file, subject);
    if (spec.num_fewshot > 0) {
      s.fewshot_file = mmlu_file(subject, spec.fewshot_split).string();
      s.fewshot_docs = load_mmlu(s.fewshot_file, subject);
    }
    subs.push_back(std::move(s));
  }
  return subs;
}

std::vector<Instance> build_instances(const TaskSpec& spec, const SubTask& sub, int limit) {
  const size_t n_docs = limit < 0 ? sub.test_docs.size() : std::min(sub.test_docs.size(), size_t(limit));
  const bool same_split = spec.num_fewshot > 0 && spec.fewshot_split == spec.test_split;
  const size_t n_draw = size_t(spec.num_fewshot) + (same_split ? 1 : 0);
  if (spec.num_fewshot > 0 && sub.fewshot_docs.size() < n_draw) {
    fail("{}: {} docs, but {} ({}) needs {} few-shot docs from split '{}' (hint: the file is incomplete: "
         "fetch it again)", sub.fewshot_file.empty() ? std::string("few-shot split") : sub.fewshot_file,
         sub.fewshot_docs.size(), sub.name, spec.source, n_draw, spec.fewshot_split);
  }
  PyRandom rng(spec.fewshot_seed);
  std::vector<Instance> out;
  out.reserve(n_docs);
  for (size_t i = 0; i < n_docs; i++) {
    const auto& doc = sub.test_docs[i];
    Instance inst;
    inst.task = sub.name;
    inst.doc_id = static_cast<int>(i);
    inst.doc = doc;
    std::string target = target_text(spec, doc, &inst.gold);
    if (spec.target_filter) {
      auto f = spec.target_filter->apply(target);
      if (!f.found) {
        fail("{}: target_filter found nothing in the reference of {} doc {}: \"{:.200}\"", spec.source,
             sub.name, i, target);
      }
      target = f.text;
    }
    inst.target = std::move(target);

    if (spec.output_type == OutputType::kChat) {
      GenRequest g;
      g.chat = true;
      g.messages.push_back(ChatMessage{"user", spec.chat_user.render(doc)});
      g.stop = spec.until;
      g.max_tokens = spec.max_tokens;
      g.temperature = spec.temperature;
      if (spec.temperature > 0) g.seed = i;  // sampling: seeded by the doc, so --resume redraws the same
      inst.gen = std::move(g);
      out.push_back(std::move(inst));
      continue;
    }

    std::string context = spec.description.render(doc);
    if (spec.num_fewshot > 0) {
      std::vector<int64_t> idx;
      if (spec.fewshot_sampler == FewshotSampler::kPythonRandom) {
        idx = rng.sample(static_cast<int64_t>(sub.fewshot_docs.size()), static_cast<int64_t>(n_draw));
      } else {
        for (size_t s = 0; s < n_draw; s++) idx.push_back(static_cast<int64_t>(s));
      }
      int taken = 0;
      for (int64_t s : idx) {
        const auto& shot = sub.fewshot_docs[size_t(s)];
        // lm-eval's ContextSampler drops a shot equal to the doc whatever the splits (it draws
        // one extra only when they are the same split): the prompt then has fewer shots.
        if (shot == doc) continue;
        if (taken == spec.num_fewshot) break;
        taken++;
        context += spec.doc_to_text.render(shot);
        context += spec.target_delimiter;
        context += target_text(spec, shot, nullptr);
        context += spec.fewshot_delimiter;
      }
    }
    context += spec.doc_to_text.render(doc);

    if (spec.output_type == OutputType::kMultipleChoice) {
      LoglikRequest r;
      r.context = std::move(context);
      for (const auto& c : spec.doc_to_choice) r.continuations.push_back(spec.target_delimiter + c);
      inst.loglik = std::move(r);
    } else {
      GenRequest g;
      g.prompt = std::move(context);
      g.stop = spec.until;
      g.max_tokens = spec.max_tokens;
      g.temperature = spec.temperature;
      if (spec.temperature > 0) g.seed = i;  // as above
      inst.gen = std::move(g);
    }
    out.push_back(std::move(inst));
  }
  return out;
}

nlohmann::json prompt_record(const Instance& inst) {
  nlohmann::json j = {{"task", inst.task}, {"doc_id", inst.doc_id}};
  if (inst.loglik) {
    j["prompt"] = inst.loglik->context;
  } else if (inst.gen && inst.gen->chat) {
    auto msgs = nlohmann::json::array();
    for (const auto& m : inst.gen->messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
    j["messages"] = std::move(msgs);
  } else if (inst.gen) {
    j["prompt"] = inst.gen->prompt;
  }
  return j;
}

std::vector<std::string> metric_keys(const TaskSpec& spec) {
  if (spec.metric == MetricKind::kAcc) return {"acc,none"};
  std::vector<std::string> keys;
  for (const auto& f : spec.filters) keys.push_back("exact_match," + f.name());
  return keys;
}

SampleScore score_generation(const TaskSpec& spec, const Instance& inst, const GenResult& result) {
  if (!result.error.empty()) {
    fail("{}: {} doc {}: a failed request cannot be scored ({})", spec.source, inst.task, inst.doc_id, result.error);
  }
  if (spec.metric != MetricKind::kExactMatch) {
    fail("{}: score_generation called for a task scored by loglikelihood", spec.source);
  }
  SampleScore s;
  if (spec.output_type == OutputType::kChat) {
    s.truncated = result.finish_reason == "length" || split_reasoning(result.text).unclosed;
  }
  for (size_t i = 0; i < spec.filters.size(); i++) {
    const auto& f = spec.filters[i];
    FilterOutput out = f.apply(result.text);
    if (i == 0) s.invalid = !out.found;
    double score = s.truncated ? 0.0 : spec.exact_match.score(out.text, inst.target);
    s.extracted[f.name()] = std::move(out.text);
    s.scores["exact_match," + f.name()] = score;
  }
  return s;
}

SampleScore score_loglikelihood(const TaskSpec& spec, const Instance& inst, const LoglikResult& result) {
  if (!result.error.empty()) {
    fail("{}: {} doc {}: a failed request cannot be scored ({})", spec.source, inst.task, inst.doc_id, result.error);
  }
  if (!inst.loglik || result.logprob.size() != inst.loglik->continuations.size() || inst.gold < 0) {
    fail("{}: {} doc {}: expected {} logprobs, got {} (backend bug)", spec.source, inst.task, inst.doc_id,
         inst.loglik ? inst.loglik->continuations.size() : 0, result.logprob.size());
  }
  SampleScore s;
  int pred = argmax_first(result.logprob);
  s.extracted["none"] = spec.doc_to_choice[size_t(pred)];
  s.scores["acc,none"] = acc_score(result.logprob, inst.gold);
  return s;
}

}  // namespace qeval
