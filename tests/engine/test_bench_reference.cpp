// The references benchmarks divide by: read bandwidth and the AMX-INT8 peaks. They run real
// instructions (a regression once made every tile load fault), so they are run briefly here.
#include <catch2/catch.hpp>

#include "core/thread_pool.h"
#include "engine/bench_reference.h"
#include "engine/cpu_features.h"

using namespace qeval;

TEST_CASE("read bandwidth is measured and positive", "[bench_reference]") {
  ThreadPool pool(2);
  const double gbps = measure_read_bandwidth(pool, size_t{8} << 20, 1);
  CHECK(gbps > 0.01);
  CHECK(gbps < 1e5);
}

TEST_CASE("AMX peaks run on every pool thread, or are 0 without AMX", "[bench_reference]") {
  ThreadPool pool(2);
  const double peak = measure_amx_int8_peak(pool, 0.002);
  const double loaded = measure_amx_int8_loaded_peak(pool, 0.002);
  if (max_kernel_level() != KernelLevel::Amx) {
    CHECK(peak == 0);
    CHECK(loaded == 0);
    return;
  }
  CHECK(peak > 0.01);  // TOPS; a core does ~6
  CHECK(peak < 100);
  CHECK(loaded > 0.01);
}
