// PyRandom against numbers printed by CPython 3.11.7 (the command is given beside each case).
#include <algorithm>

#include <catch2/catch.hpp>

#include "tasks/py_random.h"

using qeval::PyRandom;
using V = std::vector<int64_t>;

TEST_CASE("sample matches CPython on one shared stream (lm-eval gsm8k shots)", "[py_random]") {
  // python3 -c "import random; r=random.Random(1234); print([r.sample(range(7473),5) for _ in range(3)])"
  PyRandom r(1234);
  CHECK(r.sample(7473, 5) == V{6374, 3610, 957, 61, 742});
  CHECK(r.sample(7473, 5) == V{7462, 6610, 4769, 286, 5501});
  CHECK(r.sample(7473, 5) == V{5677, 687, 806, 6279, 2905});
}

TEST_CASE("random() matches CPython", "[py_random]") {
  // python3 -c "import random; r=random.Random(1234); print([r.random() for _ in range(3)])"
  PyRandom r(1234);
  CHECK(r.random() == 0.9664535356921388);
  CHECK(r.random() == 0.4407325991753527);
  CHECK(r.random() == 0.007491470058587191);
  // python3 -c "import random; print(random.Random(-5).random())"   (abs(seed) is used)
  CHECK(PyRandom(-5).random() == 0.6229016948897019);
  // python3 -c "import random; print(random.Random(2**63-1).random())"
  CHECK(PyRandom(INT64_MAX).random() == 0.3166448820870279);
}

TEST_CASE("getrandbits matches CPython, including multi-word seeds and k > 32", "[py_random]") {
  // python3 -c "import random; r=random.Random(0); print([r.getrandbits(k) for k in (1,7,32,33,64)])"
  PyRandom r(0);
  CHECK(r.getrandbits(1) == 1u);
  CHECK(r.getrandbits(7) == 49u);
  CHECK(r.getrandbits(32) == 3255389356u);
  CHECK(r.getrandbits(33) == 3823568514u);
  CHECK(r.getrandbits(64) == 4776171008201404212u);
  CHECK(r.getrandbits(0) == 0u);
  CHECK_THROWS(r.getrandbits(65));
  // python3 -c "import random; r=random.Random(2**40+7); print([r.getrandbits(32) for _ in range(2)])"
  PyRandom big((int64_t(1) << 40) + 7);
  CHECK(big.getrandbits(32) == 2635837658u);
  CHECK(big.getrandbits(32) == 3209733218u);
}

TEST_CASE("randbelow matches CPython's _randbelow", "[py_random]") {
  // python3 -c "import random; r=random.Random(99); print([r._randbelow(n) for n in (1,2,3,1000,2**32,2**32+1,2**63)])"
  PyRandom r(99);
  CHECK(r.randbelow(1) == 0u);
  CHECK(r.randbelow(2) == 1u);
  CHECK(r.randbelow(3) == 0u);
  CHECK(r.randbelow(1000) == 613u);
  CHECK(r.randbelow(uint64_t(1) << 32) == 767950141u);
  CHECK(r.randbelow((uint64_t(1) << 32) + 1) == 1067004398u);
  CHECK(r.randbelow(uint64_t(1) << 63) == 1597091074114278392u);
}

TEST_CASE("sample picks the pool or set algorithm as CPython does", "[py_random]") {
  // python3 -c "import random; r=random.Random(42); print(r.sample(range(10),10), r.sample(range(30),3),
  //             r.sample(range(47),6), r.sample(range(48),6))"
  // n=10,k=10 and n=30,k=3 (setsize 21) and n=47,k=6 (setsize 21+64=85): pool; n=48,k=6: pool too.
  PyRandom r(42);
  CHECK(r.sample(10, 10) == V{1, 0, 4, 9, 6, 5, 8, 2, 3, 7});
  CHECK(r.sample(30, 3) == V{1, 0, 2});
  CHECK(r.sample(47, 6) == V{13, 14, 32, 38, 1, 35});
  CHECK(r.sample(48, 6) == V{12, 45, 41, 44, 34, 26});
  // k=16: setsize = 21 + 4**ceil(log(48,4)) = 85, so n=85 is the pool method and n=86 the set method.
  // python3 -c "import random; r=random.Random(7); print(r.sample(range(85),16), r.sample(range(86),16))"
  PyRandom r7(7);
  CHECK(r7.sample(85, 16) == V{41, 19, 50, 6, 9, 68, 12, 46, 74, 7, 64, 27, 4, 11, 55, 53});
  CHECK(r7.sample(86, 16) == V{8, 30, 11, 70, 54, 7, 72, 15, 28, 80, 74, 73, 50, 6, 5, 71});
}

TEST_CASE("sample edge cases", "[py_random]") {
  // python3 -c "import random; r=random.Random(1); print(r.sample(range(1319),0), r.random())"
  PyRandom r(1);
  CHECK(r.sample(1319, 0).empty());
  CHECK(r.random() == 0.13436424411240122);  // k=0 consumed nothing
  CHECK_THROWS(r.sample(3, 4));
  CHECK_THROWS(r.sample(3, -1));
  // Distinctness on a large draw.
  auto s = PyRandom(5).sample(1000, 1000);
  std::sort(s.begin(), s.end());
  for (int i = 0; i < 1000; i++) CHECK(s[size_t(i)] == i);
}
