// A fixed-size thread pool for data-parallel loops (the engine's matmuls and attention).
// The calling thread takes part in the work, so ThreadPool(n) runs n workers in total and
// never oversubscribes the cores. Not re-entrant: parallel_for must not be called from
// inside a task. One parallel_for at a time per pool.
//
// Synchronisation is lock-free on the hot path: a job is published by bumping an atomic
// generation counter, workers spin on it for a short while after their last job (a decode step
// issues hundreds of small parallel_for calls, so waking sleeping threads each time would cost
// more than the work) and only then sleep on a condition variable; completion is an atomic
// countdown the caller spins on. The mutex/condvar are touched only when a worker sleeps.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace qeval {

class ThreadPool {
 public:
  // n_threads <= 0 means std::thread::hardware_concurrency(). Throws Error when the system
  // cannot start that many threads; the ones already started are stopped and joined first.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(thread_index, begin, end) over [0, n) split into size() contiguous chunks,
  // chunk i going to thread i (deterministic assignment). Returns when all are done.
  void parallel_for(int64_t n, const std::function<void(int, int64_t, int64_t)>& fn);

  // Calls fn(thread_index, begin, end) over [0, n) in pieces of `grain` (the last one shorter)
  // that the threads take in order as each finishes its previous piece, so a thread slowed by
  // other load on its core does less of the work. fn may run several times on one thread;
  // which thread runs a piece is not deterministic, so fn's result for a piece must not depend
  // on the thread (use the index only for scratch space). One thread, or n <= grain: one call
  // over [0, n).
  void parallel_for_dynamic(int64_t n, int64_t grain,
                            const std::function<void(int, int64_t, int64_t)>& fn);

  // Like parallel_for_dynamic, but thread i first takes the pieces of the i-th contiguous share of
  // [0, n) in ascending order, so each thread's reads form one stream (a stream the hardware
  // prefetcher keeps following from piece to piece), and a thread done with its share then takes
  // pieces from the far end of the others' shares. Same contract on fn as parallel_for_dynamic.
  void parallel_for_stealing(int64_t n, int64_t grain,
                             const std::function<void(int, int64_t, int64_t)>& fn);

  // Calls fn(thread_index) once on every thread.
  void run_on_all(const std::function<void(int)>& fn);

  // For tests: the constructor's start of worker `index` (1-based, as in the pool) fails as if the
  // system had no threads left (std::system_error EAGAIN); 0 turns it off. Not thread-safe.
  static void fail_thread_start_for_testing(int index);

 private:
  void worker(int index);
  void stop_workers();  // wakes every started worker with stop_ set and joins it

  int n_threads_;
  std::vector<std::thread> threads_;
  std::mutex mu_;                      // guards sleeping only
  std::condition_variable cv_start_;
  const std::function<void(int)>* job_ = nullptr;  // written before generation_ is bumped
  alignas(64) std::atomic<uint64_t> generation_{0};
  alignas(64) std::atomic<int> pending_{0};        // workers still running the current job
  std::atomic<int> sleepers_{0};                   // workers blocked (or about to) on cv_start_
  std::atomic<bool> stop_{false};
  // parallel_for_stealing's shares, one per thread: pieces [front, back) as front << 32 | back.
  struct alignas(64) Share {
    std::atomic<uint64_t> fb{0};
  };
  std::unique_ptr<Share[]> shares_;
};

}  // namespace qeval
