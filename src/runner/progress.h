// Progress reporting on stderr: a single updating line on a terminal (done/total, rate, ETA,
// errors), plain periodic lines otherwise (CI logs).
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

namespace qeval {

class Progress {
 public:
  // `label` prefixes every line; `total` is the number of samples to do in this phase.
  Progress(std::string label, size_t total, FILE* out = stderr);
  // Records one finished sample (with or without error) and maybe prints.
  void tick(bool error);
  // Prints the final line.
  void finish();

 private:
  void print(bool final);

  std::string label_;
  size_t total_, done_ = 0, errors_ = 0;
  FILE* out_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace qeval
