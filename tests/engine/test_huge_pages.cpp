// allocate_hugepage_aligned / free_hugepage_aligned / HugePageAllocator / AlignedBuffer: alignment,
// zeroing, usability.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "engine/huge_pages.h"
#include "engine/kernels/cpu/gemm_cpu.h"

using namespace qeval;

TEST_CASE("huge-page allocations: 2 MiB aligned when large, 64-byte aligned when small", "[huge_pages]") {
  for (size_t bytes : {size_t{64}, size_t{4096}, (size_t{2} << 20) - 64, size_t{2} << 20, (size_t{5} << 20) + 192}) {
    INFO("bytes " << bytes);
    void* p = allocate_hugepage_aligned(bytes);
    const auto addr = reinterpret_cast<uintptr_t>(p);
    CHECK(addr % 64 == 0);
    if (bytes >= (size_t{2} << 20)) CHECK(addr % (size_t{2} << 20) == 0);
    // The whole range is usable memory.
    auto* b = static_cast<unsigned char*>(p);
    b[0] = 1;
    b[bytes - 1] = 2;
    CHECK(b[0] + b[bytes - 1] == 3);
    free_hugepage_aligned(p, bytes);
  }
}

TEST_CASE("AlignedBuffer is zeroed; HugePageAllocator vectors behave as vectors", "[huge_pages]") {
  cpu::AlignedBuffer<int32_t> buf((size_t{3} << 20) / 4 + 5);
  int64_t nonzero = 0;
  for (size_t i = 0; i < buf.size(); ++i) nonzero += buf[i] != 0;
  CHECK(nonzero == 0);
  std::vector<float, HugePageAllocator<float>> v(1 << 20, 1.5f);
  v.resize(3 << 20, 2.5f);
  CHECK(reinterpret_cast<uintptr_t>(v.data()) % (size_t{2} << 20) == 0);
  CHECK(v[0] == 1.5f);
  CHECK(v[(1 << 20) - 1] == 1.5f);
  CHECK(v[1 << 20] == 2.5f);
  CHECK(v.back() == 2.5f);
}
