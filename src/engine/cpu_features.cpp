// CPUID-based feature detection, AMX permission request and kernel-level selection.
#include "engine/cpu_features.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace qeval {

namespace {

constexpr long kArchReqXcompPerm = 0x1023;  // arch_prctl: request permission for a state
constexpr long kXfeatureXtiledata = 18;     // AMX tile data state component

uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27);
  f.fma = c & (1u << 12);
  if (!osxsave) return f;
  const uint64_t xcr0 = xgetbv0();
  const bool os_avx = (xcr0 & 0x6) == 0x6;
  const bool os_avx512 = (xcr0 & 0xE6) == 0xE6;
  const bool os_amx = (xcr0 & (3ull << 17)) == (3ull << 17);
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  f.avx2 = os_avx && (b & (1u << 5));
  f.fma = f.fma && os_avx;
  f.avx512f = os_avx512 && (b & (1u << 16));
  f.avx512dq = os_avx512 && (b & (1u << 17));
  f.avx512bw = os_avx512 && (b & (1u << 30));
  f.avx512vl = os_avx512 && (b & (1u << 31));
  f.avx512vnni = os_avx512 && (c & (1u << 11));
  f.avx512vbmi = os_avx512 && (c & (1u << 1));
  f.amx_bf16 = os_amx && (d & (1u << 22));
  f.amx_tile = os_amx && (d & (1u << 24));
  f.amx_int8 = os_amx && (d & (1u << 25));
  unsigned a1, b1, c1, d1;
  __cpuid_count(7, 1, a1, b1, c1, d1);
  f.avx512bf16 = os_avx512 && (a1 & (1u << 5));
  if (f.amx_tile) f.amx_permitted = syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  return f;
}

std::atomic<int> g_override{-1};

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

KernelLevel max_kernel_level() {
  const CpuFeatures& f = cpu_features();
  const bool avx512 = f.avx512f && f.avx512dq && f.avx512bw && f.avx512vl && f.avx512vnni && f.fma;
  if (avx512 && f.avx512vbmi && f.avx512bf16 && f.amx_tile && f.amx_int8 && f.amx_bf16 && f.amx_permitted)
    return KernelLevel::Amx;
  if (avx512) return KernelLevel::Avx512;
  if (f.avx2 && f.fma) return KernelLevel::Avx2;
  return KernelLevel::Ref;
}

const char* kernel_level_name(KernelLevel level) {
  switch (level) {
    case KernelLevel::Ref: return "ref";
    case KernelLevel::Avx2: return "avx2";
    case KernelLevel::Avx512: return "avx512";
    case KernelLevel::Amx: return "amx";
  }
  return "?";
}

KernelLevel parse_kernel_level(const char* s) {
  for (KernelLevel l : {KernelLevel::Ref, KernelLevel::Avx2, KernelLevel::Avx512, KernelLevel::Amx})
    if (std::strcmp(s, kernel_level_name(l)) == 0) return l;
  fail("QEVAL_KERNEL: unknown kernel level '{}' (hint: one of ref, avx2, avx512, amx)", s);
}

void set_kernel_level_override(std::optional<KernelLevel> level) {
  g_override.store(level ? static_cast<int>(*level) : -1);
}

KernelLevel active_kernel_level() {
  KernelLevel want = max_kernel_level();
  const int o = g_override.load();
  if (o >= 0) {
    want = static_cast<KernelLevel>(o);
  } else if (const char* env = std::getenv("QEVAL_KERNEL"); env && *env) {
    want = parse_kernel_level(env);
  }
  return static_cast<KernelLevel>(std::min(static_cast<int>(want), static_cast<int>(max_kernel_level())));
}

}  // namespace qeval
