// FakeOpenAI: a loopback OpenAI-compatible test server (cpp-httplib) for the backend tests,
// the runner's integration tests and the throughput bench. Header-only so that any test or
// bench executable can include it without CMake changes (link PkgConfig::HTTPLIB).
//
// It serves, on 127.0.0.1 and a free port:
//   GET  /v1/models            {"object":"list","data":[{"id": model_name}]}
//   POST /v1/completions       text from `model.complete(prompt)`; with echo + logprobs it
//                              returns per-token logprobs of the prompt (tokenized by
//                              fake_tokenize) from `model.score`, plus one generated token
//   POST /v1/chat/completions  content / reasoning from `model.chat(messages)`
// Answers are a deterministic function of the request. Faults are injected by a schedule
// `fault(key, attempt)`; the key of a request is its prompt (the first one when `prompt` is
// a list) or, for chat, the content of its last message; attempt counts that key's earlier
// requests from 0. Counters let tests assert that nothing was lost or duplicated.
//
// Typical use:
//   qeval::testing::FakeOpenAI server;                       // defaults: instant echo model
//   server.options().fault = FakeOpenAI::fail_first(2, Fault::k503);
//   ... backend with base_url = server.base_url() ...
//   REQUIRE(server.answered("prompt") == 1);
#pragma once

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace qeval::testing {

// One injected fault kind. Each answers one request in place of the model.
enum class Fault {
  kNone,
  kCloseNoReply,       // connection shut down before any byte of the reply
  kCloseMidReply,      // status line and headers sent, then the connection closes
  kDelay,              // answers correctly after options().delay_s (beyond a short timeout)
  k408,
  k429,                // with Retry-After: options().retry_after_s
  k500,
  k502,
  k503,                // with Retry-After: options().retry_after_s
  kGarbage,            // 200 with a body that is not JSON
  kTruncated,          // 200 with the first half of the correct body
  kMissingFields,      // 200 with valid JSON lacking choices
  k400ContextTooLong,  // 400, vLLM's "maximum context length" message
  k400Echo,            // 400, a server that rejects echo + logprobs
};

// What the fake model generates for one request.
struct FakeGen {
  std::string text;
  std::string finish_reason = "stop";
  std::string reasoning;                          // chat only; sent when non-empty
  std::string reasoning_field = "reasoning_content";  // or "reasoning" (vLLM >= 0.11)
};

// Score of one prompt token given the text before it.
struct FakeTokenScore {
  double logprob = -1.0;
  bool greedy = true;  // false: top_logprobs names another token "<alt>" as top-1
};

// The fake tokenizer: a token starts at every ' ' and '\n' and after every '\n'
// ("Answer: A" -> "Answer:", " A"). Multi-byte UTF-8 stays inside tokens.
inline std::vector<std::string> fake_tokenize(std::string_view s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if ((c == ' ' || c == '\n') && !cur.empty()) {
      out.push_back(std::move(cur));
      cur.clear();
    }
    cur.push_back(c);
    if (c == '\n') {
      out.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

inline size_t fake_cp_length(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

inline uint64_t fake_hash(std::string_view s, uint64_t seed = 1469598103934665603ull) {
  uint64_t h = seed;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

using FakeFaultFn = std::function<Fault(const std::string& key, int attempt)>;

// The fake model: deterministic answers as functions of the request.
struct FakeModel {
  // Completion text for a prompt. Default: "echo:" + the last 16 bytes of the prompt.
  std::function<FakeGen(const std::string& prompt)> complete;
  // Chat answer for the messages (a JSON array of {role, content}). Default: "chat:" + the
  // last message's content.
  std::function<FakeGen(const nlohmann::json& messages)> chat;
  // Score of `token` after `prefix` (the prompt text before it). Default: a hash in [-5, 0).
  std::function<FakeTokenScore(std::string_view prefix, std::string_view token)> score;
};

// How echoed tokens carry text_offset: code points (OpenAI, vLLM), -1 (SGLang), or absent.
enum class FakeOffsets { kCodePoints, kMinusOne, kMissing };

struct FakeOptions {
  std::string model_name = "fake-model";
  FakeModel model;
  FakeFaultFn fault;             // null = no faults
  FakeOffsets offsets = FakeOffsets::kCodePoints;
  std::string bos;               // when set, echoed tokens start with this token (offset 0)
  double delay_s = 1.0;          // for Fault::kDelay
  int retry_after_s = 1;         // Retry-After sent with 429 and 503
  std::string api_key;           // when set, requests lacking "Bearer <api_key>" get 401
  int threads = 96;              // server threads: keep >= the client's concurrency
  std::function<bool()> down;    // while it returns true, GET /v1/models answers 503 (a restart)
};

class FakeOpenAI {
 public:
  using FaultFn = FakeFaultFn;
  using Model = FakeModel;
  using Offsets = FakeOffsets;
  using Options = FakeOptions;

  // Starts serving at once; throws std::runtime_error when no port can be bound.
  FakeOpenAI() : FakeOpenAI(Options()) {}
  explicit FakeOpenAI(Options options) : options_(std::move(options)) {
    ::signal(SIGPIPE, SIG_IGN);
    const int threads = options_.threads;
    server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server_.set_keep_alive_max_count(1000000);
    server_.set_tcp_nodelay(true);
    server_.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res)) return;
      if (options_.down && options_.down()) {
        res.status = 503;
        return;
      }
      nlohmann::json j = {{"object", "list"},
                          {"data", {{{"id", options_.model_name}, {"object", "model"}}}}};
      res.set_content(j.dump(), "application/json");
    });
    server_.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      handle(req, res, false);
    });
    server_.Post("/v1/chat/completions",
                 [this](const httplib::Request& req, httplib::Response& res) {
                   handle(req, res, true);
                 });
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) throw std::runtime_error("FakeOpenAI: cannot bind a port on 127.0.0.1");
    // httplib listens with a backlog of 5: a burst of new connections would overflow it and
    // wait for the client's 1 s SYN retransmit. Listening again raises the backlog.
    ::listen(server_.listening_socket(), 4096);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    for (int i = 0; i < 2000 && !server_.is_running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  ~FakeOpenAI() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  FakeOpenAI(const FakeOpenAI&) = delete;
  FakeOpenAI& operator=(const FakeOpenAI&) = delete;

  // Settings; change them only while no request is in flight.
  Options& options() { return options_; }
  int port() const { return port_; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }

  // Requests seen for `key` (every attempt, faulty or not) / correct answers sent for it.
  int requests(const std::string& key) const { return lookup(requests_, key); }
  int answered(const std::string& key) const { return lookup(answered_, key); }
  // Totals over all keys (POST requests only).
  int total_requests() const { return total_requests_.load(); }
  int total_answered() const { return total_answered_.load(); }
  // Most POST requests handled at the same time.
  int max_in_flight() const { return max_in_flight_.load(); }
  // The Authorization header of the latest POST ("" when absent).
  std::string last_authorization() const {
    std::lock_guard<std::mutex> lock(mu_);
    return last_authorization_;
  }
  void reset_counters() {
    std::lock_guard<std::mutex> lock(mu_);
    requests_.clear();
    answered_.clear();
    total_requests_ = 0;
    total_answered_ = 0;
    max_in_flight_ = 0;
  }

  // Schedule: the first k attempts of every key get fault f.
  static FaultFn fail_first(int k, Fault f) {
    return [k, f](const std::string&, int attempt) { return attempt < k ? f : Fault::kNone; };
  }
  // Schedule: each attempt fails with probability p, with a kind drawn from `kinds`; both
  // are a hash of (seed, key, attempt), so a run is reproducible.
  static FaultFn fail_rate(double p, std::vector<Fault> kinds, uint64_t seed = 1) {
    return [p, kinds, seed](const std::string& key, int attempt) {
      uint64_t h = fake_hash(key, fake_hash(std::to_string(attempt), seed));
      h ^= h >> 29;
      h *= 0xbf58476d1ce4e5b9ull;
      h ^= h >> 32;
      double u = static_cast<double>(h >> 11) * 0x1.0p-53;
      if (u >= p || kinds.empty()) return Fault::kNone;
      return kinds[(h >> 3) % kinds.size()];
    };
  }

 private:
  static int lookup(const std::map<std::string, int>& m, const std::string& key) {
    auto it = m.find(key);
    return it == m.end() ? 0 : it->second;
  }

  bool authorized(const httplib::Request& req, httplib::Response& res) {
    if (options_.api_key.empty()) return true;
    if (req.get_header_value("Authorization") == "Bearer " + options_.api_key) return true;
    res.status = 401;
    res.set_content(R"({"error":{"message":"invalid api key","code":401}})", "application/json");
    return false;
  }

  void handle(const httplib::Request& req, httplib::Response& res, bool chat) {
    int now = ++in_flight_;
    for (int m = max_in_flight_.load(); now > m && !max_in_flight_.compare_exchange_weak(m, now);) {
    }
    struct Leave {
      std::atomic<int>& n;
      ~Leave() { --n; }
    } leave{in_flight_};
    ++total_requests_;

    nlohmann::json body = nlohmann::json::parse(req.body, nullptr, false);
    std::string key;
    if (body.is_object()) {
      if (chat && body.contains("messages") && body["messages"].is_array() &&
          !body["messages"].empty()) {
        key = body["messages"].back().value("content", "");
      } else if (!chat && body.contains("prompt")) {
        const auto& p = body["prompt"];
        key = p.is_array() && !p.empty() && p[0].is_string() ? p[0].get<std::string>()
              : p.is_string()                                ? p.get<std::string>()
                                                             : "";
      }
    }
    int attempt = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      attempt = requests_[key]++;
      last_authorization_ = req.get_header_value("Authorization");
    }
    if (!authorized(req, res)) return;
    if (!body.is_object()) {
      error(res, 400, "request body is not JSON");
      return;
    }
    const Fault fault = options_.fault ? options_.fault(key, attempt) : Fault::kNone;
    switch (fault) {
      case Fault::kNone:
      case Fault::kDelay:
      case Fault::kTruncated:
        break;
      case Fault::kCloseNoReply:
        shutdown_connection(req);
        return;
      case Fault::kCloseMidReply:
        res.set_content_provider(
            1000, "application/json",
            [](size_t, size_t, httplib::DataSink& sink) {
              sink.write("{\"id\":", 6);
              return false;
            });
        return;
      case Fault::k408: error(res, 408, "request timeout"); return;
      case Fault::k429: error(res, 429, "too many requests"); return;
      case Fault::k500: error(res, 500, "internal error"); return;
      case Fault::k502: error(res, 502, "bad gateway"); return;
      case Fault::k503: error(res, 503, "service unavailable"); return;
      case Fault::kGarbage:
        res.set_content("<html>upstream hiccup</html>", "text/html");
        return;
      case Fault::kMissingFields:
        res.set_content(R"({"id":"cmpl-fake","object":"text_completion"})", "application/json");
        return;
      case Fault::k400ContextTooLong:
        error(res, 400,
              "This model's maximum context length is 4096 tokens. However, you requested "
              "5000 tokens. Please reduce the length of the messages.");
        return;
      case Fault::k400Echo:
        error(res, 400, "`echo` is not supported together with `logprobs` by this server");
        return;
    }
    if (fault == Fault::kDelay) {
      std::this_thread::sleep_for(std::chrono::duration<double>(options_.delay_s));
    }
    std::string answer = chat ? chat_answer(body) : completion_answer(body);
    if (fault == Fault::kTruncated) {
      res.set_content(answer.substr(0, answer.size() / 2), "application/json");
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++answered_[key];
    }
    ++total_answered_;
    res.set_content(answer, "application/json");
  }

  void error(httplib::Response& res, int status, const std::string& message) {
    res.status = status;
    if (status == 429 || status == 503) {
      res.set_header("Retry-After", std::to_string(options_.retry_after_s));
    }
    nlohmann::json j = {{"object", "error"}, {"message", message}, {"code", status}};
    res.set_content(j.dump(), "application/json");
  }

  // Finds this request's socket by its ports and shuts it down, so the client gets no reply.
  static void shutdown_connection(const httplib::Request& req) {
    for (int fd = 3; fd < 65536; ++fd) {
      struct stat st;
      if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
      sockaddr_storage local{}, peer{};
      socklen_t ll = sizeof(local), pl = sizeof(peer);
      if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) != 0) continue;
      if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
      if (local.ss_family != AF_INET || peer.ss_family != AF_INET) continue;
      auto lp = ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port);
      auto pp = ntohs(reinterpret_cast<sockaddr_in*>(&peer)->sin_port);
      if (lp == req.local_port && pp == req.remote_port) {
        ::shutdown(fd, SHUT_RDWR);
        return;
      }
    }
  }

  static nlohmann::json usage(int n_prompt, int n_gen) {
    return {{"prompt_tokens", n_prompt},
            {"completion_tokens", n_gen},
            {"total_tokens", n_prompt + n_gen}};
  }

  FakeGen run_complete(const std::string& prompt) const {
    if (options_.model.complete) return options_.model.complete(prompt);
    FakeGen g;
    g.text = "echo:" + prompt.substr(prompt.size() > 16 ? prompt.size() - 16 : 0);
    return g;
  }

  FakeTokenScore run_score(std::string_view prefix, std::string_view token) const {
    if (options_.model.score) return options_.model.score(prefix, token);
    uint64_t h = fake_hash(token, fake_hash(prefix));
    return {-static_cast<double>(h % 500 + 1) / 100.0, (h & 8) != 0};
  }

  // Appends `s` as a JSON string literal (UTF-8 passes through).
  static void put_string(std::string& out, std::string_view s) {
    out.push_back('"');
    for (char ch : s) {
      const auto c = static_cast<unsigned char>(ch);
      if (c == '"' || c == '\\') {
        out.push_back('\\');
        out.push_back(ch);
      } else if (c < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof(buf), "\\u%04x", c);
        out += buf;
      } else {
        out.push_back(ch);
      }
    }
    out.push_back('"');
  }

  static void put_number(std::string& out, double v) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.17g", v);
    out += buf;
  }

  // Appends the logprobs object of an echoed prompt plus one generated token " the". Written
  // as text rather than through a JSON tree: it is the fake's hot path in benchmarks.
  void put_echo_logprobs(std::string& out, const std::string& prompt) const {
    std::vector<std::string> toks = fake_tokenize(prompt);
    std::string tokens = "[", lps = "[", tops = "[", offs = "[";
    auto sep = [](std::string& s) {
      if (s.size() > 1) s.push_back(',');
    };
    if (!options_.bos.empty()) {
      put_string(tokens, options_.bos);
      lps += "null";
      tops += "null";
      offs += "0";
    }
    size_t cp = 0, bytes = 0;
    for (size_t i = 0; i < toks.size(); ++i) {
      sep(tokens), sep(lps), sep(tops), sep(offs);
      put_string(tokens, toks[i]);
      offs += std::to_string(cp);
      if (i == 0 && options_.bos.empty()) {
        lps += "null";
        tops += "null";
      } else {
        FakeTokenScore sc = run_score(std::string_view(prompt).substr(0, bytes), toks[i]);
        put_number(lps, sc.logprob);
        tops.push_back('{');
        if (!sc.greedy) {
          tops += "\"<alt>\":";
          put_number(tops, sc.logprob + 0.5);
          tops.push_back(',');
        }
        put_string(tops, toks[i]);
        tops.push_back(':');
        put_number(tops, sc.logprob);
        tops.push_back('}');
      }
      cp += fake_cp_length(toks[i]);
      bytes += toks[i].size();
    }
    sep(tokens), sep(lps), sep(tops), sep(offs);
    tokens += "\" the\"]";
    lps += "-1.0]";
    tops += "{\" the\":-1.0}]";
    offs += std::to_string(cp) + "]";
    out += "{\"tokens\":" + tokens + ",\"token_logprobs\":" + lps + ",\"top_logprobs\":" + tops;
    if (options_.offsets == Offsets::kCodePoints) {
      out += ",\"text_offset\":" + offs;
    } else if (options_.offsets == Offsets::kMinusOne) {
      out += ",\"text_offset\":[";
      for (size_t i = 0; i < toks.size() + 1 + !options_.bos.empty(); ++i) out += i ? ",-1" : "-1";
      out += "]";
    }
    out += "}";
  }

  std::string completion_answer(const nlohmann::json& body) const {
    std::vector<std::string> prompts;
    const auto& p = body.contains("prompt") ? body["prompt"] : nlohmann::json();
    if (p.is_string()) prompts.push_back(p.get<std::string>());
    if (p.is_array()) {
      for (const auto& x : p) prompts.push_back(x.is_string() ? x.get<std::string>() : "");
    }
    const bool echo = body.value("echo", false);
    const bool logprobs = body.contains("logprobs") && !body["logprobs"].is_null();
    std::string out = "{\"id\":\"cmpl-fake\",\"object\":\"text_completion\",\"model\":";
    put_string(out, options_.model_name);
    out += ",\"choices\":[";
    int n_prompt = 0, n_gen = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (i) out.push_back(',');
      out += "{\"index\":" + std::to_string(i) + ",\"text\":";
      n_prompt += static_cast<int>(fake_tokenize(prompts[i]).size());
      if (echo && logprobs) {
        put_string(out, prompts[i] + " the");
        out += ",\"logprobs\":";
        put_echo_logprobs(out, prompts[i]);
        out += ",\"finish_reason\":\"length\"}";
        n_gen += 1;
      } else {
        FakeGen g = run_complete(prompts[i]);
        put_string(out, g.text);
        out += ",\"logprobs\":null,\"finish_reason\":";
        put_string(out, g.finish_reason);
        out += "}";
        n_gen += static_cast<int>(fake_tokenize(g.text).size());
      }
    }
    out += "],\"usage\":" + usage(n_prompt, n_gen).dump() + "}";
    return out;
  }

  std::string chat_answer(const nlohmann::json& body) const {
    nlohmann::json messages = body.value("messages", nlohmann::json::array());
    FakeGen g;
    if (options_.model.chat) {
      g = options_.model.chat(messages);
    } else {
      g.text = "chat:" + (messages.empty() ? std::string() : messages.back().value("content", ""));
    }
    nlohmann::json msg = {{"role", "assistant"}, {"content", g.text}};
    if (!g.reasoning.empty()) msg[g.reasoning_field] = g.reasoning;
    int n_prompt = 0;
    for (const auto& m : messages) {
      n_prompt += static_cast<int>(fake_tokenize(m.value("content", "")).size());
    }
    nlohmann::json out = {
        {"id", "chatcmpl-fake"},
        {"object", "chat.completion"},
        {"model", options_.model_name},
        {"choices", {{{"index", 0}, {"message", msg}, {"finish_reason", g.finish_reason}}}},
        {"usage", usage(n_prompt, static_cast<int>(fake_tokenize(g.text + g.reasoning).size()))}};
    return out.dump();
  }

  // httplib::Server with access to its listening socket.
  struct Server : httplib::Server {
    int listening_socket() const { return svr_sock_; }
  };

  Options options_;
  Server server_;
  std::thread thread_;
  int port_ = 0;
  mutable std::mutex mu_;
  std::map<std::string, int> requests_;
  std::map<std::string, int> answered_;
  std::string last_authorization_;
  std::atomic<int> in_flight_{0};
  std::atomic<int> max_in_flight_{0};
  std::atomic<int> total_requests_{0};
  std::atomic<int> total_answered_{0};
};

}  // namespace qeval::testing
