// The AMX-BF16 attention kernel against its scalar twin (kernels/ref/attention_ref.h) on random
// shapes: head dims 32..128, 1..45 rows with different key counts (up to ~1150), KV blocks in the cache's tile
// layout with garbage (NaN) past the written keys. Also: a row's result does not depend on the
// other rows of the call, and the twin itself agrees with a plain double-precision softmax.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "engine/cpu_features.h"
#include "engine/kernels/cpu/attention_amx.h"
#include "engine/kernels/ref/attention_ref.h"
#include "engine/kv_cache.h"
#include "engine/quant.h"

using namespace qeval;

namespace {

constexpr int64_t kB = KvCache::kBlockTokens;

// Random keys and values for n_keys positions, written in tile layout; positions from n_keys to
// the end of the last block hold NaN (never-written cache memory may hold anything).
struct Kv {
  int64_t E, n_keys;
  std::vector<float> k, v;  // [n_keys][E], bf16 values
  std::vector<std::vector<uint16_t>> kt, vt;
  std::vector<const uint16_t*> kp, vp;
  Kv(int64_t E_, int64_t n, std::mt19937& rng) : E(E_), n_keys(n) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    const int64_t nblk = (n + kB - 1) / kB;
    kt.assign(nblk, std::vector<uint16_t>(kB * E, 0x7FC0));  // NaN
    vt.assign(nblk, std::vector<uint16_t>(kB * E, 0x7FC0));
    k.resize(n * E);
    v.resize(n * E);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t e = 0; e < E; ++e) {
        const uint16_t kb = bf16_from_f32(d(rng)), vb = bf16_from_f32(d(rng));
        k[j * E + e] = bf16_to_f32(kb);
        v[j * E + e] = bf16_to_f32(vb);
        kt[j / kB][KvCache::k_tile_index(e, j % kB)] = kb;
        vt[j / kB][KvCache::v_tile_index(e, j % kB, E)] = vb;
      }
    for (int64_t b = 0; b < nblk; ++b) {
      kp.push_back(kt[b].data());
      vp.push_back(vt[b].data());
    }
  }
};

struct Rows {
  std::vector<float> q, out;
  std::vector<AttnQuery> rows;
  Rows(int64_t n_rows, int64_t E, const std::vector<int64_t>& n, std::mt19937& rng, float q_sd) {
    std::normal_distribution<float> d(0.0f, q_sd);
    q.resize(n_rows * E);
    for (auto& x : q) x = d(rng);
    out.assign(n_rows * E, -1.0f);
    for (int64_t r = 0; r < n_rows; ++r) rows.push_back({q.data() + r * E, out.data() + r * E, n[r]});
  }
};

}  // namespace

TEST_CASE("attention: AMX-BF16 kernel matches its scalar twin and is batch invariant", "[kernels][attention]") {
  if (max_kernel_level() < KernelLevel::Amx) {
    WARN("no AMX on this CPU: the AMX attention kernel is not tested");
    return;
  }
  std::mt19937 rng(4242);
  int cases = 0;
  for (int64_t E : {32, 64, 128})
    for (int64_t n_rows : {1, 7, 16, 17, 28, 32, 45}) {
      // Key counts: one per row, spread over 1..n_keys with the largest on a block edge or not.
      std::uniform_int_distribution<int64_t> len(1, 150);
      // Every 7th case a long context (1000+ keys: the scratch grows, then serves shorter rows).
      const int64_t n_keys = cases % 7 == 3 ? 1000 + len(rng) : (cases % 3 == 0) ? 96 : len(rng);
      std::uniform_int_distribution<int64_t> nd(1, n_keys);
      std::vector<int64_t> n(n_rows);
      for (auto& x : n) x = nd(rng);
      n[0] = n_keys;
      Kv kv(E, n_keys, rng);
      // q with sd 3: scores of a few units, peaked softmax weights, as trained models give.
      Rows fast(n_rows, E, n, rng, 3.0f);
      Rows twin = fast;
      for (int64_t r = 0; r < n_rows; ++r) twin.rows[r] = {twin.q.data() + r * E, twin.out.data() + r * E, n[r]};
      const float scale = 1.0f / std::sqrt(static_cast<float>(E));
      cpu::attend_bf16_amx(fast.rows.data(), n_rows, E, scale, kv.kp.data(), kv.vp.data());
      ref::attend_bf16(twin.rows.data(), n_rows, E, scale, kv.kp.data(), kv.vp.data());
      INFO("E " << E << ", rows " << n_rows << ", keys " << n_keys);
      double worst = 0;
      for (size_t i = 0; i < fast.out.size(); ++i) {
        REQUIRE(std::isfinite(fast.out[i]));
        worst = std::max(worst, std::fabs(static_cast<double>(fast.out[i]) - twin.out[i]));
      }
      INFO("max |kernel - twin| " << worst);
      CHECK(worst <= 1e-4);  // seen: ~1e-6 (f32 summation order); an off-by-one key moves outputs by ~1/n
      // Every row alone gives the bits it had in the batch.
      for (int64_t r = 0; r < n_rows; r += 5) {
        Rows one(1, E, {n[r]}, rng, 1.0f);
        std::copy(fast.q.begin() + r * E, fast.q.begin() + (r + 1) * E, one.q.begin());
        cpu::attend_bf16_amx(one.rows.data(), 1, E, scale, kv.kp.data(), kv.vp.data());
        INFO("row " << r);
        CHECK(std::equal(one.out.begin(), one.out.end(), fast.out.begin() + r * E));
      }
      ++cases;
    }
}

TEST_CASE("attention: the bf16 twin is softmax attention of the bf16-rounded operands", "[kernels][attention]") {
  std::mt19937 rng(7);
  for (int64_t E : {32, 64}) {
    const int64_t n_keys = 70;
    Kv kv(E, n_keys, rng);
    std::vector<int64_t> n = {1, 33, 70};
    Rows rows(3, E, n, rng, 2.0f);
    const float scale = 0.125f;
    ref::attend_bf16(rows.rows.data(), 3, E, scale, kv.kp.data(), kv.vp.data());
    for (int64_t r = 0; r < 3; ++r) {
      std::vector<double> s(n[r]), out(E, 0.0);
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < n[r]; ++j) {
        double dot = 0;
        for (int64_t e = 0; e < E; ++e) dot += static_cast<double>(bf16_round(rows.q[r * E + e])) * kv.k[j * E + e];
        s[j] = dot * scale;
        mx = std::max(mx, s[j]);
      }
      for (int64_t j = 0; j < n[r]; ++j) sum += (s[j] = std::exp(s[j] - mx));
      for (int64_t j = 0; j < n[r]; ++j)
        for (int64_t e = 0; e < E; ++e) out[e] += s[j] / sum * kv.v[j * E + e];
      for (int64_t e = 0; e < E; ++e) {
        INFO("E " << E << ", row " << r << ", element " << e);
        CHECK(rows.out[r * E + e] == Approx(out[e]).margin(1e-2));  // bf16 weights: ~2^-9 relative each
      }
    }
  }
}
