// Throughput of the openai backend against the instant loopback FakeOpenAI server:
// 20k tiny generation requests and 20k four-choice loglikelihood requests at concurrency 64.
// Prints requests/s, the client thread's CPU time per request (what the harness itself
// costs; the fake server shares the cores), and the ratio to the 5,000 samples/s goal.
// Usage: bench_harness [n_requests] [concurrency]
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backends/openai.h"
#include "support/fake_openai.h"

using namespace qeval;

namespace {

double thread_cpu_s() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double wall_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Measure {
  double wall = 0, cpu = 0;
  int errors = 0;
};

void print(const char* what, size_t n, const Measure& m) {
  constexpr double kGoal = 5000.0;
  const double rate = n / m.wall;
  fmt::print("{:<28} {:>7} req in {:6.3f} s: {:8.0f} req/s ({:4.2f}x the {:.0f}/s goal); "
             "client thread {:5.1f} us CPU/req; errors {}\n",
             what, n, m.wall, rate, rate / kGoal, kGoal, 1e6 * m.cpu / n, m.errors);
}

}  // namespace

int main(int argc, char** argv) {
  const size_t n = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 20000;
  const int concurrency = argc > 2 ? std::atoi(argv[2]) : 64;

  qeval::testing::FakeOpenAI::Options o;
  o.threads = concurrency + 16;
  qeval::testing::FakeOpenAI server(o);

  OpenAIConfig c;
  c.model = "fake-model";
  c.base_urls = {server.base_url()};
  c.concurrency = concurrency;
  auto backend = make_openai_backend(c, "bench");
  backend->check_ready();

  std::vector<GenRequest> gen(n);
  for (size_t i = 0; i < n; ++i) {
    gen[i].prompt = fmt::format("Question: what is {} + 1?\nAnswer:", i);
    gen[i].max_tokens = 1;
    gen[i].stop = {"Question:"};
  }
  std::vector<LoglikRequest> ll(n);
  for (size_t i = 0; i < n; ++i) {
    ll[i].context = fmt::format("Question {}: which letter?\nA. a\nB. b\nC. c\nD. d\nAnswer:", i);
    ll[i].continuations = {" A", " B", " C", " D"};
  }

  // Warm-up: opens the connections.
  backend->generate(std::span(gen).first(std::min<size_t>(n, 256)), [](size_t, GenResult&&) {});

  fmt::print("openai backend vs instant FakeOpenAI, concurrency {}, {} hardware threads\n",
             concurrency, std::thread::hardware_concurrency());
  Measure g;
  double w0 = wall_s(), c0 = thread_cpu_s();
  backend->generate(gen, [&](size_t, GenResult&& r) { g.errors += !r.error.empty(); });
  g.wall = wall_s() - w0;
  g.cpu = thread_cpu_s() - c0;
  print("generate (completions)", n, g);

  Measure l;
  w0 = wall_s();
  c0 = thread_cpu_s();
  backend->loglikelihood(ll, [&](size_t, LoglikResult&& r) { l.errors += !r.error.empty(); });
  l.wall = wall_s() - w0;
  l.cpu = thread_cpu_s() - c0;
  print("loglikelihood (4 choices)", n, l);
  return g.errors + l.errors == 0 ? 0 : 1;
}
