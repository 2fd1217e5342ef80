// The one interface every model backend implements (remote OpenAI-compatible endpoints, the
// embedded engine): batched generation and loglikelihood, with per-request results delivered
// through a callback as each request finishes. Only factory.cpp names concrete classes.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace qeval {

// The error for a variant that sets `temperature` (either backend): sampling belongs to the task.
inline constexpr const char* kTemperatureIsTheTasks =
    "temperature: sampling is set by the task (generation: {temperature: T} in its YAML), not by a variant "
    "(hint: remove it, or run a task file that samples)";

struct ChatMessage {
  std::string role;     // "system" | "user" | "assistant"
  std::string content;
};

// One generation request. Exactly one of `prompt` (completion) or `messages` (chat) is used,
// chosen by `chat`.
struct GenRequest {
  bool chat = false;
  std::string prompt;
  std::vector<ChatMessage> messages;
  std::vector<std::string> stop;   // stop strings; the output excludes the stop string
  int max_tokens = 256;
  double temperature = 0.0;        // 0 = greedy
  double top_p = 1.0;
  int top_k = 0;                   // 0 = off
  std::optional<uint64_t> seed;
};

struct GenResult {
  std::string text;                // completion text (for chat: the content, reasoning excluded
                                   // when the server separates it)
  std::string reasoning;           // separate reasoning field (reasoning_content / reasoning)
  std::string finish_reason;       // "stop" | "length" | ... ("" when unknown)
  int n_tokens_prompt = 0;
  int n_tokens_gen = 0;
  bool prompt_truncated = false;   // the engine left-truncated the prompt to fit the context
  double latency_s = 0.0;
  std::string served_model;        // the reply's `model` field (remote servers); "" when absent
  std::string error;               // empty on success; otherwise why the request failed for good
};

// Log-likelihood of each continuation given one shared context (MMLU: four choices).
struct LoglikRequest {
  std::string context;
  std::vector<std::string> continuations;
};

struct LoglikResult {
  std::vector<double> logprob;     // sum of token logprobs of each continuation
  std::vector<bool> is_greedy;     // every continuation token was the argmax
  int n_tokens_prompt = 0;
  bool prompt_truncated = false;
  double latency_s = 0.0;
  std::string served_model;        // the reply's `model` field (remote servers); "" when absent
  std::string error;
};

// Static description recorded in results.json.
struct BackendInfo {
  std::string backend;             // "openai" | "engine"
  std::string model;               // model name or path
  nlohmann::json details;          // fingerprint, dtype, quantization, base_urls, ...
};

class Backend {
 public:
  virtual ~Backend() = default;

  // Throws Error (exit 2) when the backend cannot work at all (server unreachable, model
  // missing). Called once before a run.
  virtual void check_ready() = 0;

  // Runs every request; calls on_done(index, result) exactly once per request, always on the
  // calling thread, in completion order. Per-request failures go into result.error.
  virtual void generate(std::span<const GenRequest> requests,
                        const std::function<void(size_t, GenResult&&)>& on_done) = 0;
  virtual void loglikelihood(std::span<const LoglikRequest> requests,
                             const std::function<void(size_t, LoglikResult&&)>& on_done) = 0;

  virtual BackendInfo info() const = 0;
};

// Creates the backend a variant config names (`backend: openai | engine`). `variant` is the
// variant's YAML node converted to JSON; `where` names it in error messages (e.g.
// "run.yaml: variants[1]"). Throws Error on unknown or invalid keys.
std::unique_ptr<Backend> make_backend(const nlohmann::json& variant, const std::string& where);

}  // namespace qeval
