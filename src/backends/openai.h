// The `openai` backend: OpenAI-compatible /v1/completions and /v1/chat/completions endpoints
// (SGLang, vLLM, llama.cpp server), driven concurrently with libcurl multi.
#pragma once

#include <memory>
#include <string>

#include "backends/backend.h"

namespace qeval {

std::unique_ptr<Backend> make_openai_backend(const nlohmann::json& variant, const std::string& where);

}  // namespace qeval
