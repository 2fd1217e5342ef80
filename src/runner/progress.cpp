#include "runner/progress.h"

#include <unistd.h>

#include <fmt/format.h>

namespace qeval {

Progress::Progress(std::string label, size_t total, FILE* out)
    : label_(std::move(label)), total_(total), out_(out), tty_(isatty(fileno(out)) != 0) {
  start_ = last_ = std::chrono::steady_clock::now();
}

void Progress::tick(bool error) {
  ++done_;
  errors_ += error;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_).count();
  if (since >= (tty_ ? 0.25 : 10.0)) {
    last_ = now;
    print(false);
  }
}

void Progress::finish() { print(true); }

void Progress::print(bool final) {
  double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = el > 0 ? static_cast<double>(done_) / el : 0.0;
  double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : 0.0;
  std::string line = fmt::format("{}: {}/{} samples, {:.1f}/s, ETA {:.0f}s, {} errors", label_, done_,
                                 total_, rate, eta, errors_);
  if (final) line = fmt::format("{}: {}/{} samples in {:.1f}s ({:.1f}/s), {} errors", label_, done_, total_, el, rate, errors_);
  if (tty_)
    fmt::print(out_, "\r\033[K{}{}", line, final ? "\n" : "");
  else
    fmt::print(out_, "{}\n", line);
  std::fflush(out_);
}

}  // namespace qeval
