// Reference measurements taken in the same run as a benchmark, so speed goals are ratios and not
// absolute numbers (this kind of machine is shared and its bandwidth and AMX throughput swing by
// 2x from one second to the next): read bandwidth and the register-only AMX-INT8 peak.
#pragma once

#include <cstdint>
#include <vector>

#include "core/thread_pool.h"

namespace qeval {

// Read bandwidth in GB/s: every pool thread sums its share of a `bytes`-sized buffer (far larger
// than the caches; allocated and touched once per call), best of `passes` passes.
double measure_read_bandwidth(ThreadPool& pool, size_t bytes = size_t{512} << 20, int passes = 3);

// The same measurement over one buffer allocated once, for probes taken again and again (between
// the decode steps of a benchmark).
class ReadProbe {
 public:
  ReadProbe(ThreadPool& pool, size_t bytes);
  ~ReadProbe();
  ReadProbe(const ReadProbe&) = delete;
  ReadProbe& operator=(const ReadProbe&) = delete;
  double measure(int passes = 1);  // GB/s, best of `passes`

 private:
  ThreadPool& pool_;
  float* buf_ = nullptr;
  int64_t n_ = 0;  // floats, a multiple of 1024
  std::vector<float> sums_;
};

// A buffer read the way a decode GEMV reads its weight: `units` equal pieces of `bytes`
// (column blocks), handed out `grain` at a time as the GEMMs hand them out
// (ThreadPool::parallel_for_stealing).
struct SplitRead {
  const void* data;  // 64-byte aligned
  size_t bytes;      // a multiple of 128 * units
  int64_t units, grain;
};

// Seconds to sum every buffer once, in order, each split as described, one parallel section per
// buffer: the memory traffic and synchronisation of a sequence of GEMVs without their
// arithmetic, the ceiling such a sequence can reach on this machine now. Needs AVX2. The sum
// of every float read goes to *sum if given (a check that each byte was read once).
double time_split_read(ThreadPool& pool, const std::vector<SplitRead>& buffers, double* sum = nullptr);

// AMX-INT8 peak in TOPS (1 MAC = 2 ops) summed over the pool's threads: a TDPBSSD loop on
// register tiles (no loads), `seconds` long. 0 when AMX is not available.
double measure_amx_int8_peak(ThreadPool& pool, double seconds = 0.01);

// AVX-512 VNNI int8 peak in TOPS summed over the pool's threads: a VPDPBUSD loop on 16
// accumulator registers (no loads), `seconds` long; the int8 peak of a machine without AMX. 0
// without AVX-512 VNNI.
double measure_vnni_int8_peak(ThreadPool& pool, double seconds = 0.01);

// The same loop with its four operand tiles re-loaded from L1 before every four TDPBSSD (the
// 2 x 2 tile blocking every real GEMM runs): what the cores manage when tile loads are needed.
// On shared machines this swings far more than the register-only peak (tile loads compete with
// whatever shares the core), so reporting both separates the kernel from the machine's state.
double measure_amx_int8_loaded_peak(ThreadPool& pool, double seconds = 0.01);

}  // namespace qeval
