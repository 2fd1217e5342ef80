// Error type for problems that end an operation (bad config, data, checkpoint, unreachable
// server). Its message names the file and field or line and gives a hint; main() catches it
// and exits with code 2. Failures of a single request are not errors: they are recorded on
// the sample (see backends/backend.h).
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace qeval {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Throws Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace qeval
