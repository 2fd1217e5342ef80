// qeval command-line entry point: dispatches to one subcommand per file in src/cli/.
#include <cstdio>
#include <exception>
#include <string>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  try {
    return qeval::cli_main(argc, argv);
  } catch (const qeval::Error& e) {
    std::fprintf(stderr, "qeval: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qeval: internal error: %s\n", e.what());
    return 2;
  }
}
