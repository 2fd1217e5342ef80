// Memory for the large buffers the kernels stream through (packed weights, activations):
// 2 MiB-aligned and marked for transparent huge pages.
#pragma once

#include <cstddef>
#include <cstdlib>

namespace qeval {

// Allocates `bytes` (64-byte aligned), to be released with free_hugepage_aligned(p, bytes).
// Buffers of 2 MiB and more are fresh mappings that start on a 2 MiB boundary, their whole 2 MiB
// pages marked MADV_HUGEPAGE: AMX tile loads and weight streams touch a new 4 KiB page every few
// loads, and under virtualisation (nested page walks) those TLB misses more than halve the GEMM
// throughput (measured: 20% -> 50% of the AMX peak). The tail past the last whole huge page
// keeps small pages, so no memory is wasted. Throws std::bad_alloc.
void* allocate_hugepage_aligned(size_t bytes);
void free_hugepage_aligned(void* p, size_t bytes);

// std::allocator twin over allocate_hugepage_aligned, for large activation vectors that the
// kernels read and write (tile loads and stores suffer the same TLB misses as weights).
template <class T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(allocate_hugepage_aligned(n * sizeof(T))); }
  void deallocate(T* p, size_t n) { free_hugepage_aligned(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const HugePageAllocator<U>&) const { return true; }
};

}  // namespace qeval
