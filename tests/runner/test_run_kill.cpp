// kill -9 + --resume: the built `qeval run` is killed (SIGKILL) at several points while it
// logs samples against a slow loopback FakeOpenAI, then resumed to completion; its
// results.json must hold the same numbers as an uninterrupted run, and every samples file
// one line per doc (nothing asked twice once logged, nothing lost).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "core/fs.h"
#include "data/datasets.h"
#include "runner/fixtures/run_fixture.h"

using namespace qeval;
using namespace qeval::testfx;
using nlohmann::json;
using qeval::testing::FakeOpenAI;

namespace {

const char* kQeval = QEVAL_BINARY_DIR "/qeval";

// Starts `qeval run CONFIG --out OUT [--resume]`, output to `log`. Returns the child's pid.
pid_t spawn_run(const fs::path& cfg, const fs::path& out, bool resume, const fs::path& log) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    if (resume) {
      ::execl(kQeval, "qeval", "run", cfg.c_str(), "--out", out.c_str(), "--resume", static_cast<char*>(nullptr));
    } else {
      ::execl(kQeval, "qeval", "run", cfg.c_str(), "--out", out.c_str(), static_cast<char*>(nullptr));
    }
    ::_exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

// The numbers of a results.json that must not depend on interruptions (no timestamps,
// throughput or latencies).
json numbers(const json& r) {
  json out;
  for (const auto& [v, vj] : r["variants"].items()) {
    for (const auto& [t, tj] : vj["tasks"].items()) {
      json& o = out["variants"][v][t];
      for (const char* k : {"version", "n", "n_errors", "n_invalid", "n_truncated", "metrics"}) o[k] = tj[k];
    }
  }
  out["comparisons"] = r["comparisons"];
  out["gates"] = r["gates"];
  out["baseline"] = r["baseline"];
  out["config_sha256"] = r["config_sha256"];
  return out;
}

}  // namespace

TEST_CASE("kill -9 at several points, then --resume, gives the numbers of an uninterrupted run") {
  if (!fs::exists(kQeval)) {
    FAIL("the qeval binary is not built at " << kQeval << " (build the qeval target first)");
  }
  TempDir tmp("kill");
  DatasetSizes z;
  z.mmlu_test_fixed = 2;  // 114 MMLU docs + 20 GSM8K docs per variant
  write_datasets(tmp.path() / "data", z);
  EnvGuard data_env("QEVAL_DATA", (tmp.path() / "data").string());
  const size_t docs_per_variant = 20 + 57 * 2;

  // Two slow servers (about 6 ms per request), one per variant.
  auto slow = [](int variant, const std::string& name) {
    testing::FakeOptions o;
    o.model_name = name;
    Oracle oracle{variant};
    o.model.complete = [oracle](const std::string& p) {
      std::this_thread::sleep_for(std::chrono::milliseconds(6));
      return oracle.complete(p);
    };
    o.model.score = [oracle](std::string_view prefix, std::string_view tok) {
      auto s = oracle.score(prefix, tok);
      if (s.logprob != -1.0) std::this_thread::sleep_for(std::chrono::microseconds(1500));
      return s;
    };
    return std::make_unique<FakeOpenAI>(std::move(o));
  };
  auto sa = slow(0, "model-a");
  auto sb = slow(1, "model-b");

  const fs::path cfg = tmp.path() / "run.yaml";
  write_text(cfg, "name: kill\ntasks: [gsm8k, mmlu]\nlimit: 20\nbaseline: a\nvariants:\n"
                  "  - {name: a, backend: openai, base_url: \"" + sa->base_url() + "\", model: model-a, concurrency: 4}\n"
                  "  - {name: b, backend: openai, base_url: \"" + sb->base_url() + "\", model: model-b, concurrency: 4}\n"
                  "gates:\n"
                  "  - {task: gsm8k, metric: \"exact_match,strict-match\", max_drop: 0.5}\n"
                  "  - {task: mmlu, metric: \"acc,none\", significant_drop: 0.05}\n");

  // The uninterrupted reference.
  const fs::path ref = tmp.path() / "ref";
  int rc_ref = wait_exit(spawn_run(cfg, ref, false, tmp.path() / "ref.log"));
  INFO(read_file(tmp.path() / "ref.log"));
  REQUIRE((rc_ref == 0 || rc_ref == 1));
  const json want = numbers(json::parse(read_file(ref / "results.json")));
  CHECK(count_lines(ref / "samples") == 2 * docs_per_variant);
  // `qeval report` re-renders report.md (and its SVG) from results.json alone, identically.
  {
    const fs::path md = tmp.path() / "rerendered" / "report.md";
    fs::create_directories(md.parent_path());
    const std::string cmd = std::string(kQeval) + " report '" + (ref / "results.json").string() + "' --out '" +
                            md.string() + "'";
    CHECK(std::system(cmd.c_str()) == 0);
    CHECK(read_file(md) == read_file(ref / "report.md"));
    CHECK(read_file(md.parent_path() / "report.svg") == read_file(ref / "report.svg"));
  }

  for (size_t kill_at : {size_t{3}, size_t{70}, docs_per_variant + 1, 2 * docs_per_variant - 10}) {
    {
      INFO("killed after " << kill_at << " logged samples");
      const fs::path out = tmp.path() / ("out" + std::to_string(kill_at));
      const fs::path log = tmp.path() / ("log" + std::to_string(kill_at));
      sa->reset_counters();
      sb->reset_counters();
      pid_t pid = spawn_run(cfg, out, false, log);
      bool exited = false;
      for (int i = 0; i < 30000; ++i) {  // up to 30 s
        if (count_lines(out / "samples") >= kill_at) break;
        int status = 0;
        if (::waitpid(pid, &status, WNOHANG) == pid) {
          exited = true;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      INFO(read_file(log));
      REQUIRE_FALSE(exited);  // the run must still be going at the kill point
      ::kill(pid, SIGKILL);
      CHECK(wait_exit(pid) == -SIGKILL);
      CHECK_FALSE(fs::exists(out / "results.json"));
      const size_t logged = count_lines(out / "samples");
      CHECK(logged >= kill_at);
      CHECK(logged < 2 * docs_per_variant);

      // Resuming finishes the run with the reference numbers.
      int rc = wait_exit(spawn_run(cfg, out, true, log));
      CHECK(rc == rc_ref);
      REQUIRE(fs::exists(out / "results.json"));
      CHECK(numbers(json::parse(read_file(out / "results.json"))) == want);
      // Only the samples never logged were asked again: at most the 4 in flight at the kill
      // (concurrency 4, one variant at a time) were answered twice.
      const int answered = sa->total_answered() + sb->total_answered();
      CHECK(answered >= static_cast<int>(2 * docs_per_variant));
      CHECK(answered <= static_cast<int>(2 * docs_per_variant) + 4);
      // One line per doc: nothing logged twice, nothing lost.
      CHECK(count_lines(out / "samples") == 2 * docs_per_variant);
      for (const char* v : {"a", "b"}) {
        auto lines = read_lines(out / "samples" / v / "gsm8k.jsonl");
        std::set<int> docs;
        for (const auto& l : lines) docs.insert(l["doc_id"].get<int>());
        CHECK(docs.size() == 20);
        CHECK(lines.size() == 20);
      }
    }
  }
}
