// The one place that names concrete backends.
#include "backends/backend.h"
#include "backends/engine_backend.h"
#include "backends/openai.h"
#include "core/error.h"
#include "data/fetch.h"

namespace qeval {

namespace {

// `model: stories260K` (a name `qeval fetch` knows, not an existing path) means the fetched file.
nlohmann::json resolve_model_name(nlohmann::json variant) {
  if (!variant.contains("model") || !variant["model"].is_string()) return variant;
  std::string m = variant["model"].get<std::string>();
  std::error_code ec;
  if (m.empty() || m.find('/') != std::string::npos || m.rfind("random:", 0) == 0 ||
      std::filesystem::exists(m, ec))
    return variant;
  for (const auto& name : fetch_names(builtin_manifest()))
    if (name == m && name != "gsm8k" && name != "mmlu") variant["model"] = model_file(name).string();
  return variant;
}

}  // namespace

std::unique_ptr<Backend> make_backend(const nlohmann::json& variant, const std::string& where) {
  std::string kind = variant.value("backend", "");
  if (kind == "openai") return make_openai_backend(variant, where);
  if (kind == "engine") return make_engine_backend(resolve_model_name(variant), where);
  fail("{}: backend: unknown backend '{}' (hint: use 'openai' or 'engine')", where, kind);
}

}  // namespace qeval
