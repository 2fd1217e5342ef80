// allocate_hugepage_aligned: aligned_alloc plus madvise(MADV_HUGEPAGE) for large buffers.
#include "engine/huge_pages.h"

#include <sys/mman.h>

#include <new>

namespace qeval {

void* allocate_hugepage_aligned(size_t bytes) {
  constexpr size_t kHuge = size_t{2} << 20;
  const bool huge = bytes >= kHuge;
  void* p = std::aligned_alloc(huge ? kHuge : 64, huge ? (bytes + kHuge - 1) / kHuge * kHuge : bytes);
  if (!p) throw std::bad_alloc();
  // Advisory only: where THP is off (or "never") the call fails harmlessly and pages stay small.
  if (huge) ::madvise(p, bytes / kHuge * kHuge, MADV_HUGEPAGE);
  return p;
}

}  // namespace qeval
