// CPU feature detection (CPUID/XGETBV) and the choice of kernel level for the linear layers:
// AMX (tiles: INT8 and BF16) > AVX-512 (VNNI, FMA) > AVX2 (FMA) > scalar reference. The level
// can be lowered for tests and benchmarks with the environment variable QEVAL_KERNEL
// (ref|avx2|avx512|amx) or set_kernel_level_override(); it is never raised above what the CPU
// (and, for AMX, the kernel's permission) supports.
#pragma once

#include <optional>

namespace qeval {

enum class KernelLevel { Ref = 0, Avx2 = 1, Avx512 = 2, Amx = 3 };

struct CpuFeatures {
  bool avx2 = false, fma = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512vnni = false, avx512bf16 = false;
  bool avx512dq = false;    // VREDUCEPS in the int8 activation quantiser, VEXTRACTF32X8
  bool avx512vbmi = false;  // the AMX level needs it too (vpermi2b in the fp8 weight decode)
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;
  bool amx_permitted = false;  // the OS granted this process the AMX tile state (arch_prctl)
};

// Detected once (thread-safe, cached); requests AMX permission on first call when present.
const CpuFeatures& cpu_features();

// Highest level this CPU supports.
KernelLevel max_kernel_level();

// The level new layers are built for: the override if set, else $QEVAL_KERNEL if set, else
// max_kernel_level(); always clamped to max_kernel_level(). Throws Error for a bad
// QEVAL_KERNEL value. Read when a layer is built (make_linear), not per forward.
KernelLevel active_kernel_level();

// Forces active_kernel_level() (clamped to the CPU) until reset with std::nullopt. For tests and
// benchmarks; not thread-safe with concurrent make_linear calls.
void set_kernel_level_override(std::optional<KernelLevel> level);

const char* kernel_level_name(KernelLevel level);  // "ref", "avx2", "avx512", "amx"
KernelLevel parse_kernel_level(const char* s);     // inverse; throws Error naming the value

}  // namespace qeval
