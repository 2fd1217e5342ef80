// The references benchmarks divide by: read bandwidth, the AMX-INT8 peaks and the VNNI peak. They run real
// instructions (a regression once made every tile load fault), so they are run briefly here.
#include <catch2/catch.hpp>

#include <algorithm>
#include <utility>
#include <vector>

#include "core/thread_pool.h"
#include "engine/bench_reference.h"
#include "engine/cpu_features.h"
#include "engine/kernels/cpu/gemm_cpu.h"

using namespace qeval;

TEST_CASE("read bandwidth is measured and positive", "[bench_reference]") {
  ThreadPool pool(2);
  const double gbps = measure_read_bandwidth(pool, size_t{8} << 20, 1);
  CHECK(gbps > 0.01);
  CHECK(gbps < 1e5);
}

// Buffers of ones in 3, 4 and 37 units taken 1, 2 and 16 at a time (a short last piece, one
// piece for all): every float is read exactly once.
TEST_CASE("a split read reads every byte once, whatever the units and grain", "[bench_reference]") {
  if (static_cast<int>(max_kernel_level()) < static_cast<int>(KernelLevel::Avx2)) {
    WARN("no AVX2 on this CPU: time_split_read needs it");
    return;
  }
  ThreadPool pool(2);
  std::vector<cpu::AlignedBuffer<float>> bufs;
  std::vector<SplitRead> reads;
  double expect = 0;
  for (const auto& [units, grain] : std::vector<std::pair<int64_t, int64_t>>{{3, 1}, {4, 2}, {37, 16}, {5, 8}}) {
    const size_t floats = static_cast<size_t>(units) * 32 * 3;  // 384 bytes a unit
    bufs.emplace_back(floats);
    std::fill(bufs.back().data(), bufs.back().data() + floats, 1.0f);
    reads.push_back({bufs.back().data(), floats * 4, units, grain});
    expect += static_cast<double>(floats);
  }
  double sum = -1;
  CHECK(time_split_read(pool, reads, &sum) > 0);
  CHECK(sum == expect);
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

TEST_CASE("the VNNI peak runs on every pool thread, or is 0 without AVX-512 VNNI", "[bench_reference]") {
  ThreadPool one(1), two(2);
  const double p1 = measure_vnni_int8_peak(one, 0.002);
  if (!cpu_features().avx512vnni || max_kernel_level() < KernelLevel::Avx512) {
    CHECK(p1 == 0);
    return;
  }
  CHECK(p1 > 0.01);  // TOPS; a Zen 5 core does ~0.85
  CHECK(p1 < 20);
  CHECK(measure_vnni_int8_peak(two, 0.002) > 0.01);  // the sum over both threads
}
