// The HTTP transport of the openai backend: a libcurl multi event loop that keeps up to
// `concurrency` POST requests in flight over reused keep-alive connections, spreads them
// over replica base URLs (least in flight first), and re-queues attempts the caller wants
// retried after exponential backoff with full jitter (at least Retry-After). A replica whose
// attempt the caller wants retried is benched for a while (1 s, doubling with each failure in a
// row, at most 30 s; an answer that is not retried clears it), and a retry goes to another
// replica than the one that failed it, so a dead or sick replica gets only probes while a
// healthy one remains. It only moves bytes: what counts as success or as retryable is decided
// by the caller.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace qeval::openai {

struct HttpClientOptions {
  std::vector<std::string> base_urls;  // replicas, e.g. "http://127.0.0.1:8000/v1" (no '/' at end)
  std::string api_key;                 // sent as "Authorization: Bearer"; empty = none
  int concurrency = 8;                 // requests in flight at most, over all replicas
  double timeout_s = 300.0;            // whole-request timeout of one attempt
  int max_retries = 5;                 // attempts = 1 + max_retries
  double backoff_base_s = 0.5;         // retry k waits uniform(0, min(max, base * 2^k)) s
  double backoff_max_s = 30.0;
  double retry_after_max_s = 120.0;    // a Retry-After longer than this is cut to it
  // An outage: every replica's latest attempt failed at the transport (no connection, reset,
  // timeout) or with 502/503/504. While it lasts, at most outage_wait_s, one request at a time
  // probes the replicas and failed attempts do not use up retries, so a server restart does
  // not turn the rest of the run into errors. 0 = no outage handling.
  double outage_wait_s = 600.0;
  std::string name;                    // names the variant in the outage messages
};

// What one attempt of one request got back.
struct HttpResult {
  long status = 0;            // HTTP status; 0 when no response arrived
  int curl_code = 0;          // CURLcode; 0 = transfer completed
  std::string curl_error;     // libcurl's message when curl_code != 0
  std::string body;
  double retry_after_s = -1;  // the Retry-After header in seconds; < 0 when absent
  double latency_s = 0.0;     // wall time of this attempt
  std::string url;            // where it was sent
};

// What the caller decides about one attempt.
enum class Verdict { kDone, kRetry };

// Not thread-safe: one run() at a time. Reuses its curl handles and connections across runs.
class HttpClient {
 public:
  explicit HttpClient(HttpClientOptions options);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  const HttpClientOptions& options() const { return options_; }

  // Benches replica r for `for_how_long` (one that did not answer at start-up): it gets no
  // request until then, and a failure after it benches it for the longest time again.
  void bench_replica(size_t r, std::chrono::milliseconds for_how_long);

  // Sends n requests. make(i, path, body) fills request i's path (appended to a base URL,
  // e.g. "/completions") and JSON body; it is called once per attempt. on_result(i, result,
  // attempt, last) is called on this thread for every attempt (attempt counts from 0; last
  // is true when no retry is left) and returns kRetry to send request i again after
  // backoff, kDone once it has recorded a result. On the last attempt kRetry counts as kDone.
  // During an outage (see HttpClientOptions::outage_wait_s) one request is in flight and its
  // failed attempts are not counted.
  // Exceptions thrown by the callbacks end the run (handles in flight are dropped) and
  // propagate.
  void run(size_t n, const std::function<void(size_t, std::string&, std::string&)>& make,
           const std::function<Verdict(size_t, HttpResult&&, int, bool)>& on_result);

  // GET base_urls[replica] + path, blocking, with the given timeout.
  HttpResult get(size_t replica, const std::string& path, double timeout_s);

 private:
  struct Slot;
  Slot* acquire_slot();

  HttpClientOptions options_;
  void* multi_ = nullptr;           // CURLM*
  void* headers_ = nullptr;         // curl_slist* shared by every request
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<int> in_flight_per_replica_;
  std::vector<int> failures_in_a_row_;                                // per replica
  std::vector<std::chrono::steady_clock::time_point> benched_until_;  // per replica
  std::vector<int> down_in_a_row_;  // per replica: outage-like failures since its last reply
  std::chrono::steady_clock::time_point outage_since_{};  // zero: no outage
  std::chrono::steady_clock::time_point next_probe_{};    // during an outage: the next request's start
  std::chrono::steady_clock::time_point next_up_check_{};  // GET /models is asked again from then
  bool last_up_ = false;                                   // its last answer
  size_t rr_next_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace qeval::openai
