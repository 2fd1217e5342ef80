// The `engine` backend: runs a model in-process on the embedded CPU engine (engine/engine.h).
// Chat requests are rendered with the model's chat format (engine/chat_format.h), completion
// prompts are encoded with the tokenizer's own BOS rules; loglikelihood uses the engine's
// shared-context scoring with lm-eval's tokenisation.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "engine/engine.h"

namespace qeval {

// A variant's settings for the engine backend. Variant keys (anything else is an Error):
//   name, backend, temperature   owned by the runner (accepted, ignored here)
//   model          required: HF model directory, .gguf file, or random:<shape>
//   dtype          bf16 | f32 (default: the checkpoint's precision)
//   quantization   none | fp8-block | int8-block | int8-channel (default: the checkpoint's own)
//   threads        worker threads (default: all cores)
//   chat_format    chatml | chatml-plain | llama3 | llama3.1 | deepseek-r1 (default: detected
//                  from the tokenizer's chat_template)
//   max_batch      sequences decoded together (default 16)
//   kv_cache_mb    KV cache budget in MiB (default: enough for max_batch contexts, <= 2048)
//   seed           base seed of requests that carry none (default 0)
struct EngineBackendConfig {
  EngineOptions engine;
  std::string chat_format;   // "" = detect
  uint64_t seed = 0;
};

// Reads and validates a variant; throws Error naming `where` and the key.
EngineBackendConfig parse_engine_config(const nlohmann::json& variant, const std::string& where);

// The backend for a validated config. The model is loaded by check_ready() (or the first
// request); `where` names the variant in error messages.
std::unique_ptr<Backend> make_engine_backend(const EngineBackendConfig& config, const std::string& where);

// parse_engine_config + the above.
std::unique_ptr<Backend> make_engine_backend(const nlohmann::json& variant, const std::string& where);

// The engine behind an engine backend, loading it if needed (fidelity: next-token log-prob
// distributions via Engine::next_token_logprobs); nullptr when `b` is not an engine backend.
// The Engine is owned by the backend.
Engine* engine_of(Backend& b);

}  // namespace qeval
