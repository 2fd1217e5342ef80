#include "backends/backend.h"
#include "backends/openai.h"
#include "core/error.h"

namespace qeval {

std::unique_ptr<Backend> make_backend(const nlohmann::json& variant, const std::string& where) {
  std::string kind = variant.value("backend", "");
  if (kind == "openai") return make_openai_backend(variant, where);
  fail("{}: backend: unknown backend '{}' (hint: use 'openai' or 'engine')", where, kind);
}

}  // namespace qeval
