#include <CLI/CLI.hpp>

#include "cli/commands.h"

namespace qeval {

int cli_main(int argc, char** argv) {
  CLI::App app{"qeval: is the quantized model still as accurate as the original?"};
  app.require_subcommand(1);
  CLI11_PARSE(app, argc, argv);
  return 0;
}

}  // namespace qeval
