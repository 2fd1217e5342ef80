// Subcommands of the qeval CLI. Each returns the process exit code (0 ok, 1 gate failed,
// 2 could not run) and throws Error for run-ending problems.
#pragma once

namespace qeval {

int cli_main(int argc, char** argv);

}  // namespace qeval
