// libcurl multi event loop for the openai backend (see openai_http.h).
#include "backends/openai_http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <mutex>
#include <queue>
#include <tuple>

#include "core/error.h"

namespace qeval::openai {

namespace {

using Clock = std::chrono::steady_clock;

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// A reply larger than this is cut off (the transfer fails with a write error): memory stays
// bounded at concurrency x this, whatever a runaway server sends. An echoed MMLU prompt's
// logprobs are well under 1 MiB; a 32k-token completion is a few hundred KiB.
constexpr size_t kMaxReplyBytes = size_t{64} << 20;

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* body = static_cast<std::string*>(user);
  if (body->size() + size * n > kMaxReplyBytes) return 0;
  body->append(data, size * n);
  return size * n;
}

// Reads Retry-After (delta-seconds form; an HTTP date is ignored) from one header line.
size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* retry_after = static_cast<double*>(user);
  std::string_view line(data, size * n);
  if (line.starts_with("HTTP/")) *retry_after = -1;  // a new response (after 100 Continue)
  constexpr std::string_view kKey = "retry-after:";
  if (line.size() > kKey.size()) {
    bool match = true;
    for (size_t i = 0; i < kKey.size() && match; ++i) {
      match = std::tolower(static_cast<unsigned char>(line[i])) == kKey[i];
    }
    if (match) {
      std::string value(line.substr(kKey.size()));
      char* end = nullptr;
      double v = std::strtod(value.c_str(), &end);
      if (end != value.c_str() && v >= 0 && std::isfinite(v)) *retry_after = v;
    }
  }
  return size * n;
}

}  // namespace

struct HttpClient::Slot {
  CURL* easy = nullptr;
  bool busy = false;
  size_t index = 0;
  int attempt = 0;
  size_t replica = 0;
  std::string url;
  std::string path;
  std::string body;
  std::string response;
  double retry_after_s = -1;
  char error[CURL_ERROR_SIZE] = {};
  ~Slot() {
    if (easy) curl_easy_cleanup(easy);
  }
};

HttpClient::HttpClient(HttpClientOptions options) : options_(std::move(options)) {
  global_init();
  if (options_.base_urls.empty()) fail("openai: no base_url (hint: set base_url)");
  options_.concurrency = std::max(1, options_.concurrency);
  multi_ = curl_multi_init();
  // Keep one idle connection per possible in-flight request so none is closed and reopened.
  curl_multi_setopt(static_cast<CURLM*>(multi_), CURLMOPT_MAXCONNECTS,
                    static_cast<long>(options_.concurrency * options_.base_urls.size() + 4));
  curl_slist* h = nullptr;
  h = curl_slist_append(h, "Content-Type: application/json");
  h = curl_slist_append(h, "Expect:");  // no 1 s wait for 100-continue on large bodies
  if (!options_.api_key.empty()) {
    h = curl_slist_append(h, ("Authorization: Bearer " + options_.api_key).c_str());
  }
  headers_ = h;
  in_flight_per_replica_.assign(options_.base_urls.size(), 0);
  failures_in_a_row_.assign(options_.base_urls.size(), 0);
  benched_until_.assign(options_.base_urls.size(), Clock::time_point{});
  down_in_a_row_.assign(options_.base_urls.size(), 0);
  rng_.seed(std::random_device{}());
}

HttpClient::~HttpClient() {
  for (auto& s : slots_) {
    if (s->busy) curl_multi_remove_handle(static_cast<CURLM*>(multi_), s->easy);
  }
  slots_.clear();
  curl_multi_cleanup(static_cast<CURLM*>(multi_));
  curl_slist_free_all(static_cast<curl_slist*>(headers_));
}

void HttpClient::bench_replica(size_t r, std::chrono::milliseconds for_how_long) {
  failures_in_a_row_.at(r) = 6;  // the next failure benches it for the longest (30 s)
  benched_until_.at(r) = Clock::now() + for_how_long;
}

HttpClient::Slot* HttpClient::acquire_slot() {
  for (auto& s : slots_) {
    if (!s->busy) return s.get();
  }
  auto s = std::make_unique<Slot>();
  CURL* e = curl_easy_init();
  s->easy = e;
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, static_cast<curl_slist*>(headers_));
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &s->response);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, &s->retry_after_s);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->error);
  curl_easy_setopt(e, CURLOPT_PRIVATE, s.get());
  auto timeout_ms = static_cast<long>(std::ceil(options_.timeout_s * 1000));
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, std::min(timeout_ms, 30000L));
  slots_.push_back(std::move(s));
  return slots_.back().get();
}

void HttpClient::run(size_t n, const std::function<void(size_t, std::string&, std::string&)>& make,
                     const std::function<Verdict(size_t, HttpResult&&, int, bool)>& on_result) {
  CURLM* multi = static_cast<CURLM*>(multi_);
  constexpr size_t kAny = static_cast<size_t>(-1);
  struct Retry {
    Clock::time_point due;
    size_t index;
    int attempt;
    size_t failed_on;  // the replica of the failed attempt
    bool operator>(const Retry& o) const { return due > o.due; }
  };
  std::priority_queue<Retry, std::vector<Retry>, std::greater<>> waiting;
  std::deque<Retry> ready;  // retries whose backoff has passed
  size_t next_new = 0, n_done = 0;
  int n_busy = 0;

  // Drops the handles in flight if a callback throws, so the client stays usable.
  struct Guard {
    HttpClient* self;
    ~Guard() {
      for (auto& s : self->slots_) {
        if (!s->busy) continue;
        curl_multi_remove_handle(static_cast<CURLM*>(self->multi_), s->easy);
        s->busy = false;
      }
      std::fill(self->in_flight_per_replica_.begin(), self->in_flight_per_replica_.end(), 0);
    }
  } guard{this};

  auto start = [&](size_t index, int attempt, size_t failed_on) {
    Slot* s = acquire_slot();
    s->busy = true;
    s->index = index;
    s->attempt = attempt;
    s->path.clear();
    s->body.clear();
    s->response.clear();
    s->retry_after_s = -1;
    s->error[0] = 0;
    make(index, s->path, s->body);
    // Replicas not benched, and for a retry not the one that failed it, when there are any
    // (else those benched until the soonest); then least in flight; ties go round-robin.
    const size_t n_rep = options_.base_urls.size();
    const auto now = Clock::now();
    auto rank = [&](size_t r) {
      const bool benched = benched_until_[r] > now;
      return std::make_tuple(benched ? benched_until_[r] : Clock::time_point{}, r == failed_on,
                             in_flight_per_replica_[r]);
    };
    size_t best = rr_next_ % n_rep;
    for (size_t k = 1; k < n_rep; ++k) {
      size_t r = (rr_next_ + k) % n_rep;
      if (rank(r) < rank(best)) best = r;
    }
    rr_next_ = best + 1;
    s->replica = best;
    ++in_flight_per_replica_[best];
    s->url = options_.base_urls[best] + s->path;
    curl_easy_setopt(s->easy, CURLOPT_URL, s->url.c_str());
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->body.data());
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(s->body.size()));
    curl_multi_add_handle(multi, s->easy);
    ++n_busy;
  };

  while (n_done < n) {
    const auto now = Clock::now();
    while (!waiting.empty() && waiting.top().due <= now) {
      ready.push_back(waiting.top());
      waiting.pop();
    }
    // During an outage one request at a time probes the replicas.
    const bool probing = outage_since_ != Clock::time_point{} &&
                         std::chrono::duration<double>(now - outage_since_).count() < options_.outage_wait_s;
    // One probe in flight, and at most one started every 2 s.
    const int limit = probing ? (now >= next_probe_ ? 1 : 0) : options_.concurrency;
    if (probing && n_busy < limit && (!ready.empty() || next_new < n)) next_probe_ = now + std::chrono::seconds(2);
    while (n_busy < limit && (!ready.empty() || next_new < n)) {
      if (!ready.empty()) {
        const Retry r = ready.front();
        ready.pop_front();
        start(r.index, r.attempt, r.failed_on);
      } else {
        start(next_new++, 0, kAny);
      }
    }

    int running = 0;
    curl_multi_perform(multi, &running);
    int queued = 0;
    bool any_finished = false;
    while (CURLMsg* msg = curl_multi_info_read(multi, &queued)) {
      if (msg->msg != CURLMSG_DONE) continue;
      any_finished = true;
      CURL* e = msg->easy_handle;
      const CURLcode code = msg->data.result;
      Slot* s = nullptr;
      curl_easy_getinfo(e, CURLINFO_PRIVATE, reinterpret_cast<char**>(&s));
      curl_multi_remove_handle(multi, e);
      HttpResult r;
      curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r.status);
      double total = 0;
      curl_easy_getinfo(e, CURLINFO_TOTAL_TIME, &total);
      r.latency_s = total;
      r.curl_code = code;
      if (code != CURLE_OK) r.curl_error = s->error[0] ? s->error : curl_easy_strerror(code);
      if (code == CURLE_WRITE_ERROR && s->response.size() + CURL_MAX_WRITE_SIZE > kMaxReplyBytes) {
        r.curl_code = CURLE_FILESIZE_EXCEEDED;  // not retried, and no sign of an outage
        r.curl_error = fmt::format("the reply is larger than {} MiB, the most qeval reads (hint: check the "
                                   "server; a runaway generation ignores max_tokens)", kMaxReplyBytes >> 20);
      }
      r.body = std::move(s->response);
      r.retry_after_s = s->retry_after_s;
      r.url = s->url;
      const size_t index = s->index, replica = s->replica;
      const int attempt = s->attempt;
      const double retry_after_s = s->retry_after_s;
      s->busy = false;
      --n_busy;
      --in_flight_per_replica_[replica];
      // Outage bookkeeping: transport failures and 502/503/504 say the server is not there.
      const bool down = (r.curl_code != 0 && r.curl_code != CURLE_FILESIZE_EXCEEDED) || r.status == 502 ||
                        r.status == 503 || r.status == 504;
      down_in_a_row_[replica] = down ? down_in_a_row_[replica] + 1 : 0;
      // Three in a row on every replica: one dropped connection among answers is no outage.
      const bool all_down = std::all_of(down_in_a_row_.begin(), down_in_a_row_.end(), [](int d) { return d >= 3; });
      const auto t_now = Clock::now();
      // A server that answers GET /models is up: its failures are the requests' own (a prompt
      // it cannot serve), and they count as usual.
      // Asked at most every 2 s (the answer is kept in between), with a 2 s timeout: a server that
      // hangs must not stall the loop.
      auto server_up = [&] {
        if (t_now < next_up_check_) return last_up_;
        last_up_ = false;
        for (size_t k = 0; k < down_in_a_row_.size() && !last_up_; ++k) {
          HttpResult g = get(k, "/models", std::min(options_.timeout_s, 2.0));
          last_up_ = g.curl_code == 0 && g.status != 502 && g.status != 503 && g.status != 504;
        }
        next_up_check_ = Clock::now() + std::chrono::seconds(2);
        return last_up_;
      };
      const bool in_outage = outage_since_ != Clock::time_point{};
      const bool suspect = down && options_.outage_wait_s > 0 &&
                           (in_outage ? std::chrono::duration<double>(t_now - outage_since_).count() < options_.outage_wait_s
                                      : all_down);
      if (suspect && server_up()) {
        std::fill(down_in_a_row_.begin(), down_in_a_row_.end(), 0);
        if (in_outage)
          fmt::print(stderr, "{}: the server answers again after {:.0f} s\n", options_.name,
                     std::chrono::duration<double>(t_now - outage_since_).count());
        outage_since_ = Clock::time_point{};
      } else if (suspect && !in_outage) {
        outage_since_ = t_now;
        fmt::print(stderr, "warning: {}: no replica answers ({}: {}); waiting for it, at most {:.0f} s, one probe at a time\n",
                   options_.name, r.url, r.curl_code ? r.curl_error : fmt::format("HTTP {}", r.status),
                   options_.outage_wait_s);
      } else if (!down && outage_since_ != Clock::time_point{}) {
        fmt::print(stderr, "{}: {} answers again after {:.0f} s\n", options_.name, options_.base_urls[replica],
                   std::chrono::duration<double>(t_now - outage_since_).count());
        outage_since_ = Clock::time_point{};
      }
      const bool waiting_out = down && outage_since_ != Clock::time_point{} &&
                               std::chrono::duration<double>(t_now - outage_since_).count() < options_.outage_wait_s;
      const bool last = attempt >= options_.max_retries && !waiting_out;
      const Verdict v = on_result(index, std::move(r), attempt, last);
      if (v == Verdict::kRetry) {  // the replica failed this attempt: bench it for a while
        const int f = ++failures_in_a_row_[replica];
        benched_until_[replica] =
            Clock::now() + std::chrono::milliseconds(std::min<int64_t>(30000, int64_t{1000} << std::min(f - 1, 5)));
      } else {
        failures_in_a_row_[replica] = 0;
        benched_until_[replica] = Clock::time_point{};
      }
      if (v == Verdict::kRetry && !last) {
        const double cap = std::min(options_.backoff_max_s,
                                    options_.backoff_base_s * std::ldexp(1.0, attempt));
        double delay = std::uniform_real_distribution<double>(0.0, std::max(cap, 0.0))(rng_);
        if (retry_after_s >= 0) {
          delay = std::max(delay, std::min(retry_after_s, options_.retry_after_max_s));
        }
        if (waiting_out) {  // not counted; probe again in a few seconds
          const double left = options_.outage_wait_s - std::chrono::duration<double>(t_now - outage_since_).count();
          delay = std::clamp(std::min(2.0, left), 0.0, 2.0);
        }
        waiting.push({Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(delay)),
                       index, waiting_out ? attempt : attempt + 1, replica});
      } else {
        ++n_done;
      }
    }
    if (n_done >= n) break;
    if (any_finished) continue;  // fill the freed slots before waiting

    int timeout_ms = 1000;
    if (!waiting.empty()) {
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(waiting.top().due -
                                                                        Clock::now());
      timeout_ms = static_cast<int>(std::clamp<int64_t>(wait.count() + 1, 0, 1000));
    }
    if (n_busy > 0 || timeout_ms > 0) curl_multi_poll(multi, nullptr, 0, timeout_ms, nullptr);
  }
}

HttpResult HttpClient::get(size_t replica, const std::string& path, double timeout_s) {
  HttpResult r;
  r.url = options_.base_urls.at(replica) + path;
  CURL* e = curl_easy_init();
  char error[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_URL, r.url.c_str());
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, static_cast<curl_slist*>(headers_));
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(std::ceil(timeout_s * 1000)));
  const CURLcode code = curl_easy_perform(e);
  r.curl_code = code;
  if (code != CURLE_OK) r.curl_error = error[0] ? error : curl_easy_strerror(code);
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r.status);
  double total = 0;
  curl_easy_getinfo(e, CURLINFO_TOTAL_TIME, &total);
  r.latency_s = total;
  curl_easy_cleanup(e);
  return r;
}

}  // namespace qeval::openai
