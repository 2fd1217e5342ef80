// The qeval CLI: subcommands run, prompts, report, fetch (harness) and generate, bench,
// convert (engine). Flags are declared once here with their help text.
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/commands.h"
#include "core/error.h"
#include "data/fetch.h"
#include "runner/runner.h"

namespace qeval {

int cli_main(int argc, char** argv) {
  CLI::App app{"qeval: is the quantized model still as accurate as the original?", "qeval"};
  app.require_subcommand(1);
  int rc = 0;

  // qeval run
  RunOptions run;
  std::string run_out, run_junit;
  std::optional<int> run_limit;
  auto* c_run = app.add_subcommand("run", "Run a config's tasks on its variants and write the side-by-side report");
  c_run->add_option("config", run.config, "Run config (YAML)")->required();
  c_run->add_option("--out", run_out, "Output directory (default: reports/<config name>/)");
  c_run->add_option("--limit", run_limit, "Docs per task (overrides the config's limit)")->check(CLI::Range(1, 1 << 30));
  c_run->add_flag("--resume", run.resume, "Continue a run: ask only samples never logged or logged with an error");
  c_run->add_flag("--overwrite", run.overwrite, "Discard the samples of an earlier run in the output directory");
  c_run->add_option("--junit", run_junit, "Also write the gates as JUnit XML to this file");
  c_run->callback([&] {
    if (!run_out.empty()) run.out = run_out;
    if (!run_junit.empty()) run.junit = run_junit;
    run.limit = run_limit;
    rc = run_eval(run);
  });

  // qeval prompts
  std::string pr_config, pr_task;
  std::optional<int> pr_limit;
  auto* c_prompts = app.add_subcommand("prompts", "Print the exact prompts of a task, one JSON line per test doc");
  c_prompts->add_option("config", pr_config, "Run config (YAML)")->required();
  c_prompts->add_option("--task", pr_task, "Task name (e.g. gsm8k, mmlu, mmlu_anatomy)")->required();
  c_prompts->add_option("--limit", pr_limit, "Docs per (sub)task")->check(CLI::Range(1, 1 << 30));
  c_prompts->callback([&] { print_prompts(pr_config, pr_task, pr_limit); });

  // qeval report
  std::string rep_in, rep_out;
  auto* c_report = app.add_subcommand("report", "Re-render report.md from a results.json");
  c_report->add_option("results", rep_in, "results.json of a run")->required();
  c_report->add_option("--out", rep_out, "Markdown file to write (default: report.md beside results.json)");
  c_report->callback([&] {
    rerender_report(rep_in, rep_out.empty() ? std::nullopt : std::optional<std::filesystem::path>(rep_out));
  });

  // qeval fetch
  std::vector<std::string> fetch_what;
  std::string fetch_mirror, fetch_dest;
  auto* c_fetch = app.add_subcommand("fetch", "Download datasets and test models (gsm8k, mmlu, stories260K) into the cache");
  c_fetch->add_option("names", fetch_what, "What to fetch: gsm8k, mmlu, stories260K")->required();
  c_fetch->add_option("--mirror", fetch_mirror, "Copy from a local tree of the same layout instead of downloading");
  c_fetch->add_option("--dest", fetch_dest, "Destination root (default: $XDG_CACHE_HOME/qeval)");
  c_fetch->callback([&] {
    FetchOptions fo;
    if (!fetch_mirror.empty()) fo.mirror = fetch_mirror;
    if (!fetch_dest.empty()) fo.dest_root = fetch_dest;
    fetch(fetch_what, fo, std::cerr);
  });

  register_engine_commands(app, rc);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "qeval: error: {} (hint: qeval --help, or qeval <command> --help)\n", e.what());
    return 2;
  }
  return rc;
}

}  // namespace qeval
