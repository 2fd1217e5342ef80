// ThreadPool: spin-then-sleep workers, atomic generation / countdown barrier.
#include "core/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <system_error>

#include "core/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QEVAL_CPU_RELAX() _mm_pause()
#else
#define QEVAL_CPU_RELAX() std::this_thread::yield()
#endif

namespace qeval {

namespace {
// How long an idle worker polls for the next job before sleeping: covers the gaps between the
// parallel sections of one forward step and between decode steps, not long idle periods.
// QEVAL_POOL_SPIN_US overrides the 100 us default (0: sleep at once, for crowded machines).
std::chrono::microseconds spin_time() {
  static const std::chrono::microseconds t = [] {
    const char* v = std::getenv("QEVAL_POOL_SPIN_US");
    long us = 100;
    if (v && *v) {
      char* end = nullptr;
      long x = std::strtol(v, &end, 10);
      if (end && *end == '\0' && x >= 0) us = x;
    }
    return std::chrono::microseconds(us);
  }();
  return t;
}

int fail_thread_start_at = 0;  // fail_thread_start_for_testing
}  // namespace

void ThreadPool::fail_thread_start_for_testing(int index) { fail_thread_start_at = index; }

ThreadPool::ThreadPool(int n_threads) {
  n_threads_ = n_threads > 0 ? n_threads : std::max(1u, std::thread::hardware_concurrency());
  shares_ = std::make_unique<Share[]>(static_cast<size_t>(n_threads_));
  threads_.reserve(static_cast<size_t>(n_threads_ - 1));
  // A thread that cannot start (EAGAIN: a process or pids limit) throws here. The destructor
  // does not run for a half-built pool, so the workers already started must be stopped now:
  // left alone they keep cv_start_ busy (its destruction would wait for them forever) and
  // destroying a joinable std::thread calls std::terminate.
  try {
    for (int i = 1; i < n_threads_; ++i) {
      if (i == fail_thread_start_at)
        throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again), "test");
      threads_.emplace_back([this, i] { worker(i); });
    }
  } catch (const std::system_error& e) {
    stop_workers();
    fail("cannot start {} threads: the system refused more than {} ({}) (hint: ask for fewer threads, or 0 for "
         "one per core)", n_threads_, threads_.size() + 1, e.code().message());
  } catch (...) {
    stop_workers();
    throw;
  }
}

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  cv_start_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    // Spin for the next generation, checking the clock every 64 polls.
    uint64_t g = generation_.load(std::memory_order_acquire);
    const auto spin = spin_time();
    if (g == seen && spin.count() > 0) {
      const auto until = std::chrono::steady_clock::now() + spin;
      // Pause-spin first; later polls yield so an oversubscribed machine (more runnable
      // threads than cores) still lets the thread we wait for run.
      for (int i = 1; (g = generation_.load(std::memory_order_acquire)) == seen; ++i) {
        if (i < 2048) {
          QEVAL_CPU_RELAX();
        } else {
          std::this_thread::yield();
          if (std::chrono::steady_clock::now() > until) break;
        }
      }
    }
    if (g == seen) {
      // Sleep. sleepers_ is raised before the re-check (both seq_cst), and the publisher bumps
      // generation_ before reading sleepers_, so either we see the new job or it sees us.
      std::unique_lock<std::mutex> lock(mu_);
      sleepers_.fetch_add(1);
      cv_start_.wait(lock, [&] { return (g = generation_.load()) != seen; });
      sleepers_.fetch_sub(1);
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = g;
    (*job_)(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run_on_all(const std::function<void(int)>& fn) {
  if (n_threads_ == 1) {
    fn(0);
    return;
  }
  job_ = &fn;
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1);  // seq_cst: publishes job_ and pending_
  if (sleepers_.load() > 0) {
    { std::lock_guard<std::mutex> lock(mu_); }
    cv_start_.notify_all();
  }
  fn(0);
  // Wait for the workers: spin, then yield (another process may hold the cores).
  for (int i = 0; pending_.load(std::memory_order_acquire) != 0; ++i) {
    if (i < 4096)
      QEVAL_CPU_RELAX();
    else
      std::this_thread::yield();
  }
  job_ = nullptr;
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int, int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  int t = static_cast<int>(std::min<int64_t>(n_threads_, n));
  if (t == 1) {
    fn(0, 0, n);
    return;
  }
  run_on_all([&](int i) {
    if (i >= t) return;
    int64_t b = n * i / t, e = n * (i + 1) / t;
    fn(i, b, e);
  });
}

void ThreadPool::parallel_for_dynamic(int64_t n, int64_t grain,
                                      const std::function<void(int, int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (n_threads_ == 1 || n <= grain) {
    fn(0, 0, n);
    return;
  }
  alignas(64) std::atomic<int64_t> next{0};
  run_on_all([&](int i) {
    for (int64_t b; (b = next.fetch_add(grain, std::memory_order_relaxed)) < n;) fn(i, b, std::min(n, b + grain));
  });
}

void ThreadPool::parallel_for_stealing(int64_t n, int64_t grain,
                                       const std::function<void(int, int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t pieces = (n + grain - 1) / grain;
  if (n_threads_ == 1 || pieces == 1) {
    fn(0, 0, n);
    return;
  }
  if (pieces >= (int64_t{1} << 31)) {  // the shares below pack two piece indices in 64 bits
    parallel_for_dynamic(n, grain, fn);
    return;
  }
  // Share i: pieces [front, back). The owner takes the front piece, others the back one; a claim
  // is a compare-exchange, so each piece runs exactly once. (Stored before run_on_all publishes
  // the job, which orders them before the workers' loads.)
  Share* shares = shares_.get();
  for (int i = 0; i < n_threads_; ++i) {
    const uint64_t f = static_cast<uint64_t>(pieces * i / n_threads_), b = static_cast<uint64_t>(pieces * (i + 1) / n_threads_);
    shares[i].fb.store(f << 32 | b, std::memory_order_relaxed);
  }
  auto claim = [](std::atomic<uint64_t>& fb, bool front) -> int64_t {
    uint64_t v = fb.load(std::memory_order_relaxed);
    for (;;) {
      const uint64_t f = v >> 32, b = v & 0xFFFFFFFFu;
      if (f >= b) return -1;
      const uint64_t next = front ? (f + 1) << 32 | b : f << 32 | (b - 1);
      if (fb.compare_exchange_weak(v, next, std::memory_order_relaxed)) return static_cast<int64_t>(front ? f : b - 1);
    }
  };
  run_on_all([&](int i) {
    auto run = [&](int64_t p) { fn(i, p * grain, std::min(n, (p + 1) * grain)); };
    for (int64_t p; (p = claim(shares[i].fb, true)) >= 0;) run(p);
    for (int k = 1; k < n_threads_; ++k) {
      auto& fb = shares[(i + k) % n_threads_].fb;
      for (int64_t p; (p = claim(fb, false)) >= 0;) run(p);
    }
  });
}

}  // namespace qeval
