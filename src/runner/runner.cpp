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
  std::set<std::string> seen;
  for (const auto& name : cfg.tasks) {
    TaskRun t;
    t.spec = load_task(name);
    if (!seen.insert(t.spec.name).second) fail("{}: tasks: '{}' listed twice", cfg.path.string(), name);
    t.subs = expand_task(t.spec);
    for (const auto& s : t.subs) t.instances.push_back(build_instances(t.spec, s, limit));
    out.push_back(std::move(t));
  }
  return out;
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

  size_t already = 0;
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
      if (any) logs[{t, s}] = std::make_unique<SampleLog>(p);
    }
  }
  size_t total = gen_reqs.size() + ll_reqs.size();
  if (already) fmt::print(stderr, "{}: resuming, {} samples already done\n", vname, already);
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
// up to `max_prompts` task prompts (spread over tasks and subtasks; every position scored) and
// the fidelity_text in chunks (the second half of each chunk scored, as llama-perplexity does).
json run_fidelity(const RunConfig& cfg, const std::vector<TaskRun>& tasks,
                  const std::vector<std::unique_ptr<Backend>>& backends) {
  json out = json::object();
  size_t base_i = 0;
  for (size_t v = 0; v < cfg.variants.size(); ++v)
    if (cfg.variants[v]["name"] == cfg.baseline) base_i = v;
  Engine* base = engine_of(*backends[base_i]);
  if (!base || !base->tokenizer()) return out;
  std::vector<std::pair<std::string, Engine*>> others;
  for (size_t v = 0; v < cfg.variants.size(); ++v) {
    Engine* e = engine_of(*backends[v]);
    if (v == base_i || !e) continue;
    if (e->config().vocab_size != base->config().vocab_size) {
      fmt::print(stderr, "fidelity: skipping {}: vocabulary differs from the baseline's\n",
                 cfg.variants[v]["name"].get<std::string>());
      continue;
    }
    others.emplace_back(cfg.variants[v]["name"].get<std::string>(), e);
  }
  if (others.empty()) return out;

  // Sequences fit every engine compared (a variant may have a shorter context than the baseline).
  int64_t max_len = std::min<int64_t>(base->context_length(), 1024);
  for (const auto& [name, e] : others) max_len = std::min(max_len, e->context_length());
  struct Seq {
    std::vector<int32_t> tokens;
    int64_t first_scored;
  };
  std::map<std::string, std::vector<Seq>> sources;
  // Task prompts, round-robin over (task, subtask) so every task is represented.
  std::vector<std::pair<size_t, size_t>> subs;
  for (size_t t = 0; t < tasks.size(); ++t)
    for (size_t s = 0; s < tasks[t].subs.size(); ++s) subs.emplace_back(t, s);
  for (size_t round = 0; sources["task_prompts"].size() < static_cast<size_t>(cfg.fidelity_prompts); ++round) {
    bool any = false;
    for (auto [t, s] : subs) {
      if (round >= tasks[t].instances[s].size() ||
          sources["task_prompts"].size() >= static_cast<size_t>(cfg.fidelity_prompts))
        continue;
      any = true;
      const Instance& in = tasks[t].instances[s][round];
      if (in.gen && in.gen->chat) continue;
      std::string text = in.gen ? in.gen->prompt : in.loglik->context;
      std::vector<int32_t> toks = base->tokenizer()->encode(text, true);
      if (static_cast<int64_t>(toks.size()) > max_len) toks.erase(toks.begin(), toks.end() - max_len);
      if (toks.size() >= 2) sources["task_prompts"].push_back({std::move(toks), 0});
    }
    if (!any) break;
  }
  if (cfg.fidelity_text) {
    std::vector<int32_t> all = base->tokenizer()->encode(read_file(*cfg.fidelity_text), true);
    const int64_t chunk = std::min<int64_t>(max_len, 512);
    for (int64_t b = 0; b + chunk <= static_cast<int64_t>(all.size()) && sources["text"].size() < 64; b += chunk)
      sources["text"].push_back({std::vector<int32_t>(all.begin() + b, all.begin() + b + chunk), chunk / 2});
    if (sources["text"].empty())
      fail("{}: fidelity_text: {} has {} tokens, fewer than one chunk of {} (hint: use a longer text)",
           cfg.path.string(), cfg.fidelity_text->string(), all.size(), chunk);
  }

  const int64_t V = base->config().vocab_size;
  for (auto& [src, seqs] : sources) {
    if (seqs.empty()) continue;
    std::vector<FidelityAccumulator> acc(others.size());
    for (const Seq& sq : seqs) {
      const int64_t n = static_cast<int64_t>(sq.tokens.size());
      std::vector<float> ref(static_cast<size_t>(n * V));
      std::vector<std::vector<int32_t>> one{sq.tokens};
      base->next_token_logprobs(one, [&](size_t, int64_t i, std::span<const float> lp) {
        std::copy(lp.begin(), lp.end(), ref.begin() + i * V);
      });
      for (size_t o = 0; o < others.size(); ++o) {
        others[o].second->next_token_logprobs(one, [&](size_t, int64_t i, std::span<const float> lp) {
          if (i < sq.first_scored || i + 1 >= n) return;  // the last position has no next token
          acc[o].add(std::span<const float>(ref.data() + i * V, V), lp, sq.tokens[i + 1]);
        });
      }
    }
    for (size_t o = 0; o < others.size(); ++o) {
      json r = acc[o].result();
      r["reference"] = cfg.baseline;
      r["n_sequences"] = seqs.size();
      out[others[o].first][src] = r;
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

  std::vector<std::unique_ptr<Backend>> backends;
  for (size_t i = 0; i < cfg.variants.size(); ++i)
    backends.push_back(make_backend(cfg.variants[i], fmt::format("{}: variants[{}]", cfg.path.string(), i)));
  for (auto& b : backends) b->check_ready();

  std::error_code ec;
  if (opts.overwrite) {
    fs::remove_all(out / "samples", ec);
    for (const char* f : {"results.json", "report.md", "report.svg"}) fs::remove(out / f, ec);
  }
  fs::create_directories(out / "samples", ec);
  if (ec) fail("{}: cannot create the output directory: {}", out.string(), ec.message());

  for (size_t v = 0; v < cfg.variants.size(); ++v)
    run_variant(cfg.variants[v]["name"].get<std::string>(), *backends[v], tasks, out);

  json r = build_results(cfg, tasks, backends, out);
  json fid = run_fidelity(cfg, tasks, backends);
  for (const auto& [v, f] : fid.items()) r["variants"][v]["fidelity"] = f;
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
  // A subtask name ("mmlu_anatomy", "mmlu_chat_anatomy") selects one subtask of the longest
  // built-in task name it extends.
  std::string parent = task, only;
  const std::vector<std::string> builtins = builtin_task_names();
  if (std::find(builtins.begin(), builtins.end(), task) == builtins.end()) {
    for (const auto& name : builtins) {
      if (task.rfind(name + "_", 0) == 0 && (only.empty() || name.size() > parent.size())) {
        parent = name;
        only = task;
      }
    }
  }
  TaskSpec spec = load_task(parent);
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
  json r = json::parse(read_file(results), nullptr, false);
  if (r.is_discarded()) fail("{}: not valid JSON (hint: pass the results.json a run wrote)", results.string());
  validate_results(r, results.string());
  fs::path md = out_md ? *out_md : results.parent_path() / "report.md";
  fs::path svg = md.parent_path() / (md.stem().string() + ".svg");
  write_file_atomic(svg, render_svg(r));
  write_file_atomic(md, render_markdown(r, svg.filename().string()));
}

}  // namespace qeval
