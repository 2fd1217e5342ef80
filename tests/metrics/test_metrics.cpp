// Metrics and statistics against values computed with python3 (math.comb for the binomial
// sums, plain formulas for the rest; the commands are given beside the cases).
#include <cmath>

#include <catch2/catch.hpp>

#include "core/error.h"
#include "metrics/metric.h"
#include "metrics/stats.h"

using namespace qeval;
using nlohmann::json;

TEST_CASE("exact_match with lm-eval's gsm8k normalisation", "[metrics]") {
  // python3: for s in regs: p=re.sub(s,'',p); r=re.sub(s,'',r); then p.lower()==r.lower()
  //   regs = [',', '\\$', '(?s).*#### ', '\\.$']
  auto em = ExactMatch::parse({{"ignore_case", true},
                               {"regexes_to_ignore", {",", "\\$", "(?s).*#### ", "\\.$"}}},
                              "gsm8k.yaml: metric");
  CHECK(em.score("$1,234.", "Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 1234") == 1.0);
  CHECK(em.normalize("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 1,234") == "1234");
  CHECK(em.score("72", "x #### 72") == 1.0);
  CHECK(em.score("72.5", "#### 72.5") == 1.0);
  CHECK(em.score("[invalid]", "#### 5") == 0.0);
  CHECK(em.score("ABC", "abc") == 1.0);
  CHECK(em.score("7", "#### 72") == 0.0);
  ExactMatch plain;
  CHECK(plain.score("ABC", "abc") == 0.0);
  auto punct = ExactMatch::parse({{"ignore_punctuation", true}, {"ignore_numbers", true}}, "t");
  CHECK(punct.normalize("a.b,c!1 2") == "abc ");
}

TEST_CASE("exact_match spec errors name the key", "[metrics]") {
  CHECK_THROWS_WITH(ExactMatch::parse({{"ignore_cases", true}}, "t.yaml: metric"),
                    Catch::Contains("t.yaml: metric") && Catch::Contains("ignore_cases"));
  CHECK_THROWS_WITH(ExactMatch::parse({{"regexes_to_ignore", {"(a"}}}, "t.yaml: metric"),
                    Catch::Contains("regexes_to_ignore[0]"));
  CHECK_THROWS_AS(ExactMatch::parse({{"ignore_case", "yes"}}, "t"), Error);
}

TEST_CASE("acc is argmax with ties to the first", "[metrics]") {
  std::vector<double> lp = {-3.0, -1.0, -1.0, -2.0};
  CHECK(argmax_first(lp) == 1);
  CHECK(acc_score(lp, 1) == 1.0);
  CHECK(acc_score(lp, 2) == 0.0);
  CHECK(argmax_first({}) == -1);
  // python3: numpy.argmax([-1, nan, -2, nan]) -> 1
  std::vector<double> with_nan = {-1.0, std::nan(""), -2.0, std::nan("")};
  CHECK(argmax_first(with_nan) == 1);
  std::vector<double> one = {-0.5};
  CHECK(acc_score(one, 0) == 1.0);
}

TEST_CASE("mean and lm-eval stderr", "[stats]") {
  // python3: m=sum(x)/n; sd=sqrt(sum((x-m)**2)/(n-1)); se=sd/sqrt(n)
  std::vector<double> x = {1, 0, 1, 1, 0, 1, 1, 1, 0, 1};
  auto s = mean_stat(x);
  CHECK(s.n == 10);
  CHECK(s.value == Approx(0.7));
  CHECK(s.std_err == Approx(0.15275252316519466).epsilon(1e-12));
  std::vector<double> y = {0.5, 0.25, 1.0};
  CHECK(mean_stat(y).value == Approx(0.5833333333333334));
  CHECK(mean_stat(y).std_err == Approx(0.22047927592204922).epsilon(1e-12));
  std::vector<double> one = {1.0};
  CHECK(std::isnan(mean_stat(one).std_err));
  CHECK(mean_stat({}).n == 0);
}

TEST_CASE("micro_average equals the mean over all samples", "[stats]") {
  std::vector<double> a = {1, 0, 1}, b = {0, 0, 1, 1, 1, 1, 0}, c = {1}, all;
  for (auto* v : {&a, &b, &c}) all.insert(all.end(), v->begin(), v->end());
  std::vector<MeanStat> parts = {mean_stat(a), mean_stat(b), mean_stat(c), MeanStat{}};
  auto micro = micro_average(parts);
  auto direct = mean_stat(all);
  CHECK(micro.n == 11);
  CHECK(micro.value == Approx(direct.value).epsilon(1e-12));
  CHECK(micro.std_err == Approx(direct.std_err).epsilon(1e-12));
}

TEST_CASE("group_stat: micro-average value, lm-eval's pooled stderr", "[stats]") {
  std::vector<double> a = {1, 0, 1}, b = {0, 0, 1, 1, 1, 1, 0}, c = {1};
  std::vector<MeanStat> parts = {mean_stat(a), mean_stat(b), mean_stat(c), MeanStat{}};
  auto g = group_stat(parts);
  CHECK(g.n == 11);
  CHECK(g.value == Approx(7.0 / 11.0).epsilon(1e-12));
  // Within-part variances s_a^2 = 1/3, s_b^2 = 2/7 (c alone adds none), pooled over N - k = 8:
  // (2 * 1/3 + 6 * 2/7) / 8 = 25/84; stderr = sqrt(25/84 / 11).
  CHECK(g.std_err == Approx(std::sqrt(25.0 / 924.0)).epsilon(1e-12));
  CHECK(g.std_err != Approx(micro_average(parts).std_err).epsilon(1e-3));  // not the concatenated one
  std::vector<MeanStat> singles = {mean_stat(c), mean_stat(c)};
  CHECK(std::isnan(group_stat(singles).std_err));  // N - k = 0
  std::vector<MeanStat> one = {mean_stat(b)};  // one part: its own mean and sample stderr
  CHECK(group_stat(one).value == Approx(mean_stat(b).value).epsilon(1e-15));
  CHECK(group_stat(one).std_err == Approx(mean_stat(b).std_err).epsilon(1e-15));
}

TEST_CASE("exact McNemar p-values", "[stats]") {
  // python3: n=b+c; k=min(b,c); min(1.0, 2*sum(math.comb(n,i) for i in range(k+1))/2**n)
  struct Case { int64_t b, c; double p; };
  std::vector<Case> cases = {{0, 0, 1.0},
                             {1, 0, 1.0},
                             {2, 1, 1.0},
                             {0, 5, 0.0625},
                             {3, 10, 0.09228515625},
                             {10, 10, 1.0},
                             {25, 40, 0.08168153394154005},
                             {1000, 1100, 0.030720707864242296},
                             {6000, 6400, 0.0003391364012301632},
                             {5000, 5000, 1.0},
                             {0, 1000, 1.8665272370064378e-301}};
  for (const auto& c : cases) {
    INFO(c.b << " " << c.c);
    CHECK(mcnemar_exact_p(c.b, c.c) == Approx(c.p).epsilon(1e-9));
    CHECK(mcnemar_exact_p(c.c, c.b) == Approx(c.p).epsilon(1e-9));
  }
}

TEST_CASE("paired difference, flips and CI", "[stats]") {
  // 0/1 scores, Bonett-Price adjusted Wald. python3: z=1.959963984540054; n2=n+2;
  // p12=(wr+1)/n2; p21=(rw+1)/n2; c=p12-p21; h=z*sqrt((p12+p21-c*c)/n2); max(-1,c-h), min(1,c+h)
  std::vector<double> a = {1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 0, 0};
  std::vector<double> b = {1, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0};
  auto r = paired_difference(a, b);
  CHECK(r.n_paired == 12);
  CHECK(r.delta == Approx(0.0).margin(1e-15));
  CHECK(r.ci95.lo == Approx(-0.34292226259680786).epsilon(1e-12));
  CHECK(r.ci95.hi == Approx(0.34292226259680786).epsilon(1e-12));
  // No flip in 3 docs is no proof of equality: the interval keeps its width.
  std::vector<double> three = {1, 0, 1};
  r = paired_difference(three, three);
  CHECK(r.ci95.lo == Approx(-0.5543615297398711).epsilon(1e-12));
  CHECK(r.ci95.hi == Approx(0.5543615297398711).epsilon(1e-12));
  // Three of three flipped: clamped to -1, not beyond.
  r = paired_difference(std::vector<double>{1, 1, 1}, std::vector<double>{0, 0, 0});
  CHECK(r.ci95.lo == -1.0);
  CHECK(r.ci95.hi == Approx(0.10121803246126504).epsilon(1e-12));
  // Scores other than 0/1 (F1, ...): the Wald interval on the differences.
  // python3: d=[y-x for x,y in zip(a,b)]; m=mean(d); se=stdev(d)/sqrt(n); m -/+ z*se
  std::vector<double> fa = {0.5, 1, 0, 0.25}, fb = {0.75, 1, 0.5, 0};
  r = paired_difference(fa, fb);
  CHECK(r.delta == Approx(0.125));
  CHECK(r.ci95.lo == Approx(-0.191287827970415).epsilon(1e-12));
  CHECK(r.ci95.hi == Approx(0.441287827970415).epsilon(1e-12));
  r = paired_difference(a, b);
  CHECK(r.right_to_wrong == 2);
  CHECK(r.wrong_to_right == 2);
  CHECK(r.mcnemar_p == 1.0);
  CHECK(r.baseline_mean == Approx(7.0 / 12));

  std::vector<double> all_right(20, 1.0), five_wrong(20, 1.0);
  for (int i = 0; i < 5; i++) five_wrong[size_t(i)] = 0.0;
  r = paired_difference(all_right, five_wrong);
  CHECK(r.delta == Approx(-0.25));
  CHECK(r.right_to_wrong == 5);
  CHECK(r.wrong_to_right == 0);
  CHECK(r.mcnemar_p == Approx(0.0625));
  CHECK(r.ci95.lo == Approx(-0.44300192328776095).epsilon(1e-12));
  CHECK(r.ci95.hi == Approx(-0.011543531257693529).epsilon(1e-12));
  std::vector<double> shorter(3, 1.0);
  CHECK_THROWS_AS(paired_difference(all_right, shorter), Error);
}
