// Throughput of the whole harness: `run_eval` (config, datasets, prompt building, the openai
// backend, extraction, scoring, sample logs, results.json, report) in-process against an
// instant loopback FakeOpenAI, on a generated dataset tree. Prints samples/s, the harness
// thread's CPU time per sample (the fake server shares the cores) and the ratio to the
// 5,000 samples/s goal ("the harness must never be the bottleneck").
// Usage: bench_run [task=mmlu_generative] [docs_per_subject_or_gsm8k=180] [concurrency=64]
//   mmlu_generative / mmlu: 57 subjects x docs; gsm8k / gsm8k_chat: docs test docs.
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <fmt/format.h>

#include "core/fs.h"
#include "runner/fixtures/run_fixture.h"
#include "runner/runner.h"

using namespace qeval;
using namespace qeval::testfx;

namespace {

double thread_cpu_s() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double process_cpu_s() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double wall_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string task = argc > 1 ? argv[1] : "mmlu_generative";
  const int docs = argc > 2 ? std::atoi(argv[2]) : 180;
  const int concurrency = argc > 3 ? std::atoi(argv[3]) : 64;
  const bool is_mmlu = task.rfind("mmlu", 0) == 0;

  TempDir tmp("bench_run");
  DatasetSizes z;
  z.mmlu_test_fixed = is_mmlu ? docs : 1;
  z.gsm8k_test = is_mmlu ? 1 : docs;
  z.gsm8k_train = 10;
  write_datasets(tmp.path() / "data", z);
  EnvGuard data_env("QEVAL_DATA", (tmp.path() / "data").string());

  testing::FakeOptions o;
  o.model_name = "m";
  o.model = Oracle{0}.model();
  o.threads = concurrency + 8;
  testing::FakeOpenAI server(std::move(o));

  const fs::path cfg = tmp.path() / "bench.yaml";
  write_text(cfg, fmt::format("name: bench\ntasks: [{}]\nvariants:\n"
                              "  - {{name: a, backend: openai, base_url: \"{}\", model: m, concurrency: {}}}\n",
                              task, server.base_url(), concurrency));
  RunOptions opts;
  opts.config = cfg;
  opts.out = tmp.path() / "out";

  const double w0 = wall_s(), c0 = thread_cpu_s(), p0 = process_cpu_s();
  int rc = 0;
  try {
    rc = run_eval(opts);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_run: {}\n", e.what());
    return 2;
  }
  const double wall = wall_s() - w0, cpu = thread_cpu_s() - c0, pcpu = process_cpu_s() - p0;
  const size_t n = count_lines(opts.out->string() + "/samples");
  constexpr double kGoal = 5000.0;
  const double rate = static_cast<double>(n) / wall;
  fmt::print("bench_run {} (concurrency {}): {} samples in {:.3f} s: {:.0f} samples/s ({:.2f}x the {:.0f}/s goal); "
             "harness thread {:.1f} us CPU/sample, whole process (incl. fake server) {:.1f} us CPU/sample; "
             "server answered {}; rc {}\n",
             task, concurrency, n, wall, rate, rate / kGoal, kGoal, 1e6 * cpu / n, 1e6 * pcpu / n,
             server.total_answered(), rc);
  return n == static_cast<size_t>(server.total_answered()) ? 0 : 1;
}
