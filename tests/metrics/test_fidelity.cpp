// Fidelity statistics (KL divergence, top-1 agreement, perplexity ratio) on hand-made
// distributions with known values.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "metrics/fidelity.h"

using namespace qeval;

namespace {
std::vector<float> logs(std::vector<double> p) {
  std::vector<float> l;
  for (double x : p) l.push_back(static_cast<float>(std::log(x)));
  return l;
}
}  // namespace

TEST_CASE("identical distributions: KLD 0, full agreement, PPL ratio 1") {
  FidelityAccumulator acc;
  auto a = logs({0.5, 0.25, 0.25});
  for (int i = 0; i < 5; ++i) acc.add(a, a, i % 3);
  auto r = acc.result();
  CHECK(r["n_tokens"] == 5);
  CHECK(r["kld_mean"].get<double>() == Approx(0.0).margin(1e-12));
  CHECK(r["top1_agreement"].get<double>() == 1.0);
  CHECK(r["ppl_ratio"].get<double>() == Approx(1.0));
}

TEST_CASE("KLD, percentiles, top-1 and perplexity match hand computations") {
  FidelityAccumulator acc;
  // KL([.5,.5] || [.9,.1]) = .5 ln(.5/.9) + .5 ln(.5/.1)
  const double k1 = 0.5 * std::log(0.5 / 0.9) + 0.5 * std::log(0.5 / 0.1);
  acc.add(logs({0.5, 0.5}), logs({0.9, 0.1}), 1);
  acc.add(logs({0.8, 0.2}), logs({0.8, 0.2}), 0);  // KL 0
  // top token differs: ref argmax 0 (0.6), var argmax 1 (0.7)
  const double k3 = 0.6 * std::log(0.6 / 0.3) + 0.4 * std::log(0.4 / 0.7);
  acc.add(logs({0.6, 0.4}), logs({0.3, 0.7}), 0);
  auto r = acc.result();
  CHECK(r["kld_mean"].get<double>() == Approx((k1 + k3) / 3).epsilon(1e-6));
  CHECK(r["kld_percentiles"]["max"].get<double>() == Approx(std::max(k1, k3)).epsilon(1e-6));
  CHECK(r["kld_percentiles"]["min"].get<double>() == Approx(0.0).margin(1e-7));
  CHECK(r["kld_percentiles"]["50"].get<double>() == Approx(std::min(k1, k3)).epsilon(1e-6));
  CHECK(r["top1_agreement"].get<double>() == Approx(2.0 / 3));
  // PPL over next tokens 1, 0, 0: ref nll = -(ln .5 + ln .8 + ln .6), var = -(ln .1 + ln .8 + ln .3)
  const double pr = std::exp(-(std::log(0.5) + std::log(0.8) + std::log(0.6)) / 3);
  const double pv = std::exp(-(std::log(0.1) + std::log(0.8) + std::log(0.3)) / 3);
  CHECK(r["ppl_ratio"].get<double>() == Approx(pv / pr).epsilon(1e-6));
  // Uncertainties as llama-perplexity prints them. python3: kl=[k1,0,k3]; stdev(kl)/sqrt(3);
  // sqrt(p*(1-p)/(n-1)) for top-1; d = ln p_ref(next) - ln p_var(next) per position.
  const double km = (k1 + k3) / 3;
  const double ksd = std::sqrt(((k1 - km) * (k1 - km) + km * km + (k3 - km) * (k3 - km)) / 2);
  CHECK(r["kld_stderr"].get<double>() == Approx(ksd / std::sqrt(3.0)).epsilon(1e-5));
  CHECK(r["top1_stderr"].get<double>() == Approx(std::sqrt(2.0 / 3 * (1.0 / 3) / 2)).epsilon(1e-9));
  const double d[3] = {std::log(0.5 / 0.1), 0.0, std::log(0.6 / 0.3)};
  const double dm = (d[0] + d[1] + d[2]) / 3;
  const double dsd = std::sqrt(((d[0] - dm) * (d[0] - dm) + dm * dm + (d[2] - dm) * (d[2] - dm)) / 2);
  CHECK(r["ln_ppl_ratio"].get<double>() == Approx(std::log(pv / pr)).epsilon(1e-6));
  CHECK(r["ln_ppl_ratio"].get<double>() == Approx(dm).epsilon(1e-6));
  CHECK(r["ln_ppl_ratio_stderr"].get<double>() == Approx(dsd / std::sqrt(3.0)).epsilon(1e-5));
  CHECK(r["ppl_ratio_stderr"].get<double>() == Approx(pv / pr * dsd / std::sqrt(3.0)).epsilon(1e-5));
}

TEST_CASE("one position: no standard errors") {
  FidelityAccumulator acc;
  acc.add(logs({0.5, 0.5}), logs({0.9, 0.1}), 1);
  auto r = acc.result();
  CHECK(r["kld_stderr"].is_null());
  CHECK(r["top1_stderr"].is_null());
  CHECK(r["ln_ppl_ratio_stderr"].is_null());
  CHECK(r["ppl_ratio_stderr"].is_null());
}

TEST_CASE("a NaN or infinite position is counted and left out, not scored as a perfect match") {
  FidelityAccumulator acc;
  auto a = logs({0.5, 0.25, 0.25});
  auto b = logs({0.25, 0.5, 0.25});
  acc.add(a, b, 0);
  std::vector<float> nan_lp(3, std::nanf(""));
  acc.add(a, nan_lp, 0);  // max(0, NaN) would have been 0: a perfect match
  std::vector<float> zero_p = logs({0.5, 0.5, 1e-30});
  zero_p[2] = -INFINITY;  // the variant gives probability 0 to a token the reference does not
  acc.add(a, zero_p, 0);
  auto r = acc.result();
  CHECK(r["n_tokens"] == 1);
  CHECK(r["n_nonfinite"] == 2);
  const double kl = 0.5 * std::log(0.5 / 0.25) + 0.25 * std::log(0.25 / 0.5);
  CHECK(r["kld_mean"].get<double>() == Approx(kl));
  CHECK(r["top1_agreement"].get<double>() == 0.0);
  CHECK(std::isfinite(r["ppl_ratio"].get<double>()));
}

TEST_CASE("perplexity chunks: whole chunks, each starting with BOS as llama-perplexity cuts them") {
  std::vector<int32_t> all = {1, 10, 11, 12, 13, 14, 15, 16, 17};
  auto c = perplexity_chunks(all, 4, 64, 1);
  REQUIRE(c.size() == 2);  // the 1-token tail is dropped
  CHECK(c[0] == std::vector<int32_t>{1, 10, 11, 12});
  CHECK(c[1] == std::vector<int32_t>{1, 14, 15, 16});  // 13 overwritten by BOS
  c = perplexity_chunks(all, 4, 1, std::nullopt);
  REQUIRE(c.size() == 1);
  c = perplexity_chunks(all, 3, 64, std::nullopt);
  REQUIRE(c.size() == 3);
  CHECK(c[2] == std::vector<int32_t>{15, 16, 17});
  CHECK(c[1] == std::vector<int32_t>{12, 13, 14});  // no BOS: the text as it is
}
