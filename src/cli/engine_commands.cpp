// Engine subcommands: generate, bench, convert. Wired as the engine lands.
#include <CLI/CLI.hpp>

#include "cli/commands.h"

namespace qeval {

void register_engine_commands(CLI::App& app, int& rc) { (void)app; (void)rc; }

}  // namespace qeval
