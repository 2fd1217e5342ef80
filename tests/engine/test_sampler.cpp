// Sampler: greedy, seeded reproducibility, temperature / top-k / top-p distributions.
#include <catch2/catch.hpp>

#include <cmath>

#include "engine/sampler.h"

using namespace qeval;

TEST_CASE("sampler: greedy is argmax, first on ties", "[engine-sampler]") {
  std::vector<float> l = {0.1f, 2.0f, -1.0f, 2.0f};
  Sampler s({});
  CHECK(s.sample(l) == 1);
  CHECK(argmax(l) == 1);
}

TEST_CASE("sampler: blocked argmax equals the plain loop (ties, NaN, -inf, all sizes)", "[engine-sampler]") {
  auto plain = [](const std::vector<float>& x) {
    int32_t best = 0;
    for (size_t i = 1; i < x.size(); ++i)
      if (x[i] > x[best]) best = static_cast<int32_t>(i);
    return best;
  };
  uint64_t st = 12345;
  auto rnd = [&] {
    st = st * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((st >> 33) % 1000);
  };
  for (size_t n : {1, 2, 63, 64, 65, 127, 128, 129, 200, 1000, 4099}) {
    for (int trial = 0; trial < 40; ++trial) {
      std::vector<float> x(n);
      // Few distinct values so ties are common; sprinkle NaN and -inf.
      for (auto& v : x) v = static_cast<float>(rnd() % 7);
      if (trial % 4 == 1)
        for (int k = 0; k < 5; ++k) x[rnd() % n] = std::nanf("");
      if (trial % 4 == 2)
        for (auto& v : x) v = -INFINITY;
      if (trial % 4 == 3) x[0] = std::nanf("");
      if (trial % 5 == 0) x[rnd() % n] = 100.0f + static_cast<float>(trial);
      INFO("n=" << n << " trial=" << trial);
      CHECK(argmax(x) == plain(x));
    }
  }
}

TEST_CASE("sampler: same seed same tokens, other seed other tokens", "[engine-sampler]") {
  std::vector<float> l(50);
  for (int i = 0; i < 50; ++i) l[i] = std::sin(i * 0.7f);
  SamplingParams p;
  p.temperature = 1.0;
  p.seed = 42;
  Sampler a(p), b(p);
  p.seed = 43;
  Sampler c(p);
  int same = 0, diff = 0;
  for (int i = 0; i < 200; ++i) {
    int32_t x = a.sample(l), y = b.sample(l), z = c.sample(l);
    same += x == y;
    diff += x != z;
  }
  CHECK(same == 200);
  CHECK(diff > 100);
}

TEST_CASE("sampler: frequencies follow softmax(logits / T), top-k and top-p cut the tail", "[engine-sampler]") {
  std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  auto freq = [&](SamplingParams p) {
    Sampler s(p);
    std::vector<double> f(3, 0);
    const int n = 40000;
    for (int i = 0; i < n; ++i) f[s.sample(l)] += 1.0 / n;
    return f;
  };
  SamplingParams p;
  p.temperature = 1.0;
  p.seed = 1;
  auto f = freq(p);
  CHECK(f[0] == Approx(0.5).margin(0.015));
  CHECK(f[1] == Approx(0.3).margin(0.015));
  CHECK(f[2] == Approx(0.2).margin(0.015));
  p.top_p = 0.7;  // nucleus {0, 1}: 0.5 + 0.3 > 0.7
  f = freq(p);
  CHECK(f[2] == 0.0);
  CHECK(f[0] == Approx(0.625).margin(0.015));
  p.top_p = 1.0;
  p.top_k = 1;
  f = freq(p);
  CHECK(f[0] == Approx(1.0));
  p.top_k = 2;
  p.temperature = 2.0;  // softmax(log p / 2) over {0.5, 0.3}: sqrt ratio
  f = freq(p);
  double a = std::sqrt(0.5), b = std::sqrt(0.3);
  CHECK(f[0] == Approx(a / (a + b)).margin(0.015));
  CHECK(f[2] == 0.0);
}

TEST_CASE("sampler: log_softmax and token_logprob", "[engine-sampler]") {
  std::vector<float> l = {1.0f, 2.0f, 3.0f}, out(3);
  log_softmax(l, out);
  double z = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  CHECK(out[2] == Approx(3.0 - z).epsilon(1e-6));
  CHECK(token_logprob(l, 0) == Approx(1.0 - z).epsilon(1e-12));
}

TEST_CASE("sampler: a tiny temperature is greedy, not the last token (logits / T overflow)", "[engine-sampler]") {
  // Positive and negative logits: 1e-40 and 1e-300 turn them into +-inf (or T into 0 as a float).
  std::vector<float> mixed = {0.5f, 3.0f, -2.0f, 1.0f}, negative = {-4.0f, -1.5f, -3.0f, -2.0f};
  for (double t : {1e-30, 1e-38, 1e-40, 1e-300}) {
    for (int k : {0, 2}) {
      SamplingParams p;
      p.temperature = t;
      p.top_k = k;
      p.seed = 7;
      Sampler s(p);
      INFO("T=" << t << " top_k=" << k);
      for (int i = 0; i < 20; ++i) {
        CHECK(s.sample(mixed) == 1);
        CHECK(s.sample(negative) == 1);
      }
    }
  }
}

TEST_CASE("sampler: top_p 0 keeps only the top token (as HF and llama.cpp), top_p 1 is off", "[engine-sampler]") {
  std::vector<float> l = {std::log(0.2f), std::log(0.5f), std::log(0.3f)};
  SamplingParams p;
  p.temperature = 1.0;
  p.top_p = 0.0;
  p.seed = 3;
  Sampler s(p);
  for (int i = 0; i < 200; ++i) CHECK(s.sample(l) == 1);
  p.top_p = 1.0;
  Sampler all(p);
  std::vector<int> seen(3, 0);
  for (int i = 0; i < 200; ++i) seen[all.sample(l)]++;
  CHECK(seen[0] > 0);
  CHECK(seen[2] > 0);
}
