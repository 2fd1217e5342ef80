#include "runner/runner.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <map>
#include <set>

#include <fmt/format.h>

#include "backends/backend.h"
#include "backends/engine_backend.h"
#include "core/error.h"
#include "data/datasets.h"
#include "data/fetch.h"
#include "core/fs.h"
#include "core/text.h"
#include "engine/engine.h"
#include "metrics/fidelity.h"
#include "report/gates.h"
#include "report/render.h"
#include "runner/aggregate.h"
#include "runner/progress.h"
#include "runner/run_config.h"
#include "runner/sample_log.h"
#include "tasks/task.h"

namespace qeval {

using nlohmann::json;

namespace {

// A task of the run with its subtasks and the requests built for them.
struct TaskRun {
  TaskSpec spec;
  std::vector<SubTask> subs;
  std::vector<std::vector<Instance>> instances;  // per subtask
};

std::vector<TaskRun> build_tasks(const RunConfig& cfg, int limit) {
  std::vector<TaskRun> out;
  std::set<std::string> seen, seen_subs;
  for (size_t i = 0; i < cfg.tasks.size(); ++i) {
    const std::string& name = cfg.tasks[i];
    TaskRun t;
    try {
      t.spec = load_task(name);
    } catch (const Error& e) {
      fail("{}: tasks[{}]: {}", cfg.path.string(), i, e.what());
    }
    if (!seen.insert(t.spec.name).second) fail("{}: tasks: '{}' listed twice", cfg.path.string(), name);
    t.subs = expand_task(t.spec);
    // Each subtask has its own sample file, named after it.
    for (const auto& s : t.subs)
      if (!seen_subs.insert(s.name).second)
        fail("{}: tasks[{}]: task '{}' has a (sub)task named '{}', as another task of the run has (hint: give "
             "the task file another `task:` name)", cfg.path.string(), i, t.spec.name, s.name);
    for (const auto& s : t.subs) t.instances.push_back(build_instances(t.spec, s, limit));
    out.push_back(std::move(t));
  }
  return out;
}

// A gate names a task (or subtask) of the run by the name its results have, and a metric of it.
void check_gates(const RunConfig& cfg, const std::vector<TaskRun>& tasks) {
  for (size_t i = 0; i < cfg.gates.size(); ++i) {
    const Gate& g = cfg.gates[i];
    const TaskRun* found = nullptr;
    std::string names;
    for (const auto& t : tasks) {
      names += (names.empty() ? "" : ", ") + t.spec.name;
      if (t.spec.name == g.task) found = &t;
      for (const auto& s : t.subs)
        if (s.name == g.task) found = &t;
    }
    if (!found)
      fail("{}: gates[{}].task: '{}' is not a task of this run (its tasks: {}; a subtask such as mmlu_anatomy "
           "may be gated too; a task file is gated by its `task:` name)", cfg.path.string(), i, g.task, names);
    std::vector<std::string> keys = metric_keys(found->spec);
    if (std::find(keys.begin(), keys.end(), g.metric) == keys.end()) {
      std::string list;
      for (const auto& k : keys) list += (list.empty() ? "" : ", ") + k;
      fail("{}: gates[{}].metric: '{}' is not a metric of task {} (its metrics: {})", cfg.path.string(), i, g.metric,
           found->spec.name, list);
    }
  }
}

// Hash of what is asked, so --resume never reuses an answer to a different question.
std::string request_hash(const Instance& in) {
  json j;
  if (in.gen) {
    const auto& g = *in.gen;
    j = {{"chat", g.chat}, {"prompt", g.prompt}, {"stop", g.stop}, {"max_tokens", g.max_tokens},
         {"temperature", g.temperature}, {"top_p", g.top_p}, {"top_k", g.top_k}};
    json msgs = json::array();
    for (const auto& m : g.messages) msgs.push_back({m.role, m.content});
    j["messages"] = msgs;
  } else {
    j = {{"context", in.loglik->context}, {"continuations", in.loglik->continuations}};
  }
  return sha256_hex(j.dump()).substr(0, 16);
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string iso_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

fs::path samples_path(const fs::path& out, const std::string& variant, const std::string& task) {
  return out / "samples" / variant / (task + ".jsonl");
}

bool dir_has_samples(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return false;
  for (auto it = fs::recursive_directory_iterator(dir, ec); it != fs::recursive_directory_iterator(); ++it)
    if (it->is_regular_file() && it->path().extension() == ".jsonl") return true;
  return false;
}

// What a variant's answers depend on: its config without the keys that only say how to reach
// or drive it (name, URLs, concurrency, timeouts, threads, batch and cache sizes), and the
// engine's checkpoint fingerprint. --resume refuses samples of another identity.
json variant_identity(const json& variant, const BackendInfo& info) {
  static const std::set<std::string> kOperational = {"name",        "base_url",    "concurrency", "api_key_env",
                                                     "timeout_s",   "max_retries", "threads",     "max_batch",
                                                     "kv_cache_mb", "outage_wait_s"};
  json id = json::object();
  for (const auto& [k, v] : variant.items())
    if (!kOperational.count(k)) id[k] = v;
  if (info.details.is_object() && info.details.contains("fingerprint")) id["fingerprint"] = info.details["fingerprint"];
  return id;
}

fs::path identity_path(const fs::path& out, const std::string& variant) {
  return out / "samples" / variant / "variant.json";
}

// True when the variant has a logged answer (an error line holds none: it is asked again).
bool has_answers(const fs::path& out, const std::string& vname) {
  std::error_code ec;
  const fs::path dir = out / "samples" / vname;
  if (!fs::is_directory(dir, ec)) return false;
  for (const auto& f : fs::directory_iterator(dir, ec)) {
    if (f.path().extension() != ".jsonl") continue;
    for (const auto& [doc, line] : read_sample_log(f.path()))
      if (line.contains("error") && line["error"].is_null()) return true;
  }
  return false;
}

// Refuses to resume a variant whose logged answers came from another model or config. A variant
// with no answer yet (never run, or every request failed) may change freely.
void check_identity(const fs::path& out, const std::string& vname, const json& id, const std::string& where) {
  fs::path p = identity_path(out, vname);
  std::error_code ec;
  if (!fs::exists(p, ec) || !has_answers(out, vname)) return;
  json old = json::parse(read_file(p), nullptr, false);
  if (old.is_discarded() || !old.is_object() || !old.contains("identity"))
    fail("{}: not a variant record (hint: it was edited; move the variant's samples away, or --overwrite)", p.string());
  const json& was = old["identity"];
  if (was == id) return;
  std::string diff;
  for (const auto& [k, v] : id.items())
    if (!was.contains(k) || was[k] != v)
      diff += fmt::format("{}{}: {} -> {}", diff.empty() ? "" : ", ", k, was.contains(k) ? was[k].dump() : "(unset)", v.dump());
  for (const auto& [k, v] : was.items())
    if (!id.contains(k)) diff += fmt::format("{}{}: {} -> (unset)", diff.empty() ? "" : ", ", k, v.dump());
  fail("{}: variant '{}' changed since its samples in {} were answered ({}) (hint: --overwrite to discard the "
       "earlier run, or --out DIR for a new one; only name, base_url, concurrency, api_key_env, timeout_s, "
       "max_retries, outage_wait_s, threads, max_batch and kv_cache_mb may change on --resume)",
       where, vname, p.parent_path().string(), diff);
}

// Records the identity of a variant about to run.
void record_identity(const fs::path& out, const std::string& vname, const json& id) {
  const fs::path p = identity_path(out, vname);
  std::error_code ec;
  fs::create_directories(p.parent_path(), ec);
  write_file_atomic(p, json{{"identity", id}}.dump(2) + "\n");
}

// Scores a logged answer again with the task as it is now (its filters, metrics and the doc's
// target may have changed since the line was written). Returns the updated line, or nothing
// when the stored scores still hold.
std::optional<json> rescore(const TaskSpec& spec, const Instance& in, const json& line) {
  SampleScore sc;
  const json& resp = line.contains("response") ? line["response"] : json();
  if (in.gen) {
    if (!resp.is_string()) return std::nullopt;
    GenResult res;
    res.text = resp.get<std::string>();
    res.reasoning = line.value("reasoning", "");
    res.finish_reason = line.contains("finish_reason") && line["finish_reason"].is_string()
                            ? line["finish_reason"].get<std::string>() : "";
    sc = score_generation(spec, in, res);
  } else {
    if (!resp.is_object() || !resp.contains("logprobs") || !resp["logprobs"].is_array()) return std::nullopt;
    LoglikResult res;
    for (const auto& x : resp["logprobs"]) res.logprob.push_back(x.is_number() ? x.get<double>() : NAN);
    if (resp.contains("is_greedy") && resp["is_greedy"].is_array())
      for (const auto& x : resp["is_greedy"]) res.is_greedy.push_back(x.is_boolean() && x.get<bool>());
    res.is_greedy.resize(res.logprob.size(), false);
    sc = score_loglikelihood(spec, in, res);
  }
  json now = line;
  now["target"] = in.target;
  now["extracted"] = sc.extracted;
  now["scores"] = sc.scores;
  now["invalid"] = sc.invalid;
  now["truncated"] = sc.truncated;
  if (now == line) return std::nullopt;
  return now;
}

// Runs the pending requests of one variant, logging each sample as it finishes.
void run_variant(const std::string& vname, Backend& backend, const std::vector<TaskRun>& tasks,
                 const fs::path& out) {
  struct Ref {
    size_t task, sub, inst;
  };
  std::vector<Ref> gen_refs, ll_refs;
  std::vector<GenRequest> gen_reqs;
  std::vector<LoglikRequest> ll_reqs;
  std::vector<std::vector<std::vector<std::string>>> hashes(tasks.size());
  std::map<std::pair<size_t, size_t>, std::unique_ptr<SampleLog>> logs;

  size_t already = 0, rescored = 0;
  for (size_t t = 0; t < tasks.size(); ++t) {
    hashes[t].resize(tasks[t].subs.size());
    for (size_t s = 0; s < tasks[t].subs.size(); ++s) {
      fs::path p = samples_path(out, vname, tasks[t].subs[s].name);
      SampleMap existing = read_sample_log(p);
      bool any = false;
      for (size_t i = 0; i < tasks[t].instances[s].size(); ++i) {
        const Instance& in = tasks[t].instances[s][i];
        std::string h = request_hash(in);
        hashes[t][s].push_back(h);
        auto it = existing.find(in.doc_id);
        if (it != existing.end() && it->second.value("request_hash", "") == h && it->second["error"].is_null()) {
          ++already;
          if (auto line = rescore(tasks[t].spec, in, it->second)) {
            if (!logs.count({t, s})) logs[{t, s}] = std::make_unique<SampleLog>(p);
            logs.at({t, s})->append(*line);  // supersedes the earlier line of the doc
            ++rescored;
          }
          continue;
        }
        any = true;
        if (in.gen) {
          gen_refs.push_back({t, s, i});
          gen_reqs.push_back(*in.gen);
        } else {
          ll_refs.push_back({t, s, i});
          ll_reqs.push_back(*in.loglik);
        }
      }
      if (any && !logs.count({t, s})) logs[{t, s}] = std::make_unique<SampleLog>(p);
    }
  }
  size_t total = gen_reqs.size() + ll_reqs.size();
  if (already) fmt::print(stderr, "{}: resuming, {} samples already done\n", vname, already);
  if (rescored)
    fmt::print(stderr, "{}: {} of them scored again: the task's scoring or a target changed since they were logged\n",
               vname, rescored);
  if (total == 0) return;

  Progress progress(vname, total);
  auto base_line = [&](const Ref& r) {
    const Instance& in = tasks[r.task].instances[r.sub][r.inst];
    return json{{"task", in.task}, {"doc_id", in.doc_id}, {"request_hash", hashes[r.task][r.sub][r.inst]},
                {"target", in.target}};
  };
  // Scores (unless the request failed), logs the line and counts it.
  auto finish = [&](const Ref& r, json& line, const std::string& error, const auto& score) {
    if (error.empty()) {
      SampleScore sc = score();
      line["extracted"] = sc.extracted;
      line["scores"] = sc.scores;
      line["invalid"] = sc.invalid;
      line["truncated"] = sc.truncated;
      line["error"] = nullptr;
    } else {
      line["extracted"] = nullptr;
      line["scores"] = nullptr;
      line["error"] = error;
    }
    logs.at({r.task, r.sub})->append(line);
    progress.tick(!error.empty());
  };
  if (!gen_reqs.empty()) {
    backend.generate(gen_reqs, [&](size_t i, GenResult&& res) {
      const Ref& r = gen_refs[i];
      const Instance& in = tasks[r.task].instances[r.sub][r.inst];
      json line = base_line(r);
      line["response"] = res.text;
      if (!res.reasoning.empty()) line["reasoning"] = res.reasoning;
      line["finish_reason"] = res.finish_reason;
      line["tokens"] = {{"prompt", res.n_tokens_prompt}, {"output", res.n_tokens_gen}};
      line["latency_s"] = res.latency_s;
      line["t_end"] = now_s();
      line["prompt_truncated"] = res.prompt_truncated;
      finish(r, line, res.error, [&] { return score_generation(tasks[r.task].spec, in, res); });
    });
  }
  if (!ll_reqs.empty()) {
    backend.loglikelihood(ll_reqs, [&](size_t i, LoglikResult&& res) {
      const Ref& r = ll_refs[i];
      const Instance& in = tasks[r.task].instances[r.sub][r.inst];
      json line = base_line(r);
      line["response"] = {{"logprobs", res.logprob}, {"is_greedy", res.is_greedy}};
      line["finish_reason"] = nullptr;
      line["tokens"] = {{"prompt", res.n_tokens_prompt}, {"output", 0}};
      line["latency_s"] = res.latency_s;
      line["t_end"] = now_s();
      line["prompt_truncated"] = res.prompt_truncated;
      finish(r, line, res.error, [&] { return score_loglikelihood(tasks[r.task].spec, in, res); });
    });
  }
  progress.finish();
}

json build_results(const RunConfig& cfg, const std::vector<TaskRun>& tasks,
                   const std::vector<std::unique_ptr<Backend>>& backends, const fs::path& out) {
  json r;
  r["schema"] = "qeval.results/1";
  r["name"] = cfg.name;
  r["config_sha256"] = cfg.sha256;
  r["git_revision"] = git_revision();
  r["created"] = iso_now();
  r["baseline"] = cfg.baseline;
  r["variant_order"] = json::array();
  r["task_order"] = json::array();
  r["task_versions"] = json::object();
  for (const auto& t : tasks) {
    r["task_order"].push_back(t.spec.name);
    r["task_versions"][t.spec.name] = t.spec.version;
  }

  // variant -> subtask name -> samples (read back from the logs: they are the truth).
  std::map<std::string, std::map<std::string, SampleMap>> all;
  for (size_t v = 0; v < cfg.variants.size(); ++v) {
    std::string vname = cfg.variants[v]["name"].get<std::string>();
    r["variant_order"].push_back(vname);
    BackendInfo info = backends[v]->info();
    json vj = {{"backend", info.backend}, {"model", info.model}, {"details", info.details}, {"tasks", json::object()}};
    for (const auto& t : tasks) {
      std::vector<std::string> keys = metric_keys(t.spec);
      std::vector<const SampleMap*> parts;
      for (size_t s = 0; s < t.subs.size(); ++s) {
        SampleMap m = read_sample_log(samples_path(out, vname, t.subs[s].name));
        // Keep only the docs this run asks for (a smaller --limit on resume).
        SampleMap kept;
        for (const auto& in : t.instances[s])
          if (auto it = m.find(in.doc_id); it != m.end()) kept.emplace(in.doc_id, std::move(it->second));
        all[vname][t.subs[s].name] = std::move(kept);
        parts.push_back(&all[vname][t.subs[s].name]);
        if (t.subs.size() > 1 || t.subs[s].name != t.spec.name)
          vj["tasks"][t.subs[s].name] = aggregate_samples({parts.back()}, keys, t.spec.version);
      }
      json agg = aggregate_samples(parts, keys, t.spec.version);
      if (t.subs.size() > 1 || t.subs[0].name != t.spec.name) {
        agg["subtasks"] = json::array();
        for (const auto& s : t.subs) agg["subtasks"].push_back(s.name);
      }
      vj["tasks"][t.spec.name] = agg;
    }
    r["variants"][vname] = vj;
  }

  r["comparisons"] = json::object();
  for (const auto& vj : cfg.variants) {
    std::string vname = vj["name"].get<std::string>();
    if (vname == cfg.baseline) continue;
    for (const auto& t : tasks) {
      std::vector<const SampleMap*> b, v;
      for (const auto& s : t.subs) {
        b.push_back(&all[cfg.baseline][s.name]);
        v.push_back(&all[vname][s.name]);
      }
      for (const auto& key : metric_keys(t.spec)) {
        r["comparisons"][vname][t.spec.name][key] = compare_samples(b, v, key);
        if (t.subs.size() > 1)
          for (const auto& s : t.subs)
            r["comparisons"][vname][s.name][key] = compare_samples({&all[cfg.baseline][s.name]}, {&all[vname][s.name]}, key);
      }
    }
  }
  r["gates"] = evaluate_gates(r, cfg.gates);
  return r;
}

// Fidelity of every engine variant against an engine baseline, on the same token sequences:
// up to `fidelity_prompts` task prompts (spread over tasks and subtasks; chat prompts left out;
// each cut from the left to the sequence length; every position scored) and the fidelity_text
// in chunks as llama-perplexity cuts it (the second half of each chunk scored). Planned before
// the variants run, so a fidelity_text too short to score, or a KV cache too small for the
// sequences, fails the run before its hours of requests, not after.
struct FidelityPlan {
  struct Seq {
    std::vector<int32_t> tokens;
    int64_t first_scored;
  };
  Engine* base = nullptr;
  std::vector<std::pair<std::string, Engine*>> others;
  std::map<std::string, std::vector<Seq>> sources;
  std::map<std::string, std::string> skipped;  // engine variant -> why it is not compared
  std::vector<std::string> notes;              // about the sources, for results.json and the report
};

// Why `var` would not see the tokens `base` makes of the same texts ("" when it would): a
// variant fed the baseline's tokens that encodes differently (no BOS, other merges, another model
// of the same vocabulary size) would be measured on input it never gets.
std::string tokenizer_difference(const Tokenizer& base, const Tokenizer& var, const std::vector<std::string>& prompts,
                                 const std::optional<std::string>& text) {
  auto differ = [&](const std::string& s, bool parse_special, const std::string& what) -> std::string {
    const std::vector<int32_t> a = base.encode(s, true, parse_special), b = var.encode(s, true, parse_special);
    if (a == b) return "";
    size_t i = 0;
    while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
    auto at = [](const std::vector<int32_t>& v, size_t i) { return i < v.size() ? std::to_string(v[i]) : "end"; };
    return fmt::format("its tokenizer encodes {} differently from the baseline's (token {}: {} vs the baseline's {})",
                       what, i, at(b, i), at(a, i));
  };
  for (size_t i = 0; i < prompts.size(); ++i)
    if (std::string why = differ(prompts[i], true, fmt::format("task prompt {}", i)); !why.empty()) return why;
  if (text)
    if (std::string why = differ(*text, false, "the fidelity_text"); !why.empty()) return why;
  return "";
}

FidelityPlan plan_fidelity(const RunConfig& cfg, const std::vector<TaskRun>& tasks,
                           const std::vector<std::unique_ptr<Backend>>& backends) {
  FidelityPlan plan;
  // Said once, and only when the config asked for fidelity.
  auto ignored = [&](const std::string& why) {
    if (cfg.fidelity_text || cfg.fidelity_prompts_set)
      fmt::print(stderr, "warning: {}: fidelity_text and fidelity_prompts are ignored: {}\n", cfg.path.string(), why);
  };
  size_t base_i = 0;
  for (size_t v = 0; v < cfg.variants.size(); ++v)
    if (cfg.variants[v]["name"] == cfg.baseline) base_i = v;
  Engine* base = engine_of(*backends[base_i]);
  if (!base || !base->tokenizer()) {
    ignored(fmt::format("fidelity compares engine variants with an engine baseline, and the baseline '{}' is {}",
                        cfg.baseline, base ? "an engine without a tokenizer" : "not one"));
    return plan;
  }
  const Tokenizer& tok = *base->tokenizer();
  auto variant_name = [&](size_t v) { return cfg.variants[v]["name"].get<std::string>(); };

  // The texts. Task prompts round-robin over (task, subtask) so every task is represented, and
  // encoded as the engine backend encodes them (special tokens written in them parsed).
  std::vector<std::string> prompt_texts;
  int64_t n_chat = 0;
  {
    std::vector<std::pair<size_t, size_t>> subs;
    for (size_t t = 0; t < tasks.size(); ++t)
      for (size_t s = 0; s < tasks[t].subs.size(); ++s) subs.emplace_back(t, s);
    const size_t want = static_cast<size_t>(cfg.fidelity_prompts);
    for (size_t round = 0; prompt_texts.size() < want; ++round) {
      bool any = false;
      for (auto [t, s] : subs) {
        if (round >= tasks[t].instances[s].size() || prompt_texts.size() >= want) continue;
        any = true;
        const Instance& in = tasks[t].instances[s][round];
        if (in.gen && in.gen->chat) {
          ++n_chat;  // its text is the chat template's, applied by each backend in its own way
          continue;
        }
        prompt_texts.push_back(in.gen ? in.gen->prompt : in.loglik->context);
      }
      if (!any) break;
    }
  }
  if (n_chat > 0)
    plan.notes.push_back(prompt_texts.empty()
                             ? fmt::format("task_prompts: none scored: all {} task prompts looked at are chat prompts, "
                                           "which fidelity leaves out (each backend applies its own chat template)",
                                           n_chat)
                             : fmt::format("task_prompts: {} chat prompts left out (each backend applies its own chat "
                                           "template)", n_chat));
  // The fidelity_text with special-token strings ("</s>", "<|im_end|>") as plain text, as
  // llama-perplexity tokenises it.
  std::optional<std::string> text;
  if (cfg.fidelity_text) text = read_file(*cfg.fidelity_text);

  // Engine variants compared: the same vocabulary, and the same tokens for the same texts.
  std::vector<size_t> compared = {base_i};
  for (size_t v = 0; v < cfg.variants.size(); ++v) {
    Engine* e = engine_of(*backends[v]);
    if (v == base_i || !e) continue;
    std::string why;
    if (!e->tokenizer())
      why = "it has no tokenizer";
    else if (e->config().vocab_size != base->config().vocab_size)
      why = fmt::format("its vocabulary has {} tokens, the baseline's {}", e->config().vocab_size,
                        base->config().vocab_size);
    else
      why = tokenizer_difference(tok, *e->tokenizer(), prompt_texts, text);
    if (!why.empty()) {
      plan.skipped[variant_name(v)] = "not compared with the baseline: " + why;
      fmt::print(stderr, "warning: fidelity: {} is not compared with the baseline: {}\n", variant_name(v), why);
      continue;
    }
    plan.others.emplace_back(variant_name(v), e);
    compared.push_back(v);
  }

  // Sequences fit every engine compared (a variant may have a shorter context than the baseline).
  int64_t max_len = std::min<int64_t>(base->context_length(), 1024);
  for (const auto& [name, e] : plan.others) max_len = std::min(max_len, e->context_length());
  auto& prompts = plan.sources["task_prompts"];
  for (const auto& p : prompt_texts) {
    std::vector<int32_t> toks = tok.encode(p, true);
    if (static_cast<int64_t>(toks.size()) > max_len) toks.erase(toks.begin(), toks.end() - max_len);
    if (toks.size() >= 2) prompts.push_back({std::move(toks), 0});
  }
  // The text is checked whether or not another variant is there to compare.
  if (text) {
    auto& chunks = plan.sources["text"];
    std::vector<int32_t> all = tok.encode(*text, true, /*parse_special=*/false);
    const int64_t chunk = std::min<int64_t>(max_len, 512);
    for (auto& c : perplexity_chunks(all, chunk, 64, tok.add_bos ? tok.bos_id : std::nullopt))
      chunks.push_back({std::move(c), chunk / 2});
    if (chunks.empty())
      fail("{}: fidelity_text: {} has {} tokens, fewer than one chunk of {} (hint: use a longer text)",
           cfg.path.string(), cfg.fidelity_text->string(), all.size(), chunk);
  }
  if (plan.others.empty()) {
    ignored(plan.skipped.empty() ? "there is no other engine variant to compare with the baseline"
                                 : "no other engine variant can be compared with the baseline (see the warnings above)");
    plan.sources.clear();
    plan.notes.clear();
    return plan;
  }
  plan.base = base;

  // Every sequence must fit one engine's KV cache: found now, not when the tasks are done.
  int64_t longest = 0;
  for (const auto& [src, seqs] : plan.sources)
    for (const auto& sq : seqs) longest = std::max<int64_t>(longest, static_cast<int64_t>(sq.tokens.size()));
  for (size_t v : compared) {
    const Engine& e = *engine_of(*backends[v]);
    if (longest <= e.kv_capacity_tokens()) continue;
    const size_t block = e.kv_bytes_per_token() * KvCache::kBlockTokens;
    const int64_t need_mib = static_cast<int64_t>(
        (static_cast<size_t>(KvCache::blocks_for(longest)) * block + (size_t{1} << 20) - 1) >> 20);
    fail("{}: variants[{}] ({}): kv_cache_mb: {} holds {} tokens of one sequence, and fidelity scores sequences of "
         "up to {} tokens (hint: raise kv_cache_mb to at least {}, or leave fidelity out of this run: "
         "fidelity_prompts: 0 and no fidelity_text)", cfg.path.string(), v, variant_name(v),
         e.options().kv_cache_mb > 0 ? fmt::format("{} MiB", e.options().kv_cache_mb) : std::string("the automatic budget"),
         e.kv_capacity_tokens(), longest, need_mib);
  }
  return plan;
}

// Per variant: {"fidelity": {source: statistics}} for the variants compared and
// {"fidelity_skipped": why} for the engine variants that are not. A source that fails for a
// variant (or for the baseline) is recorded as {"error": ...}: the tasks' results stand.
json run_fidelity(const RunConfig& cfg, const FidelityPlan& plan) {
  json out = json::object();
  for (const auto& [v, why] : plan.skipped) out[v]["fidelity_skipped"] = why;
  if (!plan.base) return out;
  const int64_t V = plan.base->config().vocab_size;
  for (const auto& [src, seqs] : plan.sources) {
    if (seqs.empty()) continue;
    std::vector<FidelityAccumulator> acc(plan.others.size());
    std::vector<std::string> error(plan.others.size());
    for (const auto& sq : seqs) {
      const int64_t n = static_cast<int64_t>(sq.tokens.size());
      std::vector<float> ref(static_cast<size_t>(n * V));
      std::vector<std::vector<int32_t>> one{sq.tokens};
      try {
        plan.base->next_token_logprobs(one, [&](size_t, int64_t i, std::span<const float> lp) {
          std::copy(lp.begin(), lp.end(), ref.begin() + i * V);
        });
      } catch (const std::exception& e) {
        for (auto& err : error)
          if (err.empty()) err = fmt::format("the baseline {}: {}", cfg.baseline, e.what());
        break;
      }
      for (size_t o = 0; o < plan.others.size(); ++o) {
        if (!error[o].empty()) continue;
        try {
          plan.others[o].second->next_token_logprobs(one, [&](size_t, int64_t i, std::span<const float> lp) {
            if (i < sq.first_scored || i + 1 >= n) return;  // the last position has no next token
            acc[o].add(std::span<const float>(ref.data() + i * V, V), lp, sq.tokens[i + 1]);
          });
        } catch (const std::exception& e) {
          error[o] = e.what();
        }
      }
    }
    for (size_t o = 0; o < plan.others.size(); ++o) {
      json r;
      if (error[o].empty()) {
        r = acc[o].result();
      } else {
        r = {{"error", error[o]}};
        fmt::print(stderr, "warning: fidelity of {} on {} failed, recorded in results.json: {}\n",
                   plan.others[o].first, src, error[o]);
      }
      r["reference"] = cfg.baseline;
      r["n_sequences"] = seqs.size();
      out[plan.others[o].first]["fidelity"][src] = r;
    }
  }
  return out;
}

void write_outputs(const json& r, const fs::path& out, const std::optional<fs::path>& junit) {
  write_file_atomic(out / "results.json", r.dump(2));
  write_file_atomic(out / "report.svg", render_svg(r));
  write_file_atomic(out / "report.md", render_markdown(r, "report.svg"));
  if (junit) write_file_atomic(*junit, render_junit(r));
}

}  // namespace

int run_eval(const RunOptions& opts) {
  RunConfig cfg = load_run_config(opts.config);
  int limit = opts.limit ? *opts.limit : cfg.limit.value_or(-1);
  fs::path out = opts.out ? *opts.out : fs::path("reports") / cfg.name;
  if (opts.resume && opts.overwrite) fail("--resume and --overwrite exclude each other");

  if (dir_has_samples(out / "samples") && !opts.resume && !opts.overwrite)
    fail("{}: already holds samples of an earlier run (hint: --resume to continue it, --overwrite to "
         "discard it, or --out DIR for a new directory)", out.string());

  std::vector<TaskRun> tasks = build_tasks(cfg, limit);
  check_gates(cfg, tasks);

  std::vector<std::unique_ptr<Backend>> backends;
  // --junit is written last: a path that cannot be written is found now, not after the run.
  if (opts.junit) {
    for (const fs::path& own : {cfg.path, out / "results.json", out / "report.md", out / "report.svg"})
      if (same_path(*opts.junit, own))
        fail("--junit {}: is {}, which this run reads or writes (hint: another file, e.g. {})", opts.junit->string(),
             own.string(), (out / "junit.xml").string());
    if (path_inside(*opts.junit, out / "samples"))
      fail("--junit {}: is inside {}, where this run logs its samples (hint: e.g. {})", opts.junit->string(),
           (out / "samples").string(), (out / "junit.xml").string());
    std::error_code jec;
    const fs::path dir = opts.junit->has_parent_path() ? opts.junit->parent_path() : fs::path(".");
    if (fs::is_directory(*opts.junit, jec))
      fail("--junit {}: is a directory (hint: name the XML file to write)", opts.junit->string());
    if (!fs::is_directory(dir, jec) && (fs::exists(dir, jec) || !fs::create_directories(dir, jec)))
      fail("--junit {}: cannot create its folder {} (hint: is a parent a file, or read-only?)", opts.junit->string(),
           dir.string());
    const fs::path probe = fs::path(*opts.junit) += ".qeval-check";
    if (FILE* f = std::fopen(probe.c_str(), "wb")) {
      std::fclose(f);
      fs::remove(probe, jec);
    } else {
      fail("--junit {}: its folder is not writable (hint: pass a path you can write)", opts.junit->string());
    }
  }
  for (size_t i = 0; i < cfg.variants.size(); ++i)
    backends.push_back(make_backend(cfg.variants[i], fmt::format("{}: variants[{}]", cfg.path.string(), i)));
  for (auto& b : backends) b->check_ready();
  const FidelityPlan fidelity = plan_fidelity(cfg, tasks, backends);
  // Which dataset files were read, and whether they are the published ones: an edited or cut
  // file makes the numbers incomparable with anyone else's.
  std::vector<fs::path> data_files;
  for (const auto& t : tasks)
    for (const auto& s : t.subs) {
      if (!s.test_file.empty()) data_files.push_back(s.test_file);
      if (!s.fewshot_file.empty()) data_files.push_back(s.fewshot_file);
    }
  const json datasets = check_dataset_files(data_files);
  std::vector<std::string> edited;
  for (const auto& [rel, d] : datasets.items())
    if (!d["published"].get<bool>()) edited.push_back(rel);
  if (!edited.empty())
    fmt::print(stderr, "warning: {} of {} dataset files under {} differ from the published ones (first: {}): these "
               "results are not comparable with runs on the real datasets (hint: qeval fetch gsm8k mmlu restores "
               "them; results.json lists every file's sha256)\n",
               edited.size(), datasets.size(), datasets_root().string(), edited.front());

  std::error_code ec;
  if (opts.overwrite) {
    fs::remove_all(out / "samples", ec);
    for (const char* f : {"results.json", "report.md", "report.svg"}) fs::remove(out / f, ec);
  }
  fs::create_directories(out / "samples", ec);
  if (ec) fail("{}: cannot create the output directory: {}", out.string(), ec.message());

  std::vector<json> identities;
  for (size_t v = 0; v < cfg.variants.size(); ++v) {
    identities.push_back(variant_identity(cfg.variants[v], backends[v]->info()));
    check_identity(out, cfg.variants[v]["name"].get<std::string>(), identities.back(),
                   fmt::format("{}: variants[{}]", cfg.path.string(), v));
  }
  for (size_t v = 0; v < cfg.variants.size(); ++v) {
    const std::string vname = cfg.variants[v]["name"].get<std::string>();
    record_identity(out, vname, identities[v]);
    run_variant(vname, *backends[v], tasks, out);
  }

  json r = build_results(cfg, tasks, backends, out);
  r["datasets"] = datasets;
  // The tasks' results are written before fidelity is computed (minutes on a large model), so
  // whatever happens to it they are kept; then again with it.
  if (fidelity.base) write_outputs(r, out, opts.junit);
  if (!fidelity.notes.empty()) r["fidelity_notes"] = fidelity.notes;
  json fid = run_fidelity(cfg, fidelity);
  for (const auto& [v, f] : fid.items())
    for (const auto& [key, x] : f.items()) r["variants"][v][key] = x;
  write_outputs(r, out, opts.junit);
  fmt::print(stderr, "wrote {}\n", (out / "report.md").string());
  bool ok = true;
  for (const auto& g : r["gates"]) ok &= g["passed"].get<bool>();
  for (const auto& g : r["gates"])
    if (!g["passed"].get<bool>())
      fmt::print(stderr, "gate FAILED: {} {} {}: {}\n", g["task"].get<std::string>(), g["metric"].get<std::string>(),
                 g["variant"].get<std::string>(), g["why"].get<std::string>());
  // A task of which a variant got no answer at all was not run, whatever the gates say.
  bool all_failed = false;
  const json& results = r;
  for (const auto& [v, vj] : results["variants"].items())
    for (const auto& t : results["task_order"]) {
      const auto tj = vj["tasks"].find(t.get<std::string>());
      if (tj == vj["tasks"].end() || tj->value("n", 0L) != 0 || tj->value("n_errors", 0L) == 0) continue;
      all_failed = true;
      fmt::print(stderr, "qeval: error: variant {} task {}: every one of its {} requests failed, the first with: {} "
                 "(hint: check the variant's base_url and its server's log; --resume asks the failed samples "
                 "again)\n", v, t.get<std::string>(), tj->value("n_errors", 0L), tj->value("first_error", std::string("?")));
    }
  if (all_failed) return 2;
  return ok ? 0 : 1;
}

void print_prompts(const fs::path& config, const std::string& task, std::optional<int> limit) {
  RunConfig cfg = load_run_config(config);
  int lim = limit ? *limit : cfg.limit.value_or(-1);
  // A task of the config (a task file too, by its `task:` name or the path the config gives),
  // or one of its subtasks; else a built-in task, or a subtask name ("mmlu_anatomy",
  // "mmlu_chat_anatomy") of the longest built-in task name it extends.
  std::optional<TaskSpec> from_config;
  std::string parent = task, only;
  std::error_code ec;
  auto same_file = [&](const fs::path& a, const fs::path& b) { return fs::equivalent(a, b, ec); };
  // A task file that does not load is reported when it may be the one asked for: a task name
  // that no loadable entry of the config has could be that file's `task:` name, and the
  // built-in task of that name would silently stand in for the user's edited file.
  std::optional<std::string> load_error;
  for (size_t i = 0; i < cfg.tasks.size(); ++i) {
    const std::string& entry = cfg.tasks[i];
    if (entry == task || same_file(entry, task) || same_file(entry, config.parent_path() / task)) {
      from_config = load_task(entry);
      break;
    }
    TaskSpec s;
    try {
      s = load_task(entry);
    } catch (const Error& e) {
      if (!load_error) load_error = fmt::format("{}: tasks[{}]: {}", cfg.path.string(), i, e.what());
      continue;
    }
    if (s.name == task) {
      from_config = std::move(s);
      break;
    }
    if (task.rfind(s.name + "_", 0) == 0) {
      for (const auto& sub : expand_task(s))
        if (sub.name == task) only = task;
      if (!only.empty()) {
        from_config = std::move(s);
        break;
      }
    }
  }
  if (!from_config && load_error) fail("{}", *load_error);
  const std::vector<std::string> builtins = builtin_task_names();
  if (!from_config && std::find(builtins.begin(), builtins.end(), task) == builtins.end()) {
    for (const auto& name : builtins) {
      if (task.rfind(name + "_", 0) == 0 && (only.empty() || name.size() > parent.size())) {
        parent = name;
        only = task;
      }
    }
  }
  TaskSpec spec = from_config ? std::move(*from_config) : load_task(parent);
  parent = spec.name;
  bool found = false;
  // Every prompt is built before the first is printed: a bad file prints nothing but its error.
  std::vector<Instance> all;
  for (const auto& sub : expand_task(spec)) {
    if (!only.empty() && sub.name != only) continue;
    found = true;
    for (auto& in : build_instances(spec, sub, lim)) all.push_back(std::move(in));
  }
  if (!found) fail("--task: '{}' is not a subtask of task '{}' (hint: qeval prompts CONFIG --task {})", task, parent, parent);
  for (const auto& in : all) {
    std::string line = prompt_record(in).dump(-1, ' ', false, json::error_handler_t::replace);
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), stdout);
  }
  std::fflush(stdout);
}

void rerender_report(const fs::path& results, const std::optional<fs::path>& out_md) {
  fs::path md = out_md ? *out_md : results.parent_path() / "report.md";
  fs::path svg = md.parent_path() / (md.stem().string() + ".svg");
  // Neither output may replace the results it is rendered from, nor the other one; checked with
  // the folder case before anything is written (the chart is written first).
  const std::string what = (out_md ? "--out " : "") + md.string();
  std::error_code ec;
  if (md.filename().empty() || fs::is_directory(md, ec))
    fail("{}: is a folder (hint: name the markdown file to write, e.g. {})", what, (md / "report.md").string());
  if (same_path(md, results) || same_path(svg, results))
    fail("{}: would overwrite {}, the results it is rendered from (hint: write FILE.md beside it)", what,
         results.string());
  if (same_path(md, svg)) fail("{}: the chart goes to the same file (hint: a name ending in .md)", what);
  json r = json::parse(read_file(results), nullptr, false);
  if (r.is_discarded()) fail("{}: not valid JSON (hint: pass the results.json a run wrote)", results.string());
  validate_results(r, results.string());
  std::string svg_text, md_text;
  try {  // render both before writing either
    svg_text = render_svg(r);
    md_text = render_markdown(r, svg.filename().string());
  } catch (const json::exception& e) {
    fail("{}: a field is missing or has the wrong type: {} (hint: pass a results.json written by qeval run; "
         "it is the source of truth and should not be edited)", results.string(), e.what());
  }
  write_file_atomic(svg, svg_text);
  write_file_atomic(md, md_text);
}

}  // namespace qeval
