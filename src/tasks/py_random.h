// A faithful port of CPython's `random.Random` (3.11), for the parts qeval needs to reproduce
// lm-evaluation-harness few-shot selection: MT19937 seeded from a Python int through
// `init_by_array`, `random()`, `getrandbits(k)`, `_randbelow(n)` (the getrandbits rejection
// method) and `sample(range(n), k)`. Same seed, same call sequence => same numbers as Python.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace qeval {

class PyRandom {
 public:
  // Same as Python's random.Random(seed) for an int seed: abs(seed) split into 32-bit words,
  // least significant first (seed 0 -> one zero word), fed to init_by_array.
  explicit PyRandom(int64_t seed);

  // Python's random.random(): a double in [0, 1) with 53 random bits.
  double random();

  // Python's getrandbits(k) for 0 <= k <= 64 (k == 0 returns 0 and draws nothing).
  // Throws std::invalid_argument for k outside that range.
  uint64_t getrandbits(int k);

  // Python's _randbelow_with_getrandbits(n): uniform in [0, n) for n >= 1, drawing
  // getrandbits(n.bit_length()) until the value is below n. n == 0 (undefined in Python,
  // which loops forever) returns 0 and draws nothing.
  uint64_t randbelow(uint64_t n);

  // Python's sample(range(n), k): k distinct indices into a population of size n, in the
  // order Python returns them. Chooses between the pool and the set algorithm exactly as
  // CPython 3.11 does (so the numbers consumed from the stream are the same).
  // Throws std::invalid_argument when k > n (Python's ValueError).
  std::vector<int64_t> sample(int64_t n, int64_t k);

  // The next raw 32-bit output of MT19937 (genrand_uint32).
  uint32_t next_u32();

 private:
  void init_genrand(uint32_t s);
  void init_by_array(const std::vector<uint32_t>& key);

  static constexpr int kN = 624;
  std::array<uint32_t, kN> mt_{};
  int mti_ = kN + 1;
};

}  // namespace qeval
