// allocate_hugepage_aligned / free_hugepage_aligned: fresh 2 MiB-aligned mappings marked for
// transparent huge pages for large buffers, aligned_alloc for small ones.
#include "engine/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>
#include <new>

namespace qeval {

namespace {

constexpr size_t kHuge = size_t{2} << 20;
constexpr size_t kPage = 4096;

size_t mapped_bytes(size_t bytes) { return (bytes + kPage - 1) / kPage * kPage; }

}  // namespace

void* allocate_hugepage_aligned(size_t bytes) {
  if (bytes < kHuge) {
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    return p;
  }
  // A mapping of its own, not heap memory: a page the heap touched before keeps its small page
  // whatever madvise says (measured: the 4 MiB-page part of every down projection of a 0.5B
  // model stayed in 4 KiB pages when it came from aligned_alloc), while a fresh page faulted in
  // after MADV_HUGEPAGE is a huge page. Over-map by 2 MiB, then unmap the slack on both sides.
  // One mapping (two VMAs) per buffer: a dense model has a few hundred such buffers, far below
  // the kernel's map count limit (vm.max_map_count, 65530 by default).
  const size_t len = mapped_bytes(bytes);
  void* raw = ::mmap(nullptr, len + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t r = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t p = (r + kHuge - 1) / kHuge * kHuge;
  if (p > r) ::munmap(raw, p - r);
  const uintptr_t end = r + len + kHuge;
  if (end > p + len) ::munmap(reinterpret_cast<void*>(p + len), end - (p + len));
  // Advisory only: where THP is off (or "never") the call fails harmlessly and pages stay small.
  // The tail past the last whole huge page keeps small pages, so no memory is wasted.
  ::madvise(reinterpret_cast<void*>(p), bytes / kHuge * kHuge, MADV_HUGEPAGE);
  return reinterpret_cast<void*>(p);
}

void free_hugepage_aligned(void* p, size_t bytes) {
  if (!p) return;
  if (bytes < kHuge)
    std::free(p);
  else
    ::munmap(p, mapped_bytes(bytes));
}

}  // namespace qeval
