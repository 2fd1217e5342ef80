// The `openai` backend: OpenAI-compatible /v1/completions and /v1/chat/completions endpoints
// (SGLang, vLLM, llama.cpp server), driven concurrently with libcurl multi.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/backend.h"

namespace qeval {

// A variant's settings for the openai backend. Variant keys (anything else is an Error):
//   name, backend          owned by the runner (accepted, ignored here)
//   temperature, seed      owned by the runner (accepted, ignored here: GenRequest carries them)
//   model                  required; sent as "model"
//   base_url               required; a URL ("http://host:8000/v1") or a list of replica URLs
//                          of one model; requests go to base_url + "/completions" etc.
//   concurrency            requests in flight over all replicas (default 8)
//   api_key_env            name of the environment variable holding the API key (Bearer)
//   timeout_s              per attempt (default 300)
//   max_retries            retries after the first attempt (default 5)
//   outage_wait_s          how long to wait for a server that stopped answering, one probe at a
//                          time, before failed attempts count again (default 600; 0 = never)
//   extra_body             JSON object merged into every request body (request fields win)
//   chat_template_kwargs   JSON object sent as chat_template_kwargs on chat requests
struct OpenAIConfig {
  std::string model;
  std::vector<std::string> base_urls;  // without trailing '/'
  int concurrency = 8;
  std::string api_key_env;             // empty = no key
  double timeout_s = 300.0;
  int max_retries = 5;
  double outage_wait_s = 600.0;
  nlohmann::json extra_body;           // object or null
  nlohmann::json chat_template_kwargs; // object or null
  // Not YAML keys: backoff of retry k is uniform(0, min(backoff_max_s, backoff_base_s * 2^k)).
  double backoff_base_s = 0.5;
  double backoff_max_s = 30.0;
};

// Reads and validates a variant; throws Error naming `where` and the key on unknown keys,
// wrong types or out-of-range values.
OpenAIConfig parse_openai_config(const nlohmann::json& variant, const std::string& where);

// The backend for a validated config. The API key is read from the environment here; it is
// never logged nor put in any message. `where` names the variant in error messages.
std::unique_ptr<Backend> make_openai_backend(const OpenAIConfig& config, const std::string& where);

// parse_openai_config + the above.
std::unique_ptr<Backend> make_openai_backend(const nlohmann::json& variant, const std::string& where);

}  // namespace qeval
