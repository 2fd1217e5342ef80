#include "report/render.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"

namespace qeval {

namespace {

using nlohmann::json;

// Rows of the main table: every top-level task (groups, not their subtasks) × metric.
struct Row {
  std::string task, metric;
};

std::vector<std::string> variant_order(const json& r) {
  std::vector<std::string> v;
  if (r.contains("variant_order"))
    for (const auto& x : r.at("variant_order")) v.push_back(x.get<std::string>());
  else
    for (const auto& [k, _] : r.at("variants").items()) v.push_back(k);
  return v;
}

std::vector<std::string> top_tasks(const json& r) {
  std::vector<std::string> t;
  if (r.contains("task_order")) {
    for (const auto& x : r.at("task_order")) t.push_back(x.get<std::string>());
    return t;
  }
  for (const auto& [vname, v] : r.at("variants").items()) {
    for (const auto& [k, _] : v.at("tasks").items()) {
      bool sub = false;
      for (const auto& [k2, t2] : v.at("tasks").items())
        if (t2.contains("subtasks"))
          for (const auto& s : t2.at("subtasks")) sub |= s.get<std::string>() == k;
      if (!sub) t.push_back(k);
    }
    break;
  }
  return t;
}

std::vector<Row> rows(const json& r) {
  std::vector<Row> out;
  auto vs = variant_order(r);
  for (const auto& t : top_tasks(r)) {
    std::vector<std::string> metrics;
    for (const auto& v : vs) {
      const json* tj = nullptr;
      if (r.at("variants").at(v).at("tasks").contains(t)) tj = &r.at("variants").at(v).at("tasks").at(t);
      if (!tj || !tj->contains("metrics")) continue;
      for (const auto& [m, _] : tj->at("metrics").items())
        if (std::find(metrics.begin(), metrics.end(), m) == metrics.end()) metrics.push_back(m);
    }
    for (const auto& m : metrics) out.push_back({t, m});
  }
  return out;
}

const json* find(const json& j, std::initializer_list<std::string> path) {
  const json* p = &j;
  for (const auto& k : path) {
    if (!p->is_object() || !p->contains(k)) return nullptr;
    p = &(*p)[k];
  }
  return p;
}

std::string pct(const json& x) { return x.is_number() ? fmt::format("{:.1f}", 100.0 * x.get<double>()) : "n/a"; }
std::string signed_pct(const json& x) {
  return x.is_number() ? fmt::format("{:+.1f}", 100.0 * x.get<double>()) : "n/a";
}
double num(const json& x) { return x.is_number() ? x.get<double>() : 0.0; }

std::string md_escape(std::string s) {
  std::string o;
  for (char c : s) {
    if (c == '|') o += "\\|";
    else if (c == '\n') o += ' ';
    else o += c;
  }
  return o;
}

std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '&': o += "&amp;"; break;
      case '"': o += "&quot;"; break;
      default:
        // XML 1.0 has no way to write the other C0 controls, even as references.
        o += (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') ? '?' : c;
    }
  }
  return o;
}

std::string fmt_p(const json& p) {
  if (!p.is_number()) return "n/a";
  const double v = p.get<double>();
  if (v < 0.001) return "<0.001";
  // Four significant digits where three decimals would round onto a usual alpha (0.04996 is
  // not "0.050": a gate at 0.05 fails on it).
  for (double alpha : {0.01, 0.05, 0.1})
    if (std::abs(v - alpha) < 0.0005 && v != alpha) return fmt::format("{:.4g}", v);
  return fmt::format("{:.3f}", v);
}

// A number at a fixed precision, or "n/a" where the results hold none (null: not finite).
std::string fixed(const json& x, int digits) {
  return x.is_number() ? fmt::format("{:.{}f}", x.get<double>(), digits) : "n/a";
}

}  // namespace

void validate_results(const json& r, const std::string& source) {
  if (!r.is_object() || r.value("schema", "") != "qeval.results/1")
    fail("{}: not a qeval results file (expected \"schema\": \"qeval.results/1\")", source);
  if (!r.contains("variants") || !r.at("variants").is_object())
    fail("{}: field 'variants' missing or not an object", source);
  if (r.at("variants").empty()) fail("{}: field 'variants' is empty (hint: pass the results.json a run wrote)", source);
  for (const auto& [name, v] : r.at("variants").items())
    if (!v.is_object() || !v.contains("tasks") || !v.at("tasks").is_object())
      fail("{}: variants.{}.tasks missing or not an object", source, name);
}

std::string render_markdown(const json& r, const std::string& svg_file) {
  std::string md;
  auto vs = variant_order(r);
  std::string base = r.value("baseline", vs.empty() ? "" : vs.front());
  md += fmt::format("# qeval report: {}\n\n", r.value("name", "run"));
  md += "Values are percentages ± standard error as lm-eval reports it (sample sd / √n; for a group of "
        "subtasks such as mmlu, lm-eval's pooled stderr). Δ is the paired "
        "difference against the baseline with its 95% CI; flips count samples that went "
        "right→wrong / wrong→right; p is the exact McNemar test.\n\n";

  // Main table.
  md += "| task | metric |";
  for (const auto& v : vs) md += fmt::format(" {}{} |", md_escape(v), v == base ? " (baseline)" : "");
  md += "\n|---|---|";
  for (size_t i = 0; i < vs.size(); ++i) md += "---|";
  md += "\n";
  for (const auto& row : rows(r)) {
    md += fmt::format("| {} | {} |", md_escape(row.task), md_escape(row.metric));
    for (const auto& v : vs) {
      const json* m = find(r, {"variants", v, "tasks", row.task, "metrics", row.metric});
      if (!m) {
        md += " – |";
        continue;
      }
      std::string cell = fmt::format("{} ± {} (n={})", pct(m->at("value")),
                                     pct(m->at("stderr")), m->at("n").get<long>());
      if (v != base) {
        const json* c = find(r, {"comparisons", v, row.task, row.metric});
        if (c) {
          cell += fmt::format("<br>Δ {} [{}, {}], flips {}/{}, p={}", signed_pct(c->at("delta")),
                              signed_pct(c->at("ci95").at(0)), signed_pct(c->at("ci95").at(1)),
                              c->at("right_to_wrong").get<long>(), c->at("wrong_to_right").get<long>(),
                              fmt_p(c->at("mcnemar_p")));
          // Δ covers the docs both variants answered; say so when errors left some out.
          const json* bm = find(r, {"variants", base, "tasks", row.task, "metrics", row.metric});
          const long np = c->value("n_paired", 0L);
          if (np != m->at("n").get<long>() || (bm && np != bm->at("n").get<long>())) cell += fmt::format(" (n={} paired)", np);
        }
      }
      md += " " + cell + " |";
    }
    md += "\n";
  }
  if (!svg_file.empty()) md += fmt::format("\n![accuracy by variant, 95% error bars]({})\n", svg_file);

  // Sample accounting and throughput.
  md += "\n## Samples and throughput\n\n";
  // Output tokens/s is "—" for a task that generates nothing (loglikelihood: MMLU); samples/s
  // compares every task.
  md += "samples/s and output tok/s are over the time requests were in flight (errored samples "
        "included); latency is per request for remote variants (its last attempt) and, for engine "
        "variants, from the submission of the task's batch to the doc's result (queueing included).\n\n";
  md += "| variant | task | n | errors | invalid | truncated | prompt truncated | samples/s | output tok/s | latency p50 (s) | latency p99 (s) |\n";
  md += "|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& v : vs) {
    for (const auto& t : top_tasks(r)) {
      const json* tj = find(r, {"variants", v, "tasks", t});
      if (!tj) continue;
      const json& th = tj->contains("throughput") ? tj->at("throughput") : json::object();
      const std::string out_tps = th.value("output_tokens", int64_t{0}) > 0
                                      ? fmt::format("{:.1f}", th.value("output_tokens_per_s", 0.0))
                                      : std::string("—");
      md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {:.2f} | {} | {:.3f} | {:.3f} |\n", md_escape(v),
                        md_escape(t), tj->value("n", 0), tj->value("n_errors", 0), tj->value("n_invalid", 0),
                        tj->value("n_truncated", 0), tj->value("n_prompt_truncated", 0),
                        th.value("samples_per_s", 0.0), out_tps, th.value("latency_s_p50", 0.0),
                        th.value("latency_s_p99", 0.0));
    }
  }

  // Fidelity (engine variants vs the baseline's distributions).
  bool any_fid = false;
  for (const auto& v : vs)
    if (find(r, {"variants", v, "fidelity"}) || find(r, {"variants", v, "fidelity_skipped"})) any_fid = true;
  if (any_fid) {
    md += "\n## Fidelity against the baseline (next-token distributions)\n\n";
    md += "KL divergence of each variant's next-token distribution from the baseline's on the same "
          "tokens, with percentiles; same top token = top-1 agreement; PPL ratio = variant / baseline "
          "perplexity of the actual next tokens (± standard errors as llama-perplexity --kl-divergence "
          "computes them). Source `text`: the fidelity_text, tokenised as llama-perplexity does and cut as it "
          "cuts it (up to 64 chunks of min(context, 512) tokens starting with BOS, the second half of each "
          "scored). Source `task_prompts`: task prompts (chat prompts left out) tokenised as the engine "
          "tokenises them, each cut from the left to min(context, 1024) tokens, every position scored — "
          "not a llama-perplexity measurement. Variants are compared only when their tokenizer makes the "
          "same tokens of these texts as the baseline's.\n\n";
    md += "| variant | source | tokens | mean KLD | max | 99.9% | 99% | 95% | 90% | median | 10% | 5% | 1% | 0.1% | min | same top token | PPL ratio |\n";
    md += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    std::string nonfinite, not_computed;
    for (const auto& v : vs) {
      const json* f = find(r, {"variants", v, "fidelity"});
      if (!f) continue;
      for (const auto& [src, s] : f->items()) {
        auto at = [&](const char* k) { return s.contains(k) ? s[k] : json(); };
        md += fmt::format("| {} | {} | {} | {} ± {} |", md_escape(v), md_escape(src), s.value("n_tokens", 0),
                          fixed(at("kld_mean"), 6), fixed(at("kld_stderr"), 6));
        for (const char* p : {"max", "99.9", "99", "95", "90", "50", "10", "5", "1", "0.1", "min"})
          md += fmt::format(" {} |", fixed(s.contains("kld_percentiles") && s.at("kld_percentiles").contains(p)
                                               ? s.at("kld_percentiles").at(p) : json(), 6));
        const json top1 = at("top1_agreement"), top1_se = at("top1_stderr");
        md += fmt::format(" {}{} | {}{} |\n",
                          top1.is_number() ? fmt::format("{:.2f}%", 100.0 * top1.get<double>()) : "n/a",
                          top1_se.is_number() ? fmt::format(" ± {:.2f}%", 100.0 * top1_se.get<double>()) : "",
                          fixed(at("ppl_ratio"), 4),
                          at("ppl_ratio_stderr").is_number() ? " ± " + fixed(at("ppl_ratio_stderr"), 4) : "");
        if (s.value("n_nonfinite", 0L) > 0)
          nonfinite += fmt::format("\n**{} {}: {} of {} positions had a non-finite (NaN or infinite) log-probability** in "
                                   "the variant or the baseline; they are left out of the statistics above.\n",
                                   md_escape(v), md_escape(src), s.value("n_nonfinite", 0L),
                                   s.value("n_nonfinite", 0L) + s.value("n_tokens", 0L));
        if (at("error").is_string())
          not_computed += fmt::format("\n**{} {}: not computed**: {}\n", md_escape(v), md_escape(src),
                                      md_escape(at("error").get<std::string>()));
      }
    }
    md += nonfinite;
    md += not_computed;
    for (const auto& v : vs)
      if (const json* why = find(r, {"variants", v, "fidelity_skipped"}); why && why->is_string())
        md += fmt::format("\n**{}**: {}.\n", md_escape(v), md_escape(why->get<std::string>()));
    if (r.contains("fidelity_notes") && r.at("fidelity_notes").is_array())
      for (const auto& n : r.at("fidelity_notes"))
        if (n.is_string()) md += fmt::format("\nNote: {}.\n", md_escape(n.get<std::string>()));
  }

  // Gates.
  md += "\n## Gates\n\n";
  if (!r.contains("gates") || r.at("gates").empty()) {
    md += "No gates configured.\n";
  } else {
    md += "| gate | variant | result | why |\n|---|---|---|---|\n";
    for (const auto& g : r.at("gates")) {
      md += fmt::format("| {} {} | {} | {} | {} |\n", md_escape(g.value("task", "")),
                        md_escape(g.value("metric", "")), md_escape(g.value("variant", "")),
                        g.value("passed", false) ? "PASS" : "**FAIL**", md_escape(g.value("why", "")));
    }
  }

  // Per-subtask detail (e.g. the 57 MMLU subjects).
  for (const auto& t : top_tasks(r)) {
    const json* first = find(r, {"variants", vs.front(), "tasks", t, "subtasks"});
    if (!first || first->empty()) continue;
    md += fmt::format("\n<details><summary>{}: per-subtask results</summary>\n\n| subtask | metric |", t);
    for (const auto& v : vs) md += fmt::format(" {} |", md_escape(v));
    md += "\n|---|---|";
    for (size_t i = 0; i < vs.size(); ++i) md += "---|";
    md += "\n";
    for (const auto& s : *first) {
      std::string st = s.get<std::string>();
      const json* ms = find(r, {"variants", vs.front(), "tasks", st, "metrics"});
      if (!ms) continue;
      for (const auto& [m, _] : ms->items()) {
        md += fmt::format("| {} | {} |", md_escape(st), md_escape(m));
        for (const auto& v : vs) {
          const json* x = find(r, {"variants", v, "tasks", st, "metrics", m});
          md += x ? fmt::format(" {} ± {} |", pct(x->at("value")), pct(x->at("stderr")))
                  : " – |";
        }
        md += "\n";
      }
    }
    md += "\n</details>\n";
  }

  // Metadata.
  md += "\n## Run\n\n";
  md += fmt::format("- created: {}\n- git revision: {}\n- config sha256: {}\n", r.value("created", "?"),
                    r.value("git_revision", "?"), r.value("config_sha256", "?"));
  for (const auto& v : vs) {
    const json& vj = r.at("variants").at(v);
    md += fmt::format("- variant `{}`: backend {}, model `{}`", v, vj.value("backend", "?"), vj.value("model", "?"));
    if (vj.contains("details") && vj.at("details").is_object())
      for (const auto& [k, x] : vj.at("details").items())
        md += fmt::format(", {} {}", k, x.is_string() ? (x.get<std::string>().empty() ? "—" : x.get<std::string>()) : x.dump());
    md += "\n";
  }
  if (r.contains("task_versions"))
    for (const auto& [t, ver] : r.at("task_versions").items())
      md += fmt::format("- task `{}` version {}\n", t, ver.is_string() ? ver.get<std::string>() : ver.dump());
  return md;
}

std::string render_svg(const json& r) {
  auto vs = variant_order(r);
  auto rs = rows(r);
  const double bar_w = 18, gap = 14, left = 50, top = 30, height = 220;
  const double group_w = bar_w * static_cast<double>(vs.size()) + gap;
  const double width = left + group_w * static_cast<double>(rs.size()) + 160;
  static const char* colors[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7"};
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0f}\" height=\"{:.0f}\" font-family=\"sans-serif\" font-size=\"11\">\n",
      width, top + height + 110);
  s += fmt::format("<text x=\"{}\" y=\"16\" font-size=\"13\">{} (error bars: 95% CI)</text>\n", left,
                   xml_escape(r.value("name", "run")));
  for (int i = 0; i <= 4; ++i) {
    double y = top + height - height * i / 4.0;
    s += fmt::format("<line x1=\"{}\" x2=\"{:.0f}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>"
                     "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}%</text>\n",
                     left, width - 150, y, y, left - 4, y + 4, i * 25);
  }
  for (size_t ri = 0; ri < rs.size(); ++ri) {
    double gx = left + gap / 2 + group_w * static_cast<double>(ri);
    for (size_t vi = 0; vi < vs.size(); ++vi) {
      const json* m = find(r, {"variants", vs[vi], "tasks", rs[ri].task, "metrics", rs[ri].metric});
      if (!m || !m->at("value").is_number()) continue;  // n = 0: no bar
      double v = std::clamp(m->at("value").get<double>(), 0.0, 1.0);
      double e = 1.96 * num(m->at("stderr"));
      double x = gx + bar_w * static_cast<double>(vi);
      double y = top + height * (1 - v);
      s += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"><title>{} {} {}: {:.1f}%</title></rect>\n",
                       x, y, bar_w - 2, height * v, colors[vi % 8], xml_escape(vs[vi]), xml_escape(rs[ri].task),
                       xml_escape(rs[ri].metric), 100 * v);
      double y1 = top + height * (1 - std::clamp(v - e, 0.0, 1.0));
      double y2 = top + height * (1 - std::clamp(v + e, 0.0, 1.0));
      double cx = x + (bar_w - 2) / 2;
      s += fmt::format("<line x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#000\"/>\n", cx, cx, y1, y2);
    }
    s += fmt::format("<text transform=\"translate({:.1f},{:.1f}) rotate(30)\">{} {}</text>\n", gx, top + height + 14,
                     xml_escape(rs[ri].task), xml_escape(rs[ri].metric));
  }
  for (size_t vi = 0; vi < vs.size(); ++vi) {
    double y = top + 14.0 * static_cast<double>(vi);
    s += fmt::format("<rect x=\"{:.0f}\" y=\"{:.0f}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{:.0f}\" y=\"{:.0f}\">{}</text>\n",
                     width - 140, y, colors[vi % 8], width - 125, y + 9, xml_escape(vs[vi]));
  }
  s += "</svg>\n";
  return s;
}

std::string render_junit(const json& r) {
  std::vector<std::string> cases;
  std::map<std::string, int> seen;
  int failures = 0;
  if (r.contains("gates")) {
    for (const auto& g : r.at("gates")) {
      std::string name = fmt::format("{} {} {}", g.value("task", ""), g.value("metric", ""), g.value("variant", ""));
      // Two gates on the same task, metric and variant: distinct names, or CI tools merge them.
      if (const int k = ++seen[name]; k > 1) name += fmt::format(" #{}", k);
      std::string c = fmt::format("    <testcase classname=\"qeval.gates\" name=\"{}\">", xml_escape(name));
      if (!g.value("passed", false)) {
        ++failures;
        c += fmt::format("<failure message=\"{}\"/>", xml_escape(g.value("why", "")));
      }
      c += "</testcase>\n";
      cases.push_back(c);
    }
  }
  std::string x = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n";
  x += fmt::format("  <testsuite name=\"qeval.{}\" tests=\"{}\" failures=\"{}\">\n", xml_escape(r.value("name", "run")),
                   cases.size(), failures);
  for (const auto& c : cases) x += c;
  x += "  </testsuite>\n</testsuites>\n";
  return x;
}

}  // namespace qeval
