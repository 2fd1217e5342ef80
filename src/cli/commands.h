// Subcommands of the qeval CLI. Each returns the process exit code (0 ok, 1 gate failed,
// 2 could not run) and throws Error for run-ending problems.
#pragma once

namespace CLI {
class App;
}

namespace qeval {

int cli_main(int argc, char** argv);

// Adds `generate`, `bench` and `convert` (src/cli/engine_commands.cpp); they set `rc`.
void register_engine_commands(CLI::App& app, int& rc);

}  // namespace qeval
