#include "runner/aggregate.h"

#include <algorithm>
#include <cmath>

#include "metrics/stats.h"

namespace qeval {

using nlohmann::json;

namespace {

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  double pos = q * static_cast<double>(v.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(pos)), hi = static_cast<size_t>(std::ceil(pos));
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

bool ok(const json& s) { return s.contains("error") && s["error"].is_null(); }

double score_of(const json& s, const std::string& metric) {
  if (!s.contains("scores") || !s["scores"].is_object() || !s["scores"].contains(metric)) return 0.0;
  const json& x = s["scores"][metric];
  return x.is_boolean() ? (x.get<bool>() ? 1.0 : 0.0) : x.get<double>();
}

}  // namespace

json aggregate_samples(const std::vector<const SampleMap*>& parts, const std::vector<std::string>& metrics,
                       const std::string& version) {
  long n = 0, n_err = 0, n_invalid = 0, n_trunc = 0, n_ptrunc = 0;
  long out_tokens = 0;
  std::vector<std::pair<double, double>> spans;  // [start, end] of each request
  std::vector<double> latencies;
  std::map<std::string, std::vector<MeanStat>> part_stats;  // per metric, one per part
  std::string first_error;  // of the lowest doc id, so it does not depend on the order of parts
  long first_error_doc = -1;
  for (const auto* p : parts) {
    std::map<std::string, std::vector<double>> part_values;
    for (const auto& [doc, s] : *p) {
      if (s.value("prompt_truncated", false)) ++n_ptrunc;
      if (s.contains("latency_s") && s["latency_s"].is_number()) latencies.push_back(s["latency_s"].get<double>());
      if (s.contains("tokens") && s["tokens"].is_object()) out_tokens += s["tokens"].value("output", 0L);
      if (s.contains("t_end") && s["t_end"].is_number()) {
        double t = s["t_end"].get<double>();
        spans.emplace_back(t - s.value("latency_s", 0.0), t);
      }
      if (!ok(s)) {
        ++n_err;
        if (s.contains("error") && s["error"].is_string() && (first_error_doc < 0 || doc < first_error_doc)) {
          first_error = s["error"].get<std::string>();
          first_error_doc = doc;
        }
        continue;
      }
      ++n;
      n_invalid += s.value("invalid", false);
      n_trunc += s.value("truncated", false);
      for (const auto& m : metrics) part_values[m].push_back(score_of(s, m));
    }
    for (const auto& m : metrics) part_stats[m].push_back(mean_stat(part_values[m]));
  }
  json j = {{"version", version}, {"n", n}, {"n_errors", n_err}, {"n_invalid", n_invalid}, {"n_truncated", n_trunc},
            {"n_prompt_truncated", n_ptrunc}};
  if (n_err > 0) j["first_error"] = first_error;
  j["metrics"] = json::object();
  for (const auto& m : metrics) {
    // A group of subtasks (MMLU's subjects) has lm-eval's pooled stderr; for one part that is
    // its sample stderr.
    MeanStat st = group_stat(part_stats[m]);
    // No scored sample (every request failed): no value, not 0.
    j["metrics"][m] = {{"value", n > 0 ? json(st.value) : json(nullptr)},
                       {"stderr", n > 0 && std::isfinite(st.std_err) ? json(st.std_err) : json(nullptr)},
                       {"n", st.n}};
  }
  // Busy wall time: the union of the requests' [start, end] intervals, so the pause between a
  // killed run and its --resume does not count.
  std::sort(spans.begin(), spans.end());
  double wall = 0, cur_b = 0, cur_e = -INFINITY;
  for (const auto& [b, e] : spans) {
    if (b > cur_e) {
      if (std::isfinite(cur_e)) wall += cur_e - cur_b;
      cur_b = b;
      cur_e = e;
    } else {
      cur_e = std::max(cur_e, e);
    }
  }
  if (std::isfinite(cur_e)) wall += cur_e - cur_b;
  j["throughput"] = {{"output_tokens", out_tokens},
                     {"output_tokens_per_s", wall > 0 ? static_cast<double>(out_tokens) / wall : 0.0},
                     {"samples_per_s", wall > 0 ? static_cast<double>(n + n_err) / wall : 0.0},
                     {"latency_s_p50", percentile(latencies, 0.5)},
                     {"latency_s_p99", percentile(latencies, 0.99)}};
  return j;
}

json compare_samples(const std::vector<const SampleMap*>& base, const std::vector<const SampleMap*>& variant,
                     const std::string& metric) {
  std::vector<double> a, b;
  for (size_t i = 0; i < base.size() && i < variant.size(); ++i) {
    for (const auto& [doc, s] : *base[i]) {
      auto it = variant[i]->find(doc);
      if (it == variant[i]->end() || !ok(s) || !ok(it->second)) continue;
      a.push_back(score_of(s, metric));
      b.push_back(score_of(it->second, metric));
    }
  }
  PairedComparison c = paired_difference(a, b);
  auto num = [](double x) { return std::isfinite(x) ? json(x) : json(nullptr); };
  // No doc scored on both sides: no difference, not 0.
  return {{"delta", a.empty() ? json(nullptr) : json(c.delta)},
          {"ci95", {num(c.ci95.lo), num(c.ci95.hi)}},
          {"right_to_wrong", c.right_to_wrong},
          {"wrong_to_right", c.wrong_to_right},
          {"mcnemar_p", a.empty() ? json(nullptr) : json(c.mcnemar_p)},
          {"n_paired", static_cast<long>(a.size())}};
}

}  // namespace qeval
