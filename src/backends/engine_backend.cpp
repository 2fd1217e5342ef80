// Engine backend: variant parsing, chat rendering, request translation to the engine.
#include "backends/engine_backend.h"

#include <chrono>
#include <limits>
#include <set>

#include "core/error.h"
#include "engine/chat_format.h"

namespace qeval {

namespace {

const char* const kEngineKeys[] = {"name",      "backend",     "model",       "dtype",
                                   "quantization", "threads",  "chat_format", "max_batch",
                                   "kv_cache_mb",  "seed"};

int64_t get_int(const nlohmann::json& v, const char* key, const std::string& where, int64_t lo,
                int64_t hi = std::numeric_limits<int64_t>::max(), const char* hint = "") {
  const auto& x = v.at(key);
  if (!x.is_number_integer()) fail("{}: {}: expected an integer, got {}", where, key, x.dump());
  if (x.is_number_unsigned() && x.get<uint64_t>() > static_cast<uint64_t>(hi))
    fail("{}: {}: must be at most {}, got {}{}", where, key, hi, x.dump(), hint);
  int64_t i = x.get<int64_t>();
  if (i < lo) fail("{}: {}: must be >= {}, got {}", where, key, lo, i);
  if (i > hi) fail("{}: {}: must be at most {}, got {}{}", where, key, hi, i, hint);
  return i;
}

std::string get_str(const nlohmann::json& v, const char* key, const std::string& where) {
  const auto& x = v.at(key);
  if (!x.is_string()) fail("{}: {}: expected a string, got {}", where, key, x.dump());
  return x.get<std::string>();
}

uint64_t mix_seed(uint64_t base, uint64_t index) {
  uint64_t z = base + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class EngineBackend : public Backend {
 public:
  EngineBackend(EngineBackendConfig cfg, std::string where) : cfg_(std::move(cfg)), where_(std::move(where)) {
    if (!cfg_.chat_format.empty()) format_ = chat_format_by_name(cfg_.chat_format);
  }

  void check_ready() override { ensure_loaded(); }

  void generate(std::span<const GenRequest> requests,
                const std::function<void(size_t, GenResult&&)>& on_done) override {
    ensure_loaded();
    const auto t0 = std::chrono::steady_clock::now();
    const Tokenizer& tk = *engine_->tokenizer();
    std::vector<GenerationRequest> reqs(requests.size());
    std::set<size_t> opened_think;
    for (size_t i = 0; i < requests.size(); ++i) {
      const GenRequest& r = requests[i];
      GenerationRequest& g = reqs[i];
      if (r.chat) {
        if (!format_)
          fail("{}: chat_format: the model's chat template is not one qeval knows (hint: set "
               "chat_format: chatml, llama3 or deepseek-r1 in the variant, or use a completion task)",
               where_);
        std::vector<ChatTurn> turns;
        for (const auto& m : r.messages) turns.push_back({m.role, m.content});
        std::string prompt = render_chat(*format_, turns, true);
        // A template that opens the reasoning itself (DeepSeek-R1: "...<｜Assistant｜><think>\n")
        // leaves the output without its opening tag; it is put back on the returned text so
        // the reasoning is recognised (and an unclosed one counted as truncated).
        if (prompt.size() >= 8 && prompt.compare(prompt.size() - 8, 8, "<think>\n") == 0)
          opened_think.insert(i);
        g.prompt = tk.encode(prompt, false, true);
      } else {
        g.prompt = tk.encode(r.prompt, true, true);
      }
      g.max_tokens = r.max_tokens;
      g.stop = r.stop;
      g.sampling.temperature = r.temperature;
      g.sampling.top_p = r.top_p;
      g.sampling.top_k = r.top_k;
      // The variant's seed mixed with the request's (the task sets one per doc when it samples),
      // else with the request's place in this call.
      g.sampling.seed = mix_seed(cfg_.seed, r.seed ? *r.seed : i);
    }
    engine_->generate(reqs, [&](size_t i, GenerationOutput&& o) {
      GenResult res;
      res.text = opened_think.count(i) ? "<think>\n" + o.text : std::move(o.text);
      res.finish_reason = std::move(o.finish_reason);
      res.n_tokens_prompt = o.n_tokens_prompt;
      res.n_tokens_gen = static_cast<int>(o.tokens.size());
      res.prompt_truncated = o.prompt_truncated;
      res.error = std::move(o.error);
      res.latency_s = seconds_since(t0);
      on_done(i, std::move(res));
    });
  }

  void loglikelihood(std::span<const LoglikRequest> requests,
                     const std::function<void(size_t, LoglikResult&&)>& on_done) override {
    ensure_loaded();
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<ScoreRequest> reqs;
    reqs.reserve(requests.size());
    for (const auto& r : requests) reqs.push_back(engine_->make_score_request(r.context, r.continuations));
    engine_->score(reqs, [&](size_t i, ScoreOutput&& o) {
      LoglikResult res;
      res.logprob = std::move(o.logprob);
      res.is_greedy = std::move(o.is_greedy);
      res.n_tokens_prompt = o.n_tokens_prompt;
      res.prompt_truncated = o.prompt_truncated;
      res.error = std::move(o.error);
      res.latency_s = seconds_since(t0);
      on_done(i, std::move(res));
    });
  }

  BackendInfo info() const override {
    BackendInfo bi;
    bi.backend = "engine";
    bi.model = cfg_.engine.model;
    nlohmann::json d;
    if (engine_) {
      d["fingerprint"] = engine_->fingerprint();
      d["dtype"] = compute_type_name(engine_->dtype());
      d["quantization"] = quant_scheme_name(engine_->quantization());
      d["threads"] = engine_->threads();
      d["context_length"] = engine_->context_length();
      d["weight_bytes_per_token"] = engine_->model().weight_bytes_per_step();
      d["arch"] = engine_->config().arch;
    } else {
      if (cfg_.engine.dtype) d["dtype"] = compute_type_name(*cfg_.engine.dtype);
      if (cfg_.engine.quantization) d["quantization"] = quant_scheme_name(*cfg_.engine.quantization);
    }
    d["chat_format"] = format_ ? format_->name() : "";
    d["max_batch"] = cfg_.engine.max_batch;
    d["seed"] = cfg_.seed;
    bi.details = d;
    return bi;
  }

  Engine* engine() {
    ensure_loaded();
    return engine_.get();
  }

 private:
  static double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  void ensure_loaded() {
    if (engine_) return;
    try {
      engine_ = Engine::load(cfg_.engine);
    } catch (const Error& e) {
      fail("{}: model: {}", where_, e.what());
    }
    if (!engine_->tokenizer())
      fail("{}: model: '{}' has no tokenizer (random-weight models are for `qeval bench` only)",
           where_, cfg_.engine.model);
    if (!format_) format_ = detect_chat_format(engine_->tokenizer()->chat_template);
  }

  EngineBackendConfig cfg_;
  std::string where_;
  std::optional<ChatFormat> format_;
  std::unique_ptr<Engine> engine_;
};

}  // namespace

EngineBackendConfig parse_engine_config(const nlohmann::json& v, const std::string& where) {
  if (!v.is_object()) fail("{}: expected a mapping of engine settings", where);
  if (v.contains("temperature")) fail("{}: {}", where, kTemperatureIsTheTasks);
  for (auto it = v.begin(); it != v.end(); ++it) {
    bool known = false;
    for (const char* k : kEngineKeys) known = known || it.key() == k;
    if (!known)
      fail("{}: unknown key '{}' for backend engine (hint: model, dtype, quantization, threads, "
           "chat_format, max_batch, kv_cache_mb, seed)", where, it.key());
  }
  EngineBackendConfig c;
  if (!v.contains("model")) fail("{}: model: missing (hint: a HF model directory or a .gguf file)", where);
  c.engine.model = get_str(v, "model", where);
  if (c.engine.model.empty()) fail("{}: model: empty", where);
  if (v.contains("dtype")) c.engine.dtype = parse_compute_type(get_str(v, "dtype", where), where);
  if (v.contains("quantization")) {
    std::string q = get_str(v, "quantization", where);
    if (q == "w8a8_int8") q = "int8-channel";  // SGLang's name
    try {
      c.engine.quantization = parse_quant_scheme(q);
    } catch (const Error& e) {
      fail("{}: quantization: {}", where, e.what());
    }
  }
  if (v.contains("threads"))
    c.engine.threads = static_cast<int>(get_int(v, "threads", where, 0, kMaxEngineThreads, " (hint: 0 uses every core)"));
  if (v.contains("max_batch")) c.engine.max_batch = static_cast<int>(get_int(v, "max_batch", where, 1, kMaxEngineBatch));
  c.engine.max_step_tokens = std::max<int64_t>(512, c.engine.max_batch + 1);
  if (v.contains("kv_cache_mb")) {
    c.engine.kv_cache_mb = get_int(v, "kv_cache_mb", where, 1, int64_t{1} << 40);
    if (const int64_t ram = physical_memory_mib(); ram > 0 && c.engine.kv_cache_mb > ram)
      fail("{}: kv_cache_mb: {} MiB is more than this machine's memory ({} MiB) (hint: leave it out for "
           "max_batch full contexts)", where, c.engine.kv_cache_mb, ram);
  }
  if (v.contains("seed")) {
    c.seed = static_cast<uint64_t>(get_int(v, "seed", where, 0));
    c.engine.seed = c.seed;
  }
  if (v.contains("chat_format")) {
    c.chat_format = get_str(v, "chat_format", where);
    if (!chat_format_by_name(c.chat_format))
      fail("{}: chat_format: unknown format '{}' (hint: chatml, chatml-plain, llama3, llama3.1 or "
           "deepseek-r1)", where, c.chat_format);
  }
  return c;
}

std::unique_ptr<Backend> make_engine_backend(const EngineBackendConfig& config, const std::string& where) {
  return std::make_unique<EngineBackend>(config, where);
}

std::unique_ptr<Backend> make_engine_backend(const nlohmann::json& variant, const std::string& where) {
  return make_engine_backend(parse_engine_config(variant, where), where);
}

Engine* engine_of(Backend& b) {
  auto* e = dynamic_cast<EngineBackend*>(&b);
  return e ? e->engine() : nullptr;
}

}  // namespace qeval
