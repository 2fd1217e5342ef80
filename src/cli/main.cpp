// qeval command-line entry point: dispatches to one subcommand per file in src/cli/.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>

#include "cli/commands.h"
#include "core/error.h"

namespace {

// prompts, generate and bench print their results to stdout: a write that failed (a full disk, a
// closed pipe or descriptor) must not end with exit 0, or a script takes a cut file for the output.
// The C stream's buffer is flushed here, so this is where a deferred write error shows (std::cout
// writes through it, and keeps its own error state). Returns "" when everything printed to
// stdout was written, else why not.
std::string stdout_failure() {
  errno = 0;
  if (std::fflush(stdout) != 0) return errno ? std::strerror(errno) : "the flush failed";
  if (std::ferror(stdout) || !std::cout.flush()) return "an earlier write failed";
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int rc = qeval::cli_main(argc, argv);
    if (const std::string why = stdout_failure(); !why.empty()) {
      std::fprintf(stderr, "qeval: error: stdout: not all output was written: %s (hint: is the disk full, or "
                   "the output closed?)\n", why.c_str());
      return 2;
    }
    return rc;
  } catch (const qeval::Error& e) {
    std::fprintf(stderr, "qeval: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qeval: internal error: %s\n", e.what());
    return 2;
  }
}
