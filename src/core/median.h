// The median of timing samples, for the benchmarks.
#pragma once

#include <algorithm>
#include <vector>

namespace qeval {

// The middle value of `v`, or the mean of its two middle values when the count is even (the
// upper one alone would be a best-of-two with --repeat 2); 0 when empty.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  const size_t h = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(h), v.end());
  if (v.size() % 2) return v[h];
  const double upper = v[h];
  return 0.5 * (*std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(h)) + upper);
}

}  // namespace qeval
