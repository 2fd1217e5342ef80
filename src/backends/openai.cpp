// The openai backend: validates a variant's config, then turns GenRequest / LoglikRequest
// batches into HTTP attempts (openai_http.h) with bodies from openai_json.h, deciding per
// attempt whether the answer is final, retryable or a run-ending error.
#include "backends/openai.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>

#include "backends/openai_http.h"
#include "backends/openai_json.h"
#include "core/error.h"

namespace qeval {

using nlohmann::json;

OpenAIConfig parse_openai_config(const json& variant, const std::string& where) {
  if (!variant.is_object()) fail("{}: a variant must be a mapping of keys", where);
  static const std::set<std::string> kKnown = {
      "name",        "backend",    "model",      "base_url",   "concurrency",
      "api_key_env", "timeout_s",  "max_retries", "outage_wait_s", "extra_body", "chat_template_kwargs"};
  OpenAIConfig c;
  if (variant.contains("temperature")) fail("{}: {}", where, kTemperatureIsTheTasks);
  for (auto it = variant.begin(); it != variant.end(); ++it) {
    if (!kKnown.count(it.key())) {
      fail("{}: unknown key '{}' for backend openai (hint: known keys are name, backend, model, "
           "base_url, concurrency, api_key_env, timeout_s, max_retries, outage_wait_s, extra_body, "
           "chat_template_kwargs; a sampling task sends each request a seed of its own)",
           where, it.key());
    }
  }
  auto model = variant.find("model");
  if (model == variant.end() || !model->is_string() || model->get<std::string>().empty()) {
    fail("{}: model: required, a non-empty string (the served model name)", where);
  }
  c.model = model->get<std::string>();

  auto add_url = [&](const json& u) {
    if (!u.is_string() || u.get<std::string>().empty()) {
      fail("{}: base_url: expected a URL string or a list of them (e.g. "
           "\"http://127.0.0.1:8000/v1\")", where);
    }
    std::string s = u.get<std::string>();
    if (s.find("://") == std::string::npos) {
      fail("{}: base_url: '{}' is not a URL (hint: \"http://host:port/v1\")", where, s);
    }
    while (!s.empty() && s.back() == '/') s.pop_back();
    c.base_urls.push_back(std::move(s));
  };
  auto base = variant.find("base_url");
  if (base == variant.end()) fail("{}: base_url: required (e.g. \"http://127.0.0.1:8000/v1\")", where);
  if (base->is_array()) {
    for (const json& u : *base) add_url(u);
    if (c.base_urls.empty()) fail("{}: base_url: the list of replicas is empty", where);
  } else {
    add_url(*base);
  }

  auto number = [&](const char* key, double lo, double hi, double& out) {
    auto it = variant.find(key);
    if (it == variant.end()) return;
    if (!it->is_number() || it->get<double>() < lo || it->get<double>() > hi) {
      fail("{}: {}: expected a number in [{}, {}]", where, key, lo, hi);
    }
    out = it->get<double>();
  };
  auto integer = [&](const char* key, int lo, int hi, int& out) {
    auto it = variant.find(key);
    if (it == variant.end()) return;
    if (!it->is_number_integer() || it->get<int64_t>() < lo || it->get<int64_t>() > hi) {
      fail("{}: {}: expected an integer in [{}, {}]", where, key, lo, hi);
    }
    out = it->get<int>();
  };
  integer("concurrency", 1, 4096, c.concurrency);
  integer("max_retries", 0, 100, c.max_retries);
  number("timeout_s", 0.001, 86400, c.timeout_s);
  number("outage_wait_s", 0, 86400, c.outage_wait_s);
  if (auto it = variant.find("api_key_env"); it != variant.end()) {
    if (!it->is_string()) fail("{}: api_key_env: expected the name of an environment variable", where);
    c.api_key_env = it->get<std::string>();
  }
  for (const char* key : {"extra_body", "chat_template_kwargs"}) {
    auto it = variant.find(key);
    if (it == variant.end() || it->is_null()) continue;
    if (!it->is_object()) fail("{}: {}: expected a mapping (JSON object)", where, key);
    (key == std::string("extra_body") ? c.extra_body : c.chat_template_kwargs) = *it;
  }
  return c;
}

namespace {

bool contains_icase(std::string_view hay, std::string_view needle) {
  auto it = std::search(hay.begin(), hay.end(), needle.begin(), needle.end(), [](char a, char b) {
    return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
  });
  return it != hay.end();
}

class OpenAIBackend final : public Backend {
 public:
  OpenAIBackend(OpenAIConfig config, std::string where)
      : config_(std::move(config)), where_(std::move(where)), client_(client_options()) {
    extras_.extra_body = config_.extra_body;
    extras_.chat_template_kwargs = config_.chat_template_kwargs;
  }

  void check_ready() override {
    const auto& urls = client_.options().base_urls;
    std::vector<size_t> reachable, unreachable;
    std::vector<std::string> problems;
    for (size_t i = 0; i < urls.size(); ++i) {
      openai::HttpResult r = client_.get(i, "/models", std::min(config_.timeout_s, 10.0));
      if (r.curl_code != 0) {
        problems.push_back(fmt::format("{}: {}", r.url, scrub(r.curl_error)));
        unreachable.push_back(i);
        continue;
      }
      if (r.status == 401 || r.status == 403) {
        fail("{}: {} answered HTTP {} ({}) (hint: {})", where_, r.url, r.status,
             scrub(openai::error_message(r.body)), key_hint());
      }
      reachable.push_back(i);
      if (r.status == 404)
        fmt::print(stderr, "warning: {}: {} answered HTTP 404; some servers lack /models, but if every request "
                   "fails, check base_url (it usually ends in /v1)\n", where_, r.url);
      if (r.status < 200 || r.status >= 300) continue;  // some servers lack /models
      json j = json::parse(r.body, nullptr, false);
      if (!j.is_object() || !j.contains("data") || !j["data"].is_array()) continue;
      std::vector<std::string> ids;
      for (const json& m : j["data"]) {
        if (m.is_object() && m.contains("id") && m["id"].is_string()) ids.push_back(m["id"]);
      }
      if (!ids.empty() && std::find(ids.begin(), ids.end(), config_.model) == ids.end()) {
        fmt::print(stderr, "warning: {}: {} serves [{}], not model '{}'\n", where_, r.url,
                   fmt::join(ids, ", "), config_.model);
      }
    }
    if (reachable.empty()) {
      fail("{}: cannot reach the server: {} (hint: is it running? check base_url)", where_,
           fmt::join(problems, "; "));
    }
    // A replica down at start-up may come back in a run of hours: it is benched, not dropped,
    // and tried again after 30 s (then after each failure, 30 s later).
    if (!problems.empty()) {
      fmt::print(stderr, "warning: {}: replicas not answering now, benched (tried again in 30 s): {}\n", where_,
                 fmt::join(problems, "; "));
      for (size_t i : unreachable) client_.bench_replica(i, std::chrono::seconds(30));
    }
  }

  void generate(std::span<const GenRequest> requests,
                const std::function<void(size_t, GenResult&&)>& on_done) override {
    client_.run(
        requests.size(),
        [&](size_t i, std::string& path, std::string& body) {
          const GenRequest& q = requests[i];
          path = q.chat ? "/chat/completions" : "/completions";
          body = (q.chat ? openai::chat_body(q, config_.model, extras_)
                         : openai::completion_body(q, config_.model, extras_))
                     .dump(-1, ' ', false, json::error_handler_t::replace);
        },
        [&](size_t i, openai::HttpResult&& r, int attempt, bool last) {
          GenResult res;
          res.latency_s = r.latency_s;
          Failure f = classify(r);
          if (f.message.empty()) {
            openai::ParseError pe = openai::parse_gen_response(r.body, requests[i].chat, res);
            f = {pe.message, pe.retry};
          }
          if (!f.message.empty()) {
            if (f.retry && !last) return openai::Verdict::kRetry;
            res = GenResult{};
            res.latency_s = r.latency_s;
            res.error = final_error(f, r, attempt);
          }
          note_served(r.url, res.served_model);
          on_done(i, std::move(res));
          return openai::Verdict::kDone;
        });
  }

  void loglikelihood(std::span<const LoglikRequest> requests,
                     const std::function<void(size_t, LoglikResult&&)>& on_done) override {
    client_.run(
        requests.size(),
        [&](size_t i, std::string& path, std::string& body) {
          path = "/completions";
          body = openai::loglik_body(requests[i], config_.model, extras_)
                     .dump(-1, ' ', false, json::error_handler_t::replace);
        },
        [&](size_t i, openai::HttpResult&& r, int attempt, bool last) {
          LoglikResult res;
          res.latency_s = r.latency_s;
          Failure f = classify(r);
          if (!f.message.empty() && !f.retry && r.status >= 400) {
            const std::string msg = openai::error_message(r.body);
            const bool too_long = contains_icase(msg, "context") || contains_icase(msg, "too long");
            if (!too_long && (contains_icase(msg, "echo") || contains_icase(msg, "logprob"))) {
              fail("{}: the server at {} rejects loglikelihood requests (echo + logprobs): HTTP "
                   "{}: {} (hint: use the task mmlu_generative, which generates one token, "
                   "instead of mmlu)",
                   where_, r.url, r.status, scrub(msg));
            }
          }
          if (f.message.empty()) {
            openai::ParseError pe = openai::parse_loglik_response(r.body, requests[i], res);
            f = {pe.message, pe.retry};
          }
          if (!f.message.empty()) {
            if (f.retry && !last) return openai::Verdict::kRetry;
            res = LoglikResult{};
            res.latency_s = r.latency_s;
            res.error = final_error(f, r, attempt);
          }
          note_served(r.url, res.served_model);
          on_done(i, std::move(res));
          return openai::Verdict::kDone;
        });
  }

  BackendInfo info() const override {
    BackendInfo b;
    b.backend = "openai";
    b.model = config_.model;
    b.details = {{"base_urls", client_.options().base_urls},
                 {"concurrency", config_.concurrency},
                 {"timeout_s", config_.timeout_s},
                 {"max_retries", config_.max_retries}};
    if (config_.extra_body.is_object()) b.details["extra_body"] = config_.extra_body;
    if (config_.chat_template_kwargs.is_object()) {
      b.details["chat_template_kwargs"] = config_.chat_template_kwargs;
    }
    std::lock_guard lock(served_mu_);
    if (!served_.empty()) b.details["served_models"] = served_;
    return b;
  }

 private:
  struct Failure {
    std::string message;  // empty = the transfer gave a 2xx answer worth parsing
    bool retry = false;
  };

  openai::HttpClientOptions client_options() {
    openai::HttpClientOptions o;
    o.base_urls = config_.base_urls;
    if (!config_.api_key_env.empty()) {
      const char* key = std::getenv(config_.api_key_env.c_str());
      if (key) o.api_key = key;
    }
    api_key_ = o.api_key;
    o.concurrency = config_.concurrency;
    o.timeout_s = config_.timeout_s;
    o.max_retries = config_.max_retries;
    o.outage_wait_s = config_.outage_wait_s;
    o.name = where_;
    o.backoff_base_s = config_.backoff_base_s;
    o.backoff_max_s = config_.backoff_max_s;
    return o;
  }

  // Transport and status classification: connection errors, timeouts, 408, 429 and 5xx are
  // retryable; other non-2xx statuses are final.
  Failure classify(const openai::HttpResult& r) const {
    if (r.curl_code == 28) {  // CURLE_OPERATION_TIMEDOUT
      return {fmt::format("timed out after {} s", config_.timeout_s), true};
    }
    if (r.curl_code == 63) return {r.curl_error, false};  // CURLE_FILESIZE_EXCEEDED: our reply cap; final
    if (r.curl_code != 0) return {fmt::format("connection error: {}", r.curl_error), true};
    if (r.status >= 200 && r.status < 300) return {};
    const bool retry = r.status == 408 || r.status == 429 || r.status >= 500;
    return {fmt::format("HTTP {}: {}", r.status, openai::error_message(r.body)), retry};
  }

  std::string final_error(const Failure& f, const openai::HttpResult& r, int attempt) const {
    std::string msg = fmt::format("POST {}: {}", r.url, f.message);
    if (f.retry) msg += fmt::format(" (gave up after {} attempts)", attempt + 1);
    return scrub(msg);
  }

  // Removes the API key from any text that may reach a log or a results file.
  std::string scrub(std::string s) const {
    if (api_key_.size() < 4) return s;
    for (size_t p = s.find(api_key_); p != std::string::npos; p = s.find(api_key_, p)) {
      s.replace(p, api_key_.size(), "***");
    }
    return s;
  }

  // Records which model a replica said answered (`url`: the request's full address); warns once
  // when the replies behind one variant name more than one model.
  void note_served(const std::string& url, const std::string& model) {
    if (model.empty()) return;
    std::string base = url;
    for (const std::string& b : config_.base_urls) {  // b + "/completions": not a mere prefix
      if (url.size() > b.size() && url.compare(0, b.size(), b) == 0 && url[b.size()] == '/') {
        base = b;
        break;
      }
    }
    std::lock_guard lock(served_mu_);
    auto& names = served_[base];
    if (!names.insert(model).second) return;
    std::set<std::string> all;
    for (const auto& [u, n] : served_) all.insert(n.begin(), n.end());
    if (all.size() > 1 && !warned_mixed_) {
      warned_mixed_ = true;
      std::vector<std::string> parts;
      for (const auto& [u, n] : served_) parts.push_back(fmt::format("{} -> {}", u, fmt::join(n, " | ")));
      fmt::print(stderr, "warning: {}: replies name more than one model ({}): the replicas may not serve the same "
                 "model (hint: results.json lists them under details.served_models)\n",
                 where_, fmt::join(parts, "; "));
    }
  }

  std::string key_hint() const {
    if (config_.api_key_env.empty()) return "the server wants an API key: set api_key_env";
    if (api_key_.empty()) {
      return fmt::format("environment variable {} (api_key_env) is not set", config_.api_key_env);
    }
    return fmt::format("check the key in environment variable {}", config_.api_key_env);
  }

  OpenAIConfig config_;
  std::string where_;
  std::string api_key_;
  openai::HttpClient client_;
  openai::BodyExtras extras_;
  mutable std::mutex served_mu_;
  std::map<std::string, std::set<std::string>> served_;  // base url -> model names replies carried
  bool warned_mixed_ = false;
};

}  // namespace

std::unique_ptr<Backend> make_openai_backend(const OpenAIConfig& config, const std::string& where) {
  OpenAIConfig c = config;
  for (std::string& u : c.base_urls) {
    while (!u.empty() && u.back() == '/') u.pop_back();
  }
  return std::make_unique<OpenAIBackend>(std::move(c), where);
}

std::unique_ptr<Backend> make_openai_backend(const json& variant, const std::string& where) {
  return make_openai_backend(parse_openai_config(variant, where), where);
}

}  // namespace qeval
