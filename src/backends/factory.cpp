// The one place that names concrete backends.
#include "backends/backend.h"
#include "backends/engine_backend.h"
#include "backends/openai.h"
#include "core/error.h"
#include "data/fetch.h"

namespace qeval {

namespace {

nlohmann::json resolve_model(nlohmann::json variant) {
  if (variant.contains("model") && variant["model"].is_string())
    variant["model"] = resolve_model_name(variant["model"].get<std::string>());
  return variant;
}

}  // namespace

std::unique_ptr<Backend> make_backend(const nlohmann::json& variant, const std::string& where) {
  std::string kind = variant.value("backend", "");
  if (kind == "openai") return make_openai_backend(variant, where);
  if (kind == "engine") return make_engine_backend(resolve_model(variant), where);
  fail("{}: backend: unknown backend '{}' (hint: use 'openai' or 'engine')", where, kind);
}

}  // namespace qeval
