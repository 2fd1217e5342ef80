#include "report/gates.h"

#include <fmt/format.h>

namespace qeval {

using nlohmann::json;

namespace {

const json* at(const json& j, std::initializer_list<std::string> path) {
  const json* p = &j;
  for (const auto& k : path) {
    if (!p->is_object() || !p->contains(k)) return nullptr;
    p = &(*p)[k];
  }
  return p;
}

json verdict(const Gate& g, const std::string& variant, bool passed, std::string why) {
  return {{"task", g.task}, {"metric", g.metric}, {"variant", variant}, {"passed", passed}, {"why", std::move(why)}};
}

}  // namespace

json evaluate_gates(const json& r, const std::vector<Gate>& gates) {
  json out = json::array();
  std::string base = r.value("baseline", "");
  for (const auto& g : gates) {
    std::vector<std::string> targets = g.variants;
    // Default: every variant but the baseline; a run of one variant gates that variant.
    if (targets.empty())
      for (const auto& [v, _] : r.at("variants").items())
        if (v != base) targets.push_back(v);
    if (targets.empty() && !base.empty()) targets.push_back(base);
    for (const auto& v : targets) {
      const json* t = at(r, {"variants", v, "tasks", g.task});
      if (!t) {
        out.push_back(verdict(g, v, false, fmt::format("task {} has no results for variant {}", g.task, v)));
        continue;
      }
      std::vector<std::string> fails, passes;
      int n_errors = t->value("n_errors", 0);
      if (n_errors > g.max_errors)
        fails.push_back(fmt::format("{} per-sample errors > max_errors {}", n_errors, g.max_errors));
      const json* m = at(*t, {"metrics", g.metric});
      const json* bm = at(r, {"variants", base, "tasks", g.task, "metrics", g.metric});
      bool needs_metric = g.max_drop || g.max_rel_drop || g.significant_drop || g.min_value;
      const bool vs_base = (g.max_drop || g.max_rel_drop || g.significant_drop) && v != base;
      // A comparison is only as sound as the baseline: its errors count against max_errors too.
      if (vs_base) {
        const json* bt = at(r, {"variants", base, "tasks", g.task});
        const int base_errors = bt ? bt->value("n_errors", 0) : 0;
        if (base_errors > g.max_errors)
          fails.push_back(fmt::format("baseline {}: {} per-sample errors > max_errors {}", base, base_errors, g.max_errors));
      }
      if (needs_metric && !m) {
        fails.push_back(fmt::format("metric {} missing for {}", g.metric, g.task));
      } else if (m && !m->at("value").is_number()) {
        fails.push_back(fmt::format("no scored sample (n=0, {} errors)", n_errors));
      } else if (m) {
        double val = m->at("value").get<double>();
        if (g.min_value) {
          std::string s = fmt::format("value {:.4f} vs min_value {:.4f}", val, *g.min_value);
          // The same 1e-12 slack as the drop gates: a group's micro average can sit one ulp
          // below the exact fraction (29/58 as 0.49999999999999994).
          (val >= *g.min_value - 1e-12 ? passes : fails).push_back(s);
        }
        if (vs_base) {
          if (!bm) {
            fails.push_back(fmt::format("baseline {} has no {} for {}", base, g.metric, g.task));
          } else if (!bm->at("value").is_number()) {
            fails.push_back(fmt::format("baseline {} has no scored sample of {} (n=0)", base, g.task));
          } else {
            double b = bm->at("value").get<double>();
            double drop = b - val;
            if (g.max_drop) {
              std::string s = fmt::format("drop {:.4f} (baseline {:.4f} → {:.4f}) vs max_drop {:.4f}", drop, b, val, *g.max_drop);
              (drop <= *g.max_drop + 1e-12 ? passes : fails).push_back(s);
            }
            if (g.max_rel_drop) {
              double rel = b > 0 ? drop / b : (drop > 0 ? INFINITY : 0.0);
              std::string s = fmt::format("relative drop {:.4f} vs max_rel_drop {:.4f}", rel, *g.max_rel_drop);
              (rel <= *g.max_rel_drop + 1e-12 ? passes : fails).push_back(s);
            }
            if (g.significant_drop) {
              const json* c = at(r, {"comparisons", v, g.task, g.metric});
              if (!c || c->value("n_paired", 0L) == 0 || !c->at("delta").is_number()) {
                fails.push_back("no paired sample (no doc scored for both the variant and the baseline)");
              } else {
                double p = c->at("mcnemar_p").get<double>();
                double d = c->at("delta").get<double>();
                bool sig = d < 0 && p < *g.significant_drop;
                std::string s = fmt::format("paired Δ {:+.4f}, McNemar p={:.4g} ({} right→wrong, {} wrong→right) vs α={}",
                                            d, p, c->at("right_to_wrong").get<long>(), c->at("wrong_to_right").get<long>(),
                                            *g.significant_drop);
                (sig ? fails : passes).push_back(s + (sig ? ": significant drop" : ": no significant drop"));
              }
            }
          }
        }
      }
      if (fails.empty() && g.max_errors >= 0 && !needs_metric)
        passes.push_back(fmt::format("{} per-sample errors ≤ max_errors {}", n_errors, g.max_errors));
      std::string why;
      for (const auto& s : (fails.empty() ? passes : fails)) why += (why.empty() ? "" : "; ") + s;
      out.push_back(verdict(g, v, fails.empty(), why));
    }
  }
  return out;
}

}  // namespace qeval
